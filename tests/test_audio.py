import numpy as np
import pytest
import torch

from sgn.audio import LogFrequencyWarp, STFTSpec, check_audio, load_audio, resample, save_audio
from sgn.utils import SGNError


@pytest.mark.parametrize("n_fft,hop", [(1022, 256), (510, 128), (254, 64)])
def test_stft_istft_round_trip(n_fft, hop):
    wave = torch.randn(3, 2, 11025, generator=torch.Generator().manual_seed(0))
    spec = STFTSpec(n_fft, hop)
    z = spec.stft(wave)
    assert z.shape == (3, 2, spec.n_bins, spec.n_frames(11025))
    back = spec.istft(z, 11025)
    assert torch.allclose(back, wave, atol=1e-5)


def test_paper_stft_shape():
    spec = STFTSpec(1022, 256)
    assert (spec.n_bins, spec.n_frames(65535)) == (512, 256)


def test_log_frequency_warp_shapes_and_inverse_on_smooth_input():
    warp = LogFrequencyWarp(512, 256)
    x = torch.rand(2, 3, 512, 7)
    assert warp.warp(x).shape == (2, 3, 256, 7)
    assert warp.unwarp(warp.warp(x)).shape == x.shape
    # A spectrum smooth in log-frequency survives warp + unwarp nearly unchanged.
    freqs = torch.linspace(0, 1, 512)
    smooth = torch.exp(-((torch.log1p(freqs * 20) - 1.5) ** 2))[:, None].repeat(1, 4)
    err = (warp.unwarp(warp.warp(smooth)) - smooth).abs().max()
    assert err < 0.02


def test_warp_is_log_spaced():
    warp = LogFrequencyWarp(512, 256)
    # Low bins are sampled densely: the first 64 warped bins cover far fewer linear bins than the last 64.
    low_span = warp.warp_index[63] - warp.warp_index[0]
    high_span = warp.warp_index[255] - warp.warp_index[192]
    assert low_span * 4 < high_span


def test_save_load_round_trip_and_resample(tmp_path):
    t = np.arange(11025) / 11025
    wave = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    path = save_audio(tmp_path / "a.wav", wave, 11025)
    back, rate = load_audio(path)
    assert rate == 11025 and np.max(np.abs(back - wave)) < 1e-4
    up, rate = load_audio(path, sample_rate=22050)
    assert rate == 22050 and abs(len(up) - 22050) <= 1
    assert resample(wave, 11025, 11025) is not None
    stereo = np.stack([wave, -wave])
    save_audio(tmp_path / "s.wav", stereo, 11025)
    mono, _ = load_audio(tmp_path / "s.wav")
    assert np.abs(mono).max() < 1e-4  # the channels cancel in the downmix


def test_compressed_formats(tmp_path):
    wave = (0.3 * np.sin(2 * np.pi * 220 * np.arange(22050) / 11025)).astype(np.float32)
    for suffix in (".ogg", ".mp3", ".flac"):
        path = save_audio(tmp_path / f"x{suffix}", wave, 11025)
        back, _ = load_audio(path)
        assert abs(len(back) - len(wave)) < 2000


def test_audio_errors(tmp_path):
    with pytest.raises(SGNError, match="not found"):
        load_audio(tmp_path / "missing.wav")
    (tmp_path / "junk.wav").write_bytes(b"not audio at all")
    with pytest.raises(SGNError, match="junk.wav: not a readable audio file"):
        load_audio(tmp_path / "junk.wav")
    with pytest.raises(SGNError, match="NaN"):
        save_audio(tmp_path / "n.wav", np.array([0.0, np.nan], dtype=np.float32), 11025)
    with pytest.raises(SGNError, match="exceeds full scale"):
        save_audio(tmp_path / "c.wav", np.array([0.0, 1.5], dtype=np.float32), 11025)
    with pytest.raises(SGNError, match="suffix"):
        save_audio(tmp_path / "c.xyz", np.zeros(4, dtype=np.float32), 11025)
    # a failed write leaves nothing behind
    assert sorted(p.name for p in tmp_path.iterdir()) == ["junk.wav"]


def test_check_audio_messages():
    ok = np.sin(np.arange(1000) / 5).astype(np.float32) * 0.5
    assert check_audio(ok, "x", min_samples=100) is ok
    with pytest.raises(SGNError, match="x: 10 samples, expected at least 100"):
        check_audio(ok[:10], "x", min_samples=100)
    with pytest.raises(SGNError, match="NaN or Inf"):
        check_audio(np.array([0.1, np.inf]), "x")
    with pytest.raises(SGNError, match="silent"):
        check_audio(np.zeros(100), "x")
    with pytest.raises(SGNError, match="clipped"):
        check_audio(np.clip(ok * 10, -1, 1), "x", allow_clipped=False)


def test_encode_audio_in_memory_is_compressed_and_decodable():
    import io

    import soundfile as sf

    from sgn.audio import encode_audio

    wave = (0.5 * np.sin(2 * np.pi * 330 * np.arange(3 * 11025) / 11025)).astype(np.float32)
    data = encode_audio(wave, 11025)
    assert data[:4] == b"OggS" and len(data) < wave.size * 2 / 4  # well under 16-bit PCM
    back, rate = sf.read(io.BytesIO(data))
    assert rate == 11025 and abs(len(back) - len(wave)) < 1100
    with pytest.raises(SGNError, match="NaN"):
        encode_audio(np.array([np.nan], dtype=np.float32), 11025)


