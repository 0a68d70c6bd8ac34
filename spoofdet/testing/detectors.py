"""Test helpers: a two-class audio corpus that any detector separates, and tiny detectors to score it.

* :func:`write_tone_noise_corpus`: bona fide clips are band-limited noise, spoof clips are pure
  tones (very different spectra, so even a random-init detector's scores split by class; which
  class scores higher depends on the random weights, see :func:`orientation`). Some clips are
  long, and their content changes after the first 4 s, so ``--length full`` and ``4s`` disagree
  on them. A ``manifest.csv`` (``spoofdet.data.corpora.csv_manifest`` layout) lists them.
* :func:`write_detector_dir`: a random-init ``tiny`` front-end + AASIST detector saved like a
  train run's ``final/`` folder, with an optional calibration of any slope (a negative slope
  inverts the scores, a zero slope makes them constant: handy for models of known quality).
* :func:`register_detector`: log such a folder as a registered MLflow model version.
* :func:`tiny_fairseq_state_dict` and :func:`tiny_fairseq_config`: a tiny fairseq-named wav2vec
  2.0 state dict (the front-end part of an SSL seed checkpoint) and the transformers config it
  loads into after conversion.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

#: The model section of the tiny detector (what ``model_config.json`` holds).
TINY_MODEL = {"frontend": "tiny", "head": "aasist"}


def tone_or_noise(kind: str, seconds: float, sr: int, rng: np.random.Generator) -> np.ndarray:
    """``noise``: smoothed white noise; ``tone``: a sine of random pitch; both at about -12 dBFS."""
    n = int(seconds * sr)
    if kind == "noise":
        x = np.convolve(rng.standard_normal(n + 8), np.ones(8) / 8, mode="valid")[:n]
    elif kind == "tone":
        x = np.sin(2 * np.pi * rng.uniform(180, 900) * np.arange(n) / sr + rng.uniform(0, 6.3))
    else:
        raise ValueError(f"kind must be 'noise' or 'tone', got {kind!r}")
    return (0.25 * x / (np.abs(x).max() + 1e-9)).astype(np.float32)


def write_tone_noise_corpus(
    root: str | Path,
    *,
    per_class: int = 6,
    long_every: int = 3,
    long_seconds: float = 10.0,
    seed: int = 0,
) -> dict[str, Any]:
    """Write ``per_class`` bona fide (noise) and spoof (tone) WAVs at 16 kHz plus ``manifest.csv``.

    Every ``long_every``-th clip of each class lasts ``long_seconds`` and switches to the other
    class' signal after 4.04 s; the others last 1.5-3.5 s.

    Returns:
        ``root``, ``manifest`` (path), ``rows``, ``long`` (utt_ids of the long clips).
    """
    root = Path(root)
    (root / "audio").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows, long_ids = [], []
    for label, kind, other in (("bonafide", "noise", "tone"), ("spoof", "tone", "noise")):
        for i in range(per_class):
            utt = f"{label}_{i:02d}"
            if long_every and i % long_every == 0:
                head = tone_or_noise(kind, 64_600 / 16_000, 16_000, rng)
                wave = np.concatenate(
                    [head, tone_or_noise(other, long_seconds - head.size / 16_000, 16_000, rng)]
                )
                long_ids.append(utt)
            else:
                wave = tone_or_noise(kind, rng.uniform(1.5, 3.5), 16_000, rng)
            sf.write(root / "audio" / f"{utt}.wav", wave, 16_000, subtype="PCM_16")
            rows.append(
                {
                    "path": f"audio/{utt}.wav",
                    "label": label,
                    "utt_id": utt,
                    "subset": "eval",
                    "attack": "tone" if label == "spoof" else "",
                }
            )
    with open(root / "manifest.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return {
        "root": str(root),
        "manifest": str(root / "manifest.csv"),
        "rows": len(rows),
        "long": long_ids,
    }


def write_detector_dir(
    folder: str | Path, *, seed: int = 0, slope: float | None = None, offset: float = 0.0
) -> Path:
    """Save a random-init tiny detector as a ``final/``-style folder (``model.pt``, ``model_config.json``).

    Args:
        folder: where to write.
        seed: torch seed of the random weights.
        slope, offset: write ``calibration.json`` with ``LLR = slope * score + offset`` (None: no
            calibration).
    """
    import torch

    from spoofdet.evaluation.calibration import Calibration
    from spoofdet.models import build_model

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = build_model(**TINY_MODEL).eval()
    torch.save(model.state_dict(), folder / "model.pt")
    (folder / "model_config.json").write_text(json.dumps(TINY_MODEL))
    if slope is not None:
        Calibration(float(slope), float(offset), 0.5, 1, 1).save(folder / "calibration.json")
    return folder


def orientation(folder: str | Path, corpus: dict[str, Any]) -> float:
    """+1 if the detector in ``folder`` scores the corpus' bona fide clips higher on average, else -1."""
    from spoofdet.data.audio import load_16k
    from spoofdet.evaluation.protocols import clip_windows, score_waves
    from spoofdet.serve.registry import load_detector

    det = load_detector(str(folder))
    means = {}
    for label in ("bonafide", "spoof"):
        paths = sorted(Path(corpus["root"], "audio").glob(f"{label}_*.wav"))
        waves = [clip_windows(load_16k(str(p))[0], "4s")[0] for p in paths]
        means[label] = float(np.mean(score_waves(det.model, np.stack(waves))))
    return 1.0 if means["bonafide"] > means["spoof"] else -1.0


