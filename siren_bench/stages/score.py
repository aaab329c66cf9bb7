"""Stage `score`: every generated system against the test references, under the profile's recipe.

Each system folder of the `generate` stage is scored like any user's folder would be by
`siren-bench score`, against the test split of the manifest (which also gives the captions for
CLAP). The smoke recipe's checkpoints are the `evaluators` stage's output; other recipes read
eval.weights_dir. Embeddings and reference statistics go through the content cache
(run.cache_dir/embeddings), so the references are embedded once for all systems.

Output (artifacts/<profile>/score/): <system>/results.json and <system>/per_clip.csv (as from
`siren-bench score`, so `siren-bench audit` reads them), summary.json (each system's metric
values and intervals, and the cache hits and misses) and provenance.json.
"""

from __future__ import annotations

import json
from pathlib import Path

from siren_bench.artifacts import SCORED_SPLIT, STAGES
from siren_bench.data.manifest import MANIFEST_NAME
from siren_bench.evaluation.scorer import stage_scorer
from siren_bench.io import atomic_directory, write_json_atomic
from siren_bench.provenance import build_record, write_provenance
from siren_bench.stage_context import open_stage

SYSTEMS_NAME = STAGES["generate"].file("systems")
SUMMARY_NAME = STAGES["score"].file("summary")


def run(params_path: str | Path = "params.yaml") -> Path:
    stage = open_stage(params_path)
    scorer = stage_scorer(stage)
    recipe, config = scorer.recipe, scorer.config
    generate_dir = stage.dir("generate")
    systems = json.loads((generate_dir / SYSTEMS_NAME).read_text())
    out_dir = stage.dir("score")
    summary = {"recipe": recipe.id, "recipe_sha256": recipe.sha256, "reference": scorer.reference.source, "split": SCORED_SPLIT,
               "systems": {}}
    with atomic_directory(out_dir) as staging:
        for system in sorted(systems):
            summary["systems"][system] = {"description": systems[system]["description"],
                                          **scorer.score(generate_dir / system, staging / system)}
        write_json_atomic(staging / SUMMARY_NAME, summary)
        inputs = {"generate": generate_dir, "manifest": stage.dir("prepare") / MANIFEST_NAME}
        if scorer.weights_dir is not None:
            inputs["weights"] = Path(scorer.weights_dir)
        record = build_record("score", {"run": stage.run, "eval": config}, inputs=inputs,
                              seeds={"bootstrap_seed": recipe.bootstrap_seed}, device="cpu")
        write_provenance(staging, record)
    return out_dir
