import csv

import pytest
import torch

from sgn.checkpoint import load_model
from sgn.config import apply_overrides, load_config
from sgn.train import learning_rate, train
from sgn.utils import SGNError


def smoke_config(index, *overrides):
    return apply_overrides(load_config("smoke"), [f"data.index={index}", *overrides])


def test_smoke_run_writes_everything(tiny_synth, tmp_path):
    run = tmp_path / "run"
    history = train(smoke_config(tiny_synth), run, progress=False)
    assert {p.name for p in run.iterdir()} == {"config.yaml", "metrics.csv", "last.pt", "best.pt"}
    assert [row["step"] for row in history] == [1, 2, 3, 4, 5, 6]
    with open(run / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6 and rows[2]["val_sdr"] != "" and rows[0]["val_sdr"] == ""
    model, config, state = load_model(run / "best.pt")
    assert config.data.index == str(tiny_synth) and state["step"] in (3, 6)
    assert torch.load(run / "last.pt", weights_only=True)["step"] == 6


def test_refuses_to_overwrite_and_checks_config_on_resume(tiny_synth, tmp_path):
    run = tmp_path / "run"
    train(smoke_config(tiny_synth, "optim.max_steps=3"), run, progress=False)
    before = (run / "best.pt").read_bytes()
    with pytest.raises(SGNError, match="already holds a run"):
        train(smoke_config(tiny_synth, "optim.max_steps=3"), run, progress=False)
    with pytest.raises(SGNError, match="different config"):
        train(smoke_config(tiny_synth, "optim.max_steps=3", "optim.lr=0.5"), run, resume=True, progress=False)
    assert (run / "best.pt").read_bytes() == before


def _weights(path):
    return torch.load(path, weights_only=True)["model"]


@pytest.mark.parametrize("overrides", [[], ["model.gumbel=true"], ["model.arch=unet"]], ids=["sgn", "gumbel", "unet"])
def test_resume_matches_uninterrupted_run(tiny_synth, tmp_path, overrides):
    config = smoke_config(tiny_synth, *overrides)
    train(config, tmp_path / "straight", progress=False)
    # stopped after 4 steps (a checkpoint was written at step 3), then resumed
    train(config, tmp_path / "stopped", progress=False, stop_after=4)
    assert torch.load(tmp_path / "stopped" / "last.pt", weights_only=True)["step"] == 4
    train(config, tmp_path / "stopped", progress=False, resume=True)
    a, b = _weights(tmp_path / "straight" / "last.pt"), _weights(tmp_path / "stopped" / "last.pt")
    for key in a:
        assert torch.allclose(a[key].float(), b[key].float(), atol=1e-6), key
    with open(tmp_path / "stopped" / "metrics.csv") as f:
        assert [int(r["step"]) for r in csv.DictReader(f)] == [1, 2, 3, 4, 5, 6]
    # a finished run resumed returns its history, typed like a fresh one
    history = train(config, tmp_path / "stopped", progress=False, resume=True)
    assert [r["step"] for r in history] == [1, 2, 3, 4, 5, 6] and isinstance(history[0]["loss"], float)


def test_resume_after_a_crash(tiny_synth, tmp_path, monkeypatch):
    """A crash between checkpoints resumes from the last one and still ends identical."""
    import sgn.train as train_module

    config = smoke_config(tiny_synth)
    train(config, tmp_path / "straight", progress=False)
    calls = {"n": 0}
    original = train_module.separation_loss

    def crash_on_fifth_step(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(train_module, "separation_loss", crash_on_fifth_step)
    with pytest.raises(KeyboardInterrupt):
        train(config, tmp_path / "crashed", progress=False)
    monkeypatch.setattr(train_module, "separation_loss", original)
    assert torch.load(tmp_path / "crashed" / "last.pt", weights_only=True)["step"] == 3
    train(config, tmp_path / "crashed", progress=False, resume=True)
    a, b = _weights(tmp_path / "straight" / "last.pt"), _weights(tmp_path / "crashed" / "last.pt")
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-6) for k in a)


def test_wrong_sample_rate_is_one_clear_error(tiny_synth, tmp_path):
    with pytest.raises(SGNError, match="expected 16000 Hz"):
        train(smoke_config(tiny_synth, "data.sample_rate=16000"), tmp_path / "r", progress=False)


def test_learning_rate_schedule():
    config = apply_overrides(load_config("cpu"), ["optim.max_steps=100", "optim.warmup_steps=10"])
    lrs = [learning_rate(s, config) for s in range(100)]
    assert lrs[9] == pytest.approx(config.optim.lr)
    assert lrs[0] < lrs[5] < lrs[9] and lrs[20] > lrs[60] > lrs[99]
    assert lrs[99] >= config.optim.lr * config.optim.min_lr_ratio


def test_validate_equals_the_per_mixture_loop(smoke_checkpoint, tiny_synth, monkeypatch):
    """Batched validation (mixed numbers of sources, a silent estimate) gives the per-mixture loop's SDR."""
    from contextlib import nullcontext

    import numpy as np

    import sgn.train as train_module
    from sgn.data import FixedMixtureDataset, make_mixture_list, read_index
    from sgn.metrics import SilentSignalError, bss_eval_sources
    from sgn.separate import estimate_sources
    from sgn.train import validate

    model, _, _ = load_model(smoke_checkpoint)
    frame = make_mixture_list(read_index(tiny_synth), "val", n_sources="1-3", count=6, seed=5, segment_samples=4096)
    loader = torch.utils.data.DataLoader(FixedMixtureDataset(frame, model.classes, model.stft), batch_size=6)

    silent = 3  # a three-source mixture, batched with another one

    def silence_one_estimate(model, mixture, class_ids):
        est = estimate_sources(model, mixture, class_ids)
        est[silent, 0] = 0.0
        return est

    monkeypatch.setattr(train_module, "estimate_sources", silence_one_estimate)
    batch = next(iter(loader))
    assert batch["n_sources"].tolist() == [3, 2, 1, 3, 1, 1]
    with torch.no_grad():
        est = silence_one_estimate(model.eval(), batch["mixture"], batch["class_ids"])
    sdrs = []
    for i in range(len(est)):
        n = int(batch["n_sources"][i])
        try:
            sdrs.extend(bss_eval_sources(batch["sources"][i, :n], est[i, :n], compute_permutation=False)[0])
        except SilentSignalError:
            assert i == silent
    assert len(sdrs) == 11 - 3
    assert validate(model, loader, torch.device("cpu"), nullcontext) == pytest.approx(np.mean(sdrs), abs=1e-6)
