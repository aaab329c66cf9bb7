"""Percentile bootstrap confidence intervals over clips, seeded: for statistics that are means
of per-clip terms (KL, CLAP cosine, paired differences) and for IS.

The statistic is recomputed on B resamples (with replacement) of the generated clips; the
reference side stays fixed, so the interval describes the uncertainty from which clips a system
happened to generate for the evaluated captions. Resamples on which the statistic is undefined
raise: nothing is dropped silently. The set distances (FD, FAD, FAD-inf, KAD) use the jackknife
instead (metrics/jackknife.py says why: duplicated clips shift their bootstrap draws).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np


@dataclass(frozen=True)
class Interval:
    value: float
    low: float
    high: float
    std: float
    mean: float
    n_boot: int
    level: float
    seed: int

    def as_dict(self) -> dict:
        return {"value": self.value, "ci_low": self.low, "ci_high": self.high, "bootstrap_std": self.std, "bootstrap_mean": self.mean,
                "n_boot": self.n_boot, "ci_level": self.level, "bootstrap_seed": self.seed}


def bootstrap(statistic: Callable[[np.ndarray], float], n_items: int, n_boot: int, seed: int, level: float = 0.95) -> Interval:
    """`statistic(indices)` evaluated on all items and on `n_boot` seeded resamples of them."""
    if n_items < 2:
        raise ValueError(f"a bootstrap interval needs at least 2 clips, got {n_items}")
    if n_boot < 1:
        raise ValueError("n_boot must be >= 1")
    rng = np.random.default_rng(seed)
    value = float(statistic(np.arange(n_items)))
    draws = np.array([statistic(rng.integers(0, n_items, n_items)) for _ in range(n_boot)], dtype=np.float64)
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(draws, [alpha, 1.0 - alpha])
    std = float(draws.std(ddof=1)) if n_boot > 1 else 0.0
    return Interval(value, float(low), float(high), std, float(draws.mean()), n_boot, level, seed)


def paired_difference(a: np.ndarray, b: np.ndarray, n_boot: int, seed: int, level: float = 0.95) -> dict:
    """Mean of the per-clip differences a - b (same clips, same order), its percentile interval
    over seeded resamples of the clips, and the two-sided bootstrap p-value for "no difference"
    (twice the smaller share of resampled means on either side of 0, at most 1). `p_floor` = 2 / B
    is the smallest nonzero p that B resamples can give: a p of 0 means "below p_floor", not 0."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired values need two equal-length vectors, got {a.shape} and {b.shape}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("paired values must be finite")
    diff = a - b
    draws: list[float] = []

    def mean_of(rows: np.ndarray) -> float:
        value = float(diff[rows].mean())
        draws.append(value)
        return value

    interval = bootstrap(mean_of, len(diff), n_boot, seed, level)
    resampled = np.array(draws[1:])  # draws[0] is the full set
    p = min(1.0, 2.0 * min(float((resampled <= 0).mean()), float((resampled >= 0).mean())))
    return interval.as_dict() | {"n": len(diff), "p_value": p, "p_floor": 2.0 / n_boot}


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values for one family of tests, in the input order: the k-th
    smallest p times (m - k + 1), made non-decreasing in that order, capped at 1. Controls the
    chance of any false "differs" in the family at the nominal level, with no assumption about
    how the tests depend on each other."""
    p = np.asarray(p_values, dtype=np.float64)
    if p.ndim != 1 or not np.isfinite(p).all() or (p < 0).any() or (p > 1).any():
        raise ValueError(f"holm needs p-values in [0, 1], got {p_values}")
    adjusted = np.empty_like(p)
    running = 0.0
    for rank, index in enumerate(np.argsort(p, kind="stable")):
        running = max(running, min(1.0, (len(p) - rank) * p[index]))
        adjusted[index] = running
    return adjusted.tolist()
