"""Corpus parsers: one module per corpus, each ``prepare_<corpus>(root, ...) -> Manifest``.

``CORPORA`` maps the CLI name of a corpus to its parser; every parser takes ``(root, split)``
plus the keywords ``check_audio`` and ``progress``, and ends by validating its rows against
:mod:`spoofdet.data.schema`.
"""

from __future__ import annotations

from collections.abc import Callable

from spoofdet.data.corpora._common import Manifest, ManifestError
from spoofdet.data.corpora.asvspoof5 import prepare_asvspoof5
from spoofdet.data.corpora.asvspoof2019_la import prepare_asvspoof2019_la
from spoofdet.data.corpora.asvspoof2021_df import prepare_asvspoof2021_df
from spoofdet.data.corpora.asvspoof2021_la import prepare_asvspoof2021_la
from spoofdet.data.corpora.codecfake import prepare_codecfake
from spoofdet.data.corpora.csv_manifest import prepare_csv
from spoofdet.data.corpora.folder import prepare_folder
from spoofdet.data.corpora.in_the_wild import prepare_in_the_wild

CORPORA: dict[str, Callable[..., Manifest]] = {
    "asvspoof2019-la": prepare_asvspoof2019_la,
    "asvspoof2021-la": prepare_asvspoof2021_la,
    "asvspoof2021-df": prepare_asvspoof2021_df,
    "asvspoof5": prepare_asvspoof5,
    "in-the-wild": prepare_in_the_wild,
    "codecfake": prepare_codecfake,
    "folder": prepare_folder,
    "csv": prepare_csv,
}

#: What ``--split`` means for each corpus (for ``--help`` and error messages).
SPLIT_HELP: dict[str, str] = {
    "asvspoof2019-la": "train, dev or eval",
    "asvspoof2021-la": "phase: eval, progress or hidden (published numbers use eval)",
    "asvspoof2021-df": "phase: eval, progress or hidden (published numbers use eval)",
    "asvspoof5": "train, dev or eval (Track 1; default: every split whose protocol exists)",
    "in-the-wild": "eval (the only split)",
    "codecfake": "train, dev, test (all test sets) or one test set: C1..C7, A1..A3",
    "folder": "a subset name to give the rows (default: all)",
    "csv": "keep rows whose subset column equals it",
}


def prepare(corpus: str, root: str, split: str | None = None, **kwargs) -> Manifest:
    """Dispatch to the parser of ``corpus`` (a key of :data:`CORPORA`)."""
    try:
        fn = CORPORA[corpus]
    except KeyError:
        raise ValueError(f"unknown corpus {corpus!r}: expected one of {list(CORPORA)}") from None
    return fn(root, split, **kwargs)


__all__ = [
    "CORPORA",
    "SPLIT_HELP",
    "Manifest",
    "ManifestError",
    "prepare",
    *[f.__name__ for f in CORPORA.values()],
]
