"""End-to-end tests of `sgn data download`, all against an HTTP server on 127.0.0.1.

Every downloader runs against :class:`download_fixtures.MirrorServer` through
``--mirror``, on tiny files built here in the true formats (a FUSS tar.gz, a MUSDB18
zip of five-stream mp4 files, MUSIC and VGG-Sound id lists whose videos yt-dlp
fetches from the same server). Nothing touches any other address: in this process a
guard fails any other name lookup or connection, and the yt-dlp subprocesses are only
given loopback URLs. Each prepared set then trains a smoke-config SGN for two steps.
"""

from __future__ import annotations

import collections
import contextlib
import io
import json
import socket
import tarfile
from pathlib import Path

import download_fixtures as fx
import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from sgn.cli import main
from sgn.data import read_index
from sgn.download import http, youtube
from sgn.download.archive import extract
from sgn.download.manifest import Checksum, read_manifest, shipped_manifest
from sgn.download.prepare import hash_split
from sgn.download.youtube import Listed, Video, cap_per_class
from sgn.utils import SGNError

FUSS_PATH = "/records/3694384/files/FUSS_ssdata_reverb.tar.gz"
MUSDB_PATH = "/records/1117372/files/musdb18.zip"
PREVIEW_PATH = "/sigsep/sigsep-mus-db/releases/download/v0.4.0/MUSDB18-7-STEMS.zip"
MUSIC_SOLO_PATH = "/roudimit/MUSIC_dataset/master/MUSIC_solo_videos.json"
MUSIC_DUET_PATH = "/roudimit/MUSIC_dataset/master/MUSIC_duet_videos.json"
VGGSOUND_PATH = "/hche11/VGGSound/master/data/vggsound.csv"


def sgn_data_download(*argv: str) -> tuple[int, str]:
    """Run ``sgn data download ARGV`` through the real CLI; returns (exit status, last error line)."""
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        status = main(["-q", "data", "download", *argv])
    lines = [line for line in stderr.getvalue().splitlines() if line.startswith("sgn: error:")]
    return status, lines[-1] if lines else ""


LOOPBACK = {"127.0.0.1", "localhost", "::1"}


@pytest.fixture(scope="module", autouse=True)
def loopback_only_and_no_retry_waits():
    """Fail any lookup or connection to an address but 127.0.0.1; retry at once (no back-off needed)."""
    real_getaddrinfo, real_connect = socket.getaddrinfo, socket.socket.connect

    def getaddrinfo(host, *args, **kwargs):
        assert host in LOOPBACK, f"a test tried to resolve {host!r}"
        return real_getaddrinfo(host, *args, **kwargs)

    def connect(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            assert address[0] in LOOPBACK, f"a test tried to connect to {address!r}"
        return real_connect(sock, address)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket, "getaddrinfo", getaddrinfo)
        patch.setattr(socket.socket, "connect", connect)
        patch.setattr(http, "RETRY_DELAYS_S", (0.0, 0.0))
        yield


def zenodo_record(name: str, data: bytes) -> bytes:
    return json.dumps({"files": [{"key": name, "size": len(data), "checksum": f"md5:{fx.md5(data)}"}]}).encode()


def no_partials(root: Path) -> bool:
    return not any(p.name.startswith(".") and ".partial-" in p.name for p in root.iterdir())


# ---------------------------------------------------------------- building blocks


def test_mirror_url_replaces_scheme_and_host_only():
    url = "https://zenodo.org/records/1/files/a.zip?download=1"
    assert http.mirror_url(url, None) == url
    assert http.mirror_url(url, "http://127.0.0.1:8000") == "http://127.0.0.1:8000/records/1/files/a.zip?download=1"
    assert http.mirror_url("https://www.youtube.com/watch?v=-x_1", "http://127.0.0.1:9/m/") == (
        "http://127.0.0.1:9/m/watch?v=-x_1"
    )
    with pytest.raises(SGNError, match="--mirror"):
        http.mirror_url(url, "127.0.0.1:8000")


