"""Stage `score`: every generated system against the test references, under the profile's recipe.

Each system folder of the `generate` stage is scored like any user's folder would be by
`siren-bench score`, against the test split of the manifest (which also gives the captions for
CLAP). The smoke recipe's checkpoints are the `evaluators` stage's output; other recipes read
eval.weights_dir. Embeddings and reference statistics go through the content cache
(run.cache_dir/embeddings), so the references are embedded once for all systems.

Output (artifacts/<profile>/score/): <system>/results.json and <system>/per_clip.csv (as from
`siren-bench score`, so `siren-bench audit` reads them), summary.json (each system's metric
values and intervals, and the cache hits and misses), reference_stats.npz + .json (the test
references' statistics under the recipe, as `siren-bench stats export` writes them, for scoring
without the audio), ranking.json (the systems' ranks under every metric, Kendall's tau between
the metrics, and how often each pair's order flips over half-samples of the clips:
evaluation/ranking.py) and provenance.json. Every recipe of eval.ranking_recipes scores each
system's first replicate again into ranking_recipes/<recipe id>/<system>/, and its metrics join
the ranking as further measures ("fad @ audioldm_eval@2"). A system with seed replicates (eval.seeds,
siren_bench/replicates.py) has each replicate scored into <system>/seed<k>/ and its summary entry
gains `over_seeds`: per metric the value under every seed, their mean and an interval holding
both the seed-to-seed and the clip variance (replicates.combine).

Under torchrun (`torchrun --nproc-per-node N -m siren_bench.cli score --params params.yaml`, gloo
on the CPU, NCCL with one GPU per rank on CUDA) the ranks share the embedding, the expensive part, through the content cache
(evaluation/embedding.py); every rank then holds every embedding, and rank 0 alone writes the
output, the same files a single process writes.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from pathlib import Path

import torch
from tqdm import tqdm

from siren_bench.artifacts import SCORED_SPLIT, STAGES
from siren_bench.replicates import over_seeds
from siren_bench.data.manifest import MANIFEST_NAME
from siren_bench.distributed import rank_and_world, torchrun_group
from siren_bench.evaluation import ranking
from siren_bench.evaluation.reference_stats import LEVELS, export_reference_stats
from siren_bench.evaluation.scorer import stage_scorer
from siren_bench.io import atomic_directory, write_json_atomic
from siren_bench.provenance import build_record, write_provenance
from siren_bench.recipes import get_recipe, measure_name
from siren_bench.stage_context import open_stage

SYSTEMS_NAME = STAGES["generate"].file("systems")
SUMMARY_NAME = STAGES["score"].file("summary")
REFERENCE_STATS_NAME = STAGES["score"].file("reference_stats")
RANKING_NAME = STAGES["score"].file("ranking")
RANKING_RECIPES_DIR = STAGES["score"].file("ranking_recipes")


def run(params_path: str | Path = "params.yaml") -> Path:
    stage = open_stage(params_path)
    scorer = stage_scorer(stage)
    recipe = scorer.recipe
    generate_dir = stage.dir("generate")
    systems = json.loads((generate_dir / SYSTEMS_NAME).read_text())
    out_dir = stage.dir("score")
    summary = {"recipe": recipe.id, "recipe_sha256": recipe.sha256, "reference": scorer.reference.source, "split": SCORED_SPLIT,
               "systems": {}}
    # on the embedders' device: NCCL with cuda:LOCAL_RANK per rank, gloo on the CPU
    with torchrun_group(torch.device(scorer.loader.compute.device)) as device:
        scorer = dataclasses.replace(scorer, loader=scorer.loader.on_device(device))  # this rank's GPU
        if rank_and_world()[0] > 0:  # a helper rank: its share of the embeddings, in rank 0's order, no output
            with tempfile.TemporaryDirectory() as scratch:
                for system in sorted(systems):
                    scorer.score(generate_dir / system, Path(scratch) / system)
                    for name, replicate in systems[system].get("replicates", {}).items():
                        scorer.score(generate_dir / replicate["folder"], Path(scratch) / system / name)
                _export_reference_stats(scorer, Path(scratch))
                _score_ranking_recipes(scorer, systems, generate_dir, Path(scratch), {}, {})
            return out_dir
        _write(stage, scorer, systems, summary, generate_dir, out_dir)
    return out_dir


def _score_ranking_recipes(scorer, systems: dict, generate_dir: Path, folder: Path, metric_inputs: dict, values: dict) -> None:
    """Each system's first replicate under every eval.ranking_recipes recipe, into
    folder/ranking_recipes/<recipe id>/<system>/; each metric joins `metric_inputs` and `values`
    as the measure recipes.measure_name(metric, recipe id)."""
    for name in scorer.config.ranking_recipes:
        variant = dataclasses.replace(scorer, recipe=get_recipe(name))
        for system in sorted(systems):
            _, outcome = variant.score_outcome(generate_dir / system, folder / RANKING_RECIPES_DIR / variant.recipe.id / system)
            for metric, inputs in outcome.metric_inputs.items():
                measure = measure_name(metric, variant.recipe.id)
                metric_inputs.setdefault(system, {})[measure] = inputs
                values.setdefault(system, {})[measure] = outcome.results["metrics"][metric]["value"]


def _export_reference_stats(scorer, folder: Path) -> None:
    """The test references' statistics under the recipe (from the cached embeddings), for scoring
    without the audio (`siren-bench score --reference-stats`)."""
    recipe = scorer.recipe
    if any(spec.metric in LEVELS for spec in recipe.metrics):
        export_reference_stats(scorer.reference, recipe, list(recipe.metrics), scorer.loader, scorer.cache,
                               folder / REFERENCE_STATS_NAME, allow_clipped=scorer.config.allow_clipped)


def _write(stage, scorer, systems: dict, summary: dict, generate_dir: Path, out_dir: Path) -> None:
    recipe, config = scorer.recipe, scorer.config
    metric_inputs, values = {}, {}  # per system, each metric's scoring inputs and value: for the ranking
    with atomic_directory(out_dir) as staging:
        for system in sorted(systems):
            scored, outcome = scorer.score_outcome(generate_dir / system, staging / system)
            entry = summary["systems"][system] = {"description": systems[system]["description"], **scored}
            metric_inputs[system] = outcome.metric_inputs
            values[system] = {m: r["value"] for m, r in outcome.results["metrics"].items()}
            replicates = systems[system].get("replicates", {})
            if replicates:
                scored = {name: scorer.score(generate_dir / replicate["folder"], staging / system / name)["metrics"]
                          for name, replicate in replicates.items()}
                seeds = [systems[system]["seed"]] + [replicate["seed"] for replicate in replicates.values()]
                entry["over_seeds"] = over_seeds(seeds, [entry["metrics"], *scored.values()])
        write_json_atomic(staging / SUMMARY_NAME, summary)
        _export_reference_stats(scorer, staging)
        _score_ranking_recipes(scorer, systems, generate_dir, staging, metric_inputs, values)
        if len(systems) >= 2:
            with tqdm(total=len(values[next(iter(values))]), desc="ranking robustness", unit="metric") as progress:
                ranked = ranking.robustness(metric_inputs, values, config.ranking_resamples, recipe.bootstrap_seed, progress)
            ranked["recipes"] = {r.id: r.sha256 for r in map(get_recipe, [recipe.id, *config.ranking_recipes])}
            write_json_atomic(staging / RANKING_NAME, ranked)
        inputs = {"generate": generate_dir, "manifest": stage.dir("prepare") / MANIFEST_NAME}
        if scorer.weights_dir is not None:
            inputs["weights"] = Path(scorer.weights_dir)
        record = build_record("score", {"run": stage.run, "eval": config}, inputs=inputs,
                              seeds={"bootstrap_seed": recipe.bootstrap_seed}, device=torch.device(scorer.loader.compute.device).type)
        write_provenance(staging, record)
