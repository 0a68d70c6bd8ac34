"""Honest audio input: I/O errors are not decode errors, damaged audio is caught, odd files are
never opened. Every case is a real file (or a real OS error) and a pinned reason."""

from __future__ import annotations

import errno
import os
import struct
import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from spoofdet.data import audio
from spoofdet.data import shard_writer as shard
from spoofdet.data.audio import (
    CLIPPED_MAX_SHARE,
    FULL_SCALE,
    REASONS,
    SILENT_RMS_DBFS,
    AudioError,
    check_wave,
    clipped_share,
    declared_frames,
    load_16k,
)
from spoofdet.data.corpora import prepare_folder
from spoofdet.testing import synthetic
from spoofdet.testing.synthetic import DAMAGED, bonafide_clip, write_damaged


def skip_unless_permissions_bite(path: Path) -> None:
    """Skip when ``chmod 000`` does not deny access here (root, or CAP_DAC_OVERRIDE); the
    monkeypatched twin of the test runs everywhere."""
    try:
        os.listdir(path) if path.is_dir() else path.read_bytes()
    except PermissionError:
        return
    path.chmod(0o755)
    pytest.skip("permissions are not enforced for this user (root?): chmod 000 still reads")


def _speech(seconds=1.0, sr=16000, seed=0):
    return bonafide_clip(np.random.default_rng(seed), sr, seconds)


def _reason(path, **kw):
    with pytest.raises(AudioError) as e:
        load_16k(str(path), **kw)
    return e.value


@pytest.fixture
def no_backoff(monkeypatch):
    """Retries without waiting; the sleeps asked for are recorded."""
    sleeps = []
    monkeypatch.setattr(audio.time, "sleep", sleeps.append)
    return sleeps


def _failing_open(monkeypatch, errors):
    """Make the n-th ``os.open`` in audio.py raise ``errors[n]`` (None: really open)."""
    calls = []
    real = os.open

    def fake(path, flags, *a):
        calls.append(path)
        exc = errors[min(len(calls), len(errors)) - 1]
        if exc is not None:
            raise exc
        return real(path, flags, *a)

    monkeypatch.setattr(audio.os, "open", fake)
    return calls


# ----------------------------------------------------------------------------- I/O errors


def test_reasons_are_the_documented_set():
    assert REASONS == (
        "missing_file",
        "not_regular_file",
        "io_error",
        "empty_file",
        "decode_error",
        "truncated",
        "non_finite",
        "too_short",
        "silent",
        "clipped",
    )
    for reason in REASONS:
        assert f"``{reason}``" in audio.__doc__, reason


def test_permission_denied_is_io_error_not_decode_error(tmp_path, no_backoff):
    path = tmp_path / "locked.wav"
    sf.write(path, _speech(), 16000)
    path.chmod(0)
    skip_unless_permissions_bite(path)
    try:
        err = _reason(path)
    finally:
        path.chmod(0o644)
    assert err.reason == "io_error" and str(path) in err.detail
    assert "Permission denied (EACCES)" in err.detail and no_backoff == []
    assert len(load_16k(str(path))[0]) == 16000  # fixed file: reads again


def test_permission_error_is_io_error_at_once(tmp_path, monkeypatch, no_backoff):
    """As root chmod 000 does not deny reads: the OS error is raised by ``os.open`` instead."""
    path = tmp_path / "locked.wav"
    sf.write(path, _speech(), 16000)
    calls = _failing_open(monkeypatch, [PermissionError(errno.EACCES, "Permission denied")])
    err = _reason(path)
    assert err.reason == "io_error"
    assert err.detail.startswith(f"cannot read {path}: Permission denied (EACCES) (not retried)")
    assert "run again" in err.detail
    assert len(calls) == 1 and no_backoff == []  # permissions do not heal in a second


def test_eio_is_retried_then_io_error(tmp_path, monkeypatch, no_backoff):
    path = tmp_path / "flaky.flac"
    sf.write(path, _speech(), 16000)
    calls = _failing_open(monkeypatch, [OSError(errno.EIO, "Input/output error")])
    err = _reason(path)
    assert err.reason == "io_error"
    assert f"cannot read {path}: Input/output error (EIO) (after 3 attempts)" in err.detail
    assert len(calls) == audio.IO_ATTEMPTS == 3
    assert no_backoff == [0.25, 0.5]  # IO_BACKOFF_SECONDS, doubling


