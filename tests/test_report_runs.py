"""Versioned report runs, the self-contained HTML page, the CSV tables and the environment section."""

from __future__ import annotations

import base64
import json
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pytest

from siren_bench.artifacts import RunArtifacts
from siren_bench.io import sha256_path
from siren_bench.provenance import build_record, git_state
from siren_bench.report import environment, html, runs, tables
from tests.conftest import REPO

T0 = datetime(2025, 3, 4, 5, 6, 7, tzinfo=timezone.utc)
GIT = {"commit": "0123456789abcdef0123456789abcdef01234567", "dirty": False}
PNG = b"\x89PNG\r\n\x1a\n fake image bytes"
SCORES = {
    "recipe": "smoke@1", "recipe_sha256": "ab" * 32, "split": "test",
    "systems": {
        "siren": {"description": "s", "n_reference": 48, "metrics": {
            "fad": {"value": 1.5, "ci_low": 1.0, "ci_high": 2.0, "n_generated": 48, "n_frames": 192},
            "clap": {"value": 0.25, "ci_low": 0.2, "ci_high": 0.3, "n_generated": 48, "n_frames": None}}},
        "shared_lm": {"description": "b", "n_reference": 48, "metrics": {
            "fad": {"value": 3.5, "ci_low": 3.0, "ci_high": 4.0, "n_generated": 48, "n_frames": 192}}},
    },
}
PAIRED = {"shared_lm": {"kl": {"value": -0.5, "ci_low": -0.9, "ci_high": -0.1, "ci_level": 0.95, "p_value": 0.01,
                               "n": 48, "n_boot": 200, "bootstrap_seed": 0, "bootstrap_mean": -0.5, "bootstrap_std": 0.2}}}


def _results(sections: dict) -> dict:
    return {"schema_version": 1, "profile": "p", "sections": sections}


def _publish(profile_dir: Path, created: datetime, sections: dict, git: dict = GIT) -> str:
    """A run as the stage builds it: results, tables, markdown with a figure and an audio link, html."""
    run_id = runs.format_run_id(created, git)
    with runs.build_run(profile_dir, run_id, git) as staging:
        (staging / "results.json").write_text(json.dumps(_results(sections)))
        tables.write_tables(_results(sections), staging)
        (staging / "figures").mkdir()
        (staging / "figures" / "a.png").write_bytes(PNG)
        markdown = f"# report `p`\n\nrun {run_id}\n\n![a](figures/a.png)\n\n[wav](../../../../artifacts/p/x.wav)\n"
        (staging / "report.md").write_text(markdown)
        (staging / "report.html").write_text(html.render(markdown, staging))
    runs.publish_run(profile_dir, run_id)
    return run_id


def test_run_id_format():
    assert runs.format_run_id(T0, GIT) == "20250304T050607Z-0123456789ab"
    assert runs.format_run_id(T0, GIT | {"dirty": True}) == "20250304T050607Z-0123456789ab-dirty"
    assert runs.format_run_id(T0, {"commit": None, "dirty": None, "error": "x"}) == "20250304T050607Z-nogit"
    assert re.fullmatch(r"\d{8}T\d{6}Z-([0-9a-f]{12}|nogit)(-dirty)?", runs.new_run_id(Path("/nonexistent"), git_state(REPO)))


def test_new_run_id_skips_an_id_already_taken(tmp_path):
    taken = runs.format_run_id(datetime.now(timezone.utc), GIT)
    (tmp_path / "runs" / taken).mkdir(parents=True)
    fresh = runs.new_run_id(tmp_path, GIT)
    assert fresh != taken and not (tmp_path / "runs" / fresh).exists()


def test_two_publishes_archive_both_and_index_newest_first(tmp_path):
    profile = tmp_path / "reports" / "p"
    first = _publish(profile, T0, {"scores": SCORES})
    second = _publish(profile, T0 + timedelta(hours=1), {"dataset": {"n": 1}}, GIT | {"dirty": True})
    assert sorted(p.name for p in (profile / "runs").iterdir()) == [first, second]
    index = json.loads((profile / "index.json").read_text())
    assert [r["run_id"] for r in index["runs"]] == [second, first]
    newest, oldest = index["runs"]
    assert oldest["headline"] == {"siren_fad": 1.5, "siren_clap": 0.25} and newest["headline"] == {}
    assert oldest["created"] == "2025-03-04T05:06:07Z" and oldest["commit"] == GIT["commit"] and newest["dirty"] is True
    assert oldest["report_html"] == f"runs/{first}/report.html" and (profile / oldest["report_md"]).is_file()
    text = (profile / "index.md").read_text()
    assert text.index(second) < text.index(first) and f"(runs/{first}/report.html)" in text and "| 1.5 | 0.25 |" in text
    # the top level is the second run; its markdown links reach the same audio from two folders higher
    assert json.loads((profile / "run.json").read_text())["run_id"] == second
    assert (profile / "results.json").read_bytes() == (profile / "runs" / second / "results.json").read_bytes()
    assert "](../../artifacts/p/x.wav)" in (profile / "report.md").read_text()
    assert "](../../../../artifacts/p/x.wav)" in (profile / "runs" / second / "report.md").read_text()
    # the first run's archive is untouched by the second
    assert (profile / "runs" / first / "scores.csv").is_file() and "1.5" in (profile / "runs" / first / "scores.csv").read_text()


