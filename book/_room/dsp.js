// The signal processing of the in-browser listening room, matching sgn's Python code:
// sgn.audio.STFTSpec (torch.stft/istft: periodic Hann window, centred frames with reflect
// padding) and sgn.separate.Separator (chunks of the training segment, 50% overlap, Hann
// cross-fade). The model's n_fft is any even number (510 = 2*3*5*17 for the cpu profile,
// 254 = 2*127 for smoke), so the DFT is Bluestein's: a chirp convolution done with
// power-of-two FFTs.

/** Periodic Hann window of n samples, as torch.hann_window(n). */
export function hann(n) {
  const w = new Float64Array(n);
  for (let j = 0; j < n; j++) w[j] = 0.5 - 0.5 * Math.cos((2 * Math.PI * j) / n);
  return w;
}

/** In-place radix-2 FFT of (re, im), length a power of two; sign -1 forward, +1 inverse (unscaled). */
function fftPow2(re, im, sign) {
  const n = re.length;
  for (let i = 1, j = 0; i < n; i++) { // bit-reversal permutation
    let bit = n >> 1;
    for (; j & bit; bit >>= 1) j ^= bit;
    j ^= bit;
    if (i < j) { [re[i], re[j]] = [re[j], re[i]]; [im[i], im[j]] = [im[j], im[i]]; }
  }
  for (let size = 2; size <= n; size <<= 1) {
    const step = (sign * 2 * Math.PI) / size, half = size >> 1;
    const wr = Math.cos(step), wi = Math.sin(step);
    for (let start = 0; start < n; start += size) {
      let cr = 1, ci = 0;
      for (let k = 0; k < half; k++) {
        const a = start + k, b = a + half;
        const tr = re[b] * cr - im[b] * ci, ti = re[b] * ci + im[b] * cr;
        re[b] = re[a] - tr; im[b] = im[a] - ti; re[a] += tr; im[a] += ti;
        const nr = cr * wr - ci * wi; ci = cr * wi + ci * wr; cr = nr;
      }
    }
  }
}

/** A forward DFT of any length n (Bluestein), planned once: dft(re, im) transforms in place. */
export function planDFT(n) {
  let m = 1;
  while (m < 2 * n - 1) m <<= 1;
  const cr = new Float64Array(n), ci = new Float64Array(n); // chirp exp(-i pi k^2 / n)
  for (let k = 0; k < n; k++) {
    const angle = (Math.PI * ((k * k) % (2 * n))) / n; // k^2 mod 2n keeps the angle exact
    cr[k] = Math.cos(angle); ci[k] = -Math.sin(angle);
  }
  const br = new Float64Array(m), bi = new Float64Array(m); // FFT of the conjugate chirp, both ends
  for (let k = 0; k < n; k++) {
    br[k] = cr[k]; bi[k] = -ci[k];
    if (k) { br[m - k] = cr[k]; bi[m - k] = -ci[k]; }
  }
  fftPow2(br, bi, -1);
  const ar = new Float64Array(m), ai = new Float64Array(m);
  return function dft(re, im) {
    ar.fill(0); ai.fill(0);
    for (let k = 0; k < n; k++) {
      ar[k] = re[k] * cr[k] - im[k] * ci[k]; ai[k] = re[k] * ci[k] + im[k] * cr[k];
    }
    fftPow2(ar, ai, -1);
    for (let k = 0; k < m; k++) {
      const r = ar[k] * br[k] - ai[k] * bi[k]; ai[k] = ar[k] * bi[k] + ai[k] * br[k]; ar[k] = r;
    }
    fftPow2(ar, ai, 1);
    for (let k = 0; k < n; k++) {
      const r = ar[k] / m, i = ai[k] / m;
      re[k] = r * cr[k] - i * ci[k]; im[k] = r * ci[k] + i * cr[k];
    }
  };
}

/** The STFT of one configuration: forward [F, T] spectra of real signals, and the inverse. */
export class STFT {
  constructor(nFft, hop) {
    this.nFft = nFft; this.hop = hop; this.bins = nFft / 2 + 1;
    this.window = hann(nFft);
    this.dft = planDFT(nFft);
    this.re = new Float64Array(nFft); this.im = new Float64Array(nFft);
  }

  frames(length) { return Math.floor(length / this.hop) + 1; }

