"""The final model of a run: averaged, scored and calibrated where training ran; logged and
registered by the driver.

Contract: :func:`finish_remote` (what the driver calls after ``trainer.fit()``) runs
:func:`final_model` in a Ray task that asks for what one training worker asks for
(``scaling.cpus_per_worker``, and ``scaling.gpus_per_worker`` GPUs with ``scaling.use_gpu``), so
that neither the front-end nor the dev scoring ever runs on the driver, which on a cluster is a
head node without a GPU. The task averages the best ``train.average_best`` reported checkpoints
into ``<storage>/<name>/final/model.pt``, scores the dev set with the average on the device it got
(metrics and, where the scores allow, ``calibration.json``), checks it (:func:`check_final`) and,
for a cached-feature run, writes the waveform model (``detector.pt``). The driver then only talks
to MLflow (:func:`record_final`): it logs the final metrics, logs the MLflow model, registers it as
``mlflow.register_as`` and writes ``summary.json``; it returns that summary. :func:`finish` is the
same in one process (no Ray), for tests and tools that already run where the model belongs.

A model that learned nothing is never logged or registered: the driver raises
:class:`~spoofdet.training.steps.RunFailed` (after logging the final metrics) when the averaged
weights are not finite, when the final dev EER is at least ``train.max_final_dev_eer`` (50 % is
chance), or when more than ``data.max_bad_rows`` of the dev rows could not be decoded (they are
logged as ``data/bad_rows_final.json``); the task returns the refusal (reason and message) rather
than raising it, so it reaches the driver as the same :class:`RunFailed`, not as a Ray error.
Checkpoints are read with ``weights_only=True``. The MLflow model is logged without an input
example: MLflow validates an example by loading the model in the logging process (the driver);
the task scores that example (zeros, ``data.num_samples`` long) with the model it registers instead.
:func:`mark_failed` ends a run's MLflow run FAILED with its reason (tag ``spoofdet.failure``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import mlflow
import numpy as np
import torch
from mlflow.tracking import MlflowClient

from spoofdet.config import TrainJobConfig, dev_name, dev_sources
from spoofdet.data import pipeline as data
from spoofdet.data.features import read_info
from spoofdet.evaluation.calibration import CalibrationError, diagnose, fit_calibration
from spoofdet.evaluation.metrics import act_dcf, cllr
from spoofdet.models import build_model
from spoofdet.models.cached import waveform_detector
from spoofdet.models.checkpoints import average_state_dicts, load_state_dict_strict
from spoofdet.tracking import using_tracking_uri
from spoofdet.training.dev import dev_metrics
from spoofdet.training.steps import RunFailed, check_bad_rows, model_kwargs

#: The MLflow run tags that say why a run failed (``spoofdet.failure``: a short reason).
FAILURE_TAG, FAILURE_MESSAGE_TAG = "spoofdet.failure", "spoofdet.failure_message"


def average_best(result: Any, cfg: TrainJobConfig, out: Path) -> tuple[list[int], dict]:
    """Average the best K reported checkpoints (by ``train.select``; the latest without a dev
    set) into ``out/model.pt``; returns their epochs and the averaged state dict."""
    ranked = [
        (c, m) for c, m in result.best_checkpoints if cfg.train.select in m or cfg.data.dev is None
    ]
    if cfg.data.dev is not None:
        ranked.sort(key=lambda cm: cm[1][cfg.train.select])
    else:
        ranked.sort(key=lambda cm: -cm[1]["epoch"])
    chosen = ranked[: cfg.train.average_best]
    if not chosen:
        raise RuntimeError("training reported no checkpoint; nothing to average")
    states = []
    for ckpt, _ in chosen:
        with ckpt.as_directory() as d:
            states.append(torch.load(Path(d) / "model.pt", map_location="cpu", weights_only=True))
    averaged = average_state_dicts(states)
    out.mkdir(parents=True, exist_ok=True)
    torch.save(averaged, out / "model.pt")
    return [m["epoch"] for _, m in chosen], averaged


def calibrate_on_dev(
    cfg: TrainJobConfig,
    model: Any,
    out: Path,
    bad: list[dict] | None = None,
    device: str | torch.device = "cpu",
) -> dict[str, Any]:
    """The final model's dev metrics and, where the scores allow one, a calibration (raw scores ->
    LLRs) fitted on them and stored beside the model (``out/calibration.json``). Dev rows that
    could not be decoded are counted (``final_dev_bad_rows``) and appended to ``bad``. Batches go
    to ``device``, where ``model`` must already be. With several dev sets, each set's metrics are
    ``final_dev.<name>.*``, ``final_dev_eer`` / ``final_dev_min_dcf`` their means, and the
    calibration (with ``final_dev_act_dcf`` / ``final_dev_cllr``) is fitted on all their scores
    pooled."""
    recipe = data.Recipe(num_samples=cfg.data.num_samples, seed=cfg.seed)
    per_set, skipped = [], []
    for src in dev_sources(cfg.data):
        scores, labels = [], []
        with torch.no_grad():
            for batch in data.iter_eval_part(
                data.Source(src.shards),
                0,
                1,
                batch_size=cfg.train.dev_batch_size,
                recipe=recipe,
                max_batches=cfg.train.max_dev_batches,
                bad=skipped,
            ):
                wave = data.model_input(batch).to(device)
                scores += model.score(wave).float().cpu().tolist()
                labels += batch["label"].tolist()
        per_set.append((dev_name(src), np.asarray(scores), np.asarray(labels)))
    if bad is not None:
        bad.extend(skipped)
    s = np.concatenate([p[1] for p in per_set])
    y = np.concatenate([p[2] for p in per_set])
    if len(per_set) == 1:
        found = {f"final_dev_{k}": v for k, v in dev_metrics(s, y).items()}
    else:  # each set on its own, the run's numbers their means (as the selection metric)
        each = {name: dev_metrics(si, yi) for name, si, yi in per_set}
        found = {f"final_dev.{n}.{k}": v for n, m in each.items() for k, v in m.items()}
        for k in ("eer", "min_dcf"):
            found[f"final_dev_{k}"] = float(np.mean([m[k] for m in each.values()]))
        found["final_dev_n"] = int(len(s))
    found["final_dev_bad_rows"] = len(skipped)
    try:  # raw scores -> LLRs, fitted on the dev scores of the final model, stored with it
        cal = fit_calibration(s[y == 1], s[y == 0])
        cal.save(out / "calibration.json")
        llr = cal.apply(s)
        found.update(
            calibration=str(out / "calibration.json"),
            final_dev_act_dcf=act_dcf(llr[y == 1], llr[y == 0]),
            final_dev_cllr=cllr(llr[y == 1], llr[y == 0]),
        )
    except CalibrationError as exc:
        print(refused_calibration(s[y == 1], s[y == 0], exc), file=sys.stderr)
    return found


def refused_calibration(bonafide: Any, spoof: Any, exc: CalibrationError) -> str:
    """The note printed when the final model gets no calibration: why, what the dev scores
    measure (:func:`spoofdet.evaluation.calibration.diagnose`: at chance, inverted or too few
    trials) and what follows for the registered model."""
    text = str(exc)
    if "Measured:" not in text:  # the negative-slope error already carries the diagnosis
        try:
            text += " " + diagnose(bonafide, spoof)
        except CalibrationError:  # non-finite scores: exc already says so
            pass
    return (
        f"no calibration stored: {text} The model is logged with raw scores (spoofdet predict "
        "gives no llr or decision); once fixed, calibrate it with `spoofdet calibrate --model "
        "models:/NAME/VERSION --dev DEV_SHARDS --register`."
    )


def waveform_model(cfg: TrainJobConfig, averaged: dict, out: Path) -> tuple[Any, dict, Path, dict]:
    """A head trained on cached features as a waveform model: the recorded front-end (frozen) +
    the trained head, saved to ``out/detector.pt``; returns (the model, its rebuild config,
    weights, metadata)."""
    model, rebuild, full = waveform_detector(
        cfg.data.train[0].shards,
        averaged,
        head=cfg.model.head,
        n_logits=cfg.model.n_logits,
        head_kwargs=dict(cfg.model.head_kwargs),
    )
    torch.save(full, out / "detector.pt")
    features = read_info(cfg.data.train[0].shards)
    extra = {"trained_on": "cached features", "features": features}
    return model, rebuild, out / "detector.pt", extra


def registered_model(
    cfg: TrainJobConfig, averaged: dict, model: Any, out: Path, device: str | torch.device
) -> dict[str, Any]:
    """What the driver logs as the MLflow model: ``{"config", "weights", "metadata"}`` (the
    ``build_model`` arguments that rebuild it, its weights file, metadata to add). A cached-feature
    run registers the waveform model (:func:`waveform_model`), not the head alone. The model to
    register scores the input example (zeros, ``data.num_samples`` long) here, the check MLflow
    would otherwise make by loading the model in the driver; an error names what came back."""
    from spoofdet.serve.registry import frontend_for_rebuild

    rebuild = dict(model_kwargs(cfg), frontend=frontend_for_rebuild(cfg.model.frontend))
    weights, extra = out / "model.pt", {}
    if cfg.model.frontend == "cached":
        model, rebuild, weights, extra = waveform_model(cfg, averaged, out)
        model = model.to(device)
    with torch.no_grad():
        example = torch.zeros(1, cfg.data.num_samples, device=device)
        got = model.score(example)
    if tuple(got.shape) != (1,):
        raise RuntimeError(
            f"run {cfg.name}: the final model ({weights}) scores a (1, {cfg.data.num_samples}) "
            f"waveform batch as shape {tuple(got.shape)}, not (1,): it cannot be served. Check "
            "model.head and model.n_logits."
        )
    return {"config": rebuild, "weights": str(weights), "metadata": extra}


def log_and_register(
    cfg: TrainJobConfig, summary: dict, registered: dict, *, run_id: str, uri: str
) -> None:
    """Log the final model (``registered``: :func:`registered_model`) as the run's MLflow model,
    registered as ``mlflow.register_as``; adds ``model_uri`` (and ``registered``) to ``summary``.
    No input example: MLflow would load the model here to validate it (the task checked it)."""
    # Imported here, not at the top: defining its MLflow model class prints a warning, which
    # `--help`, `--validate` and every worker would otherwise show.
    from spoofdet.serve.model import log_detector

    with using_tracking_uri(uri):  # restores MLFLOW_TRACKING_URI afterwards (see spoofdet.tracking)
        if cfg.model.frontend == "cached":  # final_model holds the head-only average
            summary["waveform_model"] = registered["weights"]
        info = log_detector(
            run_id=run_id,
            uri=uri,
            weights=registered["weights"],
            model_config=registered["config"],
            input_example=None,
            register_as=cfg.mlflow.register_as,
            calibration=summary.get("calibration"),
            metadata={
                "train_sources": [s.shards for s in cfg.data.train],
                "num_samples": cfg.data.num_samples,
                **registered["metadata"],
            },
        )
        summary["model_uri"] = info.model_uri
        final = {k: v for k, v in summary.items() if k.startswith("final_dev")}
        if final and info.model_id:  # the logged model's page shows the averaged model's numbers
            with mlflow.start_run(run_id=run_id):
                mlflow.log_metrics(final, model_id=info.model_id)
        if cfg.mlflow.register_as:
            summary["registered"] = {
                "name": cfg.mlflow.register_as,
                "version": info.registered_model_version,
            }
            MlflowClient(tracking_uri=uri).update_model_version(
                cfg.mlflow.register_as,
                str(info.registered_model_version),
                description=version_description(cfg, summary),
            )


def version_description(cfg: TrainJobConfig, summary: dict) -> str:
    """The registered version's description: the final (averaged) model's dev metrics, never an
    intermediate epoch's, and where they come from."""
    epochs = ", ".join(map(str, summary["averaged_epochs"]))
    text = f"spoofdet run {cfg.name}: the average of epochs {epochs}"
    if "final_dev_eer" in summary:
        devs = dev_sources(cfg.data)
        where = ", ".join(d.shards for d in devs) or "no dev set"
        mean = f" (means of {len(devs)} dev sets)" if len(devs) > 1 else ""
        text += (
            f"; final dev EER {summary['final_dev_eer']:.2f} %, minDCF "
            f"{summary['final_dev_min_dcf']:.4f}{mean} over {summary['final_dev_n']} clips "
            f"({where}), scored with this model"
        )
    calibrated = "calibrated LLRs" if summary.get("calibration") else "raw scores (not calibrated)"
    return f"{text}. Output: {calibrated}, higher = more bona fide."


