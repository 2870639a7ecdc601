"""What SynthMUSIC plays: the 11 instruments, and the random melodies they play.

A :class:`Score` is a list of note-ons with the clip's tempo, key and expression; it is
composed here from a generator and played by :mod:`sgn.synthmusic.render`. One melody:

* in the instrument's playable range (:data:`INSTRUMENTS`): random key and scale
  (pentatonic for the erhu), a random walk over the scale with occasional leaps, phrases
  of 3-8 notes with a crescendo or diminuendo, random tempo and note lengths, legato,
  detached or staccato phrases, rests of at most :data:`MAX_REST_S`;
* played the way the instrument is played: vibrato on bowed strings (and a little on
  flute and saxophone), slides into notes on the erhu, strummed chords on the guitar,
  rolls on long xylophone notes.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

# Longest rest in a melody, so that every clip sounds throughout.
MAX_REST_S = 0.5
# Longest silence between a released note and the next one.
MAX_GAP_S = 0.2

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
NOTE_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")


@dataclass(frozen=True)
class Instrument:
    """How SynthMUSIC plays one class.

    Attributes:
        program: General-MIDI program, 0-based (bank 0 of the SoundFont).
        low: lowest MIDI note played.
        high: highest MIDI note played.
        style: articulation family, a key of :data:`STYLES`: ``bowed``, ``plucked``,
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
class Style:
    """How an articulation family phrases: note lengths, articulation, rests."""

    weights: tuple[float, ...]  # relative probability of each of _DURATIONS
    articulation: tuple[float, float, float]  # P(legato, detached, staccato) for a phrase
    rest: float  # probability of a short rest (a breath for winds) after a phrase
    max_note_s: float  # longest single note (breath, bow length, decay)


_BLOWN = Style((0.5, 3, 1, 4, 2, 2, 0.5), (0.5, 0.35, 0.15), 0.8, 2.5)
STYLES: dict[str, Style] = {
    "bowed": Style((0.5, 3, 1, 4, 2, 2, 1), (0.6, 0.3, 0.1), 0.4, 3.0),
    "bellows": Style((1, 4, 1, 4, 2, 2, 1), (0.6, 0.3, 0.1), 0.3, 3.0),
    "plucked": Style((2, 5, 1, 4, 2, 1.5, 0.5), (0.2, 0.7, 0.1), 0.3, 2.5),
    # Long xylophone notes are played as rolls (see compose), the bars decay in ~0.3 s.
    "struck": Style((4, 6, 1, 3, 1, 1, 0), (0.0, 1.0, 0.0), 0.3, 1.5),
    "wind": _BLOWN,
    "reed": _BLOWN,
    "brass": _BLOWN,
}
GATES = (1.0, 0.85, 0.5)  # held fraction of a note for legato, detached, staccato
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


@dataclass
class _Performance:
    """One clip's melody in the making: the choices drawn for it, and where it has got to."""

    instrument: Instrument
    style: Style
    beat: float  # seconds per beat
    pool: list[int]  # playable notes of the scale
    cadence: list[int]  # indices into pool a phrase may end on
    centre: float  # the part of the range the melody drifts back to
    spread: float
    index: int  # the current note, an index into pool
    durations: np.ndarray  # note lengths (beats) that fit the style's longest note
    weights: np.ndarray
    bar: int
    loudness: float
    roll_s: float
    strum_s: float
    t: float = 0.0
    beats: float = 0.0
    notes: list[Note] = field(default_factory=list)
    melody: list[tuple[int, float]] = field(default_factory=list)


def _perform(instrument: Instrument, playable: Sequence[int], beat: float, tonic: int, scale: str,
             rng: np.random.Generator) -> _Performance:
    """Draw what stays fixed through a clip: its register, note lengths, meter and touch."""
    style = STYLES[instrument.style]
    degrees = SCALES[scale]
    pool = [p for p in playable if (p - tonic) % 12 in degrees]
    # Phrases end on the tonic, the third or the fifth.
    rest_tones = {tonic % 12, (tonic + 7) % 12, (tonic + (3 if 3 in degrees else 4)) % 12}
    cadence = [i for i, p in enumerate(pool) if p % 12 in rest_tones]
    # Each clip centres on its own part of the range, so the set covers all of it.
    centre = rng.uniform(0.25, 0.75) * (len(pool) - 1)
    index = int(np.clip(round(centre + rng.normal(0, 2)), 0, len(pool) - 1))
    fits = _DURATIONS * beat <= style.max_note_s
    durations = _DURATIONS[fits] if fits.any() else _DURATIONS[:1]
    weights = np.array(style.weights)[fits] if fits.any() else np.ones(1)
    return _Performance(instrument, style, beat, pool, cadence, centre, max(2.0, len(pool) / 6), index, durations,
                        weights / weights.sum(), bar=int(rng.choice([3, 4])), loudness=rng.uniform(60, 105),
                        roll_s=rng.uniform(0.07, 0.1), strum_s=rng.uniform(0.012, 0.03))


