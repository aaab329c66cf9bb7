"""Verdicts on the paper's claims: read off the interval against the claim's threshold, in both
directions, and never "agrees" when the interval straddles it."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from siren_bench.report.baselines_card import interference_verdict
from siren_bench.report.codec_card import diagnostic_verdicts
from siren_bench.report.scores import comparison_verdict
from siren_bench.report.sweep_card import sweep_verdicts
from siren_bench.report.verdicts import judge


@pytest.mark.parametrize("value, low, high, below, outcome", [
    (0.5, 0.4, 0.6, False, "agrees"), (-0.5, -0.6, -0.4, False, "contradicts"), (0.1, -0.1, 0.3, False, "inconclusive"),
    (0.5, 0.4, 0.6, True, "contradicts"), (-0.5, -0.6, -0.4, True, "agrees"), (0.0, 0.0, 0.2, False, "inconclusive"),
])
def test_the_outcome_is_the_side_of_the_threshold_the_whole_interval_is_on(value, low, high, below, outcome):
    verdict = judge("x.", value, low, high, below=below)
    assert verdict.outcome == outcome
    assert ("cannot tell" in verdict.reason) == (outcome == "inconclusive")


def test_a_threshold_other_than_zero_and_an_interval_without_its_value():
    assert judge("x.", 0.25, 0.2, 0.28, threshold=0.3).outcome == "contradicts"
    assert judge("x.", 0.35, 0.31, 0.4, threshold=0.3).outcome == "agrees"
    with pytest.raises(ValueError, match="does not contain"):
        judge("x.", 1.0, 0.0, 0.5)


def _summary(mean: float, half: float, n: int = 40) -> dict:
    """A per-clip summary (diagnostics/fidelity.py summarize) whose 95 % CI is mean ± half."""
    return {"mean": mean, "std": half / 1.96 * np.sqrt(n), "n": n, "ci95_low": mean - half, "ci95_high": mean + half}


def _fidelity(first: float, gain: tuple[float, float]) -> dict:
    return {"codebooks": [1, 2], "metrics": {"mel_distance": [{"mean": first}, {"mean": first - gain[0]}]},
            "depth_gain_mel_distance": _summary(*gain)}


ORTHO = {"random_direction_mean_abs": 0.1, "mean_abs_off_diagonal": 0.12, "std_abs_off_diagonal": 0.08, "n_frames": 1000, "dim": 64}


def test_a_codec_without_depth_contradicts_the_fidelity_claim_and_one_with_depth_agrees():
    flat = diagnostic_verdicts(_fidelity(0.416, (0.004, 0.003)), ORTHO, None)
    steep = diagnostic_verdicts(_fidelity(1.0, (0.45, 0.05)), ORTHO, None)
    assert flat[0].outcome == "contradicts" and "1.0%" in flat[0].effect
    assert steep[0].outcome == "agrees"
    assert flat[1].outcome == "agrees"  # 1.2x random directions: near-orthogonal
    assert flat[2].outcome == "inconclusive" and "did not run" in flat[2].reason


def test_fidelity_rising_with_every_codebook_is_judged_on_its_least_certain_step():
    def steps(*intervals):
        fidelity = _fidelity(1.0, (0.2, 0.02)) | {"codebooks": list(range(1, len(intervals) + 2))}
        fidelity["metrics"]["mel_distance"] = [{"mean": 1.0}] * (len(intervals) + 1)
        return fidelity | {"step_gains_mel_distance": [_summary(m, half) for m, half in intervals]}

    every = diagnostic_verdicts(steps((0.1, 0.02), (0.02, 0.01)), ORTHO, None)
    assert every[0].outcome == "agrees" and "from 2 to 3 codebooks" in every[0].effect
    assert every[1].outcome == "contradicts" and "20.0%" in every[1].effect  # rising, but not by 30 %
    flat_step = diagnostic_verdicts(steps((0.1, 0.02), (0.001, 0.005), (0.02, 0.01)), ORTHO, None)[0]
    assert flat_step.outcome == "inconclusive" and "from 2 to 3 codebooks" in flat_step.effect
    worse = diagnostic_verdicts(steps((0.1, 0.02), (-0.02, 0.01)), ORTHO, None)[0]
    assert worse.outcome == "contradicts"


def test_semantic_richness_rising_with_depth_contradicts_the_claim():
    layers = [{"map_mean": m, "map_per_seed": list(m + np.array([0.0, 0.01, -0.01]))} for m in (0.36, 0.40, 0.42)]
    verdict = diagnostic_verdicts(_fidelity(1.0, (0.45, 0.05)), ORTHO, {"alone": layers})[2]
    assert verdict.outcome == "contradicts" and "best single layer of the first codec is layer 3" in verdict.claim


def test_judged_over_seeds_a_reading_counts_only_when_every_seed_lies_on_its_side():
    from siren_bench import replicates
    from siren_bench.report.verdicts import judge_over_seeds

    one = judge_over_seeds("x.", [0.5], [0.1])
    assert one.outcome == "agrees" and "[95 % CI 0.304, 0.696]" in one.effect  # value ± 1.96 se
    same = judge_over_seeds("x.", [0.5, 0.6, 0.55], [0.01, 0.01, 0.01])
    spread = replicates.combine([0.5, 0.6, 0.55], [0.01, 0.01, 0.01])
    assert same.outcome == "agrees" and "mean over 3 seeds (0.5, 0.6, 0.55)" in same.effect
    assert f"[95 % CI {spread['ci_low']:.3g}, {spread['ci_high']:.3g}]" in same.effect
    # the mean's interval excludes 0, but one seed's estimate lies below it: the reading depends on the seed
    split = judge_over_seeds("x.", [0.9, 0.8, -0.01, 0.85, 0.95, 0.9, 0.88, 0.92], [0.001] * 8)
    assert split.outcome == "inconclusive" and "both sides of 0" in split.reason
    below = judge_over_seeds("x.", [1.2, 1.3, 1.25], [0.01] * 3, threshold=2.0, below=True, fmt="{:.2f}x")
    assert below.outcome == "agrees" and "(1.20x, 1.30x, 1.25x)" in below.effect


def test_the_rvq_verdicts_rest_on_every_codec_seed_replicate():
    def codec(gain: float, ratio: float, top: float):
        layers = [{"map_mean": m, "map_per_seed": list(m + np.array([0.0, 0.01, -0.01]))} for m in (top, 0.30)]
        ortho = ORTHO | {"mean_abs_off_diagonal": ratio * ORTHO["random_direction_mean_abs"]}
        return _fidelity(1.0, (gain, 0.01)), ortho, {"alone": layers}

    first, *further = [codec(0.20, 1.2, 0.45), codec(0.21, 1.3, 0.44), codec(0.19, 1.25, 0.46)]
    verdicts = diagnostic_verdicts(*first, further)
    assert [v.outcome for v in verdicts] == ["contradicts", "agrees", "agrees"]
    assert "mean over 3 seeds (20.0%, 21.0%, 19.0%)" in verdicts[0].effect and "Over 3 codecs" in verdicts[0].reason
    # one codec seed of eight whose first layer is a hair below its last: the reading depends on the seed
    mixed = diagnostic_verdicts(*first, [codec(0.2, 1.2, 0.45)] * 6 + [codec(0.2, 1.2, 0.295)])
    assert mixed[2].outcome == "inconclusive" and "depends on the seed" in mixed[2].reason


def test_interference_needs_two_late_probes_and_reads_a_positive_cosine_as_contradicting():
    points = [(s, {"mean": m}) for s, m in enumerate([0.0, 0.3, 0.31, 0.29, 0.3])]
    assert interference_verdict(points).outcome == "contradicts"
    negative = [(s, {"mean": m}) for s, m in enumerate([0.0, -0.3, -0.31, -0.29])]
    assert interference_verdict(negative).outcome == "agrees"
    assert interference_verdict(points[:2]).outcome == "inconclusive"


def _paired(value: float, p_holm: float) -> dict:
    return {"value": value, "ci_low": value - 1, "ci_high": value + 1, "p_value": p_holm, "p_floor": 1e-4, "p_holm": p_holm}


def test_paired_verdicts_need_a_significant_measure_and_no_significant_one_against():
    assert comparison_verdict("shared_lm", [("CLAP", "higher", _paired(0.1, 0.01))]).outcome == "agrees"
    assert comparison_verdict("shared_lm", [("KL", "lower", _paired(0.1, 0.01))]).outcome == "contradicts"
    mixed = comparison_verdict("shared_lm", [("CLAP", "higher", _paired(0.1, 0.01)), ("KL", "lower", _paired(0.1, 0.01))])
    assert mixed.outcome == "inconclusive" and "disagree" in mixed.reason
    assert comparison_verdict("shared_lm", [("CLAP", "higher", _paired(0.1, 0.2))]).outcome == "inconclusive"
    # for the aligned model the sign flips: Siren minus aligned below 0 on CLAP means alignment helped
    assert comparison_verdict("siren_aligned", [("CLAP", "higher", _paired(-0.1, 0.01))]).outcome == "agrees"


def _fad(value, se):
    return {"fad": {"value": value, "ci_low": value - 2 * se, "ci_high": value + 2 * se, "jackknife_se": se}}


def _swept(*runs):
    """A sweep point: the metrics under each seed replicate, (value, se) per replicate."""
    return {"runs": [_fad(value, se) for value, se in runs]}


def test_the_sweep_verdicts_combine_the_two_depths_standard_errors():
    points = {"shared_lm": {2: _swept((100, 10)), 8: _swept((200, 10))}, "siren": {2: _swept((100, 10)), 8: _swept((120, 10))},
              "codec_resynthesis": {2: _swept((50, 5)), 8: _swept((50, 5))}}
    dilemma, relief = sweep_verdicts(points)
    assert dilemma.outcome == "agrees" and "+100" in dilemma.effect and "does not show" in dilemma.reason
    assert "One training seed per depth" in dilemma.reason
    assert relief.outcome == "agrees"  # 100 - 20 = 80, se sqrt(4 * 100) = 20
    points["siren"][8] = _swept((200, 10))
    assert sweep_verdicts(points)[1].outcome == "inconclusive"


def test_the_sweep_verdicts_pair_the_depths_by_seed_replicate_and_need_one_sign_under_every_seed():
    points = {"shared_lm": {2: _swept((100, 5), (110, 5), (90, 5)), 4: _swept((0, 5), (0, 5), (0, 5)),
                            8: _swept((200, 5), (190, 5), (215, 5))},
              "siren": {2: _swept((100, 5), (100, 5), (100, 5)), 8: _swept((110, 5), (105, 5), (100, 5))}}
    dilemma, relief = sweep_verdicts(points)
    # replicate k's rise is its full-depth value minus its smallest-depth one (the middle depth is not used)
    assert dilemma.outcome == "agrees" and "mean over 3 seeds (+100, +80, +125)" in dilemma.effect
    assert "replicate k at the full depth minus the sweep's replicate k" in dilemma.reason
    assert relief.outcome == "agrees" and "(+90, +75, +125)" in relief.effect
    points["shared_lm"][8] = _swept((200, 5), (190, 5), (80, 5))  # one seed's shared LM gets better with depth
    dilemma, relief = sweep_verdicts(points)
    assert dilemma.outcome == "inconclusive" and "(+100, +80, -10)" in dilemma.effect
    assert "lie on both sides of 0" in dilemma.reason or "interval contains 0" in dilemma.reason


def test_interference_over_seed_replicates_takes_each_runs_late_mean_and_a_t_interval_over_seeds():
    def run(values):
        return [(s, {"mean": m}) for s, m in enumerate(values)]

    runs = [run([0.0, 0.1, 0.3, 0.5]), run([0.0, 0.2, 0.2, 0.4]), run([0.0, 0.1, 0.25, 0.35])]
    late = np.array([0.4, 0.3, 0.3])  # each run's second-half mean
    verdict = interference_verdict(runs[0], runs[1:])
    half = stats.t.ppf(0.975, 2) * late.std(ddof=1) / np.sqrt(3)
    assert verdict.outcome == "contradicts" and "over 3 seeds (+0.400, +0.300, +0.300)" in verdict.effect
    assert f"{late.mean():+.3f} [95 % CI {late.mean() - half:+.3f}, {late.mean() + half:+.3f}]" in verdict.effect
    spread = interference_verdict(run([0.0, 0.0, 0.4, 0.4]), [run([0.0, 0.0, -0.4, -0.4])])
    assert spread.outcome == "inconclusive"  # two seeds of opposite sign: the interval holds 0


def test_the_sweep_joins_the_main_runs_replicates_at_the_full_depth_and_refuses_a_different_count(tmp_path):
    from siren_bench.artifacts import RunArtifacts
    from siren_bench.io import write_json_atomic
    from siren_bench.replicates import over_seeds
    from siren_bench.report.sweep_card import _points

    seeds = [0, 1000, 2000]
    swept = [_fad(100, 5), _fad(110, 5), _fad(90, 5)]
    entry = {"val_loss": 4.0, "metrics": swept[0], "over_seeds": over_seeds(seeds, swept),
             "replicates": [{"seed": s, "val_loss": 4.0, "metrics": m} for s, m in zip(seeds[1:], swept[1:])]}
    write_json_atomic(tmp_path / "sweep" / "sweep.json", {"depths": [2], "full_depth": 8, "seeds": seeds,
                                                          "systems": {"shared_lm": {"2": entry}}})
    main = [_fad(200, 5), _fad(190, 5), _fad(215, 5)]
    write_json_atomic(tmp_path / "score" / "summary.json",
                      {"systems": {"shared_lm": {"metrics": main[0], "over_seeds": over_seeds(seeds, main)}}})
    for k in (1, 2):
        write_json_atomic(tmp_path / "score" / "shared_lm" / f"seed{k}" / "results.json", {"metrics": main[k]})
    store = RunArtifacts(tmp_path)
    points = _points(store.json("sweep", "summary"), store)["shared_lm"]
    assert [r["fad"]["value"] for r in points[8]["runs"]] == [200, 190, 215]
    assert points[2]["metrics"]["fad"]["value"] == 100 and points[8]["metrics"]["fad"]["value"] == 605 / 3  # the mean over seeds
    assert points[8]["metrics"]["fad"]["seed0_value"] == 200
    summary = store.json("sweep", "summary")
    summary["systems"]["shared_lm"]["1"] = {"val_loss": 4.0, "metrics": _fad(50, 5)}  # an ablation's one-seed reference: not a point
    assert set(_points(summary, store)["shared_lm"]) == {2, 8}
    del summary["systems"]["shared_lm"]["2"]["replicates"]  # the sweep ran with one seed, the main run with three
    with pytest.raises(ValueError, match=r"shared_lm has a different number of seed replicates per depth \(\{2: 1, 8: 3\}"):
        _points(summary, store)


# --- added after the first mutmut run over report/verdicts.py (2026-12-06) ----------------------------

def _over(values, low, high, p_holm=0.5):
    """A paired measure over seed replicates: each seed's difference and the combined interval."""
    o = {"values": values, "mean": float(np.mean(values)), "ci_low": low, "ci_high": high, "n": len(values)}
    return {"value": values[0], "ci_low": low, "ci_high": high, "p_value": p_holm, "p_floor": 2e-4, "p_holm": p_holm,
            "over_seeds": o}


