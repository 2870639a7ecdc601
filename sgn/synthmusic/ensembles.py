"""Ensemble pieces for SynthMUSIC: parts composed together, so sources share harmony and onsets.

MUSIC's duets are two players in one key and tempo; independent random melodies in
unrelated keys are much easier to separate. A piece here has one :class:`Frame`
(key, tempo, meter, a chord progression and a rhythm skeleton of onsets) and one part
per instrument: each part plays most of the skeleton's onsets, so onsets coincide, and
on each onset a tone of the bar's chord in the instrument's range, moving to the
nearest such tone (voice leading), so the parts share harmonics. Each part is rendered
alone (it is the reference source); ``sgn data mixtures --mode ensemble`` mixes the
parts of a piece at one offset.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from sgn.data import MUSIC_CLASSES
from sgn.synthmusic.scores import GATES, INSTRUMENTS, NOTE_NAMES, SCALES, STYLES, Instrument, Note, Score

# Chord progressions as the scale degree (0-based) of each bar's root, cycled over the piece.
PROGRESSIONS: tuple[tuple[int, ...], ...] = (
    (0, 5, 3, 4), (0, 3, 4, 0), (0, 4, 5, 3), (5, 3, 0, 4), (0, 3, 0, 4), (0, 1, 4, 0),
)
# Rhythm patterns of one bar, in beats, by meter.
BAR_PATTERNS: dict[int, tuple[tuple[float, ...], ...]] = {
    4: ((0, 1, 2, 3), (0, 1.5, 2, 3), (0, 2), (0, 0.5, 1, 2, 3), (0, 1, 2, 2.5, 3), (0, 1, 2)),
    3: ((0, 1, 2), (0, 2), (0, 1, 1.5, 2), (0, 0.5, 1, 2)),
}
ENSEMBLE_SCALES = ("major", "minor", "dorian", "mixolydian")


@dataclass(frozen=True)
class Frame:
    """What the parts of one piece share."""

    tonic: int
    scale: str
    tempo_bpm: float
    bar: int  # beats per bar
    chords: tuple[int, ...]  # scale degree of each bar's root
    onsets: tuple[float, ...]  # the rhythm skeleton, in beats from the start

    @property
    def key(self) -> str:
        return f"{NOTE_NAMES[self.tonic]} {self.scale}"

    def chord_tones(self, beat: float) -> set[int]:
        """Pitch classes of the triad sounding at ``beat``."""
        degrees = SCALES[self.scale]
        root = self.chords[int(beat // self.bar) % len(self.chords)]
        return {(self.tonic + degrees[(root + step) % len(degrees)]) % 12 for step in (0, 2, 4)}


def compose_frame(seconds: float, rng: np.random.Generator) -> Frame:
    """Draw a piece's key, tempo, meter, progression and rhythm skeleton for ``seconds``."""
    tempo = round(float(rng.uniform(72.0, 126.0)), 1)
    bar = int(rng.choice([3, 4], p=[0.3, 0.7]))
    total_beats = seconds * tempo / 60.0
    onsets = []
    for start in np.arange(0.0, total_beats + bar, bar):
        pattern = BAR_PATTERNS[bar][int(rng.integers(len(BAR_PATTERNS[bar])))]
        onsets += [float(start + beat) for beat in pattern if start + beat < total_beats + 1]
    progression = PROGRESSIONS[int(rng.integers(len(PROGRESSIONS)))]
    return Frame(int(rng.integers(12)), str(rng.choice(ENSEMBLE_SCALES)), tempo, bar, progression, tuple(onsets))


