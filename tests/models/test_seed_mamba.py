"""The two Mamba seeds (XLSR-Mamba, Fake-Mamba): a checkpoint in the seed's exact layout imports
strictly, and the imported head computes the logits the seed's own code computes.

The pinned logits were computed once, outside this repository, by the seeds' own code:
XLSR-Mamba ``model.py`` ``Model.forward`` (+ ``mamba_blocks.py`` ``MixerModel``) and Fake-Mamba
``model.py`` ``Fake_Mamba.forward`` (+ ``conformer00.py`` ``PN_BiMambas``), on CPU in float32,
with mamba-ssm 1.1.4's own pure-PyTorch references in place of its CUDA/triton kernels
(``selective_scan_ref`` for the scan on the Mamba slow path, ``rms_norm_ref`` behind the fused
add+norm ``rms_norm_fn``, causal_conv1d absent), ``fairseq`` stubbed, and the SSL model replaced
by one whose ``extract_feat`` returns the given features. Weights: ``random_state_dict`` of the
layout file with seed 0 (loaded strictly, after checking the seed's state dict has exactly that
layout); inputs: ``random_feats(2, frames, 1024, seed=0)``; ``.eval()``.
"""

from __future__ import annotations

import functools
from collections import OrderedDict

import pytest
import torch
from conftest import SHARED

from spoofdet.models import build_head
from spoofdet.models.seeds import (
    SEEDS,
    SeedCheckpointError,
    build_seed_head,
    convert_seed_state_dict,
)
from spoofdet.testing import random_feats, random_state_dict, read_layout, tiny_fairseq_state_dict

LAYOUTS = SHARED / "reference" / "seed-checkpoints"
MAMBA_SEEDS = ("xlsr_mamba", "fake_mamba")

# Seed logits (see the module docstring), float32 values printed with repr.
SEED_LOGITS: dict[str, dict[int, list[list[float]]]] = {
    "xlsr_mamba": {
        201: [
            [0.095338374376297, 0.023636095225811005],
            [0.017735600471496582, -0.24385331571102142],
        ],
        208: [
            [0.005798310041427612, 0.01661195233464241],
            [-0.12611614167690277, -0.137626513838768],
        ],
    },
    "fake_mamba": {
        201: [
            [0.009357057511806488, -1.409493088722229],
            [-0.35015997290611267, -0.46220454573631287],
        ],
        208: [[0.4940178096294403, -0.554099440574646], [-0.1959717571735382, -1.5463544130325317]],
    },
}
# Float32 rounding differs (parallel vs step-loop scan, one vs two mixer calls): observed
# |spoofdet - seed| <= 2.3e-6, relative <= 6e-5 on the smallest logit (0.0094).
RTOL, ATOL = 1e-5, 1e-5


@pytest.fixture(autouse=True, scope="module")
def _two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(min(2, before))
    yield
    torch.set_num_threads(before)


def _layout(seed: str) -> list[tuple[str, tuple[int, ...], str]]:
    path = LAYOUTS / f"{seed}.tsv"
    if not path.is_file():
        pytest.skip(
            f"seed layout {path} not found (it lives in the project's ../shared/reference; "
            "set SPOOFDET_SHARED to point elsewhere)"
        )
    return read_layout(path)


def _checkpoint(seed: str) -> OrderedDict[str, torch.Tensor]:
    """A file as the seed saves it: the back-end in the seed's layout (random, seed 0) plus a tiny
    fine-tuned fairseq front-end under ``ssl_model.model.`` (every such seed checkpoint has one)."""
    sd = random_state_dict(_layout(seed), seed=0)
    sd.update((f"ssl_model.model.{k}", v) for k, v in tiny_fairseq_state_dict(seed=0).items())
    return sd


@functools.cache
def _imported(seed: str) -> torch.nn.Module:
    """The spoofdet head of :func:`_checkpoint`, converted and loaded strictly (built once)."""
    head_sd, frontend_sd = convert_seed_state_dict(_checkpoint(seed), seed=seed)
    assert frontend_sd is not None and "feature_extractor.conv_layers.0.conv.weight" in frontend_sd
    head = build_seed_head(seed, 2)
    head.load_state_dict(head_sd, strict=True)
    return head.eval()


def _logits(head: torch.nn.Module, frames: int) -> torch.Tensor:
    with torch.no_grad():
        return head(random_feats(2, frames, 1024, seed=0))


