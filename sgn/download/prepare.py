"""What every downloader shares: options, clip cutting, splits, the written tables, provenance.

Every prepared set lives in ``ROOT/<folder>/`` with mono 16-bit WAV clips at the
requested sample rate, an ``index.csv`` (:data:`sgn.data.INDEX_COLUMNS` first, then
set-specific columns), a ``missing.csv`` where videos can be gone, and a
``prepare.json`` that records the settings, the sources (URLs, checksums) and the
counts. Downloads are cached in ``ROOT/downloads/``.
"""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from sgn.data import INDEX_COLUMNS
from sgn.utils import atomic_path

# Bumped when the prepared layout changes, so an old preparation is not mistaken for a new one.
FORMAT = 1
# A clip whose RMS is below this level (dBFS) holds no usable source (e.g. the vocals
# stem of an instrumental passage) and is left out of the index.
SILENCE_DBFS = -60.0
# Peak level clips are scaled to when decoding or resampling overshoots full scale.
MAX_PEAK = 0.99


@dataclass
class Options:
    """Settings of one ``sgn data download`` run (see :func:`sgn.download.download`)."""

    root: Path
    subsets: tuple[str, ...] | None = None  # None: the data set's default
    mirror: str | None = None
    checksums: Path | None = None
    jobs: int = 2
    sample_rate: int = 11025
    clip_seconds: float = 6.0
    max_per_class: int | None = None
    sleep_s: float = 1.0
    ytdlp_args: tuple[str, ...] = ()
    progress: bool = True

    @property
    def downloads(self) -> Path:
        """Where fetched archives and id lists are cached."""
        return self.root / "downloads"

    @property
    def clip_samples(self) -> int:
        """Samples per clip when long recordings are cut (``clip_seconds`` at ``sample_rate``)."""
        return round(self.clip_seconds * self.sample_rate)


@dataclass(frozen=True)
class Planned:
    """One thing a download would fetch, for ``--dry-run``."""

    url: str
    dest: Path | None
    size: int | None  # bytes; None if unknown
    note: str = ""

    def line(self) -> str:
        size = f"{self.size / 1e6:,.1f} MB" if self.size is not None else "size unknown"
        dest = f" -> {self.dest}" if self.dest is not None else ""
        note = f" ({self.note})" if self.note else ""
        return f"{self.url}{dest}  [{size}]{note}"


def cut(wave: np.ndarray, length: int) -> list[tuple[int, np.ndarray]]:
    """Non-overlapping pieces of ``length`` samples, ``(offset, piece)``; a shorter tail is dropped."""
    return [(start, wave[start:start + length]) for start in range(0, len(wave) - length + 1, length)]


def is_silent(wave: np.ndarray) -> bool:
    """Whether the RMS of ``wave`` is below :data:`SILENCE_DBFS`."""
    rms = float(np.sqrt(np.mean(np.square(wave, dtype=np.float64)))) if wave.size else 0.0
    return rms < 10 ** (SILENCE_DBFS / 20)


def headroom(waves: Sequence[np.ndarray]) -> float:
    """One gain for all ``waves`` that keeps the loudest at most :data:`MAX_PEAK` (1.0 if it already is).

    Sources of one mixture share the gain, so they still sum to their mixture.
    """
    peak = max((float(np.abs(w).max()) for w in waves if w.size), default=0.0)
    return MAX_PEAK / peak if peak > MAX_PEAK else 1.0


def write_table(rows: Sequence[dict], path: Path, columns: Sequence[str] | None = None) -> Path:
    """Write rows as a CSV atomically, ``columns`` first (default :data:`INDEX_COLUMNS`), sorted by the first."""
    columns = list(columns or INDEX_COLUMNS)
    frame = pd.DataFrame(list(rows))
    if frame.empty:
        frame = pd.DataFrame(columns=columns)
    extra = [c for c in frame.columns if c not in columns]
    frame = frame[columns + extra].sort_values(columns[0], kind="stable")
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False, lineterminator="\n", float_format="%.6f")
    return path


def hash_rank(keys: Sequence[str]) -> list[str]:
    """``keys`` (deduplicated) in a fixed pseudo-random order: by the sha1 of each key.

    Splits drawn from this order depend only on the keys themselves, not on which
    videos happen to download or in what order the list was written.
    """
    return sorted(set(keys), key=lambda key: hashlib.sha1(key.encode()).hexdigest())


def hash_split(keys: Sequence[str], held_out: dict[str, float], default: str = "train") -> dict[str, str]:
    """Assign ``keys`` to splits: each held-out split gets its fraction (at least one key).

    The first keys of :func:`hash_rank` go to the held-out splits in the order given,
    the rest to ``default``. When there are too few keys to leave one for ``default``
    too, all go to ``default``.
    """
    ranked = hash_rank(keys)
    counts = {split: max(1, round(fraction * len(ranked))) for split, fraction in held_out.items()}
    if sum(counts.values()) >= len(ranked):
        return dict.fromkeys(ranked, default)
    splits, position = {}, 0
    for split, count in counts.items():
        splits.update(dict.fromkeys(ranked[position:position + count], split))
        position += count
    splits.update(dict.fromkeys(ranked[position:], default))
    return splits


def parallel_map(fn: Callable, items: Sequence, jobs: int, progress: bool, unit: str) -> list:
    """``[fn(item) for item in items]`` on ``jobs`` threads, in order, with a progress bar.

    Threads suffice: most of the time goes to ffmpeg and yt-dlp processes and file I/O.
    """
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool, tqdm(
        total=len(items), unit=unit, disable=not progress
    ) as bar:
        results = []
        for result in pool.map(fn, items):
            results.append(result)
            bar.update(1)
    return results
