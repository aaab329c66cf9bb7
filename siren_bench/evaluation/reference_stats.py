"""Reference statistics as files: a reference set's Gaussian statistics under a recipe, shared
without its audio (the way fadtk and stable-audio-metrics ship theirs).

`export_reference_stats` writes FILE.npz (per Fréchet-type metric of the recipe: n, the sum and
the sum of outer products of the rows the metric fits, float64, exactly what scoring against the
audio computes) and FILE.json beside it: the recipe id and SHA-256, each metric's embedder,
knobs and weights SHA-256, the clip list (ids, their hash, the audio's hash), how the embeddings
were computed, and the npz's SHA-256. `read_reference_stats` checks all of that before any number
is used: a truncated or edited npz, another recipe, other weights or another clip list is
refused with the file named. Scoring against the file (evaluation/score.py) gives the same FD,
FAD and FAD-inf as scoring against the audio, bit for bit, under the same embedding compute.

Only metrics whose reference side is a Gaussian (FAD, FD, FAD-inf) can come from a file; KAD,
KL and CLAP need the reference clips themselves, and IS needs no reference at all.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from siren_bench.cache import ContentCache
from siren_bench.distributed import rank_and_world
from siren_bench.errors import ClipSetError
from siren_bench.evaluation.clipsets import ClipSet
from siren_bench.evaluation.embedding import EmbedderLoader, embed_clips, embedding_knobs, knobs_sha256
from siren_bench.io import atomic_path, sha256_file, sha256_json, write_json_atomic
from siren_bench.metrics.frechet import GaussianStats, reference_gaussian
from siren_bench.recipes import MetricSpec, Recipe

FORMAT, FORMAT_VERSION = "siren-bench reference statistics", 1
LEVELS = {"fad": "frames", "fad_inf": "frames", "fd": "clip"}  # the rows each metric's Gaussian is fitted to
NO_REFERENCE = ("is",)  # metrics scored from the generated clips alone
ARRAYS = ("n", "total", "outer")


class ReferenceStatsError(ClipSetError):
    """A reference statistics file that cannot be used as given; the message names the file."""


def clip_ids_sha256(ids: list[str]) -> str:
    return sha256_json(sorted(ids))


def _paths(path: str | Path) -> tuple[Path, Path]:
    npz = Path(path)
    if npz.suffix != ".npz":
        raise ReferenceStatsError(f"{npz}: reference statistics are FILE.npz with FILE.json beside it; give the .npz")
    return npz, npz.with_suffix(".json")


def _entry_name(spec: MetricSpec) -> str:
    return f"{knobs_sha256(spec)[:16]}-{LEVELS[spec.metric]}"


@dataclass
class ReferenceStats:
    """A checked statistics file: its header (the JSON) and one Gaussian per entry."""

    path: Path  # the .npz
    header: dict
    gaussians: dict[str, GaussianStats]  # entry name -> statistics

    @property
    def clip_ids(self) -> list[str]:
        return list(self.header["list"]["clip_ids"])

    @property
    def metrics(self) -> list[str]:
        return list(self.header["metrics"])

    def gaussian(self, metric: str) -> GaussianStats:
        return self.gaussians[self.header["metrics"][metric]["entry"]]

    def record(self) -> dict:
        """What results.json says of a reference given as statistics: enough for `audit` to re-read it."""
        return {"kind": "stats", "source": str(self.path), "npz_sha256": self.header["npz_sha256"],
                "recipe": self.header["recipe"], "list": {k: v for k, v in self.header["list"].items() if k != "clip_ids"},
                "n_clips": self.header["list"]["n_clips"]}

    def require_usable(self, recipe: Recipe, specs: list[MetricSpec], weights_sha256: dict[str, str], generated_ids: list[str]) -> None:
        """Refuse, naming the file, to score `specs` of `recipe` (embedders with these weights) for
        generated clips `generated_ids` against statistics made under anything else."""
        made = self.header["recipe"]
        if (made["id"], made["sha256"]) != (recipe.id, recipe.sha256):
            raise ReferenceStatsError(f"{self.path}: made under recipe {made['id']} ({made['sha256'][:12]}), not "
                                      f"{recipe.id} ({recipe.sha256[:12]}); export the statistics again under this recipe")
        for spec in specs:
            if spec.metric in NO_REFERENCE:
                continue
            entry = self.header["metrics"].get(spec.metric)
            if entry is None:
                raise ReferenceStatsError(f"{self.path}: holds no statistics for {spec.metric} (it has {self.metrics}); "
                                          f"{spec.metric} needs the reference audio (--reference) or statistics exported for it")
            if entry["weights_sha256"] != weights_sha256[spec.metric]:
                raise ReferenceStatsError(f"{self.path}: {spec.metric} statistics were made with {entry['embedder']} weights "
                                          f"{entry['weights_sha256'][:12]}, but the loaded checkpoint hashes to "
                                          f"{weights_sha256[spec.metric][:12]}")
        listed = set(self.clip_ids)
        missing, extra = sorted(listed - set(generated_ids)), sorted(set(generated_ids) - listed)
        if missing or extra:
            parts = [f"{len(missing)} of its {len(listed)} listed clips have no generated clip (e.g. {missing[:3]})" if missing else "",
                     f"{len(extra)} generated clips are not on its list (e.g. {extra[:3]})" if extra else ""]
            raise ReferenceStatsError(f"{self.path}: made from another clip list than the generated set's: "
                                      + "; ".join(p for p in parts if p) + " (the protocol renders the reference list's captions)")


def export_reference_stats(reference: ClipSet, recipe: Recipe, specs: list[MetricSpec], loader: EmbedderLoader,
                           cache: ContentCache, out: str | Path, allow_clipped: bool = False) -> ReferenceStats:
    """Embed `reference` (through the cache) and write its statistics for the Fréchet-type metrics
    among `specs` to OUT.npz + OUT.json (each written whole, the npz first). Under torchrun every
    rank calls it (the embedding is shared, evaluation/embedding.py) and rank 0 alone writes."""
    npz_path, json_path = _paths(out)
    chosen = [s for s in specs if s.metric in LEVELS]
    if not chosen:
        raise ReferenceStatsError(f"{npz_path}: none of the metrics {[s.metric for s in specs]} has reference statistics; "
                                  f"only {sorted(LEVELS)} do")
    if len(reference) < 2:
        raise ReferenceStatsError(f"{reference.source}: {len(reference)} clip(s); a covariance needs at least 2")
    arrays, metrics, embedded = {}, {}, {}
    for spec in chosen:
        embedder = loader.open(spec)
        group = knobs_sha256(spec)
        if group not in embedded:
            embedded[group] = embed_clips([reference.clips[c] for c in reference.ids], spec, embedder, cache,
                                          allow_clipped=allow_clipped, desc=f"embed reference ({spec.embedder}/{spec.framing})",
                                          compute=loader.compute)
        name = _entry_name(spec)
        if name not in arrays:
            stats = reference_gaussian(embedded[group].embeddings, LEVELS[spec.metric])
            arrays[name] = stats
        metrics[spec.metric] = {"entry": name, "level": LEVELS[spec.metric], "embedder": spec.embedder,
                                "checkpoint": spec.checkpoint, "weights_sha256": embedder.info.weights_sha256,
                                "knobs": embedding_knobs(spec), "dim": int(arrays[name].total.shape[0]), "n_rows": arrays[name].n}
    flat = {f"{name}/{field}": np.asarray(getattr(stats, field), dtype=np.int64 if field == "n" else np.float64)
            for name, stats in arrays.items() for field in ARRAYS}
    if rank_and_world()[0] > 0:
        return ReferenceStats(npz_path, {"metrics": metrics}, arrays)
    with atomic_path(npz_path) as staging:
        with open(staging, "wb") as handle:
            np.savez(handle, **flat)  # zip entries carry a fixed date: the same statistics give the same bytes
    header = {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "recipe": {"id": recipe.id, "sha256": recipe.sha256},
        "list": {"source": reference.source, "split": reference.split, "n_clips": len(reference),
                 "clip_ids_sha256": clip_ids_sha256(reference.ids), "audio_sha256": reference.sha256, "clip_ids": reference.ids},
        "metrics": metrics,
        "embedding_compute": loader.compute.record(),
        "npz_sha256": sha256_file(npz_path),
    }
    write_json_atomic(json_path, header)
    return ReferenceStats(npz_path, header, arrays)


def read_reference_stats(path: str | Path) -> ReferenceStats:
    """A statistics file and its header, checked: both present, the header of this format and
    complete, the npz the one the header hashed, every array of the shape its header says."""
    npz_path, json_path = _paths(path)
    for p in (npz_path, json_path):
        if not p.is_file():
            raise ReferenceStatsError(f"{p}: no such file (reference statistics are FILE.npz and FILE.json, from "
                                      "`siren-bench stats export`)")
    try:
        header = json.loads(json_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ReferenceStatsError(f"{json_path}: not a JSON file ({exc})") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ReferenceStatsError(f"{json_path}: not a siren-bench reference statistics header (no \"format\": {FORMAT!r})")
    if header.get("format_version") != FORMAT_VERSION:
        raise ReferenceStatsError(f"{json_path}: format version {header.get('format_version')!r}; this siren-bench reads {FORMAT_VERSION}")
    try:
        recipe, listed, metrics, digest = header["recipe"], header["list"], header["metrics"], header["npz_sha256"]
        recipe["id"], recipe["sha256"], listed["clip_ids"], listed["n_clips"]
        entries = {m: (e["entry"], e["dim"], e["weights_sha256"]) for m, e in metrics.items()}
    except (KeyError, TypeError) as exc:
        raise ReferenceStatsError(f"{json_path}: incomplete header (missing {exc})") from None
    unknown = sorted(set(metrics) - set(LEVELS))
    if unknown or listed["n_clips"] != len(listed["clip_ids"]) or listed.get("clip_ids_sha256") != clip_ids_sha256(listed["clip_ids"]):
        raise ReferenceStatsError(f"{json_path}: inconsistent header (metrics {unknown} have no statistics, or the clip list "
                                  "does not match its count or hash)")
    actual = sha256_file(npz_path)
    if actual != digest:
        raise ReferenceStatsError(f"{npz_path}: SHA-256 {actual} is not the {digest} its header recorded "
                                  "(truncated, edited, or from another export)")
    try:
        with np.load(npz_path, allow_pickle=False) as data:
            gaussians = {}
            for name, dim in {e: d for e, d, _ in entries.values()}.items():
                n, total, outer = (data[f"{name}/{field}"] for field in ARRAYS)
                if n.shape != () or total.shape != (dim,) or outer.shape != (dim, dim):
                    raise ReferenceStatsError(f"{npz_path}: entry {name} has shapes {n.shape}, {total.shape}, {outer.shape}, "
                                              f"not (), ({dim},), ({dim}, {dim})")
                gaussians[name] = GaussianStats(int(n), total.astype(np.float64), outer.astype(np.float64))
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        if isinstance(exc, ReferenceStatsError):
            raise
        raise ReferenceStatsError(f"{npz_path}: cannot be read as reference statistics ({exc})") from None
    return ReferenceStats(npz_path, header, gaussians)

