"""``spoofdet calibrate`` on a local Ray and a SQLite MLflow store: a registered, uncalibrated tiny
detector is calibrated on a labelled dev shard folder and registered as a new version that
``spoofdet predict`` gives LLRs and decisions for; an inverted one is refused.

The dev set is a tone/noise corpus (spoofdet.testing) that random-init tiny detectors separate;
which class a seed scores higher is measured (:func:`spoofdet.testing.orientation`), so one seed
that ranks bona fide higher and one that ranks it lower are picked, deterministically.
"""

import json
from pathlib import Path

import pytest

from data_prep import shard
from spoofdet.data.corpora import prepare
from spoofdet.testing import (
    orientation,
    register_detector,
    write_detector_dir,
    write_tone_noise_corpus,
)

pytestmark = pytest.mark.integration
ray = pytest.importorskip("ray")
mlflow = pytest.importorskip("mlflow")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("calibrate")
    corpus = write_tone_noise_corpus(root / "corpus", per_class=12, long_every=0)
    table = prepare("csv", corpus["manifest"], check_audio=False).table
    shards = root / "shards" / "dev"
    shard.run(table, str(shards), corpus="csv", shard_rows=8, executor="local", progress=False)
    picked = {}
    for seed in range(1, 12):
        folder = write_detector_dir(root / "models" / str(seed), seed=seed)
        picked.setdefault("good" if orientation(folder, corpus) > 0 else "inverted", folder)
        if len(picked) == 2:
            break
    assert len(picked) == 2, f"precondition: no seed of each orientation among 1..11: {picked}"
    uri = f"sqlite:///{root / 'mlflow.db'}"
    register_detector(picked["good"], tracking_uri=uri, name="tones-cal")
    register_detector(picked["inverted"], tracking_uri=uri, name="tones-inverted")
    return {"root": root, "corpus": corpus, "shards": shards, "uri": uri}


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def _cli(capsys, *argv):
    from spoofdet.cli import main

    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def _predictions(capsys, world, model):
    code, out, err = _cli(
        capsys,
        "predict",
        str(Path(world["corpus"]["root"]) / "audio"),
        "--model",
        model,
        "--tracking-uri",
        world["uri"],
        "--length",
        "4s",
        "--json",
    )
    assert code == 0, err
    return json.loads(out)["predictions"]


def test_calibrate_registers_a_new_version_that_predict_decides_with(world, local_ray, capsys):
    from mlflow.tracking import MlflowClient

    from spoofdet.evaluation.sets import fingerprint, parse_eval_set, read_metadata
    from spoofdet.serve.registry import read_calibration, resolve_model

    code, out, err = _cli(
        capsys,
        "calibrate",
        "--model",
        "models:/tones-cal/1",
        "--dev",
        str(world["shards"]),
        "--tracking-uri",
        world["uri"],
        "--register",
        "--json",
    )
    assert code == 0, err
    summary = json.loads(out)
    assert summary["registered"]["name"] == "tones-cal" and summary["registered"]["version"] == "2"
    assert summary["recalibrated"] is False and summary["before"]["score_type"] == "raw"
    assert (summary["dev"]["n_used"], summary["dev"]["n_failed"]) == (24, 0)
    cal = summary["calibration"]
    assert cal["slope"] > 0 and (cal["n_bonafide"], cal["n_spoof"]) == (12, 12)
    # calibration keeps the order of the scores: EER and minDCF unchanged
    assert summary["after"]["eer"] == summary["before"]["eer"] < 40
    assert summary["after"]["min_dcf"] == summary["before"]["min_dcf"]

    new = resolve_model("models:/tones-cal/2", world["uri"])
    assert read_calibration(new).to_dict() == cal
    assert read_calibration(resolve_model("models:/tones-cal/1", world["uri"])) is None
    mv = MlflowClient(tracking_uri=world["uri"]).get_model_version("tones-cal", "2")
    meta = read_metadata(parse_eval_set(str(world["shards"])))
    assert mv.tags["spoofdet.calibrated_from"] == "tones-cal/1"
    assert mv.tags["spoofdet.calibration_dev"] == str(world["shards"])
    assert mv.tags["spoofdet.calibration_dev_fingerprint"] == fingerprint(meta)
    assert json.loads(mv.tags["spoofdet.calibration"]) == cal
    source = resolve_model("models:/tones-cal/1", world["uri"])
    assert mv.tags["spoofdet.source_run_id"] == source.run_id != new.run_id
    assert mv.description.startswith("Calibrated copy of tones-cal v1 (spoofdet calibrate)")

    old = _predictions(capsys, world, "models:/tones-cal/1")
    fresh = _predictions(capsys, world, "models:/tones-cal/2")
    assert old and all(p["llr"] is None and p["decision"] is None for p in old)
    assert len(fresh) == 24 and all(p["llr"] is not None and p["decision"] for p in fresh)
    raw = {p["path"]: p["score"] for p in old}
    for p in fresh:  # the same weights: the same raw score, mapped by the calibration
        assert p["score"] == pytest.approx(raw[p["path"]], rel=1e-5, abs=1e-6)
        assert p["llr"] == pytest.approx(cal["slope"] * p["score"] + cal["offset"], abs=1e-4)


