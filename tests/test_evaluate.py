import numpy as np
import pandas as pd
import pytest
import torch

from sgn.audio import STFTSpec
from sgn.cli import main
from sgn.evaluate import (
    evaluate,
    oracle_masks,
    reference_estimator,
    score_estimator,
    write_results,
)
from sgn.metrics import score_padded_batch
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
    from sgn.analysis import grouping_statistics, token_similarity
    from sgn.checkpoint import load_model
    from sgn.data import FixedMixtureDataset

    model, _, _ = load_model(smoke_checkpoint)
    stats = grouping_statistics(model, FixedMixtureDataset(tiny_test_list, model.classes, model.stft))
    assert len(stats) == 6
    assert stats["present_mass"].between(0, 1 + 1e-6).all() and (stats["chance_mass"] == 0.5).all()
    assert (stats["entropy"] <= np.log(len(model.classes)) + 1e-5).all()
    sim = token_similarity(model)
    assert sim.shape == (4, 4) and np.allclose(np.diag(sim), 1, atol=1e-5)


# ------------------------------------------------- batched scoring = the per-mixture loop


@pytest.fixture(scope="module")
def mixed_list(tiny_synth, tmp_path_factory):
    """8 test mixtures of one to three sources (4096 samples), so batches mix numbers of sources."""
    from sgn.data import make_mixture_list, read_index, write_mixture_list

    frame = make_mixture_list(read_index(tiny_synth), "test_seen", n_sources="1-3", count=8, seed=3, segment_samples=4096)
    assert frame.groupby("mixture_id")["n_sources"].first().nunique() > 1
    return write_mixture_list(frame, tmp_path_factory.mktemp("mixed") / "mixed.csv")


def irm_with_unscorable_estimates(stft, classes):
    """The IRM, with batch row 1's first estimate silent and row 2's constant (SI-SDR has nothing
    to measure once its mean is removed, while BSS Eval still can)."""
    irm = reference_estimator("irm", stft, classes, None)

    def estimate(batch):
        est = irm(batch)
        est[1, 0] = 0.0
        est[2, 0] = 0.5
        return est

    return estimate


def test_score_estimator_equals_the_per_mixture_loop(mixed_list, caplog):
    from sgn.data import FixedMixtureDataset, read_mixture_list
    from sgn.metrics import SilentSignalError, evaluate_mixture

    stft = STFTSpec(254, 64)
    classes = sorted(read_mixture_list(mixed_list)["class"].unique())
    dataset = FixedMixtureDataset(mixed_list, classes, stft)
    estimator = irm_with_unscorable_estimates(stft, classes)
    frame = score_estimator("irm", estimator, dataset, batch_size=4, progress=False)

    expected, skipped = {}, []
    for batch in torch.utils.data.DataLoader(dataset, batch_size=4):
        est = estimator(batch)
        for i in range(len(est)):
            n, mixture_id = int(batch["n_sources"][i]), int(batch["mixture_id"][i])
            try:
                expected[mixture_id] = evaluate_mixture(batch["sources"][i, :n], est[i, :n], batch["mixture"][i])
            except SilentSignalError:
                skipped.append(mixture_id)
    assert skipped == [1, 2, 5, 6]  # rows 1 and 2 of both batches
    assert "4 of 8 mixtures skipped" in caplog.text
    assert sorted(frame["mixture_id"].unique()) == sorted(expected)
    for mixture_id, scores in expected.items():
        rows = frame[frame["mixture_id"] == mixture_id].sort_values("source")
        assert list(rows["n_sources"]) == [len(scores["sdr"])] * len(rows)
        for key in ("sdr", "sir", "sar", "si_sdr", "sdr_mixture", "sdri"):
            np.testing.assert_allclose(rows[key], scores[key], atol=1e-6, rtol=0, err_msg=key)


def padded_batch(n_sources=(2, 3, 1, 3, 2), length=2048, seed=0):
    """A padded batch ``[B, 3, L]`` of noisy estimates with the given numbers of sources."""
    rng = np.random.default_rng(seed)
    sources = torch.zeros(len(n_sources), 3, length, dtype=torch.float64)
    for i, n in enumerate(n_sources):
        sources[i, :n] = torch.from_numpy(rng.standard_normal((n, length)))
    estimates = sources + 0.3 * torch.from_numpy(rng.standard_normal(sources.shape)) * (sources != 0)
    return sources, estimates, torch.tensor(n_sources), sources.sum(1)


