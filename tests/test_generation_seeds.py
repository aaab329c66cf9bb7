"""Generation seeds (eval.generation_seeds): the spread a system's scores have over seeds, and
whether Siren's order against another system holds under every seed."""

from __future__ import annotations

import pytest

from siren_bench.report.scores import seed_agreement, seeds_markdown
from siren_bench.stages.score import over_seeds


def _runs(metric: str, values: list[float]) -> list[dict]:
    return [{metric: {"value": v, "ci_low": None}} for v in values]


def test_over_seeds_is_the_mean_and_sample_standard_deviation():
    spread = over_seeds([0, 1, 2], _runs("fad", [1.0, 2.0, 4.0]))["fad"]
    assert spread["values"] == [1.0, 2.0, 4.0] and spread["seeds"] == [0, 1, 2] and spread["n"] == 3
    assert spread["mean"] == pytest.approx(7 / 3)
    assert spread["sd"] == pytest.approx(((1 - 7 / 3) ** 2 + (2 - 7 / 3) ** 2 + (4 - 7 / 3) ** 2) ** 0.5 / 2 ** 0.5)  # ddof 1


def _spread(seeds, values, metric="fad"):
    return {metric: {"seeds": seeds, "values": values}}


def test_seed_agreement_pairs_by_seed_and_knows_which_way_is_better():
    siren = _spread([0, 1, 2], [1.0, 2.0, 3.0])
    other = _spread([2, 0, 1], [4.0, 2.0, 1.0])  # seed 0: 2.0, seed 1: 1.0, seed 2: 4.0
    assert seed_agreement(siren, other, "fad") == (2, 3)  # lower FAD: better under seeds 0 and 2
    assert seed_agreement(_spread([0, 1, 2], [1.0, 2.0, 3.0], "clap"), _spread([2, 0, 1], [4.0, 2.0, 1.0], "clap"),
                          "clap") == (1, 3)  # higher CLAP: better under seed 1 only
    assert seed_agreement(siren, _spread([0, 5], [9.0, 9.0]), "fad") is None  # one shared seed: nothing to say


def test_the_report_gives_the_spread_and_the_agreement():
    systems = {"siren": {"over_seeds": {"fad": {"seeds": [0, 1], "values": [1.0, 3.0], "mean": 2.0, "sd": 1.41, "n": 2}}},
               "shared_lm": {"over_seeds": {"fad": {"seeds": [0, 1], "values": [2.0, 2.5], "mean": 2.25, "sd": 0.35, "n": 2}}},
               "codec_resynthesis": {}}
    text = seeds_markdown(systems, [("fad", "FAD")])
    assert "2 generation seeds" in text and "| siren | 2 ± 1.4 |" in text and "| `shared_lm` | 1 of 2 |" in text
    assert seeds_markdown({"siren": {}}, [("fad", "FAD")]) == ""
