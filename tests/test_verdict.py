"""The verdict's words follow its numbers: every sentence, side and status is re-derived from the intervals."""

import pandas as pd
import pytest

from sgn.lab.report import save_table
from sgn.lab.verdict import (CLAIMS, FAILS, HOLDS, NOT_RUN, NOT_TESTED, UNDECIDED, claim_evidence, claim_status,
                             comparison_sentence, contradictions, decide_claims, side, verdict_markdown)

CLAIM = {c.key: c for c in CLAIMS}


@pytest.mark.parametrize("low, high, reference, expected", [
    (0.1, 0.9, 0.0, "above"), (-0.9, -0.1, 0.0, "below"), (-0.1, 0.9, 0.0, "undecided"), (0.0, 0.9, 0.0, "undecided"),
    (0.81, 0.95, 0.8, "above"), (0.5, 0.79, 0.8, "below"), (0.7, 0.9, 0.8, "undecided"),
])
def test_side_needs_the_whole_interval_past_the_reference(low, high, reference, expected):
    assert side(low, high, reference) == expected


def test_comparison_sentence_says_only_what_the_interval_allows():
    assert comparison_sentence("A", "B", 1.2, 0.4, 2.0) == "A is above B by +1.20 dB [+0.40, +2.00]"
    assert comparison_sentence("A", "B", -1.2, -2.0, -0.4) == "A is below B by -1.20 dB [-2.00, -0.40]"
    assert "cannot be told apart" in comparison_sentence("A", "B", 0.8, -0.1, 1.7)
    assert "above" not in comparison_sentence("A", "B", 0.8, -0.1, 1.7)


@pytest.mark.parametrize("key, sides, expected", [
    ("audio_only", ["above", "above"], HOLDS),
    ("audio_only", ["above", "undecided"], UNDECIDED),
    ("audio_only", ["above", "below"], FAILS),  # one list on the wrong side is enough
    ("class_tokens", ["below"], HOLDS),  # removing the tokens must cost SDR
    ("class_tokens", ["above"], FAILS),
    ("grouping", [], NOT_RUN),
    ("audio_visual", [], NOT_TESTED),
])
def test_claim_status(key, sides, expected):
    assert claim_status(CLAIM[key], sides) == expected


def _results(tmp_path, paired, ablation=None, sdri=None, recall=None, presence=None):
    """A results folder with the tables the verdict reads."""
    save_table(pd.DataFrame([{"classes": 11, "banks": 3, "held_out": "fluidr3", "clips": 10, "minutes": 1.0}]),
               tmp_path / "01_data", "data_summary")
    save_table(pd.DataFrame({"model": ["sgn", "unet"], "steps": [700, 700], "best_val_sdr": [8.0, 6.0],
                             "train_minutes": [5.5, 3.0], "this_session_minutes": [5.5, 3.0]}),
               tmp_path / "02_train", "training_summary")
    save_table(pd.DataFrame({"method": ["sgn", "unet", "nmf", "irm"], "sdr": [9.0, 7.0, 10.0, 20.0],
                             "sdr_95ci": ["[8.00, 10.00]", "[6.00, 8.00]", "[9.00, 11.00]", "[19.00, 21.00]"]}),
               tmp_path / "03_evaluate", "headline")
    save_table(pd.DataFrame(paired, columns=["list", "difference", "mean", "ci_low", "ci_high", "called"]),
               tmp_path / "03_evaluate", "paired_differences")
    if ablation is not None:
        save_table(pd.DataFrame(ablation, columns=["variant", "diff", "diff_low", "diff_high"]),
                   tmp_path / "04_ablation_class_tokens", "ablation_sdr")
    if sdri is not None:
        save_table(pd.DataFrame(sdri, columns=["variant", "n_sources", "mean", "ci_low", "ci_high"]),
                   tmp_path / "05_ablation_num_sources", "sdri_by_n")
    if recall is not None:
        save_table(pd.DataFrame(recall, columns=["variant", "n_sources", "mean", "ci_low", "ci_high"]),
                   tmp_path / "05_ablation_num_sources", "recall_by_n")
    if presence is not None:  # chapter 03: the trained models' presence head
        save_table(pd.DataFrame(presence, columns=["method", "list", "metric", "mean", "ci_low", "ci_high"]),
                   tmp_path / "03_evaluate", "presence")
    return tmp_path


