"""Shared fixtures: a tiny SynthMUSIC set rendered once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

TINY_CLASSES = ["cello", "flute", "trumpet", "xylophone"]


@pytest.fixture(scope="session")
def tiny_synth(tmp_path_factory) -> Path:
    """A 4-class SynthMUSIC set: 4 solo clips per class of 1.5 s at 11025 Hz on the three banks (one
    each for train, val, test_seen and test_unseen), and 2 ensemble pieces per test split; returns index.csv."""
    from sgn.synthmusic import render_synth_music

    out = tmp_path_factory.mktemp("synth") / "tiny"
    render_synth_music(out, clips_per_class=5, seconds=1.5, classes=TINY_CLASSES, seed=7, ensembles=2, jobs=1,
                       progress=False)
    return out / "index.csv"


@pytest.fixture(scope="session")
def smoke_checkpoint(tiny_synth, tmp_path_factory) -> Path:
    """best.pt of a smoke-config SGN trained on :func:`tiny_synth`."""
    from sgn.config import apply_overrides, load_config
    from sgn.train import train

    run = tmp_path_factory.mktemp("smoke_run") / "run"
    train(apply_overrides(load_config("smoke"), [f"data.index={tiny_synth}"]), run, progress=False)
    return run / "best.pt"


@pytest.fixture(scope="session")
def tiny_test_list(tiny_synth, tmp_path_factory) -> Path:
    """A fixed list of 6 two-source test mixtures of 4096 samples from :func:`tiny_synth`."""
    from sgn.data import make_mixture_list, read_index, write_mixture_list

    frame = make_mixture_list(read_index(tiny_synth), "test_seen", n_sources=2, count=6, seed=0, segment_samples=4096)
    return write_mixture_list(frame, tmp_path_factory.mktemp("lists") / "test.csv")


REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def smoke_book(tmp_path_factory) -> Path:
    """The whole `make book PROFILE=smoke`, run in a copy of the checkout; returns that copy's root.

    The notebooks' paths are relative (``../results/smoke``...), so everything they write
    lands in the copy: ``results/smoke/executed``, ``runs/smoke``, ``book/_build/html``.
    """
    import shutil

    from sgn.lab.book import build_book

    root = tmp_path_factory.mktemp("book_root")
    for folder in ("notebooks", "sweeps", "book"):
        shutil.copytree(REPO / folder, root / folder, ignore=shutil.ignore_patterns("_build", ".ipynb_checkpoints"))
    build_book("smoke", root=root, progress=False)
    return root
