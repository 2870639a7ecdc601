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

import csv
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from sgn.augment import Augmentation
from sgn.audio import MAX_SAMPLE_RATE, MIN_SAMPLE_RATE, STFTSpec, audio_info, read_audio_block
from sgn.utils import SGNError, atomic_path, check_class_names, check_path, shorten

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
# test_seen / test_unseen: SynthMUSIC's test clips rendered with banks seen in training, and
# with the held-out bank alone; val_unseen: the held-out bank's validation clips (to judge
# what helps on unheard timbres without touching a test split); downloaded sets have one test split.
SPLITS: tuple[str, ...] = ("train", "val", "test", "test_seen", "val_unseen", "test_unseen")
UNSEEN_SPLITS: tuple[str, ...] = ("val_unseen", "test_unseen")
# Mixture-list modes: independent clips, or the parts of one ensemble piece (index column `piece`).
MIXTURE_MODES: tuple[str, ...] = ("independent", "ensemble")
# Columns of a fixed mixture list, one row per source.
MIXTURE_COLUMNS: tuple[str, ...] = (
    "mixture_id", "n_sources", "source", "class", "path", "offset", "length", "gain",
)
# Sound-of-Pixels draws a gain in [0.5, 1.5] per source while training.
DEFAULT_GAIN_RANGE: tuple[float, float] = (0.5, 1.5)


@dataclass(frozen=True)
class _Limits:
    """The accepted values of a numeric CSV column, and how the message describes them."""

    low: float
    high: float
    whole: bool
    expected: str


# The largest whole number a float64 holds exactly: bounds counts and offsets read from CSVs.
_LARGEST_WHOLE = 2**53
# A clip shorter than a millisecond (or longer than a day) is a broken index row.
MIN_DURATION_S, MAX_DURATION_S = 0.001, 86400.0
# A file may be this much shorter than its index row says: compressed formats' headers
# can count a codec frame (~26 ms of MP3 at 44.1 kHz) less than was decoded when indexing.
DURATION_TOLERANCE_S = 0.05
INDEX_NUMBERS: dict[str, _Limits] = {
    "duration_s": _Limits(MIN_DURATION_S, MAX_DURATION_S, False, f"seconds in {MIN_DURATION_S}..{MAX_DURATION_S:g}"),
    "sample_rate": _Limits(MIN_SAMPLE_RATE, MAX_SAMPLE_RATE, True,
                           f"a whole number of Hz in {MIN_SAMPLE_RATE}..{MAX_SAMPLE_RATE}"),
}
# Gains of mixture sources: quieter than -60 dB is inaudible in the mix, louder than 100 would clip it.
MIN_GAIN, MAX_GAIN = 0.001, 100.0
MIXTURE_NUMBERS: dict[str, _Limits] = {
    "mixture_id": _Limits(0, _LARGEST_WHOLE, True, "a whole number >= 0"),
    "n_sources": _Limits(1, _LARGEST_WHOLE, True, "a whole number >= 1"),
    "source": _Limits(0, _LARGEST_WHOLE, True, "a whole number >= 0"),
    "offset": _Limits(0, _LARGEST_WHOLE, True, "a whole number of samples >= 0"),
    "length": _Limits(1, _LARGEST_WHOLE, True, "a whole number of samples >= 1"),
    "gain": _Limits(MIN_GAIN, MAX_GAIN, False, f"a gain in {MIN_GAIN}..{MAX_GAIN:g}"),
}


def _read_table(path: Path, columns: Sequence[str], text_columns: Sequence[str], what: str, maker: str) -> pd.DataFrame:
    """Read a CSV that must have ``columns`` and at least one row; one clear :class:`SGNError` otherwise.

    ``text_columns`` are read as text, so a class called ``123`` stays a name.
    """
    if not path.is_file():
        raise SGNError(f"{path}: {what} not found (make one with {maker})")
    try:
        frame = pd.read_csv(path, dtype={c: str for c in text_columns})
    except (ValueError, OSError, csv.Error) as err:  # pandas' parser errors are ValueErrors
        reason = (str(err).splitlines() or [type(err).__name__])[0]
        raise SGNError(f"{path}: not a readable CSV ({shorten(reason)})") from None
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise SGNError(f"{path}: missing columns {missing}; a {what} needs {list(columns)}")
    if frame.empty:
        raise SGNError(f"{path}: the {what} has a header but no rows")
    return frame


