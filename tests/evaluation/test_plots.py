"""DET curves and histograms: names, one curve per group, the operating point, files written.

Figures are inspected as matplotlib objects (the ``*_figure`` functions) before any PNG is
written; the PNGs themselves are checked for their signature and pixel size.
"""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

pytest.importorskip("matplotlib")
plt = pytest.importorskip("matplotlib.pyplot")
norm = pytest.importorskip("scipy.stats").norm

from spoofdet.cli import main  # noqa: E402
from spoofdet.evaluation import plots  # noqa: E402
from spoofdet.evaluation.metrics import act_dcf, compute_eer  # noqa: E402
from spoofdet.evaluation.scorefile import write_scores  # noqa: E402

PNG = b"\x89PNG\r\n\x1a\n"


def _png_size(path) -> tuple[int, int]:
    """(width, height) in pixels from a PNG's IHDR chunk; fails unless the file is a PNG."""
    head = path.read_bytes()[:24]
    assert head[:8] == PNG and head[12:16] == b"IHDR", f"{path} is not a PNG"
    return struct.unpack(">II", head[16:24])


def _labels(fig) -> list[str]:
    return [line.get_label() for line in fig.axes[0].get_lines()]


def _line(fig, prefix: str):
    (line,) = [ln for ln in fig.axes[0].get_lines() if ln.get_label().startswith(prefix)]
    return line


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


# ----------------------------------------------------------------------------- DET


def test_operating_point_hand_computed():
    # bona fide 0, 1, 2, 3; spoof -2, -1, 0.5, 1.5, 2.5. Accept when score >= t.
    # t = 1.0: bona fide 0 rejected -> Pmiss 1/4; spoof 1.5, 2.5 accepted -> Pfa 2/5.
    # t = 0.5 (a spoof score itself): that spoof is accepted -> Pfa 3/5; Pmiss still 1/4.
    bona, spoof = [0.0, 1.0, 2.0, 3.0], [-2.0, -1.0, 0.5, 1.5, 2.5]
    assert plots.operating_point(bona, spoof, 1.0) == (0.4, 0.25)
    assert plots.operating_point(bona, spoof, 0.5) == (0.6, 0.25)
    assert plots.operating_point(bona, spoof, 3.5) == (0.0, 1.0)
    fig = plots.det_figure(bona, spoof, name="toy v1", threshold=("Bayes LLR threshold", 1.0))
    marker = _line(fig, "Bayes LLR threshold")
    assert marker.get_label() == "Bayes LLR threshold 1 (Pfa 40.00 %, Pmiss 25.00 %)"
    assert marker.get_xdata()[0] == pytest.approx(norm.ppf(0.4))
    assert marker.get_ydata()[0] == pytest.approx(norm.ppf(0.25))


def test_operating_point_matches_act_dcf_at_the_bayes_threshold():
    rng = np.random.default_rng(4)
    bona, spoof = rng.normal(2, 1.5, 300), rng.normal(-2, 1.5, 700)
    t = -0.6418538861723947  # -ln(beta) of the ASVspoof 5 costs: 0.95 * 1 / (0.05 * 10) = 1.9
    pfa, pmiss = plots.operating_point(bona, spoof, t)
    assert (0.95 * pmiss + 0.5 * pfa) / 0.5 == pytest.approx(act_dcf(bona, spoof))
    fig = plots.det_figure(bona, spoof, name="m", threshold=("Bayes LLR threshold", t))
    assert "Bayes LLR threshold -0.642 (" in _line(fig, "Bayes").get_label()


