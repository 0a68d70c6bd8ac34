"""Lineage of a training run in MLflow (spoofdet.tracking): shard folders as dataset inputs with
their files.json fingerprint, logged once across resubmissions; git commit tags, never an error."""

import hashlib
import json

import pytest

from data_prep import shard
from spoofdet.data.corpora import prepare
from spoofdet.testing.synthetic import write_corpus
from spoofdet.tracking import git_tags, log_datasets, shard_dataset

mlflow = pytest.importorskip("mlflow")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("lineage")
    corpus = write_corpus("asvspoof2019-la", root / "corpus", per_split=8, seed=5)
    table = prepare("asvspoof2019-la", corpus["root"], "train", check_audio=False).table
    out = root / "shards"
    shard.run(
        table, str(out), corpus="asvspoof2019-la", shard_rows=4, executor="local", progress=False
    )
    return out


def test_a_shard_folder_is_a_dataset_named_by_its_file_list(folder):
    listing = json.loads((folder / "files.json").read_text())
    lines = "".join(
        f"{e['name']}\t{e['sha256']}\n" for e in sorted(listing["files"], key=lambda e: e["name"])
    )
    expected = hashlib.sha256(lines.encode()).hexdigest()
    ds = shard_dataset(str(folder), "la-train")
    assert ds["digest"] == expected[:32] and ds["profile"]["files_sha256"] == expected
    assert ds["source"] == str(folder)
    p = ds["profile"]
    assert p["rows"] == 8 and p["bonafide"] + p["spoof"] == 8 and p["bonafide"] > 0
    assert p["hours"] > 0 and p["quarantined"] == 0
    plan = json.loads((folder / "_work" / "plan.json").read_text())
    assert p["input_fingerprint"] == plan["fingerprint"]


def test_no_file_list_names_the_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        shard_dataset(str(tmp_path), "x")


def test_inputs_are_logged_once_per_run(folder, tmp_path):
    client = mlflow.tracking.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    run_id = client.create_run(client.create_experiment("e")).info.run_id
    ds = shard_dataset(str(folder), "la-train")
    pairs = [(ds, "training"), (dict(ds, name="la-dev"), "validation")]
    assert log_datasets(client, run_id, pairs) == 2
    assert log_datasets(client, run_id, pairs) == 0  # a resubmission adds nothing
    inputs = client.get_run(run_id).inputs.dataset_inputs
    got = {
        (i.dataset.name, i.dataset.digest, {t.key: t.value for t in i.tags}["mlflow.data.context"])
        for i in inputs
    }
    assert got == {("la-train", ds["digest"], "training"), ("la-dev", ds["digest"], "validation")}
    assert len(inputs) == 2
    assert json.loads(inputs[0].dataset.profile)["rows"] == 8
    assert json.loads(inputs[0].dataset.source) == {"uri": str(folder)}


def test_git_tags_of_a_checkout_and_of_a_plain_folder(tmp_path):
    import subprocess

    assert git_tags(tmp_path) == {}  # not a checkout: no tags, no error
    repo = tmp_path / "repo"
    repo.mkdir()
    env = {
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
        "PATH": "/usr/bin:/bin",
    }
    for cmd in (["init", "-q"], ["add", "f"], ["commit", "-qm", "x"]):
        if cmd[0] == "add":
            (repo / "f").write_text("a")
        subprocess.run(["git", "-C", str(repo), *cmd], check=True, env=env)
    head = subprocess.run(
        ["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert git_tags(repo) == {"mlflow.source.git.commit": head, "spoofdet.git.dirty": "false"}
    (repo / "f").write_text("b")
    assert git_tags(repo)["spoofdet.git.dirty"] == "true"
