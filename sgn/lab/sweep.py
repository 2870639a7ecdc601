"""Parameter sweeps: one notebook executed over a grid of parameter values.

``sgn sweep GRID.yaml --out DIR [--jobs N]`` runs a notebook once per grid point
with papermill, in parallel processes, and collects one row per point into
``DIR/results.csv``. It is resumable: a finished point is not run again, a failed
one is recorded with its error and the others go on; running the same command
again runs only what is missing or failed. ``--executor dask --scheduler ADDRESS``
sends the points to an existing Dask cluster instead of local processes.

The grid file (YAML)::

    notebook: ../notebooks/02_train.ipynb  # relative to this file
    parameters:        # the same for every point
      runs_dir: ../runs/cpu/depth
    grid:              # the cartesian product of these lists (one list here)
      models: [{sgn_depth2: {model.depth: 2}}, {sgn_depth4: {model.depth: 4}}]
    points:            # optional: explicit points, each merged over `parameters`
      - {models: {sgn_depth6: {model.depth: 6}}}

A notebook that runs a study (the ablations) is a grid of its own: give
:func:`sgn.lab.study.run_study` more variants rather than sweeping it (one runner per grid).

The points are the product of ``grid`` followed by ``points`` (one of the two is
needed); a point repeated is run once. Values are YAML, so they reach the notebook
typed (``1e-3`` must be written ``1.0e-3`` for YAML to read a float).

The notebook's side of the contract: it declares a ``str`` parameter ``out_dir``,
which the sweep sets to the point's folder, and writes its results there as
``result.json``, a JSON object (:func:`write_result` does it atomically). Scalar
values become columns of ``results.csv``; lists and dicts are stored as JSON text.

``DIR`` afterwards::

    sweep.json                     the grid, notebook, sgn version and git commit
    results.csv                    one row per point: point_id, status, parameters,
                                   results, error, elapsed_s
    points/<id>/point.json         the sweep's record: status, parameters, results, error
    points/<id>/NAME.ipynb         the executed notebook
    points/<id>/result.json        what the notebook wrote
    points/<id>/error.txt          a failed point's error and traceback
    points/<id>/NAME.failed.ipynb  a failed point's execution

A point's id is readable and stable: its swept values and a hash of all its
parameters, e.g. ``config=cpu,seeds=[2]-1c0ffee1``. A point is finished when
its ``point.json`` says ``ok``. With Dask, every worker must see ``DIR`` and the
notebook at the same paths (a shared file system) and have ``sgn`` installed.
"""

from __future__ import annotations

import ast
import datetime
import hashlib
import itertools
import json
import logging
import math
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import sgn
from sgn.lab.notebooks import (DEFAULT_KERNEL, NotebookError, check_parameters, notebook_parameters,
                               notebook_source, run_notebook)
from sgn.utils import SGNError, atomic_path, atomic_write_text, git_commit, read_yaml, sha256_file
from sgn.workers import share_of_cores, worker_pool

log = logging.getLogger("sgn")

OUT_DIR_PARAM = "out_dir"
# A notebook that calls this runs a grid of its own (variants x seeds), so it is not swept.
STUDY_RUNNER = "run_study"
RESULT_FILE = "result.json"
EXECUTORS = ("local", "dask")
# Columns the sweep adds to every row; results may not use these names.
RESERVED_COLUMNS = ("point_id", "status", "error", "elapsed_s")
GRID_KEYS = ("notebook", "parameters", "grid", "points")


@dataclass(frozen=True)
class Grid:
    """A parsed grid file.

    Attributes:
        path: the grid file.
        notebook: the notebook to execute (absolute).
        points: ``{point_id: parameters}`` in grid order, parameters checked against
            the notebook and without ``out_dir``.
        swept: names that vary across points (grid and ``points`` keys), in order.
        defaults: the notebook's parameter defaults, for the table's columns of
            parameters that some points leave unset.
    """

    path: Path
    notebook: Path
    points: dict[str, dict]
    swept: list[str]
    defaults: dict[str, Any]


