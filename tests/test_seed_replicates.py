"""Seed replicates (eval.seeds, siren_bench/replicates.py): where they live, which seeds they use,
how a metric combines over them, and whether Siren's order against another system holds under
every seed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.stats import t as student_t

from siren_bench import replicates
from siren_bench.config import AlignConfig, ConfigError, ModelConfig
from siren_bench.replicates import combine, over_seeds
from siren_bench.report.scores import comparison_verdict, seed_agreement, seeds_markdown


def test_replicate_k_shifts_every_seed_by_k_strides_and_lives_under_the_stage_folder():
    config = replicates.model_config(ModelConfig(seed=7, generation_seed=3), 2)
    assert (config.seed, config.generation_seed) == (7 + 2000, 3 + 2000)
    assert replicates.align_config(AlignConfig(seed=5), 1).seed == 1005
    assert replicates.model_config(ModelConfig(seed=7), 0).seed == 7
    # no replicate reuses another's seeds: experts use seed + index (< 1000), baselines seed + 100 .. 400
    assert replicates.SEED_STRIDE > 400
    assert replicates.folder(Path("a/siren"), 0) == Path("a/siren")
    assert replicates.folder(Path("a/siren"), 2) == Path("a/siren/replicates/seed2")
    assert replicates.check(1, 2, "p.yaml") == 1
    with pytest.raises(ConfigError, match=r"p.yaml: --replicate 2 is not a replicate of this run \(eval.seeds = 2"):
        replicates.check(2, 2, "p.yaml")
    with pytest.raises(ConfigError, match="--replicate -1"):
        replicates.check(-1, 2, "p.yaml")


def test_the_combined_interval_adds_the_seed_variance_over_n_to_the_mean_clip_variance():
    values, intervals = [1.0, 2.0, 4.0], [(0.5, 1.5), (1.0, 3.0), (3.0, 5.0)]
    out = combine(values, intervals)
    n, sd = 3, np.std(values, ddof=1)
    z = student_t.ppf(0.975, 1e9)
    clip_var = np.mean([((h - lo) / (2 * z)) ** 2 for lo, h in intervals])  # not divided by n: the references are shared
    se = np.sqrt(sd**2 / n + clip_var)
    df = se**4 / ((sd**2 / n) ** 2 / (n - 1))  # Welch-Satterthwaite, the clip part taken as known
    half = student_t.ppf(0.975, df) * se
    assert out["mean"] == pytest.approx(7 / 3) and out["sd"] == pytest.approx(sd) and out["n"] == 3
    assert out["clip_variance"] == pytest.approx(clip_var) and out["seed_variance"] == pytest.approx(sd**2 / n)
    assert out["se"] == pytest.approx(se) and out["df"] == pytest.approx(df)
    assert (out["ci_low"], out["ci_high"]) == pytest.approx((7 / 3 - half, 7 / 3 + half))
    assert n - 1 < out["df"] < np.inf  # wider than the seeds alone would make it, narrower than t(2) on everything
    # no spread between seeds: the clip interval alone, at the normal quantile
    same = combine([2.0, 2.0], [(1.0, 3.0), (1.0, 3.0)])
    assert same["df"] is None and (same["ci_low"], same["ci_high"]) == pytest.approx((1.0, 3.0))
    # a replicate without a clip interval: the seed part alone, t with n - 1 df
    bare = combine([1.0, 3.0], [(0.0, 2.0), None])
    assert bare["clip_variance"] is None and bare["df"] == pytest.approx(1.0)
    assert bare["ci_high"] - bare["mean"] == pytest.approx(student_t.ppf(0.975, 1) * np.sqrt(2.0 / 2))
    with pytest.raises(ValueError, match="at least 2"):
        combine([1.0], [None])


def test_over_seeds_combines_each_metric_of_the_runs():
    runs = [{"fad": {"value": v, "ci_low": v - 1, "ci_high": v + 1}, "clap": {"value": -v, "ci_low": None}}
            for v in (1.0, 2.0, 4.0)]
    spread = over_seeds([0, 1000, 2000], runs)
    assert spread["fad"]["values"] == [1.0, 2.0, 4.0] and spread["fad"]["seeds"] == [0, 1000, 2000]
    assert spread["fad"] == {**combine([1.0, 2.0, 4.0], [(0.0, 2.0), (1.0, 3.0), (3.0, 5.0)]),
                             "seeds": [0, 1000, 2000], "values": [1.0, 2.0, 4.0]}
    assert spread["clap"]["mean"] == pytest.approx(-7 / 3) and spread["clap"]["clip_variance"] is None


def _spread(seeds, values, metric="fad"):
    return {metric: {"seeds": seeds, "values": values}}


def test_seed_agreement_pairs_by_seed_and_knows_which_way_is_better():
    siren = _spread([0, 1, 2], [1.0, 2.0, 3.0])
    other = _spread([2, 0, 1], [4.0, 2.0, 1.0])  # seed 0: 2.0, seed 1: 1.0, seed 2: 4.0
    assert seed_agreement(siren, other, "fad") == (2, 3)  # lower FAD: better under seeds 0 and 2
    assert seed_agreement(_spread([0, 1, 2], [1.0, 2.0, 3.0], "clap"), _spread([2, 0, 1], [4.0, 2.0, 1.0], "clap"),
                          "clap") == (1, 3)  # higher CLAP: better under seed 1 only
    assert seed_agreement(siren, _spread([0, 5], [9.0, 9.0]), "fad") is None  # one shared seed: nothing to say


def test_the_report_gives_each_seed_and_the_agreement():
    systems = {"siren": {"over_seeds": {"fad": {"seeds": [0, 1], "values": [1.0, 3.0], "mean": 2.0, "sd": 1.41, "n": 2}}},
               "shared_lm": {"over_seeds": {"fad": {"seeds": [0, 1], "values": [2.0, 2.5], "mean": 2.25, "sd": 0.35, "n": 2}}},
               "codec_resynthesis": {}}
    text = seeds_markdown(systems, [("fad", "FAD")])
    assert "2 seed replicates" in text and "| siren | 1 / 3 (sd 1.4) |" in text and "| `shared_lm` | 1 of 2 |" in text
    assert seeds_markdown({"siren": {}}, [("fad", "FAD")]) == ""


def _measure(values, low, high, p_holm=0.001):
    o = {"values": values, "mean": float(np.mean(values)), "ci_low": low, "ci_high": high, "n": len(values)}
    return {"value": values[0], "ci_low": low, "ci_high": high, "p_value": p_holm, "p_floor": 2e-4, "p_holm": p_holm,
            "n": 48, "over_seeds": o}


def test_over_seeds_a_measure_counts_only_with_one_sign_under_every_seed_and_an_interval_off_zero():
    holds = comparison_verdict("shared_lm", [("CLAP", "higher", _measure([0.2, 0.1, 0.3], 0.05, 0.35))])
    assert holds.outcome == "agrees" and "over 3 seeds" in holds.effect and "Over 3 seed replicates" in holds.reason
    # significant under seed 0 (p Holm 0.001), but one seed goes the other way: not counted
    flips = comparison_verdict("shared_lm", [("CLAP", "higher", _measure([0.2, -0.1, 0.3], 0.01, 0.4))])
    assert flips.outcome == "inconclusive" and "keeps one sign under every seed" in flips.reason
    # one sign under every seed but an interval that holds zero: not counted
    wide = comparison_verdict("shared_lm", [("CLAP", "higher", _measure([0.2, 0.1, 0.3], -0.1, 0.5))])
    assert wide.outcome == "inconclusive"
    against = comparison_verdict("shared_lm", [("KL", "lower", _measure([0.2, 0.1, 0.3], 0.05, 0.35))])
    assert against.outcome == "contradicts"