def test_timeout_then_success_reads_the_file(tmp_path, monkeypatch, no_backoff):
    path = tmp_path / "nfs.wav"
    sf.write(path, _speech(), 16000)
    timeout = TimeoutError(errno.ETIMEDOUT, "Connection timed out")
    calls = _failing_open(monkeypatch, [timeout, timeout, None])
    wave, sr = load_16k(str(path))
    assert sr == 16000 and len(wave) == 16000 and len(calls) == 3


def test_read_error_after_open_is_io_error(tmp_path, monkeypatch, no_backoff):
    """EIO while reading (a bad sector) must not reach libsndfile as a short file."""
    path = tmp_path / "bad_sector.wav"
    sf.write(path, _speech(), 16000)

    def broken_fdopen(fd, *a, **k):
        os.close(fd)
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(audio.os, "fdopen", broken_fdopen)
    assert _reason(path).reason == "io_error"


def test_missing_and_empty(tmp_path):
    assert _reason(tmp_path / "nope.wav").reason == "missing_file"
    (tmp_path / "f.wav").write_bytes(b"x")
    assert _reason(tmp_path / "f.wav" / "inner.wav").reason == "missing_file"  # ENOTDIR
    os.symlink(tmp_path / "gone.wav", tmp_path / "dangling.wav")
    assert _reason(tmp_path / "dangling.wav").reason == "missing_file"
    (tmp_path / "empty.wav").write_bytes(b"")
    assert _reason(tmp_path / "empty.wav").reason == "empty_file"


# ----------------------------------------------------------------------------- not regular files


