"""What chapters use to turn results into files and into the book: named tables, figures
and compressed audio players.

A chapter writes its tables (CSV) and figures (PNG) into its ``out_dir``; a later chapter
reads a table by the chapter's name and the table's (:func:`read_table`), never by path.
Where a result came from (the parameters, the package version, the git commit and the
machine) is recorded in the executed notebook itself (``metadata.sgn``, see
:mod:`sgn.lab.notebooks` and :func:`executed_notebooks`), so no number in the book is typed
by hand.
"""

from __future__ import annotations

import base64
import html
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from sgn.audio import STFTSpec, encode_audio
from sgn.lab.notebooks import executed_record
from sgn.utils import SGNError, atomic_path


# Measurements the book shows but does not remake (too slow for a build; bench/ made them),
# each a CSV of the package so that a changed record re-executes the chapter showing it.
RECORDS_DIR = Path(__file__).resolve().parent.parent / "records"


def read_record(name: str) -> pd.DataFrame:
    """The recorded measurement ``name`` (``sgn/records/NAME.csv``), e.g. ``recipe_screen``.

    Raises:
        SGNError: no such record.
    """
    path = RECORDS_DIR / f"{name}.csv"
    if not path.is_file():
        known = sorted(p.stem for p in RECORDS_DIR.glob("*.csv"))
        raise SGNError(f"record {name!r}: no {path.name} in {RECORDS_DIR}; records: {', '.join(known) or 'none'}")
    return pd.read_csv(path, keep_default_na=False)


def save_table(frame: pd.DataFrame, out_dir: str | os.PathLike, name: str) -> Path:
    """Write the chapter's table ``name`` (``out_dir/name.csv``) atomically."""
    path = Path(out_dir) / f"{name}.csv"
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False, lineterminator="\n")
    return path


def table_path(results_dir: str | os.PathLike, chapter: str, name: str) -> Path:
    """Where chapter ``chapter`` saved its table ``name`` under ``results_dir`` (it must exist).

    Raises:
        SGNError: the chapter has not written that table (it has not run with this profile).
    """
    path = Path(results_dir) / chapter / f"{name}.csv"
    if not path.is_file():
        raise SGNError(f"{path}: chapter {chapter} has written no table {name!r}; run that chapter first")
    return path


def read_table(results_dir: str | os.PathLike, chapter: str, name: str, index: str | None = None) -> pd.DataFrame:
    """The table ``name`` that chapter ``chapter`` saved with :func:`save_table` under ``results_dir``.

    Args:
        results_dir: the profile's results folder (a chapter's ``results_dir`` parameter).
        chapter: the chapter's notebook stem, e.g. ``"03_evaluate"``.
        name: the table's name, e.g. ``"headline"``.
        index: a column to make the index.

    Raises:
        SGNError: the chapter has not written that table (it has not run with this profile).
    """
    frame = pd.read_csv(table_path(results_dir, chapter, name))
    return frame.set_index(index) if index else frame


FIGURE_DPI = 192  # twice the CSS pixel density: shown at half size, sharp on high-density screens
CAPTION_PREFIX = "**Figure"  # how a caption starts; the tests look for it after every figure


def save_figure(figure, out_dir: str | os.PathLike, name: str) -> Path:
    """Write a matplotlib figure to ``out_dir/name.png`` atomically (:data:`FIGURE_DPI`)."""
    path = Path(out_dir) / f"{name}.png"
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=FIGURE_DPI, bbox_inches="tight")
    return path


def show_figure(figure, out_dir: str | os.PathLike, name: str, caption: str) -> Path:
    """Save ``figure`` (:func:`save_figure`), close it, and show it in the page at its natural
    size (sharp on high-density screens) with ``caption`` below it.

    Raises:
        SGNError: an empty caption (every figure in the book says what it shows).
    """
    import matplotlib.pyplot as plt
    from IPython.display import Image, Markdown, display

    if not caption.strip():
        raise SGNError(f"figure {name!r}: expected a caption saying what it shows")
    path = save_figure(figure, out_dir, name)
    plt.close(figure)
    display(Image(filename=str(path), retina=True))
    display(Markdown(f"{CAPTION_PREFIX} ({name}).** {caption.strip()}"))
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


