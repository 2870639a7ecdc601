r"""Separation metrics: BSS Eval SDR/SIR/SAR, SI-SDR, SDR improvement, and result tables.

BSS Eval
--------
BSS Eval (Vincent, Gribonval & Févotte, "Performance measurement in blind audio source
separation", IEEE TASLP 14(4), 2006) splits each estimate :math:`\hat s_j` into a
target part (the reference :math:`s_j` passed through a time-invariant FIR filter of
``filter_length`` taps, 512 as in the BSS Eval toolbox), an interference part (what the
filtered *other* references explain) and an artifact part (the rest):

.. math::

    \hat s_j = s_\text{target} + e_\text{interf} + e_\text{artif},\qquad
    \text{SDR} = 10\log_{10}\frac{\|s_\text{target}\|^2}{\|e_\text{interf}+e_\text{artif}\|^2},

    \text{SIR} = 10\log_{10}\frac{\|s_\text{target}\|^2}{\|e_\text{interf}\|^2},\qquad
    \text{SAR} = 10\log_{10}\frac{\|s_\text{target}+e_\text{interf}\|^2}{\|e_\text{artif}\|^2}.

The reference implementation is ``mir_eval.separation.bss_eval_sources`` (Raffel et al.,
ISMIR 2014), which Sound-of-Pixels and its successors report; ``backend="mir_eval"``
calls it. The default ``backend="fast"`` computes the same numbers with
``fast_bss_eval`` (Scheibler, "SDR -- Medium Rare with Fast Computations", ICASSP
2022): the projections are solved from FFT correlation statistics with the exact
(direct) solver, no iterative solver, no diagonal loading, no clamping, no mean removal.
Tests cross-check the two within 0.01 dB. ``fast_bss_eval`` also takes a leading batch
axis and CUDA tensors, which :func:`bss_eval_sources_batch` and
:func:`evaluate_mixture_batch` use (CPU tensors are converted to numpy, the faster and
more robust path on the CPU).

Two details of ``fast_bss_eval`` 0.1.4 that this module works around:

* its own normalisation divides by ``max(norm, 1e-6)``, so a quiet but valid signal
  (norm below 1e-6, e.g. amplitude 1e-9) gets a wrong SDR; every signal is scaled to
  unit norm here first (BSS Eval is invariant to those scales);
* its numpy path with ``compute_permutation=False`` fails under numpy >= 2 (the
  ``np.linalg.solve`` broadcasting change), so this module always computes the
  all-pairs metrics and picks the diagonal or the best permutation itself.

Conventions
-----------
* **Permutation** (mir_eval's): results are indexed by *reference*. ``perm[j]`` is the
  index of the estimate matched to reference ``j``, and ``sdr[j]`` is the SDR of
  estimate ``perm[j]`` against reference ``j``. With ``compute_permutation=True`` the
  matching maximises the summed SIR (Hungarian algorithm instead of mir_eval's
  exhaustive search; ties resolve to the identity, as in mir_eval); otherwise
  ``perm`` is ``[0, ..., N-1]``.
* **Silent input**: an all-zero reference or estimate raises :class:`SilentSignalError`
  (a ``ValueError``) naming the signal. A silent reference leaves nothing to measure;
  a silent estimate has SDR 0/0. mir_eval refuses both too. Sound-of-Pixels' evaluation
  skips any mixture whose reference or estimate is (near-)silent; an evaluation loop
  that wants the same catches :class:`SilentSignalError` and counts the skipped
  mixtures. Quiet but non-zero signals are measured exactly (see above).
* **Singular projections**: references that are linearly dependent within the filter
  length (e.g. the same clip twice) make the projection matrix singular. mir_eval then
  falls back to least squares; here the solve is retried with diagonal loading
  (``fast_bss_eval``'s ``load_diag``, :data:`SINGULAR_LOAD_DIAG`) and a
  ``RuntimeWarning`` is issued. SDR and SAR still match mir_eval; the SIR is
  meaningless for both (about 100 dB here, 250-300 dB from mir_eval's rounding noise).
* **Exact components**: a ratio whose denominator is zero in exact arithmetic (a
  perfect estimate's SDR; the SAR of an estimate that is a sum of references, such as
  the mixture itself) comes out as rounding noise: anything from about 150 dB to
  ``+inf``, different between the backends. Read such values as "exact", not as numbers.

Dimension names follow :mod:`sgn`: ``N`` sources, ``L`` samples, and ``M`` mixtures in a
batch. Inputs may be numpy arrays or torch tensors of any float dtype; everything is
computed in float64 (as mir_eval does) and returned as numpy arrays.

Result tables
-------------
:func:`evaluate_mixture` scores one mixture (:func:`evaluate_mixture_batch` a batch of
mixtures with equal ``N``); :func:`scores_frame` turns a list of such
records into one row per source; :func:`summarize` reports means, medians and
bootstrap confidence intervals per method::

    records = []
    for i, (ref, est, mix, classes) in enumerate(test_set):
        records.append({"mixture_id": i, "classes": classes,
                        **evaluate_mixture(ref, est, mix), "method": "sgn"})
    table = summarize(scores_frame(records), by=("method",))
"""

from __future__ import annotations

