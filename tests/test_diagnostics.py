"""Each RVQ diagnostic gives the known answer on constructed cases."""

from __future__ import annotations

import numpy as np
import pytest

from siren_bench.diagnostics.fidelity import lsd_db, mel_distance, reconstruction_metrics, si_snr_db, summarize
from siren_bench.diagnostics.orthogonality import OrthogonalityStats, orthogonality
from siren_bench.diagnostics.semantics import pooled_layers, semantic_richness

SR = 16000


def test_orthogonal_layers_give_zero_cosine_and_identical_layers_one():
    rng = np.random.default_rng(0)
    basis = np.linalg.qr(rng.standard_normal((32, 32)))[0]
    scales = rng.uniform(0.5, 2.0, size=(6, 4, 1, 7))
    orthogonal = np.stack([basis[i][:, None] * scales[:, i] for i in range(4)], axis=1)  # [N, K, D, F]
    assert orthogonality(orthogonal)["mean_abs_off_diagonal"] < 1e-12
    same = np.repeat(rng.standard_normal((6, 1, 32, 7)), 3, axis=1)
    result = orthogonality(same)
    assert result["mean_abs_off_diagonal"] == pytest.approx(1.0)
    assert np.allclose(result["mean"], 1.0)


def test_random_layers_match_the_random_direction_reference():
    features = np.random.default_rng(1).standard_normal((20, 5, 256, 10))
    result = orthogonality(features)
    assert result["mean_abs_off_diagonal"] == pytest.approx(result["random_direction_mean_abs"], rel=0.05)


def test_streaming_statistics_equal_one_pass():
    features = np.random.default_rng(2).standard_normal((9, 3, 16, 5))
    stats = OrthogonalityStats(3, 16)
    for part in np.array_split(features, 3):
        stats.update(part)
    streamed, whole = stats.result(), orthogonality(features)
    assert np.allclose(streamed["mean"], whole["mean"]) and np.allclose(streamed["std"], whole["std"])
    assert streamed["mean_abs_off_diagonal"] == pytest.approx(whole["mean_abs_off_diagonal"])
    assert streamed["off_diagonal_histogram"] == whole["off_diagonal_histogram"]


def test_layer_carrying_the_label_probes_near_one_and_random_near_chance():
    rng = np.random.default_rng(3)
    n, classes = 300, 5
    labels = (rng.random((n, classes)) < 0.3).astype(int)
    features = rng.standard_normal((n, 2, 10, 6)) * 0.3
    features[:, 0, :classes, :] += 2.0 * labels[:, :, None]  # layer 1 encodes the labels; layer 2 is noise
    train, test = slice(0, 200), slice(200, None)
    result = semantic_richness(pooled_layers(features[train]), labels[train], pooled_layers(features[test]), labels[test], seeds=[0, 1, 2])
    assert result["alone"][0]["map_mean"] > 0.97
    chance = result["chance_map"]
    assert chance["prevalence"] < chance["mean"] < chance["p95"] < 0.97
    assert result["alone"][1]["map_mean"] < chance["p95"] + 0.05  # noise: within the random scorer's range
    assert result["cumulative"][1]["map_mean"] > 0.9  # layers 1..2 still hold layer 1's content
    assert result["alone"][0]["map_std"] >= 0.0 and len(result["alone"][0]["map_per_seed"]) == 3


def test_identical_signal_is_perfect_and_noise_degrades():
    t = np.arange(SR) / SR
    ref = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.1 * np.sin(2 * np.pi * 1250 * t)
    perfect = reconstruction_metrics(ref, ref, SR)
    assert perfect["mel_distance"] == 0.0 and perfect["lsd_db"] == 0.0 and perfect["si_snr_db"] > 100
    noisy = ref + np.random.default_rng(0).standard_normal(SR) * 0.05
    worse = reconstruction_metrics(ref, noisy, SR)
    assert worse["mel_distance"] > 0.05 and worse["lsd_db"] > 1.0


def test_si_snr_is_scale_invariant_and_matches_the_energy_ratio():
    rng = np.random.default_rng(4)
    ref = rng.standard_normal(SR)
    noise = rng.standard_normal(SR)
    noise -= noise.mean()
    noise -= np.dot(noise, ref - ref.mean()) / np.dot(ref - ref.mean(), ref - ref.mean()) * (ref - ref.mean())  # orthogonal
    noise *= np.linalg.norm(ref - ref.mean()) / np.linalg.norm(noise) / np.sqrt(10.0)  # 10 dB below the signal
    assert si_snr_db(ref, ref + noise) == pytest.approx(10.0, abs=1e-6)
    assert si_snr_db(ref, 3.0 * (ref + noise)) == pytest.approx(10.0, abs=1e-6)
    with pytest.raises(ValueError, match="silent reference"):
        si_snr_db(np.zeros(100), ref[:100])


def test_mel_and_lsd_grow_with_distortion_and_use_the_common_length():
    t = np.arange(SR) / SR
    ref = 0.3 * np.sin(2 * np.pi * 440 * t)
    small, large = ref * 0.9, ref * 0.3
    assert mel_distance(ref, small, SR) < mel_distance(ref, large, SR)
    broadband = np.random.default_rng(5).standard_normal(SR) * 0.1  # every bin above the floor
    assert lsd_db(broadband, 0.9 * broadband) == pytest.approx(20 * np.log10(1 / 0.9), rel=1e-6)  # a gain is a flat offset
    assert mel_distance(ref, ref[:-100], SR) == 0.0


def test_summary_ci():
    stats = summarize(np.array([1.0, 2.0, 3.0, 4.0]))
    assert stats["mean"] == 2.5 and stats["n"] == 4
    assert stats["ci95_high"] - stats["mean"] == pytest.approx(1.96 * np.std([1, 2, 3, 4], ddof=1) / 2)


def test_text_probe_recovers_an_embedded_target_and_not_noise():
    from siren_bench.diagnostics.semantics import text_richness

    rng = np.random.default_rng(6)
    targets = rng.standard_normal((200, 16))
    features = rng.standard_normal((200, 2, 20, 5)) * 0.2
    features[:, 0, :16, :] += targets[:, :, None]  # layer 1 carries the caption embedding
    result = text_richness(pooled_layers(features), targets, seeds=[0, 1, 2])
    assert result["alone"][0]["r2_mean"] > 0.9 and result["alone"][0]["cosine_mean"] > 0.9
    assert result["alone"][1]["r2_mean"] < 0.05  # noise: no better than the mean embedding
    assert result["cumulative"][1]["r2_mean"] > 0.8


def test_vectorised_macro_average_precision_is_sklearns():
    """The permutation null's mAP (2000 random score sets at once) against sklearn's, set by set."""
    from sklearn.metrics import average_precision_score

    from siren_bench.diagnostics.semantics import macro_average_precision

    rng = np.random.default_rng(3)
    labels = (rng.random((30, 5)) < [0.1, 0.3, 0.5, 0.7, 0.9]).astype(int)
    labels[0] = 1  # every class has a positive
    scores = rng.random((40, 30, 5))
    ours = macro_average_precision(labels, scores)
    assert ours.shape == (40,)
    np.testing.assert_allclose(ours, [average_precision_score(labels, s, average="macro") for s in scores], rtol=0, atol=1e-12)
