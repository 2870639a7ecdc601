"""The training loop, for SGN and the U-Net baseline alike.

    sgn train --config cpu --out runs/cpu [--set optim.max_steps=2000] [--device auto] [--resume]

Outputs in the run folder, each written atomically (temp file + rename):
``config.yaml`` (the resolved config), ``metrics.csv`` (one row per logged step),
``last.pt`` (resumable: weights, optimizer, step, RNG) and ``best.pt`` (the weights
with the best validation SDR).
A folder with ``last.pt`` is refused unless resumed with the same config; one with
only a ``config.yaml`` (a run that failed before its first checkpoint) is started over.

Determinism: training item ``k`` is a pure function of ``(seed, k)`` (see
:class:`sgn.data.MixtureDataset`) and step ``s`` uses items ``s*B .. s*B+B-1``; the
learning rate is a function of the step; ``last.pt`` stores the torch RNG. So a run
stopped and resumed from ``last.pt`` ends with the same weights as one that never
stopped.

Several processes (DistributedDataParallel): launch with torchrun, one process per GPU
(NCCL) or a few CPU processes (gloo)::

    torchrun --standalone --nproc_per_node 4 -m sgn.train --config gpu --out runs/gpu
    torchrun --standalone --nproc_per_node 2 -m sgn.train --config cpu --out runs/cpu --device cpu

``python -m sgn.train`` takes the flags of ``sgn train``; ``torchrun ... $(which sgn)
train ...`` works too. ``optim.batch_size`` stays the global batch: it must divide by
the number of processes, and rank ``r`` of ``W`` takes the ``r``-th contiguous
``B/W`` of step ``s``'s items, so every step trains on the same items whatever ``W``.
Rank 0 alone validates, writes ``metrics.csv`` (the loss averaged over all ranks) and
the checkpoints; ``--resume`` works with any number of processes. On CUDA every
BatchNorm becomes a SyncBatchNorm, so ``W`` processes compute what one process with
the whole batch would; torch's SyncBatchNorm refuses CPU tensors, so with gloo on CPU
each rank normalises over its own ``B/W`` items and the losses differ slightly. With
``model.gumbel`` each rank draws its own noise, seeded by ``(seed, rank, first step)``:
a resumed run under torchrun is repeatable but not identical to an uninterrupted one.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from sgn.audio import STFTSpec
from sgn.checkpoint import RESUME_KEYS, build_model, check_keys, load_weights, read_checkpoint, save_checkpoint
from sgn.config import LossConfig, TrainConfig, load_config, save_config, to_dict
from sgn.data import (FixedMixtureDataset, MixtureDataset, SourceSpec, _draw_classes, check_sample_rate, index_classes,
                      make_mixture_list, read_index)
from sgn.evaluate import score_padded_batch
from sgn.interface import SeparatorOutput, TokenLayout
from sgn.metrics import SilentSignalError, bss_eval_sources_batch
from sgn.separate import estimate_sources, resolve_device
from sgn.utils import SGNError, atomic_write_text, check_output, shorten

log = logging.getLogger(__name__)

METRIC_COLUMNS = ("step", "loss", "mask_loss", "ce_loss", "bce_loss", "lr", "grad_norm", "val_sdr",
                  "elapsed_s", "samples_per_s")
# The validation list is drawn with its own seed so that runs with different
# training seeds are scored on the same mixtures.
VAL_LIST_SEED = 1234


def learning_rate(step: int, config: TrainConfig) -> float:
    """Linear warm-up to ``optim.lr``, then cosine decay to ``lr * min_lr_ratio``."""
    opt = config.optim
    if step < opt.warmup_steps:
        return opt.lr * (step + 1) / opt.warmup_steps
    progress = (step - opt.warmup_steps) / max(1, opt.max_steps - opt.warmup_steps)
    floor = opt.lr * opt.min_lr_ratio
    return floor + (opt.lr - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def separation_loss(out: SeparatorOutput, batch: dict, layout: TokenLayout, config: LossConfig,
                    ) -> dict[str, torch.Tensor]:
    """Mask loss on the masks' axis (Sound-of-Pixels), plus token CE and presence BCE for SGN.

    ``batch`` holds ``class_ids [B, Nmax]`` and the magnitudes ``mix_mag [B, Fw, T]`` and
    ``source_mags [B, Nmax, Fw, T]`` on the masks' frequency axis (``model.loss_batch``).

    * ``bce``: target ``1[|S_n| > 0.5 |X|]``, BCE weighted by ``clamp(log1p|X|, 1e-3, 10)``.
    * ``l1``: target ``clamp(|S_n| / |X|, 0, 1)``, L1 with the same weight.
    * CE: each grouped token of a class present in the mixture classifies as its own token target.
    * BCE: ``sigmoid(presence_c)`` against the multi-hot set of classes in the mixture.
    """
    ids = batch["class_ids"]  # [B, Nmax]
    valid = (ids >= 0).float()  # [B, Nmax]
    mix, sources = batch["mix_mag"], batch["source_mags"]  # [B, Fw, T], [B, Nmax, Fw, T]
    logits = out.mask_logits.float()  # [B, C, Fw, T]
    logits = logits.gather(1, ids.clamp_min(0)[:, :, None, None].expand(-1, -1, *logits.shape[-2:]))  # [B, Nmax, Fw, T]
    weight = torch.log1p(mix).clamp(1e-3, 10.0)[:, None]  # [B, 1, Fw, T]
    if config.mask == "bce":
        target = (sources > 0.5 * mix[:, None]).float()
        per_bin = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    elif config.mask == "l1":
        target = (sources / mix[:, None].clamp_min(1e-8)).clamp(0.0, 1.0)
        per_bin = (torch.sigmoid(logits) - target).abs()
    else:
        raise SGNError(f"config: loss.mask is {config.mask!r}; expected 'bce' or 'l1'")
    per_source = (per_bin * weight).mean(dim=(-2, -1))  # [B, Nmax]
    losses = {"mask_loss": (per_source * valid).sum() / valid.sum()}

    zero = logits.new_zeros(())
    present = layout.present(ids)  # [B, C]
    losses["bce_loss"] = (
        F.binary_cross_entropy_with_logits(out.presence_logits.float(), present)
        if out.presence_logits is not None else zero
    )
    if out.token_logits is not None:
        token_present = layout.present_tokens(present)  # [B, S]
        targets = layout.token_targets.expand_as(token_present)  # [B, S]
        ce = F.cross_entropy(out.token_logits.float().flatten(0, 1), targets.flatten(), reduction="none")
        losses["ce_loss"] = (ce * token_present.flatten()).sum() / token_present.sum().clamp_min(1)
    else:
        losses["ce_loss"] = zero
    return losses


def _batch_sdr(reference: torch.Tensor, estimate: torch.Tensor) -> dict[str, np.ndarray]:
    """BSS-eval SDR of ``[M, N, L]`` estimates, each against its own reference -> ``{"sdr": [M, N]}``."""
    return {"sdr": bss_eval_sources_batch(reference, estimate, compute_permutation=False)[0]}


@torch.no_grad()
def validate(model: nn.Module, loader: torch.utils.data.DataLoader, device: torch.device, autocast) -> float:
    """Mean BSS-eval SDR (dB) over the sources of the fixed validation list.

    The estimates are scored a batch at a time where they were computed: on a GPU by
    fast_bss_eval's torch backend, on the CPU with numpy.
    """
    model.eval()
    sdrs = []
    for batch in loader:
        with autocast():
            est = estimate_sources(model, batch["mixture"].to(device), batch["class_ids"].to(device))
        for scores in score_padded_batch(_batch_sdr, batch["sources"], est.float(), batch["n_sources"]):
            if isinstance(scores, SilentSignalError):
                continue  # a silent estimate cannot be scored; Sound-of-Pixels skips it too
            sdrs.extend(scores["sdr"].tolist())
    model.train()
    return float(np.mean(sdrs)) if sdrs else -math.inf


class _StepBatches(torch.utils.data.Sampler):
    """Batches of item numbers for steps ``start .. stop-1``: step ``s`` gets ``s*B .. s*B+B-1``.

    Of ``world_size`` processes, rank ``r`` takes the ``r``-th contiguous ``B/world_size`` of them.
    """

    def __init__(self, start: int, stop: int, batch_size: int, rank: int = 0, world_size: int = 1):
        self.start, self.stop, self.batch_size = start, stop, batch_size
        self.local = batch_size // world_size
        self.offset = rank * self.local

    def items(self, step: int) -> list[int]:
        """This rank's item numbers of ``step``."""
        first = step * self.batch_size + self.offset
        return list(range(first, first + self.local))

    def __iter__(self):
        for step in range(self.start, self.stop):
            yield self.items(step)

    def __len__(self) -> int:
        return self.stop - self.start