def test_the_cpu_book_case_nmf_ahead_is_not_reproduced(tmp_path):
    results = _results(tmp_path, [
        ("test_seen_2src", "sgn - unet", 2.4, 1.9, 2.8, "yes"), ("test_seen_2src", "sgn - nmf", -1.1, -1.9, -0.2, "yes"),
        ("test_unseen_2src", "sgn - unet", 1.9, 1.4, 2.4, "yes"), ("test_unseen_2src", "sgn - nmf", 0.8, -0.1, 1.7, "no"),
    ], ablation=[("full", 0, 0, 0), ("paper", -0.4, -0.6, -0.1), ("no_grouping", -0.1, -0.3, 0.2)],
        sdri=[("trained_on_2", 1, 0.0, 0.0, 0.0), ("trained_on_2", 2, 8.0, 7.0, 9.0), ("trained_on_2", 3, 3.0, 2.0, 4.0)],
        recall=[("trained_on_2", 2, 0.3, 0.2, 0.4)])
    evidence = claim_evidence(results)
    claims = decide_claims(evidence).set_index("claim")
    assert claims.loc["audio_only", "verdict"] == "reproduced"
    assert claims.loc["nmf", "verdict"] == "not reproduced"  # below on one list, even though the other is undecided
    assert claims.loc["grouping", "verdict"] == "undecided at this budget"
    assert claims.loc["class_tokens", "verdict"] == "not run in this profile"
    assert claims.loc["any_n", "verdict"] == "reproduced"  # N = 1 (the mixture itself) is not evidence
    assert claims.loc["assign_loss", "verdict"] == "holds"  # full above `paper` at the ablation budget
    assert claims.loc["presence_ablation", "verdict"] == "does not hold"
    assert claims.loc["presence", "verdict"] == "not run in this profile"  # chapter 03 measured no presence head
    assert claims.loc["audio_visual", "verdict"] == "not tested"
    assert not contradictions(decide_claims(evidence), evidence)
    text = verdict_markdown(results, "cpu")
    assert text.startswith("**Verdict of this build** (profile `cpu`, at most 700 steps (5.5 min) per model)")
    assert "- **Not reproduced / does not hold**: SGN beats NMF;" in text
    assert "- **Reproduced / holds**: SGN beats an audio-only network (U-Net);" in text


def test_the_paper_model_decides_the_paper_claims_where_it_was_trained(tmp_path):
    results = _results(tmp_path, [
        ("test_seen_2src", "sgn - sgn_paper", -0.2, -0.6, 0.2, "no"), ("test_seen_2src", "sgn - unet", 3.0, 2.0, 4.0, "yes"),
        ("test_seen_2src", "sgn_paper - unet", 0.5, -0.2, 1.1, "no"),
    ], ablation=[("full", 0, 0, 0), ("paper", -2.0, -3.0, -1.0)])
    evidence = claim_evidence(results)
    assert list(evidence.loc[evidence["claim"] == "audio_only", "a"]) == ["SGN (paper, as inferred)"]
    claims = decide_claims(evidence).set_index("claim")
    assert claims.loc["audio_only", "status"] == UNDECIDED
    # our loss is judged at the full budget where sgn_paper was trained, not at the ablation budget
    assert claims.loc["assign_loss", "status"] == UNDECIDED


@pytest.mark.parametrize("seen, unseen, expected", [
    ((0.84, 0.81, 0.88), (0.86, 0.82, 0.90), "holds"),
    ((0.84, 0.81, 0.88), (0.80, 0.75, 0.85), "undecided at this budget"),  # one list's interval holds the goal
    ((0.84, 0.81, 0.88), (0.60, 0.50, 0.70), "does not hold"),
])
def test_the_trained_models_presence_is_judged_on_every_list_apart_from_the_ablation_budget(
        tmp_path, seen, unseen, expected):
    rows = [("sgn", "test_seen_2src", "recall", *seen), ("sgn", "test_unseen_2src", "recall", *unseen),
            ("sgn", "test_seen_2src", "precision", 0.1, 0.0, 0.2)]  # precision is shown, not a claim's evidence
    results = _results(tmp_path, [("test_seen_2src", "sgn - unet", 2.4, 1.9, 2.8, "yes")],
                       recall=[("trained_on_2", 2, 0.3, 0.2, 0.4)], presence=rows)
    evidence = claim_evidence(results)
    assert len(evidence[evidence["claim"] == "presence"]) == 2
    claims = decide_claims(evidence).set_index("claim")
    assert claims.loc["presence", "verdict"] == expected
    assert claims.loc["presence_ablation", "verdict"] == "does not hold"
    assert not contradictions(decide_claims(evidence), evidence)


@pytest.mark.parametrize("variant, claim", [("no_class_tokens", "class_tokens"), ("shared_tokens", "class_tokens"),
                                            ("no_grouping", "grouping"), ("k2", None), ("no_ce", None)])