# Rows are numbered as a spreadsheet shows the CSV: the header is row 1, the first entry row 2.
def _raise_for_rows(where: str, frame: pd.DataFrame, bad: np.ndarray, column: str, expected: str) -> None:
    """Raise ``<file>: row N, column C: got V; expected E`` for the first row flagged in ``bad``."""
    rows = np.flatnonzero(bad)
    if rows.size:
        more = f" (and {rows.size - 1} more rows)" if rows.size > 1 else ""
        value = frame[column].iloc[rows[0]]
        value = shorten(value.item() if isinstance(value, np.generic) else value, 60)  # nan, not np.float64(nan)
        raise SGNError(f"{where}: row {rows[0] + 2}, column {column}: got {value}{more}; expected {expected}")


def _check_text(where: str, frame: pd.DataFrame, column: str, expected: str) -> None:
    """Every cell of ``column`` must be non-empty text (empty cells read as NaN)."""
    bad = ~frame[column].map(lambda v: isinstance(v, str) and v.strip() != "").to_numpy(bool)
    _raise_for_rows(where, frame, bad, column, expected)


def _check_numbers(where: str, frame: pd.DataFrame, column: str, limits: _Limits) -> pd.Series:
    """Every cell of ``column`` must be a finite number within ``limits``; return the column as numbers."""
    values = pd.to_numeric(frame[column], errors="coerce").astype(float)  # text -> NaN
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(values) | (values < limits.low) | (values > limits.high)
        if limits.whole:
            bad |= values != np.floor(values)
    _raise_for_rows(where, frame, bad.to_numpy(bool), column, limits.expected)
    return values.astype(np.int64) if limits.whole else values


def _check_index_rows(where: str, frame: pd.DataFrame) -> None:
    """Check every column of an index's rows (types and ranges), converting the numeric ones in place."""
    _check_text(where, frame, "path", "a clip path relative to the index")
    _check_text(where, frame, "class", "a class name")
    check_class_names(sorted(frame["class"].unique()), f"{where}: class")
    _raise_for_rows(where, frame, ~frame["split"].isin(SPLITS).to_numpy(bool), "split", f"one of {', '.join(SPLITS)}")
    for column, limits in INDEX_NUMBERS.items():
        frame[column] = _check_numbers(where, frame, column, limits)


def _check_clip_headers(where: str, frame: pd.DataFrame) -> np.ndarray:
    """Check each clip's header (``soundfile.info``, no decoding) against its index row.

    The file's rate must be the row's ``sample_rate``, and it must hold the row's
    ``duration_s`` (less :data:`DURATION_TOLERANCE_S`).

    Returns:
        ``[clips]`` int64, the samples of each clip that can be read: the row's length,
        or the file's where it is (within the tolerance) shorter.
    """
    listed = np.floor(frame["duration_s"].to_numpy() * frame["sample_rate"].to_numpy() + 0.5).astype(np.int64)
    usable = np.empty(len(frame), dtype=np.int64)
    for row, (clip, rate, wanted) in enumerate(zip(frame["abspath"], frame["sample_rate"], listed)):
        try:
            frames, file_rate, _ = audio_info(clip)
        except SGNError as err:
            raise SGNError(f"{where}: row {row + 2}, column path: {err}") from None
        if file_rate != rate:
            raise SGNError(f"{where}: row {row + 2}, column sample_rate: got {rate} Hz; "
                           f"expected {file_rate} Hz, the rate of {clip}")
        if frames < wanted - DURATION_TOLERANCE_S * rate:
            raise SGNError(f"{where}: row {row + 2}, column duration_s: got {frame['duration_s'].iloc[row]:g} s "
                           f"({wanted} samples); expected at most {frames / rate:g} s, the length of {clip}")
        usable[row] = min(frames, wanted)
    return usable