def write_result(out_dir: str | os.PathLike, results: Mapping[str, Any]) -> Path:
    """Write a sweep point's results as ``out_dir/result.json``, atomically.

    Call it from a swept notebook, last: the sweep reads the file only once the
    notebook has finished without error.

    Args:
        out_dir: the notebook's ``out_dir`` parameter.
        results: ``{name: value}``; scalars become columns, lists and dicts JSON text.

    Returns:
        The path written.
    """
    path = Path(out_dir) / RESULT_FILE
    atomic_write_text(path, json.dumps(dict(results), indent=1, allow_nan=True) + "\n")
    return path


# ---------------------------------------------------------------------------
# Grid files


def _slug_value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def point_id(params: Mapping[str, Any], swept: Iterable[str]) -> str:
    """A readable, stable folder name for a point: its swept values and a hash of all its parameters."""
    digest = hashlib.sha256(json.dumps(dict(params), sort_keys=True).encode()).hexdigest()[:8]
    slug = "__".join(f"{name}={_slug_value(params[name])}" for name in swept if name in params)
    slug = re.sub(r"[^A-Za-z0-9._=+-]", "_", slug)[:80]
    return f"{slug}-{digest}" if slug else digest


def _mapping(path: Path, key: str, value: Any) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise SGNError(f"{path}: {key} must be a mapping of parameter to value")
    return value


def load_grid(path: str | os.PathLike) -> Grid:
    """Read and check a grid file (format in the module docstring).

    Args:
        path: the grid YAML file.

    Returns:
        A :class:`Grid` whose points were all checked against the notebook.

    Raises:
        SGNError: unreadable YAML, an unknown key, no points, a notebook without an
            ``out_dir`` parameter, or a parameter the notebook does not take.
    """
    path = Path(path)
    data = read_yaml(path, "grid file")
    if not isinstance(data, dict):
        raise SGNError(f"{path}: expected a mapping with keys {', '.join(GRID_KEYS)}")
    unknown = sorted(set(data) - set(GRID_KEYS))
    if unknown:
        raise SGNError(f"{path}: unknown key {unknown[0]!r}; a grid file has {', '.join(GRID_KEYS)}")
    notebook = _grid_notebook(path, data.get("notebook"))
    fixed = _mapping(path, "parameters", data.get("parameters"))
    axes = _mapping(path, "grid", data.get("grid"))
    extra = data.get("points") or []
    if not isinstance(extra, list) or not all(isinstance(p, dict) for p in extra):
        raise SGNError(f"{path}: `points` must be a list of mappings of parameter to value")
    for name, values in axes.items():
        if not isinstance(values, list) or not values:
            raise SGNError(f"{path}: grid.{name} must be a non-empty list of values")
        if name in fixed:
            raise SGNError(f"{path}: {name} is both in `parameters` and in `grid`; keep one")
    if not axes and not extra:
        raise SGNError(f"{path}: empty grid; give `grid` (lists to combine) or `points`")

    declared = notebook_parameters(notebook)
    out_param = declared.get(OUT_DIR_PARAM)
    if out_param is None or not isinstance(out_param.default, str):
        raise SGNError(f"{notebook.name}: a swept notebook needs a str parameter {OUT_DIR_PARAM!r}, "
                       "the folder where it writes result.json")
    combos = [dict(zip(axes, values)) for values in itertools.product(*axes.values())] if axes else []
    points: dict[str, dict] = {}
    swept = list(dict.fromkeys([*axes, *(name for p in extra for name in p)]))
    for raw in combos + extra:
        params = {**fixed, **raw}
        if OUT_DIR_PARAM in params:
            raise SGNError(f"{path}: {OUT_DIR_PARAM} is set by the sweep (to each point's folder); remove it")
        try:
            params = check_parameters(notebook, params)
        except SGNError as err:
            raise SGNError(f"{path}: {err}") from None
        points.setdefault(point_id(params, swept), params)
    return Grid(path, notebook, points, swept, {name: p.default for name, p in declared.items()})