def register_detector(
    folder: str | Path, *, tracking_uri: str, name: str, experiment: str = "spoofdet-test"
) -> str:
    """Log ``folder`` (from :func:`write_detector_dir`) in a new run and register it; returns the version."""
    from mlflow.tracking import MlflowClient

    from spoofdet.serve.model import log_detector
    from spoofdet.tracking import experiment_for

    folder = Path(folder)
    client = MlflowClient(tracking_uri=tracking_uri)
    run = client.create_run(
        experiment_for(client, experiment, tracking_uri), run_name=f"{name}-{folder.name}"
    )
    cal = folder / "calibration.json"
    info = log_detector(
        run_id=run.info.run_id,
        uri=tracking_uri,
        weights=str(folder / "model.pt"),
        model_config=dict(TINY_MODEL),
        input_example=np.zeros((1, 16_000), np.float32),
        register_as=name,
        calibration=str(cal) if cal.is_file() else None,
        metadata={"train_sources": ["synthetic tone/noise"], "num_samples": 16_000},
    )
    client.set_terminated(run.info.run_id)
    return str(info.registered_model_version)


# ---- seed checkpoints with random tensors (import and equivalence tests) ---------------------


def read_layout(path: str | Path) -> list[tuple[str, tuple[int, ...], str]]:
    """A checkpoint layout file: one ``key<TAB>shape<TAB>dtype`` line per tensor (``#`` comments,
    a ``key shape dtype`` header and blank lines skipped); shapes as ``(1, 2)``, ``[1, 2]`` or ``1x2``."""
    import re

    rows = []
    for n, line in enumerate(Path(path).read_text().splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split("\t")
        if len(parts) != 3:
            raise ValueError(f"{path}:{n}: expected key<TAB>shape<TAB>dtype, got {line!r}")
        key, shape, dtype = (p.strip() for p in parts)
        if key == "key":
            continue
        dims = tuple(int(d) for d in re.findall(r"\d+", shape))
        rows.append((key, dims, dtype.replace("torch.", "")))
    return rows


def random_tensor(key: str, shape: tuple[int, ...], dtype: str = "float32", seed: int = 0) -> Any:
    """A deterministic random tensor for ``key`` (the same on every machine and in any key order).

    Floating tensors: N(0, 1) / sqrt(fan_in) for 2-d and larger (fan_in = product of the trailing
    dimensions), so deep stacks keep activations of order one; 1-d tensors are ``1 + 0.1 N`` for
    names ending in ``weight`` or ``running_var`` (norm scales, variances stay positive) and
    ``0.1 N`` otherwise; scalars N(0, 1) * 0.1. Integer tensors (``num_batches_tracked``) are 1.
    """
    import zlib

    import torch

    dt = getattr(torch, dtype)
    if not dt.is_floating_point:
        return torch.ones(shape, dtype=dt)
    g = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(key.encode()))
    x = torch.randn(shape, generator=g, dtype=torch.float64)
    if len(shape) >= 2:
        fan_in = int(np.prod(shape[1:]))
        x = x / np.sqrt(max(fan_in, 1))
    elif len(shape) == 1:
        x = (1.0 if key.endswith(("weight", "running_var")) else 0.0) + 0.1 * x
    else:
        x = 0.1 * x
    return x.to(dt)