def test_an_existing_run_id_is_refused_and_left_intact(tmp_path):
    profile = tmp_path / "p"
    run_id = _publish(profile, T0, {"scores": SCORES})
    before = sha256_path(profile / "runs" / run_id)
    with pytest.raises(runs.RunExistsError, match=re.escape(str(profile / "runs" / run_id))):
        with runs.build_run(profile, run_id, GIT) as staging:
            (staging / "results.json").write_text("{}")
    # taken by another writer while this run was being built
    other = runs.format_run_id(T0 + timedelta(seconds=1), GIT)
    with pytest.raises(runs.RunExistsError, match="never overwritten"):
        with runs.build_run(profile, other, GIT) as staging:
            (staging / "results.json").write_text("{}")
            (profile / "runs" / other).mkdir()
            (profile / "runs" / other / "mine.txt").write_text("theirs")
    assert sha256_path(profile / "runs" / run_id) == before
    assert (profile / "runs" / other / "mine.txt").read_text() == "theirs"
    assert sorted(p.name for p in (profile / "runs").iterdir()) == [run_id, other]  # no staging folder left


def test_stale_top_level_files_are_removed_but_not_runs_or_hidden_files(tmp_path):
    profile = tmp_path / "p"
    first = _publish(profile, T0, {"scores": SCORES, "paired": PAIRED})
    assert (profile / "paired.csv").is_file()
    (profile / "old_table.csv").write_text("x")
    (profile / "old_folder").mkdir()
    (profile / "old_folder" / "f.txt").write_text("x")
    (profile / "figures" / "stale.png").write_bytes(PNG)
    (profile / ".another.writer.tmp").write_text("x")
    second = _publish(profile, T0 + timedelta(minutes=1), {"dataset": {"n": 1}})
    assert sorted(p.name for p in profile.iterdir()) == sorted([
        ".another.writer.tmp", "figures", "index.json", "index.md", "report.html", "report.md", "results.json",
        "run.json", "runs"])
    assert [p.name for p in (profile / "figures").iterdir()] == ["a.png"]
    assert (profile / "runs" / first / "paired.csv").is_file() and (profile / "runs" / second).is_dir()


def test_html_embeds_images_and_loads_nothing_remote(tmp_path):
    (tmp_path / "figures").mkdir()
    (tmp_path / "figures" / "a.png").write_bytes(PNG)
    markdown = "# The `p` report\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n![fig a](figures/a.png)\n\n[wav](../x.wav)\n"
    page = html.render(markdown, tmp_path)
    assert 'src="figures/' not in page and f'src="data:image/png;base64,{base64.b64encode(PNG).decode()}"' in page
    assert "<table>" in page and "<td>2</td>" in page and "<title>The p report</title>" in page
    assert 'href="../x.wav"' in page and "http://" not in page and "https://" not in page
    with pytest.raises(html.ReportImageError, match="missing.png"):
        html.render("![b](figures/missing.png)", tmp_path)
    with pytest.raises(html.ReportImageError, match="must not load"):
        html.render("![b](https://example.invalid/b.png)", tmp_path)
    # the published pages, top level and archived, are self-contained too
    profile = tmp_path / "p"
    run_id = _publish(profile, T0, {})
    for page in (profile / "report.html", profile / "runs" / run_id / "report.html"):
        assert 'src="figures/' not in page.read_text() and "data:image/png;base64," in page.read_text()


def test_an_image_outside_the_run_folder_is_embedded_in_both_pages(tmp_path):
    """Outward links are rebased for the top-level copy, and its page is rendered from there."""
    profile = tmp_path / "p"
    (profile / "shared").mkdir(parents=True)
    (profile / "shared" / "b.png").write_bytes(PNG)
    run_id = runs.format_run_id(T0, GIT)
    with runs.build_run(profile, run_id, GIT) as staging:
        (staging / "report.md").write_text("![b](../../shared/b.png)\n")
        (staging / "report.html").write_text(html.render("![b](../../shared/b.png)\n", staging))
    runs.publish_run(profile, run_id)
    assert (profile / "report.md").read_text() == "![b](shared/b.png)\n"
    assert "data:image/png;base64," in (profile / "report.html").read_text()


