"""What a published seed checkpoint is: :class:`SeedSpec`, one per seed system.

A spec names the spoofdet head and front-end that compute what the seed computes, the rules that
rename the seed's back-end keys into the head's (regular expressions matched against the whole
key, first match wins, ``\\1`` groups allowed), an optional reshape (``fix``), where the bona fide
logit sits, and the published results. The specs themselves, one table per seed, live in
:mod:`spoofdet.models.seeds_finetuned` and :mod:`spoofdet.models.seeds_head_only`; the code that
applies them in :mod:`spoofdet.models.seeds`. No I/O here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

__all__ = ["SEED_FRONTEND_KINDS", "SeedSpec"]

#: Where the front-end of a seed comes from.
#:   ``fairseq``: the file holds the fine-tuned fairseq XLS-R under ``ssl_model.model.``;
#:   ``pretrained``: the file holds only the head, which runs on a public pre-trained SSL model
#:   (``spoofdet import --frontend``); any other value is a parameter-free front-end name of
#:   :func:`spoofdet.models.build_model` (``waveform``, ``codecfake_mel``).
SEED_FRONTEND_KINDS = ("fairseq", "pretrained")


@dataclass(frozen=True)
class SeedSpec:
    """How a seed's published checkpoint becomes a spoofdet detector.

    Attributes:
        title: The system as its authors name it.
        repository: Where the seed's code and checkpoints are published.
        head: A key of :data:`spoofdet.models.HEADS`.
        in_dim: Feature size the head reads.
        frontend: ``fairseq``, ``pretrained`` or a parameter-free front-end name (see above).
        model: Further :func:`spoofdet.models.build_model` keyword arguments (``head_kwargs``,
            ``frontend_layer``, ``frontend_kwargs``) that make the detector compute what the
            seed computes.
        rules: ``(seed key regex, spoofdet key)`` pairs, first match wins.
        n_logits: 1 or 2; None: read off the file (``out_key``'s first dimension).
        out_key: spoofdet key of the output layer's weight (its bias is ``out_key`` with ``bias``).
        bonafide_index: The seed's output index of the bona fide class (0 for Codecfake): with 0,
            the two output rows are swapped at import so that index 1 is bona fide in spoofdet.
        fix: Optional function applied to the renamed head state dict (reshapes).
        convention: The seed's own label and score convention, in words.
        score_rule: How the imported detector scores (``spoofdet.models.SCORE_RULES``): the
            seed's own score where it is a bona fide logit (``bonafide_logit``), else
            ``logodds``, which ranks clips as a softmax probability of bona fide does.
        published: Published results of the seed's checkpoints (seeds.md section 7), by file.
        num_samples: The seed's evaluation input length in samples.
        fairseq_prefix: Where a ``fairseq`` seed's file holds its fine-tuned XLS-R (AMSDF:
            ``text_view_extract.model.``).
    """

    title: str
    repository: str
    head: str
    in_dim: int
    frontend: str
    rules: tuple[tuple[str, str], ...]
    out_key: str
    model: Mapping[str, Any] = field(default_factory=dict)
    n_logits: int | None = 2
    bonafide_index: int = 1
    fix: Callable[[dict[str, Tensor]], dict[str, Tensor]] | None = None
    convention: str = "1 = bona fide; score = logit[:, 1]"
    score_rule: str = "bonafide_logit"
    published: Mapping[str, str] = field(default_factory=dict)
    num_samples: int = 64_600
    fairseq_prefix: str = "ssl_model.model."
