import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
from conftest import TINY_CLASSES

from sgn.audio import STFTSpec
from sgn.cli import main
from sgn.data import (
    INDEX_COLUMNS,
    MIXTURE_COLUMNS,
    FixedMixtureDataset,
    MixtureDataset,
    index_classes,
    make_mixture_list,
    parse_n_sources,
    read_index,
    read_mixture_list,
    read_segment,
    write_mixture_list,
)
from sgn.utils import SGNError

STFT = STFTSpec(254, 64)


def test_read_index(tiny_synth):
    index = read_index(tiny_synth)
    assert index_classes(index) == sorted(TINY_CLASSES)
    assert set(index["split"]) == {"train", "val", "test_seen", "val_unseen", "test_unseen"}
    assert (index["num_samples"] == round(1.5 * 11025)).all()


def test_read_index_errors(tmp_path, tiny_synth):
    with pytest.raises(SGNError, match="index file not found"):
        read_index(tmp_path / "none.csv")
    (tmp_path / "a.csv").write_text("path,class\nx.wav,cello\n")
    with pytest.raises(SGNError, match="missing columns"):
        read_index(tmp_path / "a.csv")
    (tmp_path / "b.csv").write_text("path,class,split,duration_s,sample_rate\nx.wav,cello,dev,1.0,11025\n")
    with pytest.raises(SGNError, match="row 2, column split: got 'dev'; expected one of train, val, test"):
        read_index(tmp_path / "b.csv")
    (tmp_path / "c.csv").write_text("path,class,split,duration_s,sample_rate\nx.wav,cello,train,1.0,11025\n")
    with pytest.raises(SGNError, match="do not exist"):
        read_index(tmp_path / "c.csv")


def test_mixture_dataset_is_a_function_of_seed_and_item(tiny_synth):
    index = read_index(tiny_synth)
    classes = index_classes(index)
    ds = MixtureDataset(index, "train", classes, n_sources=2, segment_samples=4096, stft=STFT, seed=3)
    a, b = ds[5], ds[5]
    for key in a:
        assert torch.equal(a[key], b[key])
    c = MixtureDataset(index, "train", classes, n_sources=2, segment_samples=4096, stft=STFT, seed=3)[6]
    assert not torch.equal(a["mixture"], c["mixture"])
    # the sources are scaled so they add up to the mixture
    assert torch.allclose(a["sources"].sum(0), a["mixture"], atol=1e-6)
    assert a["class_ids"].tolist() == sorted(a["class_ids"].tolist()) and len(set(a["class_ids"].tolist())) == 2
    assert a["mix_mag"].shape == (STFT.n_bins, STFT.n_frames(4096))
    assert a["source_mags"].shape == (2, STFT.n_bins, STFT.n_frames(4096))


def test_variable_number_of_sources_pads(tiny_synth):
    index = read_index(tiny_synth)
    ds = MixtureDataset(index, "train", index_classes(index), n_sources="1-3", segment_samples=2048, stft=STFT)
    counts = {int(ds[i]["n_sources"]) for i in range(40)}
    assert counts == {1, 2, 3}
    item = next(ds[i] for i in range(40) if int(ds[i]["n_sources"]) == 1)
    assert item["class_ids"].tolist()[1:] == [-1, -1] and not item["sources"][1:].any()
    batch = torch.utils.data.default_collate([ds[i] for i in range(4)])
    assert batch["sources"].shape == (4, 3, 2048)


def test_mixture_list_round_trip(tiny_synth, tmp_path):
    index = read_index(tiny_synth)
    frame = make_mixture_list(index, "test_seen", n_sources=2, count=10, seed=0, segment_samples=4096)
    again = make_mixture_list(index, "test_seen", n_sources=2, count=10, seed=0, segment_samples=4096)
    pd.testing.assert_frame_equal(frame, again)
    assert len(frame) == 20 and frame["mixture_id"].nunique() == 10
    out = write_mixture_list(frame, tmp_path / "lists" / "test.csv")
    assert not (tmp_path / "lists" / "test.csv").read_text().count(str(tmp_path))  # relative paths
    back = read_mixture_list(out)
    assert back["path"].tolist() == frame["path"].tolist()
    ds = FixedMixtureDataset(out, index_classes(index), STFT)
    assert len(ds) == 10
    item = ds[3]
    rows = frame[frame["mixture_id"] == 3]
    assert [index_classes(index)[i] for i in item["class_ids"].tolist()] == rows["class"].tolist()
    assert torch.allclose(item["sources"].sum(0), item["mixture"], atol=1e-6)


