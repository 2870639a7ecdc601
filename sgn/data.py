"""Data sets in the common ``index.csv`` format, and mix-and-separate mixtures.

Every data set (SynthMUSIC, MUSIC, FUSS, MUSDB18, VGG-Sound) is prepared into one
format: a folder of mono clips and an ``index.csv`` with at least the columns
:data:`INDEX_COLUMNS`, ``path`` relative to the index's folder.

Mixtures follow Sound-of-Pixels' mix-and-separate protocol (Zhao et al., 2018): pick
N clips of N distinct classes, crop a segment of each, scale each by ``gain / N``
and add them. The scaled segments are the reference sources, so they sum exactly to
the mixture.

* :class:`MixtureDataset` draws fresh random mixtures for training; item ``k`` is a
  pure function of ``(seed, k)``, so runs resume exactly and do not depend on the
  number of DataLoader workers.
* Evaluation uses fixed lists (:func:`make_mixture_list`, a CSV with one row per
  source) read by :class:`FixedMixtureDataset`, so every model and baseline is scored
  on identical inputs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import soundfile as sf
import torch

from sgn.audio import STFTSpec
from sgn.utils import SGNError, atomic_path

# The 11 instrument classes of MUSIC (Zhao et al., 2018), in the order class ids follow.
MUSIC_CLASSES: tuple[str, ...] = (
    "accordion",
    "acoustic_guitar",
    "cello",
    "clarinet",
    "erhu",
    "flute",
    "saxophone",
    "trumpet",
    "tuba",
    "violin",
    "xylophone",
)

# Columns every index.csv has; ``path`` is relative to the index file's folder.
INDEX_COLUMNS: tuple[str, ...] = ("path", "class", "split", "duration_s", "sample_rate")
SPLITS: tuple[str, ...] = ("train", "val", "test")
# Columns of a fixed mixture list, one row per source.
MIXTURE_COLUMNS: tuple[str, ...] = (
    "mixture_id", "n_sources", "source", "class", "path", "offset", "length", "gain",
)
# Sound-of-Pixels draws a gain in [0.5, 1.5] per source while training.
DEFAULT_GAIN_RANGE: tuple[float, float] = (0.5, 1.5)


def _read_table(path: Path, columns: Sequence[str], what: str, maker: str) -> pd.DataFrame:
    """Read a CSV that must have ``columns``; one clear :class:`SGNError` otherwise."""
    if not path.is_file():
        raise SGNError(f"{path}: {what} not found (make one with {maker})")
    try:
        frame = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise SGNError(f"{path}: not a readable CSV ({err})") from None
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise SGNError(f"{path}: missing columns {missing}; a {what} needs {list(columns)}")
    return frame


def read_index(path: str | os.PathLike) -> pd.DataFrame:
    """Read and validate an ``index.csv``.

    Returns:
        The table with an added ``abspath`` column (absolute clip paths) and a
        ``num_samples`` column; ``frame.attrs["root"]`` is the index's folder.

    Raises:
        SGNError: missing file or columns, unknown split names, non-positive rates or
        durations, or clips that do not exist.
    """
    path = Path(path)
    frame = _read_table(path, INDEX_COLUMNS, "index file", "`sgn data synth` or `sgn data download`")
    if frame.empty:
        raise SGNError(f"{path}: the index lists no clips")
    bad_splits = sorted(set(frame["split"]) - set(SPLITS))
    if bad_splits:
        raise SGNError(f"{path}: unknown split(s) {bad_splits}; expected {list(SPLITS)}")
    if (frame["sample_rate"] <= 0).any() or (frame["duration_s"] <= 0).any():
        raise SGNError(f"{path}: sample_rate and duration_s must be positive in every row")
    root = path.resolve().parent
    frame["abspath"] = [str(root / p) for p in frame["path"]]
    absent = [p for p in frame["abspath"] if not os.path.isfile(p)]
    if absent:
        raise SGNError(f"{path}: {len(absent)} listed clip(s) do not exist, e.g. {absent[0]}")
    frame["num_samples"] = np.floor(frame["duration_s"] * frame["sample_rate"] + 0.5).astype(np.int64)
    frame.attrs["root"] = str(root)
    frame.attrs["path"] = str(path)
    return frame


def index_classes(index: pd.DataFrame) -> list[str]:
    """The data set's classes in class-id order (sorted names; MUSIC's order is alphabetical)."""
    return sorted(index["class"].unique())


def check_sample_rate(index: pd.DataFrame, sample_rate: int) -> None:
    """Raise :class:`SGNError` unless every clip of ``index`` is at ``sample_rate``."""
    rates = sorted(set(int(r) for r in index["sample_rate"]))
    if rates != [sample_rate]:
        raise SGNError(
            f"{index.attrs.get('path', 'index')}: clips at {rates} Hz, expected {sample_rate} Hz; "
            "prepare the data set at the configured sample rate"
        )


def read_segment(path: str, offset: int, length: int) -> np.ndarray:
    """Read ``length`` mono samples of ``path`` starting at ``offset`` (zero-padded past the end).

    Returns:
        float32 ``[L]``.
    """
    try:
        with sf.SoundFile(path) as f:
            f.seek(offset)
            wave = f.read(length, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as err:
        raise SGNError(f"{path}: not a readable audio file ({err})") from None
    wave = wave.mean(axis=1)
    if len(wave) < length:
        wave = np.pad(wave, (0, length - len(wave)))
    return wave


@dataclass(frozen=True)
class SourceSpec:
    """One source of a mixture: a segment of a clip and its gain (before the ``1/N`` scaling)."""

    path: str
    class_name: str
    offset: int
    length: int
    gain: float


def build_mixture(
    sources: Sequence[SourceSpec], class_ids: Sequence[int], max_sources: int, stft: STFTSpec
) -> dict[str, torch.Tensor]:
    """Read and mix the sources; compute the spectral tensors the models need.

    Args:
        sources: the ``N`` sources (``N <= max_sources``), all of one length ``L``.
        class_ids: the class id of each source.
        max_sources: pad the source axis to this many (padding has class id ``-1``).
        stft: the STFT of the spectral tensors.

    Returns:
        A dict of tensors: ``mixture [L]``, ``sources [Nmax, L]`` (scaled by ``gain/N``,
        summing to the mixture), ``class_ids [Nmax]`` (long, ``-1`` for padding),
        ``n_sources []``, ``mix_mag [F, T]``, ``source_mags [Nmax, F, T]``.
    """
    n = len(sources)
    length = sources[0].length
    waves = np.zeros((max_sources, length), dtype=np.float32)
    for slot, spec in enumerate(sources):
        waves[slot] = read_segment(spec.path, spec.offset, spec.length) * (spec.gain / n)
    waves_t = torch.from_numpy(waves)  # [Nmax, L]
    mixture = waves_t.sum(dim=0)  # [L]
    ids = torch.full((max_sources,), -1, dtype=torch.long)
    ids[:n] = torch.as_tensor(list(class_ids), dtype=torch.long)
    return {
        "mixture": mixture,
        "sources": waves_t,
        "class_ids": ids,
        "n_sources": torch.tensor(n, dtype=torch.long),
        "mix_mag": stft.stft(mixture).abs(),  # [F, T]
        "source_mags": stft.stft(waves_t).abs(),  # [Nmax, F, T]
    }


def parse_n_sources(value: int | str | Sequence[int]) -> tuple[int, int]:
    """``2`` -> ``(2, 2)``; ``"1-4"`` or ``(1, 4)`` -> ``(1, 4)``. Raises SGNError on nonsense."""
    try:
        if isinstance(value, str):
            low, _, high = value.partition("-")
            bounds = (int(low), int(high or low))
        elif isinstance(value, int):
            bounds = (value, value)
        else:
            low, high = value
            bounds = (int(low), int(high))
    except (TypeError, ValueError):
        raise SGNError(f"n_sources: expected an integer or a range like 1-4, got {value!r}") from None
    if bounds[0] < 1 or bounds[1] < bounds[0]:
        raise SGNError(f"n_sources: expected 1 <= low <= high, got {value!r}")
    return bounds


class _ClipPool:
    """The clips of one split, grouped by class, long enough for ``segment_samples``."""

    def __init__(self, index: pd.DataFrame, split: str, classes: Sequence[str], segment_samples: int):
        where = index.attrs.get("path", "index")
        rows = index[(index["split"] == split) & (index["num_samples"] >= segment_samples)]
        self.classes = list(classes)
        self.by_class: list[pd.DataFrame] = []
        for name in self.classes:
            clips = rows[rows["class"] == name]
            if clips.empty:
                raise SGNError(
                    f"{where}: class {name!r} has no {split} clip of at least {segment_samples} samples"
                )
            self.by_class.append(clips[["abspath", "num_samples"]].reset_index(drop=True))

    def draw(
        self, rng: np.random.Generator, class_ids: Sequence[int], segment_samples: int, gain_range: tuple[float, float]
    ) -> list[SourceSpec]:
        specs = []
        for cid in class_ids:
            clips = self.by_class[cid]
            row = clips.iloc[int(rng.integers(len(clips)))]
            offset = int(rng.integers(int(row["num_samples"]) - segment_samples + 1))
            gain = float(rng.uniform(*gain_range))
            specs.append(SourceSpec(row["abspath"], self.classes[cid], offset, segment_samples, gain))
        return specs


def _draw_classes(rng: np.random.Generator, n_classes: int, n_range: tuple[int, int]) -> list[int]:
    n = int(rng.integers(n_range[0], n_range[1] + 1))
    return sorted(int(c) for c in rng.choice(n_classes, size=n, replace=False))


class MixtureDataset(torch.utils.data.Dataset):
    """Random mix-and-separate mixtures for training.

    Item ``k`` is drawn with a generator seeded by ``(seed, k)``: the same ``k`` always
    gives the same mixture, whichever worker loads it, so a resumed run sees the same
    data as an uninterrupted one. ``len()`` is ``items_per_epoch``; the training loop
    may also index past it (item numbers keep growing across epochs).

    Args:
        index: a table from :func:`read_index`.
        split: ``"train"``, ``"val"`` or ``"test"``.
        classes: class names in class-id order (usually :func:`index_classes`).
        n_sources: ``N`` per mixture, an int or an inclusive ``(low, high)`` range.
        segment_samples: ``L``, the crop length.
        stft: the STFT of the spectral tensors.
        gain_range: per-source gain is uniform in this range (before the ``1/N``).
        items_per_epoch: the dataset's length.
        seed: base seed.
    """

    def __init__(
        self,
        index: pd.DataFrame,
        split: str,
        classes: Sequence[str],
        *,
        n_sources: int | str | Sequence[int] = 2,
        segment_samples: int,
        stft: STFTSpec,
        gain_range: tuple[float, float] = DEFAULT_GAIN_RANGE,
        items_per_epoch: int = 10_000,
        seed: int = 0,
    ):
        self.n_range = parse_n_sources(n_sources)
        if self.n_range[1] > len(classes):
            raise SGNError(f"n_sources: {self.n_range[1]} sources need {self.n_range[1]} classes, the data set has {len(classes)}")
        self.pool = _ClipPool(index, split, classes, segment_samples)
        self.segment_samples, self.stft, self.gain_range = segment_samples, stft, gain_range
        self.items_per_epoch, self.seed = items_per_epoch, seed

    def __len__(self) -> int:
        return self.items_per_epoch

    def __getitem__(self, item: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, int(item)])
        class_ids = _draw_classes(rng, len(self.pool.classes), self.n_range)
        specs = self.pool.draw(rng, class_ids, self.segment_samples, self.gain_range)
        return build_mixture(specs, class_ids, self.n_range[1], self.stft)


def make_mixture_list(
    index: pd.DataFrame,
    split: str,
    *,
    n_sources: int | str | Sequence[int] = 2,
    count: int = 300,
    seed: int = 0,
    segment_samples: int = 65535,
    gain_range: tuple[float, float] = DEFAULT_GAIN_RANGE,
    classes: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Draw a fixed list of evaluation mixtures: one row per source, :data:`MIXTURE_COLUMNS`.

    ``path`` holds absolute clip paths; :func:`write_mixture_list` stores them relative
    to the list's own folder, so a list and its data set can move together.
    """
    if count <= 0:
        raise SGNError(f"count: expected a positive number of mixtures, got {count}")
    if segment_samples <= 0:
        raise SGNError(f"segment_samples: expected a positive length, got {segment_samples}")
    if split not in SPLITS:
        raise SGNError(f"split: expected one of {list(SPLITS)}, got {split!r}")
    classes = list(classes) if classes is not None else index_classes(index)
    n_range = parse_n_sources(n_sources)
    if n_range[1] > len(classes):
        raise SGNError(f"n_sources: {n_range[1]} sources need {n_range[1]} classes, the data set has {len(classes)}")
    pool = _ClipPool(index, split, classes, segment_samples)
    rng = np.random.default_rng(seed)
    rows = []
    for mixture_id in range(count):
        class_ids = _draw_classes(rng, len(classes), n_range)
        for slot, spec in enumerate(pool.draw(rng, class_ids, segment_samples, gain_range)):
            rows.append({
                "mixture_id": mixture_id,
                "n_sources": len(class_ids),
                "source": slot,
                "class": spec.class_name,
                "path": spec.path,
                "offset": spec.offset,
                "length": spec.length,
                "gain": round(spec.gain, 6),
            })
    return pd.DataFrame(rows, columns=list(MIXTURE_COLUMNS))


