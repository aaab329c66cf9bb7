"""Tests written against the mutants mutmut left alive in siren_bench/metrics (README, "Tests that
catch wrong metrics"): each pins a number or a boundary that a plausible slip would change.
Values are compared exactly where the harness promises the same arithmetic, so a dropped
`method=` or `dtype=` argument (the same quantity, other rounding) fails too."""

import numpy as np
import pytest
import scipy.linalg
from scipy.spatial.distance import pdist
from scipy.special import log_softmax, softmax

from siren_bench.embedders.base import Embedding
from siren_bench.metrics import frechet
from siren_bench.metrics.base import clip_level
from siren_bench.metrics.bootstrap import bootstrap, paired_difference
from siren_bench.metrics.clap_score import clap_scores
from siren_bench.metrics.divergence import kl, paired_kl
from siren_bench.metrics.frechet import (FrechetResampler, GaussianStats, distance_to_reference_mean, fad_inf,
                                         frechet_distance, per_clip_frechet, reference_gaussian, trace_sqrt_product)
from siren_bench.metrics.kernel import KernelResampler, _squared_distances, kernel_audio_distance, median_bandwidth


@pytest.fixture
def rng():
    return np.random.default_rng(7)


@pytest.fixture(autouse=True)
def fresh_reference_roots():
    """The S^1/2 cache is module state: a test process that ran other tests may already hold
    the root a test needs, which would hide a broken cache."""
    frechet._REFERENCE_ROOTS.clear()
    yield
    frechet._REFERENCE_ROOTS.clear()


def _stats(rng, n, d, shift=0.0):
    return GaussianStats.from_features(rng.normal(size=(n, d)) + shift)


# --- Fréchet distance -------------------------------------------------------------------------

def test_frechet_result_fields_and_method_are_the_ones_used(rng):
    a, b = _stats(rng, 40, 5, 0.3), _stats(rng, 50, 5)
    for method in ("eigen", "symmetric", "sqrtm"):
        result = frechet_distance(a, b, method)
        cross, discarded = trace_sqrt_product(a.cov, b.cov, method)
        assert result.mean_term == float(np.sum((a.mean - b.mean) ** 2))
        assert result.trace_term == float(np.trace(a.cov) + np.trace(b.cov) - 2.0 * cross)
        assert result.value == result.mean_term + result.trace_term
        assert (result.method, result.max_discarded) == (method, discarded)
    root = scipy.linalg.sqrtm(a.cov @ b.cov)
    expected = float(np.abs(np.diagonal(root).imag).max()) if np.iscomplexobj(root) else 0.0
    assert trace_sqrt_product(a.cov, b.cov, "sqrtm")[1] == expected


def test_sqrtm_forms_refuse_a_large_imaginary_part_and_report_a_small_one(monkeypatch):
    s = np.eye(3)
    for imaginary, refused in ((2e-3, True), (5e-4, False)):
        monkeypatch.setattr(scipy.linalg, "sqrtm", lambda m, i=imaginary: m + 1j * i * np.eye(3))
        for method in ("sqrtm", "sqrtm_eps_retry"):
            if refused:
                with pytest.raises(ValueError, match="imaginary diagonal part of 0.002"):
                    trace_sqrt_product(s, s, method)
            else:
                assert trace_sqrt_product(s, s, method) == (3.0, 5e-4)


def test_discarded_parts_are_the_largest_clipped_rounding(rng):
    s = np.diag([4.0, 1.0, 0.0])
    negative = np.diag([1.0, 1.0, -1e-12])
    _, discarded = trace_sqrt_product(s + np.eye(3), negative, "symmetric")
    assert discarded == pytest.approx(1e-12, rel=1e-6, abs=0)  # abs=0: approx's default 1e-12 would accept 0
    values = np.linalg.eigvals((s + np.eye(3)) @ negative)
    _, discarded = trace_sqrt_product(s + np.eye(3), negative, "eigen")
    assert discarded == pytest.approx(-values.real.min(), rel=1e-9, abs=0)
    assert trace_sqrt_product(np.eye(3), np.eye(3), "eigen")[1] == 0.0
    assert trace_sqrt_product(np.eye(3), np.eye(3), "symmetric")[1] == 0.0


def test_sqrtm_eps_retry_adds_1e_6_to_both_diagonals_only_after_a_non_finite_root(rng, monkeypatch):
    a, b = _stats(rng, 30, 4).cov, _stats(rng, 30, 4).cov
    real_sqrtm = scipy.linalg.sqrtm
    calls = []

    def failing_once(m):
        calls.append(m)
        return np.full_like(m, np.nan) if len(calls) == 1 else real_sqrtm(m)

    monkeypatch.setattr(scipy.linalg, "sqrtm", failing_once)
    value, discarded = trace_sqrt_product(a, b, "sqrtm_eps_retry")
    offset = 1e-6 * np.eye(4)
    assert np.array_equal(calls[1], (a + offset) @ (b + offset))
    assert value == float(np.trace(real_sqrtm((a + offset) @ (b + offset))).real)
    calls.clear()
    with pytest.raises(ValueError, match="not finite"):
        trace_sqrt_product(a, b, "sqrtm")  # no retry outside the audioldm_eval form


def test_resampler_uses_the_recipe_method_on_the_full_set_and_at_exactly_d_rows(rng):
    d = 6
    clips = [rng.normal(size=(1, d)) for _ in range(12)]
    reference = _stats(rng, 40, d)
    resampler = FrechetResampler(clips, reference, "symmetric")
    rows = np.concatenate(clips)
    assert resampler(np.arange(12)) == frechet_distance(GaussianStats.from_features(rows), reference, "symmetric").value
    exactly_d = np.arange(d)  # d rows: the direct form, not the Gram form
    assert resampler(exactly_d) == frechet_distance(GaussianStats.from_features(rows[:d]), reference, "symmetric").value


