"""`train --validate` refuses, before Ray starts, every recipe number that is not finite or out of
range, registry names MLflow would refuse, and a pretrained front-end this machine does not have:
exit 2, each problem naming its field, all listed at once."""

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from spoofdet.config import ConfigError, load_train_config
from spoofdet.data.shards import resolve_out, write_file_list

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "ray_jobs" / "configs" / "demo.yaml"
HUB_ID = "facebook/wav2vec2-xls-r-300m"


@pytest.fixture
def shards(tmp_path):
    """Two folders that pass the 'finished shard job' check (a metadata.parquet and its file list each)."""
    out = {}
    for split in ("train", "dev"):
        folder = tmp_path / "shards" / split
        folder.mkdir(parents=True)
        pq.write_table(pa.table({"utt_id": pa.array([], pa.string())}), folder / "metadata.parquet")
        write_file_list(*resolve_out(str(folder)), ["metadata.parquet"])
        out[split] = folder
    return out


@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    """An empty Hugging Face cache of this test (huggingface_hub reads the constant per call)."""
    from huggingface_hub import constants

    cache = tmp_path / "hf"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return cache


def validate(shards, *overrides, capsys):
    """``ray_jobs.train.main([... --validate])`` on the demo recipe: (exit code, stderr)."""
    from ray_jobs import train

    argv = [
        "--config",
        str(DEMO),
        "--validate",
        f"data.train.0.shards={shards['train']}",
        f"data.dev.shards={shards['dev']}",
        *overrides,
    ]
    code = train.main(argv)
    return code, capsys.readouterr().err


def test_the_demo_recipe_validates(shards, capsys):
    assert validate(shards, capsys=capsys) == (0, "")


def test_every_bad_number_is_refused_naming_its_field(shards, capsys):
    code, err = validate(
        shards,
        "optim.lr=nan",
        "optim.weight_decay=.inf",
        "optim.class_weights=[.nan, 0.9]",
        "optim.betas=[0.9, -.inf]",
        "optim.grad_clip=-1",
        "optim.sam_rho=inf",
        "data.train.0.weight=nan",
        "data.max_bad_rows=1.5",
        "data.rawboost.params={snr_min: .nan}",
        "train.max_nonfinite_share=-0.1",
        "train.max_final_dev_eer=0",
        "scaling.gpus_per_worker=-1",
        "scaling.cpus_per_worker=.nan",
        "model.frontend_layer=-2",
        "seed=-5",
        capsys=capsys,
    )
    assert code == 2
    problems = [line[4:] for line in err.splitlines() if line.startswith("  - ")]
    expected = {
        "optim.lr": "optim.lr: must be a finite number, got nan",
        "optim.weight_decay": "optim.weight_decay: must be a finite number, got inf",
        "optim.class_weights[0]": "optim.class_weights[0]: must be a finite number, got nan",
        "optim.betas[1]": "optim.betas[1]: must be a finite number, got -inf",
        "optim.grad_clip": "optim.grad_clip: must be positive or null (no clipping), got -1.0",
        "optim.sam_rho": "optim.sam_rho: must be a finite number, got inf",
        "data.train[0].weight": "data.train[0].weight: must be a finite number, got nan",
        "data.max_bad_rows": "data.max_bad_rows: a share of an epoch's rows, in [0, 1], got 1.5",
        "data.rawboost.params.snr_min": (
            "data.rawboost.params.snr_min: must be a finite number, got nan"
        ),
        "train.max_nonfinite_share": (
            "train.max_nonfinite_share: a share of the steps, in [0, 1], got -0.1"
        ),
        "train.max_final_dev_eer": (
            "train.max_final_dev_eer: an EER in % in (0, 100] (50 = chance) or null, got 0.0"
        ),
        "scaling.gpus_per_worker": "scaling.gpus_per_worker: must be >= 0, got -1.0",
        "scaling.cpus_per_worker": "scaling.cpus_per_worker: must be a finite number, got nan",
        "model.frontend_layer": "model.frontend_layer: a layer index >= 0, got -2",
        "seed": "seed: an integer in [0, 2**32), got -5",
    }
    for field, message in expected.items():
        assert message in problems, (field, problems)
    named = [p.split(":", 1)[0] for p in problems]
    assert sorted(set(named)) == sorted(named), "one message per field"
    assert set(named) <= set(expected) | {"data.rawboost.params", "optim.betas"}, named


def test_gpu_counts_must_be_positive_with_gpus(shards, capsys):
    code, err = validate(shards, "scaling.use_gpu=true", "scaling.gpus_per_worker=0", capsys=capsys)
    assert code == 2
    assert "scaling.gpus_per_worker: must be positive with scaling.use_gpu=true, got 0.0" in err


def test_rawboost_values_are_checked_before_ray(shards, capsys):
    code, err = validate(shards, "data.rawboost.params={snr_min: 50, snr_max: 40}", capsys=capsys)
    assert code == 2
    assert "data.rawboost.params: RawBoost parameter snr_min=50 is above snr_max=40: pass" in err


def test_class_weights_cannot_all_be_zero(shards, capsys):
    code, err = validate(shards, "optim.class_weights=[0, 0]", capsys=capsys)
    assert code == 2
    assert "optim.class_weights: at least one weight must be > 0, got [0.0, 0.0]" in err


@pytest.mark.parametrize("name", ["bad/name", "a:b", "x@1", "has space", "", ".hidden"])
def test_registry_names_mlflow_refuses_are_refused(shards, capsys, name):
    code, err = validate(shards, f"mlflow.register_as='{name}'", capsys=capsys)
    assert code == 2
    assert f"mlflow.register_as: {name!r} is not a registered-model name MLflow accepts" in err


