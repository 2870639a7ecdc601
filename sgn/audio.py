"""Signal handling: the one place that reads, writes, resamples and transforms audio.

Everything else in ``sgn`` calls these functions; nothing re-implements them.

* I/O with ``soundfile`` (WAV/FLAC/OGG/MP3 by file suffix), writes atomic; long files
  can be read block by block (:func:`audio_info`, :func:`read_audio_block`).
* Resampling with ``soxr`` (high quality, deterministic), whole signals (:func:`resample`)
  or block by block (:class:`StreamResampler`).
* Sample rates outside :data:`MIN_SAMPLE_RATE` .. :data:`MAX_SAMPLE_RATE` are refused
  wherever a rate enters (a corrupt header saying 1 Hz would otherwise be upsampled
  thousands of times).
* STFT / inverse STFT with ``torch.stft`` / ``torch.istft`` (Hann window, centred frames),
  described by :class:`STFTSpec`.
* The log-frequency warp of Sound-of-Pixels (Zhao et al., ECCV 2018) and its inverse,
  :class:`LogFrequencyWarp`: the network sees ``Fw`` log-spaced bins, evaluation
  unwarps masks back to the ``F`` linear bins.

torchaudio is deliberately not used: its Linux wheels on PyPI are CUDA builds that do
not import next to the CPU torch, and its I/O moved to TorchCodec.
"""

from __future__ import annotations

import io
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, NamedTuple

import numpy as np
import soundfile as sf
import soxr
import torch

from sgn.utils import SGNError, atomic_path, shorten

# A sample at or above this magnitude counts as clipped.
CLIP_LEVEL = 0.999
# Fraction of clipped samples above which a signal is called clipped (isolated peaks at
# full scale are normal in mastered audio; runs of them are not).
CLIPPED_FRACTION = 0.01
# Sample rates accepted anywhere (files, targets, index columns): telephone speech to
# high-resolution studio audio. Anything else is a corrupt header or a typo.
MIN_SAMPLE_RATE = 4000
MAX_SAMPLE_RATE = 192000


def check_rate(rate, name: str) -> int:
    """Return ``rate`` as an int, or raise :class:`SGNError` unless it is a whole number of Hz in range.

    Args:
        rate: the sample rate to check.
        name: what the rate belongs to (a file, a flag), named in the message.
    """
    if isinstance(rate, (float, np.floating)) and float(rate).is_integer():
        rate = int(rate)  # 11025.0 is a whole number of Hz
    whole = isinstance(rate, (int, np.integer)) and not isinstance(rate, bool)
    if not whole:
        raise SGNError(f"{name}: sample rate {shorten(rate)} is not a whole number of Hz; "
                       f"expected one in {MIN_SAMPLE_RATE}..{MAX_SAMPLE_RATE}")
    if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise SGNError(f"{name}: sample rate {shorten(rate)} Hz is out of range; "
                       f"expected {MIN_SAMPLE_RATE}..{MAX_SAMPLE_RATE}")
    return int(rate)


class AudioInfo(NamedTuple):
    """What a file's header says: length in samples per channel, rate in Hz, channel count."""

    frames: int
    sample_rate: int
    channels: int


def audio_info(path: str | os.PathLike) -> AudioInfo:
    """Read only the header of an audio file (cheap: no samples are decoded).

    Raises:
        SGNError: the file is missing, not readable audio, or at an unsupported rate.
    """
    path = Path(path)
    if not path.is_file():
        raise SGNError(f"{path}: audio file not found")
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, TypeError) as err:
        raise SGNError(f"{path}: not a readable audio file ({_reason(err)})") from None
    return AudioInfo(int(info.frames), check_rate(info.samplerate, str(path)), int(info.channels))


def read_audio_block(path: str | os.PathLike, start: int, frames: int, *, mono: bool = True) -> np.ndarray:
    """Read up to ``frames`` samples of ``path`` from sample ``start``, without reading the rest.

    For processing a long file in bounded memory: get its length with :func:`audio_info`,
    then read consecutive (or overlapping) blocks. The block is shorter than ``frames``
    where the file ends; ``start`` equal to the length gives an empty block.

    Returns:
        float32 ``[n]`` (mono: channels averaged) or ``[channels, n]``, ``n <= frames``.

    Raises:
        SGNError: unreadable file, unsupported rate, or ``start`` outside ``0 .. length``.
    """
    total = audio_info(path).frames
    if not 0 <= start <= total:
        raise SGNError(f"{path}: offset {shorten(start)} is past the end of the file ({total} samples)")
    if frames < 0:
        raise SGNError(f"{path}: cannot read {shorten(frames)} samples; expected a count >= 0")
    try:
        with sf.SoundFile(str(path)) as f:
            f.seek(start)
            block = f.read(min(frames, total - start), dtype="float32", always_2d=True).T  # [channels, n]
    except (sf.LibsndfileError, RuntimeError) as err:
        raise SGNError(f"{path}: not a readable audio file ({_reason(err)})") from None
    return np.ascontiguousarray(block.mean(axis=0) if mono else block, dtype=np.float32)


