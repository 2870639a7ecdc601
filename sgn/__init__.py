"""sgn: a reproducible research companion for the Semantic Grouping Network.

Mo & Tian, "Semantic Grouping Network for Audio Source Separation",
arXiv 2407.03736 (2024).

Dimension names used everywhere in the package, its docstrings and the book:

====  =====================================================
B     batch
N     sources in one mixture
Nmax  source slots of a padded batch (padding has class id -1)
C     classes
K     class tokens per class
S     class tokens in all (C * K; (C + 1) // 2 with shared tokens)
F     frequency bins (linear STFT: n_fft // 2 + 1)
Fw    frequency bins after the log-frequency warp (the masks' axis)
T     STFT frames
L     waveform samples
D     model width (embedding dimension)
P     time-frequency feature tokens (patches) in the model, P = Pf * Pt
Pf    patches along frequency (Fw / patch_freq)
Pt    patches along time (T' / patch_time, T' = T padded to a multiple of patch_time)
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
