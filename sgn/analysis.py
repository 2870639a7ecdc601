"""What SGN's class tokens learned: assignment statistics, token similarity, grouped representations.

The grouping block assigns every time-frequency token to the class tokens with a
softmax over tokens (``assignment [B, S, Pf, Pt]``). If grouping works, the tokens of
the classes present in a mixture receive most of the loud patches; if it collapses,
one token takes everything or the mass spreads evenly. :func:`grouping_statistics`
measures that on a fixed mixture list.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from sgn.data import FixedMixtureDataset
from sgn.interface import MaskSeparator, SeparatorOutput, TokenLayout, patch_pool


def patch_energy(model: MaskSeparator, magnitude: torch.Tensor) -> torch.Tensor:
    """Energy of linear-axis magnitudes ``[..., F, T]`` in each patch of the model's token grid ``[..., Pf, Pt]``."""
    return patch_pool(model.to_mask_axis(magnitude) ** 2, model.patch)


@torch.no_grad()
def forward_with_energy(model: MaskSeparator, mixture: torch.Tensor) -> tuple[SeparatorOutput, torch.Tensor]:
    """Run ``model`` on waveforms ``[B, L]``; also return each patch's share of the mixture energy ``[B, Pf, Pt]``."""
    stft_mag = model.stft.stft(mixture).abs()  # [B, F, T]
    out = model(stft_mag)
    energy = patch_energy(model, stft_mag)  # [B, Pf, Pt]
    return out, energy / energy.sum(dim=(-2, -1), keepdim=True)


# The per-mixture statistics of assignment_statistics, as grouping_statistics' columns.
STATISTICS = ("present_mass", "chance_mass", "entropy", "top_token_share")


def assignment_statistics(assignment: torch.Tensor, energy: torch.Tensor, token_present: torch.Tensor,
                          ) -> dict[str, torch.Tensor]:
    """How one batch's assignment spreads the mixtures' energy over the tokens.

    Args:
        assignment: ``[B, S, Pf, Pt]``, a softmax over tokens.
        energy: ``[B, Pf, Pt]``, each patch's share of its mixture's energy (sums to one).
        token_present: ``[B, S]`` bool, tokens of the classes in the mixture.

    Returns:
        ``[B]`` tensors ``present_mass`` (energy-weighted assignment on the present classes'
        tokens), ``chance_mass`` (``S_present / S``, what an even spread gives), ``entropy``
        (energy-weighted mean over patches, nats; at most ``log S``), ``top_token_share``
        (energy whose argmax token is the most used one: near 1 means collapse), and
        ``token_mass [B, S]`` (each token's energy-weighted share; sums to one over S).
    """
    token_mass = (assignment * energy[:, None]).sum(dim=(-2, -1))  # [B, S]
    entropy = -(assignment.clamp_min(1e-12).log() * assignment).sum(1)  # [B, Pf, Pt]
    top = F.one_hot(assignment.argmax(1), assignment.shape[1]).permute(0, 3, 1, 2).float()  # [B, S, Pf, Pt]
    return {
        "present_mass": (token_mass * token_present).sum(1),
        "chance_mass": token_present.float().mean(1),
        "entropy": (entropy * energy).sum(dim=(-2, -1)),
        "top_token_share": (top * energy[:, None]).sum(dim=(-2, -1)).max(dim=1).values,
        "token_mass": token_mass,
    }


def dominant_slot(source_energy: torch.Tensor, class_ids: torch.Tensor) -> torch.Tensor:
    """``[B, Pf, Pt]``: per patch, the slot of ``class_ids [B, Nmax]`` whose reference has the most energy
    (``source_energy [B, Nmax, Pf, Pt]``; padding slots never win)."""
    return source_energy.masked_fill((class_ids < 0)[:, :, None, None], -1.0).argmax(1)


def assigned_slot(assignment: torch.Tensor, class_ids: torch.Tensor, layout: TokenLayout) -> torch.Tensor:
    """``[B, Pf, Pt]``: per patch, the slot of ``class_ids`` whose class's tokens get the most assignment mass
    (only the present classes compete, so an assignment that ignores the audio is right 1 / N of the time)."""
    class_mass = layout.class_mass(assignment)  # [B, C, Pf, Pt]
    slot_mass = class_mass.gather(1, class_ids.clamp_min(0)[:, :, None, None].expand(-1, -1, *assignment.shape[-2:]))
    return slot_mass.masked_fill((class_ids < 0)[:, :, None, None], -1.0).argmax(1)