def _reason(err: Exception) -> str:
    """libsndfile's reason without the file name it repeats ("Error opening '...': Format not recognised.")."""
    reason = getattr(err, "error_string", None) or str(err)
    if "does not exist" in reason:  # libsndfile's words for an existing file it cannot decode (a junk .mp3)
        reason = "its contents are not audio in a format libsndfile decodes"
    return reason if len(reason) <= 80 else reason[:77] + "..."


def load_audio(
    path: str | os.PathLike, sample_rate: int | None = None, *, mono: bool = True
) -> tuple[np.ndarray, int]:
    """Read an audio file as float32.

    Args:
        path: any format ``soundfile`` reads.
        sample_rate: resample to this rate if given (soxr); ``None`` keeps the file's rate.
        mono: average the channels.

    Returns:
        ``(wave, sample_rate)`` with ``wave`` of shape ``[L]`` (mono) or ``[channels, L]``.

    Raises:
        SGNError: the file is missing, not readable audio, holds no samples, or either
            rate is outside :data:`MIN_SAMPLE_RATE` .. :data:`MAX_SAMPLE_RATE`.
    """
    path = Path(path)
    frames, file_rate, _ = audio_info(path)  # checks the rate before anything is decoded
    if sample_rate is not None:
        check_rate(sample_rate, f"{path}: target")
    if frames == 0:
        raise SGNError(f"{path}: 0 samples, expected at least 1")
    wave = read_audio_block(path, 0, frames, mono=mono)
    if sample_rate is not None and sample_rate != file_rate:
        wave = resample(wave, file_rate, sample_rate)
        file_rate = sample_rate
    return np.ascontiguousarray(wave, dtype=np.float32), int(file_rate)


def save_audio(
    path: str | os.PathLike, wave: np.ndarray, sample_rate: int, *, subtype: str | None = None
) -> Path:
    """Write ``wave`` (``[L]`` or ``[channels, L]``, float in [-1, 1]) atomically.

    The format follows the suffix (``.wav`` is 16-bit PCM unless ``subtype`` says
    otherwise; ``.ogg`` is Vorbis; ``.mp3`` is MPEG layer III).

    Raises:
        SGNError: the signal holds NaN/Inf or exceeds full scale (it would clip).
    """
    path = Path(path)
    wave = np.asarray(wave, dtype=np.float32)
    if not np.all(np.isfinite(wave)):
        raise SGNError(f"{path}: refusing to write audio containing NaN or Inf")
    peak = float(np.abs(wave).max()) if wave.size else 0.0
    if peak > 1.0:
        raise SGNError(f"{path}: peak {peak:.3f} exceeds full scale; scale the signal before saving")
    data = wave.T if wave.ndim == 2 else wave
    fmt = {".wav": "WAV", ".flac": "FLAC", ".ogg": "OGG", ".mp3": "MP3"}.get(path.suffix.lower())
    if fmt is None:
        raise SGNError(f"{path}: unsupported audio suffix (expected .wav, .flac, .ogg or .mp3)")
    if subtype is None:
        subtype = {"WAV": "PCM_16", "FLAC": "PCM_16", "OGG": "VORBIS", "MP3": "MPEG_LAYER_III"}[fmt]
    with atomic_path(path) as tmp:
        sf.write(str(tmp), data, sample_rate, format=fmt, subtype=subtype)
    return path


def encode_audio(wave: np.ndarray, sample_rate: int, fmt: str = "OGG") -> bytes:
    """Encode ``[L]`` float audio in memory (OGG/Vorbis by default, for players in the book)."""
    wave = np.asarray(wave, dtype=np.float32)
    peak = float(np.abs(wave).max()) if wave.size else 0.0
    if not np.isfinite(peak):
        raise SGNError("encode_audio: signal contains NaN or Inf")
    buffer = io.BytesIO()
    subtype = {"OGG": "VORBIS", "MP3": "MPEG_LAYER_III", "WAV": "PCM_16", "FLAC": "PCM_16"}[fmt]
    sf.write(buffer, wave / max(1.0, peak), sample_rate, format=fmt, subtype=subtype)
    return buffer.getvalue()


