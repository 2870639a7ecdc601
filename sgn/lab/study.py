"""Studies: train and score a list of variants x seeds, as one library call.

::

    from sgn.lab.study import CLASS_TOKEN_VARIANTS, run_study
    scores = run_study({name: CLASS_TOKEN_VARIANTS[name] for name in ("full", "no_grouping")}, seeds=[0, 1, 2],
                       config="cpu", budget={"optim.max_steps": 120}, mixtures="results/cpu/01_data/test_seen_2src.csv",
                       runs_dir="runs/cpu/ablations")

Each (variant, seed) trains once: its run folder is named by the resolved config (the
seed included) and the fingerprint of the code and data that determine its weights
(:mod:`sgn.runs`), so a variant shared by two studies trains once and a change of the
model trains again what it affects. Scores are cached beside the weights, keyed by the
weights, the mixture list and the scoring code. The result is one long table, ready for
intervals over seeds and mixtures and for paired differences.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from sgn.config import TrainConfig, apply_overrides, load_config, to_yaml
from sgn.checkpoint import ARCHITECTURES, architecture_module
from sgn.data import read_mixture_list
from sgn.provenance import code_hashes, digest
from sgn.runs import run_fingerprint
from sgn.utils import SGNError, atomic_path, sha256_file, shorten

log = logging.getLogger(__name__)

# The class-token ablation (notebook 04): what the tokens and the grouping contribute.
CLASS_TOKEN_VARIANTS: dict[str, dict[str, Any]] = {
    "full": {},
    "paper": {"loss.assign_weight": 0.0},  # the paper as inferred: no auxiliary assignment loss (ours)
    "no_class_tokens": {"model.class_tokens": False},
    "no_grouping": {"model.grouping": False},
    "no_ce": {"loss.ce_weight": 0.0},
    "no_bce": {"loss.bce_weight": 0.0},
    "shared_tokens": {"model.share_tokens": True},
    "k2": {"model.tokens_per_class": 2},
}
# The number-of-sources ablation (notebook 05): trained on 2 sources, or on 1 to 4.
NUM_SOURCES_VARIANTS: dict[str, dict[str, Any]] = {
    "trained_on_2": {"data.n_sources": "2"},
    "trained_on_1to4": {"data.n_sources": "1-4"},
}
# Columns of run_study's table: one row per scored quantity.
STUDY_COLUMNS = ("variant", "seed", "mixture_id", "n_sources", "source", "class", "metric", "value")
SCORE_METRICS = ("sdr", "sir", "sar", "si_sdr", "sdri")
PRESENCE_METRICS = ("precision", "recall", "exact")
GROUPING_METRICS = ("agreement", "agreement_chance", "present_mass")


def pick_variants(table: Mapping[str, Mapping[str, Any]], names: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``table``'s variants named in ``names`` (all when empty), in ``table``'s order; one line for an unknown name."""
    if isinstance(names, (str, bytes)) or not isinstance(names, Sequence):
        raise SGNError(f"variants: expected a list of variant names, got {shorten(names)}")
    unknown = [name for name in names if not isinstance(name, str) or name not in table]
    if unknown:
        raise SGNError(f"variants: unknown variant {shorten(unknown[0])}; known: {list(table)}")
    return {name: dict(overrides) for name, overrides in table.items() if not names or name in names}


def variant_config(base: TrainConfig, overrides: Mapping[str, Any], budget: Mapping[str, Any], seed: int) -> TrainConfig:
    """``base`` with the budget, then the variant's own overrides (they win), and the seed."""
    return apply_overrides(base, {**budget, **overrides, "seed": seed})


def study_run_dir(runs_dir: str | os.PathLike, config: TrainConfig) -> Path:
    """The run folder of ``config``: a hash of the config and of the code and data fingerprint."""
    key = digest([to_yaml(config), run_fingerprint(config)["sha256"]])[:16]
    return Path(runs_dir) / key


