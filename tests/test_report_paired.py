"""Paired comparisons in the report: differences clip by clip, refused on different clip sets."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from siren_bench.artifacts import RunArtifacts
from siren_bench.report.paired import paired_differences
from siren_bench.report.scores import paired_section


def _system(score, name: str, clips: list[str], clap: np.ndarray) -> None:
    (score / name).mkdir(parents=True)
    (score / name / "results.json").write_text(json.dumps({"recipe": {"id": "smoke@1"}}))
    pd.DataFrame({"clip_id": clips, "clap_cosine": clap, "kl": np.ones(len(clips))}).to_csv(score / name / "per_clip.csv", index=False)


def test_siren_is_compared_with_every_other_model_clip_by_clip(tmp_path):
    score = tmp_path / "score"
    clips = [f"c{i:02d}" for i in range(40)]
    base = np.random.default_rng(0).normal(scale=0.2, size=40)
    _system(score, "siren", clips, base + 0.05)
    _system(score, "delay_lm", clips[::-1], (base)[::-1])  # same clips, other file order
    (score / "summary.json").write_text(json.dumps({"systems": {"siren": {}, "delay_lm": {}, "codec_resynthesis": {}}}))
    section = paired_section(RunArtifacts(tmp_path), tmp_path / "out")
    clap = section.results["delay_lm"]["clap_cosine"]
    assert clap["value"] == pytest.approx(0.05) and clap["ci_low"] == pytest.approx(0.05) and clap["p_value"] == 0.0
    assert clap["n_boot"] == 10_000 and clap["p_floor"] == 2 / 10_000
    assert "| < 0.0002 |" in section.markdown and "0.000 |" not in section.markdown
    assert clap["p_holm"] == pytest.approx(2 * 0.0002) and "2 p-values of this table adjusted together" in section.markdown
    assert section.results["delay_lm"]["kl"]["value"] == 0.0 and set(section.results) == {"delay_lm", "verdicts"}
    _system(score, "ar_nar", clips[:-1] + ["other"], base)
    with pytest.raises(ValueError, match="different clips"):
        paired_differences(score, "siren", "ar_nar")


def test_holm_adjusts_one_family_step_down_in_input_order():
    from siren_bench.metrics.bootstrap import holm

    # sorted: 0.005 x 4 = 0.02, 0.01 x 3 = 0.03, 0.03 x 2 = 0.06, 0.04 x 1 = 0.04 -> kept non-decreasing: 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.6]) == [1.0, 1.0]  # capped at 1
    assert holm([0.2]) == [0.2] and holm([]) == []
    assert holm([0.01, 0.01]) == [0.02, 0.02]
    with pytest.raises(ValueError, match="p-values in"):
        holm([0.5, 1.5])


def test_p_values_below_the_resample_resolution_print_as_a_bound(tmp_path):
    from siren_bench.report.paired import adjust_holm, p_text

    family = [{"p_value": 0.0, "p_floor": 0.01}, {"p_value": 0.02, "p_floor": 0.01}, {"p_value": 0.4, "p_floor": 0.01}]
    note = adjust_holm(family)
    assert [p_text(p) for p in family] == ["< 0.01", "0.020", "0.400"]
    assert p_text({"p_value": 0.0004, "p_floor": 0.0002}) == "0.0004"
    # the p of 0 enters as 0.01: 0.01 x 3 = 0.03, 0.02 x 2 = 0.04, 0.4
    assert [p["p_holm"] for p in family] == pytest.approx([0.03, 0.04, 0.4])
    assert "3 p-values of this table adjusted together" in note


# --- added after the first mutmut run over the scoring code (2026-12-05) ---------------------------

def test_a_p_value_at_the_resolution_prints_as_itself_and_an_empty_table_gets_no_note():
    from siren_bench.report.paired import adjust_holm, p_text

    assert p_text({"p_value": 0.01, "p_floor": 0.01}) == "0.010"  # 2/B itself was observed: not "< 0.01"
    assert p_text({"p_value": 0.0099, "p_floor": 0.01}) == "< 0.01"
    assert adjust_holm([]) == ""


def test_paired_bootstrap_is_the_recipes_seeded_one_on_the_columns_both_systems_have(tmp_path):
    from siren_bench.metrics.bootstrap import paired_difference
    from siren_bench.recipes import get_recipe
    from siren_bench.report.paired import PAIRED_RESAMPLES, paired_between

    score = tmp_path / "score"
    clips = [f"c{i:02d}" for i in range(30)]
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=30), rng.normal(size=30)
    _system(score, "one", clips, a)
    _system(score, "two", clips, b)
    per_clip = score / "two" / "per_clip.csv"
    pd.read_csv(per_clip).drop(columns=["kl"]).to_csv(per_clip, index=False)  # "two" has no KL column
    result = paired_between(score / "one", score / "two")
    assert set(result) == {"clap_cosine"}
    assert result["clap_cosine"] == paired_difference(a, b, PAIRED_RESAMPLES, get_recipe("smoke@1").bootstrap_seed)
    assert paired_between(score / "one", score / "two") == result  # seeded: the same p and interval each time
    assert set(paired_between(score / "two", score / "one")) == {"clap_cosine"}  # whichever side lacks the column


def test_replicate_k_of_one_system_is_paired_with_replicate_k_of_the_other_and_combined_over_seeds(tmp_path):
    """paired_over_replicates: replicate 0's paired difference, plus per column `over_seeds` with each
    replicate's own difference (replicate k against replicate k, not against replicate 0) and their
    combination; a single pair gets no `over_seeds`; two recipes are refused, naming both folders."""
    from siren_bench import replicates
    from siren_bench.report.paired import paired_between, paired_over_replicates

    score = tmp_path / "score"
    clips = [f"c{i:02d}" for i in range(30)]
    rng = np.random.default_rng(3)
    shifts = [0.0, 0.2, -0.5]  # replicate k of "a" sits `shifts[k]` above replicate k of "b"
    pairs = []
    for k, shift in enumerate(shifts):
        base = rng.normal(scale=0.1, size=30)
        _system(score, f"a{k}", clips, base + shift)
        _system(score, f"b{k}", clips, base + rng.normal(scale=0.01, size=30))
        pairs.append((score / f"a{k}", score / f"b{k}"))
    result = paired_over_replicates(pairs)
    each = [paired_between(a, b)["clap_cosine"] for a, b in pairs]
    o = result["clap_cosine"]["over_seeds"]
    assert result["clap_cosine"]["value"] == each[0]["value"]
    assert o["values"] == [r["value"] for r in each] and o["values"][1:] == pytest.approx([0.2, -0.5], abs=0.01)
    combined = replicates.combine([r["value"] for r in each], [replicates.clip_se(r) for r in each])
    assert {k: o[k] for k in combined} == combined and o["n"] == 3
    assert "over_seeds" not in paired_over_replicates(pairs[:1])["clap_cosine"]
    (score / "b1" / "results.json").write_text(json.dumps({"recipe": {"id": "smoke@2"}}))
    with pytest.raises(ValueError, match=r"a1 and .*b1 were scored with different recipes \['smoke@1', 'smoke@2'\]"):
        paired_over_replicates(pairs)