def test_manifest_reads_md5sum_and_sha256sum_lines(tmp_path):
    md5, sha = "a" * 32, "B" * 64
    path = tmp_path / "sums.md5"
    path.write_text(f"# comment\n\n{md5}  a.zip\n{sha} *b c.tar.gz\n")
    assert read_manifest(path) == {"a.zip": Checksum("md5", md5), "b c.tar.gz": Checksum("sha256", sha.lower())}
    path.write_text(f"{md5}  a.zip\n{sha}  b.zip\n{md5} one-space.zip\n")
    with pytest.raises(SGNError, match=r"sums\.md5:3: not a checksum line"):
        read_manifest(path)


def test_shipped_manifest_pins_musdb18():
    assert shipped_manifest("musdb18")["musdb18.zip"] == Checksum("md5", "af06762477334799bfc5abf237648207")


def test_hash_split_depends_on_the_keys_only_and_holds_out_at_least_one():
    keys = [f"video{k}" for k in range(40)]
    splits = hash_split(keys, {"test": 0.1, "val": 0.1})
    assert splits == hash_split(list(reversed(keys)), {"test": 0.1, "val": 0.1})
    assert sorted(collections.Counter(splits.values()).items()) == [("test", 4), ("train", 32), ("val", 4)]
    assert set(hash_split(keys[:3], {"test": 0.1, "val": 0.1}).values()) == {"test", "val", "train"}
    assert set(hash_split(keys[:2], {"test": 0.1, "val": 0.1}).values()) == {"train"}  # too few to hold out


def test_cap_per_class_keeps_the_first_videos_of_each_class_and_split():
    listed = [Listed(Video(f"{label}/{k}", str(k)), label, split)
              for label in ("a", "b") for split in ("train", "val") for k in range(5)]
    kept = cap_per_class(listed, 2)
    assert collections.Counter((item.label, item.split) for item in kept) == {
        ("a", "train"): 2, ("a", "val"): 2, ("b", "train"): 2, ("b", "val"): 2}
    assert cap_per_class(listed, 2) == kept and cap_per_class(listed, None) == listed


def test_missing_yt_dlp_is_one_error_before_any_download(tmp_path, monkeypatch):
    monkeypatch.setattr(youtube, "find_spec", lambda name: None)
    status, error = sgn_data_download("music", "--root", str(tmp_path))
    assert status == 2 and "yt-dlp is not installed" in error
    assert not any(tmp_path.iterdir())


def _tar_member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    return info


@pytest.mark.parametrize("members, why", [
    ([_tar_member("ok.txt"), _tar_member("../escaped.txt")], "climbs out"),
    ([_tar_member("/tmp/sgn-absolute.txt")], "absolute path"),
    ([_tar_member("link", tarfile.SYMTYPE, "../../outside")], "points outside"),
    ([_tar_member("link", tarfile.SYMTYPE, "/etc")], "absolute path"),
    ([_tar_member("hard", tarfile.LNKTYPE, "../outside")], "points outside"),
    ([_tar_member("dev", tarfile.CHRTYPE)], "not a file"),
])
def test_unsafe_tar_members_are_refused_before_anything_is_written(tmp_path, members, why):
    archive = tmp_path / "evil.tar.gz"
    archive.write_bytes(fx.tar_with(members))
    target = tmp_path / "deep" / "target"
    with pytest.raises(SGNError, match=why):
        extract(archive, target)
    assert list(target.iterdir()) == []
    assert not (tmp_path / "deep" / "escaped.txt").exists()


def test_unsafe_zip_member_is_refused(tmp_path):
    import zipfile

    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("fine.txt", "x")
        zf.writestr("../escaped.txt", "x")
    with pytest.raises(SGNError, match="climbs out"):
        extract(archive, tmp_path / "target")
    assert not (tmp_path / "escaped.txt").exists()


