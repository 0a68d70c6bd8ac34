"""AMSDF: audio, text and emotion views of one clip fused by heterogeneous graph attention.

Wu et al., "Audio Multi-view Spoofing Detection Framework Based on Audio-Text-Emotion
Correlations", IEEE TIFS 2024 (ItzJuny/AMSDF, ``models/AMSDF.py``, ``models/ACRNN.py``).
``head(feats[B, T, D], wave[B, N]) -> logits[B, n_logits]``: the head reads the SSL front-end's
features (the text view) *and* the clip itself (the audio and emotion views), so
:class:`spoofdet.models.Detector` passes it both (``takes_wave``); the front-end runs once per
clip. Built as ``build_model("xlsr_300m", "amsdf", head_kwargs={...})``.

Data flow for the seed's fixed input, N = 64,600 samples (T = 201 XLS-R frames):

1. Audio view: the raw-AASIST sinc convolution (70 fixed filters of 129 taps,
   :func:`spoofdet.models.aasist_raw.sinc_filterbank`), ``|.|``, 3x3 max-pool, BatchNorm2d(1),
   SELU, six residual blocks (channels 1->32->32->64->64->64->64, each followed by a (1, 3)
   time max-pool) -> (B, 64, 23, 29); max of ``|.|`` over the 23 frequency rows -> 29 nodes
   (B, 29, 64).
2. Text view: ``Linear(D, 128)`` per frame, the (T x 128) map max-pooled (4, 2) -> (B, 50, 64),
   BatchNorm1d(50) (one channel per node), SELU.
3. Emotion view: 40 log mel filterbank energies + deltas + delta-deltas of the clip, first 300
   frames (:func:`log_fbank_deltas`) -> the seed's ACRNN speech-emotion network (six convs,
   BiLSTM, attention weights applied per frame, no pooling over time) -> (B, 150, 256),
   max-pooled (3, 4) -> (B, 50, 64), BatchNorm1d(50), SELU.
4. Per view: graph attention 64->64 (temperature 2) and a top-k graph pool: audio 29->25 (ratio
   0.88), text and emotion 50->25 (0.5).
5. Fusion: pairs A-E, A-T, E-T, then (A-E)-(E-T), each two heterogeneous graph layers
   (64->64, temperature 100, the second added residually) with a learnable stack node;
   dropout 0.2 on both node sets and the stack node; the two node sets are *summed* -> 25 nodes.
6. Readout of three groups (views; the four fusions; the four stack nodes): per group one pair
   of graph pools (0.5, 0.5) applied to each member, members concatenated, ``[max|.|, mean]``
   over nodes -> 128; the three groups -> 384 -> dropout 0.5 -> ``Linear(384, 64)`` ->
   ``Linear(64, n_logits)`` (no activation between them).

Parameters with the seed's dimensions (D = 1024, 2 logits): **8,011,164** without XLS-R, of
which **7,335,751** in the ACRNN (its unused emotion classifier ``fc1``/``fc2`` included) and
**675,413** elsewhere (the seed's ``Module`` counted in a scratch run with fairseq stubbed).

Labels: the seed's checkpoints were trained with 0 = real, 1 = fake (its README; the published
``data_io.py`` says the opposite, REAL = 1) and score with the fake logit.
``spoofdet import amsdf`` swaps the two output rows so that index 1 is bona fide here, and scores
with ``-logits[:, 0]``, the seed's fake logit negated (score rule ``neg_spoof_logit``), which
ranks clips exactly as the seed's score files do. Trained in spoofdet the head follows
spoofdet's convention (index 1 = bona fide).

Faithful quirks of the seed, kept on purpose:

* The emotion features are those of ``python_speech_features`` 0.6 ``logfbank`` (pre-emphasis
  0.97, 400-sample rectangular frames every 160 samples, the last zero-padded, 512-point power
  spectrum / 512, 40 triangular filters on FFT bins ``floor(513 * hz / 16000)``, zeros replaced
  by float64 eps, natural log) and ``delta(., 2)`` (edge-padded regression over +-2 frames),
  computed in float64 over all frames of the clip and cut to the first 300.
* The ACRNN's attention weights multiply the BiLSTM outputs frame by frame; they are not summed
  over time. Its emotion classifier (``fc1``, ``fc2``) is in the seed's state dict but never used:
  kept for layout and count, frozen. Its dropout has probability 0 and is left out.
* The residual blocks' discarded pre-activation BatchNorm is kept, frozen and unused, as in
  :mod:`spoofdet.models.aasist` (the first convolution reads the block input).
* The three readout groups share their two pools across the members of a group.
* Training-time frequency masking of the sinc filters (the seed's ``Freq_aug``, on in its
  training loop): zero ``A = int(U(0, 20))`` adjacent filters starting at a uniform
  ``A0 in [0, 70 - A]``, one draw per batch; drawn here from torch's generator (the seed uses
  NumPy's and Python's). ``freq_aug=False`` turns it off.
* The input length is fixed by the seed's layers: BatchNorm1d(50) over text and emotion nodes
  and the sum of equally sized node sets in the fusion need 50, 50 and 29 view nodes, i.e.
  64,600 samples (any length from about 64,080 to 65,350 works); other lengths are refused.

Differences from the seed, none of which changes an output: the ACRNN's attention softmax runs
over time explicitly (the seed's ``squeeze()`` breaks batches of one); the ACRNN can be frozen
(``freeze_emotion``, default True: parameters without gradient and the network kept in eval
mode) whereas the seed fine-tunes it with everything else (set ``freeze_emotion: false`` for the
seed's recipe).
"""

