"""YouTube-based sets (MUSIC, VGG-Sound): fetch each video's audio with yt-dlp, then clip it.

One video at a time per worker (``--jobs`` workers in all):

1. yt-dlp fetches the audio only (format ``bestaudio/best``), just the needed section
   when there is one (``--download-sections``, which yt-dlp performs with ffmpeg);
2. ffmpeg decodes it (:mod:`sgn.download.ffmpeg`); :func:`sgn.audio.load_audio` mixes
   it to mono and resamples it with soxr;
3. the audio is cut into clips, silent clips are dropped, the rest written as WAV;
4. a record ``.done/<key>.json`` lists the clips, so a later run skips the video.

Video starts are paced (:class:`Pacer`): at most one every ``--sleep`` seconds over all
workers, which keeps the request rate polite. A video yt-dlp cannot fetch (removed,
private, blocked) is reported missing with yt-dlp's reason; it never aborts the run,
and the next run tries it again.

Mirror layout: with ``--mirror BASE``, ``https://www.youtube.com/watch?v=ID`` becomes
``BASE/watch?v=ID`` (the host is replaced, the path and query kept, as for every
URL). A mirror answers it with the media file itself (any container ffmpeg reads,
served with an ``audio/*`` or ``video/*`` content type and ``Range`` support), or
with a redirect to it; yt-dlp's generic extractor then fetches it directly.
"""

from __future__ import annotations

import collections
import json
import logging
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path

from sgn.audio import load_audio, save_audio
from sgn.download.ffmpeg import decode, ffmpeg_exe
from sgn.download.http import mirror_url
from sgn.download.prepare import (
    Options,
    cut,
    hash_rank,
    headroom,
    is_silent,
    parallel_map,
    write_table,
)
from sgn.prepared import settings_match, write_provenance
from sgn.utils import SGNError, atomic_write_text

log = logging.getLogger(__name__)

WATCH_URL = "https://www.youtube.com/watch?v={}"
TIMEOUT_S = 900  # per video; a stalled download is given up (and retried by the next run)
SOCKET_TIMEOUT_S = 30
# Columns of missing.csv, one row per video that could not be prepared (VGG-Sound adds start_s).
MISSING_COLUMNS = ("video_id", "class", "split", "reason")


@dataclass(frozen=True)
class Video:
    """One video to fetch.

    Attributes:
        key: unique in the set; the clips are ``<key>_<NNN>.wav`` under the prepared
            folder, and the completion record is ``.done/<key>.json``.
        video_id: the YouTube id.
        start_s, end_s: the section to fetch, or ``None`` for the whole video.
    """

    key: str
    video_id: str
    start_s: float | None = None
    end_s: float | None = None


@dataclass(frozen=True)
class Listed:
    """A video of an id list, with the class and split it belongs to."""

    video: Video
    label: str
    split: str


class Unavailable(Exception):
    """A video that cannot be fetched or has no usable audio; the message is the reason.

    Args:
        reason: what went wrong, for ``missing.csv``.
        final: the video was fetched but holds nothing usable, so a later run need not
            fetch it again (a failed fetch is retried by the next run).
    """

    def __init__(self, reason: str, final: bool = False):
        super().__init__(reason)
        self.final = final


class Pacer:
    """Spaces out events (video starts) by at least ``interval_s`` seconds, across threads."""

    def __init__(self, interval_s: float):
        self.interval_s = interval_s
        self._lock = threading.Lock()
        self._next = time.monotonic()

    def wait(self) -> None:
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + self.interval_s
        time.sleep(start - now)


def check_ytdlp() -> None:
    """Raise :class:`SGNError` unless yt-dlp can be imported (it is run as ``python -m yt_dlp``)."""
    if find_spec("yt_dlp") is None:
        raise SGNError("yt-dlp is not installed; install the data extra: pip install 'sgn[data]'")