def log_final(summary: dict, bad: list[dict], *, run_id: str, uri: str) -> None:
    """The final dev metrics, the averaged epochs (a tag: a resumed run may average others) and
    the undecodable dev rows (``data/bad_rows_final.json``), logged whether or not the model
    passes :func:`check_final`."""
    with using_tracking_uri(uri), mlflow.start_run(run_id=run_id):
        mlflow.log_metrics({k: v for k, v in summary.items() if k.startswith("final_dev")})
        mlflow.set_tag("final.averaged_epochs", ",".join(map(str, summary["averaged_epochs"])))
        if bad:
            mlflow.log_dict({"count": len(bad), "rows": bad}, "data/bad_rows_final.json")


def check_final(cfg: TrainJobConfig, summary: dict, averaged: dict, bad: list[dict]) -> None:
    """Raise :class:`RunFailed` for a final model that must not be logged: non-finite weights,
    too many undecodable dev rows, or a dev EER no better than ``train.max_final_dev_eer``."""
    broken = [
        k for k, v in averaged.items() if v.is_floating_point() and not torch.isfinite(v).all()
    ]
    if broken:
        raise RunFailed(
            "nonfinite_weights",
            f"run {cfg.name}: the averaged model of epochs {summary['averaged_epochs']} has "
            f"non-finite weights ({', '.join(broken[:3])}); training diverged. Lower optim.lr or "
            "set optim.grad_clip, and train again.",
        )
    if "final_dev_n" in summary:
        n, where = summary["final_dev_n"], "dev rows of the final scoring"
        check_bad_rows(cfg, where, len(bad), n, bad, "data/bad_rows_final.json")
    limit, eer = cfg.train.max_final_dev_eer, summary.get("final_dev_eer")
    if limit is not None and eer is not None and not eer < limit:  # a NaN EER fails too
        raise RunFailed(
            "chance_eer",
            f"run {cfg.name}: the final model's dev EER is {eer:.2f}% over "
            f"{summary['final_dev_n']} clips, not below train.max_final_dev_eer={limit} (50 = "
            "chance): it learned nothing usable. Check the labels (1 = bona fide), optim.lr and "
            "train.epochs; or set train.max_final_dev_eer=null to keep such a model.",
        )