def test_det_carries_the_model_name_one_curve_per_group_and_their_eers():
    rng = np.random.default_rng(0)
    bona = rng.normal(2, 1, 200)
    groups = {a: (bona, rng.normal(-2 + k, 1, 50)) for k, a in enumerate(["A07", "A08", "A09"])}
    spoof = np.concatenate([s for _, s in groups.values()])
    fig = plots.det_figure(bona, spoof, name="aasist v3", groups=groups, group_label="attack")
    ax = fig.axes[0]
    assert ax.get_title() == "aasist v3 by attack"
    labels = _labels(fig)
    curves = [lab for lab in labels if "EER" in lab and not lab.startswith("EER point")]
    assert len(curves) == 4  # three groups + pooled
    for a, (b, s) in groups.items():
        eer = 100 * compute_eer(b, s)[0]
        assert f"{a}  EER {eer:.2f} %" in labels
    pooled = _line(fig, "aasist v3 (pooled)")
    assert (
        pooled.get_label() == f"aasist v3 (pooled)  EER {100 * compute_eer(bona, spoof)[0]:.2f} %"
    )
    assert pooled.get_color() == "k" and pooled.get_linewidth() > 2
    assert "EER point (pooled)" in labels
    assert not any("threshold" in lab for lab in labels)  # no operating point unless given
    # the axes stay normal deviates: the 40 % tick sits at probit(0.4)
    ticks = dict(zip([t.get_text() for t in ax.get_xticklabels()], ax.get_xticks()))
    assert ticks["40"] == pytest.approx(norm.ppf(0.4))


def test_twenty_groups_get_distinct_styles_and_an_outside_legend():
    rng = np.random.default_rng(1)
    bona = rng.normal(1, 1, 100)
    groups = {f"g{k:02d}": (bona, rng.normal(-1, 1, 20)) for k in range(20)}
    spoof = np.concatenate([s for _, s in groups.values()])
    fig = plots.det_figure(bona, spoof, name="m", groups=groups)
    styles = {
        (ln.get_color(), ln.get_linestyle())
        for ln in fig.axes[0].get_lines()
        if ln.get_label().startswith("g")
    }
    assert len(styles) == 20
    legend = fig.axes[0].get_legend()
    assert legend.get_bbox_to_anchor().x0 > fig.axes[0].get_window_extent().x1  # right of the axes


def test_group_without_a_class_is_named_in_the_legend_not_dropped():
    bona, spoof = np.array([1.0, 2.0]), np.array([0.0, 1.5])
    groups = {"C1": (bona, spoof), "C9": (np.array([]), spoof)}
    fig = plots.det_figure(bona, spoof, name="m", groups=groups)
    assert "C9: not drawn (0 bona fide, 2 spoof)" in _labels(fig)


def test_det_groups_follow_the_breakdown_rules():
    scores = np.array([3.0, 2.0, 1.0, 0.5, -1.0, -2.0, 9.0])
    labels = np.array([1, 1, 1, 0, 0, 0, -1])
    # spoof-only factor: each attack's spoofs against every bona fide; bona fide rows carry none
    attack = [None, None, None, "A08", "A07", "A08", "A07"]
    g = plots.det_groups(scores, labels, attack, spoof_only=True)
    assert list(g) == ["A07", "A08"]
    assert g["A07"][0].tolist() == [3.0, 2.0, 1.0] and g["A07"][1].tolist() == [-1.0]
    assert g["A08"][1].tolist() == [0.5, -2.0]
    # a condition both classes pass: the group's own bona fide and spoof (unlabelled row ignored)
    codec = ["C1", "C2", "C2", "C1", "C2", "C3", "C1"]
    g = plots.det_groups(scores, labels, codec, spoof_only=False)
    assert {k: (b.tolist(), s.tolist()) for k, (b, s) in g.items()} == {
        "C1": ([3.0], [0.5]),
        "C2": ([2.0, 1.0], [-1.0]),
        "C3": ([], [-2.0]),
    }
    with pytest.raises(ValueError, match="3 scores, 2 labels and 3 groups"):
        plots.det_groups([1, 2, 3], [1, 0], ["a", "b", "c"], spoof_only=True)


