"""How SynthMUSIC sounds: a :class:`~sgn.synthmusic.scores.Score` played on a SoundFont
program, then given its own EQ, room and level.

Note events land on their exact sample; the pitch wheel (vibrato, slides) is updated
every :data:`BLOCK` samples. :func:`vary` makes each clip its own recording: random low
and high shelf EQ, a short synthetic reverb and a random level (never clipped), so a
model cannot memorise one rendering.
"""

from __future__ import annotations

import os

import numpy as np
from scipy import signal

from sgn.augment import random_room
from sgn.synthmusic.banks import BEND_RANGE, bank_player
from sgn.synthmusic.scores import Instrument, Score

# Samples between pitch-wheel updates (2.9 ms at 11025 Hz): smooth vibrato and slides.
BLOCK = 32
# RMS level clips are normalised to before a random gain, and the peak never exceeded.
TARGET_RMS_DB = -20.0
PEAK_LIMIT = 0.95


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
    wheel = pitch_wheel(score, bounds[:-1] / sample_rate) if bends else None

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


def pitch_wheel(score: Score, times: np.ndarray) -> np.ndarray:
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
    # A small room: 0.2-0.8 s of reverberation, 5-20% wet (the augmentation's rooms are larger).
    wave = random_room(wave, sample_rate, rng, rt60_range=(0.2, 0.8), wet_range=(0.05, 0.2))
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