def test_eigen_is_the_spectrum_of_s1_s2_through_the_remembered_root_of_the_reference(rng):
    """"eigen" takes tr((S1 S2)^1/2) from eigvalsh of S2^1/2 S1 S2^1/2, similar to S1 S2: the same
    spectrum as a general eigvals of the product, with the root of the second argument (the
    reference, fixed over a run) computed once."""
    a, b = _stats(rng, 40, 6, 0.3), _stats(rng, 50, 6)
    cross, discarded = trace_sqrt_product(a.cov, b.cov, "eigen")
    assert cross == pytest.approx(np.sqrt(np.linalg.eigvals(a.cov @ b.cov).real).sum(), rel=1e-12, abs=0)
    assert discarded == 0.0
    (root, clipped), = frechet._REFERENCE_ROOTS.values()
    assert np.allclose(root @ root, b.cov, rtol=0, atol=1e-12) and clipped == 0.0
    frechet._REFERENCE_ROOTS.clear()
    assert trace_sqrt_product(a.cov, b.cov, "symmetric")[0] == pytest.approx(cross, rel=1e-12, abs=0)
    assert not frechet._REFERENCE_ROOTS  # the other side: the first argument rooted, nothing remembered
    trace_sqrt_product(a.cov, b.cov, "eigen")
    frechet._REFERENCE_ROOTS[next(iter(frechet._REFERENCE_ROOTS))] = (np.eye(6), 0.0)  # what is remembered is used
    assert trace_sqrt_product(a.cov, b.cov, "eigen")[0] == pytest.approx(np.sqrt(np.linalg.eigvalsh(a.cov)).sum(), rel=1e-12)


def test_reference_root_cache_keys_by_content_and_keeps_the_four_latest(rng):
    clips = [rng.normal(size=(1, 8)) for _ in range(6)]
    references = [_stats(rng, 30, 8, shift) for shift in (0.0, 1.0, 2.0, 3.0, 4.0)]
    for reference in references:
        resampler = FrechetResampler(clips, reference)
        gram = resampler(np.arange(5))
        direct = frechet_distance(GaussianStats.from_features(np.concatenate(clips[:5])), reference, "symmetric").value
        assert gram == pytest.approx(direct, rel=1e-6)  # rank-deficient: the direct form's rounding is ~1e-8
    assert len(frechet._REFERENCE_ROOTS) == 4
    first_key = next(iter(frechet._REFERENCE_ROOTS))
    assert all(np.array_equal(a, b) for a, b in zip(frechet._REFERENCE_ROOTS[first_key], frechet._sqrt_psd(references[1].cov)))
    root, _ = frechet._reference_root(references[1].cov)  # used again: the newest, so a new one pushes out references[2]'s
    assert not root.flags.writeable
    frechet._reference_root(_stats(rng, 30, 8, 9.0).cov)
    kept = [np.array_equal(root, frechet._sqrt_psd(r.cov)[0]) for r in references for root, _ in frechet._REFERENCE_ROOTS.values()]
    assert [any(kept[i * 4 : i * 4 + 4]) for i in range(5)] == [False, True, False, True, True]


def test_gram_form_needs_two_rows_and_works_with_two(rng):
    clips = [rng.normal(size=(1, 8)) for _ in range(5)]
    resampler = FrechetResampler(clips, _stats(rng, 30, 8))
    assert np.isfinite(resampler(np.array([0, 1])))
    with pytest.raises(ValueError, match="at least 2"):
        resampler(np.array([3]))


def test_float32_inputs_are_computed_in_float64(rng):
    """Embedders hand float32 arrays; every metric converts before any arithmetic."""
    x32 = rng.normal(size=(30, 6)).astype(np.float32)
    y32 = (rng.normal(size=(25, 6)) + 0.5).astype(np.float32)
    x64, y64 = x32.astype(np.float64), y32.astype(np.float64)
    assert np.array_equal(GaussianStats.from_features(x32).outer, GaussianStats.from_features(x64).outer)
    assert np.array_equal(clip_level(x32), clip_level(x64))
    assert median_bandwidth(y32) == median_bandwidth(y64)
    assert kernel_audio_distance(x32, y32) == kernel_audio_distance(x64, y64)
    assert KernelResampler(x32, y32, 1.3)(np.arange(30)) == KernelResampler(x64, y64, 1.3)(np.arange(30))
    reference = GaussianStats.from_features(y64)
    assert distance_to_reference_mean([x32], reference) == distance_to_reference_mean([x64], reference)
    embeddings = {f"c{i:02d}": Embedding(frames=y32[i:i + 1]) for i in range(25)}
    assert np.array_equal(reference_gaussian(embeddings, "clip").outer, reference.outer)
    a, b = rng.normal(size=20).astype(np.float32), rng.normal(size=20).astype(np.float32)
    assert paired_difference(a, b, 50, 0)["value"] == float(np.mean(a.astype(np.float64) - b.astype(np.float64)))
    logits32 = {f"c{i}": rng.normal(size=5).astype(np.float32) for i in range(4)}
    logits64 = {k: v.astype(np.float64) for k, v in logits32.items()}
    assert np.array_equal(paired_kl(logits32, logits32 | {"c0": logits32["c1"]}).per_clip,
                          paired_kl(logits64, logits64 | {"c0": logits64["c1"]}).per_clip)
    text = {k: v[::-1].copy() for k, v in logits32.items()}
    assert np.array_equal(clap_scores(logits32, text)[1], clap_scores(logits64, {k: v.astype(np.float64) for k, v in text.items()})[1])


def test_distance_to_reference_mean_of_multi_frame_clips(rng):
    reference = _stats(rng, 40, 3, 2.0)  # a mean far from 0, so x + mu differs from x - mu
    clip = rng.normal(size=(4, 3))
    assert distance_to_reference_mean([clip], reference) == [float(np.sum((clip.mean(axis=0) - reference.mean) ** 2))]
    assert np.array_equal(clip_level(clip), clip.mean(axis=0)[None, :])


def test_reference_gaussian_levels(rng):
    embeddings = {f"c{i}": Embedding(frames=rng.normal(size=(3, 4))) for i in range(10)}
    frames = np.concatenate([embeddings[k].frames for k in sorted(embeddings)])
    clips = np.stack([embeddings[k].frames.mean(axis=0) for k in sorted(embeddings)])
    assert reference_gaussian(embeddings, "frames").n == 30
    assert np.array_equal(reference_gaussian(embeddings, "clip").total, GaussianStats.from_features(clips).total)
    assert np.array_equal(reference_gaussian(embeddings, "frames").outer, GaussianStats.from_features(frames).outer)
    with pytest.raises(ValueError, match="level"):
        reference_gaussian(embeddings, "clips")


