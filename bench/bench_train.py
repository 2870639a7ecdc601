"""Training throughput: mixtures per second for each config, architecture and device.

Times full optimisation steps (forward, the training loss, backward, AdamW) on batches
built as the training loop builds them (:func:`sgn.train.training_set`: gains,
augmentation) from ``--index``, after warm-up steps; data loading is timed separately so
the table shows whether it is a bottleneck.
Also shows how the step time grows with the segment length, the batch size and the
number of sources per mixture (each varied alone from the config's values).

The step is the training loop's own (:func:`sgn.train.train_step`), under the config's
precision, attention kernel and compilation or those of ``--precision``, ``--attention`` and
``--compile`` (one row each; precision ``auto`` is bf16 where the device computes it
natively, attention ``auto`` the math kernel under bf16 on a CPU); on CUDA the table gives the peak
GPU memory of the timed steps. ``--flops`` counts the
model FLOPs of one optimisation step with ``torch.utils.flop_counter.FlopCounterMode``
(matrix multiplications, convolutions and attention; element-wise work and the optimizer
are not counted) and, with ``--peak-tflops``, the model FLOP utilisation (MFU): those
FLOPs over the step time, as a fraction of that peak.

Run: ``python bench/bench_train.py [--config cpu] [--arch sgn unet] [--steps 5]
[--precision fp32 bf16] [--attention fused math] [--compile off on] [--segments 8192 32768] [--batches 8 32]
[--sources 1 3] [--jobs 1 2] [--rounds 5] [--flops [--peak-tflops 989]]
[--csv FILE]``.

``--rounds N`` times every row N times, going through all rows in each round, and reports
the medians with the range of the rounds' step times: on a shared or frequency-scaling
machine a slow minute then lands on every row alike instead of on one (step times here have
moved 10-20% between runs a minute apart).

``--jobs 1 2`` also times each row with that many training processes at once, each with an
equal share of the cores (as :func:`sgn.train.train_all` trains independent runs):
``mixtures/s`` is then the processes' together, and ``step (s)`` the median of their own step times.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from tqdm.auto import tqdm
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).parent))
from common import machine_line  # noqa: E402

from sgn.config import ATTENTIONS, PRECISIONS, apply_overrides, load_config  # noqa: E402
from sgn.data import index_classes, read_index  # noqa: E402
from sgn.device import resolve_device, training_context  # noqa: E402
from sgn.train import CompiledOrEager, build_state, train_step, training_set  # noqa: E402
from sgn.utils import SGNError  # noqa: E402
from sgn.workers import share_of_cores, worker_pool  # noqa: E402


@dataclass
class StepTimes:
    """What :func:`time_steps` measured."""

    step_s: float  # median seconds of an optimisation step (forward, loss, backward, AdamW)
    load_s: float  # median seconds of building and moving a batch
    peak_gib: float | None  # peak GPU memory allocated over the steps; None on the CPU
    flops: int | None  # model FLOPs of one step, when counted
    first_s: float  # the first step (with compile: compiling), not in step_s


def _setup(config, index, device):
    """The training data (as the loop draws it: gains, augmentation), a fresh model and optimizer,
    the forward callable and the context ``config``'s steps compute in (precision, attention kernel)."""
    classes = index_classes(index)
    data = training_set(config, index, classes)
    torch.manual_seed(config.seed)
    state = build_state(config, classes, device, ddp=False)
    forward = CompiledOrEager(state.model) if config.compile else state.model
    return data, state, forward, training_context(config.precision, config.attention, device)


