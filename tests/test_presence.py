"""The presence head's threshold: chosen on the run's validation list, stored with the weights, used when guessing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sgn.checkpoint import load_model
from sgn.evaluate import presence_detection
from sgn.metrics import best_presence_threshold


def test_a_timid_head_gets_a_low_threshold():
    """Present classes at probability 0.2-0.35, absent ones below 0.1: 0.5 finds nothing, the chosen threshold all."""
    rng = np.random.default_rng(0)
    present = np.zeros((50, 11), bool)
    for row in present:
        row[rng.choice(11, 2, replace=False)] = True
    probabilities = np.where(present, rng.uniform(0.2, 0.35, present.shape), rng.uniform(0.0, 0.1, present.shape))
    threshold = best_presence_threshold(probabilities, present)
    assert 0.1 <= threshold <= 0.2
    assert np.all((probabilities >= threshold) == present)


def test_a_calibrated_head_keeps_one_half():
    present = np.array([[True, False], [False, True]])
    assert best_presence_threshold(np.array([[0.9, 0.1], [0.05, 0.95]]), present) == 0.5  # ties go to 0.5


def test_the_run_stores_its_threshold_and_guessing_uses_it(smoke_checkpoint, tiny_test_list):
    _, _, state = load_model(smoke_checkpoint)
    stored = state["presence_threshold"]
    assert isinstance(stored, float) and 0 < stored < 1
    default = presence_detection(smoke_checkpoint, tiny_test_list, device="cpu")
    explicit = presence_detection(smoke_checkpoint, tiny_test_list, device="cpu", threshold=stored)
    assert default.equals(explicit)


def test_a_model_without_the_head_stores_none(tiny_synth, tmp_path):
    from sgn.config import apply_overrides, load_config
    from sgn.train import train

    config = apply_overrides(load_config("smoke"), [f"data.index={tiny_synth}", "model.arch=unet", "optim.max_steps=2",
                                                    "eval_every=2"])
    train(config, tmp_path / "unet", progress=False)
    assert "presence_threshold" not in torch.load(tmp_path / "unet" / "best.pt", weights_only=True)
