import pytest

from spoofdet.data.corpora import ManifestError, prepare_csv, prepare_folder


def test_folder_recursive_sorted_and_filtered(tmp_path):
    for rel in ["b.wav", "a/x.FLAC", "a/y.txt", ".hidden/z.wav", "__cache__/q.wav", "a/b/c.ogg"]:
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
    m = prepare_folder(tmp_path)
    assert m.table.column("utt_id").to_pylist() == ["b.wav", "a/x.FLAC", "a/b/c.ogg"]
    assert m.table.column("label").null_count == 3
    assert m.summary()["unlabelled"] == 3 and m.summary()["by_attack"] == {}
    assert m.missing_audio == ()


def test_folder_errors(tmp_path):
    with pytest.raises(ManifestError, match="no audio files"):
        prepare_folder(tmp_path)
    with pytest.raises(ManifestError, match="is not a folder"):
        prepare_folder(tmp_path / "nope")


def _csv(tmp_path, body):
    (tmp_path / "manifest.csv").write_text(body)
    return tmp_path


def test_csv_columns_labels_and_extra(tmp_path):
    root = _csv(
        tmp_path,
        "path,label,attack,subset,room\n"
        "a/1.wav,bonafide,,train,r1\n"
        "a/2.wav,fake,tts-x,train,\n"
        "a/3.wav,,,eval,r2\n",
    )
    m = prepare_csv(root, check_audio=False)
    rows = m.table.to_pylist()
    assert [r["utt_id"] for r in rows] == ["a/1.wav", "a/2.wav", "a/3.wav"]
    assert [r["label"] for r in rows] == [1, 0, None]
    assert [r["attack"] for r in rows] == ["bonafide", "tts-x", None]
    assert dict(rows[0]["extra"]) == {"room": "r1"} and rows[1]["extra"] is None
    assert rows[0]["source_path"] == str(root / "a" / "1.wav")
    assert len(prepare_csv(root / "manifest.csv", "eval", check_audio=False)) == 1


@pytest.mark.parametrize(
    "body,match",
    [
        ("file,label\nx.wav,spoof\n", r"manifest.csv:1: header needs a 'path' column"),
        (
            "path,label\n../../etc/passwd,spoof\n",
            r"manifest.csv:2: path '../../etc/passwd' is empty or leads outside",
        ),
        (
            "path,label\n/etc/passwd,spoof\n",
            r"manifest.csv:2: path '/etc/passwd' is empty or leads outside",
        ),
        ("path,label\nx.wav,maybe\n", r"manifest.csv:2: unknown label 'maybe'"),
        ("path,label\nx.wav\n", r"manifest.csv:2: expected 2 fields"),
        ("path,label\nx.wav,spoof\nx.wav,spoof\n", r"manifest.csv:3: duplicate utt_id 'x.wav'"),
        (
            "path,label,attack\nx.wav,spoof,bonafide\n",
            r"manifest.csv:2: spoof row with attack 'bonafide'",
        ),
    ],
)
def test_csv_bad_input(tmp_path, body, match):
    with pytest.raises(ManifestError, match=match):
        prepare_csv(_csv(tmp_path, body), check_audio=False)


def test_csv_missing_file(tmp_path):
    with pytest.raises(ManifestError, match="CSV manifest not found"):
        prepare_csv(tmp_path)


@pytest.mark.parametrize("corpus,fn", [("folder", prepare_folder), ("csv", prepare_csv)])
def test_synthetic(synth, corpus, fn):
    info = synth[corpus]
    m = fn(info["root"])
    assert len(m) == info["rows"]
    assert len(m.missing_audio) == sum(r == "missing_file" for r in info["broken"].values())
