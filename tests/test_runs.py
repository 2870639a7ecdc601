"""Runs know the code and data that made them: a changed model retrains what depends on it, and nothing else."""

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from sgn.config import apply_overrides, load_config
from sgn.provenance import data_identity
from sgn.runs import code_files, fingerprint_changes, open_run, run_fingerprint
from sgn.utils import SGNError

REPO = Path(__file__).resolve().parent.parent


def smoke(index, *overrides):
    return apply_overrides(load_config("smoke"), [f"data.index={index}", *overrides])


def test_fingerprint_covers_the_architecture_and_the_shared_code_only():
    sgn_files, unet_files = set(code_files("sgn")), set(code_files("unet"))
    assert "sgn/model.py" in sgn_files and "sgn/model.py" not in unet_files
    assert "sgn/unet.py" in unet_files and "sgn/unet.py" not in sgn_files
    shared = {"sgn/interface.py", "sgn/loss.py", "sgn/train.py", "sgn/data.py", "sgn/audio.py", "sgn/metrics.py"}
    assert shared <= sgn_files & unet_files
    assert not {"sgn/cli.py", "sgn/lab/report.py", "sgn/lab/book.py"} & (sgn_files | unet_files)


def test_data_identity_follows_the_index_and_its_record_but_not_its_timestamp(tmp_path):
    index = tmp_path / "index.csv"
    index.write_text("path,class\n")
    (tmp_path / "prepare.json").write_text(json.dumps({"settings": {"rate": 11025}, "written": "monday"}))
    before = data_identity(index)
    (tmp_path / "prepare.json").write_text(json.dumps({"settings": {"rate": 11025}, "written": "tuesday"}))
    assert data_identity(index) == before
    (tmp_path / "prepare.json").write_text(json.dumps({"settings": {"rate": 16000}, "written": "tuesday"}))
    assert fingerprint_changes({"data": before}, {"data": data_identity(index)}) == ["prepare.json"]
    index.write_text("path,class\nx.wav,violin\n")
    assert "index.csv" in fingerprint_changes({"data": before}, {"data": data_identity(index)})


def _finished_run(tiny_synth, folder: Path) -> Path:
    from sgn.train import train

    train(smoke(tiny_synth, "optim.max_steps=2", "eval_every=2"), folder, progress=False)
    return folder


def test_a_run_of_other_code_is_refused_or_retrained(tiny_synth, tmp_path, monkeypatch):
    run = _finished_run(tiny_synth, tmp_path / "run")
    config = smoke(tiny_synth, "optim.max_steps=2", "eval_every=2")
    assert open_run(run, config, resume=True, write=False).resumable
    stored = json.loads((run / "fingerprint.json").read_text())
    stored["code"]["sgn/model.py"] = "0" * 64  # as if the model had been edited since
    (run / "fingerprint.json").write_text(json.dumps(stored))
    with pytest.raises(SGNError, match=r"made by other code or data \(sgn/model.py changed\)"):
        open_run(run, config, resume=True)
    assert (run / "last.pt").exists()  # refused: nothing touched
    opened = open_run(run, config, resume=True, stale="retrain")
    assert not opened.resumable and not (run / "last.pt").exists() and not (run / "best.pt").exists()
    assert json.loads((run / "fingerprint.json").read_text()) == run_fingerprint(config)


def test_a_run_without_a_fingerprint_is_never_reused(tiny_synth, tmp_path):
    run = _finished_run(tiny_synth, tmp_path / "run")
    (run / "fingerprint.json").unlink()  # a run of an sgn that wrote none
    with pytest.raises(SGNError, match="made by other code or data"):
        open_run(run, smoke(tiny_synth, "optim.max_steps=2", "eval_every=2"), resume=True)


def test_checkpoints_carry_the_fingerprint_and_commit(tiny_synth, tmp_path):
    import torch

    run = _finished_run(tiny_synth, tmp_path / "run")
    state = torch.load(run / "best.pt", weights_only=True)
    assert state["fingerprint"] == json.loads((run / "fingerprint.json").read_text())
    assert isinstance(state["commit"], str)


EDIT_GROUPING = """
import pathlib, sys
model = pathlib.Path(sys.argv[1]) / "sgn" / "model.py"
text = model.read_text()
old = "logits = self.q(queries) @ self.k(feats).transpose(1, 2) / math.sqrt(tokens.shape[-1])"
assert old in text
model.write_text(text.replace(old, old + " * 0.5"))
"""

TRAIN_BOTH = """
import sys
from sgn.config import apply_overrides, load_config
from sgn.train import train
index, runs = sys.argv[1], sys.argv[2]
for arch in ("sgn", "unet"):
    config = apply_overrides(load_config("smoke"), [f"data.index={index}", f"model.arch={arch}",
                                                   "optim.max_steps=2", "eval_every=2"])
    train(config, f"{runs}/{arch}", resume=True, stale="retrain", progress=False)
"""


@pytest.mark.slow
def test_editing_the_grouping_block_retrains_sgn_and_not_the_unet(tiny_synth, tmp_path):
    checkout = tmp_path / "checkout"
    shutil.copytree(REPO / "sgn", checkout / "sgn", ignore=shutil.ignore_patterns("__pycache__"))
    env = {**os.environ, "PYTHONPATH": str(checkout)}

    def run(script: str, *args) -> None:
        done = subprocess.run([sys.executable, "-c", textwrap.dedent(script), *map(str, args)], env=env,
                              capture_output=True, text=True, timeout=300, cwd=checkout)
        assert done.returncode == 0, done.stderr[-3000:]

    runs = tmp_path / "runs"
    run(TRAIN_BOTH, tiny_synth, runs)
    stamps = {arch: (runs / arch / "last.pt").stat().st_mtime_ns for arch in ("sgn", "unet")}
    run(TRAIN_BOTH, tiny_synth, runs)  # nothing changed: both reused as they are
    assert stamps == {arch: (runs / arch / "last.pt").stat().st_mtime_ns for arch in ("sgn", "unet")}
    run(EDIT_GROUPING, checkout)
    run(TRAIN_BOTH, tiny_synth, runs)
    assert (runs / "unet" / "last.pt").stat().st_mtime_ns == stamps["unet"]
    assert (runs / "sgn" / "last.pt").stat().st_mtime_ns != stamps["sgn"]
    sgn_code = json.loads((runs / "sgn" / "fingerprint.json").read_text())["code"]
    assert sgn_code["sgn/model.py"] == code_files_of(checkout)["sgn/model.py"]


def code_files_of(checkout: Path) -> dict[str, str]:
    import hashlib

    return {"sgn/model.py": hashlib.sha256((checkout / "sgn" / "model.py").read_bytes()).hexdigest()}


def test_an_architecture_imports_only_code_its_fingerprint_covers():
    """A helper a model imports from a module outside its fingerprint could change its weights unseen."""
    from sgn.checkpoint import ARCHITECTURES, architecture
    from sgn.provenance import imported_modules, module_file

    for arch in ARCHITECTURES:
        module = sys.modules[architecture(arch).__module__]
        covered = set(code_files(arch))
        for name in imported_modules(Path(module.__file__).read_text()):
            assert module_file(name).relative_to(Path(module.__file__).parents[1]).as_posix() in covered, (arch, name)
    # and the U-Net's weights do not depend on SGN's code, nor SGN's on the U-Net's
    assert "sgn/model.py" not in code_files("unet") and "sgn/unet.py" not in code_files("sgn")