def read_index(path: str | os.PathLike) -> pd.DataFrame:
    """Read and validate an ``index.csv``.

    Every row is checked when the index is read: ``path`` and ``class`` non-empty (class
    names as :func:`sgn.utils.check_class_names` allows), ``split`` one of :data:`SPLITS`,
    ``sample_rate`` and ``duration_s`` numbers in range (:data:`INDEX_NUMBERS`); then
    every clip's header must agree with its row (:func:`_check_clip_headers`).

    Returns:
        The table with an added ``abspath`` column (absolute clip paths) and a
        ``num_samples`` column (readable samples of each clip); ``frame.attrs["root"]``
        is the index's folder.

    Raises:
        SGNError: naming the file, row and column of the first bad cell, or the first
        clip that is missing, unreadable, at another rate or shorter than listed.
    """
    path = check_path(path, "index")
    frame = _read_table(path, INDEX_COLUMNS, ("path", "class", "split"), "index file",
                        "`sgn data synth` or `sgn data download`")
    _check_index_rows(str(path), frame)
    root = path.resolve().parent
    frame["abspath"] = [str(root / p) for p in frame["path"]]
    absent = [p for p in frame["abspath"] if not os.path.isfile(p)]
    if absent:
        raise SGNError(f"{path}: {len(absent)} listed clip(s) do not exist, e.g. {shorten(absent[0])}")
    frame["num_samples"] = _check_clip_headers(str(path), frame)
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


# Largest sample magnitude a clip may hold (full scale is 1; float files may exceed it a little).
MAX_SAMPLE = 1000.0


def read_segment(path: str, offset: int, length: int) -> np.ndarray:
    """Read ``length`` mono samples of ``path`` starting at ``offset`` (zero-padded past the end).

    Returns:
        float32 ``[L]``.

    Raises:
        SGNError: unreadable file, ``offset`` past the end of the file, or samples that are
            not audio (NaN, infinite, or beyond :data:`MAX_SAMPLE`: their spectrogram would
            overflow and training would diverge without saying why).
    """
    wave = read_audio_block(path, offset, length)
    if not np.all(np.abs(wave) <= MAX_SAMPLE):  # False for NaN too
        raise SGNError(f"{path}: holds NaN, infinite or huge samples (near sample {offset}); "
                       f"expected audio within +-{MAX_SAMPLE:g}: fix or remove the clip")
    return np.pad(wave, (0, length - len(wave)))


@dataclass(frozen=True)
class SourceSpec:
    """One source of a mixture: a segment of a clip and its gain (before the ``1/N`` scaling)."""

    path: str
    class_name: str
    offset: int
    length: int
    gain: float


def build_mixture(
    sources: Sequence[SourceSpec], class_ids: Sequence[int], max_sources: int, stft: STFTSpec,
    augment: tuple[Augmentation, np.random.Generator, int] | None = None,
) -> dict[str, torch.Tensor]:
    """Read (and augment) and mix the sources; compute the spectral tensors the models need.

    Args:
        sources: the ``N`` sources (``N <= max_sources``), all of one length ``L``.
        class_ids: the class id of each source.
        max_sources: pad the source axis to this many (padding has class id ``-1``).
        stft: the STFT of the spectral tensors.
        augment: ``(augmentation, generator, sample rate)`` to change each source before
            mixing (:mod:`sgn.augment`); ``None``: the sources as recorded.

    Returns:
        A dict of tensors: ``mixture [L]``, ``sources [Nmax, L]`` (scaled by ``gain/N``,
        summing to the mixture), ``class_ids [Nmax]`` (long, ``-1`` for padding),
        ``n_sources []``, ``mix_mag [F, T]``, ``source_mags [Nmax, F, T]``.
    """
    n = len(sources)
    length = sources[0].length
    waves = np.zeros((max_sources, length), dtype=np.float32)
    for slot, spec in enumerate(sources):
        if augment is None:
            wave = read_segment(spec.path, spec.offset, spec.length)
        else:
            change, rng, rate = augment
            wave = change(read_segment(spec.path, spec.offset, change.read_length(spec.length)), spec.length, rate, rng)
        waves[slot] = wave * (spec.gain / n)
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
        rows = solo_clips(index)
        rows = rows[(rows["split"] == split) & (rows["num_samples"] >= segment_samples)]
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


