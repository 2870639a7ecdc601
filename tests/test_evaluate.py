import pandas as pd
import pytest
import torch

from sgn.audio import STFTSpec
from sgn.cli import main
from sgn.evaluate import evaluate, oracle_masks, write_results
from sgn.utils import SGNError


def test_oracle_masks_sum_to_one():
    sources = torch.randn(2, 3, 4096)
    stft = STFTSpec(254, 64)
    for kind in ("irm", "ibm"):
        masks = oracle_masks(sources, stft, kind)
        assert masks.shape == (2, 3, 128, 65)
        assert torch.allclose(masks.sum(1), torch.ones(2, 128, 65), atol=1e-5)


def test_references_are_ordered(tiny_test_list):
    frames = {m: evaluate(tiny_test_list, method=m, n_fft=254, hop=64, progress=False) for m in ("mixture", "irm", "ibm")}
    sdr = {m: f["sdr"].mean() for m, f in frames.items()}
    assert sdr["irm"] > sdr["mixture"] + 5 and sdr["ibm"] > sdr["mixture"] + 5
    # the mixture as estimate scores exactly its own SDR
    mix = frames["mixture"]
    assert (mix["sdri"].abs() < 1e-6).all()
    assert len(mix) == 12 and set(mix["n_sources"]) == {2}


def test_checkpoint_and_summary(smoke_checkpoint, tiny_test_list, tmp_path):
    frame = evaluate(tiny_test_list, checkpoint=smoke_checkpoint, device="cpu", progress=False)
    assert len(frame) == 12 and set(frame["method"]) == {"sgn"}
    out, summary_path = write_results(frame, tmp_path / "results.csv")
    summary = pd.read_csv(summary_path)
    assert set(summary["grouping"]) == {"method", "method+n_sources", "method+class"}
    row = summary[(summary["grouping"] == "method") & (summary["metric"] == "sdr")].iloc[0]
    assert row["ci_low"] <= row["mean"] <= row["ci_high"]


def test_nmf_needs_index(tiny_test_list, tiny_synth):
    with pytest.raises(SGNError, match="needs --index"):
        evaluate(tiny_test_list, method="nmf", n_fft=254, hop=64, progress=False)


def test_cli_evaluate(tiny_test_list, tiny_synth, tmp_path, capsys):
    out = tmp_path / "nmf.csv"
    assert main(["evaluate", "--method", "nmf", "--index", str(tiny_synth), "--mixtures", str(tiny_test_list),
                 "--n-fft", "254", "--hop", "64", "--out", str(out)]) == 0
    frame = pd.read_csv(out)
    assert set(frame["method"]) == {"nmf"} and (tmp_path / "nmf_summary.csv").exists()
    assert main(["evaluate", "--method", "irm", "--mixtures", str(tmp_path / "none.csv"), "--out", str(out)]) == 2
    assert "mixture list not found" in capsys.readouterr().err
