import pandas as pd
import pytest
import torch

from sgn.audio import STFTSpec
from sgn.data import (FixedMixtureDataset, MixtureDataset, index_classes, make_mixture_list, parse_n_sources,
                      read_index, read_mixture_list, write_mixture_list)
from sgn.utils import SGNError

from conftest import TINY_CLASSES

STFT = STFTSpec(254, 64)


def test_read_index(tiny_synth):
    index = read_index(tiny_synth)
    assert index_classes(index) == sorted(TINY_CLASSES)
    assert set(index["split"]) == {"train", "val", "test"}
    assert (index["num_samples"] == round(1.5 * 11025)).all()


def test_read_index_errors(tmp_path, tiny_synth):
    with pytest.raises(SGNError, match="index file not found"):
        read_index(tmp_path / "none.csv")
    (tmp_path / "a.csv").write_text("path,class\nx.wav,cello\n")
    with pytest.raises(SGNError, match="missing columns"):
        read_index(tmp_path / "a.csv")
    (tmp_path / "b.csv").write_text("path,class,split,duration_s,sample_rate\nx.wav,cello,dev,1.0,11025\n")
    with pytest.raises(SGNError, match="unknown split"):
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
    frame = make_mixture_list(index, "test", n_sources=2, count=10, seed=0, segment_samples=4096)
    again = make_mixture_list(index, "test", n_sources=2, count=10, seed=0, segment_samples=4096)
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
        make_mixture_list(index, "test", n_sources=5, count=3)
    with pytest.raises(SGNError, match="no test clip of at least"):
        make_mixture_list(index, "test", n_sources=2, count=3, segment_samples=10**6)
    with pytest.raises(SGNError, match="count"):
        make_mixture_list(index, "test", count=0)
    frame = make_mixture_list(index, "test", n_sources=2, count=3, segment_samples=1024)
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
