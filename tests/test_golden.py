"""Golden outputs: a tiny SGN and U-Net with stored weights must give the stored masks and losses.

A refactor that is meant to change nothing numerically must pass this unchanged. An
intended change of the numbers (a new layer, another loss) regenerates the file on
purpose, and the commit says why::

    SGN_REGENERATE_GOLDEN=1 pytest tests/test_golden.py
"""

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from sgn.checkpoint import build_model
from sgn.config import apply_overrides, load_config
from sgn.loss import separation_loss

GOLDEN = Path(__file__).parent / "golden" / "model_outputs.npz"
CLASSES = ["a", "b", "c", "d", "e"]
TINY = ["model.width=16", "model.heads=2", "model.stem_channels=4"]
VARIANTS = {"sgn": [], "unet": ["model.arch=unet"], "sgn_k2": ["model.tokens_per_class=2"]}


def _inputs():
    generator = torch.Generator().manual_seed(1)
    mixture = torch.randn(2, 2048, generator=generator) * 0.1  # [B, L]
    class_ids = torch.tensor([[0, 3], [4, -1]])  # a padded second mixture
    sources = torch.randn(2, 2, 2048, generator=generator) * 0.05
    return mixture, class_ids, sources


def _outputs(name: str, weights: dict | None) -> dict[str, np.ndarray]:
    config = apply_overrides(load_config("smoke"), TINY + VARIANTS[name])
    torch.manual_seed(0)
    model = build_model(config, CLASSES)
    if weights is not None:
        model.load_state_dict({k: torch.from_numpy(v).float() for k, v in weights.items()})
    model.eval()
    mixture, class_ids, sources = _inputs()
    stft = model.stft
    batch = {"class_ids": class_ids, "mix_mag": stft.stft(mixture).abs(), "source_mags": stft.stft(sources).abs()}
    with torch.no_grad():
        out = model(batch["mix_mag"])
        losses = separation_loss(out, model.loss_batch(batch), model.layout, config.loss)
        estimates = model.estimate(mixture, class_ids)
    return {"masks": torch.sigmoid(out.mask_logits).numpy(), "estimates": estimates.numpy(),
            "losses": np.array([float(losses[k]) for k in ("mask_loss", "ce_loss", "bce_loss")]),
            "assign_loss": np.array(float(losses["assign_loss"]))}


def _regenerate() -> None:
    arrays = {}
    for name in VARIANTS:
        config = apply_overrides(load_config("smoke"), TINY + VARIANTS[name])
        torch.manual_seed(0)
        state = build_model(config, CLASSES).state_dict()
        # float16 weights (exactly representable once loaded as float32) keep the file small
        weights = {k: v.half().numpy() for k, v in state.items() if v.is_floating_point()}
        arrays.update({f"{name}/weight/{k}": v for k, v in weights.items()})
        arrays.update({f"{name}/{k}": v for k, v in _outputs(name, weights).items()})
    GOLDEN.parent.mkdir(exist_ok=True)
    np.savez_compressed(GOLDEN, **arrays)


if os.environ.get("SGN_REGENERATE_GOLDEN"):
    _regenerate()


@pytest.mark.parametrize("name", VARIANTS)
def test_outputs_match_the_golden_file(name):
    stored = np.load(GOLDEN)
    prefix = f"{name}/weight/"
    weights = {k[len(prefix):]: stored[k] for k in stored.files if k.startswith(prefix)}
    got = _outputs(name, weights)
    np.testing.assert_allclose(got["masks"], stored[f"{name}/masks"], atol=2e-5)
    np.testing.assert_allclose(got["estimates"], stored[f"{name}/estimates"], atol=2e-5)
    np.testing.assert_allclose(got["losses"], stored[f"{name}/losses"], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(got["assign_loss"], stored[f"{name}/assign_loss"], rtol=1e-4, atol=1e-6)


def test_the_golden_file_covers_every_term_the_profiles_train_with():
    """A term a profile weighs that the golden outputs never computed could change unseen."""
    from sgn.loss import LOSS_TERMS

    stored = np.load(GOLDEN)
    for profile in ("smoke", "cpu", "gpu"):
        loss = load_config(profile).loss
        weighted = {"mask_loss"} | {term for term, weight in (("ce_loss", loss.ce_weight), ("bce_loss", loss.bce_weight),
                                                               ("assign_loss", loss.assign_weight)) if weight > 0}
        assert weighted <= set(LOSS_TERMS)
        assert "assign_loss" not in weighted or float(stored["sgn/assign_loss"]) > 0, profile
