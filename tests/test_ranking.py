"""Ranking robustness (evaluation/ranking.py): ranks, Kendall's tau between measures, and how often
half-samples of the clips flip a pair's order, recomputed by the metrics' own scoring functions."""

from __future__ import annotations

import numpy as np
import pytest

from siren_bench.embedders.base import Embedding
from siren_bench.evaluation import ranking
from siren_bench.evaluation.score import MetricArguments
from siren_bench.recipes import get_recipe
from siren_bench.report.ranking_card import pair_verdict, recipe_order
from siren_bench.scoring import score_metric

SMOKE = get_recipe("smoke")
IDS = [f"c{i:02d}" for i in range(40)]


def _set(rng, shift: float, d: int = 4) -> dict[str, Embedding]:
    """One clip vector per id, Gaussian around `shift`, and logits whose first class gains 3 x `shift`."""
    boost = np.zeros((1, 5))
    boost[0, 0] = 3.0 * shift
    return {i: Embedding(rng.standard_normal((1, d)) + shift, rng.standard_normal((1, 5)) + boost) for i in IDS}


def _inputs(sets: dict[str, dict], reference: dict, metrics=("fd", "kad", "kl")) -> tuple[dict, dict]:
    inputs = {s: {m: MetricArguments(SMOKE.spec(m), e, reference, None, None) for m in metrics} for s, e in sets.items()}
    values = {s: {m: score_metric(SMOKE.spec(m), e, reference, 1, 0)["value"] for m in metrics} for s, e in sets.items()}
    return inputs, values


def test_half_samples_are_seeded_distinct_halves():
    draws = ranking.half_samples(IDS, 30, seed=3)
    assert len(draws) == 30 and all(len(d) == 20 == len(set(d)) and d == sorted(d) and set(d) <= set(IDS) for d in draws)
    assert draws == ranking.half_samples(list(reversed(IDS)), 30, seed=3)  # the ids' given order does not matter
    assert draws != ranking.half_samples(IDS, 30, seed=4) and len({tuple(d) for d in draws}) == 30


def test_ranks_and_order_follow_each_metrics_direction():
    assert ranking.ranks("fd", {"a": 1.0, "b": 3.0, "c": 1.0}) == {"a": 1, "b": 3, "c": 1}
    assert ranking.ranks("clap", {"a": 0.1, "b": 0.3}) == {"a": 2, "b": 1}
    assert ranking.order_sign("fad", 1.0, 2.0) == 1 and ranking.order_sign("is", 1.0, 2.0) == -1
    assert ranking.order_sign("kad", 2.0, 2.0) == 0


def test_a_clear_order_never_flips_and_a_coin_toss_often_does():
    rng = np.random.default_rng(0)
    reference = _set(rng, 0.0)
    sets = {"near": _set(rng, 0.1), "far": _set(rng, 1.5), "twin": _set(rng, 0.1)}
    inputs, values = _inputs(sets, reference)
    out = ranking.robustness(inputs, values, resamples=40, seed=0)
    assert out["measures"] == ["fd", "kad", "kl"] and out["systems"] == ["far", "near", "twin"]
    assert all(out["ranks"][m]["far"] == 3 for m in out["measures"])
    clear = out["pairs"]["far|near"]
    assert all(c["order"] == -1 and c["flip_fraction"] == 0.0 for c in clear.values())
    coin = out["pairs"]["near|twin"]  # two draws of one distribution: half-samples disagree often
    assert any(0.1 < c["flip_fraction"] < 0.9 for c in coin.values())
    verdict = pair_verdict(out, "near", "far")
    assert verdict["leader"] == "near" and verdict["holds"] == 3 and verdict["text"].endswith("holds under 3 of 3 measures")
    assert pair_verdict(out, "far", "near")["leader"] == "near"
    # each measure on a half-sample is the metric's own value on those clips
    half = ranking.half_samples(IDS, 1, 0)[0]
    kl_half = score_metric(SMOKE.spec("kl"), {i: sets["near"][i] for i in half}, {i: reference[i] for i in half}, 1, 0)
    assert ranking.subset_value(inputs["near"]["kl"], half, 0) == kl_half["value"]
    assert ranking.subset_value(inputs["near"]["fd"], IDS, 0) == values["near"]["fd"]


