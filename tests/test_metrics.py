"""Tests of sgn.metrics: the fast path against mir_eval, known answers, errors, tables.

Like fast_bss_eval's own tests, the fast backend is cross-checked against mir_eval on
random and on music-like signals, and both are checked against signals whose scores are
known analytically.
"""


import numpy as np
import pandas as pd
import pytest
import torch

from sgn import metrics
from sgn.metrics import (
    FRAME_COLUMNS,
    MetricsInputError,
    SilentSignalError,
    bss_eval_sources,
    bss_eval_sources_batch,
    evaluate_mixture,
    evaluate_mixture_batch,
    scores_frame,
    sdr_improvement,
    si_sdr,
    summarize,
)

SR = 11025
TOL_DB = 0.01  # fast vs mir_eval


def random_case(seed: int, n_src: int, length: int = SR) -> tuple[np.ndarray, np.ndarray]:
    """White-noise references and shuffled estimates with leakage, filtering and noise."""
    rng = np.random.default_rng(seed)
    ref = rng.standard_normal((n_src, length))
    mixing = np.eye(n_src) + 0.3 * rng.uniform(-1, 1, (n_src, n_src))
    est = mixing @ ref + 0.3 * rng.standard_normal((n_src, length))
    est[:, 1:] += 0.4 * est[:, :-1]  # a short filter the 512 taps must absorb
    return ref, est[rng.permutation(n_src)]


def instrument(rng: np.random.Generator, f0: float, length: int) -> np.ndarray:
    """A music-like source: four decaying harmonic notes with vibrato, and a noise floor."""
    t = np.arange(length) / SR
    out = np.zeros(length)
    step = length // 4
    for k in range(4):
        f = f0 * 2 ** (rng.integers(0, 12) / 12)  # a note within an octave of f0
        tt = t[: length - k * step]
        envelope = (1 - np.exp(-tt / 0.01)) * np.exp(-tt * rng.uniform(1, 4))
        phase = 2 * np.pi * f * np.cumsum(1 + 0.003 * np.sin(2 * np.pi * 5 * tt)) / SR
        harmonics = np.arange(1, 9)[:, None]
        harmonics = harmonics[harmonics[:, 0] * f < SR / 2]
        amplitude = rng.uniform(0.2, 1.0, harmonics.shape) / harmonics
        partials = amplitude * np.sin(harmonics * phase + rng.uniform(0, 2 * np.pi, harmonics.shape))
        out[k * step :] += envelope * partials.sum(axis=0)
    return out + 1e-3 * out.std() * rng.standard_normal(length)


