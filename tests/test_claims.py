"""The claims registry: every claim is well formed and in harness units, and a claim is marked
comparable only under its own AudioCaps list and metric recipe."""

from __future__ import annotations

import json

import pytest

from siren_bench.artifacts import RunArtifacts
from siren_bench.claims import CLAIMS, comparability
from baselines import registry
from siren_bench.config import BUILTIN_SYSTEMS
from siren_bench.data.audiocaps import PROTOCOLS_BY_NAME
from siren_bench.recipes import get_recipe
from siren_bench.registry import METRICS
from siren_bench import scoring  # noqa: F401  (registers the metrics)
from siren_bench.report.claims_card import claims_section


def test_every_claim_is_well_formed():
    for claim in CLAIMS:
        assert claim.metric in METRICS and claim.role in (*BUILTIN_SYSTEMS, *registry.names()) and claim.source, claim
        assert claim.protocol is None or claim.protocol in PROTOCOLS_BY_NAME, claim
        if claim.recipe is not None:
            get_recipe(claim.recipe)
        if claim.metric == "clap":
            assert 0 < claim.value < 1, f"{claim}: CLAP in the harness's units is a cosine"
    siren = {c.metric: c.value for c in CLAIMS if c.label == "Siren 1.6B"}
    assert siren == {"fad": 1.35, "fd": 10.65, "is": 12.85, "kl": 1.33, "clap": pytest.approx(0.2418)}
    assert len({(c.label, c.metric, c.source) for c in CLAIMS}) == len(CLAIMS)


def _claim(label: str, metric: str):
    return next(c for c in CLAIMS if c.label == label and c.metric == metric)


def _audiocaps(protocol: str) -> dict:
    """dataset.json as the prepare stage writes it for AudioCaps: the test list's protocol per split."""
    return {"name": "audiocaps", "splits": {"test": {"protocol": protocol, "list_clips": 964, "clips_found": 950,
                                                     "clips_missing": 14, "missing_fraction": 14 / 964},
                                            "train": {"protocol": "custom"}}}


@pytest.mark.parametrize("dataset, recipe, label, comparable, reason", [
    ({"name": "synthcaps"}, "smoke@1", "AudioLDM-L", False, "not AudioCaps"),
    (_audiocaps("audioldm_964"), "audioldm_eval@1", "AudioLDM-L", True, ""),
    (_audiocaps("tango_886"), "audioldm_eval@1", "AudioLDM-L", False, "list is tango_886"),
    (_audiocaps("audioldm_964"), "clean@1", "AudioLDM-L", False, "recipe is clean@1"),
    (_audiocaps("audioldm_964"), "audioldm_eval@1", "Siren 1.6B", False, "does not state its test list"),
    ({"name": "audiocaps", "protocol": "audioldm_964"}, "audioldm_eval@1", "AudioLDM-L", False, "list is None"),  # not where prepare puts it
])
def test_comparable_only_under_the_claims_own_list_and_recipe(dataset, recipe, label, comparable, reason):
    ok, why = comparability(_claim(label, "fad"), dataset, recipe)
    assert ok is comparable and reason in why


def test_the_section_shows_deltas_and_marks_a_smoke_run_not_comparable(tmp_path):
    score, prepare = tmp_path / "score", tmp_path / "prepare"
    score.mkdir()
    prepare.mkdir()
    (prepare / "dataset.json").write_text(json.dumps({"name": "synthcaps"}))
    metric = {"value": 3.0, "ci_low": 2.5, "ci_high": 3.5}
    (score / "summary.json").write_text(json.dumps({"recipe": "smoke@1", "systems": {"siren_aligned": {"metrics": {"fad": metric}}}}))
    section = claims_section(RunArtifacts(tmp_path), tmp_path / "report")
    rows = section.results["rows"]
    brief = next(r for r in rows if r["label"] == "Siren" and r["metric"] == "fad")
    assert brief["delta"] == pytest.approx(3.0 - 0.92) and brief["comparable"] is False
    assert next(r for r in rows if r["role"] == "delay_lm")["reproduced"] is None  # a system not in the run
    # not comparable: one line per published system with the reason, and no delta printed
    assert "| Siren | FAD 0.92 | `siren_aligned` | this run is on synthcaps, not AudioCaps |" in section.markdown
    assert "No published number is comparable with this run." in section.markdown and "+2.08" not in section.markdown


def test_an_audiocaps_run_on_the_claims_list_shows_the_delta_and_the_missing_clips(tmp_path):
    score, prepare = tmp_path / "score", tmp_path / "prepare"
    score.mkdir()
    prepare.mkdir()
    (prepare / "dataset.json").write_text(json.dumps(_audiocaps("audioldm_964")))
    metric = {"value": 2.5, "ci_low": 2.2, "ci_high": 2.9}
    (score / "summary.json").write_text(json.dumps({"recipe": "audioldm_eval@2", "systems": {"latent_diffusion": {"metrics": {"fad": metric}}}}))
    section = claims_section(RunArtifacts(tmp_path), tmp_path / "report")
    row = next(r for r in section.results["rows"] if r["label"] == "AudioLDM-L" and r["metric"] == "fad")
    assert row["comparable"] is True and row["delta"] == pytest.approx(2.5 - 2.08)
    assert "| AudioLDM-L | FAD | 2.08 | `latent_diffusion` |" in section.markdown and "+0.42" in section.markdown
    assert "lacks 14 of the list's 964 test clips (1.5%" in section.markdown and "the 950 found" in section.markdown
