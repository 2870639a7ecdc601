"""Building the Jupyter Book: execute the notebooks, then render their executed copies.

``sgn book --profile cpu`` (what ``make book`` runs) does, in order:

1. executes every ``notebooks/NN_name.ipynb`` with the profile's parameters into
   ``results/PROFILE/executed`` (:func:`sgn.lab.notebooks.run_pipeline`, cached: an
   unchanged notebook is not executed again);
2. fetches the widget JavaScript, MathJax and onnxruntime-web from the npm registry
   once (:func:`fetch_npm_files`), so the built pages load no script from another host;
3. stages ``book/``'s sources, the executed notebooks and the files chapters made for
   the pages (``OUT_DIR/book_static/``: the listening room's model and clips) in a
   temporary folder and builds it with Jupyter Book 1.x (the notebooks are rendered,
   never executed, there); ``$SGN_BOOK_REPOSITORY`` adds launch buttons;
4. swaps the new HTML into ``book/_build/html``.

Nothing is lost on failure: a notebook that fails stops the build before step 3
(:class:`~sgn.lab.notebooks.NotebookError` names the notebook and the cell), and a
failed Jupyter Book build leaves the previous ``book/_build/html`` in place. The
build is skipped when its inputs (book sources, executed notebooks, the ``sgn``
package for the API pages, the npm files) are those of the book already built.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from sgn.lab.notebooks import (
    INJECTED_TAG,
    PARAMETERS_TAG,
    Chapters,
    load_profile,
    pipeline_summary,
    read_chapters,
    resolve_profile,
    run_pipeline,
    strip_ansi,
)
from sgn.npm import fetch_pinned
from sgn.provenance import digest, package_hashes
from sgn.utils import SGNError, atomic_write_text, git_commit, sha256_file

log = logging.getLogger("sgn")

# The widget manager that renders ipywidgets from their saved state (ipywidgets 8's
# html-manager), the AMD loader it needs, and MathJax (one file, SVG output, for the
# math in the API pages). Each file's sha256 is pinned: the npm tarball is checked by
# npm against the registry, the file against this table.
NPM_FILES = {
    "@jupyter-widgets/html-manager@1.0.6": {
        "dist/embed-amd.js": "b129dee93e124bd7cdc2e1a50f3074029f37de34ace5e2a941e345b28c76d06f",
    },
    "requirejs@2.3.4": {
        "require.js": "ccfb1e9274a64cdefdd28f5f8e83c547f8071e617600f32428b80791ee114cce",
    },
    "mathjax@3.2.2": {
        "es5/tex-svg-full.js": "a4354ff94fd868aea0cc6eaaa79a57fda0588646fc46ee3700a349ee0a11cbe6",
    },
    # the listening room's model runner: the WebAssembly-only ES module build, the
    # Emscripten loader it imports and the SIMD WebAssembly binary it loads (no WebGPU)
    "onnxruntime-web@1.30.0": {
        "dist/ort.wasm.min.mjs": "219e6a1fc8a9938268d18efca3c91d310bd2f4a59bbd13744df5b2b7fc6cee3b",
        "dist/ort-wasm-simd-threaded.mjs": "e13f7f94fc51b4ca72b12faeb1ee95f4ace6dfbc8939bc718aabdc0a27c4299b",
        "dist/ort-wasm-simd-threaded.wasm": "3398c10d07d229bd91b364548e130e0e51a8e5704b88c7c083ebbeb78842dee2",
    },
}
# embed-amd.js's icon fonts, copied beside it (book/_ext/sgn_book.py points the widget manager there).
WIDGET_FONT_SUFFIXES = (".woff", ".woff2", ".ttf", ".eot", ".svg")
BUILD_RECORD = ".sgn-book.json"
# What a chapter makes for the book's pages (the listening room's model and clips): the
# files in OUT_DIR/book_static/ are staged into _chapters/<chapter>/ (in html_static_path),
# so the pages find them under _static/<chapter>/.
CHAPTER_STATIC = "book_static"
STAGED_CHAPTER_STATIC = "_chapters"
# The publishing workflow names the repository (e.g. https://github.com/OWNER/NAME) and its
# branch; with it, each chapter gets launch buttons (Binder, Colab) and a repository link.
REPOSITORY_ENV, BRANCH_ENV = "SGN_BOOK_REPOSITORY", "SGN_BOOK_BRANCH"


def fetch_npm_files(dest: str | os.PathLike) -> Path:
    """Put the book's JavaScript (embed-amd.js and its fonts, require.js, MathJax, onnxruntime-web)
    into ``dest``: :data:`NPM_FILES`, each checked against its pinned sha256 (:func:`sgn.npm.fetch_pinned`).

    Raises:
        SGNError: npm is missing or fails, or a file's checksum differs from the pin.
    """
    return fetch_pinned(NPM_FILES, dest, "the book's widget JavaScript", also=_widget_font)


def _widget_font(package: str, name: str) -> bool:
    """embed-amd.js's icon fonts, kept beside it."""
    return package.startswith("@jupyter-widgets/") and name.startswith("dist/") and "/" not in name[5:] \
        and name.endswith(WIDGET_FONT_SUFFIXES)


