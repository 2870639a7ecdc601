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
    assert {p.name for p in run.iterdir()} == {"config.yaml", "fingerprint.json", "metrics.csv", "last.pt", "best.pt"}
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

    from sgn.data import FixedMixtureDataset, make_mixture_list, read_index
    from sgn.interface import MaskSeparator
    from sgn.metrics import SilentSignalError, bss_eval_sources
    from sgn.train import validate

    model, _, _ = load_model(smoke_checkpoint)
    frame = make_mixture_list(read_index(tiny_synth), "val", n_sources="1-3", count=6, seed=5, segment_samples=4096)
    loader = torch.utils.data.DataLoader(FixedMixtureDataset(frame, model.classes, model.stft), batch_size=6)

    silent = 3  # a three-source mixture, batched with another one

    original = MaskSeparator.estimate

    def silence_one_estimate(model, mixture, class_ids):
        est = original(model, mixture, class_ids)
        est[silent, 0] = 0.0
        return est

    monkeypatch.setattr(MaskSeparator, "estimate", silence_one_estimate)
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


def assert_one_line(err, *names):
    message = str(err)
    assert "\n" not in message and len(message) < 300, message
    for name in names:
        assert name in message, (name, message)


@pytest.mark.parametrize("section,name,value", [
    ("optim", "batch_size", 0), ("optim", "lr", float("nan")), ("optim", "lr", -1.0), ("optim", "max_steps", -5),
    (None, "eval_every", 0), (None, "log_every", 0), ("data", "num_workers", -1), ("data", "segment_samples", 10),
    ("model", "hop", 0), ("model", "n_fft", 0), ("data", "sample_rate", 0), ("loss", "mask", "l2"),
])
def test_a_bad_config_creates_no_run_folder(tiny_synth, tmp_path, section, name, value):
    """A config changed after it was built is checked again before anything is written."""
    config = smoke_config(tiny_synth)
    setattr(getattr(config, section) if section else config, name, value)
    with pytest.raises(SGNError) as info:
        train(config, tmp_path / "run", progress=False)
    assert_one_line(info.value, f"{section}.{name}" if section else name)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("out", ["file", "file/run", "file/a/b"])
def test_out_that_is_or_lies_under_a_file_is_refused(tiny_synth, tmp_path, out):
    (tmp_path / "file").write_text("keep me")
    with pytest.raises(SGNError) as info:
        train(smoke_config(tiny_synth), tmp_path / out, progress=False)
    assert_one_line(info.value, "--out", "file")
    assert (tmp_path / "file").read_text() == "keep me"


