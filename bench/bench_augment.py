"""What each on-the-fly augmentation costs per training step (sgn.augment).

Times the training batches of a config (``--config cpu``: batch 16 of two-source mixtures
of its segment length) as the training loop makes them, in the main process, with no
augmentation and with each one alone and all together; prints the milliseconds per batch
and the cost added per step. Divide by the step time of ``bench/bench_train.py`` for the
share of a step. Measure on an otherwise idle machine.

Usage::

    python bench/bench_augment.py --index data/synth_music/index.csv [--config cpu] [--batches 20]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import machine_line, markdown  # noqa: E402

import pandas as pd  # noqa: E402

from sgn.audio import STFTSpec  # noqa: E402
from sgn.augment import Augmentation  # noqa: E402
from sgn.config import load_config  # noqa: E402
from sgn.data import MixtureDataset, index_classes, read_index  # noqa: E402

SETTINGS = {
    "none": Augmentation(),
    "eq 6 dB": Augmentation(eq_db=6.0),
    "pitch 1 semitone": Augmentation(pitch=1.0),
    "room (always)": Augmentation(reverb=1.0),
    "room (half the sources)": Augmentation(reverb=0.5),
    "noise 30 dB": Augmentation(noise_db=30.0),
    "all four (room for half)": Augmentation(eq_db=6.0, pitch=1.0, reverb=0.5, noise_db=30.0),
}


def batch_ms(dataset: MixtureDataset, batch: int, batches: int) -> float:
    dataset[0]  # open the files once
    started = time.perf_counter()
    for item in range(batches * batch):
        dataset[item]
    return (time.perf_counter() - started) / batches * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", required=True)
    parser.add_argument("--config", default="cpu")
    parser.add_argument("--batches", type=int, default=20)
    args = parser.parse_args()
    config = load_config(args.config)
    index = read_index(args.index)
    stft = STFTSpec(config.model.n_fft, config.model.hop)
    rows = []
    for name, change in SETTINGS.items():
        dataset = MixtureDataset(index, "train", index_classes(index), n_sources=config.data.n_sources,
                                 segment_samples=config.data.segment_samples, stft=stft, augmentation=change,
                                 sample_rate=config.data.sample_rate)
        rows.append({"augmentation": name, "ms per batch": batch_ms(dataset, config.optim.batch_size, args.batches)})
    table = pd.DataFrame(rows)
    table["added ms per step"] = table["ms per batch"] - table["ms per batch"].iloc[0]
    print(machine_line())
    print(f"batch {config.optim.batch_size} x {config.data.segment_samples} samples, {args.batches} batches, main process")
    print(markdown(table.round(1)))


if __name__ == "__main__":
    main()
