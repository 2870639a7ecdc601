"""Hostile input, round two (issue 20): one parametrised test per family.

Every case: exit status 2 and one line (or one :class:`SGNError`), its inputs unchanged
byte for byte, nothing written, no child left running.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from sgn.cli import main
from sgn.utils import SGNError

REPO = Path(__file__).resolve().parent.parent


def files(*roots: Path) -> dict[Path, str]:
    """Every file under ``roots`` with its sha256."""
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for root in roots for p in sorted(root.rglob("*"))
            if p.is_file()}


def refused(capsys, argv: list[str], fragment: str, *untouched: Path) -> None:
    """``sgn ARGV`` exits 2 with one line holding ``fragment``, and every file under ``untouched`` is unchanged."""
    before = files(*untouched)
    status = main(["-q", *argv])
    lines = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(lines) == 1 and lines[0].startswith("sgn: error: "), lines
    assert fragment in lines[0], lines[0]
    assert files(*untouched) == before


@pytest.fixture
def data_copy(tiny_synth, tmp_path) -> Path:
    """A private copy of the tiny data set (its index.csv)."""
    shutil.copytree(tiny_synth.parent, tmp_path / "data")
    return tmp_path / "data" / "index.csv"


@pytest.fixture
def checkpoint_copy(smoke_checkpoint, tmp_path) -> Path:
    shutil.copytree(smoke_checkpoint.parent, tmp_path / "run")
    return tmp_path / "run" / "best.pt"


# ----------------------------------------------------------------- outputs never land on inputs

def test_train_keeps_a_best_pt_it_did_not_make(data_copy, tmp_path, capsys):
    run = tmp_path / "someones_model"
    run.mkdir()
    (run / "best.pt").write_bytes(b"weights")
    (run / "metrics.csv").write_text("step\n1\n")
    refused(capsys, ["train", "--config", "smoke", "--set", f"data.index={data_copy}", "--out", str(run)],
            "holds best.pt and metrics.csv but no last.pt", run, data_copy.parent)
    assert sorted(p.name for p in run.iterdir()) == ["best.pt", "metrics.csv"]


OUTPUT_ON_INPUT = {
    "mixtures onto a clip": (["data", "mixtures", "--index", "{index}", "--out", "{clip}"], "lies inside"),
    "ensemble mixtures onto a clip": (["data", "mixtures", "--index", "{index}", "--mode", "ensemble",
                                       "--count", "2", "--segment-samples", "4096", "--out", "{clip}"], "lies inside"),
    "mixtures into the data set": (["data", "mixtures", "--index", "{index}", "--out", "{data}/list.csv"], "lies inside"),
    "evaluate onto a clip": (["evaluate", "--method", "irm", "--mixtures", "{list}", "--n-fft", "254", "--hop", "64",
                              "--out", "{listed_clip}"], "is also an input"),
    "export into the checkpoint's folder": (["export", "--checkpoint", "{run}/model.onnx", "--out", "{run}"],
                                            "is also an input"),
    "export of a model.json": (["export", "--checkpoint", "{run}/model.json", "--out", "{run}"], "is also an input"),
    "train inside the data set": (["train", "--config", "smoke", "--set", "data.index={index}", "--out", "{data}/run"],
                                  "lies inside"),
    "notebooks onto their sources": (["notebooks", "--out", "{nb}", "--dir", "{nb}"], "lies inside"),
    "notebooks around their sources": (["notebooks", "--out", "{tmp}", "--dir", "{nb}"], "holds the source notebooks"),
}


@pytest.mark.parametrize("case", list(OUTPUT_ON_INPUT))
def test_no_output_lands_on_or_in_an_input(case, data_copy, checkpoint_copy, tmp_path, capsys):
    from sgn.data import make_mixture_list, read_index, write_mixture_list

    run = checkpoint_copy.parent
    shutil.copy(checkpoint_copy, run / "model.onnx")
    shutil.copy(checkpoint_copy, run / "model.json")
    (tmp_path / "nb").mkdir()
    shutil.copy(REPO / "notebooks" / "chapters.yaml", tmp_path / "nb")
    lists = tmp_path / "lists"
    frame = make_mixture_list(read_index(data_copy), "test_seen", count=2, segment_samples=4096)
    mixture_list = write_mixture_list(frame, lists / "test.csv")
    clip = data_copy.parent / read_index(data_copy)["path"].iloc[0]
    argv, fragment = OUTPUT_ON_INPUT[case]
    listed_clip = frame["path"].iloc[0]  # absolute
    values = {"index": data_copy, "clip": clip, "listed_clip": listed_clip, "data": data_copy.parent,
              "list": mixture_list, "run": run,
              "nb": tmp_path / "nb", "tmp": tmp_path}
    refused(capsys, [a.format(**values) for a in argv], fragment, data_copy.parent, run, lists, tmp_path / "nb")


# ----------------------------------------------------------------- counts and sizes bounded where they enter

BOUNDS = {
    "mixtures --count huge": (["data", "mixtures", "--index", "{index}", "--count", "100000000", "--out", "{out}"],
                              "count: expected a whole number in 1..100000"),
    "ensemble --count huge": (["data", "mixtures", "--index", "{index}", "--mode", "ensemble", "--count",
                               "100000000", "--out", "{out}"], "count: expected a whole number in 1..100000"),
    "mixtures --segment-samples huge": (["data", "mixtures", "--index", "{index}", "--segment-samples",
                                         "99999999999", "--out", "{out}"], "segment_samples: expected a whole number"),
    "evaluate --hop 1": (["evaluate", "--method", "irm", "--mixtures", "{list}", "--n-fft", "8192", "--hop", "1",
                          "--out", "{out}"], "hop: got 1; expected a whole number of samples in 512..8192"),
    "evaluate --batch-size 20 digits": (["evaluate", "--method", "irm", "--mixtures", "{list}", "--batch-size",
                                         "1" * 20, "--out", "{out}"], "expected a whole number (ASCII digits)"),
    "synth ensembles past the cap": (["data", "synth", "--out", "{out}", "--seconds", "600", "--ensembles", "1000"],
                                     "(solo clips and ensemble parts)"),
    "synth --seed superscript": (["data", "synth", "--out", "{out}", "--seed", "²"], "ASCII digits"),
    "train extreme segment": (["train", "--config", "smoke", "--set", "data.index={index}", "--set",
                               "data.segment_samples=4194304", "--set", "model.hop=1", "--out", "{out}"], "model.hop"),
}


@pytest.mark.parametrize("case", list(BOUNDS))
def test_counts_and_sizes_are_bounded(case, tiny_synth, tiny_test_list, tmp_path, capsys):
    argv, fragment = BOUNDS[case]
    values = {"index": tiny_synth, "list": tiny_test_list, "out": tmp_path / "out"}
    refused(capsys, [a.format(**values) for a in argv], fragment, tiny_synth.parent, tiny_test_list.parent)
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------- thread counts: strict, bounded

@pytest.mark.parametrize("where", ["env", "flag"])
@pytest.mark.parametrize("text", ["100000", "²", "1" * 20, "0", "-1", "four", " ", "1.5"])
def test_thread_counts_are_strict_and_bounded(where, text, tiny_synth, tmp_path, capsys, monkeypatch):
    argv = ["data", "mixtures", "--index", str(tiny_synth), "--out", str(tmp_path / "out.csv")]
    if where == "env":
        monkeypatch.setenv("SGN_THREADS", text)
    else:
        argv = ["--threads", text, *argv]
    refused(capsys, argv, f"expected a whole number of threads in 1..{os.cpu_count()}", tiny_synth.parent)
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------- native code never takes the process down

def _damaged_soundfont(tmp_path: Path, seed: int) -> Path:
    """TimGM6mb with random bytes written into its pdta lists (three of five such files crashed tinysoundfont)."""
    from sgn.synthmusic import default_soundfont_path
    from sgn.synthmusic.sfcheck import _chunks

    source = default_soundfont_path()
    font = bytearray(source.read_bytes())
    with open(source, "rb") as f:
        top = _chunks(f, 12, len(font), "x")
    start, size = top["pdta"]
    rng = np.random.default_rng(seed)
    for at in rng.integers(start, start + size, 512):  # 512 bytes anywhere in the lists
        font[at] = int(rng.integers(0, 256))
    path = tmp_path / f"damaged_{seed}.sf2"
    path.write_bytes(bytes(font))
    return path


@pytest.mark.parametrize("seed", range(5))
def test_a_damaged_soundfont_is_one_line_not_a_crash(seed, tmp_path):
    font = _damaged_soundfont(tmp_path, seed)
    before = files(tmp_path)
    done = subprocess.run([sys.executable, "-m", "sgn", "-q", "data", "synth", "--out", str(tmp_path / "out"),
                           "--soundfont", str(font), "--clips-per-class", "5", "--seconds", "1", "--classes",
                           "flute,tuba", "--ensembles", "0"], capture_output=True, text=True, timeout=300)
    errors = [line for line in done.stderr.splitlines() if line.startswith("sgn: error:")]
    assert "Traceback" not in done.stderr
    if done.returncode == 0:  # the damage missed everything the reader uses: a complete, valid set
        assert (tmp_path / "out" / "index.csv").is_file() and not errors
        return
    assert done.returncode == 2 and len(errors) == 1 and str(font) in errors[0], (done.returncode, done.stderr[-500:])
    assert files(tmp_path) == before


def test_a_crashing_worker_is_one_line_naming_the_file(tmp_path, monkeypatch):
    """A worker killed by a signal (what a segfault in the synthesizer does) ends the run in one line."""
    from concurrent.futures import Future

    from sgn.workers import watched, worker_pool

    with worker_pool(1) as pool:
        futures: dict[Future, str] = {pool.submit(abs, -1): "first.sf2"}
        futures[pool.submit(_segfault)] = "crashing.sf2"
        with pytest.raises(SGNError, match=r"crashing.sf2.*: a worker died rendering \(killed by a signal"):
            list(watched(pool, futures, 60, "rendering"))


def _segfault() -> None:
    import signal

    os.kill(os.getpid(), signal.SIGSEGV)


def test_a_hanging_worker_is_stopped_in_one_line():
    import time
    from concurrent.futures import Future

    from sgn.workers import watched, worker_pool

    started = time.perf_counter()
    with worker_pool(1) as pool:
        futures: dict[Future, str] = {pool.submit(time.sleep, 600): "hanging.sf3"}
        with pytest.raises(SGNError, match=r"hanging.sf3: no progress reading for 1 s; stopped"):
            list(watched(pool, futures, 1, "reading"))
    assert time.perf_counter() - started < 60  # the hung worker was killed, not waited for


# ----------------------------------------------------------------- tracebacks that were ordinary input

def test_a_part_without_notes_is_not_a_traceback(tmp_path):
    from sgn.synthmusic.ensembles import compose_frame, compose_part
    from sgn.synthmusic.scores import INSTRUMENTS

    # the case of `sgn data synth --clips-per-class 4 --seconds 3 --seed 2`: every chosen onset after the end
    rng = np.random.default_rng(0)
    frame = compose_frame(3.0, rng)
    frame = dataclasses.replace(frame, onsets=(0.0, 50.0, 60.0))
    for seed in range(20):
        score = compose_part(INSTRUMENTS["flute"], list(range(60, 90)), frame, 3.0, np.random.default_rng(seed))
        assert score.notes and score.notes[0].onset < 3.0


@pytest.mark.parametrize("case", ["missing index", "dangling out", "looping out"])
def test_train_refuses_bad_paths_in_one_line(case, tiny_synth, tmp_path, capsys):
    index, out = tiny_synth, tmp_path / "run"
    if case == "missing index":
        index = tmp_path / "nowhere" / "index.csv"
    elif case == "dangling out":
        out.symlink_to(tmp_path / "missing")
    else:
        out.symlink_to(out)
    fragment = "not found" if case == "missing index" else "dangling or looping symlink"
    refused(capsys, ["train", "--config", "smoke", "--set", f"data.index={index}", "--out", str(out)], fragment)
    assert [p.name for p in tmp_path.iterdir()] == ([] if case == "missing index" else ["run"])


@pytest.mark.parametrize("argv,fragment", [
    (["data", "synth", "--out", "{out}", "--banks", ",", "--held-out-bank", "none"], "banks: expected a list of one or more"),
    (["data", "mixtures", "--index", "{noens}", "--mode", "ensemble", "--out", "{out}"], "no 'piece' column"),
    (["data", "mixtures", "--index", "{repeated}", "--mode", "ensemble", "--segment-samples", "4096", "--out",
      "{out}"], "has two parts of one class"),
])
def test_data_commands_refuse_in_one_line(argv, fragment, data_copy, tmp_path, capsys):
    index = pd.read_csv(data_copy)
    index.drop(columns="piece").to_csv(data_copy.parent / "noens.csv", index=False)
    piece = index[index["piece"].notna() & (index["split"] == "test_seen")]
    first = piece[piece["piece"] == piece["piece"].iloc[0]]
    index.loc[first.index[1], "class"] = first["class"].iloc[0]  # two parts of one class
    index.to_csv(data_copy.parent / "repeated.csv", index=False)
    values = {"out": tmp_path / "out" / "x.csv", "noens": data_copy.parent / "noens.csv",
              "repeated": data_copy.parent / "repeated.csv"}
    refused(capsys, [a.format(**values) for a in argv], fragment, data_copy.parent)
    assert not (tmp_path / "out").exists()


def test_export_writes_nothing_for_a_checkpoint_it_cannot_describe(checkpoint_copy, tmp_path, capsys):
    import torch

    state = torch.load(checkpoint_copy, weights_only=True)
    state["fingerprint"] = {"code": {"a": torch.zeros(2)}}  # a dict, but not a JSON record
    torch.save(state, checkpoint_copy)
    refused(capsys, ["export", "--checkpoint", str(checkpoint_copy), "--out", str(tmp_path / "export")],
            "not a JSON record", checkpoint_copy.parent)
    assert not (tmp_path / "export").exists()


# ----------------------------------------------------------------- the Python API: SGNError in one sentence

def _api_cases(checkpoint: Path, mixtures: Path, index: Path, tmp: Path) -> dict:
    from sgn.evaluate import evaluate
    from sgn.lab.study import CLASS_TOKEN_VARIANTS, pick_variants, run_study, study_intervals
    from sgn.separate import Separator

    def study(variants=None, seeds=(0,), mixtures=mixtures):
        return lambda: run_study({"full": {}} if variants is None else variants, seeds, config="smoke",
                                 mixtures=mixtures, runs_dir=tmp / "runs", data_index=index, progress=False)

    separator = Separator.from_checkpoint(checkpoint, device="cpu")
    return {
        "run_study variants list": (study(["full"]), "variants: expected {name: {config key: value}}"),
        "run_study variants str": (study("full"), "variants: expected"),
        "run_study variants empty": (study({}), "at least one variant"),
        "run_study seeds str": (study(seeds="01"), "seeds: expected a list of one or more whole numbers"),
        "run_study seeds float": (study(seeds=[0.7]), "seeds: expected"),
        "run_study seeds letters": (study(seeds=["a"]), "seeds: expected"),
        "run_study missing list": (study(mixtures=tmp / "missing.csv"), "missing.csv"),
        "study_intervals not a table": (lambda: study_intervals([1, 2]), "expected run_study's table"),
        "pick_variants a string": (lambda: pick_variants(CLASS_TOKEN_VARIANTS, "full"), "expected a list of variant names"),
        "from_checkpoint int": (lambda: Separator.from_checkpoint(5), "checkpoint: expected a file path, got 5"),
        "separate strings": (lambda: separator.separate(np.array(["a", "b"] * 4096), 11025, ["flute"]),
                             "expected an array of real numbers"),
        "separate [L, 9]": (lambda: separator.separate(np.zeros((8192, 9)), 11025, ["flute"]), "has 9 channels"),
        "separate classes bytes": (lambda: separator.separate(np.random.default_rng(0).normal(size=8192), 11025, b"flute"),
                                   "classes: expected a class name or a list"),
        "separate_file int": (lambda: separator.separate_file(5, tmp / "out"), "mixture: expected a file path"),
        "evaluate mixtures int": (lambda: evaluate(5, method="irm"), "mixtures: expected a file path"),
        "evaluate unknown method": (lambda: evaluate(mixtures, method="oracle"), "method: unknown method 'oracle'"),
        "evaluate checkpoint list": (lambda: evaluate(mixtures, checkpoint=[checkpoint]), "checkpoint: expected a file path"),
    }


API_CASES = [
    "run_study variants list", "run_study variants str", "run_study variants empty", "run_study seeds str",
    "run_study seeds float", "run_study seeds letters", "run_study missing list", "study_intervals not a table",
    "pick_variants a string", "from_checkpoint int", "separate strings", "separate [L, 9]", "separate classes bytes",
    "separate_file int", "evaluate mixtures int", "evaluate unknown method", "evaluate checkpoint list",
]


@pytest.mark.parametrize("case", API_CASES)
def test_api_entry_points_raise_one_sentence(case, smoke_checkpoint, tiny_test_list, tiny_synth, tmp_path):
    call, fragment = _api_cases(smoke_checkpoint, tiny_test_list, tiny_synth, tmp_path)[case]
    with pytest.raises(SGNError) as info:
        call()
    message = str(info.value)
    assert fragment in message and "\n" not in message and len(message) < 400, message
    assert not (tmp_path / "runs").exists() and not (tmp_path / "out").exists()  # nothing trained or written


# ----------------------------------------------------------------- messages say what is wrong

def test_messages_name_the_real_problem(tmp_path):
    from sgn.audio import audio_info, check_rate
    from sgn.device import resolve_device

    assert check_rate(11025.0, "sample_rate") == 11025  # a whole number of Hz, written as a float
    with pytest.raises(SGNError, match="sample rate 11025.5 is not a whole number of Hz"):
        check_rate(11025.5, "sample_rate")
    with pytest.raises(SGNError, match="device: expected one of .* got 'tpu'"):
        resolve_device("tpu")
    junk = tmp_path / "song.mp3"
    junk.write_bytes(np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8).tobytes())
    with pytest.raises(SGNError, match="song.mp3: not a readable audio file \\(its contents are not audio"):
        audio_info(junk)


def test_same_named_stems_are_impossible(smoke_checkpoint, tmp_path):
    """Each class's stem is staged under its position, so no class's staging file is another's stem."""
    from sgn.separate import _write_stems

    names = ["a", "a.f32", "A.b"]
    blocks = iter([np.stack([np.full(64, v, np.float32) for v in (0.1, 0.2, 0.3)])])
    staging = tmp_path / "staging"
    staging.mkdir()
    stems = _write_stems(blocks, names, 11025, staging, tmp_path / "mix.wav")
    for value, name in zip((0.1, 0.2, 0.3), names):
        assert np.allclose(sf.read(stems[name])[0], value, atol=1e-4)
    from sgn.utils import check_class_names

    with pytest.raises(SGNError, match="'Flute' and 'flute' differ only in case"):
        check_class_names(["flute", "Flute"], "classes")


