"""Every registered report section renders on its own from small fixture artifacts.

tests/fixtures/report_run.json holds a real smoke run's stage files, cut to a few clips and log
rows (tests/fixtures/build_report_fixture.py); audio is replaced by short tones written here.
Sections get only a `RunArtifacts` store, so no pipeline run is needed to test one.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from siren_bench.artifacts import RunArtifacts
from siren_bench.io import write_wav
from siren_bench.registry import REPORT_SECTIONS
from siren_bench.report.section import Section, ordered_sections
from siren_bench.stages import report as report_stage  # noqa: F401  (registers every section)

FIXTURE = Path(__file__).with_name("fixtures") / "report_run.json"
RATE = 16000


def _tone(path: Path, seed: int) -> None:
    t = np.arange(RATE // 2) / RATE
    write_wav(path, 0.1 * np.sin(2 * np.pi * (220 + 40 * seed) * t), RATE, subtype="FLOAT")


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> RunArtifacts:
    root = tmp_path_factory.mktemp("run") / "artifacts" / "fixture"
    for rel, content in json.loads(FIXTURE.read_text()).items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content if isinstance(content, str) else json.dumps(content, indent=2))
    manifest = pd.read_csv(root / "prepare" / "manifest.csv", dtype={"clip_id": str}, keep_default_na=False)
    for i, audio in enumerate(manifest["audio"]):
        _tone(root / "prepare" / audio, i)
    test_ids = manifest.loc[manifest["split"] == "test", "clip_id"]
    for j, system in enumerate(json.loads((root / "generate" / "systems.json").read_text())):
        for i, clip_id in enumerate(test_ids):
            _tone(root / "generate" / system / f"{clip_id}.wav", i + j)
    return RunArtifacts(root)


@pytest.mark.parametrize("name", REPORT_SECTIONS.names())
def test_each_section_renders_from_fixture_artifacts(name, store, tmp_path):
    spec = REPORT_SECTIONS.get(name)
    assert spec.reads is None or store.has(spec.reads), f"the fixture lacks {spec.reads}/ for section {name}"
    section = spec.build(store, tmp_path)
    assert isinstance(section, Section) and section.key == name
    json.dumps(section.results, allow_nan=False)  # results.json takes them as they are
    assert section.markdown.startswith("## ") and "Not run:" not in section.markdown  # the fixture's stages all ran
    images = [line.split("](", 1)[1].rstrip(")") for line in section.markdown.splitlines() if line.startswith("![")]
    for image in images:
        assert (tmp_path / image).is_file(), f"{name}: the markdown shows {image}, which the section did not write"


def test_sections_are_ordered_and_the_report_names_each_once():
    specs = ordered_sections()
    assert [s.order for s in specs] == sorted({s.order for s in specs})
    assert len({s.title for s in specs}) == len(specs)
    assert specs[0].key == "dataset" and specs[-1].key == "environment"


def test_a_section_reading_a_missing_file_names_it(store, tmp_path):
    import shutil

    broken = tmp_path / "run"
    shutil.copytree(store.root, broken)
    (broken / "siren" / "siren.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"siren/siren.json: missing \(written by the train_siren stage"):
        REPORT_SECTIONS.get("siren").build(RunArtifacts(broken), tmp_path / "out")


def test_dvc_metrics_and_plots_come_from_the_sections(store, tmp_path):
    from siren_bench.report.dvc_outputs import write_dvc_outputs

    sections = {spec.key: spec.build(store, tmp_path).results for spec in ordered_sections()}
    written = write_dvc_outputs(sections, store, tmp_path)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["scores"]["siren.fad"] == sections["scores"]["systems"]["siren"]["metrics"]["fad"]["value"]
    assert metrics["sweep"]["siren.fad_depth_2"] == sections["sweep"]["points"]["siren"]["2"]["fad"]["value"]
    fidelity = sections["diagnose"]["fidelity"]
    assert metrics["diagnose"]["mel_distance_depth_1"] == fidelity["metrics"]["mel_distance"][0]["mean"]
    assert metrics["diagnose"]["mel_distance_depth_8"] == fidelity["metrics"]["mel_distance"][-1]["mean"]
    assert all(isinstance(v, float) for values in metrics.values() for v in values.values())
    assert sum(len(v) for v in metrics.values()) >= 20
    curve = pd.read_csv(tmp_path / "plots" / "fidelity_vs_depth.csv")
    assert list(curve["codebooks"]) == fidelity["codebooks"]
    assert curve["mel_distance"].tolist() == pytest.approx([r["mean"] for r in fidelity["metrics"]["mel_distance"]])
    names = {p.relative_to(tmp_path).as_posix() for p in written}
    assert {"plots/training_loss/siren_expert_0.csv", "plots/training_loss/shared_lm.csv", "plots/depth_sweep/siren.csv"} <= names
    log = [r for r in store.jsonl("siren", "train_log") if r["expert"] == 0]
    assert pd.read_csv(tmp_path / "plots" / "training_loss" / "siren_expert_0.csv")["loss"].tolist() == pytest.approx([r["loss"] for r in log])


def test_the_baselines_card_states_their_size_against_sirens(store, tmp_path):
    from siren_bench.report.baselines_card import parity_reading, siren_trainable_parameters

    info = store.json("siren", "info")
    arch = info["architecture"]
    expected = sum(e["parameters"] for e in info["experts"]) - len(info["experts"]) * arch["n_codebooks"] * arch["codebook_size"] * arch["code_dim"]
    assert siren_trainable_parameters(store) == expected > 0
    section = REPORT_SECTIONS.get("baselines").build(store, tmp_path)
    ratios = section.results["parameters_vs_siren"]
    for name, facts in section.results["models"].items():
        assert ratios[name] == pytest.approx(facts["parameters"] / expected)
    assert parity_reading({"a": 1.05, "b": 0.5}, 100) == (
        "Siren has 100 trainable parameters over its experts. Within 10 % of it: a. Not matched: b (0.50x); their "
        "differences from Siren mix the design with the size, so read them as such.")
    assert "at matched size" in parity_reading({"a": 0.95}, 100) and "not trained" in parity_reading({"a": None}, None)


def test_metrics_scored_with_the_rewards_weights_are_marked_for_the_aligned_system(store, tmp_path):
    """The fixture's alignment reward is the smoke tagger: every metric computed in the tagger's
    embedding (same weights SHA-256) is marked; CLAP (another network) is not."""
    from siren_bench.report.scores import reward_contaminated

    reward = store.json("siren_aligned", "info")["reward"]
    metrics = store.json("score", "results", "siren_aligned")["metrics"]
    expected = {m for m, r in metrics.items() if r.get("weights_sha256") == reward["audio"]["weights_sha256"]}
    assert expected and "clap" not in expected
    assert reward_contaminated(store) == {m: "audio" for m in expected}
    scores = REPORT_SECTIONS.get("scores").build(store, tmp_path)
    aligned_row = next(line for line in scores.markdown.splitlines() if line.startswith("| siren_aligned |"))
    assert aligned_row.count("\\*") == len(expected) and "the reward's audio network" in scores.markdown
    alignment = REPORT_SECTIONS.get("alignment").build(store, tmp_path)
    assert alignment.results["reward_contaminated"] == {m: "audio" for m in expected}
    assert "scored with the very weights the alignment reward optimised" in alignment.markdown


def test_clips_over_full_scale_are_counted_and_named(tmp_path):
    """A system whose raw output overshoots full scale is scored (eval.allow_clipped) and the
    report names it with its count and largest peak; a clean system adds nothing."""
    import pandas as pd

    from siren_bench.report.scores import _over_full_scale, _over_full_scale_note

    pd.DataFrame({"clip_id": ["a", "b", "c"], "peak": [0.5, 1.077, 0.99], "clipped_fraction": [0.0, 0.0, 0.002]}).to_csv(tmp_path / "x.csv")
    pd.DataFrame({"clip_id": ["a"], "peak": [0.9], "clipped_fraction": [0.0]}).to_csv(tmp_path / "y.csv")
    over = _over_full_scale(tmp_path / "x.csv")
    assert over == {"clips": 2, "of": 3, "max_peak": 1.077}
    assert _over_full_scale(tmp_path / "y.csv") == {}
    note = _over_full_scale_note({"ar_nar": {"over_full_scale": over}, "siren": {}})
    assert "`ar_nar` 2 of 3 (largest peak 1.077)" in note and "siren" not in note


def _cells(line: str) -> int:
    """Cells of a markdown table row; an escaped pipe (\\|) stays inside its cell."""
    return len(line.replace("\\|", "").strip().strip("|").split("|"))


@pytest.mark.parametrize("name", REPORT_SECTIONS.names())
def test_every_markdown_table_row_has_its_headers_cell_count(name, store, tmp_path):
    """A bare | inside a cell (a header like "mean |cos|") splits it and shifts every column after it."""
    lines = REPORT_SECTIONS.get(name).build(store, tmp_path).markdown.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("|") and i + 1 < len(lines) and set(lines[i + 1].replace("|", "").strip()) <= {"-", ":", " "} \
                and lines[i + 1].startswith("|"):
            width = _cells(line)
            for row in lines[i + 1:]:
                if not row.startswith("|"):
                    break
                assert _cells(row) == width, f"{name}: {row!r} has {_cells(row)} cells, its header {line!r} {width}"


def test_the_sweep_rests_on_the_seed_replicates_and_shows_the_main_tables_full_depth_numbers(store, tmp_path):
    sweep = REPORT_SECTIONS.get("sweep").build(store, tmp_path).results
    assert len(sweep["seeds"]) == 3 and all("mean over 3 seeds" in v["effect"] for v in sweep["verdicts"])
    scores = REPORT_SECTIONS.get("scores").build(store, tmp_path).results["systems"]
    for system in ("siren", "shared_lm"):  # the full-depth point is the score table's mean over seeds, not replicate 0
        shown = sweep["points"][system]["8"]["fad"]
        assert {k: shown[k] for k in ("value", "ci_low", "ci_high", "n_seeds")} == {
            k: scores[system]["metrics"]["fad"][k] for k in ("value", "ci_low", "ci_high", "n_seeds")}


def test_the_ablations_rest_on_the_seed_replicates_and_show_the_main_tables_siren(store, tmp_path):
    ablations = REPORT_SECTIONS.get("ablations").build(store, tmp_path).results
    assert ablations["seeds"] == 3 and all(row["seeds"] == 3 for row in ablations["rows"].values())
    assert all(p["over_seeds"]["n"] == 3 for row in ablations["rows"].values() for p in row["paired"].values())
    assert len(ablations["verdicts"]) == 2 and all("over 3 seeds" in v["effect"] for v in ablations["verdicts"])
    scores = REPORT_SECTIONS.get("scores").build(store, tmp_path).results["systems"]
    # at the full depth the reference is the main run's Siren, as the score table shows it: the mean over seeds
    assert ablations["rows"]["no_causal_conditioning"]["reference_metrics"]["fad"] == scores["siren"]["metrics"]["fad"]["value"]