def time_steps(config, index, device, steps: int, count_flops: bool = False) -> StepTimes:
    """Time ``steps`` optimisation steps (:func:`sgn.train.train_step`: the training loop's own, under
    the config's precision and compilation) after warm-up steps; the first warm-up step counts the FLOPs."""
    data, state, forward, compute = _setup(config, index, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    counter = FlopCounterMode(display=False) if count_flops else None
    warmup = 3 if config.compile else 2  # compiling happens in the first call
    step_times, load_times, first_s = [], [], 0.0
    for step in range(steps + warmup):
        start = time.perf_counter()
        batch = torch.utils.data.default_collate([data[step * config.optim.batch_size + i]
                                                  for i in range(config.optim.batch_size)])
        batch = {k: v.to(device) for k, v in batch.items()}
        loaded = time.perf_counter()
        # the FLOPs are the same every step, so a warm-up step (not timed) counts them
        with counter if (counter is not None and step == 0) else nullcontext():
            train_step(state, forward, batch, config, compute)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if step == 0:
            first_s = time.perf_counter() - loaded
        if step >= warmup:
            load_times.append(loaded - start)
            step_times.append(time.perf_counter() - loaded)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return StepTimes(statistics.median(step_times), statistics.median(load_times), peak,
                     counter.get_total_flops() if counter is not None else None, first_s)


def time_concurrent(config, index_path: str, device, steps: int, jobs: int) -> tuple[list[StepTimes], int]:
    """:func:`time_steps` in ``jobs`` processes at once, each with ``cpu_count // jobs`` threads;
    returns each process's times and the threads each had."""
    threads = share_of_cores(jobs)
    with worker_pool(jobs, threads=threads) as pool:
        futures = [pool.submit(_time_in_worker, config, index_path, str(device), steps) for _ in range(jobs)]
        return [future.result() for future in futures], threads


def _time_in_worker(config, index_path: str, device: str, steps: int) -> StepTimes:
    return time_steps(config, read_index(index_path), torch.device(device), steps)


def profile_step(config, index, device, top: int = 12) -> str:
    """torch.profiler's table of one training step (after warm-up): the ``top`` operators by self CPU time."""
    from torch.profiler import ProfilerActivity, profile

    data, state, forward, compute = _setup(config, index, device)
    batches = [torch.utils.data.default_collate([data[k * config.optim.batch_size + i]
                                                 for i in range(config.optim.batch_size)]) for k in range(3)]
    for batch in batches[:2]:  # warm-up (and compiling)
        train_step(state, forward, {k: v.to(device) for k, v in batch.items()}, config, compute)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        train_step(state, forward, {k: v.to(device) for k, v in batches[2].items()}, config, compute)
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=top)


def table_row(name: str, arch: str, segment: int, batch: int, sources, rounds: list[tuple[list[StepTimes], int]],
              config, flops: bool, peak_tflops: float | None) -> dict[str, str]:
    """One row of the printed table (and of ``--csv``): formatted values by column name. ``rounds``
    holds each round's timing: one entry per process that trained at once, and the threads each
    had. Steps and batches are the medians over processes and rounds; with several rounds, ``step
    range (s)`` gives the lowest and highest round."""
    per_round = [(statistics.median(t.step_s for t in times), statistics.median(t.load_s for t in times))
                 for times, _ in rounds]
    step_s, load_s = (statistics.median(column) for column in zip(*per_round))
    (times, threads), sample_rate = rounds[0], config.data.sample_rate
    mixtures_s = len(times) * batch / (step_s + load_s)
    first = times[0]
    row = {"config": name, "arch": arch, "precision": config.precision, "attention": config.attention,
           "compile": "on" if config.compile else "off",
           "segment (samples)": str(segment), "batch": str(batch), "sources": str(sources),
           "processes x threads": f"{len(times)} x {threads}", "first step (s)": f"{first.first_s:.1f}",
           "step (s)": f"{step_s:.3f}", "data (s)": f"{load_s:.3f}",
           **({"step range (s)": f"{min(r[0] for r in per_round):.3f}-{max(r[0] for r in per_round):.3f}"}
              if len(rounds) > 1 else {}),
           "mixtures/s": f"{mixtures_s:.1f}", "audio s/s": f"{mixtures_s * segment / sample_rate:.1f}",
           "peak GPU memory (GiB)": "n/a" if first.peak_gib is None else f"{first.peak_gib:.2f}"}
    if flops:
        achieved = first.flops / step_s / 1e12  # the row's step: with --rounds, the median round
        row["GFLOP/step"] = f"{first.flops / 1e9:.1f}"
        row["TFLOP/s"] = f"{achieved:.2f}"
        row["MFU"] = "n/a" if peak_tflops is None else f"{achieved / peak_tflops:.1%}"
    return row


def _cases(args):
    """Each row's ``(config name, arch, segment, batch, sources, config)``: every config, architecture
    and mode (precision, attention, compile), with the config's sizes and each size varied alone."""
    for name in args.config:
        base = load_config(name)
        base_segment, base_batch, base_sources = base.data.segment_samples, base.optim.batch_size, base.data.n_sources
        variants = [(base_segment, base_batch, base_sources)]  # (segment_samples, batch_size, n_sources)
        variants += [(s, base_batch, base_sources) for s in args.segments]
        variants += [(base_segment, b, base_sources) for b in args.batches]
        variants += [(base_segment, base_batch, str(n)) for n in args.sources]
        modes = list(itertools.product(args.precision or [base.precision], args.attention or [base.attention],
                                       [c == "on" for c in args.compile] if args.compile else [base.compile]))
        for arch, (precision, attention, compiled), (segment, batch, sources) in itertools.product(
                args.arch, modes, variants):
            config = apply_overrides(base, [f"model.arch={arch}", f"data.segment_samples={segment}",
                                            f"optim.batch_size={batch}", f"data.n_sources={sources}",
                                            f"precision={precision}", f"attention={attention}", f"compile={compiled}"])
            yield name, arch, segment, batch, sources, config


