"""Recipe configs: every shipped YAML validates; bad configs list every problem at once."""

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from spoofdet.config import (
    ConfigError,
    flatten,
    head_names,
    load_train_config,
    parse_overrides,
    to_dict,
)
from spoofdet.data.shards import resolve_out, write_file_list

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "ray_jobs" / "configs").glob("*.yaml"))
SEED_RECIPES = {
    "demo",
    "xlsr_aasist_19la",
    "xlsr_aasist_19la_df",
    "xlsr_mamba_19la",
    "fake_mamba_19la",
    "nes2net_x_19la",
    "cotrain_codecfake_19la",
}
#: clovaai/aasist recipes -> their model.head_kwargs (config/AASIST.conf, config/AASIST-L.conf)
RAW_AASIST = {
    "aasist_19la": {},
    "aasist_l_19la": {
        "filts": [70, [1, 32], [32, 32], [32, 24], [24, 24]],
        "gat_dims": [24, 32],
        "pool_ratios": [0.4, 0.5, 0.7, 0.5],
        "temperatures": [2.0, 2.0, 100.0, 100.0],
    },
}


def test_every_seed_recipe_ships():
    assert {p.stem for p in CONFIGS} >= SEED_RECIPES


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_shipped_config_validates_and_says_how_to_launch(path):
    cfg = load_train_config(path, check_paths=False)
    assert cfg.name == path.stem
    header = "".join(
        line for line in path.read_text().splitlines(keepends=True) if line.startswith("#")
    )
    assert f"ray_jobs/configs/{path.name}" in header and "python -m ray_jobs.train" in header
    assert "ray job submit" in header
    for key in ("storage_path", "tracking_uri"):  # infrastructure never lives in a recipe
        assert (
            flatten(to_dict(cfg))[f"{'run' if key == 'storage_path' else 'mlflow'}.{key}"] is None
        )


def test_recipes_match_the_seeds():
    by_name = {p.stem: load_train_config(p, check_paths=False) for p in CONFIGS}
    assert by_name["xlsr_aasist_19la"].data.rawboost.algo == 5
    assert by_name["xlsr_aasist_19la_df"].data.rawboost.algo == 3
    assert (
        by_name["nes2net_x_19la"].data.rawboost.algo == 4
        and by_name["nes2net_x_19la"].optim.lr == 2.5e-7
    )
    for name in ("xlsr_mamba_19la", "fake_mamba_19la"):
        assert by_name[name].data.num_samples == 66_800 and by_name[name].train.batch_size == 20
    for name, cfg in by_name.items():
        if name in SEED_RECIPES - {"demo"}:  # the fine-tuned XLS-R seeds: bona fide up-weighted 9:1
            assert cfg.optim.class_weights == [0.1, 0.9] and cfg.model.frontend == "xlsr_300m"
        if name != "demo":
            assert cfg.data.dev is not None
        if name not in ("demo", *RAW_AASIST):  # clovaai selects on dev EER, the others on dev loss
            assert cfg.train.select == "dev_loss"
    # clovaai's raw AASIST / AASIST-L: trained from scratch on the waveform, Adam 1e-4, wd 1e-4,
    # batch 24, 100 epochs, random crops of 64,600, no RawBoost, CE [0.1, 0.9], best dev EER
    for name, kwargs in RAW_AASIST.items():
        cfg = by_name[name]
        assert (cfg.model.frontend, cfg.model.head) == ("waveform", "aasist_raw")
        assert cfg.model.head_kwargs == kwargs
        assert cfg.optim.lr == cfg.optim.weight_decay == 1e-4
        assert cfg.optim.class_weights == [0.1, 0.9]
        assert (cfg.train.batch_size, cfg.train.epochs, cfg.train.select) == (24, 100, "dev_eer")
        assert (cfg.data.num_samples, cfg.data.crop) == (64_600, "random")
        assert cfg.data.rawboost.algo == 0
    co = by_name["cotrain_codecfake_19la"]
    assert [s.name for s in co.data.train] == [
        "codecfake-train",
        "asvspoof2019-la-train",
    ] and co.data.mix == "size"
    # Codecfake's LCNNs: Adam 5e-4, wd 5e-4, batch 128, 10 epochs, CE weight [10, 1] with
    # 0 = real, i.e. [1, 10] as [spoof, bona fide]
    for name, frontend in (
        ("codecfake_w2v2_lcnn", "xlsr_300m"),
        ("codecfake_mel_lcnn", "codecfake_mel"),
    ):
        cfg = by_name[name]
        assert cfg.optim.class_weights == [1.0, 10.0]
        assert cfg.optim.lr == cfg.optim.weight_decay == 5e-4
        assert cfg.train.batch_size == 128 and cfg.train.epochs == 10 and cfg.seed == 688
        assert cfg.model.head == "lcnn" and cfg.model.frontend == frontend
    w2v2 = by_name["codecfake_w2v2_lcnn"].model
    assert w2v2.freeze == "all" and w2v2.frontend_layer == 5
    assert w2v2.frontend_kwargs == {"normalize": True}


