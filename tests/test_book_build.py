"""sgn.lab.book without the real notebooks: widget JavaScript from (a fake) npm, caching, and failures.

A one-notebook book in a temporary root builds in seconds; ``npm`` is replaced by a
script that packs tarballs the test makes, so nothing leaves the machine.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import tarfile
from pathlib import Path

import nbformat
import pytest
import yaml
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

import sgn.lab.book
from sgn.lab.book import BUILD_RECORD, build_book, fetch_npm_files
from sgn.lab.notebooks import NotebookError
from sgn.utils import SGNError

FAKE_FILES = {"embed-amd.js": b"define('fake-embed', [], function () { return {}; });\n",
              "require.js": b"var requirejs = function () {};\n"}


def _tarball(folder: Path, name: str, members: dict[str, bytes]) -> None:
    with tarfile.open(folder / name, "w:gz") as archive:
        for path, data in members.items():
            info = tarfile.TarInfo(f"package/{path}")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))


@pytest.fixture
def fake_npm(tmp_path, monkeypatch) -> Path:
    """An ``npm`` on PATH whose ``pack PKG`` copies a prepared tarball into the working folder."""
    registry = tmp_path / "registry"
    registry.mkdir()
    _tarball(registry, "html-manager.tgz", {"dist/embed-amd.js": FAKE_FILES["embed-amd.js"],
                                            "dist/abc123.woff2": b"font", "dist/embed.js.map": b"{}",
                                            "README.md": b"readme"})
    _tarball(registry, "requirejs.tgz", {"require.js": FAKE_FILES["require.js"], "bin/r.js": b"x"})
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "npm"
    script.write_text(f"""#!/bin/sh
