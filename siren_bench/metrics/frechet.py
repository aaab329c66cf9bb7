"""Fréchet distance between Gaussians fitted to embeddings (FAD, FD), and FAD-inf.

FD = |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^1/2).

The trace of the matrix square root is computed from eigenvalues, in float64:
- "eigen": the eigenvalues of S1 S2 are those of the similar PSD matrix S2^1/2 S1 S2^1/2, so
  they are real and >= 0 up to rounding; tr((S1 S2)^1/2) = sum sqrt(lambda). They are computed
  as that symmetric matrix's (eigvalsh), with S2^1/2 from eigh and remembered by content: S2 is
  the reference, the same for every system, subset and jackknife draw of a run, and a general
  eigvals of S1 S2 costs 4 to 10 times a symmetric one (measured at d = 128 to 2048).
- "symmetric": the same through S1^1/2 S2 S1^1/2 (nothing remembered): a cross-check from the
  other side.
Rounding leaves tiny negative eigenvalues (of the rooted covariance, or of the product), which
are clipped to zero and the largest reported (`max_discarded`).
- "sqrtm": scipy.linalg.sqrtm(S1 S2), real part of the trace. Slower and prone to spurious
  imaginary parts for rank-deficient covariances; kept as a cross-check and for presets that
  reproduce toolkits using it. Like those toolkits it refuses a root whose diagonal has an
  imaginary part above 1e-3 (a smaller one is dropped and reported as `max_discarded`).
- "sqrtm_eps_retry": audioldm_eval's form: sqrtm, and where it gives a non-finite result, again
  with 1e-6 added to both diagonals. Where the retry fails too the original returns -1; here it
  is an error.
For rank-deficient covariances (n <= d) FD(X, X) is not exactly 0: the rounding of the
near-zero eigenvalues (each about 1e-16 x the largest) enters through their square roots.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import scipy.linalg
from scipy.stats import t as student_t

from siren_bench.embedders.base import Embedding
from siren_bench.metrics.base import MetricInputs, clip_level
from siren_bench.metrics.jackknife import jackknife
from siren_bench.registry import METRICS

METHODS = ("eigen", "symmetric", "sqrtm", "sqrtm_eps_retry")
IMAGINARY_TOLERANCE = 1e-3  # the sqrtm forms' largest accepted |imaginary part| on the root's diagonal (pytorch-fid's atol)


@dataclass
class GaussianStats:
    """Mean and covariance (unbiased, ddof=1) of n feature vectors, in float64.

    Kept as sufficient statistics (n, sum, sum of outer products) so that statistics of shards
    merge exactly, like torchmetrics' metric states.
    """

    n: int
    total: np.ndarray  # [d]
    outer: np.ndarray  # [d, d], sum of x x^T

    @classmethod
    def from_features(cls, features: np.ndarray) -> "GaussianStats":
        x = _as_matrix(features)
        return cls(x.shape[0], x.sum(axis=0), x.T @ x)

    @classmethod
    def from_moments(cls, mean: np.ndarray, cov: np.ndarray, n: int) -> "GaussianStats":
        """The statistics of n vectors with this mean and (ddof=1) covariance, e.g. from a
        published mean / covariance file (fadtk, stable-audio-metrics share theirs that way)."""
        mean, cov = np.asarray(mean, dtype=np.float64), np.asarray(cov, dtype=np.float64)
        if mean.ndim != 1 or cov.shape != (len(mean), len(mean)) or n < 2:
            raise ValueError(f"need a [d] mean, a [d, d] covariance and n >= 2, got {mean.shape}, {cov.shape}, n={n}")
        return cls(int(n), n * mean, (n - 1) * cov + n * np.outer(mean, mean))

    def merge(self, other: "GaussianStats") -> "GaussianStats":
        if self.total.shape != other.total.shape:
            raise ValueError(f"cannot merge statistics of dimension {self.total.shape[0]} and {other.total.shape[0]}")
        return GaussianStats(self.n + other.n, self.total + other.total, self.outer + other.outer)

    @property
    def mean(self) -> np.ndarray:
        self._need(1)
        return self.total / self.n

    @property
    def cov(self) -> np.ndarray:
        self._need(2)
        mean = self.mean
        # centred form computed from sums; symmetrised against rounding
        cov = (self.outer - self.n * np.outer(mean, mean)) / (self.n - 1)
        return (cov + cov.T) / 2

    def _need(self, n: int) -> None:
        if self.n < n:
            raise ValueError(f"need at least {n} feature vectors, have {self.n}")


def _as_matrix(features: np.ndarray) -> np.ndarray:
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"features must be a non-empty [n, d] array, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("features contain NaN or inf")
    return x


@dataclass(frozen=True)
class FrechetResult:
    value: float
    mean_term: float  # |mu1 - mu2|^2
    trace_term: float  # tr(S1) + tr(S2) - 2 tr((S1 S2)^1/2)
    method: str
    # the largest part clipped away as rounding, a diagnostic only: eigen / symmetric, the largest
    # negative eigenvalue of the rooted covariance or of the symmetric product (the two differ in
    # units); sqrtm forms, the largest imaginary part of the root's diagonal
    max_discarded: float


def _sqrt_psd(matrix: np.ndarray) -> tuple[np.ndarray, float]:
    """S^1/2 of a symmetric PSD matrix (eigh), and its largest negative eigenvalue clipped to zero."""
    values, vectors = np.linalg.eigh(matrix)
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T, float(-values.min(initial=0.0))


_REFERENCE_ROOTS: OrderedDict[bytes, tuple[np.ndarray, float]] = OrderedDict()


def _reference_root(cov: np.ndarray) -> tuple[np.ndarray, float]:
    """S^1/2 of a reference covariance, remembered by its bytes: every system of a run (and every
    metric on one embedder) is scored against the same reference, and at d = 2048 the
    eigen-decomposition costs about a second on 2 cores, hashing the matrix a few milliseconds.
    The four used last are kept (a one-off second argument does not push a run's reference out),
    read-only, since every caller shares them."""
    key = hashlib.blake2b(cov.tobytes(), digest_size=32).digest() + repr(cov.shape).encode()
    if key in _REFERENCE_ROOTS:
        _REFERENCE_ROOTS.move_to_end(key)
    else:
        root, clipped = _sqrt_psd(cov)
        root.setflags(write=False)
        _REFERENCE_ROOTS[key] = (root, clipped)
        while len(_REFERENCE_ROOTS) > 4:
            _REFERENCE_ROOTS.popitem(last=False)
    return _REFERENCE_ROOTS[key]


def trace_sqrt_product(s1: np.ndarray, s2: np.ndarray, method: str = "eigen") -> tuple[float, float]:
    """tr((S1 S2)^1/2) and the largest eigenvalue part discarded as rounding."""
    if method in ("eigen", "symmetric"):
        (root, clipped), other = (_reference_root(s2), s1) if method == "eigen" else (_sqrt_psd(s1), s2)
        values = np.linalg.eigvalsh(root @ other @ root)
        return float(np.sqrt(np.clip(values, 0.0, None)).sum()), max(clipped, float(-values.min(initial=0.0)))
    if method in ("sqrtm", "sqrtm_eps_retry"):
        root = scipy.linalg.sqrtm(s1 @ s2)
        if method == "sqrtm_eps_retry" and not np.isfinite(root).all():
            offset = 1e-6 * np.eye(len(s1))
            root = scipy.linalg.sqrtm((s1 + offset) @ (s2 + offset))
        if not np.isfinite(root).all():
            raise ValueError(f"matrix square root is not finite ({method}); use the eigen form")
        imaginary = float(np.abs(np.diagonal(root).imag).max(initial=0.0)) if np.iscomplexobj(root) else 0.0
        if imaginary > IMAGINARY_TOLERANCE:
            # audioldm_eval and stable-audio-metrics (pytorch-fid's check) refuse here too
            raise ValueError(f"matrix square root ({method}) has an imaginary diagonal part of {imaginary:.3g} "
                             f"(> {IMAGINARY_TOLERANCE}): not rounding; use the eigen form")
        return float(np.trace(root).real), imaginary
    raise ValueError(f"unknown Fréchet method {method!r}; choose one of {METHODS}")


def frechet_distance(a: GaussianStats, b: GaussianStats, method: str = "eigen") -> FrechetResult:
    mu1, mu2, s1, s2 = a.mean, b.mean, a.cov, b.cov
    if mu1.shape != mu2.shape:
        raise ValueError(f"embedding dimensions differ: {mu1.shape[0]} vs {mu2.shape[0]}")
    mean_term = float(np.sum((mu1 - mu2) ** 2))
    cross, discarded = trace_sqrt_product(s1, s2, method)
    trace_term = float(np.trace(s1) + np.trace(s2) - 2.0 * cross)
    return FrechetResult(mean_term + trace_term, mean_term, trace_term, method, discarded)


class FrechetResampler:
    """FD of subsets of the clips against fixed reference statistics: the statistic an interval
    evaluates many times. `clips` holds one [rows, d] array per clip; a draw picks clips (the
    jackknife leaves groups out; a bootstrap would pick with repetition) and pools their rows.

    The full set, and every draw with at least d pooled rows, is scored with the recipe's `method`
    on the pooled rows (one BLAS product: per-clip d x d statistics would need n d^2 memory, 2 GB
    for 975 clip vectors at d = 512). Draws with fewer rows m than
    dimensions d (e.g. 200 clip vectors of PANNs' 2048-d embedding) use the Gram form instead,
    the same quantity computed in O(m^3) rather than O(d^3) per draw: with A the centred draw rows
    / sqrt(m - 1) (S1 = A^T A) and R = S2^1/2, tr((S1 S2)^1/2) = tr((R A^T A R)^1/2) = sum of the
    square roots of the eigenvalues of (A R)(A R)^T, an m x m PSD matrix whose entries are
    centred sub-blocks of the Gram matrix (X R)(X R)^T, computed once. At d = 2048 an O(d^3)
    eigen-decomposition costs seconds per draw on 2 cores, which made a 1000-draw interval take
    most of an hour.
    """

    def __init__(self, clips: list[np.ndarray], reference: GaussianStats, method: str = "eigen"):
        self.blocks = [_as_matrix(c) for c in clips]
        self.reference, self.method = reference, method
        self.rows = np.concatenate(self.blocks)
        bounds = np.cumsum([0] + [len(b) for b in self.blocks])
        self.row_index = [np.arange(a, b) for a, b in zip(bounds[:-1], bounds[1:])]
        self._gram = None  # (X R)(X R)^T, X X^T, reference mean and tr(S2), built on the first Gram draw

    def __call__(self, clip_indices: np.ndarray) -> float:
        clip_indices = np.asarray(clip_indices)
        n_rows = sum(len(self.blocks[i]) for i in clip_indices)
        full = len(clip_indices) == len(self.blocks) and np.array_equal(clip_indices, np.arange(len(self.blocks)))
        if full:
            return frechet_distance(GaussianStats.from_features(self.rows), self.reference, self.method).value
        rows = np.concatenate([self.row_index[i] for i in clip_indices])
        if n_rows >= self.rows.shape[1]:
            return frechet_distance(GaussianStats.from_features(self.rows[rows]), self.reference, self.method).value
        return self._gram_fd(rows)

    def _gram_fd(self, rows: np.ndarray) -> float:
        if self._gram is None:
            cov = self.reference.cov
            whitened = self.rows @ _reference_root(cov)[0]
            self._gram = (whitened @ whitened.T, self.rows @ self.rows.T, self.reference.mean, float(np.trace(cov)))
        cross_gram, plain_gram, reference_mean, trace_s2 = self._gram
        m = len(rows)
        if m < 2:
            raise ValueError("need at least 2 feature vectors for a covariance")

        def centred(gram: np.ndarray) -> np.ndarray:
            block = gram[np.ix_(rows, rows)]
            return block - block.mean(axis=0) - block.mean(axis=1)[:, None] + block.mean()

        values = np.linalg.eigvalsh(centred(cross_gram) / (m - 1))
        trace_s1 = float(np.trace(centred(plain_gram))) / (m - 1)
        mean_term = float(np.sum((self.rows[rows].mean(axis=0) - reference_mean) ** 2))
        cross = float(np.sqrt(np.clip(values, 0.0, None)).sum())
        return mean_term + trace_s1 + trace_s2 - 2.0 * cross


@dataclass(frozen=True)
class FadInfResult:
    value: float  # intercept of FD against 1/n: the extrapolation to infinitely many clips
    slope: float
    r_squared: float
    sizes: list[int]
    fd_values: list[float]
    seed: int
    intercept_se: float  # standard error of the intercept under the least-squares fit
    ci_low: float  # 95 % interval of the intercept: t quantile with (points - 2) degrees of freedom
    ci_high: float


def fad_inf(generated: list[np.ndarray], reference: GaussianStats, seed: int, n_points: int = 15,
            min_fraction: float = 0.2, method: str = "eigen") -> FadInfResult:
    """FAD-inf (fadtk): FD of seeded random subsets of the generated clips of growing size n,
    a least-squares line FD = a + b / n, and a, the value at n = infinity.

    `generated` holds one [frames, d] array per clip; subsets draw whole clips without
    replacement (frames of a clip stay together). The reference statistics stay fixed.
    """
    n_clips = len(generated)
    smallest = max(2, int(np.ceil(min_fraction * n_clips)))
    if n_clips < 3 or smallest >= n_clips:
        raise ValueError(f"FAD-inf needs at least 3 generated clips and a range of subset sizes, got {n_clips}")
    sizes = sorted(set(int(round(s)) for s in np.linspace(smallest, n_clips, n_points)))
    rng = np.random.default_rng(seed)
    fds = []
    for size in sizes:
        pick = rng.choice(n_clips, size=size, replace=False)
        subset = GaussianStats.from_features(np.concatenate([generated[i] for i in pick]))
        fds.append(frechet_distance(subset, reference, method).value)
    x = 1.0 / np.asarray(sizes, dtype=np.float64)
    y = np.asarray(fds)
    slope, intercept = np.polyfit(x, y, 1)
    residual = y - (intercept + slope * x)
    total = np.sum((y - y.mean()) ** 2)
    r2 = float(1.0 - np.sum(residual ** 2) / total) if total > 0 else 1.0
    if len(sizes) < 3:
        raise ValueError(f"FAD-inf needs at least 3 distinct subset sizes for an interval, got {sizes}")
    # The fit's own uncertainty, as fadtk's line fit implies: se(a) = s sqrt(1/m + mean(x)^2 / Sxx)
    m = len(sizes)
    s2 = float(np.sum(residual ** 2)) / (m - 2)
    se = float(np.sqrt(s2 * (1.0 / m + x.mean() ** 2 / np.sum((x - x.mean()) ** 2))))
    half = float(student_t.ppf(0.975, m - 2)) * se
    return FadInfResult(float(intercept), float(slope), r2, sizes, [float(v) for v in fds], seed, se,
                        float(intercept) - half, float(intercept) + half)


def per_clip_frechet(generated: list[np.ndarray], reference: GaussianStats, method: str = "eigen") -> list[float | None]:
    """Per-clip FD (fadtk's per-song FAD): each clip's own frame statistics against the reference.

    Defined only for clips with at least 2 frames (None otherwise: a one-vector clip has no
    covariance). Useful to find the clips that pull a system's FAD up, not as a score.
    """
    out: list[float | None] = []
    for frames in generated:
        if len(frames) < 2:
            out.append(None)
        else:
            out.append(frechet_distance(GaussianStats.from_features(frames), reference, method).value)
    return out


def distance_to_reference_mean(generated: list[np.ndarray], reference: GaussianStats) -> list[float]:
    """Per clip: squared distance of the clip's mean embedding to the reference mean (an outlier
    indicator that exists for clip-level embedders too)."""
    mu = reference.mean
    return [float(np.sum((np.asarray(f, dtype=np.float64).mean(axis=0) - mu) ** 2)) for f in generated]


def reference_gaussian(reference: dict[str, Embedding], level: str) -> GaussianStats:
    """Gaussian statistics of a reference set's frames (level "frames": FAD) or clip vectors
    (level "clip": FD), in sorted clip-id order so the float sums never depend on dict order."""
    if level not in ("frames", "clip"):
        raise ValueError(f"level must be 'frames' or 'clip', got {level!r}")
    rows = [np.asarray(reference[i].frames, dtype=np.float64) for i in sorted(reference)]
    if level == "clip":
        rows = [clip_level(r) for r in rows]
    return GaussianStats.from_features(np.concatenate(rows))


def score_frechet(inputs: MetricInputs) -> dict:
    """FAD (the frames of every clip), FD (one mean vector per clip) and FAD-inf (FAD
    extrapolated to infinitely many frames); the reference statistics are fixed, the generated
    clips left out in groups for the interval (metrics/jackknife.py)."""
    spec, ids, metric = inputs.spec, inputs.ids, inputs.spec.metric
    out: dict = {}
    frames = [np.asarray(inputs.generated[i].frames, dtype=np.float64) for i in ids]
    level = "clip" if metric == "fd" else "frames"  # FD: one vector per clip
    if level == "clip":
        frames = [clip_level(f) for f in frames]
    ref_stats = inputs.reference_stats(level) if inputs.reference_stats is not None else reference_gaussian(inputs.reference, level)
    method = spec.option("fd_method", "eigen")
    out["n_frames"] = int(sum(len(f) for f in frames))
    out["n_reference_frames"] = ref_stats.n
    if metric == "fad_inf":
        seed, n_points = int(spec.option("seed", 0)), int(spec.option("n_points", 15))
        result = fad_inf(frames, ref_stats, seed=seed, n_points=n_points, method=method)
        if inputs.value_only:
            return {"value": result.value}
        # The line fit's own intercept interval covered the population FD in about half of the
        # simulated cases (README, interval coverage): it ignores which clips were generated. The
        # jackknife recomputes the whole extrapolation with each group of clips left out.
        out.update(jackknife(lambda idx: fad_inf([frames[i] for i in idx], ref_stats, seed=seed, n_points=n_points,
                                                 method=method).value, len(ids), inputs.seed))
        out.update(line_fit_se=result.intercept_se, slope=result.slope, r_squared=result.r_squared, sizes=result.sizes,
                   fd_values=result.fd_values)
        return out
    if inputs.value_only:
        return {"value": FrechetResampler(frames, ref_stats, method)(np.arange(len(ids)))}
    out.update(jackknife(FrechetResampler(frames, ref_stats, method), len(ids), inputs.seed, floor=0.0))
    per_clip = per_clip_frechet(frames, ref_stats, method) if metric == "fad" else distance_to_reference_mean(frames, ref_stats)
    out["per_clip_kind"] = "per-clip FD of the clip's frames" if metric == "fad" else "squared distance to the reference mean"
    out["per_clip"] = dict(zip(ids, per_clip))
    return out


# Registered by call, not by decorator: mutation testing (mutmut) skips decorated functions.
METRICS.add("fad", score_frechet)
METRICS.add("fad_inf", score_frechet)
METRICS.add("fd", score_frechet)
