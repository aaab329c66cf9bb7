"""Paired comparisons between two scored systems of one run, clip by clip.

Every system generates the same test captions with the same seed, so per-clip metrics (CLAP
cosine, KL, squared distance to the reference mean) pair by clip id. The paired bootstrap of the
mean difference (metrics/bootstrap.paired_difference, with the recipe's seed) says whether two
systems differ, whichever way, with far less noise than comparing their two unpaired intervals.

It draws PAIRED_RESAMPLES resamples, not the recipe's count (200 for smoke): a bootstrap p cannot
go below 2/B, and a table's Holm adjustment multiplies the smallest p by the number of tests, so
with B = 200 and 15 comparisons no difference, however large, could reach 0.05. Resampling a mean
of per-clip numbers is cheap, so B = 10,000 (floor 0.0002) costs well under a second per test.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from siren_bench import replicates
from siren_bench.metrics.bootstrap import holm, paired_difference
from siren_bench.recipes import get_recipe

# per-clip columns of score/<system>/per_clip.csv, their labels, and which way is better
PAIRED_RESAMPLES = 10_000

PAIRED = (("clap_cosine", "CLAP cosine", "higher"), ("kl", "KL", "lower"),
          ("fd_sq_distance_to_reference_mean", "squared distance to the reference mean", "lower"))


def paired_differences(score_dir: Path, a: str, b: str) -> dict[str, dict]:
    """Per-clip column -> paired difference a - b, for the columns both systems have."""
    return paired_between(score_dir / a, score_dir / b)


def paired_between(a_dir: Path, b_dir: Path) -> dict[str, dict]:
    """The same for two scored folders (results.json, per_clip.csv) of any stages of one run."""
    recipes = {json.loads((d / "results.json").read_text())["recipe"]["id"] for d in (a_dir, b_dir)}
    if len(recipes) != 1:
        raise ValueError(f"{a_dir} and {b_dir} were scored with different recipes {sorted(recipes)}")
    recipe = get_recipe(recipes.pop())
    frames = [pd.read_csv(d / "per_clip.csv").set_index("clip_id").sort_index() for d in (a_dir, b_dir)]
    if list(frames[0].index) != list(frames[1].index):
        raise ValueError(f"{a_dir} and {b_dir} were scored on different clips")
    return {column: paired_difference(frames[0][column].to_numpy(), frames[1][column].to_numpy(), PAIRED_RESAMPLES,
                                      recipe.bootstrap_seed)
            for column, _, _ in PAIRED if column in frames[0] and column in frames[1]}


def paired_over_replicates(pairs: list[tuple[Path, Path]]) -> dict[str, dict]:
    """`paired_between` of the first pair (replicate 0), and when more pairs follow (replicate k of
    one system with replicate k of the other), per column `over_seeds`: each replicate's difference
    and their mean with an interval holding the seed and the clip variance (replicates.combine)."""
    first, further = paired_between(*pairs[0]), [paired_between(a, b) for a, b in pairs[1:]]
    if not further:
        return first
    for column, p in first.items():
        runs = [p, *(f[column] for f in further)]
        p["over_seeds"] = {"values": [r["value"] for r in runs],
                           **replicates.combine([r["value"] for r in runs], [replicates.clip_se(r) for r in runs])}
    return first


def p_text(p: dict, key: str = "p_value") -> str:
    """A p-value as printed: below the resolution of the resample count it is "< 2/B", never 0.000."""
    value = p[key]
    if value < p["p_floor"]:
        return f"< {p['p_floor']:.2g}"
    return f"{value:.3f}" if value >= 0.001 else f"{value:.2g}"  # 0.0004, not 0.000


def adjust_holm(family: list[dict]) -> str:
    """Add `p_holm` to each comparison of one table (one family of tests), and return the sentence
    that says so under the table. A p below the resolution of the resample count enters as that
    resolution (2/B), so the adjusted values are conservative."""
    if not family:
        return ""
    adjusted = holm([max(p["p_value"], p["p_floor"]) for p in family])
    for p, value in zip(family, adjusted):
        p["p_holm"] = value
    return (f"p (Holm): the {len(family)} p-values of this table adjusted together (Holm-Bonferroni; a p below "
            f"2/B, the resolution of B bootstrap resamples, counted as 2/B), so that the chance of any false "
            f"difference in the table stays at 5 % when p (Holm) < 0.05.")


def over_seeds_text(o: dict) -> str:
    """A paired difference over seed replicates (`over_seeds`) as tables and verdicts print it."""
    return (f"{o['mean']:+.4g} [{o['ci_low']:+.4g}, {o['ci_high']:+.4g}] over {o['n']} seeds "
            f"({', '.join(f'{v:+.3g}' for v in o['values'])})")


def difference_text(p: dict) -> str:
    return f"{p['value']:+.4g} [{p['ci_low']:+.4g}, {p['ci_high']:+.4g}]"