def _copy_sources(book_dir: Path, stage: Path) -> None:
    """Copy ``book_dir`` into ``stage``, leaving out its build folder and hidden files."""
    shutil.copytree(book_dir, stage, ignore=lambda folder, names: [
        n for n in names if n.startswith(".") or n == "__pycache__" or (Path(folder) == book_dir and n == "_build")
    ])


def _stage_notebook(executed: Path, staged: Path, landing: bool) -> None:
    """Copy an executed notebook into the stage. A chapter shows its parameters (papermill's
    injected values beside the defaults) and folds its analysis code (the notebooks tag it
    ``hide-input``; one click shows it). The landing page leaves its parameters out (its
    "Made by" line names the profile), so that its verdict is the first thing a reader sees."""
    import nbformat

    nb = nbformat.read(executed, as_version=4)
    for cell in nb.cells:
        tags = cell.metadata.get("tags", [])
        if landing and (PARAMETERS_TAG in tags or INJECTED_TAG in tags):
            cell.metadata["tags"] = [t for t in tags if t != "hide-input"] + ["remove-input"]
    nbformat.write(nb, staged)


def _stage_chapter_static(results_dir: Path, stems: list[str], source: Path) -> None:
    """Copy each chapter's ``book_static/`` folder (if it made one) into the stage's ``_chapters/<stem>/``."""
    staged = source / STAGED_CHAPTER_STATIC
    staged.mkdir()  # always there: _config.yml's html_static_path names it
    for stem in stems:
        files = results_dir / stem / CHAPTER_STATIC
        if files.is_dir():
            shutil.copytree(files, staged / stem)


def _add_launch_buttons(config_path: Path) -> None:
    """Point the staged ``_config.yml`` at the repository of ``$SGN_BOOK_REPOSITORY``, if set:
    launch buttons (Binder, Colab) on each chapter and a repository button. Without it the
    book has none (and Jupyter Book has no URL to warn about)."""
    url = os.environ.get(REPOSITORY_ENV, "").strip().rstrip("/")
    if not url:
        return
    config = yaml.safe_load(config_path.read_text())
    # sphinx.config.html_theme_options replaces the theme options Jupyter Book would derive
    # from `repository:` and `launch_buttons:`, so the settings go there; path_to_docs is
    # empty because the staged chapters sit at notebooks/NAME.ipynb, as in the repository
    theme = config.setdefault("sphinx", {}).setdefault("config", {}).setdefault("html_theme_options", {})
    theme.update(repository_url=url, repository_branch=os.environ.get(BRANCH_ENV, "").strip() or "main",
                 path_to_docs="", use_repository_button=True,
                 launch_buttons={"notebook_interface": "classic", "binderhub_url": "https://mybinder.org",
                                 "colab_url": "https://colab.research.google.com"})
    atomic_write_text(config_path, yaml.safe_dump(config, sort_keys=False))


def _fingerprint(stage: Path) -> str:
    """sha256 of every staged file (path and bytes) and of the ``sgn`` package the API pages document."""
    staged = {path.relative_to(stage).as_posix(): sha256_file(path) for path in stage.rglob("*") if path.is_file()}
    return digest({"staged": staged, "package": package_hashes()})


