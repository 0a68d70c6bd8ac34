"""Cached front-end features: the byte format, the feature batch variant, config rules, the rebuilt
waveform model (unit, no Ray), and extract -> train head-only with CSAM -> register (integration)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import yaml

from data_prep import shard
from data_prep.features import ExtractFeatures, finish_folder
from spoofdet.config import ConfigError, load_train_config
from spoofdet.data import features as feature_cache
from spoofdet.data import pipeline as data
from spoofdet.data.corpora import prepare
from spoofdet.models import build_model
from spoofdet.models.frontend import load_frontend, num_frames
from spoofdet.testing.synthetic import write_corpus
from spoofdet.tracking import using_tracking_uri

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "ray_jobs" / "configs" / "demo.yaml"
N = 16000


def test_feature_bytes_round_trip():
    x = np.random.default_rng(0).standard_normal((49, 64)).astype(np.float32)
    blob = feature_cache.encode_feats(x, "float16")
    assert len(blob) == 49 * 64 * 2
    back = feature_cache.decode_feats(blob, 49, 64, "float16")
    assert back.dtype == np.float32 and back.shape == (49, 64)
    assert np.array_equal(back, x.astype(np.float16).astype(np.float32))
    assert np.array_equal(
        feature_cache.decode_feats(feature_cache.encode_feats(x, "float32"), 49, 64, "float32"), x
    )
    with pytest.raises(feature_cache.FeatureError, match="expected frames 48 x dim 64"):
        feature_cache.decode_feats(blob, 48, 64, "float16")
    with pytest.raises(feature_cache.FeatureError, match="dtype"):
        feature_cache.encode_feats(x, "bfloat16")


def shard_folder(root: Path, name: str, seed: int) -> Path:
    corpus = write_corpus(
        "asvspoof2019-la", root / f"corpus-{name}", per_split=8, seed=seed, broken=False
    )
    table = prepare("asvspoof2019-la", corpus["root"], "train", check_audio=False).table
    out = root / "shards" / name
    shard.run(
        table, str(out), corpus="asvspoof2019-la", shard_rows=8, executor="local", progress=False
    )
    return out


def feature_shards_checked(folder: Path) -> list[str]:
    from spoofdet.data.shards import checked_shard_files

    return checked_shard_files(folder)


def write_features_locally(shards: Path, out: Path, layer: int = 2) -> dict:
    """data_prep.features without Ray: the same actor class over each row group."""
    torch.manual_seed(0)
    fe = load_frontend("tiny", layer=layer, freeze="all")
    out.mkdir(parents=True)
    (out / "shards").mkdir()
    torch.save(fe.state_dict(), out / feature_cache.FRONTEND_WEIGHTS)
    extract = ExtractFeatures(
        "tiny", layer, str(out / feature_cache.FRONTEND_WEIGHTS), N, "float16", "cpu"
    )
    for i, f in enumerate(data.shard_files(data.Source(str(shards)))):
        t = pq.read_table(f, columns=data.READ_COLUMNS)
        rows = extract({c: t.column(c).to_numpy(zero_copy_only=False) for c in data.READ_COLUMNS})
        pq.write_table(
            pa.table({k: list(v) if v.dtype == object else v for k, v in rows.items()}),
            out / "shards" / f"part-{i:05d}.parquet",
        )
    info = {
        "frontend": "tiny",
        "layer": layer,
        "dtype": "float16",
        "num_samples": N,
        "dim": fe.out_dim,
        "frames": num_frames(N),
    }
    # as data_prep.features ends: metadata, row count, files.json, then features.json
    return finish_folder(str(shards), str(out), info)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("features")
    wav = shard_folder(root, "train", seed=3)
    write_features_locally(wav, root / "feats" / "train")
    return {"wav": wav, "feats": root / "feats" / "train"}


def test_feature_rows_match_the_front_end_and_collate_to_feats(folders):
    info = feature_cache.read_info(folders["feats"])
    src = data.Source(str(folders["feats"]))
    batches = list(data.iter_eval_part(src, 0, 1, batch_size=4, recipe=data.Recipe(num_samples=N)))
    assert all("wave" not in b for b in batches)
    feats = torch.cat([b["feats"] for b in batches])
    n_rows = pq.read_metadata(folders["feats"] / "metadata.parquet").num_rows
    assert (
        feats.shape == (n_rows, info["frames"], info["dim"]) == (n_rows, 49, 64)
        and feats.dtype == torch.float32
    )
    assert data.model_input(batches[0]) is batches[0]["feats"]
    # the same clip through the recorded front-end, from the waveform shards
    fe = load_frontend("tiny", layer=2, freeze="all")
    fe.load_state_dict(
        torch.load(folders["feats"] / feature_cache.FRONTEND_WEIGHTS, weights_only=True)
    )
    wav = next(
        data.iter_eval_part(
            data.Source(str(folders["wav"])), 0, 1, batch_size=4, recipe=data.Recipe(num_samples=N)
        )
    )
    assert wav["utt_id"] == batches[0]["utt_id"]
    with torch.no_grad():
        ref = fe(wav["wave"])
    assert torch.allclose(batches[0]["feats"], ref, atol=2e-2, rtol=1e-2)  # float16 storage


def test_feature_folders_carry_a_checked_file_list(folders, tmp_path, capsys):
    """A feature folder lists its shards and metadata.parquet (files.json, before features.json);
    readers check it like a shard folder, `prepare --verify` checks every feature row, and a
    damaged one is refused, naming the file (it is extracted again, never repaired)."""
    from spoofdet.cli import main
    from spoofdet.data import shards

    feats = folders["feats"]
    listing = json.loads((feats / shards.FILES_FILE).read_text())
    names = [e["name"] for e in listing["files"]]
    assert names == ["metadata.parquet", "shards/part-00000.parquet"]  # 8 rows, 8 per shard
    assert shards.checked_shard_files(feats) == [str(feats / n) for n in names[1:]]
    assert main(["prepare", "--verify", "--out", str(feats), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] and report["rows"] == pq.read_metadata(feats / "metadata.parquet").num_rows

    copy = tmp_path / "feats"
    shutil.copytree(feats, copy)
    shard_file = copy / "shards" / "part-00000.parquet"
    rows = pq.read_table(shard_file).to_pylist()
    rows[0]["feats"] = rows[0]["feats"][:-2]
    pq.write_table(pa.Table.from_pylist(rows, schema=pq.read_schema(shard_file)), shard_file)
    with pytest.raises(shards.ShardError) as err:
        shards.checked_shard_files(copy)
    assert "shards/part-00000.parquet" in str(err.value)
    assert "spoofdet features --shards SOURCE --out NEW_DIR" in str(err.value)
    assert main(["prepare", "--verify", "--out", str(copy), "--json"]) == 2
    problems = json.loads(capsys.readouterr().out)["problems"]
    assert {"file": "shards/part-00000.parquet", "utt_id": rows[0]["utt_id"]}.items() <= next(
        p for p in problems if p.get("utt_id")
    ).items()
    assert main(["prepare", "--repair", "--out", str(copy), "--executor", "local"]) == 2
    assert "cannot be repaired" in capsys.readouterr().err


def test_features_refuse_a_damaged_source_folder(folders, tmp_path):
    from data_prep import features
    from spoofdet.data import shards

    source = tmp_path / "wav"
    shutil.copytree(folders["wav"], source)
    (source / "shards" / "part-00000.parquet").unlink()
    with pytest.raises(shards.ShardError) as err:
        features.run(str(source), str(tmp_path / "f"), frontend="tiny", layer=2, num_samples=N)
    assert str(err.value).startswith("--shards: ")
    assert "shards/part-00000.parquet: missing" in str(err.value)
    assert not (tmp_path / "f").exists()


def test_feature_recipe_refuses_random_crops_and_rawboost():
    with pytest.raises(data.DataError) as err:
        data.Recipe(num_samples=N, crop="random", rawboost_algo=5, features_dtype="float16")
    assert "data.crop" in str(err.value) and "data.rawboost.algo" in str(err.value)


def test_config_rules_for_cached_features(folders, tmp_path):
    base = [
        f"data.train.0.shards={folders['feats']}",
        f"data.dev.shards={folders['feats']}",
        f"data.num_samples={N}",
    ]
    cfg = load_train_config(
        DEMO, base + ["model.frontend=cached", "data.crop=first", "data.rawboost.algo=0"]
    )
    assert cfg.model.frontend == "cached"
    with pytest.raises(ConfigError) as err:
        load_train_config(
            DEMO,
            base + ["model.frontend=cached", "model.frontend_layer=5", "data.dev_rawboost=true"],
        )
    text = str(err.value)
    for field in (
        "data.crop: random crops are invalid",
        "data.rawboost.algo: RawBoost is invalid",
        "model.frontend_layer:",
        "data.dev_rawboost:",
    ):
        assert field in text, text
    with pytest.raises(
        ConfigError
    ) as err:  # a feature folder with a waveform front-end; a crop mismatch
        load_train_config(
            DEMO, base[:2] + ["data.num_samples=32000", "data.crop=first", "data.rawboost.algo=0"]
        )
    assert "data.train[0].shards" in str(err.value) and "model.frontend=cached" in str(err.value)
    with pytest.raises(ConfigError) as err:
        load_train_config(
            DEMO,
            base[:2]
            + [
                "data.num_samples=32000",
                "model.frontend=cached",
                "data.crop=first",
                "data.rawboost.algo=0",
            ],
        )
    assert "data.num_samples: 32000, but the features" in str(err.value)
    with pytest.raises(ConfigError) as err:  # cached front-end on audio shards
        load_train_config(
            DEMO,
            [
                f"data.train.0.shards={folders['wav']}",
                f"data.dev.shards={folders['wav']}",
                "model.frontend=cached",
                "data.crop=first",
                "data.rawboost.algo=0",
            ],
        )
    assert "data.train[0].shards: model.frontend=cached needs feature folders" in str(err.value)


def test_cached_head_rebuilds_into_a_waveform_detector(folders):
    from spoofdet.models.cached import waveform_detector

    torch.manual_seed(1)
    head_only = build_model("cached", "nes2net_x", frontend_kwargs={"out_dim": 64}).eval()
    assert sum(p.numel() for p in head_only.frontend.parameters()) == 0
    with pytest.raises(ValueError, match="out_dim"):
        build_model("cached", "nes2net_x")
    batch = next(
        data.iter_eval_part(
            data.Source(str(folders["feats"])),
            0,
            1,
            batch_size=4,
            recipe=data.Recipe(num_samples=N),
        )
    )
    wav = next(
        data.iter_eval_part(
            data.Source(str(folders["wav"])), 0, 1, batch_size=4, recipe=data.Recipe(num_samples=N)
        )
    )
    full, kwargs, state = waveform_detector(
        str(folders["feats"]), head_only.state_dict(), head="nes2net_x"
    )
    assert (
        kwargs["frontend"] == "tiny" and kwargs["frontend_layer"] == 2 and kwargs["freeze"] == "all"
    )
    rebuilt = build_model(**kwargs).eval()
    rebuilt.load_state_dict(state)
    with torch.no_grad():
        from_feats = head_only.score(batch["feats"])
        from_wave = full.score(wav["wave"])
        assert torch.allclose(rebuilt.score(wav["wave"]), from_wave)
    assert torch.allclose(
        from_feats, from_wave, atol=5e-2
    )  # equal up to the float16 feature storage
    with pytest.raises(ValueError, match="waveform batch"):
        head_only(wav["wave"])


# ----------------------------------------------------------------------------- end to end with Ray


@pytest.mark.integration
def test_extract_features_then_train_the_head_with_csam_and_register(tmp_path, monkeypatch):
    ray = pytest.importorskip("ray")
    mlflow = pytest.importorskip("mlflow")
    from data_prep import features
    from ray_jobs import train

    monkeypatch.setenv("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")
    a, b = shard_folder(tmp_path, "a", seed=3), shard_folder(tmp_path, "b", seed=4)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        info = {}
        for name, src in (("a", a), ("b", b)):
            info[name] = features.run(
                str(src),
                str(tmp_path / "feats" / name),
                frontend="tiny",
                layer=2,
                num_samples=N,
                batch_size=4,
                concurrency=1,
            )
        assert info["a"]["dim"] == 64 and info["a"]["frames"] == 49
        assert info["a"]["rows"] == pq.read_metadata(a / "metadata.parquet").num_rows
        # the real job lists its files too: readers accept the folder
        listed = data.shard_files(data.Source(str(tmp_path / "feats" / "a")))
        assert feature_shards_checked(tmp_path / "feats" / "a") == sorted(listed)
        with pytest.raises(ValueError, match="already holds features"):
            features.run(
                str(a), str(tmp_path / "feats" / "a"), frontend="tiny", layer=2, num_samples=N
            )

        recipe = yaml.safe_load(DEMO.read_text())
        recipe["data"].update(
            {
                "train": [
                    {"shards": str(tmp_path / "feats" / "a"), "name": "a"},
                    {"shards": str(tmp_path / "feats" / "b"), "name": "b"},
                ],
                "dev": {"shards": str(tmp_path / "feats" / "a"), "name": "a-dev"},
                "num_samples": N,
                "crop": "first",
                "rawboost": {"algo": 0},
                "shuffle_buffer": 8,
                "proportional_batches": True,
            }
        )
        recipe["model"]["frontend"] = "cached"
        recipe["optim"]["sam_rho"] = 0.05
        recipe["deepspeed"]["enabled"] = False
        recipe["scaling"]["num_workers"] = 1
        recipe["train"].update(
            {"epochs": 2, "average_best": 2, "batch_size": 4, "dev_batch_size": 8, "log_every": 1}
        )
        # plumbing, not quality: 2 epochs on 8 dev clips may well end at chance
        recipe["train"]["max_final_dev_eer"] = None
        recipe["mlflow"]["register_as"] = "cached-head"
        cfg_path = tmp_path / "cached.yaml"
        cfg_path.write_text(yaml.safe_dump(recipe))
        storage = tmp_path / "runs"
        assert train.main(["--config", str(cfg_path), "--storage", str(storage), "--json"]) == 0
    finally:
        ray.shutdown()
    summary = json.loads((storage / "demo" / "final" / "summary.json").read_text())
    assert (
        sorted(summary["averaged_epochs"]) == [0, 1]
        and summary["registered"]["name"] == "cached-head"
    )
    assert "final_dev_eer" in summary and summary["final_dev_n"] == info["a"]["rows"]
    assert Path(summary["waveform_model"]).is_file()
    with using_tracking_uri(f"sqlite:///{storage / 'mlflow.db'}"):  # nothing leaks into later tests
        client = mlflow.tracking.MlflowClient()
        steps = client.get_metric_history(summary["mlflow_run_id"], "steps")
        rows = info["a"]["rows"] + info["b"]["rows"]
        assert [int(m.value) for m in steps] == [
            rows // 4,
            2 * (rows // 4),
        ]  # every proportional batch filled
        uri = f"models:/cached-head/{summary['registered']['version']}"
        meta = mlflow.models.get_model_info(uri).metadata
        assert meta["trained_on"] == "cached features" and meta["features"]["layer"] == 2
        scores = mlflow.pyfunc.load_model(uri).predict(np.zeros((2, N), dtype=np.float32))
        assert scores.shape == (2,) and np.isfinite(scores).all()
