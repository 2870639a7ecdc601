"""Shared fixtures: a tiny SynthMUSIC set rendered once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

TINY_CLASSES = ["cello", "flute", "trumpet", "xylophone"]


@pytest.fixture(scope="session")
def tiny_synth(tmp_path_factory) -> Path:
    """A 4-class SynthMUSIC set: 4 clips per class of 1.5 s at 11025 Hz; returns index.csv."""
    from sgn.synth import render_synth_music

    out = tmp_path_factory.mktemp("synth") / "tiny"
    render_synth_music(out, clips_per_class=4, seconds=1.5, classes=TINY_CLASSES, seed=7, jobs=1, progress=False)
    return out / "index.csv"