def test_per_clip_frechet_is_defined_from_two_frames(rng):
    reference = _stats(rng, 40, 2)
    two, one = rng.normal(size=(2, 2)), rng.normal(size=(1, 2))
    out = per_clip_frechet([two, one], reference, "symmetric")
    assert out[1] is None
    assert out[0] == frechet_distance(GaussianStats.from_features(two), reference, "symmetric").value


def test_statistics_need_enough_rows_and_matching_dimensions(rng):
    with pytest.raises(ValueError, match="at least 2"):
        GaussianStats.from_features(rng.normal(size=(1, 3))).cov
    assert GaussianStats.from_features(rng.normal(size=(2, 3))).cov.shape == (3, 3)
    with pytest.raises(ValueError, match="dimension 3 and 4"):
        _stats(rng, 5, 3).merge(_stats(rng, 5, 4))
    with pytest.raises(ValueError, match="dimensions differ: 3 vs 4"):
        frechet_distance(_stats(rng, 5, 3), _stats(rng, 5, 4))
    with pytest.raises(ValueError, match=r"non-empty \[n, d\]"):
        GaussianStats.from_features(np.zeros(3))
    with pytest.raises(ValueError, match=r"non-empty \[n, d\]"):
        GaussianStats.from_features(np.zeros((0, 3)))
    assert GaussianStats.from_features(np.zeros((2, 0))).n == 2  # d = 0 is empty in columns only
    with pytest.raises(ValueError, match="NaN or inf"):
        GaussianStats.from_features(np.array([[1.0, np.nan], [0.0, 1.0]]))


# --- FAD-inf ----------------------------------------------------------------------------------

def test_fad_inf_sizes_fit_and_fields_are_its_definition(rng):
    clips = [rng.normal(size=(1, 3)) + 0.4 for _ in range(50)]
    reference = _stats(rng, 60, 3)
    result = fad_inf(clips, reference, seed=5, method="symmetric")
    assert result.sizes == sorted({int(round(s)) for s in np.linspace(10, 50, 15)})  # 20 % of 50 = 10
    draw = np.random.default_rng(5)
    expected = []
    for size in result.sizes:
        pick = draw.choice(50, size=size, replace=False)
        expected.append(frechet_distance(GaussianStats.from_features(np.concatenate([clips[i] for i in pick])), reference,
                                         "symmetric").value)
    assert result.fd_values == expected
    x, y = 1.0 / np.array(result.sizes), np.array(expected)
    slope, intercept = np.polyfit(x, y, 1)
    assert (result.value, result.slope, result.seed) == (intercept, slope, 5)
    residual = y - (intercept + slope * x)
    assert result.r_squared == pytest.approx(1.0 - np.sum(residual ** 2) / np.sum((y - y.mean()) ** 2), rel=1e-12)
    assert 0.0 < result.r_squared < 1.0


def test_fad_inf_smallest_subsets_and_limits(rng):
    reference = _stats(rng, 30, 2)
    few = [rng.normal(size=(1, 2)) for _ in range(5)]
    assert fad_inf(few, reference, seed=0).sizes == [2, 3, 4, 5]  # at least 2 clips, not ceil(0.2 * 5) = 1
    assert fad_inf(few[:4], reference, seed=0).sizes == [2, 3, 4]  # the fewest clips that give 3 sizes
    with pytest.raises(ValueError, match="3 distinct subset sizes"):
        fad_inf(few[:3], reference, seed=0)
    with pytest.raises(ValueError, match="range of subset sizes"):
        fad_inf(few, reference, seed=0, min_fraction=1.0)
    assert len(fad_inf([rng.normal(size=(1, 2)) for _ in range(100)], reference, seed=0).sizes) == 15


# --- KAD --------------------------------------------------------------------------------------

def test_squared_distances_are_never_negative_and_bandwidth_is_the_median_pairwise_distance(rng):
    far = rng.normal(size=(20, 4)) + 1e4  # large norms: |a|^2 + |b|^2 - 2ab rounds below 0
    raw = np.sum(far * far, axis=1)[:, None] + np.sum(far * far, axis=1)[None, :] - 2.0 * far @ far.T
    assert raw.min() < 0  # the case the clip exists for
    assert _squared_distances(far, far).min() >= 0.0
    small = rng.normal(size=(15, 3)) * 0.01  # a bandwidth below 1 is fine
    assert median_bandwidth(small) == pytest.approx(float(np.median(pdist(small))), rel=1e-9)
    with pytest.raises(ValueError, match="all identical"):
        median_bandwidth(np.ones((4, 3)))


@pytest.mark.parametrize("x_shape, y_shape", [((1, 3), (5, 3)), ((5, 3), (1, 3)), ((5, 3), (5, 4)), ((5,), (5, 3)),
                                              ((5, 3), (5,))])
def test_kad_refuses_bad_shapes(rng, x_shape, y_shape):
    with pytest.raises(ValueError, match=r"\[n, d\] and \[m, d\]"):
        kernel_audio_distance(rng.normal(size=x_shape), rng.normal(size=y_shape), 1.0)


def test_kernel_resampler_works_from_two_clips(rng):
    x, y = rng.normal(size=(6, 3)), rng.normal(size=(8, 3))
    resampler = KernelResampler(x, y, 1.0)
    assert resampler(np.array([1, 4])) == pytest.approx(kernel_audio_distance(x[[1, 4]], y, 1.0)[0], rel=1e-12)
    with pytest.raises(ValueError, match="at least 2"):
        resampler(np.array([2]))


# --- KL, CLAP, paired bootstrap -----------------------------------------------------------------

def test_paired_kl_uses_log_softmax_exactly_and_records_eps(rng):
    reference = {f"c{i}": rng.normal(size=6) * 30 for i in range(5)}  # large logits: log(softmax) underflows
    generated = {f"c{i}": rng.normal(size=6) * 30 for i in range(5)}
    result = paired_kl(reference, generated, "gen_ref", eps=0.0)
    ids = sorted(reference)
    first = np.stack([generated[i] for i in ids])
    second = np.stack([reference[i] for i in ids])
    expected = kl(softmax(first, axis=-1), softmax(second, axis=-1), 0.0, log_p=log_softmax(first, axis=-1),
                  log_q=log_softmax(second, axis=-1))
    assert np.array_equal(result.per_clip, expected) and np.isfinite(expected).all()
    assert (result.direction, result.eps) == ("gen_ref", 0.0)
    assert paired_kl(reference, generated, "ref_gen", eps=1e-6).eps == 1e-6


