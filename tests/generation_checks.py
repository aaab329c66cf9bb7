"""A check every code generator's tests share: seeded, in range, int64, and guidance runs."""

from __future__ import annotations

import torch

from siren_bench.models.sampling import SamplingConfig


def assert_seeded_codes(model, text, n_codebooks: int, codebook_size: int, n_frames: int) -> None:
    """Same seed, same codes; another seed, other codes; int64 [B, K, F] in [0, V); guidance 3 runs."""
    sampling = SamplingConfig(temperature=1.0, top_k=8)
    a, b, c = (model.generate(text, n_frames, sampling, torch.Generator().manual_seed(s)) for s in (7, 7, 8))
    assert a.dtype == torch.int64 and a.shape == (text.tokens.shape[0], n_codebooks, n_frames)
    assert a.min() >= 0 and a.max() < codebook_size
    assert torch.equal(a, b) and not torch.equal(a, c)
    guided = model.generate(text, n_frames, SamplingConfig(guidance=3.0), torch.Generator().manual_seed(7))
    assert guided.shape == a.shape and guided.min() >= 0 and guided.max() < codebook_size


def fit_losses(model, codes: torch.Tensor, text, steps: int, lr: float = 3e-3) -> list[float]:
    """Full-batch AdamW on a handful of clips: the losses, for "a tiny model learns" tests."""
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        loss = model.loss(codes, text)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses
