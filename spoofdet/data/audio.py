"""Audio I/O: decode any libsndfile format, mix to mono, resample to 16 kHz, encode FLAC.

The shard job calls :func:`load_16k` once per source file; training and scoring only ever call
:func:`decode_flac` on the stored bytes. A file that cannot become a training row raises
:class:`AudioError` with one of these reasons (:data:`REASONS`):

- ``missing_file``: no file at the path (or a path component is not a folder).
- ``not_regular_file``: a FIFO, device, socket or folder at the path; never opened (a FIFO would
  block the reader forever).
- ``io_error``: the operating system could not read the file (permission denied, EIO, a network
  filesystem timeout). Not a property of the audio: fix access and run again; transient errors
  are first retried :data:`IO_ATTEMPTS` times, :data:`IO_BACKOFF_SECONDS` apart (doubling).
- ``empty_file``: 0 bytes, or a valid header with no samples.
- ``decode_error``: libsndfile cannot decode the bytes (unknown format, corrupt data).
- ``truncated``: the file holds fewer frames than its header declares (cut short by a copy or
  download); the header is read by libsndfile and, for WAV/RF64/AIFF, whose lengths libsndfile
  silently shortens to what is there, by :func:`declared_frames`.
- ``non_finite``: NaN or Inf samples.
- ``too_short``: shorter than the caller's ``min_seconds``.
- ``silent``: RMS level below :data:`SILENT_RMS_DBFS` (-60 dBFS): digital silence or noise floor,
  nothing a detector can judge.
- ``clipped``: more than :data:`CLIPPED_MAX_SHARE` (1 %) of the samples at or beyond full scale
  (:data:`FULL_SCALE`, the largest 16-bit value). A float file with samples above 1.0 counts:
  the 16-bit FLAC that a shard stores would clip them.

The wave checks (:func:`check_wave`) look at the decoded samples at the file's own rate, before
mixing and resampling (resampling a loud file overshoots full scale, mixing hides one clipped
channel). ``predict`` and the shard job get them through :func:`load_16k`; :func:`clipped_share`
(with :data:`CLIPPED_WARN_SHARE`) is for warnings below the quarantine limit.
"""

from __future__ import annotations

import errno
import io
import os
import stat
import struct
import time
from math import gcd

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

from spoofdet.data.schema import SAMPLE_RATE
from spoofdet.errors import SpoofdetError

#: Why a source file is quarantined instead of sharded (each explained in the module docstring).
REASONS = (
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

#: Reads of a file that fail with a transient OS error (EIO, timeouts...) are tried this often.
IO_ATTEMPTS = 3
#: Wait before the second read attempt; it doubles before each later one (tests set 0).
IO_BACKOFF_SECONDS = 0.25
#: OS errors that retrying cannot cure: reported at the first attempt. Permission errors are
#: among them (permissions do not change within seconds; the next ``prepare`` run retries).
PERMANENT_ERRNOS = frozenset({errno.EACCES, errno.EPERM})
#: OS errors that mean the path leads nowhere: ``missing_file``.
MISSING_ERRNOS = frozenset({errno.ENOENT, errno.ENOTDIR, errno.ELOOP, errno.ENAMETOOLONG})

#: Full scale: the largest positive 16-bit sample (32767 / 32768). A sample whose magnitude is
#: at least this is clipped (16-bit and 24-bit files clip there; float files beyond it would be).
FULL_SCALE = 32767 / 32768
#: Quarantine as ``clipped`` when more than this share of the samples sits at or beyond full
#: scale (1 %: clearly audible distortion; a peak-normalised clean file has a handful).
CLIPPED_MAX_SHARE = 0.01
#: Share of clipped samples worth a warning (0.1 %), for callers that report but keep the file.
CLIPPED_WARN_SHARE = 0.001
#: Quarantine as ``silent`` when the RMS level of the whole file is below this (dBFS; 0 dBFS is
#: a full-scale square wave). -60 dBFS is 30 dB under quiet speech and 30 dB above the 16-bit
#: dither floor: only digital silence, hiss or a lone click is below it.
SILENT_RMS_DBFS = -60.0
#: MP3 lengths may be estimated from the bit rate: a shortfall up to this share is tolerated
#: before an MP3 counts as truncated (every other format must deliver every declared frame).
MPEG_LENGTH_TOLERANCE = 0.05


class AudioError(SpoofdetError):
    """A file that cannot become a training row; ``reason`` is one of :data:`REASONS`."""

    def __init__(self, reason: str, detail: str) -> None:
        assert reason in REASONS, reason
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}")


