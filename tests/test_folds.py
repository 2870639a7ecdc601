"""Leave one bank out (sgn.lab.folds): a fold's set holds the right bank out, and the table says what the scores say."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from sgn.lab.folds import fold_index, fold_table, held_out_bank
from sgn.utils import SGNError


def test_a_fold_renders_the_main_sets_settings_with_another_bank_held_out(tiny_synth):
    assert fold_index(tiny_synth, held_out_bank(tiny_synth)) == tiny_synth  # the main set is its own fold
    fold = fold_index(tiny_synth, "opl3")
    assert fold.parent.name == f"{tiny_synth.parent.name}_without_opl3" and fold.parent.parent == tiny_synth.parent.parent
    main, other = (json.loads((p.parent / "prepare.json").read_text())["settings"] for p in (tiny_synth, fold))
    assert other["held_out"] == "opl3" and other["ensembles"] == 0
    assert {k: v for k, v in other.items() if k not in ("held_out", "ensembles")} == \
        {k: v for k, v in main.items() if k not in ("held_out", "ensembles")}
    index = pd.read_csv(fold)
    unseen = index["split"].isin(["val_unseen", "test_unseen"])
    assert set(index.loc[unseen, "bank"]) == {"opl3"} and "opl3" not in set(index.loc[~unseen, "bank"])
    assert fold_index(tiny_synth, "opl3") == fold  # rendered once


@pytest.mark.parametrize("bank, match", [("grand_piano", r"folds: bank 'grand_piano' is not one of the set's banks"),
                                         ("fluidr3", r"no SynthMUSIC prepare.json beside it")])
def test_bad_fold_requests_are_one_line(bank, match, tiny_synth, tmp_path):
    index = tiny_synth
    if bank == "fluidr3":  # a set without a SynthMUSIC record (a downloaded one)
        index = tmp_path / "index.csv"
        index.write_text("path,class,split,duration_s,sample_rate\n")
    with pytest.raises(SGNError, match=match) as err:
        fold_index(index, bank)
    assert "\n" not in str(err.value)


def scores(fold: str, means: dict[str, dict[str, float]], n: int = 40) -> pd.DataFrame:
    """Per-source SDRs of two sources per mixture: method m on split s around means[s][m], a shared
    per-mixture difficulty, so paired differences are tight."""
    rng = np.random.default_rng(0)
    difficulty = rng.normal(0, 2, n)
    rows = []
    for split, by_method in means.items():
        for method, mean in by_method.items():
            for mixture in range(n):
                for source in range(2):
                    rows.append({"fold": fold, "split": split, "method": method, "mixture_id": mixture,
                                 "source": source, "sdr": mean + difficulty[mixture] + rng.normal(0, 0.2)})
    return pd.DataFrame(rows)


def test_the_table_gives_each_banks_share_kept_and_the_paired_differences():
    frame = pd.concat([
        scores("opl3", {"test_seen": {"sgn": 10.0, "unet": 8.0, "nmf": 9.0, "irm": 20.0},
                        "test_unseen": {"sgn": 6.0, "unet": 6.1, "nmf": 7.0, "irm": 20.0}}),
        scores("fluidr3", {"test_seen": {"sgn": 10.0, "nmf": 9.0}, "test_unseen": {"sgn": 9.0, "nmf": 8.0}}),
    ])
    table = fold_table(frame).set_index(["held-out bank", "method"])
    assert table.loc[("opl3", "sgn"), "unseen / seen"] == pytest.approx(0.6, abs=0.02)
    assert table.loc[("opl3", "sgn"), "unseen low"] < 6.0 < table.loc[("opl3", "sgn"), "unseen high"]
    nmf = table.loc[("opl3", "sgn - nmf")]
    assert nmf["unseen SDR"] == pytest.approx(-1.0, abs=0.1) and nmf["unseen high"] < 0  # called: NMF ahead
    unet = table.loc[("opl3", "sgn - unet")]
    assert unet["unseen SDR"] == pytest.approx(-0.1, abs=0.1) and unet["unseen low"] <= unet["unseen high"]
    assert table.loc[("fluidr3", "sgn - nmf"), "unseen low"] > 0  # the other fold: SGN ahead, called
    assert ("fluidr3", "sgn - unet") not in table.index  # no U-Net scored in that fold, no row
