"""ASVspoof 5 (Track 1, stand-alone countermeasures): the field's current benchmark.

Layout (as distributed)::

    ROOT/ASVspoof5_protocols/ASVspoof5.train.tsv          182,357 rows
    ROOT/ASVspoof5_protocols/ASVspoof5.dev.track_1.tsv    140,950 rows
    ROOT/ASVspoof5_protocols/ASVspoof5.eval.track_1.tsv   680,774 rows
    ROOT/flac_T/<FLAC_FILE_NAME>.flac      (train, ids T_0000000000)
    ROOT/flac_D/<FLAC_FILE_NAME>.flac      (dev, ids D_...)
    ROOT/flac_E_eval/<FLAC_FILE_NAME>.flac (eval, ids E_...)

(Protocol files lying directly in ROOT are found too.) Despite ``.tsv`` the protocols are
whitespace-separated, without header, 10 columns ``SPEAKER_ID FLAC_FILE_NAME SPEAKER_GENDER CODEC
CODEC_Q CODEC_SEED ATTACK_TAG ATTACK_LABEL KEY TMP``, e.g. ``T_4850 T_0000000000 F - - - - bonafide
bonafide -`` and ``E_0010 E_0000000042 M C05 3 E_0000000007 AC1 A21 spoof -``. Mapping:

- ``utt_id`` = FLAC_FILE_NAME, ``speaker`` = SPEAKER_ID, ``subset`` = the split, ``corpus`` =
  ``asvspoof5``, ``label`` from KEY (``bonafide``/``spoof``; anything else is an error).
- ``attack`` = ATTACK_LABEL (``A01`` .. ``A32``) on spoof rows, ``bonafide`` on bona fide rows
  (whose ATTACK_LABEL must be ``bonafide`` or ``-``).
- ``codec`` and ``extra['condition']`` = CODEC (``C01`` .. ``C11``), or ``none`` for uncoded rows
  (CODEC ``-``), so the codec breakdown of ``spoofdet evaluate`` names every condition.
- ``extra``: ``gender`` (SPEAKER_GENDER), and where not ``-``: ``codec_q`` (CODEC_Q),
  ``codec_seed`` (CODEC_SEED, the id a coded trial was made from), ``attack_tag`` (ATTACK_TAG)
  and ``tmp`` (TMP).

The official Track 1 CM key (``filename<TAB>cm-label`` with a header line, as taken by the
challenge's ``evaluation.py --cm_keys``) is read by :func:`read_asvspoof5_key`.
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
    open_text,
    read_fields,
    require_file,
)
from spoofdet.data.schema import BONAFIDE, BONAFIDE_ATTACK, SPOOF, TableBuilder

CORPUS = "asvspoof5"
SPLITS = ("train", "dev", "eval")
PROTOCOL_DIR = "ASVspoof5_protocols"
PROTOCOL_FILES = {
    "train": "ASVspoof5.train.tsv",
    "dev": "ASVspoof5.dev.track_1.tsv",
    "eval": "ASVspoof5.eval.track_1.tsv",
}
AUDIO_DIRS = {"train": "flac_T", "dev": "flac_D", "eval": "flac_E_eval"}
COLUMNS = (
    "SPEAKER_ID FLAC_FILE_NAME SPEAKER_GENDER CODEC CODEC_Q CODEC_SEED ATTACK_TAG ATTACK_LABEL "
    "KEY TMP"
)
N_COLUMNS = 10
#: ``extra['condition']`` (and ``codec``) of uncoded trials (CODEC ``-``).
UNCODED = "none"
#: The header line of the official CM key file (the score file's is in
#: ``spoofdet.evaluation.scorefile.LAYOUTS['asvspoof5']``).
KEY_HEADER = ("filename", "cm-label")
_ATTACK = re.compile(r"^A\d\d$")
_CODEC = re.compile(r"^C\d\d$")
_CODEC_Q = re.compile(r"^\d+$")


def protocol_path(root: str | Path, split: str) -> Path:
    """Where the protocol of ``split`` is under a corpus root: ``ASVspoof5_protocols/NAME``, or
    ``NAME`` directly in the root when only that one exists."""
    nested = Path(root) / PROTOCOL_DIR / PROTOCOL_FILES[split]
    flat = Path(root) / PROTOCOL_FILES[split]
    return flat if flat.is_file() and not nested.is_file() else nested


def audio_path(root: str | Path, split: str, utt_id: str) -> Path:
    return Path(root) / AUDIO_DIRS[split] / f"{utt_id}.flac"


def split_of(name: str) -> str | None:
    """The split an official protocol file name stands for (None for any other name)."""
    return next((s for s, official in PROTOCOL_FILES.items() if name == official), None)


def first_fields(path: str | Path) -> list[str]:
    """The whitespace-separated fields of the first non-blank line of a text file ([] if none);
    how the official key and score files (header lines) are told from protocols."""
    with open_text(Path(path)) as fh:
        for line in fh:
            if line.strip():
                return line.split()
    return []


def is_official_key(path: str | Path) -> bool:
    """True when ``path`` is a file whose first line is the CM key header ``filename cm-label``."""
    return Path(path).is_file() and tuple(first_fields(path)) == KEY_HEADER


def _locate(root: Path) -> tuple[Path, Path | None]:
    """``(corpus root, protocol file or None)`` for what ``--root`` names: the corpus root, its
    ``ASVspoof5_protocols`` folder, or one protocol file (whose corpus root is the folder above
    ``ASVspoof5_protocols``, or its own folder)."""
    if root.is_file():
        folder = root.parent
        return (folder.parent if folder.name == PROTOCOL_DIR else folder), root
    if root.name == PROTOCOL_DIR and not (root / PROTOCOL_DIR).is_dir():
        return root.parent, None
    return root, None


def prepare_asvspoof5(
    root: str | Path,
    split: str | None = None,
    *,
    protocol_file: str | Path | None = None,
    check_audio: bool = True,
    progress: bool = False,
) -> Manifest:
    """Parse the ASVspoof 5 Track 1 protocols into schema rows (mapping in the module docstring).

    Args:
        root: the corpus root (holding ``ASVspoof5_protocols/`` and ``flac_T``, ``flac_D``,
            ``flac_E_eval``), its ``ASVspoof5_protocols`` folder, or one protocol file (then
            as ``protocol_file``, with the corpus root the folder above ``ASVspoof5_protocols``).
        split: ``train``, ``dev`` or ``eval``; None parses every split whose protocol exists
            (at least one must).
        protocol_file: parse this one protocol file (audio paths still point under ``root``);
            its split is ``split`` or, when None, read from the official file name.
        check_audio: look for every audio file and list the missing ones in the result.
        progress: show a progress bar while checking audio.

    Raises:
        ManifestError: no protocol found, or malformed lines: wrong column count, a KEY other
            than ``bonafide``/``spoof``, an attack label that disagrees with the key, a CODEC
            other than ``-``/``C01``.., a CODEC_Q other than ``-`` or a number, a bad or
            duplicate id (all reported at once, each with file and line).
        ValueError: an unknown split, or a protocol file whose split cannot be told.
    """
    base, found_file = _locate(corpus_root(root))
    if protocol_file is None:
        protocol_file = found_file
    if split is not None and split not in SPLITS:
        raise ValueError(f"unknown split {split!r} for {CORPUS}: expected one of {list(SPLITS)}")
    if protocol_file is not None:
        protocol_file = corpus_root(protocol_file)
        if split is None:
            split = split_of(protocol_file.name)
            if split is None:
                raise ValueError(
                    f"cannot tell the split of {protocol_file} from its name (official names: "
                    f"{list(PROTOCOL_FILES.values())}); say which split it is: train, dev or eval"
                )
        files = {split: protocol_file}
    elif split is not None:
        files = {split: protocol_path(base, split)}
    else:
        files = {s: protocol_path(base, s) for s in SPLITS if protocol_path(base, s).is_file()}
        if not files:
            tried = "\n  ".join(str(protocol_path(base, s)) for s in SPLITS)
            raise ManifestError(
                [f"no ASVspoof 5 protocol found; tried:\n  {tried}"],
                hint=f"--root must be the ASVspoof 5 folder that contains {PROTOCOL_DIR}/ "
                "(ASVspoof5_protocols.tar.gz extracted), that folder, or one protocol file.",
            )
    builder = TableBuilder()
    log = ProblemLog()
    dups = DuplicateTracker(log)
    for s, path in files.items():
        require_file(
            path,
            f"ASVspoof 5 {s} protocol",
            hint=f"--root must be the folder that contains {PROTOCOL_DIR}/ "
            "(ASVspoof5_protocols.tar.gz extracted), that folder, or one protocol file.",
        )
        flac_dir = str(audio_path(base, s, "x").parent)
        for lineno, cols in read_fields(path):
            problem = _row_problem(cols)
            if problem is not None:
                log.add(path, lineno, problem)
                continue
            speaker, utt_id, gender, codec, codec_q, codec_seed, tag, attack, key, tmp = cols
            if not check_id(utt_id, path, lineno, log) or not dups.check(utt_id, path, lineno):
                continue
            condition = UNCODED if codec == "-" else codec
            extra = {"condition": condition, "gender": gender}
            for name, value in (
                ("codec_q", codec_q),
                ("codec_seed", codec_seed),
                ("attack_tag", tag),
                ("tmp", tmp),
            ):
                if value != "-":
                    extra[name] = value
            builder.append(
                utt_id=utt_id,
                corpus=CORPUS,
                subset=s,
                label=BONAFIDE if key == "bonafide" else SPOOF,
                attack=BONAFIDE_ATTACK if key == "bonafide" else attack,
                speaker=speaker,
                codec=condition,
                source_path=f"{flac_dir}/{utt_id}.flac",
                extra=extra,
            )
    log.raise_if_any(
        hint=f"Protocol lines have {N_COLUMNS} whitespace-separated columns {COLUMNS}."
    )
    return finish(builder, corpus=CORPUS, root=base, check_audio=check_audio, progress=progress)


def _row_problem(cols: list[str]) -> str | None:
    """Why a protocol line is malformed (the first problem found), or None."""
    if len(cols) != N_COLUMNS:
        return f"expected {N_COLUMNS} columns '{COLUMNS}', got {len(cols)}: {' '.join(cols)!r}"
    codec, codec_q, attack, key = cols[3], cols[4], cols[7], cols[8]
    if key not in ("bonafide", "spoof"):
        return f"unknown label {key!r} in column 9 (KEY): expected 'bonafide' or 'spoof'"
    if key == "bonafide" and attack not in ("bonafide", "-"):
        return f"bona fide row with attack {attack!r}: column 8 (ATTACK_LABEL) must be 'bonafide'"
    if key == "spoof" and not _ATTACK.match(attack):
        return f"spoof row with attack {attack!r}: column 8 (ATTACK_LABEL) must be A01..A32"
    if codec != "-" and not _CODEC.match(codec):
        return f"unknown codec {codec!r} in column 4 (CODEC): expected '-' (uncoded) or C01..C11"
    if codec_q != "-" and not _CODEC_Q.match(codec_q):
        return f"codec quality {codec_q!r} in column 5 (CODEC_Q) is neither '-' nor a number"
    return None


def read_asvspoof5_key(path: str | Path, split: str = "eval") -> Manifest:
    """Read the official Track 1 CM key: a header line ``filename<TAB>cm-label``, then one
    ``<trial> <bonafide|spoof>`` line per trial (tab- or whitespace-separated).

    The rows carry ``utt_id``, ``label``, ``attack`` (``bonafide`` on bona fide rows; unknown,
    i.e. null, on spoof rows: the key does not say), ``subset`` = ``split`` and no audio path:
    it is a key for ``spoofdet evaluate``, not a corpus to shard.

    Raises:
        ManifestError: a missing or different header, a line without 2 columns, an unknown
            label, a bad or duplicate trial id (all reported at once with file and line).
        ValueError: ``split`` is not train, dev or eval.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r} for {CORPUS}: expected one of {list(SPLITS)}")
    path = require_file(corpus_root(path), "ASVspoof 5 CM key")
    builder = TableBuilder()
    log = ProblemLog()
    dups = DuplicateTracker(log)
    header_seen = False
    for lineno, cols in read_fields(path):
        if not header_seen:
            header_seen = True
            if tuple(cols) != KEY_HEADER:
                log.add(
                    path,
                    lineno,
                    f"expected the header line 'filename<TAB>cm-label' of an ASVspoof 5 CM key, "
                    f"got {' '.join(cols)!r}; a protocol file (10 columns) works as the key too",
                )
                break
            continue
        if len(cols) != 2:
            log.add(path, lineno, f"expected 2 columns 'filename cm-label', got {len(cols)}")
            continue
        trial, label = cols
        if label not in ("bonafide", "spoof"):
            log.add(path, lineno, f"unknown label {label!r}: expected 'bonafide' or 'spoof'")
            continue
        if not check_id(trial, path, lineno, log) or not dups.check(trial, path, lineno):
            continue
        builder.append(
            utt_id=trial,
            corpus=CORPUS,
            subset=split,
            label=BONAFIDE if label == "bonafide" else SPOOF,
            attack=BONAFIDE_ATTACK if label == "bonafide" else None,
        )
    if not header_seen:
        log.add(path, 1, "the key is empty: expected the header line 'filename<TAB>cm-label'")
    log.raise_if_any()
    return finish(builder, corpus=CORPUS, root=path.parent, check_audio=False)
