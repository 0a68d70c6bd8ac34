"""`spoofdet import` and `model.init_from`: a seed checkpoint becomes a model folder every consumer
loads (score, predict, pyfunc), refusals name both key lists, recipes start from seed files.

The checkpoints are random tensors in the exact layout of the seed's file (read off the seed's
model code into tests/assets/seed_layouts/), so these tests need no download and no ../shared.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from spoofdet.cli import main as cli_main
from spoofdet.models import build_model
from spoofdet.models.checkpoints import SEEDS, load_state_dict_strict
from spoofdet.serve.importer import SeedImportError, import_checkpoint, seed_detector
from spoofdet.serve.init_from import init_state_dict
from spoofdet.testing import random_state_dict, random_waves, read_layout

LAYOUTS = Path(__file__).resolve().parents[1] / "assets" / "seed_layouts"


def _seed_file(tmp_path: Path, layout: str, *, seed: int = 0, prefix: str = "") -> Path:
    sd = random_state_dict(read_layout(LAYOUTS / f"{layout}.tsv"), seed=seed)
    path = tmp_path / f"{layout}-{seed}.pth"
    torch.save({prefix + k: v for k, v in sd.items()}, path)
    return path


def test_import_writes_a_final_folder_that_rebuilds_exactly(tmp_path, capsys):
    ckpt = _seed_file(tmp_path, "aasist")
    out = tmp_path / "model"
    assert (
        cli_main(["import", "aasist", "--checkpoint", str(ckpt), "--out", str(out), "--json"]) == 0
    )
    summary = json.loads(capsys.readouterr().out)
    assert summary["parameters"] == 297_866 and summary["n_logits"] == 2
    assert summary["rebuild_max_abs_diff"] <= 1e-6
    assert {p.name for p in out.iterdir()} == {"model.pt", "model_config.json", "import.json"}
    prov = json.loads((out / "import.json").read_text())
    assert (
        prov["seed"] == "aasist" and prov["source_file"] == ckpt.name and len(prov["sha256"]) == 64
    )
    assert prov["published"] == dict(SEEDS["aasist"].published) and "bona fide" in prov["score"]

    # the folder is what a train run's final/ is: rebuilt from model_config.json, loaded strictly
    from spoofdet.serve.registry import load_detector

    det = load_detector(str(out))
    direct, _, _ = seed_detector("aasist", torch.load(ckpt, weights_only=True))
    wave = random_waves(2, 16_000, seed=3)  # raw AASIST takes any length; 4 s cost ~5 s of CPU each
    with torch.no_grad():
        torch.testing.assert_close(det.model(wave), direct(wave), rtol=0, atol=0)
        # the seed's score: the bona fide logit, index 1 (clovaai writes batch_out[:, 1])
        torch.testing.assert_close(det.model.score(wave), direct(wave)[:, 1])


def test_import_refuses_a_file_of_another_layout_listing_both(tmp_path, capsys):
    sd = random_state_dict(read_layout(LAYOUTS / "aasist.tsv"))
    sd["stray.weight"] = torch.zeros(3)
    sd.pop(next(iter(sd)))
    bad = tmp_path / "bad.pth"
    torch.save(sd, bad)
    assert (
        cli_main(["import", "aasist", "--checkpoint", str(bad), "--out", str(tmp_path / "o")]) == 2
    )
    err = capsys.readouterr().err
    assert "map to nothing" in err and "stray.weight" in err and "lacks" in err
    assert not (tmp_path / "o" / "model.pt").exists()


def test_import_errors_say_what_to_pass(tmp_path, capsys):
    ckpt = _seed_file(tmp_path, "aasist")
    assert (
        cli_main(
            [
                "import",
                "aasist",
                "--checkpoint",
                str(ckpt),
                "--frontend",
                "tiny",
                "--out",
                str(tmp_path / "o"),
            ]
        )
        == 2
    )
    assert "leave out --frontend" in capsys.readouterr().err
    assert cli_main(["import", "aasist", "--checkpoint", str(tmp_path / "missing.pth")]) == 2
    assert "no such file" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        cli_main(["import", "no_such_seed", "--checkpoint", str(ckpt)])
    assert exc.value.code == 2 and "xlsr_mamba" in capsys.readouterr().err
    with pytest.raises(SeedImportError, match="--frontend xlsr_300m"):
        seed_detector(
            "codecfake_w2v2_aasist", {}
        )  # a head-only file needs the pre-trained front-end


def test_import_help_lists_every_seed(capsys):
    with pytest.raises(SystemExit):
        cli_main(["import", "--help"])
    text = capsys.readouterr().out
    for name in SEEDS:
        assert name in text
    # python -m spoofdet.serve.importer is the same command
    from spoofdet.serve.importer import main

    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0 and capsys.readouterr().out == text


def test_import_usage_errors_name_the_command(capsys):
    with pytest.raises(SystemExit) as exc:
        cli_main(["import", "aasist", "--checkpoint", "x.pth", "--no-such-option"])
    err = capsys.readouterr().err
    assert exc.value.code == 2
    assert "spoofdet import: error: unrecognized arguments: --no-such-option" in err


def test_a_file_with_code_is_never_run(tmp_path, capsys):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            import os

            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pth"
    torch.save({"w": torch.zeros(1), "x": Payload()}, path)
    assert (
        cli_main(["import", "aasist", "--checkpoint", str(path), "--out", str(tmp_path / "o")]) == 2
    )
    assert "system" in capsys.readouterr().err and not marker.exists()


# ---- model.init_from ------------------------------------------------------------------------


def test_init_from_converts_a_seed_checkpoint_into_the_recipe_model(tmp_path):
    ckpt = _seed_file(tmp_path, "aasist", prefix="module.")  # a DataParallel-saved copy
    model = build_model("waveform", "aasist_raw")
    state = init_state_dict(str(ckpt), model, head="aasist_raw")
    load_state_dict_strict(model, state)
    direct, _, _ = seed_detector("aasist", torch.load(ckpt, weights_only=True))
    wave = random_waves(1, 16_000)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(wave), direct(wave), rtol=0, atol=0)
    # AASIST-L has the same keys but other shapes: named explicitly it is refused with the reason
    with pytest.raises(SeedImportError, match="does not match the AASIST-L"):
        init_state_dict(str(ckpt), model, head="aasist_raw", seed="aasist_l")


def test_init_from_takes_spoofdet_models_too(tmp_path):
    ckpt = _seed_file(tmp_path, "aasist")
    folder = tmp_path / "imported"
    import_checkpoint("aasist", ckpt, out=folder)
    model = build_model("waveform", "aasist_raw")
    from_folder = init_state_dict(str(folder), model, head="aasist_raw")
    torch.save(from_folder, tmp_path / "plain.pt")
    from_file = init_state_dict(str(tmp_path / "plain.pt"), model, head="aasist_raw")
    assert all(torch.equal(from_folder[k], from_file[k]) for k in from_folder)
    with pytest.raises(SeedImportError, match="tried"):
        init_state_dict(str(ckpt), build_model("tiny", "aasist"), head="aasist")
    from spoofdet.serve import importer  # the old home, for this release only (ray_jobs/train.py)

    assert importer.init_state_dict is init_state_dict


def test_recipe_validates_init_from(tmp_path):
    from spoofdet.config import ConfigError, load_train_config

    recipe = Path(__file__).resolve().parents[2] / "ray_jobs" / "configs" / "aasist_19la.yaml"
    cfg = load_train_config(
        recipe,
        [f"model.init_from={tmp_path / 'x.pth'}", "model.init_seed=aasist"],
        check_paths=False,
    )
    assert cfg.model.init_seed == "aasist"
    with pytest.raises(ConfigError) as exc:
        load_train_config(
            recipe,
            [f"model.init_from={tmp_path / 'missing.pth'}", "model.init_seed=xlsr_mamba"],
            check_paths=True,
        )
    text = str(exc.value)
    assert "model.init_from" in text and "does not exist" in text
    assert "model.init_seed" in text and "set model.head=xlsr_mamba" in text


# ---- import -> register -> score / predict / pyfunc -------------------------------------------


@pytest.mark.integration
def test_imported_model_is_registered_scored_predicted_and_served(tmp_path, capsys):
    ray = pytest.importorskip("ray")
    mlflow = pytest.importorskip("mlflow")
    from data_prep import shard
    from spoofdet.data.corpora import prepare
    from spoofdet.testing import write_tone_noise_corpus

    corpus = write_tone_noise_corpus(tmp_path / "corpus", per_class=4, long_every=0)
    shards = tmp_path / "shards"
    shard.run(
        prepare("csv", corpus["manifest"], check_audio=False).table,
        str(shards),
        corpus="csv",
        shard_rows=4,
        executor="local",
        progress=False,
    )
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    ckpt = _seed_file(tmp_path, "aasist")
    folder = tmp_path / "imported"
    assert (
        cli_main(
            [
                "import",
                "aasist",
                "--checkpoint",
                str(ckpt),
                "--out",
                str(folder),
                "--register-as",
                "aasist-published",
                "--tracking-uri",
                uri,
                "--json",
            ]
        )
        == 0
    )
    summary = json.loads(capsys.readouterr().out)
    assert summary["registered"] == {"name": "aasist-published", "version": "1"}
    client = mlflow.tracking.MlflowClient(tracking_uri=uri)
    mv = client.get_model_version("aasist-published", "1")
    assert mv.tags["seed"] == "aasist" and mv.tags["source_file"] == ckpt.name
    assert mv.tags["source_sha256"] == summary["sha256"] and "0.83" in mv.tags["published"]
    assert client.get_run(summary["mlflow_run_id"]).info.status == "FINISHED"

    # in-process reference: the imported detector on the first 64,600 samples of each clip
    from spoofdet.data.audio import load_16k
    from spoofdet.evaluation.protocols import clip_windows, score_waves
    from spoofdet.serve.registry import load_detector

    det = load_detector(str(folder))
    audio = sorted(Path(corpus["root"], "audio").glob("*.wav"))
    expected = {
        p.stem: float(score_waves(det.model, clip_windows(load_16k(str(p))[0], "4s")).mean())
        for p in audio
    }

    # spoofdet score on shards, through the registry
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        assert (
            cli_main(
                [
                    "score",
                    "--model",
                    "models:/aasist-published/1",
                    "--eval-set",
                    f"tones={shards}",
                    "--tracking-uri",
                    uri,
                    "--out",
                    str(tmp_path / "eval"),
                    "--json",
                ]
            )
            == 0
        )
    finally:
        ray.shutdown()
    tones = json.loads(capsys.readouterr().out)["sets"][0]
    scored = dict(line.split() for line in Path(tones["scores"]).read_text().splitlines())
    assert {k: float(v) for k, v in scored.items()} == pytest.approx(
        expected, rel=1e-4, abs=1e-5
    )  # other batching
    assert tones["score_type"] == "raw"

    # spoofdet predict on files with the folder itself
    out_csv = tmp_path / "pred.csv"
    assert (
        cli_main(
            [
                "predict",
                str(Path(corpus["root"], "audio")),
                "--model",
                str(folder),
                "--length",
                "4s",
                "--out",
                str(out_csv),
            ]
        )
        == 0
    )
    rows = out_csv.read_text().splitlines()
    header = rows[0].split(",")
    got = {
        Path(r.split(",")[header.index("path")]).stem: float(r.split(",")[header.index("score")])
        for r in rows[1:]
    }
    assert got == pytest.approx(expected, rel=1e-4, abs=1e-5)

    # the pyfunc (what `mlflow models serve` runs) gives the same scores
    from spoofdet.tracking import using_tracking_uri

    with using_tracking_uri(uri):
        pyfunc = mlflow.pyfunc.load_model("models:/aasist-published/1")
    waves = np.stack([clip_windows(load_16k(str(p))[0], "4s")[0] for p in audio[:2]])
    served = pyfunc.predict(waves.astype(np.float32))
    assert np.allclose(served, [expected[p.stem] for p in audio[:2]], rtol=1e-5, atol=1e-5)
    meta = pyfunc.metadata.metadata
    assert meta["imported"]["seed"] == "aasist" and meta["calibrated"] is False


# ---- SSL seeds: the fine-tuned front-end in the file, or a pre-trained one ---------------------


def _xlsr_like(layers: int):
    """A random pre-LN wav2vec 2.0 with XLS-R's width (1024, what the heads read) but 2 heads, a
    small FFN and conv stack: the seeds' front-end layout at a size a test can afford."""
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    from spoofdet.models.frontend import CONV_KERNEL, CONV_STRIDE

    torch.manual_seed(0)
    config = Wav2Vec2Config(
        hidden_size=1024,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=64,
        conv_dim=(32,) * 7,
        conv_kernel=CONV_KERNEL,
        conv_stride=CONV_STRIDE,
        conv_bias=True,
        feat_extract_norm="layer",
        do_stable_layer_norm=True,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=16,
        mask_time_prob=0.05,
    )
    return Wav2Vec2Model(config).eval()


