"""SynthMUSIC: the embedded default data set, solo clips of the 11 MUSIC instruments.

MUSIC (Zhao et al., ECCV 2018) is a set of YouTube videos, many of them gone. So that
every notebook runs offline, ``sgn`` renders a stand-in with the same 11 classes:
random melodies played by General-MIDI programs of a SoundFont (by default the
TimGM6mb SoundFont that ships inside the ``pretty_midi`` wheel) through
``tinysoundfont``.

Quick start::

    from sgn.synth import render_synth_music
    root = render_synth_music("data/synth_music")  # index.csv, synth.json, <class>/*.wav

What one clip is:

* a melody in the instrument's playable range (:data:`INSTRUMENTS`): random key and
  scale (pentatonic for the erhu), a random walk over the scale with occasional leaps,
  phrases of 3-8 notes with a crescendo or diminuendo, random tempo and note lengths,
  legato, detached or staccato phrases, rests of at most :data:`MAX_REST_S`;
* played the way the instrument is played: vibrato on bowed strings (and a little on
  flute and saxophone), slides into notes on the erhu, strummed chords on the guitar,
  rolls on long xylophone notes;
* then varied so a model cannot memorise one recording: random low and high shelf EQ,
  a short synthetic reverb, and a random level (never clipped).

Every clip draws from its own random generator, seeded by ``(seed, class, clip)``, so
the files do not depend on the order or the number of worker processes, and the same
arguments give byte-identical files. The set is written as every data set is
(:mod:`sgn.prepared`): into a hidden sibling folder renamed onto ``out_dir`` only when
complete, with a record whose settings decide whether a later call can reuse it.

Layout of ``out_dir``::

    index.csv                      path,class,split,duration_s,sample_rate,...
    prepare.json                   settings (arguments, SoundFont sha256, format, renderer
                                   version), instruments, counts (sgn.prepared)
    <class>/<class>_<NNNN>.wav     mono 16-bit PCM

:func:`describe_clip` measures a clip's spectral centroid and pitch range (YIN, de
Cheveigne & Kawahara, JASA 2002), which shows that the classes differ.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from scipy import signal
from tqdm.auto import tqdm

from sgn.audio import save_audio
from sgn.data import INDEX_COLUMNS, MUSIC_CLASSES
from sgn.prepared import settings_match, write_provenance
from sgn.soundfonts import BANKS, DEFAULT_HELD_OUT, FALLBACK, FALLBACK_LICENCE, bank_player, find_banks
from sgn.utils import SGNError, sha256_file, shorten, staged_dir
from sgn.workers import worker_pool

logger = logging.getLogger(__name__)

# 6 s holds the 65535-sample (5.94 s at 11025 Hz) clip of the Sound-of-Pixels pipeline.
DEFAULT_SECONDS = 6.0
# 80 x 11 clips (88 min, 117 MB) train a small model and take ~20 s of CPU (bench/bench_synth.py).
DEFAULT_CLIPS_PER_CLASS = 96
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
FORMAT = "synth_music/1"
# The renderer's version, part of a set's identity: bump it whenever the same arguments
# would render other bytes (tests/test_synth.py holds the bytes of this version), so a
# set rendered by an older renderer is never taken for the current one.
RENDERER_VERSION = 2
# Fraction of each class's clips for each of val, test_seen and test_unseen; the rest trains.
HELD_OUT_FRACTION = 0.15
# Longest rest in a melody, so that every clip sounds throughout.
MAX_REST_S = 0.5
# Longest silence between a released note and the next one.
MAX_GAP_S = 0.2
# Pitch-wheel range (semitones each way): wide enough for the erhu's slides.
BEND_RANGE = 6
# Samples between pitch-wheel updates (2.9 ms at 11025 Hz): smooth vibrato and slides.
BLOCK = 32
# RMS level clips are normalised to before a random gain, and the peak never exceeded.
TARGET_RMS_DB = -20.0
PEAK_LIMIT = 0.95

# Scales as semitones above the tonic.
SCALES: dict[str, tuple[int, ...]] = {
    "major": (0, 2, 4, 5, 7, 9, 11),
    "minor": (0, 2, 3, 5, 7, 8, 10),
    "harmonic_minor": (0, 2, 3, 5, 7, 8, 11),
    "dorian": (0, 2, 3, 5, 7, 9, 10),
    "mixolydian": (0, 2, 4, 5, 7, 9, 10),
    "pentatonic_major": (0, 2, 4, 7, 9),
    "pentatonic_minor": (0, 3, 5, 7, 10),
}
HEPTATONIC = ("major", "minor", "harmonic_minor", "dorian", "mixolydian")
PENTATONIC = ("pentatonic_major", "pentatonic_minor")
_NOTE_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")


@dataclass(frozen=True)
class Instrument:
    """How SynthMUSIC plays one class.

    Attributes:
        program: General-MIDI program, 0-based (bank 0 of the SoundFont).
        low: lowest MIDI note played.
        high: highest MIDI note played.
        style: articulation family, a key of ``_STYLES``: ``bowed``, ``plucked``,
            ``struck``, ``wind``, ``reed``, ``brass`` or ``bellows``.
        tempo: range of tempi in beats per minute.
        scales: names in :data:`SCALES` a melody may use.
        vibrato_cents: typical vibrato depth (0: none), applied with the pitch wheel.
        glide: slide into notes from the previous pitch (erhu).
        chords: strum occasional 2-3 note chords (guitar).
        siblings: further GM programs of the same instrument family that also play the
            class (nylon and steel guitar; soprano, alto and tenor saxophone).
    """

    program: int
    low: int
    high: int
    style: str
    tempo: tuple[float, float] = (70.0, 140.0)
    scales: tuple[str, ...] = HEPTATONIC
    vibrato_cents: float = 0.0
    glide: bool = False
    chords: bool = False
    siblings: tuple[int, ...] = ()

    @property
    def programs(self) -> tuple[int, ...]:
        """Every GM program (0-based) that plays this class."""
        return (self.program, *self.siblings)


# Ranges are the comfortable melodic range of each instrument (sounding pitch).
# GM has no erhu: Fiddle (110) with deep vibrato, slides and pentatonic tunes stands in.
INSTRUMENTS: dict[str, Instrument] = {
    "accordion": Instrument(21, 53, 89, "bellows", siblings=(23,)),  # + tango accordion
    "acoustic_guitar": Instrument(24, 40, 81, "plucked", chords=True, siblings=(25,)),  # nylon + steel
    "cello": Instrument(42, 36, 76, "bowed", (60.0, 120.0), vibrato_cents=15.0),
    "clarinet": Instrument(71, 50, 89, "reed"),
    "erhu": Instrument(110, 62, 93, "bowed", (60.0, 110.0), PENTATONIC, vibrato_cents=30.0, glide=True),
    "flute": Instrument(73, 60, 96, "wind", (70.0, 150.0), vibrato_cents=8.0),
    # alto, and soprano and tenor
    "saxophone": Instrument(65, 49, 80, "reed", (70.0, 150.0), vibrato_cents=10.0, siblings=(64, 66)),
    "trumpet": Instrument(56, 54, 84, "brass", (80.0, 150.0), siblings=(59,)),  # + muted trumpet
    "tuba": Instrument(58, 28, 58, "brass", (60.0, 110.0)),
    "violin": Instrument(40, 55, 96, "bowed", (60.0, 140.0), vibrato_cents=18.0),
    "xylophone": Instrument(13, 65, 100, "struck", (90.0, 170.0), siblings=(12,)),  # + marimba
}

# Note lengths a melody draws from, in beats.
_DURATIONS = np.array([0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0])


@dataclass(frozen=True)
class _Style:
    """How an articulation family phrases: note lengths, articulation, rests."""

    weights: tuple[float, ...]  # relative probability of each of _DURATIONS
    articulation: tuple[float, float, float]  # P(legato, detached, staccato) for a phrase
    rest: float  # probability of a short rest (a breath for winds) after a phrase
    max_note_s: float  # longest single note (breath, bow length, decay)


_BLOWN = _Style((0.5, 3, 1, 4, 2, 2, 0.5), (0.5, 0.35, 0.15), 0.8, 2.5)
_STYLES: dict[str, _Style] = {
    "bowed": _Style((0.5, 3, 1, 4, 2, 2, 1), (0.6, 0.3, 0.1), 0.4, 3.0),
    "bellows": _Style((1, 4, 1, 4, 2, 2, 1), (0.6, 0.3, 0.1), 0.3, 3.0),
    "plucked": _Style((2, 5, 1, 4, 2, 1.5, 0.5), (0.2, 0.7, 0.1), 0.3, 2.5),
    # Long xylophone notes are played as rolls (see compose), the bars decay in ~0.3 s.
    "struck": _Style((4, 6, 1, 3, 1, 1, 0), (0.0, 1.0, 0.0), 0.3, 1.5),
    "wind": _BLOWN,
    "reed": _BLOWN,
    "brass": _BLOWN,
}
_GATES = (1.0, 0.85, 0.5)  # held fraction of a note for legato, detached, staccato
_ROLL_ABOVE_S = 0.35  # struck notes longer than this become rolls


@dataclass(frozen=True)
class Note:
    """One note-on: ``onset`` and ``held`` in seconds, ``glide`` in semitones (0: none)."""

    onset: float
    held: float
    pitch: int
    velocity: int
    glide: float = 0.0


@dataclass(frozen=True)
class Score:
    """What one clip plays.

    Attributes:
        notes: every note-on in onset order (chord tones and roll strokes included).
        melody: the tune as ``(pitch, beats)`` pairs, for the uniqueness check.
        tempo_bpm: beats per minute.
        key: tonic and scale, e.g. ``"D dorian"``.
        vibrato_cents: vibrato depth for this clip.
        vibrato_hz: vibrato rate for this clip.
        glide_s: how long a slide into a note takes.
    """

    notes: tuple[Note, ...]
    melody: tuple[tuple[int, float], ...]
    tempo_bpm: float
    key: str
    vibrato_cents: float
    vibrato_hz: float
    glide_s: float


def compose(instrument: Instrument, playable: Sequence[int], seconds: float, rng: np.random.Generator) -> Score:
    """Write a random melody of at least ``seconds`` for ``instrument``.

    Args:
        instrument: range, style and habits of the player.
        playable: MIDI notes the SoundFont sounds for this program (see ``_playable_keys``).
        seconds: the melody runs until at least this time.
        rng: the clip's generator; the only source of randomness.

    Returns:
        the :class:`Score`.
    """
    style = _STYLES[instrument.style]
    tempo = round(float(rng.uniform(*instrument.tempo)), 1)
    beat = 60.0 / tempo
    tonic = int(rng.integers(12))
    scale = str(rng.choice(instrument.scales))
    degrees = SCALES[scale]
    pool = [p for p in playable if (p - tonic) % 12 in degrees]
    # Phrases end on the tonic, the third or the fifth.
    rest_tones = {tonic % 12, (tonic + 7) % 12, (tonic + (3 if 3 in degrees else 4)) % 12}
    cadence = [i for i, p in enumerate(pool) if p % 12 in rest_tones]

    # Each clip centres on its own part of the range, so the set covers all of it.
    centre = rng.uniform(0.25, 0.75) * (len(pool) - 1)
    spread = max(2.0, len(pool) / 6)
    index = int(np.clip(round(centre + rng.normal(0, 2)), 0, len(pool) - 1))
    fits = _DURATIONS * beat <= style.max_note_s
    durations = _DURATIONS[fits] if fits.any() else _DURATIONS[:1]
    weights = np.array(style.weights)[fits] if fits.any() else np.ones(1)
    weights = weights / weights.sum()
    bar = int(rng.choice([3, 4]))
    loudness = rng.uniform(60, 105)
    roll_s = rng.uniform(0.07, 0.1)
    strum_s = rng.uniform(0.012, 0.03)

    notes: list[Note] = []
    melody: list[tuple[int, float]] = []
    t, beats = 0.0, 0.0
    while t < seconds:
        n_notes = int(rng.integers(3, 9))
        gate = _GATES[rng.choice(3, p=style.articulation)]
        start_velocity, end_velocity = loudness + rng.uniform(-15, 15, size=2)
        for k in range(n_notes):
            if t >= seconds:  # nothing after the clip's end counts towards the melody
                break
            last = k == n_notes - 1
            length = float(rng.choice(durations, p=weights))
            if last:  # phrases end on a longer note, where one fits
                length = max(length, float(durations[durations <= 1.0].max()))
            step = int(rng.choice([0, 1, 2, 3, 4, 5, 7], p=[0.08, 0.5, 0.2, 0.08, 0.06, 0.04, 0.04]))
            up = rng.random() < 1 / (1 + math.exp((index - centre) / spread))  # drift back to the centre
            index = _reflect(index + (step if up else -step), len(pool))
            if last and cadence:
                index = min(cadence, key=lambda i: (abs(i - index), i))
            pitch = pool[index]
            velocity = start_velocity + (end_velocity - start_velocity) * k / max(1, n_notes - 1)
            velocity += 8 * (beats % bar == 0) + rng.normal(0, 4)  # accent the downbeat
            velocity = int(np.clip(round(velocity), 30, 120))
            span = length * beat
            # The phrase's last note is held to its end: a rest may follow, and gaps must not add up.
            held = span if last else max(span * gate, span - MAX_GAP_S)
            glide = 0.0
            if instrument.glide and melody and rng.random() < 0.5 and 0 < abs(melody[-1][0] - pitch) <= 5:
                glide = float(melody[-1][0] - pitch)
            if instrument.style == "struck" and span > _ROLL_ABOVE_S:
                strokes = max(2, int(span / roll_s))
                for stroke in range(strokes):
                    stroke_velocity = int(np.clip(velocity + rng.integers(-8, 9), 30, 127))
                    notes.append(Note(t + stroke * span / strokes, span / strokes, pitch, stroke_velocity))
            else:
                notes.append(Note(t, held, pitch, velocity, glide))
            if instrument.chords and length >= 1.0 and rng.random() < 0.3:
                # Up-strum: the melody string first, then one or two strings a third apart below.
                for below in range(1, int(rng.integers(2, 4))):
                    if index - 2 * below >= 0:
                        delay = below * strum_s
                        chord_tone = Note(t + delay, held - delay, pool[index - 2 * below], max(30, velocity - 10))
                        notes.append(chord_tone)
            melody.append((pitch, length))
            t += span
            beats += length
        if rng.random() < style.rest:
            rest = float(rng.choice([0.25, 0.5, 1.0]))
            t += min(rest * beat, MAX_REST_S)
            beats += rest

    return Score(
        notes=tuple(sorted(notes, key=lambda n: (n.onset, n.pitch))),
        melody=tuple(melody),
        tempo_bpm=tempo,
        key=f"{_NOTE_NAMES[tonic]} {scale}",
        vibrato_cents=instrument.vibrato_cents * float(rng.uniform(0.7, 1.3)),
        vibrato_hz=float(rng.uniform(5.0, 6.0)),
        glide_s=float(rng.uniform(0.06, 0.15)),
    )


def _reflect(index: int, n: int) -> int:
    """Fold an index that stepped off either end of ``range(n)`` back inside it."""
    if index < 0:
        index = -index
    if index > n - 1:
        index = 2 * (n - 1) - index
    return int(np.clip(index, 0, n - 1))


def melody_hash(score: Score) -> str:
    """Hash of a melody's intervals and rhythm, so transposed repeats also collide."""
    pitches = [p for p, _ in score.melody]
    shape = (tuple(np.diff(pitches).tolist()), tuple(b for _, b in score.melody))
    return hashlib.sha256(repr(shape).encode()).hexdigest()


