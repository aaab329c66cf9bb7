"""Metric arithmetic against known answers (REFERENCES.md §4) and against each other."""

import numpy as np
from scipy.stats import t as student_t
import pytest

from siren_bench.metrics.bootstrap import bootstrap, paired_difference
from siren_bench.metrics.clap_score import clap_scores
from siren_bench.metrics.divergence import inception_score, kl, paired_kl
from siren_bench.metrics.frechet import FrechetResampler, GaussianStats, fad_inf, frechet_distance, per_clip_frechet
from siren_bench.metrics.kernel import kernel_audio_distance


def test_textbook_kl_values():
    p = np.array([0.05, 0.1, 0.2, 0.05, 0.15, 0.25, 0.08, 0.12])
    q = np.array([0.3, 0.1, 0.2, 0.1, 0.1, 0.02, 0.08, 0.1])
    assert kl(p[None], q[None])[0] == pytest.approx(0.589885, abs=1e-6)
    assert kl(np.array([[0.1, 0.4, 0.5]]), np.array([[0.8, 0.15, 0.05]]))[0] == pytest.approx(1.33568, abs=1e-5)


def test_paired_kl_directions_and_pairing():
    rng = np.random.default_rng(0)
    ref = {f"c{i}": rng.normal(size=5) for i in range(4)}
    gen = {f"c{i}": rng.normal(size=5) for i in range(4)}
    forward = paired_kl(ref, gen, "ref_gen")
    backward = paired_kl(ref, gen, "gen_ref")
    assert forward.mean > 0 and backward.mean > 0 and forward.mean != pytest.approx(backward.mean)
    assert paired_kl(ref, ref).mean == pytest.approx(0.0, abs=1e-12)
    # audioldm_eval's eps form differs from the exact one by at most about eps per class
    assert abs(paired_kl(ref, gen, eps=1e-6).mean - forward.mean) < 1e-4
    with pytest.raises(ValueError, match="no generated clip"):
        paired_kl(ref, {k: v for k, v in gen.items() if k != "c2"})
    with pytest.raises(ValueError, match="no reference clip"):
        paired_kl(ref, {**gen, "extra": rng.normal(size=5)})


def test_inception_score_bounds():
    n_classes = 10
    confident_uniform = np.eye(n_classes)[np.arange(100) % n_classes] * 50.0  # sharp, all classes used
    # unshuffled, each split of 10 consecutive clips holds every class once: IS = n_classes
    assert inception_score(confident_uniform, splits=10, shuffle=False).mean == pytest.approx(n_classes, rel=1e-6)
    collapsed = np.tile(np.eye(n_classes)[0] * 50.0, (100, 1))  # sharp, one class only
    assert inception_score(collapsed, splits=10).mean == pytest.approx(1.0, abs=1e-9)
    a = inception_score(np.random.default_rng(1).normal(size=(50, n_classes)), splits=5, seed=3)
    b = inception_score(np.random.default_rng(1).normal(size=(50, n_classes)), splits=5, seed=3)
    assert a == b


def test_fd_of_identical_sets_is_zero_full_rank_and_small_rank_deficient():
    rng = np.random.default_rng(0)
    full = GaussianStats.from_features(rng.normal(size=(2000, 16)))
    for method in ("eigen", "symmetric", "sqrtm"):
        assert abs(frechet_distance(full, full, method).value) < 1e-9
    # n < d: the covariance has rank n - 1; the clipped near-zero eigenvalues leave a residue of
    # order sqrt(1e-16 * lambda_max) * d, far below any FD worth reporting
    deficient = GaussianStats.from_features(rng.normal(size=(50, 128)))
    residue = frechet_distance(deficient, deficient).value
    assert abs(residue) < 1e-4 * np.trace(deficient.cov)


def test_fd_methods_agree_and_match_closed_form():
    rng = np.random.default_rng(1)
    a = GaussianStats.from_features(rng.normal(size=(500, 8)))
    b = GaussianStats.from_features(rng.normal(size=(500, 8)) * 2.0 + 1.0)
    values = [frechet_distance(a, b, m).value for m in ("eigen", "symmetric", "sqrtm", "sqrtm_eps_retry")]
    assert max(values) - min(values) < 1e-8
    # commuting diagonal covariances: FD = |mu1-mu2|^2 + sum (s1 - s2)^2 (s = standard deviations)
    d1, d2 = np.diag([1.0, 4.0]), np.diag([9.0, 1.0])
    exact = frechet_distance(_stats(np.zeros(2), d1), _stats(np.array([1.0, 2.0]), d2)).value
    assert exact == pytest.approx(5.0 + (1 - 3) ** 2 + (2 - 1) ** 2, abs=1e-9)


