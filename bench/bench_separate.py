"""Inference speed: the real-time factor of separation (seconds of compute per second of audio).

Times ``Separator.separate`` (what ``sgn separate`` runs: resampling, Hann-windowed
chunks at 50% overlap, STFT, model, inverse STFT) on mixtures of each of ``--seconds``
of audio, for each config and number of classes requested. A real-time factor of 0.05
is one minute of audio in 3 s. The weights do not change the time, so without
``--checkpoint`` the model is freshly initialised from ``--config``.

Run: ``python bench/bench_separate.py [--config cpu gpu] [--seconds 10 60 300]
[--n-classes 1 2 4] [--reps 3]``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import machine_line  # noqa: E402

from sgn.checkpoint import build_model, save_checkpoint  # noqa: E402
from sgn.config import load_config  # noqa: E402
from sgn.data import MUSIC_CLASSES  # noqa: E402
from sgn.separate import Separator  # noqa: E402


def fresh_checkpoint(config_name: str, tmp: Path) -> Path:
    """A freshly initialised model of a profile, saved as a checkpoint."""
    config = load_config(config_name)
    return save_checkpoint(tmp / f"{config_name}.pt", build_model(config, list(MUSIC_CLASSES)), config)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", nargs="+", default=["cpu"], help="profiles to time")
    parser.add_argument("--checkpoint", default=None, help="time this checkpoint instead of fresh models of --config")
    parser.add_argument("--seconds", type=float, nargs="+", default=[60.0], help="lengths of the mixture")
    parser.add_argument("--n-classes", type=int, nargs="+", default=[2], help="classes requested")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    if min(args.seconds) <= 0 or min(args.n_classes) < 1 or args.reps < 1:
        parser.error("--seconds must be positive, --n-classes and --reps at least 1")

    print(machine_line())
    print()
    print("| model | device | audio (s) | classes | time (s), median | real-time factor |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        models = {args.checkpoint: args.checkpoint} if args.checkpoint else {
            name: fresh_checkpoint(name, Path(tmp)) for name in args.config}
        for name, checkpoint in models.items():
            sep = Separator.from_checkpoint(checkpoint, device=args.device)
            rate = sep.sample_rate
            rng = np.random.default_rng(0)
            t = np.arange(int(max(args.seconds) * rate)) / rate
            longest = (0.3 * np.sin(2 * np.pi * 220 * t) + 0.05 * rng.standard_normal(len(t))).astype(np.float32)
            for n in args.n_classes:
                classes = sep.classes[:n]
                sep.separate(longest[: rate * 2], rate, classes=classes)  # warm-up
                for seconds in args.seconds:
                    mixture = longest[: int(seconds * rate)]
                    times = []
                    for _ in range(args.reps):
                        start = time.perf_counter()
                        sep.separate(mixture, rate, classes=classes)
                        if sep.device.type == "cuda":
                            torch.cuda.synchronize()
                        times.append(time.perf_counter() - start)
                    median = statistics.median(times)
                    print(f"| {name} | {sep.device} | {seconds:g} | {n} | {median:.2f} | {median / seconds:.4f} |")


if __name__ == "__main__":
    main()
