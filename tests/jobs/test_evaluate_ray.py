"""Batch scoring, promotion, the example notebook and serving, on a local Ray and a SQLite MLflow store.

The eval set is a tone/noise corpus (spoofdet.testing) that random-init tiny detectors separate,
so models of known quality are made without training: the same weights with an inverted
calibration (slope -1) are the worst possible model, and other seeds land in between.
"""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from data_prep import shard
from spoofdet.data.corpora import prepare
from spoofdet.testing import (
    orientation,
    register_detector,
    tone_or_noise,
    write_detector_dir,
    write_tone_noise_corpus,
)

pytestmark = pytest.mark.integration
ray = pytest.importorskip("ray")
mlflow = pytest.importorskip("mlflow")

ROOT = Path(__file__).resolve().parents[2]
GOOD_SEED, MEDIUM_SEED = 1, 3


def _in_process(folder, corpus, length):
    """utt_id -> LLR of every clip, scored in this process (no Ray): the reference for the jobs."""
    from spoofdet.data.audio import load_16k
    from spoofdet.evaluation.protocols import clip_windows, score_waves
    from spoofdet.serve.registry import load_detector

    det = load_detector(str(folder))
    return {
        p.stem: float(
            det.calibration.apply(
                score_waves(det.model, clip_windows(load_16k(str(p))[0], length)).mean()
            )
        )
        for p in sorted(Path(corpus["root"], "audio").glob("*.wav"))
    }


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from spoofdet.evaluation.metrics import compute_eer

    root = tmp_path_factory.mktemp("scoring")
    corpus = write_tone_noise_corpus(root / "corpus", per_class=6)
    table = prepare("csv", corpus["manifest"], check_audio=False).table
    shards = root / "shards" / "tones"
    shard.run(table, str(shards), corpus="csv", shard_rows=5, executor="local", progress=False)
    models = {}
    for name, seed, sign in (
        ("good", GOOD_SEED, 1),
        ("medium", MEDIUM_SEED, 1),
        ("bad", GOOD_SEED, -1),
    ):
        probe = write_detector_dir(root / "probe" / name, seed=seed)
        models[name] = write_detector_dir(
            root / "models" / name, seed=seed, slope=sign * orientation(probe, corpus)
        )
    eers = {}
    for name, folder in models.items():
        llr = _in_process(folder, corpus, "4s")
        eers[name] = (
            100
            * compute_eer(
                [v for k, v in llr.items() if k.startswith("bona")],
                [v for k, v in llr.items() if k.startswith("spoof")],
            )[0]
        )
    assert eers["good"] < eers["medium"] < eers["bad"], (
        f"precondition: pick other seeds, EERs are {eers}"
    )
    uri = f"sqlite:///{root / 'mlflow.db'}"
    version = register_detector(models["good"], tracking_uri=uri, name="tones-eval")
    clips = root / "clips"  # a user's folder: a 44.1 kHz file and a broken one
    clips.mkdir()
    import soundfile as sf

    sf.write(
        clips / "a_44k.wav", tone_or_noise("noise", 2.5, 44_100, np.random.default_rng(5)), 44_100
    )
    (clips / "broken.flac").write_bytes(b"fLaC but not really")
    return {
        "root": root,
        "corpus": corpus,
        "shards": shards,
        "models": models,
        "eers": eers,
        "uri": uri,
        "eval_model": f"models:/tones-eval/{version}",
        "clips": clips,
    }


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def _scores(path):
    return {line.split()[0]: float(line.split()[1]) for line in Path(path).read_text().splitlines()}


