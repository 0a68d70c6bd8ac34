"""ASVspoof 2021 DF (deepfake, media compression): an evaluation corpus.

Layout::

    ROOT/ASVspoof2021_DF_eval/flac/<TRIAL>.flac   (the four part tarballs extract here)
    ROOT/keys/DF/CM/trial_metadata.txt            (from DF-keys-full.tar.gz)

Key lines have 13 columns ``SPEAKER TRIAL COMPRESSION SOURCE ATTACK KEY TRIM SUBSET VOCODER
TASK TEAM GENDER_PAIR LANGUAGE``, e.g. ``LA_0023 DF_E_2000011 nocodec asvspoof A14 spoof notrim
progress traditional_vocoder - - - -``. Label = column 6, phase = column 8, vocoder group =
column 9 (the official DF breakdown). Compression -> condition: nocodec C1, low_mp3 C2,
high_mp3 C3, low_m4a C4, high_m4a C5, low_ogg C6, high_ogg C7, mp3m4a C8, oggm4a C9.
"""

from __future__ import annotations

from pathlib import Path

from spoofdet.data.corpora._asvspoof2021 import check_phases, find_key, key_rows
from spoofdet.data.corpora._common import Manifest, ProblemLog, corpus_root, finish
from spoofdet.data.schema import BONAFIDE, BONAFIDE_ATTACK, SPOOF, TableBuilder

CORPUS = "asvspoof2021-df"
COMPRESSION_CONDITIONS = {
    "nocodec": "C1",
    "low_mp3": "C2",
    "high_mp3": "C3",
    "low_m4a": "C4",
    "high_m4a": "C5",
    "low_ogg": "C6",
    "high_ogg": "C7",
    "mp3m4a": "C8",
    "oggm4a": "C9",
}
VOCODER_GROUPS = (
    "traditional_vocoder",
    "waveform_concatenation",
    "neural_vocoder_autoregressive",
    "neural_vocoder_nonautoregressive",
    "unknown",
    "bonafide",
)
N_COLUMNS = 13


def audio_path(root: str | Path, trial: str) -> Path:
    return Path(root) / "ASVspoof2021_DF_eval" / "flac" / f"{trial}.flac"


def _check_vocoder(cols: list[str]) -> str | None:
    """The vocoder group (column 9) must be one of :data:`VOCODER_GROUPS` or ``-``."""
    vocoder = cols[8]
    if vocoder not in VOCODER_GROUPS and vocoder != "-":
        return (
            f"unknown vocoder group {vocoder!r} in column 9: expected one of {list(VOCODER_GROUPS)}"
        )
    return None


def prepare_asvspoof2021_df(
    root: str | Path,
    phase: str | None = None,
    *,
    key_file: str | Path | None = None,
    check_audio: bool = True,
    progress: bool = False,
) -> Manifest:
    """Parse the ASVspoof 2021 DF CM key into schema rows (``subset`` = ``eval``).

    Args:
        root: corpus root (audio under ``ASVspoof2021_DF_eval/flac``, key under ``keys/``).
        phase: keep only ``eval``, ``progress`` or ``hidden`` rows; None keeps all.
        key_file: explicit path of ``trial_metadata.txt`` (otherwise searched under root).

    Raises:
        ManifestError: key missing or malformed, with file and line.
    """
    root = corpus_root(root)
    check_phases(phase)
    key = find_key(root, "DF", key_file)
    flac_dir = str(audio_path(root, "x").parent)
    builder = TableBuilder()
    log = ProblemLog()
    for cols in key_rows(
        key,
        phase,
        log,
        n_columns=N_COLUMNS,
        columns="(SPEAKER TRIAL COMPRESSION SOURCE ATTACK KEY TRIM SUBSET VOCODER TASK TEAM "
        "GENDER_PAIR LANGUAGE)",
        condition=("compression", COMPRESSION_CONDITIONS),
        check=_check_vocoder,
    ):
        speaker, trial, compression, source, attack, label, trim, subset, vocoder = cols[:9]
        extra = {"condition": COMPRESSION_CONDITIONS[compression], "source": source, "trim": trim}
        # columns 10-13: TASK TEAM GENDER_PAIR LANGUAGE, kept where given
        for name, value in zip(("task", "team", "gender_pair", "language"), cols[9:]):
            if value != "-":
                extra[name] = value
        builder.append(
            utt_id=trial,
            corpus=CORPUS,
            subset="eval",
            label=BONAFIDE if label == "bonafide" else SPOOF,
            attack=BONAFIDE_ATTACK if label == "bonafide" else attack,
            speaker=speaker,
            codec=compression,
            vocoder=BONAFIDE_ATTACK
            if label == "bonafide"
            else (None if vocoder == "-" else vocoder),
            phase=subset,
            source_path=f"{flac_dir}/{trial}.flac",
            extra=extra,
        )
    log.raise_if_any(hint=f"The key is {key}.")
    return finish(builder, corpus=CORPUS, root=root, check_audio=check_audio, progress=progress)