def test_mixture_list_errors(tiny_synth, tmp_path):
    index = read_index(tiny_synth)
    with pytest.raises(SGNError, match="n_sources: 5 sources need 5 classes"):
        make_mixture_list(index, "test_seen", n_sources=5, count=3)
    with pytest.raises(SGNError, match="no test_seen clip of at least"):
        make_mixture_list(index, "test_seen", n_sources=2, count=3, segment_samples=10**6)
    with pytest.raises(SGNError, match="count"):
        make_mixture_list(index, "test_seen", count=0)
    frame = make_mixture_list(index, "test_seen", n_sources=2, count=3, segment_samples=1024)
    with pytest.raises(SGNError, match="not among the model's classes"):
        FixedMixtureDataset(frame, ["cello"], STFT)
    with pytest.raises(SGNError, match="mixture list not found"):
        read_mixture_list(tmp_path / "x.csv")


@pytest.mark.parametrize("value,expected", [(2, (2, 2)), ("3", (3, 3)), ("1-4", (1, 4)), ((1, 2), (1, 2))])
def test_parse_n_sources(value, expected):
    assert parse_n_sources(value) == expected


@pytest.mark.parametrize("value", ["0", "3-1", "a", "1-x"])
def test_parse_n_sources_errors(value):
    with pytest.raises(SGNError, match="n_sources"):
        parse_n_sources(value)


# ---------------------------------------------------------------- hostile index files and mixture lists


def one_line(text: str, *fragments: str) -> None:
    """An error message is one line under 300 characters and holds every fragment."""
    assert "\n" not in text and len(text) < 300, text
    for fragment in fragments:
        assert fragment in text, text


@pytest.fixture
def clips(tmp_path):
    """Clips in tmp_path: a.wav, b.wav and silent.wav (2 s at 11025 Hz), fast.wav (2 s at 44100 Hz), junk.wav."""
    rng = np.random.default_rng(0)
    for name, rate in (("a", 11025), ("b", 11025), ("fast", 44100)):
        sf.write(tmp_path / f"{name}.wav", rng.uniform(-0.5, 0.5, 2 * rate).astype(np.float32), rate)
    sf.write(tmp_path / "silent.wav", np.zeros(2 * 11025, dtype=np.float32), 11025)
    (tmp_path / "junk.wav").write_bytes(bytes(range(256)) * 8)
    return tmp_path


GOOD_INDEX = [
    {"path": "a.wav", "class": "cello", "split": "train", "duration_s": "2.0", "sample_rate": "11025"},
    {"path": "b.wav", "class": "flute", "split": "test", "duration_s": "2.0", "sample_rate": "11025"},
]


def write_csv(path, columns, rows) -> str:
    """Write rows of raw cell text (no quoting: the cells hold no commas); return the path as text."""
    path.write_text("\n".join([",".join(columns)] + [",".join(str(r[c]) for c in columns) for r in rows]) + "\n")
    return str(path)


BAD_INDEX_CELLS = [
    ("path", ""), ("class", ""), ("class", "a/b"), ("class", ".."), ("class", "x" * 500), ("class", "cello flute"),
    ("split", "dev"), ("split", ""), ("split", "TRAIN"),
    ("duration_s", ""), ("duration_s", "nan"), ("duration_s", "abc"), ("duration_s", "0"), ("duration_s", "-2"),
    ("duration_s", "1e-9"), ("duration_s", "1e300"), ("duration_s", "inf"),
    ("sample_rate", ""), ("sample_rate", "nan"), ("sample_rate", "fast"), ("sample_rate", "0"),
    ("sample_rate", "-11025"), ("sample_rate", "1"), ("sample_rate", "11025.5"), ("sample_rate", "1e12"),
]


