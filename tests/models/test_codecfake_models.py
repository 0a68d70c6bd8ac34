"""Codecfake's countermeasures: W2V2-AASIST, W2V2-LCNN, mel-LCNN, and their published files.

Pinned values come from Codecfake's own ``model.py`` classes (and torchaudio 2.11 for the mel) run
in a scratch folder outside the project, on the inputs below laid out as the seed's forward takes
them: W2V2 heads read ``random_feats(2, 201, 1024, seed=1)`` as (B, 1, 1024, 201) (its
``generate_score.py``: unsqueeze, transpose(2, 3)); the mel-LCNN reads the mel of
``random_waves(2, 64_600, seed=1)`` as (B, 1, 505, 80). Seed logits are (real, fake); spoofdet's
are (spoof, bona fide) after the import swaps them.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import published_checkpoint, published_sha256

from spoofdet.models import build_model
from spoofdet.models.checkpoints import load_state_dict_strict
from spoofdet.models.frontend_spec import CodecfakeMel
from spoofdet.models.lcnn import LCNN
from spoofdet.models.seeds import (
    SEEDS,
    SeedCheckpointError,
    build_seed_head,
    convert_seed_state_dict,
    read_seed_checkpoint,
)
from spoofdet.testing import random_feats, random_state_dict, random_waves, read_layout

LAYOUTS = Path(__file__).resolve().parents[1] / "assets" / "seed_layouts"
SEED_NAMES = ("codecfake_w2v2_aasist", "codecfake_w2v2_lcnn", "codecfake_mel_lcnn")

# Seed logits (real, fake) of the seed's classes on random_state_dict(layout, seed=0).
RANDOM_LOGITS = {
    "codecfake_w2v2_aasist": [
        [0.7249085903167725, 2.1826229095458984],
        [0.652673602104187, 1.8346407413482666],
    ],
    "codecfake_w2v2_lcnn": [
        [2.4929561614990234, 0.6314966082572937],
        [2.972140312194824, 1.192088007926941],
    ],
    "codecfake_mel_lcnn": [
        [-121.04705047607422, 206.86045837402344],
        [-257.39031982421875, 132.9761199951172],
    ],
}
# Seed logits (real, fake) of the published files, loaded with the seed's classes.
FILES = {
    "codecfake_codec_w2v2aasist.pt": (
        "codecfake_w2v2_aasist",
        [[-4.107176303863525, 4.124520778656006], [-4.10812520980835, 4.125476360321045]],
    ),
    "codecfake_vocoder_w2v2aasist.pt": (
        "codecfake_w2v2_aasist",
        [[-16.845333099365234, 16.859962463378906], [-16.894479751586914, 16.905723571777344]],
    ),
    "codecfake_cotrain_w2v2aasist_CSAM.pt": (
        "codecfake_w2v2_aasist",
        [[17.10711669921875, -17.39996337890625], [17.02703857421875, -17.319351196289062]],
    ),
    "codecfake_codec_mellcnn.pt": (
        "codecfake_mel_lcnn",
        [[-39.027645111083984, 28.220439910888672], [-39.7347526550293, 28.729694366455078]],
    ),
    "codecfake_vocoder_mellcnn.pt": (
        "codecfake_mel_lcnn",
        [[-19.379732131958008, 20.73468017578125], [-28.278366088867188, 30.814998626708984]],
    ),
}


def seed_inputs(seed: str) -> torch.Tensor:
    """What the spoofdet head reads: XLS-R features (B, T, D), or the mel (B, 505, 80)."""
    if seed == "codecfake_mel_lcnn":
        return CodecfakeMel()(random_waves(2, 64_600, seed=1))
    return random_feats(2, 201, 1024, seed=1)


def converted_head(seed: str, state: dict) -> torch.nn.Module:
    head_sd, frontend_sd = convert_seed_state_dict(state, seed=seed)
    assert frontend_sd is None  # Codecfake's files hold the back-end only
    head = build_seed_head(seed, 2)
    return load_state_dict_strict(head, head_sd).eval()


def as_seed_order(logits: torch.Tensor) -> torch.Tensor:
    return logits.flip(1)  # spoofdet (spoof, bona fide) -> the seed's (real, fake)


def test_parameter_counts():
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    # the published mel files; model.py's Linear(24576, 160) with enc_dim 256
    assert count(LCNN(in_dim=80, frames=505, time_axis="height")) == 972_514
    assert count(LCNN(in_dim=1024, frames=201)) == 4_111_074
    assert count(build_seed_head("codecfake_w2v2_aasist", 2)) == 447_242
    for seed in SEED_NAMES:
        layout = read_layout(LAYOUTS / f"{seed}.tsv")
        params = sum(
            int(torch.tensor(s).prod())
            for k, s, d in layout
            if d == "float32" and "running" not in k
        )
        assert params == count(build_seed_head(seed, 2)), seed


def test_the_flatten_size_follows_the_input():
    assert LCNN(in_dim=1024, frames=201).out[1].in_features == 24_576  # 32 x 64 x 12
    mel = LCNN(in_dim=80, frames=505, time_axis="height")
    assert mel.out[1].in_features == 4_960  # 32 x 31 x 5
    with pytest.raises(ValueError, match="505 frames"):
        mel(torch.zeros(1, 500, 80))


def test_the_mel_front_end_is_torchaudios():
    mel = CodecfakeMel()(random_waves(2, 64_600, seed=1))
    assert mel.shape == (2, 505, 80) and CodecfakeMel.out_dim == 80
    # torchaudio.transforms.MelSpectrogram(n_mels=80, n_fft=512, hop_length=128, sample_rate=16000),
    # transposed to (time, band): sums per clip, [0, :3, :4], and two single bins
    sums = mel.double().sum(dim=(1, 2))
    expected_sums = torch.tensor([1374971.07542491, 1383156.1101690005], dtype=torch.float64)
    torch.testing.assert_close(sums, expected_sums, rtol=1e-6, atol=0)
    expected = [
        [17.953418731689453, 17.727142333984375, 16.896759033203125, 14.292722702026367],
        [0.7062485814094543, 4.957952499389648, 13.177882194519043, 0.9759383797645569],
        [6.477874755859375, 9.057389259338379, 13.912314414978027, 9.142393112182617],
    ]
    torch.testing.assert_close(mel[0, :3, :4], torch.tensor(expected), rtol=1e-6, atol=0)
    bins = torch.tensor([28.889671325683594, 4.384352207183838])
    torch.testing.assert_close(mel[:, 250, 40], bins, rtol=1e-6, atol=0)
    assert mel[1, 504, 79].item() == pytest.approx(40.80542755126953, rel=1e-6)


@pytest.mark.parametrize("seed", SEED_NAMES)
def test_random_checkpoints_give_the_seeds_logits(seed):
    state = random_state_dict(read_layout(LAYOUTS / f"{seed}.tsv"), seed=0)
    with torch.no_grad():
        out = converted_head(seed, state)(seed_inputs(seed))
    expected = torch.tensor(RANDOM_LOGITS[seed])
    torch.testing.assert_close(as_seed_order(out), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("seed", ["codecfake_w2v2_aasist", "codecfake_mel_lcnn"])
def test_one_key_too_many_and_one_too_few_are_both_named(seed):
    state = random_state_dict(read_layout(LAYOUTS / f"{seed}.tsv"), seed=0)
    dropped = "pool_hS2.proj.bias" if seed == "codecfake_w2v2_aasist" else "conv5.0.bias"
    del state[dropped]
    state["conv10.0.weight"] = torch.zeros(2, 2)
    with pytest.raises(SeedCheckpointError) as info:
        convert_seed_state_dict(state, seed=seed)
    message = str(info.value)
    assert "conv10.0.weight" in message and "map to nothing" in message
    assert "lacks" in message and (dropped.replace("pool_hS2", "pool_hs2") in message)


def test_the_seed_specs_say_how_codecfake_scores():
    for seed in SEED_NAMES:
        spec = SEEDS[seed]
        assert spec.bonafide_index == 0 and "P(real)" in spec.convention
        assert spec.num_samples == 64_600 and spec.score_rule == "logodds"
    expected = {"frontend_layer": 5, "frontend_kwargs": {"normalize": True}}
    assert SEEDS["codecfake_w2v2_aasist"].model == expected
    assert SEEDS["codecfake_mel_lcnn"].frontend == "codecfake_mel"


@pytest.mark.parametrize("name", sorted(FILES))
def test_published_files_read_safely_and_reproduce_the_seed(name):
    path = published_checkpoint(name)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == published_sha256()[name]
    seed, expected = FILES[name]
    state = read_seed_checkpoint(path)  # a whole pickled module: read without running it
    # the vocoder W2V2-AASIST was saved from nn.DataParallel
    assert all(k.startswith("module.") for k in state) == ("vocoder_w2v2" in name)
    with torch.no_grad():
        out = converted_head(seed, state)(seed_inputs(seed))
    torch.testing.assert_close(as_seed_order(out), torch.tensor(expected), rtol=1e-5, atol=1e-5)
    # the seed's score, softmax[:, 0] = P(real), is spoofdet's P(bona fide)
    p_real = F.softmax(torch.tensor(expected), dim=1)[:, 0]
    torch.testing.assert_close(F.softmax(out, dim=1)[:, 1], p_real)


@pytest.mark.parametrize("name", ["codecfake_codec_mellcnn.pt", "codecfake_vocoder_mellcnn.pt"])
def test_the_mel_detector_runs_from_the_waveform(name):
    seed, expected = FILES[name]
    head_sd, _ = convert_seed_state_dict(
        read_seed_checkpoint(published_checkpoint(name)), seed=seed
    )
    detector = build_model(
        frontend="codecfake_mel", head="lcnn", head_kwargs=SEEDS[seed].model["head_kwargs"]
    )
    load_state_dict_strict(detector.head, head_sd)
    with torch.no_grad():
        out = detector.eval()(random_waves(2, 64_600, seed=1))
    torch.testing.assert_close(as_seed_order(out), torch.tensor(expected), rtol=1e-5, atol=1e-5)


def _five_adam_steps_lower_the_loss(detector: torch.nn.Module, wave: torch.Tensor) -> None:
    label = torch.tensor([0, 1, 0, 1])
    opt = torch.optim.Adam([p for p in detector.parameters() if p.requires_grad], lr=1e-3)

    def loss_without_dropout() -> float:  # BatchNorm on batch statistics, no dropout: deterministic
        detector.train()
        for m in detector.modules():
            if isinstance(m, torch.nn.Dropout):
                m.eval()
        with torch.no_grad():
            return float(F.cross_entropy(detector(wave), label, weight=torch.tensor([1.0, 10.0])))

    before = loss_without_dropout()
    detector.train()
    for _ in range(5):
        loss = F.cross_entropy(detector(wave), label, weight=torch.tensor([1.0, 10.0]))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss_without_dropout() < before


def test_the_mel_lcnn_trains():
    torch.manual_seed(0)
    wave = random_waves(4, 8_000, seed=2)  # 63 mel frames
    detector = build_model(
        frontend="codecfake_mel",
        head="lcnn",
        head_kwargs={"frames": 63, "enc_dim": 16, "time_axis": "height"},
    )
    _five_adam_steps_lower_the_loss(detector, wave)


def test_the_w2v2_lcnn_trains_on_a_tiny_front_end():
    torch.manual_seed(0)
    wave = random_waves(4, 16_000, seed=2)  # 49 frames of the tiny XLS-R-shaped model (d = 64)
    detector = build_model(
        frontend="tiny",
        frontend_layer=1,
        freeze="all",
        frontend_kwargs={"normalize": True},
        head="lcnn",
        head_kwargs={"frames": 49, "enc_dim": 16},
    )
    _five_adam_steps_lower_the_loss(detector, wave)
