"""Logistic-regression score fusion: the fit (d = 1 is the calibration), and ``spoofdet fuse``."""

from __future__ import annotations

import json

import numpy as np
import pytest

from spoofdet.cli import main
from spoofdet.evaluation.calibration import DEFAULT_P_BONAFIDE, fit_calibration
from spoofdet.evaluation.fusion import Fusion, FusionError, eval_matrix, fit_fusion
from spoofdet.evaluation.scorefile import write_scores


def test_one_input_gives_exactly_the_calibrations_map():
    rng = np.random.default_rng(3)
    b, s = 3 * rng.normal(1, 1, 500) + 5, 3 * rng.normal(-1, 1, 700) + 5
    cal, fusion = fit_calibration(b, s), fit_fusion(b, s)
    assert fusion.weights[0] == pytest.approx(cal.slope, rel=1e-12)
    assert fusion.offset == pytest.approx(cal.offset, rel=1e-12)
    assert (fusion.p_bonafide, fusion.n_bonafide, fusion.n_spoof) == (DEFAULT_P_BONAFIDE, 500, 700)
    raw = np.linspace(-5, 15, 9)
    np.testing.assert_allclose(fusion.apply(raw[:, None]), cal.apply(raw), rtol=1e-12)


def test_two_independent_inputs_recover_the_sum_of_their_llrs():
    """Input 1 is z1 ~ N(+-1, 1): LLR 2 s1; input 2 is 2 z2 with z2 ~ N(+-0.5, 1): LLR 0.5 s2.
    Independent, so the true fused LLR is 2 s1 + 0.5 s2 (offset 0)."""
    rng = np.random.default_rng(4)
    n = 20000
    bona = np.stack([rng.normal(1, 1, n), 2 * rng.normal(0.5, 1, n)], axis=1)
    spoof = np.stack([rng.normal(-1, 1, n), 2 * rng.normal(-0.5, 1, n)], axis=1)
    fusion = fit_fusion(bona, spoof, names=["a", "b"], p_bonafide=0.5)
    assert fusion.weights == pytest.approx((2.0, 0.5), rel=0.05)
    assert fusion.offset == pytest.approx(0.0, abs=0.05)
    assert fusion.dev["fusion"]["eer"] < min(m["eer"] for m in fusion.dev["inputs"].values())


@pytest.mark.filterwarnings("ignore:the fused dev scores separate the classes perfectly")
def test_bad_inputs_and_json_errors(tmp_path):
    with pytest.raises(FusionError, match="every dev score of b is identical"):
        fit_fusion([[1.0, 2.0], [2.0, 2.0]], [[0.0, 2.0]], names=["a", "b"])
    with pytest.raises(FusionError, match="no spoof dev trials"):
        fit_fusion([[1.0, 2.0]], np.zeros((0, 2)))
    with pytest.raises(FusionError, match=r"expected a \(trials, 2\) matrix"):
        fit_fusion([[1.0, 2.0]], [[0.0, 1.0, 2.0]])
    with pytest.raises(FusionError, match="NaN or infinite .*input b"):
        fit_fusion([[1.0, np.nan], [2.0, 1.0]], [[0.0, 1.0]], names=["a", "b"])
    with pytest.warns(UserWarning, match="input b gets a negative weight"):
        fit_fusion(
            [[1.0, -1.0], [2.0, -2.5], [1.5, 0.0]],
            [[0.0, 1.0], [0.5, 0.0], [-0.5, 2.0]],
            names="ab",
        )
    rng = np.random.default_rng(0)
    f = fit_fusion(rng.normal(1, 1, (50, 2)), rng.normal(0, 1, (50, 2)), names=["x", "y"])
    assert Fusion.load(f.save(tmp_path / "f.json")) == f
    d = f.to_dict()
    with pytest.raises(FusionError, match=r"missing field\(s\) \['offset'\]"):
        Fusion.from_dict({k: v for k, v in d.items() if k != "offset"})
    with pytest.raises(FusionError, match=r"inputs\[1\] \(y\): 'weight' must be a finite number"):
        Fusion.from_dict({**d, "inputs": [d["inputs"][0], {"name": "y", "weight": None}]})
    with pytest.raises(FusionError, match="only 'prior-weighted-logistic-regression-fusion'"):
        Fusion.from_dict({**d, "method": "mean"})
    with pytest.raises(FusionError, match="has 2 inputs .* shape \\(3, 1\\)"):
        f.apply(np.zeros((3, 1)))