def final_model(
    best: list[tuple[Any, dict]], cfg: TrainJobConfig, *, run_id: str, uri: str, storage: str
) -> dict[str, Any]:
    """The part of :func:`finish` that needs the model (the Ray task of :func:`finish_remote`):
    average the best K of ``best`` (``Result.best_checkpoints``), score the dev set with the
    average on this process's device (the GPU Ray gave it with ``scaling.use_gpu``), check it
    (:func:`check_final`) and prepare what to register (:func:`registered_model`).

    Returns ``{"summary", "bad", "failure", "registered"}``: the summary so far, the undecodable
    dev rows, and either ``failure`` (``{"reason", "message"}`` of the refusal, ``registered``
    None) or ``registered``. A refusal is returned, not raised, so that it reaches the driver
    intact; any other error is raised."""
    out = Path(storage) / cfg.name / "final"
    epochs, averaged = average_best(SimpleNamespace(best_checkpoints=best), cfg, out)
    device = torch.device("cuda" if cfg.scaling.use_gpu and torch.cuda.is_available() else "cpu")
    summary: dict[str, Any] = {
        "name": cfg.name,
        "storage": storage,
        "mlflow_run_id": run_id,
        "tracking_uri": uri,
        "averaged_epochs": epochs,
        "final_model": str(out / "model.pt"),
        "scored_on": device.type,
    }
    model = build_model(**model_kwargs(cfg)).eval()
    load_state_dict_strict(model, averaged)
    model = model.to(device)
    bad: list[dict] = []
    if cfg.data.dev is not None:
        summary.update(calibrate_on_dev(cfg, model, out, bad, device))
    try:
        check_final(cfg, summary, averaged, bad)
    except RunFailed as failed:
        refused = {"reason": failed.reason, "message": str(failed)}
        return {"summary": summary, "bad": bad, "failure": refused, "registered": None}
    registered = registered_model(cfg, averaged, model, out, device)
    return {"summary": summary, "bad": bad, "failure": None, "registered": registered}