def compose_part(instrument: Instrument, playable: Sequence[int], frame: Frame, seconds: float,
                 rng: np.random.Generator) -> Score:
    """One instrument's part of a piece: most skeleton onsets, on the chord's tones.

    Args:
        instrument: range, style and habits of the player.
        playable: MIDI notes the bank sounds for this program.
        frame: what the piece's parts share.
        seconds: the part runs until at least this time.
        rng: the part's generator.
    """
    style = STYLES[instrument.style]
    beat_s = 60.0 / frame.tempo_bpm
    plays = [t for t in frame.onsets if rng.random() < 0.8] or list(frame.onsets[:1])
    if plays[0] * beat_s >= seconds:  # every chosen onset after the end: a silent part
        plays = [frame.onsets[0], *plays]
    gate = GATES[int(rng.choice(3, p=style.articulation))]
    loudness = rng.uniform(65, 100)
    pitch = int(rng.choice(playable[len(playable) // 4 : 3 * len(playable) // 4 + 1]))
    notes, melody = [], []
    for k, beat in enumerate(plays):
        if beat * beat_s >= seconds:
            break
        next_beat = plays[k + 1] if k + 1 < len(plays) else beat + frame.bar
        tones = frame.chord_tones(beat)
        candidates = [p for p in playable if p % 12 in tones] or list(playable)
        pitch = min(candidates, key=lambda p: (abs(p - pitch) + rng.random() * 3, p))
        span = min((next_beat - beat) * beat_s, style.max_note_s)
        velocity = int(np.clip(round(loudness + 10 * (beat % frame.bar == 0) + rng.normal(0, 5)), 30, 120))
        notes.append(Note(beat * beat_s, max(0.05, span * gate), pitch, velocity))
        melody.append((pitch, float(next_beat - beat)))
    return Score(
        notes=tuple(notes),
        melody=tuple(melody),
        tempo_bpm=frame.tempo_bpm,
        key=frame.key,
        vibrato_cents=instrument.vibrato_cents * float(rng.uniform(0.7, 1.3)),
        vibrato_hz=float(rng.uniform(5.0, 6.0)),
        glide_s=float(rng.uniform(0.06, 0.15)),
    )


# Parts of a piece: the instruments playing together.
PARTS_PER_PIECE = 4


@dataclass(frozen=True)
class Part:
    """One part of a piece, ready to render: its file, class, bank, program, score and effects seed."""

    path: str
    name: str
    bank: str
    program: int
    score: Score
    effects_seed: np.random.SeedSequence
    piece: str


def plan_pieces(split: str, classes: Sequence[str], banks: Sequence[str], settings: dict, playable) -> list[Part]:
    """Compose ``settings["ensembles"]`` pieces of :data:`PARTS_PER_PIECE` distinct classes for ``split``.

    Args:
        split: ``test_seen`` or ``test_unseen``; the piece ids and files carry it.
        classes: the data set's classes (a piece draws its parts from them).
        banks: the banks this split renders with (a part's bank cycles over them).
        settings: the data set's settings (``seed``, ``seconds``, ``ensembles``).
        playable: ``(bank, class, program) -> keys`` the bank sounds.
    """
    parts = []
    for number in range(settings["ensembles"]):
        piece = f"{split}_{number:03d}"
        # one generator per (seed, split, piece): pieces do not depend on the solo clips
        frame_seed, *part_seeds = np.random.SeedSequence(
            [settings["seed"], 1000 + ("test_seen", "test_unseen").index(split), number]).spawn(1 + 2 * PARTS_PER_PIECE)
        rng = np.random.default_rng(frame_seed)
        frame = compose_frame(settings["seconds"], rng)
        chosen = rng.choice(len(classes), size=min(PARTS_PER_PIECE, len(classes)), replace=False)
        for slot, class_index in enumerate(sorted(int(i) for i in chosen)):
            name = classes[class_index]
            programs = INSTRUMENTS[name].programs
            bank, program = banks[(number + slot) % len(banks)], programs[(number + slot) % len(programs)]
            part_rng = np.random.default_rng(part_seeds[2 * slot])
            score = compose_part(INSTRUMENTS[name], playable(bank, name, program), frame, settings["seconds"], part_rng)
            path = f"ensembles/{piece}/{MUSIC_CLASSES.index(name):02d}_{name}.wav"
            parts.append(Part(path, name, bank, program, score, part_seeds[2 * slot + 1], piece))
    return parts
