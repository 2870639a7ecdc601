"""The training objective: a mask loss per source, plus SGN's token CE and class-presence BCE.

A function of the model's output, the batch and the token layout only, so it is
tested on hand-made batches (``tests/test_loss.py``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sgn.config import LossConfig
from sgn.interface import SeparatorOutput, TokenLayout, patch_pool
from sgn.utils import SGNError

# The terms separation_loss returns; total_loss weighs them.
LOSS_TERMS = ("mask_loss", "ce_loss", "bce_loss", "assign_loss")


def separation_loss(out: SeparatorOutput, batch: dict, layout: TokenLayout, config: LossConfig) -> dict[str, torch.Tensor]:
    """Mask loss on the masks' axis (Sound-of-Pixels), plus token CE and presence BCE for SGN.

    ``batch`` holds ``class_ids [B, Nmax]`` and the magnitudes ``mix_mag [B, Fw, T]`` and
    ``source_mags [B, Nmax, Fw, T]`` on the masks' frequency axis (``model.loss_batch``).

    * ``bce``: target ``1[|S_n| > 0.5 |X|]``, BCE weighted by ``clamp(log1p|X|, 1e-3, 10)``.
    * ``l1``: target ``clamp(|S_n| / |X|, 0, 1)``, L1 with the same weight.
    * CE: each grouped token of a class present in the mixture classifies as its own token target.
    * BCE: ``sigmoid(presence_c)`` against the multi-hot set of classes in the mixture
      (:func:`presence_loss`; ``config.bce_balanced`` weighs present and absent classes equally).
    * assignment (ours, weighted by ``config.assign_weight``): see :func:`assignment_loss`, on
      the output's ``assignment`` and the ``patch`` it is on (zero for models without one).
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
    losses["bce_loss"] = (presence_loss(out.presence_logits, present, config.bce_balanced)
                          if out.presence_logits is not None else zero)
    if out.token_logits is not None:
        token_present = layout.present_tokens(present)  # [B, S]
        targets = layout.token_targets.expand_as(token_present)  # [B, S]
        ce = F.cross_entropy(out.token_logits.float().flatten(0, 1), targets.flatten(), reduction="none")
        losses["ce_loss"] = (ce * token_present.flatten()).sum() / token_present.sum().clamp_min(1)
    else:
        losses["ce_loss"] = zero
    losses["assign_loss"] = (assignment_loss(out.assignment, batch, layout, out.patch)
                             if out.assignment is not None else zero)
    return losses


def presence_loss(logits: torch.Tensor, present: torch.Tensor, balanced: bool) -> torch.Tensor:
    """BCE of the presence logits ``[B, C]`` against the multi-hot ``present``: the mean over
    every (mixture, class), or with ``balanced`` the mean of the present classes' mean and the
    absent classes' mean (each set weighs half whatever the number of sources)."""
    if not balanced:
        return F.binary_cross_entropy_with_logits(logits.float(), present)
    per_class = F.binary_cross_entropy_with_logits(logits.float(), present, reduction="none")
    absent = 1.0 - present
    return 0.5 * ((per_class * present).sum() / present.sum().clamp_min(1)
                  + (per_class * absent).sum() / absent.sum().clamp_min(1))


def assignment_loss(assignment: torch.Tensor, batch: dict, layout: TokenLayout, patch: tuple[int, int]) -> torch.Tensor:
    """Ours: ``-log`` of the assignment mass on the tokens of the class whose reference dominates each
    patch's energy, weighted by the patch's share of its mixture's energy (the quantity
    :func:`sgn.analysis.assignment_agreement` scores). Quiet patches weigh little: silence may go
    to any token, the rest token included.

    Args:
        assignment: ``[B, S, Pf, Pt]``, a softmax over tokens.
        batch: as :func:`separation_loss` takes it (magnitudes on the masks' axis).
        patch: ``(pf, pt)``, the bins and frames of one patch.
    """
    ids = batch["class_ids"]  # [B, Nmax]
    source_energy = patch_pool(batch["source_mags"].float() ** 2, patch)  # [B, Nmax, Pf, Pt]
    source_energy = source_energy.masked_fill((ids < 0)[:, :, None, None], -1.0)
    dominant = ids.gather(1, source_energy.flatten(2).argmax(1)).view(ids.shape[0], 1, *source_energy.shape[-2:])
    class_mass = layout.class_mass(assignment.float())  # [B, C, Pf, Pt]
    log_mass = class_mass.gather(1, dominant.clamp_min(0)).squeeze(1).clamp_min(1e-8).log()  # [B, Pf, Pt]
    energy = patch_pool(batch["mix_mag"].float() ** 2, patch)  # [B, Pf, Pt]
    weight = energy / energy.sum(dim=(-2, -1), keepdim=True).clamp_min(1e-12)
    return -(log_mass * weight).sum(dim=(-2, -1)).mean()


def total_loss(losses: dict[str, torch.Tensor], config: LossConfig) -> torch.Tensor:
    """The optimised sum: ``mask + ce_weight * ce + bce_weight * bce + assign_weight * assign``."""
    return (losses["mask_loss"] + config.ce_weight * losses["ce_loss"] + config.bce_weight * losses["bce_loss"]
            + config.assign_weight * losses["assign_loss"])
