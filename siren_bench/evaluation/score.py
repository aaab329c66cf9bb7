"""Scoring a set of generated clips against a reference set under one named recipe.

`score_sets` embeds both sets with each of the recipe's embedders (through the cache), computes
every metric with its bootstrap interval (scoring.score_metric) and returns results.json's
content plus the per-clip table. results.json records everything a reviewer needs to re-derive
the numbers: the recipe (id, SHA-256, full definition), every input file with its SHA-256, the
captions used for CLAP, each embedder's checkpoint and weights SHA-256, n clips and n frames,
bootstrap size and seed, package versions. It holds no timestamps or machine names, so the same
inputs give the same file byte for byte; `audit` (evaluation/audit.py) re-derives it.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from siren_bench.cache import ContentCache
from siren_bench.evaluation.clipsets import ClipSet, ClipSetError, require_same_ids
from siren_bench.evaluation.embedding import (
    EmbeddedSet, EmbedderLoader, cached_reference_stats, embed_captions, embed_clips, embedding_knobs, knobs_sha256,
)
from siren_bench.evaluation.reference_stats import LEVELS, NO_REFERENCE, ReferenceStats, ReferenceStatsError
from siren_bench.io import atomic_directory, write_json_atomic
from siren_bench.provenance import package_versions
from siren_bench.recipes import MetricSpec, Recipe
from siren_bench.registry import METRICS
from siren_bench.scoring import reference_gaussian, score_metric

SCHEMA_VERSION = 2  # 2: embedding_compute (device, clips per embedder call) recorded
RESULTS_NAME, PER_CLIP_NAME = "results.json", "per_clip.csv"
# per-clip column of each metric that has per-clip values
PER_CLIP_COLUMNS = {"fad": "fad_clip_fd", "fd": "fd_sq_distance_to_reference_mean", "kl": "kl", "clap": "clap_cosine"}
FACT_COLUMNS = ("sample_rate", "channels", "seconds", "clipped_fraction", "peak")


@dataclass
class ScoreOutcome:
    results: dict  # results.json
    per_clip: pd.DataFrame  # per_clip.csv: one row per generated clip
    cache_hits: int
    cache_misses: int
    # per metric, what its scoring function was given: for re-scoring subsets (evaluation/ranking.py)
    metric_inputs: dict[str, MetricArguments] = dataclasses.field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class MetricArguments:
    """One metric's arguments to scoring.score_metric, as score_sets passed them."""

    spec: MetricSpec
    generated: dict
    reference: dict
    text: dict | None
    reference_stats: object  # level -> GaussianStats


def select_metrics(recipe: Recipe, metrics: list[str] | None) -> list[MetricSpec]:
    if metrics is None:
        return list(recipe.metrics)
    unknown = sorted(set(metrics) - set(METRICS.names()))
    if unknown:
        raise ClipSetError(f"unknown metrics {unknown}; choose from {METRICS.names()}")
    missing = [m for m in metrics if m not in {s.metric for s in recipe.metrics}]
    if missing:
        raise ClipSetError(f"recipe {recipe.id} has no {missing} (it has {[s.metric for s in recipe.metrics]})")
    return [recipe.spec(m) for m in dict.fromkeys(metrics)]


def _captions_for(generated: ClipSet, reference: ClipSet, captions: dict[str, str] | None, source: str | None) -> tuple[dict, str]:
    if captions is None:
        captions, source = reference.captions(), f"{reference.source} (caption column)"
    missing = [cid for cid in generated.ids if cid not in captions]
    if missing:
        raise ClipSetError(f"the CLAP score needs a caption for every generated clip; {len(missing)} have none "
                           f"(e.g. {missing[:3]}) in {source or reference.source}. Pass --captions FILE (clip_id,caption) "
                           "or leave CLAP out with --metrics")
    return {cid: captions[cid] for cid in generated.ids}, source or "given"


def _require_finite(metric: str, result: dict) -> dict:
    """A metric that came out NaN or infinite is an error, not a null in results.json."""
    for key, value in result.items():
        values = value if isinstance(value, list) else [value]
        if any(isinstance(v, float) and not math.isfinite(v) for v in values):
            raise ClipSetError(f"{metric}: {key} is not finite ({value}); the embeddings or logits of these sets "
                               "give an undefined value (e.g. a zero probability under KL with eps 0)")
    return result


def _stats_metrics(reference: ReferenceStats, recipe: Recipe, metrics: list[str] | None) -> list[str]:
    """The metrics scored against a statistics file: by default those it holds; a metric that
    needs the reference clips themselves is refused by name."""
    if metrics is None:
        return [s.metric for s in recipe.metrics if s.metric in reference.metrics]
    need_clips = [m for m in metrics if m not in LEVELS and m not in NO_REFERENCE]
    if need_clips:
        raise ReferenceStatsError(f"{reference.path}: {need_clips} need the reference clips themselves, not their "
                                  f"statistics; give --reference instead, or leave them out of --metrics")
    return metrics


