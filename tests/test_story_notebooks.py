"""Every story notebook runs top to bottom under papermill with the smoke profile, and the book builds.

One session fixture (``smoke_book`` in conftest) runs ``build_book("smoke")`` in a copy of
the checkout, as ``make book PROFILE=smoke`` would; these tests read what it left.
"""

import json
from pathlib import Path

import nbformat
import pandas as pd
import pytest
import yaml

from sgn.lab.book import BUILD_RECORD, build_book, table_of_contents
from sgn.lab.notebooks import chapter_parameters, load_profile, read_chapters

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
CHAPTERS = read_chapters(NOTEBOOKS)
STORY = [n.stem for n in CHAPTERS.notebooks]


def test_every_notebook_is_a_chapter_in_the_book_and_every_profile():
    assert sorted(STORY) == sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb"))
    toc = yaml.safe_load(table_of_contents(CHAPTERS))
    in_book = [entry["file"] for part in toc["parts"] for entry in part["chapters"]] + [toc["root"]]
    assert sorted(f for f in in_book if f.startswith("notebooks/")) == sorted(f"notebooks/{s}" for s in STORY)
    assert STORY[-1] == CHAPTERS.root  # the landing page summarises every chapter: it runs last
    for profile in ("smoke", "cpu", "gpu"):
        params = load_profile(NOTEBOOKS / "profiles" / f"{profile}.yaml")
        assert list(params) == STORY, profile
    # the runner gives the overview the executed copies where `sgn book` puts them
    executed = NOTEBOOKS.parent / "results" / "smoke" / "executed"
    given = chapter_parameters(NOTEBOOKS / "09_overview.ipynb", "smoke", executed)
    assert given == {"profile": "smoke", "out_dir": "../results/smoke/09_overview",
                     "results_dir": "../results/smoke", "executed_dir": "../results/smoke/executed"}


def test_smoke_pipeline_results(smoke_book):
    results_dir = smoke_book / "results" / "smoke"
    for stem in STORY:
        record = nbformat.read(results_dir / "executed" / f"{stem}.ipynb", as_version=4).metadata["sgn"]
        assert record["parameters"]["profile"] == "smoke" and record["machine"]["cpu_count"] >= 1
        assert record["parameters"]["out_dir"] == f"../results/smoke/{stem}"
    headline = pd.read_csv(results_dir / "03_evaluate" / "headline.csv")
    assert {"sgn", "unet", "nmf", "mixture", "irm", "ibm"} <= set(headline["method"])
    assert (results_dir / "02_train" / "curves.png").stat().st_size > 1000
    presence = pd.read_csv(results_dir / "03_evaluate" / "presence.csv")  # the SGN models' head, every list
    assert set(presence["method"]) == {"sgn", "sgn_paper"} and set(presence["metric"]) == {"recall", "precision", "exact"}
    assert set(presence["list"]) == set(pd.read_csv(results_dir / "03_evaluate" / "paired_differences.csv")["list"])
    assert presence["mean"].between(0, 1).all() and (presence["ci_low"] <= presence["mean"]).all()
    ablation = pd.read_csv(results_dir / "04_ablation_class_tokens" / "ablation_sdr.csv")
    assert set(ablation["variant"]) == {"full", "paper", "no_class_tokens", "no_grouping", "no_ce", "no_bce",
                                        "shared_tokens", "k2"}
    assert (ablation["n_seeds"] == 2).all() and (ablation["ci_low"] <= ablation["mean"]).all()
    assert ablation.set_index("variant").loc["full", "diff"] == 0
    agreement = pd.read_csv(results_dir / "04_ablation_class_tokens" / "ablation_agreement.csv")
    assert "no_grouping" not in set(agreement["variant"]) and agreement["mean"].between(0, 1).all()
    for table in ("sdr_by_n", "sdri_by_n", "recall_by_n"):
        by_n = pd.read_csv(results_dir / "05_ablation_num_sources" / f"{table}.csv")
        assert set(by_n["variant"]) == {"trained_on_2", "trained_on_1to4"} and set(by_n["n_sources"]) <= {1, 2, 3, 4}
    # 05's model trained on 2 sources is 04's full model: trained once, shared through runs_dir
    assert len(list((smoke_book / "runs" / "smoke" / "ablations").glob("*/best.pt"))) == 2 * (8 + 1)
    by_class = pd.read_csv(results_dir / "07_grouping" / "agreement_by_class.csv")
    assert set(by_class["split"]) == {"test_seen", "test_unseen"}
    assert (results_dir / "07_grouping" / "assignment_maps.png").is_file()
    assert (results_dir / "07_grouping" / "representations_pca.png").is_file()
    shapes = pd.read_csv(results_dir / "08_method" / "forward_shapes.csv")
    assert shapes["stage"].iloc[0] == "input" and "output: mask_logits" in set(shapes["stage"])
    comparison = pd.read_csv(results_dir / "11_paper" / "paper_comparison.csv")
    assert comparison["gain (dB)"].notna().all()
    # the paper chapter's gain is the headline list's paired difference, not a pool of every list,
    # and it is the paper's model's where the profile trains it (smoke does, as study)
    pairs = pd.read_csv(results_dir / "03_evaluate" / "paired_differences.csv")
    headline_gain = pairs[(pairs["list"] == "test_seen_2src") & (pairs["difference"] == "sgn_paper - unet")]["mean"]
    assert comparison["gain (dB)"].iloc[1] == pytest.approx(headline_gain.iloc[0])


