"""Content-addressed cache: keys from content, corruption detected and recomputed."""

from __future__ import annotations

import numpy as np
import pytest

from siren_bench.cache import ContentCache, cache_key


def test_key_changes_with_every_part():
    base = dict(audio="a" * 64, recipe="r1", weights="w1")
    keys = {cache_key(**base)} | {cache_key(**(base | {k: v})) for k, v in [("audio", "b" * 64), ("recipe", "r2"), ("weights", "w2")]}
    assert len(keys) == 4
    assert cache_key(**base) == cache_key(weights="w1", recipe="r1", audio="a" * 64)  # order-free


def test_round_trip_and_hit_counting(tmp_path):
    cache = ContentCache(tmp_path)
    key = cache_key(x=1)
    calls = []

    def compute():
        calls.append(1)
        return {"emb": np.arange(6, dtype=np.float64).reshape(2, 3)}

    first = cache.get_or_compute(key, compute)
    second = cache.get_or_compute(key, compute)
    assert len(calls) == 1 and cache.hits == 1 and cache.misses == 1
    assert np.array_equal(first["emb"], second["emb"]) and second["emb"].dtype == np.float64


def test_corrupted_entry_is_detected_and_recomputed(tmp_path):
    cache = ContentCache(tmp_path)
    key = cache_key(x=2)
    cache.put(key, {"v": np.ones(100)})
    payload = next(tmp_path.rglob("*.npz"))
    raw = bytearray(payload.read_bytes())
    raw[-20] ^= 0xFF
    payload.write_bytes(bytes(raw))
    assert cache.get(key) is None
    fresh = cache.get_or_compute(key, lambda: {"v": np.full(100, 2.0)})
    assert np.all(fresh["v"] == 2.0) and np.all(cache.get(key)["v"] == 2.0)


def test_entry_without_checksum_is_a_miss(tmp_path):
    cache = ContentCache(tmp_path)
    key = cache_key(x=3)
    cache.put(key, {"v": np.ones(3)})
    next(tmp_path.rglob("*.sha256")).unlink()
    assert cache.get(key) is None


def test_keys_must_be_digests(tmp_path):
    with pytest.raises(ValueError, match="SHA-256"):
        ContentCache(tmp_path).get("../../etc/passwd")
