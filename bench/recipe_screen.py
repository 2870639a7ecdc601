"""Training recipes compared at a fixed wall-clock budget, on validation mixtures only.

Each variant is a set of config overrides (``--variant NAME:key=value,key=value``). Its
step time is measured first (:func:`bench_train.time_steps`: the training loop's own step
and the building of its batch, where augmentation happens, after warm-up), and its
``optim.max_steps`` is set so that training fills
``--minutes`` (warm-up and evaluation scale with it, so every schedule decays to its end
within the budget). Then :func:`sgn.lab.study.run_study` trains each variant with each
seed and scores it on a fixed list of mixtures of each of ``--splits`` (validation splits
only: ``val``, and ``val_unseen`` for the held-out bank; never a test list), in fp32, and
prints each variant's mean SDR and its paired difference to the first variant, with 95%
intervals over seeds and mixtures (:func:`sgn.lab.study.study_intervals`).

Screen with one seed, confirm with three (``--seeds 0 1 2``, each variant with the
``optim.max_steps`` its screen measured, so that the seeds share a schedule; runs already
trained are reused). Measure on an otherwise idle machine: the budget is wall time.

Usage::

    python bench/recipe_screen.py --out /tmp/screen --minutes 3.4 \\
        --variant fp32:precision=fp32 --variant bf16:precision=auto [--seeds 0 1 2] \\
        [--splits val val_unseen]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_train import time_steps  # noqa: E402
from common import machine_line  # noqa: E402

import yaml  # noqa: E402

from sgn.config import apply_overrides, load_config  # noqa: E402
from sgn.data import index_classes, make_mixture_list, read_index, write_mixture_list  # noqa: E402
from sgn.device import resolve_device  # noqa: E402
from sgn.lab.study import run_study, study_intervals, study_means  # noqa: E402

VAL_LIST_SEED = 7  # not the training loop's validation list (seed 0): scored once, at the end
VALIDATION_SPLITS = ("val", "val_unseen")
# Steps timed per variant to set its budget (the median of their step and batch-building times).
STEPS_TIMED = 10


def parse_variant(text: str) -> tuple[str, dict]:
    """``NAME:key=value,key=value`` -> ``(NAME, {key: value})`` (values as YAML)."""
    name, _, body = text.partition(":")
    if not name:
        raise SystemExit(f"recipe_screen: --variant {text!r}: expected NAME:key=value,...")
    pairs = [item.partition("=") for item in body.split(",") if item]
    if any(not sep or not key for key, sep, _ in pairs):
        raise SystemExit(f"recipe_screen: --variant {text!r}: expected NAME:key=value,...")
    return name, {key: yaml.safe_load(value) for key, _, value in pairs}


def budgeted(base, overrides: dict, minutes: float, index, device) -> dict:
    """``overrides`` plus the steps (and warm-up, evaluation interval) that fill ``minutes``; a
    variant that gives ``optim.max_steps`` keeps it (to confirm a screen with more seeds)."""
    if "optim.max_steps" in overrides:
        steps = int(overrides["optim.max_steps"])
    else:
        # the loop builds each batch before its step (num_workers 0): an augmentation's cost is in load_s
        timed = time_steps(apply_overrides(base, overrides), index, device, steps=STEPS_TIMED)
        steps = max(10, int(minutes * 60 / (timed.step_s + timed.load_s)))
    scale = steps / base.optim.max_steps
    return {**overrides, "optim.max_steps": steps, "optim.warmup_steps": max(1, round(base.optim.warmup_steps * scale)),
            "eval_every": max(1, steps // 4), "log_every": max(1, steps // 40)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="runs, the validation list and the scores go here")
    parser.add_argument("--config", default="cpu")
    parser.add_argument("--index", default="data/synth_music/index.csv")
    parser.add_argument("--minutes", type=float, required=True, help="training wall-clock budget per run")
    parser.add_argument("--variant", action="append", required=True, help="NAME:key=value,... (the first is the reference)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--mixtures", type=int, default=150, help="validation mixtures scored per split")
    parser.add_argument("--splits", nargs="+", default=["val"], choices=VALIDATION_SPLITS,
                        help="validation splits scored (val_unseen: the held-out bank's)")
    args = parser.parse_args()
    if not args.minutes > 0:
        parser.error(f"--minutes: expected a positive number, got {args.minutes}")
    base = apply_overrides(load_config(args.config), {"data.index": args.index})
    device = resolve_device("cpu")
    index = read_index(args.index)
    args.out.mkdir(parents=True, exist_ok=True)
    print(machine_line())
    variants = dict(parse_variant(v) for v in args.variant)
    variants = {name: budgeted(base, overrides, args.minutes, index, device) for name, overrides in variants.items()}
    for name, overrides in variants.items():
        print(f"{name}: {overrides}", flush=True)
    started = time.perf_counter()
    for split in args.splits:  # the runs train once; a later split reuses them
        mixtures = write_mixture_list(
            make_mixture_list(index, split, count=args.mixtures, seed=VAL_LIST_SEED, segment_samples=16384,
                              classes=index_classes(index)), args.out / f"{split}_2src.csv")
        results = run_study(variants, args.seeds, config=base, mixtures=mixtures, runs_dir=args.out / "runs",
                            device="cpu", data_index=args.index, progress=True)
        results.to_csv(args.out / f"scores_{split}.csv", index=False)
        print_table(results, variants, split, args)
    print(f"{(time.perf_counter() - started) / 60:.1f} min in all")


def print_table(results, variants: dict, split: str, args) -> None:
    reference = next(iter(variants))
    sdr = study_intervals(results, "sdr", reference=reference)
    means = study_means(results, ["train_minutes", "presence_recall", "presence_precision"])
    print(f"\n{split}: {len(args.seeds)} seed(s), {args.mixtures} mixtures, {args.minutes} min budget\n")
    print(f"| variant | steps | train min | {split} SDR (dB) [95%] | minus {reference} (dB) [95%] "
          "| presence recall / precision |")
    print("|---|---|---|---|---|---|")
    for row in sdr.itertuples():
        diff = "" if row.variant == reference else f"{row.diff:+.2f} [{row.diff_low:+.2f}, {row.diff_high:+.2f}]"
        presence = means.loc[row.variant].reindex(["presence_recall", "presence_precision"])  # NaN: no presence head
        presence = "n/a" if presence.isna().any() else f"{presence.iloc[0]:.2f} / {presence.iloc[1]:.2f}"
        minutes = means.loc[row.variant, "train_minutes"]
        print(f"| {row.variant} | {variants[row.variant]['optim.max_steps']} | {minutes:.2f} "
              f"| {row.mean:.2f} [{row.ci_low:.2f}, {row.ci_high:.2f}] | {diff} | {presence} |", flush=True)


if __name__ == "__main__":
    main()
