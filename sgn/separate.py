"""Separation for users: :class:`Separator` on arrays and files, streamed.

The model separates a batch (:meth:`sgn.interface.MaskSeparator.estimate`: its masks on
the complex mixture spectrogram, the mixture's phase reused, its own STFT); this module
feeds it audio of any length, rate and channel count, and writes the stems.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import soundfile as sf
import torch

from sgn import __version__
from sgn.audio import audio_info, check_audio, check_rate, read_blocks, resample_blocks
from sgn.checkpoint import load_model
from sgn.device import resolve_device
from sgn.interface import MaskSeparator
from sgn.utils import (SGNError, atomic_write_text, check_output, check_path, child_path, remove_stale_staging,
                       shorten)

log = logging.getLogger(__name__)


# Written last into a separation's output folder: stems it does not list are from a
# run that did not finish.
SEPARATION_RECORD = "separation.json"
# A 2-D array with at most this many columns (and more rows) is read as [L, channels].
MAX_CHANNELS = 8


class Separator:
    """Separate audio files or arrays with a trained checkpoint.

    Example::

        sep = Separator.from_checkpoint("runs/cpu/best.pt", device="auto")
        stems = sep.separate(mixture, sample_rate, classes=["violin", "flute"])
        paths = sep.separate_file("song.wav", "stems/", classes=["violin"])

    The input is streamed: read (files) and resampled block by block, processed in
    overlapping chunks of the training segment length, cross-faded with a Hann window
    (which sums to one at 50% overlap) and resampled back, so memory stays bounded
    whatever the input length.
    """

    block_seconds = 4.0  # input read and resampled in blocks of this length

    def __init__(self, model: MaskSeparator, sample_rate: int, chunk_samples: int, device: torch.device,
                 presence_threshold: float = 0.5):
        self.model, self.sample_rate, self.chunk_samples, self.device = model, sample_rate, chunk_samples, device
        self.stft = model.stft
        self.presence_threshold = presence_threshold  # the run's, chosen on its validation list

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, device: str | torch.device = "auto") -> "Separator":
        if not isinstance(path, (str, os.PathLike)):
            raise SGNError(f"checkpoint: expected a file path, got {shorten(path)}")
        device = resolve_device(device)
        model, config, state = load_model(path, map_location=device)
        return cls(model, config.data.sample_rate, config.data.segment_samples, device,
                   state.get("presence_threshold", 0.5))

    @property
    def classes(self) -> list[str]:
        return list(self.model.classes)

    def check_classes(self, classes: str | Sequence[str]) -> list[str]:
        """The requested classes as a list (one name may be given as a string); one SGNError
        for an empty request, a repeated name or a class this model does not know."""
        if isinstance(classes, bytes) or not isinstance(classes, (str, Sequence)):
            raise SGNError(f"classes: expected a class name or a list of them, got {shorten(classes)}")
        names = [classes] if isinstance(classes, str) else list(classes)
        if not names:
            raise SGNError(f"classes: name at least one class; this model knows {self.classes}")
        unknown = [c for c in names if c not in self.classes]
        if unknown:
            raise SGNError(f"classes: unknown class {shorten(unknown[0])}; this model knows {self.classes}")
        if len(set(names)) != len(names):
            raise SGNError(f"classes: each class may be named once, got {shorten(names)}")
        return names

    def _chunks(self, blocks: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """The chunks of a ``[L]`` stream at the model's rate, padded by half a chunk each
        side (so every sample lies under two chunks) and to a whole number of hops."""
        size, hop = self.chunk_samples, self.chunk_samples // 2
        buffer, total = np.zeros(hop, np.float32), 0
        for block in itertools.chain(blocks, [None]):
            tail = np.zeros(hop + (-total) % hop, np.float32) if block is None else block
            total += 0 if block is None else len(block)
            buffer = np.concatenate([buffer, tail])
            while len(buffer) >= size:
                yield buffer[:size]
                buffer = buffer[hop:]

    @torch.no_grad()
    def _detect(self, chunks: Iterable[np.ndarray]) -> list[str]:
        probs = []
        for chunk in chunks:
            spec = self.stft.stft(torch.from_numpy(chunk).to(self.device)[None])
            logits = self.model(spec.abs()).presence_logits
            if logits is None:
                raise SGNError(f"classes: this {self.model.config.arch} model has no presence head; name the classes")
            probs.append(torch.sigmoid(logits[0]).cpu())
        mean = torch.stack(probs).mean(0)
        found = [c for c, p in zip(self.classes, mean.tolist()) if p >= self.presence_threshold]
        return found or [self.classes[int(mean.argmax())]]

    def detect_classes(self, mixture: np.ndarray) -> list[str]:
        """Classes the presence head finds in ``mixture`` (``[L]`` at the model's rate; mean
        probability over chunks)."""
        return self._detect(self._chunks([np.asarray(mixture, np.float32)]))

    @torch.no_grad()
    def _overlap_add(self, chunks: Iterable[np.ndarray], ids: torch.Tensor) -> Iterator[np.ndarray]:
        """Estimates ``[N, n]`` of consecutive stretches of the padded signal, each yielded
        as soon as no later chunk overlaps it."""
        size, hop = self.chunk_samples, self.chunk_samples // 2
        window = torch.hann_window(size, periodic=True).numpy()
        out, weight = np.zeros((ids.shape[1], size), np.float32), np.zeros(size, np.float32)
        for chunk in chunks:
            est = self.model.estimate(torch.from_numpy(chunk).to(self.device)[None], ids)[0]
            out += est.cpu().numpy() * window
            weight += window
            yield out[:, :hop] / np.maximum(weight[:hop], 1e-8)
            out = np.concatenate([out[:, hop:], np.zeros_like(out[:, :hop])], axis=1)
            weight = np.concatenate([weight[hop:], np.zeros_like(weight[:hop])])
        yield out[:, : size - hop] / np.maximum(weight[: size - hop], 1e-8)

    def _stream(self, open_blocks: Callable[[], Iterator[np.ndarray]], rate: int, length: int,
                classes: str | Sequence[str] | None) -> tuple[list[str], Iterator[np.ndarray]]:
        """Classes and a stream of ``[N, n]`` estimate blocks at ``rate``, ``length`` samples in
        all. ``open_blocks`` starts a fresh pass over the mono input (detection needs its own)."""
        read = [0]  # model-rate samples read so far; the whole input once it is exhausted

        def model_rate_chunks():
            read[0] = 0
            for block in resample_blocks(open_blocks(), rate, self.sample_rate):
                read[0] += len(block)
                yield block

        names = self.check_classes(classes) if classes is not None else self._detect(self._chunks(model_rate_chunks()))
        ids = torch.tensor([[self.classes.index(c) for c in names]], device=self.device)  # [1, N]
        estimates = _crop(self._overlap_add(self._chunks(model_rate_chunks()), ids), self.chunk_samples // 2)
        # the chunks read ahead of the estimates, so read[0] bounds every block before it is final
        estimates = _fit_length(estimates, lambda: read[0], len(names))
        return names, _fit_length(resample_blocks(estimates, self.sample_rate, rate), lambda: length, len(names))

    def separate(
        self, mixture: np.ndarray, sample_rate: int, classes: str | Sequence[str] | None = None
    ) -> dict[str, np.ndarray]:
        """Separate one mixture held in memory.

        Args:
            mixture: ``[L]`` mono, or ``[channels, L]`` / ``[L, channels]`` (downmixed to mono).
            sample_rate: the mixture's rate; it is resampled to the model's and back.
            classes: class names to extract (or one name); ``None`` lets the presence head choose.

        Returns:
            ``{class: [L] float32 at sample_rate}``.
        """
        wave = _mono(mixture)
        sample_rate = check_rate(sample_rate, "sample_rate")
        check_audio(wave, "mixture", min_samples=self._min_samples(sample_rate))
        block = round(self.block_seconds * sample_rate)
        names, stream = self._stream(lambda: (wave[i : i + block] for i in range(0, len(wave), block)),
                                     sample_rate, len(wave), classes)
        stems = np.concatenate(list(stream), axis=1)
        return dict(zip(names, stems))

    def _min_samples(self, sample_rate: int) -> int:
        return max(1, self.stft.n_fft * sample_rate // self.sample_rate)

    def separate_file(self, path: str | os.PathLike, out_dir: str | os.PathLike,
                      classes: str | Sequence[str] | None = None, *, overwrite: bool = False) -> dict[str, Path]:
        """Separate an audio file into ``out_dir/<class>.wav`` (16-bit, the file's rate), streaming.

        Stems are written into a staging folder and moved into ``out_dir`` together, then
        ``out_dir/separation.json`` is written last and lists them: stems it does not list
        are from an interrupted run. Existing files are never replaced unless ``overwrite``;
        the input itself never.

        Returns:
            ``{class: path}``.
        """
        path = check_path(path, "mixture")
        out_dir = check_output(check_path(out_dir, "out_dir"), kind="dir", inputs=[path])
        frames, rate, _ = audio_info(path)
        if frames < self._min_samples(rate):
            raise SGNError(f"{path}: {frames} samples, expected at least {self._min_samples(rate)}")
        block = round(self.block_seconds * rate)
        names, stream = self._stream(lambda: _not_silent(read_blocks(path, block), path), rate, frames, classes)
        record = out_dir / SEPARATION_RECORD
        targets = {name: child_path(out_dir, f"{name}.wav") for name in names}
        _check_targets([*targets.values(), record], path, overwrite)
        out_dir.mkdir(parents=True, exist_ok=True)
        remove_stale_staging(record)
        staging = Path(tempfile.mkdtemp(prefix=f".{record.name}.partial-{os.getpid()}-", dir=out_dir))
        try:
            staged = _write_stems(stream, names, rate, staging, path)
            record.unlink(missing_ok=True)  # the stems below are not the old record's
            for name, target in targets.items():
                os.replace(staged[name], target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        atomic_write_text(record, json.dumps({
            "input": str(path.resolve()), "classes": names, "sample_rate": rate, "frames": frames,
            "stems": {name: target.name for name, target in targets.items()}, "sgn_version": __version__,
        }, indent=2) + "\n")
        for target in targets.values():
            log.info("wrote %s", target)
        return targets


def _check_targets(targets: Sequence[Path], source: Path, overwrite: bool) -> None:
    """Refuse to write over the input, or over existing files unless ``overwrite``."""
    for target in targets:
        if target.exists() and os.path.samefile(target, source):
            raise SGNError(f"{target}: is the input file; choose another --out folder")
        if target.exists() and not overwrite:
            raise SGNError(f"{target}: exists and this run did not make it; pass --overwrite to replace it")


def _write_stems(stream: Iterator[np.ndarray], names: Sequence[str], rate: int, staging: Path,
                 source: Path) -> dict[str, Path]:
    """Write ``[N, n]`` blocks as one 16-bit WAV per class in ``staging``, each scaled by its own
    peak where masks pushed it past full scale (a float pass first, then the 16-bit copy)."""
    # staging names by position: no two classes can share one (class "a.f32" and class "a")
    floats = {name: staging / f"float-{i}.wav" for i, name in enumerate(names)}
    peaks = np.zeros(len(names))
    writers = [sf.SoundFile(str(floats[n]), "w", rate, 1, subtype="FLOAT") for n in names]
    try:
        for block in stream:
            peaks = np.maximum(peaks, np.abs(block).max(axis=1, initial=0.0))
            for writer, stem in zip(writers, block):
                writer.write(stem)
    finally:
        for writer in writers:
            writer.close()
    final = {}
    for i, (name, peak) in enumerate(zip(names, peaks)):
        final[name] = staging / f"pcm-{i}.wav"
        scale = 1.0 / max(1.0, peak / 0.999)  # scale rather than clip
        with sf.SoundFile(str(final[name]), "w", rate, 1, subtype="PCM_16") as out:
            for part in sf.blocks(str(floats[name]), blocksize=1 << 18, dtype="float32"):
                out.write(part * scale)
    return final


def _mono(mixture: Any) -> np.ndarray:
    """``[L]``, ``[channels, L]`` or ``[L, channels]`` numbers as ``[L]`` float32 (channels averaged)."""
    wave = np.asarray(mixture)
    if wave.dtype.kind not in "biuf":
        raise SGNError(f"mixture: expected an array of real numbers (audio samples), got dtype {wave.dtype}")
    wave = wave.astype(np.float32, copy=False)
    if wave.ndim == 2:
        channel_axis = 1 if wave.shape[0] > wave.shape[1] else 0  # soundfile reads [L, channels]
        if wave.shape[channel_axis] > MAX_CHANNELS:
            raise SGNError(f"mixture: shape {wave.shape} has {wave.shape[channel_axis]} channels; "
                           f"expected [L] or [channels, L] with at most {MAX_CHANNELS} channels")
        log.info("downmixed %d channels to mono", wave.shape[channel_axis])
        wave = wave.mean(axis=channel_axis) if wave.size else np.zeros(0, np.float32)
    if wave.ndim != 1:
        raise SGNError(f"mixture: expected [L] or [channels, L] samples, got shape {wave.shape}")
    return wave


def _not_silent(blocks: Iterable[np.ndarray], source: Path) -> Iterator[np.ndarray]:
    """Pass a stream through; at its end, an SGNError if every sample was zero."""
    heard = False
    for block in blocks:
        heard = heard or bool(np.any(block))
        yield block
    if not heard:
        raise SGNError(f"{source}: audio is silent (all samples are zero)")


def _crop(blocks: Iterable[np.ndarray], skip: int) -> Iterator[np.ndarray]:
    """Drop the first ``skip`` samples of a stream of ``[N, n]`` blocks."""
    for block in blocks:
        cut = min(skip, block.shape[1])
        skip -= cut
        if block.shape[1] > cut:
            yield block[:, cut:]


def _fit_length(blocks: Iterable[np.ndarray], length: Callable[[], int], channels: int) -> Iterator[np.ndarray]:
    """A stream of ``[N, n]`` blocks cut or zero-padded to ``length()`` samples in all (the
    chunk padding overshoots; resampling there and back can fall a sample short)."""
    done = 0
    for block in blocks:
        block = block[:, : length() - done]
        done += block.shape[1]
        if block.shape[1]:
            yield block
    if done < length():
        yield np.zeros((channels, length() - done), np.float32)
