"""A loopback HTTP server and tiny data-set files in the true formats, for tests/test_download.py.

Nothing here touches any address but 127.0.0.1: the server binds to it on a free port,
and every downloader under test is pointed at it with ``--mirror``.

:class:`MirrorServer` serves files by URL path with ``Range`` support, answers
``/watch?v=ID`` with the media file ``videos/ID.*`` (the mirror layout of
:mod:`sgn.download.youtube`), and can misbehave on purpose: drop the connection
half-way through a file once, or ignore ``Range`` headers.

The builders write the smallest files that still have each set's real layout:
a FUSS ``ssdata`` tar.gz, a MUSDB18 zip of five-stream STEMS mp4 files, a MUSIC
JSON id list with its videos, and a VGG-Sound CSV with its videos.
"""

from __future__ import annotations

import csv
import hashlib
import http.server
import io
import json
import mimetypes
import re
import subprocess
import tarfile
import threading
import urllib.parse
import zipfile
from pathlib import Path

import numpy as np
import soundfile as sf

from sgn.download.ffmpeg import ffmpeg_exe

RATE = 16000  # FUSS's rate; the other fixtures use their own (44.1 kHz for MUSDB18)


class MirrorServer:
    """A threaded HTTP server on 127.0.0.1 serving ``files`` (URL path -> bytes).

    Args:
        files: the served files, keyed by URL path (``/records/1/files/x.zip``).

    Attributes:
        requests: ``(path, range header or None)`` of every GET, in order.
        drop_once: URL paths whose first GET sends only half of the body, then closes.
        ignore_range: URL paths served whole (status 200) whatever the ``Range`` header.
    """

    def __init__(self, files: dict[str, bytes]):
        self.files = dict(files)
        self.requests: list[tuple[str, str | None]] = []
        self.drop_once: set[str] = set()
        self.ignore_range: set[str] = set()
        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``, the ``--mirror`` value."""
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def __enter__(self) -> "MirrorServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def _resolve(self, raw_path: str) -> str | None:
        parsed = urllib.parse.urlsplit(raw_path)
        if parsed.path == "/watch":
            video = urllib.parse.parse_qs(parsed.query).get("v", [""])[0]
            return next((p for p in self.files if re.fullmatch(rf"/videos/{re.escape(video)}\.\w+", p)), None)
        return parsed.path if parsed.path in self.files else None

    def _handler(self):
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep pytest output clean
                pass

            def do_HEAD(self):
                self._serve(body=False)

            def do_GET(self):
                server.requests.append((self.path, self.headers.get("Range")))
                self._serve(body=True)

            def _serve(self, body: bool):
                path = server._resolve(self.path)
                if path is None:
                    self.send_error(404)
                    return
                data = server.files[path]
                start, status = 0, 200
                match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
                if match and path not in server.ignore_range:
                    start, status = int(match.group(1)), 206
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.end_headers()
                        return
                self.send_response(status)
                self.send_header("Content-Type", mimetypes.guess_type(path)[0] or "application/octet-stream")
                self.send_header("Content-Length", str(len(data) - start))
                self.send_header("Accept-Ranges", "bytes")
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.end_headers()
                if not body:
                    return
                payload = data[start:]
                if path in server.drop_once:
                    server.drop_once.discard(path)
                    self.wfile.write(payload[: len(payload) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                try:
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # clients that only probe the headers hang up early

        return Handler


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def tone(freq: float, seconds: float, rate: int, seed: int = 0) -> np.ndarray:
    """A tone with a little noise (so that no two clips are identical), peak 0.5."""
    t = np.arange(int(seconds * rate)) / rate
    noise = np.random.default_rng(seed).normal(0, 0.02, len(t))
    return (0.45 * np.sin(2 * np.pi * freq * t) + noise).astype(np.float32)


def wav_bytes(wave: np.ndarray, rate: int) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, wave, rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def encode_media(out: Path, freqs: list[float], seconds: float, rate: int = 44100) -> bytes:
    """Encode one AAC stream per frequency into an mp4/m4a with ffmpeg; return the file's bytes."""
    cmd = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y"]
    for freq in freqs:
        cmd += ["-f", "lavfi", "-i", f"sine=frequency={freq}:duration={seconds}:sample_rate={rate}"]
    for k in range(len(freqs)):
        cmd += ["-map", str(k)]
    cmd += ["-c:a", "aac", "-b:a", "48k", "-ac", "2", str(out)]
    subprocess.run(cmd, check=True)
    return out.read_bytes()