def _one_thread_per_worker(worker_id: int) -> None:
    # every DataLoader worker would otherwise start one torch thread per core and
    # num_workers processes would oversubscribe the cores the training step needs
    torch.set_num_threads(1)


def _item_sources(dataset: MixtureDataset, item: int) -> list[SourceSpec]:
    """The sources of training item ``item``, drawn as ``MixtureDataset.__getitem__`` draws them."""
    rng = np.random.default_rng([dataset.seed, int(item)])
    class_ids = _draw_classes(rng, len(dataset.pool.classes), dataset.n_range)
    return dataset.pool.draw(rng, class_ids, dataset.segment_samples, dataset.gain_range)


def _divergence_error(step: int, loss: torch.Tensor, batch: dict, dataset: MixtureDataset, items: list[int]) -> SGNError:
    """Why the loss of ``step`` is not finite: clips whose samples are not (NaN, inf, or so
    large that their spectrogram overflows), else a learning rate too high."""
    bad_source = ~(torch.isfinite(batch["sources"]).all(-1) & torch.isfinite(batch["source_mags"]).flatten(2).all(-1))
    paths = sorted({_item_sources(dataset, items[i])[slot].path for i, slot in bad_source.nonzero().tolist()})
    if not paths:
        return SGNError(f"training diverged at step {step} (loss {loss.item()}); lower optim.lr")
    return SGNError(f"step {step}: {len(paths)} training clip(s) hold NaN, infinite or huge samples, e.g. {paths[0]}; "
                    "expected finite audio: fix or remove them from the index")


