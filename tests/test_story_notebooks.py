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
    assert [n.stem for n in notebooks][:3] == ["01_data", "02_train", "03_evaluate"]
    results = run_pipeline(notebooks, profile, tmp_path / "executed", progress=False)
    assert all(not r.cached for r in results)
    results_dir = tmp_path / "results" / "smoke"
    for stem in ("01_data", "02_train", "03_evaluate"):
        assert (tmp_path / "executed" / f"{stem}.ipynb").is_file()
        assert (results_dir / stem / "provenance.json").is_file()
    headline = pd.read_csv(results_dir / "03_evaluate" / "headline.csv")
    assert {"sgn", "unet", "nmf", "mixture", "irm", "ibm"} <= set(headline["method"])
    assert (results_dir / "02_train" / "curves.png").stat().st_size > 1000
    # nothing changed: nothing is executed again
    assert all(r.cached for r in run_pipeline(notebooks, profile, tmp_path / "executed", progress=False))