def music_case(seed: int, n_src: int, length: int = 16384) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(reference, estimate, mixture) of ``n_src`` instrument-like sources."""
    rng = np.random.default_rng(seed)
    ref = np.stack([instrument(rng, f0, length) for f0 in (196.0, 330.0, 440.0)[:n_src]])
    mixture = ref.sum(axis=0)
    est = np.stack([
        np.convolve(ref[j], [1.0, 0.3, -0.1])[:length]  # coloured target
        + 0.2 * (mixture - ref[j])  # leakage of the other sources
        + 0.05 * rng.standard_normal(length)  # artifacts
        for j in range(n_src)
    ])
    return ref, est, mixture


def assert_same_scores(expected, actual, tol=TOL_DB):
    for name, e, a in zip(("sdr", "sir", "sar"), expected[:3], actual[:3]):
        np.testing.assert_allclose(a, e, atol=tol, rtol=0, err_msg=name)
    np.testing.assert_array_equal(actual[3], expected[3], err_msg="perm")


# ------------------------------------------------------------- fast vs mir_eval


# mir_eval scores all N**2 pairs one at a time when permuting: N = 3 runs once, it is slow
@pytest.mark.parametrize(
    "seed, n_src, compute_permutation",
    [(s, n, p) for s in (0, 1) for n in (1, 2) for p in (True, False)] + [(0, 3, True), (1, 3, False)],
)
def test_fast_matches_mir_eval_on_random_signals(seed, n_src, compute_permutation):
    ref, est = random_case(seed, n_src, length=SR + 1000 * seed)
    expected = bss_eval_sources(ref, est, backend="mir_eval", compute_permutation=compute_permutation)
    actual = bss_eval_sources(ref, est, compute_permutation=compute_permutation)
    assert_same_scores(expected, actual)
    for values in actual[:3]:
        assert values.dtype == np.float64 and values.shape == (n_src,)
    assert actual[3].dtype == np.int64


@pytest.mark.parametrize("n_src, compute_permutation", [(2, True), (2, False), (3, False)])
def test_fast_matches_mir_eval_on_music_like_signals(n_src, compute_permutation):
    ref, est, _ = music_case(seed=n_src, n_src=n_src)
    est = est[::-1].copy()  # the permutation has something to find
    expected = bss_eval_sources(ref, est, backend="mir_eval", compute_permutation=compute_permutation)
    actual = bss_eval_sources(ref, est, compute_permutation=compute_permutation)
    assert_same_scores(expected, actual)


def test_permutation_convention_is_mir_eval_s():
    ref, _ = random_case(3, 3)
    est = ref[[1, 2, 0]] + 0.1 * np.random.default_rng(3).standard_normal(ref.shape)
    sdr, _, _, perm = bss_eval_sources(ref, est)
    # perm[j] is the estimate matched to reference j
    np.testing.assert_array_equal(perm, [2, 0, 1])
    np.testing.assert_allclose(est[perm], ref, atol=0.5)
    assert np.all(sdr > 15)


def test_identical_estimates_keep_the_identity_like_mir_eval():
    ref, _, mixture = music_case(seed=0, n_src=3, length=4096)
    repeated = np.tile(mixture, (3, 1))  # every permutation scores the same
    expected = bss_eval_sources(ref, repeated, backend="mir_eval")
    actual = bss_eval_sources(ref, repeated)
    np.testing.assert_array_equal(expected[3], [0, 1, 2])
    np.testing.assert_array_equal(actual[3], [0, 1, 2])
    np.testing.assert_allclose(actual[0], expected[0], atol=TOL_DB)
    np.testing.assert_allclose(actual[1], expected[1], atol=TOL_DB)
    # no artifacts at all: both SARs sit at the rounding floor, far apart
    assert np.all(actual[2] > 100) and np.all(expected[2] > 100)


def test_quiet_signals_score_like_loud_ones():
    # fast_bss_eval alone mis-scores signals with norm < 1e-6 (its normalisation clamp)
    ref, est = random_case(4, 2)
    loud = bss_eval_sources(ref, est)
    assert_same_scores(loud, bss_eval_sources(1e-9 * ref, 1e-9 * est), tol=1e-6)
    assert_same_scores(loud, bss_eval_sources(ref, 1e-12 * est), tol=1e-6)


def test_linearly_dependent_references_warn_and_keep_sdr_sar():
    ref, est = random_case(5, 2)
    ref[1] = ref[0]  # the same clip twice: the projection matrix is singular
    with pytest.warns(RuntimeWarning, match="linearly dependent"):
        sdr, sir, sar, _ = bss_eval_sources(ref, est, compute_permutation=False)
    sdr_m, sir_m, sar_m, _ = bss_eval_sources(ref, est, backend="mir_eval", compute_permutation=False)
    np.testing.assert_allclose(sdr, sdr_m, atol=TOL_DB)
    np.testing.assert_allclose(sar, sar_m, atol=TOL_DB)
    assert np.all(sir > 80) and np.all(sir_m > 80)  # no interference can be told apart


# ------------------------------------------------------------- known answers


@pytest.mark.parametrize("snr_db", [0.0, 10.0, 20.0])
def test_sdr_of_reference_plus_white_noise_is_the_snr(snr_db):
    rng = np.random.default_rng(6)
    length = 4 * SR
    ref = rng.standard_normal((2, length))
    noise = rng.standard_normal((2, length))
    noise *= np.linalg.norm(ref, axis=1, keepdims=True) / np.linalg.norm(noise, axis=1, keepdims=True)
    est = ref + 10 ** (-snr_db / 20) * noise
    for backend in ("fast", "mir_eval"):
        sdr, sir, sar, _ = bss_eval_sources(ref, est, backend=backend, compute_permutation=False)
        # the 512-tap filters absorb 512 / L of the noise each: SDR is about 0.05 dB above
        # the SNR, and what the other source's filter absorbs is the interference
        np.testing.assert_allclose(sdr, snr_db, atol=0.5)
        np.testing.assert_allclose(sar, snr_db, atol=0.5)
        np.testing.assert_allclose(sir, snr_db + 10 * np.log10(length / 512), atol=1.0)


def test_sir_of_pure_interference_is_the_gain():
    rng = np.random.default_rng(7)
    ref = rng.standard_normal((2, 2 * SR))
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    est = ref + 0.1 * ref[::-1]  # -20 dB of the other source, nothing else
    sdr, sir, sar, _ = bss_eval_sources(ref, est, compute_permutation=False)
    np.testing.assert_allclose(sir, 20.0, atol=0.2)
    np.testing.assert_allclose(sdr, 20.0, atol=0.2)
    assert np.all(sar > 100)


def test_si_sdr_matches_its_formula():
    rng = np.random.default_rng(8)
    ref = rng.standard_normal((2, SR)) + 0.5  # the mean must be removed
    est = 0.7 * ref + 0.3 * rng.standard_normal((2, SR)) - 2.0
    s = ref - ref.mean(axis=1, keepdims=True)
    e = est - est.mean(axis=1, keepdims=True)
    target = (np.sum(e * s, axis=1) / np.sum(s * s, axis=1))[:, None] * s
    expected = 10 * np.log10(np.sum(target**2, axis=1) / np.sum((e - target) ** 2, axis=1))
    np.testing.assert_allclose(si_sdr(ref, est), expected, rtol=0, atol=1e-9)
    np.testing.assert_allclose(si_sdr(ref, 5.0 * est), expected, rtol=0, atol=1e-9)
    np.testing.assert_allclose(si_sdr(1e-8 * ref, est), expected, rtol=0, atol=1e-9)


def test_si_sdr_of_a_scaled_reference_is_capped():
    ref = np.random.default_rng(9).standard_normal((2, SR))
    np.testing.assert_allclose(si_sdr(ref, -3.0 * ref + 1.0), 100.0)
    np.testing.assert_allclose(si_sdr(ref, ref, eps=1e-6), 60.0)
    assert si_sdr(ref[0], ref[0]).shape == (1,)


def test_sdr_improvement_is_a_difference():
    np.testing.assert_allclose(sdr_improvement([5.0, 3.0], [1.0, 4.0]), [4.0, -1.0])


# ------------------------------------------------------------- batch, torch, dtype


@pytest.mark.parametrize("compute_permutation", [True, False])
def test_batch_equals_loop(compute_permutation):
    cases = [random_case(seed, 2) for seed in range(3)]
    ref = np.stack([c[0] for c in cases])
    est = np.stack([c[1] for c in cases])
    batch = bss_eval_sources_batch(ref, est, compute_permutation=compute_permutation, chunk_size=2)
    for m in range(len(cases)):
        single = bss_eval_sources(ref[m], est[m], compute_permutation=compute_permutation)
        assert_same_scores(single, [x[m] for x in batch], tol=1e-9)


def test_batch_singular_mixture_is_retried_alone():
    cases = [random_case(seed, 2) for seed in range(3)]
    ref = np.stack([c[0] for c in cases])
    est = np.stack([c[1] for c in cases])
    ref[1, 1] = ref[1, 0]
    with pytest.warns(RuntimeWarning, match="mixture 1: the references are linearly dependent"):
        batch = bss_eval_sources_batch(ref, est)
    for m in (0, 2):  # the other mixtures stay exact
        assert_same_scores(bss_eval_sources(ref[m], est[m]), [x[m] for x in batch], tol=1e-9)


def test_torch_input_matches_numpy():
    ref, est = random_case(10, 2)
    expected = bss_eval_sources(ref, est)
    assert_same_scores(expected, bss_eval_sources(torch.from_numpy(ref), torch.from_numpy(est)), tol=1e-8)
    assert_same_scores(expected, bss_eval_sources(torch.from_numpy(ref), est), tol=1e-8)
    batch = bss_eval_sources_batch(torch.from_numpy(ref)[None], torch.from_numpy(est)[None])
    assert_same_scores(expected, [x[0] for x in batch], tol=1e-8)
    assert isinstance(batch[0], np.ndarray)
    np.testing.assert_allclose(si_sdr(torch.from_numpy(ref), torch.from_numpy(est)), si_sdr(ref, est))


def test_float32_input_works():
    ref, est = random_case(11, 2)
    ref32, est32 = ref.astype(np.float32), est.astype(np.float32)
    expected = bss_eval_sources(ref32.astype(np.float64), est32.astype(np.float64), backend="mir_eval")
    assert_same_scores(expected, bss_eval_sources(ref32, est32))
    assert bss_eval_sources(ref32, est32)[0].dtype == np.float64
    assert_same_scores(expected, bss_eval_sources(torch.from_numpy(ref32), torch.from_numpy(est32)))


def test_one_dimensional_input_is_one_source():
    ref, est = random_case(12, 1)
    assert_same_scores(bss_eval_sources(ref, est), bss_eval_sources(ref[0], est[0]), tol=0)


# ------------------------------------------------------------- errors


@pytest.mark.parametrize("backend", ["fast", "mir_eval"])
def test_silent_signals_raise(backend):
    ref, est = random_case(13, 2)
    silent_ref, silent_est = ref.copy(), est.copy()
    silent_ref[1] = 0.0
    silent_est[0] = 0.0
    with pytest.raises(SilentSignalError, match="reference 1 is silent"):
        bss_eval_sources(silent_ref, est, backend=backend)
    with pytest.raises(ValueError, match="estimate 0 is silent"):
        bss_eval_sources(ref, silent_est, backend=backend)


def test_bad_inputs_raise_one_clear_line():
    ref, est = random_case(14, 2)
    nan_est = est.copy()
    nan_est[0, 5] = np.nan
    cases = [
        (lambda: bss_eval_sources(ref, nan_est), "estimate contains NaN or Inf"),
        (lambda: bss_eval_sources(ref, est[:1]),
         r"reference shape \(2, 11025\) and estimate shape \(1, 11025\) differ"),
        (lambda: bss_eval_sources(ref[:, :300], est[:, :300]), "300 samples; at least 512"),
        (lambda: bss_eval_sources(ref[None], est[None]), "expected \\[N, L\\] or \\[L\\]"),
        (lambda: bss_eval_sources(ref, est, backend="bsseval"),
         "unknown backend 'bsseval'; known backends: fast, mir_eval"),
        (lambda: bss_eval_sources_batch(ref, est), r"expected \[M, N, L\]"),
        (lambda: si_sdr(ref, np.ones_like(est)), "estimate 0 is silent"),
    ]
    for call, message in cases:
        with pytest.raises(ValueError, match=message) as info:
            call()
        assert "\n" not in str(info.value)
    assert issubclass(MetricsInputError, metrics.SGNError)


def test_batch_error_names_the_mixture():
    ref = np.stack([random_case(seed, 2)[0] for seed in range(2)])
    est = ref + 0.1
    est[1, 0] = 0.0
    with pytest.raises(SilentSignalError, match="mixture 1, estimate 0 is silent"):
        bss_eval_sources_batch(ref, est)
    with pytest.raises(SilentSignalError, match="^estimate 0 is silent"):  # a batch of one: no index
        bss_eval_sources_batch(ref[1:], est[1:])
    mixtures = ref.sum(axis=1)
    mixtures[0] = 0.0
    with pytest.raises(SilentSignalError, match="^mixture 0 is silent"):
        evaluate_mixture_batch(ref, ref + 0.1, mixtures)
    with pytest.raises(ValueError, match=r"mixture shape \(2, 100\) must be \[M, L\] = \[2, 11025\]"):
        evaluate_mixture_batch(ref, ref + 0.1, mixtures[:, :100])


# ------------------------------------------------------------- mixtures and tables


def test_evaluate_mixture():
    ref, est, mixture = music_case(seed=15, n_src=2)
    result = evaluate_mixture(ref, est, mixture)
    assert set(result) == {"sdr", "sir", "sar", "si_sdr", "sdr_mixture", "sdri"}
    np.testing.assert_allclose(result["sdri"], result["sdr"] - result["sdr_mixture"])
    repeated = np.tile(mixture, (2, 1))
    np.testing.assert_allclose(
        result["sdr_mixture"], bss_eval_sources(ref, repeated, compute_permutation=False)[0]
    )
    np.testing.assert_allclose(result["si_sdr"], si_sdr(ref, est))
    assert np.all(result["sdri"] > 0)  # the estimates are better than the mixture
    reference = evaluate_mixture(ref, est, mixture, backend="mir_eval")
    for key in result:
        np.testing.assert_allclose(result[key], reference[key], atol=TOL_DB, err_msg=key)

    from_torch = evaluate_mixture(torch.from_numpy(ref), torch.from_numpy(est), mixture)
    for key in result:
        np.testing.assert_allclose(from_torch[key], result[key], atol=1e-8, err_msg=key)

    swapped = evaluate_mixture(ref, est[::-1].copy(), mixture, compute_permutation=True)
    np.testing.assert_array_equal(swapped["perm"], [1, 0])
    for key in result:
        np.testing.assert_allclose(swapped[key], result[key], atol=1e-9, err_msg=key)

    with pytest.raises(SilentSignalError, match="mixture is silent"):
        evaluate_mixture(ref, est, np.zeros_like(mixture))
    with pytest.raises(ValueError, match=r"mixture shape \(100,\) must be \[L\]"):
        evaluate_mixture(ref, est, mixture[:100])


@pytest.mark.parametrize("compute_permutation", [True, False])
def test_evaluate_mixture_batch_equals_loop(compute_permutation):
    cases = [music_case(seed, 2, length=4096) for seed in range(3)]
    ref, est, mixtures = (np.stack([c[k] for c in cases]) for k in range(3))
    est[1] = est[1, ::-1]  # one mixture's estimates in the wrong order
    batch = evaluate_mixture_batch(ref, est, mixtures, compute_permutation=compute_permutation, chunk_size=2)
    for m in range(len(cases)):
        single = evaluate_mixture(ref[m], est[m], mixtures[m], compute_permutation=compute_permutation)
        assert single.keys() == batch.keys()
        for key in single:
            np.testing.assert_allclose(batch[key][m], single[key], atol=1e-9, rtol=0, err_msg=key)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_batches_on_cuda_equal_numpy():
    cases = [music_case(seed, 3, length=4096) for seed in range(3)]
    ref, est, mixtures = (np.stack([c[k] for c in cases]) for k in range(3))
    on_gpu = bss_eval_sources_batch(torch.from_numpy(ref).cuda(), torch.from_numpy(est).cuda())
    assert_same_scores(bss_eval_sources_batch(ref, est), on_gpu, tol=1e-6)
    # CPU references with GPU estimates, as the evaluation loop passes them: scored on the GPU
    on_gpu = evaluate_mixture_batch(torch.from_numpy(ref), torch.from_numpy(est).float().cuda(), mixtures)
    on_cpu = evaluate_mixture_batch(ref, est.astype(np.float32), mixtures)
    for key in on_cpu:
        np.testing.assert_allclose(on_gpu[key], on_cpu[key], atol=1e-6, rtol=0, err_msg=key)


def make_records(n_mix=6, methods=("sgn", "baseline")):
    rng = np.random.default_rng(16)
    records = []
    for method in methods:
        for i in range(n_mix):
            sdr = rng.normal(5, 2, 2)
            sdr_mixture = rng.normal(0, 1, 2)
            records.append({
                "mixture_id": i, "classes": ["violin", "flute"], "sdr": sdr, "sir": sdr + 5,
                "sar": sdr + 3, "si_sdr": sdr - 1, "sdr_mixture": sdr_mixture,
                "sdri": sdr - sdr_mixture, "method": method, "n_sources": 2,
            })
    return records


def test_scores_frame():
    records = make_records()
    frame = scores_frame(records)
    assert list(frame.columns) == [*FRAME_COLUMNS, "method", "n_sources"]
    assert len(frame) == 2 * len(records)
    assert frame["class"].tolist()[:2] == ["violin", "flute"]
    assert frame["source"].tolist()[:2] == [0, 1]
    np.testing.assert_allclose(frame["sdri"], frame["sdr"] - frame["sdr_mixture"])
    assert list(scores_frame([]).columns) == list(FRAME_COLUMNS)

    ref, est, mixture = music_case(seed=17, n_src=2)
    one = scores_frame([{"mixture_id": "a", "classes": ["x", "y"],
                         **evaluate_mixture(ref, est, mixture, compute_permutation=True)}])
    assert one["perm"].tolist() == [0, 1]

    with pytest.raises(ValueError, match="record 0 lacks classes"):
        scores_frame([{k: v for k, v in records[0].items() if k != "classes"}])
    with pytest.raises(ValueError, match="sdr has 3 values for 2 classes"):
        scores_frame([{**records[0], "sdr": np.zeros(3)}])


def test_summarize():
    frame = scores_frame(make_records())
    table = summarize(frame, by=("method",), n_boot=500, seed=0)
    assert list(table.columns) == ["method", "metric", "n", "n_units", "mean", "median", "ci_low", "ci_high"]
    assert len(table) == 2 * len(metrics.SUMMARY_METRICS)
    assert (table["n"] == 12).all() and (table["n_units"] == 6).all()
    assert ((table["ci_low"] <= table["mean"]) & (table["mean"] <= table["ci_high"])).all()
    sgn = table[(table["method"] == "sgn") & (table["metric"] == "sdr")].iloc[0]
    rows = frame[frame["method"] == "sgn"]["sdr"]
    assert sgn["mean"] == pytest.approx(rows.mean()) and sgn["median"] == pytest.approx(rows.median())

    pd.testing.assert_frame_equal(table, summarize(frame, by="method", n_boot=500, seed=0))
    assert not summarize(frame, n_boot=500, seed=1)["ci_low"].equals(table["ci_low"])
    overall = summarize(frame, by=(), n_boot=200, unit=None)
    assert len(overall) == len(metrics.SUMMARY_METRICS) and (overall["n_units"] == 24).all()
    with pytest.raises(ValueError, match="frame lacks column"):
        summarize(frame.drop(columns="method"))
    assert summarize(scores_frame([])).empty


def test_sdr_improvement_is_undefined_for_a_one_source_mixture():
    # the "mixture" of one source is the source: its SDR is huge, the difference meaningless
    assert np.isnan(sdr_improvement([30.0], [158.0])).all()
    np.testing.assert_allclose(sdr_improvement([[5.0, 7.0]], [[1.0, 2.0]]), [[4.0, 5.0]])
    source = np.random.default_rng(0).standard_normal((1, 16000))
    assert np.isnan(evaluate_mixture(source, source * 0.9, source[0])["sdri"]).all()