def test_every_verdict_keeps_its_claim_effect_and_reason_and_renders_them():
    from siren_bench.report.verdicts import Verdict, judge_over_seeds, paired_verdict, render, unmeasured

    made = [judge("c.", 0.5, 0.4, 0.6), judge("c.", -0.5, -0.6, -0.4), judge("c.", 0.1, -0.1, 0.3),
            judge_over_seeds("c.", [0.5, -0.1, 0.6], [0.01] * 3), judge_over_seeds("c.", [0.5], [0.01]),
            paired_verdict("c.", "a minus b", [("CLAP", "higher", _paired(0.1, 0.01))]),
            paired_verdict("c.", "a minus b", [("CLAP", "higher", _paired(-0.1, 0.01))]),
            paired_verdict("c.", "a minus b", [("CLAP", "higher", _paired(0.1, 0.5))]),
            unmeasured("c.", "It needs weights.")]
    assert all(v.claim == "c." and v.effect for v in made)
    assert judge("c.", 0.5, 0.4, 0.6).effect == "effect 0.5 [95 % CI 0.4, 0.6]" and judge("c.", 0.5, 0.4, 0.6).reason == ""
    assert judge_over_seeds("c.", [0.5], [0.01]).effect == "effect 0.5 [95 % CI 0.48, 0.52]"  # one seed: no "mean over"
    assert made[-1] == Verdict("c.", "inconclusive", "not measured", "It needs weights.")
    assert made[-1].sentence() == "- Paper: c. This run **inconclusive**: not measured. It needs weights."
    assert Verdict("c.", "agrees", "e").sentence() == "- Paper: c. This run **agrees**: e."
    assert render([made[0], made[-1]]) == ("What these numbers say about the paper's claims:\n\n" + made[0].sentence() + "\n"
                                           + made[-1].sentence() + "\n")


