import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_CLASSES

from sgn.audio import load_audio, save_audio
from sgn.cli import main
from sgn.config import load_config
from sgn.interface import MaskSeparator, SeparatorOutput, TokenLayout
from sgn.separate import Separator
from sgn.utils import SGNError


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
    (np.zeros((1, 0), dtype=np.float32), "0 samples, expected at least"),
    (np.zeros((0, 2), dtype=np.float32), "0 samples, expected at least"),
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
    assert sorted(p.name for p in (tmp_path / "stems").iterdir()) == ["cello.wav", "flute.wav", "separation.json"]
    assert main(["separate", str(tmp_path / "mix.wav"), "--checkpoint", str(smoke_checkpoint),
                 "--out", str(tmp_path / "stems"), "--classes", "banjo"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("sgn: error: classes: unknown class 'banjo'")
    (tmp_path / "bad.pt").write_bytes(b"\x00" * 10)
    assert main(["separate", str(tmp_path / "mix.wav"), "--checkpoint", str(tmp_path / "bad.pt"),
                 "--out", str(tmp_path / "s2")]) == 2
    assert "not a readable sgn checkpoint" in capsys.readouterr().err


def test_file_is_streamed_to_the_same_stems_as_the_array(separator, mixture, tmp_path):
    wave, rate = mixture
    long = np.tile(wave, 3)
    save_audio(tmp_path / "mix.wav", long, rate, subtype="FLOAT")
    separator.block_seconds = 0.37  # many read blocks, none aligned with the chunks
    try:
        paths = separator.separate_file(tmp_path / "mix.wav", tmp_path / "out", ["flute", "cello"])
    finally:
        separator.block_seconds = type(separator).block_seconds
    in_memory = separator.separate(long, rate, classes=["flute", "cello"])
    for name, path in paths.items():
        stem, stem_rate = load_audio(path)
        assert stem_rate == rate and stem.shape == long.shape
        assert np.abs(stem - in_memory[name]).max() < 2 / 32768  # 16-bit quantisation
    record = json.loads((tmp_path / "out" / "separation.json").read_text())
    assert record["stems"] == {"flute": "flute.wav", "cello": "cello.wav"} and record["frames"] == len(long)


def test_read_block_size_does_not_change_the_estimates(separator, mixture):
    wave, _ = mixture
    wave_16k = np.tile(wave, 4)[:50000]
    reference = separator.separate(wave_16k, 16000, classes=["cello"])["cello"]
    separator.block_seconds = 0.123
    try:
        blocked = separator.separate(wave_16k, 16000, classes=["cello"])["cello"]
    finally:
        separator.block_seconds = type(separator).block_seconds
    np.testing.assert_array_equal(blocked, reference)


def test_api_takes_one_class_as_a_string_and_refuses_an_empty_request(separator, mixture):
    assert list(separator.separate(*mixture, classes="cello")) == ["cello"]
    for empty in ([], ()):
        with pytest.raises(SGNError, match="name at least one class"):
            separator.separate(*mixture, classes=empty)


@pytest.mark.parametrize("device", ["tpu", "gpu", "cuda:x", "", 7])
def test_unknown_device_is_one_line(smoke_checkpoint, device):
    with pytest.raises(SGNError, match="^device: expected one of"):
        Separator.from_checkpoint(smoke_checkpoint, device=device)


@pytest.mark.parametrize("rate", [0, 1, 3999, 192001, -44100])
def test_sample_rates_outside_the_documented_range_are_refused(separator, mixture, rate):
    with pytest.raises(SGNError, match="Hz is out of range; expected 4000..192000"):
        separator.separate(mixture[0], rate, classes=["cello"])


def _run_separate(checkpoint, *args):
    return main(["-q", "separate", *map(str, args), "--checkpoint", str(checkpoint)])


def test_separate_never_overwrites_its_input_or_other_files(smoke_checkpoint, mixture, tmp_path, capsys):
    wave, rate = mixture
    data = tmp_path / "data"
    save_audio(data / "cello.wav", wave, rate)
    original = (data / "cello.wav").read_bytes()
    # the input would be replaced by its own cello stem: refused, even with --overwrite
    for extra in ([], ["--overwrite"]):
        assert _run_separate(smoke_checkpoint, data / "cello.wav", "--out", data, "--classes", "cello,flute", *extra) == 2
        assert "is the input file" in capsys.readouterr().err
        assert (data / "cello.wav").read_bytes() == original and sorted(os.listdir(data)) == ["cello.wav"]
    # a file this run did not make: refused unless --overwrite
    (tmp_path / "stems").mkdir()
    (tmp_path / "stems" / "flute.wav").write_bytes(b"mine")
    assert _run_separate(smoke_checkpoint, data / "cello.wav", "--out", tmp_path / "stems", "--class", "flute") == 2
    err = capsys.readouterr().err.strip()
    assert "exists and this run did not make it; pass --overwrite" in err and len(err.splitlines()) == 1
    assert (tmp_path / "stems" / "flute.wav").read_bytes() == b"mine"
    assert _run_separate(smoke_checkpoint, data / "cello.wav", "--out", tmp_path / "stems", "--class", "flute",
                         "--overwrite") == 0
    assert load_audio(tmp_path / "stems" / "flute.wav")[0].shape == wave.shape
    # the output folder is the input file, or a path under a file
    for out in (data / "cello.wav", data / "cello.wav" / "sub"):
        assert _run_separate(smoke_checkpoint, data / "cello.wav", "--out", out, "--class", "cello") == 2
        assert capsys.readouterr().err.count("\n") == 1


def test_hostile_class_names_cannot_write_outside_the_folder(separator, mixture, tmp_path):
    wave, rate = mixture
    save_audio(tmp_path / "mix.wav", wave, rate)
    out = tmp_path / "deep" / "out"
    original = list(separator.model.classes)
    separator.model.classes = ["../../escape_rel", str(tmp_path / "abs"), *original[2:]]
    try:
        for name in separator.model.classes[:2]:
            with pytest.raises(SGNError, match="outside this folder"):
                separator.separate_file(tmp_path / "mix.wav", out, [name])
    finally:
        separator.model.classes = original
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["mix.wav"]


def test_killed_separation_leaves_no_stems_that_look_complete(smoke_checkpoint, mixture, tmp_path):
    wave, rate = mixture
    save_audio(tmp_path / "long.wav", np.tile(wave, 200), rate)  # 5 minutes: seconds of work
    out = tmp_path / "stems"
    command = [sys.executable, "-m", "sgn.cli", "-q", "--threads", "1", "separate", str(tmp_path / "long.wav"),
               "--checkpoint", str(smoke_checkpoint), "--out", str(out), "--classes", "cello,flute"]
    child = subprocess.Popen(command, cwd=Path(__file__).resolve().parent.parent)
    deadline = time.monotonic() + 60
    while not any(out.glob(".separation.json.partial-*")) and time.monotonic() < deadline and child.poll() is None:
        time.sleep(0.02)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert not (out / "separation.json").exists() and not list(out.glob("*.wav"))
    assert len(list(out.glob(".separation.json.partial-*"))) == 1  # the killed run's staging
    assert _run_separate(smoke_checkpoint, tmp_path / "long.wav", "--out", out, "--class", "cello") == 0
    assert sorted(os.listdir(out)) == ["cello.wav", "separation.json"]  # the stale staging is gone


class _AllPass(MaskSeparator):
    """A separator whose every mask is 1: separation must give the input back."""

    def forward(self, mix_mag):
        shape = (mix_mag.shape[0], len(self.classes), self.config.warped_bins, mix_mag.shape[-1])
        return SeparatorOutput(mask_logits=torch.full(shape, 60.0))  # sigmoid(60) is 1.0 in float32


@pytest.mark.parametrize("seconds,block_seconds", [(0.3, 4.0), (3.7, 4.0), (9.1, 0.77)])
def test_all_pass_masks_return_the_input_through_chunks_and_blocks(seconds, block_seconds, tmp_path):
    config = load_config("smoke").model
    model = _AllPass(config, ["a", "b"], TokenLayout.without_tokens(["a", "b"])).eval()
    separator = Separator(model, 11025, chunk_samples=4096, device=torch.device("cpu"))
    separator.block_seconds = block_seconds
    rng = np.random.default_rng(0)
    wave = np.clip(0.2 * rng.standard_normal(int(seconds * 11025)), -0.9, 0.9).astype(np.float32)
    stems = separator.separate(wave, 11025, classes=["a", "b"])
    for stem in stems.values():
        assert np.abs(stem - wave).max() < 1e-5
    save_audio(tmp_path / "in.wav", wave, 11025, subtype="FLOAT")
    written = separator.separate_file(tmp_path / "in.wav", tmp_path / "out", ["b"])
    assert np.abs(load_audio(written["b"])[0] - wave).max() < 2 / 32768  # 16-bit output
