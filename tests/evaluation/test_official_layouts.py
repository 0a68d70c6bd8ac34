"""``spoofdet evaluate`` with the files the official packages and seed repositories hand a user:
Codecfake result files, the ASVspoof 2021 ``keys/`` folder, a renamed 2019 protocol, and
``--exclude-quarantined`` for clips the shard job could not use."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import spoofdet.data.shard_writer as shard
from spoofdet.cli import main
from spoofdet.data import shards
from spoofdet.data.corpora import prepare
from spoofdet.data.corpora._common import ManifestError
from spoofdet.data.corpora.asvspoof2021_la import prepare_asvspoof2021_la
from spoofdet.evaluation.metrics import compute_eer
from spoofdet.evaluation.official import subset_of_result_file
from spoofdet.evaluation.scorefile import _rename_hint, read_scores, write_scores


def _write(path, lines):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{line}\n" for line in lines))
    return path


def _run(capsys, *argv):
    code = main(["evaluate", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def _json(capsys, *argv):
    code, out, err = _run(capsys, *argv, "--json")
    assert code == 0, err
    return json.loads(out), err


def _suggested_command(err: str) -> list[str]:
    """The ``spoofdet evaluate ...`` line an error message suggests, as argv after 'evaluate'."""
    return shlex.split(err[err.rindex("spoofdet evaluate --scores") :].strip())[2:]


# ----------------------------------------------------------------------------- Codecfake

REAL = [f"p228_{i:03d}.wav" for i in range(3)]


def _codecfake(tmp_path):
    """label/C1.txt and label/C2.txt share their real clips (as Codecfake's test sets do); fakes
    carry a codec prefix. Result files as the seed writes them: result/C1_result.txt, L1 = A1."""
    root = tmp_path / "Codecfake"
    for subset, prefix in (("C1", "F01"), ("C2", "F02")):
        fakes = [f"{prefix}_p228_{i:03d}.wav" for i in range(3)]
        _write(
            root / "label" / f"{subset}.txt",
            [f"{n} real 0" for n in REAL] + [f"{n} fake {prefix}" for n in fakes],
        )
    # P(real): real 0.9 0.6 0.3, fake 0.4 0.2 0.1 -> one fake (0.4) above one real (0.3)
    result = _write(
        tmp_path / "result" / "C1_result.txt",
        [f"{n} {p} real" for n, p in zip(REAL, (0.9, 0.6, 0.3))]
        + [f"F01_p228_{i:03d}.wav {p} fake" for i, p in enumerate((0.4, 0.2, 0.1))],
    )
    return root, result


def test_codecfake_result_file_with_its_label_file_maps_bare_names(tmp_path, capsys):
    root, result = _codecfake(tmp_path)
    argv = ["--scores", str(result), "--format", "codecfake", "--score-layout", "codecfake"]
    r, _ = _json(capsys, *argv, "--key", str(root / "label" / "C1.txt"))
    assert r["id_mapping"] == "bare names -> C1/<name>" and r["selection"] == "subset C1"
    assert (r["n_bonafide"], r["n_spoof"]) == (3, 3)
    # sorted: .1s .2s .3b .4s .6b .9b; FRR/FAR at each threshold: the gap closes at 0.3/0.4 where
    # FRR = 1/3 and FAR = 1/3 -> EER 33.333 %
    assert r["eer"] == pytest.approx(100 / 3)
    # the corpus root with --phase C1 selects one subset too
    r2, _ = _json(capsys, *argv, "--key", str(root), "--phase", "C1")
    assert r2["eer"] == r["eer"] and r2["id_mapping"] == r["id_mapping"]
    code, out, _ = _run(capsys, *argv, "--key", str(root / "label" / "C1.txt"))
    assert code == 0 and "ids mapped: bare names -> C1/<name>" in out


def test_codecfake_all_test_sets_refuse_ambiguous_names_with_a_working_command(tmp_path, capsys):
    root, result = _codecfake(tmp_path)
    code, _, err = _run(
        capsys,
        "--scores",
        str(result),
        "--key",
        str(root),
        "--format",
        "codecfake",
        "--score-layout",
        "codecfake",
        "--phase",
        "test",
    )
    assert code == 2
    assert "spans 2 test sets (C1, C2)" in err and "3 of the names occur in several" in err
    assert "'p228_000.wav' (line 1: C1/p228_000.wav, C2/p228_000.wav)" in err
    assert "evaluate one test set at a time (its name says it holds test set C1)" in err
    argv = _suggested_command(err)
    assert argv[argv.index("--key") + 1] == str(root / "label" / "C1.txt")
    assert argv[argv.index("--phase") + 1] == "C1"
    r, _ = _json(capsys, *argv)
    assert r["eer"] == pytest.approx(100 / 3) and r["selection"] == "subset C1"


def test_codecfake_ambiguity_without_a_telling_file_name_suggests_the_set_holding_them(
    tmp_path, capsys
):
    root, result = _codecfake(tmp_path)
    other = shutil.copy(result, tmp_path / "scores_model_a.txt")
    argv = ["--key", str(root), "--format", "codecfake", "--score-layout", "codecfake"]
    code, _, err = _run(capsys, "--scores", str(other), *argv, "--phase", "test")
    assert code == 2 and "all its names occur in test set(s) C1" in err
    r, _ = _json(capsys, *_suggested_command(err))
    assert r["eer"] == pytest.approx(100 / 3)


@pytest.mark.parametrize(
    "name,subset",
    [
        ("C1_result.txt", "C1"),
        ("C3-1_result.txt", "C3-1"),
        ("L2_result.txt", "A2"),
        ("x.txt", None),
    ],
)
def test_result_file_names(name, subset):
    assert subset_of_result_file(f"result/{name}") == subset


needs_awk = pytest.mark.skipif(shutil.which("awk") is None, reason="awk is not installed")


@needs_awk
@pytest.mark.parametrize(
    "layout,lines,missing,expected",
    [
        ("id-score", ["0 1.5", "1 -2.0"], ["0.wav", "1.wav"], ["0.wav", "1.wav"]),
        ("codecfake", ["0 0.5 real", "1 0.25 fake"], ["0.wav", "1.wav"], ["0.wav", "1.wav"]),
        ("fake-mamba-itw", ["0.wav bonafide 1.5"], ["0"], ["0"]),
        ("amsdf", ["0.flac -1.5 1"], ["0"], ["0"]),
        ("codecfake", ["a.wav 0.5 real"], ["C1/a.wav"], ["C1/a.wav"]),
        ("id-score", ["a.wav 0.5"], ["C1/a.wav"], ["C1/a.wav"]),
        # the official ASVspoof 5 TSV: the header line must come through untouched
        ("asvspoof5", ["filename\tcm-score", "E_1\t0.5"], ["E_1.flac"], ["E_1.flac"]),
        ("asvspoof5", ["filename\tcm-score", "E_1.flac\t0.5"], ["E_1"], ["E_1"]),
    ],
)
def test_rename_hint_commands_are_right_for_the_layout(tmp_path, layout, lines, missing, expected):
    src = _write(tmp_path / "s.txt", lines)
    before = read_scores(src, layout=layout)
    hint = _rename_hint(missing, before.ids, str(src), layout)
    command = re.split(r"Fix(?:, per subset)?: ", hint)[-1].split(" (then pass")[0]
    subprocess.run(command, shell=True, check=True, cwd=tmp_path)
    fixed = read_scores(tmp_path / "fixed.txt", layout=layout)  # the same layout reads it
    assert fixed.ids == expected and fixed.scores.tolist() == before.scores.tolist()
    if layout != "id-score":
        assert f"--score-layout {layout}" in hint


# ----------------------------------------------------------------------------- ASVspoof 2021


def _keys_2021(base, asv_dir="ASVTorch_Kaldi"):
    """The keys/ folder of LA-keys-full.tar.gz: CM key (eval + progress rows), ASV key and ASV
    scores; returns (keys folder, CM ids, CM scores)."""
    rng = np.random.default_rng(5)
    keys = base / "keys"
    cm, ids, scores = [], [], []
    for i in range(40):
        phase = ("eval", "progress")[i % 2]
        if i % 4 < 2:
            cm.append(f"LA_0021 LA_E_{i:07d} alaw ita_tx bonafide bonafide notrim {phase}")
            scores.append(rng.normal(2, 1))
        else:
            cm.append(f"LA_0009 LA_E_{i:07d} gsm loc_tx A07 spoof notrim {phase}")
            scores.append(rng.normal(-1, 1))
        ids.append(f"LA_E_{i:07d}")
    _write(keys / "LA" / "CM" / "trial_metadata.txt", cm)
    asv_key, asv_scores = [], []
    for i in range(90):
        kind = ("target", "nontarget", "spoof")[i % 3]
        attack = "A07" if kind == "spoof" else "bonafide"
        spk, trial = f"LA_{i % 4:04d}", f"LA_E_{100 + i:07d}"
        asv_key.append(
            f"{spk} {trial} alaw ita_tx {attack} {kind} notrim {('eval', 'progress')[i % 2]}"
        )
        mean = {"target": 3, "nontarget": -3, "spoof": 1}[kind]
        asv_scores.append(f"{spk} {trial} {rng.normal(mean, 1):.6f}")
    _write(keys / "LA" / "ASV" / "trial_metadata.txt", asv_key)
    where = keys / "LA" / "ASV" / asv_dir if asv_dir else base / "elsewhere"
    _write(where / "score.txt", asv_scores)  # asv_dir None: the ASV scores lie elsewhere
    return keys, ids, np.asarray(scores)


@pytest.mark.parametrize("asv_dir", ["ASVTorch_Kaldi", "ASVtorch_kaldi"])
@pytest.mark.parametrize(
    "given", ["keys", "keys/LA", "above keys", "keys/LA/CM/trial_metadata.txt"]
)
def test_2021_keys_folder_as_the_official_evaluate_py_takes_it(tmp_path, capsys, given, asv_dir):
    keys, ids, scores = _keys_2021(tmp_path / "LA-keys-full", asv_dir)
    write_scores(tmp_path / "score.txt", ids, scores)
    key_arg = {"keys": keys, "keys/LA": keys / "LA", "above keys": keys.parent}.get(
        given, keys / given.removeprefix("keys/")
    )
    argv = ["--scores", str(tmp_path / "score.txt"), "--format", "asvspoof2021-la"]
    r, _ = _json(capsys, *argv, "--key", str(key_arg))
    ev = np.arange(40) % 2 == 0
    bona = np.arange(40) % 4 < 2
    assert r["selection"] == "phase eval" and r["n_bonafide"] + r["n_spoof"] == 20
    assert r["eer"] == pytest.approx(100 * compute_eer(scores[ev & bona], scores[ev & ~bona])[0])
    # no --asv-* flag: the official ASV files beside the CM key give the t-DCF, as evaluate.py does
    asv = keys / "LA" / "ASV"
    assert r["asv_files"] == {
        "scores": str(asv / asv_dir / "score.txt"),
        "key": str(asv / "trial_metadata.txt"),
        "found": f"beside the CM key {keys / 'LA' / 'CM' / 'trial_metadata.txt'}",
    }
    assert r["tdcf"]["form"] == "2021-revised"
    explicit, _ = _json(
        capsys,
        *argv,
        "--key",
        str(keys / "LA" / "CM" / "trial_metadata.txt"),
        "--asv-scores",
        str(asv / asv_dir / "score.txt"),
        "--asv-key",
        str(asv / "trial_metadata.txt"),
    )
    assert r["min_tdcf"] == explicit["min_tdcf"] and explicit["asv_files"]["found"] == "given"
    code, out, _ = _run(capsys, *argv, "--key", str(key_arg))
    assert code == 0 and f"ASV files (beside the CM key {keys}" in out


def test_2021_asv_key_found_beside_the_cm_key_when_only_scores_are_given(tmp_path, capsys):
    keys, ids, scores = _keys_2021(tmp_path, asv_dir=None)
    write_scores(tmp_path / "score.txt", ids, scores)
    asv, moved = keys / "LA" / "ASV", tmp_path / "elsewhere" / "score.txt"
    argv = ["--scores", str(tmp_path / "score.txt"), "--format", "asvspoof2021-la"]
    r, _ = _json(capsys, *argv, "--key", str(keys))
    assert (
        "tdcf" not in r and "asv_files" not in r
    )  # no ASV scores there: no t-DCF, nothing guessed
    r, _ = _json(capsys, *argv, "--key", str(keys), "--asv-scores", str(moved))
    assert r["asv_files"]["key"] == str(asv / "trial_metadata.txt")
    assert r["asv_files"]["found"].startswith("key beside the CM key") and "min_tdcf" in r


def test_2021_key_not_found_names_what_evaluate_takes(tmp_path, capsys):
    keys, ids, scores = _keys_2021(tmp_path)
    write_scores(tmp_path / "score.txt", ids, scores)
    argv = ["--scores", str(tmp_path / "score.txt"), "--format", "asvspoof2021-la"]
    (tmp_path / "empty").mkdir()
    code, _, err = _run(capsys, *argv, "--key", str(tmp_path / "empty"))
    assert code == 2 and "--key takes that keys/ folder" in err and "--root" not in err
    _write(keys / "DF" / "CM" / "trial_metadata.txt", ["x"])
    code, _, err = _run(capsys, *argv, "--key", str(keys / "DF"))
    assert code == 2 and "holds the DF keys, not the LA ones: check --format" in err
    # manifest/prepare keep their --root wording
    with pytest.raises(ManifestError, match=r"extract it into --root"):
        prepare_asvspoof2021_la(tmp_path / "empty", check_audio=False)


# ----------------------------------------------------------------------------- ASVspoof 2019


def test_2019_renamed_protocol_names_phase_and_the_split_its_ids_suggest(tmp_path, capsys):
    proto = _write(
        tmp_path / "eval_protocol.txt",
        ["LA_0039 LA_E_1 - A11 spoof", "LA_0079 LA_E_2 - - bonafide", "LA_0039 LA_E_3 - A12 spoof"],
    )
    write_scores(tmp_path / "s.txt", ["LA_E_1", "LA_E_2", "LA_E_3"], [0.5, 1.0, 2.0])
    argv = ["--scores", str(tmp_path / "s.txt"), "--key", str(proto), "--format", "asvspoof2019-la"]
    code, _, err = _run(capsys, *argv)
    assert code == 2
    assert "cannot tell the split of" in err and "read from the official file names" in err
    assert "--phase train|dev|eval" in err
    assert "its 3 ids all start with LA_E_, so it looks like --phase eval" in err
    r, _ = _json(capsys, *argv, "--phase", "eval")
    assert r["selection"] == "split eval" and r["eer"] == 25.0
    _write(proto, ["LA_0039 LA_E_1 - A11 spoof", "LA_0079 LA_D_2 - - bonafide"])
    code, _, err = _run(capsys, *argv)
    assert code == 2 and "--phase train|dev|eval" in err and "looks like" not in err


def test_2019_real_protocol_renamed(shared_2019, tmp_path, capsys):
    proto = shutil.copy(shared_2019 / "ASVspoof2019.LA.cm.dev.trl.txt", tmp_path / "dev.txt")
    write_scores(tmp_path / "s.txt", ["x"], [0.0])
    code, _, err = _run(
        capsys,
        "--scores",
        str(tmp_path / "s.txt"),
        "--key",
        str(proto),
        "--format",
        "asvspoof2019-la",
    )
    assert code == 2 and "its 24,844 ids all start with LA_D_, so it looks like --phase dev" in err


# ----------------------------------------------------------------------------- --exclude-quarantined


@pytest.fixture(scope="module")
def itw_shards(synth, tmp_path_factory):
    """A synthetic In-the-Wild corpus with broken files, sharded in-process; the score file of the
    clips that were written (bona fide i -> 100 + i, spoof i -> i: separable, EER 0 %)."""
    info = synth["in-the-wild"]
    tmp_path = tmp_path_factory.mktemp("itw")
    out = tmp_path / "shards"
    summary = shard.run(
        prepare("in-the-wild", info["root"]).table,
        str(out),
        corpus="in-the-wild",
        shard_rows=10,
        executor="local",
    )
    meta = pq.read_table(out / shards.METADATA_FILE)
    ids, labels = meta["utt_id"].to_pylist(), meta["label"].to_pylist()
    scores = [100.0 + i if lab == 1 else float(i) for i, lab in enumerate(labels)]
    write_scores(tmp_path / "scores.txt", ids, scores)
    return info, out, summary, tmp_path / "scores.txt", ids, scores


def test_exclude_quarantined_end_to_end(itw_shards, capsys):
    info, out, summary, scores, ids, values = itw_shards
    broken = info["broken"]
    assert summary["quarantined"] == len(broken) == 5 and summary["rows_written"] == 22
    argv = ["--scores", str(scores), "--key", f"{info['root']}/meta.csv", "--format", "in-the-wild"]
    code, _, err = _run(capsys, *argv)
    assert code == 2 and "missing: 5 key id(s) have no score" in err
    r, _ = _json(capsys, *argv, "--exclude-quarantined", str(out))
    ex = r["excluded_quarantined"]
    assert ex["count"] == 5 and ex["by_reason"] == dict(sorted(Counter(broken.values()).items()))
    assert set(ex["examples"]) <= set(broken) and len(ex["examples"]) == 5
    assert (ex["scored_but_quarantined"], ex["not_in_key"], ex["outside_selection"]) == (0, 0, 0)
    assert r["n_bonafide"] + r["n_spoof"] == 22 and r["eer"] == 0.0
    code, text, _ = _run(capsys, *argv, "--exclude-quarantined", str(out))
    assert code == 0
    assert (
        "excluded 5 quarantined key row(s) (decode_error 1, empty_file 1, missing_file 1, " in text
    )
    # a quarantined clip that has a score anyway: still left out, counted
    extra = scores.with_name("plus.txt")
    write_scores(extra, [*ids, "0.wav"], [*values, 99.0])
    r, _ = _json(capsys, *argv[:1], str(extra), *argv[2:], "--exclude-quarantined", str(out))
    assert r["excluded_quarantined"]["scored_but_quarantined"] == 1 and r["eer"] == 0.0
    # a clean clip without score is still an error
    write_scores(scores.with_name("short.txt"), ids[1:], values[1:])
    code, _, err = _run(
        capsys,
        "--scores",
        str(scores.with_name("short.txt")),
        *argv[2:],
        "--exclude-quarantined",
        str(out),
    )
    assert code == 2 and f"missing: 1 key id(s) have no score, e.g. {ids[0]!r}" in err


def test_exclude_quarantined_warns_about_ids_not_in_the_key(itw_shards, tmp_path, capsys):
    info, out, _, scores, _, _ = itw_shards
    other = tmp_path / "other"
    (other / "shards").mkdir(parents=True)
    pq.write_table(
        pa.table(
            {
                "utt_id": ["C1/x.wav", "3.wav"],
                "source_path": ["/a", "/b"],
                "reason": ["too_short"] * 2,
                "detail": ["", ""],
            },
            schema=shards.QUARANTINE_SCHEMA,
        ),
        other / shards.QUARANTINE_FILE,
    )
    argv = ["--scores", str(scores), "--key", f"{info['root']}/meta.csv", "--format", "in-the-wild"]
    r, err = _json(capsys, *argv, "--exclude-quarantined", str(out), str(other))
    ex = r["excluded_quarantined"]
    assert ex["count"] == 5 and ex["not_in_key"] == 1 and ex["not_in_key_examples"] == ["C1/x.wav"]
    assert (
        "warning: 1 quarantined id(s)" in err and "is that the shard folder of this corpus" in err
    )
    code, _, err = _run(capsys, *argv, "--exclude-quarantined", str(tmp_path))
    assert code == 2 and "no quarantine.parquet there" in err and "spoofdet prepare --out" in err
    code, _, err = _run(capsys, *argv, "--exclude-quarantined", str(tmp_path / "nope"))
    assert code == 2 and "not a folder" in err


def test_2019_asv_scores_found_where_the_release_puts_them(shared_2019, tmp_path, capsys):
    """The real 2019 LA release layout (LA/ASVspoof2019_LA_cm_protocols/ beside
    LA/ASVspoof2019_LA_asv_scores/): the t-DCF of the protocol's split needs no --asv-scores,
    and equals the one computed with the file given; train has no ASV scores, so no t-DCF."""
    la = tmp_path / "LA"
    (la / "ASVspoof2019_LA_cm_protocols").mkdir(parents=True)
    (la / "ASVspoof2019_LA_asv_scores").mkdir()
    for split, cm, asv in (
        ("dev", "ASVspoof2019.LA.cm.dev.trl.txt", "ASVspoof2019.LA.asv.dev.gi.trl.scores.txt"),
        ("eval", "ASVspoof2019.LA.cm.eval.trl.txt", "ASVspoof2019.LA.asv.eval.gi.trl.scores.txt"),
    ):
        shutil.copy(shared_2019 / cm, la / "ASVspoof2019_LA_cm_protocols" / cm)
        shutil.copy(shared_2019 / asv, la / "ASVspoof2019_LA_asv_scores" / asv)
        rows = [ln.split() for ln in (shared_2019 / cm).read_text().splitlines() if ln.strip()]
        rng = np.random.default_rng(1)
        scores = [rng.normal(2.0 if r[4] == "bonafide" else -2.0, 1.5) for r in rows]
        write_scores(tmp_path / f"{split}.txt", [r[1] for r in rows], scores)
        proto = la / "ASVspoof2019_LA_cm_protocols" / cm
        common = ["--scores", str(tmp_path / f"{split}.txt"), "--format", "asvspoof2019-la"]
        found, _ = _json(capsys, *common, "--key", str(proto), "--no-tables")
        given, _ = _json(
            capsys,
            *common,
            "--key",
            str(proto),
            "--asv-scores",
            str(la / "ASVspoof2019_LA_asv_scores" / asv),
            "--no-tables",
        )
        assert found["min_tdcf"] == given["min_tdcf"] and found["min_tdcf"] > 0
        assert found["asv_files"]["scores"] == str(la / "ASVspoof2019_LA_asv_scores" / asv)
        assert found["asv_files"]["found"].startswith("beside the CM protocol")
        by_root, _ = _json(capsys, *common, "--key", str(la), "--phase", split, "--no-tables")
        assert by_root["min_tdcf"] == given["min_tdcf"]
    train = "ASVspoof2019.LA.cm.train.trn.txt"
    shutil.copy(shared_2019 / train, la / "ASVspoof2019_LA_cm_protocols" / train)
    rows = [ln.split() for ln in (shared_2019 / train).read_text().splitlines() if ln.strip()]
    write_scores(tmp_path / "train.txt", [r[1] for r in rows], np.zeros(len(rows)))
    r, _ = _json(
        capsys,
        "--scores",
        str(tmp_path / "train.txt"),
        "--format",
        "asvspoof2019-la",
        "--key",
        str(la / "ASVspoof2019_LA_cm_protocols" / train),
        "--no-tables",
    )
    assert "min_tdcf" not in r and "asv_files" not in r