def test_eval_files_must_score_the_same_ids(tmp_path):
    a = write_scores(tmp_path / "a.txt", ["u1", "u2", "u3"], [1.0, 2.0, 3.0])
    b = write_scores(tmp_path / "b.txt", ["u3", "u1", "u2"], [30.0, 10.0, 20.0])
    ids, x = eval_matrix([a, b])
    assert ids == ["u1", "u2", "u3"] and x[:, 1].tolist() == [10.0, 20.0, 30.0]
    c = write_scores(tmp_path / "c.txt", ["u1", "u2", "u9"], [1.0, 2.0, 3.0])
    with pytest.raises(
        FusionError, match=f"{c} does not score the same ids as {a}: 1 id.*'u3'.*'u9'"
    ):
        eval_matrix([a, c])
    (tmp_path / "d.txt").write_text("u1 1\nu2 2\nu3 3\nu1 4\n")
    with pytest.raises(
        FusionError, match=r"d.txt: 1 id\(s\) occur more than once, e.g. 'u1' \(lines 1, 4\)"
    ):
        eval_matrix([a, tmp_path / "d.txt"])


# ----------------------------------------------------------------------------- spoofdet fuse


def _world(tmp_path, split, seed, n=300):
    """A CSV key and two systems' scores: A is random on attack X and good on Y, B the reverse."""
    rng = np.random.default_rng(seed)
    rows, ids, a, b = ["path,label,utt_id,attack"], [], [], []
    for kind in ("bonafide", "X", "Y"):
        for i in range(n):
            utt = f"{split}_{kind}_{i}"
            rows.append(
                f"{utt}.wav,{'bonafide' if kind == 'bonafide' else 'spoof'},{utt},"
                f"{'' if kind == 'bonafide' else kind}"
            )
            ids.append(utt)
            a.append(rng.normal(1, 1) if kind in ("bonafide", "X") else rng.normal(-2, 1))
            b.append(rng.normal(1, 1) if kind in ("bonafide", "Y") else rng.normal(-2, 1))
    folder = tmp_path / split
    folder.mkdir()
    (folder / "key.csv").write_text("\n".join(rows) + "\n")
    order = rng.permutation(len(ids))  # score files in their own order
    write_scores(folder / "a.txt", [ids[i] for i in order], 3 * np.asarray(a)[order] + 7)
    write_scores(folder / "b.txt", [ids[i] for i in order[::-1]], np.asarray(b)[order[::-1]] - 4)
    return folder


def _run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def _evaluate(capsys, scores, key):
    code, out, err = _run(
        capsys, "evaluate", "--scores", str(scores), "--key", str(key), "--format", "csv", "--json"
    )
    assert code == 0, err
    return json.loads(out)


