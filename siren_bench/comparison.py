"""`siren-bench compare NAME` and `siren_bench.compare(NAME, ...)`: put a user's model in the run's
table under the identical protocol.

The model is a folder of rendered test clips (`--audio`), a generator `module:function`
(`--entry-point`), a generator function itself (`siren_bench.compare(NAME, generate)`, from Python),
or an installed entry point named NAME in the group `siren_bench.generators`
(siren_bench/external.py says what a generator must return). Its audio is checked and copied
into artifacts/<profile>/compare/<NAME>/audio (so the scored bytes are kept and hashed), scored by
the score stage's recipe, embedders and cache (the reference statistics are the same ones), and
reported in reports/compare/<profile>/<NAME>/ (report.md, report.html, results.json): the run's
table with NAME added, and NAME against Siren clip by clip. Nothing is overwritten: an existing
NAME is an error. To make a model a system of the pipeline itself, list it in eval.external.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from siren_bench.artifacts import SCORED_SPLIT, STAGES
from siren_bench.config import model_config
from siren_bench.data.manifest import MANIFEST_NAME, read_manifest
from siren_bench.evaluation.scorer import stage_scorer
from siren_bench.external import CompareError, copy_audio_folder, load_generator, render_entry_point
from siren_bench.io import atomic_directory, write_json_atomic, write_text_atomic
from siren_bench.provenance import build_record, write_provenance
from siren_bench.report import html
from siren_bench.report.section import md_table
from siren_bench.report.paired import PAIRED, adjust_holm, difference_text, p_text, paired_between
from siren_bench.report.scores import COLUMNS, INTERVALS, interval_text
from siren_bench.stage_context import open_stage

COMPARE_DIR = "compare"
SUMMARY_NAME = STAGES["score"].file("summary")


def compare(name: str, params_path: str | Path = "params.yaml", audio: str | Path | None = None,
            entry_point: str | None = None, generator: Callable | None = None) -> Path:
    """Render or copy NAME's audio, score it like the run's systems, write its report; returns the
    report folder. At most one of `audio`, `entry_point` and `generator`; with none, the installed
    entry point NAME."""
    given = [option for option, value in (("audio", audio), ("entry point", entry_point), ("generator", generator))
             if value is not None]
    if len(given) > 1:
        raise CompareError(f"give one of an audio folder, an entry point or a generator, not {' and '.join(given)}")
    if generator is not None and not callable(generator):
        raise CompareError(f"generator {generator!r} is not callable")
    if not name.isidentifier():
        raise CompareError(f"model name {name!r}: use letters, digits and underscores (it names folders and table rows)")
    stage = open_stage(params_path)
    score_dir = stage.dir("score")
    if not (score_dir / SUMMARY_NAME).is_file():
        raise CompareError(f"{score_dir}: no finished score stage to compare with; run `dvc repro` first")
    summary = json.loads((score_dir / SUMMARY_NAME).read_text())
    if name in summary["systems"]:
        raise CompareError(f"{name!r} is already a system of the run ({score_dir}); pick another name")
    work_dir = stage.dir(COMPARE_DIR) / name
    report_dir = Path(stage.run.reports_dir) / COMPARE_DIR / stage.run.profile / name  # outside the report stage's output
    for existing in (work_dir, report_dir):
        if existing.exists():
            raise CompareError(f"{existing} already exists; remove it to compare {name!r} again")
    manifest = read_manifest(stage.dir("prepare") / MANIFEST_NAME)
    test = manifest[manifest["split"] == SCORED_SPLIT]
    scorer = stage_scorer(stage)
    if scorer.recipe.id != summary["recipe"]:
        raise CompareError(f"{score_dir}: scored with recipe {summary['recipe']}, params say {scorer.recipe.id}; re-run the pipeline")
    with atomic_directory(work_dir) as staging:
        if audio is not None:
            copy_audio_folder(Path(audio), test["clip_id"].tolist(), staging / "audio")
            origin = {"audio_dir": str(Path(audio).resolve())}
        else:
            if generator is not None:
                generate, source = generator, f"{getattr(generator, '__module__', '?')}:{getattr(generator, '__qualname__', '?')}"
            else:
                generate, source = load_generator(name, entry_point)
            seed = model_config(stage.params, stage.source).generation_seed
            rates = sorted(set(test["sample_rate"].astype(int)))
            if len(rates) != 1:
                raise CompareError(f"{stage.dir('prepare') / MANIFEST_NAME}: test clips at several rates {rates}; "
                                   "render them yourself and pass the folder")
            sample_rate = rates[0]
            render_entry_point(generate, source, test, sample_rate, seed, staging / "audio")
            origin = {"entry_point": source, "seed": seed, "sample_rate": sample_rate}
        scored = scorer.score(staging / "audio", staging / "score", work_dir / "audio")
        write_json_atomic(staging / "compare.json", {"name": name, "origin": origin, "recipe": scorer.recipe.id, **scored})
        write_provenance(staging, build_record("compare", {"run": stage.run, "eval": scorer.config, "origin": origin},
                                               inputs={"audio": staging / "audio",
                                                       "manifest": stage.dir("prepare") / MANIFEST_NAME},
                                               seeds={"bootstrap_seed": scorer.recipe.bootstrap_seed}, device="cpu"))
    _write_report(name, work_dir, score_dir, summary, report_dir)
    return report_dir


def _write_report(name: str, work_dir: Path, score_dir: Path, summary: dict, report_dir: Path) -> None:
    mine = json.loads((work_dir / "compare.json").read_text())
    systems = {**summary["systems"], name: mine}
    metrics = [(m, label) for m, label in COLUMNS if m in mine["metrics"]]
    rows = [[f"**{system}**" if system == name else system,
             *(interval_text(entry["metrics"][m]) if m in entry["metrics"] else "" for m, _ in metrics)]
            for system, entry in systems.items()]
    results = {"name": name, "recipe": summary["recipe"], "origin": mine["origin"],
               "systems": {s: {m: e["metrics"][m]["value"] for m, _ in metrics if m in e["metrics"]} for s, e in systems.items()},
               "paired": {}}
    for other in ("siren", "siren_aligned"):
        if other in summary["systems"]:
            results["paired"][other] = paired_between(work_dir / "score", score_dir / other)
    family = [(other, label, better, p) for other, measures in results["paired"].items() for column, label, better in PAIRED
              if (p := measures.get(column)) is not None]
    holm_note = adjust_holm([p for *_, p in family])
    paired_rows = [[f"`{other}`", label, difference_text(p), p_text(p), p_text(p, "p_holm"), better, p["n"]]
                   for other, label, better, p in family]
    paired_table = (md_table([f"{name} minus", "per-clip measure", "difference [95 % CI]", "p", "p (Holm)", "better for " + name,
                              "clips"], paired_rows) + "\n\n" + holm_note if paired_rows else "The run has no Siren rows to pair with.")
    n = next(iter(mine["metrics"].values()))["n_generated"]
    markdown = f"""# `{name}` compared under the run's protocol

Recipe `{summary['recipe']}`, the run's {n} test clips, the score stage's embedders and reference statistics.
Audio from {', '.join(f'{k} `{v}`' for k, v in mine['origin'].items())}. {INTERVALS}

{md_table(["system", *(label for _, label in metrics)], rows)}

## `{name}` minus Siren, clip by clip

{paired_table}
"""
    with atomic_directory(report_dir) as staging:
        write_json_atomic(staging / "results.json", results)
        write_text_atomic(staging / "report.md", markdown)
        write_text_atomic(staging / "report.html", html.render(markdown, staging))