def record_final(done: dict[str, Any], cfg: TrainJobConfig, *, run_id: str, uri: str) -> dict:
    """The driver's part: log the final metrics (:func:`log_final`), raise the refusal of
    :func:`final_model` as :class:`RunFailed`, else log and register the model and write
    ``summary.json``; returns the summary. Builds no model and reads no audio."""
    summary, bad = done["summary"], done["bad"]
    log_final(summary, bad, run_id=run_id, uri=uri)
    if done["failure"] is not None:
        raise RunFailed(done["failure"]["reason"], done["failure"]["message"])
    log_and_register(cfg, summary, done["registered"], run_id=run_id, uri=uri)
    out = Path(summary["final_model"]).parent
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def finish(
    result: Any, cfg: TrainJobConfig, *, run_id: str, uri: str, storage: str
) -> dict[str, Any]:
    """:func:`finish_remote` in this process (no Ray): average the best K checkpoints, score the
    dev set with the average, check it (:func:`check_final`), log and register it."""
    where = {"run_id": run_id, "uri": uri}
    done = final_model(list(result.best_checkpoints), cfg, **where, storage=storage)
    return record_final(done, cfg, **where)


def final_resources(cfg: TrainJobConfig) -> dict[str, float]:
    """The Ray task options of the final scoring: what one training worker reserves."""
    gpus = cfg.scaling.gpus_per_worker if cfg.scaling.use_gpu else 0
    return {"num_cpus": cfg.scaling.cpus_per_worker, "num_gpus": gpus}


