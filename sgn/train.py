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

    torchrun --standalone --nproc_per_node 4 -m sgn train --config gpu --out runs/gpu
    torchrun --standalone --nproc_per_node 2 -m sgn train --config cpu --out runs/cpu --device cpu

(``python -m sgn`` is the ``sgn`` command; ``torchrun ... $(which sgn) train ...`` works too.) ``optim.batch_size`` stays the global batch: it must divide by
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
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from sgn.audio import STFTSpec
from sgn.checkpoint import RESUME_KEYS, build_model, check_keys, load_weights, read_checkpoint, save_checkpoint
from sgn.config import TrainConfig, to_dict
from sgn.data import (
    FixedMixtureDataset,
    MixtureDataset,
    check_sample_rate,
    index_classes,
    make_mixture_list,
    read_index,
)
from sgn.device import resolve_device, training_context
from sgn.interface import MaskSeparator
from sgn.loss import LOSS_TERMS, separation_loss, total_loss
from sgn.metrics import SilentSignalError, best_presence_threshold, bss_eval_sources_batch, score_padded_batch
from sgn.runs import open_run
from sgn.utils import SGNError, atomic_write_text, check_output, git_commit, shorten
from sgn.workers import rebalance_threads, running_task, share_of_cores, watched, worker_pool

log = logging.getLogger(__name__)

METRIC_COLUMNS = ("step", "loss", *LOSS_TERMS, "lr", "grad_norm", "val_sdr",
                  "elapsed_s", "samples_per_s")
# The validation list is drawn with its own seed so that runs with different
# training seeds are scored on the same mixtures.
VAL_LIST_SEED = 1234
# A pool worker of train_all with no finished run for this long is taken as hung (the
# longest run of a profile trains about 25 min on one thread).
RUN_STALL_S = 6 * 3600


def learning_rate(step: int, config: TrainConfig) -> float:
    """Linear warm-up to ``optim.lr``, then cosine decay to ``lr * min_lr_ratio``."""
    opt = config.optim
    if step < opt.warmup_steps:
        return opt.lr * (step + 1) / opt.warmup_steps
    progress = (step - opt.warmup_steps) / max(1, opt.max_steps - opt.warmup_steps)
    floor = opt.lr * opt.min_lr_ratio
    return floor + (opt.lr - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def _batch_sdr(reference: torch.Tensor, estimate: torch.Tensor) -> dict[str, np.ndarray]:
    """BSS-eval SDR of ``[M, N, L]`` estimates, each against its own reference -> ``{"sdr": [M, N]}``."""
    return {"sdr": bss_eval_sources_batch(reference, estimate, compute_permutation=False)[0]}


@torch.no_grad()
def validate(model: nn.Module, loader: torch.utils.data.DataLoader, device: torch.device,
             compute: Callable) -> float:
    """Mean BSS-eval SDR (dB) over the sources of the fixed validation list.

    The estimates are scored a batch at a time where they were computed: on a GPU by
    fast_bss_eval's torch backend, on the CPU with numpy.
    """
    model.eval()
    sdrs = []
    for batch in loader:
        with compute():
            est = model.estimate(batch["mixture"].to(device), batch["class_ids"].to(device))
        for scores in score_padded_batch(_batch_sdr, batch["sources"], est.float(), batch["n_sources"]):
            if isinstance(scores, SilentSignalError):
                continue  # a silent estimate cannot be scored; Sound-of-Pixels skips it too
            sdrs.extend(scores["sdr"].tolist())
    model.train()
    return float(np.mean(sdrs)) if sdrs else -math.inf


@torch.no_grad()
def presence_threshold(model: nn.Module, loader: torch.utils.data.DataLoader, device: torch.device,
                       compute: Callable) -> float | None:
    """The presence head's threshold chosen on the validation list
    (:func:`sgn.metrics.best_presence_threshold`); ``None`` for a model without the head."""
    model.eval()
    probabilities, present = [], []
    for batch in loader:
        with compute():
            logits = model(batch["mix_mag"].to(device)).presence_logits
        if logits is None:
            model.train()
            return None
        probabilities.append(torch.sigmoid(logits.float()).cpu())
        truth = torch.zeros_like(probabilities[-1], dtype=torch.bool)
        for i, n in enumerate(batch["n_sources"].tolist()):
            truth[i, batch["class_ids"][i, :n]] = True
        present.append(truth)
    model.train()
    return best_presence_threshold(torch.cat(probabilities).numpy(), torch.cat(present).numpy())


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


@dataclass
class TrainState:
    """What a run carries from step to step; ``last.pt`` stores it."""

    model: MaskSeparator
    optimizer: torch.optim.Optimizer
    step: int = 0
    best_sdr: float = -math.inf
    presence_threshold: float | None = None  # of the best weights, chosen on the validation list


def build_state(config: TrainConfig, classes: list[str], device_t: torch.device, ddp: bool) -> TrainState:
    """A fresh model (the same initial weights on every rank: the caller seeds) and its AdamW."""
    model = build_model(config, classes).to(device_t)
    if ddp and device_t.type == "cuda":
        # BatchNorm statistics over the global batch, as in one process (not possible on CPU)
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.optim.lr,
                                  weight_decay=config.optim.weight_decay, fused=device_t.type == "cuda")
    return TrainState(model, optimizer)


