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