def solo_clips(index: pd.DataFrame) -> pd.DataFrame:
    """The rows of ``index`` that are solo clips (not parts of an ensemble piece)."""
    return index[index["piece"].isna()] if "piece" in index.columns else index


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
        augmentation: what to change in each source (:mod:`sgn.augment`), at ``sample_rate``.
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
        augmentation: Augmentation = Augmentation(),
        sample_rate: int = 11025,
    ):
        self.n_range = parse_n_sources(n_sources)
        if self.n_range[1] > len(classes):
            raise SGNError(f"n_sources: {self.n_range[1]} sources need {self.n_range[1]} classes, the data set has {len(classes)}")
        self.pool = _ClipPool(index, split, classes, segment_samples)
        self.segment_samples, self.stft, self.gain_range = segment_samples, stft, gain_range
        self.items_per_epoch, self.seed = items_per_epoch, seed
        self.augmentation, self.sample_rate = augmentation, sample_rate

    def __len__(self) -> int:
        return self.items_per_epoch

    def __getitem__(self, item: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, int(item)])
        class_ids = _draw_classes(rng, len(self.pool.classes), self.n_range)
        specs = self.pool.draw(rng, class_ids, self.segment_samples, self.gain_range)
        augment = (self.augmentation, rng, self.sample_rate) if self.augmentation.active else None
        return build_mixture(specs, class_ids, self.n_range[1], self.stft, augment)


