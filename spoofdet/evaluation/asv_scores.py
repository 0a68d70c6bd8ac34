"""ASV score files for the t-DCF: ASVspoof 2019 LA (``SOURCE KEY SCORE``) and 2021 LA
(``SPEAKER TRIAL SCORE`` with its 8-column key), read strictly into
:class:`spoofdet.evaluation.metrics.AsvScores`.

Errors are :class:`spoofdet.evaluation.scorefile.ScoreFileError`, listing every malformed line as
``file:line`` (the collector of :mod:`spoofdet.evaluation.scorefile`).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from spoofdet.evaluation.metrics import AsvScores
from spoofdet.evaluation.scorefile import (
    MAX_EXAMPLES,
    ScoreFileError,
    _parse_float,
    _Problems,
    _raise_problems,
)


def read_asv_scores_2019(path: str | os.PathLike) -> AsvScores:
    """Read the ASVspoof 2019 LA ASV score file (``SOURCE KEY SCORE``, e.g. ``A13 spoof 9.19``).

    ``KEY`` is ``target``, ``nontarget`` or ``spoof``; ``SOURCE`` names the attack on spoof rows.

    Raises:
        ScoreFileError: missing file, malformed lines (all listed as ``file:line``), or a class
            without any trial.
    """
    path = Path(path)
    if not path.is_file():
        raise ScoreFileError(f"ASV score file not found: {path}")
    groups: dict[str, list[float]] = {"target": [], "nontarget": [], "spoof": []}
    attacks: list[str] = []
    problems = _Problems()
    with open(path, encoding="utf-8-sig", newline="") as fh:
        for lineno, line in enumerate(fh, start=1):
            cols = line.split()
            if not cols:
                continue
            if len(cols) != 3:
                problems.append(
                    f"{path}:{lineno}: expected 3 columns 'SOURCE KEY SCORE', got {len(cols)}"
                )
                continue
            source, key, text = cols
            value = _parse_float(text)
            if key not in groups:
                problems.append(
                    f"{path}:{lineno}: unknown ASV key {key!r}: expected target, nontarget or spoof"
                )
            elif value is None:
                problems.append(f"{path}:{lineno}: score {text!r} is not a finite number")
            else:
                groups[key].append(value)
                if key == "spoof":
                    attacks.append(source)
    if problems:
        _raise_problems(
            path,
            problems,
            "ASV score file",
            "Expected the 2019 LA file ASVspoof2019.LA.asv.{dev,eval}.gi.trl.scores.txt.",
        )
    empty = [k for k, v in groups.items() if not v]
    if empty:
        raise ScoreFileError(
            f"ASV score file {path} has no {', '.join(empty)} trials; the t-DCF needs all three"
        )
    return AsvScores(
        np.asarray(groups["target"]),
        np.asarray(groups["nontarget"]),
        np.asarray(groups["spoof"]),
        np.asarray(attacks, dtype=object),
    )


def read_asv_scores_2021(
    score_path: str | os.PathLike,
    key_path: str | os.PathLike,
    phase: str | None = "eval",
) -> AsvScores:
    """Read ASVspoof 2021 LA ASV scores (``SPEAKER TRIAL SCORE``) with their key.

    The key (``keys/LA/ASV/trial_metadata.txt``) has 8 columns ``SPEAKER TRIAL CODEC TRANSMISSION
    ATTACK KEY TRIM SUBSET`` with ``KEY`` in ``target|nontarget|spoof``. Trials are matched on the
    (speaker, trial) pair; only key rows of ``phase`` are used (None: all), and each of them
    needs exactly one score. Each trial's CODEC is kept as its condition (``none`` C1 ..
    ``opus`` C7, the names of the CM breakdown), for the per-condition t-DCF.

    Raises:
        ScoreFileError: missing files, malformed lines, unmatched or duplicated pairs.
    """
    score_path, key_path = Path(score_path), Path(key_path)
    for p, what in ((score_path, "ASV score file"), (key_path, "ASV key")):
        if not p.is_file():
            raise ScoreFileError(f"{what} not found: {p}")
    key, all_pairs = _read_asv_key_2021(key_path, phase)
    values = _read_asv_trials_2021(score_path, key_path, key, all_pairs)
    missing = [p for p in key if p not in values]
    if missing:
        raise ScoreFileError(
            f"ASV score file {score_path} lacks {len(missing):,} trial(s) of phase {phase!r} in "
            f"{key_path}, e.g. {missing[:MAX_EXAMPLES]}"
        )
    groups: dict[str, list[float]] = {"target": [], "nontarget": [], "spoof": []}
    conditions: dict[str, list[str]] = {"target": [], "nontarget": [], "spoof": []}
    attacks: list[str] = []
    for pair, (kind, attack, condition) in key.items():
        groups[kind].append(values[pair])
        conditions[kind].append(condition)
        if kind == "spoof":
            attacks.append(attack)
    empty = [k for k, v in groups.items() if not v]
    if empty:
        raise ScoreFileError(
            f"ASV key {key_path} has no {', '.join(empty)} trials of phase {phase!r}"
        )
    return AsvScores(
        np.asarray(groups["target"]),
        np.asarray(groups["nontarget"]),
        np.asarray(groups["spoof"]),
        np.asarray(attacks, dtype=object),
        *(np.asarray(conditions[k], dtype=object) for k in ("target", "nontarget", "spoof")),
    )


def _read_asv_key_2021(
    key_path: Path, phase: str | None
) -> tuple[dict[tuple[str, str], tuple[str, str, str]], set[tuple[str, str]]]:
    """The 2021 ASV key: (speaker, trial) -> (KEY, ATTACK, condition of CODEC) for the rows of
    ``phase``, and the pairs of every phase. Raises :class:`ScoreFileError` listing the
    malformed lines (an unknown codec included)."""
    # imported here: the corpus package pulls in pyarrow, which this module does not need
    from spoofdet.data.corpora.asvspoof2021_la import CODEC_CONDITIONS

    key: dict[tuple[str, str], tuple[str, str, str]] = {}
    all_pairs: set[tuple[str, str]] = set()
    problems = _Problems()
    with open(key_path, encoding="utf-8-sig", newline="") as fh:
        for lineno, line in enumerate(fh, start=1):
            cols = line.split()
            if not cols:
                continue
            if len(cols) != 8:
                problems.append(
                    f"{key_path}:{lineno}: expected 8 columns 'SPEAKER TRIAL CODEC TRANSMISSION "
                    f"ATTACK KEY TRIM SUBSET', got {len(cols)}"
                )
                continue
            if cols[5] not in ("target", "nontarget", "spoof"):
                problems.append(f"{key_path}:{lineno}: unknown ASV key {cols[5]!r} in column 6")
                continue
            if cols[2] not in CODEC_CONDITIONS:
                problems.append(
                    f"{key_path}:{lineno}: unknown codec {cols[2]!r} in column 3: expected one of "
                    f"{list(CODEC_CONDITIONS)}"
                )
                continue
            pair = (cols[0], cols[1])
            if pair in all_pairs:
                problems.append(f"{key_path}:{lineno}: duplicate trial {pair}")
                continue
            all_pairs.add(pair)
            if phase is None or cols[7] == phase:
                key[pair] = (cols[5], cols[4], CODEC_CONDITIONS[cols[2]])
    if problems:
        _raise_problems(key_path, problems, "ASV key")
    if not key:
        raise ScoreFileError(f"ASV key {key_path} has no rows of phase {phase!r}")
    return key, all_pairs


def _read_asv_trials_2021(
    score_path: Path,
    key_path: Path,
    key: dict[tuple[str, str], tuple[str, str, str]],
    all_pairs: set[tuple[str, str]],
) -> dict[tuple[str, str], float]:
    """The 2021 ASV scores of the key's ``phase`` rows, by (speaker, trial). Raises
    :class:`ScoreFileError` listing malformed, duplicated and unknown trials."""
    values: dict[tuple[str, str], float] = {}
    seen: set[tuple[str, str]] = set()
    problems = _Problems()
    with open(score_path, encoding="utf-8-sig", newline="") as fh:
        for lineno, line in enumerate(fh, start=1):
            cols = line.split()
            if not cols:
                continue
            value = _parse_float(cols[2]) if len(cols) == 3 else None
            if value is None:
                problems.append(
                    f"{score_path}:{lineno}: expected 'SPEAKER TRIAL SCORE' with a finite score, "
                    f"got {line.strip()[:80]!r}"
                )
                continue
            pair = (cols[0], cols[1])
            if pair in seen:
                problems.append(f"{score_path}:{lineno}: duplicate trial {pair}")
            elif pair not in all_pairs:
                problems.append(
                    f"{score_path}:{lineno}: trial {pair} is not in the ASV key {key_path}"
                )
            elif pair in key:
                values[pair] = value
            seen.add(pair)
    if problems:
        _raise_problems(score_path, problems, "ASV score file")
    return values
