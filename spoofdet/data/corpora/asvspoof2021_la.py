"""ASVspoof 2021 LA (logical access, telephony channels): an evaluation corpus.

Layout::

    ROOT/ASVspoof2021_LA_eval/flac/<TRIAL>.flac
    ROOT/keys/LA/CM/trial_metadata.txt        (from LA-keys-full.tar.gz)

Key lines have 8 columns ``SPEAKER TRIAL CODEC TRANSMISSION ATTACK KEY TRIM SUBSET``, e.g.
``LA_0009 LA_E_9332881 alaw ita_tx A07 spoof notrim eval``. The label is column 6, the phase
column 8 (``eval``/``progress``/``hidden``). Published numbers use only ``eval`` rows, so every
phase is kept in the ``phase`` column and ``phase="eval"`` selects them. Bona fide rows carry
``bonafide`` or ``-`` in the attack column depending on the key's source; the parser keys on
column 6 alone. Codec -> condition: none C1, alaw C2, pstn C3, g722 C4, ulaw C5, gsm C6, opus C7.
"""

from __future__ import annotations

from pathlib import Path

from spoofdet.data.corpora._asvspoof2021 import check_phases, find_key, key_rows
from spoofdet.data.corpora._common import Manifest, ProblemLog, corpus_root, finish
from spoofdet.data.schema import BONAFIDE, BONAFIDE_ATTACK, SPOOF, TableBuilder

CORPUS = "asvspoof2021-la"
CODEC_CONDITIONS = {
    "none": "C1",
    "alaw": "C2",
    "pstn": "C3",
    "g722": "C4",
    "ulaw": "C5",
    "gsm": "C6",
    "opus": "C7",
}
N_COLUMNS = 8


def audio_path(root: str | Path, trial: str) -> Path:
    return Path(root) / "ASVspoof2021_LA_eval" / "flac" / f"{trial}.flac"


def prepare_asvspoof2021_la(
    root: str | Path,
    phase: str | None = None,
    *,
    key_file: str | Path | None = None,
    check_audio: bool = True,
    progress: bool = False,
) -> Manifest:
    """Parse the ASVspoof 2021 LA CM key into schema rows (``subset`` = ``eval``).

    Args:
        root: corpus root (audio under ``ASVspoof2021_LA_eval/flac``, key under ``keys/``).
        phase: keep only ``eval``, ``progress`` or ``hidden`` rows; None keeps all.
        key_file: explicit path of ``trial_metadata.txt`` (otherwise searched under root).

    Raises:
        ManifestError: key missing or malformed (wrong column count, unknown label or phase,
            unknown codec, duplicate trial), with file and line.
    """
    root = corpus_root(root)
    check_phases(phase)
    key = find_key(root, "LA", key_file)
    flac_dir = str(audio_path(root, "x").parent)
    builder = TableBuilder()
    log = ProblemLog()
    for cols in key_rows(
        key,
        phase,
        log,
        n_columns=N_COLUMNS,
        columns="'SPEAKER TRIAL CODEC TRANSMISSION ATTACK KEY TRIM SUBSET'",
        condition=("codec", CODEC_CONDITIONS),
    ):
        speaker, trial, codec, transmission, attack, label, trim, subset = cols
        builder.append(
            utt_id=trial,
            corpus=CORPUS,
            subset="eval",
            label=BONAFIDE if label == "bonafide" else SPOOF,
            attack=BONAFIDE_ATTACK if label == "bonafide" else attack,
            speaker=speaker,
            codec=codec,
            transmission=None if transmission == "-" else transmission,
            phase=subset,
            source_path=f"{flac_dir}/{trial}.flac",
            extra={"condition": CODEC_CONDITIONS[codec], "trim": trim},
        )
    log.raise_if_any(hint=f"The key is {key}.")
    return finish(builder, corpus=CORPUS, root=root, check_audio=check_audio, progress=progress)