def one_line(err: pytest.ExceptionInfo, *fragments: str) -> str:
    """The message of a raised SGNError: one line, short, containing every fragment."""
    text = str(err.value)
    assert "\n" not in text and len(text) < 300, text
    for fragment in fragments:
        assert fragment in text, text
    return text


@pytest.mark.parametrize("rate", [1, 100, 3999, 192001, 10**7])
def test_file_rates_outside_the_range_are_refused(tmp_path, rate):
    import soundfile as sf

    from sgn.audio import audio_info, read_audio_block

    path = tmp_path / f"r{rate}.wav"
    sf.write(path, np.zeros(64, dtype=np.float32), rate)
    for read in (lambda: load_audio(path), lambda: load_audio(path, 11025), lambda: audio_info(path),
                 lambda: read_audio_block(path, 0, 8)):
        with pytest.raises(SGNError) as err:
            read()
        one_line(err, f"r{rate}.wav", f"sample rate {rate} Hz", "4000..192000")


@pytest.mark.parametrize("rate", [0, -1, 1, 3999, 192001, 11025.5, "11025", True, None])
def test_resample_rates_outside_the_range_are_refused(rate):
    from sgn.audio import StreamResampler

    wave = np.zeros(100, dtype=np.float32)
    for call in (lambda: resample(wave, rate, 11025), lambda: resample(wave, 11025, rate),
                 lambda: StreamResampler(rate, 11025), lambda: StreamResampler(11025, rate)):
        with pytest.raises(SGNError) as err:
            call()
        one_line(err, "resample", "4000..192000")


def test_load_audio_target_rate_is_checked(tmp_path):
    path = save_audio(tmp_path / "a.wav", np.zeros(100, dtype=np.float32), 11025)
    with pytest.raises(SGNError) as err:
        load_audio(path, 1)
    one_line(err, "a.wav: target", "sample rate 1 Hz")


@pytest.mark.parametrize("channels", [1, 2])
def test_empty_file_says_0_samples(tmp_path, channels):
    import soundfile as sf

    sf.write(tmp_path / "empty.wav", np.zeros((0, channels), dtype=np.float32), 11025)
    for mono in (True, False):
        with pytest.raises(SGNError) as err:
            load_audio(tmp_path / "empty.wav", mono=mono)
        one_line(err, "empty.wav: 0 samples")
    with pytest.raises(SGNError, match="x: 0 samples, expected at least 1"):
        check_audio(np.zeros((channels, 0)), "x")


@pytest.mark.parametrize("content", [b"", b"RIFF", b"not audio at all", bytes(range(256)) * 4])
def test_unreadable_files_are_one_line(tmp_path, content):
    from sgn.audio import audio_info, read_audio_block

    path = tmp_path / "junk.wav"
    path.write_bytes(content)
    for read in (lambda: load_audio(path), lambda: audio_info(path), lambda: read_audio_block(path, 0, 8)):
        with pytest.raises(SGNError) as err:
            read()
        one_line(err, "junk.wav: not a readable audio file")


def test_read_audio_block_streams_a_file(tmp_path):
    from sgn.audio import AudioInfo, audio_info, read_audio_block

    rng = np.random.default_rng(0)
    stereo = rng.uniform(-0.5, 0.5, (2, 10000)).astype(np.float32)
    path = save_audio(tmp_path / "s.flac", stereo, 22050)
    assert audio_info(path) == AudioInfo(10000, 22050, 2)
    whole, _ = load_audio(path, mono=False)
    blocks = [read_audio_block(path, start, 3000, mono=False) for start in range(0, 10000, 3000)]
    assert [b.shape for b in blocks] == [(2, 3000)] * 3 + [(2, 1000)]
    assert np.array_equal(np.concatenate(blocks, axis=1), whole)
    assert np.array_equal(read_audio_block(path, 2500, 100), whole[:, 2500:2600].mean(axis=0))
    assert read_audio_block(path, 10000, 100).shape == (0,)


@pytest.mark.parametrize("start", [-1, 10001, 10**12])
def test_read_audio_block_refuses_offsets_outside_the_file(tmp_path, start):
    from sgn.audio import read_audio_block

    path = save_audio(tmp_path / "a.wav", np.zeros(10000, dtype=np.float32), 11025)
    with pytest.raises(SGNError) as err:
        read_audio_block(path, start, 100)
    one_line(err, "a.wav: offset", "past the end of the file (10000 samples)")


@pytest.mark.parametrize("rates", [(44100, 11025), (11025, 44100), (22050, 16000)])
@pytest.mark.parametrize("channels", [1, 2])
def test_stream_resampler_matches_resample(rates, channels):
    from sgn.audio import StreamResampler

    rng = np.random.default_rng(1)
    wave = (0.3 * rng.standard_normal((channels, 20000))).astype(np.float32)
    wave = wave[0] if channels == 1 else wave
    stream = StreamResampler(*rates, channels=channels)
    starts = range(0, 20000, 3333)
    parts = [stream.process(wave[..., s : s + 3333], last=s + 3333 >= 20000) for s in starts]
    streamed = np.concatenate(parts, axis=-1)
    whole = resample(wave, *rates)
    assert streamed.shape == whole.shape
    assert np.allclose(streamed, whole, atol=1e-6)


@pytest.mark.parametrize("shape", [(3, 100), (100, 2), (2, 2, 100)])
def test_stream_resampler_refuses_blocks_of_another_shape(shape):
    from sgn.audio import StreamResampler

    with pytest.raises(SGNError) as err:
        StreamResampler(44100, 11025, channels=2).process(np.zeros(shape, dtype=np.float32))
    one_line(err, "resample: block of shape")
