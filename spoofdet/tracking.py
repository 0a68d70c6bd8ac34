"""MLflow plumbing: where runs go, one MLflow run per training run (also across restarts), the model.

- :func:`tracking_uri`: the config's URI, else ``MLFLOW_TRACKING_URI``, else a SQLite file in the
  run storage (``<storage>/mlflow.db``, artifacts under ``<storage>/mlartifacts``) so a laptop
  demo needs no server.
- :func:`attach_run`: the MLflow run of a Ray run ``(storage, name)``. Its id is written to
  ``<storage>/<name>/mlflow_run_id`` the first time and read back on every later submission with
  the same name, and training checkpoints carry it too, so a resumed or restarted run logs into
  the same MLflow run instead of creating a second one.
- :func:`bounded_http`: spoofdet's defaults for MLflow's HTTP client (timeout, retries, backoff:
  :data:`HTTP_DEFAULTS`, a failed call gives up after about half a minute instead of MLflow's
  minutes), set where the user has not set them; every command applies them before its first
  tracking call. :func:`reach` says on stderr which server a command is waiting for and turns
  an unreachable one into a one-line :class:`TrackingUnreachable` naming the URI.
- The registered model (the pyfunc ``DetectorModel`` and ``log_detector``) lives in
  :mod:`spoofdet.serve.model`.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterator, MutableMapping
from pathlib import Path
from typing import Any

from spoofdet.errors import SpoofdetError

RUN_ID_FILE = "mlflow_run_id"

#: MLflow's HTTP settings as spoofdet sets them where the environment leaves them unset (MLflow's
#: own defaults, 120 s per request and 7 retries with a backoff factor of 2, wait minutes for an
#: unreachable server). A request gives up after 10 s and is retried twice, 1 s and 2 s apart
#: (plus up to 1 s of MLflow's jitter each): at most about 34 s per call.
HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
}


class TrackingUnreachable(SpoofdetError):
    """The MLflow tracking server did not answer (or refused); the message names its URI."""


def bounded_http(environ: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """Set :data:`HTTP_DEFAULTS` in ``environ`` (default ``os.environ``, so Ray workers started
    later inherit them) where unset; a user's own settings win. Returns the values in effect."""
    env = os.environ if environ is None else environ
    for key, value in HTTP_DEFAULTS.items():
        if not env.get(key, "").strip():
            env[key] = value
    return {key: env[key] for key in HTTP_DEFAULTS}


def is_remote(uri: str | None) -> bool:
    """Whether ``uri`` is a tracking server reached over HTTP (not a local file or database)."""
    return bool(uri) and str(uri).lower().startswith(("http://", "https://"))


def _worst_case_seconds(settings: dict[str, str]) -> float:
    """About how long one failing call takes under ``settings``: every attempt timing out, plus
    the backoff between attempts (urllib3: none before the first retry, then factor * 2^(n-1))
    and MLflow's jitter (at most 1 s each)."""
    try:
        timeout = float(settings["MLFLOW_HTTP_REQUEST_TIMEOUT"])
        retries = int(settings["MLFLOW_HTTP_REQUEST_MAX_RETRIES"])
        factor = float(settings["MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"])
    except (KeyError, ValueError):
        return float("nan")
    backoff = sum(factor * 2 ** (n - 1) for n in range(2, retries + 1)) + retries
    return timeout * (retries + 1) + backoff


_REACHED: set[str] = set()