from __future__ import annotations

import math
import os
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from spoofdet.models.aasist import GraphAttention, GraphPool, HeteroGraphAttention, _ResidualBlock
from spoofdet.models.aasist_raw import sinc_filterbank

__all__ = [
    "AMSDF",
    "ACRNN",
    "AMSDF_NUM_SAMPLES",
    "fbank_matrix",
    "load_emotion_weights",
    "log_fbank_deltas",
]

#: The seed's clip length (samples at 16 kHz), the only one its layers take (module docstring).
AMSDF_NUM_SAMPLES = 64_600

_PREEMPH = 0.97
_FRAME, _HOP, _NFFT = 400, 160, 512  # 25 ms / 10 ms at 16 kHz, python_speech_features defaults
_EMO_FRAMES = 300
_VIEW_NODES = 50  # text and emotion nodes after their max-pools (the BatchNorm1d(50) channels)
_AUDIO_NODES = 29  # audio-view nodes for 64,600 samples


def fbank_matrix(n_filters: int = 40, n_fft: int = _NFFT, sample_rate: int = 16_000) -> Tensor:
    """Triangular mel filters ``float64[n_filters, n_fft // 2 + 1]`` as python_speech_features
    0.6 builds them: ``n_filters + 2`` points equally spaced in mel from 0 Hz to Nyquist, mapped to
    FFT bins ``floor((n_fft + 1) * hz / sample_rate)``; filter j rises linearly from bin b_j
    (value 0) to b_(j+1) (value 1, exclusive of the far end) and falls to b_(j+2)."""
    mel_max = 2595.0 * np.log10(1.0 + (sample_rate / 2) / 700.0)
    hz = 700.0 * (10.0 ** (np.linspace(0.0, mel_max, n_filters + 2) / 2595.0) - 1.0)
    bins = np.floor((n_fft + 1) * hz / sample_rate)
    fb = np.zeros((n_filters, n_fft // 2 + 1))
    for j in range(n_filters):
        lo, mid, hi = bins[j], bins[j + 1], bins[j + 2]
        for i in range(int(lo), int(mid)):
            fb[j, i] = (i - lo) / (mid - lo)
        for i in range(int(mid), int(hi)):
            fb[j, i] = (hi - i) / (hi - mid)
    return torch.from_numpy(fb)


def _deltas(feat: Tensor, n: int = 2) -> Tensor:
    """Regression deltas over +-n frames of ``feat[B, F, C]``, the edge frames repeated."""
    padded = torch.cat([feat[:, :1].expand(-1, n, -1), feat, feat[:, -1:].expand(-1, n, -1)], dim=1)
    frames = feat.shape[1]
    num = sum(
        k * (padded[:, n + k : n + k + frames] - padded[:, n - k : n - k + frames])
        for k in range(1, n + 1)
    )
    return num / (2 * sum(k * k for k in range(1, n + 1)))


def log_fbank_deltas(
    wave: Tensor, frames: int = _EMO_FRAMES, fbank: Tensor | None = None
) -> Tensor:
    """The seed's emotion-view input: ``wave[B, N]`` (16 kHz) -> ``float32[B, 3, frames, 40]``.

    Channels: log mel filterbank energies, their deltas and the deltas of those (``delta(., 2)``),
    computed in float64 over every frame of the clip, then the first ``frames`` frames kept
    (module docstring for the exact recipe).

    Args:
        wave: The clip, as the audio view reads it.
        frames: Frames to keep (300 in the seed).
        fbank: Filter matrix (:func:`fbank_matrix`), built when not given.

    Raises:
        ValueError: If the clip gives fewer than ``frames`` frames (the last frame is
            zero-padded, so it needs at least ``400 + 160 * (frames - 2) + 1`` samples: 48,081
            for 300).
    """
    if wave.dim() != 2:
        raise ValueError(f"wave must be (batch, samples), got {tuple(wave.shape)}")
    x = wave.detach().double()
    n = x.shape[1]
    n_frames = 1 if n <= _FRAME else 1 + math.ceil((n - _FRAME) / _HOP)
    if n_frames < frames:
        raise ValueError(
            f"the emotion view needs {frames} frames of 10 ms, i.e. at least "
            f"{_FRAME + _HOP * (frames - 2) + 1:,} samples; got {n:,}"
        )
    x = torch.cat([x[:, :1], x[:, 1:] - _PREEMPH * x[:, :-1]], dim=1)
    x = F.pad(x, (0, (n_frames - 1) * _HOP + _FRAME - n))
    power = torch.fft.rfft(x.unfold(1, _FRAME, _HOP), n=_NFFT).abs().square() / _NFFT
    fb = fbank_matrix() if fbank is None else fbank
    energies = power @ fb.to(power.device, power.dtype).T
    logfb = torch.where(energies == 0, torch.finfo(torch.float64).eps, energies).log()
    d1 = _deltas(logfb)
    d2 = _deltas(d1)
    return torch.stack([logfb, d1, d2], dim=1)[:, :, :frames].float()


class ACRNN(nn.Module):
    """The seed's ACRNN speech-emotion network (Chen et al., IEEE SPL 2018, as in
    ``models/ACRNN.py``): ``feats[B, 3, 300, 40] -> float32[B, 150, 256]``.

    conv1 (3->128, kernel (5, 3), same padding), LeakyReLU(0.01), (2, 4) max-pool; conv2..conv6
    (->256) each with LeakyReLU; per time step the 10 x 256 map -> ``linear1`` 2,560->768 ->
    BatchNorm1d -> LeakyReLU; a bidirectional LSTM (128 per direction); attention weights
    ``softmax_t(a_fc2(sigmoid(a_fc1(h_t))))`` multiply the LSTM outputs (no sum over time).
    ``fc1``/``fc2`` (the emotion classifier) are in the seed's file but never used: frozen.
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 128, (5, 3), padding=(2, 1))
        self.conv2 = nn.Conv2d(128, 256, (5, 3), padding=(2, 1))
        self.conv3 = nn.Conv2d(256, 256, (5, 3), padding=(2, 1))
        self.conv4 = nn.Conv2d(256, 256, (5, 3), padding=(2, 1))
        self.conv5 = nn.Conv2d(256, 256, (5, 3), padding=(2, 1))
        self.conv6 = nn.Conv2d(256, 256, (5, 3), padding=(2, 1))
        self.linear1 = nn.Linear(10 * 256, 768)
        self.bn = nn.BatchNorm1d(768)
        self.rnn = nn.LSTM(768, 128, num_layers=1, batch_first=True, bidirectional=True)
        self.a_fc1 = nn.Linear(256, 1)
        self.a_fc2 = nn.Linear(1, 1)
        self.fc1 = nn.Linear(256, 64).requires_grad_(False)  # unused: the seed's SER classifier
        self.fc2 = nn.Linear(64, 4).requires_grad_(False)

    def forward(self, x: Tensor) -> Tensor:
        """x (B, 3, F, 40) with F = 300 (F // 2 frames out) -> (B, F // 2, 256)."""
        h = F.max_pool2d(F.leaky_relu(self.conv1(x), 0.01), (2, 4), (2, 4))
        for conv in (self.conv2, self.conv3, self.conv4, self.conv5, self.conv6):
            h = F.leaky_relu(conv(h), 0.01)
        b, c, t, w = h.shape  # (B, 256, F // 2, 10)
        if c * w != self.linear1.in_features:
            raise ValueError(
                f"ACRNN input must have 40 filterbank channels (10 x 256 per frame after "
                f"pooling), got {tuple(x.shape)}"
            )
        h = h.permute(0, 2, 3, 1).reshape(b * t, w * c)
        h = F.leaky_relu(self.bn(self.linear1(h)), 0.01).reshape(b, t, -1)
        out, _ = self.rnn(h)  # (B, t, 256)
        alphas = torch.softmax(self.a_fc2(torch.sigmoid(self.a_fc1(out))).squeeze(-1), dim=1)
        return alphas.unsqueeze(2) * out


def load_emotion_weights(acrnn: ACRNN, path: str | os.PathLike) -> ACRNN:
    """Fill ``acrnn`` from the seed's pre-trained emotion model (``ser_acrnn.pth``, an ``acrnn``
    state dict) or from an AMSDF checkpoint (its ``emo_view_extract.model.*`` tensors), read with
    ``torch.load(weights_only=True)``; keys and shapes must match exactly.

    Raises:
        ValueError: The file is missing or unreadable, or does not fill the ACRNN (listing the
            keys), naming ``head_kwargs.emotion_weights``.
    """
    from spoofdet.models.checkpoints import load_state_dict_strict

    where = f"model.head_kwargs.emotion_weights {os.fspath(path)!r}"
    if not os.path.isfile(path):
        raise ValueError(
            f"{where}: no such file; pass the seed's pre-trained ACRNN (ser_acrnn.pth from the "
            "AMSDF README's Google Drive folder) or null for a random init"
        )
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - name the file and the reason
        raise ValueError(f"{where}: not a readable state dict ({exc})") from None
    if not isinstance(sd, dict) or not all(isinstance(v, Tensor) for v in sd.values()):
        raise ValueError(f"{where}: holds a {type(sd).__name__}, not a state dict")
    prefix = "emo_view_extract.model."
    sd = OrderedDict((k.removeprefix("module."), v) for k, v in sd.items())
    if any(k.startswith(prefix) for k in sd):
        sd = OrderedDict((k[len(prefix) :], v) for k, v in sd.items() if k.startswith(prefix))
    try:
        return load_state_dict_strict(acrnn, sd)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None


class _Fusion(nn.Module):
    """The seed's HGFM: two heterogeneous graph layers (the second added residually) over two
    node sets of equal size and a learnable stack node; returns (summed nodes, stack node)."""

    def __init__(self, dim: int, temperature: float) -> None:
        super().__init__()
        self.hs_gal1 = HeteroGraphAttention(dim, dim, temperature)
        self.hs_gal2 = HeteroGraphAttention(dim, dim, temperature)
        self.stack_node = nn.Parameter(torch.randn(1, 1, dim))
        self.drop_way = nn.Dropout(0.2)

    def forward(self, x1: Tensor, x2: Tensor) -> tuple[Tensor, Tensor]:
        stack = self.stack_node.expand(x1.shape[0], -1, -1)
        x1, x2, stack = self.hs_gal1(x1, x2, stack)
        a1, a2, s2 = self.hs_gal2(x1, x2, stack)
        nodes = self.drop_way(x1 + a1) + self.drop_way(x2 + a2)
        return nodes, self.drop_way(stack + s2)


class _GroupReadout(nn.Module):
    """The seed's GRS: two graph pools (shared by the group's members) on each member, members
    concatenated over nodes, ``[max |.|, mean]`` over nodes -> 2 * dim."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.pool1 = GraphPool(0.5, dim)
        self.pool2 = GraphPool(0.5, dim)

    def forward(self, members: Sequence[Tensor]) -> Tensor:
        nodes = torch.cat([self.pool2(self.pool1(m)) for m in members], dim=1)
        return torch.cat([nodes.abs().amax(dim=1), nodes.mean(dim=1)], dim=1)


class AMSDF(nn.Module):
    """AMSDF head: ``(feats[B, T, in_dim], wave[B, 64_600]) -> logits[B, n_logits]``.

    Args:
        in_dim: Feature size of the SSL front-end (1024 for XLS-R 300M), read by the text view.
        n_logits: 2 (bona fide at index 1) or 1 (a bona fide score).
        emotion_weights: Path of the seed's pre-trained ACRNN (``ser_acrnn.pth``) loaded into the
            emotion view at construction, or None for a random init (tests; an imported or
            trained model's own file overrides it).
        freeze_emotion: Keep the ACRNN fixed (no gradients, eval mode, so its BatchNorm uses its
            running statistics). The seed fine-tunes it: False in the seed's recipe.
        freq_aug: Mask adjacent sinc filters in training mode, as the seed's training loop does.

    Raises:
        ValueError: For ``n_logits`` not 1 or 2, or an unusable ``emotion_weights`` file.
    """

    #: :class:`spoofdet.models.Detector` passes the waveform as well as the features.
    takes_wave = True

    def __init__(
        self,
        in_dim: int = 1024,
        n_logits: int = 2,
        *,
        emotion_weights: str | os.PathLike | None = None,
        freeze_emotion: bool = True,
        freq_aug: bool = True,
    ) -> None:
        super().__init__()
        if n_logits not in (1, 2):
            raise ValueError(f"n_logits must be 1 or 2, got {n_logits}")
        dim = 64
        # text view
        self.text_proj = nn.Linear(in_dim, 128)
        self.text_bn = nn.BatchNorm1d(_VIEW_NODES)
        # emotion view
        self.emotion = ACRNN()
        if emotion_weights is not None:
            load_emotion_weights(self.emotion, emotion_weights)
        self.freeze_emotion = bool(freeze_emotion)
        if self.freeze_emotion:
            self.emotion.requires_grad_(False)
        self.emotion_bn = nn.BatchNorm1d(_VIEW_NODES)
        self.fbank: Tensor
        self.register_buffer("fbank", fbank_matrix(), persistent=False)  # rebuilt, never saved
        # audio view
        self.freq_aug = bool(freq_aug)
        self.sinc_filters: Tensor
        self.register_buffer(
            "sinc_filters", sinc_filterbank(70, 128).unsqueeze(1), persistent=False
        )
        self.first_bn = nn.BatchNorm2d(1)
        chans = [(1, 32), (32, 32), (32, 64), (64, 64), (64, 64), (64, 64)]
        self.encoder = nn.Sequential(
            *[  # encoder.<k>.0 = the seed's Residual_block, .1 its (1, 3) pool
                nn.Sequential(_ResidualBlock(i, o, first=(k == 0)), nn.MaxPool2d((1, 3)))
                for k, (i, o) in enumerate(chans)
            ]
        )
        # per-view graph attention and pooling
        self.gat_text = GraphAttention(dim, dim, 2.0)
        self.gat_emotion = GraphAttention(dim, dim, 2.0)
        self.gat_audio = GraphAttention(dim, dim, 2.0)
        self.pool_text = GraphPool(0.5, dim)
        self.pool_emotion = GraphPool(0.5, dim)
        self.pool_audio = GraphPool(0.88, dim)
        # heterogeneous fusion and readout
        self.fuse_ae = _Fusion(dim, 100.0)
        self.fuse_at = _Fusion(dim, 100.0)
        self.fuse_et = _Fusion(dim, 100.0)
        self.fuse_aet = _Fusion(dim, 100.0)
        self.readout_views = _GroupReadout(dim)
        self.readout_fusions = _GroupReadout(dim)
        self.readout_stacks = _GroupReadout(dim)
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(3 * 2 * dim, dim)
        self.out = nn.Linear(dim, n_logits)

    def train(self, mode: bool = True) -> AMSDF:
        """As ``nn.Module.train``, but a frozen ACRNN stays in eval mode."""
        super().train(mode)
        if self.freeze_emotion:
            self.emotion.eval()
        return self

    def audio_view(self, wave: Tensor) -> Tensor:
        """wave (B, N) -> audio nodes (B, 29, 64) for N = 64,600."""
        filters = self.sinc_filters.to(wave.dtype)
        if self.training and self.freq_aug:
            n = filters.shape[0]
            width = int(torch.rand(()) * 20)
            start = int(torch.randint(0, n - width + 1, ()))
            filters = filters.clone()
            filters[start : start + width] = 0
        x = F.conv1d(wave.unsqueeze(1), filters)  # (B, 70, N - 128)
        x = F.selu(self.first_bn(F.max_pool2d(x.unsqueeze(1).abs(), (3, 3))))
        return self.encoder(x).abs().amax(dim=2).transpose(1, 2)  # max over frequency rows

    def text_view(self, feats: Tensor) -> Tensor:
        """feats (B, T, in_dim) -> text nodes (B, T // 4, 64)."""
        x = F.max_pool2d(self.text_proj(feats).unsqueeze(1), (4, 2)).squeeze(1)
        return F.selu(self.text_bn(x))

    def emotion_view(self, wave: Tensor) -> Tensor:
        """wave (B, N) -> emotion nodes (B, 50, 64)."""
        x = log_fbank_deltas(wave, fbank=self.fbank).to(wave.dtype)
        x = F.max_pool2d(self.emotion(x).unsqueeze(1), (3, 4)).squeeze(1)
        return F.selu(self.emotion_bn(x))

    def forward(self, feats: Tensor, wave: Tensor | None = None) -> Tensor:
        """feats (B, T, in_dim) from the SSL front-end, wave (B, 64_600) the same clip ->
        logits (B, n_logits)."""
        if wave is None:
            raise ValueError(
                "AMSDF reads the clip as well as its SSL features: call head(feats, wave) "
                "(spoofdet.models.Detector does); precomputed ('cached') features cannot feed it"
            )
        if feats.dim() != 3 or wave.dim() != 2 or feats.shape[0] != wave.shape[0]:
            raise ValueError(
                f"AMSDF takes feats (batch, frames, dim) and wave (batch, samples), got "
                f"{tuple(feats.shape)} and {tuple(wave.shape)}"
            )
        if feats.shape[1] // 4 != _VIEW_NODES:
            raise ValueError(
                f"AMSDF's text view needs 200-203 SSL frames (T // 4 = 50 nodes for its "
                f"BatchNorm1d(50)), got {feats.shape[1]}; feed {AMSDF_NUM_SAMPLES:,}-sample clips"
            )
        audio = self.audio_view(wave)
        if audio.shape[1] != _AUDIO_NODES:
            raise ValueError(
                f"AMSDF's audio view needs 29 nodes (64,600-sample clips), got {audio.shape[1]} "
                f"from {wave.shape[1]:,} samples; feed {AMSDF_NUM_SAMPLES:,}-sample clips"
            )
        emotion = self.emotion_view(wave)
        text = self.text_view(feats)

        emotion = self.pool_emotion(self.gat_emotion(emotion))
        audio = self.pool_audio(self.gat_audio(audio))
        text = self.pool_text(self.gat_text(text))

        ae, ae_stack = self.fuse_ae(audio, emotion)
        at, at_stack = self.fuse_at(audio, text)
        et, et_stack = self.fuse_et(emotion, text)
        aet, aet_stack = self.fuse_aet(ae, et)

        hidden = torch.cat(
            [
                self.readout_views([audio, emotion, text]),
                self.readout_fusions([ae, at, et, aet]),
                self.readout_stacks([ae_stack, at_stack, et_stack, aet_stack]),
            ],
            dim=1,
        )
        return self.out(self.fc(self.drop(hidden)))
