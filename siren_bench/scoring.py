"""One recipe's metrics on embedded clips: values, bootstrap CIs and per-clip scores.

Inputs are embeddings already computed by the recipe's embedders (`Embedding` per clip id, for
the generated and the reference set) plus, for CLAP, the caption text embeddings. The generated
set is resampled by clip for the confidence intervals; the reference statistics stay fixed and
are computed once per call, so several systems scored against one reference share them.

Each metric is computed by the scoring function its module registers (siren_bench/registry.py);
the import below is where a metric module is registered. A new metric: a new module in
siren_bench/metrics/ with `@METRICS.register("name")`, and its name in this import.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from siren_bench.embedders.base import Embedding
from siren_bench.metrics import clap_score, divergence, frechet, kernel  # noqa: F401  (each registers its metrics)
from siren_bench.metrics.base import MetricInputs
from siren_bench.metrics.frechet import GaussianStats, reference_gaussian  # noqa: F401  (re-exported for the scorers)
from siren_bench.recipes import MetricSpec
from siren_bench.registry import METRICS, RegistryError


def score_metric(spec: MetricSpec, generated: dict[str, Embedding], reference: dict[str, Embedding], n_boot: int,
                 seed: int, text: dict[str, np.ndarray] | None = None,
                 reference_stats: Callable[[str], GaussianStats] | None = None, value_only: bool = False) -> dict:
    """{"metric", "value", CI fields, "n_generated", "n_reference", "n_frames", "per_clip": {id: value}}.

    `reference_stats(level)`, where given, supplies the reference Gaussian (e.g. from a cache
    shared by every system scored against this reference) instead of computing it here.
    `value_only`: the value alone (the same number), without its interval or per-clip values."""
    try:
        scorer = METRICS.get(spec.metric)
    except RegistryError as exc:
        raise ValueError(str(exc)) from None
    ids = sorted(generated)
    if len(ids) < 2:
        raise ValueError(f"{spec.metric}: need at least 2 generated clips, got {len(ids)}")
    out: dict = {"metric": spec.metric, "embedder": spec.embedder, "n_generated": len(ids), "n_reference": len(reference)}
    out.update(scorer(MetricInputs(spec, generated, reference, ids, n_boot, seed, text, reference_stats, value_only)))
    return out