def _restore(path: Path, config: TrainConfig, classes: list[str], model: nn.Module,
             optimizer: torch.optim.Optimizer, device_t: torch.device) -> tuple[int, float]:
    """Load a run's ``last.pt`` into ``model``, ``optimizer`` and the RNGs; return ``(step, best_val_sdr)``.

    Refused in one line: a weights-only checkpoint (``best.pt``), another run's
    checkpoint (architecture, config or classes differ) and state that does not fit.
    """
    state, stored = read_checkpoint(path, map_location=device_t)
    check_keys(state, RESUME_KEYS, path, "a resumable checkpoint (a best.pt holds weights only, no optimizer state)")
    if stored.model.arch != config.model.arch:
        raise SGNError(f"{path}: weights are for arch {stored.model.arch}, this run's config says {config.model.arch}")
    if to_dict(stored) != to_dict(config):
        raise SGNError(f"{path}: written by a run with another config; expected the one in this folder's config.yaml")
    if state["classes"] != classes:
        raise SGNError(f"{path}: classes {shorten(state['classes'])}; expected the data set's {shorten(classes)}")
    if not 0 <= state["step"] <= config.optim.max_steps:
        raise SGNError(f"{path}: step {state['step']}; expected 0 to optim.max_steps ({config.optim.max_steps})")
    load_weights(model, state, path)
    try:
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"].cpu())
        if "cuda_rng" in state and device_t.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"].cpu(), device_t)
    except (ValueError, KeyError, TypeError, RuntimeError, AttributeError) as err:
        raise SGNError(f"{path}: optimizer or RNG state does not fit this run ({type(err).__name__})") from None
    return state["step"], float(state["best_val_sdr"])


def _write_metrics(path: Path, rows: list[dict]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=METRIC_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


def _read_metrics(path: Path, up_to_step: int) -> list[dict]:
    """The rows of ``metrics.csv`` up to ``up_to_step``, typed as the loop writes them."""
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        rows = [{k: (int(v) if k == "step" else float(v) if v != "" else "") for k, v in row.items()}
                for row in csv.DictReader(f)]
    return [row for row in rows if row["step"] <= up_to_step]


def _init_distributed(device: str) -> tuple[int, int, torch.device]:
    """Join torchrun's process group if torchrun started us; return ``(rank, world_size, device)``."""
    device_t = resolve_device(device)
    if "RANK" not in os.environ:  # torchrun sets RANK, LOCAL_RANK, WORLD_SIZE
        return 0, 1, device_t
    rank, local_rank, world_size = (int(os.environ[k]) for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE"))
    if device_t.type == "cuda":
        device_t = torch.device("cuda", local_rank)  # one GPU per process
        torch.cuda.set_device(device_t)
    else:
        # share the cores: torch's default of one thread per core in every process
        # oversubscribes them, and torchrun's default (OMP_NUM_THREADS=1) leaves them idle
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world_size))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world))
    dist.init_process_group("nccl" if device_t.type == "cuda" else "gloo")
    return rank, world_size, device_t


