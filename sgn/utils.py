"""Small helpers shared by every module: user-facing errors, atomic writes, provenance."""

from __future__ import annotations

import contextlib
import glob
import hashlib
import os
import re
import reprlib
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import yaml


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


UMASK = _current_umask()


class SGNError(Exception):
    """An error caused by the user's input; the CLI prints it as one line, without a traceback."""


def shorten(value: Any, limit: int = 100) -> str:
    """``repr(value)`` cut to about ``limit`` characters: an error message never echoes a huge input."""
    text = _SHORT_REPR.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# reprlib stops early: the repr of a huge value is never built whole.
_SHORT_REPR = reprlib.Repr()
_SHORT_REPR.maxstring = _SHORT_REPR.maxother = 110


# Class names become file names (``sgn separate`` writes ``OUT/<class>.wav``) and CSV cells:
# letters, digits, ``_``, ``-``, ``+`` and inner dots, nothing that can name another folder.
CLASS_NAME = re.compile(r"[A-Za-z0-9_+-](?:[A-Za-z0-9_.+-]{0,62}[A-Za-z0-9_+-])?")


def check_class_names(names: Any, source: str) -> list[str]:
    """Validate class names read from ``source`` (a file, flag or argument); return them as a list.

    Every name must match :data:`CLASS_NAME` (no path separator, no ``..``, at most 64
    characters) and appear once.

    Raises:
        SGNError: naming ``source`` and the first offending name.
    """
    if isinstance(names, (str, bytes)) or not isinstance(names, Iterable):
        raise SGNError(f"{source}: expected a list of class names, got {shorten(names)}")
    names = list(names)
    for name in names:
        if not isinstance(name, str) or not CLASS_NAME.fullmatch(name) or ".." in name:
            raise SGNError(
                f"{source}: class name {shorten(name)} is not allowed "
                "(1-64 of A-Z a-z 0-9 _ - + and inner dots, no '..')"
            )
    seen: dict[str, str] = {}
    for name in names:
        if name.casefold() in seen:
            twice = "is listed twice" if seen[name.casefold()] == name else f"and {seen[name.casefold()]!r} differ only in case"
            raise SGNError(f"{source}: class {name!r} {twice} (each class is a file name)")
        seen[name.casefold()] = name
    return names


def check_path(value: Any, name: str) -> Path:
    """``value`` as a :class:`Path`; one line unless it is a ``str`` or ``os.PathLike`` (not empty)."""
    if isinstance(value, (str, os.PathLike)) and str(value) and "\0" not in str(value):
        return Path(value)
    raise SGNError(f"{name}: expected a file path, got {shorten(value)}")


def child_path(folder: str | os.PathLike, name: str) -> Path:
    """``folder / name``, refused unless it stays directly inside ``folder`` (no traversal)."""
    folder = Path(folder)
    path = folder / name
    if Path(name).name != name or name in ("", ".", "..") or path.resolve().parent != folder.resolve():
        raise SGNError(f"{folder}: refusing to write {shorten(name)} outside this folder")
    return path


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


def _inside(path: Path, folder: Path) -> bool:
    try:
        return path.resolve().is_relative_to(folder.resolve())
    except (OSError, RuntimeError):  # a symlink loop: not inside anything we can name
        return False


def check_output(path: str | os.PathLike, *, kind: str = "file", inputs: Sequence[str | os.PathLike] = (),
                 input_dirs: Sequence[str | os.PathLike] = (), flag: str = "--out") -> Path:
    """Check, before any work, that ``path`` can receive an output ``kind`` ("file" or "dir").

    Refused in one line: an output that is one of ``inputs`` or is, or lies in, one of
    ``input_dirs`` (folders whose every file is an input: a data set, a checkpoint's run
    folder), a folder where a file is expected and the reverse, a path under an existing file, a dangling or looping symlink, and a
    destination folder that cannot be written.
    """
    path = Path(path)
    for item in inputs:
        if _same_file(path, Path(item)):
            raise SGNError(f"{flag} {path}: is also an input of this command; choose another path")
    for folder in input_dirs:
        if _inside(path, Path(folder)):
            raise SGNError(f"{flag} {path}: lies inside {folder}, an input of this command; choose a path outside it")
    broken = next((p for p in (path, *path.parents) if p.is_symlink() and not p.exists()), None)
    if broken is not None:
        raise SGNError(f"{flag} {path}: {broken} is a dangling or looping symlink; expected a {kind} path")
    if kind == "file" and path.is_dir():
        raise SGNError(f"{flag} {path}: is a folder; expected a file path")
    if kind == "dir" and path.exists() and not path.is_dir():
        raise SGNError(f"{flag} {path}: is an existing file; expected a folder")
    existing = path if path.exists() else next(p for p in path.parents if p.exists() or p == p.parent)
    if existing != path and not existing.is_dir():
        raise SGNError(f"{flag} {path}: {existing} is a file, so nothing can be written under it")
    writable_dir = existing if existing.is_dir() else existing.parent
    if not os.access(writable_dir, os.W_OK | os.X_OK):
        raise SGNError(f"{flag} {path}: folder {writable_dir} is not writable")
    return path


