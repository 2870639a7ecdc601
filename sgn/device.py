"""Where and how models run: ``--device auto|cpu|cuda``, the training precision and the
attention kernel, each resolved once, with one clear error."""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Callable, ContextManager

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from sgn.config import ATTENTIONS, PRECISIONS
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
    if not runs_bf16(precision, device):
        return nullcontext
    return lambda: torch.autocast(device.type, dtype=torch.bfloat16)


def runs_bf16(precision: str, device: torch.device) -> bool:
    """Whether ``precision`` means bf16 autocast on ``device`` (errors as :func:`autocast_for`)."""
    if precision not in PRECISIONS:
        raise SGNError(f"precision: expected one of {list(PRECISIONS)}, got {shorten(precision)}")
    if precision == "fp32":
        return False
    if not native_bf16(device):
        if precision == "bf16":
            what = "a CUDA GPU with bf16" if device.type == "cuda" else f"a CPU flag {' or '.join(sorted(BF16_CPU_FLAGS))}"
            raise SGNError(f"precision: bf16 needs native bf16 on {device} ({what}); use fp32 or auto")
        return False
    return True


def attention_kernel(attention: str, precision: str, device: torch.device) -> Callable[[], ContextManager]:
    """A factory of the context that picks the attention kernel: ``fused`` PyTorch's own choice
    (a fused kernel where it has one: flash attention on a CPU), ``math`` its unfused
    matmul-softmax-matmul, ``auto`` math under bf16 on a CPU and PyTorch's choice elsewhere.

    Why ``auto`` differs by device: the CPU's bf16 flash-attention backward was the SGN step's
    largest cost; the math kernel made the bf16 step 8-12% shorter (2 cores, AVX512-BF16,
    2026-12-05: 8% more steps in the same training wall-clock) but the fp32 step 3% slower, and on
    a GPU the fused kernels are the fast ones.
    """
    if attention not in ATTENTIONS:
        raise SGNError(f"attention: expected one of {list(ATTENTIONS)}, got {shorten(attention)}")
    if attention == "auto":
        attention = "math" if device.type == "cpu" and runs_bf16(precision, device) else "fused"
    return (lambda: sdpa_kernel(SDPBackend.MATH)) if attention == "math" else nullcontext


def training_context(precision: str, attention: str, device: torch.device) -> Callable[[], ContextManager]:
    """A factory of the context training and validation compute in: the precision's autocast
    (:func:`autocast_for`) and the attention kernel (:func:`attention_kernel`)."""
    autocast, kernel = autocast_for(precision, device), attention_kernel(attention, precision, device)

    @contextmanager
    def context():
        with autocast(), kernel():
            yield
    return context
