"""Resumable notebook sweeps over a parameter grid (sgn.lab.sweep), local and on Dask."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from sgn.cli import main
from sgn.lab.sweep import _read_results, load_grid, point_id, run_sweep, write_result
from sgn.utils import SGNError

ROOT = Path(__file__).resolve().parent.parent

PARAMETERS = '''x = 1  # the input
fail = False  # raise on purpose
out_dir = "."  # set by the sweep
'''
# Counts executions in out_dir/runs.txt, fails on request, else writes result.json.
BODY = '''import pathlib
from sgn.lab.sweep import write_result
with open(pathlib.Path(out_dir) / "runs.txt", "a") as f:
    f.write("run\\n")
if fail:
    raise ValueError("forced")
write_result(out_dir, {"y": x * 2, "x": x, "fail": fail, "curve": [x, x]})'''


def make_notebook(path: Path, parameters: str = PARAMETERS, body: str = BODY) -> Path:
    nb = new_notebook(cells=[new_code_cell(parameters, metadata={"tags": ["parameters"]}), new_code_cell(body)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


def make_grid(folder: Path, text: str) -> Path:
    path = folder / "grid.yaml"
    path.write_text(text)
    return path


# The case: four smoke points, one of which fails.
FOUR_POINTS = """notebook: sweep.ipynb
grid:
  x: [1, 2, 3]
points:
  - {x: 4, fail: true}
"""


@pytest.fixture
def four_points(tmp_path) -> Path:
    make_notebook(tmp_path / "sweep.ipynb")
    return make_grid(tmp_path, FOUR_POINTS)


def runs_per_point(out: Path) -> dict[str, int]:
    return {p.name: len((p / "runs.txt").read_text().split()) for p in sorted((out / "points").iterdir())}


# -- grid files -------------------------------------------------------------------


def test_grid_expands_product_and_points_with_stable_ids(tmp_path):
    make_notebook(tmp_path / "sweep.ipynb", PARAMETERS + "rate = 0.5\n")
    grid = load_grid(make_grid(tmp_path, """notebook: sweep.ipynb
parameters: {rate: 1}
grid:
  x: [1, 2]
  fail: [false, true]
points:
  - {x: 1, fail: false}
  - {x: 9}
