"""Provenance: which code and data a result depends on, derived from the imports that run.

Every cache in ``sgn`` asks this module what it depends on, so there is one rule:

* a trained run (:mod:`sgn.runs`): the training loop and the architecture's module, and
  every ``sgn`` module they import, at any depth (:func:`code_hashes`), plus the data
  set's identity (:func:`data_identity`);
* a study's scores (:mod:`sgn.lab.study`): the scoring code, found the same way;
* an executed notebook (:mod:`sgn.lab.notebooks`): the modules its code cells import and
  the package's data files (configs, manifests);
* the built book (:mod:`sgn.lab.book`): the whole package (its API pages document it);
* a prepared data set (:mod:`sgn.prepared`): the code that wrote it, in its record.

Imports are read from the source (``import sgn.x``, ``from sgn.x import y`` and
``from sgn import x``, inside functions too), not from a hand-kept list, so a helper a
scorer starts importing is covered the day it is imported. A package's ``__init__``
counts for each module under it. Reading the source imports nothing, so a fingerprint
costs milliseconds and no torch import.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import json
from pathlib import Path
from typing import Any, Iterable

from sgn.utils import SGNError, sha256_file

PACKAGE = "sgn"
# The package's folder; module files are found under it, named relative to its parent.
PACKAGE_DIR = Path(__file__).resolve().parent
# A prepared data set's record (sgn.prepared writes it), and its keys that change on every
# write, left out of its identity.
RECORD = "prepare.json"
VOLATILE_KEYS = ("written",)


def digest(value: Any) -> str:
    """sha256 (hex) of a JSON-able value in canonical form (sorted keys, no spaces)."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":"), default=str).encode()).hexdigest()


def module_file(name: str) -> Path | None:
    """The source file of module ``name`` of the package (``None`` if it is not one)."""
    parts = name.split(".")
    if parts[0] != PACKAGE:
        return None
    base = PACKAGE_DIR.joinpath(*parts[1:])
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_modules(source: str) -> set[str]:
    """The package's modules that ``source`` imports, at any depth, with their parent packages."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            # `from sgn.a import b`: b may be a submodule or a name defined in sgn.a
            names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        else:
            continue
        for name in names:
            parts = name.split(".")
            found.update(".".join(parts[:k]) for k in range(1, len(parts) + 1))
    return {name for name in found if module_file(name) is not None}


@functools.lru_cache(maxsize=256)
def _imports_of(path: Path, mtime_ns: int, size: int) -> frozenset[str]:
    return frozenset(imported_modules(path.read_text()))


def module_closure(roots: Iterable[str]) -> list[str]:
    """``roots`` and every package module they import, transitively, sorted.

    Raises:
        SGNError: a root that is not a module of the package.
    """
    todo, seen = list(roots), set()
    for root in todo:
        if module_file(root) is None:
            raise SGNError(f"provenance: {root!r} is not a module of the {PACKAGE} package")
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        path = module_file(name)
        stat = path.stat()
        todo.extend(_imports_of(path, stat.st_mtime_ns, stat.st_size) - seen)
    return sorted(seen)


def _relative(path: Path) -> str:
    return path.relative_to(PACKAGE_DIR.parent).as_posix()


def code_hashes(roots: Iterable[str]) -> dict[str, str]:
    """``{file: sha256}`` of the code ``roots`` run: their :func:`module_closure`'s files."""
    files = sorted({module_file(name) for name in module_closure(roots)})
    return {_relative(path): sha256_file(path) for path in files}


def package_files(*, code: bool = True, data: bool = True) -> list[Path]:
    """The package's files: its ``.py`` code and/or its data (configs, manifests), without byte code and hidden files."""
    def wanted(path: Path) -> bool:
        parts = path.relative_to(PACKAGE_DIR).parts
        if not path.is_file() or path.suffix == ".pyc" or any(p.startswith(".") or p == "__pycache__" for p in parts):
            return False
        return code if path.suffix == ".py" else data

    return sorted(path for path in PACKAGE_DIR.rglob("*") if wanted(path))


def package_hashes(*, code: bool = True, data: bool = True) -> dict[str, str]:
    """``{file: sha256}`` of :func:`package_files`."""
    return {_relative(path): sha256_file(path) for path in package_files(code=code, data=data)}


def source_hashes(source: str) -> dict[str, str]:
    """What code written outside the package (a notebook's cells) depends on: the package
    modules it imports, their closure, and the package's data files."""
    return {**code_hashes(imported_modules(source)), **package_hashes(code=False)}


def read_provenance(folder: str | Path) -> dict | None:
    """The preparation record (:data:`RECORD`) of a prepared data-set folder, or ``None`` if there is none."""
    path = Path(folder) / RECORD
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError):
        record = None
    if not isinstance(record, dict):
        raise SGNError(f"{path}: not a valid preparation record; remove the folder and prepare it again")
    return record


def data_identity(index_path: str | Path) -> dict[str, str]:
    """``{file: sha256}`` of a data set's ``index.csv`` and its preparation record, less its time of writing."""
    index_path = Path(index_path)
    if not index_path.is_file():
        raise SGNError(f"data.index: {index_path} not found (expected a data set's index.csv)")
    identity = {"index.csv": sha256_file(index_path)}
    record = read_provenance(index_path.parent)
    if record is not None:
        identity[RECORD] = digest({k: v for k, v in record.items() if k not in VOLATILE_KEYS})
    return identity


def changed_files(old: dict, new: dict, parts: Iterable[str] = ("code", "data")) -> list[str]:
    """The files whose hashes differ between two ``{part: {file: sha256}}`` records."""
    changed = []
    for part in parts:
        before, after = old.get(part, {}), new.get(part, {})
        changed += [name for name in sorted(set(before) | set(after)) if before.get(name) != after.get(name)]
    return changed
