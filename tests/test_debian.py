"""Files taken from Debian packages (sgn.debian), against a loopback archive: fetched, checked, or refused in one line.

The package is built here in the true format (an ar archive holding ``debian-binary``,
``control.tar.xz`` and ``data.tar.xz``) and served by :class:`download_fixtures.MirrorServer`
on 127.0.0.1; no other address is touched.
"""

from __future__ import annotations

import hashlib
import io
import tarfile

import pytest

import download_fixtures as fx
from sgn import debian
from sgn.debian import DebPackage, ar_members, fetch_deb_files
from sgn.utils import SGNError

FONT = "usr/share/sounds/sf2/Test.sf2"
COPYRIGHT = "usr/share/doc/test-soundfont/copyright"


def _tar_xz(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:xz") as tar:
        for path, data in files.items():
            info = tarfile.TarInfo(f"./{path}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def make_deb(files: dict[str, bytes]) -> bytes:
    """A binary Debian package holding ``files`` (path -> bytes), in the ar layout dpkg writes."""
    members = {"debian-binary": b"2.0\n", "control.tar.xz": _tar_xz({"control": b"Package: test-soundfont\n"}),
               "data.tar.xz": _tar_xz(files)}
    out = bytearray(b"!<arch>\n")
    for name, data in members.items():
        out += f"{name:<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(data):<10}`\n".encode()
        out += data + (b"\n" if len(data) % 2 else b"")
    return bytes(out)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


FONT_BYTES = b"RIFF" + bytes(range(256)) * 10
DEB = make_deb({FONT: FONT_BYTES, COPYRIGHT: b"CC-BY-SA-4.0\n"})
POOL = "pool/main/t/test-soundfont/test-soundfont_1.0-1_all.deb"


def package(deb: bytes = DEB, **change) -> DebPackage:
    fields = dict(name="test-soundfont", version="1.0-1", pool_path=POOL, size=len(deb), sha256=sha(deb))
    return DebPackage(**{**fields, **change})


def test_ar_members_reads_what_dpkg_writes():
    members = ar_members(DEB, "test.deb")
    assert list(members) == ["debian-binary", "control.tar.xz", "data.tar.xz"]
    assert members["debian-binary"] == b"2.0\n"


def test_a_pinned_file_is_fetched_checked_and_cached(tmp_path, monkeypatch):
    with fx.MirrorServer({f"/debian/{POOL}": DEB}) as server:
        monkeypatch.setenv(debian.MIRROR_ENV, f"{server.url}/debian")
        dest = fetch_deb_files(package(), {FONT: sha(FONT_BYTES)}, tmp_path / "fonts", "a test bank",
                               also=lambda path: path == COPYRIGHT, progress=False)
        assert (dest / "Test.sf2").read_bytes() == FONT_BYTES
        assert (dest / "copyright").read_text() == "CC-BY-SA-4.0\n"
        assert not list(tmp_path.glob("*.deb"))  # the package is removed once its files are out
        fetch_deb_files(package(), {FONT: sha(FONT_BYTES)}, dest, "a test bank", progress=False)
        assert len(server.requests) == 1  # the second call found the files and fetched nothing


@pytest.mark.parametrize("case, match", [
    ("missing package", r"test-soundfont_1.0-1_all.deb: HTTP 404"),
    ("altered package", r"test-soundfont_1.0-1_all.deb: sha256 [0-9a-f]{64}, expected [0-9a-f]{64}; moved the file aside"),
    ("resized package", r"test-soundfont_1.0-1_all.deb: size \d+ bytes, expected \d+"),
    ("file not in package", r"test-soundfont 1.0-1 \(Debian\): no usr/share/sounds/sf2/Other.sf2 in the package"),
    ("altered file", r"test-soundfont 1.0-1 \(Debian\) usr/share/sounds/sf2/Test.sf2: sha256 [0-9a-f]{64}, expected 0{64}"),
    ("not a package", r"not a Debian package \(no ar archive header\)"),
])
def test_a_missing_or_altered_package_is_one_line_and_caches_nothing(case, match, tmp_path, monkeypatch):
    served, pinned, files = DEB, package(), {FONT: sha(FONT_BYTES)}
    if case == "missing package":
        served = None
    elif case == "altered package":
        served = DEB[:-1] + bytes([DEB[-1] ^ 1])
    elif case == "resized package":
        served = DEB + b"\n"
    elif case == "file not in package":
        files = {"usr/share/sounds/sf2/Other.sf2": sha(FONT_BYTES)}
    elif case == "altered file":
        files = {FONT: "0" * 64}
    elif case == "not a package":
        served = b"<html>not found</html>"
        pinned = package(served)
    with fx.MirrorServer({f"/{POOL}": served} if served is not None else {}) as server:
        monkeypatch.setenv(debian.MIRROR_ENV, server.url)
        with pytest.raises(SGNError, match=match) as err:
            fetch_deb_files(pinned, files, tmp_path / "fonts", "a test bank", progress=False)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "fonts").exists()