def test_score_shards_and_a_folder_4s(world, local_ray, tmp_path, capsys):
    from spoofdet.cli import main as cli_main

    out = tmp_path / "eval"
    stale = out / "4s" / "tones" / "scores.txt"
    stale.parent.mkdir(parents=True)
    stale.write_text("stale 1.0\n" * 50)  # a previous run's file is replaced, never appended to
    assert (
        cli_main(
            [
                "score",
                "--model",
                world["eval_model"],
                "--eval-set",
                f"tones={world['shards']}",
                str(world["clips"]),
                "--tracking-uri",
                world["uri"],
                "--out",
                str(out),
                "--json",
            ]
        )
        == 0
    )
    summary = json.loads(capsys.readouterr().out)
    tones, clips = summary["sets"]
    assert (
        summary["protocol"]["length"] == "4s"
        and tones["protocol"]["window"] == 64_600
        and tones["score_type"] == "llr"
    )

    # the score file: every row once, the same scores as in-process scoring, accepted by `spoofdet evaluate`
    scores = _scores(tones["scores"])
    assert (
        len(Path(tones["scores"]).read_text().splitlines())
        == len(scores)
        == world["corpus"]["rows"]
    )
    expected = _in_process(world["models"]["good"], world["corpus"], "4s")
    assert scores == pytest.approx(expected, rel=1e-5, abs=1e-6)
    assert (
        cli_main(
            [
                "evaluate",
                "--scores",
                tones["scores"],
                "--key",
                world["corpus"]["manifest"],
                "--format",
                "csv",
                "--json",
            ]
        )
        == 0
    )
    assert (
        json.loads(capsys.readouterr().out)["eer"]
        == tones["metrics"]["eer"]
        == pytest.approx(world["eers"]["good"])
    )
    saved = json.loads((out / "4s" / "tones" / "metrics.json").read_text())
    assert (
        saved["metrics"]["eer"] == tones["metrics"]["eer"] and saved["protocol"]["length"] == "4s"
    )
    assert (
        saved["selection"] == "all rows"
        and saved["metrics"]["breakdown"]["attack"]["tone"]["n_spoof"] == 6
    )
    for png in (tones["det_png"], tones["hist_png"], clips["hist_png"]):
        assert Path(png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # the folder: unlabelled, scored per file, the broken file kept with its reason
    assert clips["metrics"] is None and clips["n_scored"] == 1 and clips["n_failed"] == 1
    rows = Path(clips["scores"]).read_text().splitlines()
    assert rows[0] == "path,score,llr,decision,error,warning" and len(rows) == 3
    assert any(r.startswith("broken.flac,,,,decode_error") for r in rows)

    # the table says how many rows were scored, in markdown and JSON: the failed clip is counted
    table = (out / "4s" / "cross_dataset.md").read_text()
    assert "Protocol: 4s" in table and "| tones | all rows | scored 12 of 12 | 6 | 6 |" in table
    assert "| clips | all files | scored 1 of 2 (1 failed to decode) |" in table
    assert "Not every row was scored: clips: scored 1 of 2 (1 failed to decode)" in table
    cross = json.loads((out / "4s" / "cross_dataset.json").read_text())
    assert [(r["eval_set"], r["n_rows"], r["n_scored"], r["n_failed"]) for r in cross["sets"]] == [
        ("tones", 12, 12, 0),
        ("clips", 2, 1, 1),
    ]
    assert cross["sets"][1]["scored"] == "scored 1 of 2 (1 failed to decode)"
    assert not cross["complete"]

    # MLflow: an evaluation run nested under the model's run, metrics linked, a version tag
    client = mlflow.tracking.MlflowClient(tracking_uri=world["uri"])
    run = client.get_run(summary["mlflow"]["run_id"])
    mv = client.get_model_version("tones-eval", summary["model"]["version"])
    assert (
        run.data.tags["spoofdet.kind"] == "evaluation"
        and run.data.tags["mlflow.parentRunId"] == mv.run_id
    )
    assert run.data.metrics["tones.4s.eer"] == pytest.approx(tones["metrics"]["eer"])
    assert json.loads(mv.tags["eval.tones.4s"])["eer"] == pytest.approx(tones["metrics"]["eer"])
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "eval/4s/tones")}
    assert {
        "eval/4s/tones/scores.txt",
        "eval/4s/tones/det.png",
        "eval/4s/tones/hist.png",
    } <= artifacts
    assert (
        os.environ.get("MLFLOW_TRACKING_URI") != world["uri"]
    )  # the job left the process' MLflow settings alone


def test_full_length_scores_whole_clips(world, local_ray, tmp_path, capsys):
    from ray_jobs import score

    assert (
        score.main(
            [
                "--model",
                str(world["models"]["good"]),
                "--eval-set",
                f"tones={world['shards']}",
                "--length",
                "full",
                "--out",
                str(tmp_path),
                "--no-mlflow",
                "--json",
            ]
        )
        == 0
    )
    summary = json.loads(capsys.readouterr().out)
    assert summary["protocol"]["length"] == "full" and "mlflow" not in summary
    full = _scores(summary["sets"][0]["scores"])
    first = _in_process(world["models"]["good"], world["corpus"], "4s")
    whole = _in_process(world["models"]["good"], world["corpus"], "full")
    assert full == pytest.approx(whole, rel=1e-5, abs=1e-6)  # every window of every clip, averaged
    for utt in full:
        if (
            utt in world["corpus"]["long"]
        ):  # their content changes after 4 s: the protocols disagree
            assert abs(full[utt] - first[utt]) > 1e-3, utt
        else:  # short clips are the same repeat-padded window under both
            assert full[utt] == pytest.approx(first[utt], rel=1e-5, abs=1e-6), utt
    assert "Protocol: full" in (tmp_path / "full" / "cross_dataset.md").read_text()