def test_fine_tuned_front_end_of_a_seed_file_is_imported_not_replaced(tmp_path):
    from conftest import SHARED

    from spoofdet.models.checkpoints import to_fairseq_wav2vec2

    layout_file = SHARED / "reference" / "seed-checkpoints" / "aasist.tsv"
    if not layout_file.is_file():
        pytest.skip(f"{layout_file} not found (the seed layouts live in the project's ../shared)")
    arch = tmp_path / "arch"
    _xlsr_like(2).save_pretrained(arch)  # the architecture only: its weights are overwritten
    fine_tuned = _xlsr_like(2)
    with torch.no_grad():
        for p in fine_tuned.parameters():
            p.add_(0.01)  # "fine-tuned": other weights than those saved in arch/
    head = random_state_dict(read_layout(layout_file))  # the DF layout: saved from DataParallel
    assert all(k.startswith("module.") for k in head)
    seed_file = {
        f"module.ssl_model.model.{k}": v
        for k, v in to_fairseq_wav2vec2(fine_tuned.state_dict()).items()
    }
    ckpt = tmp_path / "best_SSL_model_DF.pth"
    torch.save({**seed_file, **head}, ckpt)

    summary = import_checkpoint("ssl_aasist", ckpt, out=tmp_path / "model", frontend=arch)
    assert summary["rebuild_max_abs_diff"] <= 1e-6
    config = json.loads((tmp_path / "model" / "model_config.json").read_text())
    assert config["frontend"]["hidden_size"] == 1024 and config["score"] == "bonafide_logit"
    from spoofdet.serve.registry import load_detector

    det = load_detector(str(tmp_path / "model")).model
    wave = random_waves(1, 16_000)
    with (
        torch.no_grad()
    ):  # the front-end is the file's fine-tuned one, features after the final norm
        torch.testing.assert_close(
            det.frontend(wave), fine_tuned(wave).last_hidden_state, rtol=1e-5, atol=1e-5
        )


