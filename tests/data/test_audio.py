import numpy as np
import pytest
import soundfile as sf

from spoofdet.data.audio import AudioError, decode_flac, encode_flac, load_16k, resample


def _tone(freq, sr, seconds, channels=1):
    t = np.arange(int(sr * seconds)) / sr
    x = 0.5 * np.sin(2 * np.pi * freq * t).astype(np.float32)
    return np.stack([x] * channels, 1) if channels > 1 else x


def _peak_hz(x, sr=16000):
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return np.argmax(spec) * sr / len(x)


@pytest.mark.parametrize("sr", [16000, 22050, 24000, 44100, 48000, 8000])
def test_resample_keeps_pitch_and_duration(tmp_path, sr):
    path = tmp_path / f"a{sr}.wav"
    sf.write(path, _tone(1000, sr, 1.5, channels=2), sr)
    wave, orig = load_16k(str(path))
    assert orig == sr and wave.dtype == np.float32 and wave.ndim == 1
    assert len(wave) == int(np.ceil(1.5 * sr * 16000 / sr))
    assert abs(_peak_hz(wave) - 1000) < 5


def test_resampler_is_band_limited():
    """A 10 kHz tone at 44.1 kHz lies above the new Nyquist: it must vanish, not fold to 6 kHz."""
    y = resample(_tone(10_000, 44100, 1.0), 44100)
    assert np.sqrt(np.mean(y[2000:-2000] ** 2)) < 0.01 * 0.5 / np.sqrt(2)


def test_flac_round_trip_and_clipping():
    x = np.linspace(-1.2, 1.2, 16000, dtype=np.float32)
    data = encode_flac(x)
    y, sr = decode_flac(data)
    assert sr == 16000 and len(y) == len(x) and y.max() <= 1.0 and y.min() >= -1.0
    inside = np.abs(x) < 0.99
    assert np.abs(y[inside] - x[inside]).max() < 1 / 32768 + 1e-6


def test_reasons(tmp_path):
    with pytest.raises(AudioError) as e:
        load_16k(str(tmp_path / "nope.wav"))
    assert e.value.reason == "missing_file"
    (tmp_path / "empty.flac").write_bytes(b"")
    with pytest.raises(AudioError) as e:
        load_16k(str(tmp_path / "empty.flac"))
    assert e.value.reason == "empty_file"
    (tmp_path / "junk.wav").write_bytes(b"RIFF" + bytes(range(200)))
    with pytest.raises(AudioError) as e:
        load_16k(str(tmp_path / "junk.wav"))
    assert e.value.reason == "decode_error"
    x = _tone(300, 16000, 0.5)
    x[100] = np.inf
    sf.write(tmp_path / "inf.wav", x, 16000, subtype="FLOAT")
    with pytest.raises(AudioError) as e:
        load_16k(str(tmp_path / "inf.wav"))
    assert e.value.reason == "non_finite" and "1 NaN/Inf" in e.value.detail
    sf.write(tmp_path / "short.wav", _tone(300, 16000, 0.05), 16000)
    with pytest.raises(AudioError) as e:
        load_16k(str(tmp_path / "short.wav"), min_seconds=0.1)
    assert e.value.reason == "too_short"
    assert len(load_16k(str(tmp_path / "short.wav"), min_seconds=0.01)[0]) == 800
