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


def test_presence_detection(smoke_checkpoint, tiny_test_list):
    from sgn.evaluate import presence_detection

    frame = presence_detection(smoke_checkpoint, tiny_test_list, device="cpu")
    assert len(frame) == 6 and set(frame["n_sources"]) == {2}
    assert frame["precision"].between(0, 1).all() and frame["recall"].between(0, 1).all()
    assert all(len(t.split("+")) == 2 for t in frame["true"])


def test_grouping_statistics(smoke_checkpoint, tiny_test_list):
    import numpy as np

    from sgn.analysis import grouping_statistics, token_similarity
    from sgn.checkpoint import load_model
    from sgn.data import FixedMixtureDataset
    from sgn.separate import model_stft

    model, _, _ = load_model(smoke_checkpoint)
    stats = grouping_statistics(model, FixedMixtureDataset(tiny_test_list, model.classes, model_stft(model)))
    assert len(stats) == 6
    assert stats["present_mass"].between(0, 1 + 1e-6).all() and (stats["chance_mass"] == 0.5).all()
    assert (stats["entropy"] <= np.log(len(model.classes)) + 1e-5).all()
    sim = token_similarity(model)
    assert sim.shape == (4, 4) and np.allclose(np.diag(sim), 1, atol=1e-5)
