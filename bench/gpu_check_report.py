"""The summary of a ``bench/gpu_check.sh`` run: ``OUT/summary.md``, from the tables and logs in ``OUT``.

The script's last stage; it reads what the earlier stages left (a missing table says
which stage to look at) and writes one page: where and what was measured, the stages'
status, the CUDA tests, the training throughput, the short training and its evaluation.

Run: ``python bench/gpu_check_report.py --out OUT --mode gpu|dry-run [--peak-tflops 989]``.
"""

from __future__ import annotations

import argparse
import datetime
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
from common import machine_line, markdown  # noqa: E402

from sgn.utils import atomic_write_text, git_commit  # noqa: E402

FLOPS_CAPTION = (
    "FLOPs per step: `torch.utils.flop_counter.FlopCounterMode` over one optimisation step (forward, loss, backward, "
    "AdamW); it counts matrix multiplications, convolutions and attention only (not element-wise work, the STFT "
    "or the optimizer). MFU: those FLOPs over the median step time (data loading excluded), as a fraction of the "
    "dense bf16 peak. Step and data are medians over the timed steps; mixtures/s counts both."
)


def gpu_name() -> str:
    """What nvidia-smi calls the GPU(s), or why there is no name."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return "none (no nvidia-smi)"
    return "; ".join(out.stdout.strip().splitlines()) if out.returncode == 0 else "none (nvidia-smi failed)"


def header(mode: str, peak_tflops: float | None) -> list[str]:
    import torch

    lines = [
        "# sgn GPU check",
        "",
        f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}",
        f"- commit: {git_commit() or 'unknown (not a git checkout)'}",
        f"- GPU (nvidia-smi): {gpu_name()}",
        f"- torch: {torch.__version__} (CUDA {torch.version.cuda or 'none'})",
        f"- {machine_line()}",
        f"- bf16 dense peak for MFU: {f'{peak_tflops:g} TFLOP/s' if peak_tflops else 'none given (MFU n/a)'}",
    ]
    if mode == "dry-run":
        lines.append("- **dry run**: CPU, `smoke` config, tiny data and step counts. It tests the script's plumbing; "
                     "its figures say nothing about a GPU.")
    return lines


def missing(name: str, stage: str) -> list[str]:
    return [f"_No {name}: see the `{stage}` stage above and `logs/{stage}.log`._"]


def stages(out: Path) -> list[str]:
    table = pd.read_csv(out / "stages.tsv", sep="\t")
    return ["## Stages", "", markdown(table)]


def cuda_tests(out: Path) -> list[str]:
    lines = ["## 1. CUDA tests (`pytest -k cuda` on the test files that use CUDA)", ""]
    path = out / "cuda_tests.xml"
    if not path.is_file():
        return lines + missing("test report", "cuda_tests")
    cases = []
    for case in ET.parse(path).getroot().iter("testcase"):
        outcome = next((child.tag for child in case if child.tag in ("failure", "error", "skipped")), "passed")
        cases.append({"test": f"{case.get('classname')}::{case.get('name')}", "outcome": outcome,
                      "seconds": case.get("time")})
    if not cases:
        return lines + ["_No CUDA test was collected._"]
    table = pd.DataFrame(cases)
    counts = ", ".join(f"{n} {outcome}" for outcome, n in table["outcome"].value_counts().items())
    return lines + [f"{counts} (`cuda_tests.xml`, `logs/cuda_tests.log`)", "", markdown(table)]


def throughput(out: Path, config: str) -> list[str]:
    lines = [f"## 2. Training throughput, `{config}` config (`bench/bench_train.py --flops`; bf16 autocast on CUDA)", ""]
    path = out / "bench_train.csv"
    if not path.is_file():
        return lines + missing("throughput table", "bench")
    return lines + [markdown(pd.read_csv(path, dtype=str, keep_default_na=False)), "", FLOPS_CAPTION]


def training(out: Path, config: str) -> list[str]:
    lines = [f"## 3. Short training of SGN, `{config}` config (`sgn train`), and its evaluation (`sgn evaluate`)", ""]
    path = out / "train" / "metrics.csv"
    if not path.is_file():
        return lines + missing("training metrics", "train")
    metrics = pd.read_csv(path)
    last = metrics.iloc[-1]
    row = {"steps": int(last["step"]), "final loss": f"{last['loss']:.4f}",
           "best validation SDR (dB)": f"{metrics['val_sdr'].max():.2f}",
           "mixtures/s (median over logged intervals)": f"{metrics['samples_per_s'].median():.1f}",
           "wall (s)": f"{last['elapsed_s']:.1f}"}
    return lines + [markdown(pd.DataFrame([row])), "", "Per logged step: `train/metrics.csv`."]


def evaluation(out: Path) -> list[str]:
    path = out / "evaluate_summary.csv"
    if not path.is_file():
        return missing("evaluation", "evaluate")
    summary = pd.read_csv(path)
    table = summary[summary["grouping"] == "method"][["method", "metric", "n", "mean", "ci_low", "ci_high"]]
    return ["Mean over the test list's sources, 95% bootstrap interval over mixtures "
            "(per source: `evaluate.csv`):", "", markdown(table.round(2))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="the gpu_check output folder")
    parser.add_argument("--mode", choices=["gpu", "dry-run"], required=True)
    parser.add_argument("--config", required=True, help="the config the bench and the training used")
    parser.add_argument("--peak-tflops", type=float, default=None)
    args = parser.parse_args()
    sections = [header(args.mode, args.peak_tflops), stages(args.out), cuda_tests(args.out),
                throughput(args.out, args.config), training(args.out, args.config) + [""] + evaluation(args.out)]
    atomic_write_text(args.out / "summary.md", "\n\n".join("\n".join(lines) for lines in sections) + "\n")


if __name__ == "__main__":
    main()