def _built_fingerprint(html: Path) -> str | None:
    try:
        return json.loads((html / BUILD_RECORD).read_text())["fingerprint"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _swap_in(new: Path, html: Path) -> None:
    """Replace ``html`` by ``new``; the old folder is removed only once the new one is in place."""
    old = html.with_name(f".{html.name}-old")
    if old.exists():
        shutil.rmtree(old)
    if html.exists():
        html.rename(old)
    new.rename(html)
    if old.exists():
        shutil.rmtree(old)


def build_book(
    profile: str = "cpu",
    *,
    root: str | os.PathLike = ".",
    force: bool = False,
    progress: bool = True,
) -> Path:
    """Execute the notebooks with ``profile`` and build the book into ``root/book/_build/html``.

    Args:
        profile: a profile name (``notebooks/profiles/NAME.yaml``) or a profile YAML path.
        root: the repository root (holds ``book/``, ``notebooks/``, ``results/``).
        force: execute every notebook and rebuild the book even if up to date.
        progress: show papermill's per-cell progress bars.

    Returns:
        The folder of the built HTML.

    Raises:
        NotebookError: a notebook failed (the previous executed copies and book stay).
        SGNError: a bad profile, npm missing, or the Jupyter Book build failed (its
            log is named; the previous book stays).
    """
    root = Path(root).resolve()
    book_dir, notebook_dir = root / "book", root / "notebooks"
    if not (book_dir / "_config.yml").is_file():
        raise SGNError(f"{book_dir}: no _config.yml; run from the repository root or pass root=")
    profile_path = resolve_profile(profile, notebook_dir)
    profile_name = profile_path.stem
    executed = root / "results" / profile_name / "executed"
    build_dir, html = book_dir / "_build", book_dir / "_build" / "html"

    started = time.perf_counter()
    logging.getLogger("papermill").setLevel(logging.WARNING)
    chapters = read_chapters(notebook_dir)
    results = run_pipeline(chapters.notebooks, load_profile(profile_path, notebook_dir), executed,
                           profile=profile_name, cache=not force, progress=progress)
    log.info("%s profile: %s, in %.0f s; executed copies in %s", profile_name, pipeline_summary(results),
             time.perf_counter() - started, executed)

    npm_files = fetch_npm_files(build_dir / "npm")  # makes build_dir too
    stage = Path(tempfile.mkdtemp(dir=build_dir, prefix=".stage-"))
    try:
        source = _stage_sources(stage / "src", book_dir, chapters, results, executed, npm_files)
        fingerprint = _fingerprint(source)
        if not force and _built_fingerprint(html) == fingerprint:
            log.info("book up to date: %s", html / "index.html")
            return html
        build_started = time.perf_counter()
        built = _jupyter_book_build(source, stage, build_dir / "jupyter-book.log")
        atomic_write_text(built / BUILD_RECORD, json.dumps({
            "fingerprint": fingerprint, "profile": profile_name, "git_commit": git_commit(root),
            "notebooks": [r.output.name for r in results],
        }, indent=1) + "\n")
        _swap_in(built, html)
        log.info("book built in %.0f s (%.0f s in all): %s", time.perf_counter() - build_started,
                 time.perf_counter() - started, html / "index.html")
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return html


def _stage_sources(source: Path, book_dir: Path, chapters: Chapters, results: list, executed: Path,
                   npm_files: Path) -> Path:
    """Stage the book's pages, its table of contents, the pinned npm files and the executed chapters in ``source``."""
    _copy_sources(book_dir, source)
    atomic_write_text(source / "_toc.yml", table_of_contents(chapters))
    shutil.copytree(npm_files, source / "_npm")
    (source / "notebooks").mkdir()
    for result in results:
        _stage_notebook(result.output, source / "notebooks" / result.output.name,
                        landing=result.output.stem == chapters.root)
    _stage_chapter_static(executed.parent, [r.output.stem for r in results], source)
    _add_launch_buttons(source / "_config.yml")
    return source


def _jupyter_book_build(source: Path, cwd: Path, log_path: Path) -> Path:
    """Build the staged ``source`` into ``source/_build/html`` (its log in ``log_path``); that folder.

    Raises:
        SGNError: the build failed or left no ``index.html`` (naming its first warning or error).
    """
    with open(log_path, "w") as log_file:
        # -W: a warning (a page missing from the toc, a broken reference) fails the build
        done = subprocess.run([_jupyter_book(), "build", str(source), "--builder", "html", "-W", "--keep-going"],
                              stdout=log_file, stderr=subprocess.STDOUT, cwd=cwd)
    built = source / "_build" / "html"
    if done.returncode != 0 or not (built / "index.html").is_file():
        problems = [line.strip() for line in strip_ansi(log_path.read_text(errors="replace")).splitlines()
                    if "WARNING" in line or "ERROR" in line]
        first = f": {problems[0]}" if problems else ""
        raise SGNError(f"jupyter-book build failed (exit {done.returncode}){first}; the previous book is kept; "
                       f"see {log_path}")
    return built


def table_of_contents(chapters: Chapters) -> str:
    """The book's ``_toc.yml``, made from ``notebooks/chapters.yaml``: the root, then each part's
    chapters (executed copies under ``notebooks/``) and its own pages."""
    parts = [{"caption": part, "chapters": [{"file": f"notebooks/{stem}"} for stem in stems]
              + [{"file": page} for page in chapters.pages.get(part, [])]}
             for part, stems in chapters.parts.items() if stems or chapters.pages.get(part)]
    toc = {"format": "jb-book", "root": f"notebooks/{chapters.root}", **({"parts": parts} if parts else {})}
    return "# Made by sgn.lab.book from notebooks/chapters.yaml.\n" + yaml.safe_dump(toc, sort_keys=False)


def _jupyter_book() -> str:
    """The ``jupyter-book`` script of this environment (the one the ``sgn`` package runs in)."""
    script = Path(sys.executable).parent / "jupyter-book"
    if not script.is_file():
        raise SGNError("jupyter-book is not installed here; pip install -e '.[book]' (make setup does it)")
    return str(script)