def test_breakdown_column_reads_the_codec_condition_first():
    table = pa.table(
        {
            "label": [1, 0],
            "codec": ["alaw", "gsm"],
            "extra": pa.array(
                [[("condition", "C2")], [("condition", "C6")]], pa.map_(pa.string(), pa.string())
            ),
        }
    )
    assert plots.breakdown_column(table, "codec").tolist() == ["C2", "C6"]
    assert plots.breakdown_column(table.drop_columns(["extra"]), "codec").tolist() == [
        "alaw",
        "gsm",
    ]
    assert plots.breakdown_column(table, "attack") is None


def test_plot_det_writes_a_png_of_sensible_size(tmp_path):
    rng = np.random.default_rng(2)
    bona, spoof = rng.normal(1, 1, 200), rng.normal(-1, 1, 200)
    path = plots.plot_det(bona, spoof, tmp_path / "sub" / "det.png", name="m v1")
    w, h = _png_size(path)
    assert 450 <= w <= 800 and 450 <= h <= 800 and path.stat().st_size > 10_000
    groups = {f"A{k:02d}": (bona, spoof[k::13]) for k in range(13)}
    wide = plots.plot_det(bona, spoof, tmp_path / "by.png", name="m v1", groups=groups)
    assert _png_size(wide)[0] > w + 200  # the outside legend is inside the image, not cut off
    with pytest.raises(ValueError, match="NaN or infinite"):
        plots.plot_det([1.0, np.nan], [0.0], tmp_path / "bad.png", name="m")


def test_det_models_one_curve_per_model_plus_fusion():
    rng = np.random.default_rng(3)
    models = {f"m{k}": (rng.normal(1, 1, 50), rng.normal(-1, 1, 50)) for k in range(3)}
    b = np.mean([v[0] for v in models.values()], axis=0)
    s = np.mean([v[1] for v in models.values()], axis=0)
    fig = plots.det_models_figure(models, fusion=("mean fusion", (b, s)))
    curves = [lab for lab in _labels(fig) if "EER" in lab]
    assert [c.split("  ")[0] for c in curves] == ["m0", "m1", "m2", "mean fusion"]
    assert curves[3] == f"mean fusion  EER {100 * compute_eer(b, s)[0]:.2f} %"
    assert fig.axes[0].get_title() == "3 models"


# ----------------------------------------------------------------------------- histogram


def _outlines(ax):
    return [p for p in ax.patches if not p.get_fill()]


def test_histogram_overlapping_classes_outlined_with_counts_and_thresholds():
    rng = np.random.default_rng(5)
    s = np.r_[rng.normal(1, 1, 200), rng.normal(0, 1, 250), [0.3]]
    y = [1] * 200 + [0] * 250 + [None]
    fig = plots.histogram_figure(s, labels=y, thresholds={"EER threshold": 0.5, "Bayes": -0.642})
    ax = fig.axes[0]
    assert ax.get_yscale() == "linear"
    outlines = _outlines(ax)
    assert len(outlines) == 2 and all(p.get_linewidth() >= 2 for p in outlines)
    assert len(ax.patches) == 4  # and a light fill under each outline
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend[:3] == ["bona fide (200)", "spoof (250)", "unlabelled (1, not drawn)"]
    assert "EER threshold = 0.5" in legend and "Bayes = -0.642" in legend
    assert sorted(ln.get_xdata()[0] for ln in ax.get_lines() if "=" in ln.get_label()) == [
        -0.642,
        0.5,
    ]


def test_histogram_log_scale_when_one_class_is_over_ten_times_the_other(tmp_path):
    rng = np.random.default_rng(6)
    y = [1] * 30 + [0] * 301
    s = np.r_[rng.normal(2, 1, 30), rng.normal(-1, 1, 301)]
    fig = plots.histogram_figure(s, labels=y)
    assert fig.axes[0].get_yscale() == "log" and fig.axes[0].get_ylabel() == "clips (log scale)"
    assert (
        plots.histogram_figure(s[:330], labels=y[:330]).axes[0].get_yscale() == "linear"
    )  # 300:30
    path = plots.plot_histogram(s, tmp_path / "h.png", labels=y, title="imbalanced")
    w, h = _png_size(path)
    assert 600 <= w <= 900 and 350 <= h <= 600
    # unlabelled scores: one histogram of every clip
    assert [t.get_text() for t in plots.histogram_figure(s).axes[0].get_legend().get_texts()] == [
        "all clips (331)"
    ]


