"""Executing parameterised notebooks with papermill, cached on their inputs.

The notebooks in ``notebooks/NN_name.ipynb`` are the project's experiments. Each
has exactly one code cell tagged ``parameters``: a flat block of assignments, one
per line, of a literal default with a comment saying why::

    steps = 2000  # training steps; 2000 fit the 10-minute CPU budget
    lr = 1e-3  # Adam learning rate (Sound-of-Pixels)
    classes = ["cello", "flute"]  # classes to mix

:func:`notebook_parameters` reads that cell; :func:`check_parameters` checks a
dict of values against it (unknown names and values of another type are one-line
:class:`~sgn.utils.SGNError`\\ s); :func:`run_notebook` executes a notebook with
papermill, passing the values as typed Python literals (never ``-p`` strings).

Caching: :func:`run_notebook` skips the execution when the executed copy already
records the same *cache key*: a sha256 of the notebook file, its parameter values,
the package code its cells import and the package's data files (:func:`notebook_code`,
:mod:`sgn.provenance`), the kernel name, and any upstream fingerprints. :func:`run_pipeline` runs the notebooks in
order and makes each one depend on the code and parameters of the notebooks before
it, so a change that alters an earlier notebook's results also re-executes the
later ones, while prose edits only re-execute the notebook that changed.

Failure: the executed copy is written to a temporary file and renamed into place
only on success, so the previous executed copy survives a failed run; the failed
execution is kept beside it as ``NAME.failed.ipynb`` and the error names the
notebook and the failing cell.

Chapters: ``notebooks/chapters.yaml`` lists the book's chapters once, in execution
order, with their place in the book (:func:`read_chapters`; the runner, the book's
table of contents and the tests read it).

Profiles: ``notebooks/profiles/NAME.yaml`` (``smoke``, ``cpu``, ``gpu``) give parameter
values: a ``shared`` section for every chapter that declares the parameter, and one
per chapter; the runner adds each chapter's ``profile``, ``out_dir``, ``results_dir``
and ``executed_dir`` (:func:`chapter_parameters`). :func:`load_profile` validates one.

Executed notebooks carry ``metadata.sgn``: the cache key, the parameters (their
provenance), the ``sgn`` version, the git commit, the machine, the kernel and the
wall time.

``sgn notebooks --profile smoke --out DIR`` executes every chapter in order into ``DIR``
(what ``make book`` runs before building the book);
``--force`` executes even those that are up to date. The cache knows nothing of
files a notebook reads or writes outside its parameters: delete the executed copy
(or use ``--force``) after changing data by hand.
"""

from __future__ import annotations

import ast
import asyncio
import contextvars
import datetime
import hashlib
import json
import logging
import math
import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import sgn
from sgn.provenance import source_hashes
from sgn.utils import SGNError, atomic_path, check_output, git_commit, machine, read_yaml, shorten

log = logging.getLogger("sgn")

PARAMETERS_TAG = "parameters"
# papermill tags the cell it inserts after the parameters cell with this.
INJECTED_TAG = "injected-parameters"
DEFAULT_KERNEL = "python3"


@dataclass(frozen=True)
class Parameter:
    """One assignment of a notebook's parameters cell.

    Attributes:
        name: the variable name.
        default: the literal default value.
        comment: the trailing ``# comment`` of its line, without the ``#``.
    """

    name: str
    default: Any
    comment: str = ""


@dataclass(frozen=True)
class RunResult:
    """What :func:`run_notebook` did.

    Attributes:
        notebook: the source notebook.
        output: the executed copy.
        parameters: the values passed to the notebook (after type normalisation).
        cache_key: the key recorded in ``output``'s ``metadata.sgn.cache_key``.
        cached: True when the execution was skipped because ``output`` was up to date.
        elapsed_s: wall time of the execution (of the recorded one when cached).
    """

    notebook: Path
    output: Path
    parameters: dict
    cache_key: str
    cached: bool
    elapsed_s: float


class NotebookError(SGNError):
    """A notebook failed while executing.

    ``str()`` is the one-line message; the attributes carry the details that a
    sweep writes to the point's ``error.txt``.

    Attributes:
        notebook: the source notebook.
        cell: 1-based position of the failing cell in the source notebook, or None.
        traceback: the kernel's traceback text (colour codes removed), or "".
        failed_copy: the saved failed execution, or None when nothing was written.
    """

    def __init__(self, message: str, *, notebook: Path, cell: int | None = None, traceback: str = "",
                 failed_copy: Path | None = None):
        super().__init__(message)
        self.notebook = notebook
        self.cell = cell
        self.traceback = traceback
        self.failed_copy = failed_copy


