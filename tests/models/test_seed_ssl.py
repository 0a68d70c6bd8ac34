"""Importing SSL-AASIST (TakHemlata/SSL_Anti-spoofing) and Nes2Net-X (Liu-Tianchi/
Nes2Net_ASVspoof_ITW) checkpoints: converted heads give the seeds' own outputs, layouts are
checked key by key, and the fine-tuned fairseq front-end of a full seed file loads too.

The pinned logits were computed by the seeds' own model code outside this repository
(SSL_Anti-spoofing ``model.py`` ``Model``, commit 17111cd; Nes2Net_ASVspoof_ITW
``model_scripts/wav2vec2_Nes2Net_X.py`` ``wav2vec2_Nes2Net_no_Res_w_allT``, commit ee8b559, with
Nes_ratio 8 8, SE_ratio 1, dilation 2, pool 'mean'): ``fairseq`` stubbed so that its SSL model
returned ``random_feats(2, T, 1024, seed=0)`` through the seed's own ``Model.forward`` ->
``extract_feat`` path, the back-end's state dict checked equal to the layout file and filled
strictly with ``random_state_dict(layout, seed=0)``, eval mode; float32, and again in float64
(model and features), which is free of float32 summation-order noise.
"""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
from conftest import SHARED

from spoofdet.models.checkpoints import load_state_dict_strict
from spoofdet.models.seeds import (
    SEEDS,
    SeedCheckpointError,
    build_seed_head,
    convert_seed_state_dict,
    read_seed_checkpoint,
    seed_n_logits,
)
from spoofdet.testing import (
    random_feats,
    random_state_dict,
    random_waves,
    read_layout,
    tiny_fairseq_config,
    tiny_fairseq_state_dict,
)

LAYOUTS = SHARED / "reference" / "seed-checkpoints"

#: (seed, layout file, DataParallel prefix on every key): the four checkpoint kinds.
CASES = {
    "ssl_aasist_LA": ("ssl_aasist", "aasist.tsv", False),  # LA files: saved from the bare model
    "ssl_aasist_DF": ("ssl_aasist", "aasist.tsv", True),  # DF files: saved from nn.DataParallel
    "nes2net_x_2": ("nes2net_x", "nes2net_x.tsv", False),  # main.py's default head
    "nes2net_x_1": ("nes2net_x", "nes2net_x_1logit.tsv", False),  # the released DF checkpoint
}

#: The seeds' logits on random_feats(2, T, 1024, seed=0), float32, by (head, T).
SEED_LOGITS = {
    ("ssl_aasist", 201): [
        [-2.001725196838379, 7.634755611419678],
        [-1.5303699970245361, 6.668887615203857],
    ],
    ("ssl_aasist", 208): [
        [1.0357975959777832, 7.731142997741699],
        [-2.140988349914551, 7.238088607788086],
    ],
    ("nes2net_x_2", 201): [
        [-0.4021533131599426, 0.25869858264923096],
        [-0.4063829779624939, 0.4162158966064453],
    ],
    ("nes2net_x_2", 208): [
        [-0.36033517122268677, 0.36903858184814453],
        [-0.3804723024368286, 0.2775425314903259],
    ],
    ("nes2net_x_1", 201): [[-0.4021531343460083], [-0.40638267993927]],
    ("nes2net_x_1", 208): [[-0.360335111618042], [-0.3804718255996704]],
}
#: The same with the seed model and the features in float64.
SEED_LOGITS_F64 = {
    ("ssl_aasist", 201): [
        [-2.0017300939478115, 7.634747033071546],
        [-1.5303588739184355, 6.668879509955369],
    ],
    ("ssl_aasist", 208): [
        [1.03578977355426, 7.7311387377525325],
        [-2.140992540077936, 7.238093251713231],
    ],
    ("nes2net_x_2", 201): [
        [-0.40215358834187176, 0.2586982258424461],
        [-0.406382960273323, 0.41621581722522993],
    ],
    ("nes2net_x_2", 208): [
        [-0.36033485113330704, 0.3690384115453731],
        [-0.3804716623943124, 0.27754264155817887],
    ],
    ("nes2net_x_1", 201): [[-0.40215358834187165], [-0.4063829602733223]],
    ("nes2net_x_1", 208): [[-0.3603348511333073], [-0.3804716623943119]],
}
PARAMETERS = {"ssl_aasist": 447_242, "nes2net_x_2": 512_039, "nes2net_x_1": 511_014}


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see conftest.one_thread


