"""Hostile and damaged checkpoints: each is refused at load in one line naming the file."""

import copy

import numpy as np
import pytest
import soundfile as sf
import torch

from sgn.checkpoint import build_model, load_model, read_checkpoint, save_checkpoint
from sgn.config import apply_overrides, load_config
from sgn.utils import SGNError

CLASSES = ["cello", "flute", "trumpet"]


@pytest.fixture(scope="module")
def good_state(tmp_path_factory):
    """The dict of an untrained smoke checkpoint (building one takes a fraction of a second)."""
    config = apply_overrides(load_config("smoke"), ["data.index=index.csv"])
    path = save_checkpoint(tmp_path_factory.mktemp("ckpt") / "good.pt", build_model(config, CLASSES), config, step=0)
    return torch.load(path, weights_only=True)


def _set(key, value):
    def change(state):
        state[key] = value
    return change


def _set_config(section, name, value):
    def change(state):
        state["config"][section][name] = value
    return change


def _weight(change):
    """Apply ``change`` to the first floating-point weight (it returns the new tensor or changes it in place)."""
    def apply(state):
        name = next(k for k, v in state["model"].items() if v.is_floating_point())
        changed = change(state["model"][name])
        state["model"][name] = state["model"][name] if changed is None or changed is state["model"][name] else changed
    return apply


def _configs(*changes):
    def apply(state):
        for section, name, value in changes:
            state["config"][section][name] = value
    return apply


def _delete(key):
    def change(state):
        del state[key]
    return change


HOSTILE = {
    # class names become output file names in `sgn separate`
    "escape_relative": (_set("classes", ["../../escape_rel", "flute", "trumpet"]), "classes"),
    "absolute_path": (_set("classes", ["/tmp/abs", "flute", "trumpet"]), "classes"),
    "subfolder": (_set("classes", ["a/b", "flute", "trumpet"]), "classes"),
    "dot_dot": (_set("classes", ["..", "flute", "trumpet"]), "classes"),
    "backslash": (_set("classes", ["..\\x", "flute", "trumpet"]), "classes"),
    "empty_name": (_set("classes", ["", "flute", "trumpet"]), "classes"),
    "duplicate": (_set("classes", ["cello", "cello", "trumpet"]), "listed twice"),
    "not_a_string": (_set("classes", [3, "flute", "trumpet"]), "classes"),
    "huge_name": (_set("classes", ["x" * 100_000, "flute", "trumpet"]), "classes"),
    "classes_int": (_set("classes", 5), "'classes'"),
    "classes_str": (_set("classes", "violin"), "'classes'"),
    "no_classes_listed": (_set("classes", []), "classes"),
    "too_many_classes": (_set("classes", [f"c{i}" for i in range(100_000)]), "classes"),
    "fewer_classes_than_weights": (_set("classes", ["cello", "flute"]), "weights do not fit"),
    # structure
    "no_classes": (_delete("classes"), "'classes'"),
    "no_config": (_delete("config"), "'config'"),
    "no_model": (_delete("model"), "'model'"),
    "model_a_list": (_set("model", [1, 2]), "'model'"),
    "model_of_numbers": (_set("model", {"w": 3}), "named tensors"),
    "model_empty": (_set("model", {}), "weights do not fit"),
    "config_a_string": (_set("config", "x" * 100_000), "'config'"),
    "format_huge": (_set("format", "y" * 100_000), "checkpoint format"),
    # the stored config goes through the same checks as a YAML one
    "hop_0": (_set_config("model", "hop", 0), "model.hop"),
    "n_fft_0": (_set_config("model", "n_fft", 0), "model.n_fft"),
    "segment_0": (_set_config("data", "segment_samples", 0), "data.segment_samples"),
    "sample_rate_0": (_set_config("data", "sample_rate", 0), "data.sample_rate"),
    "lr_nan": (_set_config("optim", "lr", float("nan")), "optim.lr"),
    "arch_unknown": (_set_config("model", "arch", "mlp"), "model.arch"),
    "unknown_key": (_set_config("model", "widht", 1), "did you mean model.width"),
    "config_value_huge": (_set_config("model", "depth", list(range(100_000))), "model.depth"),
    "layout_rule": (_set_config("model", "warped_bins", 60), "patch_freq"),
    # issue 20: weights are checked for numbers, not only for names and shapes
    "weight_nan": (_weight(lambda w: w.fill_(float("nan"))), "holds NaN or infinite values"),
    "weight_inf": (_weight(lambda w: w.fill_(float("inf"))), "holds NaN or infinite values"),
    "weight_sparse": (_weight(lambda w: w.to_sparse()), "is sparse_coo; expected a dense tensor"),
    "weight_complex": (_weight(lambda w: w.to(torch.complex64)), "expected real numbers"),
    "weight_bool": (_weight(lambda w: w > 0), "expected real numbers"),
    "fingerprint_not_a_record": (_set("fingerprint", torch.zeros(3)), "fingerprint is"),
    # the presence threshold a run chose on validation: a probability
    **{f"presence_threshold_{bad!r}": (_set("presence_threshold", bad), "presence_threshold is")
       for bad in (1.5, 0.0, "0.5", True, float("nan"))},
    "classes_differ_in_case": (_set("classes", ["cello", "Cello", "trumpet"]), "differ only in case"),
    # in-range values whose cost is not: a 2 s separation past 6 GB (issue 20)
    "segment_huge_hop_1": (_configs(("data", "segment_samples", 4194304), ("model", "hop", 1)), "model.hop"),
    "cells_too_many": (_configs(("data", "segment_samples", 4194304), ("model", "hop", 64)), "data.segment_samples"),
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_checkpoint_is_refused_in_one_line(good_state, tmp_path, name):
    change, mentions = HOSTILE[name]
    state = copy.deepcopy(good_state)
    change(state)
    path = tmp_path / "hostile.pt"
    torch.save(state, path)
    with pytest.raises(SGNError) as info:
        load_model(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and mentions in message, message
    assert "\n" not in message and len(message) < 300, message


@pytest.mark.parametrize("payload", [b"", b"garbage", b"PK\x03\x04" + b"\0" * 100])
def test_unreadable_files_are_refused(tmp_path, payload):
    (tmp_path / "x.pt").write_bytes(payload)
    with pytest.raises(SGNError, match="not a readable sgn checkpoint"):
        read_checkpoint(tmp_path / "x.pt")


@pytest.mark.parametrize("payload", [[1, 2], 5, "sgn-checkpoint/1", {"format": 1}])
def test_foreign_objects_are_refused(tmp_path, payload):
    torch.save(payload, tmp_path / "x.pt")
    with pytest.raises(SGNError, match="checkpoint format"):
        read_checkpoint(tmp_path / "x.pt")


@pytest.mark.parametrize("bad_class", ["../../escape_rel", "/tmp/abs", "a/b", ".."])
def test_separate_writes_nothing_for_a_hostile_checkpoint(good_state, tmp_path, capsys, bad_class):
    """`sgn separate` stops at the checkpoint, before any file is written inside or outside --out."""
    from sgn.cli import main

    state = copy.deepcopy(good_state)
    state["classes"][0] = bad_class
    torch.save(state, tmp_path / "hostile.pt")
    sf.write(tmp_path / "mix.wav", np.zeros(4096, dtype=np.float32), 11025)
    before = sorted(p.name for p in tmp_path.iterdir())
    code = main(["separate", str(tmp_path / "mix.wav"), "--checkpoint", str(tmp_path / "hostile.pt"),
                 "--out", str(tmp_path / "out" / "sub")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("sgn: error: ") and "\n" not in err and "hostile.pt" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == before
