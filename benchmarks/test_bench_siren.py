"""Siren benchmarks for the `tiny` configuration on CPU (random weights: these time the
computation, not the quality).

    test_training_tokens_per_second   one expert's AdamW step (forward, backward, step) on a
                                      batch of 8 clips x 100 frames; tokens = frames x the
                                      expert's codebooks.
    test_generation_frames_per_second[cached|uncached]
                                      all experts generating 50 frames (1 s) for 4 captions:
                                      the KV-cached collaborative sampler against re-running the
                                      teacher-forced forward over the whole prefix every frame.

By default (`make test`) each runs once, untimed, at a smaller size; SIREN_BENCH_FULL=1
(`make bench`) uses the sizes above. Derived numbers go to benchmark.extra_info and are printed.
"""

from __future__ import annotations

import os
import time

import pytest
import torch

from siren_bench.config import SirenConfig
from siren_bench.models.collaborative import Siren
from siren_bench.models.sampling import SamplingConfig, sample_codes
from siren_bench.models.siren import Text

FULL = os.environ.get("SIREN_BENCH_FULL") == "1"
BATCH, FRAMES, GEN_FRAMES = (8, 100, 50) if FULL else (2, 20, 6)


def tiny_siren() -> Siren:
    torch.manual_seed(0)
    config = SirenConfig(n_codebooks=8, codebook_size=256, code_dim=64, dim=128, n_heads=4, n_kv_heads=2,
                         temporal_layers=2, depth_layers=1, text_dim=384, dropout=0.1)
    model = Siren(config)
    model.set_code_table(torch.randn(8, 256, 64))
    return model


def captions(batch: int) -> Text:
    g = torch.Generator().manual_seed(0)
    return Text(torch.randn(batch, 16, 384, generator=g), torch.ones(batch, 16, dtype=torch.bool), torch.randn(batch, 384, generator=g))


def test_training_tokens_per_second(benchmark):
    model = tiny_siren()
    expert = model.experts[0].train()
    optimizer = torch.optim.AdamW([p for p in expert.parameters() if p.requires_grad], lr=1e-3)
    codes = torch.randint(0, 256, (BATCH, 8, FRAMES))
    text = captions(BATCH)

    def step():
        loss = expert.loss(codes, text)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return loss.item()

    assert benchmark.pedantic(step, rounds=3 if FULL else 1, iterations=1) > 0
    began = time.perf_counter()
    step()
    tokens = BATCH * FRAMES * len(expert.group) / (time.perf_counter() - began)
    benchmark.extra_info["tokens_per_second"] = tokens
    print(f"siren tiny training: {tokens:.0f} tokens/s (batch {BATCH} x {FRAMES} frames x {len(expert.group)} codebooks)")


def _uncached_generate(model: Siren, text: Text, n_frames: int, generator: torch.Generator) -> torch.Tensor:
    """Frame by frame, expert by expert, re-running the full teacher-forced forward each time."""
    B, K = text.tokens.shape[0], model.config.n_codebooks
    codes = torch.zeros(B, K, n_frames, dtype=torch.long)
    with torch.no_grad():
        for t in range(n_frames):
            for expert in model.experts:
                for j, codebook in enumerate(expert.group):
                    logits = expert(codes[:, :, : t + 1], text)[:, j, t]
                    codes[:, codebook, t] = sample_codes(logits, SamplingConfig(), generator)
    return codes


@pytest.mark.parametrize("mode", ["cached", "uncached"])
def test_generation_frames_per_second(benchmark, mode):
    model = tiny_siren().eval()
    text = captions(4)

    def run():
        generator = torch.Generator().manual_seed(0)
        if mode == "cached":
            return model.generate(text, GEN_FRAMES, SamplingConfig(), generator)
        return _uncached_generate(model, text, GEN_FRAMES, generator)

    codes = benchmark.pedantic(run, rounds=2 if FULL else 1, iterations=1)
    assert codes.shape == (4, 8, GEN_FRAMES)
    began = time.perf_counter()
    run()
    rate = GEN_FRAMES / (time.perf_counter() - began)
    benchmark.extra_info["frames_per_second"] = rate
    print(f"siren tiny generation ({mode}): {rate:.1f} frames/s for 4 captions")
