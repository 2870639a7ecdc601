"""The shared guards every boundary uses: class names, output paths, staging of killed runs."""

import os
import subprocess
import sys

import pytest

from sgn.utils import (
    SGNError,
    atomic_path,
    atomic_write_text,
    check_class_names,
    check_output,
    child_path,
    remove_stale_staging,
    shorten,
    staged_dir,
)

HOSTILE_NAMES = ["../../escape_rel", "/tmp/abs", "a/b", "..", ".", "", "a\\b", "x..y", ".hidden", "tab\tname",
                 "new\nline", "a" * 65, "spa ce", "semi;colon", "nul\x00"]


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_class_names_that_could_name_another_file_are_refused(name):
    with pytest.raises(SGNError) as err:
        check_class_names(["violin", name], "ckpt.pt: classes")
    message = str(err.value)
    assert message.startswith("ckpt.pt: classes: class name") and "\n" not in message and len(message) < 300


@pytest.mark.parametrize("names", [5, "violin", None, [3], [["violin"]], ["violin", "violin"]])
def test_class_name_lists_of_the_wrong_shape_are_refused(names):
    with pytest.raises(SGNError, match="^index.csv: "):
        check_class_names(names, "index.csv")


def test_usual_class_names_pass():
    names = ["acoustic_guitar", "Bass-2", "sax+1", "v1.0", "a"]
    assert check_class_names(tuple(names), "x") == names


@pytest.mark.parametrize("name", ["../up.wav", "/abs.wav", "sub/x.wav", "..", "."])
def test_child_path_stays_in_its_folder(tmp_path, name):
    with pytest.raises(SGNError, match="outside this folder"):
        child_path(tmp_path, name)
    assert child_path(tmp_path, "violin.wav") == tmp_path / "violin.wav"


def test_check_output_refuses_bad_destinations(tmp_path):
    a_file = tmp_path / "list.csv"
    a_file.write_text("x\n")
    (tmp_path / "folder").mkdir()
    cases = [
        (dict(path=a_file, inputs=[a_file]), "is also an input"),
        (dict(path=tmp_path / "." / "list.csv", inputs=[a_file]), "is also an input"),
        (dict(path=tmp_path / "folder"), "is a folder; expected a file"),
        (dict(path=a_file, kind="dir"), "is an existing file; expected a folder"),
        (dict(path=a_file / "out.csv"), "is a file, so nothing can be written under it"),
        (dict(path=a_file / "deeper" / "out", kind="dir"), "is a file, so nothing can be written under it"),
    ]
    for kwargs, message in cases:
        with pytest.raises(SGNError, match=message):
            check_output(**kwargs)
    os.symlink(a_file, tmp_path / "link.csv")
    with pytest.raises(SGNError, match="is also an input"):
        check_output(tmp_path / "link.csv", inputs=[a_file])
    assert check_output(tmp_path / "new" / "out.csv", inputs=[a_file]) == tmp_path / "new" / "out.csv"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_check_output_refuses_an_unwritable_folder(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    with pytest.raises(SGNError, match="is not writable"):
        check_output(locked / "out.csv")


def test_shorten_never_echoes_a_huge_value():
    assert len(shorten("x" * 10**6)) <= 100 and shorten("ok") == "'ok'"
    assert len(shorten(list(range(10**5)))) <= 100


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_temporaries_of_killed_writers_are_removed_by_the_next_write(tmp_path):
    target = tmp_path / "results.csv"
    dead, alive = _dead_pid(), os.getpid()
    stale = tmp_path / f".results.csv.tmp-{dead}-abc.csv"
    live = tmp_path / f".results.csv.tmp-{alive}-def.csv"
    stale_dir = tmp_path / f".results.csv.partial-{dead}-xyz"
    other = tmp_path / f".other.csv.tmp-{dead}-abc.csv"
    for path in (stale, live, other):
        path.write_text("half")
    stale_dir.mkdir()
    atomic_write_text(target, "done\n")
    assert target.read_text() == "done\n"
    assert not stale.exists() and not stale_dir.exists()
    assert live.exists() and other.exists()  # a live writer's file, another target's file
    assert remove_stale_staging(tmp_path / "other.csv") == [other]


def test_atomic_path_keeps_the_old_file_on_failure(tmp_path):
    target = tmp_path / "good.txt"
    target.write_text("good")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash")
    assert target.read_text() == "good" and sorted(p.name for p in tmp_path.iterdir()) == ["good.txt"]


def test_staged_dir_appears_whole_or_not_at_all(tmp_path):
    with pytest.raises(RuntimeError):
        with staged_dir(tmp_path / "set") as partial:
            (partial / "a.wav").write_text("x")
            raise RuntimeError("crash")
    assert list(tmp_path.iterdir()) == []
    with staged_dir(tmp_path / "set") as partial:
        (partial / "a.wav").write_text("x")
    assert [p.name for p in (tmp_path / "set").iterdir()] == ["a.wav"]