# Temporary siblings carry the writing process's pid, so a later run can tell an
# abandoned one (its writer was killed) from one another live process is writing.
_STAGING_SUFFIXES = (".partial-", ".tmp-")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


def remove_stale_staging(target: str | os.PathLike) -> list[Path]:
    """Remove ``target``'s temporary siblings left by killed processes; return what was removed.

    Only names this module makes (``.NAME.partial-PID-*``, ``.NAME.tmp-PID-*``) whose
    process no longer runs are touched.
    """
    target = Path(target)
    removed = []
    for marker in _STAGING_SUFFIXES:
        for stale in target.parent.glob(f".{glob.escape(target.name)}{marker}*"):
            pid_text = stale.name[len(target.name) + 1 + len(marker):].split("-", 1)[0]
            if not pid_text.isdigit() or _pid_alive(int(pid_text)):
                continue
            shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink(missing_ok=True)
            removed.append(stale)
    return removed


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    A crash or an exception inside the block leaves any previous ``path`` untouched,
    so a failed run never overwrites a good result; temporaries of killed runs are
    removed by the next write to the same path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-{os.getpid()}-", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~UMASK)  # mkstemp creates 0600; give the file the usual permissions
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def staged_dir(folder: str | os.PathLike) -> Iterator[Path]:
    """Yield a hidden sibling of ``folder`` to fill; rename it onto ``folder`` on success.

    Nothing appears at ``folder`` until the block completes (an existing ``folder`` must
    be empty), so an interrupted or failed run leaves nothing half-written that looks
    complete; staging folders of killed runs are removed by the next one.
    """
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(folder)
    partial = Path(tempfile.mkdtemp(prefix=f".{folder.name}.partial-{os.getpid()}-", dir=folder.parent))
    partial.chmod(0o777 & ~UMASK)  # mkdtemp makes it private; the result is not
    try:
        yield partial
        if folder.is_dir():
            folder.rmdir()
        os.replace(partial, folder)
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically (temp file + rename)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


# Bounds on any YAML the package reads (configs, grids, profiles, --set values): a few
# hundred bytes of aliases ("billion laughs") expand to 10**9 values once traversed.
MAX_YAML_BYTES = 1 << 20
MAX_YAML_VALUES = 100_000  # counted with every alias expanded
MAX_YAML_DEPTH = 32
YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's is several times faster


def _too_deep(source: str) -> SGNError:
    return SGNError(f"{source}: YAML nested more than {MAX_YAML_DEPTH} levels deep; expected a shallower file")


def _check_unique_keys(node: yaml.MappingNode, source: str) -> None:
    """A key given twice in one mapping is refused: YAML loaders keep the last silently."""
    seen = set()
    for key, _ in node.value:
        if not isinstance(key, yaml.ScalarNode) or key.tag == "tag:yaml.org,2002:merge":
            continue
        if (key.tag, key.value) in seen:
            raise SGNError(f"{source}: key {shorten(key.value)} appears twice in one mapping "
                           f"(line {key.start_mark.line + 1}); expected each key once")
        seen.add((key.tag, key.value))


