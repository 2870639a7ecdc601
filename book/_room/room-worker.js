// The listening room's Web Worker: runs the exported model (onnxruntime-web, WebAssembly)
// off the page's thread, so the page stays responsive while it separates.
// Every message carries the page's id, echoed in the answer (progress too).
// Messages in: {type: "load", model, meta} | {type: "separate", id, mixture, classIds}
//              | {type: "spectrograms", id, signals, columns} | {type: "resources", id}.
// Messages out: {type: "loaded", meta} | {type: "progress", id, done, total} | {type: "separated", id,
//               estimates, seconds, modelSeconds} | {type: "spectrograms", id, images}
//               | {type: "resources", id, urls} (what this worker fetched: the tests check the hosts)
//               | {type: "error", id, message}.
import * as ort from "./ort.wasm.min.mjs";
import { STFT, chunkAt, chunkPlan, hann } from "./dsp.js";

// the page is not cross-origin isolated on a static host, so WebAssembly threads are unavailable
ort.env.wasm.numThreads = self.crossOriginIsolated ? Math.min(4, navigator.hardwareConcurrency || 1) : 1;
ort.env.wasm.wasmPaths = new URL("./", import.meta.url).href; // the book's own _static/, never a CDN
ort.env.logLevel = "error";

const CHUNKS_PER_RUN = 4; // chunks per model call: batched for speed, few enough to report progress
let session = null, meta = null, stft = null;

async function load(modelUrl, metaUrl) {
  meta = await (await fetch(metaUrl)).json();
  const bytes = await (await fetch(modelUrl)).arrayBuffer();
  session = await ort.InferenceSession.create(bytes, { executionProviders: ["wasm"], graphOptimizationLevel: "all" });
  stft = new STFT(meta.n_fft, meta.hop);
}

let modelSeconds = 0; // time inside session.run, for the bench

/** Masks [b, C, F, T] of a batch of chunks, with their complex spectra. */
async function maskChunks(chunks) {
  const specs = chunks.map((c) => stft.forward(c));
  const T = specs[0].T, size = stft.bins * T;
  const magnitude = new Float32Array(chunks.length * size);
  specs.forEach((s, b) => {
    for (let i = 0; i < size; i++) magnitude[b * size + i] = Math.hypot(s.re[i], s.im[i]);
  });
  const input = new ort.Tensor("float32", magnitude, [chunks.length, stft.bins, T]);
  const started = performance.now();
  const { masks } = await session.run({ magnitude: input });
  modelSeconds += (performance.now() - started) / 1000;
  return { specs, T, size, masks: masks.data };
}

/** Separator.separate at the model's rate: chunked, masked, inverted, Hann cross-faded. */
async function separate(id, mixture, classIds) {
  const started = performance.now(), size = meta.chunk_samples, nClasses = meta.classes.length;
  modelSeconds = 0;
  const { hop, padded, offsets } = chunkPlan(mixture.length, size);
  const window = hann(size);
  const sums = classIds.map(() => new Float64Array(padded)), weight = new Float64Array(padded);
  for (let first = 0; first < offsets.length; first += CHUNKS_PER_RUN) {
    const starts = offsets.slice(first, first + CHUNKS_PER_RUN);
    const { specs, T, size: cells, masks } = await maskChunks(starts.map((s) => chunkAt(mixture, s, size, hop)));
    starts.forEach((start, b) => {
      classIds.forEach((c, k) => {
        const offset = (b * nClasses + c) * cells, re = new Float32Array(cells), im = new Float32Array(cells);
        for (let i = 0; i < cells; i++) { re[i] = masks[offset + i] * specs[b].re[i]; im[i] = masks[offset + i] * specs[b].im[i]; }
        const estimate = stft.inverse(re, im, T, size);
        for (let i = 0; i < size; i++) sums[k][start + i] += estimate[i] * window[i];
      });
      for (let i = 0; i < size; i++) weight[start + i] += window[i];
    });
    postMessage({ type: "progress", id, done: Math.min(first + CHUNKS_PER_RUN, offsets.length), total: offsets.length });
  }
  const estimates = sums.map((sum) => {
    const out = new Float32Array(mixture.length);
    for (let i = 0; i < out.length; i++) out[i] = sum[i + hop] / Math.max(weight[i + hop], 1e-8);
    return out;
  });
  return { estimates, seconds: (performance.now() - started) / 1000, modelSeconds };
}

/** Log-magnitude spectrogram [F x columns] (dB, max over the frames each column covers). */
function spectrogram(signal, columns) {
  const { re, im, T } = stft.forward(signal.length > stft.nFft ? signal : padTo(signal, stft.nFft + 1));
  const F = stft.bins, W = Math.min(columns, T), image = new Float32Array(F * W).fill(-120);
  for (let f = 0; f < F; f++) {
    for (let t = 0; t < T; t++) {
      const column = Math.floor((t * W) / T), db = 10 * Math.log10(re[f * T + t] ** 2 + im[f * T + t] ** 2 + 1e-12);
      if (db > image[f * W + column]) image[f * W + column] = db;
    }
  }
  return { image, width: W, height: F };
}

function padTo(signal, length) {
  const out = new Float32Array(length);
  out.set(signal);
  return out;
}

onmessage = async ({ data }) => {
  try {
    if (data.type === "load") {
      await load(data.model, data.meta);
      postMessage({ type: "loaded", id: data.id, meta });
    } else if (data.type === "separate") {
      const result = await separate(data.id, data.mixture, data.classIds);
      postMessage({ type: "separated", id: data.id, ...result }, result.estimates.map((e) => e.buffer));
    } else if (data.type === "spectrograms") {
      const images = data.signals.map((s) => spectrogram(s, data.columns));
      postMessage({ type: "spectrograms", id: data.id, images }, images.map((i) => i.image.buffer));
    } else if (data.type === "resources") {
      postMessage({ type: "resources", id: data.id, urls: performance.getEntriesByType("resource").map((r) => r.name) });
    }
  } catch (error) {
    postMessage({ type: "error", id: data.id, message: String((error && error.message) || error) });
  }
};
