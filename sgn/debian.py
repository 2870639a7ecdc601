"""Files the project takes from Debian packages: a pinned ``.deb`` from the archive, unpacked here.

A package is fetched over HTTP from the Debian archive (``$SGN_DEBIAN_MIRROR``, default
:data:`ARCHIVE`) by its pool path, resumably (:func:`sgn.download.http.fetch`), checked
against its pinned size and sha256 (the archive's own ``Packages`` entry), and read with
the standard library: a ``.deb`` is an ``ar`` archive whose ``data.tar.*`` holds the files.
The files kept are checked against their own pins and land in the destination folder
whole or not at all. No root, no apt, no dpkg: it runs where Python does.
"""

from __future__ import annotations

import io
import logging
import os
import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

from sgn.download.http import fetch
from sgn.download.manifest import Checksum
from sgn.utils import SGNError, check_pinned_files, has_pinned_files

log = logging.getLogger(__name__)

ARCHIVE = "http://deb.debian.org/debian"
MIRROR_ENV = "SGN_DEBIAN_MIRROR"
_AR_MAGIC = b"!<arch>\n"


@dataclass(frozen=True)
class DebPackage:
    """One binary package of the Debian archive, pinned as its ``Packages`` entry gives it."""

    name: str
    version: str
    pool_path: str  # ``Filename:`` of the Packages entry, e.g. pool/main/o/opl3-soundfont/...deb
    size: int
    sha256: str

    def __str__(self) -> str:
        return f"{self.name} {self.version} (Debian)"


def archive_url() -> str:
    return os.environ.get(MIRROR_ENV, ARCHIVE).rstrip("/")


def ar_members(data: bytes, where: str) -> dict[str, bytes]:
    """The members of an ``ar`` archive (the format of a ``.deb``): ``{name: bytes}``.

    Raises:
        SGNError: not an ar archive, or a truncated one.
    """
    if not data.startswith(_AR_MAGIC):
        raise SGNError(f"{where}: not a Debian package (no ar archive header)")
    members, at = {}, len(_AR_MAGIC)
    while at < len(data):
        header = data[at:at + 60]
        size_field = header[48:58].strip()
        if len(header) < 60 or header[58:60] != b"`\n" or not size_field.isdigit():
            raise SGNError(f"{where}: truncated or damaged Debian package (ar header at byte {at})")
        name, size = header[:16].decode("ascii", "replace").strip().rstrip("/"), int(size_field)
        body = data[at + 60:at + 60 + size]
        if len(body) < size:
            raise SGNError(f"{where}: truncated Debian package ({name} ends past the file)")
        members[name] = body
        at += 60 + size + size % 2  # members are padded to even offsets
    return members


def deb_files(deb: Path, wanted: Callable[[str], bool]) -> dict[str, bytes]:
    """The files of a ``.deb``'s ``data.tar.*`` for which ``wanted(path)`` holds, by path (no ``./``)."""
    members = ar_members(deb.read_bytes(), str(deb))
    data_name = next((name for name in members if name.startswith("data.tar")), None)
    if data_name is None:
        raise SGNError(f"{deb}: no data.tar member; not a binary Debian package")
    try:
        with tarfile.open(fileobj=io.BytesIO(members[data_name]), mode="r:*") as tar:
            return {member.name.removeprefix("./"): tar.extractfile(member).read() for member in tar.getmembers()
                    if member.isfile() and wanted(member.name.removeprefix("./"))}
    except (tarfile.TarError, EOFError, OSError) as err:
        raise SGNError(f"{deb}: unreadable {data_name} ({err})") from None


def fetch_deb_files(package: DebPackage, files: Mapping[str, str], dest: str | Path, why: str,
                    also: Callable[[str], bool] = lambda path: False, progress: bool = True) -> Path:
    """Files of ``package``, each checked against its pinned sha256, into the folder ``dest``.

    Args:
        files: ``{path in the package: sha256}``; files land in ``dest`` under their base names.
        why: what the files are for (logged).
        also: further paths to keep unchecked (copyright files).

    Does nothing when ``dest`` already holds every pinned file; else writes it whole or not
    at all. The ``.deb`` is downloaded beside ``dest`` (a partial download resumes) and
    removed once its files are out.

    Raises:
        SGNError: the archive cannot be reached or lacks the package, the package's size or
            sha256 differs from its pin, a pinned file is not in it or differs from its pin.
    """
    dest = Path(dest)
    if has_pinned_files(dest, dict(files)):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    deb = dest.parent / Path(package.pool_path).name
    fetch(f"{archive_url()}/{package.pool_path}", deb, size=package.size,
          checksum=Checksum("sha256", package.sha256), progress=progress)
    found = deb_files(deb, lambda path: path in files or also(path))
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=f".{dest.name}-") as tmp:
        out = Path(tmp) / "files"
        out.mkdir()
        for path, data in found.items():
            (out / Path(path).name).write_bytes(data)
        check_pinned_files(out, dict(files), str(package))
        if dest.exists():
            shutil.rmtree(dest)
        out.rename(dest)
    deb.unlink()
    log.info("%s from %s in %s", why, package, dest)
    return dest
