// The listening room's builder, in the reader's browser (no kernel): mix the instruments the
// reader ticks, or a file they drop in, and separate it with the exported model (model.onnx,
// run by onnxruntime-web in room-worker.js). Loaded by book/_ext/sgn_book.py on the page that
// holds <div id="sgn-room" data-assets="CHAPTER">; its files are under _static/CHAPTER/.
// window.sgnRoom exposes the state and the last result (the browser tests read it).
import { sdr } from "./dsp.js";

const MAX_SECONDS = 30; // a dropped file is cut to this (memory and time stay bounded)
const MIN_CLASSES = 2, MAX_CLASSES = 4;
const COLUMNS = 600; // spectrogram width in pixels
const room = (window.sgnRoom = { status: "idle", result: null, error: null });

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "style") node.style.cssText = v;
    else if (k in node && typeof v !== "string") node[k] = v;
    else node.setAttribute(k, v);
  }
  node.append(...children);
  return node;
}

/** The worker, created on the first separation: the 14 MB of WebAssembly load only when asked for. */
class Model {
  constructor(assets) { this.assets = assets; this.worker = null; this.pending = new Map(); this.next = 0; }

  start(onProgress) {
    this.onProgress = onProgress;
    if (this.loading) return this.loading;
    this.worker = new Worker(new URL("room-worker.js", import.meta.url), { type: "module" });
    this.worker.onmessage = ({ data }) => this._receive(data);
    this.worker.onerror = (event) => this._fail(`the model's worker failed: ${event.message || "no detail"}`);
    this.loading = this._call({ type: "load", model: `${this.assets}model.onnx`, meta: `${this.assets}model.json` })
      .catch((error) => { // the next press tries again with a fresh worker
        this.worker.terminate();
        this.loading = null;
        throw error;
      });
    return this.loading;
  }

  _call(message, transfer = []) {
    const id = ++this.next;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.worker.postMessage({ ...message, id }, transfer);
    });
  }

  _receive(data) {
    if (data.type === "progress") return this.onProgress && this.onProgress(data.done, data.total);
    const waiting = this.pending.get(data.id);
    if (!waiting) return;
    this.pending.delete(data.id);
    data.type === "error" ? waiting.reject(new Error(data.message)) : waiting.resolve(data);
  }

  _fail(message) {
    for (const { reject } of this.pending.values()) reject(new Error(message));
    this.pending.clear();
  }

  separate(mixture, classIds) { return this._call({ type: "separate", mixture: mixture.slice(), classIds }); }

  spectrograms(signals) {
    return this._call({ type: "spectrograms", signals: signals.map((s) => s.slice()), columns: COLUMNS });
  }
}

/** Decode audio with Web Audio at `rate` (the browser resamples), downmixed to mono. */
async function decode(bytes, rate) {
  const buffer = await new OfflineAudioContext(1, 1, rate).decodeAudioData(bytes);
  const mono = new Float32Array(buffer.length);
  for (let c = 0; c < buffer.numberOfChannels; c++) {
    const channel = buffer.getChannelData(c);
    for (let i = 0; i < mono.length; i++) mono[i] += channel[i] / buffer.numberOfChannels;
  }
  return mono;
}

/** A 16-bit WAV blob URL (scaled down by its peak where it exceeds full scale, never clipped). */
function wavUrl(wave, rate) {
  const peak = wave.reduce((m, v) => Math.max(m, Math.abs(v)), 0), scale = 1 / Math.max(1, peak / 0.999);
  const view = new DataView(new ArrayBuffer(44 + 2 * wave.length));
  const text = (at, s) => [...s].forEach((ch, i) => view.setUint8(at + i, ch.charCodeAt(0)));
  text(0, "RIFF"); view.setUint32(4, 36 + 2 * wave.length, true); text(8, "WAVEfmt ");
  view.setUint32(16, 16, true); view.setUint16(20, 1, true); view.setUint16(22, 1, true);
  view.setUint32(24, rate, true); view.setUint32(28, 2 * rate, true); view.setUint16(32, 2, true);
  view.setUint16(34, 16, true); text(36, "data"); view.setUint32(40, 2 * wave.length, true);
  wave.forEach((v, i) => view.setInt16(44 + 2 * i, Math.round(Math.max(-1, Math.min(1, v * scale)) * 32767), true));
  return URL.createObjectURL(new Blob([view], { type: "audio/wav" }));
}

const COLORS = [[0, 0, 4], [81, 18, 124], [183, 55, 121], [252, 137, 97], [252, 253, 191]]; // magma, 5 stops

