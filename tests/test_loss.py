"""The training objective on hand-made batches: its targets, its weights, and that each term
responds to the output it should and to nothing else."""

import math

import pytest
import torch

from sgn.config import LossConfig
from sgn.interface import SeparatorOutput, TokenLayout
from sgn.loss import presence_loss, separation_loss, total_loss

CLASSES = ["a", "b", "c", "d"]
BIG = 30.0  # a logit this large is a probability of 1 - 1e-13


def _batch():
    """One mixture of classes c (id 2) and a (id 0), plus a padding slot; 4 bins x 3 frames.

    Class c owns bins 0-1, class a bins 2-3: the binary targets are that split.
    """
    source_c = torch.tensor([[4.0, 4, 4], [3, 3, 3], [0.1, 0.1, 0.1], [0, 0, 0]])
    source_a = torch.tensor([[0.1, 0.1, 0.1], [0, 0, 0], [2, 2, 2], [5, 5, 5]])
    sources = torch.stack([source_c, source_a, torch.zeros(4, 3)])[None]  # [1, Nmax=3, Fw=4, T=3]
    return {"class_ids": torch.tensor([[2, 0, -1]]), "mix_mag": sources.sum(1), "source_mags": sources}


def _perfect_masks() -> torch.Tensor:
    logits = torch.full((1, len(CLASSES), 4, 3), -BIG)
    logits[0, 2, :2] = BIG
    logits[0, 0, 2:] = BIG
    return logits


def _output(mask_logits, presence=None, token_logits=None):
    return SeparatorOutput(mask_logits=mask_logits, presence_logits=presence, token_logits=token_logits)


def test_mask_targets_are_the_dominant_source():
    layout = TokenLayout.without_tokens(CLASSES)
    perfect = separation_loss(_output(_perfect_masks()), _batch(), layout, LossConfig())
    assert perfect["mask_loss"] < 1e-6
    assert perfect["ce_loss"] == 0 and perfect["bce_loss"] == 0  # no such heads
    swapped = _perfect_masks()[:, [2, 1, 0, 3]]  # c's mask given to a and back
    assert separation_loss(_output(swapped), _batch(), layout, LossConfig())["mask_loss"] > 5


def test_absent_classes_and_padding_do_not_enter_the_mask_loss():
    logits = _perfect_masks()
    logits[0, [1, 3]] = torch.randn(2, 4, 3) * BIG  # classes b and d are not in the mixture
    assert separation_loss(_output(logits), _batch(), TokenLayout.without_tokens(CLASSES), LossConfig())[
        "mask_loss"] < 1e-6


def test_mask_loss_weights_loud_bins_more():
    batch = _batch()
    quiet_error, loud_error = _perfect_masks(), _perfect_masks()
    quiet_error[0, 2, 2, 0] = BIG  # c claims a bin where the mixture is quiet (|X| = 2.1)
    loud_error[0, 2, 3, 0] = BIG  # ... or loud (|X| = 5)
    layout = TokenLayout.without_tokens(CLASSES)
    quiet = separation_loss(_output(quiet_error), batch, layout, LossConfig())["mask_loss"]
    loud = separation_loss(_output(loud_error), batch, layout, LossConfig())["mask_loss"]
    assert float(loud / quiet) == pytest.approx(float(torch.log1p(torch.tensor(5.0)) / torch.log1p(torch.tensor(2.1))), rel=1e-3)


def test_l1_targets_are_ratio_masks():
    batch = _batch()
    ratio = (batch["source_mags"][0, :2] / batch["mix_mag"][0]).clamp(0, 1)  # [2, 4, 3]
    logits = torch.full((1, len(CLASSES), 4, 3), -BIG)
    logits[0, 2], logits[0, 0] = torch.logit(ratio[0], eps=1e-7), torch.logit(ratio[1], eps=1e-7)
    loss = separation_loss(_output(logits), batch, TokenLayout.without_tokens(CLASSES), LossConfig(mask="l1"))
    assert loss["mask_loss"] < 1e-5


def test_presence_bce_targets_the_classes_in_the_mixture():
    layout = TokenLayout.without_tokens(CLASSES)
    right = torch.tensor([[BIG, -BIG, BIG, -BIG]])  # a and c present
    wrong = torch.tensor([[BIG, BIG, BIG, -BIG]])  # also claims b
    assert separation_loss(_output(_perfect_masks(), presence=right), _batch(), layout, LossConfig())["bce_loss"] < 1e-6
    assert separation_loss(_output(_perfect_masks(), presence=wrong), _batch(), layout, LossConfig())["bce_loss"] > 5


def test_token_ce_counts_only_the_present_classes_tokens():
    layout = TokenLayout.build(CLASSES, tokens_per_class=2)  # tokens 0-1: a, 2-3: b, 4-5: c, 6-7: d
    logits = torch.full((1, 8, 4), -BIG)
    logits[0, torch.arange(8), layout.token_targets] = BIG  # every token names its class
    assert separation_loss(_output(_perfect_masks(), token_logits=logits), _batch(), layout, LossConfig())[
        "ce_loss"] < 1e-6
    absent_wrong = logits.clone()
    absent_wrong[0, 2:4] = logits[0, 6:8]  # b's tokens say "d": b is absent, so no loss
    assert separation_loss(_output(_perfect_masks(), token_logits=absent_wrong), _batch(), layout, LossConfig())[
        "ce_loss"] < 1e-6
    present_wrong = logits.clone()
    present_wrong[0, 4] = logits[0, 6]  # one of c's tokens says "d"
    ce = separation_loss(_output(_perfect_masks(), token_logits=present_wrong), _batch(), layout, LossConfig())
    assert float(ce["ce_loss"]) == pytest.approx(2 * BIG / 4, rel=1e-3)  # one of the 4 present tokens is off by 2*BIG