# ---------------------------------------------------------------------------
# The parameters cell


def _read_notebook(path: Path):
    import nbformat

    if not path.is_file():
        raise SGNError(f"{path}: notebook not found")
    try:
        return nbformat.read(path, as_version=4)
    except Exception as err:  # nbformat raises several unrelated types for a broken file
        raise SGNError(f"{path}: not a readable notebook ({type(err).__name__}: {str(err).splitlines()[0]})") from None


def _parameters_cell_index(nb, path: Path) -> int:
    indices = [i for i, cell in enumerate(nb.cells) if PARAMETERS_TAG in cell.get("metadata", {}).get("tags", [])]
    if not indices:
        raise SGNError(f"{path.name}: no cell tagged {PARAMETERS_TAG!r}; tag the cell of parameter defaults")
    if len(indices) > 1:
        numbers = ", ".join(str(i + 1) for i in indices)
        raise SGNError(f"{path.name}: {len(indices)} cells tagged {PARAMETERS_TAG!r} (cells {numbers}); keep one")
    if nb.cells[indices[0]].cell_type != "code":
        raise SGNError(f"{path.name}: the cell tagged {PARAMETERS_TAG!r} is not a code cell")
    return indices[0]


def _injectable(value: Any) -> bool:
    """True if papermill writes ``value`` back as the same Python literal.

    papermill translates None, bool, int, float, str, list and dict (str keys);
    anything else (a tuple, a Path) would arrive in the notebook as a string.
    """
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, list):
        return all(_injectable(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _injectable(v) for k, v in value.items())
    return False


def notebook_parameters(notebook: str | os.PathLike) -> dict[str, Parameter]:
    """The parameters a notebook declares, in the order of its parameters cell.

    Args:
        notebook: path of a ``.ipynb`` file.

    Returns:
        ``{name: Parameter}``; a default's Python type is the parameter's type.

    Raises:
        SGNError: the notebook has no parameters cell or more than one, or the cell
            holds anything but ``name = literal`` lines (a call, a tuple, a magic).
    """
    path = Path(notebook)
    nb = _read_notebook(path)
    source = nb.cells[_parameters_cell_index(nb, path)].source
    try:
        tree = ast.parse(source)
    except SyntaxError as err:
        raise SGNError(f"{path.name}: parameters cell line {err.lineno}: not Python ({err.msg})") from None
    lines = source.splitlines()
    params: dict[str, Parameter] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            target = node.target
        else:
            target = None
        if not isinstance(target, ast.Name):
            raise SGNError(f"{path.name}: parameters cell line {node.lineno}: expected `name = literal`")
        try:
            default = ast.literal_eval(node.value)
        except ValueError:
            raise SGNError(
                f"{path.name}: parameter {target.id} (line {node.lineno}) has a default that is not a literal; "
                "compute derived values in a later cell"
            ) from None
        if not _injectable(default):
            raise SGNError(
                f"{path.name}: parameter {target.id} has a default of type {type(default).__name__}, which "
                "papermill cannot inject; use None, bool, int, float, str, list or dict"
            )
        comment = lines[node.end_lineno - 1][node.end_col_offset:].strip()
        params[target.id] = Parameter(target.id, default, comment.removeprefix("#").strip())
    return params


def _coerce(label: str, param: Parameter, value: Any) -> Any:
    """``value`` in the parameter's type (an int becomes a float for a float default), or SGNError."""
    default = param.default
    wanted = type(default).__name__
    if not _injectable(value):
        raise SGNError(f"{label}: parameter {param.name}: {value!r} cannot be injected; "
                       "use None, bool, int, float, str, list or dict")
    if default is None:
        return value
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    # bool is a subclass of int: compare exact types so True is not an int and 1 is not a bool
    if type(value) is not type(default):
        raise SGNError(f"{label}: parameter {param.name} expects {wanted} (default {default!r}), "
                       f"got {value!r} ({type(value).__name__})")
    return value


def check_parameters(notebook: str | os.PathLike, params: Mapping[str, Any]) -> dict:
    """Check values against a notebook's parameters cell.

    Args:
        notebook: path of a ``.ipynb`` file.
        params: values to inject, ``{name: value}``.

    Returns:
        The values, in the parameters' types: an int given for a float default
        becomes a float, so the notebook sees the type its cell declares.

    Raises:
        SGNError: a name the cell does not declare (the message lists those it
            does), or a value of another type than the default's (bool and int are
            distinct; an int is accepted for a float; a None default accepts any).
    """
    path = Path(notebook)
    declared = notebook_parameters(path)
    checked = {}
    for name, value in params.items():
        if name not in declared:
            raise SGNError(f"{path.name}: unknown parameter {name!r}; its parameters: {', '.join(declared)}")
        checked[name] = _coerce(path.name, declared[name], value)
    return checked


# ---------------------------------------------------------------------------
# Cache keys


def _canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=True)


