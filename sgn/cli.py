"""The ``sgn`` command line: a thin layer over the library's functions.

Each sub-command parses its flags and calls one library function. Errors caused by
the input (:class:`sgn.utils.SGNError`, and argparse's own) print as one line,
``sgn: error: ...``, and exit with status 2; no traceback. Outputs are checked before
any work (:func:`sgn.utils.check_output`): an output that is also an input is refused.

Threads: torch's intra-op pool gets ``--threads N`` or ``$SGN_THREADS`` threads
(default: torch's, one per core). On a machine that other work keeps busy, one
thread can be many times faster than two (``python bench/bench_separate.py --threads 1,2 --load 2``).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Callable, Sequence

from sgn import __version__
from sgn.utils import SGNError, check_output, shorten

log = logging.getLogger("sgn")
THREADS_ENV = "SGN_THREADS"


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a bad command line as one line (no usage block), exit status 2."""

    def error(self, message: str):
        command = self.prog.removeprefix("sgn").strip()
        self.exit(2, f"sgn: error: {command + ': ' if command else ''}{' '.join(message.split())[:300]}\n")


def _csv_list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {shorten(text)}")
    return value


def _cmd_data_synth(args: argparse.Namespace) -> None:
    from sgn.synth import render_synth_music

    check_output(args.out, kind="dir")
    render_synth_music(
        args.out,
        clips_per_class=args.clips_per_class,
        seconds=args.seconds,
        sample_rate=args.sample_rate,
        seed=args.seed,
        soundfont=args.soundfont,
        classes=args.classes,
        jobs=args.jobs,
    )


def _cmd_data_mixtures(args: argparse.Namespace) -> None:
    from sgn.data import make_mixture_list, read_index, write_mixture_list

    check_output(args.out, inputs=[args.index])
    frame = make_mixture_list(
        read_index(args.index),
        args.split,
        n_sources=args.n_sources,
        count=args.count,
        seed=args.seed,
        segment_samples=args.segment_samples,
    )
    out = write_mixture_list(frame, args.out)
    log.info("wrote %d mixtures (%d source rows) to %s", frame["mixture_id"].nunique(), len(frame), out)


