"""AMSDF (spoofdet.models.amsdf): outputs pinned to the seed's own code, exact sizes, the
emotion-view features, the seed's key layout, refusals, the pre-trained emotion weights and a
training step through build_model.

The pinned logits were computed by the seed's ``models/AMSDF.py`` (with its ``models/ACRNN.py``
and ``models/AASIST.py``; ItzJuny/AMSDF, commit fe9ff21) outside this repository, CPU, eval mode,
``Freq_aug=False``: its ``Module`` built with ``fairseq`` stubbed so that the text view's SSL
model returned ``random_feats(2, 201, 1024, seed=0)`` (standing in for XLS-R's last layer), its
state dict checked equal to tests/assets/seed_layouts/amsdf.tsv and filled strictly with
``random_state_dict(layout, seed=0)``; the audio view read ``random_waves(2, 64_600, seed=0)``
and the emotion view the seed's ``data_io`` features of the same clips
(``python_speech_features`` 0.6 ``logfbank(x, 16000, nfilt=40)`` + ``delta(., 2)`` twice, first
300 frames, float64 -> float32). Again in float64 (model, features, filters). So the comparison
covers the three views from the SSL features and the waveform onwards, the fusion and the
readout; the XLS-R itself is the fairseq -> transformers conversion checked for the other seeds.
spoofdet's head gets the same tensors through ``convert_seed_state_dict(seed="amsdf")``, which
swaps the two output rows (the seed's index 1 is fake), so the seed's logits appear reversed.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import pytest
import torch

from spoofdet.models import build_head, build_model
from spoofdet.models.amsdf import ACRNN, AMSDF, fbank_matrix, log_fbank_deltas
from spoofdet.models.checkpoints import load_state_dict_strict
from spoofdet.models.seeds import (
    SEEDS,
    SeedCheckpointError,
    build_seed_head,
    convert_seed_state_dict,
)
from spoofdet.testing import (
    random_feats,
    random_state_dict,
    random_waves,
    read_layout,
    tiny_fairseq_state_dict,
)

LAYOUT = Path(__file__).resolve().parents[1] / "assets" / "seed_layouts" / "amsdf.tsv"

#: The seed's logits (its index 0 = real, 1 = fake) on the inputs of the module docstring.
SEED_LOGITS = [
    [-0.033664293587207794, -2.847891330718994],
    [-0.013690359890460968, -2.6993584632873535],
]
SEED_LOGITS_F64 = [
    [-0.03366665137320035, -2.8478932123060376],
    [-0.013693055426353684, -2.699359283340565],
]
#: The seed's parameter count without XLS-R, and of its ACRNN alone (scratch run, module docstring).
SEED_PARAMETERS, SEED_ACRNN_PARAMETERS = 8_011_164, 7_335_751

#: python_speech_features on random_waves(1, 64_600, seed=0): [channel, frame, filter] -> value.
FBANK_VALUES = {
    (0, 0, 0): -8.21321258297623,
    (0, 150, 20): -3.008482792184491,
    (1, 150, 20): 0.2928510955525795,
    (2, 299, 39): 0.04943884026820061,
    (1, 0, 5): -0.01957878904351009,
    (2, 1, 7): 0.053280718166695905,
}
FBANK_SUMS = [-36456.240348249645, -1.8847339082114232, -2.5449129491049693]

pytestmark = pytest.mark.usefixtures("one_thread")


def _seed_file(seed: int = 0) -> OrderedDict[str, torch.Tensor]:
    """A checkpoint in the seed's layout: random back-end tensors and a (tiny) fairseq front-end
    under ``text_view_extract.model.``, as main_AMSDF.py saves the model."""
    sd = OrderedDict(
        (f"text_view_extract.model.{k}", v) for k, v in tiny_fairseq_state_dict(seed=0).items()
    )
    sd.update(random_state_dict(read_layout(LAYOUT), seed=seed))
    return sd


def _imported_head(sd: dict[str, torch.Tensor]) -> AMSDF:
    head_sd, fe_sd = convert_seed_state_dict(sd, seed="amsdf")
    assert fe_sd is not None and "encoder.layers.0.attention.k_proj.weight" in fe_sd
    return load_state_dict_strict(build_seed_head("amsdf", 2), head_sd).eval()


def _n(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ---- the seed's outputs ------------------------------------------------------------------------


def test_imported_head_gives_the_seeds_logits():
    head = _imported_head(_seed_file())
    feats, wave = random_feats(2, 201, 1024, seed=0), random_waves(2, 64_600, seed=0)
    with torch.no_grad():
        out = head(feats, wave)
    # spoofdet's index 1 is bona fide: the seed's (real, fake) rows come out as (fake, real)
    torch.testing.assert_close(out.flip(1), torch.tensor(SEED_LOGITS), rtol=1e-5, atol=1e-5)
    head = head.double()
    with torch.no_grad():
        out = head(feats.double(), wave.double())
    expected = torch.tensor(SEED_LOGITS_F64, dtype=torch.float64)
    torch.testing.assert_close(out.flip(1), expected, rtol=1e-9, atol=1e-10)
    # a batch of one (the seed's ACRNN squeeze() breaks there) gives the same rows
    with torch.no_grad():
        one = head(feats[1:].double(), wave[1:].double())
    torch.testing.assert_close(one[0], out[1], rtol=1e-12, atol=1e-12)


def test_parameter_counts_and_the_seed_layout():
    head = build_head("amsdf", 1024)
    assert _n(head) == SEED_PARAMETERS
    assert _n(head.emotion) == SEED_ACRNN_PARAMETERS
    assert _n(head) - _n(head.emotion) == 675_413
    assert _n(build_head("amsdf", 1024, n_logits=1)) == SEED_PARAMETERS - 65
    layout = read_layout(LAYOUT)
    assert len(layout) == len(head.state_dict()) == 397  # the seed's tensors, one to one
    # no sinc filters or filterbank in the file: rebuilt, never saved
    assert not any("sinc" in k or "fbank" in k for k in head.state_dict())
    # frozen by default: the ACRNN has no trainable parameter; the seed's unused classifier never
    head = build_head("amsdf", 1024)
    assert not any(p.requires_grad for p in head.emotion.parameters())
    trainable = build_head("amsdf", 1024, freeze_emotion=False)
    assert _n(trainable) - sum(p.numel() for p in trainable.parameters() if p.requires_grad) == (
        256 * 64 + 64 + 64 * 4 + 4 + 512  # ACRNN fc1, fc2; the residual blocks' unused bn1
    )


# ---- emotion-view features ---------------------------------------------------------------------


def test_log_fbank_deltas_are_the_seeds_features():
    x = log_fbank_deltas(random_waves(1, 64_600, seed=0))
    assert x.shape == (1, 3, 300, 40) and x.dtype == torch.float32
    for (c, t, f), value in FBANK_VALUES.items():
        assert float(x[0, c, t, f]) == pytest.approx(value, rel=1e-6, abs=1e-6)
    sums = x[0].double().sum(dim=(1, 2))
    assert sums.tolist() == pytest.approx(FBANK_SUMS, rel=1e-5, abs=1e-3)


def test_log_fbank_deltas_hand_computed_cases():
    # silence: every filter energy is 0, replaced by float64 eps: log(2 ** -52), deltas 0
    x = log_fbank_deltas(torch.zeros(2, 48_081))
    assert x.shape == (2, 3, 300, 40)
    assert torch.all(x[:, 0] == torch.tensor(-36.04365338911715).float())
    assert torch.all(x[:, 1:] == 0)
    # the filters: 40 triangles over 257 bins; the first covers bin 1 only, the last 225..255
    fb = fbank_matrix()
    assert fb.shape == (40, 257) and float(fb.max()) == 1.0
    assert fb[0].nonzero().flatten().tolist() == [1]
    assert fb[-1].nonzero().flatten()[[0, -1]].tolist() == [225, 255]
    assert float(fb.sum()) == 247.0
    # a DC clip: after pre-emphasis only 0.03 per sample (first sample 1) is left; linear in the
    # signal power, so log energies move by exactly 2 log 2 when the clip is doubled
    a, b = log_fbank_deltas(torch.ones(1, 64_600)), log_fbank_deltas(2 * torch.ones(1, 64_600))
    torch.testing.assert_close(b[0, 0] - a[0, 0], torch.full((300, 40), 1.3862943611198906))
    with pytest.raises(ValueError, match="at least 48,081 samples; got 48,080"):
        log_fbank_deltas(torch.zeros(1, 48_080))


# ---- refusals ----------------------------------------------------------------------------------


def test_wrong_inputs_are_refused_saying_what_to_feed():
    head = build_head("amsdf", 32).eval()
    feats, wave = random_feats(1, 201, 32), random_waves(1, 64_600)
    with pytest.raises(ValueError, match="call head\\(feats, wave\\)"):
        head(feats)
    with pytest.raises(ValueError, match="200-203 SSL frames .* got 208; feed 64,600-sample"):
        head(random_feats(1, 208, 32), wave)
    with pytest.raises(ValueError, match="29 nodes .* got 28 from 62,000 samples"):
        head(feats, random_waves(1, 62_000))
    with pytest.raises(ValueError, match="batch"):
        head(random_feats(2, 201, 32), wave)
    with pytest.raises(ValueError, match="n_logits must be 1 or 2"):
        AMSDF(in_dim=32, n_logits=3)


def test_a_file_of_another_layout_is_refused_listing_both():
    sd = _seed_file()
    sd.pop("Core_AET.stack_node")
    sd["Core_AET.stack_nodes"] = torch.zeros(1, 1, 64)
    with pytest.raises(SeedCheckpointError) as exc:
        convert_seed_state_dict(sd, seed="amsdf")
    text = str(exc.value)
    assert "Core_AET.stack_nodes" in text and "fuse_aet.stack_node" in text
    no_frontend = OrderedDict((k, v) for k, v in sd.items() if not k.startswith("text_view"))
    with pytest.raises(SeedCheckpointError, match="no 'text_view_extract.model.\\*' tensors"):
        convert_seed_state_dict(no_frontend, seed="amsdf")


# ---- pre-trained emotion weights, freezing, training -------------------------------------------


def test_emotion_weights_load_from_the_seeds_file(tmp_path):
    torch.manual_seed(3)
    ser = ACRNN().state_dict()  # ser_acrnn.pth: a bare acrnn state dict
    torch.save(ser, tmp_path / "ser_acrnn.pth")
    head = build_head("amsdf", 32, emotion_weights=str(tmp_path / "ser_acrnn.pth"))
    assert all(torch.equal(head.emotion.state_dict()[k], v) for k, v in ser.items())
    # an AMSDF checkpoint's emo_view_extract.model.* works too
    sd = random_state_dict(read_layout(LAYOUT), seed=1)
    torch.save(sd, tmp_path / "M.pth")
    head = build_head("amsdf", 32, emotion_weights=str(tmp_path / "M.pth"))
    assert torch.equal(head.emotion.conv1.weight, sd["emo_view_extract.model.conv1.weight"])
    with pytest.raises(ValueError, match="emotion_weights .*missing.pth.*no such file"):
        build_head("amsdf", 32, emotion_weights=str(tmp_path / "missing.pth"))
    del ser["a_fc2.bias"]
    torch.save(ser, tmp_path / "short.pth")
    with pytest.raises(ValueError, match="(?s)emotion_weights .*missing keys \\(1\\): a_fc2.bias"):
        build_head("amsdf", 32, emotion_weights=str(tmp_path / "short.pth"))


def test_detector_trains_with_the_acrnn_frozen_or_not():
    torch.manual_seed(0)
    wave = random_waves(1, 64_600, seed=4)  # one clip: the train-mode norms see >= 64 values
    for freeze in (True, False):
        det = build_model("tiny", "amsdf", head_kwargs={"freeze_emotion": freeze}).train()
        assert det.head.emotion.training is not freeze  # a frozen ACRNN stays in eval mode
        logits = det(wave)
        assert logits.shape == (1, 2)
        torch.nn.functional.cross_entropy(logits, torch.tensor([1])).backward()
        assert det.head.text_proj.weight.grad is not None  # the text view reaches the front-end
        assert any(p.grad is not None for p in det.frontend.parameters())
        assert (det.head.emotion.conv1.weight.grad is not None) is not freeze
        assert det.head.emotion.fc1.weight.grad is None  # the seed's unused classifier
    # the seed's frequency mask acts in training only
    head = build_head("amsdf", 32).train()
    torch.manual_seed(1)
    masked = head.audio_view(wave)
    head.freq_aug = False
    plain = head.audio_view(wave)
    assert not torch.allclose(masked, plain)
    head.eval().freq_aug = True
    with torch.no_grad():
        torch.testing.assert_close(head.audio_view(wave), head.audio_view(wave), rtol=0, atol=0)


def test_seed_spec():
    spec = SEEDS["amsdf"]
    assert (spec.head, spec.in_dim, spec.frontend, spec.num_samples) == (
        "amsdf",
        1024,
        "fairseq",
        64_600,
    )
    assert spec.fairseq_prefix == "text_view_extract.model."
    assert spec.bonafide_index == 0 and spec.score_rule == "neg_spoof_logit"
    assert set(spec.published) == {
        "M1.pth (README, Google Drive folder)",
        "M2.pth (README, Google Drive folder)",
        "M3.pth (README, Google Drive folder)",
    }


def test_neg_spoof_logit_score_rule():
    from spoofdet.models import score_from_logits

    logits = torch.tensor([[2.0, -1.0], [-0.5, 3.0]])  # (spoof, bona fide) after import
    assert score_from_logits(logits, "neg_spoof_logit").tolist() == [-2.0, 0.5]
    assert score_from_logits(logits[:, :1], "neg_spoof_logit").tolist() == [2.0, -0.5]  # 1 logit
