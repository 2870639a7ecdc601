"""A prepared data-set folder: its record (``prepare.json``) and the check that lets it be reused.

Every data set, rendered (SynthMUSIC) or downloaded (MUSIC, FUSS, MUSDB18, VGG-Sound), is
written the same way: into a staging folder that appears whole or not at all
(:func:`sgn.utils.staged_dir`), with ``prepare.json`` recording the settings that define
it (a renderer or format version among them), the package version and the time. A later
run with the same settings reuses the folder; with other settings it is refused, naming
the settings that differ. :func:`sgn.provenance.data_identity` reads the same record.
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path

from sgn import __version__
from sgn.provenance import RECORD, code_hashes, read_provenance
from sgn.utils import SGNError, atomic_write_text, shorten

def write_provenance(folder: Path, dataset: str, settings: dict, *, made_by: str, **fields) -> Path:
    """Write ``folder/prepare.json`` atomically: settings, package version, the code that
    wrote the set (``made_by``, a module, and what it imports: :func:`sgn.provenance.code_hashes`),
    the time, and ``fields``."""
    record = {
        "dataset": dataset,
        "settings": settings,
        "sgn_version": __version__,
        "code": code_hashes([made_by]),
        "written": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        **fields,
    }
    path = Path(folder) / RECORD
    atomic_write_text(path, json.dumps(record, indent=2, sort_keys=True, default=str) + "\n")
    return path


def settings_match(folder: Path, settings: dict) -> bool:
    """Whether ``folder`` holds a preparation with ``settings``; False if it is absent or empty.

    Raises:
        SGNError: ``folder`` is a file, or holds something else (naming the settings that differ).
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise SGNError(f"{folder}: exists and is not a folder; choose another output folder")
    if not folder.exists() or not any(folder.iterdir()):
        return False
    record = read_provenance(folder)
    if record is None:
        raise SGNError(f"{folder}: not empty and holds no {RECORD}; remove it or choose another folder")
    found = record.get("settings") if isinstance(record.get("settings"), dict) else {}
    differ = [key for key in sorted(set(found) | set(settings)) if found.get(key) != settings.get(key)]
    if differ:
        shown = "; ".join(f"{key} {shorten(found.get(key), 40)} != {shorten(settings.get(key), 40)}"
                          for key in differ[:3])
        raise SGNError(f"{folder}: holds a preparation with other settings ({shown}); "
                       "remove it or choose another folder")
    return True
