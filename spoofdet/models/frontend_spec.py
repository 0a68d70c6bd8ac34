"""A log-spectrogram front-end: the classic hand-crafted input of ASVspoof baselines (LFCC/spectrogram
+ LCNN), behind the same interface as the SSL front-ends.

``LogSpectrogram.forward(wave[B, N]) -> feats[B, T, 256]``: Hann-windowed 400-sample (25 ms) frames
every 320 samples (20 ms), 512-point FFT, ``log(|X|^2 + 1e-6)``, minus the utterance's mean log power (so
loudness does not matter while the spectral envelope, which carries most vocoder and codec
artefacts, stays). The framing equals XLS-R's receptive field and hop, so frame counts are identical
(64,600 samples -> 201 frames) and every head works unchanged.

It has no parameters and needs no download: the demo trains on it because a random-init SSL
front-end learns nothing useful from a few hundred clips in a few CPU minutes, while spectral
statistics separate the synthetic classes. Real recipes use XLS-R.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

WIN, HOP, N_FFT = 400, 320, 512


class LogSpectrogram(nn.Module):
    """``wave[B, N] -> log power spectrogram[B, T, 256]`` (0 to 7,969 Hz), loudness-normalised."""

    out_dim = N_FFT // 2  # the Nyquist bin is dropped: 256 divides evenly for heads that split channels

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("window", torch.hann_window(WIN), persistent=False)

    def forward(self, wave: Tensor) -> Tensor:
        if wave.dim() != 2 or wave.shape[1] < WIN:
            raise ValueError(f"wave must be (batch, samples >= {WIN}), got {tuple(wave.shape)}")
        frames = wave.float().unfold(1, WIN, HOP) * self.window  # (B, T, WIN)
        power = torch.fft.rfft(frames, n=N_FFT).abs().pow(2)
        feats = torch.log(power[..., :-1] + 1e-6)
        return feats - feats.mean(dim=(1, 2), keepdim=True)


class Waveform(nn.Module):
    """``wave[B, N] -> wave[B, N, 1]``: no front-end, for heads that read raw audio (raw AASIST)."""

    out_dim = 1

    def forward(self, wave: Tensor) -> Tensor:
        if wave.dim() != 2:
            raise ValueError(f"wave must be (batch, samples), got {tuple(wave.shape)}")
        return wave.unsqueeze(-1)


# ---- Codecfake's mel front-end (CodecfakeMel) goes below this line ----
