"""MFCC, deltas and log energy in pure torch (batched, differentiable, any device and float dtype).

Pipeline (the textbook / HTK recipe), per frame of the waveform:

1. pre-emphasis ``y[n] = x[n] - a x[n-1]`` (``a = 0.97``; ``y[0] = x[0]``);
2. framing: frames of ``window_s`` (25 ms) every ``hop_s`` (10 ms), **centred**: frame ``j`` is
   centred on sample ``j * hop`` (time ``j * hop / sample_rate``), the signal being zero-padded by
   ``n_fft // 2`` at both ends, so a waveform of ``T`` samples gives ``1 + T // hop`` frames;
   each frame is weighted by a periodic Hann window of ``win`` samples, zero-padded (centred) to
   ``n_fft`` (the next power of two >= ``win`` unless given);
3. power spectrum ``|rfft|^2`` (no ``1 / n_fft`` scaling) from :func:`torch.stft`;
4. mel filterbank: **HTK mel scale** ``mel = 2595 log10(1 + f / 700)``, ``n_mels`` triangular
   filters with peak 1 (HTK, no area normalisation), their corners equally spaced in mel between
   ``f_min`` and ``f_max``, evaluated at the exact FFT bin frequencies ``k * sr / n_fft``;
5. natural log of ``max(mel energy, log_floor)``;
6. DCT-II with orthonormal scaling (``scipy.fft.dct(type=2, norm="ortho")``), first ``n_mfcc``
   coefficients (no liftering).

Deltas use the regression formula of HTK / ``librosa.feature.delta`` with width ``N = 2``:
``d_t = sum_{n=1..N} n (c_{t+n} - c_{t-n}) / (2 sum_{n=1..N} n^2)``, the sequence extended by
repeating its first and last frames (HTK's edge rule). The log energy of a frame is the natural
log of the energy of the pre-emphasised, windowed frame, ``log(max(sum_n (w[n] y[n])^2, log_floor))``,
taken from the power spectrum through Parseval's theorem.

:func:`audio_features` stacks ``[mfcc (n_mfcc), deltas (n_mfcc), log energy (1)]``; with the
defaults that is 13 + 13 + 1 = 27 values per 10 ms frame (:data:`DEFAULT_FEATURE_SIZE`).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "MFCCConfig",
    "DEFAULT_FEATURE_SIZE",
    "hz_to_mel",
    "mel_to_hz",
    "mel_center_frequencies",
    "mel_filterbank",
    "dct_matrix",
    "frame_count",
    "power_spectrogram",
    "log_mel_spectrogram",
    "mfcc",
    "deltas",
    "log_energy",
    "audio_features",
    "feature_size",
]


@dataclass(frozen=True)
class MFCCConfig:
    """Settings of the MFCC front end. Times are in seconds so that one config fits any sample rate.

    Attributes:
        window_s: analysis window length in seconds (25 ms).
        hop_s: frame step in seconds (10 ms, i.e. 100 feature frames per second).
        n_fft: FFT size in samples; ``None``: the next power of two >= the window length.
        n_mels: number of mel filters.
        n_mfcc: number of cepstral coefficients kept (including c0).
        f_min: lowest filter corner in Hz (20 Hz keeps DC and mains hum out).
        f_max: highest filter corner in Hz; ``None``: the Nyquist frequency.
        preemphasis: pre-emphasis coefficient ``a`` in ``[0, 1)``; 0 disables it.
        log_floor: energies are clamped to at least this before the log (silence -> ``log(1e-10)``).
        delta_width: ``N`` of the delta regression window (``2N + 1`` frames).
        use_deltas: append the deltas of the MFCCs in :func:`audio_features`.
        use_energy: append the log energy in :func:`audio_features`.
    """

    window_s: float = 0.025
    hop_s: float = 0.010
    n_fft: int | None = None
    n_mels: int = 40
    n_mfcc: int = 13
    f_min: float = 20.0
    f_max: float | None = None
    preemphasis: float = 0.97
    log_floor: float = 1e-10
    delta_width: int = 2
    use_deltas: bool = True
    use_energy: bool = True

    def __post_init__(self) -> None:
        if not (self.window_s > 0 and self.hop_s > 0):
            raise ValueError(f"window_s and hop_s must be > 0 seconds; got {self.window_s}, {self.hop_s}")
        if self.n_mels < 1 or not (1 <= self.n_mfcc <= self.n_mels):
            raise ValueError(f"need 1 <= n_mfcc <= n_mels; got n_mfcc={self.n_mfcc}, n_mels={self.n_mels}")
        if not 0.0 <= self.preemphasis < 1.0:
            raise ValueError(f"preemphasis must be in [0, 1); got {self.preemphasis}")
        if self.delta_width < 1:
            raise ValueError(f"delta_width must be >= 1; got {self.delta_width}")
        if self.log_floor <= 0:
            raise ValueError(f"log_floor must be > 0; got {self.log_floor}")

    def win_length(self, sample_rate: int) -> int:
        """Window length in samples at ``sample_rate``."""
        return max(2, int(round(self.window_s * sample_rate)))

    def hop_length(self, sample_rate: int) -> int:
        """Frame step in samples at ``sample_rate`` (the exact frame rate is ``sample_rate / hop``)."""
        return max(1, int(round(self.hop_s * sample_rate)))

    def fft_size(self, sample_rate: int) -> int:
        """FFT size in samples at ``sample_rate``."""
        win = self.win_length(sample_rate)
        if self.n_fft is None:
            return 1 << (win - 1).bit_length()
        if self.n_fft < win:
            raise ValueError(f"n_fft must be >= the window length ({win} samples at {sample_rate} Hz); "
                             f"got {self.n_fft}")
        return self.n_fft

    def mel_range(self, sample_rate: int) -> tuple[float, float]:
        """``(f_min, f_max)`` in Hz at ``sample_rate``."""
        f_max = sample_rate / 2.0 if self.f_max is None else float(self.f_max)
        if not 0.0 <= self.f_min < f_max <= sample_rate / 2.0:
            raise ValueError(f"need 0 <= f_min < f_max <= sample_rate / 2 = {sample_rate / 2}; "
                             f"got f_min={self.f_min}, f_max={f_max}")
        return float(self.f_min), f_max


def feature_size(config: MFCCConfig | None = None) -> int:
    """Values per frame returned by :func:`audio_features` for ``config``."""
    c = config or MFCCConfig()
    return c.n_mfcc * (2 if c.use_deltas else 1) + (1 if c.use_energy else 0)


#: ``feature_size(MFCCConfig())``: 13 MFCC + 13 deltas + 1 log energy.
DEFAULT_FEATURE_SIZE = feature_size(MFCCConfig())


def hz_to_mel(hz: Tensor | float) -> Tensor | float:
    """HTK mel scale: ``2595 log10(1 + hz / 700)``."""
    if isinstance(hz, Tensor):
        return 2595.0 * torch.log10(1.0 + hz / 700.0)
    return 2595.0 * math.log10(1.0 + hz / 700.0)


def mel_to_hz(mel: Tensor | float) -> Tensor | float:
    """Inverse of :func:`hz_to_mel`: ``700 (10^(mel / 2595) - 1)``."""
    if isinstance(mel, Tensor):
        return 700.0 * (torch.pow(10.0, mel / 2595.0) - 1.0)
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


def _mel_corners(n_mels: int, f_min: float, f_max: float) -> Tensor:
    mels = torch.linspace(hz_to_mel(f_min), hz_to_mel(f_max), n_mels + 2, dtype=torch.float64)
    return mel_to_hz(mels)


def mel_center_frequencies(n_mels: int, f_min: float, f_max: float, *, dtype: torch.dtype = torch.float32,
                           device=None) -> Tensor:
    """``(n_mels,)`` centre (peak) frequency in Hz of each HTK mel filter."""
    return _mel_corners(n_mels, f_min, f_max)[1:-1].to(device=device, dtype=dtype)


# The matrices are built once per setting, on the CPU in float64 (MPS has no float64, and the filter
# edges should not depend on the working dtype), then cast and moved for each call.
@functools.lru_cache(maxsize=32)
def _mel_filterbank_f64(n_fft: int, sample_rate: int, n_mels: int, f_min: float, f_max: float) -> Tensor:
    corners = _mel_corners(n_mels, f_min, f_max)
    freqs = torch.arange(n_fft // 2 + 1, dtype=torch.float64) * (sample_rate / n_fft)
    lo, mid, hi = corners[:-2], corners[1:-1], corners[2:]
    rising = (freqs[:, None] - lo) / (mid - lo)
    falling = (hi - freqs[:, None]) / (hi - mid)
    return torch.minimum(rising, falling).clamp_min(0.0)


@functools.lru_cache(maxsize=32)
def _dct_matrix_f64(n_in: int, n_out: int) -> Tensor:
    n = torch.arange(n_in, dtype=torch.float64)
    k = torch.arange(n_out, dtype=torch.float64)[:, None]
    d = torch.cos(math.pi * k * (2.0 * n + 1.0) / (2.0 * n_in)) * math.sqrt(2.0 / n_in)
    d[0] /= math.sqrt(2.0)
    return d


def mel_filterbank(n_fft: int, sample_rate: int, n_mels: int, f_min: float = 0.0, f_max: float | None = None,
                   *, dtype: torch.dtype = torch.float32, device=None) -> Tensor:
    """Triangular HTK mel filters over the bins of a one-sided FFT.

    Returns:
        ``(n_fft // 2 + 1, n_mels)`` weights in ``[0, 1]``: column ``m`` rises linearly from 0 at
        corner ``m`` to 1 at corner ``m + 1`` and falls to 0 at corner ``m + 2`` (in Hz, bins at
        ``k * sample_rate / n_fft``), so ``power @ fb`` gives the mel band energies.
    """
    f_max = sample_rate / 2.0 if f_max is None else f_max
    if n_mels < 1 or n_fft < 2 or not 0.0 <= f_min < f_max <= sample_rate / 2.0:
        raise ValueError(f"need n_mels >= 1, n_fft >= 2 and 0 <= f_min < f_max <= {sample_rate / 2}; "
                         f"got n_mels={n_mels}, n_fft={n_fft}, f_min={f_min}, f_max={f_max}")
    fb = _mel_filterbank_f64(int(n_fft), int(sample_rate), int(n_mels), float(f_min), float(f_max))
    return fb.to(device=device, dtype=dtype, copy=True)


def dct_matrix(n_in: int, n_out: int, *, dtype: torch.dtype = torch.float32, device=None) -> Tensor:
    """``(n_out, n_in)`` orthonormal DCT-II matrix.

    ``x @ D.T`` equals ``scipy.fft.dct(x, type=2, norm="ortho")[..., :n_out]``.
    """
    if not 1 <= n_out <= n_in:
        raise ValueError(f"need 1 <= n_out <= n_in; got n_out={n_out}, n_in={n_in}")
    return _dct_matrix_f64(int(n_in), int(n_out)).to(device=device, dtype=dtype, copy=True)


def _check_waveform(waveform: Tensor) -> None:
    if not isinstance(waveform, Tensor) or waveform.ndim < 1 or waveform.shape[-1] < 1:
        shape = tuple(waveform.shape) if isinstance(waveform, Tensor) else type(waveform).__name__
        raise ValueError(f"waveform must be a tensor of shape (..., T) with T >= 1 samples; got {shape}")
    if not waveform.is_floating_point():
        raise ValueError(f"waveform must be a floating-point tensor (samples in [-1, 1]); "
                         f"got {waveform.dtype}")


def _check_rate(sample_rate: int) -> None:
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int) or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive int (Hz); got {sample_rate!r}")


def frame_count(n_samples: int, sample_rate: int, config: MFCCConfig | None = None) -> int:
    """Number of feature frames for a waveform of ``n_samples`` samples: ``1 + n_samples // hop``."""
    return 1 + n_samples // (config or MFCCConfig()).hop_length(sample_rate)


def power_spectrogram(waveform: Tensor, sample_rate: int, config: MFCCConfig | None = None) -> Tensor:
    """Power spectrum of pre-emphasised, Hann-windowed, centred frames.

    Args:
        waveform: ``(..., T)`` float samples (nominally in ``[-1, 1]``).
        sample_rate: Hz.
        config: front-end settings (defaults: 25 ms window, 10 ms hop).

    Returns:
        ``(..., n_frames, n_fft // 2 + 1)`` with ``n_frames = 1 + T // hop``; ``|X_k|^2``, unscaled.
    """
    _check_waveform(waveform)
    _check_rate(sample_rate)
    c = config or MFCCConfig()
    win, hop, n_fft = c.win_length(sample_rate), c.hop_length(sample_rate), c.fft_size(sample_rate)
    lead, t = waveform.shape[:-1], waveform.shape[-1]
    x = waveform.reshape(-1, t)
    if c.preemphasis > 0:
        x = torch.cat([x[:, :1], x[:, 1:] - c.preemphasis * x[:, :-1]], dim=1)
    window = torch.hann_window(win, periodic=True, dtype=x.dtype, device=x.device)
    spec = torch.stft(x, n_fft, hop_length=hop, win_length=win, window=window, center=True,
                      pad_mode="constant", return_complex=True)
    power = spec.real.square() + spec.imag.square()
    return power.transpose(1, 2).reshape(*lead, power.shape[2], power.shape[1])


def _log_mel_from_power(power: Tensor, sample_rate: int, c: MFCCConfig) -> Tensor:
    f_min, f_max = c.mel_range(sample_rate)
    n_fft = c.fft_size(sample_rate)
    fb = mel_filterbank(n_fft, sample_rate, c.n_mels, f_min, f_max, dtype=power.dtype, device=power.device)
    return torch.log(torch.clamp_min(power @ fb, c.log_floor))


def _energy_from_power(power: Tensor, n_fft: int) -> Tensor:
    # Parseval for a one-sided spectrum: the interior bins stand for two conjugate bins each.
    weights = torch.full((power.shape[-1],), 2.0, dtype=power.dtype, device=power.device)
    weights[0] = 1.0
    if n_fft % 2 == 0:
        weights[-1] = 1.0
    return (power * weights).sum(-1) / n_fft


def log_mel_spectrogram(waveform: Tensor, sample_rate: int, config: MFCCConfig | None = None) -> Tensor:
    """Natural-log HTK mel band energies.

    Returns:
        ``(..., n_frames, n_mels)``; ``log(max(power @ mel_filterbank, log_floor))``.
    """
    c = config or MFCCConfig()
    return _log_mel_from_power(power_spectrogram(waveform, sample_rate, c), sample_rate, c)


def mfcc(waveform: Tensor, sample_rate: int, config: MFCCConfig | None = None) -> Tensor:
    """Mel-frequency cepstral coefficients (module docstring: steps and conventions).

    Args:
        waveform: ``(..., T)`` float samples in ``[-1, 1]``.
        sample_rate: Hz.
        config: front-end settings; defaults give 13 coefficients every 10 ms.

    Returns:
        ``(..., 1 + T // hop, n_mfcc)``; c0 is the orthonormal DCT's mean term
        (``sum log mel / sqrt(n_mels)``).
    """
    c = config or MFCCConfig()
    logmel = log_mel_spectrogram(waveform, sample_rate, c)
    return logmel @ dct_matrix(c.n_mels, c.n_mfcc, dtype=logmel.dtype, device=logmel.device).T


def deltas(features: Tensor, width: int = 2, dim: int = -2) -> Tensor:
    """Regression deltas along the time axis (HTK / ``librosa.feature.delta`` formula, edges repeated).

    Args:
        features: any shape; ``dim`` is time (default ``-2``: ``(..., frames, channels)``).
        width: ``N``; the regression uses the ``2N + 1`` frames around each frame.
        dim: the time dimension.

    Returns:
        Same shape as ``features``: ``sum_n n (f[t+n] - f[t-n]) / (2 sum_n n^2)``, ``n = 1..N``. A
        linear ramp of slope ``s`` per frame gives exactly ``s`` away from the ends.
    """
    if not isinstance(features, Tensor) or features.ndim < 1:
        raise ValueError("features must be a tensor with a time dimension")
    if width < 1:
        raise ValueError(f"width must be >= 1; got {width}")
    x = features.movedim(dim, -1)
    lead, t = x.shape[:-1], x.shape[-1]
    flat = x.reshape(-1, 1, t)
    padded = F.pad(flat, (width, width), mode="replicate")
    # Integer taps, divided afterwards, so that a constant sequence gives exactly 0.
    kernel = torch.arange(-width, width + 1, dtype=x.dtype, device=x.device)
    denom = width * (width + 1) * (2 * width + 1) / 3.0  # 2 * sum_{n=1..N} n^2
    out = F.conv1d(padded, kernel.view(1, 1, -1)) / denom  # conv1d is a correlation: sum_n n f[t+n]
    return out.reshape(*lead, t).movedim(-1, dim)


def log_energy(waveform: Tensor, sample_rate: int, config: MFCCConfig | None = None) -> Tensor:
    """Natural log of the energy of each pre-emphasised, Hann-windowed frame.

    Returns:
        ``(..., n_frames)``; frames as in :func:`power_spectrogram`.
    """
    c = config or MFCCConfig()
    power = power_spectrogram(waveform, sample_rate, c)
    return torch.log(torch.clamp_min(_energy_from_power(power, c.fft_size(sample_rate)), c.log_floor))


def audio_features(waveform: Tensor, sample_rate: int, config: MFCCConfig | None = None) -> Tensor:
    """Per-frame audio features ``[mfcc, deltas of mfcc, log energy]`` (deltas/energy per ``config``).

    Args:
        waveform: ``(..., T)`` float samples in ``[-1, 1]``.
        sample_rate: Hz.
        config: front-end settings.

    Returns:
        ``(..., 1 + T // hop, feature_size(config))`` (27 values every 10 ms by default); frame
        ``j`` is centred on time ``j * hop / sample_rate`` seconds.
    """
    c = config or MFCCConfig()
    power = power_spectrogram(waveform, sample_rate, c)
    logmel = _log_mel_from_power(power, sample_rate, c)
    coeffs = logmel @ dct_matrix(c.n_mels, c.n_mfcc, dtype=logmel.dtype, device=logmel.device).T
    parts = [coeffs]
    if c.use_deltas:
        parts.append(deltas(coeffs, c.delta_width, dim=-2))
    if c.use_energy:
        energy = _energy_from_power(power, c.fft_size(sample_rate))
        parts.append(torch.log(torch.clamp_min(energy, c.log_floor)).unsqueeze(-1))
    return torch.cat(parts, dim=-1)