def test_clap_cosine_of_unit_vectors_and_refusal_of_a_zero_one(rng):
    audio = {"a": np.array([1.0, 0.0]), "b": np.array([0.0, 1.0])}
    text = {"a": np.array([0.0, 1.0]), "b": np.array([0.0, 1.0])}
    assert clap_scores(audio, text)[1].tolist() == [0.0, 1.0]
    with pytest.raises(ValueError, match="no direction"):
        clap_scores(audio | {"a": np.zeros(2)}, text)


def test_paired_difference_p_value_and_interval_are_the_bootstrap_of_its_seed(rng):
    a, b = rng.normal(size=30) + 0.1, rng.normal(size=30)
    out = paired_difference(a, b, n_boot=400, seed=11, level=0.9)
    diff = a - b
    draws = np.random.default_rng(11)
    resampled = np.array([diff[draws.integers(0, 30, 30)].mean() for _ in range(400)])
    assert out["p_value"] == min(1.0, 2.0 * min(float((resampled <= 0).mean()), float((resampled >= 0).mean())))
    assert (out["ci_low"], out["ci_high"]) == tuple(np.quantile(resampled, [0.05, 0.95]))
    assert out == bootstrap(lambda idx: float(diff[idx].mean()), 30, 400, 11, 0.9).as_dict() | {
        "n": 30, "p_value": out["p_value"], "p_floor": 2.0 / 400}
    with pytest.raises(ValueError, match="finite"):
        paired_difference(np.array([1.0, np.nan]), np.array([1.0, 2.0]), 10, 0)
    with pytest.raises(ValueError, match="finite"):
        paired_difference(np.array([1.0, 2.0]), np.array([np.inf, 2.0]), 10, 0)


# --- added after the second mutmut run ------------------------------------------------------------

def test_fad_inf_of_identical_fd_values_has_r_squared_one(rng):
    same = [np.ones((1, 2)) for _ in range(12)]  # every subset has the same statistics: a flat line
    result = fad_inf(same, _stats(rng, 30, 2), seed=0)
    assert len(set(result.fd_values)) == 1 and result.r_squared == 1.0


def test_holm_caps_at_one_and_refuses_what_is_not_a_p_value():
    from siren_bench.metrics.bootstrap import holm

    assert holm([0.6, 0.7]) == [1.0, 1.0]  # 2 x 0.6 = 1.2, capped
    assert holm([0.0, 0.5]) == [0.0, 0.5]  # 0 is a p-value
    for bad in ([0.5, np.nan], [-0.1, 0.5], [[0.1, 0.2]]):
        with pytest.raises(ValueError, match="p-values in"):
            holm(bad)


def test_paired_kl_applies_eps_where_asked(rng):
    reference = {f"c{i}": rng.normal(size=6) for i in range(4)}
    generated = {f"c{i}": rng.normal(size=6) for i in range(4)}
    ids = sorted(reference)
    first, second = np.stack([reference[i] for i in ids]), np.stack([generated[i] for i in ids])
    expected = kl(softmax(first, axis=-1), softmax(second, axis=-1), 1e-6, log_p=log_softmax(first, axis=-1),
                  log_q=log_softmax(second, axis=-1))
    assert np.array_equal(paired_kl(reference, generated, "ref_gen", eps=1e-6).per_clip, expected)
    assert not np.array_equal(expected, paired_kl(reference, generated, "ref_gen", eps=0.0).per_clip)


def _is_by_hand(logits, splits, order, bounds):
    x = np.asarray(logits, dtype=np.float64)[order]
    log_p = log_softmax(x, axis=-1)
    p = np.exp(log_p)
    scores = []
    for start, stop in bounds:
        chunk_p, chunk_log_p = p[start:stop], log_p[start:stop]
        marginal = chunk_p.mean(axis=0)
        scores.append(float(np.exp(kl(chunk_p, np.broadcast_to(marginal, chunk_p.shape), log_p=chunk_log_p).mean())))
    return scores


@pytest.mark.parametrize("shuffler, chunks", [("default_rng", "array_split"), ("randomstate", "floor"),
                                              ("default_rng", "floor"), ("randomstate", "array_split")])