def to_mono(wave: np.ndarray) -> np.ndarray:
    """``[T]`` or ``[T, C]`` -> ``[T]`` float32 (channel mean)."""
    if wave.ndim == 2:
        wave = wave.mean(axis=1)
    return np.ascontiguousarray(wave, dtype=np.float32)


def resample(wave: np.ndarray, sr_in: int, sr_out: int = SAMPLE_RATE) -> np.ndarray:
    """Band-limited rational resampling (polyphase FIR, Kaiser window; scipy ``resample_poly``).

    The anti-aliasing low-pass sits at the lower Nyquist frequency, so 44.1 kHz input loses
    everything above 8 kHz instead of folding it back. Output length is ``ceil(T * sr_out / sr_in)``.
    """
    if sr_in == sr_out:
        return np.ascontiguousarray(wave, dtype=np.float32)
    g = gcd(int(sr_in), int(sr_out))
    up, down = sr_out // g, sr_in // g
    return resample_poly(wave.astype(np.float64), up, down, window=("kaiser", 5.0)).astype(
        np.float32
    )


# ----------------------------------------------------------------------------- wave checks


def clipped_share(wave: np.ndarray) -> float:
    """Share of the samples (every channel) whose magnitude is at least :data:`FULL_SCALE`;
    0.0 for an empty wave."""
    wave = np.asarray(wave)
    if wave.size == 0:
        return 0.0
    return float(np.count_nonzero(np.abs(wave) >= np.float32(FULL_SCALE)) / wave.size)


def _dbfs(level: float) -> float:
    return 20 * np.log10(level) if level > 0 else float("-inf")


def check_wave(wave: np.ndarray, sr: int, *, min_seconds: float = 0.0) -> tuple[str, str] | None:
    """The first problem that makes ``wave`` (``[T]`` or ``[T, C]`` samples at ``sr`` Hz, as
    decoded: before mixing or resampling) unfit to train on or score, as ``(reason, detail)``;
    None when it is fine.

    Checked in this order: ``empty_file`` (no samples), ``non_finite`` (NaN/Inf),
    ``too_short`` (under ``min_seconds``), ``silent`` (RMS under :data:`SILENT_RMS_DBFS`),
    ``clipped`` (over :data:`CLIPPED_MAX_SHARE` of the samples at or beyond :data:`FULL_SCALE`).
    The detail names the measured value and the limit; the caller adds the file name.

    :func:`load_16k` applies it to every file it reads (pass ``min_seconds`` there); call it
    directly only for samples decoded elsewhere, not on ``load_16k``'s resampled output
    (resampling overshoots full scale on loud files, so the clipping share would differ).
    """
    wave = np.asarray(wave)
    frames = wave.shape[0] if wave.ndim else 0
    if wave.size == 0:
        return "empty_file", "no samples (the file holds a header and no audio)"
    finite = np.isfinite(wave)
    if not finite.all():
        return "non_finite", f"{int((~finite).sum())} NaN/Inf sample(s)"
    seconds = frames / sr
    if seconds < min_seconds:
        return "too_short", f"{seconds:.4f} s < {min_seconds} s"
    rms = float(np.sqrt(np.mean(np.square(wave, dtype=np.float64))))
    if _dbfs(rms) < SILENT_RMS_DBFS:
        peak = float(np.abs(wave).max())
        return "silent", (
            f"RMS level {_dbfs(rms):.1f} dBFS (peak {_dbfs(peak):.1f} dBFS) is below the "
            f"{SILENT_RMS_DBFS:.0f} dBFS silence limit: the file holds no audible signal"
        )
    share = clipped_share(wave)
    if share > CLIPPED_MAX_SHARE:
        peak = float(np.abs(wave).max())
        return "clipped", (
            f"{share:.1%} of samples at or beyond full scale (limit {CLIPPED_MAX_SHARE:.0%}; "
            f"peak {peak:.3g} = {_dbfs(peak):+.1f} dBFS): the audio is distorted or, in a float "
            "file, would be cut off at 16 bits; re-export it at a lower gain or leave it out"
        )
    return None


# ----------------------------------------------------------------------------- file reading


