"""The bench scripts run (tiny sizes; no timing is asserted, figures live in the README)."""

import itertools
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sgn.config import apply_overrides, load_config
from sgn.data import index_classes, read_index
from sgn.train import training_set

BENCH = Path(__file__).resolve().parent.parent / "bench"


def run(script: str, *args: str) -> str:
    out = subprocess.run([sys.executable, str(BENCH / script), *args], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def test_bench_separate():
    stdout = run("bench_separate.py", "--config", "smoke", "--seconds", "1", "3", "--reps", "1",
                 "--threads", "1", "2", "--load", "1", "--file-minutes", "0.05")
    assert "real-time factor" in stdout
    assert "| smoke | cpu | 1 | 2 | 1 | 1 |" in stdout and "| smoke | cpu | 3 | 2 | 2 | 1 |" in stdout
    assert "| 0.05 |" in stdout and "peak RSS" in stdout


def test_bench_train(tiny_synth):
    stdout = run("bench_train.py", "--config", "smoke", "--index", str(tiny_synth), "--steps", "1",
                 "--segments", "2048", "--batches", "2", "--sources", "3")
    assert stdout.count("| smoke |") == 8  # 2 architectures x 4 variants
    assert "| smoke | sgn | fp32 | auto | off | 4096 | 4 | 3 |" in stdout
    assert "| smoke | unet | fp32 | auto | off | 4096 | 2 | 2 |" in stdout


def test_bench_train_precisions_and_attention_kernels(tiny_synth):
    stdout = run("bench_train.py", "--config", "smoke", "--index", str(tiny_synth), "--steps", "1", "--arch", "sgn",
                 "--precision", "fp32", "auto", "--attention", "fused", "math")
    for precision, attention in itertools.product(["fp32", "auto"], ["fused", "math"]):
        assert f"| smoke | sgn | {precision} | {attention} | off |" in stdout


def test_bench_train_jobs_time_processes_at_once(tiny_synth):
    stdout = run("bench_train.py", "--config", "smoke", "--index", str(tiny_synth), "--steps", "1", "--arch", "unet",
                 "--jobs", "1", "2", "--rounds", "2")
    rows = [line for line in stdout.splitlines() if line.startswith("| smoke | unet |")]
    assert len(rows) == 2 and "| 2 x " in rows[1] and "| 1 x " in rows[0]  # one row each, over both rounds
    assert "step range (s)" in stdout


def test_bench_times_the_batches_the_training_loop_builds(tiny_synth, monkeypatch):
    """Augmentation happens where batches are built: a bench that built plain batches would
    time an augmented recipe as if it were free (recipe_screen budgets with these times)."""
    monkeypatch.syspath_prepend(str(BENCH))
    from bench_train import _setup

    index = read_index(tiny_synth)
    plain = apply_overrides(load_config("smoke"), [f"data.index={tiny_synth}"])
    augmented = apply_overrides(plain, ["data.aug_eq_db=6", "data.aug_noise_db=30"])
    benched = _setup(augmented, index, torch.device("cpu"))[0][3]
    trained = training_set(augmented, index, index_classes(index))[3]
    assert torch.equal(benched["mix_mag"], trained["mix_mag"])
    assert not torch.equal(benched["mix_mag"], training_set(plain, index, index_classes(index))[3]["mix_mag"])


def test_recipe_screen(tiny_synth, tmp_path):
    stdout = run("recipe_screen.py", "--config", "smoke", "--index", str(tiny_synth), "--out", str(tmp_path / "screen"),
                 "--minutes", "0.02", "--mixtures", "4", "--variant", "base:", "--variant", "lr2:optim.lr=2.0e-3")
    assert "| base |" in stdout and "| lr2 |" in stdout and "minus base" in stdout
    assert "presence recall / precision |" in stdout and stdout.count(" / 0.") + stdout.count(" / 1.") >= 2
    assert (tmp_path / "screen" / "val_2src.csv").is_file()


def test_bench_metrics():
    stdout = run("bench_metrics.py", "--reps", "1", "--batch", "2", "--length", "2048", "1024", "--sources", "2", "3")
    assert "(a) and (b): N = 2 sources x L = 2048 samples" in stdout
    for n_src, length in ((2, 2048), (2, 1024), (3, 2048), (3, 1024)):
        assert f"| {n_src} | {length} |" in stdout


@pytest.mark.parametrize("script,args,message", [
    ("bench_metrics.py", ["--length", "100"], "--length must be at least 512"),
    ("bench_train.py", ["--sources", "0"], "--sources: expected positive numbers"),
    ("bench_train.py", ["--peak-tflops", "989"], "--peak-tflops: expected a positive number with --flops"),
    ("bench_train.py", ["--jobs", "0"], "--jobs: expected positive numbers"),
    ("bench_train.py", ["--rounds", "0"], "--rounds: expected a positive number"),
    ("bench_train.py", ["--index", "no/such/index.csv"], "--index: no/such/index.csv: index file not found"),
    ("bench_separate.py", ["--seconds", "0"], "--seconds must be positive"),
])
def test_bench_bad_options_are_one_line(script, args, message):
    out = subprocess.run([sys.executable, str(BENCH / script), *args], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and message in out.stderr.splitlines()[-1]
