"""Tests for sgn.nmf: the supervised NMF baseline, on tiny synthetic classes built in tmp."""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pandas as pd
import pytest
import torch

from sgn.audio import STFTSpec, load_audio, save_audio
from sgn.data import read_index
from sgn.nmf import NMFConfig, NMFSeparator, beta_divergence, update_activations, update_dictionary
from sgn.utils import SGNError

RATE = 11025
STFT = STFTSpec(n_fft=254, hop=64)  # F = 128: small and fast
CONFIG = NMFConfig(n_components=8, fit_iterations=60, separate_iterations=60, seed=3)
CLASSES = ["high", "low", "noise"]


def _tone(rng: np.random.Generator, f0: float, harmonics: int) -> np.ndarray:
    t = np.arange(RATE) / RATE
    wave = sum(0.6**h * np.sin(2 * np.pi * f0 * (h + 1) * t + rng.uniform(0, 2 * np.pi)) for h in range(harmonics))
    return wave * np.minimum(1.0, np.minimum(t, t[::-1]) / 0.02)  # 20 ms fades


def _clip(rng: np.random.Generator, name: str) -> np.ndarray:
    if name == "low":  # harmonic tone, f0 110-220 Hz, 4 harmonics (below 900 Hz)
        wave = _tone(rng, rng.uniform(110, 220), 4)
    elif name == "high":  # tone 1-2 kHz with a weak octave
        wave = _tone(rng, rng.uniform(1000, 2000), 2)
    else:  # noise band-limited to 3-4.5 kHz
        spec = np.fft.rfft(rng.standard_normal(RATE))
        freqs = np.fft.rfftfreq(RATE, 1 / RATE)
        spec[(freqs < 3000) | (freqs > 4500)] = 0
        wave = np.fft.irfft(spec, RATE)
    return (0.5 * wave / np.abs(wave).max()).astype(np.float32)