def save_state(state: TrainState, path: Path, config: TrainConfig, provenance: dict, *, resumable: bool) -> None:
    """Write ``state`` as a checkpoint; ``resumable`` adds the optimizer and RNG states (``last.pt``)."""
    extra = {"step": state.step, "best_val_sdr": state.best_sdr, **provenance}
    if state.presence_threshold is not None:
        extra["presence_threshold"] = state.presence_threshold
    if resumable:
        extra.update(optimizer=state.optimizer.state_dict(), torch_rng=torch.get_rng_state())
        device_t = next(state.model.parameters()).device
        if device_t.type == "cuda":
            extra["cuda_rng"] = torch.cuda.get_rng_state(device_t)
    save_checkpoint(path, state.model, config, **extra)


def restore(state: TrainState, path: Path, config: TrainConfig, classes: list[str]) -> None:
    """Load a run's ``last.pt`` into ``state`` (weights, optimizer, step, RNGs).

    Refused in one line: a weights-only checkpoint (``best.pt``), another run's
    checkpoint (architecture, config or classes differ) and state that does not fit.
    """
    device_t = next(state.model.parameters()).device
    stored_state, stored = read_checkpoint(path, map_location=device_t)
    check_keys(stored_state, RESUME_KEYS, path, "a resumable checkpoint (a best.pt holds weights only, no optimizer state)")
    if stored.model.arch != config.model.arch:
        raise SGNError(f"{path}: weights are for arch {stored.model.arch}, this run's config says {config.model.arch}")
    if to_dict(stored) != to_dict(config):
        raise SGNError(f"{path}: written by a run with another config; expected the one in this folder's config.yaml")
    if stored_state["classes"] != classes:
        raise SGNError(f"{path}: classes {shorten(stored_state['classes'])}; expected the data set's {shorten(classes)}")
    if not 0 <= stored_state["step"] <= config.optim.max_steps:
        raise SGNError(f"{path}: step {stored_state['step']}; expected 0 to optim.max_steps ({config.optim.max_steps})")
    load_weights(state.model, stored_state, path)
    try:
        state.optimizer.load_state_dict(stored_state["optimizer"])
        torch.set_rng_state(stored_state["torch_rng"].cpu())
        if "cuda_rng" in stored_state and device_t.type == "cuda":
            torch.cuda.set_rng_state(stored_state["cuda_rng"].cpu(), device_t)
    except (ValueError, KeyError, TypeError, RuntimeError, AttributeError) as err:
        raise SGNError(f"{path}: optimizer or RNG state does not fit this run ({type(err).__name__})") from None
    state.step, state.best_sdr = stored_state["step"], float(stored_state["best_val_sdr"])
    state.presence_threshold = stored_state.get("presence_threshold")


def train_step(state: TrainState, forward: Callable, batch: dict, config: TrainConfig,
               compute: Callable) -> tuple[dict[str, torch.Tensor], float]:
    """One optimisation step on ``batch`` (on the model's device).

    Returns:
        ``(losses, grad_norm)``: ``losses`` holds ``loss`` (the optimised total) and each term.

    Raises:
        SGNError: a non-finite loss, before the weights change (the clips are checked when
            read, so it is the optimisation's).
    """
    lr = learning_rate(state.step, config)
    for group in state.optimizer.param_groups:
        group["lr"] = lr
    with compute():
        out = forward(batch["mix_mag"])
    terms = separation_loss(out, state.model.loss_batch(batch), state.model.layout, config.loss)
    loss = total_loss(terms, config.loss)
    if not torch.isfinite(loss):
        raise SGNError(f"training diverged at step {state.step} (loss {loss.item()}); lower optim.lr")
    state.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(state.model.parameters(), config.optim.grad_clip)
    state.optimizer.step()
    state.step += 1
    return {"loss": loss, **terms}, float(grad_norm)


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
        torch.set_num_threads(share_of_cores(local_world))
    dist.init_process_group("nccl" if device_t.type == "cuda" else "gloo")
    return rank, world_size, device_t


