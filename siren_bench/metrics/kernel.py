"""KAD: kernel audio distance (kadtk), an unbiased MMD^2 with an RBF kernel.

MMD^2_u = mean_{i != j} k(x_i, x_j) + mean_{i != j} k(y_i, y_j) - 2 mean_{i, j} k(x_i, y_j),
k(a, b) = exp(-|a - b|^2 / (2 sigma^2)), sigma = the median pairwise distance of the reference
set (fixed by the reference, so systems scored against it share one kernel), scaled x 100 as
kadtk reports it. Unlike FD it has no 1/n bias, and it can be slightly negative by chance when
the two sets come from one distribution: that is the unbiased estimate, reported as computed.
"""

from __future__ import annotations

import numpy as np

from siren_bench.metrics.base import MetricInputs, clip_level
from siren_bench.metrics.jackknife import jackknife
from siren_bench.registry import METRICS

SCALE = 100.0


def _squared_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = np.sum(a * a, axis=1)[:, None] + np.sum(b * b, axis=1)[None, :] - 2.0 * a @ b.T
    return np.clip(d, 0.0, None)


def median_bandwidth(reference: np.ndarray) -> float:
    x = np.asarray(reference, dtype=np.float64)
    d = np.sqrt(_squared_distances(x, x)[np.triu_indices(len(x), k=1)])
    sigma = float(np.median(d))
    if not sigma > 0:
        raise ValueError("the reference embeddings are all identical: the median bandwidth is 0")
    return sigma


def kernel_audio_distance(generated: np.ndarray, reference: np.ndarray, bandwidth: float | None = None) -> tuple[float, float]:
    """(KAD x 100, bandwidth) for [n, d] and [m, d] embeddings, n, m >= 2."""
    x = np.asarray(generated, dtype=np.float64)
    y = np.asarray(reference, dtype=np.float64)
    if x.ndim != 2 or y.ndim != 2 or len(x) < 2 or len(y) < 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"KAD needs [n, d] and [m, d] embeddings with n, m >= 2, got {x.shape} and {y.shape}")
    sigma = median_bandwidth(y) if bandwidth is None else float(bandwidth)
    return KernelResampler(x, y, sigma)(np.arange(len(x))), sigma


class KernelResampler:
    """KAD of subsets of the generated clips against the fixed reference: the statistic an
    interval evaluates many times (and, on all clips, kernel_audio_distance itself). The kernel
    matrices are computed once; a subset's MMD^2_u is then sums over their sub-blocks (O(k^2) per
    subset instead of O((k + m)^2 d))."""

    def __init__(self, generated: np.ndarray, reference: np.ndarray, bandwidth: float):
        x = np.asarray(generated, dtype=np.float64)
        y = np.asarray(reference, dtype=np.float64)
        gamma = 1.0 / (2.0 * bandwidth * bandwidth)
        self.kxx = np.exp(-gamma * _squared_distances(x, x))
        kyy = np.exp(-gamma * _squared_distances(y, y))
        m = len(y)
        self.reference_term = (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
        self.kxy = np.exp(-gamma * _squared_distances(x, y))

    def __call__(self, indices: np.ndarray) -> float:
        k = len(indices)
        if k < 2:
            raise ValueError("KAD needs at least 2 generated clips")
        block = self.kxx[np.ix_(indices, indices)]
        mmd = (block.sum() - np.trace(block)) / (k * (k - 1)) + self.reference_term - 2.0 * self.kxy[indices].mean()
        return float(SCALE * mmd)


def score_kad(inputs: MetricInputs) -> dict:
    """KAD between the clips' mean embeddings, bandwidth from the reference set, x100, with a
    jackknife interval over the generated clips (metrics/jackknife.py)."""
    x = np.concatenate([clip_level(inputs.generated[i].frames) for i in inputs.ids])
    y = np.concatenate([clip_level(inputs.reference[i].frames) for i in sorted(inputs.reference)])
    sigma = median_bandwidth(y)
    if inputs.value_only:
        return {"value": KernelResampler(x, y, sigma)(np.arange(len(inputs.ids)))}
    out = jackknife(KernelResampler(x, y, sigma), len(inputs.ids), inputs.seed)
    out.update(bandwidth=sigma, scale="x100")
    return out


# Registered by call, not by decorator: mutation testing (mutmut) skips decorated functions.
METRICS.add("kad", score_kad)
