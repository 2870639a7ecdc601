"""Benchmark BSS Eval: mir_eval against the fast path of sgn.metrics (fast_bss_eval).

The default setting is MUSIC's (Sound-of-Pixels): N = 2 sources of 65535 samples at
11025 Hz; ``--sources`` and ``--length`` take several values, the first of each sets (a)
and (b):

(a) time per call of ``bss_eval_sources`` and ``evaluate_mixture`` (median of ``--reps``
    after a warm-up call);
(b) throughput on ``--batch`` mixtures: a mir_eval loop, a fast loop, and the batched
    fast path (numpy; torch on CUDA when there is a GPU; CPU tensors take the numpy path);
(c) how the evaluation loop's cost grows with N and L: ``evaluate_mixture`` per call,
    and ``evaluate_mixture_batch`` on ``--batch`` mixtures (numpy; also CUDA with a GPU).

Every fast result in (a) and (b) is checked against mir_eval's on the same mixtures (max
|difference|). Prints markdown tables. Run: ``python bench/bench_metrics.py [--reps 5]
[--batch 100] [--sources 2 3 4] [--length 16384 65535]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import machine_line  # noqa: E402

from sgn.metrics import bss_eval_sources, bss_eval_sources_batch, evaluate_mixture, evaluate_mixture_batch  # noqa: E402

SAMPLE_RATE = 11025
LENGTH = 65535  # Sound-of-Pixels' clip: about 6 s at 11025 Hz


def make_mixtures(n_mix: int, n_src: int, length: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``[M, N, L]`` references and estimates (leakage, a short filter and noise);
    run time does not depend on the content, only on the shapes."""
    rng = np.random.default_rng(seed)
    ref = rng.standard_normal((n_mix, n_src, length))
    mixing = np.eye(n_src) + 0.3 * rng.uniform(-1, 1, (n_mix, n_src, n_src))
    est = mixing @ ref + 0.3 * rng.standard_normal((n_mix, n_src, length))
    est[..., 1:] += 0.4 * est[..., :-1]
    return ref, est


def median_time(fn, reps: int) -> float:
    fn()  # warm-up: imports, FFT plans, thread pools
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def loop(ref, est, backend, compute_permutation):
    """One ``bss_eval_sources`` call per mixture -> (sdr, sir, sar, perm), each ``[M, N]``."""
    results = [
        bss_eval_sources(r, e, backend=backend, compute_permutation=compute_permutation)
        for r, e in zip(ref, est)
    ]
    return tuple(np.stack(x) for x in zip(*results))


def max_diff(expected, actual) -> float:
    """Largest |difference| in dB over the float arrays of two results (tuples or dicts)."""
    if isinstance(expected, dict):
        expected, actual = list(expected.values()), [actual[k] for k in expected]
    return max(
        float(np.max(np.abs(e - a))) for e, a in zip(expected, actual) if e.dtype.kind == "f"
    )


def print_machine(n_src: int, length: int) -> None:
    print(machine_line())
    names = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
    threads = {k: os.environ[k] for k in names if k in os.environ}
    print(f"numpy {np.__version__}, mir_eval {version('mir_eval')}, fast_bss_eval {version('fast_bss_eval')};"
          f" thread settings: {threads or 'defaults'}")
    print(f"(a) and (b): N = {n_src} sources x L = {length} samples ({length / SAMPLE_RATE:.1f} s at"
          f" {SAMPLE_RATE} Hz)\n")


def per_call_table(ref, est, reps: int) -> None:
    """Table (a): one mixture, mir_eval against fast, median seconds per call."""
    mixture = ref.sum(axis=0)
    calls = [  # (name, compute_permutation, the call given a backend)
        ("bss_eval_sources", True, lambda b: bss_eval_sources(ref, est, backend=b)),
        ("bss_eval_sources", False,
         lambda b: bss_eval_sources(ref, est, backend=b, compute_permutation=False)),
        # the evaluation loop's call: the estimates and the mixture as the estimate
        ("evaluate_mixture", False, lambda b: evaluate_mixture(ref, est, mixture, backend=b)),
    ]
    print(f"## (a) One call (median of {reps})\n")
    print("| call | compute_permutation | mir_eval (s) | fast (s) | speed-up | max abs diff (dB) |")
    print("|---|---|---|---|---|---|")
    for name, perm, call in calls:
        t_mir = median_time(lambda: call("mir_eval"), reps)
        t_fast = median_time(lambda: call("fast"), reps)
        diff = max_diff(call("mir_eval"), call("fast"))
        print(f"| {name} | {perm} | {t_mir:.3f} | {t_fast:.3f} | {t_mir / t_fast:.1f}x"
              f" | {diff:.1e} |")