def test_csv_tables_have_one_row_per_system_and_metric(tmp_path):
    written = tables.write_tables(_results({"scores": SCORES, "paired": PAIRED}), tmp_path)
    assert [p.name for p in written] == ["scores.csv", "paired.csv"]
    scores = pd.read_csv(tmp_path / "scores.csv")
    assert tuple(scores.columns) == tables.SCORE_COLUMNS == (
        "system", "metric", "value", "ci_low", "ci_high", "n_generated", "n_frames", "n_reference", "recipe")
    assert len(scores) == 3 and set(scores["recipe"]) == {"smoke@1"} and set(scores["n_reference"]) == {48}
    row = scores[(scores["system"] == "siren") & (scores["metric"] == "fad")].iloc[0]
    assert (row["value"], row["ci_low"], row["ci_high"], row["n_frames"]) == (1.5, 1.0, 2.0, 192)
    paired = pd.read_csv(tmp_path / "paired.csv")
    assert tuple(paired.columns) == tables.PAIRED_COLUMNS
    assert paired.iloc[0][["system", "versus", "measure", "value", "p_value"]].tolist() == ["siren", "shared_lm", "kl", -0.5, 0.01]
    assert tables.write_tables(_results({"dataset": {}}), tmp_path / "none") == []


def _write_records(profile_dir: Path, wall: float, platform: str) -> None:
    (profile_dir / "prepare").mkdir(parents=True, exist_ok=True)
    (profile_dir / "evaluators").mkdir(exist_ok=True)
    (profile_dir / "score").mkdir(exist_ok=True)
    (profile_dir / "evaluators" / "tagger.safetensors").write_bytes(b"weights")
    prepare = build_record("prepare", {"data": {"n_clips": 12}}, seeds={"data.seed": 9})
    score = build_record("score", {"eval": {"recipe": "smoke"}}, seeds={"bootstrap_seed": 0},
                         inputs={"weights": profile_dir / "evaluators" / "tagger.safetensors"})
    prepare["git"] = {"commit": "a" * 40, "dirty": False}
    score["git"] = {"commit": "b" * 40, "dirty": True}
    for record, seconds in ((prepare, wall), (score, 2 * wall)):
        record["wall_seconds"], record["device"]["platform"] = seconds, platform
    (profile_dir / "prepare" / "provenance.json").write_text(json.dumps(prepare))
    (profile_dir / "score" / "provenance.json").write_text(json.dumps(score))
    (profile_dir / "score" / "summary.json").write_text(json.dumps({"recipe": "smoke@1", "recipe_sha256": "cd" * 32}))


def test_environment_section_from_two_stage_records(tmp_path):
    profile_dir = tmp_path / "artifacts" / "p"
    _write_records(profile_dir, 1.5, "Linux-test-machine")
    assert "wall_seconds" in build_record("s", {})  # every record carries its stage's wall time
    section = environment.environment_section(RunArtifacts(profile_dir), tmp_path)
    text = section.markdown
    assert section.key == "environment" and "2 different commits" in text and "dirty work tree" in text
    assert "| git commit | `aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa` | prepare |" in text
    assert "Linux-test-machine" in text and "Total: 4.5 s" in text and "| 3.0 |" in text
    weights_hash = sha256_path(profile_dir / "evaluators" / "tagger.safetensors")[:16]
    assert "| score | weights |" in text and weights_hash in text and "`smoke@1`" in text
    assert section.results["recipes"] == {"configured": {"score": "smoke"}, "scored": {"id": "smoke@1", "sha256": "cd" * 32}}
    assert section.results["stages"]["prepare"]["seeds"] == {"data.seed": 9}
    assert set(section.results["stages"]["score"]) == {"stage", "config_sha256", "seeds"}
    # results hold nothing machine-specific: other timings and machine give the same results
    _write_records(profile_dir, 99.0, "Other-machine")
    assert environment.environment_section(RunArtifacts(profile_dir), tmp_path).results == section.results
    assert "Linux-test-machine" not in json.dumps(section.results)


def test_report_stage_archives_each_run_with_identical_results(tmp_path, write_params):
    from siren_bench.stages import report

    params = write_params({"name": "synthcaps", "n_clips": 12, "clip_seconds": 1.5, "seed": 9})
    out = report.run(params)
    first = (out / "results.json").read_bytes()
    assert report.run(params) == out and (out / "results.json").read_bytes() == first
    run_ids = sorted(p.name for p in (out / "runs").iterdir())
    assert len(run_ids) == 2 and [r["run_id"] for r in json.loads((out / "index.json").read_text())["runs"]] == run_ids[::-1]
    assert all((out / "runs" / r / name).is_file() for r in run_ids
               for name in ("report.md", "report.html", "results.json", "provenance.json", "run.json"))
    assert json.loads((out / "provenance.json").read_text())["run_id"] == run_ids[1]


def test_long_tables_fold_in_the_html_and_short_ones_do_not(tmp_path):
    rows = "".join(f"| {i} | x |\n" for i in range(html.FOLD_ROWS + 1))
    page = html.render(f"# r\n\n| a | b |\n|---|---|\n{rows}\ntext between\n\n| c |\n|---|\n| 1 |\n", tmp_path)
    assert page.count("<details>") == 1 and page.count("<table>") == 2
    assert f"<summary>table of {html.FOLD_ROWS + 1} rows (click to unfold)</summary><table>" in page
    assert page.index("</details>") < page.index("text between") < page.index("<th>c</th>")
    short = html.render("| a |\n|---|\n" + "| 1 |\n" * html.FOLD_ROWS, tmp_path)
    assert "<details>" not in short
