"""Studies as library calls: variants x seeds, trained once each, scored into one long table."""

import numpy as np
import pandas as pd
import pytest

from sgn.config import apply_overrides, load_config
from sgn.lab.study import (
    CLASS_TOKEN_VARIANTS,
    NUM_SOURCES_VARIANTS,
    STUDY_COLUMNS,
    pick_variants,
    run_study,
    study_means,
    study_run_dir,
    variant_config,
)
from sgn.utils import SGNError

BUDGET = {"optim.max_steps": 2, "eval_every": 2, "data.val_mixtures": 2}


@pytest.fixture(scope="module")
def study(tiny_synth, tiny_test_list, tmp_path_factory):
    runs = tmp_path_factory.mktemp("study_runs")
    variants = pick_variants(CLASS_TOKEN_VARIANTS, ["full", "no_grouping"])
    frame = run_study(variants, [0, 1], config="smoke", data_index=tiny_synth, budget=BUDGET,
                      mixtures=tiny_test_list, runs_dir=runs, device="cpu", progress=False)
    return frame, runs


def test_long_table_has_every_variant_seed_and_metric(study, tiny_test_list):
    frame, _ = study
    assert tuple(frame.columns) == STUDY_COLUMNS
    assert frame.groupby(["variant", "seed"]).ngroups == 4
    sources = pd.read_csv(tiny_test_list)
    per_run = frame[(frame["variant"] == "full") & (frame["seed"] == 0)]
    assert (per_run["metric"] == "sdr").sum() == len(sources)  # one row per source
    assert (per_run["metric"] == "presence_recall").sum() == sources["mixture_id"].nunique()  # one per mixture
    assert (per_run["metric"] == "train_minutes").sum() == 1
    assert set(per_run.loc[per_run["metric"] == "sdr", "class"]) == set(sources["class"])
    # the grouping's agreement with the sources, per mixture, for models that group
    assert (per_run["metric"] == "agreement").sum() == sources["mixture_id"].nunique()
    assert per_run.loc[per_run["metric"] == "agreement", "value"].between(0, 1).all()
    assert not (frame[frame["variant"] == "no_grouping"]["metric"] == "agreement").any()


def test_seeds_train_different_models(study):
    frame, _ = study
    sdr = frame[frame["metric"] == "sdr"].groupby(["variant", "seed"])["value"].mean()
    assert sdr[("full", 0)] != sdr[("full", 1)]


def test_a_second_study_trains_and_scores_nothing_again(study, tiny_synth, tiny_test_list, monkeypatch):
    import sgn.evaluate
    import sgn.train

    frame, runs = study

    def refuse(*args, **kwargs):
        raise AssertionError("trained or scored again")

    monkeypatch.setattr(sgn.train, "train_step", refuse)
    monkeypatch.setattr(sgn.evaluate, "evaluate", refuse)
    again = run_study({"full": {}}, [1, 0], config="smoke", data_index=tiny_synth, budget=BUDGET,
                      mixtures=tiny_test_list, runs_dir=runs, device="cpu", progress=False)
    same = frame[frame["variant"] == "full"].sort_values(["seed", "metric", "mixture_id", "source"])
    mine = again.sort_values(["seed", "metric", "mixture_id", "source"])
    pd.testing.assert_frame_equal(same.reset_index(drop=True), mine.reset_index(drop=True))


def test_runs_are_keyed_by_config_and_seed(tiny_synth):
    base = apply_overrides(load_config("smoke"), {"data.index": str(tiny_synth)})
    full = variant_config(base, {}, BUDGET, 0)
    assert study_run_dir("r", full) == study_run_dir("r", variant_config(base, {"model.grouping": True}, BUDGET, 0))
    assert study_run_dir("r", full) != study_run_dir("r", variant_config(base, {}, BUDGET, 1))
    assert study_run_dir("r", full) != study_run_dir("r", variant_config(base, {"model.grouping": False}, BUDGET, 0))
    # the variant's own overrides win over the budget
    assert variant_config(base, {"optim.max_steps": 5}, BUDGET, 0).optim.max_steps == 5


def test_means_by_variant_keep_the_variants_order(study):
    frame, _ = study
    table = study_means(frame, ["sdr", "presence_precision"])
    assert list(table.index) == ["full", "no_grouping"] and list(table.columns) == ["sdr", "presence_precision"]
    by_n = study_means(frame, ["sdr"], by=["variant", "n_sources"])
    assert by_n.index.names == ["variant", "n_sources"]


def test_unknown_variant_and_no_seed_are_one_line(tiny_test_list, tmp_path):
    with pytest.raises(SGNError, match="unknown variant 'k3'; known: "):
        pick_variants(CLASS_TOKEN_VARIANTS, ["full", "k3"])
    with pytest.raises(SGNError, match="seeds: expected a list of one or more whole numbers"):
        run_study({"full": {}}, [], config="smoke", mixtures=tiny_test_list, runs_dir=tmp_path)
    assert list(pick_variants(NUM_SOURCES_VARIANTS, [])) == ["trained_on_2", "trained_on_1to4"]


