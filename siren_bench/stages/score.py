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
from dataclasses import dataclass
from pathlib import Path

from siren_bench.cache import ContentCache
from siren_bench.config import EvalConfig, eval_config
from siren_bench.data.manifest import MANIFEST_NAME
from siren_bench.evaluation.clipsets import ClipSet, folder_clips, manifest_clips
from siren_bench.evaluation.embedding import EmbedderLoader
from siren_bench.evaluation.score import score_sets, write_score
from siren_bench.io import atomic_directory, write_json_atomic
from siren_bench.provenance import build_record, write_provenance
from siren_bench.recipes import Recipe, get_recipe
from siren_bench.stages.common import open_stage
from siren_bench.stages.evaluators import needs_smoke_evaluators
from siren_bench.stages.generate import SCORED_SPLIT, SYSTEMS_NAME

SUMMARY_NAME = "summary.json"
SUMMARY_FIELDS = ("value", "ci_low", "ci_high", "n_generated", "n_reference", "n_frames")


@dataclass
class StageScorer:
    """The profile's recipe, embedders, cache and test references, opened once and used for
    every folder a stage scores (the score stage's systems, the depth sweep's)."""

    recipe: Recipe
    config: EvalConfig
    loader: EmbedderLoader
    cache: ContentCache
    reference: ClipSet
    weights_dir: str | Path | None

    def score(self, generated_dir: Path, out: Path) -> dict:
        """Score one folder against the references into `out` (results.json, per_clip.csv);
        returns its summary entry (metric values and intervals, clipped clips, cache use)."""
        outcome = score_sets(folder_clips(generated_dir), self.reference, self.recipe, self.loader, self.cache,
                             n_boot=self.config.n_bootstrap, allow_clipped=self.config.allow_clipped)
        write_score(out, outcome)
        return {"metrics": {m: {k: r.get(k) for k in SUMMARY_FIELDS} | {"embedder": r["embedder"]}
                            for m, r in outcome.results["metrics"].items()},
                "clipped_clips": outcome.results["clipped_clips"],
                "cache": {"hits": outcome.cache_hits, "misses": outcome.cache_misses}}


def stage_scorer(stage) -> StageScorer:
    config = eval_config(stage.params, stage.source)
    weights_dir = stage.dir("evaluators") if needs_smoke_evaluators(config.recipe) else config.weights_dir
    # On CPU whatever run.device says: cache keys do not hold the device, and a GPU rounds float32
    # differently, so CPU-only embeddings keep cached entries and audits exactly comparable.
    loader = EmbedderLoader(weights_dir, config.weights_sha256, device="cpu")
    cache = ContentCache(Path(stage.run.cache_dir) / "embeddings")
    reference = manifest_clips(stage.dir("prepare") / MANIFEST_NAME, SCORED_SPLIT)
    return StageScorer(get_recipe(config.recipe), config, loader, cache, reference, weights_dir)


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