def test_links_inside_the_target_are_unpacked(tmp_path):
    archive = tmp_path / "ok.tar.gz"
    archive.write_bytes(fx.tar_with([_tar_member("d/file.txt"), _tar_member("d/link", tarfile.SYMTYPE, "file.txt")]))
    root = extract(archive, tmp_path / "target")
    assert (root / "d" / "link").is_symlink() and (root / "d" / "link").read_bytes() == b"x"


def test_fetch_resumes_a_part_file_and_restarts_when_range_is_ignored(tmp_path):
    data = bytes(range(256)) * 400
    with fx.MirrorServer({"/f.bin": data, "/g.bin": data}) as server:
        dest = tmp_path / "f.bin"
        (tmp_path / "f.bin.part").write_bytes(data[:1000])  # a download killed at byte 1000
        http.fetch(f"{server.url}/f.bin", dest, size=len(data), checksum=Checksum("md5", fx.md5(data)), progress=False)
        assert dest.read_bytes() == data and ("/f.bin", "bytes=1000-") in server.requests

        server.ignore_range.add("/g.bin")
        (tmp_path / "g.bin.part").write_bytes(b"garbage" * 10)
        http.fetch(f"{server.url}/g.bin", tmp_path / "g.bin", checksum=Checksum("md5", fx.md5(data)), progress=False)
        assert (tmp_path / "g.bin").read_bytes() == data


# ---------------------------------------------------------------- FUSS


@pytest.fixture(scope="module")
def fuss_prepared(tmp_path_factory):
    """FUSS (reverb) prepared from a fixture archive whose first transfer is cut half-way."""
    data = fx.fuss_archive("ssdata_reverb")
    root = tmp_path_factory.mktemp("fuss_root")
    files = {FUSS_PATH: data, "/api/records/3694384": zenodo_record("FUSS_ssdata_reverb.tar.gz", data)}
    with fx.MirrorServer(files) as server:
        server.drop_once.add(FUSS_PATH)
        status, error = sgn_data_download("fuss", "--root", str(root), "--mirror", server.url, "--jobs", "2")
        assert status == 0, error
        first = list(server.requests)
        # A second run finds the prepared set and fetches nothing but nothing.
        assert sgn_data_download("fuss", "--root", str(root), "--mirror", server.url)[0] == 0
        second = server.requests[len(first):]
    return root, first, second


def test_fuss_downloads_resumes_verifies_and_prepares(fuss_prepared):
    root, requests, rerun_requests = fuss_prepared
    archive_requests = [r for r in requests if r[0].startswith(FUSS_PATH)]
    assert archive_requests[0][1] is None and archive_requests[1][1].startswith("bytes=")  # resumed
    index = read_index(root / "fuss_reverb" / "index.csv")
    assert set(index["class"]) == {"background", "foreground"}
    assert set(index["split"]) == {"train", "val", "test"}
    assert (index["sample_rate"] == 11025).all() and (index["num_samples"] == 11025).all()
    assert (root / "fuss_reverb" / index["mixture"].iloc[0]).is_file()
    record = json.loads((root / "fuss_reverb" / "prepare.json").read_text())
    assert record["sources"]["FUSS_ssdata_reverb.tar.gz"]["source"] == "Zenodo record 3694384"
    assert (root / "downloads" / "FUSS_ssdata_reverb.tar.gz").is_file() and no_partials(root)
    assert not any(path.startswith(FUSS_PATH) for path, _ in rerun_requests)


def test_wrong_checksum_moves_the_file_aside_and_prepares_nothing(tmp_path):
    data = fx.fuss_archive("ssdata")
    sums = tmp_path / "sums.md5"
    sums.write_text(f"{'0' * 32}  FUSS_ssdata.tar.gz\n")
    with fx.MirrorServer({"/records/3694384/files/FUSS_ssdata.tar.gz": data}) as server:
        status, error = sgn_data_download("fuss", "--root", str(tmp_path / "root"), "--subset", "dry",
                                          "--mirror", server.url, "--checksums", str(sums))
    assert status == 2 and "md5" in error and "moved the file aside" in error
    assert (tmp_path / "root" / "downloads" / "FUSS_ssdata.tar.gz.bad").read_bytes() == data
    assert not (tmp_path / "root" / "downloads" / "FUSS_ssdata.tar.gz").exists()
    assert not (tmp_path / "root" / "fuss_dry").exists() and no_partials(tmp_path / "root")