def throughput_table(ref, est) -> None:
    """Table (b): all mixtures, loops against the batched fast path, one timed run each."""
    n_mix = len(ref)
    ref_t, est_t = torch.from_numpy(ref), torch.from_numpy(est)
    print(f"\n## (b) Throughput on {n_mix} mixtures (one timed run each)\n")
    print("| method | compute_permutation | time (s) | mixtures/s | speed-up vs mir_eval"
          " | max abs diff (dB) |")
    print("|---|---|---|---|---|---|")
    for perm in (True, False):
        reference, t_mir = timed(lambda: loop(ref, est, "mir_eval", perm))
        runs = {
            "mir_eval loop": (reference, t_mir),
            "fast loop (numpy)": timed(lambda: loop(ref, est, "fast", perm)),
            "fast batched (numpy)": timed(
                lambda: bss_eval_sources_batch(ref, est, compute_permutation=perm)
            ),
        }
        if torch.cuda.is_available():
            ref_c, est_c = ref_t.cuda(), est_t.cuda()
            bss_eval_sources_batch(ref_c[:2], est_c[:2], compute_permutation=perm)  # warm-up
            runs["fast batched (torch, cuda)"] = timed(
                lambda: bss_eval_sources_batch(ref_c, est_c, compute_permutation=perm, chunk_size=n_mix)
            )
        for name, (result, seconds) in runs.items():
            print(f"| {name} | {perm} | {seconds:.2f} | {n_mix / seconds:.2f} | {t_mir / seconds:.1f}x"
                  f" | {max_diff(reference, result):.1e} |")


def scaling_table(sources: list[int], lengths: list[int], n_mix: int, reps: int) -> None:
    """Table (c): the evaluation loop's call for each N and L, one at a time and batched."""
    cuda = torch.cuda.is_available()
    print(f"\n## (c) evaluate_mixture by sources and length (one call: median of {reps};"
          f" batched: {n_mix} mixtures, one timed run)\n")
    header = "| N | L (samples) | audio (s) | one call (s) | batched, numpy (mixtures/s) |"
    print(header + (" batched, torch cuda (mixtures/s) |" if cuda else ""))
    print("|---|---|---|---|---|" + ("---|" if cuda else ""))
    for n_src in sources:
        for length in lengths:
            ref, est = make_mixtures(n_mix, n_src, length, seed=n_src)
            mixtures = ref.sum(axis=1)  # [M, L]
            one_call = median_time(lambda: evaluate_mixture(ref[0], est[0], mixtures[0]), reps)
            _, batched = timed(lambda: evaluate_mixture_batch(ref, est, mixtures))
            row = f"| {n_src} | {length} | {length / SAMPLE_RATE:.1f} | {one_call:.3f} | {n_mix / batched:.1f} |"
            if cuda:
                ref_c, est_c = torch.from_numpy(ref).cuda(), torch.from_numpy(est).cuda()
                evaluate_mixture_batch(ref_c[:2], est_c[:2], mixtures[:2])  # warm-up
                _, on_gpu = timed(lambda: evaluate_mixture_batch(ref_c, est_c, mixtures, chunk_size=n_mix))
                row += f" {n_mix / on_gpu:.1f} |"
            print(row)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5, help="timed calls per cell of table (a)")
    parser.add_argument("--batch", type=int, default=100, help="mixtures in table (b)")
    parser.add_argument("--sources", type=int, nargs="+", default=[2], help="N, sources per mixture")
    parser.add_argument("--length", type=int, nargs="+", default=[LENGTH], help="L, samples per source")
    args = parser.parse_args()
    if args.reps < 1 or args.batch < 1 or min(args.sources) < 1:
        parser.error("--reps, --batch and --sources must be at least 1")
    if min(args.length) < 512:
        parser.error("--length must be at least 512 samples (the BSS Eval filter length)")

    print_machine(args.sources[0], args.length[0])
    ref, est = make_mixtures(args.batch, args.sources[0], args.length[0])
    per_call_table(ref[0], est[0], args.reps)
    throughput_table(ref, est)
    scaling_table(args.sources, args.length, args.batch, args.reps)


if __name__ == "__main__":
    main()
