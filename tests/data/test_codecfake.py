import pytest

from spoofdet.data.corpora import ManifestError, prepare_codecfake


def _corpus(tmp_path, labels: dict[str, str]):
    (tmp_path / "label").mkdir()
    for subset, body in labels.items():
        (tmp_path / "label" / f"{subset}.txt").write_text(body)
    return tmp_path


def test_subsets_ids_and_paths(tmp_path):
    root = _corpus(
        tmp_path,
        {
            "train": "p228_028.wav real real\nF01_p228_028.wav fake F01\n",
            "C1": "p228_028.wav real real\nF01_p228_028.wav fake F01\n",
            "A2": "SSB05440084.wav real real\nL2_SSB05440084.wav fake L2\n",
        },
    )
    (root / "A2").mkdir()  # an archive extracted without test/: accepted
    m = prepare_codecfake(root, check_audio=False)
    rows = {r["utt_id"]: r for r in m.table.to_pylist()}
    assert set(rows) == {
        "train/p228_028.wav",
        "train/F01_p228_028.wav",
        "C1/p228_028.wav",
        "C1/F01_p228_028.wav",
        "A2/SSB05440084.wav",
        "A2/L2_SSB05440084.wav",
    }
    assert (
        rows["train/p228_028.wav"]["label"] == 1
        and rows["train/p228_028.wav"]["attack"] == "bonafide"
    )
    assert (
        rows["C1/F01_p228_028.wav"]["label"] == 0 and rows["C1/F01_p228_028.wav"]["attack"] == "F01"
    )
    assert dict(rows["C1/F01_p228_028.wav"]["extra"]) == {"tag": "F01"}
    assert rows["train/p228_028.wav"]["source_path"] == str(root / "train" / "p228_028.wav")
    assert rows["C1/p228_028.wav"]["source_path"] == str(root / "test" / "C1" / "p228_028.wav")
    assert rows["A2/SSB05440084.wav"]["source_path"] == str(root / "A2" / "SSB05440084.wav")
    assert list(m.summary()["by_subset"]) == ["train", "A2", "C1"]
    assert set(
        prepare_codecfake(root, "test", check_audio=False).table.column("subset").to_pylist()
    ) == {"A2", "C1"}
    assert len(prepare_codecfake(root, "C1", check_audio=False)) == 2


@pytest.mark.parametrize(
    "body,match",
    [
        ("a.wav real\n", r"train.txt:1: expected 3 columns"),
        (
            "a.wav bonafide real\n",
            r"train.txt:1: unknown label 'bonafide': expected 'real' or 'fake'",
        ),
        ("a.wav real real\na.wav fake F01\n", r"train.txt:2: duplicate utt_id 'a.wav'"),
    ],
)
def test_bad_lines(tmp_path, body, match):
    with pytest.raises(ManifestError, match=match):
        prepare_codecfake(_corpus(tmp_path, {"train": body}), check_audio=False)


def test_missing_label_folder_or_subset(tmp_path):
    with pytest.raises(ManifestError, match="no label files"):
        prepare_codecfake(tmp_path)
    root = _corpus(tmp_path, {"train": "a.wav real real\n"})
    with pytest.raises(ManifestError, match=r"no label file for subset 'C9'.*found \['train'\]"):
        prepare_codecfake(root, "C9")


def test_synthetic(synth):
    info = synth["codecfake"]
    m = prepare_codecfake(info["root"])
    assert len(m) == info["rows"]
    missing = {u for u, r in info["broken"].items() if r == "missing_file"}
    assert {
        r["utt_id"] for r in m.table.to_pylist() if r["source_path"] in set(m.missing_audio)
    } == missing
