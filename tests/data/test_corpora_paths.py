"""Odd paths work or are refused at manifest time: one corpus gives one manifest whatever the
spelling of its root; ids that a score file cannot hold are refused naming file and line;
unreadable folders are an error, never a silent gap."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from spoofdet.data.audio import load_16k
from spoofdet.data.corpora import (
    CORPORA,
    ManifestError,
    _common,
    prepare,
    prepare_asvspoof2019_la,
    prepare_codecfake,
    prepare_csv,
    prepare_folder,
    prepare_in_the_wild,
)
from spoofdet.data.corpora._common import corpus_root, finish
from spoofdet.data.schema import TableBuilder
from spoofdet.testing.synthetic import bonafide_clip, write_corpus, write_damaged
from tests.data.test_audio_checks import skip_unless_permissions_bite


def _wav(path: Path, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, bonafide_clip(np.random.default_rng(seed), 16000, 1.0), 16000)
    return path


# ----------------------------------------------------------------------------- one root, one manifest


@pytest.mark.parametrize("corpus", sorted(CORPORA))
def test_every_spelling_of_a_root_gives_the_same_manifest(tmp_path, monkeypatch, corpus):
    work = tmp_path / "w"
    write_corpus(corpus, work / "c", per_split=3, seed=1)
    (work / "sub").mkdir()
    monkeypatch.setenv("HOME", str(tmp_path))
    spellings = [str(work / "c"), f"{work}/sub/../c/.", "~/w/c", "~/w//c/"]
    monkeypatch.chdir(work)
    manifests = [prepare(corpus, "./c"), prepare(corpus, "c")]
    monkeypatch.chdir(work / "sub")
    manifests += [prepare(corpus, "../c"), prepare(corpus, "../../w/c")]
    manifests += [prepare(corpus, s) for s in spellings]
    first = manifests[0]
    assert first.root == str(work / "c")
    for m in manifests[1:]:
        assert m.root == first.root and m.table.equals(first.table) and m == first
    for p in first.table["source_path"].drop_null().to_pylist():
        assert os.path.isabs(p) and os.path.normpath(p) == p, p


def test_corpus_root_normalises_without_resolving_links(tmp_path, monkeypatch):
    (tmp_path / "real").mkdir()
    os.symlink(tmp_path / "real", tmp_path / "link")
    monkeypatch.chdir(tmp_path)
    assert corpus_root("link/./x/..") == tmp_path / "link"
    assert corpus_root(tmp_path / "a" / ".." / "b") == tmp_path / "b"


# ----------------------------------------------------------------------------- spaces work


def test_spaces_in_paths_work_when_the_id_is_clean(tmp_path):
    root = tmp_path / "my corpus"
    _wav(root / "audio files" / "take 1.wav")
    (root / "manifest.csv").write_text("path,utt_id,label\naudio files/take 1.wav,take1,spoof\n")
    m = prepare_csv(root)
    (row,) = m.table.to_pylist()
    assert row["utt_id"] == "take1"
    assert row["source_path"] == str(root / "audio files" / "take 1.wav")
    assert m.missing_audio == () and len(load_16k(row["source_path"])[0]) == 16000


def test_protocol_corpus_under_a_root_with_spaces(tmp_path):
    root = tmp_path / "ASV spoof 2019"
    write_corpus("asvspoof2019-la", root, per_split=3, seed=2, broken=False)
    m = prepare_asvspoof2019_la(root, "train")
    assert len(m) == 3 and m.missing_audio == ()
    assert all(p.startswith(f"{root}/") for p in m.table["source_path"].to_pylist())


def test_folder_corpus_root_with_spaces_works(tmp_path):
    _wav(tmp_path / "user clips" / "sub" / "a.wav")
    m = prepare_folder(tmp_path / "user clips")
    assert m.table["utt_id"].to_pylist() == ["sub/a.wav"]


# ----------------------------------------------------------------------------- bad ids are refused


@pytest.mark.parametrize("rel", ["my clip.wav", "my dir/a.wav", "tab\there.wav", "nb\u00a0sp.wav"])
def test_folder_id_with_whitespace_is_refused(tmp_path, rel):
    _wav(tmp_path / "c" / "fine.wav")
    _wav(tmp_path / "c" / rel)
    with pytest.raises(ManifestError) as e:
        prepare_folder(tmp_path / "c")
    msg = str(e.value)
    assert f"{tmp_path / 'c' / rel}: utt_id {rel!r} contains whitespace" in msg
    assert "score files are whitespace-separated" in msg and "rename the file" in msg
    assert "utt_id is the file's path under --root" in msg


def test_folder_newline_in_file_name_is_refused(tmp_path):
    _wav(tmp_path / "c" / "two\nlines.wav")
    with pytest.raises(ManifestError, match=r"utt_id 'two\\nlines.wav' contains whitespace"):
        prepare_folder(tmp_path / "c")


def test_folder_control_character_is_refused(tmp_path):
    _wav(tmp_path / "c" / "bell\x07.wav")
    with pytest.raises(ManifestError, match=r"contains a control character \('\\x07'\)"):
        prepare_folder(tmp_path / "c")


def test_folder_undecodable_file_name_is_refused(tmp_path):
    (tmp_path / "c").mkdir()
    try:
        fd = os.open(os.fsencode(tmp_path / "c") + b"/caf\xe9.wav", os.O_CREAT | os.O_WRONLY)
    except OSError as exc:
        pytest.skip(f"this filesystem refuses non-UTF-8 names: {exc}")
    os.close(fd)
    with pytest.raises(ManifestError, match="is not valid UTF-8"):
        prepare_folder(tmp_path / "c")


@pytest.mark.parametrize(
    "body,match",
    [
        (
            "path,label\nmy clip.wav,spoof\n",
            r"manifest.csv:2: utt_id 'my clip.wav' contains whitespace",
        ),
        ("path,utt_id\na.wav,a\tb\n", r"manifest.csv:2: utt_id 'a\\tb' contains whitespace"),
        (
            'path,utt_id\n"a\nb.wav",ab\n',
            r"manifest.csv:3: audio path '.*a\\nb.wav' contains the control",
        ),
        (
            "path,utt_id\na.wav,a\x01\n",
            r"manifest.csv:2: utt_id 'a\\x01' contains a control character",
        ),
    ],
)
def test_csv_bad_ids_and_paths_name_the_line(tmp_path, body, match):
    (tmp_path / "manifest.csv").write_text(body)
    with pytest.raises(ManifestError, match=match):
        prepare_csv(tmp_path, check_audio=False)


def test_in_the_wild_name_with_space_is_refused(tmp_path):
    (tmp_path / "meta.csv").write_text("file,speaker,label\n0.wav,A,spoof\nmy file.wav,B,spoof\n")
    with pytest.raises(
        ManifestError, match=r"meta.csv:3: utt_id 'my file.wav' contains whitespace"
    ):
        prepare_in_the_wild(tmp_path, check_audio=False)


def test_protocol_id_with_control_character_is_refused(tmp_path):
    proto = tmp_path / "ASVspoof2019_LA_cm_protocols"
    proto.mkdir()
    (proto / "ASVspoof2019.LA.cm.train.trn.txt").write_text("LA_0079 LA_T_1\x01 - - bonafide\n")
    with pytest.raises(ManifestError, match=r"trn.txt:1: utt_id 'LA_T_1\\x01' contains a control"):
        prepare_asvspoof2019_la(tmp_path, "train", check_audio=False)


def test_codecfake_subset_with_space_is_refused(tmp_path):
    (tmp_path / "label").mkdir()
    (tmp_path / "label" / "C 1.txt").write_text("a.wav real real\n")
    with pytest.raises(ManifestError, match=r"C 1.txt:1: utt_id 'C 1/a.wav' contains whitespace"):
        prepare_codecfake(tmp_path, check_audio=False)


def test_finish_is_the_backstop_for_every_parser(tmp_path):
    for utt, path, match in [
        ("a b", f"{tmp_path}/a.wav", "utt_id 'a b' contains whitespace"),
        ("ab", f"{tmp_path}/a\nb.wav", "audio path .* contains the control character '\\\\n'"),
        ("a\u2028b", f"{tmp_path}/a.wav", r"utt_id 'a\\u2028b' contains whitespace"),
    ]:
        b = TableBuilder()
        b.append(utt_id=utt, corpus="x", subset="all", source_path=path)
        with pytest.raises(ManifestError, match=match):
            finish(b, corpus="x", root=tmp_path, check_audio=False)


# ----------------------------------------------------------------------------- unreadable folders


def test_unreadable_subfolder_is_an_error_chmod(tmp_path):
    _wav(tmp_path / "c" / "a.wav")
    locked = _wav(tmp_path / "c" / "locked" / "b.wav").parent
    locked.chmod(0)
    skip_unless_permissions_bite(locked)
    try:
        with pytest.raises(ManifestError) as e:
            prepare_folder(tmp_path / "c")
    finally:
        locked.chmod(0o755)
    assert f"cannot list folder {locked}: Permission denied" in str(e.value)
    assert "chmod -R a+rX" in str(e.value)


def _deny(monkeypatch, denied: set[str], *, stat_too: bool = False):
    """``os.scandir`` (which ``os.walk`` uses) and optionally ``os.stat`` fail with EACCES for
    the folders in ``denied``, as they do for a user without permission."""
    real_scandir, real_stat = os.scandir, os.stat

    def scandir(path="."):
        if os.fspath(path) in denied:
            raise PermissionError(errno.EACCES, "Permission denied", os.fspath(path))
        return real_scandir(path)

    def fake_stat(path, *a, **k):
        if stat_too and os.path.dirname(os.fspath(path)) in denied:
            raise PermissionError(errno.EACCES, "Permission denied", os.fspath(path))
        return real_stat(path, *a, **k)

    monkeypatch.setattr(os, "scandir", scandir)
    monkeypatch.setattr(os, "stat", fake_stat)


def test_unreadable_subfolder_is_an_error(tmp_path, monkeypatch):
    _wav(tmp_path / "c" / "a.wav")
    for name in ("locked", "also locked"):
        _wav(tmp_path / "c" / name / "b.wav")
    _deny(monkeypatch, {str(tmp_path / "c" / "locked"), str(tmp_path / "c" / "also locked")})
    with pytest.raises(ManifestError) as e:
        prepare_folder(tmp_path / "c")
    msg = str(e.value)
    assert msg.startswith("2 problem(s) in corpus files:")
    assert f"cannot list folder {tmp_path / 'c' / 'locked'}: Permission denied" in msg
    assert f"cannot list folder {tmp_path / 'c' / 'also locked'}: Permission denied" in msg
    assert "Their audio would be missing from the manifest" in msg


def test_protocol_audio_folder_unreadable_is_an_error(tmp_path, monkeypatch):
    root = tmp_path / "LA"
    write_corpus("asvspoof2019-la", root, per_split=3, seed=3, broken=False)
    flac = str(root / "ASVspoof2019_LA_train" / "flac")
    _deny(monkeypatch, {flac})  # not listable, but searchable: files are stat'ed one by one
    m = prepare_asvspoof2019_la(root, "train")
    assert m.missing_audio == () and len(m) == 3
    _deny(monkeypatch, {flac}, stat_too=True)  # neither: present or missing cannot be told
    with pytest.raises(ManifestError, match=f"cannot list audio folder {flac}: Permission denied"):
        prepare_asvspoof2019_la(root, "train")


def test_codecfake_unreadable_label_folder_is_an_error(tmp_path, monkeypatch):
    write_corpus("codecfake", tmp_path, per_split=3, seed=4, broken=False)
    _deny(monkeypatch, {str(tmp_path / "label")})
    with pytest.raises(ManifestError, match="cannot list the label folder .*Permission denied"):
        prepare_codecfake(tmp_path, check_audio=False)


def test_unreadable_protocol_file_is_a_manifest_error(tmp_path, monkeypatch):
    write_corpus("in-the-wild", tmp_path, per_split=3, seed=5, broken=False)

    def denied(path, *a, **k):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(_common, "open", denied, raising=False)
    with pytest.raises(ManifestError, match=f"cannot read {tmp_path}/meta.csv: Permission denied"):
        prepare_in_the_wild(tmp_path)


# ----------------------------------------------------------------------------- odd entries


def test_fifo_in_a_corpus_is_listed_not_missing(tmp_path):
    if not hasattr(os, "mkfifo"):
        pytest.skip("needs os.mkfifo (POSIX)")
    _wav(tmp_path / "c" / "a.wav")
    write_damaged(tmp_path / "c" / "pipe.wav", "fifo")
    m = prepare_folder(tmp_path / "c")
    assert m.table["utt_id"].to_pylist() == ["a.wav", "pipe.wav"]
    assert m.missing_audio == () and m.not_regular == (f"{tmp_path}/c/pipe.wav (a FIFO)",)
    s = m.summary()
    assert s["not_regular_files"] == 1 and s["not_regular_examples"] == list(m.not_regular)


def test_symlinked_subfolder_is_followed_and_a_loop_ends(tmp_path):
    _wav(tmp_path / "elsewhere" / "x.wav")
    _wav(tmp_path / "c" / "a.wav")
    os.symlink(tmp_path / "elsewhere", tmp_path / "c" / "linked")
    os.symlink(tmp_path / "c", tmp_path / "c" / "loop")
    m = prepare_folder(tmp_path / "c")
    assert m.table["utt_id"].to_pylist() == ["a.wav", "linked/x.wav"]
