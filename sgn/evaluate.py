"""Score separators on a fixed mixture list: trained checkpoints, references and baselines.

    sgn evaluate --checkpoint runs/cpu/best.pt --mixtures test.csv --out results.csv
    sgn evaluate --method irm --mixtures test.csv --n-fft 510 --hop 128 --out irm.csv
    sgn evaluate --method nmf --index data/synth_music/index.csv --mixtures test.csv --out nmf.csv

Methods:

* a checkpoint (SGN or the label-conditioned U-Net), told which classes are present
  (as Sound-of-Pixels is told by the videos);
* ``mixture``: the mixture itself as every estimate, the lower reference;
* ``irm`` / ``ibm``: the oracle ideal ratio mask ``|S_i| / sum_j |S_j|`` and ideal
  binary mask ``1[i = argmax_j |S_j|]`` on the same STFT, with the mixture's phase:
  upper references for any mask-based separator with that STFT;
* ``nmf``: supervised NMF with per-class dictionaries learned from the training split
  (:mod:`sgn.nmf`).

Every method sees identical inputs. Results: one row per source (:func:`sgn.metrics.scores_frame`
columns plus ``method`` and ``n_sources``) and a summary (mean, median, 95% bootstrap
interval) by method, by method and number of sources, and by method and class.
"""

from __future__ import annotations

import functools
import logging
import os
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from sgn.audio import STFTSpec
from sgn.checkpoint import load_model
from sgn.config import MAX_OVERLAP
from sgn.data import FixedMixtureDataset, index_classes, read_index, read_mixture_list
from sgn.device import resolve_device
from sgn.metrics import SilentSignalError, evaluate_mixture_batch, score_padded_batch, scores_frame, summarize
from sgn.utils import SGNError, atomic_path, shorten

log = logging.getLogger(__name__)

REFERENCE_METHODS = ("mixture", "irm", "ibm", "nmf")
# Summaries written next to the per-source results.
SUMMARY_GROUPINGS: tuple[tuple[str, ...], ...] = (("method",), ("method", "n_sources"), ("method", "class"))

Estimator = Callable[[dict[str, torch.Tensor]], torch.Tensor]  # batch -> estimates [B, Nmax, L]
# A batched metric: (references [M, N, L], estimates [M, N, L], *per-mixture inputs [M, ...])
# -> {name: [M, N]}, raising SilentSignalError for the whole batch (sgn.metrics' *_batch functions).
def oracle_masks(sources: torch.Tensor, stft: STFTSpec, kind: str) -> torch.Tensor:
    """Ideal masks from the true sources ``[B, N, L]`` -> ``[B, N, F, T]`` (padding sources are zero)."""
    mags = stft.stft(sources).abs()  # [B, N, F, T]
    if kind == "irm":
        return mags / mags.sum(dim=1, keepdim=True).clamp_min(1e-8)
    if kind == "ibm":
        return torch.nn.functional.one_hot(mags.argmax(dim=1), mags.shape[1]).permute(0, 3, 1, 2).to(mags.dtype)
    raise ValueError(f"unknown oracle mask {kind!r}")


def _masked(mixture: torch.Tensor, masks: torch.Tensor, stft: STFTSpec) -> torch.Tensor:
    """Apply masks ``[B, N, F, T]`` to the mixture ``[B, L]`` with its phase -> ``[B, N, L]``."""
    return stft.istft(masks * stft.stft(mixture)[:, None], mixture.shape[-1])


@functools.lru_cache(maxsize=2)
def _fitted_nmf(index_path: str, classes: tuple[str, ...], stft: STFTSpec):
    """NMF fitted once per index file, classes and STFT in a process (scoring several lists)."""
    from sgn.nmf import NMFSeparator

    return NMFSeparator.fit(read_index(index_path), list(classes), stft)


def reference_estimator(method: str, stft: STFTSpec, classes: list[str], index: pd.DataFrame | None) -> Estimator:
    """The estimator of a reference or baseline ``method`` (see the module docstring)."""
    if method == "mixture":
        return lambda batch: batch["mixture"][:, None].expand_as(batch["sources"]).clone()
    if method in ("irm", "ibm"):
        return lambda batch: _masked(batch["mixture"], oracle_masks(batch["sources"], stft, method), stft)
    if method == "nmf":
        from sgn.nmf import NMFSeparator

        if index is None:
            raise SGNError("--method nmf needs --index (its dictionaries are learned from the training split)")
        nmf = _fitted_nmf(index.attrs.get("path", ""), tuple(classes), stft) if index.attrs.get("path") \
            else NMFSeparator.fit(index, classes, stft)

        def nmf_estimate(batch):
            masks = nmf.masks(stft.stft(batch["mixture"]).abs(), batch["class_ids"])  # [B, N, F, T]
            return _masked(batch["mixture"], masks, stft)

        return nmf_estimate
    raise SGNError(f"--method: unknown method {method!r}; expected one of {list(REFERENCE_METHODS)} or a --checkpoint")


