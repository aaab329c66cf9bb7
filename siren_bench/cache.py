"""A content-addressed cache for expensive intermediate results (embeddings, statistics).

Keys are hashes of what determines the value (audio content hash, recipe hash, weights hash,
...), never of folder paths, so a changed input can never be answered with a stale value.
Each entry stores a checksum of its payload; a corrupted entry is detected on read, deleted
and reported as a miss, so the caller recomputes it instead of using it.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from siren_bench.io import atomic_path, sha256_bytes, sha256_json

log = logging.getLogger(__name__)
Arrays = dict[str, np.ndarray]


def cache_key(**parts: Any) -> str:
    """Hash of named key parts; every part must be JSON-able (hashes, numbers, strings)."""
    return sha256_json(parts)


class ContentCache:
    """Arrays stored under `root/<key[:2]>/<key>.npz` with a SHA-256 sidecar of the payload."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        if self.root.exists() and not self.root.is_dir():
            raise NotADirectoryError(f"{self.root}: the cache is a file, not a folder; give a folder (or a path not yet used)")
        self.hits = 0
        self.misses = 0

    def _paths(self, key: str) -> tuple[Path, Path]:
        if len(key) != 64 or any(c not in "0123456789abcdef" for c in key):
            raise ValueError(f"cache key must be a SHA-256 hex digest, got {key!r}")
        base = self.root / key[:2] / key
        return base.with_suffix(".npz"), base.with_suffix(".sha256")

    def get(self, key: str) -> Arrays | None:
        payload_path, checksum_path = self._paths(key)
        if not payload_path.is_file() or not checksum_path.is_file():
            self.misses += 1
            return None
        payload = payload_path.read_bytes()
        # Compared as bytes: a damaged sidecar need not even be valid text.
        if sha256_bytes(payload).encode() != checksum_path.read_bytes().strip():
            log.warning("cache entry %s is corrupt (checksum mismatch); recomputing", payload_path)
            payload_path.unlink(missing_ok=True)
            checksum_path.unlink(missing_ok=True)
            self.misses += 1
            return None
        with np.load(io.BytesIO(payload), allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
        self.hits += 1
        return arrays

    def put(self, key: str, arrays: Mapping[str, np.ndarray]) -> None:
        payload_path, checksum_path = self._paths(key)
        buffer = io.BytesIO()
        np.savez(buffer, **{name: np.asarray(value) for name, value in arrays.items()})
        payload = buffer.getvalue()
        with atomic_path(payload_path) as tmp:
            tmp.write_bytes(payload)
        # The checksum lands last: an entry without it is a miss, never a trusted partial.
        with atomic_path(checksum_path) as tmp:
            tmp.write_text(sha256_bytes(payload) + "\n")

    def get_or_compute(self, key: str, compute: Callable[[], Mapping[str, np.ndarray]]) -> Arrays:
        cached = self.get(key)
        if cached is not None:
            return cached
        arrays = {name: np.asarray(value) for name, value in compute().items()}
        self.put(key, arrays)
        return arrays