def _add_data_commands(sub: argparse._SubParsersAction) -> None:
    from sgn.synth import DEFAULT_CLIPS_PER_CLASS, DEFAULT_SECONDS

    data = sub.add_parser("data", help="make, download and prepare data sets")
    data_sub = data.add_subparsers(dest="data_command", required=True, metavar="COMMAND")

    synth = data_sub.add_parser("synth", help="render the SynthMUSIC data set from a SoundFont")
    synth.add_argument("--out", type=Path, required=True, help="output folder")
    synth.add_argument("--clips-per-class", type=int, default=DEFAULT_CLIPS_PER_CLASS)
    synth.add_argument("--seconds", type=float, default=DEFAULT_SECONDS, help="length of each clip")
    synth.add_argument("--sample-rate", type=int, default=11025)
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--soundfont", type=Path, default=None, help=".sf2 file (default: pretty_midi's TimGM6mb)")
    synth.add_argument("--classes", type=_csv_list, default=None, help="comma-separated subset of the MUSIC classes")
    synth.add_argument("--jobs", type=int, default=None, help="rendering processes (default: up to 2)")
    synth.set_defaults(func=_cmd_data_synth)

    mixtures = data_sub.add_parser("mixtures", help="draw a fixed list of evaluation mixtures")
    mixtures.add_argument("--index", type=Path, required=True, help="the data set's index.csv")
    mixtures.add_argument("--split", default="test", choices=["train", "val", "test"])
    mixtures.add_argument("--n-sources", default="2", help="sources per mixture: N, or a range like 1-4")
    mixtures.add_argument("--count", type=int, default=300)
    mixtures.add_argument("--seed", type=int, default=0)
    mixtures.add_argument("--segment-samples", type=int, default=65535, help="mixture length in samples")
    mixtures.add_argument("--out", type=Path, required=True, help="output CSV")
    mixtures.set_defaults(func=_cmd_data_mixtures)

    from sgn.download import add_download_command

    add_download_command(data_sub)


def _cmd_train(args: argparse.Namespace) -> None:
    from sgn.config import apply_overrides, load_config
    from sgn.train import train

    config = apply_overrides(load_config(args.config), args.set)
    train(config, args.out, device=args.device, resume=args.resume)


def _cmd_evaluate(args: argparse.Namespace) -> None:
    from sgn.evaluate import evaluate, summary_path, write_results

    inputs = [p for p in (args.mixtures, args.index, args.checkpoint) if p is not None]
    check_output(args.out, inputs=inputs)
    check_output(summary_path(args.out), inputs=inputs, flag="--out (its summary)")
    frame = evaluate(args.mixtures, checkpoint=args.checkpoint, method=args.method, index=args.index,
                     n_fft=args.n_fft, hop=args.hop, device=args.device, batch_size=args.batch_size)
    out, summary = write_results(frame, args.out)
    means = frame.groupby("method")[["sdr", "sir", "sar", "si_sdr", "sdri"]].mean().round(2)
    print(means.to_string())
    log.info("per-source results in %s, summary in %s", out, summary)


def _cmd_separate(args: argparse.Namespace) -> None:
    from sgn.separate import Separator

    check_output(args.out, kind="dir", inputs=[args.mixture, args.checkpoint])
    classes = None if args.classes is None and args.class_ is None else (args.classes or []) + (args.class_ or [])
    separator = Separator.from_checkpoint(args.checkpoint, device=args.device)
    separator.separate_file(args.mixture, args.out, classes, overwrite=args.overwrite)


def _add_model_commands(sub: argparse._SubParsersAction) -> None:
    from sgn.evaluate import REFERENCE_METHODS

    train = sub.add_parser("train", help="train SGN or the U-Net baseline")
    train.add_argument("--config", required=True, help="profile name (smoke, cpu, gpu) or YAML path")
    train.add_argument("--out", type=Path, required=True, help="run folder")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config value")
    train.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    train.add_argument("--resume", action="store_true", help="continue the run in --out from last.pt")
    train.set_defaults(func=_cmd_train)

    evaluate = sub.add_parser("evaluate", help="score a checkpoint or a reference method on a mixture list")
    which = evaluate.add_mutually_exclusive_group(required=True)
    which.add_argument("--checkpoint", type=Path)
    which.add_argument("--method", choices=REFERENCE_METHODS)
    evaluate.add_argument("--mixtures", type=Path, required=True, help="mixture list CSV (sgn data mixtures)")
    evaluate.add_argument("--index", type=Path, help="the data set's index.csv (needed by nmf)")
    evaluate.add_argument("--n-fft", type=_positive_int, default=1022, help="STFT of reference methods")
    evaluate.add_argument("--hop", type=_positive_int, default=256, help="STFT hop of reference methods")
    evaluate.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    evaluate.add_argument("--batch-size", type=_positive_int, default=8)
    evaluate.add_argument("--out", type=Path, required=True, help="per-source results CSV")
    evaluate.set_defaults(func=_cmd_evaluate)

    separate = sub.add_parser("separate", help="separate an audio file into one file per class")
    separate.add_argument("mixture", type=Path, help="audio file (any rate, mono or stereo)")
    separate.add_argument("--checkpoint", type=Path, required=True)
    separate.add_argument("--out", type=Path, required=True, help="output folder")
    separate.add_argument("--classes", type=_csv_list, default=None,
                          help="comma-separated classes (default: those the presence head finds)")
    separate.add_argument("--class", dest="class_", action="append", default=None, metavar="NAME",
                          help="one class to extract (repeatable; for names with a comma)")
    separate.add_argument("--overwrite", action="store_true", help="replace existing stems in --out")
    separate.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    separate.set_defaults(func=_cmd_separate)


def _add_notebook_commands(sub: argparse._SubParsersAction) -> None:
    from sgn.book import add_book_command
    from sgn.notebooks import add_notebooks_command
    from sgn.sweep import add_sweep_command

    add_notebooks_command(sub)
    add_sweep_command(sub)
    add_book_command(sub)


COMMAND_GROUPS: tuple[Callable[[argparse._SubParsersAction], None], ...] = (
    _add_data_commands, _add_model_commands, _add_notebook_commands,
)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="sgn", description="Semantic Grouping Network research companion")
    parser.add_argument("--version", action="version", version=f"sgn {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="log warnings only")
    parser.add_argument("--threads", type=_positive_int, default=None,
                        help=f"torch threads (default: ${THREADS_ENV}, else one per core)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add_commands in COMMAND_GROUPS:
        add_commands(sub)
    return parser


def _set_threads(flag: int | None) -> None:
    """Apply ``--threads`` or ``$SGN_THREADS`` to torch's intra-op pool (neither: torch's default)."""
    import torch

    text = os.environ.get(THREADS_ENV)
    if flag is None and text is not None:
        if not text.strip().isdigit() or int(text) < 1:
            raise SGNError(f"${THREADS_ENV}: expected a positive integer, got {shorten(text)}")
        flag = int(text)
    if flag is not None:
        torch.set_num_threads(flag)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO, format="sgn: %(message)s", stream=sys.stderr
    )
    try:
        _set_threads(args.threads)
        args.func(args)
    except SGNError as err:
        print(f"sgn: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("sgn: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
