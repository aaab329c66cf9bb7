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
    assert section.results["delay_lm"]["kl"]["value"] == 0.0 and set(section.results) == {"delay_lm"}
    _system(score, "ar_nar", clips[:-1] + ["other"], base)
    with pytest.raises(ValueError, match="different clips"):
        paired_differences(score, "siren", "ar_nar")