def run_study(
    variants: Mapping[str, Mapping[str, Any]],
    seeds: Sequence[int],
    *,
    config: str | TrainConfig,
    mixtures: str | os.PathLike,
    runs_dir: str | os.PathLike,
    budget: Mapping[str, Any] | None = None,
    data_index: str | os.PathLike | None = None,
    device: str = "auto",
    presence: bool = True,
    progress: bool = True,
    jobs: int = 1,
) -> pd.DataFrame:
    """Train every variant with every seed (cached) and score it on a fixed mixture list.

    Args:
        variants: ``{name: config overrides}`` (see :data:`CLASS_TOKEN_VARIANTS`).
        seeds: training seeds (``seed`` of the config); each variant trains once per seed.
        config: the base config: a profile name, a YAML path or a :class:`TrainConfig`.
        mixtures: the fixed evaluation list (``sgn data mixtures``).
        runs_dir: where the runs go, one folder per config and code (see :func:`study_run_dir`).
        budget: overrides applied to every variant first (e.g. fewer steps).
        data_index: the data set, if not the config's.
        device: ``auto``, ``cpu`` or ``cuda``.
        presence: also score the presence head (SGN variants) when it must guess the classes.
        jobs: runs trained at once (:func:`sgn.train.train_all`); all are trained before any is scored.

    Returns:
        The long table :data:`STUDY_COLUMNS`: per source the metrics of
        :data:`SCORE_METRICS`; per mixture (``source`` -1) the presence head's
        ``presence_*`` metrics and, for models with a grouping block, the grouping's
        :data:`GROUPING_METRICS` (:func:`sgn.analysis.grouping_statistics`); per run
        ``train_minutes`` (``mixture_id`` -1).
    """
    _check_study_args(variants, seeds, budget)
    base = config if isinstance(config, TrainConfig) else load_config(config)
    if data_index is not None:
        base = apply_overrides(base, {"data.index": str(data_index)})
    read_mixture_list(mixtures)  # a bad list fails now, not after the first run has trained
    from sgn.train import train_all

    points = [(name, int(seed), variant_config(base, variants[name], budget or {}, int(seed)))
              for name in variants for seed in seeds]
    runs = [(config, study_run_dir(runs_dir, config)) for _, _, config in points]
    histories = train_all(runs, jobs=jobs, device=device, progress=progress)
    parts = [_score_point(name, seed, config, history, Path(mixtures), run_dir, device, presence)
             for (name, seed, config), (_, run_dir), history
             in tqdm(list(zip(points, runs, histories)), desc="scoring", unit="run", disable=not progress)]
    return pd.concat(parts, ignore_index=True)


def _check_study_args(variants: Any, seeds: Any, budget: Any) -> None:
    """One line for variants that are not ``{name: {key: value}}``, seeds that are not whole
    numbers, a budget that is not ``{key: value}``."""
    def is_overrides(value: Any) -> bool:
        return isinstance(value, Mapping) and all(isinstance(k, str) for k in value)

    if not is_overrides(variants) or not variants or not all(is_overrides(v) for v in variants.values()):
        raise SGNError(f"variants: expected {{name: {{config key: value}}}} with at least one variant, "
                       f"got {shorten(variants)}")
    whole = isinstance(seeds, (Sequence, np.ndarray)) and not isinstance(seeds, (str, bytes)) and all(
        isinstance(s, (int, np.integer)) and not isinstance(s, bool) and 0 <= s < 2**32 for s in seeds)
    if not whole or len(seeds) == 0:
        raise SGNError(f"seeds: expected a list of one or more whole numbers in 0..2**32-1, got {shorten(seeds)}")
    if budget is not None and not is_overrides(budget):
        raise SGNError(f"budget: expected {{config key: value}}, got {shorten(budget)}")


def _score_point(name: str, seed: int, config: TrainConfig, history: list[dict], mixtures: Path, run_dir: Path,
                 device: str, presence: bool) -> pd.DataFrame:
    scores = _cached_scores(run_dir, mixtures, device, presence and config.model.arch == "sgn")
    minutes = pd.DataFrame([{"mixture_id": -1, "n_sources": 0, "source": -1, "class": "", "metric": "train_minutes",
                             "value": history[-1]["elapsed_s"] / 60 if history else float("nan")}])
    log.info("%s seed %d: run %s", name, seed, run_dir)
    return pd.concat([scores, minutes], ignore_index=True).assign(variant=name, seed=seed)[list(STUDY_COLUMNS)]