def train(
    config: TrainConfig,
    out_dir: str | os.PathLike,
    *,
    device: str = "auto",
    resume: bool = False,
    stale: str = "refuse",
    progress: bool = True,
    stop_after: int | None = None,
    overwrite: bool = False,
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
        stale: a run of this config made by other code or data (see :mod:`sgn.runs`):
            ``"refuse"`` it in one line, or ``"retrain"`` it from step 0 (the notebooks' choice).
        progress: show a progress bar.
        stop_after: stop (as if killed) after this many steps of this call; for tests
            of resuming and for budgeted runs.
        overwrite: replace a ``best.pt`` or ``metrics.csv`` that no resumable run of this
            config holds (refused otherwise: it may be someone's model).
    """
    config.check()  # again: a config's fields may have been changed since it was built
    check_output(out_dir, kind="dir", flag="--out", input_dirs=[Path(config.data.index).parent])
    if stop_after is not None and stop_after < 1:
        raise SGNError(f"stop_after is {stop_after}; expected a positive number of steps")
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    if config.optim.batch_size % world_size:
        raise SGNError(f"config: optim.batch_size {config.optim.batch_size} is the global batch; "
                       f"it must divide by the {world_size} processes")
    rank, world_size, device_t = _init_distributed(device)
    try:
        return _train(config, Path(out_dir), device_t, rank, world_size,
                      resume=resume, stale=stale, progress=progress, stop_after=stop_after, overwrite=overwrite)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def train_all(runs: Sequence[tuple[TrainConfig, str | os.PathLike]], *, jobs: int = 1, device: str = "auto",
              progress: bool = True) -> list[list[dict]]:
    """Train independent runs, resumed or reused where already there (as the notebooks do);
    return their histories in the order given.

    ``jobs`` > 1 on a CPU trains that many runs at once, each in its own process with an
    equal share of the cores: two single-thread runs on 2 cores train 1.17x (SGN) to 1.22x
    (U-Net) the mixtures per second of one two-thread run (README "Learning per CPU-minute"), since the
    small kernels of one step do not keep two threads busy. When fewer runs than ``jobs`` are
    left, each takes an equal share of the cores again at its next step
    (:func:`sgn.workers.rebalance_threads`). On CUDA the runs take turns on the one GPU.
    """
    runs = [(config, Path(out_dir)) for config, out_dir in runs]
    folders = [out_dir.resolve() for _, out_dir in runs]
    if len(set(folders)) < len(folders):
        twice = next(f for f in folders if folders.count(f) > 1)
        raise SGNError(f"{twice}: two runs would train in the same folder")
    if not isinstance(jobs, int) or isinstance(jobs, bool) or jobs < 1:
        raise SGNError(f"jobs: expected a whole number of at least 1, got {shorten(jobs)}")
    if jobs == 1 or len(runs) == 1 or resolve_device(device).type == "cuda":
        return [_train_resumed(config, out_dir, device)[1]
                for config, out_dir in tqdm(runs, desc="training", unit="run", disable=not progress)]
    histories: dict[Path, list[dict]] = {}
    threads = share_of_cores(jobs)
    log.info("training %d runs, %d at a time (%d thread(s) each)", len(runs), jobs, threads)
    with worker_pool(jobs, threads=threads) as pool, \
            tqdm(total=len(runs), desc="training", unit="run", disable=not progress) as bar:
        futures = {pool.submit(_train_resumed, config, out_dir, device): str(out_dir) for config, out_dir in runs}
        for out_dir, history in watched(pool, futures, stall_s=RUN_STALL_S, doing="training"):
            histories[out_dir] = history
            log.info("trained %s", out_dir)
            bar.update()
    return [histories[out_dir] for _, out_dir in runs]


def _train_resumed(config: TrainConfig, out_dir: Path, device: str) -> tuple[Path, list[dict]]:
    """One run of :func:`train_all`, as the notebooks train it; in a pool worker too (a top-level
    function: "spawn" imports it)."""
    with running_task():
        return out_dir, train(config, out_dir, device=device, resume=True, stale="retrain", progress=False)


@dataclass
class TrainingData:
    """The training items, the validation loader and the data set's classes."""

    train_set: MixtureDataset
    val_loader: torch.utils.data.DataLoader
    classes: list[str]


def training_set(config: TrainConfig, index: pd.DataFrame, classes: list[str]) -> MixtureDataset:
    """The training split's random mixtures as ``config`` draws them (gains, augmentation, seed)."""
    return MixtureDataset(index, "train", classes, n_sources=config.data.n_sources,
                          segment_samples=config.data.segment_samples,
                          stft=STFTSpec(config.model.n_fft, config.model.hop),
                          gain_range=(config.data.gain_min, config.data.gain_max), seed=config.seed,
                          augmentation=config.data.augmentation(), sample_rate=config.data.sample_rate)


def load_training_data(config: TrainConfig) -> TrainingData:
    index = read_index(config.data.index)
    check_sample_rate(index, config.data.sample_rate)
    classes = index_classes(index)
    stft = STFTSpec(config.model.n_fft, config.model.hop)
    train_set = training_set(config, index, classes)
    val_list = make_mixture_list(index, "val", n_sources=config.data.n_sources, count=config.data.val_mixtures,
                                 seed=VAL_LIST_SEED, segment_samples=config.data.segment_samples, classes=classes)
    val_loader = torch.utils.data.DataLoader(FixedMixtureDataset(val_list, classes, stft, config.data.sample_rate),
                                             batch_size=config.optim.batch_size)
    return TrainingData(train_set, val_loader, classes)


def _step_loader(data: TrainingData, start: int, stop: int, config: TrainConfig, rank: int, world_size: int,
                 device_t: torch.device) -> tuple[_StepBatches, torch.utils.data.DataLoader]:
    batches = _StepBatches(start, stop, config.optim.batch_size, rank, world_size)
    loader = torch.utils.data.DataLoader(
        data.train_set, batch_sampler=batches, num_workers=config.data.num_workers,
        pin_memory=device_t.type == "cuda", worker_init_fn=_one_thread_per_worker,
        # its own generator: creating the iterator must not draw from the global RNG,
        # or a resumed run's Gumbel noise would shift
        generator=torch.Generator(),
    )
    return batches, loader


def _compiled(model: nn.Module, config: TrainConfig, ddp: bool, device_t: torch.device) -> Callable:
    """The callable the loop runs forward passes through: compiled and/or DDP-wrapped as configured."""
    forward = CompiledOrEager(model) if config.compile else model
    if ddp:
        # static_graph: the same parameters take part in every step, though not all of
        # them (model.class_tokens=false leaves the token head unused)
        forward = DistributedDataParallel(forward, device_ids=[device_t.index] if device_t.type == "cuda" else None,
                                          static_graph=True)
    return forward


class CompiledOrEager:
    """``torch.compile(model)``, or ``model`` itself once compiling has failed (one warning says so).

    Compiling happens at the first call (inductor needs a C++ compiler on the CPU), so a
    failure surfaces there; training goes on in eager mode with the same weights.
    """

    def __init__(self, model: nn.Module):
        self.model, self.compiled = model, torch.compile(model)

    def __call__(self, *args, **kwargs):
        if self.compiled is not None:
            try:
                return self.compiled(*args, **kwargs)
            except Exception as err:  # inductor's and dynamo's errors have no common base
                log.warning("torch.compile failed (%s: %s); running in eager mode", type(err).__name__,
                            shorten(str(err).strip().splitlines()[0] if str(err).strip() else "", 120))
                self.compiled = None
        return self.model(*args, **kwargs)


def _mean_over_ranks(losses: dict[str, torch.Tensor], world_size: int) -> dict[str, float]:
    """Each rank's losses are means over its B/W items; DDP averages the gradients and we
    average the losses, which gives the global-batch mean when every rank has as many valid
    sources (fixed data.n_sources; a range like "1-4" weighs the items slightly differently)."""
    logged = torch.stack(list(losses.values())).detach()
    if world_size > 1:
        dist.all_reduce(logged)  # sum (gloo has no average)
        logged /= world_size
    return dict(zip(losses, logged.tolist()))


def _train(config: TrainConfig, out_dir: Path, device_t: torch.device, rank: int, world_size: int, *,
           resume: bool, stale: str, progress: bool, stop_after: int | None, overwrite: bool) -> list[dict]:
    master, ddp = rank == 0, world_size > 1  # only the master process logs and writes
    compute = training_context(config.precision, config.attention, device_t)  # a bad precision fails before any write
    run = open_run(out_dir, config, resume=resume, stale=stale, write=master, overwrite=overwrite)
    if ddp:
        dist.barrier()  # every rank has checked the folder before rank 0 writes to it
    torch.manual_seed(config.seed)
    data = load_training_data(config)
    state = build_state(config, data.classes, device_t, ddp)
    if resume and run.resumable:
        restore(state, run.last, config, data.classes)
        log.info("resuming %s at step %d", out_dir, state.step) if master else None
    if ddp:  # each rank its own Gumbel noise (the only randomness in a training step)
        torch.manual_seed(int(np.random.SeedSequence([config.seed, rank, state.step]).generate_state(1)[0]))
    rows = _read_metrics(run.metrics, state.step) if master else []
    provenance = {"fingerprint": run.fingerprint, "commit": git_commit() or ""}
    forward = _compiled(state.model, config, ddp, device_t)
    max_steps = config.optim.max_steps
    stop = max_steps if stop_after is None else min(max_steps, state.step + stop_after)
    batches, loader = _step_loader(data, state.step, stop, config, rank, world_size, device_t)
    if master:
        _log_start(config, state, device_t, world_size, stop, out_dir)
    saved_step, clock = None, _Throughput()
    bar = tqdm(total=max_steps, initial=state.step, disable=not (progress and master),
               desc=f"train {config.model.arch}", unit="step")
    state.model.train()
    for batch in loader:
        rebalance_threads()  # in train_all's pool: a run left alone takes the cores of the finished ones
        batch = {k: v.to(device_t, non_blocking=True) for k, v in batch.items()}
        losses, grad_norm = train_step(state, forward, batch, config, compute)
        clock.items += config.optim.batch_size
        bar.update(1)
        is_eval = state.step % config.eval_every == 0 or state.step == max_steps
        if state.step % config.log_every and not is_eval:
            continue
        logged = _mean_over_ranks(losses, world_size)
        if not master:
            continue  # validation and writing are rank 0's; the others wait in the next all-reduce
        row = {"step": state.step, "lr": learning_rate(state.step - 1, config), "grad_norm": grad_norm,
               "val_sdr": "", **clock.lap(), **logged}
        if is_eval:
            row["val_sdr"] = validate(state.model, data.val_loader, device_t, compute)
            if row["val_sdr"] > state.best_sdr:
                state.best_sdr = row["val_sdr"]
                state.presence_threshold = presence_threshold(state.model, data.val_loader, device_t, compute)
                save_state(state, run.best, config, provenance, resumable=False)
            save_state(state, run.last, config, provenance, resumable=True)
            saved_step = state.step
        rows.append(row)
        _write_metrics(run.metrics, rows)
        bar.set_postfix(loss=f"{row['loss']:.4f}", val_sdr=f"{state.best_sdr:.2f}")
    bar.close()
    if not master:
        return []
    if saved_step != state.step and state.step > batches.start:  # stopped between evaluations
        save_state(state, run.last, config, provenance, resumable=True)
    log.info("run %s at step %d/%d; best validation SDR %.2f dB; checkpoints in %s",
             out_dir.name, state.step, max_steps, state.best_sdr, out_dir)
    return [dict(r) for r in rows]


class _Throughput:
    """Elapsed time since the run (this call) started, and items per second since the last lap."""

    def __init__(self):
        self.start = time.perf_counter()
        self.lap_start, self.items = self.start, 0

    def lap(self) -> dict[str, float]:
        now = time.perf_counter()
        rate = self.items / max(now - self.lap_start, 1e-9)
        self.lap_start, self.items = now, 0
        return {"elapsed_s": round(now - self.start, 3), "samples_per_s": round(rate, 3)}


def _log_start(config: TrainConfig, state: TrainState, device_t: torch.device, world_size: int, stop: int,
               out_dir: Path) -> None:
    seconds_per_batch = config.optim.batch_size * config.data.segment_samples / config.data.sample_rate
    n_params = sum(p.numel() for p in state.model.parameters())
    log.info("training %s (%.2fM parameters) on %s%s: steps %d..%d of %d, %.1f s of audio per batch, into %s",
             config.model.arch, n_params / 1e6, device_t, f" x {world_size} processes" if world_size > 1 else "",
             state.step, stop, config.optim.max_steps, seconds_per_batch, out_dir)