@pytest.mark.parametrize("name", ["spoofdet-demo", "xlsr_aasist.v2", "A1"])
def test_registry_names_mlflow_accepts_pass(shards, capsys, name):
    assert validate(shards, f"mlflow.register_as={name}", capsys=capsys)[0] == 0


def test_run_name_must_be_a_folder_name(shards, capsys):
    code, err = validate(shards, "name=runs/demo", capsys=capsys)
    assert code == 2 and "name: 'runs/demo' must be letters, digits" in err


def test_hub_frontend_needs_its_weights_in_the_cache(shards, hf_cache, capsys):
    code, err = validate(shards, "model.frontend=xlsr_300m", capsys=capsys)
    assert code == 2
    assert f"model.frontend: xlsr_300m needs the pretrained weights of {HUB_ID}" in err
    assert f"`hf download {HUB_ID}`" in err
    # the hub cache layout: refs/main names the snapshot that holds the files
    repo = hf_cache / ("models--" + HUB_ID.replace("/", "--"))
    snapshot = repo / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    (snapshot / "config.json").write_text("{}")
    code, err = validate(shards, "model.frontend=xlsr_300m", capsys=capsys)
    assert code == 2 and "needs the pretrained weights" in err  # a config without weights
    (snapshot / "pytorch_model.bin").write_bytes(b"")
    assert validate(shards, "model.frontend=xlsr_300m", capsys=capsys) == (0, "")


def test_local_frontend_folder_needs_a_config(shards, tmp_path, capsys):
    folder = tmp_path / "my-xlsr"
    code, err = validate(shards, f"model.frontend={folder}", capsys=capsys)
    assert code == 2 and f"model.frontend: {folder} does not exist" in err
    folder.mkdir()
    code, err = validate(shards, f"model.frontend={folder}", capsys=capsys)
    assert code == 2 and f"model.frontend: {folder} holds no config.json" in err
    (folder / "config.json").write_text("{}")
    assert validate(shards, f"model.frontend={folder}", capsys=capsys) == (0, "")


def test_unknown_frontend_name_lists_the_known_ones(shards, capsys):
    code, err = validate(shards, "model.frontend=xlsr_3000m", capsys=capsys)
    assert code == 2
    assert "model.frontend: 'xlsr_3000m' is not a known front-end (" in err
    assert "xlsr_300m" in err and "logspec" in err


def test_shipped_recipes_skip_the_machine_checks_without_paths():
    """check_paths=False (validating recipes for another machine) leaves the weights alone."""
    cfg = load_train_config(REPO / "ray_jobs/configs/xlsr_aasist_19la.yaml", check_paths=False)
    assert cfg.model.frontend == "xlsr_300m"
    assert cfg.train.max_nonfinite_share == 0.05 and cfg.train.max_final_dev_eer == 50.0
    assert cfg.data.max_bad_rows == 0.001


def test_yaml_nan_in_a_recipe_file_names_file_and_field(tmp_path, shards):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        DEMO.read_text().replace("lr: 1.0e-3", "lr: .nan").replace("[0.1, 0.9]", "[0.1, .inf]")
    )
    with pytest.raises(ConfigError) as info:
        load_train_config(
            recipe,
            [f"data.train.0.shards={shards['train']}", f"data.dev.shards={shards['dev']}"],
        )
    assert str(recipe) in str(info.value)
    assert info.value.problems == [
        "optim.lr: must be a finite number, got nan",
        "optim.class_weights[1]: must be a finite number, got inf",
    ]


def test_a_damaged_shard_folder_is_refused_before_ray(shards, capsys):
    """A truncated metadata.parquet (or a deleted, stray or truncated shard) fails --validate,
    naming the file, instead of passing it and failing hours later in `score`."""
    meta = shards["dev"] / "metadata.parquet"
    meta.write_bytes(meta.read_bytes()[:-10])
    stray = shards["train"] / "shards" / "part-00000 copy.parquet"
    stray.parent.mkdir()
    stray.write_bytes(b"PAR1")
    code, err = validate(shards, capsys=capsys)
    assert code == 2
    assert "data.dev.shards" in err and "metadata.parquet" in err
    assert "data.train[0].shards" in err and "part-00000 copy.parquet" in err
    assert "--verify" in err


def test_accumulation_schedule_and_length_numbers_are_refused_naming_their_field(shards, capsys):
    """The fields of gradient accumulation, the lr schedules and variable-length training:
    non-finite or out of range, each refused once, naming its field, before Ray starts."""
    code, err = validate(
        shards,
        "optim.schedule=step",
        "train.grad_accum_steps=0",
        "optim.warmup_steps=-1",
        "optim.step_size=0",
        "optim.step_gamma=.nan",
        "optim.min_lr=.inf",
        "optim.total_steps=-5",
        "data.max_seconds=.nan",
        "data.batch_seconds=-1",
        capsys=capsys,
    )
    assert code == 2
    problems = [line[4:] for line in err.splitlines() if line.startswith("  - ")]
    assert sorted(problems) == sorted(
        [
            "train.grad_accum_steps: at least 1 (1 = no accumulation), got 0",
            "optim.warmup_steps: must be >= 0 (0 = no warm-up), got -1",
            "optim.step_size: must be positive (optimizer steps), got 0",
            "optim.step_gamma: must be a finite number, got nan",
            "optim.min_lr: must be a finite number, got inf",
            "optim.total_steps: must be positive or null (derived), got -5",
            "data.max_seconds: must be a finite number, got nan",
            "data.batch_seconds: must be positive (seconds) or null, got -1.0",
        ]
    )