def test_an_interval_ending_exactly_at_the_threshold_is_inconclusive_and_so_are_seeds_on_both_sides_of_it():
    assert judge("c.", -0.5, -1.0, 0.0).outcome == "inconclusive"
    assert judge("c.", 0.5, 0.0, 1.0).outcome == "inconclusive"
    from siren_bench.report.verdicts import judge_over_seeds

    split = judge_over_seeds("c.", [0.5] * 19 + [0.29], [0.001] * 20, threshold=0.3)  # the interval excludes 0.3; one seed is below
    assert split.outcome == "inconclusive" and "lie on both sides of 0.3, so the reading depends on the seed" in split.reason


def test_a_paired_measure_counts_only_off_zero_under_every_seed_and_below_the_holm_level():
    from siren_bench.report.verdicts import paired_verdict

    def outcome(*measures, flip=False):
        return paired_verdict("c.", "a minus b", list(measures), flip=flip)

    assert outcome(("CLAP", "higher", _over([0.2, 0.1, 0.3], 0.05, 0.35))).outcome == "agrees"
    assert outcome(("CLAP", "higher", _over([0.2, 0.0, 0.3], 0.05, 0.35))).outcome == "inconclusive"  # one seed at exactly 0
    assert outcome(("KL", "lower", _over([-0.2, 0.0, -0.3], -0.35, -0.05))).outcome == "inconclusive"
    assert outcome(("CLAP", "higher", _over([0.2, 0.1, 0.3], 0.0, 0.35))).outcome == "inconclusive"  # interval ends at 0
    assert outcome(("KL", "lower", _over([-0.2, -0.1, -0.3], -0.35, 0.0))).outcome == "inconclusive"
    assert outcome(("CLAP", "higher", _paired(0.1, 0.05))).outcome == "inconclusive"  # p (Holm) must be below 0.05
    assert outcome(("CLAP", "higher", _paired(0.1, 0.049))).outcome == "agrees"