import warnings
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from fast_bss_eval.numpy.metrics import square_cosine_metrics as _square_cosines_numpy
from fast_bss_eval.torch.metrics import square_cosine_metrics as _square_cosines_torch
from scipy.optimize import linear_sum_assignment

from sgn.utils import SGNError

BACKENDS: tuple[str, ...] = ("fast", "mir_eval")
# BSS Eval's distortion filter length; mir_eval hard-codes it.
FILTER_LENGTH = 512
# Diagonal loading (relative to unit-norm signals) for the retry of a singular solve:
# small enough to leave SDR/SAR unchanged to 1e-8 dB, large enough to make the
# Toeplitz systems of identical references solvable.
SINGULAR_LOAD_DIAG = 1e-10
# si_sdr()'s bound on the energy ratio: +-100 dB for a perfect (or orthogonal) estimate.
SI_SDR_EPS = 1e-10
# Mixtures per fast_bss_eval call on the GPU by default. With numpy, batching does not pay:
# one mixture per call was as fast or faster than chunks of 2 to 16 (bench/bench_metrics.py).
GPU_CHUNK_SIZE = 16
# Metrics that summarize() reports by default.
SUMMARY_METRICS: tuple[str, ...] = ("sdr", "sir", "sar", "si_sdr", "sdri")
# The fixed columns of scores_frame(), in order.
FRAME_COLUMNS: tuple[str, ...] = (
    "mixture_id", "source", "class", "sdr", "sir", "sar", "si_sdr", "sdr_mixture", "sdri",
)
# Per-source arrays a scores_frame() record must hold (evaluate_mixture's output).
_RECORD_ARRAYS: tuple[str, ...] = ("sdr", "sir", "sar", "si_sdr", "sdr_mixture")
# Stand-in for +-inf dB when solving the assignment (linear_sum_assignment rejects inf).
_HUGE_DB = 1e12
_LINALG_ERRORS = (np.linalg.LinAlgError, torch.linalg.LinAlgError)


class MetricsInputError(SGNError, ValueError):
    """Input the metrics cannot measure (bad shape, NaN/Inf, too short, silent).

    A ``ValueError`` for callers, and an :class:`~sgn.utils.SGNError` so the CLI prints
    it as one line.
    """


class SilentSignalError(MetricsInputError):
    """A reference, estimate or mixture is all zeros; BSS Eval is undefined for it."""


# --------------------------------------------------------------------------- inputs


def _as_float64(x: Any, like: np.ndarray | torch.Tensor | None = None) -> np.ndarray | torch.Tensor:
    """``x`` as float64: a tensor on the GPU if ``x`` or ``like`` is a CUDA tensor, else numpy.

    CPU tensors take the numpy path: it is faster on the CPU, and torch's batched
    ``linalg.solve`` on the CPU intermittently failed here with "Pivots given to lu_solve
    must all be greater or equal to 1" (torch 2.13, in the full test run only).
    """
    device = next((t.device for t in (like, x) if isinstance(t, torch.Tensor) and t.is_cuda), None)
    if device is not None:
        return torch.as_tensor(x, device=device).detach().to(torch.float64)
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy().astype(np.float64)
    return np.asarray(x, dtype=np.float64)


def _to_numpy(x: np.ndarray | torch.Tensor) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _check_signals(x: np.ndarray | torch.Tensor, name: str, batched: bool) -> None:
    """Raise if ``x`` (``[M, N, L]``) holds NaN/Inf or an all-zero signal.

    A batch's message names the mixture when there are several (in a batch of one the
    index would only say 0, and callers scoring one mixture at a time name it themselves).
    """
    finite = torch.isfinite(x).all() if isinstance(x, torch.Tensor) else np.isfinite(x).all()
    if not bool(finite):
        raise MetricsInputError(f"{name} contains NaN or Inf samples")
    silent = np.argwhere(~_to_numpy((x != 0).any(-1)))  # [k, 2] (mixture, source) pairs
    if len(silent):
        m, n = silent[0]
        if name == "mixture":
            where = f"mixture {m}" if batched and len(x) > 1 else "mixture"
        else:
            where = f"mixture {m}, {name} {n}" if batched and len(x) > 1 else f"{name} {n}"
        why = {
            "reference": "nothing can be measured against it",
            "estimate": "its SDR is 0/0 (Sound-of-Pixels skips such mixtures)",
        }.get(name, "BSS Eval is undefined for it")
        raise SilentSignalError(f"{where} is silent (all zeros): {why}")


def _prepare(
    reference: Any, estimate: Any, *, batched: bool, min_length: int
) -> tuple[np.ndarray | torch.Tensor, np.ndarray | torch.Tensor]:
    """Validate a reference/estimate pair and return both as float64 ``[M, N, L]``.

    Unbatched input is ``[N, L]`` or ``[L]`` (one source) and comes back with ``M = 1``.
    If either input is a CUDA tensor, both come back as tensors on its device; otherwise numpy.
    """
    # a CUDA tensor on either side takes both to the GPU (e.g. CPU references, GPU estimates)
    like = next((x for x in (reference, estimate) if isinstance(x, torch.Tensor) and x.is_cuda), None)
    ref, est = _as_float64(reference, like), _as_float64(estimate, like)
    expected = "[M, N, L]" if batched else "[N, L] or [L]"
    if ref.shape != est.shape:
        raise MetricsInputError(
            f"reference shape {tuple(ref.shape)} and estimate shape {tuple(est.shape)} differ;"
            f" both must be {expected}"
        )
    if not batched and ref.ndim == 1:
        ref, est = ref[None], est[None]  # [1, L]: one source
    if ref.ndim != (3 if batched else 2):
        raise MetricsInputError(f"signals have shape {tuple(ref.shape)}; expected {expected}")
    if not batched:
        ref, est = ref[None], est[None]  # [1, N, L]
    if ref.shape[-2] == 0:
        raise MetricsInputError("no sources given (N = 0)")
    if ref.shape[-1] < min_length:
        raise MetricsInputError(
            f"signals have {ref.shape[-1]} samples; at least {min_length} are needed"
        )
    _check_signals(ref, "reference", batched)
    _check_signals(est, "estimate", batched)
    return ref, est