def class_colours(names) -> dict[str, tuple]:
    """A distinct colour per class, in the order given (tab10, then black and olive, then tab20b):
    the book's 11 instruments never share one."""
    import matplotlib.pyplot as plt

    palette = [*plt.get_cmap("tab10").colors, (0.0, 0.0, 0.0), (0.6, 0.6, 0.0), *plt.get_cmap("tab20b").colors]
    return {name: palette[i % len(palette)] for i, name in enumerate(names)}


def plot_spectrogram(ax, wave: np.ndarray, sample_rate: int, stft: STFTSpec, title: str = "") -> None:
    """Draw a log-magnitude spectrogram on a matplotlib axis (time in s, frequency in Hz)."""
    spec = log_spectrogram(wave, stft)
    duration = len(wave) / sample_rate
    ax.imshow(spec, origin="lower", aspect="auto", cmap="magma", vmin=spec.max() - 80, vmax=spec.max(),
              extent=(0, duration, 0, sample_rate / 2))
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("Hz")


def _shape_text(shape) -> str:
    return "×".join(str(n) for n in shape[1:])  # without the batch axis


class _Diagram:
    """Boxes with a title and a shape, and arrows between their edges, on one matplotlib axis."""

    def __init__(self, ax):
        self.ax, self.boxes = ax, {}

    def box(self, key: str, x: float, y: float, title: str, shape: str, color: str) -> None:
        from matplotlib.patches import FancyBboxPatch

        self.ax.add_patch(FancyBboxPatch((x - 1.15, y - 0.32), 2.3, 0.64, boxstyle="round,pad=0.05", fc=color,
                                         ec="0.3", lw=0.8))
        self.ax.text(x, y + 0.1, title, ha="center", va="center", fontsize=8, weight="bold")
        self.ax.text(x, y - 0.15, shape, ha="center", va="center", fontsize=7, family="monospace")
        self.boxes[key] = (x, y)

    def _edge(self, a: str, b: str) -> tuple[float, float]:
        """Where the line from box a's centre towards box b's centre leaves box a."""
        (x0, y0), (x1, y1) = self.boxes[a], self.boxes[b]
        dx, dy = x1 - x0, y1 - y0
        t = min(1.22 / abs(dx) if dx else math.inf, 0.4 / abs(dy) if dy else math.inf)
        return x0 + t * dx, y0 + t * dy

    def arrow(self, a: str, b: str, color: str = "0.25", ls: str = "-") -> None:
        from matplotlib.patches import FancyArrowPatch

        self.ax.add_patch(FancyArrowPatch(self._edge(a, b), self._edge(b, a), arrowstyle="-|>", mutation_scale=10,
                                          color=color, lw=1, ls=ls))


