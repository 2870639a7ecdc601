"""Checksum manifests: the ``md5sum``/``sha256sum`` format, read and checked.

A manifest line is a hex digest, two spaces (or a space and ``*``, the binary-mode
marker of GNU coreutils) and a file name; the digest's length says the algorithm
(32 hex digits: md5, 64: sha256). Blank lines and lines starting with ``#`` are
ignored, so the shipped manifests can say where each digest comes from.

The manifests shipped with ``sgn`` live in ``sgn/download/manifests/NAME.md5``;
``sgn data download --checksums FILE`` replaces them.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from sgn.utils import SGNError

MANIFEST_DIR = Path(__file__).parent / "manifests"
_LINE = re.compile(r"^([0-9a-fA-F]{32}|[0-9a-fA-F]{64}) [ *](\S.*)$")
_ALGORITHMS = {32: "md5", 64: "sha256"}


@dataclass(frozen=True)
class Checksum:
    """An expected digest: ``algorithm`` is ``"md5"`` or ``"sha256"``, ``hexdigest`` lower case."""

    algorithm: str
    hexdigest: str

    @classmethod
    def parse(cls, text: str) -> "Checksum":
        """``"md5:<hex>"`` (Zenodo's notation) or a bare hex digest -> :class:`Checksum`.

        Raises:
            SGNError: not a 32- or 64-digit hex digest.
        """
        digest = text.split(":", 1)[1] if ":" in text else text
        if not re.fullmatch(r"[0-9a-fA-F]{32}|[0-9a-fA-F]{64}", digest):
            raise SGNError(f"not an md5 or sha256 digest: {text!r}")
        return cls(_ALGORITHMS[len(digest)], digest.lower())

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hexdigest}"


def read_manifest(path: str | os.PathLike) -> dict[str, Checksum]:
    """Read a checksum file; returns file name -> :class:`Checksum`.

    Raises:
        SGNError: the file is missing, or a line is not ``DIGEST  NAME`` (the message
            names the file and line number).
    """
    path = Path(path)
    if not path.is_file():
        raise SGNError(f"{path}: checksum file not found")
    entries: dict[str, Checksum] = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = _LINE.match(line.rstrip("\r\n"))
        if match is None:
            raise SGNError(
                f"{path}:{number}: not a checksum line (expected an md5 or sha256 hex digest, "
                f"two spaces and a file name, as md5sum writes): {line.strip()[:80]!r}"
            )
        digest, name = match.groups()
        entries[name] = Checksum(_ALGORITHMS[len(digest)], digest.lower())
    return entries


def shipped_manifest(dataset: str) -> dict[str, Checksum]:
    """The manifest shipped for ``dataset`` (empty if the package ships none)."""
    path = MANIFEST_DIR / f"{dataset}.md5"
    return read_manifest(path) if path.is_file() else {}


def file_digest(path: str | os.PathLike, algorithm: str, chunk_size: int = 1 << 20) -> str:
    """Hex digest of a file with ``algorithm`` (``"md5"`` or ``"sha256"``), read in chunks."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()
