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

import math

import torch
from torch import Tensor, nn

WIN, HOP, N_FFT = 400, 320, 512


class LogSpectrogram(nn.Module):
    """``wave[B, N] -> log power spectrogram[B, T, 256]`` (0 to 7,969 Hz), loudness-normalised."""

    out_dim = (
        N_FFT // 2
    )  # the Nyquist bin is dropped: 256 divides evenly for heads that split channels

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

MEL_N_FFT, MEL_HOP, MEL_BANDS, MEL_RATE = 512, 128, 80, 16_000


def htk_mel_filterbank(
    n_freqs: int = MEL_N_FFT // 2 + 1, n_mels: int = MEL_BANDS, sample_rate: int = MEL_RATE
) -> Tensor:
    """Triangular mel filters ``float32[n_freqs, n_mels]``: HTK mel scale, 0 Hz to Nyquist, peak 1,
    no area normalisation (torchaudio's ``melscale_fbanks(..., norm=None, mel_scale="htk")``).

    Filter m rises linearly from edge m to edge m+1 and falls to edge m+2; the n_mels + 2 edges
    are spaced evenly on the mel scale ``2595 log10(1 + f / 700)``. Computed in float32 in the
    order torchaudio computes it (only the top edge's mel value in float64), so that the filters
    agree bit for bit; in float64 they would differ by up to 5e-6.
    """
    freqs = torch.linspace(0.0, sample_rate // 2, n_freqs)  # FFT bin centres, float32
    top = 2595.0 * math.log10(1.0 + (sample_rate // 2) / 700.0)
    edges = 700.0 * (10.0 ** (torch.linspace(0.0, top, n_mels + 2) / 2595.0) - 1.0)
    width = edges[1:] - edges[:-1]
    offset = edges[None, :] - freqs[:, None]  # (n_freqs, n_mels + 2)
    rising = (-1.0 * offset[:, :-2]) / width[:-1]
    falling = offset[:, 2:] / width[1:]
    return torch.clamp(torch.minimum(rising, falling), min=0.0)


class CodecfakeMel(nn.Module):
    """Codecfake's mel-LCNN input: ``wave[B, N] -> mel power[B, T, 80]``, T = 1 + N // 128 (505).

    What Codecfake computed for its published mel-LCNN files (80 bands; the only 80-band mel code
    in the repository is ``preprocess.py``'s commented block,
    ``torchaudio.transforms.MelSpectrogram(n_mels=80, n_fft=512, hop_length=128,
    sample_rate=16000)`` on the 64,600-sample clip), written out with torchaudio's defaults:

    * STFT: 512-point FFT, 512-sample periodic Hann window, hop 128, centred (the clip is
      reflect-padded by 256 on both sides), 257 one-sided bins;
    * power spectrum ``|X|^2`` (no log, no normalisation);
    * 80 triangular filters on the HTK mel scale, 0 to 8,000 Hz, peak 1, no Slaney area norm
      (:func:`htk_mel_filterbank`).

    The repository's ``feature_extraction.Melspec`` (librosa, 128 Slaney-normed bands) is not
    what the files were trained on: 128 bands would not give their ``Linear(4960, 160)``.
    Agrees with torchaudio 2.11's ``MelSpectrogram`` (tests pin its output on random waves).
    The output is time-major, (B, T, 80), which ``LCNN(time_axis="height")`` reads as Codecfake's
    (B, 1, 505, 80) image.
    """

    out_dim = MEL_BANDS

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("window", torch.hann_window(MEL_N_FFT), persistent=False)
        self.register_buffer("filters", htk_mel_filterbank(), persistent=False)

    def forward(self, wave: Tensor) -> Tensor:
        if wave.dim() != 2 or wave.shape[1] <= MEL_N_FFT // 2:
            raise ValueError(
                f"wave must be (batch, samples > {MEL_N_FFT // 2}), got {tuple(wave.shape)}"
            )
        # float32 throughout (buffers too: a bf16 model casts them), output in the input's dtype
        spec = torch.stft(
            wave.float(),
            MEL_N_FFT,
            hop_length=MEL_HOP,
            win_length=MEL_N_FFT,
            window=self.window.float(),
            center=True,
            pad_mode="reflect",
            normalized=False,
            onesided=True,
            return_complex=True,
        )
        power = spec.abs().pow(2)  # (B, 257, T)
        return (power.transpose(1, 2) @ self.filters.float()).to(wave.dtype)  # (B, T, 80)