def _grid_notebook(path: Path, name: Any) -> Path:
    """The notebook a grid file names: it exists, and does not run a study (a grid of its own)."""
    if not isinstance(name, str):
        raise SGNError(f"{path}: `notebook` must name the notebook to run (relative to the grid file)")
    notebook = (path.resolve().parent / name).resolve()
    if not notebook.is_file():
        raise SGNError(f"{path}: notebook {name} not found ({notebook})")
    if STUDY_RUNNER in _called_names(notebook_source(notebook)):
        raise SGNError(f"{path}: {notebook.name} runs a study ({STUDY_RUNNER}), a grid of its own; one runner per "
                       "grid: give it more variants, or sweep a notebook that trains or scores one point")
    return notebook


def _called_names(source: str) -> set[str]:
    """The names of the functions ``source`` calls (``f(...)`` and ``m.f(...)``)."""
    calls = (node.func for node in ast.walk(ast.parse(source)) if isinstance(node, ast.Call))
    return {f.id if isinstance(f, ast.Name) else f.attr for f in calls if isinstance(f, (ast.Name, ast.Attribute))}


# ---------------------------------------------------------------------------
# One point (runs in a worker process or on a Dask worker)


def _failure(error: str, detail: str = "", elapsed_s: float = math.nan) -> dict:
    return {"status": "failed", "error": error, "detail": detail, "results": {}, "elapsed_s": elapsed_s}


def _read_results(point_dir: Path, params: Mapping[str, Any]) -> dict:
    """The notebook's ``result.json``, less the parameters it echoes (``params``: all of them)."""
    path = point_dir / RESULT_FILE
    if not path.is_file():
        raise SGNError(f"the notebook finished without writing {RESULT_FILE} to out_dir (use sgn.lab.sweep.write_result)")
    try:
        results = json.loads(path.read_text())
    except ValueError as err:
        raise SGNError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(results, dict):
        raise SGNError(f"{path}: expected a JSON object of results")
    for name in list(results):
        # a notebook may echo its parameters; only a contradicting value is an error
        if name in params and results[name] == params[name]:
            del results[name]
        elif name in params or name in RESERVED_COLUMNS:
            raise SGNError(f"{path}: result {name!r} clashes with a parameter or a column of results.csv")
    return results


def _execute_point(notebook: str, point_dir: str, params: dict, kernel_name: str) -> dict:
    """Run one point and return its outcome; never raises for a notebook's own failure.

    A top-level function, so that process pools and Dask can pickle it by name.
    """
    folder = Path(point_dir)
    folder.mkdir(parents=True, exist_ok=True)
    # a result left by an earlier, failed attempt must not pass for this run's
    (folder / RESULT_FILE).unlink(missing_ok=True)
    started = time.perf_counter()
    params = {**params, OUT_DIR_PARAM: str(folder)}
    try:
        run_notebook(notebook, folder / Path(notebook).name, params, cache=False, kernel_name=kernel_name,
                     progress=False)
        defaults = {name: p.default for name, p in notebook_parameters(notebook).items()}
        results = _read_results(folder, {**defaults, **params})
    except NotebookError as err:
        return _failure(str(err), err.traceback, time.perf_counter() - started)
    except SGNError as err:
        return _failure(str(err), "", time.perf_counter() - started)
    return {"status": "ok", "results": results, "error": "", "detail": "", "elapsed_s": time.perf_counter() - started}


# ---------------------------------------------------------------------------
# Executors: each yields (point_id, outcome) as points finish


Task = tuple[str, tuple[str, str, dict, str]]  # (point_id, arguments of _execute_point)


def _run_local(tasks: list[Task], jobs: int) -> Iterator[tuple[str, dict]]:
    if jobs == 1:  # in this process: no start-up cost, and a debugger sees the call
        for pid, args in tasks:
            yield pid, _execute_point(*args)
        return
    from concurrent.futures import as_completed

    # each point (and the kernel it starts) gets its share of the cores
    with worker_pool(jobs, threads=share_of_cores(jobs)) as pool:
        futures = {pool.submit(_execute_point, *args): pid for pid, args in tasks}
        for future in as_completed(futures):
            try:
                yield futures[future], future.result()
            except Exception as err:  # the worker process died (killed, out of memory) or the call raised
                yield futures[future], _failure(f"{type(err).__name__}: {err}")


