"""The pipeline's scorer: the profile's recipe, embedders, cache and test references opened once
from the stage folders, then used for every folder of audio a stage scores (the score stage's
systems, the depth sweep's variants, `siren-bench compare`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from siren_bench.artifacts import SCORED_SPLIT, STAGES
from siren_bench.cache import ContentCache
from siren_bench.config import EvalConfig, eval_config
from siren_bench.evaluation.clipsets import ClipSet, folder_clips, manifest_clips
from siren_bench.evaluation.embedding import EmbedderLoader, resolve_compute
from siren_bench.evaluation.score import ScoreOutcome, score_sets, write_score
from siren_bench.recipes import Recipe, get_recipe, needs_smoke_evaluators


SUMMARY_FIELDS = ("value", "ci_low", "ci_high", "n_generated", "n_reference", "n_frames")
SPREAD_FIELDS = ("jackknife_se", "bootstrap_std", "ci_floor")  # kept where recorded: what combining seed replicates reads


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

    def score(self, generated_dir: Path, out: Path, final_dir: Path | None = None) -> dict:
        """Score one folder against the references into `out` (results.json, per_clip.csv);
        returns its summary entry (metric values and intervals, clipped clips, cache use).
        `final_dir`: where the audio will lie once the stage's staging folder is renamed, which
        results.json then names (for `siren-bench audit`), instead of a staging path that is gone."""
        return self.score_outcome(generated_dir, out, final_dir)[0]

    def score_outcome(self, generated_dir: Path, out: Path, final_dir: Path | None = None) -> tuple[dict, ScoreOutcome]:
        """`score`'s summary entry, and the whole outcome (with each metric's inputs)."""
        generated = folder_clips(generated_dir)
        outcome = score_sets(generated, self.reference, self.recipe, self.loader, self.cache,
                             n_boot=self.config.n_bootstrap, allow_clipped=self.config.allow_clipped)
        if final_dir is not None:
            outcome.results["generated"] = generated.moved_to(final_dir).record()
        write_score(out, outcome)
        summary = {"metrics": {m: {k: r.get(k) for k in SUMMARY_FIELDS} | {k: r[k] for k in SPREAD_FIELDS if k in r}
                               | {"embedder": r["embedder"]}
                               for m, r in outcome.results["metrics"].items()},
                   "clipped_clips": outcome.results["clipped_clips"],
                   "cache": {"hits": outcome.cache_hits, "misses": outcome.cache_misses}}
        return summary, outcome


def stage_scorer(stage) -> StageScorer:
    config = eval_config(stage.params, stage.source)
    weights_dir = stage.dir("evaluators") if needs_smoke_evaluators(config.recipe) else config.weights_dir
    # eval.device, not run.device: the cache keys hold the device kind and the clips per call
    compute = resolve_compute(config.device, config.embed_batch, config.loader_threads, stage.source)
    loader = EmbedderLoader(weights_dir, config.weights_sha256, compute)
    cache = ContentCache(Path(stage.run.cache_dir) / "embeddings")
    reference = manifest_clips(stage.dir("prepare") / STAGES["prepare"].file("manifest"), SCORED_SPLIT)
    return StageScorer(get_recipe(config.recipe), config, loader, cache, reference, weights_dir)