def synthesize(
    instrument: Instrument, program: int, score: Score, n_samples: int, sample_rate: int,
    soundfont: str | os.PathLike,
) -> np.ndarray:
    """Play ``score`` on GM ``program`` of a SoundFont, dry and in mono.

    Note events land on their exact sample; the pitch wheel (vibrato, slides) is updated
    every :data:`BLOCK` samples. The bank is loaded once per process and reset before
    each clip, so clips are independent of what was rendered before them.

    Returns:
        ``[L]`` float64 waveform, ``L = n_samples``.
    """
    player = bank_player(str(soundfont), sample_rate)
    player.start(program, BEND_RANGE)
    events = []  # (sample, 0 = off before 1 = on, pitch, velocity)
    for note in score.notes:
        events.append((round(note.onset * sample_rate), 1, note.pitch, note.velocity))
        events.append((round((note.onset + note.held) * sample_rate), 0, note.pitch, 0))
    events = sorted(e for e in events if e[0] < n_samples)
    bends = instrument.vibrato_cents > 0 or instrument.glide
    grid = np.arange(0, n_samples, BLOCK) if bends else np.zeros(1, dtype=np.int64)
    bounds = np.unique(np.concatenate([grid, [e[0] for e in events], [n_samples]]).astype(np.int64))
    wheel = _pitch_wheel(score, bounds[:-1] / sample_rate) if bends else None

    buffer = memoryview(bytearray(n_samples * 8))  # stereo float32, interleaved
    e, last_wheel = 0, 8192
    for k, (start, stop) in enumerate(zip(bounds[:-1].tolist(), bounds[1:].tolist())):
        while e < len(events) and events[e][0] == start:
            _, on, pitch, velocity = events[e]
            player.note_on(pitch, velocity) if on else player.note_off(pitch)
            e += 1
        if wheel is not None and wheel[k] != last_wheel:
            last_wheel = int(wheel[k])
            player.bend(last_wheel)
        player.render(buffer[start * 8 : stop * 8])
    stereo = np.frombuffer(buffer, dtype=np.float32).reshape(n_samples, 2)
    return stereo.mean(axis=1, dtype=np.float64)


