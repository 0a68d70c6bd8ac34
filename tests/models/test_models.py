"""Detectors: front-end frame counts and layer selection, head shapes and exact sizes, backward,
pinned outputs, and the builder's errors. Everything runs on CPU with random weights (a tiny
wav2vec2 stands in for XLS-R; heads run on random 1024-d features)."""

from __future__ import annotations

import importlib
import json
import re

import pytest
import torch

from spoofdet.config import head_names
from spoofdet.models import HEADS, Detector, build_head, build_model, score_from_logits
from spoofdet.models.aasist import AASIST
from spoofdet.models.frontend import (
    CONV_KERNEL,
    CONV_STRIDE,
    load_frontend,
    num_frames,
    xlsr_300m_config,
)
from spoofdet.models.nes2net import Nes2NetX

MAMBA_HEADS = ("xlsr_mamba", "fake_mamba")
ALL_HEADS = ("aasist", "nes2net_x") + MAMBA_HEADS
NO_DROPOUT = {
    "hidden_dropout": 0.0,
    "attention_dropout": 0.0,
    "activation_dropout": 0.0,
    "feat_proj_dropout": 0.0,
}


def _mamba_import_error() -> str | None:
    """Why ``spoofdet.models.mamba`` (written separately) cannot be imported, or None if it can."""
    try:
        importlib.import_module("spoofdet.models.mamba")
    except Exception as err:  # missing, or broken: either way the Mamba heads cannot be tested here
        return f"{type(err).__name__}: {err}"
    return None


MAMBA_ERROR = _mamba_import_error()
HEAD_PARAMS = [
    pytest.param(
        h,
        marks=pytest.mark.skipif(
            h in MAMBA_HEADS and MAMBA_ERROR is not None,
            reason=f"spoofdet.models.mamba cannot be imported ({MAMBA_ERROR}); Mamba heads untested",
        ),
    )
    for h in ALL_HEADS
]


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see conftest.one_thread


def n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


# ---- front-end ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("samples", "frames"), [(64_600, 201), (66_800, 208), (64_000, 199), (400, 1), (399, 0)]
)
def test_frame_count_formula(samples, frames):
    assert num_frames(samples) == frames
    if samples >= 400:
        assert frames == (samples - 400) // 320 + 1


def test_xlsr_300m_config_is_the_seed_architecture():
    c = xlsr_300m_config()  # building it takes ~1.3 GB and seconds: the benchmark does that
    assert (c.hidden_size, c.num_hidden_layers, c.num_attention_heads, c.intermediate_size) == (
        1024,
        24,
        16,
        4096,
    )
    assert (
        tuple(c.conv_dim) == (512,) * 7
        and tuple(c.conv_kernel) == CONV_KERNEL
        and tuple(c.conv_stride) == CONV_STRIDE
    )
    assert c.do_stable_layer_norm and c.feat_extract_norm == "layer" and c.conv_bias
    assert (c.num_conv_pos_embeddings, c.num_conv_pos_embedding_groups) == (128, 16)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return load_frontend("tiny", config_overrides=NO_DROPOUT)


@pytest.mark.parametrize(("samples", "frames"), [(64_600, 201), (66_800, 208), (64_000, 199)])
def test_tiny_frontend_gives_xlsr_frame_counts(tiny, samples, frames):
    with torch.no_grad():
        assert tiny(torch.randn(1, samples)).shape == (1, frames, tiny.out_dim)


def test_tiny_wavlm_frontend_same_interface():
    torch.manual_seed(0)
    fe = load_frontend("tiny_wavlm", layer=1)
    with torch.no_grad():
        assert fe(torch.randn(2, 16_000)).shape == (2, num_frames(16_000), fe.out_dim)


def test_layer_selection_matches_hidden_states_in_one_pass():
    wave = torch.randn(2, 8_000)
    torch.manual_seed(1)
    full = load_frontend("tiny").eval()
    with torch.no_grad():
        ref = full.model(wave, output_hidden_states=True)
    n_layers = full.model.config.num_hidden_layers
    assert len(ref.hidden_states) == n_layers + 1
    for k in range(n_layers + 1):
        torch.manual_seed(1)
        fe = load_frontend("tiny", layer=k).eval()
        assert len(fe.model.encoder.layers) == k  # layers above k are gone, not just skipped
        with torch.no_grad():
            torch.testing.assert_close(fe(wave), ref.hidden_states[k], rtol=0, atol=0)
    with torch.no_grad():
        torch.testing.assert_close(full(wave), ref.last_hidden_state, rtol=0, atol=0)
        # last_hidden_state = final LayerNorm of the last layer's output (pre-LN model)
        torch.testing.assert_close(
            full.model.encoder.layer_norm(ref.hidden_states[-1]), ref.last_hidden_state
        )

    torch.manual_seed(1)
    fe = load_frontend("tiny", layer="weighted").eval()
    calls = []
    fe.model.feature_extractor.register_forward_hook(lambda *_: calls.append(1))
    with torch.no_grad():
        fe.layer_weights.copy_(torch.tensor([0.0, 1.0, 2.0]))
        w = torch.softmax(fe.layer_weights, 0)
        states = ref.hidden_states[:-1] + (
            ref.last_hidden_state,
        )  # top entry: after the final LayerNorm
        expected = sum(wi * h for wi, h in zip(w, states))
        torch.testing.assert_close(fe(wave), expected)
    assert len(calls) == 1, "the weighted sum must come from one forward pass"