def _write_dataset(root, per_class: dict[str, dict[str, int]], seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for name, splits in per_class.items():
        for split, count in splits.items():
            for k in range(count):
                rel = f"{name}/{split}_{k}.wav"
                save_audio(root / rel, _clip(rng, name), RATE)
                rows.append({"path": rel, "class": name, "split": split, "duration_s": 1.0, "sample_rate": RATE})
    pd.DataFrame(rows).to_csv(root / "index.csv", index=False)
    return read_index(root / "index.csv")


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    root = tmp_path_factory.mktemp("nmf_data")
    return _write_dataset(root, {name: {"train": 4, "test": 2} for name in CLASSES})


@pytest.fixture(scope="module")
def separator(index):
    return NMFSeparator.fit(index, CLASSES, STFT, CONFIG, progress=False)


def _sdr(ref: np.ndarray, est: np.ndarray) -> float:
    return float(10 * np.log10(np.sum(ref**2) / np.sum((ref - est) ** 2)))


def test_dictionaries_shape_nonnegative_normalised(separator):
    W = separator.dictionaries
    assert W.shape == (len(CLASSES), STFT.n_bins, CONFIG.n_components)
    assert W.dtype == torch.float32
    assert torch.isfinite(W).all() and (W >= 0).all()
    torch.testing.assert_close(W.sum(1), torch.ones(len(CLASSES), CONFIG.n_components))


def test_fit_is_deterministic_and_seeded(index, separator):
    again = NMFSeparator.fit(index, CLASSES, STFT, CONFIG, progress=False)
    assert torch.equal(again.dictionaries, separator.dictionaries)
    # Seeds follow the class name, not its position: reordering the classes permutes W.
    reordered = NMFSeparator.fit(index, CLASSES[::-1], STFT, CONFIG, progress=False)
    assert torch.equal(reordered.dictionaries, separator.dictionaries.flip(0))
    other = NMFSeparator.fit(index, CLASSES, STFT, dataclasses.replace(CONFIG, seed=4), progress=False)
    assert not torch.equal(other.dictionaries, separator.dictionaries)


def test_dictionaries_describe_their_class(separator):
    # The mean atom of "low" peaks below 1 kHz, of "high" in 1-4 kHz, of "noise" in 3-4.5 kHz.
    freqs = np.fft.rfftfreq(STFT.n_fft, 1 / RATE)
    peak = {n: freqs[int(separator.dictionaries[c].mean(1).argmax())] for c, n in enumerate(CLASSES)}
    assert peak["low"] < 1000 and 1000 <= peak["high"] <= 4000 and 2900 <= peak["noise"] <= 4600


def test_updates_decrease_the_divergence():
    gen = torch.Generator().manual_seed(0)
    V = torch.rand(20, 30, generator=gen, dtype=torch.float64)
    for beta in (0.5, 1.0, 1.5, 2.0, 3.0):
        W = torch.rand(20, 4, generator=gen, dtype=torch.float64)
        H = torch.rand(4, 30, generator=gen, dtype=torch.float64)
        losses = [float(beta_divergence(V, W @ H, beta))]
        for _ in range(20):
            H = update_activations(V, W, H, beta)
            W, H = update_dictionary(V, W, H, beta)
            losses.append(float(beta_divergence(V, W @ H, beta)))
        assert all(b <= a * (1 + 1e-9) for a, b in zip(losses, losses[1:])), beta
        assert losses[-1] < 0.5 * losses[0], beta
        torch.testing.assert_close(W.sum(0), torch.ones(4, dtype=torch.float64))


def test_separates_unseen_low_and_high(index, separator):
    test = index[index["split"] == "test"]
    waves = [load_audio(test[test["class"] == name]["abspath"].iloc[0], RATE)[0] for name in ("low", "high")]
    sources = np.stack(waves) * np.array([[0.6], [0.4]], dtype=np.float32)  # [N, L]
    mixture = torch.from_numpy(sources.sum(0))  # [L]
    spec = STFT.stft(mixture)  # [F, T] complex
    ids = torch.tensor([CLASSES.index("low"), CLASSES.index("high")])
    masks = separator.masks(spec.abs(), ids)  # [N, F, T]
    estimates = STFT.istft(masks * spec, mixture.shape[-1]).numpy()  # [N, L]
    for i in range(2):
        before, after = _sdr(sources[i], mixture.numpy()), _sdr(sources[i], estimates[i])
        assert after > before + 3.0, (i, before, after)
        assert after > 10.0, (i, after)


def test_masks_range_sum_padding_and_batching(index, separator):
    test = index[index["split"] == "test"]
    waves = {n: load_audio(test[test["class"] == n]["abspath"].iloc[1], RATE)[0] for n in CLASSES}
    low, high, noise = (CLASSES.index(n) for n in ("low", "high", "noise"))
    mixes = torch.stack([
        torch.from_numpy(waves["low"] + waves["high"]),
        torch.from_numpy(waves["noise"] + waves["high"] + waves["low"]),
        torch.from_numpy(waves["noise"]),
    ])  # [B, L]
    mix_mag = STFT.stft(mixes).abs()  # [B, F, T]
    ids = torch.tensor([[low, high, -1], [noise, high, low], [-1, noise, -1]])  # [B, N]
    masks = separator.masks(mix_mag, ids)  # [B, N, F, T]
    assert masks.shape == (3, 3, *mix_mag.shape[1:]) and masks.dtype == mix_mag.dtype
    assert torch.isfinite(masks).all() and (masks >= 0).all() and (masks <= 1).all()
    torch.testing.assert_close(masks.sum(1), torch.ones_like(mix_mag))
    assert (masks[0, 2] == 0).all() and (masks[2, 0] == 0).all() and (masks[2, 2] == 0).all()
    assert torch.equal(masks[2, 1], torch.ones_like(masks[2, 1]))  # a single real source takes all
    for b in range(3):
        torch.testing.assert_close(separator.masks(mix_mag[b], ids[b]), masks[b], atol=1e-5, rtol=1e-4)
    # Float64 input stays float64.
    assert separator.masks(mix_mag[0].double(), ids[0]).dtype == torch.float64


def test_silence_gives_uniform_masks(separator):
    mix_mag = torch.zeros(2, STFT.n_bins, 10)
    mix_mag[1, :, :5] = torch.rand(STFT.n_bins, 5, generator=torch.Generator().manual_seed(0))  # half silent
    masks = separator.masks(mix_mag, torch.tensor([[0, 1, 2], [1, -1, 2]]))
    assert torch.isfinite(masks).all()
    torch.testing.assert_close(masks[0], torch.full_like(masks[0], 1 / 3))
    expected = torch.tensor([0.5, 0.0, 0.5])[:, None, None].expand(3, STFT.n_bins, 5)  # padding in the middle
    torch.testing.assert_close(masks[1, :, :, 5:], expected)
    torch.testing.assert_close(masks.sum(1), torch.ones(2, STFT.n_bins, 10))


def test_mask_input_errors(separator):
    mix_mag = torch.rand(STFT.n_bins, 10)
    with pytest.raises(SGNError, match="class ids"):
        separator.masks(mix_mag, torch.tensor([0, 3]))
    with pytest.raises(SGNError, match="bins"):
        separator.masks(torch.rand(STFT.n_bins + 1, 10), torch.tensor([0, 1]))
    with pytest.raises(SGNError, match="expected mix_mag"):
        separator.masks(mix_mag[None], torch.tensor([0, 1]))


def test_save_load_round_trip(separator, tmp_path):
    path = separator.save(tmp_path / "nmf.pt")
    assert list(tmp_path.iterdir()) == [path]  # no temp file left behind
    state = torch.load(path, weights_only=True)
    assert state["format"] == "sgn-nmf/1"
    loaded = NMFSeparator.load(path)
    assert torch.equal(loaded.dictionaries, separator.dictionaries)
    assert loaded.classes == separator.classes and loaded.stft == separator.stft and loaded.config == separator.config


def test_load_rejects_other_files(separator, tmp_path):
    torch.save({"format": "something-else/2", "dictionaries": separator.dictionaries}, tmp_path / "other.pt")
    with pytest.raises(SGNError, match="not an NMF model file"):
        NMFSeparator.load(tmp_path / "other.pt")
    (tmp_path / "junk.pt").write_text("not a checkpoint")
    with pytest.raises(SGNError, match="not a readable"):
        NMFSeparator.load(tmp_path / "junk.pt")
    with pytest.raises(SGNError, match="not found"):
        NMFSeparator.load(tmp_path / "missing.pt")


def test_class_without_clips(index):
    with pytest.raises(SGNError, match="'violin' has no train clips"):
        NMFSeparator.fit(index, ["low", "violin"], STFT, CONFIG, progress=False)


def test_silent_class(tmp_path):
    index = _write_dataset(tmp_path, {"low": {"train": 1}})
    save_audio(tmp_path / "quiet.wav", np.zeros(RATE, dtype=np.float32), RATE)
    frame = pd.read_csv(tmp_path / "index.csv")
    frame.loc[len(frame)] = ["quiet.wav", "quiet", "train", 1.0, RATE]
    frame.to_csv(tmp_path / "index.csv", index=False)
    index = read_index(tmp_path / "index.csv")
    with pytest.raises(SGNError, match="'quiet' has only silent audio"):
        NMFSeparator.fit(index, ["low", "quiet"], STFT, CONFIG, progress=False)


def test_constructor_and_config_validation(separator):
    with pytest.raises(SGNError, match="shape"):
        NMFSeparator(separator.dictionaries[:2], CLASSES, STFT, CONFIG)
    with pytest.raises(SGNError, match="non-negative"):
        NMFSeparator(-separator.dictionaries, CLASSES, STFT, CONFIG)
    with pytest.raises(SGNError, match="n_components"):
        NMFConfig(n_components=0)
    with pytest.raises(SGNError, match="beta"):
        NMFConfig(beta=float("nan"))


@pytest.mark.parametrize("classes", [["../escape", "b"], ["/abs", "b"], ["a", "a"], "ab"])
def test_model_file_with_hostile_class_names_is_refused(separator, tmp_path, classes):
    path = separator.save(tmp_path / "nmf.pt")
    state = torch.load(path, weights_only=True)
    state["classes"] = classes if isinstance(classes, str) else classes + separator.classes[len(classes):]
    torch.save(state, path)
    with pytest.raises(SGNError, match=f"^{re.escape(str(path))}: NMF classes"):
        NMFSeparator.load(path)
