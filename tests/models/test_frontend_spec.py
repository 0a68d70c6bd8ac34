"""The log-spectrogram front-end: XLS-R frame counts, a real spectrum, every head on top of it."""

import numpy as np
import pytest
import torch

from spoofdet.models import build_model
from spoofdet.models.frontend_spec import LogSpectrogram


@pytest.mark.parametrize(
    "n, frames", [(64_600, 201), (66_800, 208), (64_000, 199), (400, 1), (719, 1), (720, 2)]
)
def test_frame_count_matches_xlsr(n, frames):
    assert LogSpectrogram()(torch.zeros(2, n)).shape == (2, frames, 256)


def test_a_tone_peaks_in_its_bin_and_loudness_is_normalised_away():
    t = np.arange(16_000) / 16_000
    tone = torch.tensor(np.sin(2 * np.pi * 1000 * t), dtype=torch.float32)[None]
    noise = 1e-2 * torch.randn(1, 16_000, generator=torch.Generator().manual_seed(0))
    fe = LogSpectrogram()
    spec = fe(tone + noise)
    assert int(spec.mean(1).argmax()) == 32  # 1000 Hz / (16000 / 512) = bin 32
    louder = fe(
        10 * (tone + noise)
    )  # loudness-normalised (up to the 1e-6 floor in near-empty bins)
    assert (spec - louder).abs().median() < 2e-3 and torch.allclose(
        spec.mean(1), louder.mean(1), atol=0.05
    )
    assert torch.isfinite(fe(torch.zeros(1, 1000))).all()


@pytest.mark.parametrize("head", ["aasist", "nes2net_x", "xlsr_mamba", "fake_mamba"])
def test_every_head_trains_on_it(head):
    torch.manual_seed(0)
    model = build_model("logspec", head)
    logits = model(torch.randn(2, 16_000))
    assert logits.shape == (2, 2)
    logits.sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_options_that_do_not_apply_are_refused():
    with pytest.raises(ValueError, match="frontend 'logspec' has no layers"):
        build_model("logspec", "aasist", freeze="all")
    with pytest.raises(ValueError, match=r"samples >= 400"):
        LogSpectrogram()(torch.zeros(1, 100))