def code_fingerprint(notebook: str | os.PathLike, params: Mapping[str, Any]) -> str:
    """sha256 of a notebook's code cells and parameter values, ignoring its prose.

    A later notebook of a pipeline depends on this, not on the whole file, so that
    editing an earlier notebook's markdown does not re-execute everything after it.
    """
    nb = _read_notebook(Path(notebook))
    code = [cell.source for cell in nb.cells if cell.cell_type == "code"]
    return hashlib.sha256(_canonical_json([code, dict(params)]).encode()).hexdigest()


def cache_key(notebook: str | os.PathLike, params: Mapping[str, Any], *, kernel_name: str = DEFAULT_KERNEL,
              depends_on: Sequence[str] = ()) -> str:
    """The key an executed copy must record to be reused.

    Args:
        notebook: path of the source notebook (its bytes are hashed).
        params: the values passed to it (checked and normalised).
        kernel_name: the Jupyter kernel it runs on.
        depends_on: further strings the result depends on (upstream fingerprints).

    Returns:
        A hex sha256.
    """
    digest = hashlib.sha256()
    for part in (Path(notebook).read_bytes(), _canonical_json(dict(params)).encode(),
                 _canonical_json(notebook_code(notebook)).encode(), kernel_name.encode(),
                 *(s.encode() for s in depends_on)):
        digest.update(hashlib.sha256(part).digest())
    return digest.hexdigest()


def notebook_code(notebook: str | os.PathLike) -> dict[str, str]:
    """``{file: sha256}`` of the package code and data a notebook runs: the modules its code
    cells import, what those import, and the package's data files (:mod:`sgn.provenance`)."""
    return source_hashes(notebook_source(notebook))


def notebook_source(notebook: str | os.PathLike) -> str:
    """A notebook's code cells as one Python source (IPython magics and shell lines blanked)."""
    nb = _read_notebook(Path(notebook))
    return "\n".join(_python_only(cell.source) for cell in nb.cells if cell.cell_type == "code")


def _python_only(source: str) -> str:
    """A code cell without its IPython magics and shell lines, which ``ast`` cannot parse."""
    return "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in source.splitlines())