def test_a_paired_verdict_says_how_many_seeds_it_rests_on_and_why_it_is_inconclusive():
    from siren_bench.report.verdicts import paired_verdict

    one = paired_verdict("c.", "a minus b", [("CLAP", "higher", _paired(0.1, 0.5)), ("KL", "lower", _paired(0.2, 0.0123))])
    assert one.effect == ("a minus b: CLAP +0.1 [-0.9, +1.1] (p Holm 0.500); KL +0.2 [-0.8, +1.2] (p Holm 0.012)")
    assert one.outcome == "contradicts" and one.reason == "One training seed per model: retraining may move these."
    none = paired_verdict("c.", "a minus b", [("CLAP", "higher", _paired(0.1, 0.5))], note=" More.")
    assert none.reason == "No paired measure differs at p (Holm) < 0.05. One training seed per model: retraining may move these. More."
    two = paired_verdict("c.", "a minus b", [("CLAP", "higher", _over([0.2, -0.1], -1.0, 1.0))])
    assert two.reason == ("No paired measure keeps one sign under every seed with an interval that excludes zero. Over 2 seed "
                          "replicates; a measure counts only when its sign holds under every seed and its interval excludes zero.")
    assert two.effect == "a minus b: CLAP +0.05 [-1, +1] over 2 seeds (+0.2, -0.1)"
    mixed = paired_verdict("c.", "a minus b", [("CLAP", "higher", _paired(0.1, 0.01)), ("KL", "lower", _paired(0.1, 0.01))])
    assert mixed.reason.startswith("The measures that count disagree in direction. One training seed")
    opposed = paired_verdict("c.", "a minus b", [("CLAP", "higher", _over([0.2, 0.1, 0.3], 0.05, 0.35)),
                                                 ("KL", "lower", _over([0.2, 0.1, 0.3], -0.1, 0.5))])
    assert opposed.outcome == "inconclusive" and opposed.reason.startswith(
        "Another measure keeps the opposite sign under every seed, though its interval includes zero: the measures disagree, "
        "and which of them reaches its threshold depends on the seeds. Over 3 seed replicates")
    against = paired_verdict("c.", "a minus b", [("CLAP", "higher", _paired(-0.1, 0.01))], note=" More.")
    assert (against.outcome, against.effect, against.reason) == (
        "contradicts", "a minus b: CLAP -0.1 [-1.1, +0.9] (p Holm 0.010)", "One training seed per model: retraining may move these. More.")


