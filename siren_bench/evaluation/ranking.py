"""Ranking robustness: would the order of the systems change under another measure, or under
another draw of the test clips?

The measures are the metrics of the run's recipe (in the smoke recipe: FAD, FAD-inf, KAD and FD on
the tagger's embeddings at two framings, KL and IS on its classifier head, CLAP on the small CLAP);
each is one way a toolkit could have ranked the systems. For every measure: the systems' ranks
(best first; lower is better except IS and CLAP); Kendall's tau-b between the orders of every
pair of measures; and, for every pair of systems, how often its order under the measure flips
over `resamples` half-samples of the test clips. A half-sample is n // 2 clips drawn without
replacement, the same clips for every system (they render the same captions), and the measure is
recomputed on it by the metric's own scoring function (scoring.score_metric) from the inputs the
scorer used: a resample with replacement would duplicate clips, which biases a set distance
(metrics/jackknife.py), and half of the clips is the standard m-out-of-n choice (m = n/2) that
keeps each half-sample's spread near that of a fresh test set of that size.

Measures under further recipes (eval.ranking_recipes: the score stage scores every system's
first replicate under each) are named "<metric> @ <recipe id>" (recipes.measure_name); a
measure's direction is its metric's. They are ranked on all clips only: the draw of clips is
re-measured under the run's own recipe (FURTHER_RECIPE_NOT_RESAMPLED).

A measure whose scoring function refuses a half-sample (e.g. IS with fewer clips than its splits)
is ranked on the full set only, and says why it was not resampled; so is FAD-inf, whose every
value fits FD at 15 subset sizes (NOT_RESAMPLED).
"""

from __future__ import annotations

import dataclasses
import functools
from itertools import combinations

import numpy as np
from scipy.stats import kendalltau

from siren_bench.evaluation.score import MetricArguments
from siren_bench.recipes import metric_of
from siren_bench.scoring import score_metric

HIGHER_IS_BETTER = frozenset({"is", "clap"})
# measures ranked on all clips only, and why (said in ranking.json and the report)
NOT_RESAMPLED = {"fad_inf": "each value fits FD at 15 subset sizes (about 0.5 s on 2 cores for the smoke tagger), "
                            "so re-measuring it on every half-sample of every system would cost minutes"}
FURTHER_RECIPE_NOT_RESAMPLED = ("a further recipe's measure: the draw of clips is re-measured under the run's own recipe; "
                                "the further recipes ask only whether the recipe reorders the systems (their FDs by "
                                "scipy's sqrtm took over a minute of half-samples on 2 cores)")


def _remembering(arguments: MetricArguments) -> MetricArguments:
    """The same arguments with the reference statistics looked up once (the scorer's lookup reads
    the content cache on every call; the ranking calls it for every half-sample)."""
    if arguments.reference_stats is None:
        return arguments
    return dataclasses.replace(arguments, reference_stats=functools.cache(arguments.reference_stats))


def half_samples(ids: list[str], resamples: int, seed: int) -> list[list[str]]:
    """`resamples` seeded subsets of len(ids) // 2 distinct ids each, sorted."""
    rng = np.random.default_rng(seed)
    ordered = sorted(ids)
    size = len(ordered) // 2
    return [[ordered[i] for i in sorted(rng.choice(len(ordered), size=size, replace=False))] for _ in range(resamples)]


def subset_value(arguments: MetricArguments, ids: list[str], seed: int) -> float:
    """The metric on the generated clips `ids` only (KL also pairs them with those references;
    every other metric keeps the whole reference set, which is fixed)."""
    generated = {i: arguments.generated[i] for i in ids}
    reference = {i: arguments.reference[i] for i in ids} if arguments.spec.metric == "kl" else arguments.reference
    return float(score_metric(arguments.spec, generated, reference, 1, seed, arguments.text, arguments.reference_stats,
                              value_only=True)["value"])


def order_sign(measure: str, a: float, b: float) -> int:
    """+1 when a is the better value under `measure`, -1 when b is, 0 for a tie."""
    sign = int(np.sign(a - b))
    return sign if metric_of(measure) in HIGHER_IS_BETTER else -sign


def ranks(measure: str, values: dict[str, float]) -> dict[str, int]:
    """1 = best; ties share the better rank."""
    key = (lambda v: -v) if metric_of(measure) in HIGHER_IS_BETTER else (lambda v: v)
    return {s: 1 + sum(key(values[o]) < key(values[s]) for o in values) for s in values}


def robustness(inputs: dict[str, dict[str, MetricArguments]], values: dict[str, dict[str, float]], resamples: int,
               seed: int, progress=None) -> dict:
    """`inputs[system][metric]`: what the scorer gave each metric; `values[system][metric]`: its
    value on all clips. Returns ranks, Kendall's tau between measures, and per pair of systems
    and measure the order on all clips and how often half-samples flip it."""
    systems = sorted(inputs)
    measures = [m for m in next(iter(inputs.values())) if all(m in values[s] for s in systems)]
    ids = sorted(next(iter(inputs[systems[0]].values())).generated)
    for system in systems:
        if sorted(next(iter(inputs[system].values())).generated) != ids:
            raise ValueError(f"ranking robustness pairs the systems clip by clip; {system} has other clip ids than {systems[0]}")
    draws = half_samples(ids, resamples, seed)
    inputs = {s: {m: _remembering(a) for m, a in per.items()} for s, per in inputs.items()}
    resampled, not_resampled = {}, {}
    for metric in measures:
        if metric_of(metric) in NOT_RESAMPLED:
            not_resampled[metric] = NOT_RESAMPLED[metric_of(metric)]
        elif metric != metric_of(metric):
            not_resampled[metric] = FURTHER_RECIPE_NOT_RESAMPLED
        elif resamples > 0:
            try:
                resampled[metric] = {s: [subset_value(inputs[s][metric], d, seed) for d in draws] for s in systems}
            except ValueError as exc:
                not_resampled[metric] = str(exc)
        if progress is not None:
            progress.update(1)
    rank = {m: ranks(m, {s: values[s][m] for s in systems}) for m in measures}
    tau = {}
    for a, b in combinations(measures, 2):
        statistic = kendalltau([rank[a][s] for s in systems], [rank[b][s] for s in systems]).statistic
        tau[f"{a}|{b}"] = None if np.isnan(statistic) else float(statistic)
    pairs = {}
    for a, b in combinations(systems, 2):
        entry = {}
        for m in measures:
            full = order_sign(m, values[a][m], values[b][m])
            cell = {"order": full}
            if m in resampled:
                signs = [order_sign(m, x, y) for x, y in zip(resampled[m][a], resampled[m][b])]
                cell["flip_fraction"] = float(np.mean([s != full for s in signs]))
            entry[m] = cell
        pairs[f"{a}|{b}"] = entry
    return {"systems": systems, "measures": measures, "values": {s: {m: values[s][m] for m in measures} for s in systems},
            "ranks": rank, "kendall_tau": tau, "pairs": pairs,
            "resampling": {"resamples": resamples, "clips_per_resample": len(ids) // 2, "of_clips": len(ids), "seed": seed,
                           "kind": "half-samples without replacement, the same clips for every system",
                           "not_resampled": not_resampled}}

