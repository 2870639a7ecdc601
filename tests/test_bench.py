"""The bench scripts run (tiny sizes; no timing is asserted, figures live in the README)."""

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


def run(script: str, *args: str) -> str:
    out = subprocess.run([sys.executable, str(BENCH / script), *args], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def test_bench_separate():
    stdout = run("bench_separate.py", "--config", "smoke", "--seconds", "3", "--reps", "1")
    assert "real-time factor" in stdout and "| smoke |" in stdout


def test_bench_train(tiny_synth):
    stdout = run("bench_train.py", "--config", "smoke", "--index", str(tiny_synth), "--steps", "1",
                 "--segments", "2048", "--batches", "2")
    assert stdout.count("| smoke |") == 6  # 2 architectures x 3 variants


@pytest.mark.parametrize("script,args", [("bench_metrics.py", ["--reps", "1", "--batch", "2", "--length", "4096"])])
def test_bench_metrics(script, args):
    assert "|" in run(script, *args)
