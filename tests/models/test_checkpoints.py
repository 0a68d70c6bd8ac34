"""Checkpoint utilities: strict loading, averaging (BatchNorm buffers included), and the fairseq
wav2vec2 -> transformers conversion checked against an independent fairseq-style forward pass."""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from spoofdet.models.checkpoints import (
    average_state_dicts,
    convert_fairseq_wav2vec2,
    load_state_dict_strict,
    to_fairseq_wav2vec2,
)
from spoofdet.testing import TINY_FAIRSEQ, tiny_fairseq_config, tiny_fairseq_state_dict

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see conftest.one_thread


def _small() -> nn.Module:
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))


# ---- strict loading -----------------------------------------------------------------------------


def test_strict_load_strips_dataparallel_prefix():
    src, dst = _small(), _small()
    load_state_dict_strict(dst, {f"module.{k}": v for k, v in src.state_dict().items()})
    for k, v in src.state_dict().items():
        assert torch.equal(dst.state_dict()[k], v)


def test_strict_load_lists_missing_unexpected_and_shape_mismatches():
    sd = _small().state_dict()
    del sd["2.bias"]
    sd["3.weight"] = torch.zeros(1)
    sd["0.weight"] = torch.zeros(5, 3)
    target = _small()
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(ValueError) as err:
        load_state_dict_strict(target, sd)
    msg = str(err.value)
    assert "missing keys (1): 2.bias" in msg
    assert "unexpected keys (1): 3.weight" in msg
    assert "shape mismatches (1): 0.weight (5, 3) vs model (4, 3)" in msg
    assert all(torch.equal(before[k], v) for k, v in target.state_dict().items()), (
        "nothing may be loaded"
    )


# ---- averaging ----------------------------------------------------------------------------------


def test_average_is_exact_on_batchnorm_buffers_and_weights():
    sds = []
    for i, (mean, var, count) in enumerate([(1.0, 2.0, 3), (2.0, 4.0, 4), (4.5, 0.5, 6)]):
        m = _small()
        with torch.no_grad():
            m[1].running_mean.fill_(mean)
            m[1].running_var.fill_(var)
            m[1].num_batches_tracked.fill_(count)
            m[0].weight.fill_(float(i))
        sds.append(m.state_dict())
    originals = [{k: v.clone() for k, v in sd.items()} for sd in sds]
    avg = average_state_dicts(sds)
    assert list(avg) == list(sds[0])
    assert torch.equal(avg["1.running_mean"], torch.full((4,), 2.5))
    assert torch.equal(avg["1.running_var"], torch.full((4,), 6.5 / 3).float())
    assert (
        avg["1.num_batches_tracked"].dtype == torch.long
        and avg["1.num_batches_tracked"].item() == 13 // 3
    )
    assert torch.equal(avg["0.weight"], torch.ones(4, 3))
    for k in avg:  # every float tensor is the correctly rounded mean
        if avg[k].is_floating_point():
            ref = torch.stack([sd[k].double() for sd in sds]).mean(0).float()
            assert torch.equal(avg[k], ref), k
    for sd, orig in zip(sds, originals):
        assert all(torch.equal(sd[k], orig[k]) for k in sd), "inputs must not be modified"
    m = _small()
    load_state_dict_strict(m, avg)


def test_average_of_one_is_identity_and_errors_name_the_key():
    sd = _small().state_dict()
    assert all(torch.equal(a, b) for a, b in zip(average_state_dicts([sd]).values(), sd.values()))
    with pytest.raises(ValueError, match="empty"):
        average_state_dicts([])
    other = dict(sd)
    other["extra"] = torch.zeros(1)
    with pytest.raises(ValueError, match="extra"):
        average_state_dicts([sd, other])
    other = dict(sd)
    other["0.weight"] = sd["0.weight"].double()
    with pytest.raises(ValueError, match="0.weight"):
        average_state_dicts([sd, other])


# ---- fairseq wav2vec2 conversion ----------------------------------------------------------------
# The tiny model (spoofdet.testing.TINY_FAIRSEQ): conv encoder of 7 layers (32 channels, XLS-R
# kernels/strides, layer-norm mode), d = 64, 2 heads, FFN 128, 2 pre-LN layers, positional conv of
# 16 taps in 4 groups. Its fairseq-named state dict, tiny_fairseq_state_dict, is written from
# fairseq's module tree, not from the conversion rules under test.

