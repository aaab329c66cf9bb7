"""A worked example of a model to compare (`siren-bench compare`): band-limited noise whose
loudness follows the caption's length. It ignores what the caption says, so it should score
like an unconditional model: near-chance CLAP, a large KL. Replace the body with your model."""

from __future__ import annotations

import numpy as np


def generate(captions: list[str], num_samples: list[int], sample_rate: int, seed: int) -> list[np.ndarray]:
    """One mono waveform per caption, exactly num_samples[i] long, at sample_rate, seeded."""
    rng = np.random.default_rng(seed)
    waves = []
    for caption, n in zip(captions, num_samples):
        noise = rng.standard_normal(n)
        smoothed = np.convolve(noise, np.ones(8) / 8, mode="same")  # a gentle low-pass
        waves.append(0.05 * (1 + len(caption) % 5) * smoothed)
    return waves