def test_head_only_seed_runs_on_the_given_pretrained_front_end_at_layer_5(tmp_path):
    pretrained = tmp_path / "xlsr"
    model = _xlsr_like(6)
    model.save_pretrained(pretrained)
    ckpt = _seed_file(tmp_path, "codecfake_w2v2_aasist")
    detector, config, notes = seed_detector(
        "codecfake_w2v2_aasist", torch.load(ckpt, weights_only=True), frontend=pretrained
    )
    assert config["frontend_layer"] == 5 and config["frontend_kwargs"] == {"normalize": True}
    assert (
        notes["frontend_source"] == str(pretrained)
        and len(detector.frontend.model.encoder.layers) == 5
    )
    wave = random_waves(1, 16_000)
    with (
        torch.no_grad()
    ):  # Codecfake: zero-mean unit-variance clip, hidden_states[5] of the pre-trained model
        norm = (wave - wave.mean()) / torch.sqrt(wave.var(unbiased=False) + 1e-7)
        expected = model(norm, output_hidden_states=True).hidden_states[5]
        torch.testing.assert_close(detector.frontend(wave), expected, rtol=1e-5, atol=1e-5)
    rebuilt = build_model(**config)
    load_state_dict_strict(rebuilt, detector.state_dict())  # model_config.json rebuilds it exactly


