"""What every separator architecture provides, so that nothing reaches into a model's parts.

* :class:`SeparatorOutput`: what a forward pass returns (SGN fills every field; the
  U-Net only the masks).
* :class:`TokenLayout`: which class tokens serve which class; the loss, the analysis
  and the notebooks read it from ``model.layout``.
* :class:`MaskSeparator`: the base class. It owns the STFT the model was trained with
  (``model.stft``) and the map between the linear STFT bins and the bins its masks are
  predicted on (``model.to_mask_axis``, ``model.linear_masks``), so callers get masks on
  the linear frequency axis and never touch the warp.

A new architecture subclasses :class:`MaskSeparator`, calls its ``__init__`` and
implements ``forward(mix_mag [B, F, T]) -> SeparatorOutput``; register it in
:data:`sgn.checkpoint.ARCHITECTURES`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
import torch.utils._pytree
from torch import nn

from sgn.audio import LogFrequencyWarp, STFTSpec
from sgn.config import ModelConfig


def pad_time(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Zero-pad the last axis of ``x`` to a multiple of ``multiple``."""
    # always F.pad (a pad of 0 is a copy): a branch on the length would freeze one
    # length's path into a traced (ONNX) graph, whose time axis is dynamic
    return F.pad(x, (0, (-x.shape[-1]) % multiple))


def patch_pool(values: torch.Tensor, patch: tuple[int, int]) -> torch.Tensor:
    """Mean of ``values [..., Fw, T]`` over each ``patch = (pf, pt)`` of the token grid -> ``[..., Fw/pf, T'/pt]``
    (time zero-padded to a multiple of ``pt``, as the models pad their input)."""
    lead = values.shape[:-2]
    flat = pad_time(values.reshape(-1, 1, *values.shape[-2:]), patch[1])
    pooled = F.avg_pool2d(flat, patch)
    return pooled.reshape(*lead, *pooled.shape[-2:])


@dataclass
class SeparatorOutput:
    """One forward pass. Per-class tensors follow ``model.classes``; tokens ``model.layout``."""

    mask_logits: torch.Tensor  # [B, C, Fw, T], on the model's mask axis (see MaskSeparator)
    presence_logits: torch.Tensor | None = None  # [B, C], is class c in the mixture?
    token_logits: torch.Tensor | None = None  # [B, S, S_targets], the token-classification head
    assignment: torch.Tensor | None = None  # [B, S, Pf, Pt], soft assignment of patches to tokens
    patch: tuple[int, int] | None = None  # (bins, frames) of the mask axis one assignment cell covers
    class_rep: torch.Tensor | None = None  # [B, C, D], per-class representations

    def __post_init__(self):
        if self.assignment is not None and self.patch is None:
            raise ValueError("SeparatorOutput: an assignment needs the patch it is on")


# DistributedDataParallel finds the output tensors it must hook (static_graph's gradient
# sync) through torch's pytree, which sees inside registered dataclasses only.
torch.utils._pytree.register_dataclass(SeparatorOutput)


