"""MUSDB18 (Rafii et al., 2017): 150 music tracks with drums, bass, other and vocals stems.

Sources:

* ``full`` (default): ``musdb18.zip`` from Zenodo record 1117372 (4,684,228,845 bytes,
  md5 ``af06762477334799bfc5abf237648207``); 100 train and 50 test tracks.
* ``preview``: ``MUSDB18-7-STEMS.zip`` from the sigsep-mus-db GitHub release v0.4.0,
  7-second excerpts of the same tracks (what ``musdb.DB(download=True)`` fetches).

Both hold ``train/`` and ``test/`` folders of ``<track>.stem.mp4`` STEMS files: an mp4
with five AAC streams, in this order: mixture, drums, bass, other, vocals (44.1 kHz
stereo). Each stream is decoded with ffmpeg, mixed to mono and resampled; the five
signals are cut into clips of ``--clip-seconds`` (the tail shorter than a clip is
dropped) and scaled by one gain per track where decoding overshot full scale.

Classes are the four stems; each stem clip is a source clip. The mixture clip is
written too and named in the ``mixture`` column, so the real mix of the same excerpt
is at hand for evaluation. A silent stem clip (an instrumental passage's vocals, for
example) is left out of the index.

Splits: ``test/`` -> ``test``; ``train/`` -> ``train``, except the 14 tracks musdb
itself sets aside for validation (:data:`VALIDATION_TRACKS`) -> ``val``.

Prepared layout in ``ROOT/musdb18[_preview]/``::

    index.csv       one row per stem clip; extra columns: track, segment, offset_s, mixture
    prepare.json    settings, archive URL and checksum, counts
    <split>/<track>/<NNN>/mixture.wav, drums.wav, bass.wav, other.wav, vocals.wav
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from sgn.audio import load_audio, save_audio
from sgn.download import zenodo
from sgn.download.base import Archive, ArchiveDataSet
from sgn.download.ffmpeg import audio_stream_count, decode, ffmpeg_exe
from sgn.download.prepare import Options, cut, headroom, is_silent
from sgn.utils import SGNError

# Stream order of a STEMS file (musdb's ``stem_ids``).
STREAMS = ("mixture", "drums", "bass", "other", "vocals")
# The validation tracks of musdb's configs/mus.yaml (all in train/).
VALIDATION_TRACKS = frozenset({
    "Actions - One Minute Smile",
    "Clara Berry And Wooldog - Waltz For My Victims",
    "Johnny Lokke - Promises & Lies",
    "Patrick Talbot - A Reason To Leave",
    "Triviul - Angelsaint",
    "Alexander Ross - Goodbye Bolero",
    "Fergessen - Nos Palpitants",
    "Leaf - Summerghost",
    "Skelpolu - Human Mistakes",
    "Young Griffo - Pennies",
    "ANiMAL - Rockshow",
    "James May - On The Line",
    "Meaxic - Take A Step",
    "Traffic Experiment - Sirens",
})
SUFFIX = ".stem.mp4"


ARCHIVES = {
    "full": Archive("musdb18.zip", zenodo.file_url(1117372, "musdb18.zip"), 4_684_228_845, 1117372),
    "preview": Archive(
        "MUSDB18-7-STEMS.zip",
        "https://github.com/sigsep/sigsep-mus-db/releases/download/v0.4.0/MUSDB18-7-STEMS.zip",
        147_209_385,
    ),
}


def track_split(split_folder: str, track: str) -> str:
    """The index split of a track in ``train/`` or ``test/``."""
    if split_folder == "test":
        return "test"
    return "val" if track in VALIDATION_TRACKS else "train"


class Musdb18(ArchiveDataSet):
    name = "musdb18"
    subsets = ("full", "preview")
    default_subsets = ("full",)
    archives = ARCHIVES
    folders = {"full": "musdb18", "preview": "musdb18_preview"}
    unit = "track"

    def check_tools(self) -> None:
        ffmpeg_exe()  # decodes the STEMS files

    def settings(self, opts: Options) -> dict:
        return {**super().settings(opts), "clip_seconds": opts.clip_seconds}

    def items(self, raw: Path, archive: Path) -> list[Path]:
        tracks = sorted(p for p in raw.rglob(f"*{SUFFIX}") if p.parent.name in ("train", "test"))
        if not tracks:
            raise SGNError(f"{archive}: no train/ or test/ {SUFFIX} files inside; is it a MUSDB18 archive?")
        return tracks

    def prepare_item(self, stem_file: Path, out: Path, opts: Options) -> tuple[list[dict], int]:
        """Decode, resample and cut one STEMS file; return its index rows and its number of silent stem clips."""
        track = stem_file.name[: -len(SUFFIX)]
        split = track_split(stem_file.parent.name, track)
        streams = audio_stream_count(stem_file)
        if streams != len(STREAMS):
            raise SGNError(f"{stem_file.name}: {streams} audio streams; a STEMS file has {len(STREAMS)} "
                           f"({', '.join(STREAMS)})")
        with tempfile.TemporaryDirectory(dir=out) as scratch:
            decoded = [Path(scratch) / f"{stream}.wav" for stream in STREAMS]
            decode(stem_file, decoded, streams=range(len(STREAMS)))
            waves = [load_audio(path, opts.sample_rate)[0] for path in decoded]
        length = min(len(w) for w in waves)  # AAC streams can differ by a frame
        gain = headroom([w[:length] for w in waves])  # one gain per track: the stems still sum to the mix
        signals = np.stack([w[:length] for w in waves]) * gain  # [5, L]
        rows, silent = [], 0
        for k, (offset, clip) in enumerate(cut(signals.T, opts.clip_samples)):  # clip: [clip_samples, 5]
            folder = Path(split) / track / f"{k:03d}"
            mixture = folder / "mixture.wav"
            save_audio(out / mixture, clip[:, 0], opts.sample_rate)
            for stream, wave in zip(STREAMS[1:], clip.T[1:]):
                if is_silent(wave):
                    silent += 1
                    continue
                rel = folder / f"{stream}.wav"
                save_audio(out / rel, wave, opts.sample_rate)
                rows.append({
                    "path": rel.as_posix(), "class": stream, "split": split,
                    "duration_s": len(wave) / opts.sample_rate, "sample_rate": opts.sample_rate,
                    "track": track, "segment": k, "offset_s": offset / opts.sample_rate,
                    "mixture": mixture.as_posix(),
                })
        return rows, silent
