import pyarrow as pa
import pytest

from spoofdet.data import schema
from spoofdet.data.schema import (
    BONAFIDE,
    SPOOF,
    SchemaError,
    TableBuilder,
    conform,
    rows_to_table,
    validate_table,
)


def test_conventions_are_written_once():
    assert (BONAFIDE, SPOOF) == (1, 0)
    assert schema.HIGHER_SCORE_MEANS == "bonafide"
    assert schema.UTTERANCE_SCHEMA.metadata[b"label_convention"] == b"1=bonafide,0=spoof"
    assert schema.label_from_name("bonafide") == 1 and schema.label_from_name("spoof") == 0
    with pytest.raises(ValueError, match="unknown label 'bona-fide'"):
        schema.label_from_name("bona-fide")


def test_schema_columns():
    names = schema.UTTERANCE_SCHEMA.names
    for col in (
        "utt_id",
        "corpus",
        "subset",
        "label",
        "attack",
        "speaker",
        "codec",
        "transmission",
        "vocoder",
        "phase",
        "orig_sample_rate",
        "duration",
        "source_path",
        "audio",
        "extra",
    ):
        assert col in names
    assert schema.UTTERANCE_SCHEMA.field("audio").type == pa.binary()
    assert "audio" not in schema.METADATA_COLUMNS
    assert schema.UTTERANCE_SCHEMA.field("extra").type == pa.map_(pa.string(), pa.string())


def _row(i, label=1, **kw):
    return {
        "utt_id": f"u{i}",
        "corpus": "c",
        "subset": "train",
        "label": label,
        "attack": "bonafide" if label == 1 else "A01",
        **kw,
    }


def test_builder_round_trip():
    t = rows_to_table([_row(0), _row(1, 0, extra={"k": "v"})])
    validate_table(t)
    assert t.column("label").to_pylist() == [1, 0]
    assert t.column("extra").to_pylist()[1] == [("k", "v")]
    assert t.column("audio").null_count == 2


def test_builder_rejects_unknown_column():
    with pytest.raises(KeyError, match="not schema columns"):
        TableBuilder().append(utt_id="x", colour="red")


def test_validate_catches_duplicates_labels_and_attack_mismatch():
    with pytest.raises(SchemaError, match="duplicate utt_id.*u0"):
        validate_table(rows_to_table([_row(0), _row(0)]))
    with pytest.raises(SchemaError, match="outside"):
        validate_table(rows_to_table([_row(0, label=2, attack="x")]))
    with pytest.raises(SchemaError, match="attack disagrees"):
        validate_table(rows_to_table([_row(0, attack="A01")]))
    with pytest.raises(SchemaError, match="attack disagrees"):
        validate_table(rows_to_table([_row(0, label=0, attack="bonafide")]))
    with pytest.raises(SchemaError, match="null value"):
        validate_table(rows_to_table([{"utt_id": "a", "corpus": "c"}]))


def test_conform_adds_nullable_columns_and_rejects_strays():
    t = pa.table(
        {"utt_id": ["a"], "corpus": ["c"], "subset": ["s"], "label": [1], "attack": ["bonafide"]}
    )
    c = conform(t)
    assert c.schema.equals(schema.UTTERANCE_SCHEMA, check_metadata=False)
    validate_table(c)
    with pytest.raises(SchemaError, match="outside the schema"):
        conform(t.append_column("colour", pa.array(["red"])))
    with pytest.raises(SchemaError, match="required"):
        conform(pa.table({"utt_id": ["a"]}))
    with pytest.raises(SchemaError, match="cannot cast"):
        conform(t.set_column(3, "label", pa.array(["yes"])))