def fuss_archive(top: str = "ssdata", seconds: float = 1.0) -> bytes:
    """A FUSS-shaped ``.tar.gz``: ``top/{train,validation,eval}`` examples and example lists.

    Each example has a mixture, a background and one or two foreground sources, and a
    segments ``.txt``; ``top/<split>_example_list.txt`` lists mixture then sources.
    """
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:

        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(f"{top}/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))

        for split, count in (("train", 3), ("validation", 2), ("eval", 2)):
            lines = []
            for k in range(count):
                example = f"example{k:05d}"
                sources = [("background0", 110.0 + 10 * k)] + [
                    (f"foreground{j}", 600.0 + 150 * j + 20 * k) for j in range(1 + k % 2)
                ]
                waves = [tone(freq, seconds, RATE, seed=k * 7 + j) for j, (_, freq) in enumerate(sources)]
                paths = [f"{split}/{example}.wav"]
                add(paths[0], wav_bytes(np.clip(sum(waves), -1, 1), RATE))
                for (role, _), wave in zip(sources, waves):
                    path = f"{split}/{example}_sources/{role}_sound.wav"
                    add(path, wav_bytes(wave, RATE))
                    paths.append(path)
                add(f"{split}/{example}.txt", b"0.000 1.000 sound\n")
                add(f"{split}/{example}.jams", b"{}")
                lines.append(" ".join(paths))
            add(f"{split}_example_list.txt", ("\n".join(lines) + "\n").encode())
    return buffer.getvalue()


# One MUSDB18 validation track (musdb's list), so the fixture's val split is not empty.
MUSDB_TRACKS = {
    "train": ["A Classic Education - NightOwl", "Actions - One Minute Smile"],
    "test": ["Al James - Schoolboy Facination"],
}


def musdb_archive(workdir: Path, seconds: float = 1.2) -> bytes:
    """A MUSDB18-shaped zip: ``train/`` and ``test/`` folders of five-stream ``.stem.mp4`` files.

    Stream ``j`` (1-4: drums, bass, other, vocals) of the ``k``-th track is a tone at
    ``220 j + 10 k`` Hz, so a test can tell which stream a prepared clip came from;
    the mixture stream (0) is a tone at their mean frequency.
    """
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for k, (split, track) in enumerate((s, t) for s, tracks in MUSDB_TRACKS.items() for t in tracks):
            stems = [220.0 * (j + 1) + 10 * k for j in range(4)]
            data = encode_media(workdir / f"musdb{k}.mp4", [float(np.mean(stems)), *stems], seconds)
            archive.writestr(f"{split}/{track}.stem.mp4", data)
    return buffer.getvalue()


def music_list(videos: dict[str, list[str]]) -> bytes:
    """A MUSIC id list in the roudimit/MUSIC_dataset format."""
    return json.dumps({"version": 1.0, "videos": videos}, indent=4).encode()


def vggsound_csv(rows: list[tuple[str, int, str, str]]) -> bytes:
    """A VGG-Sound CSV: no header; YouTube id, start second, label (quoted if needed), split."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    return buffer.getvalue().encode()


def tar_with(members: list[tarfile.TarInfo], data: bytes = b"x") -> bytes:
    """A tar.gz with the given (possibly malicious) members; regular files get ``data``."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for info in members:
            if info.isreg():
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
    return buffer.getvalue()
