"""Raw-waveform AASIST / AASIST-L (spoofdet.models.aasist_raw): exact sizes, outputs pinned to the
seed's own code on random and on the real published checkpoints, the seed converter, refusals,
and training end to end.

The pinned values were computed by the seed's ``models/AASIST.py`` (clovaai/aasist, commit
8ec3bf9) outside this repository, with the ``model_config`` of ``config/AASIST.conf`` and
``config/AASIST-L.conf``: (a) filled strictly with ``random_state_dict(layout, seed=0)``, eval
mode, float32 (and again in float64: model, its sinc filters and the input), inputs
``random_waves(2, N, seed=0)`` for N = 64,600 and 66,560; (b) the published ``AASIST.pth`` /
``AASIST-L.pth`` loaded with ``torch.load(weights_only=True)``, input ``random_waves(2, 64_600,
seed=1)``. Layouts read off the same code: tests/assets/seed_layouts/aasist.tsv, aasist_l.tsv.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
from conftest import published_checkpoint, published_sha256

from spoofdet.models import build_head, build_model
from spoofdet.models.aasist_raw import AASIST_L, RawAASIST, sinc_filterbank
from spoofdet.models.checkpoints import load_state_dict_strict
from spoofdet.models.seeds import (
    SEEDS,
    SeedCheckpointError,
    build_seed_head,
    convert_seed_state_dict,
    read_seed_checkpoint,
)
from spoofdet.testing import layout_of, random_state_dict, random_waves, read_layout

LAYOUTS = Path(__file__).resolve().parents[1] / "assets" / "seed_layouts"
FILES = {"aasist": "AASIST.pth", "aasist_l": "AASIST-L.pth"}

#: The seed's logits on random checkpoints, float32: (seed, N) -> [[l0, l1], [l0, l1]].
SEED_LOGITS = {
    ("aasist", 64_600): [
        [9.238557815551758, 1.2030459642410278],
        [9.626449584960938, 0.9194736480712891],
    ],
    ("aasist", 66_560): [
        [9.260095596313477, 1.1499238014221191],
        [9.6299467086792, 0.9601274728775024],
    ],
    ("aasist_l", 64_600): [
        [-0.16561409831047058, 0.39041244983673096],
        [-0.18847033381462097, 0.3938990831375122],
    ],
    ("aasist_l", 66_560): [
        [-0.21097037196159363, 0.33450186252593994],
        [-0.2348780333995819, 0.3397408723831177],
    ],
}
#: The same in float64 (free of float32 summation-order noise, which reaches ~1e-5 relative on
#: AASIST-L's small random logits).
SEED_LOGITS_F64 = {
    "aasist": [[9.23855631907914, 1.20304520978578], [9.62644718248773, 0.9194712664643905]],
    "aasist_l": [
        [-0.16561449780590376, 0.39041334741272493],
        [-0.18847093826943562, 0.3938989322576745],
    ],
}
#: The seed's logits with the real published files on random_waves(2, 64_600, seed=1).
PUBLISHED_LOGITS = {
    "aasist": [[2.9845919609069824, -3.2154300212860107], [3.4549832344055176, -3.667635202407837]],
    "aasist_l": [[3.102583408355713, -2.9759764671325684], [3.114767074584961, -2.953036069869995]],
}
#: Nodes for 64,600 samples (module docstring): encoder output, then S / T after the first
#: pools and after the HS-GAL pools.
SHAPES = {"aasist": ((64, 23, 29), 11, 20, 5, 10), "aasist_l": ((24, 23, 29), 9, 14, 6, 9)}


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _converted(seed: str, state_dict: dict[str, torch.Tensor]) -> torch.nn.Module:
    head_sd, frontend = convert_seed_state_dict(state_dict, seed=seed)
    assert frontend is None  # the sinc front-end has no weights
    head = build_seed_head(seed, 2)
    load_state_dict_strict(head, head_sd)
    return head.eval()


def _random_seed_checkpoint(seed: str) -> dict[str, torch.Tensor]:
    return random_state_dict(read_layout(LAYOUTS / f"{seed}.tsv"), seed=0)


# ---- size and layout ----------------------------------------------------------------------------


def test_exact_parameter_counts_and_the_seed_layout():
    assert n_params(RawAASIST()) == 297_866
    assert n_params(RawAASIST(**AASIST_L)) == 85_306
    assert n_params(build_head("aasist_raw", 1)) == 297_866
    assert n_params(build_head("aasist_raw", 1, **AASIST_L)) == 85_306
    for seed, kwargs in (("aasist", {}), ("aasist_l", AASIST_L)):
        layout = read_layout(LAYOUTS / f"{seed}.tsv")
        assert len(layout) == 229
        model = RawAASIST(**kwargs)
        state = model.state_dict()
        assert len(state) == 229 and "sinc_filters" not in state  # rebuilt, not saved
        assert model.sinc_filters.shape == (70, 1, 129)
        # the converted seed layout is exactly the model's, key by key and shape by shape
        converted, _ = convert_seed_state_dict(random_state_dict(layout), seed=seed)
        assert {k: tuple(v.shape) for k, v in converted.items()} == {
            k: tuple(v.shape) for k, v in state.items()
        }


def test_sinc_filters_are_the_seed_design():
    f = sinc_filterbank(70, 128)
    assert f.shape == (70, 129) and f.dtype == torch.float32  # kernel 128 made odd
    assert torch.equal(f, f.flip(-1))  # symmetric (linear phase)
    # a pure float64 design of the same filters (mel-spaced edges over 257 FFT bins, ideal
    # band-pass, Hamming window) is within the 1.6e-7 the module docstring states
    import numpy as np

    mel = 2595 * np.log10(1 + np.linspace(0, 8000, 257) / 700)
    edges = 700 * (10 ** (np.linspace(mel.min(), mel.max(), 71) / 2595) - 1)
    n = np.arange(129) - 64.0
    lp = [2 * e / 16_000 * np.sinc(2 * e * n / 16_000) for e in edges]
    f64 = torch.from_numpy(np.hamming(129) * (np.stack(lp[1:]) - np.stack(lp[:-1])))
    assert (f.double() - f64).abs().max() < 2e-7
    assert sinc_filterbank(10, 31).shape == (10, 31)


# ---- outputs pinned to the seed's code ----------------------------------------------------------


@pytest.mark.parametrize("seed", sorted(FILES))
@pytest.mark.parametrize("samples", [64_600, 66_560])
def test_random_checkpoint_gives_the_seeds_logits(seed, samples):
    head = _converted(seed, _random_seed_checkpoint(seed))
    wave = random_waves(2, samples, seed=0)
    seen: dict[str, tuple[int, ...]] = {}

    def record(name: str):
        def hook(_module, _inputs, out) -> None:  # returns None: the output stays as it is
            seen[name] = tuple(out.shape[1:])

        return hook

    hooks = [
        getattr(head, name).register_forward_hook(record(name))
        for name in ("encoder", "pool_s", "pool_t", "pool_hs1", "pool_ht1")
    ]
    with torch.no_grad():
        out = head(wave)
    for h in hooks:
        h.remove()
    torch.testing.assert_close(out, torch.tensor(SEED_LOGITS[seed, samples]), rtol=1e-5, atol=1e-5)
    if samples == 64_600:
        enc, s1, t1, s2, t2 = SHAPES[seed]
        assert seen["encoder"] == enc
        nodes = [seen[k][0] for k in ("pool_s", "pool_t", "pool_hs1", "pool_ht1")]
        assert nodes == [s1, t1, s2, t2]
        with torch.no_grad():  # float64: the same computation to rounding, not only to 1e-5
            out64 = head.double()(wave.double())
        torch.testing.assert_close(
            out64, torch.tensor(SEED_LOGITS_F64[seed], dtype=torch.float64), rtol=1e-10, atol=1e-12
        )
        head.float()

    # the detector (parameter-free waveform front-end + this head) computes the same from the wave
    spec = SEEDS[seed]
    det = build_model(frontend=spec.frontend, head=spec.head, n_logits=2, **spec.model).eval()
    load_state_dict_strict(det.head, head.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(det(wave), out, rtol=0, atol=0)


@pytest.mark.parametrize("seed", sorted(FILES))
def test_published_checkpoint_imports_and_gives_the_seeds_logits(seed):
    path = published_checkpoint(FILES[seed])
    assert hashlib.sha256(path.read_bytes()).hexdigest() == published_sha256()[path.name]
    state = read_seed_checkpoint(path)
    layout = read_layout(LAYOUTS / f"{seed}.tsv")
    assert layout_of(state) == layout
    head = _converted(seed, state)
    with torch.no_grad():
        out = head(random_waves(2, 64_600, seed=1))
    torch.testing.assert_close(out, torch.tensor(PUBLISHED_LOGITS[seed]), rtol=1e-5, atol=1e-5)


# ---- converter and errors -----------------------------------------------------------------------


def test_seed_specs():
    for seed, kwargs in (("aasist", {}), ("aasist_l", AASIST_L)):
        spec = SEEDS[seed]
        assert (spec.head, spec.in_dim, spec.frontend) == ("aasist_raw", 1, "waveform")
        assert dict(spec.model.get("head_kwargs", {})) == kwargs
        assert spec.num_samples == 64_600 and spec.bonafide_index == 1 and spec.n_logits == 2
        assert spec.convention == "1 = bona fide; score = logit[:, 1]"
    for seed, eer, tdcf in (("aasist", "0.83 %", "0.0275"), ("aasist_l", "0.99 %", "0.0309")):
        published = str(SEEDS[seed].published)
        assert eer in published and tdcf in published
    # the training recipes build the same heads
    from spoofdet.config import load_train_config

    configs = Path(__file__).resolve().parents[2] / "ray_jobs" / "configs"
    for name, kwargs in (("aasist_19la", {}), ("aasist_l_19la", AASIST_L)):
        model = load_train_config(configs / f"{name}.yaml", check_paths=False).model
        assert (model.frontend, model.head, model.head_kwargs) == ("waveform", "aasist_raw", kwargs)


def test_one_key_too_many_and_one_too_few_are_refused_listing_both():
    sd = _random_seed_checkpoint("aasist")
    del sd["GAT_layer_T.att_weight"]
    sd["conv_time.band_pass"] = torch.zeros(70, 129)  # the filters are never in a seed file
    with pytest.raises(SeedCheckpointError) as err:
        convert_seed_state_dict(sd, seed="aasist")
    msg = str(err.value)
    assert "keys in the file that map to nothing (1): conv_time.band_pass" in msg
    assert "tensors the model needs that the file lacks (1): gat_t.att_weight" in msg
    # AASIST-L has the same keys with other shapes: named as AASIST it is refused, shapes listed
    with pytest.raises(SeedCheckpointError, match="shape mismatches"):
        convert_seed_state_dict(_random_seed_checkpoint("aasist_l"), seed="aasist")


def test_errors_name_the_field():
    with pytest.raises(ValueError, match="in_dim: raw AASIST reads the waveform"):
        build_model(frontend="tiny", head="aasist_raw")
    with pytest.raises(ValueError, match="filts"):
        RawAASIST(filts=[70, [1, 32], [16, 32], [32, 64], [64, 64]])
    with pytest.raises(ValueError, match="pool_ratios"):
        RawAASIST(pool_ratios=[0.5, 0.5])
    with pytest.raises(ValueError, match="temperatures"):
        RawAASIST(temperatures=[2.0, 2.0, 0.0, 100.0])
    head = RawAASIST(**AASIST_L).eval()
    assert head.min_samples() == 2_315
    with torch.no_grad():
        assert head(torch.zeros(1, 2_315, 1)).shape == (1, 2)
        with pytest.raises(ValueError, match="samples >= 2315"):
            head(torch.zeros(1, 2_314))


# ---- training ----------------------------------------------------------------------------------


def test_detector_trains():
    """Five Adam steps (the seed's lr, weight decay and class weights) lower the loss on a tiny
    batch of 1 s clips; every trainable parameter gets a gradient (DDP would hang otherwise)."""
    torch.manual_seed(0)
    det = build_model(frontend="waveform", head="aasist_raw", head_kwargs=AASIST_L)
    opt = torch.optim.Adam(det.parameters(), lr=1e-4, weight_decay=1e-4)
    wave, labels = random_waves(4, 16_000, seed=2), torch.tensor([0, 1, 0, 1])
    weight = torch.tensor([0.1, 0.9])
    losses = []
    for step in range(6):
        torch.manual_seed(100)  # the same dropout masks at every step: like compares with like
        loss = torch.nn.functional.cross_entropy(det(wave), labels, weight=weight)
        losses.append(loss.item())
        if step == 5:
            break
        opt.zero_grad()
        loss.backward()
        if step == 0:
            no_grad = [n for n, p in det.named_parameters() if p.requires_grad and p.grad is None]
            assert not no_grad, no_grad
        opt.step()
    assert losses[-1] < losses[0], losses
