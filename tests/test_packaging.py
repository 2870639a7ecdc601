"""The two descriptions of the environment (pyproject.toml, environment.yml) must agree."""

import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def _name(requirement: str) -> str:
    for sep in "<>=!~[; ":
        requirement = requirement.split(sep)[0]
    return requirement.strip().lower().replace("_", "-")


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    declared = list(project["project"]["dependencies"])
    for extra in project["project"]["optional-dependencies"].values():
        declared += extra
    declared += project["tool"]["sgn"]["install-without-deps"]
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_list = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    # same packages and the same version ranges
    assert sorted(r.replace(" ", "") for r in pip_list) == sorted(r.replace(" ", "") for r in declared)
    assert len({_name(r) for r in declared}) == len(declared)


def test_no_torchaudio():
    text = (ROOT / "pyproject.toml").read_text() + (ROOT / "environment.yml").read_text()
    assert "torchaudio" not in text.replace("# ", "")


def test_console_script_runs():
    out = subprocess.run([sys.executable, "-m", "sgn.cli", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("sgn ")