def test_promotion_refuses_a_worse_candidate_and_promotes_a_better_one(
    world, local_ray, tmp_path, capsys
):
    from ray_jobs import promote

    uri, name = world["uri"], "tones"
    client = mlflow.tracking.MlflowClient(tracking_uri=uri)
    versions = {
        k: register_detector(world["models"][k], tracking_uri=uri, name=name)
        for k in ("medium", "bad", "good")
    }
    common = [
        "--name",
        name,
        "--eval-set",
        f"tones={world['shards']}",
        "--tracking-uri",
        uri,
        "--json",
    ]

    def run(version):
        rc = promote.main(
            common + ["--version", versions[version], "--out", str(tmp_path / version)]
        )
        return rc, json.loads(capsys.readouterr().out)

    def champion():
        return str(client.get_model_version_by_alias(name, "champion").version)

    rc, rec = run("medium")  # the first version becomes champion
    assert (rc, rec["result"], champion()) == (0, "first champion", versions["medium"])
    assert (
        client.get_model_version(name, versions["medium"]).tags["promotion.result"]
        == "first champion"
    )

    rc, rec = run(
        "bad"
    )  # worse: refused, alias unchanged, the comparison recorded on both versions
    assert (rc, rec["result"], champion()) == (promote.EXIT_REFUSED, "refused", versions["medium"])
    assert rec["candidate_score"] == pytest.approx(world["eers"]["bad"])
    assert rec["champion_score"] == pytest.approx(world["eers"]["medium"])
    # the champion's evaluation on these exact rows and protocol is reused from its eval.* tags, not re-scored
    assert (
        rec["evaluations"][f"v{versions['medium']}"]["reused"]
        and not rec["evaluations"][f"v{versions['bad']}"]["reused"]
    )
    bad_tags = client.get_model_version(name, versions["bad"]).tags
    assert (
        bad_tags["promotion.result"] == "refused"
        and bad_tags["promotion.compared_with"] == versions["medium"]
    )
    challenge = json.loads(
        client.get_model_version(name, versions["medium"]).tags["promotion.last_challenge"]
    )
    assert challenge["candidate"] == versions["bad"] and challenge["result"] == "refused"

    rc, rec = run("good")  # better: promoted, the old champion says by whom it was replaced
    assert (rc, rec["result"], champion()) == (0, "promoted", versions["good"])
    assert rec["candidate_score"] < rec["champion_score"]
    assert (
        client.get_model_version(name, versions["medium"]).tags["promotion.replaced_by"]
        == versions["good"]
    )
    assert {k: str(v) for k, v in client.get_registered_model(name).aliases.items()} == {
        "champion": versions["good"]
    }
    assert (
        Path(rec["record"]).is_file()
        and "eval.tones.4s" in client.get_model_version(name, versions["good"]).tags
    )

    rc, rec = run("good")  # already champion: nothing evaluated
    assert (rc, rec["result"]) == (0, "already champion")

    # a family (issue 19): every version's score, best and mean +- std; the best challenges
    # the champion (here it is the champion already); evaluations come from the eval.* tags
    family = [versions[k] for k in ("medium", "bad", "good")]
    rc = promote.main(common + ["--version", *family, "--out", str(tmp_path / "family")])
    rec = json.loads(capsys.readouterr().out)
    eers = [world["eers"][k] for k in ("medium", "bad", "good")]
    assert (rc, rec["result"], rec["candidate"]) == (0, "already champion", versions["good"])
    c = rec["candidates"]
    assert [c["scores"][v] for v in family] == pytest.approx(eers)
    assert (c["best"], c["best_score"]) == (versions["good"], pytest.approx(min(eers)))
    assert (c["mean"], c["std"]) == (pytest.approx(np.mean(eers)), pytest.approx(np.std(eers)))
    assert all(e["reused"] for e in rec["evaluations"].values())


def test_promotion_bad_input_exits_2(world, tmp_path, capsys):
    from ray_jobs import promote

    base = [
        "--name",
        "tones-eval",
        "--eval-set",
        str(world["shards"]),
        "--tracking-uri",
        world["uri"],
    ]
    assert promote.main(base + ["--version", "99"]) == 2
    assert "v1" in capsys.readouterr().err  # lists the versions that exist
    assert promote.main(base + ["--version", "1", "--margin", "-1"]) == 2
    assert (
        promote.main(
            [
                "--name",
                "x",
                "--version",
                "1",
                "--eval-set",
                str(world["clips"]),
                "--tracking-uri",
                world["uri"],
            ]
        )
        == 2
    )
    assert "labelled shard folders" in capsys.readouterr().err