def test_kendall_tau_between_measures_and_what_cannot_be_resampled():
    rng = np.random.default_rng(1)
    reference = _set(rng, 0.0)
    sets = {"a": _set(rng, 0.2), "b": _set(rng, 0.8), "c": _set(rng, 2.0)}
    inputs, values = _inputs(sets, reference, metrics=("fd", "is", "fad_inf"))
    out = ranking.robustness(inputs, values, resamples=5, seed=0)
    assert out["resampling"]["not_resampled"] == {"fad_inf": ranking.NOT_RESAMPLED["fad_inf"]}
    assert "flip_fraction" not in out["pairs"]["a|b"]["fad_inf"] and out["ranks"]["fad_inf"]["c"] == 3
    assert all("flip_fraction" not in cell for cell in ranking.robustness(inputs, values, 0, 0)["pairs"]["a|b"].values())
    assert out["kendall_tau"]["fd|is"] == pytest.approx(sum(
        np.sign(values[x]["fd"] - values[y]["fd"]) * np.sign(values[y]["is"] - values[x]["is"])
        for x, y in (("a", "b"), ("a", "c"), ("b", "c"))) / 3)
    few = {s: {m: MetricArguments(a.spec, {i: a.generated[i] for i in IDS[:12]}, a.reference, None, None)
               for m, a in per.items() if m != "fad_inf"} for s, per in inputs.items()}
    out = ranking.robustness(few, values, resamples=3, seed=0)  # 6 clips a half-sample, IS needs 10
    assert "is" in out["resampling"]["not_resampled"] and "flip_fraction" not in out["pairs"]["a|b"]["is"]
    assert "flip_fraction" in out["pairs"]["a|b"]["fd"]


def test_systems_with_other_clips_are_refused():
    rng = np.random.default_rng(2)
    reference = _set(rng, 0.0)
    inputs, values = _inputs({"a": _set(rng, 0.1), "b": _set(rng, 0.2)}, reference, metrics=("fd",))
    inputs["b"]["fd"] = MetricArguments(SMOKE.spec("fd"), {i: inputs["b"]["fd"].generated[i] for i in IDS[1:]}, reference, None, None)
    with pytest.raises(ValueError, match="b has other clip ids than a"):
        ranking.robustness(inputs, values, resamples=2, seed=0)


def test_a_metric_is_scored_from_two_generated_clips_and_refused_from_one():
    rng = np.random.default_rng(0)
    reference = _set(rng, 0.0)
    two = {i: e for i, e in list(_set(rng, 0.5).items())[:2]}
    assert score_metric(SMOKE.spec("kad"), two, reference, 1, 0, value_only=True)["n_generated"] == 2
    with pytest.raises(ValueError, match="kad: need at least 2 generated clips, got 1"):
        score_metric(SMOKE.spec("kad"), dict(list(two.items())[:1]), reference, 1, 0, value_only=True)


def test_flips_are_counted_on_the_seeded_half_samples_by_each_measures_direction_and_recorded():
    """The record a reader audits: each pair's order on all clips by the measure's own direction, the
    share of the seeded half-samples (run seed) whose order differs, each recomputed against the whole
    reference set (KL alone pairs its references), and how the resampling was done."""
    rng = np.random.default_rng(5)
    reference = _set(rng, 0.0)
    sets = {"a": _set(rng, 0.1), "b": _set(rng, 0.15)}
    inputs, values = _inputs(sets, reference, metrics=("fd", "is"))
    out = ranking.robustness(inputs, values, resamples=6, seed=7)
    assert out["values"] == values
    assert out["resampling"] == {"resamples": 6, "clips_per_resample": 20, "of_clips": 40, "seed": 7,
                                 "kind": "half-samples without replacement, the same clips for every system",
                                 "not_resampled": {}}
    draws = ranking.half_samples(IDS, 6, 7)
    for m in ("fd", "is"):
        full = ranking.order_sign(m, values["a"][m], values["b"][m])
        assert full != 0 and out["pairs"]["a|b"][m]["order"] == full
        signs = [ranking.order_sign(m, ranking.subset_value(inputs["a"][m], d, 7), ranking.subset_value(inputs["b"][m], d, 7))
                 for d in draws]
        assert out["pairs"]["a|b"][m]["flip_fraction"] == np.mean([s != full for s in signs])
    half = draws[0]
    whole_reference = score_metric(SMOKE.spec("fd"), {i: sets["a"][i] for i in half}, reference, 1, 0, value_only=True)["value"]
    assert ranking.subset_value(inputs["a"]["fd"], half, 0) == whole_reference
    assert ranking.robustness(inputs, values, resamples=6, seed=7) == out  # seeded: the same record again
    assert ranking.robustness(inputs, values, resamples=6, seed=8)["pairs"] != out["pairs"] or \
        ranking.half_samples(IDS, 6, 8) != draws
    one = ranking.robustness(inputs, values, resamples=1, seed=7)  # one half-sample is still a resampling
    assert all("flip_fraction" in cell for cell in one["pairs"]["a|b"].values())