def _stats(mean: np.ndarray, cov: np.ndarray, n: int = 11) -> GaussianStats:
    """Sufficient statistics whose mean and unbiased covariance are exactly `mean` and `cov`."""
    outer = cov * (n - 1) + n * np.outer(mean, mean)
    return GaussianStats(n, mean * n, outer)


def test_fd_bias_shrinks_like_one_over_n():
    rng = np.random.default_rng(2)
    dim = 32
    fds = {}
    for n in (200, 2000):
        draws = [frechet_distance(GaussianStats.from_features(rng.normal(size=(n, dim))),
                                  GaussianStats.from_features(rng.normal(size=(n, dim)))).value for _ in range(3)]
        fds[n] = np.mean(draws)
    ratio = fds[200] / fds[2000]
    assert 7.0 < ratio < 13.0, ratio  # 10x more samples, about 10x less bias


def test_statistics_merge_exactly():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(300, 6))
    merged = GaussianStats.from_features(x[:100]).merge(GaussianStats.from_features(x[100:]))
    np.testing.assert_allclose(merged.cov, np.cov(x, rowvar=False), atol=1e-12)
    np.testing.assert_allclose(merged.mean, x.mean(axis=0), atol=1e-12)


def test_fad_inf_same_distribution_is_near_zero_and_biased_fd_is_not():
    rng = np.random.default_rng(4)
    dim = 32  # large enough that the 1/n bias dominates the sampling noise at 800 vectors
    reference = GaussianStats.from_features(rng.normal(size=(20000, dim)))
    clips = [rng.normal(size=(4, dim)) for _ in range(200)]
    result = fad_inf(clips, reference, seed=0)
    plain = frechet_distance(GaussianStats.from_features(np.concatenate(clips)), reference).value
    assert abs(result.value) < 0.25 * plain
    assert result.slope > 0
    shifted = [c + 1.0 for c in clips]
    assert fad_inf(shifted, reference, seed=0).value == pytest.approx(dim, rel=0.05)  # |mu1 - mu2|^2 = dim
    assert fad_inf(clips, reference, seed=0) == result
    assert result.ci_low < result.value < result.ci_high


def test_fad_inf_interval_is_the_least_squares_intercepts():
    """The interval is the fitted intercept's: its standard error equals numpy's polyfit
    covariance (scaled by RSS / (m - 2)), symmetric, half-width t(0.975, m - 2) standard errors."""
    rng = np.random.default_rng(9)
    dim = 16
    reference = GaussianStats.from_features(rng.normal(size=(20000, dim)))
    few = fad_inf([rng.normal(size=(2, dim)) for _ in range(40)], reference, seed=0)
    many = fad_inf([rng.normal(size=(2, dim)) for _ in range(400)], reference, seed=0)
    for result in (few, many):
        x = 1.0 / np.asarray(result.sizes, dtype=np.float64)
        fit = np.polyfit(x, result.fd_values, 1, cov=True)[1]  # numpy's covariance of (slope, intercept)
        m = len(x)
        # np.polyfit(cov=True) scales by RSS / (m - 2), the same s^2 as ours
        assert result.intercept_se == pytest.approx(np.sqrt(fit[1, 1]), rel=1e-6)
        assert result.ci_high - result.value == pytest.approx(result.value - result.ci_low, rel=1e-9)
        assert (result.ci_high - result.value) / result.intercept_se == pytest.approx(student_t.ppf(0.975, m - 2), rel=1e-12)


def test_per_clip_frechet_flags_the_outlier():
    rng = np.random.default_rng(5)
    reference = GaussianStats.from_features(rng.normal(size=(2000, 4)))
    clips = [rng.normal(size=(20, 4)) for _ in range(5)] + [rng.normal(size=(20, 4)) + 5.0, rng.normal(size=(1, 4))]
    scores = per_clip_frechet(clips, reference)
    assert scores[-1] is None
    assert int(np.argmax(scores[:-1])) == 5