def write_mixture_list(frame: pd.DataFrame, out: str | os.PathLike) -> Path:
    """Write a mixture list CSV atomically, clip paths relative to the CSV's folder."""
    out = Path(out)
    folder = out.resolve().parent
    frame = frame.assign(path=[Path(os.path.relpath(p, folder)).as_posix() for p in frame["path"]])
    with atomic_path(out) as tmp:
        frame.to_csv(tmp, index=False, lineterminator="\n")
    return out


def read_mixture_list(path: str | os.PathLike) -> pd.DataFrame:
    """Read a mixture list CSV; ``path`` column made absolute (relative to the CSV's folder)."""
    path = Path(path)
    frame = _read_table(path, MIXTURE_COLUMNS, "mixture list", "`sgn data mixtures`")
    folder = path.resolve().parent
    frame["path"] = [os.path.normpath(folder / p) for p in frame["path"]]
    frame.attrs["path"] = str(path)
    return frame


class FixedMixtureDataset(torch.utils.data.Dataset):
    """The mixtures of a fixed list (from :func:`make_mixture_list`), in list order.

    Args:
        mixtures: a mixture-list CSV path, or a frame with absolute clip paths
            (from :func:`make_mixture_list` or :func:`read_mixture_list`).
        classes: class names in class-id order; every class in the list must be one.
        stft: the STFT of the spectral tensors.
    """

    def __init__(
        self,
        mixtures: str | os.PathLike | pd.DataFrame,
        classes: Sequence[str],
        stft: STFTSpec,
    ):
        if not isinstance(mixtures, pd.DataFrame):
            mixtures = read_mixture_list(mixtures)
        where = mixtures.attrs.get("path", "mixture list")
        unknown = sorted(set(mixtures["class"]) - set(classes))
        if unknown:
            raise SGNError(f"{where}: class(es) {unknown} are not among the model's classes {list(classes)}")
        self.classes, self.stft = list(classes), stft
        self.max_sources = int(mixtures["n_sources"].max())
        self.groups = []
        for mixture_id, rows in mixtures.sort_values(["mixture_id", "source"]).groupby("mixture_id", sort=True):
            specs = [
                SourceSpec(r.path, r["class"], int(r.offset), int(r.length), float(r.gain))
                for _, r in rows.iterrows()
            ]
            missing_clip = next((s.path for s in specs if not os.path.isfile(s.path)), None)
            if missing_clip:
                raise SGNError(f"{where}: mixture {mixture_id} uses {missing_clip}, which does not exist")
            self.groups.append((int(mixture_id), specs))

    def __len__(self) -> int:
        return len(self.groups)

    def __getitem__(self, item: int) -> dict[str, torch.Tensor]:
        mixture_id, specs = self.groups[item]
        class_ids = [self.classes.index(s.class_name) for s in specs]
        batch = build_mixture(specs, class_ids, self.max_sources, self.stft)
        batch["mixture_id"] = torch.tensor(mixture_id, dtype=torch.long)
        return batch
