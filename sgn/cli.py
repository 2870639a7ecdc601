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
import re
import shlex
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


WHOLE_NUMBER = re.compile(r"-?[0-9]{1,12}")  # ASCII digits only: int() also reads '²' and '١'


def _whole(text: str) -> int:
    """A command-line integer: ASCII digits, at most 12 (bounds are the library's to check)."""
    if not WHOLE_NUMBER.fullmatch(text.strip()):
        raise argparse.ArgumentTypeError(f"expected a whole number (ASCII digits), got {shorten(text)}")
    return int(text)


def _positive_int(text: str) -> int:
    value = _whole(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {shorten(text)}")
    return value


def thread_count(text: str, source: str) -> int:
    """A thread count from ``source`` (flag or variable): ASCII digits, 1 to this machine's cores
    (more threads than cores only slows torch down; a huge count crashes its pool)."""
    cores = os.cpu_count() or 1
    if not WHOLE_NUMBER.fullmatch(text.strip()) or not 1 <= int(text) <= cores:
        raise SGNError(f"{source}: expected a whole number of threads in 1..{cores} (this machine's cores), "
                       f"got {shorten(text)}")
    return int(text)


def _cmd_data_synth(args: argparse.Namespace) -> None:
    from sgn.synthmusic import render_synth_music

    check_output(args.out, kind="dir")
    render_synth_music(
        args.out,
        clips_per_class=args.clips_per_class,
        seconds=args.seconds,
        sample_rate=args.sample_rate,
        seed=args.seed,
        banks=args.banks,
        held_out=None if args.held_out_bank == "none" else args.held_out_bank,
        ensembles=args.ensembles,
        soundfont=args.soundfont,
        classes=args.classes,
        jobs=args.jobs,
    )


def _cmd_data_mixtures(args: argparse.Namespace) -> None:
    from sgn.data import make_mixture_list, read_index, write_mixture_list

    check_output(args.out, inputs=[args.index], input_dirs=[args.index.parent])
    frame = make_mixture_list(
        read_index(args.index),
        args.split,
        n_sources=args.n_sources,
        count=args.count,
        seed=args.seed,
        segment_samples=args.segment_samples,
        mode=args.mode,
    )
    out = write_mixture_list(frame, args.out)
    log.info("wrote %d mixtures (%d source rows) to %s", frame["mixture_id"].nunique(), len(frame), out)


def _add_data_commands(sub: argparse._SubParsersAction) -> None:
    from sgn.data import MIXTURE_MODES, SPLITS
    from sgn.synthmusic.banks import BANKS, DEFAULT_HELD_OUT
    from sgn.synthmusic import DEFAULT_CLIPS_PER_CLASS, DEFAULT_ENSEMBLES, DEFAULT_SECONDS

    data = sub.add_parser("data", help="make, download and prepare data sets")
    data_sub = data.add_subparsers(dest="data_command", required=True, metavar="COMMAND")

    synth = data_sub.add_parser("synth", help="render the SynthMUSIC data set from a SoundFont")
    synth.add_argument("--out", type=Path, required=True, help="output folder")
    synth.add_argument("--clips-per-class", type=_whole, default=DEFAULT_CLIPS_PER_CLASS)
    synth.add_argument("--seconds", type=float, default=DEFAULT_SECONDS, help="length of each clip")
    synth.add_argument("--sample-rate", type=_whole, default=11025)
    synth.add_argument("--seed", type=_whole, default=0)
    synth.add_argument("--banks", type=_csv_list, default=None,
                       help=f"comma-separated instrument banks (default: all of {', '.join(BANKS)}, from npm and Debian)")
    synth.add_argument("--held-out-bank", default=DEFAULT_HELD_OUT,
                       help=f"bank that renders val_unseen and test_unseen alone, or 'none' (default: {DEFAULT_HELD_OUT})")
    synth.add_argument("--ensembles", type=_whole, default=DEFAULT_ENSEMBLES, help="ensemble pieces per test split")
    synth.add_argument("--soundfont", type=Path, default=None, help="one .sf2/.sf3 file instead of the banks")
    synth.add_argument("--classes", type=_csv_list, default=None, help="comma-separated subset of the MUSIC classes")
    synth.add_argument("--jobs", type=_whole, default=None, help="rendering processes (default: up to 2)")
    synth.set_defaults(func=_cmd_data_synth)

    mixtures = data_sub.add_parser("mixtures", help="draw a fixed list of evaluation mixtures")
    mixtures.add_argument("--index", type=Path, required=True, help="the data set's index.csv")
    mixtures.add_argument("--split", default="test_seen", choices=SPLITS)
    mixtures.add_argument("--mode", default="independent", choices=MIXTURE_MODES,
                          help="independent clips, or the parts of one ensemble piece (aligned)")
    mixtures.add_argument("--n-sources", default="2", help="sources per mixture: N, or a range like 1-4")
    mixtures.add_argument("--count", type=_whole, default=300)
    mixtures.add_argument("--seed", type=_whole, default=0)
    mixtures.add_argument("--segment-samples", type=_whole, default=65535, help="mixture length in samples")
    mixtures.add_argument("--out", type=Path, required=True, help="output CSV")
    mixtures.set_defaults(func=_cmd_data_mixtures)

    _add_download_command(data_sub)


def _cmd_download(args: argparse.Namespace) -> None:
    from sgn.download import download, plan

    check_output(args.root, kind="dir", flag="--root")
    try:
        ytdlp_args = shlex.split(args.yt_dlp_args or "")
    except ValueError as err:
        raise SGNError(f"--yt-dlp-args: {err}") from None
    options = dict(
        subsets=_csv_list(args.subset) if args.subset else None,
        mirror=args.mirror, checksums=args.checksums, jobs=args.jobs, sample_rate=args.sample_rate,
        clip_seconds=args.clip_seconds, max_per_class=args.max_per_class, sleep_s=args.sleep,
        ytdlp_args=ytdlp_args, progress=not getattr(args, "quiet", False),
    )
    if args.dry_run:
        for item in plan(args.name, args.root, **options):
            print(item.line())
        return
    download(args.name, args.root, **options)  # it logs where the prepared set went


def _add_download_command(data_sub: argparse._SubParsersAction) -> None:
    from sgn.download import DATASETS

    cmd = data_sub.add_parser(
        "download", help="download, verify and prepare a real data set",
        description="Fetch a data set, verify it, and prepare it into the common index.csv format.",
    )
    cmd.add_argument("name", help=f"data set: {', '.join(DATASETS)}")
    cmd.add_argument("--root", type=Path, required=True, help="data folder (downloads are cached in ROOT/downloads)")
    cmd.add_argument("--subset", default=None,
                     help="comma-separated: music solo,duet; fuss reverb|dry; musdb18 full|preview; "
                          "vggsound train,test")
    cmd.add_argument("--mirror", default=None, metavar="BASE_URL",
                     help="replace the scheme and host of every URL (YouTube: BASE_URL/watch?v=ID)")
    cmd.add_argument("--checksums", type=Path, default=None, metavar="FILE",
                     help="md5sum/sha256sum-format file replacing the shipped manifest")
    cmd.add_argument("--jobs", type=_positive_int, default=2, help="parallel downloads and conversions")
    cmd.add_argument("--sample-rate", type=_whole, default=11025, help="sample rate of the prepared clips (Hz)")
    cmd.add_argument("--clip-seconds", type=float, default=6.0,
                     help="clip length for long recordings (MUSIC, MUSDB18)")
    cmd.add_argument("--max-per-class", type=_whole, default=None,
                     help="at most this many videos per class and split (YouTube sets)")
    cmd.add_argument("--sleep", type=float, default=1.0,
                     help="minimum seconds between two video downloads, over all jobs (YouTube sets)")
    cmd.add_argument("--yt-dlp-args", default=None, metavar="ARGS",
                     help="extra yt-dlp options, e.g. \"--cookies cookies.txt\"")
    cmd.add_argument("--dry-run", action="store_true", help="print what would be fetched and its size")
    cmd.set_defaults(func=_cmd_download)


def _cmd_train(args: argparse.Namespace) -> None:
    from sgn.config import apply_overrides, load_config
    from sgn.train import train

    config = apply_overrides(load_config(args.config), args.set)
    train(config, args.out, device=args.device, resume=args.resume, overwrite=args.overwrite)


def _cmd_evaluate(args: argparse.Namespace) -> None:
    from sgn.data import read_mixture_list
    from sgn.evaluate import evaluate, summary_path, write_results

    inputs = [p for p in (args.mixtures, args.index, args.checkpoint) if p is not None]
    outputs = {"--out": args.out, "--out (its summary)": summary_path(args.out)}
    for flag, path in outputs.items():
        check_output(path, inputs=inputs, flag=flag)
    clips = sorted(set(read_mixture_list(args.mixtures)["path"]))  # every clip the list names is an input too
    for flag, path in outputs.items():
        check_output(path, inputs=clips, flag=flag)
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


def _cmd_export(args: argparse.Namespace) -> None:
    from sgn.lab.export import export_checkpoint

    export_checkpoint(args.checkpoint, args.out)


def _add_model_commands(sub: argparse._SubParsersAction) -> None:
    from sgn.evaluate import REFERENCE_METHODS

    train = sub.add_parser("train", help="train SGN or the U-Net baseline")
    train.add_argument("--config", required=True, help="profile name (smoke, cpu, gpu) or YAML path")
    train.add_argument("--out", type=Path, required=True, help="run folder")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config value")
    train.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    train.add_argument("--resume", action="store_true", help="continue the run in --out from last.pt")
    train.add_argument("--overwrite", action="store_true",
                       help="replace weights or metrics in --out that no resumable run holds (best.pt without last.pt)")
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

    export = sub.add_parser("export", help="export a checkpoint to ONNX (model.onnx, model.json) for the browser")
    export.add_argument("--checkpoint", type=Path, required=True)
    export.add_argument("--out", type=Path, required=True, help="output folder")
    export.set_defaults(func=_cmd_export)


def _cmd_notebooks(args: argparse.Namespace) -> None:
    from sgn.lab.notebooks import (check_out_dir, load_profile, pipeline_summary, read_chapters, resolve_profile,
                                   run_pipeline)

    # papermill logs two INFO lines per notebook; the progress bars say the same
    logging.getLogger("papermill").setLevel(logging.WARNING)
    check_out_dir(args.out, [args.dir])
    notebooks = read_chapters(args.dir).notebooks
    profile = resolve_profile(args.profile, args.dir) if args.profile else None
    params = load_profile(profile, args.dir) if profile else {}
    results = run_pipeline(notebooks, params, args.out, profile=profile.stem if profile else None,
                           cache=not args.force, kernel_name=args.kernel)
    log.info("%s; executed copies in %s", pipeline_summary(results), args.out)


def _cmd_sweep(args: argparse.Namespace) -> None:
    from sgn.lab.sweep import run_sweep

    # papermill logs two INFO lines per notebook; across a grid they drown the progress bar
    logging.getLogger("papermill").setLevel(logging.WARNING)
    check_output(args.out, kind="dir", inputs=[args.grid])
    frame = run_sweep(args.grid, args.out, jobs=args.jobs, executor=args.executor, scheduler=args.scheduler,
                      force=args.force)
    failed = int((frame["status"] == "failed").sum())
    log.info("%d of %d points ok; table in %s", len(frame) - failed, len(frame), Path(args.out) / "results.csv")
    if failed:
        raise SGNError(f"{failed} of {len(frame)} points failed (see error.txt in {Path(args.out) / 'points'}); "
                       "run the same command again to retry them")


def _cmd_book(args: argparse.Namespace) -> None:
    from sgn.lab.book import build_book

    build_book(args.profile, root=args.root, force=args.force)


def _add_notebook_commands(sub: argparse._SubParsersAction) -> None:
    from sgn.lab.notebooks import DEFAULT_KERNEL
    from sgn.lab.sweep import EXECUTORS

    notebooks = sub.add_parser("notebooks", help="execute the notebooks in order with a profile's parameters (cached)")
    notebooks.add_argument("--profile", help="profile name (notebooks/profiles/NAME.yaml) or YAML path; "
                                             "default: the notebooks' own defaults")
    notebooks.add_argument("--out", type=Path, required=True, help="folder of the executed copies")
    notebooks.add_argument("--dir", type=Path, default=Path("notebooks"),
                           help="folder of the notebooks and their chapters.yaml")
    notebooks.add_argument("--kernel", default=DEFAULT_KERNEL, help="Jupyter kernel name")
    notebooks.add_argument("--force", action="store_true", help="execute even the notebooks that are up to date")
    notebooks.set_defaults(func=_cmd_notebooks)

    sweep = sub.add_parser("sweep", help="execute a notebook over a parameter grid (resumable)")
    sweep.add_argument("grid", type=Path, metavar="GRID", help="grid YAML file")
    sweep.add_argument("--out", type=Path, required=True, help="sweep folder (results.csv, points/)")
    sweep.add_argument("--jobs", type=_positive_int, default=1, help="parallel processes, one kernel each (local)")
    sweep.add_argument("--executor", choices=EXECUTORS, default="local",
                       help="local processes, or an existing Dask cluster")
    sweep.add_argument("--scheduler", metavar="ADDRESS", help="Dask scheduler address, e.g. tcp://10.0.0.5:8786")
    sweep.add_argument("--force", action="store_true", help="run finished points again too")
    sweep.set_defaults(func=_cmd_sweep)

    book = sub.add_parser("book", help="execute the notebooks with a profile and build the book (cached)")
    book.add_argument("--profile", default="cpu", help="profile name (notebooks/profiles/NAME.yaml) or YAML path")
    book.add_argument("--root", type=Path, default=Path("."), help="repository root")
    book.add_argument("--force", action="store_true", help="execute every notebook and rebuild the book")
    book.set_defaults(func=_cmd_book)


COMMAND_GROUPS: tuple[Callable[[argparse._SubParsersAction], None], ...] = (
    _add_data_commands, _add_model_commands, _add_notebook_commands,
)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="sgn", description="Semantic Grouping Network research companion")
    parser.add_argument("--version", action="version", version=f"sgn {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="log warnings only")
    parser.add_argument("--threads", default=None,
                        help=f"torch threads (default: ${THREADS_ENV}, else one per core)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add_commands in COMMAND_GROUPS:
        add_commands(sub)
    return parser


def _set_threads(flag: str | None) -> None:
    """Apply ``--threads`` or ``$SGN_THREADS`` to torch's intra-op pool (neither: torch's default)."""
    import torch

    text = os.environ.get(THREADS_ENV)
    if flag is not None:
        torch.set_num_threads(thread_count(flag, "--threads"))
    elif text is not None:
        torch.set_num_threads(thread_count(text, f"${THREADS_ENV}"))


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as done:  # a bad command line (status 2, one line), --help or --version (0)
        return int(done.code or 0)
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