def test_shipped_manifest_rejects_a_file_that_is_not_the_official_one(tmp_path):
    fake = b"PK\x05\x06" + bytes(18)  # an empty zip: not MUSDB18-7-STEMS.zip
    with fx.MirrorServer({PREVIEW_PATH: fake}) as server:
        status, error = sgn_data_download("musdb18", "--subset", "preview", "--root", str(tmp_path),
                                          "--mirror", server.url)
    assert status == 2 and "expected 147209385" in error
    assert (tmp_path / "downloads" / "MUSDB18-7-STEMS.zip.bad").exists()


def test_corrupt_archive_is_reported_and_prepares_nothing(tmp_path):
    data = bytearray(fx.fuss_archive("ssdata"))
    data[len(data) // 2:len(data) // 2 + 64] = bytes(64)  # damage the gzip stream
    sums = tmp_path / "sums.md5"
    sums.write_text(f"{fx.md5(bytes(data))}  FUSS_ssdata.tar.gz\n")  # the damaged file is what is "published"
    with fx.MirrorServer({"/records/3694384/files/FUSS_ssdata.tar.gz": bytes(data)}) as server:
        status, error = sgn_data_download("fuss", "--subset", "dry", "--root", str(tmp_path / "root"),
                                          "--mirror", server.url, "--checksums", str(sums))
    assert status == 2 and "corrupt archive" in error
    assert not (tmp_path / "root" / "fuss_dry").exists() and no_partials(tmp_path / "root")


def test_archive_member_escaping_the_target_is_refused(tmp_path):
    data = fx.tar_with([_tar_member("ssdata/train_example_list.txt"), _tar_member("ssdata/../../../escaped.txt")])
    sums = tmp_path / "sums.md5"
    sums.write_text(f"{fx.md5(data)}  FUSS_ssdata.tar.gz\n")
    with fx.MirrorServer({"/records/3694384/files/FUSS_ssdata.tar.gz": data}) as server:
        status, error = sgn_data_download("fuss", "--subset", "dry", "--root", str(tmp_path / "root"),
                                          "--mirror", server.url, "--checksums", str(sums))
    assert status == 2 and "refusing to unpack member" in error
    assert not any(tmp_path.rglob("escaped.txt"))
    assert not (tmp_path / "root" / "fuss_dry").exists() and no_partials(tmp_path / "root")


def test_unreachable_mirror_is_one_error(tmp_path):
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    status, error = sgn_data_download("fuss", "--root", str(tmp_path), "--mirror", f"http://127.0.0.1:{port}")
    assert status == 2 and "cannot reach 127.0.0.1" in error


def test_user_errors_are_one_line(tmp_path):
    assert "unknown data set 'musicx'" in sgn_data_download("musicx", "--root", str(tmp_path))[1]
    assert "no subset 'wet'" in sgn_data_download("fuss", "--root", str(tmp_path), "--subset", "wet")[1]
    bad = tmp_path / "bad.md5"
    bad.write_text("d41d8cd98f00b204e9800998ecf8427e musdb18.zip\n")  # one space: not md5sum's format
    status, error = sgn_data_download("musdb18", "--root", str(tmp_path), "--checksums", str(bad), "--dry-run")
    assert status == 2 and "bad.md5:1: not a checksum line" in error and "\n" not in error


def test_dry_run_prints_urls_and_sizes_and_fetches_nothing(tmp_path, capsys):
    assert sgn_data_download("musdb18", "--subset", "preview", "--root", str(tmp_path), "--dry-run")[0] == 0
    out = capsys.readouterr().out
    assert "releases/download/v0.4.0/MUSDB18-7-STEMS.zip" in out and "147.2 MB" in out
    assert not (tmp_path / "downloads").exists()


# ---------------------------------------------------------------- MUSDB18


@pytest.fixture(scope="module")
def musdb_prepared(tmp_path_factory):
    """MUSDB18 (full) prepared from a zip of three real five-stream STEMS files."""
    work = tmp_path_factory.mktemp("musdb_build")
    data = fx.musdb_archive(work)
    sums = work / "sums.md5"
    sums.write_text(f"{fx.md5(data)}  musdb18.zip\n")
    root = tmp_path_factory.mktemp("musdb_root")
    with fx.MirrorServer({MUSDB_PATH: data}) as server:
        status, error = sgn_data_download("musdb18", "--root", str(root), "--mirror", server.url,
                                          "--checksums", str(sums), "--clip-seconds", "0.5")
    assert status == 0, error
    return root


def test_musdb18_decodes_each_stem_stream_into_its_class(musdb_prepared):
    index = read_index(musdb_prepared / "musdb18" / "index.csv")
    assert set(index["class"]) == {"drums", "bass", "other", "vocals"}
    assert set(index["split"]) == {"train", "val", "test"}
    assert set(index[index["split"] == "val"]["track"]) == {"Actions - One Minute Smile"}
    for track_number, track in enumerate(t for tracks in fx.MUSDB_TRACKS.values() for t in tracks):
        for stem_number, stem in enumerate(("drums", "bass", "other", "vocals")):
            row = index[(index["track"] == track) & (index["class"] == stem) & (index["segment"] == 0)].iloc[0]
            wave, rate = sf.read(row["abspath"])
            peak_hz = np.argmax(np.abs(np.fft.rfft(wave))) * rate / len(wave)
            assert abs(peak_hz - (220.0 * (stem_number + 1) + 10 * track_number)) < 5  # the right stream
            assert (musdb_prepared / "musdb18" / row["mixture"]).is_file()


# ---------------------------------------------------------------- MUSIC


MUSIC_SOLO = {"violin": ["vio-1", "vio_2", "-vio3"], "flute": ["flu1", "flu2", "flu3", "gone1"]}
MUSIC_DUET = {"flute violin": ["duo1"]}


@pytest.fixture(scope="module")
def music_prepared(tmp_path_factory):
    """MUSIC (solo and duet) fetched by yt-dlp from the loopback server; one video is gone."""
    work = tmp_path_factory.mktemp("music_build")
    files = {MUSIC_SOLO_PATH: fx.music_list(MUSIC_SOLO), MUSIC_DUET_PATH: fx.music_list(MUSIC_DUET)}
    for number, video in enumerate(v for ids in (*MUSIC_SOLO.values(), *MUSIC_DUET.values()) for v in ids):
        if not video.startswith("gone"):
            files[f"/videos/{video}.m4a"] = fx.encode_media(work / f"{video}.m4a", [300.0 + 60 * number], 1.5)
    root = tmp_path_factory.mktemp("music_root")
    with fx.MirrorServer(files) as server:
        args = ("music", "--root", str(root), "--mirror", server.url, "--subset", "solo,duet",
                "--clip-seconds", "0.5", "--sleep", "0", "--jobs", "2")
        status, error = sgn_data_download(*args)
        assert status == 0, error
        before = len(server.requests)
        assert sgn_data_download(*args)[0] == 0
        rerun = [path for path, _ in server.requests[before:] if path.startswith("/watch")]
    return root, rerun


def test_music_fetches_videos_and_records_the_missing_one(music_prepared):
    root, _ = music_prepared
    index = read_index(root / "music" / "index.csv")
    assert set(index["class"]) == {"violin", "flute"}
    assert set(index["video_id"]) == {"vio-1", "vio_2", "-vio3", "flu1", "flu2", "flu3"}
    for _, clips in index.groupby("class"):
        assert {"train", "val"} <= set(clips["split"])
    assert index.groupby("video_id")["split"].nunique().max() == 1  # a video's clips share its split
    assert (index["num_samples"] == round(0.5 * 11025)).all()
    missing = pd.read_csv(root / "music" / "missing.csv")
    assert list(missing["video_id"]) == ["gone1"] and "404" in missing["reason"].iloc[0]
    duets = read_index(root / "music" / "duets.csv")
    assert set(duets["class"]) == {"flute+violin"} and set(duets["split"]) == {"test"}
    record = json.loads((root / "music" / "prepare.json").read_text())
    assert record["status"] == "complete" and record["counts"]["videos_missing"] == 1


def test_music_rerun_only_retries_the_missing_video(music_prepared):
    _, rerun_requests = music_prepared
    assert rerun_requests == ["/watch?v=gone1"]


# ---------------------------------------------------------------- VGG-Sound


VGGSOUND_ROWS = [
    ("dogA", 1, "dog barking", "train"), ("dogB", 0, "dog barking", "train"), ("dogC", 1, "dog barking", "test"),
    ("spk1", 1, "male speech, man speaking", "train"), ("spk2", 0, "male speech, man speaking", "train"),
    ("gone", 30, "male speech, man speaking", "test"),
]


@pytest.fixture(scope="module")
def vggsound_prepared(tmp_path_factory):
    """VGG-Sound sections fetched by yt-dlp from the loopback server; one video is gone."""
    work = tmp_path_factory.mktemp("vggsound_build")
    files = {VGGSOUND_PATH: fx.vggsound_csv(VGGSOUND_ROWS)}
    for number, (video, *_) in enumerate(VGGSOUND_ROWS):
        if video != "gone":
            files[f"/videos/{video}.m4a"] = fx.encode_media(work / f"{video}.m4a", [300.0 + 70 * number], 2.0)
    root = tmp_path_factory.mktemp("vggsound_root")
    with fx.MirrorServer(files) as server:
        status, error = sgn_data_download("vggsound", "--root", str(root), "--mirror", server.url, "--sleep", "0")
    assert status == 0, error
    return root


def test_vggsound_fetches_sections_and_holds_out_val(vggsound_prepared):
    index = read_index(vggsound_prepared / "vggsound" / "index.csv")
    assert set(index["class"]) == {"dog_barking", "male_speech_man_speaking"}  # labels made safe file names
    for _, clips in index.groupby("class"):
        assert set(clips["split"]) >= {"train", "val"}
    starts = {video: start for video, start, *_ in VGGSOUND_ROWS}
    assert (index["offset_s"] == index["video_id"].map(starts)).all()
    # the section from the start second to the end of the 2-s video (AAC adds a frame or two)
    expected = 2.0 - index["offset_s"]
    assert ((index["duration_s"] > expected - 0.05) & (index["duration_s"] < expected + 0.1)).all()
    missing = pd.read_csv(vggsound_prepared / "vggsound" / "missing.csv")
    assert list(missing["video_id"]) == ["gone"] and list(missing["start_s"]) == [30]


# ---------------------------------------------------------------- training on every prepared set


@pytest.mark.parametrize("prepared, folder", [
    ("fuss_prepared", "fuss_reverb"), ("musdb_prepared", "musdb18"),
    ("music_prepared", "music"), ("vggsound_prepared", "vggsound"),
])
def test_smoke_training_runs_on_each_prepared_set(request, tmp_path, prepared, folder):
    import torch

    from sgn.config import apply_overrides, load_config
    from sgn.train import train

    # One thread: these steps are tiny, and on a busy 2-core machine two threads contend (5x slower).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    request.addfinalizer(lambda: torch.set_num_threads(threads))
    value = request.getfixturevalue(prepared)
    root = value[0] if isinstance(value, tuple) else value
    config = apply_overrides(load_config("smoke"), [
        f"data.index={root / folder / 'index.csv'}", "optim.max_steps=2", "eval_every=2",
        "data.segment_samples=4096", "data.val_mixtures=2", "optim.batch_size=2",
    ])
    history = train(config, tmp_path / "run", progress=False)
    assert history[-1]["step"] == 2 and np.isfinite(history[-1]["loss"])
    assert (tmp_path / "run" / "best.pt").is_file()