def test_score_padded_batch_groups_by_number_of_sources():
    from sgn.metrics import SilentSignalError, evaluate_mixture, evaluate_mixture_batch

    sources, estimates, n_sources, mixtures = padded_batch()
    estimates[3, 2] = 0.0  # a silent estimate in the group of three-source mixtures
    results = score_padded_batch(evaluate_mixture_batch, sources, estimates, n_sources, mixtures)
    assert isinstance(results[3], SilentSignalError) and "estimate 2 is silent" in str(results[3])
    assert "mixture 0" not in str(results[3])  # a mixture scored alone is not named by its index in the group
    for i in (0, 1, 2, 4):
        n = int(n_sources[i])
        expected = evaluate_mixture(sources[i, :n], estimates[i, :n], mixtures[i])
        assert results[i].keys() == expected.keys()
        for key in expected:
            np.testing.assert_allclose(results[i][key], expected[key], atol=1e-6, rtol=0, err_msg=key)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_score_padded_batch_on_cuda_equals_cpu():
    from sgn.metrics import evaluate_mixture_batch

    sources, estimates, n_sources, mixtures = padded_batch()
    on_cpu = score_padded_batch(evaluate_mixture_batch, sources, estimates, n_sources, mixtures)
    on_gpu = score_padded_batch(evaluate_mixture_batch, sources, estimates.cuda(), n_sources, mixtures)
    for cpu, gpu in zip(on_cpu, on_gpu):
        for key in cpu:
            np.testing.assert_allclose(gpu[key], cpu[key], atol=1e-6, rtol=0, err_msg=key)


@pytest.mark.parametrize(
    "settings,fragment",
    [
        ({"n_fft": 0}, "n_fft: got 0; expected a whole number of samples in 16..65536"),
        ({"n_fft": 65538, "hop": 8192}, "n_fft: got 65538"),
        ({"n_fft": -1}, "n_fft: got -1"),
        ({"n_fft": 15}, "n_fft: got 15"),
        ({"n_fft": 254.0}, "n_fft: got 254.0"),
        ({"n_fft": "254"}, "n_fft: got '254'"),
        ({"hop": 0}, "hop: got 0; expected a whole number of samples in 16..254 (n_fft / 16 to n_fft)"),
        ({"hop": 15}, "hop: got 15"),
        ({"n_fft": 8192, "hop": 1}, "hop: got 1; expected a whole number of samples in 512..8192"),
        ({"hop": -64}, "hop: got -64"),
        ({"hop": 255}, "hop: got 255"),
        ({"hop": None}, "hop: got None"),
        ({"batch_size": 0}, "batch_size: got 0; expected a whole number in 1..4096"),
        ({"batch_size": 10**20}, "batch_size: got 100000000000000000000"),
        ({"batch_size": -8}, "batch_size: got -8"),
        ({"batch_size": 2.5}, "batch_size: got 2.5"),
        ({"batch_size": True}, "batch_size: got True"),
    ],
)
def test_evaluate_refuses_bad_settings(tiny_test_list, settings, fragment):
    with pytest.raises(SGNError) as err:
        evaluate(tiny_test_list, method="irm", **{"n_fft": 254, "hop": 64, **settings}, progress=False)
    assert "\n" not in str(err.value) and fragment in str(err.value)


@pytest.mark.parametrize("flag,value", [("--n-fft", "0"), ("--hop", "0"), ("--hop", "2000"), ("--batch-size", "0"),
                                        ("--hop", "1"), ("--batch-size", "1" * 20), ("--n-fft", "²")])