def resample(wave: np.ndarray, orig_rate: int, target_rate: int) -> np.ndarray:
    """Resample along the last axis with soxr (``[L]`` or ``[channels, L]``); rates are checked."""
    check_rate(orig_rate, "resample: input")
    check_rate(target_rate, "resample: output")
    if orig_rate == target_rate:
        return np.asarray(wave, dtype=np.float32)
    wave = np.asarray(wave, dtype=np.float32)
    # soxr wants [L] or [L, channels].
    out = soxr.resample(wave.T, orig_rate, target_rate, quality="HQ")
    return np.ascontiguousarray(out.T, dtype=np.float32)


class StreamResampler:
    """Resample a long signal block by block, with the same output as one :func:`resample` call.

    soxr's ``ResampleStream`` keeps its filter state between blocks, so block edges leave
    no trace; it holds back a few samples (its filter delay) until ``last=True``.

    Example::

        stream = StreamResampler(44100, 11025, channels=1)
        out = [stream.process(read_audio_block(path, s, n), last=s + n >= total) for s in starts]

    Args:
        orig_rate, target_rate: in Hz, each within :data:`MIN_SAMPLE_RATE` .. :data:`MAX_SAMPLE_RATE`.
        channels: 1 for ``[n]`` blocks, ``C`` for ``[C, n]`` blocks.
    """

    def __init__(self, orig_rate: int, target_rate: int, channels: int = 1):
        check_rate(orig_rate, "resample: input")
        check_rate(target_rate, "resample: output")
        self.channels = channels
        self._stream = soxr.ResampleStream(orig_rate, target_rate, channels, dtype="float32", quality="HQ")

    def process(self, block: np.ndarray, last: bool = False) -> np.ndarray:
        """Resample the next block (``[n]`` or ``[channels, n]``); ``last=True`` flushes the tail."""
        block = np.asarray(block, dtype=np.float32)
        if block.shape[:-1] != (self.channels,) and not (block.ndim == 1 and self.channels == 1):
            raise SGNError(f"resample: block of shape {block.shape}, expected [{self.channels}, n] or [n] for mono")
        out = self._stream.resample_chunk(np.ascontiguousarray(block.T), last=last)  # soxr: [n] or [n, C]
        return np.ascontiguousarray(out.T, dtype=np.float32)


def check_audio(
    wave: np.ndarray,
    name: str,
    *,
    min_samples: int = 1,
    allow_silent: bool = False,
    allow_clipped: bool = True,
) -> np.ndarray:
    """Validate a waveform and return it; raise one clear :class:`SGNError` otherwise.

    Args:
        wave: ``[L]`` or ``[channels, L]``.
        name: what to call the signal in the message (usually its file name).
        min_samples: the shortest acceptable length.
        allow_silent: accept an all-zero signal.
        allow_clipped: accept a signal with more than 1% of samples at full scale.
    """
    wave = np.asarray(wave)
    length = wave.shape[-1] if wave.ndim else 0
    if length < min_samples:
        raise SGNError(f"{name}: {length} samples, expected at least {min_samples}")
    if not np.all(np.isfinite(wave)):
        raise SGNError(f"{name}: contains NaN or Inf samples")
    if not allow_silent and not np.any(wave):
        raise SGNError(f"{name}: audio is silent (all samples are zero)")
    if not allow_clipped:
        clipped = float(np.mean(np.abs(wave) >= CLIP_LEVEL))
        if clipped > CLIPPED_FRACTION:
            raise SGNError(f"{name}: audio is clipped ({clipped:.1%} of samples at full scale)")
    return wave


@dataclass(frozen=True)
class STFTSpec:
    """One STFT configuration: Hann window of ``n_fft`` samples, hop ``hop``, centred frames.

    The Sound-of-Pixels MUSIC setting is ``n_fft=1022, hop=256``: 512 bins, and 256
    frames for a 65535-sample clip.
    """

    n_fft: int = 1022
    hop: int = 256

    @property
    def n_bins(self) -> int:
        """``F``, the number of linear frequency bins."""
        return self.n_fft // 2 + 1

    def n_frames(self, n_samples: int) -> int:
        """``T`` for a waveform of ``n_samples`` samples (centred frames)."""
        return n_samples // self.hop + 1

    def _window(self, like: torch.Tensor) -> torch.Tensor:
        dtype = like.real.dtype if like.is_complex() else like.dtype
        return torch.hann_window(self.n_fft, device=like.device, dtype=dtype)

    def stft(self, wave: torch.Tensor) -> torch.Tensor:
        """Complex STFT: ``[..., L]`` -> ``[..., F, T]``."""
        lead = wave.shape[:-1]
        flat = wave.reshape(-1, wave.shape[-1])  # [B', L]
        spec = torch.stft(
            flat, self.n_fft, self.hop, window=self._window(flat), center=True, return_complex=True
        )  # [B', F, T]
        return spec.reshape(*lead, *spec.shape[-2:])

    def istft(self, spec: torch.Tensor, length: int) -> torch.Tensor:
        """Inverse STFT: ``[..., F, T]`` -> ``[..., L]`` with ``L = length``."""
        lead = spec.shape[:-2]
        flat = spec.reshape(-1, *spec.shape[-2:])  # [B', F, T]
        wave = torch.istft(
            flat, self.n_fft, self.hop, window=self._window(flat), center=True, length=length
        )  # [B', L]
        return wave.reshape(*lead, length)


