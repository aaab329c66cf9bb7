"""A recipe's metrics on constructed embeddings: the right direction of every number, CIs, pairing."""

import numpy as np
import pytest

from siren_bench.embedders.base import Embedding
from siren_bench.recipes import get_recipe
from siren_bench.scoring import score_metric

DIM, CLASSES = 6, 5


def _clips(rng, n, shift=0.0, frames=4, sharp=None):
    out = {}
    for i in range(n):
        logits = rng.normal(size=(1, CLASSES))
        if sharp is not None:
            logits[0, i % CLASSES] += sharp
        out[f"clip{i:03d}"] = Embedding(rng.normal(size=(frames, DIM)) + shift, logits)
    return out


@pytest.fixture(scope="module")
def sets():
    rng = np.random.default_rng(0)
    reference = _clips(rng, 120)
    return reference, _clips(rng, 120), _clips(rng, 120, shift=1.5)


@pytest.mark.parametrize("metric", ["fad", "fd", "kad"])
def test_distances_rank_a_shifted_system_worse(sets, metric):
    reference, same, shifted = sets
    spec = get_recipe("smoke").spec(metric)
    good = score_metric(spec, same, reference, n_boot=30, seed=0)
    bad = score_metric(spec, shifted, reference, n_boot=30, seed=0)
    assert bad["value"] > good["ci_high"] and bad["ci_low"] > good["ci_high"]
    assert good["ci_low"] < good["value"] < good["ci_high"] and good["jackknife_groups"] == 20
    assert good["n_generated"] == 120


def test_fad_inf_and_per_clip(sets):
    reference, same, shifted = sets
    result = score_metric(get_recipe("smoke").spec("fad_inf"), shifted, reference, n_boot=0, seed=0)
    assert result["value"] == pytest.approx(DIM * 1.5 ** 2, rel=0.15)
    fad = score_metric(get_recipe("smoke").spec("fad"), same, reference, n_boot=10, seed=0)
    assert set(fad["per_clip"]) == set(same)


def test_kl_both_directions_and_pairing(sets):
    reference, same, _ = sets
    result = score_metric(get_recipe("smoke").spec("kl"), same, reference, n_boot=20, seed=0)
    assert result["direction"] == "ref_gen" and "value_gen_ref" in result and result["value"] > 0
    identical = score_metric(get_recipe("smoke").spec("kl"), reference, reference, n_boot=5, seed=0)
    assert identical["value"] == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="pairs clips by id"):
        score_metric(get_recipe("smoke").spec("kl"), dict(list(same.items())[:50]), reference, n_boot=5, seed=0)


def test_inception_score_prefers_confident_diverse_outputs():
    rng = np.random.default_rng(1)
    sharp = _clips(rng, 100, sharp=8.0)
    flat = _clips(rng, 100)
    spec = get_recipe("smoke").spec("is")
    assert score_metric(spec, sharp, {}, n_boot=10, seed=0)["value"] > 2 * score_metric(spec, flat, {}, n_boot=10, seed=0)["value"]


def test_clap_score_needs_every_caption(sets):
    _, same, _ = sets
    text = {cid: e.frames.mean(axis=0) for cid, e in same.items()}
    result = score_metric(get_recipe("smoke").spec("clap"), same, {}, n_boot=10, seed=0, text=text)
    assert result["value"] == pytest.approx(1.0) and result["value_x100"] == pytest.approx(100.0)
    with pytest.raises(ValueError, match="no caption embedding"):
        score_metric(get_recipe("smoke").spec("clap"), same, {}, n_boot=10, seed=0, text=dict(list(text.items())[:10]))


def test_missing_logits_is_an_error(sets):
    reference, same, _ = sets
    no_logits = {cid: Embedding(e.frames) for cid, e in same.items()}
    with pytest.raises(ValueError, match="no logits"):
        score_metric(get_recipe("smoke").spec("kl"), no_logits, reference, n_boot=5, seed=0)
