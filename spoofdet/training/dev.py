"""Scoring the dev set during training: each rank scores its part, all ranks gather the parts.

Contract: :func:`dev_set` is the recipe's dev shard folders and how their clips are cut (None
without ``data.dev``); :func:`evaluate_dev` returns the same ``dev_loss`` / ``dev_eer`` /
``dev_min_dcf`` / ``dev_threshold`` / ``dev_n`` / ``dev_bad_rows`` on every rank for one dev set,
and hands every rank the dev rows that could not be decoded on any rank; :func:`score_dev` scores
every dev set: with several (``data.dev`` a list, as AMSDF selects on three), each set's numbers
are ``dev.<name>.loss`` / ``.eer`` / ``.min_dcf`` / ``.n`` and ``dev_loss`` / ``dev_eer`` /
``dev_min_dcf`` are their means (the selection metric averaged over the sets; ``dev_n`` and
``dev_bad_rows`` are sums, and there is no pooled ``dev_threshold``). :func:`dev_metrics` is shared
with the driver's final scoring (``spoofdet.training.final``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from spoofdet.config import TrainJobConfig, dev_name, dev_sources
from spoofdet.data import pipeline as data
from spoofdet.evaluation.metrics import compute_eer, min_dcf
from spoofdet.models import score_from_logits
from spoofdet.training.steps import (
    RunFailed,
    check_bad_rows,
    gather,
    uses_bf16,
    weighted_loss,
)


def dev_metrics(scores: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """EER (%), minDCF, EER threshold and clip count of dev scores: the worker's and ``finish``'s."""
    eer, threshold = compute_eer(scores[labels == 1], scores[labels == 0])
    return {
        "eer": 100.0 * eer,
        "min_dcf": min_dcf(scores[labels == 1], scores[labels == 0])[0],
        "threshold": float(threshold),
        "n": int(len(scores)),
    }


def dev_set(cfg: TrainJobConfig) -> list[tuple[data.Source, data.Recipe]] | None:
    """Each dev set's shards and how its clips are cut (RawBoost only with ``data.dev_rawboost``);
    None without ``data.dev``."""
    recipe = data.Recipe(
        num_samples=cfg.data.num_samples,
        seed=cfg.seed,
        rawboost_algo=cfg.data.rawboost.algo if cfg.data.dev_rawboost else 0,
        rawboost_p=cfg.data.rawboost.p,
    )
    sets = [(data.Source(src.shards, name=dev_name(src)), recipe) for src in dev_sources(cfg.data)]
    return sets or None


def evaluate_dev(
    cfg: TrainJobConfig,
    net: Any,
    dev: tuple[data.Source, data.Recipe],
    class_w: Any,
    *,
    rank: int,
    world: int,
    device: Any,
    bad: list[dict] | None = None,
) -> dict[str, Any]:
    """Dev loss and metrics: each rank scores its part of ``dev`` (source, recipe); all ranks
    gather the parts and compute the same numbers. The rows skipped as undecodable on any rank
    are counted (``dev_bad_rows``) and, with ``bad`` a list, appended to it in rank order."""
    source, recipe = dev
    bf16 = uses_bf16(cfg)
    net.eval()
    scores, labels, num, den, skipped = [], [], 0.0, 0.0, []
    with torch.no_grad():
        for batch in data.iter_eval_part(
            source,
            rank,
            world,
            batch_size=cfg.train.dev_batch_size,
            recipe=recipe,
            max_batches=cfg.train.max_dev_batches,
            bad=skipped,
        ):
            wave, label = data.model_input(batch).to(device), batch["label"].to(device)
            logits = net(wave.to(torch.bfloat16) if bf16 else wave)
            num += float(weighted_loss(logits, label, class_w, reduction="sum"))
            den += float(class_w[label].sum())
            scores += score_from_logits(logits.float()).cpu().tolist()
            labels += label.cpu().tolist()
    net.train()
    parts = gather((scores, labels, num, den, skipped), world)
    s = np.concatenate([np.asarray(p[0], dtype=np.float64) for p in parts])
    y = np.concatenate([np.asarray(p[1], dtype=np.int64) for p in parts])
    loss = sum(p[2] for p in parts) / max(sum(p[3] for p in parts), 1e-12)
    every_bad = [row for p in parts for row in p[4]]
    if bad is not None:
        bad.extend(every_bad)
    return {
        "dev_loss": loss,
        **{f"dev_{k}": v for k, v in dev_metrics(s, y).items()},
        "dev_bad_rows": len(every_bad),
    }


def score_dev(
    cfg: TrainJobConfig, net: Any, dev: Any, class_w: Any, metrics: dict, bad: dict, **ranks: Any
) -> RunFailed | None:
    """Score every dev set of ``dev`` (:func:`dev_set`) into ``metrics`` and their undecodable
    rows into ``bad["dev"]``; the failure when there were too many."""
    rows: list[dict] = []
    if len(dev) == 1:
        metrics.update(evaluate_dev(cfg, net, dev[0], class_w, bad=rows, **ranks))
    else:
        metrics.update(
            mean_over_sets(
                {
                    src.name: evaluate_dev(cfg, net, (src, recipe), class_w, bad=rows, **ranks)
                    for src, recipe in dev
                }
            )
        )
    bad["dev"] = {"count": len(rows), "rows": rows}
    epoch, n = metrics["epoch"], metrics["dev_n"]
    try:
        what = f"dev rows scored in epoch {epoch}"
        check_bad_rows(cfg, what, len(rows), n, rows, f"data/bad_rows_epoch{epoch}.json")
    except RunFailed as failed:
        return failed
    return None


def mean_over_sets(per_set: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Several dev sets' :func:`evaluate_dev` results as one: each set's ``dev.<name>.<metric>``
    and the means of ``dev_loss``, ``dev_eer`` and ``dev_min_dcf`` (every set weighs the same, as
    in a paper's average over test sets), with ``dev_n`` and ``dev_bad_rows`` summed."""
    out: dict[str, Any] = {}
    for name, m in per_set.items():
        for key in ("loss", "eer", "min_dcf", "threshold", "n"):
            out[f"dev.{name}.{key}"] = m[f"dev_{key}"]
    for key in ("dev_loss", "dev_eer", "dev_min_dcf"):
        out[key] = float(np.mean([m[key] for m in per_set.values()]))
    for key in ("dev_n", "dev_bad_rows"):
        out[key] = int(sum(m[key] for m in per_set.values()))
    return out