def test_inception_score_shuffles_and_cuts_as_named(rng, shuffler, chunks):
    from siren_bench.metrics.divergence import inception_score

    logits = rng.normal(size=(23, 5)).astype(np.float32) * 3
    order = (np.random.default_rng(4) if shuffler == "default_rng" else np.random.RandomState(4)).permutation(23)
    bounds = ([(i * 23 // 5, (i + 1) * 23 // 5) for i in range(5)] if chunks == "floor"
              else [(c[0], c[-1] + 1) for c in np.array_split(np.arange(23), 5)])
    result = inception_score(logits, 5, 4, True, shuffler=shuffler, chunks=chunks)
    assert result.per_split == _is_by_hand(logits, 5, order, bounds)
    assert (result.mean, result.std, result.seed) == (float(np.mean(result.per_split)), float(np.std(result.per_split)), 4)
    assert inception_score(logits[:5], 5, 4, True).splits == 5  # as many clips as splits is enough
    with pytest.raises(ValueError, match="n >= splits"):
        inception_score(logits[:4], 5, 4, True)
    with pytest.raises(ValueError, match=r"\[n, C\] logits"):
        inception_score(logits[0], 5, 4, True)


def test_jackknife_records_its_level_method_and_seed_and_takes_the_smallest_cases():
    from siren_bench.metrics.jackknife import jackknife

    x = np.array([1.0, 2.0, 4.0, 8.0, 3.0])
    out = jackknife(lambda idx: float(x[idx].mean()), 5, seed=9, groups=5, level=0.9)
    assert (out["ci_level"], out["jackknife_seed"]) == (0.9, 9)
    assert out["ci_method"] == "delete-a-group jackknife, 5 seeded groups, value ± t(4) se"
    assert np.isfinite(jackknife(lambda idx: float(x[idx].mean()), 3, seed=0)["jackknife_se"])  # 3 clips suffice
    assert jackknife(lambda idx: float(x[idx].mean()), 5, seed=0, groups=2)["jackknife_groups"] == 2
    for level in (0.0, 1.0):
        with pytest.raises(ValueError, match="level"):
            jackknife(lambda idx: 0.0, 5, seed=0, level=level)


# --- added after the third mutmut run -------------------------------------------------------------

def test_kl_uses_the_logs_it_is_given_and_skips_zero_probabilities_exactly():
    draws = np.random.default_rng(0)
    for _ in range(200):  # a case where the given logs change the sum's last bit, either side
        x, y = draws.normal(size=(1, 6)) * 3, draws.normal(size=(1, 6)) * 3
        p, q = softmax(x, axis=-1), softmax(y, axis=-1)
        lp, lq = log_softmax(x, axis=-1), log_softmax(y, axis=-1)
        given = kl(p, q, 0.0, log_p=lp, log_q=lq)
        if given[0] != kl(p, q, 0.0, log_q=lq)[0] and given[0] != kl(p, q, 0.0, log_p=lp)[0]:
            break
    else:
        pytest.fail("no case where log_softmax and log(softmax) give different sums")
    assert np.array_equal(given, np.sum(p * (lp - lq), axis=-1))
    assert np.array_equal(kl(p, q, 1e-6, log_p=lp), np.sum(p * (lp - np.log(q + 1e-6)), axis=-1))
    zero = np.array([0.5, 0.5, 0.0])
    assert kl(zero, np.array([0.25, 0.25, 0.5])) == pytest.approx(np.log(2.0), rel=1e-15)  # 0 log 0 = 0, a vector works
    assert kl(zero.astype(np.float32), np.array([0.3, 0.3, 0.4], dtype=np.float32)) == \
        kl(zero, np.array([0.3, 0.3, 0.4], dtype=np.float32).astype(np.float64))


def test_inception_score_defaults_are_audioldm_evals_settings_and_no_shuffle_records_no_seed(rng):
    from siren_bench.metrics.divergence import inception_score

    logits = rng.normal(size=(30, 4))
    assert inception_score(logits) == inception_score(logits, 10, 2020, True)
    assert inception_score(logits, 10, 2020, False).seed is None


def test_frechet_default_method_is_the_eigen_form(rng):
    a, b = _stats(rng, 20, 4), _stats(rng, 20, 4, 0.5)
    assert trace_sqrt_product(a.cov, b.cov) == trace_sqrt_product(a.cov, b.cov, "eigen")
    assert frechet_distance(a, b).method == "eigen"


def test_bootstrap_interval_fields_and_smallest_cases():
    x = np.array([1.0, 5.0])
    interval = bootstrap(lambda idx: float(x[idx].mean()), 2, 50, seed=3, level=0.8)  # 2 clips suffice
    draws = np.random.default_rng(3)
    means = np.array([x[draws.integers(0, 2, 2)].mean() for _ in range(50)])
    assert (interval.std, interval.mean, interval.level, interval.seed) == (float(means.std(ddof=1)), float(means.mean()), 0.8, 3)
    assert set(interval.as_dict()) == {"value", "ci_low", "ci_high", "bootstrap_std", "bootstrap_mean", "n_boot", "ci_level",
                                       "bootstrap_seed"}
    assert interval.as_dict()["bootstrap_std"] == interval.std and interval.as_dict()["ci_level"] == 0.8
    assert interval.as_dict()["bootstrap_seed"] == 3 and interval.as_dict()["bootstrap_mean"] == interval.mean
    assert bootstrap(lambda idx: float(x[idx].mean()), 2, 1, seed=0).std == 0.0  # one draw has no spread
    y = np.arange(6.0)
    two = np.random.default_rng(5)
    pair = [y[two.integers(0, 6, 6)].mean() for _ in range(2)]
    assert bootstrap(lambda idx: float(y[idx].mean()), 6, 2, seed=5).std == float(np.std(pair, ddof=1)) > 0.0
    with pytest.raises(ValueError, match="at least 2 clips"):
        bootstrap(lambda idx: 0.0, 1, 10, seed=0)
    with pytest.raises(ValueError, match="n_boot must be >= 1"):
        bootstrap(lambda idx: 0.0, 5, 0, seed=0)


def test_row_shaped_embeddings_and_logits_are_flattened_per_clip(rng):
    """An embedder may hand [1, d] rows: CLAP and KL flatten each clip to one vector first."""
    audio = {f"c{i}": rng.normal(size=(1, 4)) for i in range(3)}
    text = {f"c{i}": rng.normal(size=(1, 4)) for i in range(3)}
    flat = clap_scores({k: v[0] for k, v in audio.items()}, {k: v[0] for k, v in text.items()})[1]
    assert np.array_equal(clap_scores(audio, text)[1], flat)
    assert np.array_equal(paired_kl(audio, text).per_clip, paired_kl({k: v[0] for k, v in audio.items()},
                                                                     {k: v[0] for k, v in text.items()}).per_clip)


# --- added after the fourth mutmut run (2026-12-05, after sharded scoring and reference-stats files) ---

def test_kl_is_zero_where_both_rows_give_a_class_zero_probability():
    """0 log 0 = 0 on both sides: a class neither distribution uses adds nothing (not 0 x inf = NaN)."""
    p = np.array([[0.5, 0.5, 0.0], [0.2, 0.8, 0.0]])
    assert np.array_equal(kl(p, p), [0.0, 0.0])
    assert kl(p[:1], p[1:])[0] == pytest.approx(0.5 * np.log(0.5 / 0.2) + 0.5 * np.log(0.5 / 0.8), rel=1e-15)


def test_jackknife_interval_is_floored_only_below_the_floor():
    """A set distance of exactly 0 with no spread (identical sets): the interval [0, 0] reaches the
    floor without crossing it, so it is not marked as floored; one that crosses it is."""
    from siren_bench.metrics.jackknife import jackknife

    flat = jackknife(lambda idx: 0.0, 8, seed=0, groups=4, floor=0.0)
    assert (flat["ci_low"], flat["ci_high"], flat["ci_floored"]) == (0.0, 0.0, False)
    x = np.array([0.1, 3.0, 0.2, 5.0, 0.1, 4.0, 0.3, 6.0])
    spread = jackknife(lambda idx: float(x[idx].mean()) - 1.5, 8, seed=0, groups=4, floor=0.0)
    assert spread["ci_floored"] is True and spread["ci_low"] == 0.0 < spread["ci_high"]


def test_statistics_from_a_published_mean_and_covariance_are_those_of_the_vectors(rng):
    """GaussianStats.from_moments (a shared statistics file: mean, ddof-1 covariance, n) equals the
    statistics of the vectors themselves: the same n, sums, mean, covariance and Fréchet distance."""
    x = rng.normal(size=(40, 5)) * [1.0, 2.0, 0.5, 3.0, 1.5] + 2.0
    direct = GaussianStats.from_features(x)
    shared = GaussianStats.from_moments(x.mean(axis=0), np.cov(x, rowvar=False, ddof=1), 40)
    assert shared.n == 40 and isinstance(shared.n, int)
    np.testing.assert_allclose(shared.total, direct.total, rtol=1e-12)
    np.testing.assert_allclose(shared.outer, direct.outer, rtol=1e-12)
    np.testing.assert_allclose(shared.cov, np.cov(x, rowvar=False), rtol=1e-12)
    other = GaussianStats.from_features(rng.normal(size=(30, 5)))
    assert frechet.frechet_distance(shared, other).value == pytest.approx(frechet.frechet_distance(direct, other).value, rel=1e-10)
    m32, c32 = x.mean(axis=0).astype(np.float32), np.cov(x, rowvar=False).astype(np.float32)  # a float32 file
    narrow, wide = GaussianStats.from_moments(m32, c32, 40), GaussianStats.from_moments(m32.astype(np.float64), c32.astype(np.float64), 40)
    assert narrow.total.dtype == narrow.outer.dtype == np.float64  # the arithmetic in float64, whatever the file holds
    assert np.array_equal(narrow.total, wide.total) and np.array_equal(narrow.outer, wide.outer)
    for mean, cov, n in ((x.mean(axis=0)[None], np.eye(5), 40), (x.mean(axis=0), np.eye(4), 40),
                         (x.mean(axis=0), np.eye(5), 1)):
        with pytest.raises(ValueError, match=r"need a \[d\] mean, a \[d, d\] covariance and n >= 2, got"):
            GaussianStats.from_moments(mean, cov, n)
    assert GaussianStats.from_moments(x.mean(axis=0), np.eye(5), 2).n == 2  # two vectors suffice


def test_the_inception_scores_interval_is_the_jackknifes_centred_on_it_and_absent_when_the_clips_are_too_few():
    """IS is a set statistic: bootstrap resamples' duplicated clips pulled its draws below the
    estimate (a smoke report's interval excluded it), so it takes the delete-a-group jackknife,
    floored at 1; with too few clips for a leave-out set to fill the splits there is no interval."""
    from siren_bench.embedders.base import Embedding
    from siren_bench.metrics.base import MetricInputs
    from siren_bench.metrics.divergence import inception_score, score_is
    from siren_bench.metrics.jackknife import jackknife
    from siren_bench.recipes import get_recipe

    spec = get_recipe("smoke").spec("is")
    rng = np.random.default_rng(4)
    logits = rng.standard_normal((40, 6)) * 2
    clips = {f"c{i:02d}": Embedding(np.zeros((1, 2)), logits[i:i + 1]) for i in range(40)}
    ids = sorted(clips)
    out = score_is(MetricInputs(spec, clips, {}, ids, 50, 3, None, None, False))
    splits, seed = int(spec.option("splits", 10)), spec.option("seed", 0)
    how = {"shuffler": spec.option("shuffler", "default_rng"), "chunks": spec.option("chunks", "array_split")}
    stacked = np.stack([clips[i].logits[0] for i in ids])
    expected = jackknife(lambda idx: inception_score(stacked[idx], splits, seed, True, **how).mean, 40, 3, floor=1.0)
    assert out["value"] == inception_score(stacked, splits, seed, True, **how).mean == expected["value"]
    assert (out["ci_low"], out["ci_high"], out["jackknife_se"]) == (expected["ci_low"], expected["ci_high"], expected["jackknife_se"])
    assert out["ci_low"] <= out["value"] <= out["ci_high"] and out["ci_low"] >= 1.0
    few = {i: clips[i] for i in ids[:splits]}
    bare = score_is(MetricInputs(spec, few, {}, sorted(few), 50, 3, None, None, False))
    assert bare["ci_low"] is None and bare["ci_high"] is None
    assert bare["ci_method"].startswith("none: the jackknife leaves out up to 1 of 10 clips")
    assert bare["value"] == inception_score(np.stack([few[i].logits[0] for i in sorted(few)]), splits, seed, True, **how).mean
    assert out["ci_floor"] == 1.0
    # one clip more: each leave-out set holds exactly the 10 clips the splits need, so there is an interval
    eleven = {i: clips[i] for i in ids[:splits + 1]}
    assert score_is(MetricInputs(spec, eleven, {}, sorted(eleven), 50, 3, None, None, False))["ci_low"] is not None
    with pytest.raises(ValueError, match=r"^generated: the embedder gives no logits"):
        score_is(MetricInputs(spec, {i: Embedding(np.zeros((1, 2))) for i in ids}, {}, ids, 50, 3, None, None, False))


def _metric_inputs(metric: str, generated: dict, reference: dict, text: dict | None = None):
    from siren_bench.metrics.base import MetricInputs
    from siren_bench.recipes import get_recipe

    return MetricInputs(get_recipe("smoke").spec(metric), generated, reference, sorted(generated), 50, 3, text, None, False)


def test_the_kad_entry_point_scores_float64_clip_means_and_records_its_bandwidth_and_scale():
    """score_kad: clip means in float64 however the frames are stored (float32 frames whose float32
    mean differs), the bandwidth from the reference set, the jackknife over the generated clips."""
    from siren_bench.metrics.jackknife import jackknife
    from siren_bench.metrics.kernel import score_kad

    rng = np.random.default_rng(8)
    gen = {f"g{i:02d}": Embedding((rng.standard_normal((7, 4)) * 1e3 + 1e4).astype(np.float32)) for i in range(12)}
    ref = {f"r{i:02d}": Embedding((rng.standard_normal((7, 4)) * 1e3 + 1e4).astype(np.float32)) for i in range(10)}
    x = np.stack([gen[i].frames.astype(np.float64).mean(axis=0) for i in sorted(gen)])
    y = np.stack([ref[i].frames.astype(np.float64).mean(axis=0) for i in sorted(ref)])
    assert not np.array_equal(np.stack([gen[i].frames.mean(axis=0) for i in sorted(gen)]).astype(np.float64), x)
    sigma = median_bandwidth(y)
    out = score_kad(_metric_inputs("kad", gen, ref))
    expected = jackknife(KernelResampler(x, y, sigma), 12, 3)
    assert out["value"] == expected["value"] == kernel_audio_distance(x, y, sigma)[0]
    assert (out["ci_low"], out["ci_high"]) == (expected["ci_low"], expected["ci_high"])
    assert out["bandwidth"] == sigma and out["scale"] == "x100"


def test_the_clap_entry_point_records_its_scale_and_x100_value_and_names_what_is_missing():
    from siren_bench.metrics.clap_score import score_clap

    rng = np.random.default_rng(9)
    gen = {f"g{i:02d}": Embedding((rng.standard_normal((5, 3)) * 1e3 + 1e4).astype(np.float32)) for i in range(8)}
    text = {i: rng.standard_normal(3) for i in gen}
    out = score_clap(_metric_inputs("clap", gen, {}, text))
    audio = {i: gen[i].frames.astype(np.float64).mean(axis=0) for i in gen}
    ids, cosines = clap_scores(audio, text)
    assert out["value"] == float(cosines.mean()) and out["per_clip"] == dict(zip(ids, cosines.tolist()))
    assert out["scale"] == "raw cosine" and out["value_x100"] == 100.0 * out["value"]
    with pytest.raises(ValueError, match=r"^clap: caption text embeddings are needed$"):
        score_clap(_metric_inputs("clap", gen, {}, None))
    missing = {i: text[i] for i in sorted(gen)[4:]}
    with pytest.raises(ValueError, match=r"^clap: 4 generated clips have no caption embedding \(e\.g\. \['g00', 'g01', 'g02'\]\)$"):
        score_clap(_metric_inputs("clap", gen, {}, missing))


def test_the_kl_entry_point_names_the_side_whose_embedder_gives_no_logits():
    from siren_bench.metrics.divergence import score_kl

    with_logits = {f"c{i}": Embedding(np.zeros((1, 2)), np.zeros((1, 3))) for i in range(4)}
    without = {f"c{i}": Embedding(np.zeros((1, 2))) for i in range(4)}
    with pytest.raises(ValueError, match=r"^reference: the embedder gives no logits"):
        score_kl(_metric_inputs("kl", with_logits, without))
    with pytest.raises(ValueError, match=r"^generated: the embedder gives no logits"):
        score_kl(_metric_inputs("kl", without, with_logits))


def test_the_kl_entry_point_defaults_to_kl_of_reference_from_generated_without_eps_and_adds_the_other_direction():
    """A recipe entry without options scores KL(reference || generated) with no eps; `eps` and
    `also` reach the arithmetic (the smoke recipe sets all three, so only this test reaches the defaults)."""
    from dataclasses import replace

    from siren_bench.metrics.divergence import paired_kl, score_kl

    rng = np.random.default_rng(10)
    ref = {f"c{i}": Embedding(np.zeros((1, 2)), rng.standard_normal((2, 4)) * 3) for i in range(6)}
    gen = {f"c{i}": Embedding(np.zeros((1, 2)), rng.standard_normal((2, 4)) * 3) for i in range(6)}
    means = ({i: e.logits.mean(axis=0) for i, e in ref.items()}, {i: e.logits.mean(axis=0) for i, e in gen.items()})
    bare = _metric_inputs("kl", gen, ref)
    bare = replace(bare, spec=replace(bare.spec, options=()))
    out = score_kl(bare)
    expected = paired_kl(*means, "ref_gen", 0.0)
    assert (out["value"], out["direction"], out["eps"]) == (expected.mean, "ref_gen", 0.0)
    assert not any(key.startswith("value_") for key in out)
    both = replace(bare, spec=replace(bare.spec, options=(("also", "gen_ref"), ("eps", 0.5))))
    out = score_kl(both)
    assert out["value"] == paired_kl(*means, "ref_gen", 0.5).mean and out["eps"] == 0.5
    assert out["value_gen_ref"] == paired_kl(*means, "gen_ref", 0.5).mean != out["value"]


def test_the_frechet_entry_point_scores_fd_on_clip_means_and_fad_on_frames_with_the_recipes_options(monkeypatch):
    """score_frechet: FD from each clip's mean vector, FAD from every frame, both against the
    reference at the same level; `fd_method`, FAD-inf's `seed` and `n_points` reach the arithmetic
    and default to eigen, 0 and 15; FD's interval is floored at 0; what was used is recorded. (Which
    method ran is seen by a spy, not by comparing values: eigen and symmetric differ only in
    rounding, which at d = 3 may round alike on one CPU and not on another.)"""
    from dataclasses import replace

    from siren_bench.metrics.frechet import per_clip_frechet, reference_gaussian, score_frechet
    from siren_bench.metrics.jackknife import jackknife

    rng = np.random.default_rng(11)
    gen = {f"g{i:02d}": Embedding(rng.standard_normal((6, 3)) + 0.5) for i in range(24)}
    ref = {f"r{i:02d}": Embedding(rng.standard_normal((6, 3))) for i in range(20)}
    ids = sorted(gen)

    def inputs(metric, **options):
        base = _metric_inputs(metric, gen, ref)
        return replace(base, spec=replace(base.spec, options=tuple(sorted(options.items()))))

    clip_means = [clip_level(gen[i].frames) for i in ids]
    frames = [gen[i].frames for i in ids]
    fd = score_frechet(inputs("fd"))
    assert fd["value"] == FrechetResampler(clip_means, reference_gaussian(ref, "clip"), "eigen")(np.arange(24))
    assert fd["n_frames"] == 24 and fd["n_reference_frames"] == 20 and fd["ci_floor"] == 0.0
    assert fd["jackknife_seed"] == 3
    fad = score_frechet(inputs("fad"))
    assert fad["value"] == FrechetResampler(frames, reference_gaussian(ref, "frames"), "eigen")(np.arange(24))
    assert fad["n_frames"] == 144 and fad["n_reference_frames"] == 120
    assert fd["per_clip"] == dict(zip(ids, distance_to_reference_mean(clip_means, reference_gaussian(ref, "clip"))))
    assert fd["per_clip_kind"] == "squared distance to the reference mean"
    assert fad["per_clip"] == dict(zip(ids, per_clip_frechet(frames, reference_gaussian(ref, "frames"), "eigen")))
    assert fad["per_clip_kind"] == "per-clip FD of the clip's frames"
    methods_used = []
    real_trace = frechet.trace_sqrt_product
    monkeypatch.setattr(frechet, "trace_sqrt_product", lambda s1, s2, method="eigen": methods_used.append(method) or real_trace(s1, s2, method))

    def methods_of(result_of):
        methods_used.clear()
        result = result_of()
        return result, set(methods_used)

    assert methods_of(lambda: score_frechet(inputs("fad")))[1] == {"eigen"}
    assert methods_of(lambda: score_frechet(inputs("fd")))[1] == {"eigen"}
    symmetric, used = methods_of(lambda: score_frechet(inputs("fad", fd_method="symmetric")))
    assert used == {"symmetric"}
    resampler = FrechetResampler(frames, reference_gaussian(ref, "frames"), "symmetric")
    assert symmetric["value"] == resampler(np.arange(24))
    interval = jackknife(resampler, 24, 3, floor=0.0)
    assert (symmetric["ci_low"], symmetric["ci_high"]) == (interval["ci_low"], interval["ci_high"])
    assert symmetric["per_clip"] == dict(zip(ids, per_clip_frechet(frames, reference_gaussian(ref, "frames"), "symmetric")))
    value_only = score_frechet(replace(inputs("fad", fd_method="symmetric"), value_only=True))
    assert value_only == {"value": symmetric["value"]}
    # float32 frames are read in float64: the same FD as the float64 copies give
    single = {i: Embedding(e.frames.astype(np.float32) * 1e3 + 1e4) for i, e in gen.items()}
    as_double = {i: Embedding(e.frames.astype(np.float64)) for i, e in single.items()}
    assert score_frechet(replace(inputs("fd"), generated=single))["value"] == score_frechet(replace(inputs("fd"), generated=as_double))["value"]
    # FAD-inf: defaults seed 0, 15 points; given options reach the fit and every leave-out refit
    ref_frames = reference_gaussian(ref, "frames")
    default, used = methods_of(lambda: score_frechet(inputs("fad_inf")))
    assert used == {"eigen"}
    line = fad_inf(frames, ref_frames, seed=0, n_points=15, method="eigen")
    assert default["value"] == line.value and default["sizes"] == line.sizes and len(default["sizes"]) == len(set(line.sizes))
    assert (default["line_fit_se"], default["slope"], default["r_squared"], default["fd_values"]) == (
        line.intercept_se, line.slope, line.r_squared, line.fd_values)
    given, used = methods_of(lambda: score_frechet(inputs("fad_inf", seed=5, n_points=6, fd_method="symmetric")))
    assert used == {"symmetric"}
    line = fad_inf(frames, ref_frames, seed=5, n_points=6, method="symmetric")
    assert given["value"] == line.value and (given["sizes"], given["fd_values"], given["line_fit_se"]) == (
        line.sizes, line.fd_values, line.intercept_se)
    assert given["value"] not in (fad_inf(frames, ref_frames, seed=5, n_points=15, method="symmetric").value, default["value"])
    expected = jackknife(lambda idx: fad_inf([frames[i] for i in idx], ref_frames, seed=5, n_points=6, method="symmetric").value, 24, 3)
    assert (given["ci_low"], given["ci_high"], given["jackknife_seed"]) == (expected["ci_low"], expected["ci_high"], 3)


def test_the_inception_score_entry_point_defaults_and_options_reach_the_arithmetic():
    """score_is with no options: 10 splits, seed 0, shuffled by default_rng, cut by array_split;
    each option, given, changes what is computed and is recorded."""
    from dataclasses import replace

    from siren_bench.metrics.divergence import inception_score, score_is
    from siren_bench.metrics.jackknife import jackknife

    rng = np.random.default_rng(12)
    logits = rng.standard_normal((43, 5)) * 2
    clips = {f"c{i:02d}": Embedding(np.zeros((1, 2)), logits[i:i + 1]) for i in range(43)}
    base = _metric_inputs("is", clips, {})

    def score(**options):
        return score_is(replace(base, spec=replace(base.spec, options=tuple(sorted(options.items())))))

    bare = score()
    expected = inception_score(logits, 10, 0, True, shuffler="default_rng", chunks="array_split")
    assert (bare["value"], bare["split_std"], bare["splits"], bare["split_seed"]) == (expected.mean, expected.std, 10, 0)
    given = {"splits": 4, "seed": 7, "shuffle": True, "shuffler": "randomstate", "chunks": "floor"}
    out = score(**given)
    assert out["value"] == inception_score(logits, 4, 7, True, shuffler="randomstate", chunks="floor").mean
    assert (out["splits"], out["split_seed"]) == (4, 7)
    expected = jackknife(lambda idx: inception_score(logits[idx], 4, 7, True, shuffler="randomstate", chunks="floor").mean, 43, 3, floor=1.0)
    assert (out["ci_low"], out["ci_high"]) == (expected["ci_low"], expected["ci_high"])
    unshuffled = score(shuffle=False)
    expected = jackknife(lambda idx: inception_score(logits[idx], 10, 0, False).mean, 43, 3, floor=1.0)
    assert (unshuffled["ci_low"], unshuffled["ci_high"]) == (expected["ci_low"], expected["ci_high"])
    for key, value in given.items():  # each option alone moves the score off the defaults'
        if key != "shuffle":
            assert score(**{key: value})["value"] != bare["value"], key
    assert score(shuffle=False)["value"] == inception_score(logits, 10, 0, False).mean != bare["value"]