function drawSpectrogram({ image, width, height }) {
  const canvas = el("canvas", { width, height, style: "width:100%;height:140px;image-rendering:pixelated" });
  const context = canvas.getContext("2d"), pixels = context.createImageData(width, height);
  const top = image.reduce((m, v) => Math.max(m, v), -120), floor = top - 80;
  for (let f = 0; f < height; f++) {
    for (let x = 0; x < width; x++) {
      const level = Math.min(1, Math.max(0, (image[f * width + x] - floor) / 80)) * (COLORS.length - 1);
      const i = Math.min(COLORS.length - 2, Math.floor(level)), frac = level - i, at = 4 * ((height - 1 - f) * width + x);
      for (let c = 0; c < 3; c++) pixels.data[at + c] = COLORS[i][c] + frac * (COLORS[i + 1][c] - COLORS[i][c]);
      pixels.data[at + 3] = 255;
    }
  }
  context.putImageData(pixels, 0, 0);
  return canvas;
}

function card(title, wave, rate, spectrogram, note = "") {
  return el("div", { class: "sgn-room-card", style: "flex:1 1 300px;min-width:260px;border:1px solid #ccc;border-radius:6px;padding:6px" },
    el("div", { style: "font-weight:bold" }, title, note ? el("span", { style: "font-weight:normal" }, ` ${note}`) : ""),
    el("audio", { controls: true, src: wavUrl(wave, rate), style: "width:100%" }), drawSpectrogram(spectrogram));
}

/** The room's controls and results, built into `root`. */
class Room {
  constructor(root, assets, meta, clips) {
    this.root = root; this.meta = meta; this.clips = clips; this.model = new Model(assets); this.assets = assets;
    this.rows = Object.keys(clips.clips).map((name) => this._instrumentRow(name));
    this.status = el("p", { role: "status", class: "sgn-room-status" }, "Tick two to four instruments and press separate.");
    this.progress = el("progress", { max: 1, value: 0, style: "width:100%;display:none" });
    this.results = el("div", { class: "sgn-room-results" });
    this.mixButton = el("button", { type: "button", id: "sgn-room-separate", class: "btn btn-primary" }, "separate the mix");
    this.mixButton.onclick = () => this.run(() => this.mixFromClips());
    this.file = el("input", { type: "file", accept: "audio/*", id: "sgn-room-file" });
    this.fileButton = el("button", { type: "button", id: "sgn-room-separate-file", class: "btn btn-secondary" },
      "separate my file");
    this.fileButton.onclick = () => this.run(() => this.mixFromFile(this.file.files[0]));
    const drop = el("div", { style: "border:2px dashed #aaa;border-radius:6px;padding:8px;margin:8px 0" },
      `Or drop an audio file here (at most ${MAX_SECONDS} s are used; it is resampled to ${meta.sample_rate} Hz and mixed to mono), `,
      "tick the instruments to extract, and press ", this.fileButton, el("br"), this.file,
      el("br"), el("small", {}, "What to expect: the model heard only instruments rendered from General-MIDI banks, never a ",
        "recording. On a bank it never heard it already loses SDR (the unseen-bank tabs above; chapter 12 measures it), ",
        "and a real recording, with its own players, rooms and microphones, lies further away still: expect less than ",
        "in the examples, most of all where the instruments overlap in pitch."));
    drop.ondragover = (event) => event.preventDefault();
    drop.ondrop = (event) => { event.preventDefault(); this.file.files = event.dataTransfer.files; };
    root.replaceChildren(
      el("div", { style: "display:flex;flex-wrap:wrap;gap:4px 18px" }, ...this.rows.map((r) => r.node)),
      el("p", {}, this.mixButton), drop, this.progress, this.status, this.results,
      el("p", { style: "font-size:90%" }, "SDR here is the plain signal-to-distortion ratio, 10 log10(|s|² / |s − ŝ|²), ",
        "of each estimate ŝ against its reference s, computed in this page; it is not BSS-eval's SDR (which allows a ",
        "distortion filter), the figure of the chapters' tables."));
  }

  _instrumentRow(name) {
    const files = this.clips.clips[name];
    const box = el("input", { type: "checkbox", value: name, class: "sgn-room-class", id: `sgn-room-${name}` });
    const level = el("input", { type: "range", min: "0.25", max: "2", step: "0.05", value: "1", class: "sgn-room-level",
      title: `level of ${name}`, style: "width:90px" });
    const shown = el("span", { style: "font-size:85%;width:2.5em;display:inline-block" }, "1.00");
    level.oninput = () => { shown.textContent = Number(level.value).toFixed(2); };
    const clip = el("select", { class: "sgn-room-clip", title: `test clip of ${name}` },
      ...files.map((f, i) => el("option", { value: String(i) }, `clip ${i + 1}`)));
    if (files.length < 2) clip.style.display = "none";
    const node = el("label", { style: "display:flex;align-items:center;gap:6px;white-space:nowrap" },
      box, el("span", { style: "width:8.5em" }, name.replace(/_/g, " ")), clip, level, shown);
    return { name, node, box, level, clip };
  }

  ticked() { return this.rows.filter((r) => r.box.checked); }

  say(text) { this.status.textContent = text; }

  async loadClip(row) {
    const path = this.clips.clips[row.name][Number(row.clip.value)];
    return decode(await (await fetch(`${this.assets}${path}`)).arrayBuffer(), this.meta.sample_rate);
  }

