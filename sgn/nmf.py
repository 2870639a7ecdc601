"""Supervised NMF: the classic baseline of source-separation tables.

Each class ``c`` gets a dictionary ``W_c`` of ``R`` spectral atoms, learned from the
training clips of that class alone (Smaragdis, Raj & Shashanka, 2007; Virtanen, 2007).
At separation time the dictionaries of the classes present in a mixture are stacked
and frozen, only the activations are fitted to the mixture magnitude, and each source
gets the Wiener-style share of the model that its own atoms explain.

Quick start::

    index = read_index("data/synth_music/index.csv")
    classes = index_classes(index)
    nmf = NMFSeparator.fit(index, classes, STFTSpec(1022, 256))      # per-class W_c
    masks = nmf.masks(batch["mix_mag"], batch["class_ids"])          # [B, N, F, T]
    estimates = STFTSpec(1022, 256).istft(masks * mix_spec[:, None], length)

Model. A non-negative magnitude spectrogram ``V`` (``[F, T]``) is approximated by
``V ~ W H`` with ``W >= 0`` (``[F, K]``, atoms) and ``H >= 0`` (``[K, T]``,
activations), minimising the beta-divergence

    D_beta(V | WH) = sum_ft d_beta(V_ft | (WH)_ft),
    d_beta(x | y) = (x^b + (b - 1) y^b - b x y^(b-1)) / (b (b - 1)),

with ``b = 1`` the generalised Kullback-Leibler divergence ``x log(x/y) - x + y``
(the default: magnitudes, as in Smaragdis et al.) and ``b = 2`` half the squared
Euclidean distance.

Multiplicative updates (Lee & Seung, 2001; Fevotte & Idier, 2011), with
``Lambda = W H``, ``.`` elementwise, ``/`` elementwise and ``^T`` the transpose:

    H <- H . [ (W^T (V . Lambda^(b-2))) / (W^T Lambda^(b-1)) ]^g(b)
    W <- W . [ ((V . Lambda^(b-2)) H^T) / (Lambda^(b-1) H^T) ]^g(b)

where ``g(b) = 1/(2-b)`` for ``b < 1``, ``1`` for ``1 <= b <= 2`` and ``1/(b-1)``
for ``b > 2`` makes every step non-increasing in ``D_beta`` (Fevotte & Idier, 2011).
For ``b = 1`` the denominators are ``W^T 1`` and ``1 H^T`` (column sums of ``W``,
row sums of ``H``); for ``b = 2`` they are ``W^T W H`` and ``W H H^T``. Every
division has ``eps`` added to its denominator. After each ``W`` step the atoms are
rescaled to unit L1 norm (``sum_f W_fk = 1``) and ``H`` is scaled the other way,
so ``W H`` is unchanged and the scale lives in the activations.

Training (:meth:`NMFSeparator.fit`): per class, the STFT magnitudes of its clips are
concatenated along time, frames more than 60 dB below the loudest frame (by energy
``sum_f V_ft^2``) are dropped, at most ``max_frames_per_class`` frames are kept (a
seeded random subset), ``V`` is divided by its mean, and ``W_c`` (``[F, R]``) and a
throw-away ``H`` are learned by ``fit_iterations`` alternating updates from a seeded
random start.

Separation (:meth:`NMFSeparator.masks`): for a mixture with classes ``c_1..c_N``,
``W = [W_c1 ... W_cN]`` (``[F, N R]``) is fixed and ``H = [H_1; ...; H_N]`` is
fitted by ``separate_iterations`` updates of ``H`` alone, from the deterministic
start ``H_kt = sum_f V_ft / (N R)`` (the per-frame level of ``V``). For
``0 <= b <= 2`` the objective is convex in ``H``, so the start matters little.
The masks are

    M_i = (W_i H_i) / (sum_j W_j H_j),

in [0, 1] and summing to 1 over the real sources; where the model is zero (a silent
frame) every real source gets ``1/N``. Padding sources (class id ``-1``) have no
atoms and a zero mask. Batches are separated at once: the dictionaries are gathered
per item into ``W [B, F, Nmax R]`` and every update is a batched matrix product.

References:
    * D. D. Lee and H. S. Seung, "Algorithms for non-negative matrix factorization",
      NIPS 2001.
    * P. Smaragdis, B. Raj and M. Shashanka, "Supervised and semi-supervised
      separation of sounds from single-channel mixtures", ICA 2007.
    * T. Virtanen, "Monaural sound source separation by nonnegative matrix
      factorization with temporal continuity and sparseness criteria", IEEE TASLP
      15(3), 2007.
    * C. Fevotte and J. Idier, "Algorithms for nonnegative matrix factorization with
      the beta-divergence", Neural Computation 23(9), 2011.
"""

