"""sgn: a reproducible research companion for the Semantic Grouping Network.

Mo & Tian, "Semantic Grouping Network for Audio Source Separation",
arXiv 2407.03736 (2024).

Dimension names used everywhere in the package, its docstrings and the book:

====  =====================================================
B     batch
N     sources in one mixture
C     classes (one class token each)
K     class tokens per class
F     frequency bins (linear STFT: n_fft // 2 + 1)
Fw    frequency bins after the log-frequency warp
T     STFT frames
L     waveform samples
D     model width (embedding dimension)
P     time-frequency feature tokens (patches) in the model
====  =====================================================

Arrays are ordered ``[B, N, F, T]`` / ``[B, N, L]``; a missing axis is dropped,
never reordered.
"""

__version__ = "0.1.0"

from sgn.utils import SGNError  # noqa: E402

__all__ = ["SGNError", "Separator", "__version__"]


def __getattr__(name: str):
    # `from sgn import Separator` without importing torch and the models on `import sgn`
    if name == "Separator":
        from sgn.separate import Separator

        return Separator
    raise AttributeError(f"module 'sgn' has no attribute {name!r}")