def test_weighted_layers_learn_and_checkpointing_changes_nothing():
    wave = torch.randn(2, 6_400)
    outs, grads = [], []
    for gc in (False, True):
        torch.manual_seed(2)
        fe = load_frontend(
            "tiny", layer="weighted", gradient_checkpointing=gc, config_overrides=NO_DROPOUT
        )
        y = fe(wave)
        y.square().mean().backward()
        outs.append(y.detach())
        grads.append(
            torch.cat(
                [fe.layer_weights.grad] + [p.grad.flatten() for p in fe.model.encoder.parameters()]
            )
        )
    torch.testing.assert_close(outs[0], outs[1])
    torch.testing.assert_close(grads[0], grads[1])
    assert grads[0][:3].abs().sum() > 0


def test_no_masking_or_layerdrop_in_train_mode():
    wave = torch.randn(2, 16_000)
    torch.manual_seed(3)
    fe = load_frontend("tiny", config_overrides=NO_DROPOUT)
    assert (
        fe.model.config.mask_time_prob > 0
    )  # the config asks for masking, the front-end turns it off
    with torch.no_grad():
        train_out = fe.train()(wave)
        eval_out = fe.eval()(wave)
    torch.testing.assert_close(train_out, eval_out, rtol=0, atol=0)
    assert not fe.model.masked_spec_embed.requires_grad
    # the check is sensitive: with SpecAugment kept, train mode masks frames
    torch.manual_seed(3)
    masked = load_frontend("tiny", spec_augment=True, config_overrides=NO_DROPOUT)
    with torch.no_grad():
        assert not torch.allclose(masked.train()(wave), masked.eval()(wave))


def test_freeze_modes():
    fe = load_frontend("tiny", freeze="feature_encoder")
    assert not any(p.requires_grad for p in fe.model.feature_extractor.parameters())
    assert all(p.requires_grad for p in fe.model.encoder.parameters())
    fe = load_frontend("tiny", freeze="all", layer="weighted")
    fe.train()
    assert not fe.model.training and fe.training
    assert (
        not any(p.requires_grad for p in fe.model.parameters()) and fe.layer_weights.requires_grad
    )
    fe(torch.randn(1, 4_000)).sum().backward()
    assert fe.layer_weights.grad is not None
    with pytest.raises(ValueError, match="gradient_checkpointing"):
        load_frontend("tiny", freeze="all", gradient_checkpointing=True)
    with pytest.raises(ValueError, match="freeze"):
        load_frontend("tiny", freeze="cnn")


def test_from_pretrained_local_directory_round_trip(tmp_path):
    torch.manual_seed(4)
    fe = load_frontend("tiny", config_overrides=NO_DROPOUT).eval()
    fe.model.save_pretrained(tmp_path / "tiny")
    back = load_frontend(tmp_path / "tiny").eval()
    a, b = fe.model.state_dict(), back.model.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)
    wave = torch.randn(1, 8_000)
    with torch.no_grad():
        torch.testing.assert_close(fe(wave), back(wave), rtol=0, atol=0)

    # a checkpoint that does not fill the model is refused, not half-loaded
    cfg = json.loads((tmp_path / "tiny" / "config.json").read_text())
    cfg["num_hidden_layers"] = 3
    (tmp_path / "tiny" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="missing"):
        load_frontend(tmp_path / "tiny")


def test_frontend_errors_name_the_field():
    with pytest.raises(ValueError, match="neither a known name"):
        load_frontend("xlsr_3000m")
    with pytest.raises(ValueError, match="frontend_layer"):
        load_frontend("tiny", layer=3)
    with pytest.raises(ValueError, match="frontend_layer"):
        load_frontend("tiny", layer="mean")
    with pytest.raises(ValueError, match="samples >= 400"):
        load_frontend("tiny")(torch.randn(1, 399))


# ---- heads --------------------------------------------------------------------------------------


def test_exact_parameter_counts():
    assert n_params(AASIST()) == 447_242
    assert n_params(AASIST().proj) == 131_200
    assert n_params(Nes2NetX(n_logits=1)) == 511_014
    assert n_params(Nes2NetX(n_logits=2)) == 512_039
    assert n_params(build_head("aasist", 1024)) == 447_242
    assert n_params(build_head("nes2net_x", 1024, n_logits=1)) == 511_014


@pytest.mark.parametrize("head", HEAD_PARAMS)
@pytest.mark.parametrize("frames", [201, 208, 57])
def test_heads_on_1024d_features(head, frames):
    torch.manual_seed(5)
    h = build_head(head, 1024)
    feats = torch.randn(2, frames, 1024)
    assert h(feats).shape == (2, 2)
    h.eval()
    with torch.no_grad():
        out = h(feats[:1])
    assert out.shape == (1, 2) and torch.isfinite(out).all()


