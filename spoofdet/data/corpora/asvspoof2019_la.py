"""ASVspoof 2019 LA: the training corpus of every seed recipe.

Layout (as distributed)::

    ROOT/ASVspoof2019_LA_cm_protocols/ASVspoof2019.LA.cm.train.trn.txt
    ROOT/ASVspoof2019_LA_cm_protocols/ASVspoof2019.LA.cm.dev.trl.txt
    ROOT/ASVspoof2019_LA_cm_protocols/ASVspoof2019.LA.cm.eval.trl.txt
    ROOT/ASVspoof2019_LA_{train,dev,eval}/flac/<UTT_ID>.flac

Protocol lines have 5 space-separated columns ``SPEAKER UTT_ID - ATTACK KEY``, e.g.
``LA_0079 LA_T_1138215 - - bonafide`` and ``LA_0039 LA_E_2834763 - A11 spoof``: column 4 is
``-`` on bona fide rows and ``A01``..``A19`` on spoof rows; column 5 is ``bonafide|spoof``.
Published counts: train 2,580 bona fide + 22,800 spoof (A01-A06); dev 2,548 + 22,296 (A01-A06);
eval 7,355 + 13 x 4,914 (A07-A19).
"""

from __future__ import annotations

import re
from pathlib import Path

from spoofdet.data.corpora._common import (
    DuplicateTracker,
    Manifest,
    ManifestError,
    ProblemLog,
    check_id,
    corpus_root,
    finish,
    read_fields,
    require_file,
)
from spoofdet.data.schema import BONAFIDE, BONAFIDE_ATTACK, SPOOF, TableBuilder

CORPUS = "asvspoof2019-la"
SPLITS = ("train", "dev", "eval")
PROTOCOL_DIR = "ASVspoof2019_LA_cm_protocols"
PROTOCOL_FILES = {
    "train": "ASVspoof2019.LA.cm.train.trn.txt",
    "dev": "ASVspoof2019.LA.cm.dev.trl.txt",
    "eval": "ASVspoof2019.LA.cm.eval.trl.txt",
}
_ATTACK = re.compile(r"^A\d\d$")


def protocol_path(root: str | Path, split: str) -> Path:
    return Path(root) / PROTOCOL_DIR / PROTOCOL_FILES[split]


def audio_path(root: str | Path, split: str, utt_id: str) -> Path:
    return Path(root) / f"ASVspoof2019_LA_{split}" / "flac" / f"{utt_id}.flac"


#: The utterance-id prefix of each split (``LA_E_2834763`` is an eval utterance).
ID_PREFIXES = {"train": "LA_T_", "dev": "LA_D_", "eval": "LA_E_"}


def split_hint(path: Path) -> str:
    """``"; its N ids all start with LA_E_, so it looks like --phase eval"`` when every id in
    column 2 of ``path`` carries the prefix of one split, else ``""``. A hint only: a renamed or
    hand-made protocol may mix splits, so the split is never taken from the ids."""
    seen: set[str] = set()
    n = 0
    try:
        for _, cols in read_fields(path):
            if len(cols) < 2:
                return ""
            n += 1
            seen.add(next((s for s, pre in ID_PREFIXES.items() if cols[1].startswith(pre)), "?"))
            if len(seen) > 1:
                return ""
    except (ManifestError, UnicodeDecodeError):
        return ""
    if len(seen) != 1 or "?" in seen:
        return ""
    split = seen.pop()
    return f"; its {n:,} ids all start with {ID_PREFIXES[split]}, so it looks like --phase {split}"


def prepare_asvspoof2019_la(
    root: str | Path,
    split: str | None = None,
    *,
    protocol_file: str | Path | None = None,
    check_audio: bool = True,
    progress: bool = False,
) -> Manifest:
    """Parse the ASVspoof 2019 LA CM protocols into schema rows.

    Args:
        root: corpus root holding ``ASVspoof2019_LA_cm_protocols/`` and the audio folders.
        split: ``train``, ``dev`` or ``eval``; None parses all three.
        protocol_file: parse this one protocol file instead of searching under ``root`` (audio
            paths still point under ``root``); its split is ``split`` or, when None, read from
            the official file name.
        check_audio: look for every audio file and list the missing ones in the result.
        progress: show a progress bar while checking audio.

    Raises:
        ManifestError: a protocol file is missing or has malformed lines (all reported at once,
            each with file and line).
        ValueError: an unknown split, or a ``protocol_file`` whose split cannot be told.
    """
    root = corpus_root(root)
    splits = SPLITS if split is None else (split,)
    if any(s not in SPLITS for s in splits):
        raise ValueError(f"unknown split {split!r} for {CORPUS}: expected one of {list(SPLITS)}")
    if protocol_file is not None:
        protocol_file = corpus_root(protocol_file)
        if split is None:
            split = next(
                (s for s, name in PROTOCOL_FILES.items() if protocol_file.name == name), None
            )
            if split is None:
                raise ValueError(
                    f"cannot tell the split of {protocol_file} from its name: the split is read "
                    f"from the official file names {list(PROTOCOL_FILES.values())}; say which "
                    "split it is (spoofdet evaluate --phase train|dev|eval)"
                    + split_hint(protocol_file)
                )
        splits = (split,)
    builder = TableBuilder()
    log = ProblemLog()
    dups = DuplicateTracker(log)
    for s in splits:
        path = require_file(
            protocol_file if protocol_file is not None else protocol_path(root, s),
            f"ASVspoof 2019 LA {s} protocol",
            hint=f"--root must be the folder that contains {PROTOCOL_DIR}/ (the extracted LA.zip).",
        )
        flac_dir = str(audio_path(root, s, "x").parent)
        for lineno, cols in read_fields(path):
            if len(cols) != 5:
                log.add(
                    path,
                    lineno,
                    f"expected 5 columns 'SPEAKER UTT_ID - ATTACK KEY', got {len(cols)}: {' '.join(cols)!r}",
                )
                continue
            speaker, utt_id, _env, attack, key = cols
            if key not in ("bonafide", "spoof"):
                log.add(
                    path,
                    lineno,
                    f"unknown label {key!r} in column 5: expected 'bonafide' or 'spoof'",
                )
                continue
            if key == "bonafide" and attack != "-":
                log.add(path, lineno, f"bona fide row with attack {attack!r}: column 4 must be '-'")
                continue
            if key == "spoof" and not _ATTACK.match(attack):
                log.add(
                    path, lineno, f"spoof row with attack {attack!r}: column 4 must be A01..A19"
                )
                continue
            if not check_id(utt_id, path, lineno, log) or not dups.check(utt_id, path, lineno):
                continue
            builder.append(
                utt_id=utt_id,
                corpus=CORPUS,
                subset=s,
                label=BONAFIDE if key == "bonafide" else SPOOF,
                attack=BONAFIDE_ATTACK if key == "bonafide" else attack,
                speaker=speaker,
                source_path=f"{flac_dir}/{utt_id}.flac",
            )
    log.raise_if_any()
    return finish(builder, corpus=CORPUS, root=root, check_audio=check_audio, progress=progress)