def reach(uri: str | None) -> None:
    """Before the first call to a remote tracking server in this process: apply
    :func:`bounded_http`, say on stderr which server the command waits for, and check that it
    answers (one cheap request). Local stores (``sqlite:``, files) are not checked.

    Raises:
        TrackingUnreachable: the server did not answer in time or refused the request; the
            message names the URI and says what to check.
    """
    if not is_remote(uri) or uri in _REACHED:
        return
    settings = bounded_http()
    wait = _worst_case_seconds(settings)
    print(
        f"spoofdet: contacting the MLflow tracking server at {uri} (giving up after about "
        f"{wait:.0f} s; MLFLOW_HTTP_REQUEST_TIMEOUT={settings['MLFLOW_HTTP_REQUEST_TIMEOUT']}, "
        f"MLFLOW_HTTP_REQUEST_MAX_RETRIES={settings['MLFLOW_HTTP_REQUEST_MAX_RETRIES']})",
        file=sys.stderr,
        flush=True,
    )
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    try:
        MlflowClient(tracking_uri=uri).search_experiments(max_results=1)
    except MlflowException as exc:
        raise TrackingUnreachable(
            f"the MLflow tracking server at {uri} did not answer: {_short(exc.message)}. "
            "Check the URI (--tracking-uri or MLFLOW_TRACKING_URI), that the server runs and is "
            "reachable from this machine, and its credentials"
        ) from None
    except OSError as exc:
        raise TrackingUnreachable(
            f"the MLflow tracking server at {uri} did not answer: {exc}. Check the URI "
            "(--tracking-uri or MLFLOW_TRACKING_URI) and that the server runs"
        ) from None
    _REACHED.add(str(uri))


def _short(message: str) -> str:
    """The gist of an MLflow HTTP error: the innermost ``Caused by`` reason where there is one."""
    text = " ".join(str(message).split())
    if "Caused by" in text:
        inner = text.rsplit("Caused by", 1)[1].strip(" ()")
        for marker in ("Failed to establish a new connection:", "Read timed out", "timed out"):
            if marker in inner:
                return inner[inner.index(marker) :].rstrip("')\" ")
        return inner
    return text[:500]


def tracking_uri(configured: str | None, storage: str) -> str:
    """The tracking URI to use (see the module docstring)."""
    if configured:
        return configured
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    return f"sqlite:///{Path(storage).resolve() / 'mlflow.db'}"


def _experiment_id(client: Any, name: str, storage: str, uri: str) -> str:
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    location = None
    if uri.startswith("sqlite:"):  # keep artifacts beside the database, not in ./mlruns of cwd
        location = (Path(storage).resolve() / "mlartifacts").as_uri()
    return client.create_experiment(name, artifact_location=location)


def experiment_for(client: Any, name: str, uri: str) -> str:
    """Id of experiment ``name`` (created if missing; with a SQLite store, artifacts go beside
    the database)."""
    storage = str(Path(uri[len("sqlite:///") :]).parent) if uri.startswith("sqlite:///") else "."
    return _experiment_id(client, name, storage, uri)


def attach_run(
    *, uri: str, experiment: str, storage: str, name: str, tags: dict[str, str] | None = None
) -> str:
    """The MLflow run id for Ray run ``(storage, name)``: created once, reused on every resubmission."""
    from mlflow.tracking import MlflowClient

    reach(uri)
    client = MlflowClient(tracking_uri=uri)
    marker = Path(storage) / name / RUN_ID_FILE
    if marker.is_file():
        run_id = marker.read_text().strip()
        try:
            client.get_run(run_id)
            return run_id
        except Exception as exc:  # the tracking store was reset or moved
            raise RuntimeError(
                f"{marker} names MLflow run {run_id}, which {uri} does not know ({exc}). "
                f"Point mlflow.tracking_uri/MLFLOW_TRACKING_URI at the original store, or "
                f"start a new run with another name."
            ) from None
    run = client.create_run(
        _experiment_id(client, experiment, storage, uri), run_name=name, tags=tags or {}
    )
    marker.parent.mkdir(parents=True, exist_ok=True)
    tmp = marker.with_suffix(".tmp")
    tmp.write_text(run.info.run_id)
    tmp.replace(marker)
    return run.info.run_id