def train(
    config: TrainConfig,
    out_dir: str | os.PathLike,
    *,
    device: str = "auto",
    resume: bool = False,
    progress: bool = True,
    stop_after: int | None = None,
) -> list[dict]:
    """Train one run; return the metrics history (one dict per logged step).

    Under torchrun this is one process of a DistributedDataParallel run (see the module
    docstring); ranks other than 0 return an empty history.

    Args:
        config: the run's configuration.
        out_dir: the run folder (created; refused before any work if it is a file or
            lies under one).
        device: ``"auto"``, ``"cpu"`` or ``"cuda"`` (under torchrun: the GPU of the local rank).
        resume: continue from ``out_dir/last.pt``; the config must equal the stored one.
        progress: show a progress bar.
        stop_after: stop (as if killed) after this many steps of this call; for tests
            of resuming and for budgeted runs.
    """
    config.check()  # again: a config's fields may have been changed since it was built
    check_output(out_dir, kind="dir", flag="--out")
    if stop_after is not None and stop_after < 1:
        raise SGNError(f"stop_after is {stop_after}; expected a positive number of steps")
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    if config.optim.batch_size % world_size:
        raise SGNError(f"config: optim.batch_size {config.optim.batch_size} is the global batch; "
                       f"it must divide by the {world_size} processes")
    rank, world_size, device_t = _init_distributed(device)
    try:
        return _train(config, Path(out_dir), device_t, rank, world_size,
                      resume=resume, progress=progress, stop_after=stop_after)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def _train(config: TrainConfig, out_dir: Path, device_t: torch.device, rank: int, world_size: int, *,
           resume: bool, progress: bool, stop_after: int | None) -> list[dict]:
    master, ddp = rank == 0, world_size > 1  # only the master process logs and writes
    last_path, best_path, config_path, metrics_path = (
        out_dir / "last.pt", out_dir / "best.pt", out_dir / "config.yaml", out_dir / "metrics.csv"
    )
    # A config.yaml without last.pt is a run that failed before its first checkpoint:
    # nothing to resume or to lose, so it is started over, with whatever config.
    if last_path.exists():
        if not config_path.exists():
            raise SGNError(f"{out_dir}: last.pt without config.yaml; not an sgn run folder")
        if not resume:
            raise SGNError(f"{out_dir}: already holds a run; pass --resume to continue it or choose another --out")
        if to_dict(load_config(config_path)) != to_dict(config):
            raise SGNError(f"{out_dir}: holds a run with a different config; resume it with the same config or use another --out")
    if ddp:
        dist.barrier()  # every rank has checked the folder before rank 0 writes to it

    torch.manual_seed(config.seed)
    index = read_index(config.data.index)
    check_sample_rate(index, config.data.sample_rate)
    classes = index_classes(index)
    stft = STFTSpec(config.model.n_fft, config.model.hop)
    gain_range = (config.data.gain_min, config.data.gain_max)
    train_set = MixtureDataset(index, "train", classes, n_sources=config.data.n_sources,
                               segment_samples=config.data.segment_samples, stft=stft,
                               gain_range=gain_range, seed=config.seed)
    val_list = make_mixture_list(index, "val", n_sources=config.data.n_sources, count=config.data.val_mixtures,
                                 seed=VAL_LIST_SEED, segment_samples=config.data.segment_samples, classes=classes)
    val_loader = torch.utils.data.DataLoader(FixedMixtureDataset(val_list, classes, stft),
                                             batch_size=config.optim.batch_size)

    model = build_model(config, classes).to(device_t)  # the same initial weights on every rank
    if ddp and device_t.type == "cuda":
        # BatchNorm statistics over the global batch, as in one process (not possible on CPU)
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    fused = device_t.type == "cuda"
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.optim.lr,
                                  weight_decay=config.optim.weight_decay, fused=fused)
    step, best_sdr = 0, -math.inf
    if resume and last_path.exists():
        step, best_sdr = _restore(last_path, config, classes, model, optimizer, device_t)
        if master:
            log.info("resuming %s at step %d", out_dir, step)
    if ddp:
        # each rank its own Gumbel noise (the only randomness in a training step)
        torch.manual_seed(int(np.random.SeedSequence([config.seed, rank, step]).generate_state(1)[0]))
    if master:
        out_dir.mkdir(parents=True, exist_ok=True)
        save_config(config, config_path)
    rows = _read_metrics(metrics_path, step) if master else []
    forward = torch.compile(model) if config.compile else model
    if ddp:
        # static_graph: the same parameters take part in every step, though not all of
        # them (model.class_tokens=false leaves the token head unused)
        forward = DistributedDataParallel(forward, device_ids=[device_t.index] if device_t.type == "cuda" else None,
                                          static_graph=True)
    use_bf16 = config.bf16 and device_t.type == "cuda"

    def autocast():
        return torch.autocast("cuda", dtype=torch.bfloat16) if use_bf16 else nullcontext()

    max_steps = config.optim.max_steps
    stop = max_steps if stop_after is None else min(max_steps, step + stop_after)
    batches = _StepBatches(step, stop, config.optim.batch_size, rank, world_size)
    loader = torch.utils.data.DataLoader(
        train_set, batch_sampler=batches, num_workers=config.data.num_workers, pin_memory=device_t.type == "cuda",
        worker_init_fn=_one_thread_per_worker,
        # its own generator: creating the iterator must not draw from the global RNG,
        # or a resumed run's Gumbel noise would shift
        generator=torch.Generator(),
    )
    seconds_per_batch = config.optim.batch_size * config.data.segment_samples / config.data.sample_rate
    n_params = sum(p.numel() for p in model.parameters())
    if master:
        log.info("training %s (%.2fM parameters) on %s%s: steps %d..%d of %d, %.1f s of audio per batch, into %s",
                 config.model.arch, n_params / 1e6, device_t, f" x {world_size} processes" if ddp else "",
                 step, stop, max_steps, seconds_per_batch, out_dir)

    def checkpoint(path: Path, with_state: bool) -> None:
        extra = {"step": step, "best_val_sdr": best_sdr}
        if with_state:
            extra.update(optimizer=optimizer.state_dict(), torch_rng=torch.get_rng_state())
            if device_t.type == "cuda":
                extra["cuda_rng"] = torch.cuda.get_rng_state(device_t)
        save_checkpoint(path, model, config, **extra)
        saved_at[path] = step

    saved_at: dict[Path, int] = {}
    model.train()
    start_time, window_start, window_items = time.perf_counter(), time.perf_counter(), 0
    bar = tqdm(total=max_steps, initial=step, disable=not (progress and master), desc=f"train {config.model.arch}", unit="step")
    for batch in loader:
        lr = learning_rate(step, config)
        for group in optimizer.param_groups:
            group["lr"] = lr
        batch = {k: v.to(device_t, non_blocking=True) for k, v in batch.items()}
        with autocast():
            out = forward(batch["mix_mag"])
        losses = separation_loss(out, model.loss_batch(batch), model.layout, config.loss)
        loss = losses["mask_loss"] + config.loss.ce_weight * losses["ce_loss"] + config.loss.bce_weight * losses["bce_loss"]
        if not torch.isfinite(loss):
            raise _divergence_error(step, loss, batch, train_set, batches.items(step))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.optim.grad_clip)
        optimizer.step()
        step += 1
        window_items += config.optim.batch_size
        bar.update(1)

        is_eval = step % config.eval_every == 0 or step == max_steps
        if step % config.log_every == 0 or is_eval:
            logged = torch.stack([loss, *losses.values()]).detach()
            if ddp:
                # Each rank's losses are means over its B/W items; DDP averages the gradients
                # and we average the losses, which gives the global-batch mean when every rank
                # has as many valid sources (fixed data.n_sources; a range like "1-4" weighs
                # the items slightly differently from one process).
                dist.all_reduce(logged)  # sum (gloo has no average)
                logged /= world_size
            if not master:
                continue  # validation and writing are rank 0's; the others wait in the next all-reduce
            now = time.perf_counter()
            row = {"step": step, "loss": logged[0].item(), "lr": lr, "grad_norm": float(grad_norm),
                   "elapsed_s": round(now - start_time, 3),
                   "samples_per_s": round(window_items / max(now - window_start, 1e-9), 3),
                   "val_sdr": "", **{k: v.item() for k, v in zip(losses, logged[1:])}}
            window_start, window_items = now, 0
            if is_eval:
                row["val_sdr"] = validate(model, val_loader, device_t, autocast)
                if row["val_sdr"] > best_sdr:
                    best_sdr = row["val_sdr"]
                    checkpoint(best_path, with_state=False)
                checkpoint(last_path, with_state=True)
            rows.append(row)
            _write_metrics(metrics_path, rows)
            bar.set_postfix(loss=f"{row['loss']:.4f}", val_sdr=f"{best_sdr:.2f}")
    bar.close()
    if not master:
        return []
    if saved_at.get(last_path) != step:
        checkpoint(last_path, with_state=True)
    log.info("run %s at step %d/%d; best validation SDR %.2f dB; checkpoints in %s",
             out_dir.name, step, max_steps, best_sdr, out_dir)
    return [dict(r) for r in rows]


if __name__ == "__main__":  # python -m sgn.train (and torchrun -m sgn.train) take sgn train's flags
    import sys

    from sgn.cli import main

    sys.exit(main(["train", *sys.argv[1:]]))
