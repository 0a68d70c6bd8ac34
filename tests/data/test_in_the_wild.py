import pytest

from spoofdet.data.corpora import ManifestError, prepare_in_the_wild


def _meta(tmp_path, body: str):
    (tmp_path / "meta.csv").write_text(body, encoding="utf-8")
    return tmp_path


def test_real_format(tmp_path):
    root = _meta(
        tmp_path,
        'file,speaker,label\n0.wav,Alec Guinness,spoof\n1.wav,"Obama, Barack",bona-fide\n'
        "2.wav,Zoë,bona-fide\n",
    )
    m = prepare_in_the_wild(root, check_audio=False)
    rows = m.table.to_pylist()
    assert [r["utt_id"] for r in rows] == ["0.wav", "1.wav", "2.wav"]
    assert [r["label"] for r in rows] == [0, 1, 1]
    assert rows[1]["speaker"] == "Obama, Barack" and rows[2]["speaker"] == "Zoë"
    assert rows[0]["attack"] is None and rows[1]["attack"] == "bonafide"
    assert rows[0]["source_path"] == str(root / "0.wav")
    assert m.summary()["by_subset"]["eval"]["bonafide"] == 2


@pytest.mark.parametrize(
    "body,match",
    [
        ("file,speaker\n0.wav,A\n", r"meta.csv:1: header must be 'file,speaker,label'"),
        (
            "file,speaker,label\n0.wav,A,bonafide\n",
            r"meta.csv:2: unknown label 'bonafide': expected 'bona-fide' or 'spoof'",
        ),
        ("file,speaker,label\n0.wav,A,spoof,extra\n", r"meta.csv:2: expected 3 columns"),
        (
            "file,speaker,label\n0.wav,A,spoof\n0.wav,B,spoof\n",
            r"meta.csv:3: duplicate utt_id '0.wav'",
        ),
        ("file,speaker,label\n../x.wav,A,spoof\n", r"meta.csv:2: invalid utterance id"),
    ],
)
def test_bad_input(tmp_path, body, match):
    with pytest.raises(ManifestError, match=match):
        prepare_in_the_wild(_meta(tmp_path, body), check_audio=False)


def test_missing_meta_and_bad_split(tmp_path):
    with pytest.raises(ManifestError, match="meta.csv not found"):
        prepare_in_the_wild(tmp_path)
    with pytest.raises(ValueError, match="single split"):
        prepare_in_the_wild(tmp_path, "train")


def test_synthetic(synth):
    info = synth["in-the-wild"]
    m = prepare_in_the_wild(info["root"])
    assert len(m) == info["rows"]
    assert [p.rsplit("/", 1)[1] for p in m.missing_audio] == [
        u for u, r in info["broken"].items() if r == "missing_file"
    ]
