"""Codebook patterns (siren_bench/models/patterns.py): the written-out layouts, the step-sequence
round trip, and the contract itself: each code LM's teacher-forced prediction of a cell reads
exactly the cells of earlier steps of the pattern the model names, and a model checked against
a pattern it does not follow fails the check."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from baselines import registry
from siren_bench.models.patterns import coarse_first, delay, frame_major, parallel
from tests.test_baselines import SHAPE, SMALL
from tests.test_siren import random_text, tiny_siren

K, V, F = 4, 16, 5


def test_the_written_out_layouts():
    assert parallel(3, 3).steps.tolist() == [[0, 1, 2], [0, 1, 2], [0, 1, 2]]
    assert delay(3, 3).steps.tolist() == [[0, 1, 2], [1, 2, 3], [2, 3, 4]]
    assert frame_major(3, 3).steps.tolist() == [[0, 3, 6], [1, 4, 7], [2, 5, 8]]
    assert coarse_first(3, 3).steps.tolist() == [[0, 1, 2], [3, 3, 3], [4, 4, 4]]
    assert delay(3, 3).may_read(2, 0).tolist() == [[True, True, False], [True, False, False], [False, False, False]]


@pytest.mark.parametrize("make", [parallel, delay, frame_major])
def test_the_step_sequence_round_trips_and_pads_the_rest(make):
    pattern = make(3, 4)
    codes = torch.randint(0, 50, (2, 3, 4), generator=torch.Generator().manual_seed(0))
    sequence = pattern.sequence(codes, pad=99)
    assert sequence.shape == (2, 3, pattern.n_steps) and torch.equal(pattern.frames(sequence), codes)
    assert torch.equal(sequence != 99, pattern.valid()[None].expand_as(sequence))
    logits = torch.randn(2, 3, pattern.n_steps, 7)
    assert torch.equal(pattern.frames(logits)[:, 1, 2], logits[:, 1, pattern.steps[1, 2]])


def test_a_pattern_with_a_codebook_in_one_step_has_no_sequence_layout():
    with pytest.raises(ValueError, match="coarse_first pattern produces several frames of codebook 1 at one step"):
        coarse_first(3, 4).sequence(torch.zeros(1, 3, 4, dtype=torch.long), pad=0)
    with pytest.raises(ValueError, match=r"codes must be \[B, 3, 4\]"):
        delay(3, 4).sequence(torch.zeros(1, 3, 5, dtype=torch.long), pad=0)


def _models():
    models = {"siren": tiny_siren()}
    for name in ("shared_lm", "delay_lm", "ar_nar"):
        torch.manual_seed(0)
        model, _ = registry.build(name, SMALL[name], SHAPE)
        model.set_code_table(torch.randn(K, V, SHAPE["code_dim"]))
        models[name] = model
    return {name: model.eval() for name, model in models.items()}


MODELS = _models()


def _violations(model, pattern, codes, text) -> tuple[list, list]:
    """Cells whose logits move when cells the pattern forbids change (reads it must not make), and
    cells with something to read whose logits do not move when all of that changes (reads it misses)."""
    shift = torch.randint(1, V, codes.shape, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        base = model(codes, text)
        forbidden_read, unread = [], []
        for q in range(K):
            for t in range(F):
                readable = torch.from_numpy(pattern.may_read(q, t))
                hidden = codes.where(readable, (codes + shift) % V)
                if not torch.equal(model(hidden, text)[:, q, t], base[:, q, t]):
                    forbidden_read.append((q, t))
                if readable.any():
                    shown = codes.where(~readable, (codes + shift) % V)
                    if torch.equal(model(shown, text)[:, q, t], base[:, q, t]):
                        unread.append((q, t))
    return forbidden_read, unread


@pytest.mark.parametrize("name", list(MODELS))
def test_each_model_reads_exactly_the_earlier_steps_of_its_pattern(name):
    model = MODELS[name]
    codes = torch.randint(0, V, (2, K, F), generator=torch.Generator().manual_seed(1))
    pattern = model.pattern(F)
    forbidden_read, unread = _violations(model, pattern, codes, random_text(2))
    assert forbidden_read == [] and unread == [], (pattern.name, forbidden_read, unread)


@pytest.mark.parametrize("name, wrong", [("delay_lm", frame_major), ("siren", delay), ("ar_nar", frame_major),
                                         ("shared_lm", parallel)])
def test_the_check_fails_for_a_pattern_the_model_does_not_follow(name, wrong):
    codes = torch.randint(0, V, (2, K, F), generator=torch.Generator().manual_seed(1))
    forbidden_read, unread = _violations(MODELS[name], wrong(K, F), codes, random_text(2))
    assert forbidden_read or unread


def test_the_patterns_models_name():
    assert {name: model.pattern(F).name for name, model in MODELS.items()} == {
        "siren": "frame_major", "shared_lm": "frame_major", "delay_lm": "delay", "ar_nar": "coarse_first"}
    assert np.array_equal(MODELS["siren"].pattern(F).steps, frame_major(K, F).steps)
