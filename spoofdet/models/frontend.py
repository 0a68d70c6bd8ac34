"""SSL front-ends: XLS-R (``transformers.Wav2Vec2Model``) and WavLM (``WavLMModel``), one interface.

``SSLFrontend.forward(wave[B, N] float32 at 16 kHz) -> feats[B, T, D]`` with
``T = floor((N - 400) / 320) + 1`` (64,600 samples -> 201 frames, 66,800 -> 208, 64,000 -> 199).

Which front-end (:func:`load_frontend`):

* ``"tiny"`` / ``"tiny_wavlm"``: random-init models for tests (2 layers, d = 64, ~0.1M
  parameters) with the XLS-R conv stack's kernels and strides, so frame counts are the real ones.
* ``"xlsr_300m_random"``: the XLS-R 300M shape (24 layers, d = 1024, ~315M parameters), random
  init, built from :func:`xlsr_300m_config` without any download (benchmarks, smoke runs).
* ``"xlsr_300m"``, ``"xlsr_1b"``, ``"xlsr_2b"``, ``"wavlm_base_plus"``, ``"wavlm_large"``: the
  Hugging Face hub checkpoints of :data:`HUB_IDS` (downloaded once into the HF cache).
* a local directory holding ``config.json`` + weights (``save_pretrained`` layout, or the
  output of :func:`spoofdet.models.checkpoints.convert_fairseq_wav2vec2` saved that way): works
  offline. The model class follows ``config.model_type`` (``wav2vec2`` or ``wavlm``).

Which features (``layer``), always from ONE forward pass:

* ``None``: the last hidden state (after the final LayerNorm of pre-LN models such as XLS-R),
  i.e. fairseq's ``features_only=True`` ``['x']`` that the seed recipes feed their heads.
* ``k`` (int, 0..L): the output of the first k transformer layers, before any final LayerNorm
  (``hidden_states[k]``; k = 0 is the encoder input after the positional convolution). Codecfake
  uses k = 5. The layers above k are removed from the model at construction, so they cost nothing.
* ``"all"``: the outputs of the L transformer layers, stacked: ``feats[B, L, T, D]`` (fairseq's
  ``layer_results``, before the final LayerNorm, which is removed), as SLS reads them.
* ``"weighted"``: a learnable softmax-weighted sum of L + 1 hidden states: the encoder input,
  the outputs of layers 1..L-1, and the last hidden state (layer L after the final LayerNorm of
  pre-LN models, as for ``None``); the weights start uniform.

Deliberate differences from the ``transformers`` defaults, matching the seed recipes:

* No waveform normalisation: the seeds (fairseq) feed the raw [-1, 1] waveform, while the HF
  ``Wav2Vec2FeatureExtractor`` of XLS-R normalises each clip to zero mean, unit variance. Only
  Codecfake used that normalisation; apply it yourself before calling this front-end if you
  reproduce Codecfake.
* No SpecAugment-style masking: the XLS-R config sets ``mask_time_prob = 0.075``, so a
  ``Wav2Vec2Model`` in train mode would replace ~7.5 % x 10 frames of every clip with a learned
  mask vector. The seeds call fairseq with ``mask=False``, so masking is off here
  (``spec_augment=False``: ``config.apply_spec_augment`` is set to False; the mask vector stays in
  the state dict for strict loading but is frozen).
* No LayerDrop (``layerdrop=0.0``): the hub configs of XLS-R set 0.1, which in train mode skips
  random transformer layers; whether the seeds' fairseq models dropped layers depends on the
  pretraining config stored in ``xlsr2_300m.pt``, which we could not inspect here (unverified).
  Layer selection also needs every layer to run.

Not reproduced: fairseq's ``feature_grad_mult`` (a gradient scale on the conv encoder) and the
dropout rates stored in the fairseq checkpoint; the HF config's dropout rates are used.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from transformers import (
    AutoConfig,
    PretrainedConfig,
    PreTrainedModel,
    Wav2Vec2Config,
    Wav2Vec2Model,
    WavLMConfig,
    WavLMModel,
)

__all__ = [
    "HUB_IDS",
    "RANDOM_INIT",
    "FREEZE_MODES",
    "SSLFrontend",
    "load_frontend",
    "num_frames",
    "tiny_config",
    "xlsr_300m_config",
]

#: Conv feature encoder of XLS-R (and of every wav2vec 2.0 / WavLM model): 20 ms hop, 25 ms field.
CONV_KERNEL: tuple[int, ...] = (10, 3, 3, 3, 3, 2, 2)
CONV_STRIDE: tuple[int, ...] = (5, 2, 2, 2, 2, 2, 2)
#: Pretrained front-ends by short name.
HUB_IDS: dict[str, str] = {
    "xlsr_300m": "facebook/wav2vec2-xls-r-300m",
    "xlsr_1b": "facebook/wav2vec2-xls-r-1b",
    "xlsr_2b": "facebook/wav2vec2-xls-r-2b",
    "wavlm_base_plus": "microsoft/wavlm-base-plus",
    "wavlm_large": "microsoft/wavlm-large",
}
FREEZE_MODES: tuple[str, ...] = ("none", "all", "feature_encoder")
_MODEL_CLASSES: dict[str, type[PreTrainedModel]] = {"wav2vec2": Wav2Vec2Model, "wavlm": WavLMModel}


def num_frames(num_samples: int) -> int:
    """Frames the conv feature encoder yields for ``num_samples`` samples (0 if too short)."""
    n = num_samples
    for k, s in zip(CONV_KERNEL, CONV_STRIDE):
        if n < k:
            return 0
        n = (n - k) // s + 1
    return n


def tiny_config(
    model_type: str = "wav2vec2", hidden_size: int = 64, num_layers: int = 2
) -> PretrainedConfig:
    """A tiny pre-LN config with the XLS-R conv kernels/strides (so real frame counts), for tests.

    Args:
        model_type: ``"wav2vec2"`` or ``"wavlm"``.
        hidden_size: Transformer width (divisible by 8 so that Nes2Net-X fits; 2 attention heads,
            FFN 2x wide).
        num_layers: Transformer layers.
    """
    common: dict[str, Any] = dict(
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=2,
        intermediate_size=2 * hidden_size,
        conv_dim=(32,) * 7,
        conv_kernel=CONV_KERNEL,
        conv_stride=CONV_STRIDE,
        conv_bias=True,
        feat_extract_norm="layer",
        do_stable_layer_norm=True,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=4,
        mask_time_prob=0.05,
        layerdrop=0.1,
        vocab_size=4,
    )
    if model_type == "wav2vec2":
        return Wav2Vec2Config(**common)
    if model_type == "wavlm":
        return WavLMConfig(**common, num_buckets=32, max_bucket_distance=80)
    raise ValueError(f"model_type must be 'wav2vec2' or 'wavlm', got {model_type!r}")


def xlsr_300m_config() -> Wav2Vec2Config:
    """The architecture of ``facebook/wav2vec2-xls-r-300m`` written out (no download).

    Shape-exact (7-layer 512-channel conv encoder with layer norm, 24 pre-LN layers, d = 1024,
    16 heads, FFN 4096, 128-tap positional conv in 16 groups). The dropout, LayerDrop and masking
    values are those of the hub config as we remember them; the front-end overrides masking and
    LayerDrop anyway.
    """
    return Wav2Vec2Config(
        hidden_size=1024,
        num_hidden_layers=24,
        num_attention_heads=16,
        intermediate_size=4096,
        conv_dim=(512,) * 7,
        conv_kernel=CONV_KERNEL,
        conv_stride=CONV_STRIDE,
        conv_bias=True,
        feat_extract_norm="layer",
        do_stable_layer_norm=True,
        num_conv_pos_embeddings=128,
        num_conv_pos_embedding_groups=16,
        hidden_dropout=0.1,
        attention_dropout=0.1,
        activation_dropout=0.0,
        feat_proj_dropout=0.1,
        layerdrop=0.1,
        mask_time_prob=0.075,
        layer_norm_eps=1e-5,
    )


#: Random-init front-ends by name (no download): name -> config factory.
RANDOM_INIT: dict[str, Any] = {
    "tiny": lambda: tiny_config("wav2vec2"),
    "tiny_wavlm": lambda: tiny_config("wavlm"),
    "xlsr_300m_random": xlsr_300m_config,
}


class SSLFrontend(nn.Module):
    """A ``transformers`` wav2vec 2.0 / WavLM model as ``wave[B, N] -> feats[B, T, D]``.

    Build it with :func:`load_frontend`; the arguments are documented there.

    Attributes:
        model: The wrapped ``Wav2Vec2Model`` / ``WavLMModel`` (truncated for an int ``layer``).
        out_dim: Feature size D.
        layer: ``None``, an int, or ``"weighted"``.
        freeze: One of :data:`FREEZE_MODES`.
        layer_weights: Learnable logits of the layer weights (``"weighted"`` only).
    """

    def __init__(
        self,
        model: PreTrainedModel,
        layer: int | str | None = None,
        freeze: str = "none",
        gradient_checkpointing: bool = False,
        spec_augment: bool = False,
        layerdrop: float = 0.0,
        normalize: bool = False,
    ) -> None:
        super().__init__()
        total = model.config.num_hidden_layers
        if not (
            layer in (None, "weighted", "all")
            or (isinstance(layer, int) and not isinstance(layer, bool) and 0 <= layer <= total)
        ):
            raise ValueError(
                f"frontend_layer must be None, 'weighted', 'all' or an int in [0, {total}], got {layer!r}"
            )
        if freeze not in FREEZE_MODES:
            raise ValueError(f"freeze must be one of {FREEZE_MODES}, got {freeze!r}")
        if gradient_checkpointing and freeze == "all":
            raise ValueError(
                "gradient_checkpointing=True with freeze='all' saves nothing (no gradients flow into a "
                "frozen front-end); set gradient_checkpointing=False"
            )
        self.model = model
        self.out_dim: int = model.config.hidden_size
        self.layer = layer
        self.freeze = freeze
        self.normalize = normalize
        model.config.apply_spec_augment = spec_augment
        model.config.layerdrop = layerdrop
        if not spec_augment and getattr(model, "masked_spec_embed", None) is not None:
            model.masked_spec_embed.requires_grad_(False)
        if isinstance(layer, int):
            # Keep the first `layer` layers; their output is hidden_states[layer]. Pre-LN encoders
            # normalise after the last layer, which hidden_states[layer] never saw: drop that norm
            # (so layer=L differs from layer=None by exactly that final LayerNorm).
            model.encoder.layers = model.encoder.layers[:layer]
            model.config.num_hidden_layers = layer
            if model.config.do_stable_layer_norm:
                model.encoder.layer_norm = nn.Identity()
        if layer == "all" and model.config.do_stable_layer_norm:
            model.encoder.layer_norm = (
                nn.Identity()
            )  # "all" returns the L layer outputs, none of them normed
        self.layer_weights = nn.Parameter(torch.zeros(total + 1)) if layer == "weighted" else None
        if freeze == "all":
            model.requires_grad_(False)
            model.eval()
        elif freeze == "feature_encoder":
            model.freeze_feature_encoder()
        if gradient_checkpointing:
            model.activation_checkpointing_enable()

    def train(self, mode: bool = True) -> SSLFrontend:
        """As ``nn.Module.train``, but a fully frozen model stays in eval mode (no dropout)."""
        super().train(mode)
        if self.freeze == "all":
            self.model.eval()
        return self

    #: :class:`~spoofdet.models.Detector` passes ``lengths`` of zero-padded batches to this front-end.
    takes_lengths = True

    def forward(self, wave: Tensor, lengths: Tensor | None = None) -> Tensor:
        """wave (B, N) float at 16 kHz, N >= 400 -> feats (B, T, out_dim).

        ``lengths`` (B,): the real samples of each row of a zero-padded batch (duration batches,
        ``data.batch_seconds``). The transformer then attends to real frames only
        (``attention_mask``), and per-clip normalisation uses real samples only. Without
        ``lengths`` (fixed-length batches, the seeds' protocol) nothing changes.
        """
        if wave.dim() != 2 or wave.shape[1] < 400:
            raise ValueError(f"wave must be (batch, samples >= 400), got {tuple(wave.shape)}")
        mask = None
        if lengths is not None:
            mask = torch.arange(wave.shape[1], device=wave.device)[None, :] < lengths[:, None]
        if (
            self.normalize
        ):  # Wav2Vec2FeatureExtractor(do_normalize=True): per clip, population variance
            if mask is None:
                wave = (wave - wave.mean(dim=1, keepdim=True)) / torch.sqrt(
                    wave.var(dim=1, keepdim=True, unbiased=False) + 1e-7
                )
            else:  # over each clip's real samples, padding kept at zero (as the extractor does)
                m = mask.to(wave.dtype)
                n = m.sum(dim=1, keepdim=True).clamp(min=1)
                mean = (wave * m).sum(dim=1, keepdim=True) / n
                var = (((wave - mean) * m) ** 2).sum(dim=1, keepdim=True) / n
                wave = (wave - mean) / torch.sqrt(var + 1e-7) * m
        weighted = self.layer == "weighted"
        grad = contextlib.nullcontext() if self.freeze != "all" else torch.no_grad()
        extra = {} if mask is None else {"attention_mask": mask.long()}
        with grad:
            out = self.model(wave, output_hidden_states=weighted or self.layer == "all", **extra)
        if (
            self.layer == "all"
        ):  # (B, L, T, D): the output of each transformer layer, before any final norm
            return torch.stack(out.hidden_states[1:], dim=1)
        if not weighted:
            return out.last_hidden_state
        # The last entry is the final (normed) output, so that the final LayerNorm of pre-LN models
        # is used (no parameter without a gradient) and the top entry is what layer=None gives.
        states = out.hidden_states[:-1] + (out.last_hidden_state,)
        if len(states) != len(self.layer_weights):
            raise RuntimeError(
                f"expected {len(self.layer_weights)} hidden states, got {len(states)}"
            )
        weights = torch.softmax(self.layer_weights, dim=0)
        return sum(w * h for w, h in zip(weights, states))


def _load_pretrained(source: str, overrides: Mapping[str, Any]) -> PreTrainedModel:
    config = AutoConfig.from_pretrained(source, **overrides)
    cls = _MODEL_CLASSES.get(config.model_type)
    if cls is None:
        raise ValueError(
            f"frontend {source!r} is a {config.model_type!r} model; supported: {sorted(_MODEL_CLASSES)}"
        )
    model, info = cls.from_pretrained(source, config=config, output_loading_info=True)
    missing = list(info.get("missing_keys", []))
    mismatched = list(info.get("mismatched_keys", []))
    if missing or mismatched:
        raise ValueError(
            f"frontend {source!r}: the checkpoint does not fill the model (missing: {missing}; "
            f"shape mismatches: {mismatched}); check that the directory holds a "
            f"{config.model_type} model saved with save_pretrained"
        )
    return model


def load_frontend(
    name_or_dir: str | os.PathLike | Mapping[str, Any],
    layer: int | str | None = None,
    freeze: str = "none",
    gradient_checkpointing: bool = False,
    spec_augment: bool = False,
    layerdrop: float = 0.0,
    config_overrides: Mapping[str, Any] | None = None,
    normalize: bool = False,
) -> SSLFrontend:
    """Build a front-end by name, hub id or local directory (see the module docstring).

    Args:
        name_or_dir: A key of :data:`RANDOM_INIT` or :data:`HUB_IDS`, or a local
            ``save_pretrained`` directory.
        layer: ``None`` (last hidden state), an int k (output of layer k) or ``"weighted"``.
        freeze: ``"none"`` (fine-tune all, as the seeds do), ``"all"`` (no gradients, eval mode,
            forward under ``no_grad``; the layer weights stay trainable) or ``"feature_encoder"``
            (the CNN stays fixed).
        gradient_checkpointing: Recompute transformer-layer activations in backward.
        spec_augment: Keep the config's SpecAugment masking in train mode (off in the seeds).
        layerdrop: LayerDrop probability in train mode (0 in the seeds, see the module docstring).
        config_overrides: Config fields to change before the model is built, e.g.
            ``{"hidden_dropout": 0.0}``.
        normalize: Normalise each clip to zero mean and unit variance first, as the HF
            ``Wav2Vec2FeatureExtractor`` of XLS-R does (Codecfake); the fairseq seeds do not.

    Returns:
        The :class:`SSLFrontend`, in train mode (as any new ``nn.Module``).

    Raises:
        ValueError: For an unknown name, a bad option, or a checkpoint that does not fill the model.
    """
    overrides = dict(config_overrides or {})
    if isinstance(
        name_or_dir, Mapping
    ):  # a config (``PretrainedConfig.to_dict()``): same shape, random init
        config = AutoConfig.for_model(**{**dict(name_or_dir), **overrides})
        if config.model_type not in _MODEL_CLASSES:
            raise ValueError(
                f"frontend config of model_type {config.model_type!r}; supported: {sorted(_MODEL_CLASSES)}"
            )
        model = _MODEL_CLASSES[config.model_type](config)
        model.train()
        return SSLFrontend(
            model,
            layer=layer,
            freeze=freeze,
            gradient_checkpointing=gradient_checkpointing,
            spec_augment=spec_augment,
            layerdrop=layerdrop,
            normalize=normalize,
        )
    name = os.fspath(name_or_dir)
    if name in RANDOM_INIT:
        config = RANDOM_INIT[name]()
        for key, value in overrides.items():
            setattr(config, key, value)
        model = _MODEL_CLASSES[config.model_type](config)
    elif name in HUB_IDS or Path(name).is_dir():
        model = _load_pretrained(HUB_IDS.get(name, name), overrides)
    else:
        raise ValueError(
            f"frontend {name!r} is neither a known name ({sorted(RANDOM_INIT) + sorted(HUB_IDS)}) "
            "nor a local directory with a config.json; pass one of those"
        )
    model.train()
    return SSLFrontend(
        model,
        layer=layer,
        freeze=freeze,
        gradient_checkpointing=gradient_checkpointing,
        spec_augment=spec_augment,
        layerdrop=layerdrop,
        normalize=normalize,
    )