def test_shared_tokens_target_their_own_index():
    layout = TokenLayout.build(CLASSES, share_tokens=True)  # token 0: a+b, token 1: c+d
    logits = torch.full((1, 2, 2), -BIG)
    logits[0, [0, 1], [0, 1]] = BIG
    assert separation_loss(_output(_perfect_masks(), token_logits=logits), _batch(), layout, LossConfig())[
        "ce_loss"] < 1e-6


def _assignment(owner_of_rows):
    """A one-hot assignment ``[1, S=4, Pf=2, Pt=3]`` (one token per class): patch row ``r`` to token ``owner_of_rows[r]``."""
    assignment = torch.zeros(1, len(CLASSES), 2, 3)
    for row, token in enumerate(owner_of_rows):
        assignment[0, token, row] = 1.0
    return assignment


def test_assignment_loss_rewards_the_dominant_source_class():
    # patches of 2 bins x 1 frame: row 0 holds bins 0-1 (class c dominates), row 1 bins 2-3 (class a)
    layout, batch, patch = TokenLayout.build(CLASSES), _batch(), (2, 1)
    config = LossConfig(assign_weight=1.0)

    def loss_of(assignment):
        out = SeparatorOutput(mask_logits=_perfect_masks(), assignment=assignment, patch=patch)
        return float(separation_loss(out, batch, layout, config)["assign_loss"])

    assert loss_of(_assignment([2, 0])) < 1e-6
    assert loss_of(_assignment([0, 2])) > 15  # -log(1e-8): each patch's mass on the wrong class
    # an absent class (b, d) taking a patch is as wrong as the other present class
    assert loss_of(_assignment([1, 0])) == pytest.approx(loss_of(_assignment([2, 3])), rel=0.2)
    # energy weighting: a wrong row costs its share of the mixture energy; row 1 (2.1^2 + 5.1^2 per
    # frame) is louder than row 0 (4.1^2 + 3^2), so getting it wrong costs more
    assert loss_of(_assignment([2, 2])) > loss_of(_assignment([0, 0]))
    # weight 0 (the paper as inferred): the term is reported but not optimised
    out = SeparatorOutput(mask_logits=_perfect_masks(), assignment=_assignment([0, 2]), patch=patch)
    losses = separation_loss(out, batch, layout, LossConfig(assign_weight=0.0))
    assert losses["assign_loss"] > 15
    assert total_loss(losses, LossConfig(assign_weight=0.0)) == total_loss({**losses, "assign_loss": 0}, config)


def test_an_assignment_without_its_patch_is_refused():
    with pytest.raises(ValueError, match="patch"):
        SeparatorOutput(mask_logits=_perfect_masks(), assignment=_assignment([0, 2]))


def test_assignment_loss_sums_a_class_s_tokens():
    layout = TokenLayout.build(CLASSES, tokens_per_class=2)  # tokens 2k, 2k+1 serve class k
    split = torch.zeros(1, 8, 2, 3)
    split[0, 4:6, 0] = 0.5  # class c's two tokens share row 0
    split[0, 0:2, 1] = 0.5  # class a's two tokens share row 1
    out = SeparatorOutput(mask_logits=_perfect_masks(), assignment=split, patch=(2, 1))
    assert separation_loss(out, _batch(), layout, LossConfig(assign_weight=1.0))["assign_loss"] < 1e-6


def test_patch_pool_matches_the_token_grid():
    from sgn.interface import patch_pool

    values = torch.arange(4 * 6, dtype=torch.float32).reshape(4, 6)  # Fw=4, T=6; patch (2, 4): time pads to 8
    pooled = patch_pool(values[None], (2, 4))
    assert pooled.shape == (1, 2, 2)
    assert pooled[0, 0, 0] == values[:2, :4].mean()
    assert pooled[0, 1, 1] == values[2:, 4:].sum() / 8  # the padded frames count as zeros


@pytest.mark.parametrize("n_present", [1, 2, 4])
def test_balanced_presence_loss_gives_present_and_absent_classes_equal_weight(n_present):
    """At logit 0 every class's gradient is -0.5 (present) or +0.5 (absent): the plain mean weighs
    the two sets by their sizes (N against C - N), the balanced loss by half each."""
    present = torch.zeros(3, 11)
    present[:, :n_present] = 1.0
    sums = {}
    for balanced in (False, True):
        logits = torch.zeros(3, 11, requires_grad=True)
        loss = presence_loss(logits, present, balanced)
        assert loss.item() == pytest.approx(math.log(2))
        loss.backward()
        sums[balanced] = (logits.grad[present.bool()].sum().item(), logits.grad[~present.bool()].sum().item())
    assert sums[True][0] == pytest.approx(-0.25) and sums[True][1] == pytest.approx(0.25)
    assert sums[False][1] / -sums[False][0] == pytest.approx((11 - n_present) / n_present)