def _cached_scores(run_dir: Path, mixtures: Path, device: str, presence: bool) -> pd.DataFrame:
    """The long per-source (and per-mixture presence) scores of ``run_dir/best.pt`` on ``mixtures``."""
    from sgn.evaluate import evaluate, presence_detection

    checkpoint = run_dir / "best.pt"
    key = _scores_key(checkpoint, mixtures, presence)
    cached = run_dir / f"scores-{key}.csv"
    if cached.is_file():
        return pd.read_csv(cached, keep_default_na=False, na_values={"value": [""]})
    scores = evaluate(mixtures, checkpoint=checkpoint, device=device, progress=False)
    long = scores.melt(id_vars=["mixture_id", "n_sources", "source", "class"], value_vars=list(SCORE_METRICS),
                       var_name="metric", value_name="value")
    if presence:
        detection = presence_detection(checkpoint, mixtures, device=device)
        found = detection.melt(id_vars=["mixture_id", "n_sources"], value_vars=list(PRESENCE_METRICS),
                               var_name="metric", value_name="value")
        found = found.assign(metric="presence_" + found["metric"], value=found["value"].astype(float),
                             source=-1, **{"class": ""})
        long = pd.concat([long, found], ignore_index=True)
    grouping = _grouping_scores(checkpoint, mixtures, device)
    if grouping is not None:
        long = pd.concat([long, grouping], ignore_index=True)
    with atomic_path(cached) as tmp:
        long.to_csv(tmp, index=False, lineterminator="\n")
    return long


def _grouping_scores(checkpoint: Path, mixtures: Path, device: str) -> pd.DataFrame | None:
    """Per mixture, the grouping's agreement with the sources (None for models without grouping)."""
    from sgn.analysis import grouping_statistics
    from sgn.checkpoint import load_model
    from sgn.data import FixedMixtureDataset, read_mixture_list
    from sgn.device import resolve_device

    model, _, _ = load_model(checkpoint, map_location=resolve_device(device))
    if getattr(model, "grouping", None) is None:
        return None
    stats = grouping_statistics(model, FixedMixtureDataset(read_mixture_list(mixtures), model.classes, model.stft))
    return stats.melt(id_vars=["mixture_id", "n_sources"], value_vars=list(GROUPING_METRICS), var_name="metric",
                      value_name="value").assign(source=-1, **{"class": ""})


def _scores_key(checkpoint: Path, mixtures: Path, presence: bool) -> str:
    """What a run's scores depend on: its weights, the list, and the code that scores them (this
    module, the architectures' modules, and what they import)."""
    return digest({"presence": presence, "checkpoint": sha256_file(checkpoint), "mixtures": sha256_file(mixtures),
                   "code": code_hashes([__name__, *map(architecture_module, ARCHITECTURES)])})[:16]


def study_means(results: pd.DataFrame, metrics: Sequence[str], by: Sequence[str] = ("variant",)) -> pd.DataFrame:
    """Mean of each metric by ``by`` (over seeds, mixtures and sources), ``by``'s first-seen order kept."""
    chosen = results[results["metric"].isin(metrics)]
    table = chosen.pivot_table(index=list(by), columns="metric", values="value", aggfunc="mean", sort=False)
    return table[[m for m in metrics if m in table.columns]]


# Columns of study_intervals' table.
INTERVAL_COLUMNS = ("n_seeds", "n_mixtures", "mean", "ci_low", "ci_high", "diff", "diff_low", "diff_high", "called")