def test_example_notebook_scores_a_folder(world, tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    plot = tmp_path / "hist.png"
    monkeypatch.setenv("SPOOFDET_MODEL", world["eval_model"])
    monkeypatch.setenv("MLFLOW_TRACKING_URI", world["uri"])
    monkeypatch.setenv("SPOOFDET_AUDIO", str(Path(world["corpus"]["root"]) / "audio"))
    monkeypatch.setenv("SPOOFDET_PLOT", str(plot))
    nb = nbformat.read(ROOT / "examples" / "score_folder.ipynb", as_version=4)
    nbclient.NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}
    ).execute()
    text = "".join(
        o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
    )
    assert "every file was scored" in text and "'bonafide': " in text
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_mlflow_models_serve_scores_any_length(world, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": world["uri"],
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }
    cmd = [
        sys.executable,
        "-m",
        "mlflow",
        "models",
        "serve",
        "-m",
        world["eval_model"],
        "--env-manager",
        "local",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    server = subprocess.Popen(
        cmd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "serve.log", "w"),
        start_new_session=True,
    )
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2)
                break
            except OSError:
                assert server.poll() is None, (tmp_path / "serve.log").read_text()[-2000:]
                time.sleep(0.5)
        rng = np.random.default_rng(0)
        from spoofdet.tracking import using_tracking_uri

        with using_tracking_uri(
            world["uri"]
        ):  # leave no MLFLOW_TRACKING_URI behind for later tests
            model = mlflow.pyfunc.load_model(world["eval_model"])
        for n in (16_000, 70_000):  # the signature takes any number of samples
            waves = np.stack(
                [tone_or_noise(kind, n / 16_000, 16_000, rng) for kind in ("noise", "tone")]
            )
            body = json.dumps({"inputs": waves.tolist()}).encode()
            req = urllib.request.Request(
                f"http://127.0.0.1:{port}/invocations",
                data=body,
                headers={"Content-Type": "application/json"},
            )
            served = np.asarray(
                json.loads(urllib.request.urlopen(req, timeout=60).read())["predictions"]
            )
            local = model.predict(waves)
            assert served.shape == (2,) and np.allclose(served, local, atol=1e-5)
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)


def test_score_several_models_gives_each_best_mean_and_vote(world, local_ray, tmp_path, capsys):
    """Issue 19: a family's M1-M3 scored in one command; the table's rows are each model's own
    metrics on the same clips, best / mean +- std over them, and their vote."""
    from spoofdet.cli import main as cli_main
    from spoofdet.evaluation.metrics import compute_eer
    from spoofdet.evaluation.report import vote_fusion

    out = tmp_path / "family"
    names = ("good", "medium", "bad")
    argv = ["score", "--model", *(str(world["models"][n]) for n in names)]
    argv += ["--eval-set", str(world["shards"]), "--out", str(out), "--no-mlflow", "--json"]
    assert cli_main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    (table,) = summary["comparison"]["sets"]
    assert table["n_compared"] == 12 and table["n_not_scored_by_all"] == 0
    eers = [m["eer"] for m in table["models"]]
    for eer, s in zip(eers, summary["models"]):  # the same numbers as each model's own report
        assert eer == pytest.approx(s["sets"][0]["metrics"]["eer"])
    assert eers == pytest.approx([world["eers"][n] for n in names], abs=1e-9)
    over = table["over_models"]["eer"]
    assert over["best"] == min(eers) and over["mean"] == pytest.approx(np.mean(eers))
    assert over["std"] == pytest.approx(np.std(eers))
    # the vote, by hand: each (calibrated) model votes at the Bayes LLR threshold
    files = [Path(s["sets"][0]["scores"]) for s in summary["models"]]
    scores = [_scores(f) for f in files]
    ids = sorted(scores[0])
    t = [m["at_threshold"]["threshold"] for m in table["models"]]
    assert t == pytest.approx([-np.log(1.9)] * 3)
    fused = vote_fusion([np.array([s[u] for u in ids]) for s in scores], t)
    bona = [f for f, u in zip(fused, ids) if u.startswith("bona")]
    spoof = [f for f, u in zip(fused, ids) if u.startswith("spoof")]
    assert table["vote"]["eer"] == pytest.approx(100 * compute_eer(bona, spoof)[0])
    text = (out / "4s" / "models.md").read_text()
    assert "best" in text and "mean ± std" in text and "fusion (vote)" in text
    assert all(f.is_file() and f.parent.parent.parent.parent == out for f in files)
