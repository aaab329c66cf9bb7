"""Turning a loaded file into an embedder's input, exactly as a recipe's AudioPolicy says.

Order: channel policy -> DC removal -> resampling -> level -> int16 round trip -> crop -> pad.
Every step is deterministic; a clip the policy cannot use (silent where a level policy divides
by its peak, shorter than the minimum with pad "none") is an error naming the clip.
"""

from __future__ import annotations

import numpy as np
import soxr
from scipy import signal

from siren_bench.recipes import AudioPolicy

# A clip counts as clipped with CLIPPED_FRACTION of its samples at |x| >= CLIPPED_LEVEL (or any
# beyond full scale): the scorer flags such clips and the report lists them.
CLIPPED_LEVEL = 0.999
CLIPPED_FRACTION = 0.001


def to_mono(wave: np.ndarray, policy: str) -> np.ndarray:
    """[T] or [T, C] -> [T]: the first channel (audioldm_eval) or the channel mean."""
    wave = np.asarray(wave, dtype=np.float64)
    if wave.ndim == 1:
        return wave
    if wave.ndim != 2 or wave.shape[1] == 0:
        raise ValueError(f"audio must be [T] or [T, channels], got shape {wave.shape}")
    return wave[:, 0] if policy == "first" else wave.mean(axis=1)


def sinc_hann_resample(wave: np.ndarray, orig: int, new: int, zero_crossings: int = 6, rolloff: float = 0.99) -> np.ndarray:
    """Polyphase resampling with a Hann-windowed sinc low-pass (cut-off `rolloff` x the lower
    Nyquist, `zero_crossings` on each side): the filter family of torchaudio's default
    resampler, which audioldm_eval uses. Built here because torchaudio does not import with the
    CPU torch; it follows torchaudio's defaults but is not bit-identical to it."""
    g = np.gcd(orig, new)
    up, down = new // g, orig // g
    cutoff = rolloff / max(up, down)  # relative to the upsampled Nyquist
    half = int(np.ceil(zero_crossings / cutoff))
    taps = np.arange(-half, half + 1, dtype=np.float64)
    kernel = cutoff * np.sinc(cutoff * taps) * signal.windows.hann(len(taps) + 2)[1:-1]
    return signal.resample_poly(wave, up, down, window=kernel)


def resample(wave: np.ndarray, orig: int, new: int, method: str) -> np.ndarray:
    if orig == new:
        return wave
    if method == "soxr_vhq":
        return soxr.resample(wave, orig, new, quality="VHQ")
    if method == "sinc_hann":
        return sinc_hann_resample(wave, orig, new)
    raise ValueError(f"unknown resampler {method!r}")


def apply_policy(wave: np.ndarray, sample_rate: int, policy: AudioPolicy, name: str) -> np.ndarray:
    """A loaded file ([T] or [T, C] at `sample_rate`) -> float64 mono at policy.sample_rate."""
    x = to_mono(wave, policy.channels)
    if policy.remove_dc:
        x = x - x.mean()
    x = resample(x, sample_rate, policy.sample_rate, policy.resampler)
    peak = float(np.abs(x).max(initial=0.0))
    if policy.level == "peak_max0.1":
        # Google's FAD divides by max(0.1, largest sample): the largest *signed* sample (np.amax),
        # not the largest magnitude, reproduced as is
        x = x / max(0.1, float(x.max(initial=0.0)))
    elif policy.level == "peak_-1dBFS":
        if peak == 0.0:
            raise ValueError(f"{name}: silent clip cannot be peak-normalised")
        x = x * (10 ** (-1 / 20) / peak)
    if policy.int16_roundtrip:
        x = np.round(np.clip(x, -1.0, 1.0) * 32767.0) / 32767.0
    sr = policy.sample_rate
    if policy.max_seconds is not None and len(x) > int(round(policy.max_seconds * sr)):
        n = int(round(policy.max_seconds * sr))
        start = (len(x) - n) // 2 if policy.crop == "centre" else 0
        x = x[start : start + n]
    need = int(round(policy.min_seconds * sr))
    if len(x) < need:
        if policy.pad == "none":
            raise ValueError(f"{name}: {len(x) / sr:.3f} s is shorter than the recipe's minimum {policy.min_seconds} s")
        if policy.pad == "zero":
            x = np.pad(x, (0, need - len(x)))
        else:  # repeat
            if len(x) == 0:
                raise ValueError(f"{name}: empty clip cannot be repeat-padded")
            x = np.tile(x, int(np.ceil(need / len(x))))[:need]
    return x