def _layout(name: str) -> list[tuple[str, tuple[int, ...], str]]:
    path = LAYOUTS / name
    if not path.is_file():
        pytest.skip(
            f"seed layout {path} not found (it lives in the project's ../shared; "
            "set SPOOFDET_SHARED to point elsewhere)"
        )
    return read_layout(path)


def _seed_file(case: str, frontend_seed: int = 0) -> OrderedDict[str, torch.Tensor]:
    """A seed checkpoint as its training script saves it: the fine-tuned fairseq front-end under
    ``ssl_model.model.`` and the back-end with random tensors; ``module.`` on every key or none."""
    seed, tsv, prefixed = CASES[case]
    head = random_state_dict(_layout(tsv), seed=0)
    # aasist.tsv lists a DataParallel (DF) checkpoint; an LA one has the same keys without it
    head = OrderedDict((k.removeprefix("module."), v) for k, v in head.items())
    sd = OrderedDict(
        (f"ssl_model.model.{k}", v) for k, v in tiny_fairseq_state_dict(seed=frontend_seed).items()
    )
    sd.update(head)
    if prefixed:
        sd = OrderedDict((f"module.{k}", v) for k, v in sd.items())
    return sd


def _pin_name(case: str) -> str:
    return "ssl_aasist" if case.startswith("ssl_aasist") else case


def _imported_head(sd: dict[str, torch.Tensor], seed: str) -> torch.nn.Module:
    head_sd, _ = convert_seed_state_dict(sd, seed=seed)
    return load_state_dict_strict(build_seed_head(seed, seed_n_logits(head_sd, seed)), head_sd)


# ---- outputs --------------------------------------------------------------------------------


@pytest.mark.parametrize("case", sorted(CASES))
def test_imported_heads_give_the_seeds_logits(case):
    seed = CASES[case][0]
    head = _imported_head(_seed_file(case), seed).eval()
    assert sum(p.numel() for p in head.parameters()) == PARAMETERS[_pin_name(case)]
    for frames in (201, 208):
        expected = torch.tensor(SEED_LOGITS[_pin_name(case), frames])
        with torch.no_grad():
            out = head(random_feats(2, frames, 1024, seed=0))
        torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
    head = head.double()
    for frames in (201, 208):
        expected = torch.tensor(SEED_LOGITS_F64[_pin_name(case), frames], dtype=torch.float64)
        with torch.no_grad():
            out = head(random_feats(2, frames, 1024, seed=0).double())
        torch.testing.assert_close(out, expected, rtol=1e-10, atol=0.0)


def test_number_of_logits_is_read_off_the_nes2net_x_file():
    assert SEEDS["nes2net_x"].n_logits is None and SEEDS["ssl_aasist"].n_logits == 2
    for case, n in (("nes2net_x_1", 1), ("nes2net_x_2", 2)):
        head_sd, fe_sd = convert_seed_state_dict(_seed_file(case), seed="nes2net_x")
        assert seed_n_logits(head_sd, "nes2net_x") == n
        assert tuple(head_sd["out.weight"].shape) == (n, 1024)
        # the seed's (1, 1, 1, depth) weighted sums became (depth,) vectors, values kept
        assert tuple(head_sd["blocks.6.mix.5"].shape) == (7,)
        assert fe_sd is not None
    for name in ("ssl_aasist", "nes2net_x"):
        spec = SEEDS[name]
        assert (spec.frontend, spec.in_dim, spec.num_samples, spec.out_key) == (
            "fairseq",
            1024,
            64_600,
            "out.weight",
        )
        assert spec.published and spec.score_rule == "bonafide_logit"


# ---- a full seed file: fine-tuned fairseq front-end + head ----------------------------------


