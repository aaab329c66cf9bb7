"""Stage `report`: reports/<profile>/ (report.md, results.json, figures/, provenance.json).

Built from whichever stage outputs exist: each section declares the stage folder it reads and
is skipped, with a line saying so, when that stage has not run. results.json holds only
computed numbers (no timestamps, no machine details) so two runs on the same inputs give the
same file; provenance.json beside it says which code and inputs made it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from siren_bench.io import atomic_directory, write_json_atomic, write_text_atomic
from siren_bench.provenance import build_record, write_provenance
from siren_bench.report import (
    alignment_card, baselines_card, claims_card, codec_card, dataset_card, listening, scores, siren_card, sweep_card,
)
from siren_bench.report.dataset_card import Section
from siren_bench.stages.common import open_stage

RESULTS_SCHEMA_VERSION = 1

# (stage whose output the section reads, section title, builder)
SECTIONS: tuple[tuple[str, str, Callable[[Path, Path], Section]], ...] = (
    ("prepare", "Dataset card", dataset_card.build),
    ("codec", "Codec", codec_card.codec_section),
    ("diagnose", "RVQ diagnostics", codec_card.diagnose_section),
    ("evaluators", "Evaluators", scores.evaluators_section),
    ("siren", "Siren Stage 1", siren_card.siren_section),
    ("baselines", "Baselines", baselines_card.baselines_section),
    ("baselines", "Gradient interference", baselines_card.interference_section),
    ("score", "Scores", scores.scores_section),
    ("score", "Paired comparisons", scores.paired_section),
    ("score", "Claimed vs reproduced", claims_card.claims_section),
    ("siren_aligned", "Anti-causal alignment", alignment_card.alignment_section),
    ("sweep", "Fidelity-capacity sweep", sweep_card.sweep_section),
    ("generate", "Listen", listening.listening_section),
)


def run(params_path: str | Path = "params.yaml") -> Path:
    stage_context = open_stage(params_path)
    run_cfg = stage_context.run
    out_dir = Path(run_cfg.reports_dir) / run_cfg.profile
    with atomic_directory(out_dir) as staging:
        sections, skipped, inputs = [], [], {}
        for stage, title, builder in SECTIONS:
            source = stage_context.dir(stage)
            if not source.is_dir():
                skipped.append(f"- {title}: stage `{stage}` has no output in `{source}`")
                continue
            sections.append(builder(source, staging))
            inputs[stage] = source
        results = {
            "schema_version": RESULTS_SCHEMA_VERSION,
            "profile": run_cfg.profile,
            "sections": {s.key: s.results for s in sections},
        }
        write_json_atomic(staging / "results.json", results)
        write_text_atomic(staging / "report.md", _markdown(run_cfg.profile, sections, skipped))
        record = build_record("report", {"run": run_cfg}, inputs=inputs, device=run_cfg.device)
        write_provenance(staging, record)
    return out_dir


def _markdown(profile: str, sections: list[Section], skipped: list[str]) -> str:
    header = f"""# siren-bench report: profile `{profile}`

Written by `siren-bench report` from the pipeline's stage outputs. Numbers are in
`results.json`; which code, config and inputs produced them is in `provenance.json`.
"""
    body = "\n".join(s.markdown for s in sections)
    missing = "\n## Not in this report\n\n" + "\n".join(skipped) + "\n" if skipped else ""
    return header + "\n" + body + missing
