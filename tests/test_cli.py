"""The command line's own boundary: one-line errors, outputs checked before work, threads."""

import pytest
import torch

from sgn.cli import main

BAD_COMMAND_LINES = [
    [],
    ["bogus"],
    ["separate"],
    ["separate", "x.wav", "--checkpoint"],
    ["evaluate", "--method", "irm", "--mixtures", "m.csv", "--out", "o.csv", "--n-fft", "0"],
    ["evaluate", "--method", "irm", "--mixtures", "m.csv", "--out", "o.csv", "--hop", "-3"],
    ["evaluate", "--method", "irm", "--mixtures", "m.csv", "--out", "o.csv", "--batch-size", "x"],
    ["evaluate", "--method", "nope", "--mixtures", "m.csv", "--out", "o.csv"],
    ["train", "--config", "smoke", "--out", "r", "--device", "tpu"],
    ["data", "mixtures", "--index", "i.csv", "--out", "o.csv", "--split", "holdout"],
    ["data", "synth", "--out", "d", "--seconds", "many"],
    ["--threads", "0", "train", "--config", "smoke", "--out", "r"],
    ["--threads", "two", "train", "--config", "smoke", "--out", "r"],
]


@pytest.mark.parametrize("argv", BAD_COMMAND_LINES, ids=lambda argv: " ".join(argv) or "empty")
def test_a_bad_command_line_is_one_line_and_status_2(argv, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("sgn: error: ") and err.count("\n") == 1 and "usage:" not in err


def test_mixture_list_may_not_replace_the_index(tiny_synth, tmp_path, capsys):
    before = tiny_synth.read_bytes()
    assert main(["data", "mixtures", "--index", str(tiny_synth), "--out", str(tiny_synth), "--count", "2"]) == 2
    assert "is also an input" in capsys.readouterr().err and tiny_synth.read_bytes() == before


def test_results_may_not_replace_the_mixture_list(tiny_test_list, tmp_path, capsys):
    before = tiny_test_list.read_bytes()
    assert main(["evaluate", "--method", "irm", "--mixtures", str(tiny_test_list), "--out", str(tiny_test_list)]) == 2
    assert "is also an input" in capsys.readouterr().err and tiny_test_list.read_bytes() == before
    # nor may the summary (<out stem>_summary.csv) land on it
    lone = tmp_path / "results_summary.csv"
    lone.write_text("mine\n")
    assert main(["evaluate", "--method", "irm", "--mixtures", str(lone), "--out", str(tmp_path / "results.csv")]) == 2
    assert "(its summary)" in capsys.readouterr().err and lone.read_text() == "mine\n"


def test_threads_flag_and_environment(monkeypatch, capsys):
    before = torch.get_num_threads()
    try:
        monkeypatch.setenv("SGN_THREADS", "1")
        main(["data", "mixtures", "--index", "missing.csv", "--out", "o.csv"])
        assert torch.get_num_threads() == 1
        monkeypatch.setenv("SGN_THREADS", "zero")
        assert main(["data", "mixtures", "--index", "missing.csv", "--out", "o.csv"]) == 2
        assert "$SGN_THREADS: expected a whole number of threads in 1.." in capsys.readouterr().err
        main(["--threads", "2", "data", "mixtures", "--index", "missing.csv", "--out", "o.csv"])
        assert torch.get_num_threads() == 2  # the flag wins over the environment
    finally:
        torch.set_num_threads(before)
