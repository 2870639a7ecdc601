"""Time `make book` from nothing and again with nothing changed.

Clones the repository's committed HEAD into a temporary folder (no .venv, data, runs or
results: "from nothing", except pip's and npm's download caches), runs ``make book``
there, runs it a second time, and prints a markdown table of both wall times with the
time the first build spent per notebook (from the executed notebooks' records).

Usage::

    python bench/bench_book.py                   # the cpu profile: about 25 minutes on 2 cores
    python bench/bench_book.py --profile smoke   # a few minutes
    python bench/bench_book.py --keep DIR        # build in DIR and keep it (e.g. to open the book)

Run it on an otherwise idle machine: the figure is wall time.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import machine_line  # noqa: E402

from sgn.lab.report import executed_notebooks  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def timed_make(clone: Path, profile: str, log_path: Path) -> float:
    """Run ``make book PROFILE=profile`` in ``clone``; its output goes to ``log_path``. Wall seconds."""
    start = time.perf_counter()
    with open(log_path, "w") as log:
        done = subprocess.run(["make", "book", f"PROFILE={profile}"], cwd=clone, stdout=log, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        sys.exit(f"bench_book: make book failed (exit {done.returncode}); see {log_path}")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="cpu", help="notebook profile (default: cpu, what `make book` runs)")
    parser.add_argument("--keep", type=Path, help="build in this folder and keep it (default: a temporary folder)")
    args = parser.parse_args()

    workdir = args.keep or Path(tempfile.mkdtemp(prefix="sgn-bench-book-"))
    clone = workdir / "sgn"
    if clone.exists():
        sys.exit(f"bench_book: {clone} exists; pass an empty --keep folder")
    subprocess.run(["git", "clone", "--quiet", "--no-hardlinks", str(REPO), str(clone)], check=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=clone, capture_output=True, text=True,
                            check=True).stdout.strip()
    print(f"building commit {commit} in {clone}; logs: {workdir}/make_book_*.log", file=sys.stderr)
    fresh = timed_make(clone, args.profile, workdir / "make_book_fresh.log")
    cached = timed_make(clone, args.profile, workdir / "make_book_cached.log")

    print(machine_line())
    print(f"\ncommit {commit}, profile {args.profile}\n")
    print("| run | wall time |\n|---|---|")
    print(f"| `make book` from nothing (venv, data, notebooks, book) | {fresh / 60:.1f} min |")
    print(f"| `make book` again, nothing changed | {cached:.0f} s |")
    runs = executed_notebooks(clone / "results" / args.profile / "executed")
    print("\n| notebook | minutes |\n|---|---|")
    for row in runs.itertuples():
        print(f"| {row.notebook} | {row.minutes:.1f} |")
    print(f"| all notebooks | {runs['minutes'].sum():.1f} |")
    if args.keep is None:
        shutil.rmtree(workdir)


if __name__ == "__main__":
    main()