def _run_dask(tasks: list[Task], scheduler: str) -> Iterator[tuple[str, dict]]:
    try:
        from dask.distributed import Client, as_completed
    except ImportError:
        raise SGNError("--executor dask needs dask.distributed: pip install -e '.[cluster]'") from None
    try:
        client = Client(scheduler)
    except (OSError, TimeoutError) as err:
        raise SGNError(f"cannot reach the Dask scheduler at {scheduler} ({err})") from None
    with client:
        # pure=False: a rerun of a failed point must execute again, not return the cached failure
        futures = {client.submit(_execute_point, *args, pure=False): pid for pid, args in tasks}
        for future in as_completed(futures):
            try:
                yield futures[future], future.result()
            except Exception as err:  # the worker died or could not run the task
                yield futures[future], _failure(f"{type(err).__name__}: {err}")


# ---------------------------------------------------------------------------
# Sweeps


def _read_point(point_dir: Path) -> dict:
    try:
        return json.loads((point_dir / "point.json").read_text())
    except (OSError, ValueError):
        return {}


def _record_point(point_dir: Path, pid: str, params: dict, outcome: dict, notebook_sha: str) -> dict:
    """Write a point's ``point.json`` (and ``error.txt`` when it failed); return the record."""
    record = {
        "point_id": pid,
        "status": outcome["status"],
        "parameters": params,
        "results": outcome["results"],
        "error": outcome["error"],
        "elapsed_s": round(outcome["elapsed_s"], 3),
        "notebook_sha256": notebook_sha,
        "finished_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    if outcome["status"] == "failed":
        text = "\n\n".join(filter(None, [outcome["error"], outcome["detail"]]))
        atomic_write_text(point_dir / "error.txt", text + "\n")
    else:
        (point_dir / "error.txt").unlink(missing_ok=True)
    atomic_write_text(point_dir / "point.json", json.dumps(record, indent=1, allow_nan=True) + "\n")
    return record


def _cell(value: Any) -> Any:
    return json.dumps(value) if isinstance(value, (list, dict)) else value


def _results_frame(grid: Grid, records: Mapping[str, dict]):
    """One row per grid point, in grid order; points not run yet have status ``pending``."""
    import pandas as pd

    # swept parameters first: they are what tells the rows apart
    param_names = list(dict.fromkeys([*grid.swept, *(n for p in grid.points.values() for n in p)]))
    result_names = list(dict.fromkeys(n for r in records.values() for n in r["results"]))
    rows = []
    for pid, params in grid.points.items():
        record = records.get(pid, {"status": "pending", "results": {}, "error": "", "elapsed_s": math.nan})
        rows.append({
            "point_id": pid,
            "status": record["status"],
            **{name: _cell(params.get(name, grid.defaults[name])) for name in param_names},
            **{name: _cell(value) for name, value in record["results"].items()},
            "error": record["error"],
            "elapsed_s": record["elapsed_s"],
        })
    return pd.DataFrame(rows, columns=["point_id", "status", *param_names, *result_names, "error", "elapsed_s"])


def _write_results(grid: Grid, records: Mapping[str, dict], out_dir: Path):
    frame = _results_frame(grid, records)
    with atomic_path(out_dir / "results.csv") as tmp:
        frame.to_csv(tmp, index=False)
    return frame


def run_sweep(
    grid_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    jobs: int = 1,
    executor: str = "local",
    scheduler: str | None = None,
    force: bool = False,
    kernel_name: str = DEFAULT_KERNEL,
    progress: bool = True,
):
    """Execute a notebook over a parameter grid; resumable.

    Args:
        grid_path: the grid YAML file (format in the module docstring).
        out_dir: the sweep's folder (layout in the module docstring).
        jobs: parallel processes of the local executor (each runs one kernel).
            They are started with ``spawn``, so a script that calls this with
            ``jobs > 1`` needs the ``if __name__ == "__main__":`` guard.
        executor: ``"local"`` (processes on this machine) or ``"dask"`` (an existing
            Dask cluster; its workers decide the parallelism and ``jobs`` is unused).
        scheduler: the Dask scheduler's address, e.g. ``tcp://10.0.0.5:8786``.
        force: run every point again, finished or not.
        kernel_name: Jupyter kernel to run the notebook on.
        progress: show a progress bar over points.

    Returns:
        The ``results.csv`` table as a pandas DataFrame: one row per point with
        ``point_id``, ``status`` (``ok`` / ``failed``), the parameters (a value a
        point leaves unset is the notebook's default), the results, ``error`` and
        ``elapsed_s``.

    Raises:
        SGNError: a bad grid file or executor setting. A failing point does not
            raise: it is recorded in its row, in ``error.txt``, and run again next time.
    """
    from tqdm.auto import tqdm

    _check_executor(executor, scheduler, jobs)
    grid = load_grid(grid_path)
    out_dir = Path(out_dir).resolve()
    points_dir = out_dir / "points"
    notebook_sha = _write_sweep_record(grid, out_dir)
    records, done = _finished_points(grid, points_dir, notebook_sha, force)
    tasks = [(pid, (str(grid.notebook), str(points_dir / pid), params, kernel_name))
             for pid, params in grid.points.items() if pid not in done]
    log.info("sweep %s: %d points, %d finished, %d to run", grid.path.name, len(grid.points), len(done), len(tasks))

    _write_results(grid, records, out_dir)
    outcomes = _run_dask(tasks, scheduler) if executor == "dask" else _run_local(tasks, jobs)
    with tqdm(total=len(grid.points), initial=len(done), unit="point", desc=grid.path.stem,
              disable=not progress) as bar:
        for pid, outcome in outcomes:
            records[pid] = _record_point(points_dir / pid, pid, grid.points[pid], outcome, notebook_sha)
            if outcome["status"] == "failed":
                log.warning("point %s failed: %s", pid, outcome["error"])
            # rewritten after every point so an interrupted sweep still leaves a current table
            _write_results(grid, records, out_dir)
            bar.update()
    return _write_results(grid, records, out_dir)


def _check_executor(executor: str, scheduler: str | None, jobs: int) -> None:
    if executor not in EXECUTORS:
        raise SGNError(f"unknown executor {executor!r}; choose from {', '.join(EXECUTORS)}")
    if executor == "dask" and not scheduler:
        raise SGNError("--executor dask needs --scheduler ADDRESS (e.g. tcp://127.0.0.1:8786)")
    if jobs < 1:
        raise SGNError(f"--jobs must be at least 1, got {jobs}")


def _finished_points(grid: Grid, points_dir: Path, notebook_sha: str, force: bool) -> tuple[dict[str, dict], set[str]]:
    """The points' records that finished (ok or failed), and the ids not to run again."""
    records = {pid: _read_point(points_dir / pid) for pid in grid.points}
    records = {pid: r for pid, r in records.items() if r.get("status") in ("ok", "failed")}
    done = {pid for pid, r in records.items() if r["status"] == "ok" and not force}
    stale = sum(records[pid].get("notebook_sha256") != notebook_sha for pid in done)
    if stale:
        log.warning("%d finished points ran another version of %s; --force runs them again", stale, grid.notebook.name)
    return records, done


def _write_sweep_record(grid: Grid, out_dir: Path) -> str:
    """Write ``sweep.json`` (the grid, the notebook and its sha256, version, commit); the notebook's sha256."""
    notebook_sha = sha256_file(grid.notebook)
    atomic_write_text(out_dir / "sweep.json", json.dumps({
        "grid": str(grid.path.resolve()),
        "grid_yaml": grid.path.read_text(),
        "notebook": str(grid.notebook),
        "notebook_sha256": notebook_sha,
        "points": len(grid.points),
        "sgn_version": sgn.__version__,
        "git_commit": git_commit(),
    }, indent=1) + "\n")
    return notebook_sha