def _long(variant_scores: dict) -> pd.DataFrame:
    """run_study's long table from ``{variant: matrix [seeds, mixtures]}`` of SDRs (one source per mixture)."""
    rows = [{"variant": name, "seed": s, "mixture_id": m, "n_sources": 2, "source": 0, "class": "a",
             "metric": "sdr", "value": float(matrix[s, m])}
            for name, matrix in variant_scores.items() for s in range(matrix.shape[0]) for m in range(matrix.shape[1])]
    return pd.DataFrame(rows)


def test_study_intervals_call_a_real_difference_and_not_noise():
    from sgn.lab.study import study_intervals

    rng = np.random.default_rng(0)
    mixture_difficulty = rng.normal(8.0, 3.0, size=60)  # shared by every variant: the pairing removes it
    full = mixture_difficulty + rng.normal(0, 0.3, size=(3, 60))
    better = full + 1.0 + rng.normal(0, 0.3, size=(3, 60))
    same = full + rng.normal(0, 0.3, size=(3, 60))
    table = study_intervals(_long({"full": full, "better": better, "same": same})).set_index("variant")
    assert table.loc["better", "called"] and table.loc["better", "diff_low"] > 0.8
    assert table.loc["better", "diff"] == pytest.approx(1.0, abs=0.1)
    assert not table.loc["same", "called"] and table.loc["same", "diff_low"] < 0 < table.loc["same", "diff_high"]
    assert not table.loc["full", "called"] and table.loc["full", "diff"] == 0
    # the mean's interval includes the mixtures' spread (3 dB / sqrt(60) ~ 0.4 dB each side), not only the noise
    assert table.loc["full", "ci_high"] - table.loc["full", "ci_low"] > 1.0


def test_study_intervals_widen_with_the_seed_to_seed_spread():
    from sgn.lab.study import study_intervals

    rng = np.random.default_rng(1)
    base = rng.normal(8.0, 1.0, size=(3, 40))
    steady = base + 0.5
    unsteady = base + np.array([[-2.0], [0.5], [3.0]])  # same mean difference, but it depends on the seed
    table = study_intervals(_long({"full": base, "steady": steady, "unsteady": unsteady})).set_index("variant")
    width = table["diff_high"] - table["diff_low"]
    assert width["unsteady"] > 5 * width["steady"]
    assert table.loc["steady", "called"] and not table.loc["unsteady", "called"]


def test_study_intervals_refuse_variants_scored_on_other_seeds():
    from sgn.lab.study import study_intervals

    scores = _long({"full": np.zeros((3, 5)), "other": np.ones((2, 5))})
    with pytest.raises(SGNError, match="variant 'other' was scored on other seeds or mixtures"):
        study_intervals(scores)


def test_difference_text_formats_a_row():
    from sgn.lab.study import difference_text

    row = {"diff": 0.297, "diff_low": -0.418, "diff_high": 0.844}
    assert difference_text(row) == "+0.30 dB [-0.42, +0.84]"
    assert difference_text(row, unit="", digits=3) == "+0.297 [-0.418, +0.844]"


def test_runs_trained_two_at_a_time_are_the_runs_trained_one_by_one(study, tiny_synth, tiny_test_list, tmp_path):
    """train_all's pool workers (one thread each) train the same configs into the same folders;
    only the threads' summation order differs (fp32: far below a hundredth of a dB)."""
    frame, runs = study
    variants = pick_variants(CLASS_TOKEN_VARIANTS, ["full", "no_grouping"])
    again = run_study(variants, [0, 1], config="smoke", data_index=tiny_synth, budget=BUDGET,
                      mixtures=tiny_test_list, runs_dir=tmp_path, device="cpu", progress=False, jobs=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in runs.iterdir())
    key = ["variant", "seed", "metric", "mixture_id", "source"]
    sdr = [f[f["metric"] == "sdr"].sort_values(key)["value"].to_numpy() for f in (frame, again)]
    np.testing.assert_allclose(sdr[1], sdr[0], atol=0.01)


@pytest.mark.parametrize(("jobs", "message"), [(0, "jobs: expected a whole number of at least 1, got 0"),
                                               (1.5, "jobs: expected a whole number of at least 1, got 1.5"),
                                               (True, "jobs: expected a whole number of at least 1, got True")])
def test_train_all_refuses_a_bad_number_of_jobs(tiny_synth, tmp_path, jobs, message):
    from sgn.train import train_all

    config = apply_overrides(load_config("smoke"), {"data.index": str(tiny_synth)})
    with pytest.raises(SGNError, match=message):
        train_all([(config, tmp_path / "a"), (config, tmp_path / "b")], jobs=jobs, device="cpu", progress=False)
    assert not any(tmp_path.iterdir())


def test_train_all_refuses_two_runs_in_one_folder_and_reports_a_workers_error(tiny_synth, tmp_path):
    from sgn.train import train_all

    config = apply_overrides(load_config("smoke"), {"data.index": str(tiny_synth)})
    with pytest.raises(SGNError, match="two runs would train in the same folder"):
        train_all([(config, tmp_path / "a"), (config, tmp_path / "a")], jobs=2, device="cpu", progress=False)
    (tmp_path / "a_file").write_text("not a folder")  # train() refuses it in the worker: the error comes back
    with pytest.raises(SGNError, match="a_file"):
        train_all([(config, tmp_path / "a_file"), (config, tmp_path / "b")], jobs=2, device="cpu", progress=False)