def test_verdict_texts_name_the_threshold_and_the_holm_p_and_keep_their_reason():
    from siren_bench.report.verdicts import judge_over_seeds, paired_verdict

    assert judge("c.", 1e-5, -1e-5, 3e-5).effect == "effect 1e-05 [95 % CI -1e-05, 3e-05]"
    assert judge("c.", 0.35, 0.25, 0.4, threshold=0.3).reason == "The interval contains 0.3, so the data cannot tell either way."
    assert judge_over_seeds("c.", [1e-5], [1e-6]).effect.startswith("effect 1e-05 [95 % CI ")
    assert judge_over_seeds("c.", [0.5, 0.6, 0.4], [0.001] * 3).reason == ""  # agrees, no caveat given
    wide = judge_over_seeds("c.", [0.45, 0.6, 0.2], [0.001] * 3, threshold=0.3)  # inconclusive by its interval already
    assert wide.reason == "The interval contains 0.3, so the data cannot tell either way."
    split = judge_over_seeds("c.", [0.5] * 19 + [-0.01], [0.001] * 20, fmt="{:+.3g}")
    assert (split.claim, split.outcome) == ("c.", "inconclusive") and split.effect.startswith("effect, mean over 20 seeds")
    assert split.reason == "The seeds' estimates lie on both sides of 0, so the reading depends on the seed."
    holm = dict(_paired(0.1, 0.04), p_value=0.01)
    assert paired_verdict("c.", "a minus b", [("CLAP", "higher", holm)]).effect == "a minus b: CLAP +0.1 [-0.9, +1.1] (p Holm 0.040)"


