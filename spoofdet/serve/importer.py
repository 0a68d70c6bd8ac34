"""Published seed checkpoints -> spoofdet model folders: what ``spoofdet import`` runs.

A seed's file is read without running code from it (``read_seed_checkpoint``), its keys are
converted (``convert_seed_state_dict``), and :func:`import_checkpoint` writes a model folder in
the format of a train run's ``final/`` (checked by rebuilding it)::

    OUT/model.pt            detector state dict (front-end + head), loads strictly
    OUT/model_config.json   build_model(**...) arguments (a front-end of the same shape, no download)
    OUT/import.json         provenance: seed, source file and sha256, published results, conventions
    OUT/summary.json        (with register_as) the MLflow run and registered version

``spoofdet score``, ``predict``, ``promote`` and ``mlflow models serve`` use it as any trained
model. Imported scores are the seed's own, raw (higher = more bona fide), not LLRs. The command
line is in :mod:`spoofdet.cli`; ``model.init_from`` in :mod:`spoofdet.serve.init_from`.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from spoofdet.errors import SpoofdetError
from spoofdet.models import build_model
from spoofdet.models.checkpoints import (
    SEEDS,
    SeedCheckpointError,
    convert_seed_state_dict,
    load_state_dict_strict,
    read_seed_checkpoint,
    seed_n_logits,
)

__all__ = ["SeedImportError", "seed_detector", "import_checkpoint", "sha256_of"]

#: Architecture a fine-tuned fairseq front-end is loaded into when ``--frontend`` is not given.
DEFAULT_FAIRSEQ_ARCH = "xlsr_300m_random"


class SeedImportError(SpoofdetError):
    """An import that cannot be done as asked; the message says what to pass instead."""


def sha256_of(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fit_frontend(
    model: nn.Module, converted: dict[str, Tensor]
) -> tuple[dict[str, Tensor], list[str]]:
    """Keep the converted front-end tensors the truncated model has; list those its computation
    never reads (layers above the one the seed taps, the final LayerNorm of a layer read before it).
    Anything else missing or extra is left for the strict load to report."""
    expected = model.state_dict()
    unused = [k for k in converted if k not in expected and _never_read(k, model)]
    if unused:
        converted = {k: v for k, v in converted.items() if k not in unused}
    return converted, unused


def _never_read(key: str, model: nn.Module) -> bool:
    if key.startswith("encoder.layer_norm."):
        return isinstance(model.encoder.layer_norm, nn.Identity)
    if key.startswith("encoder.layers."):
        return int(key.split(".")[2]) >= len(model.encoder.layers)
    return False


def seed_detector(
    seed: str, state_dict: dict[str, Tensor], *, frontend: str | os.PathLike | None = None
) -> tuple[nn.Module, dict[str, Any], dict[str, Any]]:
    """The spoofdet detector holding a seed checkpoint's weights.

    Args:
        seed: A key of :data:`~spoofdet.models.checkpoints.SEEDS`.
        state_dict: The checkpoint as read by ``read_seed_checkpoint``.
        frontend: For seeds whose file holds only a head on a pre-trained SSL model (Codecfake's
            layer-5 heads): that model's name or ``save_pretrained`` folder (required). For
            fine-tuned SSL seeds: the architecture the file's front-end loads into (default
            XLS-R 300M). Not allowed for seeds with a parameter-free front-end.

    Returns:
        ``(detector in eval mode, model_config, notes)``: ``build_model(**model_config)`` rebuilds
        it (random init, same shape) and ``detector.state_dict()`` fills it strictly; ``notes``
        lists front-end tensors of the file that the seed's computation never reads.

    Raises:
        SeedCheckpointError: The file does not match the seed's layout (both key lists).
        SeedImportError: A missing or superfluous ``frontend``.
    """
    spec = _check_frontend_arg(seed, frontend)
    head_sd, fe_sd = convert_seed_state_dict(state_dict, seed=seed)
    n_logits = seed_n_logits(head_sd, seed)
    layer = spec.model.get("frontend_layer")
    fe_kwargs = dict(spec.model.get("frontend_kwargs", {}))
    head_kwargs = dict(spec.model.get("head_kwargs", {}))
    notes: dict[str, Any] = {}
    fe = _seed_frontend(seed, fe_sd, frontend, layer, fe_kwargs, notes)
    if fe is not None:
        fe.eval()
    detector = build_model(
        fe if fe is not None else spec.frontend,
        spec.head,
        n_logits=n_logits,
        head_kwargs=head_kwargs,
        score=spec.score_rule,
    )
    fe_config: Any = fe.model.config.to_dict() if fe is not None else spec.frontend
    load_state_dict_strict(detector.head, head_sd)
    model_config = {
        "frontend": fe_config,
        "head": spec.head,
        "n_logits": n_logits,
        "head_kwargs": head_kwargs,
        "frontend_layer": layer,
        "score": spec.score_rule,
    }
    if fe_kwargs:
        model_config["frontend_kwargs"] = fe_kwargs
    return detector.eval(), model_config, notes


def _check_frontend_arg(seed: str, frontend: str | os.PathLike | None) -> Any:
    """The seed's spec, once ``seed`` is known and ``frontend`` is given exactly when needed."""
    if seed not in SEEDS:
        raise SeedImportError(f"seed {seed!r} is unknown; known seeds: {', '.join(sorted(SEEDS))}")
    spec = SEEDS[seed]
    if spec.frontend == "pretrained" and frontend is None:
        raise SeedImportError(
            f"seed {seed}: the file holds only the head ({spec.title}); it runs on a "
            "pre-trained XLS-R 300M: pass --frontend xlsr_300m (Hugging Face hub, "
            "downloaded once) or --frontend DIR (a save_pretrained folder)"
        )
    if spec.frontend not in ("fairseq", "pretrained") and frontend is not None:
        raise SeedImportError(
            f"seed {seed}: its front-end ({spec.frontend}) has no weights; leave out --frontend"
        )
    return spec


