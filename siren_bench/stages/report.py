"""Stage `report`: reports/<profile>/ (report.md, report.html, results.json, CSV tables,
figures/, provenance.json, run.json), each run also archived under runs/<run_id>/ and listed in
index.md / index.json (report/runs.py).

Built from whichever stage outputs exist: each section declares the stage folder it reads and
is skipped, with a line saying so, when that stage has not run. results.json holds only
computed numbers (no timestamps, no machine details) so two runs on the same inputs give the
same file; provenance.json and run.json beside it say which code, inputs and run made it.
"""

from __future__ import annotations

from pathlib import Path

from siren_bench.artifacts import RunArtifacts
from siren_bench.io import write_json_atomic, write_text_atomic
from siren_bench.provenance import build_record, git_state, write_provenance
# The section modules register their sections (siren_bench/report/section.py); a new section is
# a new module with `@report_section(...)` and its name in this import.
from siren_bench.report import (  # noqa: F401
    ablation_card, alignment_card, baselines_card, claims_card, codec_card, dataset_card, environment, listening, ranking_card,
    scores, siren_card, sweep_card,
)
from siren_bench.report import dvc_outputs, html, runs, tables
from siren_bench.report.section import Section, ordered_sections
from siren_bench.report.summary import summary_markdown
from siren_bench.stage_context import open_stage

RESULTS_SCHEMA_VERSION = 1



# How a run happened, not what it computed: a resumed run ends with the same numbers (tested),
# so these stay in the stage folders and provenance, out of results.json.
RUN_HISTORY_KEYS = frozenset({"resumed_from_step", "resumed_from"})


def without_run_history(value):
    if isinstance(value, dict):
        return {k: without_run_history(v) for k, v in value.items() if k not in RUN_HISTORY_KEYS}
    if isinstance(value, list):
        return [without_run_history(v) for v in value]
    return value


def run(params_path: str | Path = "params.yaml") -> Path:
    stage_context = open_stage(params_path)
    run_cfg = stage_context.run
    out_dir = Path(run_cfg.reports_dir) / run_cfg.profile
    git = git_state()
    run_id = runs.new_run_id(out_dir, git)
    with runs.build_run(out_dir, run_id, git) as staging:
        sections, skipped, inputs = [], [], {}
        store = RunArtifacts(Path(run_cfg.artifacts_dir) / run_cfg.profile)
        for spec in ordered_sections():
            stage, title = spec.reads, spec.title
            source = store.dir(stage) if stage else store.root
            if not source.is_dir():
                reader = f"stage `{stage}`" if stage else "the pipeline"
                skipped.append(f"- {title}: {reader} has no output in `{source}`")
                continue
            sections.append(spec.build(store, staging))
            if stage:  # not artifacts/<profile> as a whole: hashing all its audio and checkpoints is too slow
                inputs[stage] = source
        results = {
            "schema_version": RESULTS_SCHEMA_VERSION,
            "profile": run_cfg.profile,
            "sections": without_run_history({s.key: s.results for s in sections}),
        }
        write_json_atomic(staging / "results.json", results)
        tables.write_tables(results, staging)
        dvc_outputs.write_dvc_outputs(results["sections"], store, staging)
        markdown = _markdown(run_cfg.profile, run_id, sections, skipped)
        write_text_atomic(staging / runs.REPORT_MD, markdown)
        write_text_atomic(staging / runs.REPORT_HTML, html.render(markdown, staging))
        record = build_record("report", {"run": run_cfg}, inputs=inputs, device=run_cfg.device, extra={"run_id": run_id})
        write_provenance(staging, record)
    runs.publish_run(out_dir, run_id)
    return out_dir


def _markdown(profile: str, run_id: str, sections: list[Section], skipped: list[str]) -> str:
    header = f"""# siren-bench report: profile `{profile}`

Run `{run_id}`, written by `siren-bench report` from the pipeline's stage outputs. Numbers are
in `results.json` (as tables: `scores.csv`, `paired.csv`); which code, config and inputs produced
them is in `provenance.json`. Every run is kept under `runs/`, listed in `index.md`.
"""
    body = "\n".join(s.markdown for s in sections)
    missing = "\n## Not in this report\n\n" + "\n".join(skipped) + "\n" if skipped else ""
    return header + "\n" + summary_markdown(sections, skipped) + "\n" + body + missing
