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
    assert replicates.check(1, 2, "p.yaml") == 1 and replicates.check(0, 1, "p.yaml") == 0
    with pytest.raises(ConfigError, match=r"p.yaml: --replicate 2 is not a replicate of this run \(eval.seeds = 2: 0 \.\. 1\)$"):
        replicates.check(2, 2, "p.yaml")
    with pytest.raises(ConfigError, match="--replicate -1"):
        replicates.check(-1, 2, "p.yaml")


def test_a_stages_further_replicates_are_read_in_order_up_to_the_first_gap(tmp_path):
    from siren_bench.report.baselines_card import _replicate_logs

    stage = tmp_path / "baselines"
    assert replicates.further(stage) == []
    for k in (1, 2, 3, 10):  # seed10 sorts before seed2 as text; seed4 is missing, so seed10 is not one of this run's
        (stage / "replicates" / f"seed{k}" / "shared_lm").mkdir(parents=True)
        (stage / "replicates" / f"seed{k}" / "shared_lm" / "train_log.jsonl").write_text(f'{{"step": {k}}}\n')
    assert replicates.further(stage) == [stage / "replicates" / f"seed{k}" for k in (1, 2, 3)]
    assert [log[0]["step"] for log in _replicate_logs(stage, "shared_lm")] == [1, 2, 3]
    (stage / "replicates" / "seed2" / "shared_lm" / "train_log.jsonl").unlink()  # a replicate without its log: named, not skipped
    with pytest.raises(FileNotFoundError, match=r"seed2/shared_lm/train_log.jsonl: missing \(seed replicate seed2"):
        _replicate_logs(stage, "shared_lm")


def test_the_combined_interval_adds_the_seed_variance_over_n_to_the_mean_clip_variance():
    values, clip_ses = [1.0, 2.0, 4.0], [0.25, 0.5, 0.5]
    out = combine(values, clip_ses)
    n, sd = 3, np.std(values, ddof=1)
    clip_var = np.mean(np.square(clip_ses))  # not divided by n: the references are shared
    se = np.sqrt(sd**2 / n + clip_var)
    df = se**4 / ((sd**2 / n) ** 2 / (n - 1))  # Welch-Satterthwaite, the clip part taken as known
    half = student_t.ppf(0.975, df) * se
    assert out["mean"] == pytest.approx(7 / 3) and out["sd"] == pytest.approx(sd) and out["n"] == 3
    assert out["clip_variance"] == pytest.approx(clip_var) and out["seed_variance"] == pytest.approx(sd**2 / n)
    assert out["se"] == pytest.approx(se) and out["df"] == pytest.approx(df)
    assert (out["ci_low"], out["ci_high"]) == pytest.approx((7 / 3 - half, 7 / 3 + half)) and out["ci_floored"] is False
    assert n - 1 < out["df"] < np.inf  # wider than the seeds alone would make it, narrower than t(2) on everything
    # no spread between seeds: the clip part alone, at the normal quantile
    same = combine([2.0, 2.0], [0.5, 0.5])
    assert same["df"] is None and (same["ci_low"], same["ci_high"]) == pytest.approx((2.0 - 1.96 * 0.5, 2.0 + 1.96 * 0.5), abs=1e-3)
    # a replicate without a clip interval: the seed part alone, t with n - 1 df
    bare = combine([1.0, 3.0], [0.5, None])
    assert bare["clip_variance"] is None and bare["df"] == pytest.approx(1.0)
    assert bare["ci_high"] - bare["mean"] == pytest.approx(student_t.ppf(0.975, 1) * np.sqrt(2.0 / 2))
    with pytest.raises(ValueError, match="at least 2"):
        combine([1.0], [None])


def test_the_combined_interval_is_floored_at_the_least_value_the_quantity_can_take():
    spread = combine([1.1, 1.3, 2.0], [0.2, 0.2, 0.2], floor=1.0)  # IS: never below 1
    plain = combine([1.1, 1.3, 2.0], [0.2, 0.2, 0.2])
    assert plain["ci_low"] < 1.0 and spread["ci_low"] == 1.0 and spread["ci_floored"] is True
    assert spread["ci_high"] == plain["ci_high"]
    above = combine([5.0, 5.1, 5.2], [0.01, 0.01, 0.01], floor=1.0)
    at_floor = combine([1.0, 1.0], [0.0, 0.0], floor=1.0)  # the interval [1, 1] reaches the floor, is not cut by it
    assert (at_floor["ci_low"], at_floor["ci_high"], at_floor["ci_floored"]) == (1.0, 1.0, False)
    assert above["ci_floored"] is False and above["ci_low"] == pytest.approx(2 * 5.1 - above["ci_high"]) and above["ci_low"] > 1.0


def test_a_replicates_clip_se_is_the_one_its_interval_recorded():
    jackknifed = {"metric": "fad", "value": 5.0, "ci_low": 4.0, "ci_high": 6.2, "jackknife_se": 0.52}
    bootstrapped = {"metric": "kl", "value": 1.0, "ci_low": 0.5, "ci_high": 1.4, "bootstrap_std": 0.23}
    assert replicates.clip_se(jackknifed) == 0.52  # not (6.2 - 4.0) / (2 * 1.96) = 0.561
    assert replicates.clip_se(bootstrapped) == 0.23
    assert replicates.clip_se({"metric": "is", "value": 1.5, "ci_low": None}) is None
    with pytest.raises(ValueError, match="fd has an interval but records no standard error"):
        replicates.clip_se({"metric": "fd", "value": 1.0, "ci_low": 0.5, "ci_high": 1.5})
    with pytest.raises(ValueError, match=r"^a result has an interval but records no standard error \(jackknife_se or "
                                         r"bootstrap_std\), so it cannot be combined over seeds$"):
        replicates.clip_se({"value": 1.0, "ci_low": 0.5, "ci_high": 1.5})