MAX_MIXTURES = 100_000  # a list of 100k mixtures takes hours to evaluate; more is a typo
MAX_SEGMENT = 2**22  # data.segment_samples' bound (sgn.config.RANGES): 6 minutes at 11025 Hz


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
    mode: str = "independent",
) -> pd.DataFrame:
    """Draw a fixed list of evaluation mixtures: one row per source, :data:`MIXTURE_COLUMNS`.

    ``mode="independent"``: N solo clips of distinct classes, each at its own offset.
    ``mode="ensemble"``: N parts of one ensemble piece (composed together: one key, tempo,
    chords and rhythm) at one shared offset; pieces are used in turn.

    ``path`` holds absolute clip paths; :func:`write_mixture_list` stores them relative
    to the list's own folder, so a list and its data set can move together.
    """
    for name, value, high in (("count", count, MAX_MIXTURES), ("segment_samples", segment_samples, MAX_SEGMENT)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or not 1 <= value <= high:
            raise SGNError(f"{name}: expected a whole number in 1..{high}, got {shorten(value)}")
    if split not in SPLITS:
        raise SGNError(f"split: expected one of {list(SPLITS)}, got {split!r}")
    if mode not in MIXTURE_MODES:
        raise SGNError(f"mode: expected one of {list(MIXTURE_MODES)}, got {shorten(mode)}")
    classes = list(classes) if classes is not None else index_classes(index)
    n_range = parse_n_sources(n_sources)
    if n_range[1] > len(classes):
        raise SGNError(f"n_sources: {n_range[1]} sources need {n_range[1]} classes, the data set has {len(classes)}")
    rng = np.random.default_rng(seed)
    if mode == "ensemble":
        mixtures = _ensemble_mixtures(index, split, n_range, count, rng, segment_samples, gain_range)
    else:
        pool = _ClipPool(index, split, classes, segment_samples)
        mixtures = [_audible(lambda: pool.draw(rng, _draw_classes(rng, len(classes), n_range), segment_samples,
                                               gain_range), split) for _ in range(count)]
    rows = [{"mixture_id": mixture_id, "n_sources": len(specs), "source": slot, "class": spec.class_name,
             "path": spec.path, "offset": spec.offset, "length": spec.length, "gain": round(spec.gain, 6)}
            for mixture_id, specs in enumerate(mixtures) for slot, spec in enumerate(specs)]
    return pd.DataFrame(rows, columns=list(MIXTURE_COLUMNS))


def _ensemble_mixtures(index: pd.DataFrame, split: str, n_range: tuple[int, int], count: int,
                       rng: np.random.Generator, segment_samples: int,
                       gain_range: tuple[float, float]) -> list[list[SourceSpec]]:
    """``count`` mixtures of the parts of ``split``'s ensemble pieces, parts aligned."""
    where = index.attrs.get("path", "index")
    if "piece" not in index.columns:
        raise SGNError(f"{where}: no 'piece' column (a data set made without ensembles); "
                       "mode ensemble needs the parts of ensemble pieces")
    parts = index[index["piece"].notna()]
    parts = parts[(parts["split"] == split) & (parts["num_samples"] >= segment_samples)]
    pieces = [group.sort_values("class") for _, group in parts.groupby("piece", sort=True)]
    repeated = next((group for group in pieces if group["class"].duplicated().any()), None)
    if repeated is not None:
        raise SGNError(f"{where}: ensemble piece {shorten(repeated['piece'].iloc[0])} has two parts of one class; "
                       "expected one part per class")
    if not pieces:
        raise SGNError(f"{where}: no ensemble piece in split {split} with parts of at least {segment_samples} samples")
    fewest = min(len(group) for group in pieces)
    if n_range[1] > fewest:
        raise SGNError(f"n_sources: {n_range[1]} sources, but the ensemble pieces have {fewest} parts")
    def draw(group: pd.DataFrame) -> list[SourceSpec]:
        n = int(rng.integers(n_range[0], n_range[1] + 1))
        chosen = group.iloc[sorted(int(i) for i in rng.choice(len(group), size=n, replace=False))]
        offset = int(rng.integers(int(chosen["num_samples"].min()) - segment_samples + 1))  # one for every part
        return [SourceSpec(row.abspath, row["class"], offset, segment_samples, float(rng.uniform(*gain_range)))
                for _, row in chosen.iterrows()]

    return [_audible(lambda: draw(pieces[mixture_id % len(pieces)]), split) for mixture_id in range(count)]


MAX_REDRAWS = 100  # draws of one mixture before a split is declared too silent to sample


def _audible(draw, split: str) -> list[SourceSpec]:
    """``draw()``'s first mixture whose every source segment holds sound: BSS-eval is undefined for
    a silent reference, so a list with one would lose that mixture at scoring time. A list whose
    draws never meet a silent segment is the same as without this check."""
    for _ in range(MAX_REDRAWS):
        specs = draw()
        if all(np.any(read_segment(spec.path, spec.offset, spec.length) != 0) for spec in specs):
            return specs
    raise SGNError(f"split {split}: {MAX_REDRAWS} draws in a row held a silent source segment; "
                   "expected clips with sound in most segments (check the clips, or use longer segments)")


def write_mixture_list(frame: pd.DataFrame, out: str | os.PathLike) -> Path:
    """Write a mixture list CSV atomically, clip paths relative to the CSV's folder."""
    out = Path(out)
    folder = out.resolve().parent
    frame = frame.assign(path=[Path(os.path.relpath(p, folder)).as_posix() for p in frame["path"]])
    with atomic_path(out) as tmp:
        frame.to_csv(tmp, index=False, lineterminator="\n")
    return out


def _check_mixture_rows(where: str, frame: pd.DataFrame) -> None:
    """Check every column of a mixture list's rows (types and ranges), converting the numeric ones in place."""
    _check_text(where, frame, "path", "a clip path relative to the list")
    _check_text(where, frame, "class", "a class name")
    check_class_names(sorted(frame["class"].unique()), f"{where}: class")
    for column, limits in MIXTURE_NUMBERS.items():
        frame[column] = _check_numbers(where, frame, column, limits)


def _check_mixture(where: str, mixture_id: int, rows: pd.DataFrame) -> None:
    """Check that the rows of one mixture describe ``n_sources`` sources of distinct classes and one length."""
    n_values, sources = sorted(set(rows["n_sources"])), sorted(rows["source"])
    if len(n_values) > 1:
        raise SGNError(f"{where}: mixture {mixture_id}: rows disagree on n_sources {n_values}; expected one value")
    n = n_values[0]
    if sources != list(range(n)):
        raise SGNError(f"{where}: mixture {mixture_id}: source numbers {shorten(sources)} for n_sources {n}; "
                       f"expected 0..{n - 1}, each once")
    lengths = sorted(set(rows["length"]))
    if len(lengths) > 1:
        raise SGNError(f"{where}: mixture {mixture_id}: sources of lengths {shorten(lengths)}; expected one length")
    repeated = rows["class"][rows["class"].duplicated()]
    if len(repeated):
        raise SGNError(f"{where}: mixture {mixture_id}: two sources of class {repeated.iloc[0]!r}; "
                       "expected distinct classes (a model separates by class)")


def read_mixture_list(path: str | os.PathLike) -> pd.DataFrame:
    """Read and validate a mixture list CSV; ``path`` column made absolute (relative to the CSV's folder).

    Every row is checked (:data:`MIXTURE_NUMBERS`, class names), then every mixture
    (:func:`_check_mixture`); the clips themselves are checked by :class:`FixedMixtureDataset`.

    Raises:
        SGNError: naming the file and the row and column, or the mixture, that is wrong.
    """
    path = check_path(path, "mixtures")
    frame = _read_table(path, MIXTURE_COLUMNS, ("path", "class"), "mixture list", "`sgn data mixtures`")
    _check_mixture_rows(str(path), frame)
    for mixture_id, rows in frame.groupby("mixture_id", sort=True):
        _check_mixture(str(path), mixture_id, rows)
    folder = path.resolve().parent
    frame["path"] = [os.path.normpath(folder / p) for p in frame["path"]]
    frame.attrs["path"] = str(path)
    return frame


class FixedMixtureDataset(torch.utils.data.Dataset):
    """The mixtures of a fixed list (from :func:`make_mixture_list`), in list order.

    Every source is checked against its clip's header when the dataset is made: the
    clip exists, is readable, holds ``offset + length`` samples, and all clips share one
    rate (``sample_rate`` when given); a mixture must span at least one STFT window.

    Args:
        mixtures: a mixture-list CSV path, or a frame with absolute clip paths
            (from :func:`make_mixture_list` or :func:`read_mixture_list`).
        classes: class names in class-id order; every class in the list must be one.
        stft: the STFT of the spectral tensors.
        sample_rate: the rate the clips must have (the model's); ``None``: any one rate.

    Attributes:
        sample_rate: the clips' rate.
    """

    def __init__(
        self,
        mixtures: str | os.PathLike | pd.DataFrame,
        classes: Sequence[str],
        stft: STFTSpec,
        sample_rate: int | None = None,
    ):
        if not isinstance(mixtures, pd.DataFrame):
            mixtures = read_mixture_list(mixtures)
        where = mixtures.attrs.get("path", "mixture list")
        unknown = sorted(set(mixtures["class"]) - set(classes))
        if unknown:
            raise SGNError(f"{where}: class(es) {shorten(unknown)} are not among the model's classes {list(classes)}")
        self.classes, self.stft, self.sample_rate = list(classes), stft, sample_rate
        self.max_sources = int(mixtures["n_sources"].max())
        self.groups = []
        headers: dict[str, tuple[int, int, int]] = {}  # clip -> audio_info, each read once
        for mixture_id, rows in mixtures.sort_values(["mixture_id", "source"]).groupby("mixture_id", sort=True):
            specs = [
                SourceSpec(r.path, r["class"], int(r.offset), int(r.length), float(r.gain))
                for _, r in rows.iterrows()
            ]
            self._check_sources(f"{where}: mixture {mixture_id}", specs, headers)
            self.groups.append((int(mixture_id), specs))

    def _check_sources(self, where: str, specs: Sequence[SourceSpec], headers: dict) -> None:
        """Check one mixture's sources against their clips' headers; set :attr:`sample_rate` from the first."""
        if specs[0].length < self.stft.n_fft:
            raise SGNError(f"{where}: length {specs[0].length} is shorter than one STFT window; "
                           f"expected at least n_fft = {self.stft.n_fft} samples")
        for spec in specs:
            if not os.path.isfile(spec.path):
                raise SGNError(f"{where}: uses {spec.path}, which does not exist")
            if spec.path not in headers:
                try:
                    headers[spec.path] = audio_info(spec.path)
                except SGNError as err:
                    raise SGNError(f"{where}: {err}") from None
            frames, rate, _ = headers[spec.path]
            if spec.offset + spec.length > frames:
                raise SGNError(f"{where}: offset {spec.offset} + length {spec.length} past the end of "
                               f"{spec.path} ({frames} samples)")
            if self.sample_rate is None:
                self.sample_rate = rate
            elif rate != self.sample_rate:
                raise SGNError(f"{where}: {spec.path} is at {rate} Hz; expected {self.sample_rate} Hz, "
                               "the rate of the model or of the list's other clips")

    def __len__(self) -> int:
        return len(self.groups)

    def __getitem__(self, item: int) -> dict[str, torch.Tensor]:
        mixture_id, specs = self.groups[item]
        class_ids = [self.classes.index(s.class_name) for s in specs]
        batch = build_mixture(specs, class_ids, self.max_sources, self.stft)
        batch["mixture_id"] = torch.tensor(mixture_id, dtype=torch.long)
        return batch
