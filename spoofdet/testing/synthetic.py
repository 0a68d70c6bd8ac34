"""Synthetic speech corpora in the real corpus layouts, for tests, benchmarks and the demo.

Nothing can be downloaded in CI, so tests and ``make demo`` run on corpora written here
(:func:`write_corpus`, one writer per key of :data:`LAYOUTS`). Layouts and file formats are
exactly those the parsers read (protocols, keys, meta.csv, Codecfake label files, FLAC or WAV
audio at the corpus' sample rates). The clips come from :mod:`spoofdet.testing._speech` (bona
fide and spoof differ by how they are produced, never by a trivial cue). A few broken files
(missing, empty, corrupt, too short, NaN samples) go in every corpus, so that quarantine and
error paths are exercised; each corpus root gets a ``SYNTHETIC.json`` listing them with their
reason. Clean clips stay far from the audio checks' limits (RMS about -35 to -20 dBFS, peak at
most 0.95: never ``silent`` or ``clipped``). :func:`write_damaged` writes single damaged files
(clipped, truncated, silent, too short, a FIFO) for the tests of those checks.
"""

from __future__ import annotations

import csv
import json
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from spoofdet.testing._speech import (  # noqa: F401 - the clip generators' public home is here
    SPOOF_METHODS,
    VOWELS,
    _stft,
    bonafide_clip,
    channel,
    spoof_clip,
)

# ----------------------------------------------------------------------------- corpus writers

BROKEN_REASONS_FLAC = ("missing_file", "empty_file", "decode_error", "too_short")
BROKEN_REASONS_WAV = (*BROKEN_REASONS_FLAC, "non_finite")