def test_over_seeds_combines_each_metric_of_the_runs_with_their_recorded_se_and_floor():
    runs = [{"is": {"value": v, "ci_low": v - 1, "ci_high": v + 1, "jackknife_se": 0.4, "ci_floor": 1.0},
             "clap": {"value": -v, "ci_low": None}}
            for v in (1.2, 2.0, 4.0)]
    spread = over_seeds([0, 1000, 2000], runs)
    assert spread["is"]["values"] == [1.2, 2.0, 4.0] and spread["is"]["seeds"] == [0, 1000, 2000]
    assert spread["is"] == {**combine([1.2, 2.0, 4.0], [0.4, 0.4, 0.4], floor=1.0),
                            "seeds": [0, 1000, 2000], "values": [1.2, 2.0, 4.0]}
    assert spread["is"]["ci_floored"] is True and spread["is"]["ci_low"] == 1.0
    assert spread["clap"]["mean"] == pytest.approx(-2.4) and spread["clap"]["clip_variance"] is None


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



def test_a_counting_measure_opposed_by_one_that_keeps_the_other_sign_under_every_seed_is_inconclusive():
    """The committed report's Siren against AR + NAR: KL lower under every seed and significant,
    the distance to the reference mean higher under every seed but not significant. A re-run with
    shifted seeds made the distance significant and KL not: "agrees" became "contradicts". Read as
    what it is, steadily opposed measures, both runs say inconclusive."""
    kl_for = ("KL", "lower", _measure([-1.8, -3.9, -3.6], -5.6, -0.6))
    distance_against = ("distance to the reference mean", "lower", _measure([7.9, 41.7, 9.9], -18.6, 58.3))
    distance_wobbles = ("distance to the reference mean", "lower", _measure([7.9, -41.7, 9.9], -58.6, 58.3))
    opposed = comparison_verdict("ar_nar", [kl_for, distance_against])
    assert opposed.outcome == "inconclusive" and "keeps the opposite sign under every seed" in opposed.reason
    assert comparison_verdict("ar_nar", [kl_for, distance_wobbles]).outcome == "agrees"  # one seed's sign differs: no steady opposition
    rerun = comparison_verdict("ar_nar", [("KL", "lower", _measure([-3.5, -2.7, -0.6], -5.3, 0.7)),
                                          ("distance to the reference mean", "lower", _measure([32.9, 12.9, 41.9], 0.7, 57.8))])
    assert rerun.outcome == "inconclusive"
    # a steady measure on the counting side does not block it
    assert comparison_verdict("ar_nar", [kl_for, ("CLAP", "higher", _measure([0.1, 0.2, 0.1], -0.1, 0.4))]).outcome == "agrees"


def test_a_trained_codec_is_fitted_per_seed_and_the_rvq_diagnostics_measure_every_fit(tmp_path):
    """eval.seeds = 2 on the ci profile: the codec stage fits a second mel codec from codec.seed +
    1000 beside the first (which every later stage tokenizes with), and the diagnose stage measures
    fidelity, orthogonality and the class probe on both; the RVQ verdicts rest on the two."""
    import json

    import torch
    import yaml

    from siren_bench.codecs import load_stage_codec
    from siren_bench.report.codec_card import _codec_replicates, diagnostic_verdicts
    from siren_bench.stages import codec as codec_stage
    from siren_bench.stages import diagnose, prepare, tokenize
    from tests.test_config import _compose

    params = _compose("profile=ci", "eval.seeds=2", f"run.artifacts_dir={tmp_path / 'artifacts'}", f"run.cache_dir={tmp_path / 'cache'}",
                      "codec.text_probe=false", "codec.aisfx_probe=false", "data.n_clips=32", "codec.codebook_size=32",
                      "codec.kmeans_iterations=5", "codec.griffin_lim_iters=2")
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    for stage in (prepare, codec_stage, tokenize, diagnose):
        stage.run(path)
    run = tmp_path / "artifacts" / "ci"
    first, second = load_stage_codec(run / "codec"), load_stage_codec(run / "codec" / "replicates" / "seed1")
    assert first.info.weights_sha256 != second.info.weights_sha256
    assert not torch.equal(first.model.codebooks, second.model.codebooks)
    seeds = json.loads((run / "codec" / "provenance.json").read_text())["seeds"]
    assert seeds == {"codec.seed": params["codec"]["seed"], "replicate 1 codec.seed": params["codec"]["seed"] + 1000}
    assert json.loads((run / "diagnose" / "diagnose.json").read_text())["codec_replicates"] == 2
    further = _codec_replicates(run / "diagnose")
    assert len(further) == 1 and further[0][2] is not None  # fidelity, orthogonality and the class probe of the second fit
    measured = [json.loads((run / "diagnose" / name).read_text()) for name in ("fidelity.json", "orthogonality.json", "semantics.json")]
    assert further[0][0] != measured[0]  # another codec: other numbers
    verdicts = diagnostic_verdicts(*measured, further)
    assert all("Over 2 codecs fitted from different seeds" in v.reason for v in verdicts)
    assert "mean over 2 seeds" in verdicts[1].effect