from __future__ import annotations

import dataclasses
import math
import os
import pickle
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from sgn.audio import STFTSpec, load_audio
from sgn.data import check_sample_rate
from sgn.utils import SGNError, atomic_path, check_class_names, shorten

FORMAT = "sgn-nmf/1"
# Added to every denominator of the updates. Spectrograms are divided by their mean
# before factorising, so this is far below any real model value.
EPS = 1e-9
# Training frames whose energy is this far below the class's loudest frame are dropped.
SILENCE_DB = -60.0


@dataclass(frozen=True)
class NMFConfig:
    """Hyperparameters of the supervised NMF baseline."""

    n_components: int = 24  # R, dictionary atoms per class
    fit_iterations: int = 200  # multiplicative updates when learning a class dictionary
    separate_iterations: int = 100  # updates of the activations at separation time
    beta: float = 1.0  # beta-divergence: 1 = KL (default), 2 = Euclidean
    max_frames_per_class: int = 8000  # cap on training frames per class (random subset, seeded); 93 s of audio
    seed: int = 0

    def __post_init__(self):
        for name in ("n_components", "fit_iterations", "max_frames_per_class"):
            if int(getattr(self, name)) < 1:
                raise SGNError(f"NMFConfig.{name}: expected a positive integer, got {getattr(self, name)!r}")
        if int(self.separate_iterations) < 0:
            raise SGNError(f"NMFConfig.separate_iterations: expected >= 0, got {self.separate_iterations!r}")
        if not (math.isfinite(self.beta) and self.beta >= 0):
            raise SGNError(f"NMFConfig.beta: expected a finite number >= 0, got {self.beta!r}")


def _exponent(beta: float) -> float:
    """``g(beta)``, the exponent that makes the multiplicative updates monotone."""
    if beta < 1:
        return 1.0 / (2.0 - beta)
    if beta > 2:
        return 1.0 / (beta - 1.0)
    return 1.0


def _model_terms(V: torch.Tensor, W: torch.Tensor, H: torch.Tensor, beta: float, work: torch.Tensor | None):
    """``(V . Lambda^(b-2), Lambda^(b-1))`` with ``Lambda = W H + eps``, for ``beta != 2``.

    For ``beta = 1`` the second term is ``None`` (it is all ones). ``work`` (``[..., F, T]``,
    optional) is overwritten with the first term, sparing the allocation of the largest
    array of an iteration.
    """
    WH = torch.matmul(W, H, out=work) if work is not None else W @ H  # [..., F, T]
    WH.add_(EPS)
    if beta == 1:
        return torch.div(V, WH, out=WH), None
    power = WH.pow(beta - 1)
    return WH.pow_(beta - 2).mul_(V), power


def update_activations(
    V: torch.Tensor, W: torch.Tensor, H: torch.Tensor, beta: float, work: torch.Tensor | None = None
) -> torch.Tensor:
    """One multiplicative update of ``H`` with ``W`` fixed (see the module docstring).

    Args:
        V: target magnitudes ``[..., F, T]``, non-negative.
        W: atoms ``[..., F, K]``, non-negative (all-zero columns stay inactive).
        H: activations ``[..., K, T]``, non-negative.
        beta: the beta-divergence.
        work: optional scratch space like ``V``, overwritten.

    Returns:
        The new ``H``, ``[..., K, T]``.
    """
    Wt = W.transpose(-1, -2)  # [..., K, F]
    if beta == 2:
        num = Wt @ V  # [..., K, T]
        den = (Wt @ W) @ H  # [..., K, T], via the small K x K Gram matrix
    else:
        ratio, power = _model_terms(V, W, H, beta, work)  # [..., F, T] each
        num = Wt @ ratio
        den = W.sum(-2).unsqueeze(-1) if power is None else Wt @ power  # W^T 1 is [..., K, 1]
    ratio = num.div_(den + EPS)
    gamma = _exponent(beta)
    return H * (ratio if gamma == 1 else ratio.pow_(gamma))