@pytest.mark.parametrize("column,value", BAD_INDEX_CELLS)
def test_read_index_refuses_bad_cells(clips, column, value, capsys, tmp_path_factory):
    index = write_csv(clips / "index.csv", INDEX_COLUMNS, [GOOD_INDEX[0], {**GOOD_INDEX[1], column: value}])
    with pytest.raises(SGNError) as err:
        read_index(index)
    where = "index.csv: class" if column == "class" and value else "index.csv: row 3, column " + column
    one_line(str(err.value), where)
    # the CLI says the same in one line, exits 2 and writes nothing (outside the data set's folder)
    out = tmp_path_factory.mktemp("lists") / "list.csv"
    assert main(["data", "mixtures", "--index", index, "--out", str(out), "--count", "1"]) == 2
    assert capsys.readouterr().err.strip() == f"sgn: error: {err.value}"
    assert not out.exists()


@pytest.mark.parametrize(
    "change,fragment",
    [
        ({"path": "fast.wav"}, "row 3, column sample_rate: got 11025 Hz; expected 44100 Hz"),
        ({"path": "fast.wav", "sample_rate": "22050"}, "row 3, column sample_rate: got 22050 Hz; expected 44100 Hz"),
        ({"duration_s": "20"}, "row 3, column duration_s: got 20 s (220500 samples); expected at most 2 s"),
        ({"duration_s": "2.1"}, "row 3, column duration_s"),
        ({"path": "junk.wav"}, "row 3, column path: "),
        ({"path": "missing.wav"}, "1 listed clip(s) do not exist"),
        ({"path": "."}, "1 listed clip(s) do not exist"),
    ],
)
def test_read_index_checks_each_clip_header(clips, change, fragment):
    index = write_csv(clips / "index.csv", INDEX_COLUMNS, [GOOD_INDEX[0], {**GOOD_INDEX[1], **change}])
    with pytest.raises(SGNError) as err:
        read_index(index)
    one_line(str(err.value), "index.csv", fragment)


def test_read_index_keeps_clips_a_little_shorter_than_listed(clips):
    index = write_csv(clips / "index.csv", INDEX_COLUMNS, [GOOD_INDEX[0], {**GOOD_INDEX[1], "duration_s": "2.02"}])
    assert read_index(index)["num_samples"].tolist() == [22050, 22050]  # what the file holds, not 22271


@pytest.mark.parametrize(
    "content,fragment",
    [
        (b"", "not a readable CSV"),
        (bytes(range(256)) * 8, ""),
        (b"\x00\x01\x02,\xff\xfe\n\x00", ""),
        (b'path,class\n"unterminated', ""),
    ],
)
def test_unreadable_tables_are_one_line(tmp_path, content, fragment):
    (tmp_path / "t.csv").write_bytes(content)
    for read in (read_index, read_mixture_list):
        with pytest.raises(SGNError) as err:
            read(tmp_path / "t.csv")
        one_line(str(err.value), "t.csv: ", fragment)


def test_header_only_tables_are_refused(tmp_path):
    for read, columns, what in ((read_index, INDEX_COLUMNS, "index file"),
                                (read_mixture_list, MIXTURE_COLUMNS, "mixture list")):
        write_csv(tmp_path / "t.csv", columns, [])
        with pytest.raises(SGNError) as err:
            read(tmp_path / "t.csv")
        one_line(str(err.value), f"t.csv: the {what} has a header but no rows")


GOOD_LIST = [
    {"mixture_id": 0, "n_sources": 2, "source": 0, "class": "cello", "path": "a.wav", "offset": 0, "length": 4096,
     "gain": 1.0},
    {"mixture_id": 0, "n_sources": 2, "source": 1, "class": "flute", "path": "b.wav", "offset": 100, "length": 4096,
     "gain": 0.5},
]
BAD_LIST_CELLS = [
    ("path", ""), ("class", ""), ("class", "../x"), ("class", "a b"),
    ("mixture_id", ""), ("mixture_id", "x"), ("mixture_id", "-1"), ("mixture_id", "0.5"), ("mixture_id", "1e300"),
    ("n_sources", "0"), ("n_sources", "two"), ("n_sources", "nan"),
    ("source", "-1"), ("source", "1.5"), ("source", ""),
    ("offset", ""), ("offset", "ten"), ("offset", "-5"), ("offset", "2.5"), ("offset", "inf"), ("offset", "1e300"),
    ("length", ""), ("length", "0"), ("length", "-4096"), ("length", "0.5"), ("length", "long"),
    ("gain", ""), ("gain", "nan"), ("gain", "inf"), ("gain", "-1"), ("gain", "0"), ("gain", "1e-9"), ("gain", "1e9"),
    ("gain", "loud"),
]


