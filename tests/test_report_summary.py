"""The report's first screen (report/summary.py): built from the sections' own results only."""

from __future__ import annotations

from siren_bench.report.section import Section
from siren_bench.report.summary import summary_markdown
from siren_bench.report.verdicts import judge, unmeasured


def _scores(over_seeds: bool = False) -> Section:
    metric = lambda v: {"value": v, "ci_low": v - 1, "ci_high": v + 1}  # noqa: E731
    systems = {"b": {"metrics": {"fad": metric(9.0), "clap": metric(0.2)}},
               "a": {"metrics": {"fad": metric(3.0), "clap": metric(0.1)}}}
    if over_seeds:
        systems["a"]["over_seeds"] = {"fad": {"n": 3}}
        systems["a"]["metrics"]["fad"]["n_seeds"] = 3
    return Section("scores", {"recipe": "smoke@1", "systems": systems}, "")


def test_summary_orders_the_headline_and_collects_every_verdict_and_limit():
    agrees = judge("a claim holds (here: x).", 2.0, 1.0, 3.0)
    open_question = unmeasured("another claim.", "It needs a GPU.")
    sections = [_scores(), Section("diagnose", {"verdicts": [agrees.as_dict()]}, ""),
                Section("sweep", {"verdicts": [open_question.as_dict()]}, ""),
                Section("ranking", {"pair_verdicts": ["`a` above `b` holds under 2 of 2 measures."]}, "")]
    text = summary_markdown(sections, ["- sweep: stage `sweep` has no output"])
    lines = text.splitlines()
    assert lines[0] == "## Summary"
    assert text.index("| `a` | 3 [2, 4] | 0.1 [-0.9, 1.1] |") < text.index("| `b` |")  # sorted by FAD, lower first
    assert "(1 agrees, 1 inconclusive;" in text
    assert "| a claim holds | **agrees** | diagnose |" in text and "| another claim | **inconclusive** | sweep |" in text
    assert "- sweep: stage `sweep` has no output" in text
    assert "Not measured (sweep): another claim. It needs a GPU." in text
    assert "not comparable with published" in text and "trained once and sampled with one seed (eval.seeds = 1)" in text
    replicated = summary_markdown([_scores(over_seeds=True)], [])
    assert "trained, aligned and sampled from 3 seeds" in replicated
    assert "(95 % intervals over the test clips;" in text and "the mean over its 3 seed replicates" in replicated
    assert "further recipes" not in text  # the ranking section above has no further recipes
    ranked = Section("ranking", {"recipes": ["smoke@2", "smoke_as_google_fad@1"], "pair_verdicts": []}, "")
    assert "The ranking's further recipe (`smoke_as_google_fad@1`) apply" in summary_markdown([_scores(), ranked], [])
    one_codec = Section("diagnose", {"verdicts": [], "codec_seeds": [{"codec": "seed0"}]}, "")
    codecs = Section("diagnose", {"verdicts": [], "codec_seeds": [{"codec": "seed0"}, {"codec": "seed1"}]}, "")
    swept, unswept = (Section("sweep", {"verdicts": [], "seeds": seeds, "points": {"siren": {}}}, "") for seeds in ([0, 1000, 2000], [0]))
    not_swept = Section("sweep", {"depths": [], "seeds": [0, 1000, 2000], "ablations": {}}, "")  # sweep.depths empty: ablations only
    ablated, unablated = (Section("ablations", {"rows": {"x": {}}, "seeds": n, "verdicts": []}, "") for n in (3, 1))
    seeded = _scores(over_seeds=True)
    assert "but the sweep, the ablations and the RVQ diagnostics ran with one seed" in summary_markdown(
        [seeded, one_codec, unswept, unablated], [])
    assert "but the sweep and the ablations ran with one seed" in summary_markdown([seeded, codecs, unswept, unablated], [])
    assert "but the ablations ran with one seed" in summary_markdown([seeded, codecs, swept, unablated], [])
    assert "but the ablations and the RVQ diagnostics ran with one seed" in summary_markdown([seeded, swept, unablated, one_codec], [])
    everything = summary_markdown([seeded, codecs, swept, ablated], [])
    assert "ran with one seed" not in everything
    assert "hold that spread, and so do those of the sweep, the ablations and the RVQ diagnostics." in everything
    # a part the run does not have is not said to have run with one seed, nor to rest on the seeds
    assert "ran with one seed" not in summary_markdown([seeded], []) and "the sweep" not in summary_markdown([seeded], [])
    assert "and so do those of the ablations." in summary_markdown([seeded, not_swept, ablated], [])
    assert "the sweep" not in summary_markdown([seeded, Section("sweep", {"depths": [], "reason": "empty"}, "")], [])
    assert "the ablations" not in summary_markdown([seeded, Section("ablations", {}, "")], [])


def test_an_empty_run_has_no_summary():
    assert summary_markdown([], []) == ""