def test_kad_zero_for_same_distribution_positive_for_shift():
    rng = np.random.default_rng(6)
    y = rng.normal(size=(300, 8))
    same, _ = kernel_audio_distance(rng.normal(size=(300, 8)), y)
    shifted, _ = kernel_audio_distance(rng.normal(size=(300, 8)) + 1.0, y)
    assert abs(same) < 0.5 and shifted > 5.0
    with pytest.raises(ValueError, match="identical"):
        kernel_audio_distance(y, np.ones((5, 8)))


def test_clap_score_pairs_by_id():
    ids, scores = clap_scores({"a": np.array([1.0, 0.0]), "b": np.array([0.0, 2.0])},
                              {"b": np.array([0.0, 1.0]), "a": np.array([1.0, 1.0])})
    assert ids == ["a", "b"]
    np.testing.assert_allclose(scores, [1 / np.sqrt(2), 1.0])
    with pytest.raises(ValueError, match="without a caption"):
        clap_scores({"a": np.ones(2), "c": np.ones(2)}, {"a": np.ones(2)})


def test_bootstrap_interval_covers_and_is_seeded():
    x = np.random.default_rng(7).normal(loc=3.0, size=400)
    interval = bootstrap(lambda idx: float(x[idx].mean()), len(x), n_boot=500, seed=1)
    assert interval.low < interval.value < interval.high
    assert interval.high - interval.low == pytest.approx(2 * 1.96 / np.sqrt(400), rel=0.2)
    assert bootstrap(lambda idx: float(x[idx].mean()), len(x), n_boot=500, seed=1) == interval


def test_paired_difference_sees_a_shift_that_unpaired_intervals_would_hide():
    """Clip-level variation much larger than the shift: the paired interval excludes 0 and its
    p-value is small; a pure relabelling of the same values gives a difference of exactly 0."""
    rng = np.random.default_rng(3)
    base = rng.normal(scale=5.0, size=200)
    shifted = base + 0.3 + rng.normal(scale=0.1, size=200)
    result = paired_difference(shifted, base, n_boot=500, seed=0)
    assert result["value"] == pytest.approx(0.3, abs=0.03) and 0 < result["ci_low"] < result["ci_high"]
    assert result["p_value"] < 0.01 and result["n"] == 200
    same = paired_difference(base, base.copy(), n_boot=50, seed=0)
    assert same["value"] == 0.0 and same["p_value"] == 1.0
    null = paired_difference(base + rng.normal(scale=1.0, size=200), base, n_boot=500, seed=0)
    assert null["ci_low"] < 0 < null["ci_high"] and null["p_value"] > 0.05
    with pytest.raises(ValueError, match="equal-length"):
        paired_difference(base, base[:-1], n_boot=10, seed=0)


def test_resampled_fd_gram_form_equals_the_direct_forms():
    """Draws with fewer pooled rows than dimensions take the Gram form; it must be the same FD
    as pooling the rows and using the eigen / symmetric forms, duplicates included."""
    rng = np.random.default_rng(12)
    d = 96
    mixing = rng.normal(size=(d, d)) / np.sqrt(d)
    reference = GaussianStats.from_features(rng.normal(size=(300, d)) @ mixing + 0.3)
    clips = [rng.normal(size=(int(rng.integers(1, 4)), d)) @ mixing for _ in range(30)]  # 30 clips, < 96 rows in all
    resampler = FrechetResampler(clips, reference, "eigen")
    for draw in (rng.integers(0, 30, 30), rng.integers(0, 30, 30), np.array([3, 3, 7, 9, 9, 9, 12])):
        pooled = GaussianStats.from_features(np.concatenate([clips[i] for i in draw]))
        assert sum(len(clips[i]) for i in draw) < d  # the Gram route is the one under test
        # S1 is singular here (rank < d): the direct forms take square roots of rounding-level
        # eigenvalues (~1e-15 -> ~3e-8 each), so they differ from each other by ~1e-8 relative;
        # the Gram form drops those exact zeros. 1e-7 is that spread with room, not slack for errors.
        for method in ("eigen", "symmetric", "sqrtm"):
            assert resampler(draw) == pytest.approx(frechet_distance(pooled, reference, method).value, rel=1e-7)
    # the full set is scored with the recipe's own method, draws with many rows by merging statistics
    full = GaussianStats.from_features(np.concatenate(clips))
    assert resampler(np.arange(30)) == frechet_distance(full, reference, "eigen").value
    many = FrechetResampler([rng.normal(size=(200, 8)) for _ in range(3)], GaussianStats.from_features(rng.normal(size=(50, 8))))
    assert many(np.array([0, 0, 2])) == pytest.approx(
        frechet_distance(GaussianStats.from_features(np.concatenate([many.blocks[i] for i in (0, 0, 2)])), many.reference).value)