# npm pack --silent PACKAGE: copy the package's tarball here and print its name
case "$3" in
  @jupyter-widgets/*) cp {registry}/html-manager.tgz . && echo html-manager.tgz ;;
  requirejs@*) cp {registry}/requirejs.tgz . && echo requirejs.tgz ;;
  *) echo "npm ERR! 404 Not Found: $3" >&2; exit 1 ;;
esac
""")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(sgn.lab.book, "NPM_FILES", {
        "@jupyter-widgets/html-manager@1.0.6": {"dist/embed-amd.js": hashlib.sha256(FAKE_FILES["embed-amd.js"]).hexdigest()},
        "requirejs@2.3.4": {"require.js": hashlib.sha256(FAKE_FILES["require.js"]).hexdigest()},
    })
    return registry


def test_fetch_npm_files_keeps_scripts_and_fonts_only(fake_npm, tmp_path):
    dest = fetch_npm_files(tmp_path / "widgets")
    assert sorted(p.name for p in dest.iterdir()) == ["abc123.woff2", "embed-amd.js", "require.js"]
    assert (dest / "require.js").read_bytes() == FAKE_FILES["require.js"]
    # a second call finds the pinned files and does not call npm
    (fake_npm / "requirejs.tgz").unlink()
    assert fetch_npm_files(dest) == dest


def test_fetch_npm_files_refuses_a_changed_file(fake_npm, tmp_path, monkeypatch):
    monkeypatch.setitem(sgn.lab.book.NPM_FILES, "requirejs@2.3.4", {"require.js": "0" * 64})
    with pytest.raises(SGNError, match=r"requirejs@2.3.4 require.js: sha256 [0-9a-f]{64}, expected 0{64}"):
        fetch_npm_files(tmp_path / "widgets")
    assert not (tmp_path / "widgets").exists()  # nothing half-written


def test_fetch_npm_files_reports_npm_failure_and_absence(fake_npm, tmp_path, monkeypatch):
    monkeypatch.setattr(sgn.lab.book, "NPM_FILES", {"left-pad@9.9.9": {"index.js": "0" * 64}})
    with pytest.raises(SGNError, match="npm pack left-pad@9.9.9 failed: npm ERR! 404"):
        fetch_npm_files(tmp_path / "widgets")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(SGNError, match="npm not found"):
        fetch_npm_files(tmp_path / "widgets")


def _tiny_root(root: Path) -> Path:
    """A repository root with one notebook, a smoke profile and a one-page book."""
    nb = new_notebook(cells=[
        new_markdown_cell("# Tiny\n\nA page."),
        new_code_cell('profile = "smoke"  # profile\nfail = False  # raise on purpose', metadata={"tags": ["parameters"]}),
        new_code_cell('assert not fail, "forced failure"\nprint("value", 6 * 7)'),
    ])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    (root / "notebooks" / "profiles").mkdir(parents=True)
    nbformat.write(nb, root / "notebooks" / "01_tiny.ipynb")
    (root / "notebooks" / "profiles" / "smoke.yaml").write_text("chapters:\n  01_tiny: {}\n")
    _chapter_list(root)
    (root / "book").mkdir()
    (root / "book" / "_config.yml").write_text(
        'title: tiny\nexecute:\n  execute_notebooks: "off"\nonly_build_toc_files: true\n'
        "sphinx:\n  config:\n    html_static_path: [_npm]\n")
    return root


def _chapter_list(root: Path, *pages: str) -> None:
    """The tiny book's chapters.yaml: its one chapter, then ``pages`` (book/NAME.md)."""
    listed = "".join(f"  - {{file: {page}, part: Pages}}\n" for page in pages)
    (root / "notebooks" / "chapters.yaml").write_text(
        "root: 01_tiny\nparts: [Pages]\nchapters:\n  - {notebook: 01_tiny}\n" + (f"pages:\n{listed}" if pages else ""))


def test_build_caches_and_keeps_the_book_on_failure(fake_npm, tmp_path):
    root = _tiny_root(tmp_path / "repo")
    html = build_book("smoke", root=root, progress=False)
    page = html / "notebooks" / "01_tiny.html"
    assert "value 42" in page.read_text()
    assert (html / BUILD_RECORD).is_file() and (html / "_static" / "require.js").is_file()
    built = page.stat().st_mtime_ns

    # nothing changed: no execution, no rebuild
    build_book("smoke", root=root, progress=False)
    assert page.stat().st_mtime_ns == built

    # a prose edit rebuilds the book
    (root / "book" / "extra.md").write_text("# Extra\n")
    _chapter_list(root, "extra")
    build_book("smoke", root=root, progress=False)
    assert (html / "extra.html").is_file()

    # a failing notebook stops the build naming notebook and cell; executed copy and book stay
    executed = root / "results" / "smoke" / "executed" / "01_tiny.ipynb"
    before = executed.read_bytes()
    (root / "notebooks" / "profiles" / "smoke.yaml").write_text("chapters:\n  01_tiny:\n    fail: true\n")
    with pytest.raises(NotebookError, match=r"notebook 01_tiny failed in cell 3 .*AssertionError: forced failure"):
        build_book("smoke", root=root, progress=False)
    assert executed.read_bytes() == before and (html / "extra.html").is_file()
    assert executed.with_name("01_tiny.failed.ipynb").is_file()

    # a failing Jupyter Book build keeps the previous book and names its log
    (root / "notebooks" / "profiles" / "smoke.yaml").write_text("chapters:\n  01_tiny: {}\n")
    _chapter_list(root, "extra", "missing")
    with pytest.raises(SGNError, match="jupyter-book build failed .*previous book is kept; see .*jupyter-book.log"):
        build_book("smoke", root=root, progress=False)
    assert (html / "extra.html").is_file() and "value 42" in page.read_text()
    assert not list((root / "book" / "_build").glob(".stage-*"))  # the staging folder is cleaned up


def test_build_book_names_a_missing_book(tmp_path):
    with pytest.raises(SGNError, match="no _config.yml"):
        build_book("smoke", root=tmp_path)


def test_launch_buttons_only_with_a_repository(tmp_path, monkeypatch):
    config = tmp_path / "_config.yml"
    original = "title: tiny\nsphinx:\n  config:\n    html_theme_options: {search_bar_text: Search}\n"
    config.write_text(original)
    monkeypatch.delenv(sgn.lab.book.REPOSITORY_ENV, raising=False)
    sgn.lab.book._add_launch_buttons(config)
    assert config.read_text() == original
    monkeypatch.setenv(sgn.lab.book.REPOSITORY_ENV, "https://github.com/someone/sgn/")
    monkeypatch.setenv(sgn.lab.book.BRANCH_ENV, "pages")
    sgn.lab.book._add_launch_buttons(config)
    theme = yaml.safe_load(config.read_text())["sphinx"]["config"]["html_theme_options"]
    assert theme["search_bar_text"] == "Search" and theme["use_repository_button"] is True
    assert (theme["repository_url"], theme["repository_branch"], theme["path_to_docs"]) == (
        "https://github.com/someone/sgn", "pages", "")
    assert theme["launch_buttons"]["binderhub_url"] and theme["launch_buttons"]["colab_url"]


def test_chapter_files_for_the_pages_are_staged(tmp_path):
    results, source = tmp_path / "results", tmp_path / "src"
    (results / "06_listen" / sgn.lab.book.CHAPTER_STATIC / "clips").mkdir(parents=True)
    (results / "06_listen" / sgn.lab.book.CHAPTER_STATIC / "clips" / "a.ogg").write_bytes(b"ogg")
    (results / "01_data").mkdir(parents=True)
    source.mkdir()
    sgn.lab.book._stage_chapter_static(results, ["01_data", "06_listen"], source)
    staged = source / sgn.lab.book.STAGED_CHAPTER_STATIC
    assert [p.relative_to(staged).as_posix() for p in sorted(staged.rglob("*"))] == [
        "06_listen", "06_listen/clips", "06_listen/clips/a.ogg"]
