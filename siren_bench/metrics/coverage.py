"""How often the set-level intervals contain what they claim to: a simulation with Gaussians whose
distances are known in closed form.

Each cell (scenario, n clips, d dimensions) draws one reference set of n vectors, as a report
scores every system against one fixed set of real clips, and then `reps` independent generated
sets of n vectors, each scored through the harness's own code (FrechetResampler, KernelResampler,
fad_inf) and given an interval. Coverage is the share of repetitions whose interval contains the
target. Distributions are diagonal Gaussians, so the targets have closed forms:

- FD, population: FD between the generating Gaussian and the reference set's fitted Gaussian
  (conditional on the reference, as the interval is).
- FD, expected at n: the mean of the FD estimates over the repetitions (Monte Carlo; its error is
  about 1/sqrt(reps) of one estimate's spread). At n < d FD's bias puts this far above the
  population value; a jackknife targets this quantity, the one systems scored on the same n
  clips are compared on.
- KAD: MMD^2 x 100 between the generating Gaussian and the reference set at the reference
  set's median bandwidth, from E exp(-|z|^2 / 2s^2) = prod_i (1 + v_i/s^2)^-1/2
  exp(-m_i^2 / 2(s^2 + v_i)) for z ~ N(m, diag(v)); the estimator is unbiased for it.
- FAD-inf: the population FD, which the extrapolation to infinitely many clips estimates.

Scenarios: "shifted" (a system unlike the reference: mean moved by a quarter of each dimension's
standard deviation, variances 1.5 x) and "same" (a system drawn from the reference distribution,
like real_unpaired, where the distances are near 0 and KAD's estimates straddle 0).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from siren_bench.metrics.bootstrap import bootstrap
from siren_bench.metrics.frechet import FrechetResampler, GaussianStats, fad_inf
from siren_bench.metrics.jackknife import jackknife
from siren_bench.metrics.kernel import SCALE, KernelResampler, median_bandwidth

SCENARIOS = ("shifted", "same")
METHODS = ("jackknife", "percentile_bootstrap", "fad_inf_jackknife", "fad_inf_line_fit")


@dataclass(frozen=True)
class Gaussian:
    mean: np.ndarray  # [d]
    var: np.ndarray  # [d], the diagonal of the covariance

    def draw(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return self.mean + rng.standard_normal((n, len(self.mean))) * np.sqrt(self.var)


def populations(scenario: str, d: int) -> tuple[Gaussian, Gaussian]:
    """(reference, generated) distributions: a decaying spectrum like an embedding's (var_i ~ 1/i)."""
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}; choose one of {SCENARIOS}")
    var = 1.0 / np.arange(1, d + 1)
    reference = Gaussian(np.zeros(d), var)
    if scenario == "same":
        return reference, reference
    return reference, Gaussian(0.25 * np.sqrt(var), 1.5 * var)


def population_fd(generated: Gaussian, reference_rows: np.ndarray) -> float:
    """FD between a diagonal Gaussian and the Gaussian fitted to the reference rows. The cross
    term tr((S_g S_r)^1/2) comes from whichever of the d x d matrix diag(g)^1/2 S_r diag(g)^1/2
    and the n x n matrix A diag(g) A^T (A the centred rows / sqrt(n - 1), S_r = A^T A) is smaller:
    their nonzero eigenvalues are the same."""
    y = np.asarray(reference_rows, dtype=np.float64)
    n, d = y.shape
    centred = (y - y.mean(axis=0)) / np.sqrt(n - 1)
    if n <= d:
        product = (centred * generated.var) @ centred.T
    else:
        root = np.sqrt(generated.var)
        product = root[:, None] * (centred.T @ centred) * root[None, :]
    cross = float(np.sqrt(np.clip(np.linalg.eigvalsh(product), 0.0, None)).sum())
    return float(np.sum((generated.mean - y.mean(axis=0)) ** 2) + generated.var.sum() + np.sum(centred * centred) - 2.0 * cross)


