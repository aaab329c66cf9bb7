"""Reconstruction quality of a waveform against its reference, in float64.

- multi-scale mel distance: mean over window sizes of the L1 distance between log10 mel power
  spectrograms (hop = window / 4, slaney mel, power floor 1e-10), lower is better;
- SI-SNR (scale-invariant signal-to-noise ratio, dB), higher is better;
- log-spectral distance (dB): RMS over frequency of the log power ratio, averaged over frames
  (power floor 1e-10), lower is better.
Signals of different lengths are compared over their common prefix.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from transformers.audio_utils import mel_filter_bank

MEL_WINDOWS = (512, 1024, 2048)
MEL_POWER_FLOOR = 1e-10  # magnitude 1e-5, as DAC's mel loss
N_MELS = {256: 32, 512: 64, 1024: 80, 2048: 128}
METRICS = ("mel_distance", "si_snr_db", "lsd_db")
HIGHER_IS_BETTER = {"mel_distance": False, "si_snr_db": True, "lsd_db": False}


@lru_cache(maxsize=16)
def _mel_bank(n_fft: int, sample_rate: int) -> np.ndarray:
    return mel_filter_bank(
        num_frequency_bins=n_fft // 2 + 1, num_mel_filters=N_MELS.get(n_fft, 64), min_frequency=0.0,
        max_frequency=sample_rate / 2, sampling_rate=sample_rate, norm="slaney", mel_scale="slaney",
    ).T.astype(np.float64)


def power_spectrogram(wave: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    """[freq, frames] |STFT|^2 with a periodic Hann window, no centre padding."""
    wave = np.asarray(wave, dtype=np.float64)
    if wave.size < n_fft:
        wave = np.pad(wave, (0, n_fft - wave.size))
    n_frames = 1 + (wave.size - n_fft) // hop
    frames = np.lib.stride_tricks.sliding_window_view(wave, n_fft)[::hop][:n_frames]
    window = np.hanning(n_fft + 1)[:-1]
    return (np.abs(np.fft.rfft(frames * window, axis=-1)) ** 2).T


def _common(reference: np.ndarray, estimate: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n = min(reference.size, estimate.size)
    return np.asarray(reference[:n], dtype=np.float64), np.asarray(estimate[:n], dtype=np.float64)


def mel_distance(reference: np.ndarray, estimate: np.ndarray, sample_rate: int, windows=MEL_WINDOWS) -> float:
    reference, estimate = _common(reference, estimate)
    distances = []
    for n_fft in windows:
        bank = _mel_bank(n_fft, sample_rate)
        ref = np.log10(np.maximum(bank @ power_spectrogram(reference, n_fft, n_fft // 4), MEL_POWER_FLOOR))
        est = np.log10(np.maximum(bank @ power_spectrogram(estimate, n_fft, n_fft // 4), MEL_POWER_FLOOR))
        distances.append(np.abs(ref - est).mean())
    return float(np.mean(distances))


def si_snr_db(reference: np.ndarray, estimate: np.ndarray) -> float:
    reference, estimate = _common(reference, estimate)
    reference = reference - reference.mean()
    estimate = estimate - estimate.mean()
    energy = np.dot(reference, reference)
    if energy == 0.0:
        raise ValueError("SI-SNR is undefined for a silent reference")
    target = (np.dot(estimate, reference) / energy) * reference
    noise = estimate - target
    return float(10.0 * np.log10(np.dot(target, target) / max(np.dot(noise, noise), 1e-20)))


def lsd_db(reference: np.ndarray, estimate: np.ndarray, n_fft: int = 1024) -> float:
    reference, estimate = _common(reference, estimate)
    ref = power_spectrogram(reference, n_fft, n_fft // 4)
    est = power_spectrogram(estimate, n_fft, n_fft // 4)
    diff = 10.0 * np.log10(np.maximum(ref, 1e-10) / np.maximum(est, 1e-10))
    return float(np.sqrt((diff**2).mean(axis=0)).mean())


def reconstruction_metrics(reference: np.ndarray, estimate: np.ndarray, sample_rate: int) -> dict[str, float]:
    return {
        "mel_distance": mel_distance(reference, estimate, sample_rate),
        "si_snr_db": si_snr_db(reference, estimate),
        "lsd_db": lsd_db(reference, estimate),
    }


def summarize(values: np.ndarray) -> dict[str, float]:
    """Mean, standard deviation and a normal-approximation 95 % CI of the mean."""
    values = np.asarray(values, dtype=np.float64)
    std = float(values.std(ddof=1)) if values.size > 1 else 0.0
    half = 1.96 * std / np.sqrt(values.size)
    mean = float(values.mean())
    return {"mean": mean, "std": std, "ci95_low": mean - half, "ci95_high": mean + half, "n": int(values.size)}
