"""MUSIC (Zhao et al., "The Sound of Pixels", ECCV 2018) and MUSIC-21, from YouTube.

Id lists: the roudimit/MUSIC_dataset GitHub repository, JSON of the form
``{"version": 1.0, "videos": {class: [YouTube ids]}}``:

* ``music``, subset ``solo`` (default): ``MUSIC_solo_videos.json``, 536 solo
  performances of 11 instruments; subset ``duet``: ``MUSIC_duet_videos.json``, 149
  duets whose keys name two instruments (``"flute violin"``).
* ``music21``: ``MUSIC21_solo_videos.json``, solos of 21 instruments (MUSIC-21, Zhao
  et al., ICCV 2019).

Each video's whole audio track is fetched (:mod:`sgn.download.youtube`) and cut into
clips of ``--clip-seconds`` (6 s by default, so a clip holds the 65535-sample crops of
the Sound-of-Pixels pipeline at 11025 Hz); silent clips are dropped.

Splits: the lists have none, so ``sgn`` draws one per class, by video (all clips of a
video share its split): in the order of the sha1 of the ids, 10% of a class's videos
(at least one) go to ``test``, the next 10% (at least one) to ``val``, the rest to
``train``; a class of fewer than three videos is all ``train``. The split depends on
the list only, never on which videos are still online.

Duets are natural mixtures without references, so they cannot be training sources:
they are prepared into ``duets.csv`` (same columns; ``class`` names both instruments
joined by ``+``, ``flute+violin`` for the list's ``"flute violin"``, a name that is safe
as a file name; split ``test``) for listening tests with ``sgn separate``.

Prepared layout in ``ROOT/music/`` (or ``ROOT/music21/``)::

    index.csv       solo clips; extra columns: video_id, offset_s (start in the video), gain
    duets.csv       duet clips (subset duet only)
    missing.csv     videos that could not be fetched, with yt-dlp's reason
    prepare.json    settings, id list URLs, counts
    solo/<class>/<id>_<NNN>.wav, duet/<class>_<class>/<id>_<NNN>.wav
"""

from __future__ import annotations

import json
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

LIST_URL = "https://raw.githubusercontent.com/roudimit/MUSIC_dataset/master/{}"
HELD_OUT = {"test": 0.1, "val": 0.1}


def read_video_list(path: Path) -> dict[str, list[str]]:
    """Class -> YouTube ids of a MUSIC id list.

    Raises:
        SGNError: not JSON of the form ``{"videos": {class: [ids]}}``.
    """
    try:
        videos = json.loads(path.read_text())["videos"]
        if not isinstance(videos, dict) or not all(
            isinstance(ids, list) and all(isinstance(i, str) for i in ids) for ids in videos.values()
        ):
            raise TypeError("expected {class: [ids]}")
    except (ValueError, KeyError, TypeError) as err:
        raise SGNError(
            f"{path}: not a MUSIC id list ({type(err).__name__}: {err}); delete it to fetch it again"
        ) from None
    return videos


class Music(DataSet):
    name = "music"
    lists = {"solo": "MUSIC_solo_videos.json", "duet": "MUSIC_duet_videos.json"}
    subsets = ("solo", "duet")
    default_subsets = ("solo",)

    def _listed(self, opts: Options) -> dict[str, list[Listed]]:
        """Subset -> its videos with class and split (id lists fetched and cached)."""
        listed = {}
        for subset in self.chosen_subsets(opts):
            path = fetch_cached(mirror_url(LIST_URL.format(self.lists[subset]), opts.mirror),
                                opts.downloads / self.lists[subset])
            items = []
            for label, ids in read_video_list(path).items():
                folder = f"{subset}/{label.replace(' ', '_')}"
                splits = hash_split(ids, HELD_OUT) if subset == "solo" else dict.fromkeys(ids, "test")
                name = label.replace(" ", "+")  # a duet's two instruments; no space in class names
                items += [Listed(Video(f"{folder}/{i}", i), name, splits[i]) for i in dict.fromkeys(ids)]
            listed[subset] = cap_per_class(items, opts.max_per_class)
        return listed

    def plan(self, opts: Options) -> list[Planned]:
        plan = []
        for subset, items in self._listed(opts).items():
            id_list = opts.downloads / self.lists[subset]
            url = mirror_url(LIST_URL.format(self.lists[subset]), opts.mirror)
            plan.append(Planned(url, id_list, id_list.stat().st_size, "id list"))
            plan.append(Planned(
                f"{len(items)} YouTube videos ({subset}), whole audio track each", opts.root / self.name, None,
                f"{count_done(opts.root / self.name, items)} already prepared; sizes are known only once fetched "
                "(about 1 MB per minute of audio)",
            ))
        return plan

    def prepare(self, opts: Options) -> Path:
        folder = opts.root / self.name
        settings = {"format": FORMAT, "sample_rate": opts.sample_rate, "clip_seconds": opts.clip_seconds}
        begin(folder, self.name, settings)
        listed = self._listed(opts)
        videos = [item.video for items in listed.values() for item in items]
        records = fetch_videos(videos, folder, opts, clip_samples=opts.clip_samples)
        tables, missing = {}, []
        for subset, items in listed.items():
            rows, gone = index_rows(items, records)
            tables["index.csv" if subset == "solo" else "duets.csv"] = rows
            missing += gone
        sources = {self.lists[s]: LIST_URL.format(self.lists[s]) for s in listed}
        finish(folder, self.name, settings, tables, missing, sources, len(videos))
        return folder


class Music21(Music):
    name = "music21"
    lists = {"solo": "MUSIC21_solo_videos.json"}
    subsets = ("solo",)
    default_subsets = ("solo",)
