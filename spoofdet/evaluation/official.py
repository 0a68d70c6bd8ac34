"""The files the official packages and seed repositories hand a user, taken as their own tools take them.

* Codecfake result files (``--score-layout codecfake``): the seed repository writes one file per
  test set, ``result/<SET>_result.txt`` (``L1``..``L3`` are the test sets ``A1``..``A3``), each line
  ``<wav_name> <P(real)> <real|fake>`` with the bare wav name (``p228_028.wav``). Key ids are
  ``<subset>/<wav_name>`` because real clips recur across test sets. :func:`map_bare_names` maps a
  bare name onto the one key id ``<subset>/<name>`` it can mean; a name that several selected
  test sets hold is refused with the command that evaluates one test set at a time.
* ASVspoof 2021 LA ASV files (:func:`official_asv_files`): the official ``evaluate.py`` takes the
  ``keys/`` folder and reads ``LA/ASV/trial_metadata.txt`` and ``LA/ASV/ASVTorch_Kaldi/score.txt``
  under it; so does ``spoofdet evaluate`` when the CM key sits in that layout.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from spoofdet.evaluation.scorefile import MAX_EXAMPLES, ScoreFileError, Scores

#: The test sets the Codecfake result files name differently (``L1_result.txt`` holds A1).
CODECFAKE_RESULT_ALIASES = {"L1": "A1", "L2": "A2", "L3": "A3"}
_RESULT_NAME = re.compile(r"^(?P<set>[A-Za-z0-9-]+)_result\.txt$")
#: Spellings of the 2021 LA ASV score folder: the official scripts write ``ASVTorch_Kaldi``, the
#: official README ``ASVtorch_kaldi``; the first that exists is used.
ASV_SCORE_DIRS = ("ASVTorch_Kaldi", "ASVtorch_kaldi")


def subset_of_result_file(path: str | Path) -> str | None:
    """The test set a Codecfake result file is named for (``C3-1_result.txt`` -> ``C3-1``,
    ``L2_result.txt`` -> ``A2``), or None for any other name."""
    m = _RESULT_NAME.match(Path(path).name)
    if m is None:
        return None
    return CODECFAKE_RESULT_ALIASES.get(m["set"], m["set"])


def map_bare_names(
    scores: Scores, key_ids: Sequence[str], subsets: Sequence[str], key_path: str
) -> tuple[Scores, str | None]:
    """Map the bare wav names of a Codecfake result file onto ``<subset>/<name>`` key ids.

    Args:
        scores: a read score file.
        key_ids: every id of the key (``<subset>/<wav_name>``).
        subsets: the subsets the key selects (one label file: one subset).
        key_path: the ``--key`` given (a label file or the corpus root), for the suggested command.

    Returns:
        ``(scores, mapping)``: ids already in the key are kept; a bare name (no ``/``) that is
        not a key id becomes the one id ``<subset>/<name>`` of the selected subsets that exists.
        ``mapping`` says so (``"bare names -> C1/<name>"``) or is None when nothing was mapped.
        Names that match nothing are left as they are (:func:`match_scores` reports them).

    Raises:
        ScoreFileError: a bare name matches ids in several selected subsets (the key spans several
            test sets, e.g. ``--phase test``): the message gives the command that evaluates one
            test set at a time.
    """
    known = set(key_ids)
    where: dict[str, list[str]] = {}
    for utt in key_ids:
        subset, sep, name = utt.partition("/")
        if sep and subset in subsets:
            where.setdefault(name, []).append(subset)
    new_ids: list[str] = []
    ambiguous: list[tuple[str, int, list[str]]] = []
    used: set[str] = set()
    for utt, line in zip(scores.ids, scores.lines):
        hits = where.get(utt, []) if utt not in known and "/" not in utt else []
        if len(hits) > 1:
            ambiguous.append((utt, line, hits))
        if len(hits) == 1:
            used.add(hits[0])
            new_ids.append(f"{hits[0]}/{utt}")
        else:
            new_ids.append(utt)
    if ambiguous:
        raise _ambiguous_error(scores, ambiguous, where, subsets, key_path)
    if not used:
        return scores, None
    mapping = "bare names -> " + ", ".join(f"{s}/<name>" for s in sorted(used))
    return replace(scores, ids=new_ids), mapping


def _ambiguous_error(
    scores: Scores,
    ambiguous: list[tuple[str, int, list[str]]],
    where: dict[str, list[str]],
    subsets: Sequence[str],
    key_path: str,
) -> ScoreFileError:
    """The refusal of :func:`map_bare_names`, with a command that evaluates one test set."""
    bare = [u for u in scores.ids if "/" not in u]
    holding = [s for s in subsets if all(s in where.get(u, ()) for u in bare)]
    named = subset_of_result_file(scores.path)
    subset = named if named in subsets else (holding[0] if holding else subsets[0])
    key = Path(key_path)
    label = key / "label" / f"{subset}.txt"
    key_arg = str(label) if label.is_file() else str(key)
    examples = ", ".join(
        f"{u!r} (line {ln}: {', '.join(f'{s}/{u}' for s in hits[:3])}"
        + (", ..." if len(hits) > 3 else "")
        + ")"
        for u, ln, hits in ambiguous[:MAX_EXAMPLES]
    )
    which = (
        f"its name says it holds test set {named}"
        if named in subsets
        else (
            f"all its names occur in test set(s) {', '.join(holding)}"
            if holding
            else "its names do not all occur in any one test set"
        )
    )
    return ScoreFileError(
        f"score file {scores.path} has bare wav names, but the key {key_path} spans "
        f"{len(subsets)} test sets ({', '.join(subsets)}) and {len(ambiguous):,} of the names occur "
        f"in several of them (Codecfake real clips recur across test sets), e.g. {examples}; "
        "which clip each line scores cannot be told.\n"
        "The Codecfake repository writes one result file per test set (result/C1_result.txt .. "
        "result/C7_result.txt, L1..L3_result.txt for A1..A3): evaluate one test set at a time "
        f"({which}), e.g.:\n"
        f"  spoofdet evaluate --scores {shlex.quote(scores.path)} --key {shlex.quote(key_arg)} "
        f"--format codecfake --score-layout {scores.layout} --phase {subset}"
    )


def official_asv_files(cm_key: Path) -> tuple[Path, Path] | None:
    """The ASV key and scores the official 2021 LA ``evaluate.py`` reads beside a CM key.

    ``cm_key`` is ``.../keys/LA/CM/trial_metadata.txt``; returns ``(.../LA/ASV/trial_metadata.txt,
    .../LA/ASV/ASVTorch_Kaldi/score.txt)`` (either spelling of :data:`ASV_SCORE_DIRS`) when both
    exist, else None.
    """
    asv_key, scores = asv_files_beside(cm_key)
    return (asv_key, scores) if asv_key is not None and scores is not None else None


def asv_files_beside(cm_key: Path) -> tuple[Path | None, Path | None]:
    """``(ASV key, ASV scores)`` of the official layout beside ``cm_key`` (see
    :func:`official_asv_files`), each None where that file does not exist."""
    asv = cm_key.parent.parent / "ASV"
    if cm_key.parent.name != "CM":
        return None, None
    key = asv / "trial_metadata.txt"
    scores = next(
        (asv / d / "score.txt" for d in ASV_SCORE_DIRS if (asv / d / "score.txt").is_file()), None
    )
    return (key if key.is_file() else None), scores


#: The organisers' 2019 LA ASV score files, per split (train has none).
ASV_2019_FILES = {
    "dev": "ASVspoof2019.LA.asv.dev.gi.trl.scores.txt",
    "eval": "ASVspoof2019.LA.asv.eval.gi.trl.scores.txt",
}


def asv_2019_beside(key_path: Path, split: str | None) -> Path | None:
    """The 2019 LA ASV score file of ``split`` where the official release puts it for the CM
    protocol ``key_path`` (or the LA root it names): ``LA/ASVspoof2019_LA_asv_scores/`` beside
    ``LA/ASVspoof2019_LA_cm_protocols/``, or the protocol's own folder; None if absent."""
    name = ASV_2019_FILES.get(split or "")
    if name is None:
        return None
    folders = [key_path] if key_path.is_dir() else [key_path.parent, key_path.parent.parent]
    for folder in folders:
        for where in (folder / "ASVspoof2019_LA_asv_scores" / name, folder / name):
            if where.is_file():
                return where
    return None