def finish_remote(
    result: Any, cfg: TrainJobConfig, *, run_id: str, uri: str, storage: str
) -> dict[str, Any]:
    """What the driver calls after training (same arguments and return value as :func:`finish`):
    :func:`final_model` runs in a Ray task with one training worker's resources
    (:func:`final_resources`), on the device it gets; the driver then logs and registers
    (:func:`record_final`). Raises :class:`RunFailed` for a refused model, like :func:`finish`."""
    import ray

    task = ray.remote(final_model).options(name="spoofdet-final-model", **final_resources(cfg))
    where = {"run_id": run_id, "uri": uri}
    done = ray.get(task.remote(list(result.best_checkpoints), cfg, **where, storage=storage))
    return record_final(done, cfg, **where)


def mark_failed(uri: str, run_id: str, reason: str, message: str) -> None:
    """The MLflow run FAILED, with ``spoofdet.failure`` (the reason) and the message as tags."""
    try:
        client = MlflowClient(tracking_uri=uri)
        client.set_tag(run_id, FAILURE_TAG, reason)
        client.set_tag(run_id, FAILURE_MESSAGE_TAG, message[:5000])
        client.set_terminated(run_id, "FAILED")
    except Exception as exc:  # the store is gone too: say so, keep the run's own error
        print(f"train: could not mark MLflow run {run_id} FAILED: {exc}", file=sys.stderr)


def clear_failure(uri: str, run_id: str) -> None:
    """A resubmitted run that now succeeded no longer carries an earlier failure's tags."""
    try:
        client = MlflowClient(tracking_uri=uri)
        tags = client.get_run(run_id).data.tags
        for key in (FAILURE_TAG, FAILURE_MESSAGE_TAG):
            if key in tags:
                client.delete_tag(run_id, key)
    except Exception as exc:  # the model is registered; a stale tag is no reason to fail now
        print(f"train: could not clear run {run_id}'s earlier failure tags: {exc}", file=sys.stderr)


def failure_summary(cfg: TrainJobConfig, failed: RunFailed, *, run_id: str, uri: str) -> dict:
    """What ``--json`` prints for a failed run."""
    return {
        "name": cfg.name,
        "mlflow_run_id": run_id,
        "tracking_uri": uri,
        "failure": failed.reason,
        "error": str(failed),
    }