def _call_with_deadline(fn, seconds=10.0):
    """Run ``fn`` in a thread; fail (instead of hanging the suite) if it does not return."""
    out = {}

    def target():
        try:
            out["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed back to the test
            out["error"] = exc

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(seconds)
    return t.is_alive(), out


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs os.mkfifo (POSIX)")
def test_fifo_named_wav_is_refused_without_opening(tmp_path):
    fifo = write_damaged(tmp_path / "pipe.wav", "fifo")
    hung, out = _call_with_deadline(lambda: load_16k(str(fifo)))
    if hung:  # unblock the reader so the process can exit, then fail
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail("load_16k blocked on a FIFO")
    err = out["error"]
    assert isinstance(err, AudioError) and err.reason == "not_regular_file"
    assert f"{fifo} is a FIFO (named pipe), not an audio file; it was not opened" in err.detail


def test_folder_and_device_named_like_audio(tmp_path):
    err = _reason(write_damaged(tmp_path / "dir.wav", "folder"))
    assert err.reason == "not_regular_file" and "is a folder" in err.detail
    if os.path.exists("/dev/null"):
        err = _reason("/dev/null")
        assert err.reason == "not_regular_file" and "character device" in err.detail


def test_symlink_to_a_file_is_read(tmp_path):
    sf.write(tmp_path / "real.wav", _speech(), 16000)
    os.symlink(tmp_path / "real.wav", tmp_path / "link.wav")
    assert len(load_16k(str(tmp_path / "link.wav"))[0]) == 16000


# ----------------------------------------------------------------------------- truncation


def _cut(path, keep):
    data = path.read_bytes()
    path.write_bytes(data[:keep])


@pytest.mark.parametrize(
    "fmt,subtype,header",
    [
        ("WAV", "PCM_16", 44),
        ("WAV", "FLOAT", None),
        ("WAVEX", "PCM_24", None),
        ("AIFF", "PCM_16", 54),
    ],
)
def test_truncated_pcm_file(tmp_path, fmt, subtype, header):
    """libsndfile shortens the length to what is there; the header still says 32000 frames."""
    path = tmp_path / f"half.{fmt.lower()}"
    sf.write(path, _speech(2.0), 16000, format=fmt, subtype=subtype)
    size = path.stat().st_size
    _cut(path, size - (size - (header or 100)) // 2)
    assert declared_frames(path.read_bytes()) == 32000
    err = _reason(path)
    assert err.reason == "truncated"
    assert err.detail.startswith("read 1") and "of 32000 frames the header declares" in err.detail
    assert str(path) in err.detail


def test_half_truncated_wav_from_the_issue(tmp_path):
    err = _reason(write_damaged(tmp_path / "t.wav", "truncated"))
    assert err.reason == "truncated"
    assert err.detail.startswith("read 16000 of 32000 frames the header declares (1.00 of 2.00 s)")


def test_streaming_wav_of_unknown_length_is_not_truncated(tmp_path):
    """Recorders that stream write 0xFFFFFFFF (or 0) as the data size: the length is unknown."""
    path = tmp_path / "stream.wav"
    sf.write(path, _speech(), 16000, subtype="PCM_16")
    data = bytearray(path.read_bytes())
    assert data[36:40] == b"data"
    data[40:44] = struct.pack("<I", 0xFFFFFFFF)
    path.write_bytes(bytes(data))
    assert declared_frames(bytes(data)) is None
    assert len(load_16k(str(path))[0]) == 16000


def test_complete_files_are_not_truncated(tmp_path):
    for fmt, subtype, ext in [
        ("WAV", "PCM_16", "wav"),
        ("FLAC", "PCM_16", "flac"),
        ("OGG", "VORBIS", "ogg"),
        ("AIFF", "PCM_16", "aiff"),
        ("WAV", "GSM610", "wav"),  # not seekable in libsndfile: read block by block
    ]:
        sr = 8000 if subtype == "GSM610" else 16000
        path = tmp_path / f"ok_{subtype}.{ext}"
        sf.write(path, _speech(1.0, sr), sr, format=fmt, subtype=subtype)
        wave, got_sr = load_16k(str(path))
        padded = 16640 if subtype == "GSM610" else 16000  # GSM pads to 320-sample blocks
        assert got_sr == sr and len(wave) == padded, (fmt, subtype)


def test_declared_frames_of_other_formats_is_unknown(tmp_path):
    sf.write(tmp_path / "a.flac", _speech(), 16000)
    assert declared_frames((tmp_path / "a.flac").read_bytes()) is None
    assert declared_frames(b"RIFF") is None
    sf.write(tmp_path / "ima.wav", _speech(), 16000, subtype="IMA_ADPCM")  # blocks, not frames
    assert declared_frames((tmp_path / "ima.wav").read_bytes()) is None


# ----------------------------------------------------------------------------- wave checks


def test_clipped_share_counts_samples_at_or_beyond_full_scale():
    x = np.array([0.0, 0.5, 1.0, -1.0, FULL_SCALE, 1.5, -0.99, 0.9999], np.float32)
    assert clipped_share(x) == 4 / 8
    assert clipped_share(np.stack([x, np.zeros_like(x)], 1)) == 4 / 16
    assert clipped_share(np.zeros(0, np.float32)) == 0.0


def test_float_wav_far_above_full_scale_is_clipped(tmp_path):
    err = _reason(write_damaged(tmp_path / "hot.wav", "clipped"))
    assert err.reason == "clipped"
    share = float(err.detail.split(": ", 1)[1].split("%")[0]) / 100
    assert share > CLIPPED_MAX_SHARE and "limit 1%" in err.detail and "peak" in err.detail


def test_clipping_threshold_is_one_percent():
    x = _speech(2.0)
    x = 0.5 * x / np.abs(x).max()
    n = len(x)
    a, b = x.copy(), x.copy()
    a[: int(0.009 * n)] = 1.0  # 0.9 %: kept
    b[: int(0.011 * n)] = -1.0  # 1.1 %: quarantined
    assert check_wave(a, 16000) is None
    reason, detail = check_wave(b, 16000)
    assert reason == "clipped" and detail.startswith("1.1% of samples at or beyond full scale")


def test_one_clipped_channel_counts(tmp_path):
    x = _speech(1.0)
    stereo = np.stack([x, np.clip(8 * x / np.abs(x).max(), -1, 1)], 1)
    sf.write(tmp_path / "st.wav", stereo, 16000, subtype="PCM_16")
    assert _reason(tmp_path / "st.wav").reason == "clipped"


def test_silence_threshold(tmp_path):
    assert _reason(write_damaged(tmp_path / "zero.wav", "silent")).reason == "silent"
    err = _reason(write_damaged(tmp_path / "hiss.wav", "hiss"))
    assert err.reason == "silent" and "below the -60 dBFS silence limit" in err.detail
    t = np.arange(16000) / 16000
    quiet = (10 ** (-55 / 20) * np.sqrt(2) * np.sin(2 * np.pi * 300 * t)).astype(np.float32)
    assert check_wave(quiet, 16000) is None  # -55 dBFS RMS: quiet, not silent
    assert check_wave(quiet * 10 ** (-6 / 20), 16000)[0] == "silent"  # -61 dBFS
    assert SILENT_RMS_DBFS == -60.0


@pytest.mark.parametrize("kind", ["one_sample", "ten_ms"])
def test_tiny_files_are_too_short(tmp_path, kind):
    path = write_damaged(tmp_path / f"{kind}.wav", kind)
    assert _reason(path, min_seconds=0.5).reason == "too_short"


def test_check_wave_order_and_clean_speech():
    assert check_wave(np.zeros(0, np.float32), 16000)[0] == "empty_file"
    nan = np.full(10, np.nan, np.float32)
    assert check_wave(nan, 16000, min_seconds=1.0) == ("non_finite", "10 NaN/Inf sample(s)")
    assert check_wave(np.zeros(10, np.float32), 16000, min_seconds=1.0)[0] == "too_short"
    assert check_wave(np.zeros(16000, np.float32), 16000, min_seconds=0.5)[0] == "silent"
    for seed in range(20):  # synthetic speech at every corpus rate is never silent or clipped
        sr = (16000, 22050, 24000, 44100)[seed % 4]
        assert check_wave(_speech(1.0, sr, seed), sr, min_seconds=0.5) is None


def test_synthetic_spoofs_through_every_channel_pass_the_checks():
    """Every corpus writer's clips (each spoof method through each codec) are never quarantined
    by the wave checks: the pinned quarantine counts of the synthetic corpora rely on it."""
    rng = np.random.default_rng(11)
    codecs = ("none", "alaw", "gsm", "g722", "opus", "low_mp3", "high_ogg", "mp3m4a")
    for i, (method, codec) in enumerate((m, c) for m in synthetic.SPOOF_METHODS for c in codecs):
        sr = (16000, 22050, 24000, 44100)[i % 4]
        x = synthetic.channel(synthetic.spoof_clip(rng, sr, 1.0, method), sr, codec, rng)
        assert check_wave(x, sr, min_seconds=0.5) is None, (method, codec)


@pytest.mark.parametrize("kind", sorted(DAMAGED))
def test_every_damaged_kind_gets_its_reason(tmp_path, kind):
    path = write_damaged(tmp_path / f"{kind}.wav", kind, seed=3)
    hung, out = _call_with_deadline(lambda: load_16k(str(path), min_seconds=0.1))
    if hung:
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail(f"load_16k blocked on {kind}")
    assert isinstance(out.get("error"), AudioError), out
    assert out["error"].reason == DAMAGED[kind]


def test_prepare_quarantines_damaged_files_with_counted_reasons(tmp_path):
    """The shard job (local executor) stores the good file and counts each damaged one."""
    root = tmp_path / "clips"
    root.mkdir()
    sf.write(root / "good.wav", _speech(2.0), 16000)
    for kind in ("clipped", "truncated", "silent", "ten_ms"):
        write_damaged(root / f"{kind}.wav", kind)
    if hasattr(os, "mkfifo"):
        write_damaged(root / "pipe.wav", "fifo")
    m = prepare_folder(root)
    assert m.not_regular == ((f"{root}/pipe.wav (a FIFO)",) if hasattr(os, "mkfifo") else ())
    assert m.summary()["not_regular_files"] == len(m.not_regular)
    hung, out = _call_with_deadline(
        lambda: shard.run(m.table, str(tmp_path / "out"), corpus="folder", executor="local"), 60
    )
    assert not hung, "prepare blocked"
    s = out["value"]
    expected = {"clipped": 1, "truncated": 1, "silent": 1, "too_short": 1}
    if hasattr(os, "mkfifo"):
        expected["not_regular_file"] = 1
    assert s["rows_written"] == 1 and s["by_reason"] == expected
