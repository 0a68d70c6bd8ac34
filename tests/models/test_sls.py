"""SLS head (spoofdet.models.sls): exact size, outputs pinned to the seed's own code, the seed
checkpoint converter, fixed-length refusal, and training end to end with a tiny front-end.

The pinned values were computed by the seed's ``model.py`` (QiShanZhang/SLSforASVspoof-2021-DF,
commit c30d005) outside this repository: fairseq stubbed so that its SSL model returned the
layer outputs below in fairseq's format (``layer_results = [(x[T, B, D], attn), ...]``), the
back-end filled strictly with ``random_state_dict(layout, seed=0)``, eval mode, float32 (and
again in float64).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from spoofdet.models import build_head, build_model
from spoofdet.models.checkpoints import load_state_dict_strict
from spoofdet.models.seeds import (
    SEEDS,
    SeedCheckpointError,
    build_seed_head,
    convert_seed_state_dict,
)
from spoofdet.models.sls import SLS
from spoofdet.testing import (
    random_feats,
    random_state_dict,
    random_waves,
    read_layout,
    tiny_fairseq_state_dict,
)

LAYOUT = Path(__file__).resolve().parents[1] / "assets" / "seed_layouts" / "sls.tsv"

#: The seed's log-probabilities (B = 2) on layers k = 1..24 = random_feats(2, 201, 1024, seed=k).
SEED_LOG_PROBS = [
    [-2.2927322387695312, -0.10646127164363861],
    [-4.522608280181885, -0.010920049622654915],
]
#: The same with the seed model and inputs in float64 (free of float32 summation-order noise).
SEED_LOG_PROBS_F64 = [
    [-2.292730407686209, -0.10646149958702489],
    [-4.522598940884401, -0.010920169081926218],
]


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see conftest.one_thread


def _seed_layers() -> torch.Tensor:
    return torch.stack([random_feats(2, 201, 1024, seed=k) for k in range(1, 25)], dim=1)


def _seed_checkpoint() -> dict[str, torch.Tensor]:
    """A seed training checkpoint: DataParallel prefix, fairseq front-end, random back-end."""
    sd = {f"module.ssl_model.model.{k}": v for k, v in tiny_fairseq_state_dict(seed=0).items()}
    sd.update({f"module.{k}": v for k, v in random_state_dict(read_layout(LAYOUT), seed=0).items()})
    return sd


def test_exact_parameter_count():
    assert sum(p.numel() for p in SLS().parameters()) == 23_399_429
    head = build_head("sls", 1024)
    assert sum(p.numel() for p in head.parameters()) == 23_399_429 and head.flat == 22_847
    # the layout read off the seed has the same tensors, keys and shapes
    layout = {k: s for k, s, _ in read_layout(LAYOUT)}
    assert {k: tuple(v.shape) for k, v in SLS().state_dict().items()} == layout


def test_seed_outputs_pinned():
    head_sd, fe_sd = convert_seed_state_dict(_seed_checkpoint(), seed="sls")
    assert fe_sd is not None and any(k.startswith("encoder.layers.") for k in fe_sd)
    head = load_state_dict_strict(build_seed_head("sls", 2), head_sd).eval()
    with torch.no_grad():
        out = head(_seed_layers())
    torch.testing.assert_close(out, torch.tensor(SEED_LOG_PROBS), rtol=1e-5, atol=0.0)
    with torch.no_grad():
        out64 = head.double()(_seed_layers().double())
    torch.testing.assert_close(
        out64, torch.tensor(SEED_LOG_PROBS_F64, dtype=torch.float64), rtol=1e-10, atol=0.0
    )
    assert SEEDS["sls"].model == {"frontend_layer": "all"} and SEEDS["sls"].num_samples == 64_600


def test_converter_lists_extra_and_missing_keys():
    sd = _seed_checkpoint()
    sd["module.fc2.weight"] = torch.zeros(3, 3)  # one key too many
    del sd["module.fc0.bias"]  # one too few
    with pytest.raises(SeedCheckpointError) as info:
        convert_seed_state_dict(sd, seed="sls")
    text = str(info.value)
    assert "fc2.weight" in text and "fc0.bias" in text
    assert "map to nothing" in text and "lacks" in text


def test_fixed_length_is_enforced():
    head = SLS().eval()
    refusal = r"frames=201 frames, got 208.*variable-length.*--length 4s"
    with pytest.raises(ValueError, match=refusal):
        head(torch.zeros(1, 24, 208, 1024))
    with pytest.raises(ValueError, match="n_layers=24 layer outputs, got 23"):
        head(torch.zeros(1, 23, 201, 1024))
    with pytest.raises(ValueError, match="frontend_layer='all'"):
        head(torch.zeros(1, 201, 1024))


def test_one_logit_is_a_raw_score():
    head = SLS(in_dim=8, n_logits=1, n_layers=3, frames=9, hidden=4).eval()
    out = head(torch.randn(5, 3, 9, 8))
    assert out.shape == (5, 1) and out.abs().sum() > 0  # no log-softmax over one logit (always 0)


def test_detector_with_tiny_frontend_trains():
    torch.manual_seed(0)
    no_dropout = {
        "hidden_dropout": 0.0,
        "attention_dropout": 0.0,
        "activation_dropout": 0.0,
        "feat_proj_dropout": 0.0,
    }
    model = build_model(
        frontend="tiny",
        head="sls",
        frontend_layer="all",
        head_kwargs={"n_layers": 2, "hidden": 32},
        frontend_kwargs={"config_overrides": no_dropout},
    )
    waves = random_waves(4, 64_600, seed=1)
    labels = torch.tensor([0, 1, 0, 1])
    assert model.frontend(waves).shape == (4, 2, 201, 64)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    weight = torch.tensor([0.1, 0.9])  # the seed's class weights
    losses = []
    for _ in range(5):
        loss = torch.nn.functional.cross_entropy(model(waves), labels, weight=weight)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0], losses
    with pytest.raises(ValueError, match="got 208"):  # 66,800 samples -> 208 frames
        model.eval()(random_waves(1, 66_800))