def _seed_frontend(
    seed: str,
    fe_sd: dict[str, Tensor] | None,
    frontend: str | os.PathLike | None,
    layer: Any,
    fe_kwargs: dict[str, Any],
    notes: dict[str, Any],
) -> Any:
    """The SSL front-end of an SSL seed (the file's fine-tuned weights, or the pre-trained model
    ``frontend`` names), else None (a parameter-free front-end); ``notes`` get what to record."""
    spec = SEEDS[seed]
    if spec.frontend not in ("fairseq", "pretrained"):
        return None
    from spoofdet.models.frontend import load_frontend  # imports transformers (seconds)

    if spec.frontend == "pretrained":
        fe = load_frontend(os.fspath(frontend), layer=layer, **fe_kwargs)
        notes["frontend_source"] = os.fspath(frontend)
        return fe
    fe = load_frontend(os.fspath(frontend or DEFAULT_FAIRSEQ_ARCH), layer=layer, **fe_kwargs)
    fe_state, unused = fit_frontend(fe.model, fe_sd)
    try:
        load_state_dict_strict(fe.model, fe_state)
    except ValueError as exc:
        raise SeedCheckpointError(
            f"seed {seed}: the file's fine-tuned front-end does not fit the "
            f"{frontend or DEFAULT_FAIRSEQ_ARCH} architecture "
            f"(pass --frontend NAME|DIR with the right one): {exc}"
        ) from None
    if unused:
        notes["frontend_tensors_never_read"] = unused
    return fe


def _check_rebuild(detector: nn.Module, folder: Path, num_samples: int) -> float:
    """Rebuild the written folder as every consumer does and compare outputs: max |difference|.

    A 1.5-s input where the model takes one (raw AASIST needs ~5 s of CPU for 4 s of audio),
    else the seed's own length (SLS and the LCNNs have a fixed input size)."""
    from spoofdet.serve.registry import load_detector

    rebuilt = load_detector(str(folder)).model
    for n in (24_000, num_samples):
        wave = torch.linspace(-60, 60, n).sin().mul(0.3).unsqueeze(0)
        try:
            with torch.no_grad():
                before = detector(wave)
        except (ValueError, RuntimeError):
            continue  # a fixed-length model: try the seed's length
        with torch.no_grad():
            return float((before - rebuilt(wave)).abs().max())
    raise RuntimeError(f"the imported detector runs on neither 24,000 nor {num_samples:,} samples")


