"""Parameters cells, cached papermill execution, pipelines and profiles (sgn.lab.notebooks).

A kernel start costs about a second, so each test executes as few notebooks as it can;
the checks of parameters cells and profiles execute none.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

import sgn
from sgn.lab.notebooks import (
    NotebookError,
    chapter_parameters,
    check_parameters,
    load_profile,
    notebook_parameters,
    read_chapters,
    run_notebook,
    run_pipeline,
)
from sgn.utils import SGNError

ROOT = Path(__file__).resolve().parent.parent

PARAMETERS = '''x = 1  # the input
rate = 0.5  # a float
fail = False  # raise on purpose
out_dir = "."  # where the counter goes
names = ["a", "b"]
'''
# Appends one line to out_dir/runs.txt per execution: the side effect that shows a cached run did not execute.
BODY = '''import json, pathlib
out = pathlib.Path(out_dir)
out.mkdir(parents=True, exist_ok=True)
with open(out / "runs.txt", "a") as f:
    f.write(f"{x}\\n")'''
FAIL = '''if fail:
    raise ValueError("forced failure\\nsecond line")
y = x * 2'''


def make_notebook(path: Path, parameters: str | None = PARAMETERS, *cells: str,
                  prose: str = "# A tiny notebook") -> Path:
    """A notebook: a markdown cell, the parameters cell (tagged, unless None), then code cells."""
    nb = new_notebook(cells=[new_markdown_cell(prose)])
    if parameters is not None:
        nb.cells.append(new_code_cell(parameters, metadata={"tags": ["parameters"]}))
    nb.cells += [new_code_cell(source) for source in cells]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


def runs(folder: Path) -> list[str]:
    path = folder / "runs.txt"
    return path.read_text().split() if path.exists() else []


@pytest.fixture
def tiny(tmp_path) -> Path:
    return make_notebook(tmp_path / "tiny.ipynb", PARAMETERS, BODY, FAIL)


# -- the parameters cell ------------------------------------------------------------


def test_parameters_are_parsed_with_types_defaults_and_comments(tiny):
    params = notebook_parameters(tiny)
    assert list(params) == ["x", "rate", "fail", "out_dir", "names"]
    assert {n: p.default for n, p in params.items()} == {
        "x": 1, "rate": 0.5, "fail": False, "out_dir": ".", "names": ["a", "b"]}
    assert params["x"].comment == "the input" and params["names"].comment == ""


def test_a_notebook_without_parameters_cell_is_an_error(tmp_path):
    path = make_notebook(tmp_path / "bare.ipynb", None, "x = 1")
    with pytest.raises(SGNError, match="bare.ipynb: no cell tagged 'parameters'"):
        notebook_parameters(path)


def test_two_parameters_cells_are_an_error(tmp_path):
    path = make_notebook(tmp_path / "two.ipynb", "x = 1")
    nb = nbformat.read(path, as_version=4)
    nb.cells.append(new_code_cell("y = 2", metadata={"tags": ["parameters"]}))
    nbformat.write(nb, path)
    with pytest.raises(SGNError, match="2 cells tagged 'parameters'"):
        notebook_parameters(path)


@pytest.mark.parametrize("source, message", [
    ("x = len([1, 2])", "parameter x .* not a literal"),
    ("shape = (1, 2)", "parameter shape has a default of type tuple"),
    ("import os", "line 1: expected `name = literal`"),
    ("a, b = 1, 2", "line 1: expected `name = literal`"),
    ("%matplotlib inline", "not Python"),
])
def test_parameters_that_cannot_be_injected_are_errors(tmp_path, source, message):
    path = make_notebook(tmp_path / "bad.ipynb", source)
    with pytest.raises(SGNError, match=message):
        notebook_parameters(path)


def test_unknown_parameter_names_the_known_ones(tiny):
    with pytest.raises(SGNError, match=r"unknown parameter 'lr'; its parameters: x, rate, fail, out_dir, names"):
        check_parameters(tiny, {"lr": 0.1})


@pytest.mark.parametrize("name, value", [("x", "3"), ("x", True), ("x", 1.5), ("fail", 1), ("names", "a"),
                                         ("out_dir", Path("/tmp")), ("rate", None)])
def test_a_value_of_another_type_is_an_error(tiny, name, value):
    with pytest.raises(SGNError, match=f"parameter {name}"):
        check_parameters(tiny, {name: value})


def test_an_int_for_a_float_becomes_a_float(tiny):
    checked = check_parameters(tiny, {"rate": 2, "x": 3})
    assert checked == {"rate": 2.0, "x": 3} and isinstance(checked["rate"], float)


# -- execution ------------------------------------------------------------------


def test_run_records_metadata_caches_and_reruns_on_change(tiny, tmp_path):
    out = tmp_path / "executed" / "tiny.ipynb"
    params = {"x": 3, "out_dir": str(tmp_path / "side")}
    first = run_notebook(tiny, out, params, progress=False)
    assert not first.cached and runs(tmp_path / "side") == ["3"]
    record = json.loads(out.read_text())["metadata"]["sgn"]
    assert record["cache_key"] == first.cache_key
    assert record["parameters"] == params
    assert record["sgn_version"] == sgn.__version__ and "git_commit" in record and record["elapsed_s"] > 0
    assert json.loads(out.read_text())["metadata"]["papermill"]["output_path"] == str(out)
    assert [p.name for p in out.parent.iterdir()] == ["tiny.ipynb"]  # no temporary file left behind

    again = run_notebook(tiny, out, params, progress=False)
    assert again.cached and again.cache_key == first.cache_key
    assert runs(tmp_path / "side") == ["3"]  # not executed

    changed = run_notebook(tiny, out, {**params, "x": 4}, progress=False)
    assert not changed.cached and runs(tmp_path / "side") == ["3", "4"]


def test_failure_names_the_cell_and_keeps_the_previous_copy(tiny, tmp_path):
    out = tmp_path / "executed" / "tiny.ipynb"
    side = str(tmp_path / "side")
    run_notebook(tiny, out, {"out_dir": side}, progress=False)
    previous = out.read_bytes()
    with pytest.raises(NotebookError) as info:
        run_notebook(tiny, out, {"out_dir": side, "fail": True}, progress=False)
    # cell 4 of the source notebook: markdown, parameters, BODY, FAIL (papermill's injected cell not counted)
    message = str(info.value)
    assert message.startswith("notebook tiny failed in cell 4 (In [")
    assert "ValueError: forced failure;" in message and "second line" not in message
    assert "raise ValueError" in info.value.traceback and info.value.cell == 4
    assert out.read_bytes() == previous
    failed = out.with_name("tiny.failed.ipynb")
    assert info.value.failed_copy == failed and "forced failure" in failed.read_text()


def test_a_missing_kernel_is_a_clear_error(tiny, tmp_path):
    with pytest.raises(SGNError, match="no Jupyter kernel named 'no-such-kernel'"):
        run_notebook(tiny, tmp_path / "out.ipynb", {}, kernel_name="no-such-kernel", progress=False)
    assert not (tmp_path / "out.ipynb").exists()


def test_pipeline_reruns_downstream_of_a_code_change_only(tmp_path):
    side = tmp_path / "side"
    first = make_notebook(tmp_path / "nb" / "01_a.ipynb", f'x = 1\nout_dir = "{side / "a"}"', BODY)
    second = make_notebook(tmp_path / "nb" / "02_b.ipynb", f'x = 1\nout_dir = "{side / "b"}"', BODY)
    notebooks = [first, second]
    out = tmp_path / "executed"

    run_pipeline(notebooks, {}, out, progress=False)
    assert [r.cached for r in run_pipeline(notebooks, {}, out, progress=False)] == [True, True]
    # a parameter of the first notebook changes what the second one reads: both run
    assert [r.cached for r in run_pipeline(notebooks, {"01_a": {"x": 2}}, out, progress=False)] == [False, False]
    # prose does not: only the edited notebook runs
    make_notebook(first, f'x = 1\nout_dir = "{side / "a"}"', BODY, prose="# Edited prose")
    assert [r.cached for r in run_pipeline(notebooks, {"01_a": {"x": 2}}, out, progress=False)] == [False, True]
    assert runs(side / "a") == ["1", "2", "2"] and runs(side / "b") == ["1", "1"]


def test_pipeline_stops_at_the_first_failure(tmp_path):
    make_notebook(tmp_path / "nb" / "01_a.ipynb", "fail = True", FAIL.replace("x * 2", "2"))
    make_notebook(tmp_path / "nb" / "02_b.ipynb", f'x = 1\nout_dir = "{tmp_path / "side"}"', BODY)
    with pytest.raises(NotebookError, match="notebook 01_a failed in cell 3"):
        run_pipeline(sorted((tmp_path / "nb").glob("*.ipynb")), {}, tmp_path / "executed", progress=False)
    assert runs(tmp_path / "side") == []


# -- profiles -------------------------------------------------------------------


def _chapters(folder: Path, text: str) -> Path:
    (folder / "chapters.yaml").write_text(textwrap.dedent(text))
    return folder


def test_load_profile_checks_chapters_and_parameters(tmp_path):
    notebooks = tmp_path / "notebooks"
    make_notebook(notebooks / "01_a.ipynb", PARAMETERS)
    make_notebook(notebooks / "02_b.ipynb", 'rate = 2.0  # shared\nout_dir = "."  # given by the runner')
    _chapters(notebooks, "root: 01_a\nchapters:\n  - {notebook: 01_a}\n  - {notebook: 02_b}\n")
    profile = notebooks / "profiles" / "smoke.yaml"
    profile.parent.mkdir()
    profile.write_text("shared:\n  rate: 3\nchapters:\n  01_a:\n    names: [c]\n  02_b:\n    rate: 4\n")
    assert load_profile(profile) == {"01_a": {"rate": 3.0, "names": ["c"]}, "02_b": {"rate": 4.0}}

    for text, message in [
        ("chapters:\n  01_c:\n    rate: 1\n", "smoke.yaml: 01_c is not a chapter of"),
        ("chapters:\n  01_a:\n    rate: fast\n", "smoke.yaml: 01_a.ipynb: parameter rate expects float"),
        ("shared:\n  speed: 1\n", "smoke.yaml: shared parameter 'speed' is a parameter of no chapter"),
        ("01_a:\n  rate: 1\n", "expected a mapping with `shared` and `chapters` sections"),
        ("chapters: [1\n", "not valid YAML"),
    ]:
        profile.write_text(text)
        with pytest.raises(SGNError, match=message):
            load_profile(profile)


def test_runner_gives_each_chapter_its_profile_and_folders(tmp_path):
    notebook = make_notebook(tmp_path / "notebooks" / "01_a.ipynb",
                             'profile = "cpu"  # profile\nout_dir = "."  # out\nresults_dir = "."  # all results')
    given = chapter_parameters(notebook, "smoke", tmp_path / "results" / "smoke" / "executed")
    assert given == {"profile": "smoke", "out_dir": "../results/smoke/01_a", "results_dir": "../results/smoke"}


@pytest.mark.parametrize("text,message", [
    ("root: 01_a\nchapters:\n  - {notebook: 01_z}\n", "chapter .*01_z.* names no notebook"),
    ("root: 01_a\nchapters:\n  - {notebook: 01_a}\n  - {notebook: 01_a}\n", "chapter 01_a is listed twice"),
    ("root: 01_a\nparts: [A]\nchapters:\n  - {notebook: 01_a, part: B}\n", "part 'B' is not one of parts"),
    ("root: 09_x\nchapters:\n  - {notebook: 01_a}\n", "root '09_x' is not one of the chapters"),
    ("root: 01_a\nchapters:\n  - {notebook: 01_a}\npages:\n  - {file: api, part: Z}\n", "page .* needs a file"),
    ("chapters: 01_a\n", "expected a mapping with a list of chapters"),
])
def test_chapter_list_errors_are_one_line(tmp_path, text, message):
    make_notebook(tmp_path / "01_a.ipynb", PARAMETERS)
    with pytest.raises(SGNError, match=message):
        read_chapters(_chapters(tmp_path, text))


# -- the repository's own notebooks and profiles ----------------------------------


@pytest.mark.parametrize("notebook", read_chapters(ROOT / "notebooks").notebooks, ids=lambda p: p.stem)
def test_repository_notebook_has_an_injectable_parameters_cell(notebook):
    assert notebook_parameters(notebook)


@pytest.mark.parametrize("profile", sorted((ROOT / "notebooks" / "profiles").glob("*.yaml")), ids=lambda p: p.stem)
def test_repository_profile_is_valid(profile):
    load_profile(profile)


def test_executed_notebooks_skip_a_killed_runs_temporary(tmp_path):
    from sgn.lab.report import executed_notebooks

    (tmp_path / ".04_a.ipynb.tmp-123-x.ipynb").write_text("{")  # half-written when its run was killed
    assert executed_notebooks(tmp_path).empty
