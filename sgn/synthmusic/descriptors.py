"""What a SynthMUSIC clip sounds like, measured: brightness, pitch range and spectral envelope.

:func:`describe_clip` measures a clip's spectral centroid and pitch range (YIN, de
Cheveigne & Kawahara, JASA 2002), which shows that the classes differ;
:func:`timbre_distances` shows that a class's renderings on different banks stay nearer
each other than to other classes (the data chapter and ``bench/bench_synth.py --describe``).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from sgn.audio import load_audio
from sgn.data import solo_clips
from sgn.synthmusic.banks import playable_keys
from sgn.synthmusic.render import synthesize
from sgn.synthmusic.scores import INSTRUMENTS, compose


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

    f0 = _yin(frames, spectrum, freqs[1], width, lag_min, lag_max, sample_rate)
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


def _yin(frames: np.ndarray, spectrum: np.ndarray, bin_hz: float, width: int, lag_min: int, lag_max: int,
         sample_rate: int) -> np.ndarray:
    """YIN's f0 (Hz) of each voiced frame of ``frames [T, width + lag_max]`` (``spectrum``: their magnitudes)."""
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
        f0.append(_lowest_sounding_harmonic(sample_rate / lag, magnitude, bin_hz))
    return np.array(f0)


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


def nearest_classes(described: pd.DataFrame) -> pd.DataFrame:
    """Per bank and class: which class's timbre, as the *other* banks play it, lies nearest
    this bank's rendering of the class (mean :func:`timbre_vector` of each group).

    A bank whose rendering of a class lies nearer another class (``rank`` above 1) plays it
    unlike the other banks do: a candidate for leaving that class out of the bank.

    Returns:
        ``bank``, ``class``, ``rank`` (1 = its own class is nearest) and ``nearest`` (the
        nearest class).
    """
    centres = described.groupby(["bank", "class"]).mean(numeric_only=True).filter(regex=r"^t\d+$")
    rows = []
    for (bank, name), centre in centres.iterrows():
        others = centres.drop(index=bank, level="bank").groupby(level="class").mean()
        distance = np.linalg.norm(others.to_numpy() - centre.to_numpy(), axis=1)
        order = list(others.index[np.argsort(distance)])
        rows.append({"bank": bank, "class": name, "rank": order.index(name) + 1 if name in order else np.nan,
                     "nearest": order[0]})
    return pd.DataFrame(rows)


def same_melody_on_banks(name: str, bank_paths: dict[str, str], seconds: float = 4.0, sample_rate: int = 11025,
                         seed: int = 0) -> dict[str, np.ndarray]:
    """One melody of class ``name`` played (dry) by each bank's main program: ``{bank: [L]}``."""
    instrument = INSTRUMENTS[name]
    playable = sorted(set.intersection(*(set(playable_keys(path, instrument, instrument.program, sample_rate))
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
