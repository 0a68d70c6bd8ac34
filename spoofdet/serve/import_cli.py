"""The ``spoofdet import`` command over :mod:`spoofdet.serve.importer`: its arguments, and the
run from parsed arguments with its report.

:mod:`spoofdet.cli` registers it as a sub-command (``python -m spoofdet.serve.importer`` is the
same command). :func:`run` raises ``SeedCheckpointError``, ``SeedImportError`` and
``FileNotFoundError`` for bad input, which the command line reports as ``spoofdet import:
error: ...`` with exit code 2. Importing this module does not import torch: the seed list of
``--help`` is read only when asked for.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

DESCRIPTION = (
    "Turn a seed system's published checkpoint into a spoofdet model: read "
    "without running code from the file, keys converted to spoofdet's layout (a key that "
    "maps to nothing or a tensor the model needs that the file lacks stops the import, "
    "listing both), the seed's label/score convention translated once (higher = more bona "
    "fide), checked by rebuilding the written folder. The folder has the format of a train "
    "run's final/: spoofdet score/predict/promote and mlflow models serve use "
    "it (or the registered version) as any trained model."
)


def epilog() -> str:
    """The seeds, one line each, and examples (reads SEEDS, which imports torch)."""
    from spoofdet.models.checkpoints import SEEDS

    fe = {
        "fairseq": "fine-tuned XLS-R in the file",
        "pretrained": "needs --frontend (pre-trained XLS-R)",
    }
    seeds = [
        f"  {name:<24} {spec.title} [{fe.get(spec.frontend, spec.frontend + ' front-end')}]"
        for name, spec in SEEDS.items()
    ]
    return (
        "seeds:\n" + "\n".join(seeds) + "\n\nexamples:\n"
        "  spoofdet import aasist --checkpoint AASIST.pth --out models/aasist\n"
        "  spoofdet import xlsr_mamba --checkpoint XLSR-Mamba-LA.pth \\\n"
        "      --register-as xlsr-mamba-published \\\n"
        "      --tracking-uri sqlite:///runs/mlflow.db --json\n"
        "  spoofdet import codecfake_w2v2_aasist --checkpoint anti-spoofing_feat_model.pt \\\n"
        "      --frontend xlsr_300m"
    )


class _HelpWithSeeds(argparse.Action):
    """``-h/--help``: the usual help, with :func:`epilog` filled in only now (building the
    parser, which every ``spoofdet`` call does, stays free of torch)."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: Any) -> None:
        super().__init__(
            option_strings,
            argparse.SUPPRESS,
            default=argparse.SUPPRESS,
            nargs=0,
            help="show this help message and exit",
        )

    def __call__(self, parser: argparse.ArgumentParser, *args: Any) -> None:
        parser.epilog = epilog()
        parser.print_help()
        parser.exit()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``spoofdet import`` (``parser`` made with ``add_help=False``)."""
    parser.add_argument("-h", "--help", action=_HelpWithSeeds)
    parser.add_argument("seed", metavar="SEED", help="the seed system (list below)")
    parser.add_argument(
        "--checkpoint",
        required=True,
        metavar="FILE",
        help="the published .pth/.pt file, as its authors "
        "name it (state dict or a whole pickled module; never unpickled with code execution)",
    )
    parser.add_argument(
        "--frontend",
        default=None,
        metavar="NAME|DIR",
        help="seeds whose file holds only a head (Codecfake): the pre-trained SSL model it runs on "
        "(xlsr_300m or a save_pretrained folder); fine-tuned SSL seeds: the architecture their "
        "front-end loads into (default xlsr_300m_random: XLS-R 300M)",
    )
    parser.add_argument(
        "--out",
        default=None,
        metavar="DIR",
        help="model folder to write (default imported/SEED-FILESTEM)",
    )
    parser.add_argument(
        "--register-as",
        default=None,
        metavar="NAME",
        help="also log the model in MLflow and register "
        "it as a version of NAME, tagged with the seed, file name, sha256 and published results",
    )
    parser.add_argument(
        "--tracking-uri",
        default=None,
        help="MLflow store for --register-as (default "
        "$MLFLOW_TRACKING_URI, else sqlite:///<$SPOOFDET_STORAGE or runs/train>/mlflow.db)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Import as ``args`` say; print the summary (one JSON object with ``--json``). Usage errors
    go through ``parser.error`` (exit code 2)."""
    from spoofdet.models.checkpoints import SEEDS
    from spoofdet.serve.importer import import_checkpoint

    if args.seed not in SEEDS:
        parser.error(f"unknown seed {args.seed!r}; choose one of: {', '.join(sorted(SEEDS))}")
    name = args.register_as
    if name and not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
        parser.error(f"--register-as {name!r}: use letters, digits, '-', '_' and '.' only")
    summary = import_checkpoint(
        args.seed,
        args.checkpoint,
        out=args.out or f"imported/{args.seed}-{Path(args.checkpoint).stem}",
        frontend=args.frontend,
        register_as=args.register_as,
        tracking_uri=args.tracking_uri,
    )
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