def import_checkpoint(
    seed: str,
    checkpoint: str | os.PathLike,
    *,
    out: str | os.PathLike,
    frontend: str | os.PathLike | None = None,
    register_as: str | None = None,
    tracking_uri: str | None = None,
    experiment: str = "spoofdet-import",
) -> dict[str, Any]:
    """Convert ``checkpoint`` of ``seed`` into a model folder (module docstring); optionally
    register it.

    Returns:
        A summary: ``out``, ``seed``, ``source``, ``sha256``, ``n_logits``, ``parameters``,
        ``rebuild_max_abs_diff`` and, when registered, ``registered`` (name, version),
        ``model_uri``, ``mlflow_run_id``, ``tracking_uri``.
    """
    spec = SEEDS.get(seed)
    if spec is None:
        raise SeedImportError(f"seed {seed!r} is unknown; known seeds: {', '.join(sorted(SEEDS))}")
    checkpoint = Path(checkpoint)
    state = read_seed_checkpoint(checkpoint)
    detector, model_config, notes = seed_detector(seed, state, frontend=frontend)
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(detector.state_dict(), folder / "model.pt")
    (folder / "model_config.json").write_text(json.dumps(model_config, indent=2))
    provenance = _provenance(seed, checkpoint, model_config["n_logits"], notes)
    (folder / "import.json").write_text(json.dumps(provenance, indent=2))
    diff = _check_rebuild(detector, folder, spec.num_samples)
    if diff > 1e-4:
        raise RuntimeError(
            f"the written model folder {folder} does not reproduce the imported detector "
            f"(max |difference| {diff:g}); please report this"
        )
    summary: dict[str, Any] = {
        "out": str(folder),
        "seed": seed,
        "source": str(checkpoint),
        "sha256": provenance["sha256"],
        "n_logits": model_config["n_logits"],
        "parameters": sum(p.numel() for p in detector.parameters()),
        "rebuild_max_abs_diff": diff,
        "score": provenance["score"],
    }
    if register_as:
        registered = _register(
            folder,
            provenance,
            model_config,
            register_as=register_as,
            tracking_uri=tracking_uri,
            experiment=experiment,
            num_samples=spec.num_samples,
        )
        summary.update(registered)
        (folder / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def _provenance(
    seed: str, checkpoint: Path, n_logits: int, notes: dict[str, Any]
) -> dict[str, Any]:
    """What ``import.json`` records: the seed, the file, its published results and conventions."""
    spec = SEEDS[seed]
    return {
        "seed": seed,
        "system": spec.title,
        "repository": spec.repository,
        "source_file": checkpoint.name,
        "sha256": sha256_of(checkpoint),
        "published": dict(spec.published),
        "seed_convention": spec.convention,
        "score": _score_words(spec, n_logits),
        "num_samples": spec.num_samples,
        "label_convention": "1 = bona fide, 0 = spoof",
        **notes,
    }


def _score_words(spec: Any, n_logits: int) -> str:
    if n_logits == 1:
        return "the single bona fide logit, higher = more bona fide (raw, not calibrated)"
    if spec.score_rule == "bonafide_logit":
        return (
            "logit[:, 1], the bona fide logit, as the seed scores (higher = more bona fide; "
            "raw, not calibrated)"
        )
    if spec.score_rule == "neg_spoof_logit":
        return (
            "-logit[:, 0], the seed's spoof (fake) logit negated (index 0 after import; the seed "
            "writes it un-negated), higher = more bona fide; ranks clips as the seed's score files "
            "do (raw, not calibrated)"
        )
    return (
        "logit[:, 1] - logit[:, 0], the log-odds of the seed's softmax (bona fide at index 1 "
        "after import), "
        "higher = more bona fide; ranks clips as the seed's P(bona fide) does (raw, not calibrated)"
    )


def _register(
    folder: Path,
    provenance: dict[str, Any],
    model_config: dict[str, Any],
    *,
    register_as: str,
    tracking_uri: str | None,
    experiment: str,
    num_samples: int,
) -> dict[str, Any]:
    """Log the folder's model in a new MLflow run, register it as a version of ``register_as``
    and tag that version with the provenance."""
    import numpy as np
    from mlflow.tracking import MlflowClient

    from spoofdet.serve.model import log_detector
    from spoofdet.serve.registry import default_tracking_uri, set_version_tags
    from spoofdet.tracking import experiment_for

    uri = default_tracking_uri(tracking_uri)
    client = MlflowClient(tracking_uri=uri)
    tags = {
        "spoofdet.kind": "import",
        "seed": provenance["seed"],
        "source_file": provenance["source_file"],
        "source_sha256": provenance["sha256"],
    }
    run = client.create_run(
        experiment_for(client, experiment, uri),
        run_name=f"import {provenance['seed']} {provenance['source_file']}",
        tags=tags,
    )
    run_id = run.info.run_id
    try:
        info = log_detector(
            run_id=run_id,
            uri=uri,
            weights=str(folder / "model.pt"),
            model_config=model_config,
            input_example=np.zeros((1, num_samples), np.float32),
            register_as=register_as,
            metadata={"imported": provenance, "num_samples": num_samples},
        )
        client.log_artifact(run_id, str(folder / "import.json"))
        version = str(info.registered_model_version)
        set_version_tags(register_as, version, _version_tags(provenance), uri)
    except BaseException:
        client.set_terminated(run_id, status="FAILED")
        raise
    client.set_terminated(run_id)
    return {
        "registered": {"name": register_as, "version": version},
        "model_uri": info.model_uri,
        "mlflow_run_id": run_id,
        "tracking_uri": uri,
    }


def _version_tags(provenance: dict[str, Any]) -> dict[str, str]:
    """The registered version's tags: where the weights come from and what the score means."""
    return {
        "seed": provenance["seed"],
        "source_file": provenance["source_file"],
        "source_sha256": provenance["sha256"],
        "published": json.dumps(provenance["published"]),
        "seed_convention": provenance["seed_convention"],
        "score": provenance["score"],
        "label_convention": provenance["label_convention"],
    }


def main(argv: list[str] | None = None) -> int:
    """``python -m spoofdet.serve.importer ARGS`` is ``spoofdet import ARGS``."""
    import importlib
    import sys

    # the command line sits above serve/ (tests/test_layout.py): reached at run time only
    cli = importlib.import_module("spoofdet.cli")
    return cli.main(["import", *(sys.argv[1:] if argv is None else argv)])


def __getattr__(name: str) -> Any:
    # model.init_from moved to spoofdet.serve.init_from; reachable here for this release only
    if name in ("init_state_dict", "seeds_for_head"):
        from spoofdet.serve import init_from

        return getattr(init_from, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if __name__ == "__main__":
    raise SystemExit(main())
