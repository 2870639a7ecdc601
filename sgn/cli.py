"""The ``sgn`` command line: a thin layer over the library's functions.

Each sub-command parses its flags and calls one library function. Errors caused by
the input (:class:`sgn.utils.SGNError`) print as one line, ``sgn: error: ...``, and
exit with status 2; no traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Callable, Sequence

from sgn import __version__
from sgn.utils import SGNError

log = logging.getLogger("sgn")


def _csv_list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def _cmd_data_synth(args: argparse.Namespace) -> None:
    from sgn.synth import render_synth_music

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


COMMAND_GROUPS: tuple[Callable[[argparse._SubParsersAction], None], ...] = (_add_data_commands,)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sgn", description="Semantic Grouping Network research companion")
    parser.add_argument("--version", action="version", version=f"sgn {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="log warnings only")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add_commands in COMMAND_GROUPS:
        add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO, format="sgn: %(message)s", stream=sys.stderr
    )
    try:
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
