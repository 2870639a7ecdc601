"""Training throughput: mixtures per second for each config, architecture and device.

Times full optimisation steps (forward, the training loss, backward, AdamW) on batches
built by the real data pipeline (``MixtureDataset``) from ``--index``, after warm-up
steps; data loading is timed separately so the table shows whether it is a bottleneck.
Also shows how the step time grows with the segment length, the batch size and the
number of sources per mixture (each varied alone from the config's values).

Run: ``python bench/bench_train.py [--config cpu] [--arch sgn unet] [--steps 5]
[--segments 8192 32768] [--batches 8 32] [--sources 1 3]``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import machine_line  # noqa: E402

from sgn.audio import STFTSpec  # noqa: E402
from sgn.checkpoint import build_model  # noqa: E402
from sgn.config import apply_overrides, load_config  # noqa: E402
from sgn.data import MixtureDataset, index_classes, read_index  # noqa: E402
from sgn.device import resolve_device  # noqa: E402
from sgn.loss import separation_loss, total_loss  # noqa: E402


def time_steps(config, index, device, steps: int) -> tuple[float, float]:
    """Median seconds per optimisation step, and per batch of data loading."""
    classes = index_classes(index)
    stft = STFTSpec(config.model.n_fft, config.model.hop)
    data = MixtureDataset(index, "train", classes, n_sources=config.data.n_sources,
                          segment_samples=config.data.segment_samples, stft=stft)
    model = build_model(config, classes).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.optim.lr, fused=device.type == "cuda")
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if (device.type == "cuda" and config.bf16) else nullcontext
    step_times, load_times = [], []
    for step in range(steps + 2):  # two warm-up steps
        start = time.perf_counter()
        batch = torch.utils.data.default_collate([data[step * config.optim.batch_size + i]
                                                  for i in range(config.optim.batch_size)])
        batch = {k: v.to(device) for k, v in batch.items()}
        loaded = time.perf_counter()
        with autocast():
            out = model(batch["mix_mag"])
        losses = separation_loss(out, model.loss_batch(batch), model.layout, config.loss, model.patch)
        loss = total_loss(losses, config.loss)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if step >= 2:
            load_times.append(loaded - start)
            step_times.append(time.perf_counter() - loaded)
    return statistics.median(step_times), statistics.median(load_times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", nargs="+", default=["cpu"])
    parser.add_argument("--arch", nargs="+", default=["sgn", "unet"])
    parser.add_argument("--index", default="data/synth_music/index.csv")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--segments", type=int, nargs="*", default=[], help="also time these segment lengths")
    parser.add_argument("--batches", type=int, nargs="*", default=[], help="also time these batch sizes")
    parser.add_argument("--sources", type=int, nargs="*", default=[],
                        help="also time these numbers of sources per mixture")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    for name, values in (("--segments", args.segments), ("--batches", args.batches), ("--sources", args.sources)):
        if any(v < 1 for v in values):
            parser.error(f"{name}: expected positive numbers, got {values}")
    device = resolve_device(args.device)
    index = read_index(args.index)

    print(machine_line())
    print()
    print("| config | arch | segment (samples) | batch | sources | step (s) | data (s) | mixtures/s | audio s/s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in args.config:
        base = load_config(name)
        base_segment, base_batch, base_sources = base.data.segment_samples, base.optim.batch_size, base.data.n_sources
        variants = [(base_segment, base_batch, base_sources)]  # (segment_samples, batch_size, n_sources)
        variants += [(s, base_batch, base_sources) for s in args.segments]
        variants += [(base_segment, b, base_sources) for b in args.batches]
        variants += [(base_segment, base_batch, str(n)) for n in args.sources]
        for arch in args.arch:
            for segment, batch, sources in variants:
                config = apply_overrides(base, [f"model.arch={arch}", f"data.segment_samples={segment}",
                                                f"optim.batch_size={batch}", f"data.n_sources={sources}"])
                step, load = time_steps(config, index, device, args.steps)
                audio = batch * segment / config.data.sample_rate
                print(f"| {name} | {arch} | {segment} | {batch} | {sources} | {step:.3f} | {load:.3f} | "
                      f"{batch / (step + load):.1f} | {audio / (step + load):.1f} |")


if __name__ == "__main__":
    main()