def random_state_dict(layout: list[tuple[str, tuple[int, ...], str]], seed: int = 0) -> Any:
    """An ``OrderedDict`` with :func:`random_tensor` for each ``(key, shape, dtype)`` of ``layout``."""
    from collections import OrderedDict

    return OrderedDict((k, random_tensor(k, tuple(s), d, seed)) for k, s, d in layout)


def layout_of(state_dict: Any) -> list[tuple[str, tuple[int, ...], str]]:
    """``(key, shape, dtype)`` of each tensor of a state dict, in order."""
    return [(k, tuple(v.shape), str(v.dtype).replace("torch.", "")) for k, v in state_dict.items()]


def random_feats(batch: int, frames: int, dim: int, seed: int = 0) -> Any:
    """Deterministic N(0, 1) features ``float32[batch, frames, dim]`` (seed equivalence inputs)."""
    import torch

    g = torch.Generator().manual_seed(10_007 * seed + 31 * frames + dim)
    return torch.randn(batch, frames, dim, generator=g, dtype=torch.float64).float()


def random_waves(batch: int, samples: int, seed: int = 0) -> Any:
    """Deterministic waveforms ``float32[batch, samples]`` in [-0.5, 0.5] (noise plus a tone)."""
    import torch

    g = torch.Generator().manual_seed(7_919 * seed + samples)
    t = torch.arange(samples, dtype=torch.float64) / 16_000
    x = 0.2 * torch.randn(batch, samples, generator=g, dtype=torch.float64)
    x = x + 0.2 * torch.sin(
        2 * np.pi * 220.0 * (1 + torch.arange(batch, dtype=torch.float64))[:, None] * t
    )
    return x.clamp(-0.5, 0.5).float()


# ---- a tiny fairseq wav2vec 2.0 (what the SSL seeds save under ssl_model.model.*) ------------

#: Shape of the model of :func:`tiny_fairseq_state_dict`: a conv encoder of 7 layers of
#: ``conv_dim`` channels with the XLS-R kernels and strides (layer-norm mode), ``dim``-wide
#: pre-LN transformer of ``layers`` layers, ``heads`` heads, FFN ``ffn``, and a positional
#: convolution of ``pos_kernel`` taps in ``pos_groups`` groups.
TINY_FAIRSEQ: dict[str, Any] = {
    "conv_dim": 32,
    "kernels": (10, 3, 3, 3, 3, 2, 2),
    "strides": (5, 2, 2, 2, 2, 2, 2),
    "dim": 64,
    "heads": 2,
    "ffn": 128,
    "layers": 2,
    "pos_kernel": 16,
    "pos_groups": 4,
}