  /** The mixture of the ticked clips: each scaled by its level and 1 / N, the shortest's length. */
  async mixFromClips() {
    const rows = this.ticked();
    if (rows.length < MIN_CLASSES || rows.length > MAX_CLASSES) throw new Error(`tick two to four instruments (${rows.length} ticked)`);
    const waves = await Promise.all(rows.map((r) => this.loadClip(r)));
    const length = Math.min(...waves.map((w) => w.length));
    const references = waves.map((w, k) => w.subarray(0, length).map((v) => (v * Number(rows[k].level.value)) / rows.length));
    const mixture = new Float32Array(length);
    references.forEach((r) => r.forEach((v, i) => { mixture[i] += v; }));
    return { mixture, classes: rows.map((r) => r.name), references, kind: "clips" };
  }

  async mixFromFile(file) {
    if (!file) throw new Error("choose or drop an audio file first");
    const rows = this.ticked();
    if (rows.length < 1 || rows.length > MAX_CLASSES) throw new Error("tick one to four instruments to extract");
    let wave;
    try { wave = await decode(await file.arrayBuffer(), this.meta.sample_rate); }
    catch { throw new Error(`${file.name}: this browser cannot read it as audio`); }
    if (wave.length < this.meta.n_fft) throw new Error(`${file.name}: too short (${wave.length} samples at ${this.meta.sample_rate} Hz)`);
    const cut = wave.length > MAX_SECONDS * this.meta.sample_rate;
    return { mixture: cut ? wave.slice(0, MAX_SECONDS * this.meta.sample_rate) : wave, classes: rows.map((r) => r.name),
      references: null, kind: "file", note: cut ? ` (its first ${MAX_SECONDS} s)` : "" };
  }

  /** Separate `mixture` into `classes` in the worker: {estimates: Float32Array[], seconds}. */
  async separate(mixture, classes) {
    this.progress.style.display = "";
    this.progress.value = 0;
    const onProgress = (done, total) => { this.progress.value = done / total; this.say(`separating: chunk ${done} of ${total}`); };
    this.say("loading the model (the first time only)...");
    await this.model.start(onProgress);
    this.model.onProgress = onProgress;
    const ids = classes.map((c) => this.meta.classes.indexOf(c));
    return this.model.separate(mixture, ids);
  }

  async run(makeInput) {
    if (room.status === "busy") return;
    room.status = "busy"; room.error = null;
    [this.mixButton, this.fileButton].forEach((b) => { b.disabled = true; });
    try {
      const input = await makeInput();
      const { estimates, seconds } = await this.separate(input.mixture, input.classes);
      const scores = input.references ? input.references.map((r, k) => sdr(r, estimates[k])) : null;
      room.result = { ...input, estimates, sdr: scores, seconds };
      await this.show(room.result);
      const audio = input.mixture.length / this.meta.sample_rate;
      this.say(`separated ${audio.toFixed(1)} s of audio${input.note || ""} into ${input.classes.join(", ")} ` +
        `in ${seconds.toFixed(2)} s, in this browser`);
      room.status = "done";
    } catch (error) {
      room.status = "error"; room.error = String(error.message || error);
      this.say(`could not separate: ${room.error}`);
    } finally {
      [this.mixButton, this.fileButton].forEach((b) => { b.disabled = false; });
      this.progress.style.display = "none";
    }
  }

  async show(result) {
    const rate = this.meta.sample_rate, refs = result.references || [];
    const { images } = await this.model.spectrograms([result.mixture, ...result.estimates, ...refs]);
    const cards = [card(result.kind === "file" ? "your file" : "mixture", result.mixture, rate, images[0])];
    result.classes.forEach((name, k) => {
      const note = result.sdr ? `(SDR ${result.sdr[k].toFixed(1)} dB)` : "";
      cards.push(card(`SGN: ${name}`, result.estimates[k], rate, images[1 + k], note));
      if (refs.length) cards.push(card(`reference: ${name}`, refs[k], rate, images[1 + result.classes.length + k]));
    });
    this.results.replaceChildren(el("div", { style: "display:flex;flex-wrap:wrap;gap:8px" }, ...cards));
  }
}

async function start(root) {
  const content = new URL(document.documentElement.dataset.content_root || "./", location.href);
  const assets = new URL(`_static/${root.dataset.assets}/`, content).href;
  try {
    const [meta, clips] = await Promise.all(["model.json", "clips.json"].map(async (name) => {
      const response = await fetch(assets + name);
      if (!response.ok) throw new Error(`${name}: HTTP ${response.status}`);
      return response.json();
    }));
    const ui = new Room(root, assets, meta, clips);
    room.separate = (mixture, classes) => ui.separate(mixture, classes); // for benchmarks: no UI, no spectrograms
    room.workerResources = async () => (ui.model.worker ? (await ui.model._call({ type: "resources" })).urls : []);
    room.status = "ready";
  } catch (error) {
    room.status = "error"; room.error = String(error.message || error);
    root.replaceChildren(el("p", {}, `The in-browser room could not start: ${room.error}`));
  }
}

const root = document.getElementById("sgn-room");
if (root) start(root);
