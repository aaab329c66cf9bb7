"""Cross-layer orthogonality of RVQ features (the paper's first diagnosis).

For every frame, the cosine similarity between the quantized vectors that each pair of RVQ
layers contributes (in the shared latent space). Near-orthogonal layers give cosines around 0:
a shared transformer predicting all layers then receives gradients from heads whose targets
point in unrelated directions. Accumulated batch by batch in float64 (sums, sums of squares,
a histogram), so any number of clips fits in memory.
"""

from __future__ import annotations

import numpy as np

HISTOGRAM_BINS = 40


def layer_cosines(features: np.ndarray) -> np.ndarray:
    """[N, K, D, F] per-layer vectors -> [N * F, K, K] per-frame cosine matrices."""
    features = np.asarray(features, dtype=np.float64)
    n, k, d, f = features.shape
    vectors = features.transpose(0, 3, 1, 2).reshape(n * f, k, d)
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    if np.any(norms == 0.0):
        raise ValueError("a layer contributes a zero vector at some frame; its cosine is undefined")
    unit = vectors / norms
    return np.einsum("nkd,njd->nkj", unit, unit)


class OrthogonalityStats:
    """Running statistics of per-frame cross-layer cosines."""

    def __init__(self, n_layers: int, dim: int):
        self.k, self.dim = n_layers, dim
        self.count = 0
        self.total = np.zeros((n_layers, n_layers))
        self.total_sq = np.zeros((n_layers, n_layers))
        self.abs_off_total = 0.0
        self.abs_off_total_sq = 0.0
        self.histogram = np.zeros(HISTOGRAM_BINS, dtype=np.int64)

    def update(self, features: np.ndarray) -> None:
        cosines = layer_cosines(features)
        off = np.abs(cosines[:, ~np.eye(self.k, dtype=bool)])
        self.count += cosines.shape[0]
        self.total += cosines.sum(axis=0)
        self.total_sq += (cosines**2).sum(axis=0)
        self.abs_off_total += off.sum()
        self.abs_off_total_sq += (off**2).sum()
        # rounding can give |cos| = 1 + 1e-16, which would fall outside the histogram's range
        self.histogram += np.histogram(np.clip(cosines[:, ~np.eye(self.k, dtype=bool)], -1.0, 1.0), bins=HISTOGRAM_BINS, range=(-1.0, 1.0))[0]

    def result(self) -> dict:
        """Mean and std of each pair's cosine, mean |cos| off the diagonal, and the |cos| random
        directions in the same dimension would give (sqrt(2 / (pi D)))."""
        if self.count == 0:
            raise ValueError("no frames were accumulated")
        mean = self.total / self.count
        std = np.sqrt(np.maximum(self.total_sq / self.count - mean**2, 0.0))
        n_off = self.count * self.k * (self.k - 1)
        abs_mean = self.abs_off_total / n_off if n_off else None
        abs_std = float(np.sqrt(max(self.abs_off_total_sq / n_off - abs_mean**2, 0.0))) if n_off else None
        return {
            "mean": mean.tolist(), "std": std.tolist(),
            "mean_abs_off_diagonal": abs_mean, "std_abs_off_diagonal": abs_std,
            "random_direction_mean_abs": float(np.sqrt(2.0 / (np.pi * self.dim))),
            "n_frames": int(self.count), "dim": int(self.dim),
            "off_diagonal_histogram": self.histogram.tolist(),
        }


def orthogonality(features: np.ndarray) -> dict:
    stats = OrthogonalityStats(features.shape[1], features.shape[2])
    stats.update(features)
    return stats.result()


def off_diagonal_summary(cosines: np.ndarray) -> dict:
    """Mean, minimum and share of negative pairwise cosines (upper triangle); None for one codebook."""
    upper = cosines[np.triu_indices(cosines.shape[0], k=1)]
    if upper.size == 0:
        return {"mean": None, "min": None, "negative_share": None, "pairs": 0}
    return {"mean": float(upper.mean()), "min": float(upper.min()), "negative_share": float((upper < 0).mean()),
            "pairs": int(upper.size)}