@pytest.mark.parametrize("seed", MAMBA_SEEDS)
def test_spec_names_head_frontend_and_input_length(seed):
    spec = SEEDS[seed]
    assert (spec.head, spec.frontend, spec.in_dim) == (seed, "fairseq", 1024)
    assert spec.num_samples == 66_800  # 4.18 s crops (208 frames), both seeds
    assert spec.convention == "1 = bona fide; score = logit[:, 1]" and spec.published


@pytest.mark.parametrize("seed", MAMBA_SEEDS)
def test_imported_head_computes_the_seeds_logits(seed):
    head = _imported(seed)
    buffers = ("running_mean", "running_var", "num_batches_tracked")
    n_params = sum(p.numel() for p in head.parameters())
    in_file = sum(torch.Size(s).numel() for k, s, _ in _layout(seed) if not k.endswith(buffers))
    assert n_params == in_file == {"xlsr_mamba": 1_936_950, "fake_mamba": 2_336_405}[seed]
    for frames in (201, 208):
        torch.testing.assert_close(
            _logits(head, frames),
            torch.tensor(SEED_LOGITS[seed][frames]),
            rtol=RTOL,
            atol=ATOL,
            msg=f"{seed}, {frames} frames",
        )


def test_xlsr_mamba_last_block_norm_is_opt_in_and_differs():
    # The seed's final norm reads (stack input + residual before the last block) and is the
    # default; spoofdet's earlier behaviour (norm of residual + last block output) is an option.
    assert build_head("xlsr_mamba", 1024).final_norm == "seed"
    assert SEEDS["xlsr_mamba"].model["head_kwargs"] == {"final_norm": "seed"}
    seed_head = _imported("xlsr_mamba")
    other = build_head("xlsr_mamba", 1024, final_norm="last_block")
    other.load_state_dict(seed_head.state_dict(), strict=True)  # same parameters
    other.eval()
    for frames in (201, 208):
        seed_logits = torch.tensor(SEED_LOGITS["xlsr_mamba"][frames])
        assert (_logits(other, frames) - seed_logits).abs().max() > 1e-2, frames


@pytest.mark.parametrize("seed", MAMBA_SEEDS)
def test_one_key_too_many_and_one_too_few_are_both_listed(seed):
    sd = _checkpoint(seed)
    head_keys = [k for k in sd if not k.startswith("ssl_model.")]
    dropped = head_keys[len(head_keys) // 2]
    del sd[dropped]
    sd["conformer.extra_gate.weight"] = torch.zeros(3)
    with pytest.raises(SeedCheckpointError) as info:
        convert_seed_state_dict(sd, seed=seed)
    msg = str(info.value)
    extra_part, missing_part = msg.split("that map to nothing")[1].split("lacks")
    assert "conformer.extra_gate.weight" in extra_part, msg
    assert _spoofdet_name(seed, dropped) in missing_part, (dropped, msg)


def _spoofdet_name(seed: str, key: str) -> str:
    """The spoofdet key the seed's ``key`` maps to (by the spec's rules)."""
    import re

    for pattern, target in SEEDS[seed].rules:
        m = re.fullmatch(pattern, key)
        if m:
            return m.expand(target)
    raise AssertionError(f"{key} maps to nothing")


@pytest.mark.parametrize("seed", MAMBA_SEEDS)
def test_dataparallel_prefix_imports_identically(seed):
    sd = _checkpoint(seed)
    plain_head, plain_fe = convert_seed_state_dict(sd, seed=seed)
    wrapped_head, wrapped_fe = convert_seed_state_dict(
        OrderedDict((f"module.{k}", v) for k, v in sd.items()), seed=seed
    )
    assert list(wrapped_head) == list(plain_head) and list(wrapped_fe) == list(plain_fe)
    assert all(torch.equal(wrapped_head[k], plain_head[k]) for k in plain_head)
    assert all(torch.equal(wrapped_fe[k], plain_fe[k]) for k in plain_fe)


def test_every_seed_key_has_one_spoofdet_name():
    # Each back-end key of both layouts maps, one to one, onto a key of the spoofdet head.
    for seed in MAMBA_SEEDS:
        keys = [k for k, _, _ in _layout(seed)]
        names = [_spoofdet_name(seed, k) for k in keys]
        assert len(set(names)) == len(keys)
        assert set(names) == set(build_seed_head(seed, 2).state_dict())
