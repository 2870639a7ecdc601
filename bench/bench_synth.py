"""Time the rendering of SynthMUSIC and, optionally, measure how its classes differ.

Usage::

    python bench/bench_synth.py              # the default set
    python bench/bench_synth.py --small      # also a 5-clips-per-class set, 2 s clips
    python bench/bench_synth.py --describe   # plus a per-class table from sgn.synthmusic.describe_clip

Prints markdown tables; renders into a temporary folder that is deleted afterwards.
"CPU (s)" counts this process and its workers: on a shared machine it is the stable number.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import pandas as pd
from common import markdown

from sgn.data import read_index
from sgn.synthmusic import DEFAULT_CLIPS_PER_CLASS, DEFAULT_SECONDS, describe_banks, render_synth_music, timbre_distances

_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")


def note_name(midi: float) -> str:
    """``64.2`` -> ``"E4"`` (nearest note)."""
    n = int(round(midi))
    return f"{_NAMES[n % 12]}{n // 12 - 1}"


def _cpu_seconds() -> float:
    """CPU time of this process and its finished children (the workers), user + system."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def timed_render(root: Path, jobs: int | None, **kwargs) -> dict:
    """Render one set into ``root`` and return a row of the timing table."""
    cpu_start, start = _cpu_seconds(), time.perf_counter()
    render_synth_music(root, jobs=jobs, progress=False, **kwargs)
    wall, cpu = time.perf_counter() - start, _cpu_seconds() - cpu_start
    index = pd.read_csv(root / "index.csv")
    audio_s = float(index["duration_s"].sum())
    size_mb = sum(f.stat().st_size for f in root.rglob("*") if f.is_file()) / 1e6
    return {
        "set": f"{index['class'].nunique()} classes x {len(index) // index['class'].nunique()} clips"
        f" x {index['duration_s'].iloc[0]:g} s",
        "clips": len(index),
        "audio (min)": round(audio_s / 60, 1),
        "wall (s)": round(wall, 1),
        "CPU (s)": round(cpu, 1),
        "x real-time": round(audio_s / wall, 1),
        "size (MB)": round(size_mb, 1),
    }


def describe_set(root: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per class and bank: median spectral centroid, f0 and pitch range, measured on up to 16
    solo clips each; and per class, the timbre distance across banks against other classes."""
    described = describe_banks(read_index(root / "index.csv"), per_group=16)
    measured = described.groupby(["class", "bank"], sort=True)
    table = pd.DataFrame({
        "programs": measured["program"].unique().apply(lambda p: ", ".join(map(str, sorted(p)))),
        "centroid (Hz)": measured["centroid_hz"].median().round(0).astype(int),
        "median f0 (Hz)": measured["f0_median_hz"].median().round(0).astype(int),
        "pitch p5-p95 (median clip)": [f"{note_name(lo)}-{note_name(hi)}" for lo, hi in
                                       zip(measured["pitch_low"].median(), measured["pitch_high"].median())],
        "voiced": measured["voiced_fraction"].median().round(2),
    })
    return table, timbre_distances(described).set_index("class").round(2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="also time a 5-clips-per-class set of 2 s clips")
    parser.add_argument("--describe", action="store_true", help="measure centroid and pitch range per class")
    parser.add_argument("--jobs", type=int, default=None, help="worker processes (default: min(2, cpus))")
    args = parser.parse_args()

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_synth.") as tmp:
        if args.small:
            rows.append(timed_render(Path(tmp) / "small", args.jobs, clips_per_class=5, seconds=2.0))
        default = Path(tmp) / "default"
        rows.append(timed_render(default, args.jobs))
        print(f"SynthMUSIC rendering (defaults: {DEFAULT_CLIPS_PER_CLASS} clips per class, {DEFAULT_SECONDS:g} s)")
        print(f"machine: {os.cpu_count()} CPUs, {platform.platform()}, Python {platform.python_version()}, "
              f"load average {os.getloadavg()[0]:.1f}, jobs={args.jobs or 'auto'}\n")  # fmt: skip
        print(markdown(pd.DataFrame(rows)))
        if args.describe:
            table, distances = describe_set(default)
            print("\nMeasured per class and bank on the default set (sgn.synthmusic.describe_banks)\n")
            print(markdown(table))
            print("\nTimbre distance (sgn.synthmusic.timbre_distances): across a class's banks vs to other classes\n")
            print(markdown(distances))


if __name__ == "__main__":
    main()