def test_cli_evaluate_bad_settings_write_nothing(tiny_test_list, tmp_path, capsys, flag, value):
    out = tmp_path / "irm.csv"
    assert main(["evaluate", "--method", "irm", "--mixtures", str(tiny_test_list), flag, value,
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("sgn: error: ") and "\n" not in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("n_mixtures", [1, 3])
def test_all_mixtures_skipped_is_one_error_and_writes_nothing(tmp_path, capsys, n_mixtures):
    import soundfile as sf

    sf.write(tmp_path / "silent.wav", np.zeros(8192, dtype=np.float32), 11025)
    sf.write(tmp_path / "tone.wav", 0.5 * np.sin(np.arange(8192) / 3).astype(np.float32), 11025)
    rows = [f"{m},2,{s},{c},{p},0,4096,1.0" for m in range(n_mixtures)
            for s, (c, p) in enumerate([("cello", "silent.wav"), ("flute", "tone.wav")])]
    (tmp_path / "list.csv").write_text("mixture_id,n_sources,source,class,path,offset,length,gain\n"
                                       + "\n".join(rows) + "\n")
    out = tmp_path / "out" / "irm.csv"
    assert main(["evaluate", "--method", "irm", "--mixtures", str(tmp_path / "list.csv"), "--n-fft", "254",
                 "--hop", "64", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"sgn: error: irm: all {n_mixtures} mixtures were skipped: silent signals (first: mixture 0")
    assert len(err) < 300 and not (tmp_path / "out").exists()
    with pytest.raises(SGNError, match="no scored sources"):
        write_results(pd.DataFrame(), out)
    assert not (tmp_path / "out").exists()


def test_assignment_agreement_follows_the_dominant_source():
    from sgn.analysis import assignment_agreement
    from sgn.interface import TokenLayout

    layout = TokenLayout.build(["a", "b", "c"], tokens_per_class=2)  # tokens 0-1: a, 2-3: b, 4-5: c
    class_ids = torch.tensor([[2, 0, -1]])  # c and a present, a padding slot
    source_energy = torch.zeros(1, 3, 2, 2)
    source_energy[0, 0, 0] = 5.0  # c dominates the top row of patches
    source_energy[0, 1, 1] = 5.0  # a the bottom row
    source_energy[0, 2] = 99.0  # padding must never count as a source
    energy = torch.tensor([[[0.1, 0.2], [0.3, 0.4]]])  # patch shares of the mixture energy
    following = torch.zeros(1, 6, 2, 2)
    following[0, 4, 0], following[0, 1, 1] = 1.0, 1.0  # c's token takes the top, a's second token the bottom
    agreement, chance = assignment_agreement(following, source_energy, class_ids, layout, energy)
    assert agreement.tolist() == pytest.approx([1.0]) and chance.tolist() == [0.5]
    swapped = following.flip(2)
    assert assignment_agreement(swapped, source_energy, class_ids, layout, energy)[0].tolist() == pytest.approx([0.0])
    absent = torch.zeros(1, 6, 2, 2)
    absent[0, 2:4] = 0.9  # most mass on b, which is not in the mixture: only present classes compete
    absent[0, 5, 1] = 0.1
    absent[0, 0, 0] = 0.05
    agreement, _ = assignment_agreement(absent, source_energy, class_ids, layout, energy)
    assert agreement.tolist() == pytest.approx([0.0])  # top row goes to a (0.05 > 0 for c), bottom to c


def test_source_agreement_is_each_source_s_recall():
    import math

    from sgn.analysis import source_agreement
    from sgn.interface import TokenLayout

    layout = TokenLayout.build(["a", "b", "c"])
    class_ids = torch.tensor([[2, 0, -1]])
    source_energy = torch.zeros(1, 3, 2, 2)
    source_energy[0, 0, 0] = 5.0  # c dominates the top row
    source_energy[0, 1, 1] = 5.0  # a the bottom row
    energy = torch.tensor([[[0.1, 0.2], [0.3, 0.4]]])
    assignment = torch.zeros(1, 3, 2, 2)
    assignment[0, 2, 0] = 1.0  # c's token takes the top row
    assignment[0, 2, 1, 0] = 1.0  # and the bottom-left patch, which is a's
    assignment[0, 0, 1, 1] = 1.0
    recall, dominated = source_agreement(assignment, source_energy, class_ids, layout, energy)
    recall = recall[0].tolist()
    assert recall[:2] == pytest.approx([1.0, 0.4 / 0.7]) and math.isnan(recall[2])
    assert dominated[0].tolist() == pytest.approx([0.3, 0.7, 0.0])