def draw_architecture(ax, trace: pd.DataFrame, n_classes: int) -> None:
    """Draw SGN's data flow from a :func:`sgn.analysis.trace_shapes` table, with its measured shapes.

    The encoder runs down the left column, the transformer and the grouping across the
    bottom, the reconstruction up the right column (with the encoder's skip features),
    and the per-class masks come out at the top right. Repeated self-attention layers
    are drawn as one box. Shapes omit the batch axis.
    """
    shapes = dict(zip(trace["stage"], trace["shape"]))
    encoder = [s for s in trace["stage"] if s in ("input_norm", "stem") or s.startswith("down.")] + ["patchify"]
    decoder = ["feature_up"] + [s for s in trace["stage"] if s.startswith("up.")]
    blocks = [s for s in trace["stage"] if s.startswith("blocks.")]
    grouping = "grouping" in shapes
    diagram = _Diagram(ax)
    box, arrow = diagram.box, diagram.arrow

    top = len(encoder)
    box("input", 0, top, "mixture |STFT|", "F×T = " + _shape_text(shapes["input"]), "white")
    for i, stage in enumerate(encoder):  # the U's left arm, top to bottom
        box(stage, 0, top - 1 - i, stage, _shape_text(shapes[stage]), "#cfe2f3")
    for i, stage in enumerate(decoder):  # the right arm, bottom to top, level with its skip
        box(stage, 9.6, i, stage, _shape_text(shapes[stage]), "#d0e0e3")
    box("masks", 9.6, len(decoder), "masks σ(⟨W g_c, h⟩ + b)", _shape_text(shapes["output: mask_logits"]), "#ead1dc")
    box("tokens", 1.6, -1.6, f"{n_classes} class tokens", "learned, S×D", "#fce5cd")
    box("blocks", 4.8, -1.6, f"{len(blocks)} × self-attention", _shape_text(shapes[blocks[-1]]) + " ([S+P]×D)",
        "#d9ead3")
    last = "blocks"
    if grouping:
        box("grouping", 4.8, 0.2, "grouping A (S×P)", _shape_text(shapes["grouping"]) + " (S×D)", "#f4cccc")
        last = "grouping"
    box("heads", 4.8, 1.8, "presence + CE heads", f"{n_classes} logits", "#fff2cc")
    for a, b in [("input", encoder[0]), *zip(encoder, encoder[1:]), (encoder[-1], "blocks"), ("tokens", "blocks"),
                 *zip(decoder, decoder[1:]), (decoder[-1], "masks"), (last, "heads")]:
        arrow(a, b)
    if grouping:
        arrow("blocks", "grouping")
    arrow("blocks", decoder[0], color="0.5")
    arrow(last, "masks", color="#b45f06")
    for skip, stage in zip(reversed(encoder[1:-1]), decoder[1:]):
        arrow(skip, stage, color="0.6", ls="--")
    ax.text(4.8, top - 0.2, "dashed: skip features; orange: the grouped class representation g_c sets each mask",
            ha="center", fontsize=8, color="0.3")
    ax.set_xlim(-1.4, 11)
    ax.set_ylim(-2.1, top + 0.5)
    ax.axis("off")


def executed_notebooks(executed_dir: str | os.PathLike) -> pd.DataFrame:
    """What :func:`sgn.lab.notebooks.run_notebook` recorded in each executed notebook of a folder.

    Returns:
        One row per ``*.ipynb`` (failed copies left out), in name order: ``notebook``,
        ``profile`` (its ``profile`` parameter), ``executed_at``, ``minutes`` (wall
        time), ``git_commit`` and ``sgn_version``. Empty when the folder has none.
    """
    rows = []
    for path in sorted(Path(executed_dir).glob("*.ipynb")):
        if path.name.endswith(".failed.ipynb") or path.name.startswith("."):  # a killed run's temporary copy
            continue
        record = executed_record(path)
        rows.append({"notebook": path.stem, "profile": record.get("parameters", {}).get("profile"),
                     "executed_at": record.get("executed_at"), "minutes": record.get("elapsed_s", math.nan) / 60,
                     "git_commit": record.get("git_commit"), "sgn_version": record.get("sgn_version")})
    return pd.DataFrame(rows, columns=["notebook", "profile", "executed_at", "minutes", "git_commit", "sgn_version"])


def package_versions(names: tuple[str, ...] = ("sgn", "torch", "numpy", "scipy", "pandas", "soundfile", "soxr",
                                               "fast_bss_eval", "mir_eval", "papermill", "jupyter-book",
                                               "ipywidgets", "matplotlib")) -> pd.DataFrame:
    """Installed versions of the packages the results depend on (``not installed`` where absent)."""
    from importlib.metadata import PackageNotFoundError, version

    rows = []
    for name in names:
        try:
            rows.append({"package": name, "version": version(name)})
        except PackageNotFoundError:
            rows.append({"package": name, "version": "not installed"})
    return pd.DataFrame(rows)