def test_recalibrating_fits_the_raw_scores_and_says_so(world, local_ray, capsys, tmp_path):
    """Version 2 already holds a calibration: the new fit is on the raw scores (so it equals the
    fit of version 1's raw scores), not on the old LLRs; written to --out, nothing registered."""
    code, out, err = _cli(
        capsys,
        "calibrate",
        "--model",
        "models:/tones-cal/2",
        "--dev",
        str(world["shards"]),
        "--tracking-uri",
        world["uri"],
        "--out",
        str(tmp_path),
    )
    assert code == 0, err
    assert "the model already had a calibration" in out and "refitted on the raw scores" in out
    summary = json.loads((tmp_path / "summary.json").read_text())
    written = json.loads((tmp_path / "calibration.json").read_text())
    assert summary["recalibrated"] is True and summary["before"]["score_type"] == "llr"
    assert written == summary["calibration"]
    # a fit on the old LLRs would give slope ~1 and offset ~0; on the raw scores it repeats the
    # first fit (up to float32 scoring noise between two Ray runs)
    assert written["slope"] == pytest.approx(summary["previous_calibration"]["slope"], rel=1e-4)
    assert written["offset"] == pytest.approx(summary["previous_calibration"]["offset"], rel=1e-4)
    assert abs(written["slope"] - 1) > 0.5
    assert "registered" not in summary


def test_an_inverted_model_is_refused_saying_what_was_measured(world, local_ray, capsys):
    from mlflow.tracking import MlflowClient

    code, _, err = _cli(
        capsys,
        "calibrate",
        "--model",
        "models:/tones-inverted/1",
        "--dev",
        str(world["shards"]),
        "--tracking-uri",
        world["uri"],
        "--register",
    )
    assert code == 2
    last = err.strip().splitlines()[-1]  # Ray Data's progress lines come first
    assert last.startswith("spoofdet calibrate: error: refusing to calibrate: Measured: dev EER ")
    assert "over 12 bona fide and 12 spoof dev trials: scores are inverted" in last
    versions = MlflowClient(tracking_uri=world["uri"]).search_model_versions(
        "name = 'tones-inverted'"
    )
    assert [str(v.version) for v in versions] == ["1"]


def test_arguments_are_checked_before_ray(world, capsys):
    code, _, err = _cli(
        capsys, "calibrate", "--model", "models:/tones-cal/1", "--dev", str(world["shards"])
    )
    assert code == 2 and "give --out DIR" in err and "or --register" in err
    code, _, err = _cli(
        capsys,
        "calibrate",
        "--model",
        str(world["root"] / "models" / "1"),
        "--dev",
        str(world["shards"]),
        "--register",
    )
    assert code == 2 and "--register makes a new version of a registered model" in err
    code, _, err = _cli(
        capsys,
        "calibrate",
        "--model",
        "models:/tones-cal/1",
        "--dev",
        str(world["corpus"]["root"]),
        "--out",
        "x",
        "--tracking-uri",
        world["uri"],
    )
    assert code == 2 and "a folder of audio has no labels" in err