def executed_record(output: str | os.PathLike) -> dict:
    """The ``metadata.sgn`` record :func:`run_notebook` left in an executed copy; {} if missing or unreadable."""
    try:
        record = json.loads(Path(output).read_text())["metadata"]["sgn"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    return record if isinstance(record, dict) else {}


# ---------------------------------------------------------------------------
# Execution


def _check_kernel(kernel_name: str) -> None:
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    # "python3" always resolves while ipykernel is importable: jupyter_client falls back to
    # ipykernel's built-in spec and runs it with this interpreter (sys.executable).
    try:
        KernelSpecManager().get_kernel_spec(kernel_name)
    except NoSuchKernel:
        raise SGNError(
            f"no Jupyter kernel named {kernel_name!r}; install ipykernel into this environment "
            "(pip install -e '.[book]') or register the kernel with `python -m ipykernel install --sys-prefix`"
        ) from None


def strip_ansi(text: str) -> str:
    """``text`` without terminal colour codes (kernels and Sphinx colour their output)."""
    return re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", text)


def _source_cell_number(nb_source, error_cell_index: int, injected: bool) -> int:
    """1-based position in the source notebook of the cell papermill reports by its executed index.

    papermill inserts its ``injected-parameters`` cell right after the parameters cell
    (or replaces one already in the file), which shifts the cells after it by one.
    """
    has_injected = any(INJECTED_TAG in c.get("metadata", {}).get("tags", []) for c in nb_source.cells)
    param_index = next(i for i, c in enumerate(nb_source.cells)
                       if PARAMETERS_TAG in c.get("metadata", {}).get("tags", []))
    shift = 1 if injected and not has_injected and error_cell_index > param_index else 0
    return error_cell_index - shift + 1


def _first_line(text: str) -> str:
    lines = [line for line in str(text).splitlines() if line.strip()]
    return lines[0].strip() if lines else ""


def run_notebook(
    notebook: str | os.PathLike,
    output_notebook: str | os.PathLike,
    params: Mapping[str, Any] | None = None,
    *,
    cwd: str | os.PathLike | None = None,
    cache: bool = True,
    kernel_name: str = DEFAULT_KERNEL,
    depends_on: Sequence[str] = (),
    progress: bool = True,
    log_output: bool = False,
) -> RunResult:
    """Execute a notebook with papermill, or reuse its executed copy when nothing changed.

    Args:
        notebook: the source ``.ipynb``; it is never modified.
        output_notebook: where the executed copy goes. It is replaced only when the
            execution succeeds.
        params: values for the parameters cell, as Python values (checked with
            :func:`check_parameters`); papermill injects them as literals.
        cwd: the kernel's working directory. Default: the notebook's folder, as when
            the notebook is opened in Jupyter, so relative paths mean the same.
        cache: reuse ``output_notebook`` when it records the same cache key.
        kernel_name: Jupyter kernel to run on.
        depends_on: extra strings the cache key includes (see :func:`run_pipeline`).
        progress: show papermill's per-cell progress bar.
        log_output: echo the notebook's output to the ``papermill`` logger.

    Returns:
        A :class:`RunResult`.

    Raises:
        SGNError: a missing notebook or kernel, or bad parameters.
        NotebookError: the notebook raised; the message names the notebook and the
            failing cell. The previous executed copy is left as it was and the failed
            execution is saved as ``NAME.failed.ipynb`` beside it.
    """
    notebook = Path(notebook).resolve()
    output = Path(output_notebook).resolve()
    checked = check_parameters(notebook, params or {})
    key = cache_key(notebook, checked, kernel_name=kernel_name, depends_on=depends_on)
    recorded = executed_record(output) if cache else {}
    if recorded.get("cache_key") == key:
        log.info("%s: up to date, not executed", notebook.stem)
        return RunResult(notebook, output, checked, key, True, float(recorded.get("elapsed_s", math.nan)))

    _check_kernel(kernel_name)
    failed_copy = output.with_name(f"{output.stem}.failed.ipynb")
    workdir = Path(cwd).resolve() if cwd is not None else notebook.parent
    started = time.perf_counter()
    with atomic_path(output) as tmp:
        _execute(notebook, tmp, checked, kernel_name, workdir, failed_copy, progress=progress, log_output=log_output)
        elapsed = time.perf_counter() - started
        _record_metadata(tmp, output, _execution_record(key, checked, kernel_name, elapsed))
    failed_copy.unlink(missing_ok=True)  # a stale failure would mislead once the notebook runs again
    log.info("%s: executed in %.1f s", notebook.stem, elapsed)
    return RunResult(notebook, output, checked, key, False, elapsed)


def _execution_record(key: str, parameters: dict, kernel_name: str, elapsed: float) -> dict:
    """Where an executed copy came from: its cache key, parameters, version, commit, machine, kernel and time."""
    return {
        "cache_key": key,
        "parameters": parameters,
        "sgn_version": sgn.__version__,
        "git_commit": git_commit(),
        "machine": machine(),
        "kernel_name": kernel_name,
        "elapsed_s": round(elapsed, 3),
        "executed_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def _execute(notebook: Path, tmp: Path, checked: dict, kernel_name: str, workdir: Path, failed_copy: Path, *,
             progress: bool, log_output: bool) -> None:
    """Execute ``notebook`` into ``tmp``; on failure keep it as ``failed_copy`` and raise :class:`NotebookError`."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    try:
        _call_with_own_event_loop(
            papermill.execute_notebook, notebook, tmp, parameters=checked, kernel_name=kernel_name,
            progress_bar=progress, log_output=log_output,
            language="python",  # parameters cells are parsed as Python; a notebook may lack language metadata
            # The kernel starts in workdir; papermill's own cwd= would os.chdir the whole
            # process, which races when a Dask worker runs several notebooks in threads.
            resources={"metadata": {"path": str(workdir)}},
        )
    except PapermillExecutionError as err:
        os.replace(tmp, failed_copy)
        cell = _source_cell_number(_read_notebook(notebook), err.cell_index, injected=bool(checked))
        raise NotebookError(
            f"notebook {notebook.stem} failed in cell {cell} (In [{err.exec_count}]): "
            f"{err.ename}: {_first_line(err.evalue)}; the failed run is in {failed_copy}",
            notebook=notebook, cell=cell, traceback=strip_ansi("\n".join(err.traceback)),
            failed_copy=failed_copy,
        ) from None
    except Exception as err:  # a dead kernel, a timeout: nbclient's errors, not the notebook's
        saved = tmp.stat().st_size > 0
        if saved:
            os.replace(tmp, failed_copy)
        where = f"; the failed run is in {failed_copy}" if saved else ""
        raise NotebookError(
            f"notebook {notebook.stem} failed: {type(err).__name__}: {_first_line(err)}{where}",
            notebook=notebook, failed_copy=failed_copy if saved else None,
        ) from err


def _call_with_own_event_loop(func, /, *args, **kwargs):
    """Call ``func`` so that, off the main thread, nbclient gets an event loop of its own.

    nbclient runs on jupyter_core's ``run_sync``, which caches "this thread's" event
    loop in a context variable. Threads that run with a copy of another thread's
    context (Dask's in-process workers copy the submitter's) would share that loop
    and fail with "This event loop is already running". A fresh context gets a new
    loop, closed afterwards. The main thread keeps its own loop and nbclient's
    Ctrl-C handler, which only works there.
    """
    from jupyter_core.utils import ensure_event_loop

    if threading.current_thread() is threading.main_thread():
        return func(*args, **kwargs)

    def call():
        loop = ensure_event_loop()
        if loop.is_running():  # called from async code: jupyter_core runs it on a helper thread
            return func(*args, **kwargs)
        try:
            return func(*args, **kwargs)
        finally:
            loop.close()
            asyncio.set_event_loop(None)  # leave the thread as it was: no current loop

    return contextvars.Context().run(call)


def _record_metadata(tmp: Path, output: Path, record: dict) -> None:
    """Add ``metadata.sgn`` to the executed notebook at ``tmp`` that will become ``output``."""
    import nbformat

    nb = nbformat.read(tmp, as_version=4)
    nb.metadata["sgn"] = record
    nb.metadata["papermill"]["output_path"] = str(output)  # papermill recorded the temporary name
    nbformat.write(nb, tmp)


# ---------------------------------------------------------------------------
# Pipelines and profiles


CHAPTERS_FILE = "chapters.yaml"
# Parameters the runner gives every chapter that declares them (see chapter_parameters).
RUNNER_PARAMETERS = ("profile", "out_dir", "results_dir", "executed_dir")


@dataclass(frozen=True)
class Chapters:
    """``notebooks/chapters.yaml``: the chapters in execution order and where each goes in the book.

    Attributes:
        notebooks: the chapters' notebooks, in execution order.
        parts: ``{part: [notebook stems]}`` in book order (``parts`` of the file, then its chapters in order).
        root: the landing page's stem.
        pages: ``{part: [book page names]}``, placed after the part's chapters.
    """

    notebooks: list[Path]
    parts: dict[str, list[str]]
    root: str
    pages: dict[str, list[str]]


def read_chapters(notebook_dir: str | os.PathLike) -> Chapters:
    """Read and check ``notebook_dir/chapters.yaml`` (the one list of the book's chapters).

    Raises:
        SGNError: a missing or malformed file, a chapter without its notebook, a chapter
            listed twice, a part not in ``parts``, or a root that is not a chapter.
    """
    notebook_dir = Path(notebook_dir)
    path = notebook_dir / CHAPTERS_FILE
    spec = read_yaml(path, "chapter list")
    if not isinstance(spec, dict) or not isinstance(spec.get("chapters"), list):
        raise SGNError(f"{path}: expected a mapping with a list of chapters")
    parts = {str(part): [] for part in spec.get("parts") or []}
    pages = {part: [] for part in parts}
    notebooks = []
    for entry in spec["chapters"]:
        stem, part = (entry.get("notebook"), entry.get("part")) if isinstance(entry, dict) else (None, None)
        notebook = notebook_dir / f"{stem}.ipynb"
        if not isinstance(stem, str) or not notebook.is_file():
            raise SGNError(f"{path}: chapter {shorten(entry)} names no notebook in {notebook_dir}")
        if notebook in notebooks:
            raise SGNError(f"{path}: chapter {stem} is listed twice")
        if part is not None and part not in parts:
            raise SGNError(f"{path}: chapter {stem}: part {shorten(part)} is not one of parts {list(parts)}")
        notebooks.append(notebook)
        if part is not None:
            parts[part].append(stem)
    for entry in spec.get("pages") or []:
        if not isinstance(entry, dict) or entry.get("part") not in pages:
            raise SGNError(f"{path}: page {shorten(entry)} needs a file and one of parts {list(parts)}")
        pages[entry["part"]].append(str(entry["file"]))
    root = spec.get("root")
    if root not in {n.stem for n in notebooks}:
        raise SGNError(f"{path}: root {shorten(root)} is not one of the chapters")
    return Chapters(notebooks, parts, root, pages)


def load_profile(path: str | os.PathLike, notebook_dir: str | os.PathLike | None = None) -> dict[str, dict]:
    """Load and validate a profile: parameter values per chapter.

    A profile has a ``shared`` section, given to every chapter that declares the
    parameter, and a ``chapters`` section per chapter (which wins over ``shared``)::

        # notebooks/profiles/smoke.yaml
        shared:
          data_index: ../data/smoke_synth/index.csv
        chapters:
          02_train:
            config: smoke

    The runner adds ``profile``, ``out_dir``, ``results_dir`` and ``executed_dir`` itself
    (:func:`chapter_parameters`).

    Args:
        path: the profile's YAML file.
        notebook_dir: the folder of the notebooks. Default: the folder holding the
            profile's ``profiles/`` folder.

    Returns:
        ``{stem: {name: value}}`` for every chapter, values normalised as by :func:`check_parameters`.

    Raises:
        SGNError: unreadable YAML, a chapter that is not in ``chapters.yaml``, a shared
            parameter no chapter has, or a parameter a chapter cannot take.
    """
    path = Path(path)
    notebook_dir = Path(notebook_dir) if notebook_dir is not None else path.resolve().parent.parent
    data = read_yaml(path, "profile")
    if not isinstance(data, dict) or set(data) - {"shared", "chapters"}:
        raise SGNError(f"{path}: expected a mapping with `shared` and `chapters` sections")
    shared, own = data.get("shared") or {}, data.get("chapters") or {}
    if not isinstance(shared, dict) or not isinstance(own, dict):
        raise SGNError(f"{path}: `shared` and `chapters` must be mappings")
    notebooks = {n.stem: n for n in read_chapters(notebook_dir).notebooks}
    unknown = sorted(set(own) - set(notebooks))
    if unknown:
        raise SGNError(f"{path}: {unknown[0]} is not a chapter of {notebook_dir / CHAPTERS_FILE}")
    declared = {stem: notebook_parameters(notebook) for stem, notebook in notebooks.items()}
    unused = sorted(set(shared) - {name for names in declared.values() for name in names})
    if unused:
        raise SGNError(f"{path}: shared parameter {unused[0]!r} is a parameter of no chapter")
    profile = {}
    for stem, notebook in notebooks.items():
        params = own.get(stem) or {}
        if not isinstance(params, dict):
            raise SGNError(f"{path}: {stem}: expected a mapping of parameter to value, got {shorten(params)}")
        merged = {**{k: v for k, v in shared.items() if k in declared[stem]}, **params}
        try:
            profile[stem] = check_parameters(notebook, merged)
        except SGNError as err:
            raise SGNError(f"{path}: {err}") from None
    return profile


def chapter_parameters(notebook: Path, profile: str, executed_dir: Path) -> dict[str, str]:
    """What the runner gives a chapter: its ``profile`` name, its ``out_dir``
    (``RESULTS/<stem>``), the profile's ``results_dir`` (``RESULTS``, the parent of
    ``executed_dir``) and ``executed_dir``: those of :data:`RUNNER_PARAMETERS` the notebook
    declares, paths relative to the notebook's folder (the kernel's working directory)."""
    results = executed_dir.resolve().parent

    def relative(path: Path) -> str:
        return os.path.relpath(path, notebook.resolve().parent)

    given = {"profile": profile, "out_dir": relative(results / notebook.stem),
             "results_dir": relative(results), "executed_dir": relative(executed_dir.resolve())}
    declared = notebook_parameters(notebook)
    return {name: value for name, value in given.items() if name in declared}


def check_out_dir(out_dir: str | os.PathLike, sources: Sequence[str | os.PathLike]) -> None:
    """Executed copies never land among their sources (an ``--out`` equal to ``--dir`` replaced
    them), and the output folder never holds the sources' folders."""
    check_output(out_dir, kind="dir", input_dirs=sources)
    for folder in sources:
        if Path(folder).resolve().is_relative_to(Path(out_dir).resolve()):
            raise SGNError(f"--out {out_dir}: holds the source notebooks' folder {folder}; choose a folder outside it")


