"""Published seed checkpoints -> spoofdet models: ``spoofdet import`` and ``model.init_from``.

``spoofdet import SEED --checkpoint FILE`` reads a checkpoint as its authors published it
(:func:`spoofdet.models.checkpoints.read_seed_checkpoint`: never runs code from the file),
converts its keys (:func:`~spoofdet.models.checkpoints.convert_seed_state_dict`), builds the
detector that computes what the seed computes, checks that a rebuild from the written folder
gives the same outputs, and writes a model folder of the same format as a train run's
``final/``::

    OUT/model.pt            detector state dict (front-end + head), loads strictly
    OUT/model_config.json   build_model(**...) arguments; the front-end as a transformers config
                            (random init of the same shape, filled from model.pt: no download)
    OUT/import.json         provenance: seed, source file name and sha256, published results,
                            the seed's label/score convention, what the score is now
    OUT/summary.json        (with --register-as) the MLflow run and registered version

``spoofdet score``, ``predict``, ``promote`` and ``mlflow models serve`` then use it as any
trained model. Imported models are uncalibrated: their scores are the seed's own (higher = more
bona fide after the one translation at import), not log-likelihood ratios.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from spoofdet.models import HEADS, build_model
from spoofdet.models.checkpoints import (
    SEEDS,
    SeedCheckpointError,
    convert_seed_state_dict,
    load_state_dict_strict,
    read_seed_checkpoint,
    seed_n_logits,
)

__all__ = ["SeedImportError", "seed_detector", "import_checkpoint", "init_state_dict", "sha256_of"]

#: Architecture a fine-tuned fairseq front-end is loaded into when ``--frontend`` is not given.
DEFAULT_FAIRSEQ_ARCH = "xlsr_300m_random"


class SeedImportError(ValueError):
    """An import that cannot be done as asked; the message says what to pass instead."""


def sha256_of(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _fit_frontend(
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
    head_sd, fe_sd = convert_seed_state_dict(state_dict, seed=seed)
    n_logits = seed_n_logits(head_sd, seed)
    layer = spec.model.get("frontend_layer")
    fe_kwargs = dict(spec.model.get("frontend_kwargs", {}))
    head_kwargs = dict(spec.model.get("head_kwargs", {}))
    notes: dict[str, Any] = {}
    if spec.frontend in ("fairseq", "pretrained"):
        from spoofdet.models.frontend import (
            load_frontend,
        )  # imports transformers (seconds): only when needed
    if spec.frontend == "fairseq":
        fe = load_frontend(os.fspath(frontend or DEFAULT_FAIRSEQ_ARCH), layer=layer, **fe_kwargs)
        fe_state, unused = _fit_frontend(fe.model, fe_sd)
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
    elif spec.frontend == "pretrained":
        fe = load_frontend(os.fspath(frontend), layer=layer, **fe_kwargs)
        notes["frontend_source"] = os.fspath(frontend)
    else:
        fe = None
    if fe is not None:
        fe.eval()
        detector = build_model(
            fe, spec.head, n_logits=n_logits, head_kwargs=head_kwargs, score=spec.score_rule
        )
        fe_config: Any = fe.model.config.to_dict()
    else:
        detector = build_model(
            spec.frontend,
            spec.head,
            n_logits=n_logits,
            head_kwargs=head_kwargs,
            score=spec.score_rule,
        )
        fe_config = spec.frontend
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
    provenance = {
        "seed": seed,
        "system": spec.title,
        "repository": spec.repository,
        "source_file": checkpoint.name,
        "sha256": sha256_of(checkpoint),
        "published": dict(spec.published),
        "seed_convention": spec.convention,
        "score": _score_words(spec, model_config["n_logits"]),
        "num_samples": spec.num_samples,
        "label_convention": "1 = bona fide, 0 = spoof",
        **notes,
    }
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
        summary.update(
            _register(
                folder,
                provenance,
                model_config,
                register_as=register_as,
                tracking_uri=tracking_uri,
                experiment=experiment,
                num_samples=spec.num_samples,
            )
        )
        (folder / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def _score_words(spec: Any, n_logits: int) -> str:
    if n_logits == 1:
        return "the single bona fide logit, higher = more bona fide (raw, not calibrated)"
    if spec.score_rule == "bonafide_logit":
        return (
            "logit[:, 1], the bona fide logit, as the seed scores (higher = more bona fide; "
            "raw, not calibrated)"
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
        set_version_tags(
            register_as,
            version,
            {
                "seed": provenance["seed"],
                "source_file": provenance["source_file"],
                "source_sha256": provenance["sha256"],
                "published": json.dumps(provenance["published"]),
                "seed_convention": provenance["seed_convention"],
                "score": provenance["score"],
                "label_convention": provenance["label_convention"],
            },
            uri,
        )
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


# ---- model.init_from ---------------------------------------------------------------------------


def init_state_dict(
    init_from: str,
    model: nn.Module,
    *,
    head: str,
    seed: str | None = None,
    tracking_uri: str | None = None,
) -> OrderedDict[str, Tensor]:
    """The state dict that initialises ``model`` (a recipe's detector) from ``init_from``.

    ``init_from`` is a spoofdet model (``models:/NAME/VERSION``, ``models:/NAME@ALIAS``,
    ``runs:/...``, a ``final/`` or imported folder) or a checkpoint file: a spoofdet state dict,
    or a seed's published checkpoint, converted (``seed`` names it; without it every seed whose
    head is ``head`` is tried and exactly one must fit). A seed file that holds no front-end
    keeps ``model``'s own front-end weights (the recipe's pre-trained one).

    Raises:
        SeedImportError: The source does not fit the model; the message lists what was tried.
    """
    from spoofdet.serve.registry import load_detector

    path = Path(init_from)
    if not path.is_file():
        loaded = load_detector(init_from, tracking_uri=tracking_uri)
        return OrderedDict(loaded.model.state_dict())
    state = read_seed_checkpoint(path)
    tried = []
    own = model.state_dict()
    if set(state) == set(own) or {k.removeprefix("module.") for k in state} == set(own):
        return OrderedDict((k.removeprefix("module."), v) for k, v in state.items())
    candidates = [seed] if seed else [name for name, spec in SEEDS.items() if spec.head == head]
    if not candidates:
        raise SeedImportError(
            f"{path}: not a spoofdet state dict of this model, and no seed system uses head "
            f"{head!r}; seeds: {', '.join(f'{n} ({s.head})' for n, s in sorted(SEEDS.items()))}"
        )
    fits = []
    for name in candidates:
        try:
            head_sd, fe_sd = convert_seed_state_dict(state, seed=name)
        except SeedCheckpointError as exc:
            tried.append(f"{name}: {str(exc).splitlines()[0]}")
            continue
        merged = OrderedDict(own)
        merged.update((f"head.{k}", v) for k, v in head_sd.items())
        if fe_sd is not None:
            fe_model = model.frontend.model
            fe_sd, _ = _fit_frontend(fe_model, fe_sd)
            merged.update((f"frontend.model.{k}", v) for k, v in fe_sd.items())
        if set(merged) == set(own) and all(merged[k].shape == own[k].shape for k in own):
            fits.append((name, merged))
        else:
            tried.append(
                f"{name}: converted, but the recipe's model has another shape (model.head_kwargs, "
                "n_logits or front-end differ from the seed's)"
            )
    if len(fits) == 1:
        return fits[0][1]
    if len(fits) > 1:
        raise SeedImportError(
            f"{path} fits several seeds ({', '.join(n for n, _ in fits)}); name one with "
            "model.init_seed"
        )
    raise SeedImportError(
        f"{path}: neither a state dict of this model nor a checkpoint of a seed it fits; tried:\n  "
        + "\n  ".join(tried)
    )


def seeds_for_head(head: str) -> list[str]:
    """Seed systems whose checkpoints load into ``head``."""
    if head not in HEADS:
        return []
    return sorted(name for name, spec in SEEDS.items() if spec.head == head)


# ---- spoofdet import ---------------------------------------------------------------------------


def _seed_table() -> str:
    rows = []
    for name, spec in SEEDS.items():
        fe = {
            "fairseq": "fine-tuned XLS-R in the file",
            "pretrained": "needs --frontend (pre-trained XLS-R)",
        }
        rows.append(
            f"  {name:<24} {spec.title} [{fe.get(spec.frontend, spec.frontend + ' front-end')}]"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    import argparse
    import sys

    ap = argparse.ArgumentParser(
        prog="spoofdet import",
        description="Turn a seed system's published checkpoint into a spoofdet model: read "
        "without running code from the file, keys converted to spoofdet's layout (a key that "
        "maps to nothing or a tensor the model needs that the file lacks stops the import, "
        "listing both), the seed's label/score convention translated once (higher = more bona "
        "fide), checked by rebuilding the written folder. The folder has the format of a train "
        "run's final/: spoofdet score/predict/promote and mlflow models serve use "
        "it (or the registered version) as any trained model.",
        epilog="seeds:\n" + _seed_table() + "\n\nexamples:\n"
        "  spoofdet import aasist --checkpoint AASIST.pth --out models/aasist\n"
        "  spoofdet import xlsr_mamba --checkpoint XLSR-Mamba-LA.pth \\\n"
        "      --register-as xlsr-mamba-published \\\n"
        "      --tracking-uri sqlite:///runs/mlflow.db --json\n"
        "  spoofdet import codecfake_w2v2_aasist --checkpoint anti-spoofing_feat_model.pt \\\n"
        "      --frontend xlsr_300m",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("seed", metavar="SEED", help="the seed system (list below)")
    ap.add_argument(
        "--checkpoint",
        required=True,
        metavar="FILE",
        help="the published .pth/.pt file, as its authors "
        "name it (state dict or a whole pickled module; never unpickled with code execution)",
    )
    ap.add_argument(
        "--frontend",
        default=None,
        metavar="NAME|DIR",
        help="seeds whose file holds only a head (Codecfake): the pre-trained SSL model it runs on "
        "(xlsr_300m or a save_pretrained folder); fine-tuned SSL seeds: the architecture their "
        "front-end loads into (default xlsr_300m_random: XLS-R 300M)",
    )
    ap.add_argument(
        "--out",
        default=None,
        metavar="DIR",
        help="model folder to write (default imported/SEED-FILESTEM)",
    )
    ap.add_argument(
        "--register-as",
        default=None,
        metavar="NAME",
        help="also log the model in MLflow and register "
        "it as a version of NAME, tagged with the seed, file name, sha256 and published results",
    )
    ap.add_argument(
        "--tracking-uri",
        default=None,
        help="MLflow store for --register-as (default "
        "$MLFLOW_TRACKING_URI, else sqlite:///<$SPOOFDET_STORAGE or runs/train>/mlflow.db)",
    )
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args(argv)
    if args.seed not in SEEDS:
        ap.error(f"unknown seed {args.seed!r}; choose one of: {', '.join(sorted(SEEDS))}")
    if (
        args.register_as
        and not args.register_as.replace("-", "").replace("_", "").replace(".", "").isalnum()
    ):
        ap.error(f"--register-as {args.register_as!r}: use letters, digits, '-', '_' and '.' only")
    out = args.out or f"imported/{args.seed}-{Path(args.checkpoint).stem}"
    try:
        summary = import_checkpoint(
            args.seed,
            args.checkpoint,
            out=out,
            frontend=args.frontend,
            register_as=args.register_as,
            tracking_uri=args.tracking_uri,
        )
    except (SeedCheckpointError, SeedImportError, FileNotFoundError) as exc:
        print(f"spoofdet import: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(summary))
        return 0
    spec = SEEDS[args.seed]
    print(f"imported {spec.title} from {summary['source']} (sha256 {summary['sha256'][:12]}...)")
    print(
        f"  {summary['parameters']:,} parameters, {summary['n_logits']} logit(s); "
        f"score: {summary['score']}"
    )
    print(
        f"  model folder: {summary['out']}  "
        f"(rebuild check: max |diff| {summary['rebuild_max_abs_diff']:.1e})"
    )
    if "registered" in summary:
        r = summary["registered"]
        print(f"  registered: models:/{r['name']}/{r['version']}  ({summary['tracking_uri']})")
    for where, result in spec.published.items():
        print(f"  published ({where}): {result}")
    print(f"next: spoofdet score --model {summary['out']} --eval-set NAME=SHARDS")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