@pytest.mark.parametrize("column,value", BAD_LIST_CELLS)
def test_read_mixture_list_refuses_bad_cells(clips, column, value, capsys):
    mixtures = write_csv(clips / "list.csv", MIXTURE_COLUMNS, [GOOD_LIST[0], {**GOOD_LIST[1], column: value}])
    with pytest.raises(SGNError) as err:
        read_mixture_list(mixtures)
    where = "list.csv: class" if column == "class" and value else "list.csv: row 3, column " + column
    one_line(str(err.value), where)
    out = clips / "results.csv"
    assert main(["evaluate", "--method", "irm", "--mixtures", mixtures, "--n-fft", "254", "--hop", "64",
                 "--out", str(out)]) == 2
    assert capsys.readouterr().err.strip() == f"sgn: error: {err.value}"
    assert not out.exists() and not (clips / "results_summary.csv").exists()


@pytest.mark.parametrize(
    "rows,fragment",
    [
        ([{"n_sources": 3}, {}], "mixture 0: rows disagree on n_sources [2, 3]"),
        ([{}], "mixture 0: source numbers [0] for n_sources 2; expected 0..1, each once"),
        ([{"n_sources": 3}, {"n_sources": 3}], "source numbers [0, 1] for n_sources 3"),
        ([{}, {"source": 0}], "source numbers [0, 0]"),
        ([{}, {"source": 2}], "source numbers [0, 2]"),
        ([{}, {}, {"source": 2, "class": "tuba"}], "source numbers [0, 1, 2] for n_sources 2"),
        ([{}, {"length": 2048}], "mixture 0: sources of lengths [2048, 4096]; expected one length"),
        ([{}, {"class": "cello"}], "mixture 0: two sources of class 'cello'"),
    ],
)
def test_read_mixture_list_refuses_bad_mixtures(clips, rows, fragment):
    rows = [{**GOOD_LIST[min(i, 1)], **change} for i, change in enumerate(rows)]
    with pytest.raises(SGNError) as err:
        read_mixture_list(write_csv(clips / "list.csv", MIXTURE_COLUMNS, rows))
    one_line(str(err.value), "list.csv: ", fragment)


@pytest.mark.parametrize(
    "change,fragment",
    [
        ({"offset": 20000}, "mixture 0: offset 20000 + length 4096 past the end of "),
        ({"offset": 10**9}, "past the end of "),
        ({"offset": 17955}, "(22050 samples)"),
        ({"path": "missing.wav"}, "mixture 0: uses "),
        ({"path": "junk.wav"}, "junk.wav: not a readable audio file"),
        ({"path": "fast.wav"}, "fast.wav is at 44100 Hz; expected 11025 Hz"),
    ],
)
def test_fixed_mixture_dataset_checks_clips(clips, change, fragment):
    mixtures = write_csv(clips / "list.csv", MIXTURE_COLUMNS, [GOOD_LIST[0], {**GOOD_LIST[1], **change}])
    with pytest.raises(SGNError) as err:
        FixedMixtureDataset(mixtures, ["cello", "flute"], STFT)
    one_line(str(err.value), "list.csv: ", fragment)


@pytest.mark.parametrize("length", [1, 100, 253])
def test_fixed_mixture_dataset_needs_one_stft_window(clips, length):
    rows = [{**row, "length": length} for row in GOOD_LIST]
    with pytest.raises(SGNError) as err:
        FixedMixtureDataset(write_csv(clips / "list.csv", MIXTURE_COLUMNS, rows), ["cello", "flute"], STFT)
    one_line(str(err.value), f"length {length} is shorter than one STFT window; expected at least n_fft = 254")