def _pitch_wheel(score: Score, times: np.ndarray) -> np.ndarray:
    """Pitch-wheel values (0..16383, 8192 = none) at ``times`` (s): slides plus vibrato."""
    onsets = np.array([n.onset for n in score.notes])
    held = np.array([n.held for n in score.notes])
    glide = np.array([n.glide for n in score.notes])
    which = np.clip(np.searchsorted(onsets, times, side="right") - 1, 0, len(onsets) - 1)
    since = np.maximum(times - onsets[which], 0.0)
    # A slide starts at the previous pitch and eases into the note (smoothstep).
    glide_s = np.maximum(np.minimum(score.glide_s, 0.5 * held[which]), 1e-3)
    progress = np.clip(since / glide_s, 0.0, 1.0)
    cents = 100.0 * glide[which] * (1 - progress**2 * (3 - 2 * progress))
    # Vibrato sets in 0.15 s after the onset and reaches full depth 0.2 s later.
    depth = score.vibrato_cents * np.clip((since - 0.15) / 0.2, 0.0, 1.0)
    cents += depth * np.sin(2 * np.pi * score.vibrato_hz * since)
    return np.clip(np.round(8192 + cents / (100 * BEND_RANGE) * 8192), 0, 16383).astype(np.int64)


def vary(wave: np.ndarray, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """Give a dry clip its own EQ, room and level.

    Args:
        wave: ``[L]`` dry waveform, not silent.
        sample_rate: in Hz.
        rng: the clip's effects generator.

    Returns:
        ``[L]`` float32 with RMS ``TARGET_RMS_DB`` +- 3 dB and peak at most ``PEAK_LIMIT``.
    """
    # Low and high shelves of +-4 dB (RBJ cookbook biquads).
    low = _shelf(rng.uniform(100, 400), rng.uniform(-4, 4), sample_rate, high=False)
    high = _shelf(min(rng.uniform(2000, 4000), 0.4 * sample_rate), rng.uniform(-4, 4), sample_rate, high=True)
    wave = signal.sosfilt(np.stack([low, high]), wave)
    # A small room: exponentially decaying noise with a 0.2-0.8 s reverberation time.
    rt60 = rng.uniform(0.2, 0.8)
    t = np.arange(int(rt60 * sample_rate)) / sample_rate
    impulse = rng.standard_normal(t.size) * np.exp(-6.9 * t / rt60)  # -60 dB at rt60
    impulse /= np.sqrt(np.sum(impulse**2))
    wet = rng.uniform(0.05, 0.2)
    wave = (1 - wet) * wave + wet * signal.fftconvolve(wave, impulse)[: wave.size]
    gain_db = TARGET_RMS_DB + rng.uniform(-3, 3)
    wave = wave * (10 ** (gain_db / 20) / np.sqrt(np.mean(wave**2)))
    peak = np.max(np.abs(wave))
    if peak > PEAK_LIMIT:
        wave *= PEAK_LIMIT / peak
    return wave.astype(np.float32)


def _shelf(freq: float, gain_db: float, sample_rate: int, *, high: bool) -> np.ndarray:
    """One shelving biquad (Bristow-Johnson's Audio EQ Cookbook, slope 1) as an sos row."""
    a = 10 ** (gain_db / 40)
    w0 = 2 * np.pi * freq / sample_rate
    cos, alpha = np.cos(w0), np.sin(w0) / np.sqrt(2)
    s = -1 if high else 1  # the high shelf mirrors the signs of the low shelf
    b = a * np.array([(a + 1) - s * (a - 1) * cos + 2 * np.sqrt(a) * alpha,
                      s * 2 * ((a - 1) - s * (a + 1) * cos),
                      (a + 1) - s * (a - 1) * cos - 2 * np.sqrt(a) * alpha])  # fmt: skip
    den = np.array([(a + 1) + s * (a - 1) * cos + 2 * np.sqrt(a) * alpha,
                    -s * 2 * ((a - 1) + s * (a + 1) * cos),
                    (a + 1) + s * (a - 1) * cos - 2 * np.sqrt(a) * alpha])  # fmt: skip
    return np.concatenate([b, den]) / den[0]


def describe_clip(wave: np.ndarray, sample_rate: int) -> dict[str, float]:
    """Measure what tells instruments apart: brightness and pitch range.

    The pitch track is YIN (de Cheveigne & Kawahara, JASA 2002): per ~93 ms frame, the
    cumulative-mean-normalised difference function, its first dip below 0.15, refined
    by a parabola. Frames more than 40 dB below the loudest, or without such a dip,
    count as unvoiced. A chord, or a ringing note overlapping the next one, is periodic
    at a common root that carries no energy; such an f0 is moved up to its lowest
    harmonic within 30 dB of the frame's strongest peak (``_lowest_sounding_harmonic``).

    Args:
        wave: ``[L]`` mono waveform.
        sample_rate: in Hz.

    Returns:
        ``centroid_hz`` (spectral centroid, frames weighted by energy),
        ``pitch_low`` / ``pitch_high`` (5th / 95th percentile of the f0 track, MIDI
        note numbers), ``f0_median_hz`` and ``voiced_fraction``; pitch values are NaN
        when no frame is voiced.
    """
    wave = np.asarray(wave, dtype=np.float64)
    width = 1 << max(8, round(math.log2(0.093 * sample_rate)))  # 1024 at 11025 Hz
    hop = width // 4
    lag_max = min(int(sample_rate / 30.0), width // 2)  # down to 30 Hz (tuba's low E1 is 41 Hz)
    lag_min = max(2, int(sample_rate / min(3000.0, sample_rate / 4)))  # up to 3 kHz (xylophone's E7 is 2.6 kHz)
    padded = np.pad(wave, (0, max(0, width + lag_max - wave.size)))
    frames = np.lib.stride_tricks.sliding_window_view(padded, width + lag_max)[::hop]  # [T, W + lag_max]

    spectrum = np.abs(np.fft.rfft(frames[:, :width] * np.hanning(width), axis=1))  # [T, W/2 + 1]
    freqs = np.fft.rfftfreq(width, 1 / sample_rate)
    energy = np.sum(spectrum**2, axis=1)
    centroid = np.sum(spectrum * freqs, axis=1) / np.maximum(np.sum(spectrum, axis=1), 1e-12)
    centroid_hz = float(np.sum(centroid * energy) / max(np.sum(energy), 1e-12))

    # d(tau) = e(0) + e(tau) - 2 r(tau), r by FFT, e(tau) from a running sum of squares.
    n_fft = 1 << int(math.ceil(math.log2(2 * width + lag_max)))
    head = np.fft.rfft(frames[:, :width], n_fft, axis=1)
    whole = np.fft.rfft(frames, n_fft, axis=1)
    corr = np.fft.irfft(np.conj(head) * whole, n_fft, axis=1)[:, : lag_max + 1]  # [T, lag_max + 1]
    squares = np.concatenate([np.zeros((len(frames), 1)), np.cumsum(frames**2, axis=1)], axis=1)
    lags = np.arange(lag_max + 1)
    shifted = squares[:, lags + width] - squares[:, lags]
    diff = np.maximum(shifted[:, :1] + shifted - 2 * corr, 0.0)
    cmnd = np.ones_like(diff)
    cmnd[:, 1:] = diff[:, 1:] * lags[1:] / np.maximum(np.cumsum(diff[:, 1:], axis=1), 1e-12)

    loud = shifted[:, 0] > 1e-4 * shifted[:, 0].max()
    f0 = []
    for row, magnitude in zip(cmnd[loud], spectrum[loud]):
        below = np.flatnonzero(row[lag_min:] < 0.15)
        if not below.size:
            continue
        lag = lag_min + below[0]
        while lag < lag_max and row[lag + 1] < row[lag]:
            lag += 1
        if lag < lag_max:  # parabolic refinement of the dip
            left, mid, right = row[lag - 1 : lag + 2]
            lag = lag + 0.5 * (left - right) / max(left - 2 * mid + right, 1e-12)
        f0.append(_lowest_sounding_harmonic(sample_rate / lag, magnitude, freqs[1]))
    f0 = np.array(f0)
    if f0.size == 0:
        low = high = median = float("nan")
    else:
        midi = 69 + 12 * np.log2(f0 / 440.0)
        low, high = (float(v) for v in np.percentile(midi, [5, 95]))
        median = float(np.median(f0))
    return {
        "centroid_hz": centroid_hz,
        "pitch_low": low,
        "pitch_high": high,
        "f0_median_hz": median,
        "voiced_fraction": f0.size / len(frames),
    }


TIMBRE_BANDS = 24


def timbre_vector(wave: np.ndarray, sample_rate: int, bands: int = TIMBRE_BANDS) -> np.ndarray:
    """A clip's spectral envelope: mean log energy in ``bands`` log-spaced bands (60 Hz to
    Nyquist) of its loud frames, less its mean (so level does not count). Two renderings of
    one instrument lie close; two instruments, further apart."""
    frames = np.lib.stride_tricks.sliding_window_view(np.asarray(wave, np.float64), 1024)[::256]
    power = np.abs(np.fft.rfft(frames * np.hanning(1024), axis=1)) ** 2  # [T, 513]
    loud = power.sum(1) > 1e-3 * power.sum(1).max()
    edges = np.geomspace(60.0, sample_rate / 2, bands + 1)
    which = np.digitize(np.fft.rfftfreq(1024, 1 / sample_rate), edges) - 1  # band of each bin, -1/bands outside
    energy = np.stack([power[loud][:, which == b].sum(1) for b in range(bands)], axis=1)  # [T', bands]
    envelope = np.log10(energy.mean(0) + 1e-12)
    return envelope - envelope.mean()


def describe_banks(index: pd.DataFrame, per_group: int = 8) -> pd.DataFrame:
    """Per clip (at most ``per_group`` of each class and bank, solo clips): class, bank,
    program, :func:`describe_clip`'s measures and the :func:`timbre_vector` (``t0..``)."""
    from sgn.audio import load_audio
    from sgn.data import solo_clips

    rows = []
    for (name, bank), group in solo_clips(index).groupby(["class", "bank"], sort=True):
        for _, clip in group.head(per_group).iterrows():
            wave, rate = load_audio(clip["abspath"])
            timbre = {f"t{b}": v for b, v in enumerate(timbre_vector(wave, rate))}
            rows.append({"class": name, "bank": bank, "program": int(clip["program"]), **describe_clip(wave, rate),
                         **timbre})
    return pd.DataFrame(rows)


def timbre_distances(described: pd.DataFrame) -> pd.DataFrame:
    """Per class: mean timbre distance between its clips on different banks, and to other classes' clips.

    The first below the second means the banks' renderings of a class stay nearer each
    other than to other instruments: the class is one category, not one recording.
    """
    vectors = described.filter(regex=r"^t\d+$").to_numpy()
    distance = np.linalg.norm(vectors[:, None] - vectors[None], axis=-1)  # [clips, clips]
    classes, banks = described["class"].to_numpy(), described["bank"].to_numpy()
    rows = []
    for name in dict.fromkeys(classes):
        mine, others = np.flatnonzero(classes == name), np.flatnonzero(classes != name)
        across = distance[np.ix_(mine, mine)][banks[mine][:, None] != banks[mine][None]]
        rows.append({"class": name, "across banks": across.mean() if across.size else float("nan"),
                     "to other classes": distance[np.ix_(mine, others)].mean()})
    return pd.DataFrame(rows)


def same_melody_on_banks(name: str, bank_paths: dict[str, str], seconds: float = 4.0, sample_rate: int = 11025,
                         seed: int = 0) -> dict[str, np.ndarray]:
    """One melody of class ``name`` played (dry) by each bank's main program: ``{bank: [L]}``."""
    instrument = INSTRUMENTS[name]
    playable = sorted(set.intersection(*(set(_playable_keys(path, instrument, instrument.program, sample_rate))
                                          for path in bank_paths.values())))
    score = compose(instrument, playable, seconds, np.random.default_rng(seed))
    n_samples = round(seconds * sample_rate)
    return {bank: synthesize(instrument, instrument.program, score, n_samples, sample_rate, path)
            for bank, path in bank_paths.items()}


def _lowest_sounding_harmonic(f0: float, magnitude: np.ndarray, bin_hz: float) -> float:
    """The lowest of ``f0, 2 f0, ... 8 f0`` with a spectral peak within 30 dB of the frame's maximum."""
    floor = magnitude.max() * 10 ** (-30 / 20)
    for k in range(1, 9):
        centre = round(k * f0 / bin_hz)
        if centre + 1 >= magnitude.size:
            break
        if magnitude[max(0, centre - 1) : centre + 2].max() >= floor:
            return k * f0
    return f0


def default_soundfont_path() -> Path:
    """The TimGM6mb General-MIDI SoundFont inside the installed ``pretty_midi`` package.

    Raises:
        SGNError: pretty_midi is not installed or lacks the file.
    """
    spec = importlib.util.find_spec("pretty_midi")  # locate without importing it
    if spec is None or not spec.submodule_search_locations:
        raise SGNError("soundfont: pretty_midi is not installed; install it or pass a .sf2 file")
    path = Path(next(iter(spec.submodule_search_locations))) / "TimGM6mb.sf2"
    if not path.is_file():
        raise SGNError(f"soundfont: {path} not found in the pretty_midi package; pass a .sf2 file")
    return path


def _playable_keys(soundfont: str, instrument: Instrument, program: int, sample_rate: int) -> list[int]:
    """The notes of ``instrument``'s range that a bank's ``program`` actually sounds.

    SoundFonts have holes (TimGM6mb's alto sax is silent on E4), so each key is probed.
    """
    player = bank_player(soundfont, sample_rate)
    return [key for key in range(instrument.low, instrument.high + 1) if player.probe(program, key, BEND_RANGE)]


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
    """Render SynthMUSIC into ``out_dir`` (see the module docstring for the layout).

    Idempotent: if ``out_dir`` already holds the data set these arguments describe, it
    is returned without work; one with other settings (or from another renderer version)
    is refused. The set is staged in ``.<name>.partial-<pid>-*`` beside ``out_dir``;
    staging left by a killed run (its pid no longer running) is removed.

    Args:
        out_dir: folder to create; its parent is created if missing.
        clips_per_class: 4 .. :data:`MAX_CLIPS_PER_CLASS` solo clips per class; 15% each
            for val, test_seen and test_unseen, the rest train.
        seconds: length of every clip, :data:`MIN_SECONDS` .. :data:`MAX_SECONDS`; all clips
            together at most :data:`MAX_TOTAL_SECONDS`.
        sample_rate: in Hz, :data:`MIN_RENDER_RATE` .. :data:`MAX_RENDER_RATE`; the
            synthesizer renders at this rate.
        seed: non-negative; with the other arguments and the banks it fixes every byte written.
        banks: names of :data:`sgn.soundfonts.BANKS` to render with (default: all three,
            fetched with npm; offline, pretty_midi's TimGM6mb alone, with a warning).
        held_out: the bank that renders test_unseen (and nothing else); ``None``: none
            held out. Ignored (with a warning) when only one bank is available.
        ensembles: ensemble pieces per test split (4 parts each, composed together).
        soundfont: one ``.sf2``/``.sf3`` file to render everything with instead of the banks.
        classes: a subset of :data:`sgn.data.MUSIC_CLASSES` (written in that order);
            ``None`` for all 11. A class's clips are the same in any subset.
        jobs: worker processes, at most the CPU count; ``None`` for ``min(2, cpu count)``,
            fewer for small sets (see :data:`CLIPS_PER_WORKER`). Results do not depend on
            it. Workers are spawned (a script calling this needs the
            ``if __name__ == "__main__":`` guard), run one thread each, load each bank once
            and die with this process, even when it is killed.
        progress: show a progress bar.

    Returns:
        ``out_dir`` as a :class:`~pathlib.Path`.

    Raises:
        SGNError: an invalid argument, an unknown or unusable bank (missing a class's
            program, unreadable, a checksum that differs), or ``out_dir`` holding
            something else.
    """
    out_dir = Path(out_dir)
    classes = _check_classes(classes)
    seconds, clips_per_class, sample_rate, seed, jobs = _check_numbers(
        seconds, clips_per_class, sample_rate, seed, jobs, len(classes)
    )
    if not isinstance(ensembles, int) or isinstance(ensembles, bool) or not 0 <= ensembles <= MAX_ENSEMBLES:
        raise SGNError(f"ensembles: expected a whole number of pieces in 0..{MAX_ENSEMBLES}, got {shorten(ensembles)}")
    bank_paths = _bank_paths(banks, soundfont)
    held_out = _check_held_out(held_out, bank_paths)
    _check_banks(bank_paths, classes, sample_rate)
    settings = {
        "format": FORMAT,
        "renderer": RENDERER_VERSION,
        "classes": list(classes),
        "clips_per_class": clips_per_class,
        "seconds": seconds,
        "sample_rate": sample_rate,
        "seed": seed,
        "banks": {name: {"file": Path(path).name, "sha256": sha256_file(path)} for name, path in bank_paths.items()},
        "held_out": held_out,
        "ensembles": ensembles,
    }
    if settings_match(out_dir, settings):
        logger.info("SynthMUSIC already rendered in %s", out_dir)
        return out_dir
    with staged_dir(out_dir) as partial:  # nothing appears at out_dir until every file is written
        tasks, rows = _plan(partial, classes, settings, bank_paths)
        n_clips = len(tasks)
        _run(tasks, min(jobs or min(2, os.cpu_count() or 1, math.ceil(n_clips / CLIPS_PER_WORKER)), n_clips), progress)
        index = pd.DataFrame(rows)
        index.to_csv(partial / "index.csv", index=False, lineterminator="\n", float_format="%.6f")
        write_provenance(partial, "synth_music", settings, instruments={n: asdict(INSTRUMENTS[n]) for n in classes},
                         programs=_class_programs(index), licences=_licences(bank_paths),
                         counts={"clips": len(rows), "per_split": index["split"].value_counts().to_dict()})
    minutes = len(rows) * seconds / 60
    logger.info("SynthMUSIC: %d clips (%.1f min of audio) from %d bank(s) written to %s", len(rows), minutes,
                len(bank_paths), out_dir)
    return out_dir


def _bank_paths(banks: Sequence[str] | None, soundfont: str | os.PathLike | None) -> dict[str, str]:
    if soundfont is None:
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


def _check_banks(bank_paths: dict[str, str], classes: Sequence[str], sample_rate: int) -> None:
    """Every bank loads and has a preset for every program of every class."""
    for name, path in bank_paths.items():
        player = bank_player(path, sample_rate)  # the rendering's own player: each bank loads once
        for cls in classes:
            missing = [p for p in INSTRUMENTS[cls].programs if not player.has_program(p)]
            if missing:
                raise SGNError(f"soundfont: bank {name} ({path}) has no preset for GM program {missing[0]} "
                               f"(0-based) of {cls}")


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
    if not is_int(clips_per_class) or not 4 <= clips_per_class <= MAX_CLIPS_PER_CLASS:
        raise SGNError(f"clips_per_class: expected an integer in 4..{MAX_CLIPS_PER_CLASS} "
                       f"(a clip each for train, val, test_seen and test_unseen at least), got {shorten(clips_per_class)}")
    if seconds * clips_per_class * n_classes > MAX_TOTAL_SECONDS:
        raise SGNError(f"seconds x clips_per_class x classes: {seconds * clips_per_class * n_classes:g} s of audio, "
                       f"expected at most {MAX_TOTAL_SECONDS} s ({MAX_TOTAL_SECONDS // 3600} h)")
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
    test_unseen take :data:`HELD_OUT_FRACTION` each, train the rest."""
    n = max(1, round(HELD_OUT_FRACTION * clips_per_class))
    held = ["val", "test_seen"] + (["test_unseen"] if held_out else [])
    return ["train"] * (clips_per_class - n * len(held)) + [split for split in held for _ in range(n)]


def _plan(root: Path, classes: Sequence[str], settings: dict, bank_paths: dict[str, str]):
    """Compose every clip (in this process, to check melodies are unique) and its index row.

    A solo clip's (bank, program) cycles over the banks seen in training and the class's
    programs; test_unseen clips use the held-out bank alone. Then the ensemble pieces.

    Returns:
        ``(tasks, rows)``: one :class:`_ClipTask` writing under ``root`` and one index row per clip.
    """
    held_out, seed, rate = settings["held_out"], settings["seed"], settings["sample_rate"]
    n_samples = round(settings["seconds"] * rate)
    seen_banks = [name for name in bank_paths if name != held_out]
    splits = _splits(settings["clips_per_class"], held_out)
    playable = _Playable(bank_paths, rate)
    melodies: set[str] = set()
    tasks, rows = [], []
    for name in classes:
        instrument, programs = INSTRUMENTS[name], INSTRUMENTS[name].programs
        (root / name).mkdir()
        for clip, split in enumerate(splits):
            bank, k = (held_out, clip) if split == "test_unseen" else (seen_banks[clip % len(seen_banks)], clip // len(seen_banks))
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
    from sgn.ensemble import plan_pieces

    for split, banks in (("test_seen", seen_banks), ("test_unseen", [held_out] if held_out else [])):
        for part in plan_pieces(split, classes, banks, settings, playable) if banks else []:
            (root / part.path).parent.mkdir(parents=True, exist_ok=True)
            tasks.append(_ClipTask(INSTRUMENTS[part.name], part.program, part.score, part.effects_seed, n_samples,
                                   rate, bank_paths[part.bank], str(root / part.path)))
            rows.append(_index_row(part.path, part.name, split, part.bank, part.program, part.score, n_samples, rate,
                                   part.piece))
    return tasks, rows


class _Playable:
    """The keys each (bank, class, program) sounds, probed once."""

    def __init__(self, bank_paths: dict[str, str], sample_rate: int):
        self.bank_paths, self.sample_rate, self.known = bank_paths, sample_rate, {}

    def __call__(self, bank: str, name: str, program: int) -> list[int]:
        key = (bank, name, program)
        if key not in self.known:
            keys = _playable_keys(self.bank_paths[bank], INSTRUMENTS[name], program, self.sample_rate)
            if len(keys) < 12:
                raise SGNError(f"soundfont: bank {bank} sounds {len(keys)} notes of {name}'s range on GM program "
                               f"{program}, expected >= 12")
            self.known[key] = keys
        return self.known[key]


def _index_row(path: str, name: str, split: str, bank: str, program: int, score: Score, n_samples: int,
               rate: int, piece: str = "") -> dict:
    pitches = [n.pitch for n in score.notes]
    row = dict(zip(INDEX_COLUMNS, (path, name, split, n_samples / rate, rate)))
    row.update(bank=bank, program=program, piece=piece, style=INSTRUMENTS[name].style, key=score.key,
               tempo_bpm=score.tempo_bpm, n_notes=len(score.melody), low_note=min(pitches), high_note=max(pitches))
    return row


def _run(tasks: list[_ClipTask], jobs: int, progress: bool) -> None:
    """Render ``tasks`` in this process (``jobs == 1``) or in ``jobs`` single-threaded workers."""
    with tqdm(total=len(tasks), desc="SynthMUSIC", unit="clip", disable=not progress) as bar:
        if jobs == 1:
            for task in tasks:
                _render_clip(task)
                bar.update()
            return
        with worker_pool(jobs) as pool:
            for _ in pool.map(_render_clip, tasks, chunksize=max(1, min(8, len(tasks) // (4 * jobs)))):
                bar.update()