@pytest.mark.parametrize("case", ["ssl_aasist_DF", "nes2net_x_1"])
def test_full_seed_file_front_end_and_head_load_strictly(case):
    from test_checkpoints import _fairseq_forward
    from transformers import Wav2Vec2Model

    seed = CASES[case][0]
    head_sd, fe_sd = convert_seed_state_dict(_seed_file(case, frontend_seed=5), seed=seed)
    head = load_state_dict_strict(build_seed_head(seed, seed_n_logits(head_sd, seed)), head_sd)
    frontend = load_state_dict_strict(Wav2Vec2Model(tiny_fairseq_config()), fe_sd).eval()
    wave = random_waves(2, 8_000, seed=1)
    with torch.no_grad():
        feats = frontend(wave).last_hidden_state
        expected = _fairseq_forward(tiny_fairseq_state_dict(seed=5), wave)
    torch.testing.assert_close(feats, expected, rtol=1e-5, atol=1e-5)
    assert feats.shape == (2, 24, 64)
    assert len(head_sd) == len(head.state_dict())


# ---- refusals -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "case, drop, extra, lacking",
    [
        ("ssl_aasist_DF", "module.LL.bias", "module.LL2.weight", "proj.bias"),
        (
            "ssl_aasist_LA",
            "HtrgGAT_layer_ST22.att_weightM",
            "pool_hS3.proj.weight",
            "hs_gal22.att_weight_master",
        ),
        # an 'ASTP'-pooling Nes2Net-X file has pooling.* tensors and no longer fits the head
        (
            "nes2net_x_2",
            "Nested_Res2Net_TDNN.Build_in_Res2Nets.3.weighted_sum.2",
            "Nested_Res2Net_TDNN.pooling.linear1.weight",
            "blocks.3.mix.2",
        ),
    ],
)
def test_one_key_too_many_and_one_too_few_are_both_listed(case, drop, extra, lacking):
    sd = _seed_file(case)
    del sd[drop]
    sd[extra] = torch.zeros(1)
    with pytest.raises(SeedCheckpointError) as err:
        convert_seed_state_dict(sd, seed=CASES[case][0])
    msg = str(err.value)
    assert "keys in the file that map to nothing (1): " + extra.removeprefix("module.") in msg
    assert "tensors the model needs that the file lacks (1): " + lacking in msg


@pytest.mark.parametrize(
    "case, key, shape, named",
    [
        (
            "ssl_aasist_LA",
            "LL.weight",
            (128, 768),
            "LL.weight (128, 768) vs spoofdet proj.weight (128, 1024)",
        ),
        # a weighted sum of the wrong depth is flattened, then refused by name
        (
            "nes2net_x_1",
            "Nested_Res2Net_TDNN.Build_in_Res2Nets.0.weighted_sum.0",
            (1, 1, 1, 3),
            "Nested_Res2Net_TDNN.Build_in_Res2Nets.0.weighted_sum.0 (3,) vs spoofdet blocks.0.mix.0 (2,)",
        ),
    ],
)
def test_shape_mismatch_is_refused_naming_the_key(case, key, shape, named):
    sd = _seed_file(case)
    sd[key] = torch.zeros(shape)
    with pytest.raises(SeedCheckpointError, match=r"shape mismatches \(1\)") as err:
        convert_seed_state_dict(sd, seed=CASES[case][0])
    assert named in str(err.value)


def test_unknown_seed_lists_the_known_ones():
    known = r"'ssl_aasit' is unknown; known seeds: .*nes2net_x.*ssl_aasist"
    with pytest.raises(SeedCheckpointError, match=known):
        convert_seed_state_dict({"LL.weight": torch.zeros(1)}, seed="ssl_aasit")


def test_file_without_front_end_is_refused():
    sd = OrderedDict(
        (k, v) for k, v in _seed_file("nes2net_x_1").items() if not k.startswith("ssl_model.")
    )
    with pytest.raises(SeedCheckpointError, match="ssl_model.model"):
        convert_seed_state_dict(sd, seed="nes2net_x")


# ---- reading the file -------------------------------------------------------------------------


@pytest.mark.parametrize("wrapped", [False, True])
def test_read_seed_checkpoint_round_trips(tmp_path, wrapped):
    sd = _seed_file("ssl_aasist_DF")
    path = tmp_path / "best_SSL_model_DF.pth"
    torch.save({"state_dict": sd} if wrapped else sd, path)
    back = read_seed_checkpoint(path)
    assert list(back) == list(sd)
    assert all(torch.equal(back[k], v) and back[k].dtype == v.dtype for k, v in sd.items())
    head = _imported_head(back, "ssl_aasist").eval()
    with torch.no_grad():
        out = head(random_feats(2, 201, 1024, seed=0))
    expected = torch.tensor(SEED_LOGITS["ssl_aasist", 201])
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
