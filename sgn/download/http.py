"""Resumable, verified HTTP downloads with the standard library only.

:func:`fetch` writes to ``DEST.part`` and continues an existing ``.part`` with a
``Range: bytes=N-`` request (a server that ignores ``Range`` and answers 200 makes it
start over). A dropped connection is retried from where it stopped, with
:data:`RETRY_DELAYS_S` between attempts. The finished file is checked against its
expected size and digest and only then renamed onto ``DEST``; a mismatch moves it
aside as ``DEST.bad`` and raises :class:`~sgn.utils.SGNError`.

:func:`mirror_url` implements ``--mirror``: the scheme and host of an official URL are
replaced by the mirror's, the path and query are kept.
"""

from __future__ import annotations

import http.client
import logging
import os
import re
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from tqdm.auto import tqdm

from sgn import __version__
from sgn.download.manifest import Checksum, file_digest
from sgn.utils import SGNError, atomic_path

log = logging.getLogger(__name__)

USER_AGENT = f"sgn/{__version__} (data set downloader; Python urllib)"
# Seconds to wait before each retry of an interrupted or failed request.
RETRY_DELAYS_S: tuple[float, ...] = (1.0, 4.0, 15.0)
TIMEOUT_S = 60.0
CHUNK = 1 << 16
_NETWORK_ERRORS = (urllib.error.URLError, http.client.HTTPException, ConnectionError, socket.timeout, TimeoutError)


def mirror_url(url: str, mirror: str | None) -> str:
    """Replace the scheme and host of ``url`` by ``mirror`` (which may add a path prefix).

    ``mirror_url("https://zenodo.org/records/1/files/a.zip", "http://127.0.0.1:8000")``
    is ``"http://127.0.0.1:8000/records/1/files/a.zip"``.

    Raises:
        SGNError: ``mirror`` is not an http(s) URL.
    """
    if mirror is None:
        return url
    base = urllib.parse.urlsplit(mirror)
    if base.scheme not in ("http", "https") or not base.netloc:
        raise SGNError(f"--mirror: expected a base URL like http://host:port, got {mirror!r}")
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit((base.scheme, base.netloc, base.path.rstrip("/") + parts.path, parts.query, ""))


def _open(url: str, offset: int = 0, method: str = "GET"):
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    return urllib.request.urlopen(urllib.request.Request(url, headers=headers, method=method), timeout=TIMEOUT_S)


def _http_error(url: str, err: urllib.error.HTTPError) -> SGNError:
    hint = " (the host may require you to log in or request access)" if err.code in (401, 403) else ""
    return SGNError(f"{url}: HTTP {err.code} {err.reason}{hint}")


def _unreachable(url: str, err: Exception) -> SGNError:
    reason = getattr(err, "reason", None) or err
    host = urllib.parse.urlsplit(url).netloc
    return SGNError(f"{url}: cannot reach {host} ({reason})")


def fetch_bytes(url: str) -> bytes:
    """GET a small file (an id list, a JSON record) into memory, with retries.

    Raises:
        SGNError: an HTTP error status, or the host cannot be reached.
    """
    delays = iter(RETRY_DELAYS_S)
    while True:
        try:
            with _open(url) as response:
                return response.read()
        except urllib.error.HTTPError as err:
            delay = next(delays, None)
            if err.code < 500 or delay is None:
                raise _http_error(url, err) from None
            log.warning("%s: HTTP %d; retrying in %.0f s", url, err.code, delay)
        except _NETWORK_ERRORS as err:
            delay = next(delays, None)
            if delay is None:
                raise _unreachable(url, err) from None
            log.warning("%s: %s; retrying in %.0f s", url, err, delay)
        time.sleep(delay)


def _total_size(response, offset: int) -> int | None:
    """The full file size a response starting at ``offset`` implies, if it says."""
    content_range = response.headers.get("Content-Range") or ""
    match = re.fullmatch(r"bytes (?:\d+-\d+|\*)/(\d+)", content_range.strip())
    if match:
        return int(match.group(1))
    length = response.headers.get("Content-Length")
    return offset + int(length) if length and length.isdigit() else None