  /** Complex STFT of x (length > nFft / 2): {re, im} Float32Array [F * T], row f holds T frames. */
  forward(x) {
    const { nFft, hop, bins, window, re, im } = this, half = nFft / 2, L = x.length, T = this.frames(L);
    const outRe = new Float32Array(bins * T), outIm = new Float32Array(bins * T);
    const reflect = (i) => (i < 0 ? -i : i >= L ? 2 * L - 2 - i : i); // torch's reflect padding
    for (let t = 0; t < T; t += 2) { // two real frames per complex DFT: t in re, t + 1 in im
      for (let j = 0; j < nFft; j++) {
        re[j] = x[reflect(t * hop + j - half)] * window[j];
        im[j] = t + 1 < T ? x[reflect((t + 1) * hop + j - half)] * window[j] : 0;
      }
      this.dft(re, im);
      for (let f = 0; f < bins; f++) { // split Z into the two frames' spectra
        const g = (nFft - f) % nFft;
        outRe[f * T + t] = (re[f] + re[g]) / 2; outIm[f * T + t] = (im[f] - im[g]) / 2;
        if (t + 1 < T) { outRe[f * T + t + 1] = (im[f] + im[g]) / 2; outIm[f * T + t + 1] = (re[g] - re[f]) / 2; }
      }
    }
    return { re: outRe, im: outIm, T };
  }

  /** One frame's real signal (window applied) from bins 0..F-1 of column t: two columns per DFT. */
  _inverseFrames(specRe, specIm, T, t, out0, out1) {
    const { nFft, bins, re, im, window } = this;
    for (let f = 0; f < bins; f++) { // A + iB, both Hermitian; conj trick: IDFT(X) = conj(DFT(conj X)) / n
      const ar = specRe[f * T + t], ai = f === 0 || f === bins - 1 ? 0 : specIm[f * T + t]; // irfft drops these
      const has1 = t + 1 < T;
      const br = has1 ? specRe[f * T + t + 1] : 0, bi = has1 && f > 0 && f < bins - 1 ? specIm[f * T + t + 1] : 0;
      re[f] = ar - bi; im[f] = -(ai + br); // conj(A + iB) at f
      if (f > 0 && f < bins - 1) { re[nFft - f] = ar + bi; im[nFft - f] = ai - br; } // conj(conj A + i conj B)
    }
    this.dft(re, im);
    for (let j = 0; j < nFft; j++) { out0[j] = (re[j] / nFft) * window[j]; out1[j] = (-im[j] / nFft) * window[j]; }
  }

  /** Inverse STFT of an [F * T] spectrum to `length` samples (torch.istft, center=True). */
  inverse(specRe, specIm, T, length) {
    const { nFft, hop, window } = this, half = nFft / 2, total = nFft + hop * (T - 1);
    const sum = new Float64Array(total), envelope = new Float64Array(total);
    const f0 = new Float64Array(nFft), f1 = new Float64Array(nFft);
    for (let t = 0; t < T; t += 2) {
      this._inverseFrames(specRe, specIm, T, t, f0, f1);
      for (const [frame, s] of [[f0, t], [f1, t + 1]]) {
        if (s >= T) continue;
        for (let j = 0; j < nFft; j++) { sum[s * hop + j] += frame[j]; envelope[s * hop + j] += window[j] * window[j]; }
      }
    }
    const y = new Float32Array(length);
    for (let i = 0; i < length && i + half < total; i++) {
      const e = envelope[i + half];
      y[i] = e > 1e-11 ? sum[i + half] / e : 0;
    }
    return y;
  }
}

/** Chunk offsets of the Separator: the signal padded by half a chunk each side (and to whole hops). */
export function chunkPlan(length, chunk) {
  const hop = chunk / 2, padded = length + 2 * hop + ((hop - (length % hop)) % hop);
  const offsets = [];
  for (let start = 0; start + chunk <= padded; start += hop) offsets.push(start);
  return { hop, padded, offsets };
}

/** The padded chunk at `start` of x, as Separator._chunks cuts it (zeros outside x). */
export function chunkAt(x, start, chunk, hop) {
  const out = new Float32Array(chunk), from = start - hop;
  for (let i = Math.max(0, -from); i < chunk && from + i < x.length; i++) out[i] = x[from + i];
  return out;
}

/** Plain SDR in dB, 10 log10(|s|^2 / |s - s_hat|^2) (not BSS-eval: no distortion filter is allowed). */
export function sdr(reference, estimate) {
  let signal = 0, error = 0;
  for (let i = 0; i < reference.length; i++) {
    signal += reference[i] ** 2; error += (reference[i] - (estimate[i] || 0)) ** 2;
  }
  return 10 * Math.log10(signal / Math.max(error, 1e-30));
}
