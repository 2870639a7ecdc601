"""A SoundFont's structure checked before its native reader sees it.

tinysoundfont trusts the file: random bytes in a ``pdta`` index sent it reading out of
bounds (a segfault of ``sgn data synth``). :func:`check_soundfont` reads the RIFF chunk
headers and the small ``pdta`` lists in Python and refuses, in one line naming the file,
every chunk that runs past its parent and every index that points past its list
(SoundFont 2.04, section 7: preset -> bag -> generator -> instrument -> bag -> generator
-> sample). The samples themselves are not read.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import BinaryIO

from sgn.utils import SGNError

# pdta's lists, their record sizes, and the least records each holds (with its terminal record)
PDTA_RECORDS = {"phdr": (38, 2), "pbag": (4, 1), "pmod": (10, 1), "pgen": (4, 1),
                "inst": (22, 2), "ibag": (4, 1), "imod": (10, 1), "igen": (4, 1), "shdr": (46, 2)}
GEN_INSTRUMENT, GEN_SAMPLE_ID = 41, 53
SAMPLE_COMPRESSED = 0x10  # sf3: the sample's start and end are byte offsets into the Ogg data
MAX_PDTA_BYTES = 64 << 20


def _chunks(f: BinaryIO, start: int, end: int, where: str) -> dict[str, tuple[int, int]]:
    """``{id or LIST type: (data offset, size)}`` of the chunks in ``[start, end)``."""
    found = {}
    offset = start
    while offset + 8 <= end:
        f.seek(offset)
        chunk_id, size = struct.unpack("<4sI", f.read(8))
        if offset + 8 + size > end:
            raise SGNError(f"{where}: chunk {chunk_id!r} at byte {offset} runs past its end; a damaged SoundFont")
        name = chunk_id.decode("latin-1")
        if name == "LIST" and size >= 4:
            found[f.read(4).decode("latin-1")] = (offset + 12, size - 4)
        else:
            found[name] = (offset + 8, size)
        offset += 8 + size
        if size & 1:  # a pad byte, unless the writer left it out (MuseScore_General_Lite.sf3 does)
            f.seek(offset)
            offset += not f.read(4).isalnum()
    return found


def _records(f: BinaryIO, pdta: dict[str, tuple[int, int]], where: str) -> dict[str, list[bytes]]:
    lists = {}
    for name, (size, least) in PDTA_RECORDS.items():
        if name not in pdta:
            raise SGNError(f"{where}: no {name} list in pdta; a damaged SoundFont")
        offset, length = pdta[name]
        if length % size or length // size < least or length > MAX_PDTA_BYTES:
            raise SGNError(f"{where}: pdta list {name} of {length} bytes; expected at least {least} "
                           f"records of {size} bytes")
        f.seek(offset)
        data = f.read(length)
        lists[name] = [data[i:i + size] for i in range(0, length, size)]
    return lists


def _check_indices(values: list[int], limit: int, what: str, where: str) -> None:
    """Indices into a list of ``limit`` records: in range and never decreasing."""
    if any(b < a for a, b in zip(values, values[1:])) or any(not 0 <= v <= limit for v in values):
        raise SGNError(f"{where}: {what} points outside its list (a damaged SoundFont)")


def _check_links(lists: dict[str, list[bytes]], sample_bytes: int, where: str) -> None:
    def u16(records: list[bytes], at: int) -> list[int]:
        return [struct.unpack_from("<H", r, at)[0] for r in records]

    n = {name: len(records) for name, records in lists.items()}
    _check_indices(u16(lists["phdr"], 24), n["pbag"] - 1, "a preset's bag index", where)
    _check_indices(u16(lists["pbag"], 0), n["pgen"] - 1, "a preset bag's generator index", where)
    _check_indices(u16(lists["pbag"], 2), n["pmod"] - 1, "a preset bag's modulator index", where)
    _check_indices(u16(lists["inst"], 20), n["ibag"] - 1, "an instrument's bag index", where)
    _check_indices(u16(lists["ibag"], 0), n["igen"] - 1, "an instrument bag's generator index", where)
    _check_indices(u16(lists["ibag"], 2), n["imod"] - 1, "an instrument bag's modulator index", where)
    for records, oper, limit, what in ((lists["pgen"], GEN_INSTRUMENT, n["inst"] - 2, "an instrument"),
                                       (lists["igen"], GEN_SAMPLE_ID, n["shdr"] - 2, "a sample")):
        if any(op == oper and amount > limit for op, amount in (struct.unpack("<HH", r) for r in records)):
            raise SGNError(f"{where}: a generator names {what} past the end of its list (a damaged SoundFont)")
    for record in lists["shdr"][:-1]:
        start, end, loop_start, loop_end, rate = struct.unpack_from("<5I", record, 20)
        kind = struct.unpack_from("<H", record, 44)[0]
        limit = sample_bytes if kind & SAMPLE_COMPRESSED else sample_bytes // 2
        if not start <= end <= limit:
            raise SGNError(f"{where}: a sample header spans samples {start}..{end}, past the sample data "
                           f"({limit}); a damaged SoundFont")


def check_soundfont(path: str | os.PathLike) -> None:
    """Raise :class:`SGNError` (one line naming ``path``) unless ``path`` is a well-formed
    RIFF ``sfbk`` file whose chunks and ``pdta`` indices all stay within bounds."""
    path = Path(path)
    where = f"soundfont: {path}"
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"sfbk":
                raise SGNError(f"{where}: not a SoundFont (expected a RIFF sfbk file, .sf2 or .sf3)")
            riff_end = min(size, 8 + struct.unpack_from("<I", head, 4)[0])
            top = _chunks(f, 12, riff_end, where)
            if "sdta" not in top or "pdta" not in top:
                raise SGNError(f"{where}: no {'sdta' if 'sdta' not in top else 'pdta'} list; a damaged SoundFont")
            sdta = _chunks(f, top["sdta"][0], sum(top["sdta"]), where)
            pdta = _chunks(f, top["pdta"][0], sum(top["pdta"]), where)
            _check_links(_records(f, pdta, where), sdta.get("smpl", (0, 0))[1], where)
    except OSError as err:
        raise SGNError(f"{where}: cannot be read ({err.strerror or err})") from None
