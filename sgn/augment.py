"""On-the-fly augmentation of the training sources: timbres and rooms the banks never played.

SynthMUSIC's clips already carry a fixed EQ, room and level each (rendered once,
:func:`sgn.synthmusic.render.vary`); these draw new ones every time a source enters a
training mixture, so a network sees more than the banks' timbres. Each source of a
mixture is changed before mixing, so the targets are the changed sources and the mixture
stays their sum. Every draw comes from the mixture's own generator: a resumed run sees
the same data. All of it is numpy on one segment (a few FFTs of 2^14 points): cost per
step in ``bench/bench_augment.py``.

=============  =====================================================================
field          what it draws, per source
=============  =====================================================================
eq_db          a smooth random EQ: gains uniform in +-eq_db dB at 8 log-spaced
               frequencies (50 Hz to Nyquist), interpolated on log frequency
pitch          a resampling by 2^(u/12), u uniform in +-pitch semitones (pitch and
               tempo move together, by at most 6% for one semitone)
reverb         the probability of a generated room: exponentially decaying noise of
               RT60 0.2-1.2 s, mixed 10-50% wet
noise_db       the highest level of a white noise floor, dB below the source's RMS
               (drawn uniformly between noise_db and noise_db - 20; 0 = none)
=============  =====================================================================
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import signal

EQ_POINTS = 8
EQ_LOWEST_HZ = 50.0
RT60_RANGE_S = (0.2, 1.2)
WET_RANGE = (0.1, 0.5)
NOISE_SPAN_DB = 20.0
MAX_PITCH = 2.0  # semitones; config bound (sgn.config.RANGES)


@dataclass(frozen=True)
class Augmentation:
    """What to draw for each training source (all zero: nothing changes). See the module table."""

    eq_db: float = 0.0
    pitch: float = 0.0
    reverb: float = 0.0
    noise_db: float = 0.0

    @property
    def active(self) -> bool:
        return bool(self.eq_db or self.pitch or self.reverb or self.noise_db)

    def read_length(self, length: int) -> int:
        """Samples to read for a source of ``length`` samples: room for the largest resampling."""
        return math.ceil(length * 2 ** (self.pitch / 12)) + 1 if self.pitch else length

    def __call__(self, wave: np.ndarray, length: int, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
        """``wave`` (:meth:`read_length` samples) changed, as ``length`` float32 samples."""
        wave = np.asarray(wave, np.float64)
        if self.pitch:
            wave = resample_by(wave, 2 ** (rng.uniform(-self.pitch, self.pitch) / 12), length)
        if self.eq_db:
            wave = random_eq(wave, sample_rate, self.eq_db, rng)
        if self.reverb and rng.random() < self.reverb:
            wave = random_room(wave, sample_rate, rng)
        if self.noise_db:
            rms = np.sqrt(np.mean(wave**2))
            level_db = -abs(self.noise_db) - rng.uniform(0, NOISE_SPAN_DB)
            wave = wave + rng.standard_normal(wave.size) * rms * 10 ** (level_db / 20)
        return wave[:length].astype(np.float32)


def resample_by(wave: np.ndarray, ratio: float, length: int) -> np.ndarray:
    """``length`` samples of ``wave`` played ``ratio`` times faster (pitch up by ``12 log2 ratio``
    semitones), by linear interpolation; past the end of ``wave``, silence."""
    positions = np.arange(length) * ratio
    return np.interp(positions, np.arange(wave.size), wave, right=0.0)


def random_eq(wave: np.ndarray, sample_rate: int, max_db: float, rng: np.random.Generator) -> np.ndarray:
    """``wave`` through a zero-phase random EQ curve (gains within ``+-max_db`` dB)."""
    spectrum = np.fft.rfft(wave)
    freqs = np.fft.rfftfreq(wave.size, 1 / sample_rate)
    anchors = np.geomspace(EQ_LOWEST_HZ, sample_rate / 2, EQ_POINTS)
    gains_db = rng.uniform(-max_db, max_db, EQ_POINTS)
    curve_db = np.interp(np.log(np.maximum(freqs, EQ_LOWEST_HZ)), np.log(anchors), gains_db)
    return np.fft.irfft(spectrum * 10 ** (curve_db / 20), n=wave.size)


def random_room(wave: np.ndarray, sample_rate: int, rng: np.random.Generator,
                rt60_range: tuple[float, float] = RT60_RANGE_S,
                wet_range: tuple[float, float] = WET_RANGE) -> np.ndarray:
    """``wave`` in a generated room: a unit-energy decaying-noise impulse response with a
    reverberation time drawn from ``rt60_range`` (s), mixed in at a share drawn from ``wet_range``."""
    rt60 = rng.uniform(*rt60_range)
    t = np.arange(int(rt60 * sample_rate)) / sample_rate
    impulse = rng.standard_normal(t.size) * np.exp(-6.9 * t / rt60)  # -60 dB at rt60
    impulse /= np.sqrt(np.sum(impulse**2))
    wet = rng.uniform(*wet_range)
    return (1 - wet) * wave + wet * signal.fftconvolve(wave, impulse)[: wave.size]
