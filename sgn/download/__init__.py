"""Download, verify and prepare the real data sets: MUSIC, MUSIC-21, FUSS, MUSDB18, VGG-Sound.

    sgn data download NAME --root DIR [--subset S[,S]] [--mirror BASE_URL] [--checksums FILE]
                           [--jobs N] [--sample-rate 11025] [--clip-seconds 6] [--dry-run] ...

Each set ends up in ``DIR/<folder>/`` in the common ``index.csv`` format of
:mod:`sgn.data` (mono WAV clips at ``--sample-rate``), so ``sgn train`` and the notebooks
use it unchanged (``--set data.index=DIR/<folder>/index.csv``). The book's data-set
cards (``book/datasets.md``) say what each set is and how it is prepared.

Quick start::

    from sgn.download import download
    folder = download("musdb18", "data", subsets=["preview"])  # data/musdb18_preview/index.csv

Modules, one concern each:

* :mod:`~sgn.download.http`: resumable, verified HTTP downloads; ``--mirror``.
* :mod:`~sgn.download.manifest`: ``md5sum``/``sha256sum`` checksum files.
* :mod:`~sgn.download.zenodo`: Zenodo file URLs and the checksums Zenodo publishes.
* :mod:`~sgn.download.archive`: safe unpacking of tar and zip archives.
* :mod:`~sgn.download.ffmpeg`: decoding compressed audio (STEMS, YouTube audio).
* :mod:`~sgn.download.youtube`: yt-dlp fetching, clipping, ``missing.csv``.
* :mod:`~sgn.download.prepare`: options, clip cutting, splits, tables and ``prepare.json``.
* :mod:`~sgn.download.base`: the data set classes, checksum lookup, the archive flow.
* one module per set: :mod:`~sgn.download.music`, :mod:`~sgn.download.fuss`,
  :mod:`~sgn.download.musdb`, :mod:`~sgn.download.vggsound`.
"""

from __future__ import annotations

import os
from pathlib import Path

from sgn.download.base import DataSet
from sgn.download.fuss import Fuss
from sgn.download.musdb import Musdb18
from sgn.download.music import Music, Music21
from sgn.download.prepare import Options, Planned
from sgn.download.vggsound import VGGSound
from sgn.utils import SGNError

DATASETS: dict[str, type[DataSet]] = {
    "music": Music,
    "music21": Music21,
    "fuss": Fuss,
    "musdb18": Musdb18,
    "vggsound": VGGSound,
}


def _dataset(name: str) -> DataSet:
    if name not in DATASETS:
        raise SGNError(f"unknown data set {name!r}; choose from {', '.join(DATASETS)}")
    return DATASETS[name]()


def _options(root: str | os.PathLike, **options) -> Options:
    opts = Options(root=Path(root), **options)
    if opts.subsets is not None:
        opts.subsets = tuple(opts.subsets)
    opts.ytdlp_args = tuple(opts.ytdlp_args)
    if opts.checksums is not None:
        opts.checksums = Path(opts.checksums)
    if opts.jobs < 1:
        raise SGNError(f"--jobs: expected at least 1, got {opts.jobs}")
    if opts.sample_rate < 8000:
        raise SGNError(f"--sample-rate: expected at least 8000 Hz, got {opts.sample_rate}")
    if not opts.clip_seconds > 0:
        raise SGNError(f"--clip-seconds: expected a positive length, got {opts.clip_seconds}")
    if opts.max_per_class is not None and opts.max_per_class < 1:
        raise SGNError(f"--max-per-class: expected at least 1, got {opts.max_per_class}")
    if opts.sleep_s < 0:
        raise SGNError(f"--sleep: expected a non-negative number of seconds, got {opts.sleep_s}")
    return opts


def download(name: str, root: str | os.PathLike, **options) -> Path:
    """Download, verify, unpack and prepare data set ``name`` under ``root``.

    Args:
        name: one of :data:`DATASETS`.
        root: the data folder; downloads are cached in ``root/downloads/``.
        **options: the fields of :class:`sgn.download.prepare.Options`: ``subsets``,
            ``mirror``, ``checksums``, ``jobs``, ``sample_rate``, ``clip_seconds``,
            ``max_per_class``, ``sleep_s``, ``ytdlp_args``, ``progress``.

    Returns:
        The prepared folder (it holds ``index.csv`` or, for MUSIC duets alone, ``duets.csv``).

    Raises:
        SGNError: an unknown name, an invalid option value, a failed download or
            checksum, an unsafe or corrupt archive, or nothing could be prepared.
    """
    return _dataset(name).prepare(_options(root, **options))


def plan(name: str, root: str | os.PathLike, **options) -> list[Planned]:
    """What :func:`download` would fetch (for ``--dry-run``); small id lists and record metadata are fetched to say."""
    return _dataset(name).plan(_options(root, **options))


__all__ = ["DATASETS", "download", "plan"]