def update_dictionary(
    V: torch.Tensor, W: torch.Tensor, H: torch.Tensor, beta: float, work: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """One multiplicative update of ``W`` with ``H`` fixed, then L1 normalisation of the atoms.

    Args:
        V: ``[F, T]``; W: ``[F, K]``; H: ``[K, T]``; beta: the beta-divergence;
        work: optional ``[F, T]`` scratch space, overwritten.

    Returns:
        ``(W, H)``: ``W`` with columns summing to 1 and ``H`` rescaled so ``W H`` is
        what the update gave.
    """
    Ht = H.T  # [T, K]
    if beta == 2:
        num = V @ Ht  # [F, K]
        den = W @ (H @ Ht)  # [F, K], via the K x K Gram matrix
    else:
        ratio, power = _model_terms(V, W, H, beta, work)  # [F, T] each
        num = ratio @ Ht
        den = H.sum(1).unsqueeze(0) if power is None else power @ Ht  # 1 H^T is [1, K]
    ratio = num.div_(den + EPS)
    gamma = _exponent(beta)
    W = W * (ratio if gamma == 1 else ratio.pow_(gamma))
    scale = W.sum(0).clamp_min(EPS)  # [K]
    return W / scale, H * scale[:, None]


def beta_divergence(V: torch.Tensor, V_hat: torch.Tensor, beta: float) -> torch.Tensor:
    """``D_beta(V | V_hat)`` summed over all elements (a scalar; for checks and plots)."""
    x, y = V, V_hat + EPS
    if beta == 1:
        return (torch.xlogy(x, x) - x * torch.log(y) - x + y).sum()
    if beta == 0:
        return (x / y - torch.log(x / y + EPS) - 1).sum()
    return ((x.pow(beta) + (beta - 1) * y.pow(beta) - beta * x * y.pow(beta - 1)) / (beta * (beta - 1))).sum()


def learn_dictionary(
    V: torch.Tensor, n_components: int, iterations: int, beta: float, generator: torch.Generator
) -> torch.Tensor:
    """Learn ``W`` (``[F, R]``, columns summing to 1) with ``V ~ W H`` from a seeded random start.

    Args:
        V: training magnitudes ``[F, M]`` (``M`` frames), non-negative, not all zero.
        n_components: ``R``.
        iterations: alternating ``H``/``W`` updates.
        beta: the beta-divergence.
        generator: seeds the random start.
    """
    n_bins, n_frames = V.shape
    V = V / V.mean()  # scale-free: W is normalised, the scale only moves into H
    W = torch.rand(n_bins, n_components, generator=generator, dtype=V.dtype) + 0.1
    W = W / W.sum(0)  # [F, R]
    # Start H at the per-frame level of V, with random spread, so W H ~ V in scale.
    level = V.sum(0, keepdim=True) / n_components  # [1, M]
    H = level * (0.5 + torch.rand(n_components, n_frames, generator=generator, dtype=V.dtype))  # [R, M]
    work = torch.empty_like(V)  # [F, M], reused by every update
    for _ in range(iterations):
        H = update_activations(V, W, H, beta, work)
        W, H = update_dictionary(V, W, H, beta, work)
    dead = W.sum(0) <= 0.5  # an atom whose activations died: give it a flat spectrum
    if dead.any():
        W[:, dead] = 1.0 / n_bins
    return W


def _class_seed(seed: int, name: str) -> int:
    """A seed for one class from the run's seed and the class *name* (not its position)."""
    return int(np.random.SeedSequence([int(seed), zlib.crc32(name.encode())]).generate_state(1, np.uint64)[0] >> 1)


def _class_frames(
    clips: pd.DataFrame, stft: STFTSpec, sample_rate: int, max_frames: int, seed: int, name: str, where: str
) -> torch.Tensor:
    """The non-silent training frames of one class, subsampled: ``[F, M]`` float32."""
    mags = []
    for path in clips["abspath"]:
        wave, _ = load_audio(path, sample_rate)  # [L]
        mags.append(stft.stft(torch.from_numpy(wave)).abs())  # [F, T]
    V = torch.cat(mags, dim=1)  # [F, M]
    energy = V.pow(2).sum(0).double()  # [M]
    peak = float(energy.max())
    if not peak > 0:
        raise SGNError(f"{where}: class {name!r} has only silent audio in its {len(clips)} clip(s)")
    keep = torch.nonzero(energy >= peak * 10 ** (SILENCE_DB / 10)).squeeze(1)  # [M']
    if len(keep) > max_frames:
        rng = np.random.default_rng(_class_seed(seed, name))
        keep = keep[torch.from_numpy(np.sort(rng.choice(len(keep), size=max_frames, replace=False)))]
    return V[:, keep].contiguous()


class NMFSeparator:
    """Supervised NMF separation with one dictionary per class.

    Args:
        dictionaries: ``[C, F, R]`` non-negative atoms, each column summing to 1.
        classes: the ``C`` class names in class-id order.
        stft: the STFT the dictionaries were learned on (``F = stft.n_bins``).
        config: the hyperparameters (``R = config.n_components``).

    Raises:
        SGNError: shapes that disagree with ``classes``, ``stft`` or ``config``, or
        negative / non-finite atoms.
    """

    def __init__(self, dictionaries: torch.Tensor, classes: list[str], stft: STFTSpec, config: NMFConfig):
        classes = check_class_names(classes, "NMF classes")
        dictionaries = torch.as_tensor(dictionaries).detach().to("cpu", torch.float32)
        expected = (len(classes), stft.n_bins, config.n_components)
        if tuple(dictionaries.shape) != expected:
            raise SGNError(
                f"NMF dictionaries: shape {tuple(dictionaries.shape)}, expected [C, F, R] = {list(expected)}"
            )
        if not torch.isfinite(dictionaries).all() or (dictionaries < 0).any():
            raise SGNError("NMF dictionaries: atoms must be finite and non-negative")
        self.dictionaries = dictionaries  # [C, F, R]
        self.classes = classes
        self.stft = stft
        self.config = config

    def __repr__(self) -> str:
        return (
            f"NMFSeparator(classes={len(self.classes)}, F={self.stft.n_bins}, R={self.config.n_components}, "
            f"beta={self.config.beta})"
        )

    # ----------------------------------------------------------------------------- training

    @classmethod
    def fit(
        cls,
        index: pd.DataFrame,
        classes: list[str],
        stft: STFTSpec,
        config: NMFConfig = NMFConfig(),
        split: str = "train",
        progress: bool = True,
    ) -> "NMFSeparator":
        """Learn one dictionary per class from the ``split`` clips of ``index``.

        Per class: STFT magnitudes of all its clips, near-silent frames (60 dB below
        the loudest) dropped, at most ``config.max_frames_per_class`` frames kept (a
        random subset seeded by ``config.seed`` and the class name), then
        ``config.fit_iterations`` multiplicative updates (Smaragdis et al., 2007).
        A class's frames are all held in memory before the subset is drawn
        (``F x frames x 4`` bytes: about 300 MB per hour of audio at 11025 Hz, F = 512).

        Args:
            index: a table from :func:`sgn.data.read_index`.
            classes: the class names in class-id order (usually :func:`sgn.data.index_classes`).
            stft: the STFT to learn on.
            config: the hyperparameters.
            split: the clips to learn from.
            progress: show a tqdm bar over the classes.

        Returns:
            The separator, dictionaries ``[C, F, R]``.

        Raises:
            SGNError: a class without clips in ``split``, a class whose clips are all
            silent, or clips at more than one sample rate.
        """
        where = index.attrs.get("path", "index")
        rows = index[index["split"] == split]
        rates = sorted(set(int(r) for r in index["sample_rate"]))
        sample_rate = rates[0]
        check_sample_rate(index, sample_rate)  # one rate for the whole data set
        dictionaries = []
        for name in tqdm(classes, desc="NMF dictionaries", unit="class", disable=not progress):
            clips = rows[rows["class"] == name]
            if clips.empty:
                raise SGNError(f"{where}: class {name!r} has no {split} clips to learn an NMF dictionary from")
            V = _class_frames(clips, stft, sample_rate, config.max_frames_per_class, config.seed, name, where)
            generator = torch.Generator().manual_seed(_class_seed(config.seed, name))
            with torch.no_grad():
                W = learn_dictionary(V, config.n_components, config.fit_iterations, config.beta, generator)
            dictionaries.append(W)
        return cls(torch.stack(dictionaries), list(classes), stft, config)  # [C, F, R]

    # ----------------------------------------------------------------------------- separation

    @torch.no_grad()
    def masks(self, mix_mag: torch.Tensor, class_ids: torch.Tensor) -> torch.Tensor:
        """Soft masks for the given classes of each mixture.

        Args:
            mix_mag: mixture magnitude ``[F, T]`` or ``[B, F, T]`` (any float dtype and device).
            class_ids: ``[N]`` or ``[B, N]`` ids into :attr:`classes`; ``-1`` is padding.

        Returns:
            Masks ``[N, F, T]`` or ``[B, N, F, T]`` in [0, 1], in ``mix_mag``'s dtype and
            device: summing to 1 over each mixture's real sources (``1/N`` each where
            the model is zero) and zero for padding.

        Raises:
            SGNError: shapes that do not match, or ids outside ``[-1, C)``.
        """
        single = mix_mag.dim() == 2
        if single:
            mix_mag, class_ids = mix_mag.unsqueeze(0), torch.as_tensor(class_ids).unsqueeze(0)
        class_ids = torch.as_tensor(class_ids, device=mix_mag.device).long()
        if mix_mag.dim() != 3 or class_ids.dim() != 2 or class_ids.shape[0] != mix_mag.shape[0]:
            raise SGNError(
                f"NMF masks: expected mix_mag [F, T] with class_ids [N], or [B, F, T] with [B, N]; "
                f"got {list(mix_mag.shape)} and {list(class_ids.shape)}"
            )
        if mix_mag.shape[1] != self.stft.n_bins:
            raise SGNError(f"NMF masks: mixture has {mix_mag.shape[1]} bins, the dictionaries {self.stft.n_bins}")
        if class_ids.numel() and (class_ids.min() < -1 or class_ids.max() >= len(self.classes)):
            raise SGNError(f"NMF masks: class ids must lie in [-1, {len(self.classes)}), got {class_ids.tolist()}")

        dtype = mix_mag.dtype if mix_mag.dtype in (torch.float32, torch.float64) else torch.float32
        B, F, T = mix_mag.shape
        N, R = class_ids.shape[1], self.config.n_components
        V = mix_mag.to(dtype).clamp_min(0)  # [B, F, T]
        scale = V.mean(dim=(1, 2), keepdim=True)  # [B, 1, 1]
        V = V / torch.where(scale > 0, scale, torch.ones_like(scale))  # each mixture at mean 1

        valid = class_ids >= 0  # [B, N]
        atoms = self.dictionaries.to(mix_mag.device, dtype)[class_ids.clamp_min(0)]  # [B, N, F, R]
        atoms = atoms * valid[:, :, None, None]  # padding has no atoms
        W = atoms.permute(0, 2, 1, 3).reshape(B, F, N * R)  # [B, F, N R]
        active = valid.repeat_interleave(R, dim=1).to(dtype)  # [B, N R]
        n_active = active.sum(1).clamp_min(1)  # [B]
        # Deterministic start: every active atom at the frame's level (sum_f W_fk = 1).
        H = active[:, :, None] * V.sum(1, keepdim=True) / n_active[:, None, None]  # [B, N R, T]
        work = torch.empty_like(V)  # [B, F, T], reused by every update
        for _ in range(self.config.separate_iterations):
            H = update_activations(V, W, H, self.config.beta, work)

        parts = atoms @ H.view(B, N, R, T)  # [B, N, F, T]: W_i H_i
        total = parts.sum(1, keepdim=True)  # [B, 1, F, T]
        n_real = valid.sum(1).clamp_min(1)  # [B]
        uniform = (valid.to(dtype) / n_real[:, None].to(dtype))[:, :, None, None]  # [B, N, 1, 1]
        masks = torch.where(total > 0, parts / total.clamp_min(torch.finfo(dtype).tiny), uniform)
        masks = masks.clamp(0, 1).to(mix_mag.dtype)  # [B, N, F, T]
        return masks[0] if single else masks

    # ----------------------------------------------------------------------------- storage

    def save(self, path: str | os.PathLike) -> Path:
        """Write the separator atomically (a ``torch.save`` dict of tensors and plain types)."""
        path = Path(path)
        state = {
            "format": FORMAT,
            "dictionaries": self.dictionaries.clone(),
            "classes": list(self.classes),
            "stft": {"n_fft": int(self.stft.n_fft), "hop": int(self.stft.hop)},
            "config": dataclasses.asdict(self.config),
        }
        with atomic_path(path) as tmp:
            torch.save(state, tmp)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "NMFSeparator":
        """Read a separator written by :meth:`save` (``torch.load(weights_only=True)``).

        Raises:
            SGNError: a missing or unreadable file, or one that is not ``sgn-nmf/1``.
        """
        path = Path(path)
        if not path.is_file():
            raise SGNError(f"{path}: NMF model file not found")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, AttributeError) as err:
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise SGNError(f"{path}: not a readable {FORMAT} file ({reason})") from None
        found = state.get("format") if isinstance(state, dict) else None
        if found != FORMAT:
            raise SGNError(f"{path}: not an NMF model file (format {found!r}, expected {FORMAT!r})")
        try:
            config = NMFConfig(**state["config"])
            stft = STFTSpec(**state["stft"])
            return cls(state["dictionaries"], state["classes"], stft, config)
        except (KeyError, TypeError) as err:
            raise SGNError(f"{path}: incomplete {FORMAT} file ({shorten(str(err))})") from None
        except SGNError as err:
            raise SGNError(f"{path}: {err}") from None
