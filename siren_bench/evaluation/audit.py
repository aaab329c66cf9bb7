"""`siren-bench audit RESULTS`: re-derive a score from its inputs and say what differs.

Checks, in order: the recipe (the registry's definition of the recorded id still hashes to the
recorded SHA-256); every input file (present, same SHA-256); the captions; every embedder's
weights (loaded again, same weights SHA-256); then every number: the score is recomputed from
the cached embeddings (entries missing from the cache are recomputed from the files and
counted) and each metric value, interval and per-clip value is compared with the recorded one.
Recomputation on the same machine and thread count is deterministic, so the tolerance is only
float noise (relative 1e-9).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from siren_bench.cache import ContentCache
from siren_bench.evaluation.clipsets import Clip, ClipSet
from siren_bench.evaluation.embedding import EmbedderLoader
from siren_bench.evaluation.score import PER_CLIP_NAME, RESULTS_NAME, SCHEMA_VERSION, score_sets
from siren_bench.io import sha256_file
from siren_bench.recipes import get_recipe
from siren_bench.weights import CheckpointError

RELATIVE_TOLERANCE = 1e-9


@dataclass
class AuditReport:
    results_path: Path
    checks: list[tuple[str, bool, str]] = field(default_factory=list)  # (what, ok, detail)
    cache_hits: int = 0
    cache_misses: int = 0

    def add(self, what: str, ok: bool, detail: str = "") -> None:
        self.checks.append((what, ok, detail))

    @property
    def ok(self) -> bool:
        return all(ok for _, ok, _ in self.checks)

    @property
    def differences(self) -> list[str]:
        return [f"{what}: {detail}" for what, ok, detail in self.checks if not ok]

    def text(self) -> str:
        lines = [f"audit of {self.results_path}: {len(self.checks)} checks, {len(self.differences)} differ",
                 f"embeddings: {self.cache_hits} read from the cache, {self.cache_misses} recomputed from the files"]
        lines += [f"  DIFFERS  {d}" for d in self.differences]
        if self.ok:
            lines.append("  every recorded hash and number was re-derived")
        return "\n".join(lines)


def _close(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, (list, tuple)) or isinstance(b, (list, tuple)):
        return isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) and len(a) == len(b) and all(map(_close, a, b))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(float(a), float(b), rel_tol=RELATIVE_TOLERANCE, abs_tol=1e-12)
    return a == b


def _clip_set(record: dict, report: AuditReport, side: str) -> ClipSet:
    clips = {}
    for entry in record["clips"]:
        path = Path(entry["path"])
        if not path.is_file():
            report.add(f"{side} file {path}", False, "missing")
            continue
        actual = sha256_file(path)
        if actual != entry["sha256"]:
            report.add(f"{side} file {path}", False, f"SHA-256 {actual} differs from the recorded {entry['sha256']}")
        clips[entry["clip_id"]] = Clip(entry["clip_id"], path, actual)
    report.add(f"{side} files", len(clips) == record["n_clips"], f"{len(clips)} of {record['n_clips']} present")
    return ClipSet(record["source"], record["kind"], clips, record.get("split"))


def audit(results_path: str | Path, cache_dir: str | Path | None = None, weights_dir: str | Path | None = None) -> AuditReport:
    results_path = Path(results_path)
    folder = results_path.parent if results_path.name == RESULTS_NAME else results_path
    results_path = folder / RESULTS_NAME
    report = AuditReport(results_path)
    recorded = json.loads(results_path.read_text(encoding="utf-8"))
    if recorded.get("schema_version") != SCHEMA_VERSION:
        report.add("schema", False, f"version {recorded.get('schema_version')} is not {SCHEMA_VERSION}")
        return report

    recipe = get_recipe(recorded["recipe"]["id"])
    report.add("recipe", recipe.sha256 == recorded["recipe"]["sha256"],
               f"{recipe.id} now hashes to {recipe.sha256}, recorded {recorded['recipe']['sha256']} (its definition changed)")
    generated = _clip_set(recorded["generated"], report, "generated")
    reference = _clip_set(recorded["reference"], report, "reference")

    loader = EmbedderLoader(weights_dir or recorded["weights_dir"], recorded.get("weights_pins"))
    metric_names = [s.metric for s in recipe.metrics if s.metric in recorded["metrics"]]  # the scorer's order
    for metric in metric_names:
        spec = recipe.spec(metric)
        try:
            actual = loader.open(spec).info.weights_sha256
        except (CheckpointError, OSError, ValueError) as exc:
            report.add(f"weights of {metric} ({spec.embedder})", False, f"cannot be loaded: {exc}")
            continue
        expected = recorded["metrics"][metric]["weights_sha256"]
        report.add(f"weights of {metric} ({spec.embedder})", actual == expected, f"SHA-256 {actual}, recorded {expected}")
    if not report.ok:
        return report  # numbers from other inputs would differ for a known reason

    captions = recorded["captions"]
    cache = ContentCache(cache_dir or recorded["cache_dir"])
    outcome = score_sets(generated, reference, recipe, loader, cache, metrics=metric_names, n_boot=recorded["n_bootstrap"],
                         captions=None if captions is None else captions["texts"],
                         captions_source=None if captions is None else captions["source"],
                         allow_clipped=recorded["allow_clipped"])
    report.cache_hits, report.cache_misses = outcome.cache_hits, outcome.cache_misses
    for metric, values in recorded["metrics"].items():
        again = outcome.results["metrics"][metric]
        differing = [key for key in sorted(set(values) | set(again)) if not _close(values.get(key), again.get(key))]
        report.add(metric, not differing,
                   "; ".join(f"{metric}.{k} recorded {values.get(k)!r}, recomputed {again.get(k)!r}" for k in differing))
    _compare_per_clip(folder / PER_CLIP_NAME, outcome.per_clip, report)
    return report


def _compare_per_clip(path: Path, recomputed: pd.DataFrame, report: AuditReport) -> None:
    if not path.is_file():
        report.add(PER_CLIP_NAME, False, "missing")
        return
    recorded = pd.read_csv(path, dtype={"clip_id": str, "sha256": str})
    if list(recorded.columns) != list(recomputed.columns) or recorded["clip_id"].tolist() != recomputed["clip_id"].tolist():
        report.add(PER_CLIP_NAME, False, f"columns or clip ids differ from the recomputed table ({list(recomputed.columns)})")
        return
    for column in recomputed.columns:
        a, b = recorded[column].to_numpy(), recomputed[column].to_numpy()
        if column in ("clip_id", "sha256"):
            same = bool((a == b).all())
        else:
            a, b = a.astype(np.float64), b.astype(np.float64)
            same = bool(np.allclose(a, b, rtol=RELATIVE_TOLERANCE, atol=1e-12, equal_nan=True))
        report.add(f"{PER_CLIP_NAME}:{column}", same, "per-clip values differ" if not same else "")