def test_an_ablation_verdict_agrees_when_the_ablated_model_is_worse_unless_the_claim_favours_it():
    """Ablated minus Siren: for "causal conditioning improves Siren" a lower CLAP (a higher KL) of the
    model without it agrees; for a claim that favours the ablated design (two codebooks per expert
    ablated from a one-per-expert Siren) the same numbers contradict. Over seeds and with one seed."""
    from siren_bench.report.ablation_card import ablation_verdict
    from siren_bench.report.verdicts import paired_verdict

    worse = {"clap_cosine": _over([-0.2, -0.1, -0.3], -0.35, -0.05), "kl": _over([0.4, 0.2, 0.3], 0.1, 0.5)}
    entry = {"claim": "x improves Siren", "label": "without x", "depth": 8, "claim_favours_variant": False}
    verdict = ablation_verdict(entry, worse)
    assert (verdict.claim, verdict.outcome) == ("x improves Siren.", "agrees") and verdict.effect.startswith("without x minus Siren at depth 8: CLAP")
    assert ablation_verdict(entry | {"claim_favours_variant": True}, worse).outcome == "contradicts"
    one_seed = {"clap_cosine": _paired(-0.1, 0.01)}
    assert ablation_verdict(entry, one_seed).outcome == "agrees"
    assert ablation_verdict(entry | {"claim_favours_variant": True}, one_seed).outcome == "contradicts"
    assert paired_verdict("c.", "a minus b", [("CLAP", "higher", _over([0.2, 0.1, 0.3], 0.05, 0.35))], flip=True).outcome == "contradicts"