def score_estimator(
    name: str, estimator: Estimator, dataset: FixedMixtureDataset, *, batch_size: int = 8, progress: bool = True
) -> pd.DataFrame:
    """Run ``estimator`` over a fixed list and score every source; one row per source.

    Raises:
        SGNError: every mixture was skipped (silent signals), so there is nothing to score.
    """
    records, skipped, first_skipped = [], 0, None
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size)
    with torch.no_grad(), tqdm(total=len(dataset), desc=f"evaluate {name}", disable=not progress, unit="mix") as bar:
        for batch in loader:
            estimates = estimator(batch).float()  # [B, Nmax, L]; scored where it was computed
            results = score_padded_batch(evaluate_mixture_batch, batch["sources"], estimates, batch["n_sources"],
                                         batch["mixture"])
            for i, scores in enumerate(results):
                mixture_id, n = int(batch["mixture_id"][i]), int(batch["n_sources"][i])
                if isinstance(scores, SilentSignalError):
                    skipped += 1  # as Sound-of-Pixels, a silent estimate or reference leaves the mixture out
                    first_skipped = first_skipped or f"mixture {mixture_id}: {scores}"
                    log.warning("%s: mixture %d skipped (%s)", name, mixture_id, scores)
                    continue
                classes = [dataset.classes[c] for c in batch["class_ids"][i, :n].tolist()]
                records.append({"mixture_id": mixture_id, "classes": classes, **scores,
                                "method": name, "n_sources": n})
            bar.update(len(results))
    if not records:
        raise SGNError(f"{name}: all {skipped} mixtures were skipped: silent signals "
                       f"(first: {first_skipped}); nothing to score")
    if skipped:
        log.warning("%s: %d of %d mixtures skipped for silent signals", name, skipped, len(dataset))
    return scores_frame(records)


# The shortest STFT accepted: 9 frequency bins.
MIN_N_FFT = 16
MAX_N_FFT = 65536  # model.n_fft's bound (sgn.config.RANGES)
MAX_BATCH = 4096