def _os_error(exc: OSError) -> str:
    """``'Permission denied (EACCES)'``: the OS message and the errno's name."""
    name = errno.errorcode.get(exc.errno, str(exc.errno)) if exc.errno is not None else ""
    text = exc.strerror or str(exc) or type(exc).__name__
    return f"{text} ({name})" if name else text


def read_source(path: str) -> bytes:
    """The bytes of the regular file ``path``, read by the OS only (nothing is decoded).

    ``os.stat`` comes first: a FIFO, device, socket or folder is never opened
    (``not_regular_file``). The file is opened non-blocking and checked again with ``fstat``, so
    a FIFO swapped in after the ``stat`` cannot block either. Transient OS errors are retried
    (:data:`IO_ATTEMPTS`, :data:`IO_BACKOFF_SECONDS`); permission errors are not. Reading
    the whole file here (it is small next to its decoded float32 samples) is what keeps OS
    errors apart from decode errors: libsndfile reports both as "System error".

    Raises:
        AudioError: ``missing_file``, ``not_regular_file``, ``empty_file`` (0 bytes) or
            ``io_error`` (the detail names the file and the OS error).
    """
    attempts = max(1, int(IO_ATTEMPTS))
    last: OSError | None = None
    for attempt in range(attempts):
        if attempt:
            time.sleep(IO_BACKOFF_SECONDS * 2 ** (attempt - 1))
        try:
            st = os.stat(path)
            if not stat.S_ISREG(st.st_mode):
                raise AudioError("not_regular_file", _not_regular(path, st.st_mode))
            if st.st_size == 0:
                raise AudioError("empty_file", f"0 bytes: {path}")
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
            with os.fdopen(fd, "rb") as fh:
                mode = os.fstat(fh.fileno()).st_mode
                if not stat.S_ISREG(mode):
                    raise AudioError("not_regular_file", _not_regular(path, mode))
                return fh.read()
        except AudioError:
            raise
        except OSError as exc:
            if exc.errno in MISSING_ERRNOS:
                raise AudioError("missing_file", f"{path}: {_os_error(exc)}") from None
            last = exc
            if exc.errno in PERMANENT_ERRNOS or isinstance(exc, PermissionError):
                attempts = attempt + 1
                break
    assert last is not None
    tries = f"after {attempts} attempts" if attempts > 1 else "not retried"
    raise AudioError(
        "io_error",
        f"cannot read {path}: {_os_error(last)} ({tries}); this is not a fault of the audio: "
        "make the file readable (permissions, mount, network) and run again",
    )


def _not_regular(path: str, mode: int) -> str:
    kinds = (
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    )
    kind = next((name for test, name in kinds if test(mode)), "not a regular file")
    return f"{path} is {kind}, not an audio file; it was not opened: remove it or rename it"


def declared_frames(data: bytes) -> int | None:
    """The frame count a WAV (RIFF, RF64) or AIFF/AIFC header declares; None for other formats,
    compressed WAV codecs and headers of unknown length (0 or 0xFFFFFFFF, as streaming
    recorders leave them). libsndfile trims these lengths to what the file holds, so this is
    the only way to see that the file was cut short."""
    head = data[:12]
    if len(head) < 12:
        return None
    if head[:4] in (b"RIFF", b"RF64") and head[8:12] == b"WAVE":
        return _riff_frames(data, rf64=head[:4] == b"RF64")
    if head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        return _aiff_frames(data)
    return None


#: WAV format tags whose block align is the bytes of one frame: PCM, IEEE float, A-law, mu-law.
_FRAME_ALIGNED_TAGS = (1, 3, 6, 7)


def _riff_frames(data: bytes, *, rf64: bool) -> int | None:
    pos, block_align, data_size, ds64_size = 12, 0, None, None
    while pos + 8 <= len(data) and data_size is None:
        cid, size = data[pos : pos + 4], struct.unpack_from("<I", data, pos + 4)[0]
        body = pos + 8
        if cid == b"fmt " and size >= 16 and body + 16 <= len(data):
            tag, _ch, _sr, _bps, block_align = struct.unpack_from("<HHIIH", data, body)
            if tag == 0xFFFE and size >= 40 and body + 26 <= len(data):
                tag = struct.unpack_from("<H", data, body + 24)[0]  # sub-format GUID
            if tag not in _FRAME_ALIGNED_TAGS:
                return None
        elif cid == b"ds64" and rf64 and body + 16 <= len(data):
            ds64_size = struct.unpack_from("<Q", data, body + 8)[0]
        elif cid == b"data":
            data_size = ds64_size if (rf64 and size == 0xFFFFFFFF) else size
            break
        pos = body + size + (size & 1)
    if not block_align or data_size in (None, 0, 0xFFFFFFFF):
        return None
    return data_size // block_align


