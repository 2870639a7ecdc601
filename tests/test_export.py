"""ONNX export (sgn.lab.export, `sgn export`): the graph onnxruntime runs gives PyTorch's masks and waveforms."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import TINY_CLASSES

from sgn.checkpoint import ARCHITECTURES, build_model, save_checkpoint
from sgn.cli import main
from sgn.config import CHOICES, apply_overrides, load_config
from sgn.lab.export import EXPORTABLE, META_FILE, MODEL_FILE, OPSET, export_checkpoint
from sgn.unet import LabelConditionedUNet

ort = pytest.importorskip("onnxruntime", reason="onnxruntime missing; pip install -e '.[export]'")

# smoke STFT (n_fft 254, hop 64): 4096 samples (the training chunk) are 65 frames; 1500 are 24
LENGTHS = (4096, 1500)


def _checkpoint(tmp_path, arch: str):
    """A freshly initialised smoke model of ``arch`` with non-trivial BatchNorm statistics, saved."""
    torch.manual_seed(3)
    config = apply_overrides(load_config("smoke"), [f"model.arch={arch}"])
    model = build_model(config, sorted(TINY_CLASSES))
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):  # eval mode normalises with these
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    path = tmp_path / f"{arch}.pt"
    save_checkpoint(path, model.eval(), config, fingerprint={"sha256": "f" * 64})  # as sgn.train writes it
    return path, model.eval()


def sdr_db(reference: np.ndarray, estimate: np.ndarray) -> float:
    """Plain SDR, 10 log10(|s|^2 / |s - s_hat|^2)."""
    return float(10 * np.log10(np.sum(reference**2) / max(np.sum((reference - estimate) ** 2), 1e-30)))


@pytest.fixture(scope="module", params=EXPORTABLE)
def exported(request, tmp_path_factory):
    out = tmp_path_factory.mktemp(f"export_{request.param}")
    checkpoint, model = _checkpoint(out, request.param)
    paths = export_checkpoint(checkpoint, out / "web")
    return model, paths, ort.InferenceSession(str(paths["model"]), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("length", LENGTHS)
def test_onnx_masks_and_waveforms_match_pytorch(exported, length):
    model, _, session = exported
    torch.manual_seed(length)
    waves = torch.randn(2, length) * torch.tensor([[0.1], [0.5]])  # a batch of two
    spec = model.stft.stft(waves)  # [B, F, T]
    ids = torch.arange(len(model.classes))[None].expand(2, -1)
    with torch.no_grad():
        expected = model.linear_masks(model(spec.abs()), ids)  # [B, C, F, T]
    (masks,) = session.run(None, {"magnitude": spec.abs().numpy()})
    assert masks.shape == tuple(expected.shape)
    assert np.abs(masks - expected.numpy()).max() < 1e-4
    ours = model.stft.istft(torch.from_numpy(masks) * spec[:, None], length).numpy()
    theirs = model.stft.istft(expected * spec[:, None], length).numpy()
    assert min(sdr_db(t, o) for t, o in zip(theirs.reshape(-1, length), ours.reshape(-1, length))) >= 60


def test_metadata_describes_the_graph(exported):
    model, paths, session = exported
    meta = json.loads(paths["meta"].read_text())
    assert meta["classes"] == model.classes and meta["arch"] == model.config.arch
    assert (meta["sample_rate"], meta["n_fft"], meta["hop"], meta["chunk_samples"]) == (11025, 254, 64, 4096)
    assert meta["opset"] == OPSET and meta["fingerprint"] == {"sha256": "f" * 64} and len(meta["checkpoint_sha256"]) == 64
    assert [i.name for i in session.get_inputs()] == ["magnitude"]
    assert [o.name for o in session.get_outputs()] == ["masks"]


def test_cli_exports_and_refuses_its_own_checkpoint_as_output(tmp_path, capsys):
    checkpoint, _ = _checkpoint(tmp_path, "unet")
    assert main(["export", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "web")]) == 0
    assert (tmp_path / "web" / MODEL_FILE).is_file() and (tmp_path / "web" / META_FILE).is_file()
    assert main(["export", "--checkpoint", str(checkpoint), "--out", str(checkpoint)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("sgn: error:") and len(err.splitlines()) == 1


class _Unexportable(LabelConditionedUNet):
    """An architecture the exporter does not know."""


def test_an_architecture_it_cannot_export_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(ARCHITECTURES, "other", f"{__name__}:_Unexportable")
    monkeypatch.setitem(CHOICES, "model.arch", (*CHOICES["model.arch"], "other"))
    checkpoint, _ = _checkpoint(tmp_path, "other")
    assert main(["export", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "web")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'other' model cannot be exported" in err[0]
    assert not (tmp_path / "web" / MODEL_FILE).exists()
