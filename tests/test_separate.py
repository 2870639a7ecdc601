import logging

import numpy as np
import pytest

from sgn.audio import load_audio, save_audio
from sgn.cli import main
from sgn.separate import Separator
from sgn.utils import SGNError

from conftest import TINY_CLASSES


@pytest.fixture(scope="module")
def separator(smoke_checkpoint):
    return Separator.from_checkpoint(smoke_checkpoint, device="cpu")


@pytest.fixture(scope="module")
def mixture(tiny_synth):
    a, rate = load_audio(tiny_synth.parent / "cello" / "cello_0000.wav")
    b, _ = load_audio(tiny_synth.parent / "flute" / "flute_0000.wav")
    return (a + b) / 2, rate


def test_properties(separator):
    from sgn import Separator as exported

    assert exported is Separator
    assert separator.classes == sorted(TINY_CLASSES) and separator.sample_rate == 11025


def test_named_classes_same_length_any_rate(separator, mixture):
    wave, rate = mixture
    stems = separator.separate(wave, rate, classes=["cello", "flute"])
    assert list(stems) == ["cello", "flute"] and all(s.shape == wave.shape for s in stems.values())
    # another sample rate: resampled in and out, length kept
    wave_22k = np.repeat(wave, 2)
    stems = separator.separate(wave_22k, 22050, classes=["cello"])
    assert stems["cello"].shape == wave_22k.shape and np.isfinite(stems["cello"]).all()


def test_long_input_is_processed_in_chunks(separator, mixture):
    wave, rate = mixture
    long = np.tile(wave, 8)  # 12 s, many chunks of the 4096-sample training segment
    stems = separator.separate(long, rate, classes=["flute", "cello"])
    assert stems["flute"].shape == long.shape
    # masks are in [0, 1] and the chunks' windows sum to one: no estimate can exceed
    # the mixture's energy by much
    assert np.sum(stems["flute"] ** 2) < 1.5 * np.sum(long**2)


def test_stereo_is_downmixed_and_said(separator, mixture, caplog):
    wave, rate = mixture
    with caplog.at_level(logging.INFO):
        stems = separator.separate(np.stack([wave, wave]).T, rate, classes=["cello"])  # [L, 2]
    assert stems["cello"].shape == wave.shape and "downmixed 2 channels" in caplog.text


def test_presence_head_chooses(separator, mixture):
    stems = separator.separate(*mixture, classes=None)
    assert 1 <= len(stems) <= len(TINY_CLASSES) and set(stems) <= set(TINY_CLASSES)


@pytest.mark.parametrize("signal,message", [
    (np.full(4000, np.nan, dtype=np.float32), "NaN or Inf"),
    (np.zeros(4000, dtype=np.float32), "silent"),
    (np.ones(50, dtype=np.float32) * 0.1, "samples, expected at least"),
])
def test_bad_mixtures(separator, signal, message):
    with pytest.raises(SGNError, match=message):
        separator.separate(signal, 11025, classes=["cello"])


def test_unknown_class_lists_known(separator, mixture):
    with pytest.raises(SGNError, match=r"unknown class 'banjo'; this model knows \['cello'"):
        separator.separate(*mixture, classes=["banjo"])


def test_cli_separate(smoke_checkpoint, mixture, tmp_path, capsys):
    wave, rate = mixture
    save_audio(tmp_path / "mix.wav", np.stack([wave, wave]), rate)  # stereo file
    assert main(["separate", str(tmp_path / "mix.wav"), "--checkpoint", str(smoke_checkpoint),
                 "--out", str(tmp_path / "stems"), "--classes", "cello,flute"]) == 0
    assert sorted(p.name for p in (tmp_path / "stems").iterdir()) == ["cello.wav", "flute.wav"]
    assert main(["separate", str(tmp_path / "mix.wav"), "--checkpoint", str(smoke_checkpoint),
                 "--out", str(tmp_path / "stems"), "--classes", "banjo"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("sgn: error: classes: unknown class 'banjo'")
    (tmp_path / "bad.pt").write_bytes(b"\x00" * 10)
    assert main(["separate", str(tmp_path / "mix.wav"), "--checkpoint", str(tmp_path / "bad.pt"),
                 "--out", str(tmp_path / "s2")]) == 2
    assert "not a readable sgn checkpoint" in capsys.readouterr().err