def test_predict_scores_on_the_seeds_window(tmp_path, capsys):
    """XLSR-Mamba / Fake-Mamba were trained and evaluated on 66,800 samples: --window gives that."""
    import soundfile as sf

    from spoofdet.evaluation.protocols import clip_windows, score_waves
    from spoofdet.serve.registry import load_detector

    folder = tmp_path / "model"
    import_checkpoint("aasist_l", _seed_file(tmp_path, "aasist_l"), out=folder)
    wave = random_waves(1, 80_000, seed=2)[0].numpy()
    sf.write(tmp_path / "clip.wav", wave, 16_000, subtype="FLOAT")
    out = tmp_path / "pred.csv"
    args = ["predict", str(tmp_path / "clip.wav"), "--model", str(folder), "--length", "4s"]
    assert cli_main([*args, "--window", "66800", "--out", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["protocol"]["window"] == 66_800
    det = load_detector(str(folder))
    expected = float(score_waves(det.model, clip_windows(wave, "4s", window=66_800))[0])
    row = out.read_text().splitlines()[1].split(",")
    assert float(row[1]) == pytest.approx(expected, rel=1e-5)
    assert cli_main([*args, "--window", "100"]) == 2
    assert "--window must be at least 400" in capsys.readouterr().err


def test_safetensors_files_import_like_pth(tmp_path):
    """XLSR-Mamba's Hugging Face uploads are model.safetensors: read as tensors, no pickle."""
    from safetensors.torch import save_file

    from spoofdet.models.checkpoints import SeedCheckpointError, read_seed_checkpoint

    sd = random_state_dict(read_layout(LAYOUTS / "aasist.tsv"))
    save_file(dict(sd), tmp_path / "model.safetensors")
    read = read_seed_checkpoint(tmp_path / "model.safetensors")
    assert set(read) == set(sd) and all(torch.equal(read[k], sd[k]) for k in sd)  # (keys sorted)
    (tmp_path / "broken.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(SeedCheckpointError, match="not a readable safetensors"):
        read_seed_checkpoint(tmp_path / "broken.safetensors")


# ---- AMSDF: fine-tuned XLS-R under text_view_extract.model.*, fake logit at index 1 -----------

#: The seed's own logits (index 0 real, 1 fake) for random_state_dict(amsdf.tsv, seed=0) on
#: random_feats(2, 201, 1024, seed=0) and random_waves(2, 64_600, seed=0): see
#: tests/models/test_amsdf.py, where they are pinned with the way they were computed.
AMSDF_SEED_LOGITS = [
    [-0.033664293587207794, -2.847891330718994],
    [-0.013690359890460968, -2.6993584632873535],
]


def test_amsdf_import_scores_as_the_seed(tmp_path):
    from spoofdet.models import score_from_logits
    from spoofdet.models.checkpoints import to_fairseq_wav2vec2
    from spoofdet.serve.registry import load_detector
    from spoofdet.testing import random_feats

    arch = tmp_path / "arch"
    _xlsr_like(1).save_pretrained(arch)  # the architecture only: its weights are overwritten
    fine_tuned = _xlsr_like(1)
    with torch.no_grad():
        for p in fine_tuned.parameters():
            p.add_(0.01)
    seed_file = {
        f"text_view_extract.model.{k}": v
        for k, v in to_fairseq_wav2vec2(fine_tuned.state_dict()).items()
    }
    seed_file.update(random_state_dict(read_layout(LAYOUTS / "amsdf.tsv"), seed=0))
    ckpt = tmp_path / "M1.pth"
    torch.save(seed_file, ckpt)

    summary = import_checkpoint("amsdf", ckpt, out=tmp_path / "model", frontend=arch)
    assert summary["rebuild_max_abs_diff"] <= 1e-6 and "negated" in summary["score"]
    config = json.loads((tmp_path / "model" / "model_config.json").read_text())
    assert config["head"] == "amsdf" and config["score"] == "neg_spoof_logit"
    assert config["head_kwargs"] == {"freeze_emotion": False}
    prov = json.loads((tmp_path / "model" / "import.json").read_text())
    assert "0 = real, 1 = fake" in prov["seed_convention"]

    det = load_detector(str(tmp_path / "model")).model
    feats, wave = random_feats(2, 201, 1024, seed=0), random_waves(2, 64_600, seed=0)
    seed_logits = torch.tensor(AMSDF_SEED_LOGITS)
    with torch.no_grad():
        # the head computes the seed's logits, rows swapped: spoofdet's index 1 is bona fide
        torch.testing.assert_close(det.head(feats, wave), seed_logits.flip(1), rtol=1e-5, atol=1e-5)
        # the score is the seed's score (its fake logit) negated: higher = more bona fide
        logits = det.head(feats, wave)
        torch.testing.assert_close(
            score_from_logits(logits, det.score_rule), -seed_logits[:, 1], rtol=1e-5, atol=1e-5
        )
        # end to end the front-end is the file's fine-tuned XLS-R, run once, feeding the text view
        ssl = fine_tuned(wave).last_hidden_state
        torch.testing.assert_close(det.frontend(wave), ssl, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(
            det.score(wave), -det.head(ssl, wave)[:, 0], rtol=1e-5, atol=1e-5
        )
