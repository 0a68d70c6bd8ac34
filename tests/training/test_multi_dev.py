"""Several dev sets and a family of seeds (issue 19: AMSDF selects on three dev sets and reports
three seeds): config checks, the per-set and mean dev metrics, the family members' configs. The
Ray run is tests/jobs/test_train_family.py."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import yaml

from spoofdet.config import ConfigError, dev_sources, load_train_config
from spoofdet.training.dev import mean_over_sets

ROOT = Path(__file__).resolve().parents[2]


def _recipe(tmp_path: Path, **data) -> Path:
    tree = {
        "name": "amsdf-like",
        "data": {"train": [{"shards": "/shards/la19/train"}], **data},
        "model": {"frontend": "logspec", "head": "aasist"},
        "train": {"epochs": 2, "patience": 2},  # no early stopping: valid without a dev set
    }
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


def test_dev_accepts_one_set_or_a_list(tmp_path):
    one = load_train_config(_recipe(tmp_path, dev={"shards": "/s/dev"}), check_paths=False)
    assert [s.shards for s in dev_sources(one.data)] == ["/s/dev"]
    several = load_train_config(
        _recipe(tmp_path, dev=[{"shards": "/s/la19/dev"}, {"shards": "/s/itw", "name": "itw"}]),
        check_paths=False,
    )
    assert [(s.shards, s.name) for s in dev_sources(several.data)] == [
        ("/s/la19/dev", ""),
        ("/s/itw", "itw"),
    ]
    none = load_train_config(_recipe(tmp_path), check_paths=False)
    assert dev_sources(none.data) == []


def test_dev_sets_need_distinct_names_and_a_nonempty_list(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_train_config(
            _recipe(tmp_path, dev=[{"shards": "/a/dev"}, {"shards": "/b/dev"}]), check_paths=False
        )
    assert "data.dev[1].name: 'dev' is also data.dev[0]'s name" in str(e.value)
    with pytest.raises(ConfigError, match=r"data\.dev: an empty list"):
        load_train_config(_recipe(tmp_path, dev=[]), check_paths=False)


def test_every_dev_set_path_is_checked_by_its_index(tmp_path):
    path = _recipe(tmp_path, dev=[{"shards": "/no/such/a"}, {"shards": "/no/such/b"}])
    with pytest.raises(ConfigError) as e:
        load_train_config(path)
    assert "data.dev[0].shards" in str(e.value) and "data.dev[1].shards" in str(e.value)


def test_mean_over_sets_weighs_every_set_the_same():
    a = {"dev_loss": 0.2, "dev_eer": 10.0, "dev_min_dcf": 0.3, "dev_threshold": 0.1}
    b = {"dev_loss": 0.4, "dev_eer": 30.0, "dev_min_dcf": 0.5, "dev_threshold": -1.0}
    a |= {"dev_n": 100, "dev_bad_rows": 1}
    b |= {"dev_n": 900, "dev_bad_rows": 2}
    m = mean_over_sets({"la19": a, "itw": b})
    assert m["dev_eer"] == 20.0 and m["dev_loss"] == pytest.approx(0.3)
    assert m["dev_min_dcf"] == pytest.approx(0.4)
    assert m["dev_n"] == 1000 and m["dev_bad_rows"] == 3
    assert m["dev.la19.eer"] == 10.0 and m["dev.itw.n"] == 900
    assert "dev_threshold" not in m  # no pooled threshold over sets scored apart


def test_family_members_are_validated_runs_named_by_seed(tmp_path):
    from ray_jobs import train

    path = _recipe(tmp_path, dev={"shards": "/s/dev"})
    text = yaml.safe_load(path.read_text()) | {"seeds": [1234, 42, 7]}
    path.write_text(yaml.safe_dump(text))
    cfg = load_train_config(path, check_paths=False)
    args = argparse.Namespace(config=str(path), seeds=None)
    with pytest.MonkeyPatch.context() as mp:  # the members are loaded like the recipe
        mp.setattr(
            train, "load_train_config", lambda p, o: load_train_config(p, o, check_paths=False)
        )
        members = train.family(cfg, args, [])
        assert [(s, c.name, c.seed, c.seeds) for s, c in members] == [
            (1234, "amsdf-like-seed1234", 1234, []),
            (42, "amsdf-like-seed42", 42, []),
            (7, "amsdf-like-seed7", 7, []),
        ]
        flag = train.family(cfg, argparse.Namespace(config=str(path), seeds=[5]), [])
        assert [c.name for _, c in flag] == ["amsdf-like-seed5"]
        with pytest.raises(ConfigError, match=r"seeds: \[5, 5\] repeats a seed"):
            train.family(cfg, argparse.Namespace(config=str(path), seeds=[5, 5]), [])
    one = load_train_config(_recipe(tmp_path), check_paths=False)
    assert train.family(one, argparse.Namespace(config="x", seeds=None), []) == []


def test_seeds_out_of_range_are_named(tmp_path):
    path = _recipe(tmp_path)
    path.write_text(yaml.safe_dump(yaml.safe_load(path.read_text()) | {"seeds": [1, -2]}))
    with pytest.raises(ConfigError, match=r"seeds\[1\]: an integer in \[0, 2\*\*32\), got -2"):
        load_train_config(path, check_paths=False)
