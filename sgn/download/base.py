"""The data set classes: subsets, what a download must match, and the archive flow.

:class:`DataSet` is what the registry in :mod:`sgn.download` maps names to. The
archive sets (FUSS, MUSDB18) share :class:`ArchiveDataSet`: fetch one archive per
subset, verify it (:func:`expected`), unpack it safely into a hidden staging folder,
prepare its items in parallel, write ``index.csv`` and ``prepare.json``, and rename
the staging folder into place. The YouTube sets build on :mod:`sgn.download.youtube`.
"""

from __future__ import annotations

import abc
import collections
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from sgn.download import zenodo
from sgn.download.archive import extract
from sgn.download.http import fetch, mirror_url, move_aside
from sgn.download.manifest import Checksum, read_manifest, shipped_manifest
from sgn.download.prepare import (
    FORMAT,
    Options,
    Planned,
    parallel_map,
    write_table,
)
from sgn.prepared import settings_match, write_provenance
from sgn.utils import SGNError, staged_dir

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Expected:
    """What a downloaded file must match, and where that knowledge came from."""

    checksum: Checksum | None
    size: int | None
    source: str

    def as_dict(self) -> dict:
        return {"checksum": str(self.checksum) if self.checksum else None, "size": self.size, "source": self.source}


def expected(
    dataset: str, name: str, opts: Options, *, size: int | None = None, zenodo_record: int | None = None
) -> Expected:
    """The checksum and size a downloaded file ``name`` must have.

    In order: the ``--checksums`` file if given (it must list ``name``); else the
    manifest shipped for ``dataset`` (with ``size``, the file's official size); else the
    md5 and size Zenodo publishes for ``zenodo_record``; else nothing (a warning).

    Raises:
        SGNError: ``--checksums`` is unreadable, malformed or does not list ``name``.
    """
    if opts.checksums is not None:
        entries = read_manifest(opts.checksums)
        if name not in entries:
            raise SGNError(f"{opts.checksums}: no checksum for {name}")
        return Expected(entries[name], None, str(opts.checksums))
    shipped = shipped_manifest(dataset)
    if name in shipped:
        return Expected(shipped[name], size, f"sgn/download/manifests/{dataset}.md5")
    if zenodo_record is not None:
        try:
            published = zenodo.record_files(zenodo_record, opts.mirror)
        except SGNError as err:
            # The archive's own CRCs still catch a damaged download.
            log.warning("could not read the checksums Zenodo publishes (%s)", err)
            published = {}
        if name in published:
            checksum, published_size = published[name]
            return Expected(checksum, published_size, f"Zenodo record {zenodo_record}")
    return Expected(None, size, "none")


def unpack(archive: Path, target: Path) -> Path:
    """:func:`sgn.download.archive.extract`; a corrupt or unsafe archive is moved aside to ``*.bad``."""
    try:
        return extract(archive, target)
    except SGNError as err:
        bad = move_aside(archive)
        raise SGNError(f"{err}; moved the archive aside to {bad}") from None


class DataSet(abc.ABC):
    """One downloadable data set: a name, its subsets, a dry-run plan and a preparation."""

    name: str
    subsets: tuple[str, ...]
    default_subsets: tuple[str, ...]
    single_subset = False  # True: exactly one subset per run (each has its own folder)

    def chosen_subsets(self, opts: Options) -> tuple[str, ...]:
        """The subsets to fetch: ``opts.subsets`` checked, or the default."""
        chosen = tuple(opts.subsets) if opts.subsets else self.default_subsets
        unknown = [s for s in chosen if s not in self.subsets]
        if unknown:
            raise SGNError(f"--subset: {self.name} has no subset {unknown[0]!r}; choose from {', '.join(self.subsets)}")
        if self.single_subset and len(chosen) != 1:
            raise SGNError(f"--subset: {self.name} takes one subset per run ({', '.join(self.subsets)})")
        return chosen

    @abc.abstractmethod
    def plan(self, opts: Options) -> list[Planned]:
        """What :meth:`prepare` would fetch (small id lists and record metadata may be fetched to say)."""

    @abc.abstractmethod
    def prepare(self, opts: Options) -> Path:
        """Download, verify, unpack and prepare; return the prepared folder."""