def score_sets(generated: ClipSet, reference: ClipSet | ReferenceStats, recipe: Recipe, loader: EmbedderLoader,
               cache: ContentCache, *, metrics: list[str] | None = None, n_boot: int | None = None,
               captions: dict[str, str] | None = None, captions_source: str | None = None,
               allow_clipped: bool = False) -> ScoreOutcome:
    """`reference`: the reference clips, or their statistics exported under this recipe
    (evaluation/reference_stats.py), which give FAD, FD and FAD-inf bit for bit as the clips would."""
    by_stats = isinstance(reference, ReferenceStats)
    specs = select_metrics(recipe, _stats_metrics(reference, recipe, metrics) if by_stats else metrics)
    names = [s.metric for s in specs]
    if by_stats:
        reference.require_usable(recipe, specs, {s.metric: loader.open(s).info.weights_sha256 for s in specs}, generated.ids)
    if "kl" in names:
        require_same_ids(generated, reference, "KL")
    text_captions = None
    if "clap" in names:
        text_captions, captions_source = _captions_for(generated, reference, captions, captions_source)
    n_boot = recipe.n_boot if n_boot is None else int(n_boot)
    hits, misses = cache.hits, cache.misses

    embedded: dict[str, tuple[EmbeddedSet, EmbeddedSet]] = {}  # knobs hash -> (generated, reference)
    embedders, scores, per_clip, metric_inputs = {}, {}, {}, {}
    for spec in specs:
        group = knobs_sha256(spec)
        embedder = loader.open(spec)
        if group not in embedded:
            label = f"{spec.embedder}/{spec.framing}"
            embedded[group] = (
                embed_clips([generated.clips[c] for c in generated.ids], spec, embedder, cache, allow_clipped=allow_clipped,
                            desc=f"embed generated ({label})", compute=loader.compute),
                None if by_stats else
                embed_clips([reference.clips[c] for c in reference.ids], spec, embedder, cache, allow_clipped=allow_clipped,
                            desc=f"embed reference ({label})", compute=loader.compute),
            )
            gen, ref = embedded[group]
            embedders[group] = {
                **embedding_knobs(spec), "checkpoint_path": str(loader.path(spec)), "info": embedder.info.as_dict(),
                "n_frames_generated": int(sum(e.frames.shape[0] for e in gen.embeddings.values())),
                "n_frames_reference": None if by_stats else int(sum(e.frames.shape[0] for e in ref.embeddings.values())),
            }
        gen, ref = embedded[group]
        text = embed_captions(text_captions, embedder, cache, loader.compute) if spec.metric == "clap" else None
        if by_stats:
            ref_stats = lambda level, metric=spec.metric: reference.gaussian(metric)  # noqa: E731  (level is LEVELS[metric])
        else:
            ref_stats = cached_reference_stats(cache, reference.sha256, spec, embedder.cache_identity, loader.compute,
                                               lambda level, ref=ref: reference_gaussian(ref.embeddings, level))
        arguments = MetricArguments(spec, gen.embeddings, {} if by_stats else ref.embeddings, text, ref_stats)
        try:
            result = score_metric(spec, arguments.generated, arguments.reference, n_boot, recipe.bootstrap_seed, text, ref_stats)
        except ValueError as exc:  # e.g. fewer clips than IS splits: a property of these sets, said with their names
            source = reference.path if by_stats else reference.source
            raise ClipSetError(f"{spec.metric} of {generated.source} against {source}: {exc}") from exc
        if by_stats:  # the reference clips the statistics were made from (score_metric counts the clips it was given)
            result["n_reference"] = len(reference.clip_ids)
        metric_inputs[spec.metric] = arguments
        values = result.pop("per_clip", None)
        if values is not None:
            per_clip[PER_CLIP_COLUMNS[spec.metric]] = values
        scores[spec.metric] = _require_finite(spec.metric, result) | {
            "embedding": group, "weights_sha256": embedder.info.weights_sha256, "options": dict(spec.options)}

    first_gen = next(iter(embedded.values()))[0]
    facts = {cid: dataclasses.asdict(f) for cid, f in first_gen.facts.items()}
    table = pd.DataFrame({"clip_id": generated.ids, "sha256": [generated.clips[c].sha256 for c in generated.ids]})
    for column in FACT_COLUMNS:
        table[column] = [facts[c][column] for c in generated.ids]
    for column, values in per_clip.items():
        table[column] = [values.get(c) for c in generated.ids]
    clipped = {side: sorted({cid for pair in embedded.values() if pair[k] is not None for cid, f in pair[k].facts.items() if f.clipped})
               for k, side in enumerate(("generated", "reference"))}
    results = {
        "schema_version": SCHEMA_VERSION,
        "recipe": {"id": recipe.id, "sha256": recipe.sha256, "definition": recipe.as_dict()},
        "n_bootstrap": n_boot, "bootstrap_seed": recipe.bootstrap_seed,
        "metrics": scores,
        "embedders": embedders,
        "embedding_compute": loader.compute.record(),  # device, clips per call: in the cache keys
        "generated": generated.record(),
        "reference": reference.record(),
        "captions": None if text_captions is None else {"source": captions_source, "texts": text_captions},
        "allow_clipped": allow_clipped, "clipped_clips": clipped,
        "weights_dir": None if loader.weights_dir is None else str(loader.weights_dir),
        "weights_pins": loader.pins,
        "cache_dir": str(cache.root),
        "packages": package_versions(),
    }
    return ScoreOutcome(results, table, cache.hits - hits, cache.misses - misses, metric_inputs)


def write_score(out_dir: str | Path, outcome: ScoreOutcome) -> Path:
    """results.json and per_clip.csv into `out_dir`, swapped in whole. An existing folder is only
    replaced if it holds an earlier score (results.json), so a mistyped --out loses nothing."""
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or (any(out_dir.iterdir()) and not (out_dir / RESULTS_NAME).is_file())):
        raise ClipSetError(f"{out_dir}: exists and is not an earlier score output (no {RESULTS_NAME}); choose another --out")
    with atomic_directory(out_dir) as staging:
        write_json_atomic(staging / RESULTS_NAME, outcome.results)
        outcome.per_clip.to_csv(staging / PER_CLIP_NAME, index=False, lineterminator="\n", float_format="%.17g")
    return out_dir