def log_magnitude(magnitude: torch.Tensor, floor: float = 1e-10) -> torch.Tensor:
    """Natural log of a magnitude spectrogram, floored so silence stays finite."""
    return torch.log(magnitude.clamp_min(floor))


class LogFrequencyWarp(torch.nn.Module):
    """Resample the frequency axis between ``F`` linear and ``Fw`` log-spaced bins.

    Sound-of-Pixels (Zhao et al., 2018) warps the 512-bin magnitude to 256 bins with
    ``grid_sample`` on the grid ``y = (21 ** ((u + 1) / 2) - 11) / 10`` (``u`` uniform
    in [-1, 1]); masks predicted on the warped axis are unwarped with the inverse map
    ``u = 2 log(10 y + 11) / log(21) - 1``. The time axis is untouched, so the 2-D
    bilinear ``grid_sample`` reduces to linear interpolation along frequency, which is
    what this module does (for any leading shape).

    Args:
        n_linear: ``F``, linear STFT bins.
        n_warped: ``Fw``, bins after the warp.
    """

    BASE = 21.0

    def __init__(self, n_linear: int, n_warped: int):
        super().__init__()
        self.n_linear, self.n_warped = n_linear, n_warped
        u = np.linspace(-1.0, 1.0, n_warped)
        warp_pos = (self.BASE ** ((u + 1) / 2) - 11) / 10  # in [-1, 1], log-spaced
        v = np.linspace(-1.0, 1.0, n_linear)
        unwarp_pos = np.log(v * 10 + 11) / math.log(self.BASE) * 2 - 1
        for name, pos, n_source in (("warp", warp_pos, n_linear), ("unwarp", unwarp_pos, n_warped)):
            index, weight = self._interpolation(pos, n_source)
            self.register_buffer(f"{name}_index", index, persistent=False)
            self.register_buffer(f"{name}_weight", weight, persistent=False)

    @staticmethod
    def _interpolation(pos: np.ndarray, n_source: int) -> tuple[torch.Tensor, torch.Tensor]:
        # align_corners=True convention: -1 and 1 are the centres of the first and last bins.
        x = (pos + 1) / 2 * (n_source - 1)
        lower = np.clip(np.floor(x), 0, n_source - 2).astype(np.int64)
        weight = np.clip(x - lower, 0.0, 1.0)
        return torch.from_numpy(lower), torch.from_numpy(weight).float()

    @staticmethod
    def _interpolate(x: torch.Tensor, lower: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        w = weight.to(x.dtype)[:, None]  # [F_out, 1]
        return x[..., lower, :] * (1 - w) + x[..., lower + 1, :] * w

    def warp(self, x: torch.Tensor) -> torch.Tensor:
        """``[..., F, T]`` -> ``[..., Fw, T]``."""
        return self._interpolate(x, self.warp_index, self.warp_weight)

    def unwarp(self, x: torch.Tensor) -> torch.Tensor:
        """``[..., Fw, T]`` -> ``[..., F, T]``."""
        return self._interpolate(x, self.unwarp_index, self.unwarp_weight)


def read_blocks(path: str | os.PathLike, block_frames: int) -> Iterator[np.ndarray]:
    """A file's audio as consecutive mono float32 blocks of ``block_frames`` samples (the last may
    be shorter): a long file is never held in memory whole. Non-finite samples are an error."""
    total = audio_info(path).frames
    for start in range(0, total, block_frames):
        block = read_audio_block(path, start, block_frames)
        if not np.all(np.isfinite(block)):
            raise SGNError(f"{path}: contains NaN or Inf samples (from sample {start})")
        yield block


def resample_blocks(blocks: Iterable[np.ndarray], orig_rate: int, target_rate: int) -> Iterator[np.ndarray]:
    """:class:`StreamResampler` over a stream of ``[n]`` or ``[channels, n]`` blocks: the
    concatenated output equals :func:`resample` of the concatenated input."""
    stream = None
    for block in blocks:
        if orig_rate == target_rate:
            yield np.asarray(block, dtype=np.float32)
            continue
        if stream is None:
            stream = StreamResampler(orig_rate, target_rate, 1 if np.ndim(block) == 1 else len(block))
            channels = () if np.ndim(block) == 1 else (len(block),)
        yield stream.process(block)
    if stream is not None:
        yield stream.process(np.zeros((*channels, 0), np.float32), last=True)
