"""Decoding with ffmpeg: compressed audio (AAC in mp4, whatever YouTube serves) to float WAV.

ffmpeg only decodes here: it writes each requested audio stream, at its own sample
rate and channel count, as 32-bit float WAV (no clipping of decoded overshoots).
Down-mixing and resampling then happen in :func:`sgn.audio.load_audio` (soxr), as for
every other data set. The executable comes from the ``imageio-ffmpeg`` wheel (the
``data`` extra), or from ``IMAGEIO_FFMPEG_EXE`` if set.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Sequence

from sgn.utils import SGNError

TIMEOUT_S = 3600  # a full MUSDB18 track decodes in seconds; this only stops a hung process


def ffmpeg_exe() -> str:
    """Path of the ffmpeg executable.

    Raises:
        SGNError: imageio-ffmpeg is not installed and no ffmpeg is configured.
    """
    try:
        import imageio_ffmpeg
    except ImportError:
        raise SGNError("ffmpeg: not found; install the data extra: pip install 'sgn[data]'") from None
    try:
        return imageio_ffmpeg.get_ffmpeg_exe()
    except RuntimeError as err:
        raise SGNError(f"ffmpeg: {err}") from None


def audio_stream_count(path: str | os.PathLike) -> int:
    """Number of audio streams in a media file (0 if ffmpeg cannot read it)."""
    out = subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(path)], capture_output=True, text=True, timeout=60
    )
    # ffmpeg exits non-zero without an output file; the stream list is on stderr regardless.
    return len(re.findall(r"^\s*Stream #0:\d+.*?: Audio:", out.stderr, flags=re.MULTILINE))


def decode(src: str | os.PathLike, outs: Sequence[str | os.PathLike], streams: Sequence[int] | None = None) -> None:
    """Decode audio streams of ``src`` to float WAV files, in one ffmpeg run.

    Args:
        src: a media file ffmpeg reads.
        outs: one output ``.wav`` path per stream.
        streams: the audio stream numbers (``0:a:K``) to decode, one per output;
            ``None`` decodes the first audio stream into ``outs[0]``.

    Raises:
        SGNError: ffmpeg failed (the message carries its last line of output).
    """
    streams = list(streams) if streams is not None else [0]
    if len(streams) != len(outs):
        raise ValueError("decode: one output per stream")
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y", "-i", str(src)]
    for stream, out in zip(streams, outs):
        cmd += ["-map", f"0:a:{stream}", "-vn", "-c:a", "pcm_f32le", "-f", "wav", str(out)]
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise SGNError(f"{Path(src).name}: ffmpeg did not finish decoding in {TIMEOUT_S} s") from None
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise SGNError(f"{Path(src).name}: ffmpeg could not decode it ({last})")
