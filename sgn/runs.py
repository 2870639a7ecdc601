"""Run folders, and the fingerprint that ties a run's weights to the code and data that made them.

A run folder holds ``config.yaml``, ``fingerprint.json``, ``metrics.csv``, ``last.pt``
and ``best.pt`` (see :mod:`sgn.train`). The fingerprint records a sha256 of every
source file that determines the weights (the training loop, the architecture's module
and every module they import: :func:`sgn.provenance.code_hashes`) and the data set's
identity (its ``index.csv`` and preparation record). A run is continued only
under the same fingerprint: when it differs, :func:`open_run` either refuses in one
line naming what changed (``stale="refuse"``, ``sgn train --resume``) or starts the run
over (``stale="retrain"``, the notebooks' cache), so weights from older code are never
reused silently.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from sgn.checkpoint import architecture_module
from sgn.config import TrainConfig, load_config, save_config, to_dict
from sgn.provenance import changed_files, code_hashes, data_identity, digest
from sgn.utils import SGNError, atomic_write_text, shorten

log = logging.getLogger(__name__)

# The training loop; with the architecture's module, the roots of a run's code.
TRAINING_MODULE = "sgn.train"
STALE_POLICIES = ("refuse", "retrain")


def code_files(arch: str) -> dict[str, str]:
    """``{module file: sha256}`` of the code that determines an ``arch`` model's weights:
    the training loop, the architecture's module, and everything they import."""
    return code_hashes([TRAINING_MODULE, architecture_module(arch)])


def run_fingerprint(config: TrainConfig) -> dict:
    """What a run's weights depend on besides its config: ``{"code": {...}, "data": {...}, "sha256": ...}``."""
    parts = {"code": code_files(config.model.arch), "data": data_identity(config.data.index)}
    return {**parts, "sha256": digest(parts)}


def fingerprint_changes(old: dict, new: dict) -> list[str]:
    """The code files and data records whose hashes differ between two fingerprints."""
    return changed_files(old, new)


@dataclass
class RunFolder:
    """An opened run folder. ``resumable``: it holds a ``last.pt`` of this config and fingerprint."""

    path: Path
    fingerprint: dict
    resumable: bool

    @property
    def last(self) -> Path:
        return self.path / "last.pt"

    @property
    def best(self) -> Path:
        return self.path / "best.pt"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.csv"


def _stored_fingerprint(folder: Path) -> dict:
    path = folder / "fingerprint.json"
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except ValueError:
        return {}


def open_run(folder: str | Path, config: TrainConfig, *, resume: bool, stale: str = "refuse",
             write: bool = True, overwrite: bool = False) -> RunFolder:
    """Check a run folder against ``config`` and the current code and data, before any work.

    Args:
        folder: the run folder.
        config: the run's config.
        resume: continue a run the folder holds (its config must equal ``config``).
        stale: what to do with a run of this config whose fingerprint differs:
            ``"refuse"`` (one line naming the changed files) or ``"retrain"`` (start over).
        write: create the folder and write ``config.yaml`` and ``fingerprint.json``
            (only rank 0 of a distributed run does).
        overwrite: replace weights or metrics that no resumable run of this project holds
            (a ``best.pt`` without ``last.pt``: someone's model, or a run of other code).

    Raises:
        SGNError: a folder that holds another run, or (``resume=False``) any run.
    """
    if stale not in STALE_POLICIES:
        raise SGNError(f"stale: expected one of {list(STALE_POLICIES)}, got {shorten(stale)}")
    folder = Path(folder)
    fingerprint = run_fingerprint(config)
    # A config.yaml without last.pt is a run that failed before its first checkpoint:
    # nothing to resume or to lose, so it is started over, with whatever config.
    resumable = (folder / "last.pt").exists()
    if not resumable and not overwrite:
        _check_replaceable(folder, config, fingerprint)
    if resumable:
        _check_existing(folder, config, resume)
        changed = fingerprint_changes(_stored_fingerprint(folder), fingerprint)
        if changed and stale == "refuse":
            raise SGNError(f"{folder}: its weights were made by other code or data ({', '.join(changed[:4])} "
                           "changed); start a new run in another --out folder")
        if changed:
            log.warning("%s: %s changed since this run was trained; training it again", folder, ", ".join(changed))
            resumable = False
    if write:
        folder.mkdir(parents=True, exist_ok=True)
        if not resumable:
            for name in ("last.pt", "best.pt", "metrics.csv"):
                (folder / name).unlink(missing_ok=True)
        save_config(config, folder / "config.yaml")
        atomic_write_text(folder / "fingerprint.json", json.dumps(fingerprint, indent=2, sort_keys=True) + "\n")
    return RunFolder(folder, fingerprint, resumable)


def _check_replaceable(folder: Path, config: TrainConfig, fingerprint: dict) -> None:
    """Without ``last.pt``, weights or metrics are replaced only when they are this very run's
    (same config and fingerprint: it was stopped between writing ``best.pt`` and ``last.pt``)."""
    kept = [name for name in ("best.pt", "metrics.csv") if (folder / name).exists()]
    if not kept:
        return
    ours = (folder / "config.yaml").is_file() and _stored_fingerprint(folder).get("sha256") == fingerprint["sha256"]
    try:
        ours = ours and to_dict(load_config(folder / "config.yaml")) == to_dict(config)
    except SGNError:
        ours = False
    if not ours:
        raise SGNError(f"{folder}: holds {' and '.join(kept)} but no last.pt (not a run this command can continue); "
                       "pass --overwrite to replace them or choose another --out")


def _check_existing(folder: Path, config: TrainConfig, resume: bool) -> None:
    if not (folder / "config.yaml").exists():
        raise SGNError(f"{folder}: last.pt without config.yaml; not an sgn run folder")
    if not resume:
        raise SGNError(f"{folder}: already holds a run; pass --resume to continue it or choose another --out")
    if to_dict(load_config(folder / "config.yaml")) != to_dict(config):
        raise SGNError(f"{folder}: holds a run with a different config; resume it with the same config or use another --out")
