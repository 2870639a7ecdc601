"""Print the md5 Zenodo publishes for files of a record, as manifest lines.

Run it where the internet is reachable, to pin files in a shipped manifest:

    python data_scripts/zenodo_checksums.py 3694384 FUSS_ssdata.tar.gz FUSS_ssdata_reverb.tar.gz \
        >> sgn/download/manifests/fuss.md5

Without file names it prints every file of the record. The lines are in the
``md5sum`` format that ``sgn data download --checksums`` and the shipped manifests use;
a comment line before them records the record and the sizes.
"""

from __future__ import annotations

import argparse
import sys

from sgn.download import zenodo
from sgn.utils import SGNError


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("record", type=int, help="Zenodo record id, e.g. 3694384")
    parser.add_argument("names", nargs="*", help="file names (default: all files of the record)")
    args = parser.parse_args()
    try:
        files = zenodo.record_files(args.record)
    except SGNError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    names = args.names or sorted(files)
    unknown = [name for name in names if name not in files]
    if unknown:
        listing = ", ".join(sorted(files))
        print(f"error: record {args.record} has no file {unknown[0]!r}; it has {listing}", file=sys.stderr)
        return 2
    sizes = ", ".join(f"{name} {files[name][1]:,} bytes" for name in names)
    print(f"# Zenodo record {args.record}: {sizes}")
    for name in names:
        print(f"{files[name][0].hexdigest}  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
