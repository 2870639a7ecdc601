"""The package's shape: layers that import downwards only, no import cycle, functions that fit a screen."""

import ast
import shutil
from pathlib import Path

import pytest

import sgn.provenance as provenance
from sgn.provenance import PACKAGE_DIR, imported_modules, module_closure

# Longest function (lines, docstring included) anywhere in the package.
MAX_FUNCTION_LINES = 60


def _modules() -> dict[str, Path]:
    files = sorted(PACKAGE_DIR.rglob("*.py"))
    names = {}
    for path in files:
        parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


def _graph() -> dict[str, set[str]]:
    """Each module's imports of package modules (function-level ones too), less its own parent packages."""
    graph = {}
    for name, path in _modules().items():
        parents = {".".join(name.split(".")[:k]) for k in range(1, name.count(".") + 1)}
        graph[name] = imported_modules(path.read_text()) - parents - {name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Import cycles found by a depth-first walk (each as the path that closes it)."""
    state, cycles = {}, []

    def visit(node, trail):
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                cycles.append(trail + [nxt])
            elif nxt not in state:
                visit(nxt, trail + [nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return cycles


def test_no_import_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]  # the check itself
    cycles = _cycles(_graph())
    assert not cycles, " -> ".join(cycles[0])


@pytest.mark.parametrize("layer", ["sgn.model", "sgn.train", "sgn.evaluate", "sgn.separate", "sgn.synthmusic",
                                   "sgn.download", "sgn.analysis"])
def test_the_core_and_the_data_never_import_the_lab(layer):
    assert not [name for name in module_closure([layer]) if name.startswith(("sgn.lab", "sgn.cli"))]


def test_the_lab_is_the_only_user_of_the_book_machinery():
    users = {name for name, deps in _graph().items() if any(d.startswith("sgn.lab") for d in deps)}
    assert users <= {name for name in users if name.startswith("sgn.lab")} | {"sgn.cli"}, users


def test_every_function_fits_a_screen():
    too_long = []
    for path in PACKAGE_DIR.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    too_long.append(f"{path.relative_to(PACKAGE_DIR.parent)}:{node.lineno} {node.name} ({lines})")
    assert not too_long, too_long


def test_imports_inside_functions_count(tmp_path, monkeypatch):
    package = tmp_path / "sgn"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("def f():\n    from sgn.b import g\n    return g()\n")
    (package / "b.py").write_text("from sgn import c\n")
    (package / "c.py").write_text("import numpy\n")
    monkeypatch.setattr(provenance, "PACKAGE_DIR", package)
    assert module_closure(["sgn.a"]) == ["sgn", "sgn.a", "sgn.b", "sgn.c"]


def test_editing_a_module_a_scorer_imports_invalidates_the_score_cache(tmp_path, monkeypatch):
    """The study's score cache follows the imports of the scoring code, not a hand-kept list:
    sgn.data is imported by sgn.evaluate, which the study imports inside a function."""
    from sgn.lab import study

    copy = tmp_path / "sgn"
    shutil.copytree(PACKAGE_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(provenance, "PACKAGE_DIR", copy)
    checkpoint, mixtures = tmp_path / "best.pt", tmp_path / "list.csv"
    checkpoint.write_bytes(b"weights")
    mixtures.write_text("mixture_id\n0\n")
    before = study._scores_key(checkpoint, mixtures, presence=False)
    assert study._scores_key(checkpoint, mixtures, presence=False) == before
    data = copy / "data.py"
    data.write_text(data.read_text() + "\n# an edit\n")
    assert study._scores_key(checkpoint, mixtures, presence=False) != before
    # a module no scorer imports does not invalidate it
    edited = study._scores_key(checkpoint, mixtures, presence=False)
    (copy / "lab" / "book.py").write_text((copy / "lab" / "book.py").read_text() + "\n# an edit\n")
    assert study._scores_key(checkpoint, mixtures, presence=False) == edited
