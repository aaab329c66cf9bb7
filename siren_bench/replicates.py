"""Seed replicates (eval.seeds): every trained system trained, aligned and sampled again from fresh seeds.

A run's numbers move with the training seed (and with the machine, whose float rounding changes
what training produces) far more than its clip-level intervals show. So each trained system is
trained, aligned and rendered `eval.seeds` times: replicate 0 is the run as configured, replicate
k shifts every seed of the trained systems (model.seed, hence Siren's per-expert and the
baselines' offset seeds, align.seed and model.generation_seed) by k * SEED_STRIDE, far enough
that no seed of one replicate is reused by another (the experts use seed + index, the baselines
seed + 100 .. 400). A replicate's outputs sit under its stage folder with the same layout as
replicate 0's: <stage>/replicates/seed<k>/.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
from scipy.stats import t as student_t

from siren_bench.artifacts import REPLICATES
from siren_bench.config import AlignConfig, ConfigError, ModelConfig

SEED_STRIDE = 1000


def name(k: int) -> str:
    return f"seed{k}"


def folder(stage_dir: Path, k: int) -> Path:
    """Replicate k's copy of a stage folder: the folder itself for k = 0."""
    return stage_dir if k == 0 else stage_dir / REPLICATES / name(k)


def further(stage_dir: Path) -> list[Path]:
    """The folders of a stage's replicates beyond replicate 0, in order (replicates/seed1, seed2, ...,
    up to the first missing one): what a reader of a finished stage iterates over."""
    found, k = [], 1
    while (candidate := folder(stage_dir, k)).is_dir():
        found.append(candidate)
        k += 1
    return found


def model_config(config: ModelConfig, k: int) -> ModelConfig:
    """The model settings of replicate k: training and generation seeds shifted by k * SEED_STRIDE."""
    return replace(config, seed=config.seed + k * SEED_STRIDE, generation_seed=config.generation_seed + k * SEED_STRIDE)


def align_config(config: AlignConfig, k: int) -> AlignConfig:
    return replace(config, seed=config.seed + k * SEED_STRIDE)


def check(k: int, n: int, source: str) -> int:
    """`--replicate k` of a command that works outside DVC: one of the run's eval.seeds replicates."""
    if not 0 <= k < n:
        raise ConfigError(f"{source}: --replicate {k} is not a replicate of this run (eval.seeds = {n}: 0 .. {n - 1})")
    return k


Z_95 = 1.959963984540054  # the normal quantile: the half-width when the clip part alone is known exactly


def clip_se(record: dict) -> float | None:
    """One replicate's clip-level standard error, as its interval recorded it: the jackknife's se
    (set distances, IS) or the bootstrap's standard deviation (KL, CLAP, paired differences). None
    for a result without an interval. Read, not rebuilt from the interval's width: a t(19)
    jackknife interval or one floored at the quantity's least value would misstate it."""
    if record.get("ci_low") is None:
        return None
    for key in ("jackknife_se", "bootstrap_std"):
        if record.get(key) is not None:
            return float(record[key])
    raise ValueError(f"{record.get('metric', 'a result')} has an interval but records no standard error "
                     "(jackknife_se or bootstrap_std), so it cannot be combined over seeds")


def combine(values: list[float], clip_ses: list[float | None], floor: float | None = None) -> dict:
    """A metric over n seed replicates: their mean with a 95 % interval holding both sources of
    variance. The seed part is the replicates' sample variance over n (training and generation
    randomness, the generated clips' sampling included). The clip part is the mean of the
    replicates' clip variances (`clip_se` squared), not divided by n: every replicate is scored
    against the same test references, so that part does not average away over seeds. It counts
    the generated clips' noise a second time, which makes the interval conservative. The
    half-width is t(df) * se with Welch-Satterthwaite's df, the clip part taken as exactly known:
    df = n - 1 when the seed part dominates, growing towards the normal as the clip part does.
    `floor`: the least value the quantity can take (IS 1, a Fréchet distance 0); the lower end is
    raised to it, as the replicates' own intervals are (metrics/jackknife.py)."""
    n = len(values)
    if n < 2:
        raise ValueError(f"combining seed replicates needs at least 2, got {n}")
    mean, sd = float(np.mean(values)), float(np.std(values, ddof=1))
    seed_var = sd**2 / n
    known = [se for se in clip_ses if se is not None]
    clip_var = float(np.mean(np.square(known))) if len(known) == n else None
    se = float(np.sqrt(seed_var + (clip_var or 0.0)))
    df = float("inf") if seed_var == 0 else se**4 / (seed_var**2 / (n - 1))
    half = float(student_t.ppf(0.975, df)) * se if np.isfinite(df) else Z_95 * se
    low = mean - half
    floored = floor is not None and low < min(floor, mean)
    if floored:
        low = min(floor, mean)
    return {"mean": mean, "sd": sd, "n": n, "se": se, "df": df if np.isfinite(df) else None,  # None: the normal quantile
            "ci_low": low, "ci_high": mean + half, "ci_floored": floored, "seed_variance": seed_var, "clip_variance": clip_var}


def over_seeds(seeds: list[int], runs: list[dict]) -> dict:
    """Per metric of a system's replicates' results: the values under every seed and their
    combination (`combine`). `seeds` names each run (its generation seed), to pair systems by."""
    spread = {}
    for metric in runs[0]:
        values = [float(run[metric]["value"]) for run in runs]
        floor = runs[0][metric].get("ci_floor")
        spread[metric] = {"seeds": list(seeds), "values": values, **combine(values, [clip_se(run[metric]) for run in runs], floor)}
    return spread
