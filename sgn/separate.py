"""Separation with a trained model: batched for evaluation, and :class:`Separator` for users.

Both SGN and the U-Net baseline predict a mask per class on the warped frequency
axis. Here masks are unwarped to the linear STFT, applied to the complex mixture
spectrogram (the mixture's phase is reused, as in Sound-of-Pixels) and inverted.
"""

from __future__ import annotations

import logging
import os
from typing import Sequence

import numpy as np
import torch
from torch import nn

from sgn.audio import STFTSpec, check_audio, resample
from sgn.checkpoint import load_model
from sgn.utils import SGNError

log = logging.getLogger(__name__)


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; ``"cuda"`` without a GPU is an error."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SGNError("device: cuda requested but no CUDA GPU is available (use --device cpu or auto)")
    return device


def model_stft(model: nn.Module) -> STFTSpec:
    """The STFT a separator was trained with."""
    return STFTSpec(model.config.n_fft, model.config.hop)


def estimate_sources(model: nn.Module, mixture: torch.Tensor, class_ids: torch.Tensor) -> torch.Tensor:
    """Separate a batch of mixtures into the named classes.

    Args:
        model: SGN or the U-Net baseline, in eval mode.
        mixture: ``[B, L]`` waveforms.
        class_ids: ``[B, N]`` class ids to extract; ``-1`` marks padding (its estimate is zero).

    Returns:
        ``[B, N, L]`` estimated sources (float32).
    """
    stft = model_stft(model)
    spec = stft.stft(mixture.float())  # [B, F, T]
    out = model(spec.abs())
    ids = class_ids.clamp_min(0)
    index = ids[:, :, None, None].expand(-1, -1, *out["mask_logits"].shape[-2:])  # [B, N, Fw, T]
    masks = model.warp.unwarp(torch.sigmoid(out["mask_logits"].float()).gather(1, index))  # [B, N, F, T]
    masks = masks * (class_ids >= 0)[:, :, None, None]
    return stft.istft(masks * spec[:, None], mixture.shape[-1])  # [B, N, L]


class Separator:
    """Separate audio files or arrays with a trained checkpoint.

    Example::

        sep = Separator.from_checkpoint("runs/cpu/best.pt", device="auto")
        stems = sep.separate(mixture, sample_rate, classes=["violin", "flute"])

    Long inputs are processed in overlapping chunks of the training segment length,
    cross-faded with a Hann window (which sums to one at 50% overlap), so memory
    stays bounded whatever the input length.
    """

    presence_threshold = 0.5

    def __init__(self, model: nn.Module, sample_rate: int, chunk_samples: int, device: torch.device):
        self.model, self.sample_rate, self.chunk_samples, self.device = model, sample_rate, chunk_samples, device
        self.stft = model_stft(model)

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, device: str | torch.device = "auto") -> "Separator":
        device = resolve_device(device)
        model, config, _ = load_model(path, map_location=device)
        return cls(model, config.data.sample_rate, config.data.segment_samples, device)

    @property
    def classes(self) -> list[str]:
        return list(self.model.classes)

    def _class_ids(self, classes: Sequence[str]) -> list[int]:
        unknown = [c for c in classes if c not in self.classes]
        if unknown:
            raise SGNError(f"classes: unknown class {unknown[0]!r}; this model knows {self.classes}")
        if len(set(classes)) != len(classes):
            raise SGNError(f"classes: each class may be named once, got {list(classes)}")
        return [self.classes.index(c) for c in classes]

    def _padded_chunks(self, wave: np.ndarray) -> tuple[np.ndarray, range]:
        """Pad ``[L]`` by half a chunk each side (so every sample lies under two chunks) and
        to a whole number of hops; return the padded signal and the chunk start offsets."""
        size, hop = self.chunk_samples, self.chunk_samples // 2
        padded = np.pad(wave, (hop, hop + (-len(wave)) % hop))
        return padded, range(0, len(padded) - size + 1, hop)

    @torch.no_grad()
    def detect_classes(self, mixture: np.ndarray) -> list[str]:
        """Classes the presence head finds in ``mixture`` (mean probability over chunks)."""
        probs = []
        padded, starts = self._padded_chunks(mixture)
        for start in starts:
            chunk = padded[start : start + self.chunk_samples]
            spec = self.stft.stft(torch.from_numpy(chunk).to(self.device)[None])
            logits = self.model(spec.abs())["presence_logits"]
            if logits is None:
                raise SGNError(f"classes: this {self.model.config.arch} model has no presence head; name the classes")
            probs.append(torch.sigmoid(logits[0]).cpu())
        mean = torch.stack(probs).mean(0)
        found = [c for c, p in zip(self.classes, mean.tolist()) if p >= self.presence_threshold]
        return found or [self.classes[int(mean.argmax())]]

    @torch.no_grad()
    def separate(
        self, mixture: np.ndarray, sample_rate: int, classes: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]:
        """Separate one mixture.

        Args:
            mixture: ``[L]`` mono, or ``[channels, L]`` / ``[L, channels]`` (downmixed to mono).
            sample_rate: the mixture's rate; it is resampled to the model's and back.
            classes: class names to extract; ``None`` lets the presence head choose.

        Returns:
            ``{class: [L] float32 at sample_rate}``.
        """
        wave = np.asarray(mixture, dtype=np.float32)
        if wave.ndim == 2:
            if wave.shape[0] > wave.shape[1]:  # [L, channels] as soundfile returns it
                wave = wave.T
            log.info("downmixed %d channels to mono", wave.shape[0])
            wave = wave.mean(axis=0)
        if wave.ndim != 1:
            raise SGNError(f"mixture: expected [L] or [channels, L] samples, got shape {wave.shape}")
        if sample_rate <= 0:
            raise SGNError(f"sample_rate: expected a positive rate, got {sample_rate}")
        check_audio(wave, "mixture", min_samples=max(1, self.stft.n_fft * sample_rate // self.sample_rate))
        length = len(wave)
        wave = resample(wave, sample_rate, self.sample_rate)
        names = list(classes) if classes is not None else self.detect_classes(wave)
        ids = torch.tensor([self._class_ids(names)], device=self.device)  # [1, N]
        window = torch.hann_window(self.chunk_samples, periodic=True).numpy()
        padded, starts = self._padded_chunks(wave)
        out = np.zeros((len(names), len(padded)), dtype=np.float32)
        weight = np.zeros(len(padded), dtype=np.float32)
        for start in starts:
            chunk = torch.from_numpy(padded[start : start + self.chunk_samples]).to(self.device)[None]
            est = estimate_sources(self.model, chunk, ids)[0].cpu().numpy()  # [N, chunk]
            out[:, start : start + self.chunk_samples] += est * window
            weight[start : start + self.chunk_samples] += window
        hop = self.chunk_samples // 2
        stems = out[:, hop : hop + len(wave)] / np.maximum(weight[hop : hop + len(wave)], 1e-8)
        return {name: _fit_length(resample(stem, self.sample_rate, sample_rate), length)
                for name, stem in zip(names, stems)}


def _fit_length(wave: np.ndarray, length: int) -> np.ndarray:
    """Crop or zero-pad ``[L']`` to ``[length]`` (resampling there and back can be off by a sample)."""
    return wave[:length] if len(wave) >= length else np.pad(wave, (0, length - len(wave)))