def test_each_ablation_variant_bears_on_its_claim_only(tmp_path, variant, claim):
    results = _results(tmp_path, [("test_seen_2src", "sgn - unet", 2.4, 1.9, 2.8, "yes")],
                       ablation=[("full", 0, 0, 0), (variant, -1.2, -1.7, -0.7)])
    evidence = claim_evidence(results)
    assert sorted(set(evidence["claim"]) - {"audio_only"}) == ([claim] if claim else [])


def _consistent(tmp_path):
    results = _results(tmp_path, [("test_seen_2src", "sgn - unet", 0.8, -0.1, 1.7, "no"),
                                  ("test_seen_2src", "sgn - nmf", -1.0, -1.5, -0.5, "yes")])
    evidence = claim_evidence(results)
    return decide_claims(evidence), evidence


@pytest.mark.parametrize("tamper", [
    "sentence says beats", "side says above", "status says holds", "verdict says reproduced", "numbers moved",
])
def test_contradictions_catch_a_word_that_its_numbers_do_not_support(tmp_path, tamper):
    claims, evidence = _consistent(tmp_path)
    assert not contradictions(claims, evidence)
    row = evidence.index[(evidence["claim"] == "audio_only")][0]
    claim = claims.index[claims["claim"] == "audio_only"][0]
    if tamper == "sentence says beats":
        evidence.loc[row, "sentence"] = "SGN is above the U-Net by +0.80 dB [-0.10, +1.70]"
    elif tamper == "side says above":
        evidence.loc[row, "side"] = "above"
    elif tamper == "status says holds":
        claims.loc[claim, "status"] = HOLDS
    elif tamper == "verdict says reproduced":
        claims.loc[claim, "verdict"] = "reproduced"
    else:  # the interval changed after the words were written
        evidence.loc[row, ["ci_low", "ci_high"]] = [0.2, 1.7]
    found = contradictions(claims, evidence)
    assert found and all("audio_only" in line for line in found)


def _folds(tmp_path, differences):
    """Chapter 12's fold table: per held-out bank, the methods' rows and SGN's paired differences."""
    rows = []
    for bank, diffs in differences.items():
        rows += [{"held-out bank": bank, "method": m, "unseen SDR": 8.0, "unseen low": 7.0, "unseen high": 9.0,
                  "seen SDR": 9.0, "unseen / seen": 8 / 9} for m in ("sgn", "unet", "nmf", "irm")]
        rows += [{"held-out bank": bank, "method": f"sgn - {b}", "unseen SDR": (lo + hi) / 2, "unseen low": lo,
                  "unseen high": hi} for b, (lo, hi) in diffs.items()]
    save_table(pd.DataFrame(rows), tmp_path / "12_unseen_banks", "folds")


@pytest.mark.parametrize("differences, verdict", [
    ({"fluidr3": {"unet": (1.0, 2.0), "nmf": (0.2, 1.0)}, "opl3": {"unet": (0.5, 1.5), "nmf": (0.1, 0.9)}}, "holds"),
    ({"fluidr3": {"unet": (1.0, 2.0), "nmf": (0.2, 1.0)}, "opl3": {"unet": (0.5, 1.5), "nmf": (-0.3, 0.9)}},
     "undecided at this budget"),
    ({"fluidr3": {"unet": (1.0, 2.0), "nmf": (-1.5, -0.2)}, "opl3": {"unet": (0.5, 1.5), "nmf": (0.1, 0.9)}},
     "does not hold"),  # one held-out bank where NMF is ahead is enough
])
def test_unseen_banks_claim_needs_sgn_ahead_on_every_held_out_bank(tmp_path, differences, verdict):
    results = _results(tmp_path, [("test_seen_2src", "sgn - unet", 2.4, 1.9, 2.8, "yes")])
    _folds(results, differences)
    evidence = claim_evidence(results)
    mine = evidence[evidence["claim"] == "unseen_banks"]
    assert len(mine) == 4 and set(mine["test"]) == {"held-out bank `fluidr3`", "held-out bank `opl3`"}
    claims = decide_claims(evidence).set_index("claim")
    assert claims.loc["unseen_banks", "verdict"] == verdict
    assert not contradictions(decide_claims(evidence), evidence)


def test_unseen_banks_claim_is_not_run_without_chapter_12(tmp_path):
    results = _results(tmp_path, [("test_seen_2src", "sgn - unet", 2.4, 1.9, 2.8, "yes")])
    assert decide_claims(claim_evidence(results)).set_index("claim").loc["unseen_banks", "verdict"] == \
        "not run in this profile"
