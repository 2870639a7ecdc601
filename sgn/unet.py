"""The label-conditioned U-Net baseline: Sound-of-Pixels' audio network, audio-only.

Sound-of-Pixels (Zhao et al., ECCV 2018) predicts a mask per source as a per-pixel
dot product between U-Net features of the mixture spectrogram and a visual feature
vector of the source's video. Here the vector is a learned embedding of the class
id: the audio-only analogue in which the label, not a grouped class token,
conditions the mask. It is trained by the same loop, data, loss and budget as SGN
(``model.arch=unet``), so the two are comparable.

Layers follow Sound-of-Pixels' ``Unet``: strided 4x4 convolutions down
(LeakyReLU 0.2, BatchNorm), bilinear upsampling and 3x3 convolutions up (ReLU,
BatchNorm), skip connections by concatenation; channels ``ngf * 2**min(level, 3)``.
"""

from __future__ import annotations

import torch
from torch import nn

from sgn.audio import log_magnitude
from sgn.config import ModelConfig
from sgn.interface import MaskSeparator, SeparatorOutput, TokenLayout, pad_time


class LabelConditionedUNet(MaskSeparator):
    """U-Net mask network conditioned on the class id.

    Args:
        config: ``stem_channels`` is the base width (``ngf``) and the feature size of
            the per-pixel dot product; ``unet_levels`` the number of down-samplings.
        classes: class names; output ``c`` is ``classes[c]``.
    """

    def __init__(self, config: ModelConfig, classes: list[str]):
        super().__init__(config, classes, TokenLayout.without_tokens(classes))
        ngf, levels = config.stem_channels, config.unet_levels
        if config.warped_bins % (2**levels):
            raise ValueError(f"model.warped_bins ({config.warped_bins}) must be a multiple of 2**unet_levels")
        self.input_norm = nn.BatchNorm2d(1)
        widths = [ngf * 2 ** min(i, 3) for i in range(levels)]  # channels after down-sampling i
        self.down = nn.ModuleList()
        in_ch = 1
        for i, out_ch in enumerate(widths):
            layers: list[nn.Module] = [] if i == 0 else [nn.LeakyReLU(0.2)]
            layers.append(nn.Conv2d(in_ch, out_ch, 4, stride=2, padding=1, bias=i in (0, levels - 1)))
            if 0 < i < levels - 1:
                layers.append(nn.BatchNorm2d(out_ch))
            self.down.append(nn.Sequential(*layers))
            in_ch = out_ch
        self.up = nn.ModuleList()
        for i in reversed(range(levels)):
            up_in = widths[i] if i == levels - 1 else 2 * widths[i]  # skip concatenation below the bottom
            up_out = ngf if i == 0 else widths[i - 1]
            layers = [nn.ReLU(), nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                      nn.Conv2d(up_in, up_out, 3, padding=1)]
            if i > 0:
                layers.append(nn.BatchNorm2d(up_out))
            self.up.append(nn.Sequential(*layers))
        self.class_embedding = nn.Embedding(len(classes), ngf + 1)  # weights and bias of the dot product

    def forward(self, mix_mag: torch.Tensor) -> SeparatorOutput:
        """``mix_mag [B, F, T]`` -> masks ``[B, C, Fw, T]``; the U-Net has no other head."""
        n_frames = mix_mag.shape[-1]
        x = log_magnitude(self.to_mask_axis(mix_mag))[:, None]  # [B, 1, Fw, T]
        x = pad_time(self.input_norm(x), 2**self.config.unet_levels)  # [B, 1, Fw, T']
        skips = []
        for down in self.down:
            x = down(x)
            skips.append(x)
        x = skips.pop()
        for up in self.up:
            x = up(x)
            if skips:
                x = torch.cat([skips.pop(), x], dim=1)
        pixel = x  # [B, ngf, Fw, T']
        weights = self.class_embedding.weight  # [C, ngf + 1]
        mask_logits = torch.einsum("cs,bsft->bcft", weights[:, :-1], pixel) + weights[:, -1, None, None]
        return SeparatorOutput(mask_logits=mask_logits[..., :n_frames])