def tiny_fairseq_state_dict(seed: int = 0) -> dict[str, Any]:
    """A random state dict named and shaped as fairseq's ``Wav2Vec2Model`` of :data:`TINY_FAIRSEQ`.

    Written from fairseq's module tree (layer_norm extractor mode, ``layer_norm_first=True``,
    torch ``weight_norm`` on ``pos_conv``: ``weight_g``/``weight_v``), NOT derived from the rules
    of :func:`spoofdet.models.checkpoints.convert_fairseq_wav2vec2` that it tests. Holds the
    pretraining-only tensors too (quantizer, project_q, final_proj: 7 tensors), as
    ``xlsr2_300m.pt`` and the seed checkpoints do. Prefix the keys with ``ssl_model.model.`` for
    the front-end part of a seed checkpoint.
    """
    import math

    import torch

    t = TINY_FAIRSEQ
    c, d, ffn, pos_k, pos_g = t["conv_dim"], t["dim"], t["ffn"], t["pos_kernel"], t["pos_groups"]
    g = torch.Generator().manual_seed(seed)

    def r(*shape: int, scale: float = 0.2, offset: float = 0.0) -> Any:
        return offset + scale * torch.randn(*shape, generator=g)

    sd = {"mask_emb": r(d)}
    c_in = 1
    for i, k in enumerate(TINY_FAIRSEQ["kernels"]):
        # ConvFeatureExtractionModel block: Sequential(Conv1d, Dropout, Sequential(TransposeLast,
        # Fp32LayerNorm, TransposeLast), GELU) -> conv at .0, layer norm at .2.1
        scale = 1 / math.sqrt(c_in * k)
        sd[f"feature_extractor.conv_layers.{i}.0.weight"] = r(c, c_in, k, scale=scale)
        sd[f"feature_extractor.conv_layers.{i}.0.bias"] = r(c, scale=0.1)
        sd[f"feature_extractor.conv_layers.{i}.2.1.weight"] = r(c, offset=1.0)
        sd[f"feature_extractor.conv_layers.{i}.2.1.bias"] = r(c, scale=0.1)
        c_in = c
    sd["layer_norm.weight"] = r(c, offset=1.0)
    sd["layer_norm.bias"] = r(c, scale=0.1)
    sd["post_extract_proj.weight"] = r(d, c, scale=1 / math.sqrt(c))
    sd["post_extract_proj.bias"] = r(d, scale=0.1)
    # pos_conv = Sequential(weight_norm(Conv1d(d, d, K, padding=K // 2, groups=G), dim=2),
    #                       SamePad, GELU)
    sd["encoder.pos_conv.0.bias"] = r(d, scale=0.1)
    sd["encoder.pos_conv.0.weight_g"] = r(1, 1, pos_k, scale=0.1, offset=1.0)
    sd["encoder.pos_conv.0.weight_v"] = r(d, d // pos_g, pos_k)
    for i in range(TINY_FAIRSEQ["layers"]):
        sd.update(_tiny_encoder_layer(f"encoder.layers.{i}.", r, d, ffn))
    sd["encoder.layer_norm.weight"] = r(d, offset=1.0)
    sd["encoder.layer_norm.bias"] = r(d, scale=0.1)
    # pretraining-only parts (GumbelVectorQuantizer, project_q, final_proj)
    sd["quantizer.vars"] = r(1, 2 * 8, 8)
    sd["quantizer.weight_proj.weight"] = r(2 * 8, c)
    sd["quantizer.weight_proj.bias"] = r(2 * 8)
    sd["project_q.weight"] = r(16, 16)
    sd["project_q.bias"] = r(16)
    sd["final_proj.weight"] = r(16, d)
    sd["final_proj.bias"] = r(16)
    return sd


def _tiny_encoder_layer(p: str, r: Callable[..., Any], d: int, ffn: int) -> dict[str, Any]:
    """One pre-LN ``TransformerSentenceEncoderLayer`` of the tiny model, drawn with ``r`` in key
    order (attention projections, their layer norm, the feed-forward, the final layer norm)."""
    import math

    sd: dict[str, Any] = {}
    for proj in ("k_proj", "v_proj", "q_proj", "out_proj"):
        sd[p + f"self_attn.{proj}.weight"] = r(d, d, scale=1 / math.sqrt(d))
        sd[p + f"self_attn.{proj}.bias"] = r(d, scale=0.1)
    sd[p + "self_attn_layer_norm.weight"] = r(d, offset=1.0)
    sd[p + "self_attn_layer_norm.bias"] = r(d, scale=0.1)
    sd[p + "fc1.weight"] = r(ffn, d, scale=1 / math.sqrt(d))
    sd[p + "fc1.bias"] = r(ffn, scale=0.1)
    sd[p + "fc2.weight"] = r(d, ffn, scale=1 / math.sqrt(ffn))
    sd[p + "fc2.bias"] = r(d, scale=0.1)
    sd[p + "final_layer_norm.weight"] = r(d, offset=1.0)
    sd[p + "final_layer_norm.bias"] = r(d, scale=0.1)
    return sd


def tiny_fairseq_config() -> Any:
    """The ``transformers.Wav2Vec2Config`` of :data:`TINY_FAIRSEQ`: a ``Wav2Vec2Model(config)``
    loads ``convert_fairseq_wav2vec2(tiny_fairseq_state_dict())`` strictly (pre-LN, layer-norm
    conv encoder; ``mask_time_prob`` > 0 so that the model has the ``mask_emb`` vector)."""
    from transformers import Wav2Vec2Config

    t = TINY_FAIRSEQ
    return Wav2Vec2Config(
        hidden_size=t["dim"],
        num_hidden_layers=t["layers"],
        num_attention_heads=t["heads"],
        intermediate_size=t["ffn"],
        conv_dim=(t["conv_dim"],) * len(t["kernels"]),
        conv_kernel=t["kernels"],
        conv_stride=t["strides"],
        conv_bias=True,
        feat_extract_norm="layer",
        do_stable_layer_norm=True,
        num_conv_pos_embeddings=t["pos_kernel"],
        num_conv_pos_embedding_groups=t["pos_groups"],
        mask_time_prob=0.05,
        layerdrop=0.0,
        vocab_size=4,
    )
