"""Safe unpacking of downloaded tar and zip archives.

Every member is checked before anything is written: an absolute path, a ``..`` that
climbs out of the target folder, a link (symbolic or hard) whose target lies outside
it, or a device or FIFO member makes the whole archive refused. Members are checked
again as they are written, against the real file system, so a link written earlier
cannot smuggle a later member out either. A damaged archive (bad gzip stream, failed
CRC, truncated file) is reported as corrupt.
"""

from __future__ import annotations

import gzip
import logging
import lzma
import os
import posixpath
import re
import shutil
import stat
import tarfile
import zipfile
import zlib
from pathlib import Path

from sgn.utils import SGNError

log = logging.getLogger(__name__)

_CORRUPT = (tarfile.TarError, zipfile.BadZipFile, gzip.BadGzipFile, zlib.error, lzma.LZMAError, EOFError)


def _escapes(name: str) -> bool:
    """Whether a (POSIX, relative) archive path leaves the folder it is unpacked into."""
    normal = posixpath.normpath(name)
    return normal == ".." or normal.startswith("../")


def _check_name(archive: Path, name: str) -> None:
    if name.startswith(("/", "\\")) or re.match(r"[A-Za-z]:", name):  # POSIX, UNC or drive-letter paths
        raise SGNError(f"{archive}: refusing to unpack member {name!r}: absolute path")
    if _escapes(name.replace("\\", "/")):
        raise SGNError(f"{archive}: refusing to unpack member {name!r}: it climbs out of the target folder")


def _check_link(archive: Path, name: str, target: str, hard: bool) -> None:
    # A symlink's target is relative to the link's folder; a hard link's to the archive root.
    if target.startswith("/"):
        raise SGNError(f"{archive}: refusing to unpack member {name!r}: link to absolute path {target!r}")
    base = "" if hard else posixpath.dirname(name)
    if _escapes(posixpath.join(base, target)):
        raise SGNError(
            f"{archive}: refusing to unpack member {name!r}: link {target!r} points outside the target folder"
        )


def _inside(root: Path, path: Path) -> bool:
    return path == root or root in path.parents


def _check_on_disk(archive: Path, root: Path, name: str) -> Path:
    """Resolve ``root/name`` through the links already written; refuse if it leaves ``root``."""
    dest = (root / name).resolve()
    if not _inside(root, dest):
        raise SGNError(f"{archive}: refusing to unpack member {name!r}: it resolves outside the target folder")
    return dest


def _tar_members(archive: Path, tar: tarfile.TarFile) -> list[tarfile.TarInfo]:
    members = tar.getmembers()
    for member in members:
        _check_name(archive, member.name)
        if member.issym() or member.islnk():
            _check_link(archive, member.name, member.linkname, hard=member.islnk())
        elif not (member.isfile() or member.isdir()):
            raise SGNError(f"{archive}: refusing to unpack member {member.name!r}: not a file, folder or link")
    return members


def _extract_tar(archive: Path, root: Path) -> None:
    # The "data" filter (Python >= 3.11.4) repeats these checks inside tarfile itself.
    extra = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
    with tarfile.open(archive, "r:*") as tar:
        for member in _tar_members(archive, tar):
            _check_on_disk(archive, root, member.name)
            tar.extract(member, root, set_attrs=False, **extra)
        # tarfile stops at the end-of-archive marker, before the gzip trailer; read on to
        # the end so that the stream's CRC and length are checked.
        while tar.fileobj.read(1 << 20):
            pass


def _zip_link_target(info: zipfile.ZipInfo, zf: zipfile.ZipFile) -> str | None:
    """The target of a symlink member (Unix mode in the external attributes), else ``None``."""
    if stat.S_ISLNK(info.external_attr >> 16):
        return zf.read(info).decode("utf-8")
    return None


def _extract_zip(archive: Path, root: Path) -> None:
    with zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()
        for info in infos:
            _check_name(archive, info.filename)
            target = _zip_link_target(info, zf)
            if target is not None:
                _check_link(archive, info.filename, target, hard=False)
        for info in infos:
            dest = _check_on_disk(archive, root, info.filename)
            target = _zip_link_target(info, zf)
            if info.is_dir():
                dest.mkdir(parents=True, exist_ok=True)
            elif target is not None:
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.symlink(target, dest)
            else:
                dest.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(dest, "wb") as out:
                    shutil.copyfileobj(src, out, 1 << 20)  # zipfile checks the CRC at the end


def extract(archive: str | os.PathLike, target: str | os.PathLike) -> Path:
    """Unpack a ``.tar``, ``.tar.gz``/``.tgz`` or ``.zip`` archive into ``target`` safely.

    Args:
        archive: the archive file.
        target: the folder to unpack into (created).

    Returns:
        ``target`` as a :class:`~pathlib.Path`.

    Raises:
        SGNError: an unsafe member (nothing is written then), or a corrupt archive.
    """
    archive, root = Path(archive), Path(target)
    root.mkdir(parents=True, exist_ok=True)
    root = root.resolve()
    try:
        if zipfile.is_zipfile(archive):
            _extract_zip(archive, root)
        else:
            _extract_tar(archive, root)
    except SGNError:
        raise
    except _CORRUPT as err:
        reason = " ".join(str(err).split())  # some decoders' messages span lines
        reason = reason if len(reason) <= 120 else reason[:117] + "..."
        raise SGNError(f"{archive}: corrupt archive ({type(err).__name__}: {reason})") from None
    log.debug("unpacked %s into %s", archive.name, root)
    return root
