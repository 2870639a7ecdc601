"""Where models run: ``--device auto|cpu|cuda`` resolved once, with one clear error."""

from __future__ import annotations

import torch

from sgn.utils import SGNError, shorten

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; ``"cuda"`` without a GPU is an error."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        device = None
    if device is None or device.type not in DEVICES:
        raise SGNError(f"device: expected one of {list(DEVICES)} (or cuda:N), got {shorten(str(device))}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SGNError("device: cuda requested but no CUDA GPU is available (use --device cpu or auto)")
    return device
