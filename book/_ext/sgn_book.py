"""Two fixes the book's pages need, and the listening room's script, as a local Sphinx
extension (book/_config.yml loads it).

1. Sphinx 7.4 can list an inline script twice in a page (sphinx-thebe's and
   sphinx-togglebutton's ``const`` declarations), which the browser reports as a
   SyntaxError: keep the first of identical scripts.
2. The widget manager (embed-amd.js) resolves its icon fonts through require.js module
   paths that would point under the page's own folder; map them to the book's own
   ``_static/``, where sgn.lab.book puts embed-amd.js and its fonts.
3. The in-browser listening room (``book/_room/room.js``, an ES module) is added to the
   pages that hold its element, and only to those.
"""

from __future__ import annotations

# read by require.js when it loads (a global `require` object is its configuration)
REQUIRE_PATHS = ("var require = {paths: {"
                 "'@jupyter-widgets/html-manager/dist': document.documentElement.dataset.content_root + '_static', "
                 "'@jupyter-widgets': document.documentElement.dataset.content_root + '_static'}};")


ROOM_ELEMENT = 'id="sgn-room"'


def _room_script(app, pagename, templatename, context, doctree) -> None:
    # called before _unique_scripts, which replaces the list add_js_file appends to
    if ROOM_ELEMENT in (context.get("body") or ""):
        app.add_js_file("room.js", type="module")


def _unique_scripts(app, pagename, templatename, context, doctree) -> None:
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, unique = set(), []
    for script in scripts:
        # the second copy differs only in its filename: None for one, "" for the other
        key = (getattr(script, "filename", None) or "", tuple(sorted(getattr(script, "attributes", {}).items())))
        if key not in seen:
            seen.add(key)
            unique.append(script)
    context["script_files"] = unique


def setup(app):
    app.connect("html-page-context", _room_script)
    app.connect("html-page-context", _unique_scripts)
    # before require.js and the widget JavaScript, which myst-nb adds at the default priority (500)
    app.add_js_file(None, body=REQUIRE_PATHS, priority=400)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