def check_settings(*, n_fft: int = MIN_N_FFT, hop: int = 1, batch_size: int = 1) -> None:
    """Raise :class:`SGNError` unless ``16 <= n_fft <= 65536``, ``n_fft / 16 <= hop <= n_fft``
    (the bounds of a training config, :data:`sgn.config.MAX_OVERLAP`) and
    ``1 <= batch_size <= 4096`` (integers)."""
    def whole(value) -> bool:
        return isinstance(value, (int, np.integer)) and not isinstance(value, bool)

    if not whole(n_fft) or not MIN_N_FFT <= n_fft <= MAX_N_FFT:
        raise SGNError(f"n_fft: got {shorten(n_fft)}; expected a whole number of samples in {MIN_N_FFT}..{MAX_N_FFT}")
    low = -(-n_fft // MAX_OVERLAP)
    if not whole(hop) or not low <= hop <= n_fft:
        raise SGNError(f"hop: got {shorten(hop)}; expected a whole number of samples in {low}..{n_fft} "
                       f"(n_fft / {MAX_OVERLAP} to n_fft)")
    if not whole(batch_size) or not 1 <= batch_size <= MAX_BATCH:
        raise SGNError(f"batch_size: got {shorten(batch_size)}; expected a whole number in 1..{MAX_BATCH}")


def evaluate(
    mixtures: str | os.PathLike,
    *,
    checkpoint: str | os.PathLike | None = None,
    method: str | None = None,
    index: str | os.PathLike | None = None,
    n_fft: int = 1022,
    hop: int = 256,
    device: str = "auto",
    batch_size: int = 8,
    progress: bool = True,
) -> pd.DataFrame:
    """Score one checkpoint or one reference/baseline ``method`` on a mixture list.

    Args:
        mixtures: a mixture-list CSV (``sgn data mixtures``).
        checkpoint: a trained model; its STFT and classes are used.
        method: one of :data:`REFERENCE_METHODS` (when no checkpoint).
        index: the data set's ``index.csv``; needed by ``nmf`` and to fix the class ids.
        n_fft, hop: the STFT of reference methods (match the model you compare with).
        device: for checkpoints, ``auto``, ``cpu`` or ``cuda``.
        batch_size: mixtures per forward pass.

    Returns:
        One row per source (see :func:`sgn.metrics.scores_frame`) with ``method`` and ``n_sources``.

    Raises:
        SGNError: a setting out of range (:func:`check_settings`), a bad list, or no
        mixture that could be scored.
    """
    if (checkpoint is None) == (method is None):
        raise SGNError("evaluate: give exactly one of --checkpoint or --method")
    if method is not None and method not in REFERENCE_METHODS:
        raise SGNError(f"method: unknown method {shorten(method)}; expected one of {list(REFERENCE_METHODS)} "
                       "or a checkpoint")
    check_settings(n_fft=n_fft, hop=hop, batch_size=batch_size)
    frame = read_mixture_list(mixtures)
    if checkpoint is not None:
        device_t = resolve_device(device)
        model, config, _ = load_model(checkpoint, map_location=device_t)
        dataset = FixedMixtureDataset(frame, model.classes, model.stft, config.data.sample_rate)
        name = config.model.arch

        def estimator(batch):
            return model.estimate(batch["mixture"].to(device_t), batch["class_ids"].to(device_t))
    else:
        index_frame = read_index(index) if index is not None else None
        classes = index_classes(index_frame) if index_frame is not None else sorted(frame["class"].unique())
        stft = STFTSpec(n_fft, hop)
        dataset = FixedMixtureDataset(frame, classes, stft)
        name = method
        estimator = reference_estimator(method, stft, classes, index_frame)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # singular projections are logged by the metrics
        return score_estimator(name, estimator, dataset, batch_size=batch_size, progress=progress)


@torch.no_grad()
def presence_detection(
    checkpoint: str | os.PathLike, mixtures: str | os.PathLike, *, device: str = "auto",
    threshold: float | None = None, batch_size: int = 8,
) -> pd.DataFrame:
    """How well the presence head finds the classes in each mixture of a list, when it must guess.

    ``threshold``: on the head's probabilities; ``None`` for the one the run chose on its
    validation list (stored in the checkpoint; 0.5 in a checkpoint without one).

    Returns:
        One row per mixture: ``mixture_id``, ``n_sources``, ``true`` and ``predicted``
        (``+``-joined class names), ``precision`` and ``recall`` of the predicted set
        (precision of an empty prediction is 1 by convention), and ``exact`` (sets equal).
    """
    check_settings(batch_size=batch_size)
    device_t = resolve_device(device)
    model, config, state = load_model(checkpoint, map_location=device_t)
    threshold = state.get("presence_threshold", 0.5) if threshold is None else threshold
    frame = read_mixture_list(mixtures)
    dataset = FixedMixtureDataset(frame, model.classes, model.stft, config.data.sample_rate)
    rows = []
    for batch in torch.utils.data.DataLoader(dataset, batch_size=batch_size):
        logits = model(batch["mix_mag"].to(device_t)).presence_logits
        if logits is None:
            raise SGNError(f"{checkpoint}: this {model.config.arch} model has no presence head")
        predicted = (torch.sigmoid(logits.float()) >= threshold).cpu()  # [B, C]
        for i in range(len(predicted)):
            n = int(batch["n_sources"][i])
            true = set(batch["class_ids"][i, :n].tolist())
            guess = set(torch.nonzero(predicted[i]).flatten().tolist())
            hits = len(true & guess)
            rows.append({
                "mixture_id": int(batch["mixture_id"][i]), "n_sources": n,
                "true": "+".join(model.classes[c] for c in sorted(true)),
                "predicted": "+".join(model.classes[c] for c in sorted(guess)),
                "precision": hits / len(guess) if guess else 1.0, "recall": hits / len(true),
                "exact": true == guess,
            })
    return pd.DataFrame(rows)


def summarize_results(frame: pd.DataFrame, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Mean, median and 95% bootstrap interval by each of :data:`SUMMARY_GROUPINGS`."""
    parts = []
    for by in SUMMARY_GROUPINGS:
        part = summarize(frame, by=by, n_boot=n_boot, seed=seed)
        part.insert(0, "grouping", "+".join(by))
        parts.append(part)
    return pd.concat(parts, ignore_index=True)


def summary_path(out: str | os.PathLike) -> Path:
    """Where :func:`write_results` puts the summary of the results in ``out``."""
    out = Path(out)
    return out.with_name(f"{out.stem}_summary.csv")


def write_results(frame: pd.DataFrame, out: str | os.PathLike) -> tuple[Path, Path]:
    """Write per-source rows to ``out`` and the summary to ``<out stem>_summary.csv``, atomically."""
    out = Path(out)
    if frame.empty:
        raise SGNError(f"{out}: no scored sources to write")
    for path, table in ((out, frame), (summary_path(out), summarize_results(frame))):
        with atomic_path(path) as tmp:
            table.to_csv(tmp, index=False, lineterminator="\n")
    return out, summary_path(out)