def test_listening_room_stores_widget_state(smoke_book):
    # the tabs and players are stored as widget state, so they work in the static book
    listen = nbformat.read(smoke_book / "results" / "smoke" / "executed" / "06_listen.ipynb", as_version=4)
    state = listen.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    models = [w["model_name"] for w in state.values()]
    assert models.count("AudioModel") >= 2 * 5 and "TabModel" in models and "ImageModel" in models


def test_overview_names_profile_and_commit(smoke_book):
    index = (smoke_book / "book" / "_build" / "html" / "notebooks" / "09_overview.html").read_text()
    assert "the <code class=\"docutils literal notranslate\"><span class=\"pre\">smoke</span></code> profile" in index
    assert "CPU cores" in index and "executed at commit" in index


def test_second_build_executes_and_rebuilds_nothing(smoke_book):
    html = smoke_book / "book" / "_build" / "html"
    record = json.loads((html / BUILD_RECORD).read_text())
    assert record["profile"] == "smoke" and len(record["notebooks"]) == len(STORY)
    executed = smoke_book / "results" / "smoke" / "executed"
    files = [html / "index.html", *executed.glob("*.ipynb")]
    before = [f.stat().st_mtime_ns for f in files]
    build_book("smoke", root=smoke_book, progress=False)
    assert [f.stat().st_mtime_ns for f in files] == before
    assert not list(executed.glob("*.failed.ipynb"))


def test_analysis_code_is_folded_and_parameters_are_shown():
    # a reader sees prose and results first; one click opens the code. The landing page's
    # parameters are folded too (the staging leaves them out), so its verdict comes first.
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        for number, cell in enumerate(nbformat.read(path, as_version=4).cells):
            tags = set(cell.metadata.get("tags", []))
            where = f"{path.name} cell {number}"
            if cell.cell_type != "code":
                continue
            if "parameters" in tags:
                assert ("hide-input" in tags) == (path.stem == CHAPTERS.root), where
            else:
                assert tags & {"hide-input", "remove-input"}, f"{where}: analysis code shown by default"
                assert "plt.show()" not in cell.source, f"{where}: a figure without a caption (use show_figure)"


def test_every_figure_has_a_caption(smoke_book):
    from sgn.lab.report import CAPTION_PREFIX

    figures = 0
    for stem in STORY:
        nb = nbformat.read(smoke_book / "results" / "smoke" / "executed" / f"{stem}.ipynb", as_version=4)
        for number, cell in enumerate(nb.cells):
            outputs = cell.get("outputs", [])
            for i, output in enumerate(outputs):
                if "image/png" in output.get("data", {}):
                    figures += 1
                    following = outputs[i + 1].get("data", {}).get("text/markdown", "") if i + 1 < len(outputs) else ""
                    assert following.startswith(CAPTION_PREFIX), f"{stem} cell {number}: a figure without a caption"
    assert figures >= 12


def test_claim_sentences_follow_their_tables(smoke_book):
    from sgn.lab.verdict import CLAIMS, contradictions

    paper = smoke_book / "results" / "smoke" / "11_paper"
    claims, evidence = pd.read_csv(paper / "claims.csv"), pd.read_csv(paper / "claim_evidence.csv")
    assert list(claims["claim"]) == [c.key for c in CLAIMS]
    assert not contradictions(claims, evidence)
    # the landing page sorts the same claims the same way
    landing = (smoke_book / "book" / "_build" / "html" / "notebooks" / "09_overview.html").read_text()
    short = {c.key: c.short for c in CLAIMS}
    for verdict, group in claims.groupby("verdict"):
        for key in group["claim"]:
            assert short[key] in landing, (verdict, key)
    assert "Verdict of this build" in landing
