"""FUSS, the Free Universal Sound Separation data set (Wisdom et al., 2020), from Zenodo.

Source: Zenodo record 3694384, ``FUSS_ssdata_reverb.tar.gz`` (reverberated; subset
``reverb``, the default) or ``FUSS_ssdata.tar.gz`` (dry; subset ``dry``). Each holds
``ssdata[_reverb]/{train,validation,eval}/exampleNNNNN.wav`` (10 s mixtures at 16 kHz
mono), ``exampleNNNNN_sources/{background0,foregroundK}_sound.wav`` (the references)
and ``<split>_example_list.txt`` (one line per example: mixture, then its sources).

Classes: FUSS gives no semantic label to its sources. Its sources were screened with
FSD50K labels, but those labels are deliberately not distributed with the mixtures
(every scaper event is labelled ``sound``). What each example does say is a source's
role: one ``background`` (active over the whole clip) and zero to three
``foreground`` events. ``sgn`` uses the role as the class, so the index has two
classes, ``background`` and ``foreground``, and mixtures for training pair one of
each (``data.n_sources: "2"``).

Prepared layout in ``ROOT/fuss_<subset>/``::

    index.csv       one row per source clip; extra columns: example, source, mixture
    prepare.json    settings, archive URL and checksum, counts
    <split>/<example>/mixture.wav, background0.wav, foreground0.wav, ...

Splits: train -> ``train``, validation -> ``val``, eval -> ``test``. A silent source
(which adds nothing to its mixture) is written but left out of the index.
"""

from __future__ import annotations

import re
from pathlib import Path

from sgn.audio import load_audio, save_audio
from sgn.download import zenodo
from sgn.download.base import Archive, ArchiveDataSet
from sgn.download.prepare import Options, headroom, is_silent
from sgn.utils import SGNError

RECORD = 3694384
ARCHIVES = {"reverb": "FUSS_ssdata_reverb.tar.gz", "dry": "FUSS_ssdata.tar.gz"}
SPLITS = {"train": "train", "validation": "val", "eval": "test"}


def _role(source_file: str) -> str:
    """``"foreground1_sound.wav"`` -> ``"foreground1"``."""
    return Path(source_file).stem.split("_")[0]


def read_example_lists(base: Path) -> list[tuple[str, str, list[str]]]:
    """``(split, mixture, sources)`` for every example of ``base/<split>_example_list.txt``.

    Paths are relative to ``base``; splits are FUSS's names (train, validation, eval).

    Raises:
        SGNError: no example list, or a listed path outside ``base``.
    """
    examples = []
    for split in SPLITS:
        listing = base / f"{split}_example_list.txt"
        if not listing.is_file():
            continue
        for line in listing.read_text().splitlines():
            paths = line.split()
            if not paths:
                continue
            if any(p.startswith("/") or ".." in Path(p).parts for p in paths):
                raise SGNError(f"{listing}: lists a path outside the data set: {line!r}")
            examples.append((split, paths[0], paths[1:]))
    if not examples:
        raise SGNError(f"{base}: no FUSS example lists (<split>_example_list.txt) found")
    return examples


class Fuss(ArchiveDataSet):
    name = "fuss"
    subsets = ("reverb", "dry")
    default_subsets = ("reverb",)
    archives = {subset: Archive(name, zenodo.file_url(RECORD, name), zenodo_record=RECORD)
                for subset, name in ARCHIVES.items()}
    folders = {"reverb": "fuss_reverb", "dry": "fuss_dry"}
    unit = "example"

    def items(self, raw: Path, archive: Path) -> list[tuple[Path, str, str, list[str]]]:
        listing = next(raw.rglob("train_example_list.txt"), None) or next(raw.rglob("*_example_list.txt"), None)
        if listing is None:
            raise SGNError(f"{archive}: no FUSS example list inside; is it a FUSS ssdata archive?")
        return [(listing.parent, *example) for example in read_example_lists(listing.parent)]

    def prepare_item(self, item: tuple[Path, str, str, list[str]], out: Path, opts: Options) -> tuple[list[dict], int]:
        """Resample one example's mixture and sources into ``out``; one index row per audible source."""
        base, split, mixture, sources = item
        name = Path(mixture).stem
        waves = [load_audio(base / path, opts.sample_rate)[0] for path in [mixture, *sources]]
        gain = headroom(waves)  # one gain for the example: the sources still sum to the mixture
        folder = Path(SPLITS[split]) / name
        save_audio(out / folder / "mixture.wav", waves[0] * gain, opts.sample_rate)
        rows, silent = [], 0
        for path, wave in zip(sources, waves[1:]):
            role = _role(path)
            rel = folder / f"{role}.wav"
            save_audio(out / rel, wave * gain, opts.sample_rate)
            if is_silent(wave * gain):
                silent += 1
                continue
            rows.append({
                "path": rel.as_posix(),
                "class": re.sub(r"\d+$", "", role),
                "split": SPLITS[split],
                "duration_s": len(wave) / opts.sample_rate,
                "sample_rate": opts.sample_rate,
                "example": name,
                "source": role,
                "mixture": (folder / "mixture.wav").as_posix(),
            })
        return rows, silent