def fetch_audio(video: Video, work: Path, opts: Options) -> Path:
    """Fetch the audio of ``video`` (its section, if any) into ``work`` with yt-dlp.

    Returns:
        The downloaded file.

    Raises:
        Unavailable: yt-dlp failed; the message is its last error line.
    """
    cmd = [
        sys.executable, "-m", "yt_dlp", "--ignore-config", "--no-playlist", "--no-progress", "--no-warnings",
        "--format", "bestaudio/best", "--ffmpeg-location", ffmpeg_exe(),
        "--socket-timeout", str(SOCKET_TIMEOUT_S), "--retries", "3",
        "--output", str(work / f"{video.video_id}.%(ext)s"), "--print", "after_move:filepath",
    ]
    if video.start_s is not None:
        cmd += ["--download-sections", f"*{video.start_s:g}-{video.end_s:g}"]
    cmd += [*opts.ytdlp_args, "--", mirror_url(WATCH_URL.format(video.video_id), opts.mirror)]
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise Unavailable(f"yt-dlp did not finish in {TIMEOUT_S} s") from None
    if result.returncode != 0:
        errors = [line for line in result.stderr.splitlines() if line.startswith("ERROR:")]
        reason = (errors or result.stderr.strip().splitlines() or ["yt-dlp failed"])[-1]
        raise Unavailable(reason.removeprefix("ERROR: ")[:300])
    lines = result.stdout.strip().splitlines()
    path = Path(lines[-1]) if lines else None
    if path is None or not path.is_file():
        raise Unavailable("yt-dlp reported no file")
    return path


def _clip_video(video: Video, media: Path, work: Path, out_dir: Path, opts: Options, clip_samples: int | None,
                max_samples: int | None) -> list[dict]:
    """Decode, resample, cut and write the clips of one video; return their records."""
    decoded = work / "decoded.wav"
    try:
        decode(media, [decoded])
        wave, rate = load_audio(decoded, opts.sample_rate)
    except SGNError as err:
        raise Unavailable(str(err)) from None
    pieces = cut(wave, clip_samples) if clip_samples else [(0, wave[:max_samples])]
    pieces = [(offset, piece) for offset, piece in pieces if piece.size and not is_silent(piece)]
    if not pieces:
        wanted = f" of {clip_samples / rate:g} s" if clip_samples else ""
        raise Unavailable(f"no audible clip{wanted} in its {len(wave) / rate:.1f} s of audio", final=True)
    gain = headroom([piece for _, piece in pieces])
    clips = []
    for k, (offset, piece) in enumerate(pieces):
        rel = f"{video.key}_{k:03d}.wav"
        save_audio(out_dir / rel, piece * gain, rate)
        clips.append({
            "path": rel,
            "duration_s": len(piece) / rate,
            "sample_rate": rate,
            "offset_s": (video.start_s or 0.0) + offset / rate,
            "gain": gain,
        })
    return clips


def _done_path(out_dir: Path, video: Video) -> Path:
    return out_dir / ".done" / f"{video.key}.json"


def _process(video: Video, out_dir: Path, opts: Options, pacer: Pacer, clip_samples: int | None,
             max_samples: int | None) -> dict:
    """Fetch and clip one video; returns its completion record (also written to disk)."""
    done = _done_path(out_dir, video)
    if done.is_file():
        return json.loads(done.read_text())
    pacer.wait()
    work = out_dir / ".work" / video.key
    shutil.rmtree(work, ignore_errors=True)  # leftovers of an interrupted run
    work.mkdir(parents=True)
    try:
        media = fetch_audio(video, work, opts)
        record = {"clips": _clip_video(video, media, work, out_dir, opts, clip_samples, max_samples), "missing": None}
    except Unavailable as err:
        record = {"clips": [], "missing": str(err)}
        if not err.final:
            return record  # not recorded as done: the next run tries again
    finally:
        shutil.rmtree(work, ignore_errors=True)
    atomic_write_text(done, json.dumps(record) + "\n")
    return record


def fetch_videos(
    videos: list[Video], out_dir: Path, opts: Options, *, clip_samples: int | None, max_samples: int | None = None
) -> dict[str, dict]:
    """Fetch and clip every video (skipping those done before), in parallel.

    Args:
        videos: what to fetch; ``key`` must be unique.
        out_dir: the prepared folder (clips, ``.done/`` records, a ``.work/`` scratch folder).
        opts: the run's options (``jobs``, ``sleep_s``, ``mirror``, ``sample_rate``...).
        clip_samples: cut each video into clips of this many samples; ``None`` keeps
            one clip per video, at most ``max_samples`` long.
        max_samples: see ``clip_samples``.

    Returns:
        key -> ``{"clips": [...], "missing": reason or None}``. A clip is a dict with
        ``path`` (relative to ``out_dir``), ``duration_s``, ``sample_rate``, ``offset_s``
        (start within the video) and ``gain`` (the headroom scaling applied).
    """
    pacer = Pacer(opts.sleep_s)
    results = parallel_map(
        lambda video: _process(video, out_dir, opts, pacer, clip_samples, max_samples),
        videos, opts.jobs, opts.progress, "video",
    )
    shutil.rmtree(out_dir / ".work", ignore_errors=True)
    return {video.key: record for video, record in zip(videos, results)}


