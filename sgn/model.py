"""The Semantic Grouping Network (Mo & Tian, arXiv 2407.03736, 2024).

One file, read top to bottom::

    mixture magnitude [B, F, T]
      -> log-frequency warp + log            [B, 1, Fw, T]
      -> conv stem and encoder_levels stride-2 conv levels (skip features)
      -> strided conv: time-frequency tokens f [B, P, D]
      -> [class tokens c ; f] through self-attention layers
      -> category-aware grouping: queries q_i = c_i + MLP(LN(c_i)),
         A = softmax_tokens(q W_q (LN(f) W_k)^T / sqrt(D))             [B, S, P],
         g_i = c_i + proj(sum_p A_ip v_p / (1 + sum_p A_ip)),
         g_i <- g_i + MLP(LN(g_i))                                      [B, S, D]
      -> per-class representation (mean of the class's K tokens)      [B, C, D]
      -> reconstruction: tokens upsampled through the levels, fused with the skip
         features -> per-pixel features h [B, S0, Fw, T];
         mask_i = sigmoid(<W g_i, h> + b(g_i))                         [B, C, Fw, T]
      -> token-classification head (CE) and class-presence head (BCE).

What the paper states: class tokens, one per class, aggregate category-wise source
features from the mixture through a similarity matrix; the grouped representations
guide a light reconstruction; the losses are cross-entropy and binary cross-entropy.
What is *inferred* (from the authors' earlier AVGN code, see the book's method
chapter): tokens share the self-attention layers with the feature tokens; the
grouping block is GroupViT-style (Xu et al., 2022) with an optional hard
straight-through Gumbel assignment; the CE classifies each grouped token as its own
class; the BCE is class presence; the mask decoder is Sound-of-Pixels' per-pixel dot
product (Zhao et al., 2018) with the class representation in place of the visual
vector.

Ours, not the paper's: trained as inferred above, the assignment ignores the sources
(on SynthMUSIC its agreement with the dominant source of each patch stays at chance,
see the book's grouping chapter). The shipped profiles therefore add an auxiliary loss,
``loss.assign_weight`` (:func:`sgn.loss.assignment_loss`): each patch's assignment
classifies it as the class whose reference dominates its energy. The model itself is
unchanged; ``loss.assign_weight=0`` trains the paper-as-inferred SGN (the ``paper``
variant of the ablations).

Ablation switches (``ModelConfig``): ``class_tokens=False`` (static learned queries
that never enter self-attention, and no CE), ``grouping=False`` (class
representations are the tokens' transformer outputs), ``tokens_per_class=K``,
``share_tokens=True`` (classes 2j and 2j+1 share one token).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from sgn.audio import log_magnitude
from sgn.config import ModelConfig
from sgn.interface import MaskSeparator, SeparatorOutput, TokenLayout, pad_time


def conv_block(in_channels: int, out_channels: int, kernel: int = 3, stride: int = 1) -> nn.Sequential:
    """Convolution, BatchNorm, GELU (Sound-of-Pixels normalises every convolution likewise)."""
    padding = (kernel - stride + 1) // 2
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, kernel, stride=stride, padding=padding, bias=False),
                         nn.BatchNorm2d(out_channels), nn.GELU())


def sinusoidal_embedding(positions: int, dim: int, device: torch.device) -> torch.Tensor:
    """Transformer sine/cosine position codes ``[positions, dim]`` (Vaswani et al., 2017)."""
    pos = torch.arange(positions, device=device, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    emb = torch.zeros(positions, dim, device=device)
    emb[:, 0::2] = torch.sin(pos * freq)
    emb[:, 1::2] = torch.cos(pos * freq)
    return emb


class MLP(nn.Module):
    def __init__(self, dim: int, ratio: float):
        super().__init__()
        hidden = int(dim * ratio)
        self.fc = nn.Linear(dim, hidden)
        self.proj = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(F.gelu(self.fc(x)))


class SelfAttentionBlock(nn.Module):
    """Pre-norm transformer layer: ``x + attn(LN(x))``, then ``x + mlp(LN(x))``."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MLP(dim, mlp_ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).split(d, dim=-1)  # each [B, n, D]
        q, k, v = (t.view(b, n, self.heads, d // self.heads).transpose(1, 2) for t in (q, k, v))  # [B, H, n, D/H]
        y = F.scaled_dot_product_attention(q, k, v)  # [B, H, n, D/H]
        x = x + self.proj(y.transpose(1, 2).reshape(b, n, d))
        return x + self.mlp(self.norm2(x))


class GroupingBlock(nn.Module):
    """Category-aware grouping: assign feature tokens to class tokens (GroupViT-style).

    The similarity matrix ``A`` (``[B, S, P]``) is a softmax over the *token* axis, so
    every time-frequency token distributes itself among the class tokens; each class
    token then gathers the features assigned to it, normalised by one plus its total
    mass (a token assigned nothing keeps its own value).
    With ``gumbel=True``, training adds Gumbel noise and uses the hard one-hot
    assignment with straight-through gradients; evaluation uses the hard argmax.
    """

    def __init__(self, dim: int, mlp_ratio: float, gumbel: bool, tau: float):
        super().__init__()
        self.gumbel, self.tau = gumbel, tau
        self.norm_tokens = nn.LayerNorm(dim)
        self.norm_features = nn.LayerNorm(dim)
        self.token_mlp = MLP(dim, mlp_ratio)  # prepares tokens as grouping queries
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)
        self.norm_out = nn.LayerNorm(dim)
        self.mlp = MLP(dim, mlp_ratio)

    def forward(self, tokens: torch.Tensor, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``tokens [B, S, D]``, ``features [B, P, D]`` -> ``(grouped [B, S, D], soft assignment [B, S, P])``."""
        queries = tokens + self.token_mlp(self.norm_tokens(tokens))
        feats = self.norm_features(features)
        logits = self.q(queries) @ self.k(feats).transpose(1, 2) / math.sqrt(tokens.shape[-1])  # [B, S, P]
        soft = logits.softmax(dim=1)
        if self.gumbel:
            if self.training:
                noise = -torch.empty_like(logits).exponential_().log()  # Gumbel(0, 1)
                soft_noisy = ((logits + noise) / self.tau).softmax(dim=1)
            else:
                soft_noisy = soft
            hard = F.one_hot(soft_noisy.argmax(dim=1), tokens.shape[1]).transpose(1, 2).to(soft.dtype)  # [B, S, P]
            assign = hard - soft_noisy.detach() + soft_noisy  # straight-through
        else:
            assign = soft
        gathered = assign @ self.v(feats) / (assign.sum(dim=-1, keepdim=True) + 1.0)  # [B, S, D]
        grouped = tokens + self.proj(gathered)
        return grouped + self.mlp(self.norm_out(grouped)), soft


class SGN(MaskSeparator):
    """Semantic Grouping Network: one mask per class from class-token grouping.

    Args:
        config: the architecture.
        classes: class names; output ``c`` of every per-class tensor is ``classes[c]``.
    """

    def __init__(self, config: ModelConfig, classes: list[str]):
        layout = TokenLayout.build(classes, config.tokens_per_class, config.share_tokens)
        super().__init__(config, classes, layout)
        d, s0 = config.width, config.stem_channels
        if config.warped_bins % config.patch_freq:
            raise ValueError(f"model.warped_bins ({config.warped_bins}) must be a multiple of model.patch_freq")
        self.input_norm = nn.BatchNorm2d(1)
        levels = config.encoder_levels
        scale = 2**levels
        if config.patch_freq % scale or config.patch_time % scale:
            raise ValueError(f"model.patch_freq and model.patch_time must be multiples of 2**encoder_levels ({scale})")
        widths = [s0 * 2**i for i in range(levels + 1)]  # channels at full resolution, /2, /4, ...
        self.stem = nn.Sequential(conv_block(1, s0), conv_block(s0, s0))
        # each level halves time and frequency (Sound-of-Pixels' 4x4 stride-2 convolutions)
        self.down = nn.ModuleList(
            nn.Sequential(conv_block(widths[i], widths[i + 1], 4, stride=2), conv_block(widths[i + 1], widths[i + 1]))
            for i in range(levels)
        )
        self.patchify = nn.Conv2d(widths[-1], d, kernel_size=(config.patch_freq // scale, config.patch_time // scale),
                                  stride=(config.patch_freq // scale, config.patch_time // scale))
        self.freq_embedding = nn.Parameter(torch.zeros(config.warped_bins // config.patch_freq, d))

        self.tokens = nn.Parameter(torch.randn(layout.n_tokens, d) * 0.02)  # c_i, [S, D]

        self.blocks = nn.ModuleList(SelfAttentionBlock(d, config.heads, config.mlp_ratio) for _ in range(config.depth))
        self.grouping = GroupingBlock(d, config.mlp_ratio, config.gumbel, config.gumbel_tau) if config.grouping else None
        self.norm = nn.LayerNorm(d)
        self.token_head = nn.Linear(d, int(layout.token_targets.max()) + 1)  # CE over token identities
        self.presence_head = nn.Linear(d, 1)  # BCE: is class c in the mixture?

        # reconstruction: tokens back to full resolution, fused with the encoder's features at every scale
        self.feature_up = nn.Conv2d(d, widths[-1], 1)
        self.up = nn.ModuleList(conv_block(2 * widths[i], widths[i - 1] if i else s0) for i in reversed(range(levels + 1)))
        self.mask_head = nn.Linear(d, s0 + 1)  # per-class weights and bias of the per-pixel dot product

    def forward(self, mix_mag: torch.Tensor) -> SeparatorOutput:
        """Args:
            mix_mag: linear mixture magnitude ``[B, F, T]``.

        Returns:
            every field of :class:`SeparatorOutput`; ``token_logits`` is None without class
            tokens, ``assignment`` (``[B, S, Fw/pf, T'/pt]``) None without grouping.
        """
        cfg = self.config
        n_frames = mix_mag.shape[-1]
        x = log_magnitude(self.to_mask_axis(mix_mag))[:, None]  # [B, 1, Fw, T]
        x = pad_time(self.input_norm(x), cfg.patch_time)  # [B, 1, Fw, T']
        skips = [self.stem(x)]  # [B, S0, Fw, T']
        for down in self.down:
            skips.append(down(skips[-1]))  # [B, S0 * 2^i, Fw / 2^i, T' / 2^i]
        grid = self.patchify(skips[-1])  # [B, D, Pf, Pt]
        b, d, pf, pt = grid.shape
        pos = self.freq_embedding[:, None, :] + sinusoidal_embedding(pt, d, grid.device)[None]  # [Pf, Pt, D]
        feats = grid.flatten(2).transpose(1, 2) + pos.reshape(pf * pt, d)  # [B, P, D]
        tokens = self.tokens.expand(b, -1, -1)  # [B, S, D]
        n_tokens = tokens.shape[1]

        if cfg.class_tokens:
            seq = torch.cat([tokens, feats], dim=1)  # [B, S + P, D]
            for block in self.blocks:
                seq = block(seq)
            tokens, feats = seq[:, :n_tokens], seq[:, n_tokens:]
        else:
            for block in self.blocks:
                feats = block(feats)

        assignment = None
        if self.grouping is not None:
            grouped, soft = self.grouping(tokens, feats)  # [B, S, D], [B, S, P]
            assignment = soft.reshape(b, n_tokens, pf, pt)
        else:
            grouped = tokens
        grouped = self.norm(grouped)
        class_rep = self.class_from_tokens @ grouped  # [B, C, D]

        pixel = self.feature_up(feats.transpose(1, 2).reshape(b, d, pf, pt))  # [B, S0 * 2^levels, Pf, Pt]
        for up, skip in zip(self.up, reversed(skips)):
            pixel = F.interpolate(pixel, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            pixel = up(torch.cat([skip, pixel], dim=1))  # [B, S0 * 2^(i-1), Fw / 2^i, T' / 2^i]
        # pixel: [B, S0, Fw, T'], the per-pixel features of the mask dot product
        weights = self.mask_head(class_rep)  # [B, C, S0 + 1]
        mask_logits = torch.einsum("bcs,bsft->bcft", weights[..., :-1], pixel) + weights[..., -1, None, None]
        return SeparatorOutput(
            mask_logits=mask_logits[..., :n_frames],  # [B, C, Fw, T]
            presence_logits=self.presence_head(class_rep).squeeze(-1),  # [B, C]
            token_logits=self.token_head(grouped) if cfg.class_tokens else None,  # [B, S, S_targets]
            assignment=assignment,
            patch=self.patch,
            class_rep=class_rep,
        )