CONV, KERNELS, STRIDES = TINY_FAIRSEQ["conv_dim"], TINY_FAIRSEQ["kernels"], TINY_FAIRSEQ["strides"]
D, HEADS, FFN, LAYERS = (
    TINY_FAIRSEQ["dim"],
    TINY_FAIRSEQ["heads"],
    TINY_FAIRSEQ["ffn"],
    TINY_FAIRSEQ["layers"],
)
POS_K, POS_G = TINY_FAIRSEQ["pos_kernel"], TINY_FAIRSEQ["pos_groups"]


def _fairseq_forward(sd: dict[str, torch.Tensor], wave: torch.Tensor) -> torch.Tensor:
    """fairseq ``Wav2Vec2Model.extract_features(mask=False)['x']`` in eval mode, written as plain
    functions over fairseq-named tensors (pre-LN transformer, layer_norm_first=True)."""
    x = wave.unsqueeze(1)
    for i, s in enumerate(STRIDES):
        x = F.conv1d(
            x,
            sd[f"feature_extractor.conv_layers.{i}.0.weight"],
            sd[f"feature_extractor.conv_layers.{i}.0.bias"],
            stride=s,
        )
        x = F.layer_norm(
            x.transpose(1, 2),
            (CONV,),
            sd[f"feature_extractor.conv_layers.{i}.2.1.weight"],
            sd[f"feature_extractor.conv_layers.{i}.2.1.bias"],
        ).transpose(1, 2)
        x = F.gelu(x)
    x = F.layer_norm(x.transpose(1, 2), (CONV,), sd["layer_norm.weight"], sd["layer_norm.bias"])
    x = F.linear(x, sd["post_extract_proj.weight"], sd["post_extract_proj.bias"])
    v, g = sd["encoder.pos_conv.0.weight_v"], sd["encoder.pos_conv.0.weight_g"]
    weight = g * v / v.norm(dim=(0, 1), keepdim=True)  # torch weight_norm with dim=2
    pos = F.conv1d(
        x.transpose(1, 2), weight, sd["encoder.pos_conv.0.bias"], padding=POS_K // 2, groups=POS_G
    )
    pos = pos[:, :, :-1] if POS_K % 2 == 0 else pos  # SamePad
    x = x + F.gelu(pos).transpose(1, 2)
    b, t, _ = x.shape
    hd = D // HEADS
    for i in range(LAYERS):
        p = f"encoder.layers.{i}."
        h = F.layer_norm(
            x, (D,), sd[p + "self_attn_layer_norm.weight"], sd[p + "self_attn_layer_norm.bias"]
        )
        q = (
            F.linear(h, sd[p + "self_attn.q_proj.weight"], sd[p + "self_attn.q_proj.bias"])
            * hd**-0.5
        )
        k = F.linear(h, sd[p + "self_attn.k_proj.weight"], sd[p + "self_attn.k_proj.bias"])
        val = F.linear(h, sd[p + "self_attn.v_proj.weight"], sd[p + "self_attn.v_proj.bias"])
        q, k, val = (z.view(b, t, HEADS, hd).transpose(1, 2) for z in (q, k, val))
        att = torch.softmax(q @ k.transpose(-1, -2), dim=-1) @ val
        att = F.linear(
            att.transpose(1, 2).reshape(b, t, D),
            sd[p + "self_attn.out_proj.weight"],
            sd[p + "self_attn.out_proj.bias"],
        )
        x = x + att
        h = F.layer_norm(
            x, (D,), sd[p + "final_layer_norm.weight"], sd[p + "final_layer_norm.bias"]
        )
        h = F.linear(
            F.gelu(F.linear(h, sd[p + "fc1.weight"], sd[p + "fc1.bias"])),
            sd[p + "fc2.weight"],
            sd[p + "fc2.bias"],
        )
        x = x + h
    return F.layer_norm(x, (D,), sd["encoder.layer_norm.weight"], sd["encoder.layer_norm.bias"])


