"""Build separators from a config, and save/load checkpoints that rebuild them.

A checkpoint is a dict of tensors and plain Python values, loadable with
``torch.load(weights_only=True)``: the format tag, the package version, the full run
config, the class names, the model weights and, for resumable ``last.pt`` files, the
optimizer state, the step and the RNG state.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sgn import __version__
from sgn.config import TrainConfig, from_dict, to_dict
from sgn.utils import SGNError, atomic_path, check_class_names, check_path, shorten

CHECKPOINT_FORMAT = "sgn-checkpoint/1"
# Each architecture as "module:class", imported when built: a run's fingerprint covers its
# own architecture's code (sgn.runs), so editing SGN does not retrain the U-Net.
ARCHITECTURES: dict[str, str] = {"sgn": "sgn.model:SGN", "unet": "sgn.unet:LabelConditionedUNet"}
# What every checkpoint holds, and the type of each; resumable ones add RESUME_KEYS.
REQUIRED_KEYS: dict[str, type] = {"config": dict, "classes": list, "model": dict}
RESUME_KEYS: dict[str, type | tuple[type, ...]] = {
    "optimizer": dict, "step": int, "best_val_sdr": (int, float), "torch_rng": torch.Tensor,
}
MAX_CLASSES = 1024  # far above any data set here; bounds the work of checking a hostile list


def architecture_module(arch: str) -> str:
    """The module that defines architecture ``arch``."""
    if arch not in ARCHITECTURES:
        raise SGNError(f"config: model.arch is {shorten(arch)}; expected one of {sorted(ARCHITECTURES)}")
    return ARCHITECTURES[arch].partition(":")[0]


def architecture(arch: str) -> type[nn.Module]:
    """The separator class of architecture ``arch`` (imported on first use)."""
    module = importlib.import_module(architecture_module(arch))
    return getattr(module, ARCHITECTURES[arch].partition(":")[2])


def build_model(config: TrainConfig, classes: list[str]) -> nn.Module:
    """The separator that ``config.model.arch`` names, for ``classes``."""
    cls = architecture(config.model.arch)
    try:
        return cls(config.model, classes)
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


def read_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> tuple[dict, TrainConfig]:
    """Load and validate a checkpoint; return ``(state, config)``.

    Checked here, once: the format tag, the keys of :data:`REQUIRED_KEYS` and their
    types, the class names (they become file names in ``sgn separate``, so a name that
    could leave the output folder is refused), the weights (named tensors) and the config
    (types and ranges, as from YAML).

    Raises:
        SGNError: one line naming ``path`` and what is wrong.
    """
    path = check_path(path, "checkpoint")
    if not path.is_file():
        raise SGNError(f"{path}: checkpoint not found")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises many types for corrupt or foreign files
        raise SGNError(f"{path}: not a readable sgn checkpoint ({type(err).__name__})") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise SGNError(f"{path}: checkpoint format {shorten(found)}, expected {CHECKPOINT_FORMAT!r}")
    check_keys(state, REQUIRED_KEYS, path, "an sgn checkpoint")
    if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state["model"].items()):
        raise SGNError(f"{path}: model: expected a dict of named tensors (the weights)")
    _check_weight_values(state["model"], path)
    threshold = state.get("presence_threshold", 0.5)
    if isinstance(threshold, bool) or not isinstance(threshold, float) or not 0 < threshold < 1:
        raise SGNError(f"{path}: presence_threshold is {shorten(threshold)}; expected a probability in (0, 1)")
    if not isinstance(state.get("fingerprint", {}), dict):
        raise SGNError(f"{path}: fingerprint is {shorten(state['fingerprint'])}; expected a record (a dict)")
    if not 1 <= len(state["classes"]) <= MAX_CLASSES:
        raise SGNError(f"{path}: classes: {len(state['classes'])} names; expected 1 to {MAX_CLASSES}")
    check_class_names(state["classes"], source=f"{path}: classes")
    try:
        config = from_dict(TrainConfig, state["config"])
    except SGNError as err:
        raise SGNError(f"{path}: {err}") from None
    return state, config


def _check_weight_values(weights: dict[str, torch.Tensor], path: Path) -> None:
    """Weights are numbers: dense, in memory, floating point or integer, and finite
    (a NaN model would separate into silence or -32768 without a word)."""
    for name, tensor in weights.items():
        if tensor.layout != torch.strided or tensor.device.type == "meta":
            kind = "meta (no values)" if tensor.device.type == "meta" else f"{tensor.layout}".removeprefix("torch.")
            raise SGNError(f"{path}: weight {shorten(name)} is {kind}; expected a dense tensor of numbers")
        if tensor.is_complex() or tensor.dtype == torch.bool:
            raise SGNError(f"{path}: weight {shorten(name)} has dtype {tensor.dtype}; expected real numbers")
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise SGNError(f"{path}: weight {shorten(name)} holds NaN or infinite values; not a usable model")


def check_keys(state: dict, kinds: dict[str, type | tuple[type, ...]], path: Path, what: str) -> None:
    """Raise :class:`SGNError` unless ``state[key]`` exists and is of type ``kinds[key]`` for every key."""
    for key, kind in kinds.items():
        if key not in state:
            raise SGNError(f"{path}: no {key!r} entry; not {what}")
        if not isinstance(state[key], kind) or isinstance(state[key], bool):
            names = " or ".join(t.__name__ for t in (kind if isinstance(kind, tuple) else (kind,)))
            raise SGNError(f"{path}: {key!r} is {shorten(state[key])}; expected {names}")


def load_weights(model: nn.Module, state: dict, path: Path) -> None:
    """``model.load_state_dict(state["model"])``; weights of another layout are one
    :class:`SGNError` naming ``path`` and the first missing, extra or reshaped tensor."""
    weights, expected = state["model"], model.state_dict()
    missing = [k for k in expected if k not in weights]
    extra = [k for k in weights if k not in expected]
    reshaped = [k for k in expected if k in weights and weights[k].shape != expected[k].shape]
    problem = (f"{len(missing)} tensor(s) missing, e.g. {shorten(missing[0])}" if missing
               else f"{len(extra)} unexpected tensor(s), e.g. {shorten(extra[0])}" if extra
               else f"{shorten(reshaped[0])} has shape {list(weights[reshaped[0]].shape)}, "
                    f"expected {list(expected[reshaped[0]].shape)}" if reshaped else None)
    if problem:
        raise SGNError(f"{path}: weights do not fit a {model.config.arch} model of this sgn version ({problem})")
    model.load_state_dict(weights)


def load_model(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> tuple[nn.Module, TrainConfig, dict]:
    """Rebuild the model stored in a checkpoint, in eval mode, on ``map_location``.

    Returns:
        ``(model, config, state)``.
    """
    path = check_path(path, "checkpoint")
    state, config = read_checkpoint(path, map_location)
    try:
        model = build_model(config, state["classes"])
    except SGNError as err:
        raise SGNError(f"{path}: {err}") from None
    load_weights(model, state, path)
    return model.to(map_location).eval(), config, state
