"""On-the-fly augmentation (sgn.augment): each change does what it says, and nothing when off."""

from __future__ import annotations

import numpy as np
import pytest

from sgn.audio import STFTSpec
from sgn.augment import Augmentation, random_eq, random_room, resample_by
from sgn.config import apply_overrides, load_config
from sgn.data import MixtureDataset, index_classes, read_index
from sgn.utils import SGNError

RATE = 11025


def tone(freq: float, n: int = 8192) -> np.ndarray:
    return np.sin(2 * np.pi * freq * np.arange(n) / RATE)


def peak_hz(wave: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(wave * np.hanning(wave.size)))
    return float(np.fft.rfftfreq(wave.size, 1 / RATE)[spectrum.argmax()])


def test_off_changes_nothing_and_reads_no_more():
    off = Augmentation()
    assert not off.active and off.read_length(8192) == 8192


def test_resampling_moves_the_pitch_by_the_ratio():
    ratio = 2 ** (1 / 12)  # one semitone up
    shifted = resample_by(tone(440.0, 9000), ratio, 8192)
    assert shifted.size == 8192
    assert peak_hz(shifted) == pytest.approx(440.0 * ratio, abs=2.0)


def test_eq_stays_within_its_gains_and_is_zero_phase():
    rng = np.random.default_rng(0)
    noise = rng.standard_normal(16384)
    out = random_eq(noise, RATE, 6.0, rng)
    ratio_db = 20 * np.log10(np.abs(np.fft.rfft(out)[10:]) / np.abs(np.fft.rfft(noise)[10:]))
    assert ratio_db.min() >= -6.0 - 1e-6 and ratio_db.max() <= 6.0 + 1e-6
    assert ratio_db.max() - ratio_db.min() > 1.0  # it does change the colour
    phase = np.angle(np.fft.rfft(out)[10:] / np.fft.rfft(noise)[10:])
    assert np.abs(phase).max() < 1e-6


def test_a_room_adds_a_decaying_tail():
    click = np.zeros(16384)
    click[100] = 1.0
    wet = random_room(click, RATE, np.random.default_rng(1))
    tail = wet[200:]
    assert np.sum(tail**2) > 1e-4  # energy after the click: reverberation
    early, late = np.sum(tail[:2000] ** 2), np.sum(tail[6000:8000] ** 2)
    assert late < early  # and it decays


@pytest.mark.parametrize("noise_db", [20.0, 40.0])
def test_the_noise_floor_is_at_its_level(noise_db):
    change = Augmentation(noise_db=noise_db)
    wave = tone(440.0)
    out = change(wave, wave.size, RATE, np.random.default_rng(2))
    snr = 10 * np.log10(np.mean(wave**2) / np.mean((out - wave) ** 2))
    assert noise_db - 0.5 <= snr <= noise_db + 20.5


def test_augmented_mixtures_are_reproducible_and_still_sum(tiny_synth):
    index = read_index(tiny_synth)
    classes, stft = index_classes(index), STFTSpec(254, 64)
    plain = MixtureDataset(index, "train", classes, segment_samples=4096, stft=stft, seed=3)
    change = Augmentation(eq_db=6.0, pitch=1.0, reverb=1.0, noise_db=30.0)
    augmented = MixtureDataset(index, "train", classes, segment_samples=4096, stft=stft, seed=3,
                               augmentation=change, sample_rate=RATE)
    a, b, c = augmented[5], augmented[5], plain[5]
    assert np.array_equal(a["mixture"], b["mixture"])  # the same item, the same draw
    assert np.allclose(a["sources"].sum(0), a["mixture"], atol=1e-6)  # targets are the changed sources
    assert a["sources"].shape == c["sources"].shape and not np.allclose(a["sources"], c["sources"])
    assert np.array_equal(a["class_ids"], c["class_ids"])  # the same classes were drawn


@pytest.mark.parametrize("key, value", [("data.aug_eq_db", -1), ("data.aug_pitch", 3), ("data.aug_reverb", 1.5),
                                        ("data.aug_noise_db", float("nan"))])
def test_bad_augmentation_settings_are_one_line(key, value):
    with pytest.raises(SGNError, match=rf"{key}") as err:
        apply_overrides(load_config("cpu"), {key: value})
    assert "\n" not in str(err.value)
