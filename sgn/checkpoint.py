"""Build separators from a config, and save/load checkpoints that rebuild them.

A checkpoint is a dict of tensors and plain Python values, loadable with
``torch.load(weights_only=True)``: the format tag, the package version, the full run
config, the class names, the model weights and, for resumable ``last.pt`` files, the
optimizer state, the step and the RNG state.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sgn import __version__
from sgn.config import TrainConfig, from_dict, to_dict
from sgn.model import SGN
from sgn.unet import LabelConditionedUNet
from sgn.utils import SGNError, atomic_path

CHECKPOINT_FORMAT = "sgn-checkpoint/1"
ARCHITECTURES: dict[str, type[nn.Module]] = {"sgn": SGN, "unet": LabelConditionedUNet}


def build_model(config: TrainConfig, classes: list[str]) -> nn.Module:
    """The separator that ``config.model.arch`` names, for ``classes``."""
    arch = config.model.arch
    if arch not in ARCHITECTURES:
        raise SGNError(f"config: model.arch is {arch!r}; expected one of {sorted(ARCHITECTURES)}")
    try:
        return ARCHITECTURES[arch](config.model, classes)
    except ValueError as err:
        raise SGNError(f"config: {err}") from None


def save_checkpoint(path: str | os.PathLike, model: nn.Module, config: TrainConfig, **extra: Any) -> Path:
    """Write a checkpoint atomically. ``extra`` adds resumable state (optimizer, step, ...)."""
    state = {
        "format": CHECKPOINT_FORMAT,
        "sgn_version": __version__,
        "config": to_dict(config),
        "classes": list(model.classes),
        "model": model.state_dict(),
        **extra,
    }
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return Path(path)


def read_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Load and validate a checkpoint dict; raise one clear :class:`SGNError` otherwise."""
    path = Path(path)
    if not path.is_file():
        raise SGNError(f"{path}: checkpoint not found")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises many types for corrupt or foreign files
        raise SGNError(f"{path}: not a readable sgn checkpoint ({type(err).__name__})") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise SGNError(f"{path}: checkpoint format {found!r}, expected {CHECKPOINT_FORMAT!r}")
    return state


def load_model(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> tuple[nn.Module, TrainConfig, dict]:
    """Rebuild the model stored in a checkpoint, in eval mode, on ``map_location``.

    Returns:
        ``(model, config, state)``.
    """
    state = read_checkpoint(path, map_location)
    config = from_dict(TrainConfig, state["config"])
    model = build_model(config, state["classes"])
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as err:
        first = str(err).splitlines()[1].strip() if len(str(err).splitlines()) > 1 else str(err)
        raise SGNError(f"{path}: weights do not fit a {config.model.arch} model of this sgn version ({first})") from None
    return model.to(map_location).eval(), config, state
