"""Where and how models run: ``--device auto|cpu|cuda`` and the training precision, each
resolved once, with one clear error."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import Callable, ContextManager

import torch

from sgn.config import PRECISIONS
from sgn.utils import SGNError, shorten

DEVICES = ("auto", "cpu", "cuda")
# CPU flags of a native bf16 dot product (AVX512-BF16 on AMD EPYC since Zen 4, AMX on Intel Xeon).
BF16_CPU_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; ``"cuda"`` without a GPU is an error."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError):
        parsed = None
    if parsed is None or parsed.type not in DEVICES:
        raise SGNError(f"device: expected one of {list(DEVICES)} (or cuda:N), got {shorten(device)}")
    device = parsed
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SGNError("device: cuda requested but no CUDA GPU is available (use --device cpu or auto)")
    return device


def cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> set[str]:
    """The CPU's feature flags (empty where ``/proc/cpuinfo`` cannot be read: not Linux)."""
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return set()
    line = next((line for line in text.splitlines() if line.startswith("flags")), "")
    return set(line.partition(":")[2].split())


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bf16 natively (a CUDA GPU with bf16; a CPU with a flag in :data:`BF16_CPU_FLAGS`)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return bool(cpu_flags() & BF16_CPU_FLAGS)


def autocast_for(precision: str, device: torch.device) -> Callable[[], ContextManager]:
    """A factory of the autocast context that ``precision`` means on ``device``: ``fp32`` none,
    ``bf16`` bf16 autocast (refused where the device has no native bf16), ``auto`` bf16 where
    it is native and fp32 elsewhere.

    Raises:
        SGNError: an unknown precision, or ``bf16`` where the device has no native bf16.
    """
    if precision not in PRECISIONS:
        raise SGNError(f"precision: expected one of {list(PRECISIONS)}, got {shorten(precision)}")
    if precision == "fp32":
        return nullcontext
    if not native_bf16(device):
        if precision == "bf16":
            what = "a CUDA GPU with bf16" if device.type == "cuda" else f"a CPU flag {' or '.join(sorted(BF16_CPU_FLAGS))}"
            raise SGNError(f"precision: bf16 needs native bf16 on {device} ({what}); use fp32 or auto")
        return nullcontext
    return lambda: torch.autocast(device.type, dtype=torch.bfloat16)