def test_fixed_mixture_dataset_checks_the_models_rate(clips):
    mixtures = write_csv(clips / "list.csv", MIXTURE_COLUMNS, GOOD_LIST)
    assert FixedMixtureDataset(mixtures, ["cello", "flute"], STFT).sample_rate == 11025
    with pytest.raises(SGNError) as err:
        FixedMixtureDataset(mixtures, ["cello", "flute"], STFT, sample_rate=22050)
    one_line(str(err.value), "a.wav is at 11025 Hz; expected 22050 Hz")


@pytest.mark.parametrize("offset", [-1, 22051, 10**12])
def test_read_segment_reports_offsets_past_the_end(clips, offset):
    with pytest.raises(SGNError) as err:
        read_segment(str(clips / "a.wav"), offset, 100)
    one_line(str(err.value), "a.wav: offset", "past the end of the file (22050 samples)")
    assert "not a readable" not in str(err.value)
    assert read_segment(str(clips / "a.wav"), 22000, 100)[50:].tolist() == [0.0] * 50  # padded past the end


def test_ensemble_mixtures_take_aligned_parts_of_one_piece(tiny_synth):
    index = read_index(tiny_synth)
    frame = make_mixture_list(index, "test_unseen", n_sources="2-4", count=8, seed=3, segment_samples=4096,
                              mode="ensemble")
    pieces = index.set_index("abspath")["piece"]
    for _, rows in frame.groupby("mixture_id"):
        assert rows["path"].map(pieces).nunique() == 1  # one piece
        assert rows["offset"].nunique() == 1 and rows["class"].is_unique  # aligned, distinct classes
    assert frame["path"].map(pieces).str.startswith("test_unseen_").all()
    assert set(frame["path"].map(index.set_index("abspath")["bank"])) == {"fluidr3"}  # the held-out bank
    solo = make_mixture_list(index, "test_unseen", n_sources=2, count=8, seed=3, segment_samples=4096)
    assert solo["path"].map(pieces).isna().all()  # independent mixtures never use a piece's parts
    with pytest.raises(SGNError, match="5 sources, but the ensemble pieces have 4 parts"):
        make_mixture_list(index, "test_seen", n_sources=5, count=2, mode="ensemble", segment_samples=4096,
                          classes=[f"c{i}" for i in range(6)])
    with pytest.raises(SGNError, match="mode: expected one of"):
        make_mixture_list(index, "test_seen", count=2, mode="duet")


@pytest.mark.parametrize("mode", ["independent", "ensemble"])
def test_mixture_lists_avoid_silent_references(tiny_synth, tmp_path, mode):
    # a silent reference makes BSS-eval undefined and the mixture is lost at scoring; the list
    # is drawn again around it, and a split with nothing but silence is refused in one line
    import shutil

    root = tmp_path / "set"
    shutil.copytree(tiny_synth.parent, root)
    index = read_index(root / "index.csv")
    test = index[index["split"] == "test_seen"]
    is_part = test["piece"].notna() if "piece" in test.columns else pd.Series(False, index=test.index)
    pool = test[is_part] if mode == "ensemble" else test[~is_part]
    quiet = pool["class"].iloc[0]
    for path in pool.loc[pool["class"] == quiet, "abspath"]:
        info = sf.info(path)
        sf.write(path, np.zeros(info.frames, dtype="float32"), info.samplerate, subtype=info.subtype)
    frame = make_mixture_list(index, "test_seen", n_sources=2, count=12, seed=0, segment_samples=4096, mode=mode)
    assert frame["mixture_id"].nunique() == 12 and quiet not in set(frame["class"])
    for path in pool["abspath"]:
        info = sf.info(path)
        sf.write(path, np.zeros(info.frames, dtype="float32"), info.samplerate, subtype=info.subtype)
    with pytest.raises(SGNError, match=r"^split test_seen: 100 draws in a row held a silent source segment") as err:
        make_mixture_list(index, "test_seen", n_sources=2, count=2, seed=0, segment_samples=4096, mode=mode)
    assert "\n" not in str(err.value)