@dataclass(frozen=True)
class TokenLayout:
    """Which tokens serve which class.

    Attributes:
        classes: class names, in class-id order.
        class_from_tokens: ``[C, S]``; row ``c`` averages the tokens of class ``c``.
        token_targets: ``[S]``; the CE target of each token (its class, or with shared
            tokens its own index).
    """

    classes: tuple[str, ...]
    class_from_tokens: torch.Tensor
    token_targets: torch.Tensor

    @classmethod
    def build(cls, classes: Sequence[str], tokens_per_class: int = 1, share_tokens: bool = False) -> "TokenLayout":
        """``K`` tokens per class, or (``share_tokens``) one token for classes ``2j`` and ``2j+1``."""
        n_classes = len(classes)
        if share_tokens:
            n_tokens = (n_classes + 1) // 2
            targets = torch.arange(n_tokens)
            layout = torch.zeros(n_classes, n_tokens)
            layout[torch.arange(n_classes), torch.arange(n_classes) // 2] = 1.0  # class c -> token c // 2
        else:
            n_tokens = n_classes * tokens_per_class
            targets = torch.arange(n_tokens) // tokens_per_class  # token s -> class s // K
            layout = torch.zeros(n_classes, n_tokens)
            layout[targets, torch.arange(n_tokens)] = 1.0 / tokens_per_class
        return cls(tuple(classes), layout, targets)

    @classmethod
    def without_tokens(cls, classes: Sequence[str]) -> "TokenLayout":
        """The layout of a model with no class tokens (``S = 0``)."""
        return cls(tuple(classes), torch.zeros(len(classes), 0), torch.zeros(0, dtype=torch.long))

    @property
    def n_tokens(self) -> int:
        return self.class_from_tokens.shape[1]

    def token_class(self) -> torch.Tensor:
        """``[S]``: the (first) class each token serves."""
        return self.class_from_tokens.argmax(0)

    def class_mass(self, assignment: torch.Tensor) -> torch.Tensor:
        """``[B, S, ...]`` per-token assignment -> ``[B, C, ...]``, each class's tokens summed."""
        serves = (self.class_from_tokens > 0).to(assignment)  # [C, S]
        return torch.einsum("cs,bs...->bc...", serves, assignment)

    def tokens_of(self, class_id: int) -> torch.Tensor:
        """The token indices serving class ``class_id``."""
        return (self.class_from_tokens[class_id] > 0).nonzero().flatten()

    def present(self, class_ids: torch.Tensor) -> torch.Tensor:
        """``[B, C]`` float multi-hot of the classes in each mixture (``class_ids [B, N]``, -1 = padding)."""
        present = torch.zeros(class_ids.shape[0], len(self.classes), device=class_ids.device)
        rows, slots = (class_ids >= 0).nonzero(as_tuple=True)
        # indexing only the real slots: a scatter of the clamped padding onto class 0 could undo its 1
        present[rows, class_ids[rows, slots]] = 1.0
        return present

    def present_tokens(self, present: torch.Tensor) -> torch.Tensor:
        """``[B, S]`` bool: tokens serving a class of ``present [B, C]``."""
        return (present @ self.class_from_tokens.to(present.device)) > 0


class MaskSeparator(nn.Module):
    """Base of the separators: predicts a mask per class from the mixture magnitude.

    Args:
        config: the architecture (``n_fft``, ``hop``, ``warped_bins`` are used here).
        classes: class names; output ``c`` of every per-class tensor is ``classes[c]``.
        layout: the model's token layout (:meth:`TokenLayout.without_tokens` if it has none).
    """

    def __init__(self, config: ModelConfig, classes: Sequence[str], layout: TokenLayout):
        super().__init__()
        self.config, self.classes = config, list(classes)
        self.stft = STFTSpec(config.n_fft, config.hop)
        self.warp = LogFrequencyWarp(self.stft.n_bins, config.warped_bins)
        self.register_buffer("class_from_tokens", layout.class_from_tokens, persistent=False)  # [C, S]
        self.register_buffer("token_targets", layout.token_targets, persistent=False)  # [S]

    @property
    def patch(self) -> tuple[int, int]:
        """``(bins, frames)`` of the mask axis one token covers (``assignment``'s grid cell)."""
        return self.config.patch_freq, self.config.patch_time

    @property
    def layout(self) -> TokenLayout:
        """The token layout, on the model's device."""
        return TokenLayout(tuple(self.classes), self.class_from_tokens, self.token_targets)

    def to_mask_axis(self, magnitude: torch.Tensor) -> torch.Tensor:
        """``[..., F, T]`` linear-frequency magnitudes -> ``[..., Fw, T]`` on the bins masks are predicted on."""
        return self.warp.warp(magnitude)

    def loss_batch(self, batch: dict) -> dict:
        """``batch``'s class ids and magnitudes, moved to the masks' axis, as the loss takes them."""
        return {"class_ids": batch["class_ids"], "mix_mag": self.to_mask_axis(batch["mix_mag"]),
                "source_mags": self.to_mask_axis(batch["source_mags"])}

    def linear_masks(self, out: SeparatorOutput, class_ids: torch.Tensor) -> torch.Tensor:
        """Masks in [0, 1] of the classes ``class_ids [B, N]`` on the linear STFT axis ``[B, N, F, T]``;
        padding (-1) gets an all-zero mask."""
        logits = out.mask_logits.float()
        index = class_ids.clamp_min(0)[:, :, None, None].expand(-1, -1, *logits.shape[-2:])  # [B, N, Fw, T]
        masks = self.warp.unwarp(torch.sigmoid(logits).gather(1, index))  # [B, N, F, T]
        return masks * (class_ids >= 0)[:, :, None, None]

    def estimate(self, mixture: torch.Tensor, class_ids: torch.Tensor) -> torch.Tensor:
        """Separate waveforms ``[B, L]`` into the classes ``class_ids [B, N]`` -> ``[B, N, L]`` (float32).

        The masks multiply the complex mixture spectrogram (its phase is reused, as in
        Sound-of-Pixels); padding (-1) gets a zero estimate. Call in eval mode.
        """
        spec = self.stft.stft(mixture.float())  # [B, F, T]
        masks = self.linear_masks(self(spec.abs()), class_ids)  # [B, N, F, T]
        return self.stft.istft(masks * spec[:, None], mixture.shape[-1])  # [B, N, L]

    def forward(self, mix_mag: torch.Tensor) -> SeparatorOutput:  # pragma: no cover - abstract
        raise NotImplementedError
