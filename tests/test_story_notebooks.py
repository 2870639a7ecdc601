"""Every story notebook runs top to bottom under papermill with the smoke profile."""

from pathlib import Path

import pandas as pd

from sgn.notebooks import find_notebooks, load_profile, run_pipeline

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def _relocated(profile: dict, root: Path) -> dict:
    """The profile with its ../ paths moved under ``root``, so the test writes nothing into the checkout."""
    return {stem: {k: (str(root / v[3:]) if isinstance(v, str) and v.startswith("../") else v)
                   for k, v in params.items()} for stem, params in profile.items()}


def test_smoke_pipeline(tmp_path):
    profile = _relocated(load_profile(NOTEBOOKS / "profiles" / "smoke.yaml"), tmp_path)
    notebooks = find_notebooks(NOTEBOOKS)
    assert [n.stem for n in notebooks] == ["01_data", "02_train", "03_evaluate", "04_ablation_class_tokens",
                                           "05_ablation_num_sources", "06_listen", "07_grouping"]
    results = run_pipeline(notebooks, profile, tmp_path / "executed", progress=False)
    assert all(not r.cached for r in results)
    results_dir = tmp_path / "results" / "smoke"
    for stem in [n.stem for n in notebooks]:
        assert (tmp_path / "executed" / f"{stem}.ipynb").is_file()
        assert (results_dir / stem / "provenance.json").is_file()
    headline = pd.read_csv(results_dir / "03_evaluate" / "headline.csv")
    assert {"sgn", "unet", "nmf", "mixture", "irm", "ibm"} <= set(headline["method"])
    assert (results_dir / "02_train" / "curves.png").stat().st_size > 1000
    ablation = pd.read_csv(results_dir / "04_ablation_class_tokens" / "ablation.csv")
    assert set(ablation["variant"]) == {"full", "no_class_tokens", "no_grouping", "no_ce", "no_bce",
                                        "shared_tokens", "k2"}
    sdr_by_n = pd.read_csv(results_dir / "05_ablation_num_sources" / "sdr_by_n.csv")
    assert sdr_by_n.columns[0] == "variant" and set(sdr_by_n.columns[1:]) <= {"N=1", "N=2", "N=3", "N=4"}
    assert len(sdr_by_n) == 2 and len(sdr_by_n.columns) >= 3
    # the listening room's tabs and players are stored as widget state for the static book
    import nbformat

    listen = nbformat.read(tmp_path / "executed" / "06_listen.ipynb", as_version=4)
    state = listen.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    models = [w["model_name"] for w in state.values()]
    assert models.count("AudioModel") >= 2 * 5 and "TabModel" in models and "ImageModel" in models
    assert (results_dir / "07_grouping" / "representations_pca.png").is_file()
    # nothing changed: nothing is executed again
    assert all(r.cached for r in run_pipeline(notebooks, profile, tmp_path / "executed", progress=False))