def _write_broken(path: Path, reason: str, rng: np.random.Generator, sr: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if reason == "missing_file":
        return
    if reason == "empty_file":
        path.write_bytes(b"")
    elif reason == "decode_error":
        path.write_bytes(rng.integers(0, 256, 300, dtype=np.uint8).tobytes())
    elif reason == "too_short":
        sf.write(path, (0.1 * rng.standard_normal(40)).astype(np.float32), sr, subtype="PCM_16")
    elif reason == "non_finite":
        x = bonafide_clip(rng, sr, 1.0)
        x[len(x) // 2 : len(x) // 2 + 10] = np.nan
        path.write_bytes(_float_wav(x, sr))
    else:
        raise ValueError(reason)


def _float_wav(x: np.ndarray, sr: int) -> bytes:
    """A mono 32-bit float WAV of ``x``. Written by hand because libsndfile adds a PEAK chunk
    holding the time of writing, so the same seed would not give the same bytes."""
    data = np.asarray(x, dtype="<f4").tobytes()
    fmt = struct.pack("<HHIIHH", 3, 1, sr, sr * 4, 4, 32)  # WAVE_FORMAT_IEEE_FLOAT, mono
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data"
    body += struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


class _Writer:
    """Draws clips for one corpus and records which files were broken on purpose."""

    def __init__(self, root: Path, seed: int, broken: bool, reasons: tuple[str, ...]):
        self.root = root
        self.rng = np.random.default_rng(seed)
        self.broken: dict[str, str] = {}
        self._reasons = list(reasons) if broken else []
        self.rows = 0

    def duration(self) -> float:
        return float(self.rng.uniform(1.0, 6.0))

    def labels(self, n: int) -> list[int]:
        n_bona = max(1, n // 3)
        labels = [1] * n_bona + [0] * (n - n_bona)
        self.rng.shuffle(labels)
        return labels

    def write(
        self,
        utt_id: str,
        path: Path,
        label: int,
        method: str,
        sr: int,
        *,
        codec: str = "none",
        subtype: str = "PCM_16",
        breakable: bool = True,
    ) -> None:
        self.rows += 1
        if breakable and self._reasons:
            reason = self._reasons.pop(0)
            self.broken[utt_id] = reason
            _write_broken(path, reason, self.rng, sr)
            return
        seconds = self.duration()
        x = (
            bonafide_clip(self.rng, sr, seconds)
            if label == 1
            else spoof_clip(self.rng, sr, seconds, method)
        )
        x = channel(x, sr, codec, self.rng)
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, x, sr, subtype=subtype)

    def finish(self, corpus: str, **info: Any) -> dict[str, Any]:
        out = {
            "corpus": corpus,
            "root": str(self.root),
            "rows": self.rows,
            "broken": self.broken,
            **info,
        }
        (self.root / "SYNTHETIC.json").write_text(json.dumps(out, indent=2) + "\n")
        return out


def _method(attack_index: int) -> str:
    return SPOOF_METHODS[attack_index % len(SPOOF_METHODS)]


def write_asvspoof2019_la(
    root: Path, per_split: int = 12, seed: int = 0, broken: bool = True
) -> dict[str, Any]:
    w = _Writer(root, seed, broken, BROKEN_REASONS_FLAC)
    proto_dir = root / "ASVspoof2019_LA_cm_protocols"
    proto_dir.mkdir(parents=True, exist_ok=True)
    attacks = {
        "train": [f"A0{i}" for i in range(1, 7)],
        "dev": [f"A0{i}" for i in range(1, 7)],
        "eval": [f"A{i:02d}" for i in range(7, 20)],
    }
    files = {
        "train": "ASVspoof2019.LA.cm.train.trn.txt",
        "dev": "ASVspoof2019.LA.cm.dev.trl.txt",
        "eval": "ASVspoof2019.LA.cm.eval.trl.txt",
    }
    letter = {"train": "T", "dev": "D", "eval": "E"}
    counter = 1_000_000
    for split in ("train", "dev", "eval"):
        lines = []
        for i, label in enumerate(w.labels(per_split)):
            counter += int(w.rng.integers(1, 5000))
            utt = f"LA_{letter[split]}_{counter:07d}"
            attack = "-" if label == 1 else attacks[split][i % len(attacks[split])]
            speaker = f"LA_{int(w.rng.integers(1, 100)):04d}"
            lines.append(f"{speaker} {utt} - {attack} {'bonafide' if label == 1 else 'spoof'}\n")
            method = _method(int(attack[1:]) if label == 0 else 0)
            w.write(
                utt,
                root / f"ASVspoof2019_LA_{split}" / "flac" / f"{utt}.flac",
                label,
                method,
                16000,
                breakable=split == "eval",
            )
        (proto_dir / files[split]).write_text("".join(lines))
    return w.finish("asvspoof2019-la")


def write_asvspoof2021_la(
    root: Path, per_split: int = 12, seed: int = 0, broken: bool = True
) -> dict[str, Any]:
    w = _Writer(root, seed, broken, BROKEN_REASONS_FLAC)
    codecs = ["none", "alaw", "pstn", "g722", "ulaw", "gsm", "opus"]
    tx = ["ita_tx", "sin_tx", "loc_tx", "mad_tx"]
    lines = []
    n = per_split * 3
    for i, label in enumerate(w.labels(n)):
        utt = f"LA_E_{2_000_000 + i * 17:07d}"
        codec = codecs[i % len(codecs)]
        trans = "-" if codec == "none" else tx[i % len(tx)]
        attack = "bonafide" if label == 1 else f"A{7 + i % 13:02d}"
        phase = ("eval", "progress", "hidden")[i % 3]
        trim = "notrim" if phase != "hidden" else "only_speech"
        lines.append(
            f"LA_{int(w.rng.integers(1, 100)):04d} {utt} {codec} {trans} {attack} "
            f"{'bonafide' if label == 1 else 'spoof'} {trim} {phase}\n"
        )
        w.write(
            utt,
            root / "ASVspoof2021_LA_eval" / "flac" / f"{utt}.flac",
            label,
            _method(i),
            16000,
            codec=codec,
        )
    key = root / "keys" / "LA" / "CM" / "trial_metadata.txt"
    key.parent.mkdir(parents=True, exist_ok=True)
    key.write_text("".join(lines))
    return w.finish("asvspoof2021-la")


def write_asvspoof2021_df(
    root: Path, per_split: int = 12, seed: int = 0, broken: bool = True
) -> dict[str, Any]:
    w = _Writer(root, seed, broken, BROKEN_REASONS_FLAC)
    comps = [
        "nocodec",
        "low_mp3",
        "high_mp3",
        "low_m4a",
        "high_m4a",
        "low_ogg",
        "high_ogg",
        "mp3m4a",
        "oggm4a",
    ]
    vocoders = [
        "traditional_vocoder",
        "waveform_concatenation",
        "neural_vocoder_autoregressive",
        "neural_vocoder_nonautoregressive",
        "unknown",
    ]
    lines = []
    n = per_split * 3
    for i, label in enumerate(w.labels(n)):
        utt = f"DF_E_{2_000_000 + i * 13:07d}"
        comp = comps[i % len(comps)]
        phase = ("eval", "progress", "hidden")[i % 3]
        source = ("asvspoof", "vcc2018", "vcc2020")[i % 3]
        if label == 1:
            attack, vocoder, task, team = "bonafide", "bonafide", "-", "-"
        elif source == "asvspoof":
            attack, vocoder, task, team = f"A{7 + i % 13:02d}", vocoders[i % 5], "-", "-"
        elif source == "vcc2020":
            team = f"team{i % 30:02d}"
            attack, vocoder, task = f"Task1-{team}", vocoders[i % 5], "Task1"
        else:
            attack, vocoder, task, team = f"SPO-N{i % 20:02d}", vocoders[i % 5], "-", "-"
        speaker = f"LA_{i % 90:04d}" if source == "asvspoof" else f"TEF{1 + i % 2}"
        gender, lang = ("-", "-") if source != "vcc2020" else ("FF", "E")
        lines.append(
            f"{speaker} {utt} {comp} {source} {attack} {'bonafide' if label == 1 else 'spoof'} "
            f"notrim {phase} {vocoder} {task} {team} {gender} {lang}\n"
        )
        w.write(
            utt,
            root / "ASVspoof2021_DF_eval" / "flac" / f"{utt}.flac",
            label,
            _method(i),
            16000,
            codec=comp,
        )
    key = root / "keys" / "DF" / "CM" / "trial_metadata.txt"
    key.parent.mkdir(parents=True, exist_ok=True)
    key.write_text("".join(lines))
    return w.finish("asvspoof2021-df")


def write_asvspoof5(
    root: Path, per_split: int = 12, seed: int = 0, broken: bool = True
) -> dict[str, Any]:
    """ASVspoof 5 Track 1: ``ASVspoof5_protocols/`` with the three 10-column protocols and FLAC
    files in ``flac_T``, ``flac_D``, ``flac_E_eval``. Attacks A01-A08 (train), A09-A16 (dev),
    A17-A32 (eval); eval cycles through uncoded rows and codecs C01..C03 (CODEC_Q 1..8, CODEC_SEED
    naming an uncoded eval trial), both classes passing the same channel; a few speakers recur
    per split. Broken files go in eval only."""
    w = _Writer(root, seed, broken, BROKEN_REASONS_FLAC)
    proto_dir = root / "ASVspoof5_protocols"
    proto_dir.mkdir(parents=True, exist_ok=True)
    files = {
        "train": ("ASVspoof5.train.tsv", "flac_T", "T", range(1, 9)),
        "dev": ("ASVspoof5.dev.track_1.tsv", "flac_D", "D", range(9, 17)),
        "eval": ("ASVspoof5.eval.track_1.tsv", "flac_E_eval", "E", range(17, 33)),
    }
    codecs = ["-", "C01", "C02", "C03"]
    for split, (name, folder, letter, attack_ids) in files.items():
        attacks = [f"A{a:02d}" for a in attack_ids]
        speakers = [f"{letter}_{int(w.rng.integers(0, 10_000)):04d}" for _ in range(3)]
        lines = []
        uncoded: list[str] = []
        counter = int(w.rng.integers(0, 10**6))
        for i, label in enumerate(w.labels(per_split)):
            counter += int(w.rng.integers(1, 5000))
            utt = f"{letter}_{counter:010d}"
            speaker = speakers[i % len(speakers)]
            gender = "F" if speakers.index(speaker) % 2 == 0 else "M"
            codec = codecs[i % len(codecs)] if split == "eval" else "-"
            if codec == "-" or not uncoded:
                codec, q, src = "-", "-", "-"
                uncoded.append(utt)
            else:
                q, src = str(1 + int(w.rng.integers(0, 8))), uncoded[-1]
            if label == 1:
                tag, attack, key = "-", "bonafide", "bonafide"
            else:
                tag, attack, key = f"AC{1 + i % 3}", attacks[i % len(attacks)], "spoof"
            lines.append(f"{speaker} {utt} {gender} {codec} {q} {src} {tag} {attack} {key} -\n")
            w.write(
                utt,
                root / folder / f"{utt}.flac",
                label,
                _method(int(attack[1:]) if label == 0 else 0),
                16000,
                codec="none" if codec == "-" else f"{('low', 'high')[i % 2]}_{codec}",
                breakable=split == "eval",
            )
        (proto_dir / name).write_text("".join(lines))
    return w.finish("asvspoof5")


def write_in_the_wild(
    root: Path, per_split: int = 12, seed: int = 0, broken: bool = True
) -> dict[str, Any]:
    w = _Writer(root, seed, broken, BROKEN_REASONS_WAV)
    speakers = ["Alec Guinness", "Ada Lovelace", "Speaker, With Comma", "Zoë Ünicode"]
    rows = []
    n = per_split * 3
    for i, label in enumerate(w.labels(n)):
        name = f"{i}.wav"
        rows.append([name, speakers[i % len(speakers)], "bona-fide" if label == 1 else "spoof"])
        w.write(name, root / name, label, _method(i), 16000)
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "meta.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["file", "speaker", "label"])
        writer.writerows(rows)
    return w.finish("in-the-wild")


def write_codecfake(
    root: Path, per_split: int = 12, seed: int = 0, broken: bool = True
) -> dict[str, Any]:
    w = _Writer(root, seed, broken, BROKEN_REASONS_WAV)
    rates = (16000, 22050, 24000, 44100)
    subsets = ("train", "dev", "C1", "C2", "C7", "A1")
    (root / "label").mkdir(parents=True, exist_ok=True)
    for s_i, subset in enumerate(subsets):
        lines = []
        folder = root / subset if subset in ("train", "dev") else root / "test" / subset
        for i, label in enumerate(w.labels(per_split)):
            real = f"p{225 + i % 50}_{i:03d}.wav" if i % 2 else f"SSB{1000000 + 37 * i:07d}.wav"
            codec_id = (s_i + i) % 6 + 1
            name = real if label == 1 else f"F0{codec_id}_{real}"
            tag = "real" if label == 1 else f"F0{codec_id}"
            lines.append(f"{name} {'real' if label == 1 else 'fake'} {tag}\n")
            sr = rates[int(w.rng.integers(len(rates)))]  # independent of the label
            w.write(
                f"{subset}/{name}",
                folder / name,
                label,
                SPOOF_METHODS[codec_id % 4],
                sr,
                breakable=subset not in ("train", "dev"),
            )
        (root / "label" / f"{subset}.txt").write_text("".join(lines))
    return w.finish("codecfake")


def write_folder(
    root: Path, per_split: int = 12, seed: int = 0, broken: bool = True
) -> dict[str, Any]:
    w = _Writer(root, seed, broken, ("decode_error", "empty_file"))
    for i, label in enumerate(w.labels(per_split)):
        sub = ("", "interviews", "interviews/2024")[i % 3]
        ext, subtype = (".wav", "PCM_16") if i % 2 else (".FLAC", "PCM_16")
        rel = f"{sub}/clip_{i:03d}{ext}".lstrip("/")
        w.write(rel, root / rel, label, _method(i), (16000, 44100)[i % 2], subtype=subtype)
    (root / "notes.txt").write_text("not audio: ignored by the folder parser\n")
    return w.finish("folder")


def write_csv(
    root: Path, per_split: int = 12, seed: int = 0, broken: bool = True
) -> dict[str, Any]:
    w = _Writer(root, seed, broken, ("missing_file", "non_finite"))
    rows = []
    for split in ("train", "eval"):
        for i, label in enumerate(w.labels(per_split)):
            rel = f"audio/{split}/{i:04d}.wav"
            rows.append(
                [
                    rel,
                    "bonafide" if label == 1 else "spoof",
                    "" if label == 1 else f"sys{i % 3}",
                    split,
                    f"spk{i % 4}",
                ]
            )
            w.write(rel, root / rel, label, _method(i), 16000)
    with open(root / "manifest.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "label", "attack", "subset", "speaker"])
        writer.writerows(rows)
    return w.finish("csv")


# ----------------------------------------------------------------------------- damaged files

#: What each :func:`write_damaged` kind is, and the ``load_16k`` reason it must raise.
DAMAGED: dict[str, str] = {
    "clipped": "clipped",  # float WAV of speech 18 dB above full scale
    "truncated": "truncated",  # 16-bit WAV cut at half its data; the header keeps the full size
    "silent": "silent",  # 2 s of digital silence
    "hiss": "silent",  # 2 s of noise at -80 dBFS (under the -60 dBFS silence limit)
    "one_sample": "too_short",  # a single sample of speech level (with min_seconds > 0)
    "ten_ms": "too_short",  # 10 ms of speech (with min_seconds above 0.01)
    "fifo": "not_regular_file",  # a named pipe called *.wav
    "folder": "not_regular_file",  # a folder called *.wav
}


def write_damaged(path: str | Path, kind: str, *, seed: int = 0, sr: int = 16000) -> Path:
    """Write a damaged "audio file" of ``kind`` (a key of :data:`DAMAGED`) at ``path``.

    These are the files that used to pass the shard job without a word: each must be refused by
    ``load_16k`` with the reason :data:`DAMAGED` names. ``fifo`` needs ``os.mkfifo`` (POSIX).
    """
    import os

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    if kind == "clipped":
        path.write_bytes(_float_wav(8.0 * bonafide_clip(rng, sr, 2.0) / 0.95, sr))
    elif kind == "truncated":
        sf.write(path, bonafide_clip(rng, sr, 2.0), sr, subtype="PCM_16")
        data = path.read_bytes()
        path.write_bytes(data[: 44 + (len(data) - 44) // 2])  # 44-byte header, half the samples
    elif kind == "silent":
        sf.write(path, np.zeros(2 * sr, np.float32), sr, subtype="PCM_16")
    elif kind == "hiss":
        sf.write(path, (1e-4 * rng.standard_normal(2 * sr)).astype(np.float32), sr)
    elif kind == "one_sample":
        sf.write(path, np.array([0.1], np.float32), sr, subtype="PCM_16")
    elif kind == "ten_ms":
        sf.write(path, bonafide_clip(rng, sr, 0.01), sr, subtype="PCM_16")
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "folder":
        path.mkdir()
    else:
        raise ValueError(f"unknown damaged kind {kind!r}: expected one of {list(DAMAGED)}")
    return path


LAYOUTS: dict[str, Callable[..., dict[str, Any]]] = {
    "asvspoof2019-la": write_asvspoof2019_la,
    "asvspoof2021-la": write_asvspoof2021_la,
    "asvspoof2021-df": write_asvspoof2021_df,
    "asvspoof5": write_asvspoof5,
    "in-the-wild": write_in_the_wild,
    "codecfake": write_codecfake,
    "folder": write_folder,
    "csv": write_csv,
}


def write_corpus(
    corpus: str, root: str | Path, *, per_split: int = 12, seed: int = 0, broken: bool = True
) -> dict[str, Any]:
    """Write a synthetic ``corpus`` (a key of :data:`LAYOUTS`) under ``root``.

    Returns:
        ``{"corpus", "root", "rows", "broken": {utt_id: reason}}`` (also saved as ``SYNTHETIC.json``).
        ``reason`` is what the shard job should quarantine the file for: ``missing_file``,
        ``empty_file``, ``decode_error``, ``too_short`` or ``non_finite``.
    """
    try:
        fn = LAYOUTS[corpus]
    except KeyError:
        raise ValueError(f"unknown corpus {corpus!r}: expected one of {list(LAYOUTS)}") from None
    if per_split < 3:
        raise ValueError("per_split must be at least 3 (both classes in every split)")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    return fn(root, per_split=per_split, seed=seed, broken=broken)


def write_shards(
    corpus: str,
    root: str | Path,
    splits: tuple[str, ...] = ("train", "dev"),
    *,
    per_split: int = 16,
    seed: int = 3,
    shard_rows: int = 8,
) -> dict[str, Path]:
    """A synthetic corpus (:func:`write_corpus`) and a shard folder per split, written
    in-process (no Ray): ``{"root": corpus root, split: root/shards/<split>, ...}``. What the
    training tests train on (2019 LA, 16 clips a split, by default)."""
    from spoofdet.data import shard_writer
    from spoofdet.data.corpora import prepare

    root = Path(root)
    info = write_corpus(corpus, root / "corpus", per_split=per_split, seed=seed)
    out: dict[str, Path] = {"root": Path(info["root"])}
    for split in splits:
        table = prepare(corpus, info["root"], split, check_audio=False).table
        folder = root / "shards" / split
        shard_writer.run(
            table,
            str(folder),
            corpus=corpus,
            shard_rows=shard_rows,
            executor="local",
            progress=False,
        )
        out[split] = folder
    return out