def _aiff_frames(data: bytes) -> int | None:
    pos = 12
    while pos + 8 <= len(data):
        cid, size = data[pos : pos + 4], struct.unpack_from(">I", data, pos + 4)[0]
        if cid == b"COMM" and pos + 14 <= len(data):
            return struct.unpack_from(">I", data, pos + 10)[0] or None
        pos += 8 + size + (size & 1)
    return None


def _decode(path: str, data: bytes) -> tuple[np.ndarray, int]:
    """Decode ``data`` (the bytes of ``path``) to ``[T, C]`` float32; ``decode_error`` or
    ``truncated`` otherwise."""
    try:
        with sf.SoundFile(io.BytesIO(data)) as fh:
            sr, fmt, frames = fh.samplerate, fh.format, fh.frames
            if fh.seekable():
                wave = fh.read(dtype="float32", always_2d=True)
            else:  # e.g. GSM 6.10 WAV: libsndfile cannot seek, so read blocks to the end
                parts = []
                while len(block := fh.read(65536, dtype="float32", always_2d=True)):
                    parts.append(block)
                wave = np.concatenate(parts) if parts else np.zeros((0, fh.channels), np.float32)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        why = getattr(exc, "error_string", None) or str(exc)
        raise AudioError("decode_error", f"{path}: {why}") from None
    declared = max(frames if 0 < frames < 2**62 else 0, declared_frames(data) or 0)
    got = wave.shape[0]
    allowed = int(declared * MPEG_LENGTH_TOLERANCE) if fmt == "MPEG" else 0
    if got < declared - allowed:
        raise AudioError(
            "truncated",
            f"read {got} of {declared} frames the header declares ({got / max(sr, 1):.2f} of "
            f"{declared / max(sr, 1):.2f} s): {path} was cut short; copy or download it again",
        )
    return wave, sr


def load_16k(path: str, *, min_seconds: float = 0.0) -> tuple[np.ndarray, int]:
    """Read ``path``, decode it, check it, mix to mono and resample to 16 kHz.

    Returns:
        ``(wave[T] float32 at 16 kHz, original sample rate)``.

    Raises:
        AudioError: with a reason of :data:`REASONS`: ``missing_file``, ``not_regular_file``,
            ``io_error`` (from :func:`read_source`), ``empty_file``, ``decode_error``,
            ``truncated``, or a :func:`check_wave` reason (``non_finite``, ``too_short``,
            ``silent``, ``clipped``). The detail names the file.
    """
    path = os.fspath(path)
    wave, sr = _decode(path, read_source(path))
    problem = check_wave(wave, sr, min_seconds=min_seconds)
    if problem is not None:
        reason, detail = problem
        raise AudioError(reason, f"{path}: {detail}")
    return resample(to_mono(wave), sr), sr


def encode_flac(wave: np.ndarray, sr: int = SAMPLE_RATE) -> bytes:
    """Encode ``wave[T]`` (float, nominally in [-1, 1]) as 16-bit FLAC bytes, clipping overshoot."""
    buf = io.BytesIO()
    sf.write(buf, np.clip(wave, -1.0, 32767 / 32768), sr, format="FLAC", subtype="PCM_16")
    return buf.getvalue()


def decode_flac(data: bytes) -> tuple[np.ndarray, int]:
    """Inverse of :func:`encode_flac`: ``(wave[T] float32, sample rate)``."""
    wave, sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=False)
    return to_mono(wave), sr


def crop_or_pad(wave: np.ndarray, length: int, offset: int = 0) -> np.ndarray:
    """``wave[offset:offset+length]``; a shorter clip is tiled (repetition padding, as the seeds do).

    The seeds tile ``ceil(N / len) + 1`` times and cut to N; the result is the same as repeating
    the clip from its start until N samples are filled.
    """
    wave = wave[offset:]
    if len(wave) == 0:
        raise ValueError(
            f"crop_or_pad: nothing to crop (empty waveform or offset {offset} past its end)"
        )
    if len(wave) >= length:
        return np.ascontiguousarray(wave[:length], dtype=np.float32)
    reps = -(-length // len(wave)) + 1
    return np.tile(np.asarray(wave, dtype=np.float32), reps)[:length]