def test_fusion_beats_every_input_and_is_calibrated(tmp_path, capsys):
    dev, ev = _world(tmp_path, "dev", 1), _world(tmp_path, "eval", 2)
    fused = tmp_path / "fused.txt"
    code, out, err = _run(
        capsys,
        "fuse",
        "--scores",
        str(dev / "a.txt"),
        str(dev / "b.txt"),
        "--key",
        str(dev / "key.csv"),
        "--format",
        "csv",
        "--apply",
        str(ev / "a.txt"),
        str(ev / "b.txt"),
        "--out",
        str(fused),
        "--json",
    )
    assert code == 0, err
    summary = json.loads(out)
    model = json.loads((tmp_path / "fused.fusion.json").read_text())
    assert summary["fusion_json"] == str(tmp_path / "fused.fusion.json")
    assert summary["n_scored"] == 900 and model == summary["fusion"]
    assert [i["name"] for i in model["inputs"]] == [str(dev / "a.txt"), str(dev / "b.txt")]
    assert all(i["weight"] > 0 for i in model["inputs"])
    assert (model["n_bonafide"], model["n_spoof"]) == (300, 600)
    assert model["p_bonafide"] == pytest.approx(DEFAULT_P_BONAFIDE)
    assert set(model["dev"]["inputs"]) == {str(dev / "a.txt"), str(dev / "b.txt")}
    assert {"eer", "min_dcf", "act_dcf"} <= set(model["dev"]["fusion"])
    single = [_evaluate(capsys, ev / f, ev / "key.csv") for f in ("a.txt", "b.txt")]
    result = _evaluate(capsys, fused, ev / "key.csv")
    assert result["eer"] < min(r["eer"] for r in single) - 5
    assert result["min_dcf"] < min(r["min_dcf"] for r in single)
    assert result["act_dcf"] - result["min_dcf"] < 0.1  # calibrated: the Bayes threshold works
    assert min(r["act_dcf"] - r["min_dcf"] for r in single) > 0.2  # the raw inputs are not
    # the stored fusion applied again without refitting gives the same file
    again = tmp_path / "again.txt"
    code, out, err = _run(
        capsys,
        "fuse",
        "--model",
        str(tmp_path / "fused.fusion.json"),
        "--apply",
        str(ev / "a.txt"),
        str(ev / "b.txt"),
        "--out",
        str(again),
    )
    assert code == 0, err
    assert again.read_text() == fused.read_text() and "applied" in out
    assert not (tmp_path / "again.fusion.json").exists()


def test_fuse_refuses_mismatched_inputs(tmp_path, capsys):
    dev, ev = _world(tmp_path, "dev", 1, n=20), _world(tmp_path, "eval", 2, n=20)
    base = [
        "fuse",
        "--scores",
        str(dev / "a.txt"),
        str(dev / "b.txt"),
        "--key",
        str(dev / "key.csv"),
        "--format",
        "csv",
        "--out",
        str(tmp_path / "f.txt"),
    ]
    code, _, err = _run(capsys, *base, "--apply", str(ev / "a.txt"))
    assert code == 2 and "2 --scores file(s) but 1 --apply file(s)" in err
    # an eval file of another set: named, with the differing ids
    code, _, err = _run(capsys, *base, "--apply", str(ev / "a.txt"), str(dev / "b.txt"))
    assert code == 2 and f"{dev / 'b.txt'} does not score the same ids as {ev / 'a.txt'}" in err
    assert "'eval_" in err and "'dev_" in err
    # a dev file that does not match the dev key: the strict matching of spoofdet evaluate
    short = tmp_path / "short.txt"
    short.write_text("".join((dev / "a.txt").read_text().splitlines(keepends=True)[:-1]))
    code, _, err = _run(
        capsys,
        "fuse",
        "--scores",
        str(short),
        str(dev / "b.txt"),
        "--key",
        str(dev / "key.csv"),
        "--format",
        "csv",
        "--apply",
        str(ev / "a.txt"),
        str(ev / "b.txt"),
        "--out",
        str(tmp_path / "f.txt"),
    )
    assert code == 2 and f"score file {short} does not match key" in err and "missing: 1" in err
    code, _, err = _run(capsys, *base[:-2], "--model", "x.json", "--apply", "a", "--out", "f")
    assert code == 2 and "--model applies an existing fusion: leave out --scores and --key" in err
    assert not (tmp_path / "f.txt").exists() and not (tmp_path / "f.fusion.json").exists()