# ----------------------------------------------------------------------------- spoofdet evaluate --plots


def _la_key(tmp_path):
    """A tiny 2021 LA key (eval phase): 8 bona fide, 16 spoof of two attacks, two codecs."""
    rng = np.random.default_rng(7)
    lines, ids, scores = [], [], []
    for i in range(24):
        codec = ("alaw", "gsm")[i % 2]
        utt = f"LA_E_{i:07d}"
        if i < 8:
            lines.append(f"LA_0021 {utt} {codec} ita_tx bonafide bonafide notrim eval")
            scores.append(rng.normal(2, 1))
        else:
            lines.append(f"LA_0009 {utt} {codec} ita_tx {('A07', 'A08')[i % 2]} spoof notrim eval")
            scores.append(rng.normal(-1, 1))
        ids.append(utt)
    key = tmp_path / "trial_metadata.txt"
    key.write_text("".join(line + "\n" for line in lines))
    return key, ids, np.asarray(scores)


@pytest.fixture
def figures(monkeypatch):
    """Title and legend labels of every figure the plots module saves, by file name."""
    seen, save = {}, plots._save

    def spy(fig, path):
        ax = fig.axes[0]
        seen[path.name if hasattr(path, "name") else str(path)] = (
            ax.get_title(),
            [t.get_text() for t in ax.get_legend().get_texts()],
        )
        return save(fig, path)

    monkeypatch.setattr(plots, "_save", spy)
    return seen