def _time_row(config, index, args, device, jobs: int) -> tuple[list[StepTimes], int]:
    """One timing of a row: each process's times, and the threads each had."""
    if jobs == 1:
        return [time_steps(config, index, device, args.steps, count_flops=args.flops)], torch.get_num_threads()
    return time_concurrent(config, args.index, device, args.steps, jobs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", nargs="+", default=["cpu"])
    parser.add_argument("--arch", nargs="+", default=["sgn", "unet"])
    parser.add_argument("--index", default="data/synth_music/index.csv")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=1,
                        help="time every row this many times, the rows interleaved; report the median")
    parser.add_argument("--segments", type=int, nargs="*", default=[], help="also time these segment lengths")
    parser.add_argument("--batches", type=int, nargs="*", default=[], help="also time these batch sizes")
    parser.add_argument("--sources", type=int, nargs="*", default=[],
                        help="also time these numbers of sources per mixture")
    parser.add_argument("--jobs", type=int, nargs="+", default=[1],
                        help="time each row with this many training processes at once (cores shared equally)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", nargs="+", default=None, choices=PRECISIONS,
                        help="time each of these training precisions (default: the config's)")
    parser.add_argument("--attention", nargs="+", default=None, choices=ATTENTIONS,
                        help="time each of these attention kernels (default: the config's)")
    parser.add_argument("--compile", nargs="+", default=None, choices=["off", "on"],
                        help="time without and/or with torch.compile (default: the config's)")
    parser.add_argument("--flops", action="store_true",
                        help="count the model FLOPs of a step (FlopCounterMode: matmuls, convolutions, attention)")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="the device's dense peak in TFLOP/s at the step's precision (H200 bf16: 989): adds MFU")
    parser.add_argument("--csv", type=Path, default=None, help="also write the table to this CSV file")
    parser.add_argument("--profile", action="store_true",
                        help="also print torch.profiler's top operators of one step for each row's config")
    args = parser.parse_args()
    for name, values in (("--segments", args.segments), ("--batches", args.batches), ("--sources", args.sources)):
        if any(v < 1 for v in values):
            parser.error(f"{name}: expected positive numbers, got {values}")
    if args.peak_tflops is not None and not (args.flops and args.peak_tflops > 0):
        parser.error(f"--peak-tflops: expected a positive number with --flops, got {args.peak_tflops}")
    if args.rounds < 1:
        parser.error(f"--rounds: expected a positive number, got {args.rounds}")
    if any(j < 1 for j in args.jobs) or (args.flops and args.jobs != [1]):
        parser.error(f"--jobs: expected positive numbers (only 1 with --flops), got {args.jobs}")
    device = resolve_device(args.device)
    if device.type == "cuda" and args.jobs != [1]:
        parser.error("--jobs: processes at once share the cores; on CUDA time one (--jobs 1)")
    try:
        index = read_index(args.index)
    except SGNError as err:
        parser.error(f"--index: {err}")

    print(machine_line())
    print()
    cases = list(_cases(args))
    timed: dict[tuple[int, int], list] = {}  # (case, jobs) -> each round's (times, threads)
    rows, profiles = [], []
    bar = tqdm(total=args.rounds * len(cases) * len(args.jobs), desc="timing", unit="row", disable=args.rounds == 1,
               file=sys.stderr)
    for round_ in range(args.rounds):  # rounds interleave the rows: a slow minute hits every row alike
        for i, (name, arch, segment, batch, sources, config) in enumerate(cases):
            for jobs in args.jobs:
                timed.setdefault((i, jobs), []).append(_time_row(config, index, args, device, jobs))
                bar.update(1)
                if round_ < args.rounds - 1:
                    continue
                rounds = timed[(i, jobs)]
                rows.append(table_row(name, arch, segment, batch, sources, rounds, config, args.flops,
                                      args.peak_tflops))
                if len(rows) == 1:  # the header, once the columns are known
                    print("| " + " | ".join(rows[0]) + " |")
                    print("|" + "---|" * len(rows[0]))
                print("| " + " | ".join(rows[-1].values()) + " |", flush=True)
            if args.profile and round_ == args.rounds - 1:
                profiles.append((rows[-1], profile_step(config, index, device)))
    bar.close()
    for row, table in profiles:
        print(f"\n{row['config']} {row['arch']} {row['precision']} attention {row['attention']} "
              f"compile {row['compile']}: one step, top operators")
        print(table)
    if args.csv is not None:
        pd.DataFrame(rows).to_csv(args.csv, index=False, lineterminator="\n")

if __name__ == "__main__":
    main()
