"""Inference speed: the real-time factor of separation (seconds of compute per second of audio).

Times ``Separator.separate`` (what ``sgn separate`` runs: resampling, Hann-windowed
chunks at 50% overlap, STFT, model, inverse STFT) on mixtures of each of ``--seconds``
of audio, for each config and number of classes requested. A real-time factor of 0.05
is one minute of audio in 3 s. The weights do not change the time, so without
``--checkpoint`` the model is freshly initialised from ``--config``.

``--threads 1 2`` repeats each row for those torch thread counts and ``--load K`` runs
K busy processes meanwhile (a machine that other work keeps busy): with the cores
taken, torch's default of one thread per core can be many times slower than one.
``--file-minutes 1 10`` adds a table of the peak memory (max RSS) of ``sgn separate``
on stereo 44.1 kHz files of those lengths: streaming keeps it flat.

Run: ``python bench/bench_separate.py [--config cpu gpu] [--seconds 10 60 300]
[--n-classes 1 2 4] [--reps 3] [--threads 1 2] [--load 2] [--file-minutes 1 10]``.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import machine_line  # noqa: E402

from sgn.audio import resample  # noqa: E402
from sgn.checkpoint import build_model, save_checkpoint  # noqa: E402
from sgn.config import load_config  # noqa: E402
from sgn.data import MUSIC_CLASSES  # noqa: E402
from sgn.separate import Separator  # noqa: E402


def fresh_checkpoint(config_name: str, tmp: Path) -> Path:
    """A freshly initialised model of a profile, saved as a checkpoint."""
    config = load_config(config_name)
    return save_checkpoint(tmp / f"{config_name}.pt", build_model(config, list(MUSIC_CLASSES)), config)


@contextlib.contextmanager
def busy_processes(count: int):
    """``count`` processes that keep a core each busy while the block runs."""
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    try:
        yield
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()


def time_separation(sep: Separator, signal: np.ndarray, args) -> None:
    """Print a row per (classes, seconds, threads)."""
    rate = sep.sample_rate
    for n in args.n_classes:
        classes = sep.classes[:n]
        for seconds in args.seconds:
            for threads in args.threads or [torch.get_num_threads()]:
                torch.set_num_threads(threads)
                sep.separate(signal[: rate * 2], rate, classes=classes)  # warm-up
                times = []
                for _ in range(args.reps):
                    start = time.perf_counter()
                    sep.separate(signal[: int(seconds * rate)], rate, classes=classes)
                    if sep.device.type == "cuda":
                        torch.cuda.synchronize()
                    times.append(time.perf_counter() - start)
                median = statistics.median(times)
                print(f"| {args.name} | {sep.device} | {seconds:g} | {n} | {threads} | {args.load} | "
                      f"{median:.2f} | {median / seconds:.4f} |")


# Runs `sgn separate` and prints its peak RSS. VmHWM is the peak of this process's own memory
# since exec; getrusage's maxrss would also count the pages a fork shared with the bench.
_MEASURED = """import sys
from sgn.cli import main
try:
    code = main(sys.argv[1:])
finally:
    hwm = [line for line in open("/proc/self/status") if line.startswith("VmHWM")]
    print("peak_kb", hwm[0].split()[1] if hwm else "nan", file=sys.stderr)
sys.exit(code)
"""


def file_memory(checkpoint: Path, sep: Separator, signal: np.ndarray, minutes: list[float], tmp: Path) -> None:
    """Peak memory of ``sgn separate`` (a fresh process each) on stereo 44.1 kHz files."""
    import soundfile as sf

    print()
    print("| file (min, stereo 44.1 kHz) | peak RSS of `sgn separate` (MB) | time (s) |")
    print("|---|---|---|")
    loop = resample(signal[: sep.sample_rate * 10], sep.sample_rate, 44100)
    for length in minutes:
        path = tmp / f"mix_{length:g}.wav"
        wave = np.resize(loop, int(length * 60 * 44100))
        sf.write(path, np.stack([wave, wave]).T, 44100, subtype="PCM_16")
        del wave
        start = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", _MEASURED, "-q", "separate", str(path), "--checkpoint",
                              str(checkpoint), "--out", str(tmp / f"stems_{length:g}"), "--class", sep.classes[0],
                              "--class", sep.classes[1], "--device", str(sep.device)], capture_output=True, text=True)
        elapsed = time.perf_counter() - start
        if out.returncode != 0:
            sys.exit(out.stderr)
        peak = float(out.stderr.strip().splitlines()[-1].split()[1]) / 1024
        print(f"| {length:g} | {peak:.0f} | {elapsed:.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", nargs="+", default=["cpu"], help="profiles to time")
    parser.add_argument("--checkpoint", default=None, help="time this checkpoint instead of fresh models of --config")
    parser.add_argument("--seconds", type=float, nargs="+", default=[60.0], help="lengths of the mixture")
    parser.add_argument("--n-classes", type=int, nargs="+", default=[2], help="classes requested")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, nargs="+", default=None, help="torch thread counts to time")
    parser.add_argument("--load", type=int, default=0, help="busy processes running meanwhile")
    parser.add_argument("--file-minutes", type=float, nargs="*", default=[], help="files to measure memory on")
    args = parser.parse_args()
    if min(args.seconds) <= 0 or min(args.n_classes) < 1 or args.reps < 1:
        parser.error("--seconds must be positive, --n-classes and --reps at least 1")
    if min(args.threads or [1]) < 1 or args.load < 0 or min(args.file_minutes or [1]) <= 0:
        parser.error("--threads must be positive, --load at least 0, --file-minutes positive")

    print(machine_line())
    print()
    print("| model | device | audio (s) | classes | threads | busy processes | time (s), median | real-time factor |")
    print("|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        models = {args.checkpoint: args.checkpoint} if args.checkpoint else {
            name: fresh_checkpoint(name, Path(tmp)) for name in args.config}
        for name, checkpoint in models.items():
            sep = Separator.from_checkpoint(checkpoint, device=args.device)
            rng = np.random.default_rng(0)
            t = np.arange(int(max(args.seconds + [10.0]) * sep.sample_rate)) / sep.sample_rate
            signal = (0.3 * np.sin(2 * np.pi * 220 * t) + 0.05 * rng.standard_normal(len(t))).astype(np.float32)
            args.name = name
            with busy_processes(args.load):
                time_separation(sep, signal, args)
        if args.file_minutes:
            file_memory(Path(checkpoint), sep, signal, args.file_minutes, Path(tmp))


if __name__ == "__main__":
    main()