def test_cli_bad_value_is_one_line_and_exit_2(tiny_synth, tmp_path, capsys):
    from sgn.cli import main

    code = main(["train", "--config", "smoke", "--out", str(tmp_path / "run"), "--set", f"data.index={tiny_synth}",
                 "--set", "log_every=0"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("sgn: error: ") and "log_every" in err and "\n" not in err
    assert not (tmp_path / "run").exists()


def test_a_run_that_failed_before_its_first_checkpoint_can_be_rerun(tiny_synth, tmp_path, monkeypatch):
    import sgn.train as train_module

    def fail(*args, **kwargs):
        raise SGNError("failed at the first step")

    monkeypatch.setattr(train_module, "separation_loss", fail)
    with pytest.raises(SGNError, match="first step"):
        train(smoke_config(tiny_synth), tmp_path / "run", progress=False)
    assert (tmp_path / "run" / "config.yaml").exists() and not (tmp_path / "run" / "last.pt").exists()
    monkeypatch.undo()
    # the corrected rerun, with another config and without --resume, starts over
    history = train(smoke_config(tiny_synth, "optim.max_steps=2"), tmp_path / "run", progress=False)
    assert [row["step"] for row in history] == [1, 2]


@pytest.fixture(scope="module")
def finished_runs(tiny_synth, tmp_path_factory):
    """Two finished three-step runs: ``{"sgn": folder, "unet": folder}``."""
    root = tmp_path_factory.mktemp("finished")
    for arch in ("sgn", "unet"):
        train(smoke_config(tiny_synth, "optim.max_steps=3", f"model.arch={arch}"), root / arch, progress=False)
    return {arch: root / arch for arch in ("sgn", "unet")}


def _edit_last(key, value):
    def edit(state, runs):
        state[key] = value
        return state
    return edit


def _drop_last(key):
    def drop(state, runs):
        del state[key]
        return state
    return drop


def _replace_last(run, name):
    def replace(state, runs):
        return torch.load(runs[run] / name, weights_only=True)
    return replace


def _reversed_classes(state, runs):
    state["classes"] = state["classes"][::-1]
    return state


def _another_max_steps(state, runs):
    state["config"]["optim"]["max_steps"] = 5
    return state


def _shrunk_weight(state, runs):
    state["model"]["tokens"] = state["model"]["tokens"][:1]
    return state


FOREIGN_LAST = {
    "best_as_last": (_replace_last("sgn", "best.pt"), "not a resumable checkpoint"),
    "unet_in_sgn_run": (_replace_last("unet", "last.pt"), "weights are for arch unet, this run's config says sgn"),
    "no_optimizer": (_drop_last("optimizer"), "'optimizer'"),
    "no_rng": (_drop_last("torch_rng"), "'torch_rng'"),
    "optimizer_empty": (_edit_last("optimizer", {}), "optimizer or RNG state does not fit"),
    "rng_garbage": (_edit_last("torch_rng", torch.zeros(3)), "optimizer or RNG state does not fit"),
    "step_negative": (_edit_last("step", -1), "step -1"),
    "step_past_the_end": (_edit_last("step", 10**9), "step 1000000000"),
    "step_a_string": (_edit_last("step", "3"), "'step'"),
    "best_sdr_a_string": (_edit_last("best_val_sdr", "x"), "'best_val_sdr'"),
    "classes_reordered": (_reversed_classes, "classes"),
    "classes_hostile": (_edit_last("classes", ["../../x", "flute", "trumpet", "xylophone"]), "classes"),
    "another_config": (_another_max_steps, "another config"),
    "weights_reshaped": (_shrunk_weight, "'tokens' has shape"),
}


@pytest.mark.parametrize("case", list(FOREIGN_LAST))
def test_resume_refuses_a_foreign_last_pt(finished_runs, tiny_synth, tmp_path, case):
    import shutil

    edit, mentions = FOREIGN_LAST[case]
    run = tmp_path / "run"
    shutil.copytree(finished_runs["sgn"], run)
    state = edit(torch.load(run / "last.pt", weights_only=True), finished_runs)
    torch.save(state, run / "last.pt")
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    with pytest.raises(SGNError) as info:
        train(smoke_config(tiny_synth, "optim.max_steps=3"), run, resume=True, progress=False)
    assert_one_line(info.value, str(run / "last.pt"), mentions)
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before


def test_non_finite_clip_is_named(tiny_synth, tmp_path):
    import shutil

    import numpy as np
    import pandas as pd
    import soundfile as sf

    data = tmp_path / "data"
    shutil.copytree(tiny_synth.parent, data)
    index = pd.read_csv(data / "index.csv")
    poisoned = [str(data / p) for p in index[(index["class"] == "flute") & (index["split"] == "train")]["path"]]
    for path in poisoned:
        wave, rate = sf.read(path, dtype="float32")
        wave[::500] = np.nan  # throughout: every segment a mixture may take holds some
        sf.write(path, wave, rate, subtype="FLOAT")
    with pytest.raises(SGNError) as info:
        train(smoke_config(data / "index.csv"), tmp_path / "run", progress=False)
    assert_one_line(info.value, "holds NaN, infinite or huge samples")
    assert any(path in str(info.value) for path in poisoned), str(info.value)
    assert "lower optim.lr" not in str(info.value)


def test_data_loader_workers_use_one_thread():
    from sgn.train import _one_thread_per_worker

    class Threads(torch.utils.data.Dataset):
        def __len__(self):
            return 2

        def __getitem__(self, item):
            return torch.get_num_threads()

    loader = torch.utils.data.DataLoader(Threads(), num_workers=1, worker_init_fn=_one_thread_per_worker)
    assert [int(n) for n in loader] == [1, 1]