def run_pipeline(
    notebooks: Sequence[str | os.PathLike],
    params_by_notebook: Mapping[str, Mapping[str, Any]],
    out_dir: str | os.PathLike,
    *,
    profile: str | None = None,
    cwd: str | os.PathLike | None = None,
    cache: bool = True,
    kernel_name: str = DEFAULT_KERNEL,
    progress: bool = True,
) -> list[RunResult]:
    """Execute notebooks in order into ``out_dir``, stopping at the first failure.

    Each notebook's cache key includes the code fingerprint (code cells and
    parameters, see :func:`code_fingerprint`) of every notebook before it, because
    later notebooks read what earlier ones wrote (data, checkpoints).

    Args:
        notebooks: source notebooks, in execution order.
        params_by_notebook: ``{stem: {name: value}}`` (e.g. from :func:`load_profile`);
            a notebook without an entry runs with its defaults.
        out_dir: folder of the executed copies, ``out_dir/NAME.ipynb``.
        profile: the profile's name; when given, each notebook also gets
            :func:`chapter_parameters` (its results go to ``out_dir/../<stem>``).
        cwd: the kernels' working directory (default: each notebook's folder).
        cache: reuse executed copies whose cache key matches.
        kernel_name: Jupyter kernel to run on.
        progress: show per-cell progress bars.

    Returns:
        One :class:`RunResult` per notebook.

    Raises:
        NotebookError: the first notebook that failed; later ones are not run and
            every executed copy already in ``out_dir`` stays as it was.
    """
    check_out_dir(out_dir, sorted({Path(n).parent for n in notebooks}))
    results = []
    upstream: list[str] = []
    for notebook in map(Path, notebooks):
        runner = chapter_parameters(notebook, profile, Path(out_dir)) if profile else {}
        params = {**runner, **params_by_notebook.get(notebook.stem, {})}
        result = run_notebook(notebook, Path(out_dir) / notebook.name, params, cwd=cwd, cache=cache,
                              kernel_name=kernel_name, depends_on=upstream, progress=progress)
        results.append(result)
        upstream = [*upstream, code_fingerprint(notebook, result.parameters)]
    return results


def pipeline_summary(results: Sequence[RunResult]) -> str:
    """One line on what :func:`run_pipeline` did: which notebooks executed, how many were up to date."""
    executed = [r.notebook.stem for r in results if not r.cached]
    return (f"{len(executed)} notebooks executed ({', '.join(executed) or 'none'}), "
            f"{len(results) - len(executed)} up to date")


# ---------------------------------------------------------------------------
# Command line (wired into `sgn` by sgn.cli)


def resolve_profile(profile: str, notebook_dir: str | os.PathLike) -> Path:
    """A profile given by name (``smoke``: ``notebook_dir/profiles/smoke.yaml``) or by path."""
    path = Path(profile)
    if path.suffix or path.exists():
        return path
    path = Path(notebook_dir) / "profiles" / f"{profile}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in (Path(notebook_dir) / "profiles").glob("*.yaml"))
        raise SGNError(f"no profile {profile!r} in {path.parent}; profiles: {', '.join(known) or 'none'}")
    return path
