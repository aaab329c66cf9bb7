"""SynthCaps generation throughput (run with `make bench`; `make test` runs each once, untimed)."""

from __future__ import annotations

import pytest

from siren_bench.data.synthcaps import generate_clip


@pytest.mark.parametrize("clip_seconds", [4.0, 10.0])
def test_generate_clip_16k(benchmark, clip_seconds):
    counter = iter(range(10**9))
    clip = benchmark(lambda: generate_clip(1234, next(counter), 16000, clip_seconds))
    assert clip.wave.size == int(16000 * clip_seconds)