def _count_yaml_values(root: yaml.Node, source: str) -> None:
    """Refuse a composed YAML document that expands to too many values, nests too deeply or
    refers to itself; each node is counted once (memoised), so this is linear in the file."""
    expanded: dict[int, int | None] = {}  # id(node) -> values under it; None while counting it

    def count(node: yaml.Node, depth: int) -> int:
        if depth > MAX_YAML_DEPTH:
            raise _too_deep(source)
        if id(node) in expanded:
            if expanded[id(node)] is None:
                raise SGNError(f"{source}: a YAML alias refers to the value that contains it; expected no cycles")
            return expanded[id(node)]
        expanded[id(node)] = None
        if isinstance(node, yaml.MappingNode):
            _check_unique_keys(node, source)
            children = [child for pair in node.value for child in pair]
        else:
            children = node.value if isinstance(node, yaml.SequenceNode) else []
        total = 1 + sum(count(child, depth + 1) for child in children)
        if total > MAX_YAML_VALUES:
            raise SGNError(f"{source}: YAML aliases make it expand to more than {MAX_YAML_VALUES} values; "
                           "expected a plain file")
        expanded[id(node)] = total
        return total

    count(root, 0)


def safe_load_bounded(text: str, source: str) -> Any:
    """``yaml.safe_load(text)``, refusing alias bombs, deep nesting and self-reference
    with an :class:`SGNError` naming ``source``; invalid YAML raises ``yaml.YAMLError``."""
    loader = YAML_LOADER(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _count_yaml_values(node, source)
        return loader.construct_document(node)
    except RecursionError:  # the pure-Python composer recurses once per nesting level
        raise _too_deep(source) from None
    finally:
        loader.dispose()


def read_yaml(path: str | os.PathLike, what: str) -> Any:
    """Parse a YAML file (empty file: ``{}``); one clear :class:`SGNError` if it is missing,
    too large, not UTF-8 text, invalid, or an alias bomb (see :func:`safe_load_bounded`).

    Args:
        path: the file.
        what: what to call it in the message ("config file", "profile", ...).
    """
    path = Path(path)
    if not path.is_file():
        raise SGNError(f"{path}: {what} not found")
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_YAML_BYTES + 1)  # bounded even where the size on disk is not known
        if len(raw) > MAX_YAML_BYTES:
            raise SGNError(f"{path}: {what} is over {MAX_YAML_BYTES} bytes; expected at most {MAX_YAML_BYTES}")
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise SGNError(f"{path}: {what} is not UTF-8 text") from None
    except OSError as err:
        raise SGNError(f"{path}: cannot read {what} ({err.strerror})") from None
    try:
        data = safe_load_bounded(text, str(path))
    except yaml.YAMLError as err:
        # str(err) starts with the context ("while parsing ..."); the problem says what is
        # wrong, cut as it may quote the file
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        mark = getattr(err, "problem_mark", None)
        where = f", line {mark.line + 1}" if mark is not None else ""
        raise SGNError(f"{path}: not valid YAML ({problem[:200]}{where})") from None
    return {} if data is None else data


def sha256_file(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def has_pinned_files(folder: Path, files: dict[str, str]) -> bool:
    """Whether ``folder`` holds every file of ``files`` (``{path: sha256}``, by base name) unchanged."""
    return all((folder / Path(name).name).is_file() and sha256_file(folder / Path(name).name) == digest
               for name, digest in files.items())


def check_pinned_files(folder: Path, files: dict[str, str], source: str) -> None:
    """Each of ``files`` (``{path in the package: sha256}``) in ``folder`` under its base name, unchanged.

    Raises:
        SGNError: a file is missing (``source`` lacks it) or differs from its pin.
    """
    for name, digest in files.items():
        if not (folder / Path(name).name).is_file():
            raise SGNError(f"{source}: no {name} in the package")
        actual = sha256_file(folder / Path(name).name)
        if actual != digest:
            raise SGNError(f"{source} {name}: sha256 {actual}, expected {digest} (the pinned file)")


def machine() -> dict[str, Any]:
    """The hardware and torch build a result was measured with."""
    import platform

    import torch

    return {
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch": torch.__version__,
    }


def git_commit(repo_dir: str | os.PathLike | None = None) -> str | None:
    """The current git commit of ``repo_dir`` (default: this package's checkout), or None."""
    repo_dir = Path(repo_dir) if repo_dir is not None else Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=repo_dir, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None