def study_intervals(results: pd.DataFrame, metric: str = "sdr", reference: str = "full", by: Sequence[str] = (),
                    n_boot: int = 2000, ci: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """Each variant's mean ``metric`` and its difference to ``reference``, with intervals over seeds and mixtures.

    A variant's score is a ``seeds x mixtures`` matrix (sources of a mixture averaged).
    Each bootstrap replicate draws seeds and mixtures with replacement, independently (a
    crossed design: a second seed and a second test set would both move the mean), and the
    difference is paired: the same seeds and mixtures of both variants. ``called`` is True
    where the difference's interval excludes zero.

    Args:
        results: :func:`run_study`'s long table; every variant scored with the same seeds and mixtures.
        metric: the metric to summarise (``sdr``, ``si_sdr``, ``presence_recall``, ...).
        reference: the variant the differences are taken to (absent: no differences, NaN).
        by: further grouping columns, e.g. ``["n_sources"]``.

    Returns:
        One row per ``by`` group and variant: ``variant``, ``by``'s columns, :data:`INTERVAL_COLUMNS`.
    """
    if not isinstance(results, pd.DataFrame) or not set(STUDY_COLUMNS) <= set(results.columns):
        raise SGNError(f"study_intervals: expected run_study's table (columns {list(STUDY_COLUMNS)}), "
                       f"got {shorten(results)}")
    if not isinstance(metric, str) or not isinstance(reference, str):
        raise SGNError(f"study_intervals: metric and reference are names, got {shorten(metric)}, {shorten(reference)}")
    if isinstance(by, (str, bytes)) or not set(by) <= set(results.columns):
        raise SGNError(f"study_intervals: by: expected a list of the table's columns, got {shorten(by)}")
    chosen = results[results["metric"] == metric].dropna(subset=["value"])  # e.g. SDRi of one source
    if chosen.empty:
        raise SGNError(f"study_intervals: no rows of metric {shorten(metric)} in the results")
    rows = []
    groups = chosen.groupby(list(by), sort=True) if by else [((), chosen)]
    for key, group in groups:
        key = key if isinstance(key, tuple) else (key,)
        matrices = {name: part.pivot_table(index="seed", columns="mixture_id", values="value", aggfunc="mean")
                    for name, part in group.groupby("variant", sort=False)}
        shape = next(iter(matrices.values())).shape
        rng = np.random.default_rng(seed)
        seed_draws = rng.integers(0, shape[0], size=(n_boot, shape[0]))
        mixture_draws = rng.integers(0, shape[1], size=(n_boot, shape[1]))
        for name, matrix in matrices.items():
            if matrix.shape != shape or (reference in matrices and not matrix.index.equals(matrices[reference].index)):
                raise SGNError(f"study_intervals: variant {shorten(name)} was scored on other seeds or mixtures")
            mean, low, high = _crossed_bootstrap(matrix.to_numpy(), seed_draws, mixture_draws, ci)
            diff = (np.nan,) * 3
            if reference in matrices:
                paired = matrix.to_numpy() - matrices[reference].reindex_like(matrix).to_numpy()
                diff = _crossed_bootstrap(paired, seed_draws, mixture_draws, ci)
            rows.append({"variant": name, **dict(zip(by, key)), "n_seeds": shape[0], "n_mixtures": shape[1],
                         "mean": mean, "ci_low": low, "ci_high": high, "diff": diff[0], "diff_low": diff[1],
                         "diff_high": diff[2], "called": bool(diff[1] > 0 or diff[2] < 0)})
    return pd.DataFrame(rows, columns=["variant", *by, *INTERVAL_COLUMNS])


def difference_text(row: Mapping[str, Any], unit: str = "dB", digits: int = 2) -> str:
    """A :func:`study_intervals` row's difference as ``+0.30 dB [-0.42, +0.84]``."""
    unit = f" {unit}" if unit else ""
    return f"{row['diff']:+.{digits}f}{unit} [{row['diff_low']:+.{digits}f}, {row['diff_high']:+.{digits}f}]"


def _crossed_bootstrap(matrix: np.ndarray, seed_draws: np.ndarray, mixture_draws: np.ndarray, ci: float,
                       ) -> tuple[float, float, float]:
    """Mean of ``matrix [seeds, mixtures]`` and the percentile interval of replicates that resample both axes."""
    # mean over the drawn cells: rows seed_draws[b], columns mixture_draws[b]
    per_seed = matrix[:, mixture_draws].mean(-1)  # [seeds, n_boot]: each seed's mean over the drawn mixtures
    boot = np.take_along_axis(per_seed.T, seed_draws, axis=1).mean(1)  # [n_boot]
    low, high = np.percentile(boot, [50.0 * (1.0 - ci), 50.0 * (1.0 + ci)])
    return float(matrix.mean()), float(low), float(high)