@pytest.fixture(scope="module")
def hf_tiny():
    from transformers import Wav2Vec2Model

    from spoofdet.models.frontend import tiny_config

    config = tiny_fairseq_config()
    shape = (D, LAYERS, FFN, CONV, POS_K, POS_G)
    for c in (config, tiny_config("wav2vec2")):  # the "tiny" front-end has the same shape
        assert (
            c.hidden_size,
            c.num_hidden_layers,
            c.intermediate_size,
            c.conv_dim[0],
            c.num_conv_pos_embeddings,
            c.num_conv_pos_embedding_groups,
        ) == shape
    return lambda: Wav2Vec2Model(config).eval()


def test_converted_fairseq_dict_loads_strictly_and_matches_fairseq_forward(hf_tiny, caplog):
    fs = tiny_fairseq_state_dict(seed=0)
    with caplog.at_level(logging.WARNING, logger="spoofdet.models.checkpoints"):
        hf = convert_fairseq_wav2vec2(fs)
    assert "dropped 7 pretraining-only tensors" in caplog.text and "quantizer.vars" in caplog.text
    model = load_state_dict_strict(hf_tiny(), hf)
    wave = 0.3 * torch.randn(2, 8_000, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = model(wave).last_hidden_state
        ref = _fairseq_forward(fs, wave)
    assert ours.shape == (2, 24, D)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
    # and the comparison is sensitive: swapping q and k of one layer changes the output
    swapped = dict(fs)
    swapped["encoder.layers.0.self_attn.q_proj.weight"] = fs[
        "encoder.layers.0.self_attn.k_proj.weight"
    ]
    swapped["encoder.layers.0.self_attn.k_proj.weight"] = fs[
        "encoder.layers.0.self_attn.q_proj.weight"
    ]
    with torch.no_grad():
        assert not torch.allclose(_fairseq_forward(swapped, wave), ours, atol=1e-3)


def test_round_trips(hf_tiny):
    fs = tiny_fairseq_state_dict(seed=2)
    back = to_fairseq_wav2vec2(convert_fairseq_wav2vec2(fs))
    encoder_keys = [k for k in fs if not k.startswith(("quantizer.", "project_q.", "final_proj."))]
    assert list(back) == encoder_keys
    assert all(back[k] is fs[k] for k in back)
    hf = hf_tiny().state_dict()
    again = convert_fairseq_wav2vec2(to_fairseq_wav2vec2(hf))
    assert list(again) == list(hf)


def test_seed_checkpoint_prefix_and_new_weight_norm_names(hf_tiny):
    fs = tiny_fairseq_state_dict(seed=3)
    renamed = {}
    for k, v in fs.items():
        k = k.replace("pos_conv.0.weight_g", "pos_conv.0.parametrizations.weight.original0")
        k = k.replace("pos_conv.0.weight_v", "pos_conv.0.parametrizations.weight.original1")
        renamed[f"module.ssl_model.model.{k}"] = v
    renamed["module.LL.weight"] = torch.zeros(128, D)  # the head of a seed checkpoint: ignored
    hf = convert_fairseq_wav2vec2(renamed, prefix="ssl_model.model.")
    load_state_dict_strict(hf_tiny(), hf)


def test_group_norm_extractor_names():
    hf = convert_fairseq_wav2vec2(
        {
            "feature_extractor.conv_layers.0.2.weight": torch.ones(3),
            "feature_extractor.conv_layers.0.0.weight": torch.ones(3, 1, 10),
        }
    )
    assert list(hf) == [
        "feature_extractor.conv_layers.0.layer_norm.weight",
        "feature_extractor.conv_layers.0.conv.weight",
    ]


def test_unknown_keys_are_refused():
    fs = tiny_fairseq_state_dict(seed=4)
    fs["encoder.layers.0.self_attn.rel_pos_bias.weight"] = torch.zeros(1)
    with pytest.raises(
        ValueError, match=r"unknown keys \(1\): encoder.layers.0.self_attn.rel_pos_bias.weight"
    ):
        convert_fairseq_wav2vec2(fs)
    with pytest.raises(ValueError, match="prefix"):
        convert_fairseq_wav2vec2(tiny_fairseq_state_dict(seed=4), prefix="w2v_encoder.w2v_model.")