def test_head_names_are_the_model_builders():
    models = pytest.importorskip("spoofdet.models")
    assert sorted(head_names()) == sorted(models.HEADS)


def write(tmp_path, text):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


def test_every_problem_is_reported_at_once(tmp_path):
    p = write(
        tmp_path,
        """
name: x
data:
  train: [{shards: /nope/train}]
  mix: zipf
  rawboost: {algo: 13, p: 2, params: {snr_mim: 3}}
model: {head: lstm, n_logits: 3}
optim: {lr: fast, betas: [0.9]}
train: {batch_size: 0, select: dev_acc, epochs: 30}
deepspeed: {zero_stage: 3, precision: bf16}
scaling: {num_workers: 0}
extra_section: 1
""",
    )
    with pytest.raises(ConfigError) as info:
        load_train_config(p)
    text = str(info.value)
    for needle in [
        "data.mix: 'zipf'",
        "data.rawboost.algo: 13",
        "data.rawboost.p",
        "snr_mim: unknown RawBoost parameter (did you mean 'snr_min'?)",
        "model.head: 'lstm'",
        "model.n_logits",
        "optim.lr: expected a number",
        "optim.betas",
        "train.batch_size",
        "train.select",
        "deepspeed.zero_stage",
        "deepspeed.precision: bf16 needs scaling.use_gpu=true",
        "scaling.num_workers",
        "extra_section: unknown key",
        "/nope/train holds no finished shard job",
        "data.dev: model selection and early stopping need a dev set",
    ]:
        assert needle in text, needle
    assert len(info.value.problems) >= 15
    assert "optim.lr: must be positive" not in text  # one message per broken field


def test_fixed_value_fields_are_checked_once_by_their_type():
    """Literal-typed fields: the loader names the field, the value and the valid ones, once."""
    demo = CONFIGS[[p.stem for p in CONFIGS].index("demo")]
    with pytest.raises(ConfigError) as info:
        load_train_config(
            demo,
            [
                "data.crop=mid",
                "model.freeze=1",
                "optim.lr_scaling=cube",
                "deepspeed.precision=true",
            ],
            check_paths=False,
        )
    assert info.value.problems == [
        "data.crop: 'mid' is not one of first, random",
        "model.freeze: 1 is not one of none, feature_encoder, all",
        "optim.lr_scaling: 'cube' is not one of none, linear, sqrt",
        "deepspeed.precision: True is not one of auto, fp32, bf16, fp16",
    ]


def test_overrides_apply_with_yaml_types(tmp_path):
    demo = CONFIGS[[p.stem for p in CONFIGS].index("demo")]
    cfg = load_train_config(
        demo,
        [
            "optim.lr=1e-5",
            "scaling.num_workers=4",
            "data.train.0.weight=2.5",
            "model.head_kwargs={dropout: 0.1}",
            "deepspeed.enabled=false",
        ],
        check_paths=False,
    )
    assert cfg.optim.lr == 1e-5 and cfg.scaling.num_workers == 4 and cfg.data.train[0].weight == 2.5
    assert cfg.model.head_kwargs == {"dropout": 0.1} and cfg.deepspeed.enabled is False
    with pytest.raises(ConfigError, match="override data.train.5.weight: no list item 5"):
        load_train_config(demo, ["data.train.5.weight=1"], check_paths=False)
    with pytest.raises(ConfigError, match="not key=value"):
        parse_overrides(["optim.lr"])


def test_relative_shard_paths_become_absolute(tmp_path, monkeypatch):
    (tmp_path / "s" / "train").mkdir(parents=True)
    meta = tmp_path / "s" / "train" / "metadata.parquet"
    pq.write_table(pa.table({"utt_id": pa.array([], pa.string())}), meta)
    write_file_list(*resolve_out(str(meta.parent)), ["metadata.parquet"])
    p = write(
        tmp_path,
        "name: x\ndata: {train: [{shards: s/train}]}\ntrain: {epochs: 1, patience: 1}\n"
        "run: {checkpoints_to_keep: 5}\nmodel: {frontend: logspec}\n",  # no hub weights needed
    )
    monkeypatch.chdir(tmp_path)
    cfg = load_train_config(p)
    assert cfg.data.train[0].shards == str(tmp_path / "s" / "train")


def test_yaml_errors_name_the_line(tmp_path):
    with pytest.raises(ConfigError, match="starting at line 3"):
        load_train_config(write(tmp_path, "name: x\ndata:\n  train: [a, b\n"))
    with pytest.raises(ConfigError, match="no such file"):
        load_train_config(tmp_path / "missing.yaml")
