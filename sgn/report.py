"""What notebooks use to turn results into files and into the book: provenance, tables,
figures and compressed audio players.

Every executed notebook writes its tables (CSV) and figures (PNG) into its output
folder with ``provenance.json`` (its parameters, the package version, the git commit
and the machine), so no number in the book is typed by hand.
"""

from __future__ import annotations

import base64
import html
import json
import os
import platform
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd
import torch

from sgn import __version__
from sgn.audio import STFTSpec, encode_audio
from sgn.utils import atomic_path, atomic_write_text, git_commit


def machine() -> dict[str, Any]:
    """The hardware a result was measured on."""
    return {
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch": torch.__version__,
    }


def write_provenance(out_dir: str | os.PathLike, parameters: Mapping[str, Any]) -> Path:
    """Write ``out_dir/provenance.json``: parameters, sgn version, git commit, machine."""
    out = Path(out_dir) / "provenance.json"
    record = {"parameters": dict(parameters), "sgn_version": __version__, "git_commit": git_commit(),
              "machine": machine()}
    atomic_write_text(out, json.dumps(record, indent=2, sort_keys=True, default=str) + "\n")
    return out


def save_table(frame: pd.DataFrame, out_dir: str | os.PathLike, name: str) -> Path:
    """Write ``frame`` to ``out_dir/name.csv`` atomically."""
    path = Path(out_dir) / f"{name}.csv"
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False, lineterminator="\n")
    return path


def save_figure(figure, out_dir: str | os.PathLike, name: str) -> Path:
    """Write a matplotlib figure to ``out_dir/name.png`` atomically (150 dpi)."""
    path = Path(out_dir) / f"{name}.png"
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=150, bbox_inches="tight")
    return path


def audio_html(wave: np.ndarray, sample_rate: int, label: str = "") -> str:
    """An HTML ``<audio>`` player with the clip embedded as OGG/Vorbis (small enough for book pages)."""
    data = base64.b64encode(encode_audio(wave, sample_rate)).decode("ascii")
    caption = f"<div>{html.escape(label)}</div>" if label else ""
    return (f'<figure style="display:inline-block;margin:4px">{caption}'
            f'<audio controls preload="metadata" src="data:audio/ogg;base64,{data}"></audio></figure>')


def log_spectrogram(wave: np.ndarray, stft: STFTSpec) -> np.ndarray:
    """``20 log10 |STFT|`` in dB, ``[F, T]``, for display."""
    magnitude = stft.stft(torch.as_tensor(wave, dtype=torch.float32)).abs().numpy()
    return 20 * np.log10(np.maximum(magnitude, 1e-6))


def plot_spectrogram(ax, wave: np.ndarray, sample_rate: int, stft: STFTSpec, title: str = "") -> None:
    """Draw a log-magnitude spectrogram on a matplotlib axis (time in s, frequency in Hz)."""
    spec = log_spectrogram(wave, stft)
    duration = len(wave) / sample_rate
    ax.imshow(spec, origin="lower", aspect="auto", cmap="magma", vmin=spec.max() - 80, vmax=spec.max(),
              extent=(0, duration, 0, sample_rate / 2))
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("Hz")