def _download_to(url: str, part: Path, progress: bool) -> None:
    """Append the rest of ``url`` to ``part`` (resuming), retrying dropped connections."""
    for delay in (*RETRY_DELAYS_S, None):  # None: the last attempt
        offset = part.stat().st_size if part.exists() else 0
        try:
            response = _open(url, offset)
        except urllib.error.HTTPError as err:
            if err.code == 416 and offset:
                # Nothing past ``offset``: complete if the server's size agrees, else start over.
                if _total_size(err, 0) == offset:
                    return
                part.unlink()
            elif err.code < 500 or delay is None:
                raise _http_error(url, err) from None
            log.warning("%s: HTTP %d; retrying", url, err.code)
            time.sleep(delay or 0.0)
            continue
        except _NETWORK_ERRORS as err:
            if delay is None:
                raise _unreachable(url, err) from None
            log.warning("%s: %s; retrying in %.0f s", url, err, delay)
            time.sleep(delay)
            continue
        with response:
            if offset and response.status == 200:
                log.info("%s: the server ignored the Range request; downloading from the start", url)
                offset = 0
            elif offset:
                log.info("%s: resuming at byte %d", url, offset)
            total = _total_size(response, offset)
            try:
                with open(part, "r+b" if offset else "wb") as f, tqdm(
                    total=total, initial=offset, unit="B", unit_scale=True, desc=part.name[: -len(".part")],
                    disable=not progress, leave=False,
                ) as bar:
                    f.seek(offset)
                    f.truncate()
                    for chunk in iter(lambda: response.read(CHUNK), b""):
                        f.write(chunk)
                        bar.update(len(chunk))
            except _NETWORK_ERRORS as err:
                log.warning("%s: connection lost at byte %d (%s)", url, part.stat().st_size, err)
            else:
                if total is None or part.stat().st_size >= total:
                    return
                log.warning("%s: connection closed at byte %d of %d", url, part.stat().st_size, total)
        if delay is None:
            break
        log.info("%s: resuming in %.0f s", url, delay)
        time.sleep(delay)
    raise SGNError(f"{url}: download incomplete after {len(RETRY_DELAYS_S) + 1} attempts; run again to resume")


def verify(path: Path, size: int | None, checksum: Checksum | None) -> str | None:
    """Why ``path`` does not match ``size`` and ``checksum`` (``None`` if it matches)."""
    actual_size = path.stat().st_size
    if size is not None and actual_size != size:
        return f"size {actual_size} bytes, expected {size}"
    if checksum is not None:
        actual = file_digest(path, checksum.algorithm)
        if actual != checksum.hexdigest:
            return f"{checksum.algorithm} {actual}, expected {checksum.hexdigest}"
    return None


def move_aside(path: Path, dest: Path | None = None) -> Path:
    """Rename ``path`` to ``DEST.bad`` (``dest`` defaults to ``path``; an older one is replaced); return it."""
    dest = dest or path
    bad = dest.with_name(dest.name + ".bad")
    os.replace(path, bad)
    return bad


def fetch(
    url: str,
    dest: str | os.PathLike,
    *,
    size: int | None = None,
    checksum: Checksum | None = None,
    progress: bool = True,
) -> Path:
    """Download ``url`` to ``dest``, resumably, and verify it.

    A ``dest`` already present is verified and reused, so a file fetched by hand (for
    example from a host that needs a login) can be dropped in place.

    Args:
        url: what to fetch.
        dest: where the verified file ends up; ``dest.part`` holds a partial download.
        size: the expected size in bytes, if known.
        checksum: the expected digest, if known.
        progress: show a progress bar.

    Returns:
        ``dest`` as a :class:`~pathlib.Path`.

    Raises:
        SGNError: an HTTP error, an unreachable host, or a file that does not match its
            size or checksum (it is moved aside to ``dest.bad`` first).
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    if dest.exists():
        target = dest
        log.info("%s: already downloaded; verifying", dest)
    else:
        _download_to(url, part, progress)
        target = part
    problem = verify(target, size, checksum)
    if problem is not None:
        bad = move_aside(target, dest)
        raise SGNError(f"{dest.name}: {problem}; moved the file aside to {bad}")
    if target is part:
        os.replace(part, dest)
    if checksum is None:
        log.warning("%s: no checksum known for this file; only its size and the archive's own CRCs check it", dest.name)
    else:
        log.info("%s: %s verified", dest, checksum.algorithm)
    return dest


def fetch_cached(url: str, dest: str | os.PathLike) -> Path:
    """Fetch a small file (an id list) to ``dest`` atomically, unless ``dest`` exists."""
    dest = Path(dest)
    if not dest.exists():
        data = fetch_bytes(url)
        with atomic_path(dest) as tmp:
            tmp.write_bytes(data)
        log.info("%s -> %s", url, dest)
    return dest