def assignment_agreement(assignment: torch.Tensor, source_energy: torch.Tensor, class_ids: torch.Tensor,
                         layout: TokenLayout, energy: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """How well the assignment follows the sources: per patch, the class whose reference
    dominates its energy (:func:`dominant_slot`) against the present class whose tokens the
    assignment gives the most mass (:func:`assigned_slot`); agreement weighted by the patch's
    share of the mixture energy.

    Args:
        assignment: ``[B, S, Pf, Pt]``.
        source_energy: ``[B, Nmax, Pf, Pt]``, each reference's energy per patch.
        class_ids: ``[B, Nmax]``, -1 for padding.
        layout: the model's token layout.
        energy: ``[B, Pf, Pt]``, each patch's share of its mixture's energy.

    Returns:
        ``(agreement [B], chance [B])``: the energy-weighted share of patches where the two
        classes agree, and what an assignment that ignores the audio would score (1 / N).
    """
    agree = assigned_slot(assignment, class_ids, layout) == dominant_slot(source_energy, class_ids)
    return (agree.float() * energy).sum(dim=(-2, -1)), 1.0 / (class_ids >= 0).sum(1).clamp_min(1).float()


def source_agreement(assignment: torch.Tensor, source_energy: torch.Tensor, class_ids: torch.Tensor,
                     layout: TokenLayout, energy: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per source, how much of what it dominates the assignment gives to its class.

    Returns:
        ``(agreement [B, Nmax], dominated [B, Nmax])``: the energy-weighted share of the patches a
        source dominates that the assignment gives to its class (a recall; NaN for padding and for a
        source that dominates no patch), and those patches' share of the mixture energy.
    """
    oracle = dominant_slot(source_energy, class_ids)  # [B, Pf, Pt]
    agree = (assigned_slot(assignment, class_ids, layout) == oracle).float() * energy
    owned = F.one_hot(oracle, class_ids.shape[1]).permute(0, 3, 1, 2).float()  # [B, Nmax, Pf, Pt]
    hits = (owned * agree[:, None]).sum(dim=(-2, -1))
    dominated = (owned * energy[:, None]).sum(dim=(-2, -1))
    return (hits / dominated).masked_fill((class_ids < 0) | (dominated == 0), float("nan")), dominated


@torch.no_grad()
def _grouping_batches(model: MaskSeparator, dataset: FixedMixtureDataset, batch_size: int):
    """Yield ``(batch, output, energy share [B, Pf, Pt], source energy [B, Nmax, Pf, Pt])`` over ``dataset``."""
    if getattr(model, "grouping", None) is None:
        raise ValueError("grouping statistics need an SGN model with the grouping block")
    model.eval()
    device = next(model.parameters()).device
    for batch in torch.utils.data.DataLoader(dataset, batch_size=batch_size):
        batch = {key: value.to(device) for key, value in batch.items()}
        out, energy = forward_with_energy(model, batch["mixture"])
        yield batch, out, energy, patch_energy(model, batch["source_mags"])


def grouping_statistics(model: MaskSeparator, dataset: FixedMixtureDataset, batch_size: int = 16) -> pd.DataFrame:
    """Per mixture: how the grouping assigns the mixture's energy to class tokens.

    Columns: ``mixture_id``, ``n_sources``, the ``[B]`` statistics of
    :func:`assignment_statistics`, ``agreement`` and ``agreement_chance`` of
    :func:`assignment_agreement`, and ``presence_accuracy`` (the presence head's accuracy
    over all classes at threshold 0.5).
    """
    rows = []
    layout = model.layout
    for batch, out, energy, source_energy in _grouping_batches(model, dataset, batch_size):
        present = layout.present(batch["class_ids"])  # [B, C]
        stats = assignment_statistics(out.assignment, energy, layout.present_tokens(present))
        stats["agreement"], stats["agreement_chance"] = assignment_agreement(
            out.assignment, source_energy, batch["class_ids"], layout, energy)
        presence_ok = ((torch.sigmoid(out.presence_logits) > 0.5) == (present > 0)).float().mean(1)
        for i in range(len(energy)):
            rows.append({
                "mixture_id": int(batch["mixture_id"][i]),
                "n_sources": int(batch["n_sources"][i]),
                **{name: float(stats[name][i]) for name in (*STATISTICS, "agreement", "agreement_chance")},
                "presence_accuracy": float(presence_ok[i]),
            })
    return pd.DataFrame(rows)


def grouping_by_source(model: MaskSeparator, dataset: FixedMixtureDataset, batch_size: int = 16) -> pd.DataFrame:
    """Per source, :func:`source_agreement`'s ``agreement`` and ``dominated``. Columns ``mixture_id,
    n_sources, source, class, agreement, dominated``; a source that dominates no patch has NaN agreement."""
    rows = []
    for batch, out, energy, source_energy in _grouping_batches(model, dataset, batch_size):
        ids = batch["class_ids"]
        agreement, dominated = source_agreement(out.assignment, source_energy, ids, model.layout, energy)
        for i, j in (ids >= 0).nonzero().tolist():
            rows.append({"mixture_id": int(batch["mixture_id"][i]), "n_sources": int(batch["n_sources"][i]),
                         "source": j, "class": model.classes[int(ids[i, j])],
                         "agreement": float(agreement[i, j]), "dominated": float(dominated[i, j])})
    return pd.DataFrame(rows)


def token_similarity(model: MaskSeparator) -> np.ndarray:
    """Cosine similarity between the learned class tokens, ``[S, S]``."""
    tokens = F.normalize(model.tokens.detach().float(), dim=-1)
    return (tokens @ tokens.T).cpu().numpy()


# The stages of SGN's forward pass, in order: (submodule name, what it computes).
FORWARD_STAGES = (
    ("input_norm", "log-frequency warp, log, BatchNorm"),
    ("stem", "conv stem"),
    ("down", "stride-2 conv level"),
    ("patchify", "strided conv: time-frequency tokens"),
    ("blocks", "self-attention over [class tokens; features]"),
    ("grouping", "category-aware grouping"),
    ("norm", "grouped class tokens"),
    ("feature_up", "features back to the conv grid"),
    ("up", "upsample and fuse with skip"),
    ("mask_head", "per-class mask weights"),
    ("presence_head", "class presence (BCE)"),
    ("token_head", "token classification (CE)"),
)


@torch.no_grad()
def trace_shapes(model: nn.Module, mix_mag: torch.Tensor) -> pd.DataFrame:
    """The output shape of every stage of one SGN forward pass, read with forward hooks.

    Args:
        model: an :class:`~sgn.model.SGN`.
        mix_mag: a mixture magnitude ``[B, F, T]``.

    Returns:
        The input's row, then one row per call of a stage's submodule, in call order: ``stage`` (the
        submodule, e.g. ``down.1``), ``role`` (from :data:`FORWARD_STAGES`) and
        ``shape`` (of its first output tensor), ending with the model's outputs.
    """
    rows = [{"stage": "input", "role": "mixture magnitude", "shape": list(mix_mag.shape)}]
    handles = []
    for head, role in FORWARD_STAGES:
        module = getattr(model, head, None)
        if module is None:  # an ablation without this stage (grouping=False)
            continue
        items = ([(f"{head}.{i}", item) for i, item in enumerate(module)] if isinstance(module, nn.ModuleList)
                 else [(head, module)])
        for name, item in items:

            def record(_module, _inputs, output, name=name, role=role):
                tensor = output[0] if isinstance(output, tuple) else output
                rows.append({"stage": name, "role": role, "shape": list(tensor.shape)})

            handles.append(item.register_forward_hook(record))
    try:
        was_training = model.training
        model.eval()
        out = model(mix_mag)
        model.train(was_training)
    finally:
        for handle in handles:
            handle.remove()
    for field in dataclasses.fields(out):
        value = getattr(out, field.name)
        if isinstance(value, torch.Tensor):  # the patch is a size, not an output
            rows.append({"stage": f"output: {field.name}", "role": "model output", "shape": list(value.shape)})
    return pd.DataFrame(rows)


def paired_difference(scores: pd.DataFrame, method: str, baseline: str, metric: str = "sdr",
                      n_boot: int = 1000, seed: int = 0) -> pd.Series:
    """``method`` minus ``baseline`` on the same sources, with a bootstrap interval over mixtures.

    Args:
        scores: per-source scores of both methods (``method``, ``mixture_id``, ``source``, ``metric``
            columns, as :func:`sgn.evaluate.evaluate` returns).
        method, baseline: the two values of the ``method`` column to compare.
        metric: the score column.

    Returns:
        :func:`sgn.metrics.summarize`'s row for the difference: ``n``, ``n_units``, ``mean``,
        ``median``, ``ci_low``, ``ci_high`` (dB).

    Raises:
        ValueError: a method is absent, or the two were scored on different sources.
    """
    from sgn.metrics import summarize

    keys = ["mixture_id", "source"]
    frames = []
    for name in (method, baseline):
        part = scores[scores["method"] == name]
        if part.empty:
            raise ValueError(f"no scores for method {name!r}; methods: {', '.join(map(str, scores['method'].unique()))}")
        frames.append(part.set_index(keys)[metric])
    if not frames[0].index.sort_values().equals(frames[1].index.sort_values()):
        raise ValueError(f"{method} and {baseline} were scored on different sources; compare on one mixture list")
    diff = (frames[0] - frames[1].reindex(frames[0].index)).rename("difference").reset_index()
    return summarize(diff, by=(), metrics=["difference"], n_boot=n_boot, seed=seed).iloc[0]