def _unit_norm(x: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """Scale each signal (last axis) to unit norm; dividing by the peak first keeps the
    squares of very quiet signals from underflowing."""
    if isinstance(x, torch.Tensor):
        x = x / x.abs().amax(dim=-1, keepdim=True)
        return x / torch.linalg.vector_norm(x, dim=-1, keepdim=True)
    x = x / np.abs(x).max(axis=-1, keepdims=True)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


# ------------------------------------------------------------------------- BSS Eval


def _coherences(
    ref: np.ndarray | torch.Tensor,
    est: np.ndarray | torch.Tensor,
    filter_length: int,
    load_diag: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Squared cosines of ``fast_bss_eval``, all pairs: ``[M, N, L]``, ``[M, K, L]`` -> ``[M, N, K]`` x2.

    ``coh_sdr[m, j, k]``: estimate ``k`` against the filtered reference ``j``;
    ``coh_sar[m, j, k]``: estimate ``k`` against all filtered references (same for all j).
    """
    square_cosines = _square_cosines_torch if isinstance(ref, torch.Tensor) else _square_cosines_numpy
    coh_sdr, coh_sar = square_cosines(
        _unit_norm(ref),
        _unit_norm(est),
        filter_length=filter_length,
        use_cg_iter=None,  # exact solve, as mir_eval
        zero_mean=False,  # mir_eval keeps the mean
        pairwise=True,
        load_diag=load_diag,
    )
    return _to_numpy(coh_sdr), _to_numpy(coh_sar)


def _coherences_checked(
    ref: np.ndarray | torch.Tensor,
    est: np.ndarray | torch.Tensor,
    filter_length: int,
    first: int,
    batched: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_coherences` with a per-mixture retry with diagonal loading when singular."""
    try:
        return _coherences(ref, est, filter_length)
    except _LINALG_ERRORS:
        if len(ref) > 1:  # find which mixtures are singular; keep the others exact
            parts = [
                _coherences_checked(ref[i : i + 1], est[i : i + 1], filter_length, first + i, batched)
                for i in range(len(ref))
            ]
            return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
        where = f"mixture {first}: " if batched else ""
        warnings.warn(
            f"{where}the references are linearly dependent (e.g. the same clip twice), so the"
            f" projection is singular; solved with diagonal loading {SINGULAR_LOAD_DIAG:g}"
            " (SDR/SAR are unaffected, SIR is meaningless)",
            RuntimeWarning,
            stacklevel=4,
        )
        return _coherences(ref, est, filter_length, load_diag=SINGULAR_LOAD_DIAG)


def _coherence_to_db(coh: np.ndarray) -> np.ndarray:
    """``10 log10(c / (1 - c))``: a squared cosine to the dB ratio it implies."""
    coh = np.clip(coh, 0.0, 1.0)  # rounding can step just outside [0, 1]
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10(coh / (1.0 - coh))


_TIE_DB = 1e-6


def _best_permutation(sir: np.ndarray) -> np.ndarray:
    """Estimate index per reference maximising the summed SIR; ``sir`` is ``[N_ref, N_est]``."""
    gain = np.nan_to_num(sir, nan=-_HUGE_DB, posinf=_HUGE_DB, neginf=-_HUGE_DB)
    _, perm = linear_sum_assignment(gain, maximize=True)
    identity = np.arange(len(gain))
    # mir_eval keeps the first maximiser in itertools.permutations order, which is the
    # identity whenever the identity ties (e.g. identical estimates). A tie is judged to
    # 1e-6 dB: identical estimates' SIRs differ in the last bits with the BLAS kernel.
    if gain[identity, identity].sum() >= gain[identity, perm].sum() - _TIE_DB:
        return identity
    return perm


def _pairwise_scores(
    ref: np.ndarray | torch.Tensor,
    est: np.ndarray | torch.Tensor,
    *,
    filter_length: int,
    chunk_size: int | None,
    batched: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """SDR, SIR, SAR in dB of every estimate against every reference.

    ``ref`` ``[M, N, L]`` and ``est`` ``[M, K, L]`` (validated float64) -> three
    ``[M, N, K]`` arrays; entry ``[m, j, k]`` scores estimate ``k`` as reference ``j``.
    """
    if chunk_size is None:
        chunk_size = GPU_CHUNK_SIZE if isinstance(ref, torch.Tensor) else 1
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
    parts = []  # a loop, not a comprehension, so the warning's stacklevel finds the caller
    for i in range(0, len(ref), chunk_size):
        chunk = slice(i, i + chunk_size)
        parts.append(_coherences_checked(ref[chunk], est[chunk], filter_length, i, batched))
    coh_sdr = np.concatenate([p[0] for p in parts])  # [M, N, K]
    coh_sar = np.concatenate([p[1] for p in parts])  # [M, N, K]
    with np.errstate(divide="ignore", invalid="ignore"):
        coh_sir = coh_sdr / coh_sar
    return _coherence_to_db(coh_sdr), _coherence_to_db(coh_sir), _coherence_to_db(coh_sar)


def _select(
    sdr: np.ndarray, sir: np.ndarray, sar: np.ndarray, compute_permutation: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Pick one estimate per reference from ``[M, N, N]`` all-pairs scores -> four ``[M, N]``."""
    n_mix, n_src = sdr.shape[:2]
    if compute_permutation:
        perm = np.stack([_best_permutation(s) for s in sir])  # [M, N]
    else:
        perm = np.broadcast_to(np.arange(n_src), (n_mix, n_src))

    def matched(x: np.ndarray) -> np.ndarray:  # x[m, j, perm[m, j]] -> [M, N]
        return np.take_along_axis(x, perm[..., None], axis=-1)[..., 0]

    return matched(sdr), matched(sir), matched(sar), perm.astype(np.int64)


def _check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; known backends: {', '.join(BACKENDS)}")


def bss_eval_sources(
    reference: np.ndarray | torch.Tensor,
    estimate: np.ndarray | torch.Tensor,
    *,
    backend: str = "fast",
    compute_permutation: bool = True,
    filter_length: int = FILTER_LENGTH,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """BSS Eval SDR, SIR and SAR of one mixture's estimates (Vincent et al., 2006).

    Same semantics and numbers as ``mir_eval.separation.bss_eval_sources(reference,
    estimate, compute_permutation)``; see the module docstring for the conventions.

    Args:
        reference: true sources, ``[N, L]`` (``[L]`` is one source).
        estimate: estimated sources, same shape.
        backend: ``"fast"`` (``fast_bss_eval``, the default) or ``"mir_eval"``.
        compute_permutation: match estimates to references by the best mean SIR; if
            False, estimate ``j`` is scored against reference ``j``.
        filter_length: taps of the allowed distortion filter; ``"mir_eval"`` only
            supports 512.

    Returns:
        ``(sdr, sir, sar, perm)``: float64 ``[N]`` in dB, indexed by reference, and int64
        ``[N]`` with ``perm[j]`` the estimate matched to reference ``j``.

    Raises:
        ValueError: unknown backend, or a :class:`MetricsInputError` for mismatched
            shapes, NaN/Inf, fewer than ``filter_length`` samples, or (as
            :class:`SilentSignalError`) an all-zero reference or estimate.
    """
    _check_backend(backend)
    ref, est = _prepare(reference, estimate, batched=False, min_length=filter_length)
    if backend == "mir_eval":
        if filter_length != FILTER_LENGTH:
            raise ValueError(f"backend 'mir_eval' fixes filter_length to {FILTER_LENGTH}")
        import mir_eval

        with warnings.catch_warnings():
            # Deprecated in mir_eval 0.8, removed in 0.9; pyproject pins < 0.9 because
            # this function is the reference the fast path is checked against.
            warnings.simplefilter("ignore", FutureWarning)
            sdr, sir, sar, perm = mir_eval.separation.bss_eval_sources(
                _to_numpy(ref[0]), _to_numpy(est[0]), compute_permutation
            )
        return sdr, sir, sar, np.asarray(perm, dtype=np.int64)
    scores = _pairwise_scores(ref, est, filter_length=filter_length, chunk_size=1, batched=False)
    sdr, sir, sar, perm = _select(*scores, compute_permutation)
    return sdr[0], sir[0], sar[0], perm[0]


def bss_eval_sources_batch(
    reference: np.ndarray | torch.Tensor,
    estimate: np.ndarray | torch.Tensor,
    *,
    compute_permutation: bool = True,
    filter_length: int = FILTER_LENGTH,
    chunk_size: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`bss_eval_sources` (fast backend) for a batch of mixtures in one call.

    ``fast_bss_eval`` solves the whole chunk at once (batched FFTs and solves); CUDA
    tensors are evaluated on the GPU, anything else with numpy on the CPU. The
    numbers equal a loop of :func:`bss_eval_sources` over the mixtures.

    Args:
        reference: true sources, ``[M, N, L]``.
        estimate: estimated sources, ``[M, N, L]``.
        compute_permutation: as in :func:`bss_eval_sources`, per mixture.
        filter_length: taps of the allowed distortion filter.
        chunk_size: mixtures per ``fast_bss_eval`` call; bounds memory (about 30 MB per
            mixture of two 6-second sources, and growing with ``N**2``). None:
            :data:`GPU_CHUNK_SIZE` on the GPU, 1 with numpy.

    Returns:
        ``(sdr, sir, sar, perm)``: float64 ``[M, N]`` in dB and int64 ``[M, N]``.

    Raises:
        ValueError: as :func:`bss_eval_sources`, for the whole batch (no partial result);
            messages name the mixture index when there are several.
    """
    ref, est = _prepare(reference, estimate, batched=True, min_length=filter_length)
    scores = _pairwise_scores(ref, est, filter_length=filter_length, chunk_size=chunk_size, batched=True)
    return _select(*scores, compute_permutation)


# ---------------------------------------------------------------- SI-SDR and SDRi


def si_sdr(
    reference: np.ndarray | torch.Tensor, estimate: np.ndarray | torch.Tensor, eps: float = SI_SDR_EPS
) -> np.ndarray:
    r"""Scale-invariant SDR (Le Roux et al., "SDR -- half-baked or well done?", ICASSP 2019).

    The zero-mean variant of the paper: with :math:`s` and :math:`\hat s` the reference
    and estimate minus their means,

    .. math::

        e_\text{target} = \frac{\langle \hat s, s\rangle}{\|s\|^2}\, s,\qquad
        e_\text{res} = \hat s - e_\text{target},\qquad
        \text{SI-SDR} = 10\log_{10}\frac{\|e_\text{target}\|^2}{\|e_\text{res}\|^2}.

    The ratio is clipped to ``[eps, 1/eps]`` so a perfect (or orthogonal) estimate gives
    ``+-10 log10(1/eps)`` dB (100 dB for the default) instead of ``+-inf``.

    Args:
        reference: true sources, ``[N, L]`` (``[L]`` is one source).
        estimate: estimated sources, same shape; estimate ``j`` is scored against
            reference ``j`` (no permutation).
        eps: the clipping bound on the energy ratio.

    Returns:
        float64 ``[N]`` in dB.

    Raises:
        MetricsInputError: as :func:`bss_eval_sources` (a ``ValueError``), and
            :class:`SilentSignalError` for a signal that is zero after removing its mean.
    """
    ref, est = _prepare(reference, estimate, batched=False, min_length=2)
    return _si_sdr(_to_numpy(ref), _to_numpy(est), eps=eps, batched=False)[0]


def _si_sdr(ref: np.ndarray, est: np.ndarray, *, eps: float, batched: bool) -> np.ndarray:
    """:func:`si_sdr` of validated float64 ``[M, N, L]`` numpy arrays -> ``[M, N]``."""
    ref = ref - ref.mean(axis=-1, keepdims=True)
    est = est - est.mean(axis=-1, keepdims=True)
    _check_signals(ref, "reference", batched)  # a constant signal is now zero
    _check_signals(est, "estimate", batched)
    ref, est = _unit_norm(ref), _unit_norm(est)  # SI-SDR ignores both scales
    target = np.sum(est * ref, axis=-1, keepdims=True) * ref  # [M, N, L]; ||ref|| = 1
    with np.errstate(divide="ignore"):
        ratio = np.sum(target**2, axis=-1) / np.sum((est - target) ** 2, axis=-1)
    return 10.0 * np.log10(np.clip(ratio, eps, 1.0 / eps))


def sdr_improvement(sdr: np.ndarray, sdr_mixture: np.ndarray) -> np.ndarray:
    """SDRi: the estimate's SDR minus the SDR of the unprocessed mixture as the estimate.

    NaN for a one-source mixture (last axis of length 1): its "mixture" is the source
    itself, whose SDR is +inf or, after rounding, some 150 dB, so no improvement is
    defined.

    Args:
        sdr: ``[..., N]``, dB.
        sdr_mixture: same shape, dB (see :func:`evaluate_mixture`).
    """
    sdr, sdr_mixture = np.asarray(sdr, dtype=np.float64), np.asarray(sdr_mixture, dtype=np.float64)
    if sdr.shape[-1:] == (1,):
        return np.full(sdr.shape, np.nan)
    return sdr - sdr_mixture


def evaluate_mixture(
    reference: np.ndarray | torch.Tensor,
    estimate: np.ndarray | torch.Tensor,
    mixture: np.ndarray | torch.Tensor,
    *,
    backend: str = "fast",
    compute_permutation: bool = False,
    filter_length: int = FILTER_LENGTH,
) -> dict[str, np.ndarray]:
    """Every metric of one separated mixture, as Sound-of-Pixels' ``calc_metrics`` reports.

    The mixture's own SDR uses the mixture, repeated ``N`` times, as the estimate: the
    score of doing nothing, the lower reference of SDRi. The fast backend scores the
    mixture in the same solve as the estimates, so this costs about one
    :func:`bss_eval_sources` call. ``compute_permutation`` is False
    by default because SGN labels each estimate with its class, so estimate ``j`` belongs
    to reference ``j`` (Sound-of-Pixels does the same).

    Args:
        reference: true sources, ``[N, L]``.
        estimate: estimated sources, ``[N, L]``.
        mixture: the mixture, ``[L]``.
        backend: as :func:`bss_eval_sources`.
        compute_permutation: match estimates to references by SIR first; SI-SDR then
            scores the matched pairs.
        filter_length: as :func:`bss_eval_sources`.

    Returns:
        ``{"sdr", "sir", "sar", "si_sdr", "sdr_mixture", "sdri"}``, each float64 ``[N]``
        indexed by reference, plus ``"perm"`` (int64 ``[N]``) when
        ``compute_permutation`` is True.

    Raises:
        ValueError: as :func:`bss_eval_sources`; a silent mixture or a mixture whose
            length differs from the sources' is reported as such.
    """
    _check_backend(backend)
    ref, est = _prepare(reference, estimate, batched=False, min_length=filter_length)  # [1, N, L]
    mix = _prepare_mixture(mixture, ref, batched=False)  # [1, 1, L]
    if backend == "fast":
        result = _evaluate_prepared(ref, est, mix, compute_permutation=compute_permutation,
                                    filter_length=filter_length, chunk_size=1, batched=False)
        return {key: value[0] for key, value in result.items()}
    sdr, sir, sar, perm = bss_eval_sources(
        ref[0], est[0], backend=backend, compute_permutation=compute_permutation, filter_length=filter_length
    )
    repeated = np.broadcast_to(_to_numpy(mix[0]), est.shape[1:])  # [N, L]
    sdr_mixture = bss_eval_sources(
        ref[0], repeated, backend=backend, compute_permutation=False, filter_length=filter_length
    )[0]
    result = _mixture_result(ref, est, *(x[None] for x in (sdr, sir, sar, perm, sdr_mixture)),
                             compute_permutation=compute_permutation, batched=False)
    return {key: value[0] for key, value in result.items()}


def evaluate_mixture_batch(
    reference: np.ndarray | torch.Tensor,
    estimate: np.ndarray | torch.Tensor,
    mixture: np.ndarray | torch.Tensor,
    *,
    compute_permutation: bool = False,
    filter_length: int = FILTER_LENGTH,
    chunk_size: int | None = None,
) -> dict[str, np.ndarray]:
    """:func:`evaluate_mixture` (fast backend) for a batch of mixtures in one call.

    As :func:`bss_eval_sources_batch`, CUDA tensors are evaluated on the GPU (SI-SDR,
    which is cheap, on the CPU) and anything else with numpy; the numbers equal a loop of
    :func:`evaluate_mixture` over the mixtures.

    Args:
        reference: true sources, ``[M, N, L]``.
        estimate: estimated sources, ``[M, N, L]``.
        mixture: the mixtures, ``[M, L]``.
        compute_permutation: as in :func:`evaluate_mixture`, per mixture.
        filter_length: taps of the allowed distortion filter.
        chunk_size: mixtures per ``fast_bss_eval`` call, as in :func:`bss_eval_sources_batch`.

    Returns:
        The keys of :func:`evaluate_mixture`, each ``[M, N]``.

    Raises:
        ValueError: as :func:`evaluate_mixture`, for the whole batch (no partial result);
            messages name the mixture index when there are several.
    """
    ref, est = _prepare(reference, estimate, batched=True, min_length=filter_length)
    mix = _prepare_mixture(mixture, ref, batched=True)
    return _evaluate_prepared(ref, est, mix, compute_permutation=compute_permutation,
                              filter_length=filter_length, chunk_size=chunk_size, batched=True)


def _prepare_mixture(
    mixture: Any, ref: np.ndarray | torch.Tensor, batched: bool
) -> np.ndarray | torch.Tensor:
    """Validate the mixtures of validated references ``[M, N, L]``; return float64 ``[M, 1, L]``."""
    n_mix, _, length = ref.shape
    mix = _as_float64(mixture, like=ref if isinstance(ref, torch.Tensor) else None)
    expected = (n_mix, length) if batched else (length,)
    if tuple(mix.shape) != expected:
        raise MetricsInputError(
            f"mixture shape {tuple(mix.shape)} must be {'[M, L]' if batched else '[L]'} = {list(expected)}"
            " like the sources"
        )
    mix = mix.reshape(n_mix, 1, length)
    _check_signals(mix, "mixture", batched)
    return mix


def _evaluate_prepared(
    ref: np.ndarray | torch.Tensor,
    est: np.ndarray | torch.Tensor,
    mix: np.ndarray | torch.Tensor,
    *,
    compute_permutation: bool,
    filter_length: int,
    chunk_size: int | None,
    batched: bool,
) -> dict[str, np.ndarray]:
    """The fast backend of :func:`evaluate_mixture` on validated ``[M, N, L]``, ``[M, N, L]``,
    ``[M, 1, L]`` -> its keys, each ``[M, N]``."""
    n_src = ref.shape[1]
    # Score the mixture as one more estimate in the same solve: the references'
    # systems are then factorised once for the N estimates and the mixture.
    if isinstance(est, torch.Tensor):
        both = torch.cat([est, mix], dim=1)  # [M, N + 1, L]
    else:
        both = np.concatenate([est, mix], axis=1)
    scores = _pairwise_scores(ref, both, filter_length=filter_length, chunk_size=chunk_size, batched=batched)
    estimates_only = (s[..., :n_src] for s in scores)  # [M, N, N] each
    sdr, sir, sar, perm = _select(*estimates_only, compute_permutation)
    sdr_mixture = scores[0][:, :, n_src]  # [M, N]: the mixture against each reference
    return _mixture_result(ref, est, sdr, sir, sar, perm, sdr_mixture,
                           compute_permutation=compute_permutation, batched=batched)


def _mixture_result(
    ref: np.ndarray | torch.Tensor,
    est: np.ndarray | torch.Tensor,
    sdr: np.ndarray,
    sir: np.ndarray,
    sar: np.ndarray,
    perm: np.ndarray,
    sdr_mixture: np.ndarray,
    *,
    compute_permutation: bool,
    batched: bool,
) -> dict[str, np.ndarray]:
    """:func:`evaluate_mixture`'s keys from ``[M, N]`` BSS Eval scores; adds SI-SDR of the matched pairs."""
    matched = np.take_along_axis(_to_numpy(est), perm[..., None], axis=1)  # [M, N, L]: est[m, perm[m, j]]
    result = {
        "sdr": sdr,
        "sir": sir,
        "sar": sar,
        "si_sdr": _si_sdr(_to_numpy(ref), matched, eps=SI_SDR_EPS, batched=batched),
        "sdr_mixture": sdr_mixture,
        "sdri": sdr_improvement(sdr, sdr_mixture),
    }
    if compute_permutation:
        result["perm"] = perm
    return result


# ------------------------------------------------------------------- result tables


def scores_frame(records: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """One row per source from a list of per-mixture records.

    A record is a mapping with

    * ``mixture_id``: any scalar that identifies the mixture;
    * ``classes``: ``N`` class names, ``classes[j]`` for reference ``j``;
    * ``sdr``, ``sir``, ``sar``, ``si_sdr``, ``sdr_mixture``: ``[N]`` arrays, as returned
      by :func:`evaluate_mixture` (its ``sdri`` is recomputed, so it always equals
      ``sdr - sdr_mixture``);
    * any extra keys: scalars (``method``, ``n_sources``, ...) are repeated on every row
      of the mixture; ``[N]`` arrays (e.g. ``perm``) become per-source columns.

    Returns:
        Columns :data:`FRAME_COLUMNS` (``source`` is the reference index ``j``), then the
        extra keys in first-seen order.

    Raises:
        ValueError: a record lacks a required key, or an array's length is not ``N``.
    """
    fixed = set(FRAME_COLUMNS) | {"classes"}
    rows: list[dict[str, Any]] = []
    for index, record in enumerate(records):
        missing = [k for k in ("mixture_id", "classes", *_RECORD_ARRAYS) if k not in record]
        if missing:
            raise ValueError(f"record {index} lacks {', '.join(missing)}")
        classes = list(record["classes"])
        n_src = len(classes)
        arrays = {k: np.asarray(record[k], dtype=np.float64).reshape(-1) for k in _RECORD_ARRAYS}
        extras: dict[str, Any] = {}
        for key, value in record.items():
            if key in fixed:
                continue
            if np.ndim(value) == 0:
                extras[key] = value
            else:
                extras[key] = np.asarray(value).reshape(-1)
                arrays[key] = extras[key]
        for key, values in arrays.items():
            if len(values) != n_src:
                raise ValueError(
                    f"record {index} ({record['mixture_id']!r}): {key} has {len(values)} values"
                    f" for {n_src} classes"
                )
        sdri = sdr_improvement(arrays["sdr"], arrays["sdr_mixture"])  # [N]
        for j in range(n_src):
            row = {"mixture_id": record["mixture_id"], "source": j, "class": classes[j]}
            row.update({k: arrays[k][j] for k in _RECORD_ARRAYS})
            row["sdri"] = float(sdri[j])
            row.update({k: v[j] if isinstance(v, np.ndarray) else v for k, v in extras.items()})
            rows.append(row)
    return pd.DataFrame(rows, columns=None if rows else list(FRAME_COLUMNS))


def summarize(
    frame: pd.DataFrame,
    by: str | Sequence[str] = ("method",),
    *,
    metrics: Sequence[str] = SUMMARY_METRICS,
    n_boot: int = 1000,
    ci: float = 0.95,
    unit: str | None = "mixture_id",
    seed: int = 0,
) -> pd.DataFrame:
    """Mean, median and percentile-bootstrap confidence interval of each metric per group.

    The bootstrap resamples whole mixtures (``unit``) with replacement, because the
    sources of one mixture share its difficulty and are not independent; each replicate
    is the mean over all rows of the drawn mixtures. ``unit=None`` resamples rows. The
    same draws serve every metric of a group, and each group gets a fresh generator
    seeded with ``seed``, so a group's interval does not depend on the other groups.
    Non-finite scores (``inf`` for an exact estimate) propagate into the statistics.
    An empty frame gives an empty table.

    Args:
        frame: one row per source, as :func:`scores_frame` returns.
        by: column(s) to group by; ``()`` summarizes the whole frame.
        metrics: columns to summarize.
        n_boot: bootstrap replicates.
        ci: coverage of the interval (0.95: the 2.5th and 97.5th percentiles).
        unit: column whose values are the resampled units, or None for rows.
        seed: seed of the bootstrap generator.

    Returns:
        One row per group and metric; columns ``*by, metric, n, n_units, mean, median,
        ci_low, ci_high`` (``n`` rows, ``n_units`` resampled units).

    Raises:
        ValueError: a named column is missing, or ``n_boot``/``ci`` is out of range.
    """
    by = [by] if isinstance(by, str) else list(by)
    columns = [*by, "metric", "n", "n_units", "mean", "median", "ci_low", "ci_high"]
    if frame.empty:  # e.g. every mixture was skipped as silent
        return pd.DataFrame(columns=columns)
    needed = [*by, *metrics, *([unit] if unit is not None else [])]
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise ValueError(
            f"frame lacks column(s) {', '.join(missing)}; it has {', '.join(frame.columns)}"
        )
    if n_boot < 1 or not 0.0 < ci < 1.0:
        raise ValueError(f"need n_boot >= 1 and 0 < ci < 1, got n_boot={n_boot}, ci={ci}")
    groups = frame.groupby(by, sort=True, dropna=False) if by else [((), frame)]
    rows = []
    for key, group in groups:
        key = key if isinstance(key, tuple) else (key,)
        rows += [{**dict(zip(by, key)), **row} for row in _bootstrap_group(group, metrics, n_boot, ci, unit, seed)]
    return pd.DataFrame(rows, columns=columns)


def _bootstrap_group(group: pd.DataFrame, metrics: Sequence[str], n_boot: int, ci: float, unit: str | None,
                     seed: int) -> list[dict]:
    """:func:`summarize`'s row of each metric for one group (a fresh generator, the same draws for every metric)."""
    rng = np.random.default_rng(seed)
    codes = np.arange(len(group)) if unit is None else pd.factorize(group[unit], use_na_sentinel=False)[0]  # [rows]
    n_units = int(codes.max()) + 1
    counts = np.bincount(codes, minlength=n_units)  # rows per unit
    draws = rng.integers(0, n_units, size=(n_boot, n_units))  # [n_boot, units]
    boot_rows = counts[draws].sum(axis=1)  # [n_boot]
    rows = []
    for metric in metrics:
        values = group[metric].to_numpy(dtype=np.float64)
        sums = np.bincount(codes, weights=values, minlength=n_units)  # per unit
        boot = sums[draws].sum(axis=1) / boot_rows  # [n_boot] replicate means
        with np.errstate(invalid="ignore"):  # inf - inf inside percentile for exact (inf dB) scores
            low, high = np.percentile(boot, [50.0 * (1.0 - ci), 50.0 * (1.0 + ci)])
        rows.append({"metric": metric, "n": len(values), "n_units": n_units, "mean": float(np.mean(values)),
                     "median": float(np.median(values)), "ci_low": float(low), "ci_high": float(high)})
    return rows


# A batched metric: (sources [M, N, L], estimates [M, N, L], ...) -> {name: [M, N]}.
BatchScorer = Callable[..., dict[str, np.ndarray]]


def score_padded_batch(
    score: BatchScorer,
    sources: torch.Tensor,
    estimates: torch.Tensor,
    n_sources: torch.Tensor,
    *per_mixture: torch.Tensor,
) -> list[dict[str, np.ndarray] | SilentSignalError]:
    """Score a batch of mixtures padded to ``Nmax`` sources, one ``score`` call per number of sources.

    The batched metrics need ``[M, N, L]``, so the mixtures with equal ``N`` are scored
    together, on the GPU when the estimates are there. A silent signal makes a call raise
    for all its mixtures; that group is then scored one mixture at a time, so only the
    silent mixtures are lost.

    Args:
        score: e.g. :func:`sgn.metrics.evaluate_mixture_batch`.
        sources: true sources, ``[B, Nmax, L]`` (padding sources are ignored).
        estimates: estimated sources, ``[B, Nmax, L]``, on any device.
        n_sources: ``[B]``, the number of real sources of each mixture.
        per_mixture: further inputs of ``score``, ``[B, ...]`` (e.g. the mixtures ``[B, L]``).

    Returns:
        ``B`` entries in batch order: ``{name: [N]}`` scores, or the
        :class:`~sgn.metrics.SilentSignalError` that left the mixture out.
    """
    results: list[dict[str, np.ndarray] | SilentSignalError | None] = [None] * len(n_sources)
    for n in n_sources.unique().tolist():
        rows = torch.nonzero(n_sources == n).flatten()  # [M] batch rows with n sources
        inputs = [sources[rows, :n], estimates[rows, :n], *(x[rows] for x in per_mixture)]
        try:
            scores = score(*inputs)  # {name: [M, N]}
            for k, row in enumerate(rows.tolist()):
                results[row] = {name: values[k] for name, values in scores.items()}
        except SilentSignalError:
            for k, row in enumerate(rows.tolist()):
                try:
                    scores = score(*(x[k : k + 1] for x in inputs))  # {name: [1, N]}
                    results[row] = {name: values[0] for name, values in scores.items()}
                except SilentSignalError as err:
                    results[row] = err
    return results


PRESENCE_THRESHOLDS = np.round(np.arange(0.02, 0.99, 0.02), 2)


def best_presence_threshold(probabilities: np.ndarray, present: np.ndarray) -> float:
    """The threshold on the presence head's probabilities that finds each mixture's set of
    classes exactly most often (``probabilities [M, C]``, ``present [M, C]`` bool), among
    :data:`PRESENCE_THRESHOLDS`; ties go to the one nearest 0.5. Chosen on validation
    mixtures: a head trained with a BCE over C classes of which N are present need not be
    calibrated at 0.5."""
    probabilities, present = np.asarray(probabilities, float), np.asarray(present, bool)
    exact = [np.mean(np.all((probabilities >= t) == present, axis=1)) for t in PRESENCE_THRESHOLDS]
    best = np.flatnonzero(np.isclose(exact, max(exact)))
    return float(PRESENCE_THRESHOLDS[best[np.argmin(np.abs(PRESENCE_THRESHOLDS[best] - 0.5))]])
