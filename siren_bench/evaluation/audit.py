"""`siren-bench audit RESULTS`: re-derive a score from its inputs and say what differs.

Checks, in order: the recipe (the registry's definition of the recorded id still hashes to the
recorded SHA-256); every input file (present, same SHA-256), or the reference statistics file
(same SHA-256) a score against statistics used; the captions; every embedder's
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
from siren_bench.errors import AuditError, ConfigError
from siren_bench.data.manifest import clip_sha256
from siren_bench.evaluation.clipsets import Clip, ClipSet
from siren_bench.evaluation.embedding import EmbedderLoader, resolve_compute
from siren_bench.evaluation.reference_stats import ReferenceStats, ReferenceStatsError, read_reference_stats
from siren_bench.evaluation.score import PER_CLIP_NAME, RESULTS_NAME, SCHEMA_VERSION, score_sets
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
        decode = entry.get("decode", "")
        actual = clip_sha256(path, decode)  # a source decoded where read: the hash of the clip it makes
        if actual != entry["sha256"]:
            report.add(f"{side} file {path}", False, f"SHA-256 {actual} differs from the recorded {entry['sha256']}")
        clips[entry["clip_id"]] = Clip(entry["clip_id"], path, actual, decode=decode)
    report.add(f"{side} files", len(clips) == record["n_clips"], f"{len(clips)} of {record['n_clips']} present")
    return ClipSet(record["source"], record["kind"], clips, record.get("split"))


def _reference(record: dict, report: AuditReport) -> ClipSet | ReferenceStats | None:
    """The reference as recorded: its clips, or the statistics file it was scored against."""
    if record["kind"] != "stats":
        return _clip_set(record, report, "reference")
    try:
        stats = read_reference_stats(record["source"])
    except ReferenceStatsError as exc:
        report.add("reference statistics", False, str(exc))
        return None
    same = stats.header["npz_sha256"] == record["npz_sha256"]
    report.add("reference statistics", same, f"{stats.path} is now {stats.header['npz_sha256']}, recorded {record['npz_sha256']}")
    return stats


# What a score's results.json must hold for an audit (key -> accepted JSON types).
REQUIRED = {"recipe": dict, "generated": dict, "reference": dict, "metrics": dict, "weights_dir": str, "cache_dir": str,
            "n_bootstrap": int, "allow_clipped": bool, "captions": (dict, type(None))}
CLIP_SET_KEYS = ("clips", "n_clips", "source", "kind")
STATS_KEYS = ("source", "kind", "npz_sha256")  # a reference given as statistics (evaluation/reference_stats.py)


def read_results(results_path: str | Path) -> tuple[Path, dict]:
    """(the results file, its parsed object); a path that is not a score's results.json, or a file
    that is not JSON, not an object, or lacks what an audit needs, is an AuditError naming it."""
    path = Path(results_path)
    if path.is_dir():
        path = path / RESULTS_NAME
    if not path.is_file():
        raise AuditError(f"{path}: no such file (give a score's {RESULTS_NAME} or the folder holding it)")
    try:
        recorded = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AuditError(f"{path}: not a JSON file ({exc})") from None
    if not isinstance(recorded, dict):
        raise AuditError(f"{path}: holds a JSON {type(recorded).__name__}, not the object `siren-bench score` writes")
    if recorded.get("schema_version") != SCHEMA_VERSION:
        return path, recorded  # reported as a difference, not refused: an older score is still a score
    missing = [key for key in REQUIRED if key not in recorded]
    wrong = [key for key, kind in REQUIRED.items() if key in recorded and not isinstance(recorded[key], kind)]
    bad_sets = [side for side in ("generated", "reference") if isinstance(recorded.get(side), dict)
                and not all(k in recorded[side] for k in (STATS_KEYS if recorded[side].get("kind") == "stats" else CLIP_SET_KEYS))]
    recipe = recorded.get("recipe")
    if isinstance(recipe, dict) and not all(isinstance(recipe.get(k), str) for k in ("id", "sha256")):
        wrong.append("recipe (needs string id and sha256)")
    if missing or wrong or bad_sets:
        raise AuditError(f"{path}: not a complete score record: " + "; ".join(
            part for part in (f"missing {missing}" if missing else "", f"of the wrong type {wrong}" if wrong else "",
                              f"clip sets without {list(CLIP_SET_KEYS)}: {bad_sets}" if bad_sets else "") if part))
    try:
        get_recipe(recipe["id"])
    except KeyError as exc:
        raise AuditError(f"{path}: {exc.args[0]}") from None
    return path, recorded


def audit(results_path: str | Path, cache_dir: str | Path | None = None, weights_dir: str | Path | None = None) -> AuditReport:
    results_path, recorded = read_results(results_path)
    folder = results_path.parent
    report = AuditReport(results_path)
    if recorded.get("schema_version") != SCHEMA_VERSION:
        report.add("schema", False, f"version {recorded.get('schema_version')} is not {SCHEMA_VERSION}")
        return report

    recipe = get_recipe(recorded["recipe"]["id"])
    report.add("recipe", recipe.sha256 == recorded["recipe"]["sha256"],
               f"{recipe.id} now hashes to {recipe.sha256}, recorded {recorded['recipe']['sha256']} (its definition changed)")
    try:
        generated = _clip_set(recorded["generated"], report, "generated")
        reference = _reference(recorded["reference"], report)
    except (KeyError, TypeError, ValueError) as exc:
        raise AuditError(f"{results_path}: a clip entry is malformed ({exc!r}); each needs clip_id, path and sha256") from None

    ran = recorded["embedding_compute"]  # the same device kind and clips per call: the same cache keys
    try:
        compute = resolve_compute("cuda" if ran["device"].startswith("cuda") else "cpu", ran["batch_clips"],
                                  ran.get("loader_threads", 0), str(results_path))
    except ConfigError as exc:
        raise AuditError(f"{exc} (the results were embedded there; audit them on such a machine)") from None
    loader = EmbedderLoader(weights_dir or recorded["weights_dir"], recorded.get("weights_pins"), compute)
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
    try:
        recorded = pd.read_csv(path, dtype={"clip_id": str, "sha256": str})
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        report.add(PER_CLIP_NAME, False, f"cannot be read as CSV: {exc}")
        return
    if list(recorded.columns) != list(recomputed.columns) or recorded["clip_id"].tolist() != recomputed["clip_id"].tolist():
        report.add(PER_CLIP_NAME, False, f"columns or clip ids differ from the recomputed table ({list(recomputed.columns)})")
        return
    for column in recomputed.columns:
        a, b = recorded[column].to_numpy(), recomputed[column].to_numpy()
        if column in ("clip_id", "sha256"):
            same = bool((a == b).all())
        else:
            try:
                a = a.astype(np.float64)
            except (TypeError, ValueError):
                report.add(f"{PER_CLIP_NAME}:{column}", False, "holds values that are not numbers")
                continue
            same = bool(np.allclose(a, b.astype(np.float64), rtol=RELATIVE_TOLERANCE, atol=1e-12, equal_nan=True))
        report.add(f"{PER_CLIP_NAME}:{column}", same, "per-clip values differ" if not same else "")
