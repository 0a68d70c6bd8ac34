"""The one data contract of spoofdet: an utterance row, its labels and its score polarity.

Every corpus parser, shard writer, data pipeline, model and metric imports its conventions
from here; nothing else defines them.

Conventions (written once, here):

* **Label**: ``1`` = bona fide (genuine human speech), ``0`` = spoof (synthetic, converted,
  codec-resynthesised...). ``null`` = unlabelled (a folder of audio to score). Seeds disagree
  (Codecfake and AMSDF use 0 = real); parsers translate their corpus' strings into this.
* **Score**: a float per utterance, **higher = more bona fide**. Calibrated scores are
  log-likelihood ratios log p(x | bona fide) / p(x | spoof). Score files hold
  ``<utt_id> <score>`` lines and are always written whole, never appended.
* **Audio**: 16 kHz mono, stored as encoded lossless bytes (FLAC) in the ``audio`` column; the
  column is null in metadata-only tables (manifests, ``metadata.parquet``).
* **attack**: the spoofing system id (``A07``, a Codecfake codec tag, ...); ``"bonafide"`` on
  bona fide rows so that per-attack breakdowns never confuse "no attack" with "unknown".
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import pyarrow as pa

from spoofdet.errors import SpoofdetError

BONAFIDE: int = 1
SPOOF: int = 0
LABEL_NAMES: dict[int, str] = {BONAFIDE: "bonafide", SPOOF: "spoof"}
BONAFIDE_ATTACK: str = "bonafide"
#: Scores are oriented so that a higher value means "more bona fide".
HIGHER_SCORE_MEANS: str = "bonafide"
#: Sample rate of every waveform after sharding (Hz).
SAMPLE_RATE: int = 16_000


def _field(name: str, typ: pa.DataType, doc: str, nullable: bool = True) -> pa.Field:
    return pa.field(name, typ, nullable=nullable, metadata={"doc": doc})


UTTERANCE_SCHEMA: pa.Schema = pa.schema(
    [
        _field(
            "utt_id", pa.string(), "Utterance id, unique within a corpus table.", nullable=False
        ),
        _field("corpus", pa.string(), "Corpus name, e.g. asvspoof2019-la.", nullable=False),
        _field(
            "subset",
            pa.string(),
            "Partition: train/dev/eval, or a Codecfake test set C1..C7, A1..A3.",
            nullable=False,
        ),
        _field("label", pa.int8(), "1 = bona fide, 0 = spoof, null = unlabelled."),
        _field(
            "attack",
            pa.string(),
            "Spoofing system id; 'bonafide' on bona fide rows; null if unknown.",
        ),
        _field("speaker", pa.string(), "Speaker id or name."),
        _field(
            "codec",
            pa.string(),
            "Channel codec / compression condition (2021 LA codec, 2021 DF compression).",
        ),
        _field("transmission", pa.string(), "Transmission condition (2021 LA)."),
        _field("vocoder", pa.string(), "Vocoder group (2021 DF)."),
        _field("phase", pa.string(), "Evaluation phase (2021: eval/progress/hidden)."),
        _field(
            "orig_sample_rate",
            pa.int32(),
            "Sample rate of the source file (Hz), before resampling.",
        ),
        _field("num_samples", pa.int64(), "Samples of the stored 16 kHz waveform."),
        _field("duration", pa.float32(), "Duration in seconds."),
        _field("source_path", pa.string(), "Path of the source audio file."),
        _field(
            "audio", pa.binary(), "16 kHz mono audio as FLAC bytes; null in metadata-only tables."
        ),
        _field(
            "extra",
            pa.map_(pa.string(), pa.string()),
            "Free-form per-corpus fields (trim, source, condition id, ...).",
        ),
    ],
    metadata={
        "label_convention": "1=bonafide,0=spoof",
        "score_convention": "higher=more bonafide",
        "sample_rate": str(SAMPLE_RATE),
    },
)

COLUMNS: tuple[str, ...] = tuple(UTTERANCE_SCHEMA.names)
#: Every column but ``audio``: what metadata-only readers project.
METADATA_COLUMNS: tuple[str, ...] = tuple(c for c in COLUMNS if c != "audio")
REQUIRED_COLUMNS: tuple[str, ...] = ("utt_id", "corpus", "subset")


class SchemaError(SpoofdetError):
    """A table does not conform to :data:`UTTERANCE_SCHEMA`."""


def label_from_name(name: str) -> int:
    """``"bonafide"`` -> 1, ``"spoof"`` -> 0 (the two canonical names only)."""
    for value, label_name in LABEL_NAMES.items():
        if name == label_name:
            return value
    raise ValueError(f"unknown label {name!r}: expected one of {sorted(LABEL_NAMES.values())}")


class TableBuilder:
    """Accumulates rows column by column (fast for the 600k-row 2021 DF key) into a schema table.

    ``append`` takes the schema's column names as keywords; a column not given is null.
    ``extra`` is a mapping of strings.
    """

    def __init__(self) -> None:
        self._cols: dict[str, list[Any]] = {name: [] for name in COLUMNS}
        self._n = 0

    def __len__(self) -> int:
        return self._n

    def append(self, **row: Any) -> None:
        extra = row.get("extra")
        if isinstance(extra, Mapping):
            row["extra"] = list(extra.items())
        for name, col in self._cols.items():
            col.append(row.pop(name, None))
        if row:
            for col in self._cols.values():  # undo the partial row before reporting
                col.pop()
            raise KeyError(f"not schema columns: {sorted(row)}")
        self._n += 1

    def to_table(self) -> pa.Table:
        arrays = [pa.array(self._cols[f.name], type=f.type) for f in UTTERANCE_SCHEMA]
        return pa.Table.from_arrays(arrays, schema=UTTERANCE_SCHEMA)


def rows_to_table(rows: Iterable[Mapping[str, Any]]) -> pa.Table:
    """Build a schema table from dict rows (missing columns become null)."""
    builder = TableBuilder()
    for row in rows:
        builder.append(**row)
    return builder.to_table()


def empty_table() -> pa.Table:
    return UTTERANCE_SCHEMA.empty_table()


def conform(table: pa.Table) -> pa.Table:
    """Return ``table`` with the schema's columns in order, adding missing nullable ones as null.

    Raises:
        SchemaError: a required column is missing or a column cannot be cast to its schema type.
    """
    missing_required = [c for c in REQUIRED_COLUMNS if c not in table.column_names]
    if missing_required:
        raise SchemaError(f"table lacks required column(s) {missing_required}")
    extra_cols = [c for c in table.column_names if c not in COLUMNS]
    if extra_cols:
        raise SchemaError(
            f"table has columns outside the schema: {extra_cols}; put them in 'extra'"
        )
    arrays = []
    for f in UTTERANCE_SCHEMA:
        if f.name in table.column_names:
            col = table.column(f.name)
            try:
                arrays.append(col.cast(f.type) if col.type != f.type else col)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise SchemaError(
                    f"column {f.name!r} has type {col.type}, cannot cast to {f.type}: {exc}"
                ) from exc
        else:
            arrays.append(pa.nulls(table.num_rows, type=f.type))
    return pa.Table.from_arrays(arrays, schema=UTTERANCE_SCHEMA)


def validate_table(table: pa.Table, *, where: str = "table") -> None:
    """Check the invariants every stored table keeps.

    Checks: exact schema; no null in required columns; labels in {0, 1, null}; ``utt_id`` unique;
    bona fide rows carry ``attack == "bonafide"`` and spoof rows do not.

    Raises:
        SchemaError: naming ``where`` and the offending rows.
    """
    import pyarrow.compute as pc

    if not table.schema.equals(UTTERANCE_SCHEMA, check_metadata=False):
        raise SchemaError(
            f"{where}: schema differs from spoofdet.data.schema.UTTERANCE_SCHEMA; build it with conform()"
        )
    problems: list[str] = []
    for name in REQUIRED_COLUMNS:
        nulls = table.column(name).null_count
        if nulls:
            problems.append(f"{nulls} null value(s) in required column {name!r}")
    labels = table.column("label")
    bad = pc.and_(pc.is_valid(labels), pc.invert(pc.is_in(labels, pa.array([0, 1], pa.int8()))))
    n_bad = pc.sum(bad).as_py() or 0
    if n_bad:
        problems.append(f"{n_bad} label(s) outside {{0, 1, null}}")
    ids = table.column("utt_id")
    if pc.count_distinct(ids).as_py() != table.num_rows:
        counts = pc.value_counts(ids)
        dup = [v["values"].as_py() for v in counts if v["counts"].as_py() > 1][:5]
        problems.append(f"duplicate utt_id(s), e.g. {dup}")
    attack = table.column("attack")
    is_bona_attack = pc.fill_null(pc.equal(attack, BONAFIDE_ATTACK), False)
    mismatch = pc.or_(
        pc.and_(pc.fill_null(pc.equal(labels, BONAFIDE), False), pc.invert(is_bona_attack)),
        pc.and_(pc.fill_null(pc.equal(labels, SPOOF), False), is_bona_attack),
    )
    n_mismatch = pc.sum(mismatch).as_py() or 0
    if n_mismatch:
        problems.append(
            f"{n_mismatch} row(s) whose attack disagrees with the label (bona fide rows need "
            "attack 'bonafide')"
        )
    if problems:
        raise SchemaError(f"{where}: " + "; ".join(problems))