# ----------------------------------------------------------------- YAML: a key given twice is refused

@pytest.mark.parametrize("command", ["train", "sweep"])
def test_duplicate_yaml_keys_are_refused(command, tiny_synth, tmp_path, capsys):
    if command == "train":
        path = tmp_path / "config.yaml"
        path.write_text((REPO / "sgn" / "configs" / "smoke.yaml").read_text() + "optim:\n  lr: 0.5\n")
        argv = ["train", "--config", str(path), "--set", f"data.index={tiny_synth}", "--out", str(tmp_path / "run")]
        fragment = "key 'optim' appears twice in one mapping"
    else:
        path = tmp_path / "grid.yaml"
        path.write_text("notebook: notebooks/02_train.ipynb\ngrid:\n  steps: [1, 2]\n  steps: [3]\n")
        argv = ["sweep", str(path), "--out", str(tmp_path / "sweep")]
        fragment = "key 'steps' appears twice in one mapping (line 4)"
    refused(capsys, argv, fragment, path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


def test_every_shipped_soundfont_passes_the_structure_check():
    """The check refuses damage, not the banks we render with (MuseScore_General_Lite.sf3 omits a pad byte)."""
    from sgn.synthmusic import default_soundfont_path, find_banks
    from sgn.synthmusic.sfcheck import check_soundfont

    for path in [*find_banks(None).values(), default_soundfont_path()]:
        check_soundfont(path)