def cap_per_class(listed: list[Listed], limit: int | None) -> list[Listed]:
    """At most ``limit`` videos per (class, split), the first in :func:`hash_rank` order."""
    if limit is None:
        return listed
    order = {key: rank for rank, key in enumerate(hash_rank([item.video.key for item in listed]))}
    kept, seen = [], {}
    for item in sorted(listed, key=lambda item: order[item.video.key]):
        group = (item.label, item.split)
        seen[group] = seen.get(group, 0) + 1
        if seen[group] <= limit:
            kept.append(item)
    return kept


def count_done(out_dir: Path, listed: list[Listed]) -> int:
    """How many of ``listed`` an earlier run has prepared (or found unusable) already."""
    return sum(_done_path(out_dir, item.video).is_file() for item in listed)


def index_rows(listed: list[Listed], records: dict[str, dict]) -> tuple[list[dict], list[dict]]:
    """Index rows (one per clip) and ``missing.csv`` rows (one per missing video) of ``listed``."""
    rows, missing = [], []
    for item in listed:
        video, record = item.video, records[item.video.key]
        where = {} if video.start_s is None else {"start_s": video.start_s}
        if record["missing"] is not None:
            missing.append({"video_id": video.video_id, "class": item.label, "split": item.split, **where,
                            "reason": record["missing"]})
        for clip in record["clips"]:
            rows.append({"path": clip["path"], "class": item.label, "split": item.split,
                         "duration_s": clip["duration_s"], "sample_rate": clip["sample_rate"],
                         "video_id": video.video_id, "offset_s": clip["offset_s"], "gain": clip["gain"]})
    return rows, missing


def begin(folder: Path, dataset: str, settings: dict) -> None:
    """Check the tools, and that ``folder`` is new or holds this set with ``settings``; mark the run as started.

    Raises:
        SGNError: yt-dlp or ffmpeg is missing, or ``folder`` holds something else (see
            :func:`sgn.prepared.settings_match`).
    """
    check_ytdlp()
    ffmpeg_exe()
    settings_match(folder, settings)
    folder.mkdir(parents=True, exist_ok=True)
    write_provenance(folder, dataset, settings, made_by=__name__, status="incomplete")


def finish(folder: Path, dataset: str, settings: dict, tables: dict[str, list[dict]], missing: list[dict],
           sources: dict, n_videos: int) -> Path:
    """Write the index tables, ``missing.csv`` and ``prepare.json``; log the summary.

    Args:
        tables: file name (``index.csv``, ``duets.csv``) -> rows; the first must not be empty.
        missing: rows of :func:`index_rows`.
        sources: URLs of the id lists, for ``prepare.json``.
        n_videos: how many videos were asked for.

    Returns:
        The path of the first table.

    Raises:
        SGNError: the first table is empty (no video could be fetched).
    """
    write_table(missing, folder / "missing.csv", MISSING_COLUMNS)
    first = next(iter(tables))
    if not tables[first]:
        reasons = collections.Counter(row["reason"] for row in missing).most_common(1)
        hint = f"; most common reason: {reasons[0][0]}" if reasons else ""
        raise SGNError(f"{dataset}: no clip could be prepared ({len(missing)} of {n_videos} videos missing{hint}); "
                       f"see {folder / 'missing.csv'}")
    for name, rows in tables.items():
        write_table(rows, folder / name)
    counts = {name: {"clips": len(rows), "videos": len({r["video_id"] for r in rows}),
                     "clips_per_split": dict(collections.Counter(r["split"] for r in rows))}
              for name, rows in tables.items()}
    write_provenance(folder, dataset, settings, made_by=__name__, status="complete", sources=sources,
                     counts={"videos_listed": n_videos, "videos_missing": len(missing), **counts})
    log.info("%s: %d of %d videos prepared, %d missing (listed in %s); index: %s", dataset,
             n_videos - len(missing), n_videos, len(missing), folder / "missing.csv", folder / first)
    return folder / first
