"""One recipe's metrics on embedded clips: values, bootstrap CIs and per-clip scores.

Inputs are embeddings already computed by the recipe's embedders (`Embedding` per clip id, for
the generated and the reference set) plus, for CLAP, the caption text embeddings. The generated
set is resampled by clip for the confidence intervals; the reference statistics stay fixed and
are computed once per call, so several systems scored against one reference share them.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from siren_bench.embedders.base import Embedding
from siren_bench.metrics.bootstrap import bootstrap
from siren_bench.metrics.clap_score import clap_scores
from siren_bench.metrics.divergence import inception_score, paired_kl
from siren_bench.metrics.frechet import FrechetResampler, GaussianStats, distance_to_reference_mean, fad_inf, per_clip_frechet
from siren_bench.metrics.kernel import kernel_audio_distance, median_bandwidth
from siren_bench.recipes import MetricSpec


def _logits(clips: dict[str, Embedding], name: str) -> dict[str, np.ndarray]:
    missing = [cid for cid, e in clips.items() if e.logits is None]
    if missing:
        raise ValueError(f"{name}: the embedder gives no logits (clips {missing[:3]}): KL and IS need a classifier head")
    return {cid: e.logits.mean(axis=0) for cid, e in clips.items()}


def clip_level(frames: np.ndarray) -> np.ndarray:
    """A clip's one vector: the mean of its frame embeddings, as a [1, d] float64 row."""
    return np.asarray(frames, dtype=np.float64).mean(axis=0, keepdims=True)


def reference_gaussian(reference: dict[str, Embedding], level: str) -> GaussianStats:
    """Gaussian statistics of a reference set's frames (level "frames": FAD) or clip vectors
    (level "clip": FD), in sorted clip-id order so the float sums never depend on dict order."""
    if level not in ("frames", "clip"):
        raise ValueError(f"level must be 'frames' or 'clip', got {level!r}")
    rows = [np.asarray(reference[i].frames, dtype=np.float64) for i in sorted(reference)]
    if level == "clip":
        rows = [clip_level(r) for r in rows]
    return GaussianStats.from_features(np.concatenate(rows))


def score_metric(spec: MetricSpec, generated: dict[str, Embedding], reference: dict[str, Embedding], n_boot: int,
                 seed: int, text: dict[str, np.ndarray] | None = None,
                 reference_stats: Callable[[str], GaussianStats] | None = None) -> dict:
    """{"metric", "value", CI fields, "n_generated", "n_reference", "n_frames", "per_clip": {id: value}}.

    `reference_stats(level)`, where given, supplies the reference Gaussian (e.g. from a cache
    shared by every system scored against this reference) instead of computing it here."""
    ids = sorted(generated)
    if len(ids) < 2:
        raise ValueError(f"{spec.metric}: need at least 2 generated clips, got {len(ids)}")
    out: dict = {"metric": spec.metric, "embedder": spec.embedder, "n_generated": len(ids), "n_reference": len(reference)}
    metric = spec.metric
    if metric in ("fad", "fd", "fad_inf"):
        frames = [np.asarray(generated[i].frames, dtype=np.float64) for i in ids]
        level = "clip" if metric == "fd" else "frames"  # FD: one vector per clip
        if level == "clip":
            frames = [clip_level(f) for f in frames]
        ref_stats = reference_stats(level) if reference_stats is not None else reference_gaussian(reference, level)
        method = spec.option("fd_method", "eigen")
        out["n_frames"] = int(sum(len(f) for f in frames))
        out["n_reference_frames"] = ref_stats.n
        if metric == "fad_inf":
            result = fad_inf(frames, ref_stats, seed=int(spec.option("seed", 0)), n_points=int(spec.option("n_points", 15)), method=method)
            out.update(value=result.value, ci_low=result.ci_low, ci_high=result.ci_high, intercept_se=result.intercept_se,
                       ci_kind="95 % interval of the fitted intercept (t, points - 2 dof), not a bootstrap",
                       slope=result.slope, r_squared=result.r_squared, sizes=result.sizes, fd_values=result.fd_values)
            return out

        out.update(bootstrap(FrechetResampler(frames, ref_stats, method), len(ids), n_boot, seed).as_dict())
        per_clip = per_clip_frechet(frames, ref_stats, method) if metric == "fad" else distance_to_reference_mean(frames, ref_stats)
        out["per_clip_kind"] = "per-clip FD of the clip's frames" if metric == "fad" else "squared distance to the reference mean"
        out["per_clip"] = dict(zip(ids, per_clip))
        return out
    if metric == "kad":
        x = np.stack([np.asarray(generated[i].frames, dtype=np.float64).mean(axis=0) for i in ids])
        y = np.stack([np.asarray(reference[i].frames, dtype=np.float64).mean(axis=0) for i in sorted(reference)])
        sigma = median_bandwidth(y)
        out.update(bootstrap(lambda idx: kernel_audio_distance(x[idx], y, sigma)[0], len(ids), n_boot, seed).as_dict())
        out.update(bandwidth=sigma, scale="x100")
        return out
    if metric == "kl":
        ref_logits, gen_logits = _logits(reference, "reference"), _logits(generated, "generated")
        results = {}
        for direction in dict.fromkeys([spec.option("direction", "ref_gen"), spec.option("also")]):
            if direction is None:
                continue
            paired = paired_kl(ref_logits, gen_logits, direction, float(spec.option("eps", 0.0)))
            results[direction] = paired
        main = results[spec.option("direction", "ref_gen")]
        out.update(bootstrap(lambda idx: float(main.per_clip[idx].mean()), len(main.clip_ids), n_boot, seed).as_dict())
        out.update(direction=main.direction, eps=main.eps, per_clip=dict(zip(main.clip_ids, main.per_clip.tolist())))
        for direction, other in results.items():
            if direction != main.direction:
                out[f"value_{direction}"] = other.mean
        return out
    if metric == "is":
        logits = np.stack([_logits(generated, "generated")[i] for i in ids])
        splits, is_seed, shuffle = int(spec.option("splits", 10)), spec.option("seed", 0), bool(spec.option("shuffle", True))
        result = inception_score(logits, splits, is_seed, shuffle)
        out.update(bootstrap(lambda idx: inception_score(logits[idx], splits, is_seed, shuffle).mean, len(ids), n_boot, seed).as_dict())
        out.update(value=result.mean, split_std=result.std, splits=splits, split_seed=result.seed)
        return out
    if metric == "clap":
        if text is None:
            raise ValueError("clap: caption text embeddings are needed")
        audio = {i: np.asarray(generated[i].frames, dtype=np.float64).mean(axis=0) for i in ids}
        missing = sorted(set(ids) - set(text))
        if missing:
            raise ValueError(f"clap: {len(missing)} generated clips have no caption embedding (e.g. {missing[:3]})")
        clip_ids, cosines = clap_scores(audio, {i: text[i] for i in ids})
        out.update(bootstrap(lambda idx: float(cosines[idx].mean()), len(clip_ids), n_boot, seed).as_dict())
        out.update(scale="raw cosine", value_x100=100.0 * out["value"], per_clip=dict(zip(clip_ids, cosines.tolist())))
        return out
    raise ValueError(f"unknown metric {metric!r}")
