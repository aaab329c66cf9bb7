"""Delete-a-group jackknife intervals for set-level distances (FD, FAD, FAD-inf, KAD), seeded.

Why not the percentile bootstrap for these: a bootstrap resample of n clips holds only about
0.63 n distinct ones, and a set-level distance is not a mean of per-clip terms. FD's small-sample
bias grows as the number of distinct clips falls, so the draws sit above the point estimate, and
an unbiased MMD (KAD) computed on a resample with duplicates counts each duplicate pair as a
perfect match, which pulls the draws the other way. The percentile interval can then exclude its
own estimate (it did, twice, in the smoke report: real_unpaired FD 39.15 with [39.55, 130.3]).

The jackknife never draws duplicates. The clips are split into G groups at random (seeded: the
sorted ids may be ordered by caption or source); the statistic is recomputed with each group
left out, and the spread of those G values gives the standard error
    se^2 = (G - 1) / G * sum_g (T_(g) - mean_g T_(g))^2.
The interval is value ± t_{G-1, 1 - alpha/2} se: symmetric around the point estimate, so it
contains it by construction, with Student's t for the G - 1 degrees of freedom of the variance.
A constant shift of the leave-out values (the bias of a smaller set) cancels in the spread; it
is reported as the jackknife bias estimate (G - 1)(mean_g T_(g) - T), not folded into the value.

What the interval is for, measured by simulation (siren_bench/metrics/coverage.py, README table):
the expected value of the statistic at this number of clips against this reference set. For FD
and FAD at fewer clips than dimensions that expectation lies far above the population distance
(the bias); FAD-inf and KAD are the estimators meant for the population quantity.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from scipy.stats import t as student_t

GROUPS = 20  # leave-out groups; fewer when there are fewer clips (then the delete-one jackknife)


def jackknife(statistic: Callable[[np.ndarray], float], n_items: int, seed: int, groups: int = GROUPS,
              level: float = 0.95, floor: float | None = None) -> dict:
    """`statistic(indices)` on all items and with each of `groups` seeded random groups left out;
    returns the point estimate, its t interval and the jackknife's standard error and bias estimate.

    `floor`: the least value the estimated quantity can take (0 for a Fréchet distance). The lower
    end is raised to it (never above the estimate itself, which rounding can put a hair below 0);
    cutting an interval to the values the quantity can have loses no coverage."""
    if n_items < 3:
        raise ValueError(f"a jackknife interval needs at least 3 clips, got {n_items}")
    if groups < 2:
        raise ValueError(f"a jackknife needs at least 2 groups, got {groups}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    g = min(groups, n_items)
    order = np.random.default_rng(seed).permutation(n_items)
    parts = np.array_split(order, g)
    value = float(statistic(np.arange(n_items)))
    keep = np.ones(n_items, dtype=bool)
    left_out = []
    for part in parts:
        keep[part] = False
        left_out.append(float(statistic(np.flatnonzero(keep))))
        keep[part] = True
    left_out = np.asarray(left_out, dtype=np.float64)
    if not (np.isfinite(value) and np.isfinite(left_out).all()):
        raise ValueError(f"the statistic is not finite on the full set or a leave-out set: {value}, {left_out.tolist()}")
    se = float(np.sqrt((g - 1) / g * np.sum((left_out - left_out.mean()) ** 2)))
    half = float(student_t.ppf(0.5 + level / 2.0, g - 1)) * se
    low = value - half
    floored = floor is not None and low < min(floor, value)
    if floored:
        low = min(floor, value)
    return {"value": value, "ci_low": low, "ci_high": value + half, "ci_level": level, "ci_floor": floor, "ci_floored": floored,
            "ci_method": f"delete-a-group jackknife, {g} seeded groups, value ± t({g - 1}) se",
            "jackknife_se": se, "jackknife_bias": float((g - 1) * (left_out.mean() - value)),
            "jackknife_groups": g, "jackknife_seed": seed}
