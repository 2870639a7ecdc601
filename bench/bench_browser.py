"""The in-browser listening room: separation time in headless Chromium, and the page's weight.

Serves a built book (default ``book/_build/html``) on 127.0.0.1, opens the listening room in
headless Chromium (Debian's ``chromium`` + ``chromium-driver``; every other host made
unresolvable) and separates ``--seconds`` of audio into two classes through the page's own
``window.sgnRoom.separate`` (the worker: STFT, onnxruntime-web, iSTFT, cross-fade; no
spectrograms). The first call also loads the model and the WebAssembly runtime; that
load is reported on its own. ``--config cpu`` replaces the book's model by a freshly
initialised model of that config (same classes), for a book built without a trained one::

    python bench/bench_browser.py --book book/_build/html --config cpu --seconds 6 30
"""

from __future__ import annotations

import argparse
import functools
import http.server
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from common import machine_line

ROOM_PAGE = "notebooks/06_listen.html"
ROOM_ASSETS = "_static/06_listen"
FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
         "--disable-background-networking", "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1")
# a deterministic two-tone signal with noise: the model's work does not depend on the content
SEPARATE = """
const [seconds, classes, done] = arguments;
const rate = 11025, n = Math.round(seconds * rate), x = new Float32Array(n);
let seed = 1;
for (let i = 0; i < n; i++) {
  seed = (seed * 16807) % 2147483647;
  x[i] = 0.3 * Math.sin(2 * Math.PI * 220 * i / rate) + 0.2 * Math.sin(2 * Math.PI * 660 * i / rate) + 0.05 * (seed / 2147483647 - 0.5);
}
const started = performance.now();
window.sgnRoom.separate(x, classes).then(
  (r) => done({wall: (performance.now() - started) / 1000, worker: r.seconds, model: r.modelSeconds}),
  (e) => done({error: String(e)}));
"""


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--book", type=Path, default=Path("book/_build/html"), help="a built book")
    parser.add_argument("--config", default=None, help="replace the model by a fresh one of this config (e.g. cpu)")
    parser.add_argument("--seconds", type=float, nargs="+", default=[6.0, 30.0])
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args(argv)
    if not (args.book / ROOM_PAGE).is_file():
        parser.error(f"--book {args.book}: no {ROOM_PAGE}; build the book first (make book)")
    if min(args.seconds) <= 0 or args.reps < 1:
        parser.error("--seconds must be positive and --reps at least 1")
    return args


def fresh_model(assets: Path, config_name: str) -> None:
    """Overwrite the room's model.onnx/model.json with a freshly initialised ``config_name`` model."""
    import torch

    from sgn.checkpoint import build_model, save_checkpoint
    from sgn.config import load_config
    from sgn.lab.export import export_checkpoint

    classes = json.loads((assets / "model.json").read_text())["classes"]
    torch.manual_seed(0)
    config = load_config(config_name)
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = save_checkpoint(Path(tmp) / "fresh.pt", build_model(config, classes).eval(), config)
        export_checkpoint(checkpoint, assets)


def weights(html: Path) -> list[tuple[str, float]]:
    """(what, MB) of what the room's page loads: its HTML, the model, the runtime, the clips."""
    assets, static = html / ROOM_ASSETS, html / "_static"
    clips = sum(p.stat().st_size for p in (assets / "clips").glob("*.ogg"))
    return [("listening room HTML", (html / ROOM_PAGE).stat().st_size / 1e6),
            ("model.onnx", (assets / "model.onnx").stat().st_size / 1e6),
            ("onnxruntime-web WebAssembly (.wasm)", (static / "ort-wasm-simd-threaded.wasm").stat().st_size / 1e6),
            ("onnxruntime-web JavaScript (.mjs)", sum((static / f).stat().st_size for f in (
                "ort.wasm.min.mjs", "ort-wasm-simd-threaded.mjs")) / 1e6),
            ("room scripts (room.js, room-worker.js, dsp.js)", sum((static / f).stat().st_size for f in (
                "room.js", "room-worker.js", "dsp.js")) / 1e6),
            (f"test clips ({len(list((assets / 'clips').glob('*.ogg')))} OGG)", clips / 1e6)]


def serve(html: Path):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(
        type("Quiet", (http.server.SimpleHTTPRequestHandler,), {"log_message": lambda *a: None}), directory=str(html)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def chromium():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or shutil.which("chromium-browser")
    for flag in FLAGS:
        options.add_argument(flag)
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager may not download anything
    chrome = webdriver.Chrome(service=Service(executable_path=shutil.which("chromedriver")), options=options)
    chrome.set_script_timeout(600)
    return chrome


def measure(chrome, url: str, seconds: list[float], reps: int, classes: list[str]) -> tuple[float, list]:
    """(first call's load + separation of 1 s, [(seconds, median wall, in the worker, in the model)])."""
    chrome.get(url)
    deadline = time.monotonic() + 60
    while chrome.execute_script("return window.sgnRoom && window.sgnRoom.status") != "ready":
        if time.monotonic() > deadline:
            raise SystemExit(f"the room did not start: {chrome.execute_script('return window.sgnRoom')}")
        time.sleep(0.2)
    first = chrome.execute_async_script(SEPARATE, 1.0, classes)
    rows = []
    for length in seconds:
        runs = [chrome.execute_async_script(SEPARATE, length, classes) for _ in range(reps)]
        if any("error" in r for r in runs):
            raise SystemExit(f"separation failed: {runs}")
        rows.append((length, *(statistics.median(r[key] for r in runs) for key in ("wall", "worker", "model"))))
    return first["wall"], rows


def main(argv=None) -> None:
    args = parse_args(argv)
    print(machine_line())
    print(f"load average before: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    with tempfile.TemporaryDirectory() as tmp:
        html = Path(tmp) / "html"
        shutil.copytree(args.book, html)
        if args.config:
            fresh_model(html / ROOM_ASSETS, args.config)
        meta = json.loads((html / ROOM_ASSETS / "model.json").read_text())
        server, chrome = serve(html), chromium()
        try:
            url = f"http://127.0.0.1:{server.server_address[1]}/{ROOM_PAGE}"
            load, rows = measure(chrome, url, args.seconds, args.reps, meta["classes"][:2])
        finally:
            chrome.quit()
            server.shutdown()
        sizes = weights(html)
    model = args.config or "the book's"
    print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print(f"\nmodel: {model} {meta['arch']} ({len(meta['classes'])} classes, n_fft {meta['n_fft']}, hop "
          f"{meta['hop']}, chunk {meta['chunk_samples']} samples at {meta['sample_rate']} Hz); 2 classes separated")
    print(f"first call (loads the model and WebAssembly, then separates 1 s): {load:.2f} s\n")
    print("| audio (s) | in-browser separation (s), median | in the worker (s) | of which onnxruntime (s) "
          "| real-time factor |")
    print("|---|---|---|---|---|")
    for length, wall, worker, model in rows:
        print(f"| {length:g} | {wall:.2f} | {worker:.2f} | {model:.2f} | {wall / length:.3f} |")
    print("\n| what the page loads | MB |\n|---|---|")
    for what, mb in sizes:
        print(f"| {what} | {mb:.2f} |")


if __name__ == "__main__":
    sys.exit(main())
