"""Zero-padded duration batches (data.batch_seconds) carry ``lengths``; the SSL front-ends turn
them into an attention mask, so a padded clip's features equal the clip's own. Fixed-length
batches (the seeds' protocol) pass no lengths and compute exactly what they did."""

import pytest
import torch

from spoofdet.models import build_model


@pytest.mark.parametrize("normalize", [False, True])
def test_a_padded_clip_with_its_length_gives_the_clips_own_features(one_thread, normalize):
    torch.manual_seed(0)
    kwargs = {"frontend_kwargs": {"normalize": True}} if normalize else {}
    model = build_model(frontend="tiny", head="aasist", **kwargs).eval()
    short, long = 0.1 * torch.randn(1, 8000), 0.1 * torch.randn(1, 12000)
    wave = torch.zeros(2, 12000)
    wave[0, :8000], wave[1] = short[0], long[0]
    lengths = torch.tensor([8000, 12000])
    with torch.no_grad():
        alone = model.frontend(short)
        masked = model.frontend(wave, lengths)
        unmasked = model.frontend(wave)
        frames = alone.shape[1]
        # the real frames of the padded row equal the clip alone; the full row is untouched
        assert torch.allclose(masked[0, :frames], alone[0], atol=1e-4)
        assert torch.allclose(masked[1], model.frontend(long)[0], atol=1e-4)
        # without the mask the padding leaks into every frame (why the mask is passed)
        assert (unmasked[0, :frames] - alone[0]).abs().max() > 0.1
        # the detector forwards lengths to the front-end; a full-length row is unchanged by them
        assert torch.allclose(model(long), model(long, torch.tensor([12000])), atol=1e-6)
        assert model(wave, lengths).shape == (2, 2)


def test_frontends_without_a_mask_ignore_lengths(one_thread):
    torch.manual_seed(0)
    model = build_model(frontend="logspec", head="aasist").eval()
    wave = 0.1 * torch.randn(2, 16000)
    with torch.no_grad():
        assert torch.equal(model(wave), model(wave, torch.tensor([16000, 9000])))