@pytest.mark.parametrize("head", HEAD_PARAMS)
def test_one_logit_heads(head):
    assert build_head(head, 1024, n_logits=1).eval()(torch.randn(1, 30, 1024)).shape == (1, 1)


@pytest.mark.parametrize("head", HEAD_PARAMS)
def test_detector_forward_backward_on_tiny_frontend(head):
    torch.manual_seed(6)
    det = build_model(frontend="tiny", head=head)
    assert isinstance(det, Detector) and det.training
    for samples, frames in ((64_600, 201), (66_800, 208)):
        wave = torch.randn(2, samples)
        assert det.frontend(wave).shape == (2, frames, det.frontend.out_dim)
        logits = det(wave)
        assert logits.shape == (2, 2)
    torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1])).backward()
    no_grad = [n for n, p in det.named_parameters() if p.requires_grad and p.grad is None]
    assert not no_grad, (
        f"trainable parameters without a gradient (DDP would hang or fail): {no_grad}"
    )
    # variable lengths, batch 1, eval mode (full-utterance scoring)
    det.eval()
    with torch.no_grad():
        for samples in (16_000, 48_123, 96_000):
            s = det.score(torch.randn(1, samples))
            assert s.shape == (1,) and torch.isfinite(s).all()


# ---- pinned outputs -----------------------------------------------------------------------------
# Fixed seed -> fixed logits. A change here means the architecture, its initialisation or the
# parameter creation order changed: update the pins only on purpose.


def _pinned_feats() -> torch.Tensor:
    g = torch.Generator().manual_seed(123)
    return torch.randn(2, 201, 1024, generator=g)


PINS = {
    "aasist": [[-0.37680662, -0.19410341], [-0.37882963, -0.19460823]],
    "nes2net_x": [[-0.52325326, 0.18186864], [-0.47542003, 0.08988023]],
    "tiny+aasist": [[-0.12056464, 0.01375708], [-0.11720536, 0.01157585]],
}


@pytest.mark.parametrize("name", sorted(PINS))
def test_pinned_outputs(name):
    torch.manual_seed(0)
    if name == "tiny+aasist":
        model = build_model(frontend="tiny", head="aasist")
        x = torch.randn(2, 16_000, generator=torch.Generator().manual_seed(7))
    else:
        model = build_head(name, 1024)
        x = _pinned_feats()
    with torch.no_grad():
        model(x)  # one train-mode pass (seeded dropout) moves the BatchNorm statistics off 0/1
        out = model.eval()(x)
    expected = PINS[name]
    if expected is None:
        pytest.fail(f"pin missing for {name}: {out.tolist()}")
    torch.testing.assert_close(out, torch.tensor(expected), rtol=1e-5, atol=1e-5)


# ---- builder and score --------------------------------------------------------------------------


def test_heads_dict_is_explicit():
    assert set(HEADS) == {
        "aasist",
        "xlsr_mamba",
        "fake_mamba",
        "nes2net_x",
        "sls",
        "aasist_raw",
        "lcnn",
        "amsdf",
    }
    assert set(head_names()) == set(HEADS)  # the config's copy (validation without torch) agrees


def test_unknown_head_lists_valid_names():
    # 'lcnn' and 'sls' became heads: ask for names that are not (rawnet2, tcm)
    with pytest.raises(ValueError, match=re.escape("valid heads: " + ", ".join(sorted(HEADS)))):
        build_model(frontend="tiny", head="rawnet2")
    with pytest.raises(ValueError, match="valid heads"):
        build_head("tcm", 1024)


def test_bad_head_kwargs_and_n_logits():
    with pytest.raises(ValueError, match=r"head_kwargs \['gat_dim'\].*gat_dims"):
        build_head("aasist", 1024, gat_dim=(64, 32))
    with pytest.raises(ValueError, match="n_logits"):
        build_head("aasist", 1024, n_logits=3)


def test_prebuilt_frontend_module():
    fe = load_frontend("tiny", layer=1)
    det = build_model(frontend=fe, head="nes2net_x", n_logits=1)
    assert det.frontend is fe and det(torch.randn(2, 4_000)).shape == (2, 1)
    with pytest.raises(ValueError, match="frontend_layer"):
        build_model(frontend=fe, head="aasist", frontend_layer=2)


def test_score_from_logits_polarity():
    two = torch.tensor([[0.5, 2.0], [3.0, -1.0]])
    torch.testing.assert_close(score_from_logits(two), torch.tensor([1.5, -4.0]))
    torch.testing.assert_close(
        score_from_logits(torch.tensor([[0.7], [-0.2]])), torch.tensor([0.7, -0.2])
    )
    # with two logits the score is the log-odds of the softmax: higher = more bona fide (index 1)
    p = torch.softmax(two, dim=1)[:, 1]
    torch.testing.assert_close(score_from_logits(two), torch.log(p / (1 - p)))
    with pytest.raises(ValueError, match="logits"):
        score_from_logits(torch.zeros(2, 3))
