"""Leave one bank out: train on the other instrument banks, test on the one left out.

SynthMUSIC holds one bank out of training (``held_out``, rendered only into val_unseen and
test_unseen). A *fold* is the set rendered with another bank held out: the same classes,
clip count, length and seed (read from the main set's ``prepare.json``), in its own
folder, rendered once (:func:`fold_index`). In each fold the models train on the other
banks (:func:`fold_runs`, trained with :func:`sgn.train.train_all` and cached by config and
code like every study run; the main set's fold reuses the models already trained on it) and
every method is scored on new melodies of the seen banks (``test_seen``) and of the bank left out (``test_unseen``)
(:func:`score_fold`); :func:`fold_table` gives the per-bank table with intervals.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd

from sgn.analysis import paired_difference
from sgn.config import TrainConfig, apply_overrides
from sgn.data import index_classes, make_mixture_list, read_index, write_mixture_list
from sgn.evaluate import evaluate
from sgn.metrics import summarize
from sgn.utils import SGNError

FOLD_SPLITS = ("test_seen", "test_unseen")
LIST_SEED = 11  # the fold lists' own draw (chapter 01's lists use seed 0)


def _settings(index_path: Path) -> dict:
    """The settings of the SynthMUSIC set of ``index_path`` (its ``prepare.json``)."""
    record = index_path.parent / "prepare.json"
    settings = json.loads(record.read_text()).get("settings", {}) if record.is_file() else {}
    if "banks" not in settings:
        raise SGNError(f"{index_path}: no SynthMUSIC prepare.json beside it; leave-one-bank-out needs a SynthMUSIC set")
    return settings


def held_out_bank(index_path: str | os.PathLike) -> str | None:
    """The bank a SynthMUSIC set holds out, or ``None``."""
    return _settings(Path(index_path))["held_out"]


def fold_index(main_index: str | os.PathLike, bank: str, progress: bool = False) -> Path:
    """The ``index.csv`` of the fold holding ``bank`` out: the main set's own when it holds
    ``bank`` out, else a set rendered with the main set's settings into the folder
    ``<main set>_without_<bank>`` beside the main set (once; later calls find it).

    Raises:
        SGNError: the main set is not a SynthMUSIC set, or ``bank`` is not one of its banks.
    """
    from sgn.synthmusic import render_synth_music

    main_index = Path(main_index)
    settings = _settings(main_index)
    if bank not in settings["banks"]:
        raise SGNError(f"folds: bank {bank!r} is not one of the set's banks ({', '.join(settings['banks'])})")
    if settings["held_out"] == bank:
        return main_index
    out = render_synth_music(main_index.parent.with_name(f"{main_index.parent.name}_without_{bank}"),
                             clips_per_class=settings["clips_per_class"], seconds=settings["seconds"],
                             sample_rate=settings["sample_rate"], seed=settings["seed"], banks=list(settings["banks"]),
                             held_out=bank, ensembles=0, classes=settings["classes"], progress=progress)
    return out / "index.csv"


def fold_lists(index: Path, out: Path, count: int, segment_samples: int) -> dict[str, Path]:
    """Fixed lists of ``count`` two-source mixtures of each of :data:`FOLD_SPLITS` for one fold."""
    frame = read_index(index)
    return {split: write_mixture_list(make_mixture_list(frame, split, count=count, seed=LIST_SEED,
                                                        segment_samples=segment_samples, classes=index_classes(frame)),
                                      out / f"{split}_2src.csv") for split in FOLD_SPLITS}


def fold_runs(bank: str, index: Path, *, config: TrainConfig, models: Mapping[str, Mapping[str, Any]],
              runs_dir: Path) -> dict[str, tuple[TrainConfig, Path]]:
    """``{model: (config, run folder)}`` of the fold holding ``bank`` out, trained on its set
    ``index``: what :func:`sgn.train.train_all` takes; ``best.pt`` in each folder is the model."""
    from sgn.lab.study import study_run_dir

    runs = {}
    for name, overrides in models.items():
        run_config = apply_overrides(config, {**overrides, "data.index": str(index)})
        runs[name] = (run_config, study_run_dir(runs_dir / f"without_{bank}", run_config))
    return runs


def score_fold(bank: str, lists: Mapping[str, Path], checkpoints: Mapping[str, Path], index: Path,
               references: Sequence[str], *, n_fft: int, hop: int, device: str = "auto") -> pd.DataFrame:
    """Per-source scores of every model and reference on the fold's lists (``fold``, ``split`` columns)."""
    frames = []
    for split, mixtures in lists.items():
        scored = [evaluate(mixtures, checkpoint=path, device=device, progress=False).assign(method=name)
                  for name, path in checkpoints.items()]
        scored += [evaluate(mixtures, method=method, index=index, n_fft=n_fft, hop=hop, progress=False)
                   for method in references]
        frames += [frame.assign(split=split) for frame in scored]
    return pd.concat(frames, ignore_index=True).assign(fold=bank)


def fold_table(scores: pd.DataFrame, model: str = "sgn", baselines: Sequence[str] = ("unet", "nmf")) -> pd.DataFrame:
    """One row per (held-out bank, method): SDR on ``test_unseen`` and ``test_seen`` with 95%
    intervals over mixtures and the share kept; then ``model`` minus each baseline on the
    held-out bank's mixtures (paired), as rows ``<model> - <baseline>``."""
    rows = []
    for bank, fold in scores.groupby("fold", sort=False):
        means = {split: _sdr_by_method(part) for split, part in fold.groupby("split")}
        unseen, seen = means["test_unseen"], means.get("test_seen")
        for method in unseen.index:
            row = {"held-out bank": bank, "method": method, "unseen SDR": unseen.loc[method, "mean"],
                   "unseen low": unseen.loc[method, "ci_low"], "unseen high": unseen.loc[method, "ci_high"]}
            if seen is not None and method in seen.index:
                row.update({"seen SDR": seen.loc[method, "mean"],
                            "unseen / seen": unseen.loc[method, "mean"] / seen.loc[method, "mean"]})
            rows.append(row)
        test = fold[fold["split"] == "test_unseen"]
        for baseline in [b for b in baselines if b in set(test["method"]) and model in set(test["method"])]:
            diff = paired_difference(test, model, baseline, "sdr")
            rows.append({"held-out bank": bank, "method": f"{model} - {baseline}", "unseen SDR": diff["mean"],
                         "unseen low": diff["ci_low"], "unseen high": diff["ci_high"]})
    return pd.DataFrame(rows)


def _sdr_by_method(scores: pd.DataFrame) -> pd.DataFrame:
    """Mean SDR and its 95% interval over mixtures, indexed by method."""
    summary = summarize(scores, by="method", metrics=["sdr"])
    return summary[summary["metric"] == "sdr"].set_index("method")