def test_reference_statistics_are_looked_up_once_and_undefined_taus_are_null():
    """The scorer's reference-statistics lookup (a cache read) is remembered across half-samples;
    a measure under which every system ties has no Kendall tau (null, not NaN in the record); the
    half-sample size is a whole number of clips."""
    from siren_bench.scoring import reference_gaussian

    rng = np.random.default_rng(3)
    reference = _set(rng, 0.0)
    sets = {"a": _set(rng, 0.2), "b": _set(rng, 0.9)}
    calls = []

    def lookup(level):
        calls.append(level)
        return reference_gaussian(reference, level)

    inputs = {s: {"fd": MetricArguments(SMOKE.spec("fd"), e, reference, None, lookup),
                  "kad": MetricArguments(SMOKE.spec("kad"), e, reference, None, None)} for s, e in sets.items()}
    values = {s: {"fd": score_metric(SMOKE.spec("fd"), e, reference, 1, 0)["value"], "kad": 1.0} for s, e in sets.items()}
    out = ranking.robustness(inputs, values, resamples=4, seed=0)
    assert calls == ["clip", "clip"]  # once per system, not once per half-sample (2 x 4)
    assert out["pairs"]["a|b"]["fd"]["flip_fraction"] == 0.0
    assert out["kendall_tau"]["fd|kad"] is None  # every system ties under kad
    assert type(out["resampling"]["clips_per_resample"]) is int and out["resampling"]["clips_per_resample"] == 20


def test_clap_half_samples_are_scored_with_their_captions():
    """CLAP needs the captions' embeddings on every half-sample too; without them its flips would
    silently go unmeasured."""
    rng = np.random.default_rng(6)
    text = {i: rng.standard_normal(4) for i in IDS}
    sets = {s: {i: Embedding(rng.standard_normal((1, 4)) + shift * text[i], None) for i in IDS} for s, shift in (("a", 0.3), ("b", 3.0))}
    spec = SMOKE.spec("clap")
    inputs = {s: {"clap": MetricArguments(spec, e, {}, text, None)} for s, e in sets.items()}
    values = {s: {"clap": score_metric(spec, e, {}, 1, 0, text)["value"]} for s, e in sets.items()}
    out = ranking.robustness(inputs, values, resamples=4, seed=0)
    assert out["resampling"]["not_resampled"] == {} and out["pairs"]["a|b"]["clap"]["flip_fraction"] == 0.0


def test_a_further_recipes_measure_keeps_its_metrics_direction_and_its_recipe_in_the_verdict():
    """'clap @ r' is higher-is-better like clap, 'kl @ r' lower-is-better like kl; further
    recipes' measures are ranked on all clips only; the verdict counts the recipes whose
    measures mostly agree with the pair's overall order."""
    rng = np.random.default_rng(2)
    reference = _set(rng, 0.0)
    sets = {"near": _set(rng, 0.1), "far": _set(rng, 1.5)}
    inputs, values = _inputs(sets, reference, metrics=("fd", "kl"))
    for system in sets:  # the same inputs scored again "under another recipe"
        for metric in ("fd", "kl"):
            inputs[system][f"{metric} @ other@1"] = inputs[system][metric]
            values[system][f"{metric} @ other@1"] = values[system][metric]
        inputs[system]["is @ other@1"] = inputs[system]["kl"]
        values[system]["is @ other@1"] = {"near": 1.0, "far": 2.0}[system]  # higher is better: far leads here
    out = ranking.robustness(inputs, values, resamples=4, seed=0)
    assert out["ranks"]["kl @ other@1"] == out["ranks"]["kl"] == {"near": 1, "far": 2}
    assert out["ranks"]["is @ other@1"] == {"near": 2, "far": 1}
    assert out["resampling"]["not_resampled"] == dict.fromkeys(["fd @ other@1", "kl @ other@1", "is @ other@1"],
                                                                ranking.FURTHER_RECIPE_NOT_RESAMPLED)
    assert "flip_fraction" in out["pairs"]["far|near"]["fd"] and "flip_fraction" not in out["pairs"]["far|near"]["fd @ other@1"]
    verdict = pair_verdict(out, "near", "far", main="own@1")
    assert verdict["leader"] == "near" and verdict["holds"] == 4 and verdict["measures"] == 5
    assert verdict["recipes"] == {"own@1": {"holds": 2, "measures": 2}, "other@1": {"holds": 2, "measures": 3}}
    assert verdict["recipes_holding"] == 2 and verdict["text"].endswith("of 2 recipes")
    assert verdict["orders"] == {"fd": 1, "kl": 1, "fd @ other@1": 1, "kl @ other@1": 1, "is @ other@1": -1}  # near against far
    values["near"]["kl @ other@1"] = 99.0  # now 'other' splits 1 of 3 for near: no longer a majority
    verdict = pair_verdict(ranking.robustness(inputs, values, resamples=0, seed=0), "near", "far", main="own@1")
    assert verdict["recipes"]["other@1"] == {"holds": 1, "measures": 3} and verdict["recipes_holding"] == 1


def test_the_runs_own_recipe_comes_first_whatever_the_json_order():
    assert recipe_order({"recipes": {"a_further@1": "x", "zeta@1": "y", "b@1": "z"}}, "zeta@1") == ["zeta@1", "a_further@1", "b@1"]
    assert recipe_order({}, "smoke@2") == ["smoke@2"]  # a ranking.json written before further recipes existed
