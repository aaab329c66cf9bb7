"""What every metric's scoring function receives, and the embedding-to-array helpers they share.

A metric module holds its arithmetic (functions on arrays, checked against known answers) and
one scoring function per metric name, registered with `@METRICS.register(name)`
(siren_bench/registry.py). `siren_bench.scoring.score_metric` calls it with a `MetricInputs`
and merges the fields it returns (value, interval, per-clip scores, options used) into the
metric's entry of results.json.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from siren_bench.embedders.base import Embedding
from siren_bench.recipes import MetricSpec


@dataclass(frozen=True)
class MetricInputs:
    spec: MetricSpec                      # the recipe's entry: embedder, framing, options
    generated: dict[str, Embedding]       # clip id -> embedding of the system's clip
    reference: dict[str, Embedding]       # clip id -> embedding of the reference clip
    ids: list[str]                        # the generated clip ids, sorted (the bootstrap's items)
    n_boot: int                           # bootstrap resamples for the interval
    seed: int                             # the bootstrap's seed
    text: dict[str, np.ndarray] | None = None  # caption embeddings (CLAP score)
    reference_stats: Callable | None = None    # level -> reference Gaussian, shared across systems
    value_only: bool = False                   # just {"value": ...}: no interval, no per-clip values (ranking's subsets)


def clip_level(frames: np.ndarray) -> np.ndarray:
    """A clip's one vector: the mean of its frame embeddings, as a [1, d] float64 row."""
    return np.asarray(frames, dtype=np.float64).mean(axis=0, keepdims=True)


def clip_logits(clips: dict[str, Embedding], name: str) -> dict[str, np.ndarray]:
    """Each clip's classifier logits averaged over its frames; an embedder without a head is an error."""
    missing = [cid for cid, e in clips.items() if e.logits is None]
    if missing:
        raise ValueError(f"{name}: the embedder gives no logits (clips {missing[:3]}): KL and IS need a classifier head")
    return {cid: e.logits.mean(axis=0) for cid, e in clips.items()}
