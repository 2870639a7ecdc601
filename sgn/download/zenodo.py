"""Zenodo: file URLs of a record, and the md5 and size Zenodo publishes for each file.

Zenodo's records API (``https://zenodo.org/api/records/ID``) lists a record's files
with ``key`` (the file name), ``size`` (bytes) and ``checksum`` (``"md5:<hex>"``).
The downloader falls back on it for a file the shipped manifest does not pin.
"""

from __future__ import annotations

import json

from sgn.download.http import fetch_bytes, mirror_url
from sgn.download.manifest import Checksum
from sgn.utils import SGNError

HOST = "https://zenodo.org"


def file_url(record: int, name: str) -> str:
    """The download URL of file ``name`` of record ``record``."""
    return f"{HOST}/records/{record}/files/{name}?download=1"


def record_files(record: int, mirror: str | None = None) -> dict[str, tuple[Checksum, int]]:
    """File name -> (published checksum, size in bytes) for a Zenodo record.

    Raises:
        SGNError: the record cannot be fetched or is not the JSON Zenodo serves.
    """
    url = mirror_url(f"{HOST}/api/records/{record}", mirror)
    try:
        files = json.loads(fetch_bytes(url))["files"]
        # Zenodo's legacy serialisation lists the files; InvenioRDM nests them under "entries".
        entries = files["entries"].values() if isinstance(files, dict) else files
        return {entry["key"]: (Checksum.parse(entry["checksum"]), int(entry["size"])) for entry in entries}
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise SGNError(f"{url}: not a Zenodo record listing ({type(err).__name__}: {err})") from None