def compose(instrument: Instrument, playable: Sequence[int], seconds: float, rng: np.random.Generator) -> Score:
    """Write a random melody of at least ``seconds`` for ``instrument``.

    Args:
        instrument: range, style and habits of the player.
        playable: MIDI notes the SoundFont sounds for this program (see
            :func:`sgn.synthmusic.banks.playable_keys`).
        seconds: the melody runs until at least this time.
        rng: the clip's generator; the only source of randomness (the same draws in
            the same order give the same score: the rendered bytes rely on it).

    Returns:
        the :class:`Score`.
    """
    tempo = round(float(rng.uniform(*instrument.tempo)), 1)
    tonic = int(rng.integers(12))
    scale = str(rng.choice(instrument.scales))
    clip = _perform(instrument, playable, 60.0 / tempo, tonic, scale, rng)
    while clip.t < seconds:
        _phrase(clip, seconds, rng)
        if rng.random() < clip.style.rest:
            rest = float(rng.choice([0.25, 0.5, 1.0]))
            clip.t += min(rest * clip.beat, MAX_REST_S)
            clip.beats += rest
    return Score(
        notes=tuple(sorted(clip.notes, key=lambda n: (n.onset, n.pitch))),
        melody=tuple(clip.melody),
        tempo_bpm=tempo,
        key=f"{NOTE_NAMES[tonic]} {scale}",
        vibrato_cents=instrument.vibrato_cents * float(rng.uniform(0.7, 1.3)),
        vibrato_hz=float(rng.uniform(5.0, 6.0)),
        glide_s=float(rng.uniform(0.06, 0.15)),
    )


def _phrase(clip: _Performance, seconds: float, rng: np.random.Generator) -> None:
    """3-8 notes with one articulation and a crescendo or diminuendo, ending on a cadence tone."""
    n_notes = int(rng.integers(3, 9))
    gate = GATES[rng.choice(3, p=clip.style.articulation)]
    start_velocity, end_velocity = clip.loudness + rng.uniform(-15, 15, size=2)
    for k in range(n_notes):
        if clip.t >= seconds:  # nothing after the clip's end counts towards the melody
            break
        last = k == n_notes - 1
        length = float(rng.choice(clip.durations, p=clip.weights))
        if last:  # phrases end on a longer note, where one fits
            length = max(length, float(clip.durations[clip.durations <= 1.0].max()))
        step = int(rng.choice([0, 1, 2, 3, 4, 5, 7], p=[0.08, 0.5, 0.2, 0.08, 0.06, 0.04, 0.04]))
        up = rng.random() < 1 / (1 + math.exp((clip.index - clip.centre) / clip.spread))  # drift back to the centre
        clip.index = _reflect(clip.index + (step if up else -step), len(clip.pool))
        if last and clip.cadence:
            clip.index = min(clip.cadence, key=lambda i: (abs(i - clip.index), i))
        velocity = start_velocity + (end_velocity - start_velocity) * k / max(1, n_notes - 1)
        velocity += 8 * (clip.beats % clip.bar == 0) + rng.normal(0, 4)  # accent the downbeat
        span = length * clip.beat
        # The phrase's last note is held to its end: a rest may follow, and gaps must not add up.
        held = span if last else max(span * gate, span - MAX_GAP_S)
        _play(clip, length, span, held, int(np.clip(round(velocity), 30, 120)), rng)


def _play(clip: _Performance, length: float, span: float, held: float, velocity: int,
          rng: np.random.Generator) -> None:
    """Add the current note as the instrument plays it: a slide, a roll, or a strummed chord."""
    instrument, pitch = clip.instrument, clip.pool[clip.index]
    glide = 0.0
    if instrument.glide and clip.melody and rng.random() < 0.5 and 0 < abs(clip.melody[-1][0] - pitch) <= 5:
        glide = float(clip.melody[-1][0] - pitch)
    if instrument.style == "struck" and span > _ROLL_ABOVE_S:
        strokes = max(2, int(span / clip.roll_s))
        for stroke in range(strokes):
            stroke_velocity = int(np.clip(velocity + rng.integers(-8, 9), 30, 127))
            clip.notes.append(Note(clip.t + stroke * span / strokes, span / strokes, pitch, stroke_velocity))
    else:
        clip.notes.append(Note(clip.t, held, pitch, velocity, glide))
    if instrument.chords and length >= 1.0 and rng.random() < 0.3:
        # Up-strum: the melody string first, then one or two strings a third apart below.
        for below in range(1, int(rng.integers(2, 4))):
            if clip.index - 2 * below >= 0:
                delay = below * clip.strum_s
                clip.notes.append(Note(clip.t + delay, held - delay, clip.pool[clip.index - 2 * below],
                                       max(30, velocity - 10)))
    clip.melody.append((pitch, length))
    clip.t += span
    clip.beats += length


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