@dataclass(frozen=True)
class Archive:
    """A downloadable archive: file name, official URL, official size (bytes) if known, Zenodo record if any."""

    name: str
    url: str
    size: int | None = None
    zenodo_record: int | None = None


class ArchiveDataSet(DataSet):
    """A set shipped as one archive per subset, prepared item by item (examples, tracks)."""

    single_subset = True
    archives: dict[str, Archive]  # subset -> archive
    folders: dict[str, str]  # subset -> prepared folder name under ROOT
    unit: str  # what an item is, for progress and counts ("example", "track")

    def folder(self, opts: Options) -> Path:
        return opts.root / self.folders[self.chosen_subsets(opts)[0]]

    def check_tools(self) -> None:
        """Raise :class:`SGNError` if a program the preparation needs is missing (checked before downloading)."""

    def settings(self, opts: Options) -> dict:
        """What the prepared files depend on; a folder prepared otherwise is not reused."""
        return {"format": FORMAT, "subset": self.chosen_subsets(opts)[0], "sample_rate": opts.sample_rate}

    @abc.abstractmethod
    def items(self, raw: Path, archive: Path) -> list:
        """The items to prepare, found in the unpacked archive ``raw``."""

    @abc.abstractmethod
    def prepare_item(self, item, out: Path, opts: Options) -> tuple[list[dict], int]:
        """Write one item's clips under ``out``; return its index rows and its number of silent clips left out."""

    def plan(self, opts: Options) -> list[Planned]:
        archive = self.archives[self.chosen_subsets(opts)[0]]
        want = expected(self.name, archive.name, opts, size=archive.size, zenodo_record=archive.zenodo_record)
        present = " (already downloaded)" if (opts.downloads / archive.name).exists() else ""
        note = f"checksum from {want.source}{present}; unpacked, then prepared into {self.folder(opts)}"
        return [Planned(mirror_url(archive.url, opts.mirror), opts.downloads / archive.name, want.size or archive.size,
                        note)]

    def prepare(self, opts: Options) -> Path:
        folder, settings = self.folder(opts), self.settings(opts)
        if settings_match(folder, settings):
            log.info("%s is already prepared in %s", self.name, folder)
            return folder
        self.check_tools()
        archive = self.archives[self.chosen_subsets(opts)[0]]
        want = expected(self.name, archive.name, opts, size=archive.size, zenodo_record=archive.zenodo_record)
        path = fetch(mirror_url(archive.url, opts.mirror), opts.downloads / archive.name, size=want.size,
                     checksum=want.checksum, progress=opts.progress)
        with staged_dir(folder) as partial:
            raw = unpack(path, partial / ".raw")
            items = self.items(raw, path)
            results = parallel_map(lambda item: self.prepare_item(item, partial, opts), items, opts.jobs,
                                   opts.progress, self.unit)
            rows = [row for item_rows, _ in results for row in item_rows]
            silent = sum(n for _, n in results)
            if not rows:
                raise SGNError(f"{path}: no audible source clip in any {self.unit}")
            write_table(rows, partial / "index.csv")
            per_split = dict(collections.Counter(row["split"] for row in rows))
            write_provenance(
                partial, self.name, settings, made_by=type(self).__module__, sources={archive.name: {"url": archive.url, **want.as_dict()}},
                counts={f"{self.unit}s": len(items), "clips": len(rows), "silent_clips_left_out": silent,
                        "clips_per_split": per_split},
            )
            shutil.rmtree(raw)  # the archive stays in downloads/; the unpacked copy is not needed
        log.info("%s: %d clips %s from %d %ss (%d silent clips left out) -> %s", self.name, len(rows), per_split,
                 len(items), self.unit, silent, folder / "index.csv")
        return folder
