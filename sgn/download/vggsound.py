"""VGG-Sound (Chen et al., ICASSP 2020): about 200k 10-second YouTube clips of 309 classes.

Id list: ``vggsound.csv`` from the authors' GitHub repository (hche11/VGGSound), no
header, one clip per row: YouTube id, start second, label, ``train``/``test``.
Labels may contain commas (quoted), e.g. ``"male speech, man speaking"``; the index's
``class`` is the label with runs of non-alphanumerics as ``_``, lower case
(``male_speech_man_speaking``), a name that is safe as a file name (class names become
the file names of ``sgn separate``) and is the clips' folder.

For each row yt-dlp fetches only the 10 seconds from the start second
(:mod:`sgn.download.youtube`); the clip is kept whole (at most 10 s).

Subsets are the list's splits: ``train`` and ``test`` (default: both). The list has
no validation split, so ``sgn`` holds out 5% of each class's train clips (at least
one, by the sha1 of ``<id>_<start>``) as ``val``; the choice depends on the list only.

Prepared layout in ``ROOT/vggsound/``::

    index.csv       one row per clip; extra columns: video_id, offset_s (= start second), gain
    missing.csv     clips that could not be fetched, with yt-dlp's reason
    prepare.json    settings, list URL, counts
    <class>/<id>_<start:06d>_000.wav
"""

from __future__ import annotations

import collections
import csv
import re
from pathlib import Path

from sgn.download.base import DataSet
from sgn.download.http import fetch_cached, mirror_url
from sgn.download.prepare import FORMAT, Options, Planned, hash_split
from sgn.download.youtube import (
    Listed,
    Video,
    begin,
    cap_per_class,
    count_done,
    fetch_videos,
    finish,
    index_rows,
)
from sgn.utils import SGNError

LIST_URL = "https://raw.githubusercontent.com/hche11/VGGSound/master/data/vggsound.csv"
LIST_NAME = "vggsound.csv"
CLIP_SECONDS = 10
VAL_FRACTION = 0.05


def read_clip_list(path: Path) -> list[tuple[str, int, str, str]]:
    """``(video_id, start_s, label, split)`` rows of a VGG-Sound CSV.

    Raises:
        SGNError: a row that is not ``id, start second, label, train|test``.
    """
    rows = []
    with open(path, newline="") as f:
        for number, fields in enumerate(csv.reader(f), start=1):
            if not fields or fields[0].startswith("#"):
                continue
            if len(fields) != 4 or not fields[1].strip().isdigit() or fields[3].strip() not in ("train", "test"):
                raise SGNError(f"{path}:{number}: expected 'YouTube id, start second, label, train|test', got {fields}")
            rows.append((fields[0].strip(), int(fields[1]), fields[2].strip(), fields[3].strip()))
    if not rows:
        raise SGNError(f"{path}: the clip list is empty; delete it to fetch it again")
    return rows


def _folder(label: str) -> str:
    return re.sub(r"[^0-9A-Za-z]+", "_", label).strip("_").lower()


class VGGSound(DataSet):
    name = "vggsound"
    subsets = ("train", "test")
    default_subsets = ("train", "test")

    def _listed(self, opts: Options) -> list[Listed]:
        path = fetch_cached(mirror_url(LIST_URL, opts.mirror), opts.downloads / LIST_NAME)
        rows = read_clip_list(path)
        by_class = collections.defaultdict(list)
        for video_id, start, label, split in rows:
            if split == "train":
                by_class[label].append(f"{video_id}_{start:06d}")
        val = {}
        for keys in by_class.values():
            val.update(hash_split(keys, {"val": VAL_FRACTION}))
        chosen = set(self.chosen_subsets(opts))
        listed = {}
        for video_id, start, label, split in rows:
            if split not in chosen:
                continue
            name = f"{video_id}_{start:06d}"
            key = f"{_folder(label)}/{name}"
            video = Video(key, video_id, start, start + CLIP_SECONDS)
            listed[key] = Listed(video, _folder(label), val.get(name, split))
        return cap_per_class(list(listed.values()), opts.max_per_class)

    def plan(self, opts: Options) -> list[Planned]:
        listed = self._listed(opts)
        done = count_done(opts.root / self.name, listed)
        id_list = opts.downloads / LIST_NAME
        # YouTube's audio-only streams are mostly 128-160 kbit/s: about 0.2 MB per 10-s section.
        return [Planned(mirror_url(LIST_URL, opts.mirror), id_list, id_list.stat().st_size, "clip list"),
                Planned(f"{len(listed)} YouTube clips of {CLIP_SECONDS} s", opts.root / self.name,
                        round(0.2e6 * (len(listed) - done)), f"{done} already prepared; size estimated")]

    def prepare(self, opts: Options) -> Path:
        folder = opts.root / self.name
        settings = {"format": FORMAT, "sample_rate": opts.sample_rate}
        begin(folder, self.name, settings)
        listed = self._listed(opts)
        records = fetch_videos([item.video for item in listed], folder, opts, clip_samples=None,
                               max_samples=CLIP_SECONDS * opts.sample_rate)
        rows, missing = index_rows(listed, records)
        finish(folder, self.name, settings, {"index.csv": rows}, missing, {LIST_NAME: LIST_URL}, len(listed))
        return folder
