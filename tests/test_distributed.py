"""DistributedDataParallel training under torchrun: 2 CPU processes (gloo) against 1.

Two processes with 4 items each (``optim.batch_size=8``, the global batch) train step
by step on the same items as one process with the doubled batch of 8, and rank 0 logs
the loss averaged over both. The loss curves match to a tolerance, not exactly: torch's
SyncBatchNorm refuses CPU tensors, so each rank's BatchNorm normalises over its own 4
items where the single process normalises over all 8 (on CUDA, sgn.train uses
SyncBatchNorm). On the smoke config that moves the loss by 0.3% at step 1 and at most
about 1% by step 6; logging rank 0's own loss, or training on the wrong items, moves
it by 5-10%.
"""

from __future__ import annotations

import csv
import os
import socket
import subprocess
import sys

import pytest
import torch

from sgn.checkpoint import load_model
from sgn.config import apply_overrides, load_config
from sgn.train import _StepBatches, train
from sgn.utils import SGNError

RTOL = 2e-2  # the BatchNorm difference above, with a margin of 2


def batch8_config(index):
    return apply_overrides(load_config("smoke"), [f"data.index={index}", "optim.batch_size=8"])


def torchrun(run, index, *flags):
    """``torchrun --nproc_per_node 2 -m sgn train`` on the smoke config with global batch 8."""
    with socket.socket() as s:  # a free port on the loopback interface
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if sys.platform == "linux":
        env["GLOO_SOCKET_IFNAME"] = "lo"  # gloo connects the ranks over loopback only
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
               "--master_addr", "127.0.0.1", "--master_port", str(port),
               "-m", "sgn", "train", "--config", "smoke", "--out", str(run),
               "--set", f"data.index={index}", "--set", "optim.batch_size=8", *flags]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]


def losses(run):
    with open(run / "metrics.csv") as f:
        return {int(row["step"]): float(row["loss"]) for row in csv.DictReader(f)}


@pytest.fixture(scope="module")
def one_process(tiny_synth, tmp_path_factory):
    """A 1-process run with batch 8: the reference loss curve."""
    run = tmp_path_factory.mktemp("ddp") / "one"
    train(batch8_config(tiny_synth), run, progress=False)
    return run


def test_ranks_split_each_step_into_contiguous_slices():
    one = list(_StepBatches(3, 6, 8))
    ranks = [list(_StepBatches(3, 6, 8, rank, 2)) for rank in range(2)]
    assert [a + b for a, b in zip(*ranks)] == one
    assert ranks[1][0] == [28, 29, 30, 31]


def test_two_processes_match_one_with_the_doubled_batch(tiny_synth, tmp_path, one_process):
    run = tmp_path / "two"
    torchrun(run, tiny_synth)
    assert {p.name for p in run.iterdir()} == {"config.yaml", "fingerprint.json", "metrics.csv", "last.pt", "best.pt"}
    two, one = losses(run), losses(one_process)
    assert list(two) == list(one) == [1, 2, 3, 4, 5, 6]
    assert [two[s] for s in two] == pytest.approx([one[s] for s in one], rel=RTOL)
    # rank 0 saved the bare model (no DDP "module." prefix): it loads like any checkpoint
    model, config, state = load_model(run / "best.pt")
    assert config.optim.batch_size == 8 and torch.load(run / "last.pt", weights_only=True)["step"] == 6


def test_torchrun_resumes_a_run(tiny_synth, tmp_path, one_process):
    """A run stopped after 4 steps in one process finishes in two with --resume."""
    run = tmp_path / "resumed"
    train(batch8_config(tiny_synth), run, progress=False, stop_after=4)
    torchrun(run, tiny_synth, "--resume")
    resumed, one = losses(run), losses(one_process)
    assert list(resumed) == [1, 2, 3, 4, 5, 6]
    assert [resumed[s] for s in (1, 2, 3, 4)] == [one[s] for s in (1, 2, 3, 4)]  # the 1-process rows, kept
    assert [resumed[5], resumed[6]] == pytest.approx([one[5], one[6]], rel=RTOL)
    assert torch.load(run / "last.pt", weights_only=True)["step"] == 6


def test_global_batch_must_divide_by_the_processes(tiny_synth, tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "3")  # checked before joining any process group
    with pytest.raises(SGNError, match="batch_size 8 is the global batch; it must divide by the 3 processes"):
        train(batch8_config(tiny_synth), tmp_path / "r", progress=False)