"""))
    # the explicit point repeating a grid point is run once; the int rate is normalised to float
    assert list(grid.points.values()) == [
        {"rate": 1.0, "x": 1, "fail": False}, {"rate": 1.0, "x": 1, "fail": True},
        {"rate": 1.0, "x": 2, "fail": False}, {"rate": 1.0, "x": 2, "fail": True}, {"rate": 1.0, "x": 9}]
    assert grid.swept == ["x", "fail"]
    ids = list(grid.points)
    assert ids[1].startswith("x=1__fail=true-") and ids[4].startswith("x=9-")
    assert ids == list(load_grid(tmp_path / "grid.yaml").points)  # stable
    assert point_id({"x": 1, "rate": 2.0}, ["x"]) != point_id({"x": 1, "rate": 1.0}, ["x"])


@pytest.mark.parametrize("text, message", [
    ("notebook: sweep.ipynb\ngrid: {x: [1], lr: [0.1]}\n", r"unknown parameter 'lr'; its parameters: x, fail, out_dir"),
    ("notebook: sweep.ipynb\ngrid: {x: [1.5]}\n", "parameter x expects int"),
    ("notebook: sweep.ipynb\n", "empty grid"),
    ("notebook: sweep.ipynb\ngrid: {x: []}\n", "grid.x must be a non-empty list"),
    ("notebook: sweep.ipynb\ngrid: {x: 3}\n", "grid.x must be a non-empty list"),
    ("notebook: sweep.ipynb\nparameters: {x: 1}\ngrid: {x: [2]}\n", "x is both in `parameters` and in `grid`"),
    ("notebook: sweep.ipynb\npoints: [{out_dir: here}]\n", "out_dir is set by the sweep"),
    ("notebook: sweep.ipynb\ngrids: {x: [1]}\n", "unknown key 'grids'"),
    ("notebook: other.ipynb\ngrid: {x: [1]}\n", "notebook other.ipynb not found"),
    ("notebook: sweep.ipynb\ngrid: {x: [1\n", "not valid YAML"),
])
def test_bad_grid_files_are_one_line_errors(tmp_path, text, message):
    make_notebook(tmp_path / "sweep.ipynb")
    with pytest.raises(SGNError, match=message):
        load_grid(make_grid(tmp_path, text))


def test_a_swept_notebook_needs_out_dir(tmp_path):
    make_notebook(tmp_path / "sweep.ipynb", "x = 1\n")
    with pytest.raises(SGNError, match="needs a str parameter 'out_dir'"):
        load_grid(make_grid(tmp_path, "notebook: sweep.ipynb\ngrid: {x: [1]}\n"))


def test_results_must_be_written_and_may_not_contradict_parameters(tmp_path):
    with pytest.raises(SGNError, match="without writing result.json"):
        _read_results(tmp_path, {})
    write_result(tmp_path, {"x": 1, "y": 2.5, "status": "done"})
    with pytest.raises(SGNError, match="result 'status' clashes"):
        _read_results(tmp_path, {"x": 1})
    write_result(tmp_path, {"x": 1, "y": 2.5})
    assert _read_results(tmp_path, {"x": 1}) == {"y": 2.5}  # an echoed parameter is dropped
    with pytest.raises(SGNError, match="result 'x' clashes"):
        _read_results(tmp_path, {"x": 2})


def test_dask_needs_a_scheduler(four_points, tmp_path):
    with pytest.raises(SGNError, match="needs --scheduler"):
        run_sweep(four_points, tmp_path / "out", executor="dask")


# -- running sweeps ------------------------------------------------------------------


def test_sweep_records_a_failure_and_a_rerun_runs_only_it(four_points, tmp_path, capsys):
    out = tmp_path / "out"
    frame = run_sweep(four_points, out, jobs=2, progress=False)
    assert list(frame.columns) == ["point_id", "status", "x", "fail", "y", "curve", "error", "elapsed_s"]
    assert frame["status"].tolist() == ["ok", "ok", "ok", "failed"]
    assert frame["y"].tolist()[:3] == [2, 4, 6] and frame["curve"][0] == "[1, 1]"
    assert frame["fail"].tolist() == [False, False, False, True]  # unset values are the notebook's defaults
    failed = frame["point_id"][3]
    assert frame["error"][3].startswith("notebook sweep failed in cell 2") and "ValueError: forced" in frame["error"][3]
    error_txt = (out / "points" / failed / "error.txt").read_text()
    assert "ValueError: forced" in error_txt and "Traceback" in error_txt
    assert (out / "points" / failed / "sweep.failed.ipynb").exists()
    assert (out / "points" / frame["point_id"][0] / "sweep.ipynb").exists()
    on_disk = pd.read_csv(out / "results.csv")
    assert on_disk["status"].tolist() == frame["status"].tolist() and len(on_disk) == 4
    assert json.loads((out / "sweep.json").read_text())["points"] == 4
    assert set(runs_per_point(out).values()) == {1}

    # again, through the command line: only the failed point runs, and the exit is an error
    assert main(["sweep", str(four_points), "--out", str(out)]) == 2
    assert "1 of 4 points failed" in capsys.readouterr().err
    assert runs_per_point(out) == {**{pid: 1 for pid in frame["point_id"][:3]}, failed: 2}
    assert pd.read_csv(out / "results.csv")["status"].tolist() == ["ok", "ok", "ok", "failed"]


def test_sweep_on_a_dask_cluster(tmp_path):
    from dask.distributed import LocalCluster

    make_notebook(tmp_path / "sweep.ipynb")
    grid = make_grid(tmp_path, "notebook: sweep.ipynb\ngrid:\n  x: [1, 2]\n")
    # In-process workers over TCP on the loopback: a real scheduler address, no extra interpreters to start.
    with LocalCluster(host="127.0.0.1", protocol="tcp://", n_workers=1, threads_per_worker=2, processes=False,
                      dashboard_address="127.0.0.1:0") as cluster:
        frame = run_sweep(grid, tmp_path / "out", executor="dask", scheduler=cluster.scheduler_address,
                          progress=False)
    assert frame["status"].tolist() == ["ok", "ok"] and frame["y"].tolist() == [2, 4], frame["error"].tolist()
    assert set(runs_per_point(tmp_path / "out").values()) == {1}


# -- the repository's grids ----------------------------------------------------------


@pytest.mark.parametrize("grid", sorted((ROOT / "sweeps").glob("*.yaml")), ids=lambda p: p.stem)
def test_repository_grid_is_valid(grid):
    assert load_grid(grid).points