def log_params(client: Any, run_id: str, params: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """Log flat params; on a resumed run, keep the first value and record changes as tags.

    MLflow params are immutable, so a resubmission with e.g. ``train.epochs=3`` after 2 leaves
    the param at ``2`` and sets the tag ``changed.train.epochs = "2 -> 3"``. Returns the changes.
    """
    from mlflow.entities import Param, RunTag

    existing = client.get_run(run_id).data.params
    values = {k: str(v)[:6000] for k, v in params.items()}
    todo = [Param(k, v) for k, v in values.items() if k not in existing]
    changed = {k: (existing[k], v) for k, v in values.items() if k in existing and existing[k] != v}
    tags = [RunTag(f"changed.{k}", f"{old} -> {new}"[:5000]) for k, (old, new) in changed.items()]
    for i in range(0, max(len(todo), len(tags)), 100):
        client.log_batch(run_id, params=todo[i : i + 100], tags=tags[i : i + 100])
    return changed


def log_evaluation(
    ref: Any,
    results: list[dict[str, Any]],
    out: str | os.PathLike,
    *,
    length: str,
    experiment: str | None = None,
) -> dict[str, str]:
    """Log one evaluation job (``ray_jobs/score.py``) to MLflow.

    A new run "eval <model> <length>" (tags ``spoofdet.kind=evaluation``, ``spoofdet.model``,
    ``spoofdet.protocol``) in ``experiment``, else in the experiment of the run that trained the
    model (nested under it), else in ``spoofdet-eval``. Metrics ``<set>.<length>.<metric>``, linked
    to the logged model when its id is known; every file under ``out`` as artifacts under
    ``eval/<length>``. A registered version also gets one tag per set, ``eval.<set>.<length>``: a
    JSON object with the metrics, the rows evaluated (``selection``), ``score_type``, the window
    and hop, the set's ``fingerprint`` (``spoofdet.evaluation.sets.fingerprint``) and the evaluation run
    id; ``spoofdet promote`` reuses it instead of scoring the same version on the same set again.

    Args:
        ref: the resolved model (:class:`spoofdet.serve.registry.ModelRef`) with a ``tracking_uri``.
        results: per-set results of the evaluate job (``eval_set``, ``selection``, ``metrics``, ``protocol``).
        out: the folder of the job's files for this protocol.
        length: the protocol (``4s`` or ``full``).
        experiment: experiment name to log into instead of the model's.

    Returns:
        ``tracking_uri``, ``experiment_id``, ``run_id`` of the evaluation run.
    """
    import time

    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    reach(ref.tracking_uri)
    client = MlflowClient(tracking_uri=ref.tracking_uri)
    exp_id, run_id = _evaluation_run(client, ref, length, experiment)
    now = int(time.time() * 1000)
    metrics = [
        Metric(
            f"{r['eval_set']}.{length}.{k}", float(r["metrics"][k]), now, 0, model_id=ref.model_id
        )
        for r in results
        if r["metrics"]
        for k in _EVAL_KEYS
        if r["metrics"].get(k) is not None
    ]
    protocol = results[0]["protocol"] if results else {}
    params = [
        Param("model", ref.uri),
        Param("length", length),
        Param("window", str(protocol.get("window"))),
        Param("hop", str(protocol.get("hop"))),
        Param("eval_sets", ",".join(r["eval_set"] for r in results)[:6000]),
    ]
    client.log_batch(run_id, metrics=metrics, params=params)
    client.log_artifacts(run_id, str(out), f"eval/{length}")
    client.set_terminated(run_id)
    if ref.kind == "registry":
        _tag_version(client, ref, results, length, run_id)
    return {"tracking_uri": ref.tracking_uri, "experiment_id": exp_id, "run_id": run_id}


#: The metrics an evaluation logs per set, and records in the version's ``eval.*`` tags.
_EVAL_KEYS = ("eer", "min_dcf", "act_dcf", "cllr", "n_bonafide", "n_spoof")


def _evaluation_run(client: Any, ref: Any, length: str, experiment: str | None) -> tuple[str, str]:
    """``(experiment id, run id)`` of a new evaluation run, nested under the model's training run
    when it lives in the same experiment (see :func:`log_evaluation`)."""
    parent = None
    if ref.run_id:
        try:
            parent = client.get_run(ref.run_id)
        except Exception:  # noqa: BLE001 - the training run lives in another store: no nesting then
            parent = None
    if experiment or parent is None:
        exp_id = experiment_for(client, experiment or "spoofdet-eval", ref.tracking_uri)
    else:
        exp_id = parent.info.experiment_id
    tags = {
        "spoofdet.kind": "evaluation",
        "spoofdet.model": ref.label,
        "spoofdet.model_uri": ref.uri,
        "spoofdet.protocol": length,
    }
    if parent is not None and parent.info.experiment_id == exp_id:
        tags["mlflow.parentRunId"] = ref.run_id
    run_id = client.create_run(exp_id, run_name=f"eval {ref.label} {length}", tags=tags).info.run_id
    return exp_id, run_id


def _tag_version(
    client: Any, ref: Any, results: list[dict[str, Any]], length: str, run_id: str
) -> None:
    """One ``eval.<set>.<length>`` tag per evaluated set on the registered version."""
    for r in results:
        if r["metrics"]:
            record = {k: r["metrics"].get(k) for k in _EVAL_KEYS} | {
                "selection": r["selection"],
                "score_type": r["score_type"],
                "window": r["protocol"]["window"],
                "hop": r["protocol"]["hop"],
                "fingerprint": r.get("fingerprint"),
                "run_id": run_id,
            }
            client.set_model_version_tag(
                ref.name, ref.version, f"eval.{r['eval_set']}.{length}", json.dumps(record)
            )


@contextlib.contextmanager
def using_tracking_uri(uri: str) -> Iterator[None]:
    """Point MLflow's fluent API at ``uri`` for a block, then restore what was there.

    ``mlflow.set_tracking_uri`` also writes ``MLFLOW_TRACKING_URI`` into ``os.environ`` (so child
    processes inherit it); without the restore, a second run in the same process, or any job
    started from it, would silently log into the first run's store.
    """
    import mlflow

    before = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(before)


def __getattr__(name: str) -> Any:
    # the registered model moved to spoofdet.serve.model in 0.2; reachable here for this release only
    if name in ("DetectorModel", "log_detector", "frontend_for_rebuild"):
        import importlib

        return getattr(importlib.import_module("spoofdet.serve.model"), name)
    raise AttributeError(f"module 'spoofdet.tracking' has no attribute {name!r}")


# ----------------------------------------------------------------------------- lineage

#: How many hex digits of the folder fingerprint a dataset's MLflow digest keeps (MLflow stores
#: at most 36 characters; the full sha256 is in the dataset's profile as ``files_sha256``).
DIGEST_CHARS = 32


def shard_fingerprint(listing: dict[str, Any]) -> str:
    """The identity of a shard folder's data: sha256 over the ``name<TAB>sha256`` lines of its
    ``files.json`` entries, sorted by name. The same files give the same value wherever the folder
    lives and however ``files.json`` is formatted; any changed, added or removed shard changes it."""
    import hashlib

    h = hashlib.sha256()
    for entry in sorted(listing.get("files", []), key=lambda e: e["name"]):
        h.update(f"{entry['name']}\t{entry['sha256']}\n".encode())
    return h.hexdigest()


def shard_dataset(folder: str, name: str) -> dict[str, Any]:
    """``name``, ``digest``, ``source`` and ``profile`` of a shard folder as an MLflow dataset.

    digest: the first :data:`DIGEST_CHARS` hex digits of :func:`shard_fingerprint`; profile:
    ``rows``, ``hours``, ``bonafide``, ``spoof`` (from ``metadata.parquet``), ``quarantined``
    (``summary.json``), ``files_sha256`` (the full fingerprint) and ``input_fingerprint`` (the
    manifest's, ``_work/plan.json``) where the folder has them.

    Raises:
        FileNotFoundError: the folder has no ``files.json`` (not a finished shard folder); the
            message names it.
    """
    import pyarrow.parquet as pq

    from spoofdet.data import shards

    fs, base = shards.resolve_out(str(folder))
    listing_path = f"{base}/{shards.FILES_FILE}"
    if not shards.exists(fs, listing_path):
        raise FileNotFoundError(
            f"{folder}: no {shards.FILES_FILE}, so it is not a finished shard folder; run "
            "'spoofdet prepare' on it (or point the recipe at the finished folder)"
        )
    full = shard_fingerprint(shards.read_json(fs, listing_path))
    profile: dict[str, Any] = {"files_sha256": full}
    meta_path = f"{base}/{shards.METADATA_FILE}"
    if shards.exists(fs, meta_path):
        with fs.open_input_file(meta_path) as fh:
            cols = [c for c in ("label", "duration") if c in pq.read_schema(fh).names]
        with fs.open_input_file(meta_path) as fh:
            meta = pq.read_table(fh, columns=cols)
        labels = meta["label"].to_pylist() if "label" in cols else []
        profile["rows"] = meta.num_rows
        if "duration" in cols:
            profile["hours"] = round(sum(d or 0.0 for d in meta["duration"].to_pylist()) / 3600, 4)
        profile["bonafide"] = sum(1 for v in labels if v == 1)
        profile["spoof"] = sum(1 for v in labels if v == 0)
    for file, key, field in (
        (shards.SUMMARY_FILE, "quarantined", "quarantined"),
        (shards.PLAN_FILE, "input_fingerprint", "fingerprint"),
    ):
        path = f"{base}/{file}"
        if shards.exists(fs, path):
            value = shards.read_json(fs, path).get(field)
            if value is not None:
                profile[key] = value
    return {"name": name, "digest": full[:DIGEST_CHARS], "source": str(folder), "profile": profile}


def log_datasets(client: Any, run_id: str, datasets: list[tuple[dict[str, Any], str]]) -> int:
    """Log ``(shard_dataset(...), context)`` pairs as the run's dataset inputs (context tag
    ``training``/``validation``); a pair the run already has (same name, digest and context: a
    resubmission) is skipped. Returns how many were logged."""
    from mlflow.entities import Dataset, DatasetInput, InputTag

    had = {
        (i.dataset.name, i.dataset.digest, {t.key: t.value for t in i.tags}.get(CONTEXT_TAG))
        for i in client.get_run(run_id).inputs.dataset_inputs
    }
    todo = []
    for ds, context in datasets:
        if (ds["name"], ds["digest"], context) in had:
            continue
        scheme = ds["source"].split("://", 1)[0] if "://" in ds["source"] else "local"
        entity = Dataset(
            name=ds["name"],
            digest=ds["digest"],
            source_type=scheme,
            source=json.dumps({"uri": ds["source"]}),
            profile=json.dumps(ds["profile"]),
        )
        todo.append(DatasetInput(entity, tags=[InputTag(CONTEXT_TAG, context)]))
    if todo:
        client.log_inputs(run_id, datasets=todo)
    return len(todo)


#: MLflow's tag for a dataset input's role (``training``, ``validation``).
CONTEXT_TAG = "mlflow.data.context"


def git_tags(where: str | os.PathLike) -> dict[str, str]:
    """``mlflow.source.git.commit`` and ``spoofdet.git.dirty`` (``true``/``false``: uncommitted
    changes to tracked files) of the git checkout holding ``where``; ``{}`` when it is not in a
    checkout or git is missing (a cluster's working-dir copy has no ``.git``): never an error."""
    import subprocess

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", "-C", str(where), *args], capture_output=True, text=True, timeout=10
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if not commit:
        return {}
    status = git("status", "--porcelain", "--untracked-files=no")
    tags = {"mlflow.source.git.commit": commit}
    if status is not None:
        tags["spoofdet.git.dirty"] = "true" if status else "false"
    return tags