def _audioldm_eval_is(logits: np.ndarray, splits: int = 10, seed: int = 2020) -> tuple[float, float]:
    """audioldm_eval 0.0.3's Inception Score, transcribed (metrics/isc.py): a RandomState(seed)
    permutation, float64 softmax, splits cut at i * N // splits, population std over splits."""
    import torch

    n = len(logits)
    features = torch.from_numpy(logits)[np.random.RandomState(seed).permutation(n)].double()
    p, log_p = features.softmax(dim=1), features.log_softmax(dim=1)
    scores = []
    for i in range(splits):
        chunk, log_chunk = p[i * n // splits:(i + 1) * n // splits], log_p[i * n // splits:(i + 1) * n // splits]
        scores.append((chunk * (log_chunk - chunk.mean(dim=0, keepdim=True).log())).sum(dim=1).mean().exp().item())
    return float(np.mean(scores)), float(np.std(scores))


def test_the_audioldm_eval_preset_computes_audioldm_evals_inception_score():
    """At N = 964 (AudioLDM's list) the preset's IS equals audioldm_eval's own arithmetic; version 1
    (default_rng, np.array_split) did not, which is why version 2 exists."""
    from siren_bench.embedders.base import Embedding
    from siren_bench.metrics.base import MetricInputs
    from siren_bench.recipes import get_recipe
    from siren_bench.registry import METRICS

    logits = np.random.default_rng(7).normal(scale=3.0, size=(964, 527))
    mean, std = _audioldm_eval_is(logits)
    ids = [f"c{i:04d}" for i in range(964)]
    clips = {c: Embedding(frames=np.zeros((1, 1)), logits=logits[i][None]) for i, c in enumerate(ids)}
    for version, agrees in (("audioldm_eval@2", True), ("audioldm_eval@1", False)):
        out = METRICS.get("is")(MetricInputs(get_recipe(version).spec("is"), clips, clips, ids, 1, 0))
        assert (abs(out["value"] - mean) < 1e-12 and abs(out["split_std"] - std) < 1e-12) is agrees, (version, out["value"], mean)
    ours = inception_score(logits, 10, 2020, True, shuffler="randomstate", chunks="floor")
    assert ours.mean == pytest.approx(mean, abs=1e-12) and ours.std == pytest.approx(std, abs=1e-12)
    with pytest.raises(ValueError, match="IS shuffler must be one of"):
        inception_score(logits, shuffler="torch")


def test_each_kl_direction_is_the_textbook_value_of_that_direction():
    """A swap of the two sides everywhere would keep the directions distinct; the values pin them."""
    ref_logits, gen_logits = np.log([0.7, 0.2, 0.1]), np.log([0.1, 0.3, 0.6])
    p, q = np.array([0.7, 0.2, 0.1]), np.array([0.1, 0.3, 0.6])
    forward = paired_kl({"c": ref_logits}, {"c": gen_logits}, "ref_gen").mean
    backward = paired_kl({"c": ref_logits}, {"c": gen_logits}, "gen_ref").mean
    assert forward == pytest.approx(float(np.sum(p * np.log(p / q))), abs=1e-12)  # KL(reference || generated)
    assert backward == pytest.approx(float(np.sum(q * np.log(q / p))), abs=1e-12)


def test_kad_is_the_unbiased_mmd_of_a_hand_worked_case():
    """x = {0, 1}, y = {0, 2}, bandwidth 1 (gamma = 1/2): the within-set means leave out k(x, x)."""
    import math

    value, sigma = kernel_audio_distance(np.array([[0.0], [1.0]]), np.array([[0.0], [2.0]]), bandwidth=1.0)
    k = lambda a, b: math.exp(-0.5 * (a - b) ** 2)  # noqa: E731
    within_x, within_y = k(0, 1), k(0, 2)  # the one off-diagonal pair of each set
    across = (k(0, 0) + k(0, 2) + k(1, 0) + k(1, 2)) / 4
    assert sigma == 1.0 and value == pytest.approx(100 * (within_x + within_y - 2 * across), abs=1e-12)
