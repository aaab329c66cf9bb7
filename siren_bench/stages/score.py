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

from siren_bench.cache import ContentCache
from siren_bench.config import eval_config
from siren_bench.data.manifest import MANIFEST_NAME
from siren_bench.evaluation.clipsets import folder_clips, manifest_clips
from siren_bench.evaluation.embedding import EmbedderLoader
from siren_bench.evaluation.score import score_sets, write_score
from siren_bench.io import atomic_directory, write_json_atomic
from siren_bench.provenance import build_record, write_provenance
from siren_bench.recipes import get_recipe
from siren_bench.stages.common import open_stage
from siren_bench.stages.evaluators import needs_smoke_evaluators
from siren_bench.stages.generate import SCORED_SPLIT, SYSTEMS_NAME

SUMMARY_NAME = "summary.json"
SUMMARY_FIELDS = ("value", "ci_low", "ci_high", "n_generated", "n_reference", "n_frames")


def run(params_path: str | Path = "params.yaml") -> Path:
    stage = open_stage(params_path)
    run_cfg, config = stage.run, eval_config(stage.params, stage.source)
    recipe = get_recipe(config.recipe)
    generate_dir = stage.dir("generate")
    systems = json.loads((generate_dir / SYSTEMS_NAME).read_text())
    weights_dir = stage.dir("evaluators") if needs_smoke_evaluators(config.recipe) else config.weights_dir
    # On CPU whatever run.device says: cache keys do not hold the device, and a GPU rounds float32
    # differently, so CPU-only embeddings keep cached entries and audits exactly comparable.
    loader = EmbedderLoader(weights_dir, config.weights_sha256, device="cpu")
    cache = ContentCache(Path(run_cfg.cache_dir) / "embeddings")
    reference = manifest_clips(stage.dir("prepare") / MANIFEST_NAME, SCORED_SPLIT)

    out_dir = stage.dir("score")
    summary = {"recipe": recipe.id, "recipe_sha256": recipe.sha256, "reference": reference.source, "split": SCORED_SPLIT,
               "systems": {}}
    with atomic_directory(out_dir) as staging:
        for system in sorted(systems):
            generated = folder_clips(generate_dir / system)
            outcome = score_sets(generated, reference, recipe, loader, cache, n_boot=config.n_bootstrap,
                                 allow_clipped=config.allow_clipped)
            write_score(staging / system, outcome)
            summary["systems"][system] = {
                "description": systems[system]["description"],
                "metrics": {m: {k: r.get(k) for k in SUMMARY_FIELDS} | {"embedder": r["embedder"]}
                            for m, r in outcome.results["metrics"].items()},
                "clipped_clips": outcome.results["clipped_clips"],
                "cache": {"hits": outcome.cache_hits, "misses": outcome.cache_misses},
            }
        write_json_atomic(staging / SUMMARY_NAME, summary)
        inputs = {"generate": generate_dir, "manifest": stage.dir("prepare") / MANIFEST_NAME}
        if weights_dir is not None:
            inputs["weights"] = Path(weights_dir)
        record = build_record("score", {"run": run_cfg, "eval": config}, inputs=inputs,
                              seeds={"bootstrap_seed": recipe.bootstrap_seed}, device="cpu")
        write_provenance(staging, record)
    return out_dir