def population_kad(generated: Gaussian, reference_rows: np.ndarray, bandwidth: float) -> float:
    """MMD^2 x 100 between the generating Gaussian and the reference set (its i != j pairs, as
    the unbiased estimator counts them) under an RBF kernel of the given bandwidth."""
    y = np.asarray(reference_rows, dtype=np.float64)
    s2 = bandwidth * bandwidth
    within = float(np.exp(-0.5 * np.sum(np.log1p(2.0 * generated.var / s2))))
    log_scale = -0.5 * np.sum(np.log1p(generated.var / s2))
    cross = np.exp(log_scale - 0.5 * np.sum((generated.mean - y) ** 2 / (s2 + generated.var), axis=1)).mean()
    sq = np.sum(y * y, axis=1)
    kyy = np.exp(-np.clip(sq[:, None] + sq[None, :] - 2.0 * y @ y.T, 0.0, None) / (2.0 * s2))
    m = len(y)
    reference_term = (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
    return float(SCALE * (within + reference_term - 2.0 * cross))


def _covers(low: float, high: float, target: float) -> bool:
    return bool(low <= target <= high)


def simulate_cell(scenario: str, n: int, d: int, reps: int, seed: int = 0, methods: tuple[str, ...] = ("jackknife",),
                  n_boot: int = 200, progress=None) -> list[dict]:
    """Coverage rows for one cell: one per (metric, method, target)."""
    unknown = set(methods) - set(METHODS)
    if unknown:
        raise ValueError(f"unknown interval methods {sorted(unknown)}; choose from {METHODS}")
    rng = np.random.default_rng([seed, n, d, SCENARIOS.index(scenario)])
    reference_dist, generated_dist = populations(scenario, d)
    y = reference_dist.draw(n, rng)
    reference = GaussianStats.from_features(y)
    sigma = median_bandwidth(y)
    fd_population = population_fd(generated_dist, y)
    kad_population = population_kad(generated_dist, y, sigma)
    found: dict[tuple[str, str], list[tuple[float, float, float]]] = {}  # (metric, method) -> (value, low, high)
    fd_estimates = []
    for rep in range(reps):
        x = generated_dist.draw(n, rng)
        clips = [x[i:i + 1] for i in range(n)]
        fd = FrechetResampler(clips, reference)
        kad = KernelResampler(x, y, sigma)
        if n <= d:
            # the full set through the Gram form too (the same quantity; the eigen form on d x d
            # costs O(d^3) per repetition): a reversed order is not "the full set" to the resampler
            fd_of = lambda idx, fd=fd: fd(idx[::-1] if len(idx) == n else idx)  # noqa: E731
        else:
            fd_of = fd
        rep_seed = seed + rep
        fd_estimates.append(fd_of(np.arange(n)))
        if "jackknife" in methods:
            for metric, statistic in (("fd", fd_of), ("kad", kad)):
                out = jackknife(statistic, n, rep_seed)
                found.setdefault((metric, "jackknife"), []).append((out["value"], out["ci_low"], out["ci_high"]))
        if "percentile_bootstrap" in methods:
            for metric, statistic in (("fd", fd_of), ("kad", kad)):
                out = bootstrap(statistic, n, n_boot, rep_seed).as_dict()
                found.setdefault((metric, "percentile_bootstrap"), []).append((out["value"], out["ci_low"], out["ci_high"]))
        if "fad_inf_jackknife" in methods:
            out = jackknife(lambda idx: fad_inf([clips[i] for i in idx], reference, seed=rep_seed).value, n, rep_seed)
            found.setdefault(("fad_inf", "jackknife"), []).append((out["value"], out["ci_low"], out["ci_high"]))
        if "fad_inf_line_fit" in methods:
            result = fad_inf(clips, reference, seed=rep_seed)
            found.setdefault(("fad_inf", "line_fit"), []).append((result.value, result.ci_low, result.ci_high))
        if progress is not None:
            progress.update(1)
    fd_expected = float(np.mean(fd_estimates))
    rows = []
    for (metric, method), triples in sorted(found.items()):
        targets = {"fd": [("population", fd_population), ("expected at n", fd_expected)],
                   "kad": [("population", kad_population)], "fad_inf": [("population", fd_population)]}[metric]
        values = np.array([t[0] for t in triples])
        widths = np.array([t[2] - t[1] for t in triples])
        for target_name, target in targets:
            hits = [_covers(low, high, target) for _, low, high in triples]
            rows.append({"scenario": scenario, "n": n, "d": d, "reps": len(triples), "metric": metric, "method": method,
                         "target": target_name, "target_value": target, "coverage": float(np.mean(hits)),
                         "mean_estimate": float(values.mean()), "mean_width": float(widths.mean()),
                         "contains_estimate": float(np.mean([low <= v <= high for v, low, high in triples]))})
    return rows