def test_evaluate_plots_one_file(tmp_path, capsys, figures):
    key, ids, scores = _la_key(tmp_path)
    write_scores(tmp_path / "aasist.txt", ids, scores)
    argv = ["evaluate", "--scores", str(tmp_path / "aasist.txt"), "--key", str(key)]
    argv += ["--format", "asvspoof2021-la", "--plots", str(tmp_path / "plots")]
    assert main([*argv, "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert set(r["plots"]) == {"det", "hist", "det_by_attack", "det_by_codec"}
    for name, path in r["plots"].items():
        assert path == str(tmp_path / "plots" / f"{name}.png") and _png_size(Path(path))[0] > 300
    title, legend = figures["det_by_attack.png"]
    assert title == "aasist by attack"  # the default name: the score file's stem
    assert [t.split("  ")[0] for t in legend if "EER" in t and "point" not in t] == [
        "A07",
        "A08",
        "aasist (pooled)",
    ]
    assert figures["det.png"][1][0] == f"aasist  EER {r['eer']:.2f} %"
    # codecs by condition (extra['condition']): alaw over ita_tx is C2, gsm over ita_tx C6
    assert [t.split("  ")[0] for t in figures["det_by_codec.png"][1] if "C" in t[:2]] == [
        "C2",
        "C6",
    ]
    # --plot-name, and the text report lists the files
    assert main([*argv, "--plot-name", "AASIST-L v2"]) == 0
    out = capsys.readouterr().out
    assert f"plots written to {tmp_path / 'plots'}:" in out
    assert f"det_by_codec             {tmp_path / 'plots' / 'det_by_codec.png'}" in out
    assert figures["det_by_attack.png"][0] == "AASIST-L v2 by attack"


def test_evaluate_plots_several_files_one_det_with_fusion(tmp_path, capsys, figures):
    key, ids, scores = _la_key(tmp_path)
    rng = np.random.default_rng(8)
    paths = []
    for m in ("m0", "m1"):
        (tmp_path / m).mkdir()
        paths.append(
            str(write_scores(tmp_path / m / "scores.txt", ids, scores + rng.normal(0, 1, 24)))
        )
    argv = ["evaluate", "--scores", *paths, "--key", str(key), "--format", "asvspoof2021-la"]
    argv += ["--fuse", "mean", "--plots", str(tmp_path / "p"), "--json"]
    assert main(argv) == 0
    r = json.loads(capsys.readouterr().out)
    # same stems: the names fall back to <folder>/<stem>, file names keep only safe characters
    assert set(r["plots"]) == {
        "det",
        *(f"{p}_m{k}_scores" for k in (0, 1) for p in ("hist", "det_by_attack", "det_by_codec")),
    }
    assert all((tmp_path / "p" / f"{k}.png").is_file() for k in r["plots"])
    legend = figures["det.png"][1]
    assert legend == [
        f"m0/scores  EER {r['models'][0]['eer']:.2f} %",
        f"m1/scores  EER {r['models'][1]['eer']:.2f} %",
        f"mean fusion  EER {r['fusion']['eer']:.2f} %",
    ]
    assert figures["det_by_attack_m1_scores.png"][0] == "m1/scores by attack"


@pytest.mark.parametrize(
    "extra,match",
    [
        (["--plot-name", "a"], "--plot-name needs --plots DIR"),
        (
            ["--plots", "P", "--plot-name", "a", "b"],
            r"--plot-name: 2 name\(s\) for 1 --scores file",
        ),
    ],
)
def test_evaluate_plot_flags_misused_exit_2(tmp_path, capsys, extra, match):
    key, ids, scores = _la_key(tmp_path)
    write_scores(tmp_path / "s.txt", ids, scores)
    argv = ["evaluate", "--scores", str(tmp_path / "s.txt"), "--key", str(key)]
    assert main([*argv, "--format", "asvspoof2021-la", *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("spoofdet evaluate: error:") and re.search(match, err)
    assert not (tmp_path / "P").exists()


# ----------------------------------------------------------------------------- spoofdet score (no Ray)


def test_score_shard_set_writes_named_dets_by_group_with_the_operating_point(tmp_path, figures):
    from spoofdet.evaluation.sets import EvalSet
    from spoofdet.serve.registry import DECISION_THRESHOLD
    from spoofdet.serve.score_sets import score_shard_set

    key_dir = tmp_path / "shards"
    key_dir.mkdir()
    ids = [f"u{i}" for i in range(12)]
    labels = [1] * 4 + [0] * 8
    attacks = [None] * 4 + ["A07", "A08"] * 4
    pq.write_table(
        pa.table({"utt_id": ids, "label": labels, "attack": attacks}), key_dir / "metadata.parquet"
    )
    llr = [3.0, 2.0, 0.0, -1.0, -3.0, -2.5, -2.0, -1.5, -0.5, 0.5, 1.0, 1.5]
    clips = SimpleNamespace(raw=dict(zip(ids, llr)), errors={})
    result: dict = {}
    out = tmp_path / "out"
    out.mkdir()
    kw = dict(calibrated=True, length="4s", phase=None, out=out, result=result, thresholds={})
    score_shard_set(
        EvalSet("toy", str(key_dir), "shards"), clips, np.asarray, model="tones-eval v1", **kw
    )
    assert result["det_by_attack_png"] == str(out / "det_by_attack.png")
    assert _png_size(out / "det_by_attack.png")[0] > 300
    title, legend = figures["det.png"]
    assert title == "tones-eval v1: toy, 4s"
    # LLR >= -0.642: bona fide -1.0 missed (1/4); spoof -0.5, 0.5, 1.0, 1.5 accepted (4/8)
    assert f"Bayes LLR threshold {DECISION_THRESHOLD:.3g} (Pfa 50.00 %, Pmiss 25.00 %)" in legend
    assert figures["det_by_attack.png"][0] == "tones-eval v1: toy, 4s, by attack"
    # raw scores: no operating point
    score_shard_set(
        EvalSet("toy", str(key_dir), "shards"),
        clips,
        np.asarray,
        model="m",
        **{**kw, "calibrated": False},
    )
    assert not any("threshold" in t for t in figures["det.png"][1])
