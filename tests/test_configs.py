"""Recipe configs: every shipped YAML validates; bad configs list every problem at once."""

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from spoofdet.config import (
    CROPS,
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
        if name not in ("demo", "amsdf_19la", *RAW_AASIST):  # clovaai, AMSDF: dev EER
            assert cfg.train.select == "dev_loss"
    # AMSDF: Adam 1e-6, wd 1e-4, batch 12, 15 epochs, first 64,600 samples, no RawBoost, the
    # epoch of lowest mean EER over three dev sets, no average
    am = by_name["amsdf_19la"]
    assert (am.model.head, am.optim.lr, am.optim.weight_decay) == ("amsdf", 1e-6, 1e-4)
    assert (am.train.batch_size, am.train.epochs, am.train.select) == (12, 15, "dev_eer")
    assert (am.data.num_samples, am.data.crop, am.data.rawboost.algo) == (64_600, "first", 0)
    assert [s.name for s in am.data.dev] == [
        "asvspoof2019-la-dev",
        "fake-or-real-val",
        "fakeavceleb-30pct",
    ] and am.train.average_best == 1
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
                "optim.schedule=warm",
            ],
            check_paths=False,
        )
    assert info.value.problems == [
        f"data.crop: 'mid' is not one of {', '.join(CROPS)}",
        "model.freeze: 1 is not one of none, feature_encoder, all",
        "optim.lr_scaling: 'cube' is not one of none, linear, sqrt",
        "optim.schedule: 'warm' is not one of constant, cosine, step",
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


def test_recipes_state_the_seeds_lr_schedules():
    """Raw AASIST anneals per step on a cosine to 5e-6 over 100 epochs of 25,380 // 24 steps
    (clovaai/aasist: drop_last); Codecfake halves its lr every 2 epochs (740,747 // 128 steps
    each); the XLS-R seeds keep a constant lr."""
    by_name = {p.stem: load_train_config(p, check_paths=False) for p in CONFIGS}
    for name in RAW_AASIST:
        o = by_name[name].optim
        assert (o.schedule, o.total_steps, o.min_lr, o.warmup_steps) == ("cosine", 105_700, 5e-6, 0)
    for name in ("codecfake_mel_lcnn", "codecfake_w2v2_lcnn"):
        o = by_name[name].optim
        assert (o.schedule, o.step_size, o.step_gamma) == ("step", 2 * (740_747 // 128), 0.5)
    for name in SEED_RECIPES:
        assert by_name[name].optim.schedule == "constant"
        assert by_name[name].train.grad_accum_steps == 1


def demo_problems(*overrides):
    demo = CONFIGS[[p.stem for p in CONFIGS].index("demo")]
    with pytest.raises(ConfigError) as info:
        load_train_config(demo, list(overrides), check_paths=False)
    return info.value.problems


def test_schedule_and_accumulation_rules_across_sections():
    assert demo_problems("optim.schedule=cosine") == [
        "optim.total_steps: schedule cosine needs the run's length in optimizer steps; set "
        "optim.total_steps (epochs x rows per epoch / global batch), or data.epoch_size or "
        "train.max_steps_per_epoch to derive it"
    ]
    assert demo_problems(
        "optim.schedule=cosine", "optim.warmup_steps=120", "train.max_steps_per_epoch=20"
    ) == [  # the demo's 6 epochs x 20 steps
        "optim.total_steps: the derived total steps (120) must exceed optim.warmup_steps (120): "
        "the cosine runs after the warm-up"
    ]
    assert demo_problems("optim.step_size=10", "optim.min_lr=1e-9") == [
        "optim.min_lr: only used by schedule cosine, not constant; leave it unset (0.0) or set "
        "optim.schedule=cosine",
        "optim.step_size: only used by schedule step, not constant; leave it unset (None) or set "
        "optim.schedule=step",
    ]
    assert demo_problems(
        "train.grad_accum_steps=2", "optim.sam_rho=0.05", "deepspeed.enabled=false"
    ) == [
        "train.grad_accum_steps: SAM/CSAM (optim.sam_rho > 0) takes two passes over each "
        "step's whole batch; accumulation is not supported with it, set it to 1"
    ]


def test_cosine_length_is_derived_from_the_epoch_size_or_the_step_cap():
    from spoofdet.config import lr_schedule_steps

    demo = CONFIGS[[p.stem for p in CONFIGS].index("demo")]
    base = ["optim.schedule=cosine", "train.epochs=3", "train.batch_size=8"]
    cfg = load_train_config(
        demo,
        [*base, "data.epoch_size=1000", "scaling.num_workers=2", "train.grad_accum_steps=2"],
        check_paths=False,
    )
    assert lr_schedule_steps(cfg) == 3 * (1000 // 16) // 2
    cfg.train.max_steps_per_epoch = 10  # the cap wins when it is shorter
    assert lr_schedule_steps(cfg) == 15
    cfg.optim.total_steps = 7
    assert lr_schedule_steps(cfg) == 7


def test_variable_length_fields():
    """crop none needs max_seconds; max_seconds only with it; batch_seconds holds the longest
    clip and is refused with proportional batches and cached features."""
    from spoofdet.config._checks import check_lengths
    from spoofdet.config.train import DataConfig

    problems = []
    check_lengths(DataConfig(crop="none"), problems)
    assert problems == [
        "data.max_seconds: crop none trains on whole clips and needs the longest one allowed "
        "(longer clips are cut at random to it), e.g. data.max_seconds=10"
    ]
    problems = []
    check_lengths(DataConfig(crop="none", max_seconds=6.0, batch_seconds=5.0), problems)
    assert problems == [
        "data.batch_seconds: 5.0 cannot hold the longest clip (6 s, data.max_seconds); raise it "
        "to at least that"
    ]
    problems = []
    check_lengths(DataConfig(crop="none", max_seconds=6.0, batch_seconds=60.0), problems)
    assert problems == []
    assert demo_problems("data.max_seconds=4", "data.batch_seconds=1") == [
        "data.max_seconds: only used with data.crop=none (crop random cuts every clip to "
        "data.num_samples); set it to null or use crop none",
        "data.batch_seconds: 1.0 cannot hold the longest clip (2 s, data.num_samples at 16000 "
        "Hz); raise it to at least that",
    ]
    assert demo_problems("data.batch_seconds=60", "data.proportional_batches=true") == [
        "data.batch_seconds: invalid with data.proportional_batches (CSAM fixes each batch's "
        "rows per source); set one of them off"
    ]
    cached = demo_problems(
        "data.batch_seconds=60", "model.frontend=cached", "data.crop=first", "data.num_samples=400"
    )
    assert (
        "data.batch_seconds: invalid on cached-feature sources (model.frontend=cached: every "
        "row is num_samples long); set it to null and use train.batch_size"
    ) in cached
