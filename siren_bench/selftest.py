"""`siren-bench selftest`: the metric code checked against numbers known from outside it.

Run after installing on a new machine, as `python -m fadtk.test` is for fadtk: every check
computes a number through the same functions the scorer calls and compares it with a value that
comes from a textbook, a closed form or another package's data, and prints a pass/fail table.

- KL: Cover & Thomas, Elements of Information Theory (2nd ed.), Example 2.3.1: for p = (1/2, 1/2)
  and q = (3/4, 1/4), D(p||q) = 1 - (1/2) log2 3 = 0.2075 bits and D(q||p) = (3/4) log2 3 - 1 =
  0.1887 bits; once through `kl` and once through the scorer's paired, logit-based KL in both
  directions (a swapped direction fails here).
- IS: exp(H(p(y))) for confident classifiers: 1 for one class, C for C equally used classes.
- FD: the closed form between N(0, I_d) and N(m, s^2 I_d), |m|^2 + d (1 - s)^2, by every method.
- KAD: X = {0, 1}, Y = {0, 2} in one dimension with bandwidth 1: the unbiased MMD^2 is
  (e^-2 - 1) / 2, so KAD = 50 (e^-2 - 1); and the median bandwidth of Y is 2.
- fadtk's shipped FMA-Pop statistics (real 128- to 1024-dimensional covariances of VGGish, CLAP,
  MERT, EnCodec and DAC embeddings), read from the fadtk 1.1.0 wheel when one is given (pinned by
  SHA-256; the npz is read without unpickling, nothing of fadtk is imported or run): FD between
  pairs of them agrees between the eigen, symmetric and scipy-sqrtm forms, and FD(X, X) is 0 to
  rounding. No published FD can be recomputed from them without the models' embeddings of
  fadtk's test samples (pretrained weights, which cannot be fetched here), so this checks the
  numerics on real covariances, not a published score.
"""

from __future__ import annotations

import hashlib
import io
import math
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from siren_bench.errors import ConfigError
from siren_bench.metrics.divergence import inception_score, kl, paired_kl
from siren_bench.metrics.frechet import GaussianStats, frechet_distance
from siren_bench.metrics.kernel import kernel_audio_distance, median_bandwidth

FADTK_WHEEL = "fadtk-1.1.0-py3-none-any.whl"
FADTK_WHEEL_SHA256 = "69002a10478a82bb7452521c0d8a4fbaefd6eb423f991edac5c26d9ad5628adc"
FADTK_STATS = "fadtk/stats/fma_pop.npz"
# same-dimension pairs of fadtk's FMA-Pop statistics compared by FD (one per dimension it ships)
FADTK_PAIRS = (("vggish", "encodec-emb"), ("clap-laion-audio", "clap-laion-music"), ("MERT-v1-95M-1", "MERT-v1-95M-4"),
               ("clap-2023", "dac-44kHz"))
FD_METHODS = ("eigen", "symmetric", "sqrtm")


@dataclass(frozen=True)
class Check:
    name: str
    source: str  # where the expected value comes from
    expected: float
    got: float
    tolerance: float  # relative, or absolute where expected is 0

    @property
    def passed(self) -> bool:
        if not math.isfinite(self.got):
            return False
        scale = abs(self.expected) if self.expected != 0 else 1.0
        return abs(self.got - self.expected) <= self.tolerance * scale


def _log2(x: float) -> float:
    return math.log(x, 2)


def kl_checks() -> list[Check]:
    source = "Cover & Thomas, Example 2.3.1"
    p, q = np.array([[0.5, 0.5]]), np.array([[0.75, 0.25]])
    p_q, q_p = 1 - 0.5 * _log2(3), 0.75 * _log2(3) - 1  # bits
    nats = math.log(2)
    reference, generated = {"clip": np.log(p[0])}, {"clip": np.log(q[0])}  # logits whose softmax is p and q
    return [
        Check("KL(p||q), bits", source, p_q, float(kl(p, q)[0]) / nats, 1e-12),
        Check("KL(q||p), bits", source, q_p, float(kl(q, p)[0]) / nats, 1e-12),
        Check("paired KL ref_gen = KL(reference||generated)", source, p_q,
              paired_kl(reference, generated, "ref_gen").mean / nats, 1e-12),
        Check("paired KL gen_ref = KL(generated||reference)", source, q_p,
              paired_kl(reference, generated, "gen_ref").mean / nats, 1e-12),
    ]


def is_checks() -> list[Check]:
    classes = 10
    confident = 60.0 * np.eye(classes)[np.arange(100) % classes]  # 100 clips, each class 10 times, near one-hot
    single = 60.0 * np.eye(classes)[np.zeros(100, dtype=int)]
    source = "IS = exp(H(p(y))) for confident predictions"
    return [
        Check(f"IS, {classes} classes used equally", source, float(classes), inception_score(confident, splits=1).mean, 1e-12),
        Check("IS, one class", source, 1.0, inception_score(single, splits=1).mean, 1e-12),
        Check("IS, uniform predictions", "exp(0)", 1.0, inception_score(np.zeros((100, classes)), splits=10).mean, 1e-12),
    ]


def fd_checks() -> list[Check]:
    d, shift, scale = 16, 0.3, 1.7
    mean = np.full(d, shift)
    expected = d * shift ** 2 + d * (1 - scale) ** 2
    a = GaussianStats.from_moments(np.zeros(d), np.eye(d), n=1000)
    b = GaussianStats.from_moments(mean, scale ** 2 * np.eye(d), n=1000)
    return [Check(f"FD N(0,I) vs N(m,s^2 I), d={d}, {method}", "|m|^2 + d (1 - s)^2", expected,
                  frechet_distance(a, b, method).value, 1e-9) for method in FD_METHODS]


def kad_checks() -> list[Check]:
    x, y = np.array([[0.0], [1.0]]), np.array([[0.0], [2.0]])
    source = "unbiased MMD^2 by hand: 100 (e^-2 - 1) / 2"
    return [Check("KAD x100, X={0,1}, Y={0,2}, bandwidth 1", source, 50.0 * (math.exp(-2.0) - 1.0),
                  kernel_audio_distance(x, y, bandwidth=1.0)[0], 1e-12),
            Check("median bandwidth of Y={0,2}", "the one pairwise distance", 2.0, median_bandwidth(y), 1e-12)]


def read_fadtk_stats(wheel: str | Path, expected_sha256: str = FADTK_WHEEL_SHA256) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{model: (mu, cov)} from the FMA-Pop statistics inside a fadtk wheel, checked by its hash."""
    path = Path(wheel)
    if not path.is_file():
        raise ConfigError(f"{path}: no such file (get it with `pip download fadtk==1.1.0 --no-deps -d DIR`)")
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != expected_sha256:
        raise ConfigError(f"{path}: SHA-256 {digest} is not the pinned {expected_sha256} of {FADTK_WHEEL}")
    with zipfile.ZipFile(io.BytesIO(data)) as archive, np.load(io.BytesIO(archive.read(FADTK_STATS)), allow_pickle=False) as npz:
        names = sorted({key.rsplit(".", 1)[0] for key in npz.files})
        return {name: (npz[f"{name}.mu"], npz[f"{name}.cov"]) for name in names}


def fadtk_checks(stats: dict[str, tuple[np.ndarray, np.ndarray]]) -> list[Check]:
    """FD between same-dimension FMA-Pop statistics by every method (against the symmetric form,
    eigh only), and each pair's first set against itself (0 up to the square roots of rounding)."""
    gaussians = {name: GaussianStats.from_moments(mu, cov, n=10_000) for name, (mu, cov) in stats.items()}
    checks = []
    for first, second in FADTK_PAIRS:
        a, b = gaussians[first], gaussians[second]
        expected = frechet_distance(a, b, "symmetric").value
        for method in ("eigen", "sqrtm"):
            checks.append(Check(f"FD fadtk {first} vs {second} (d={len(a.total)}), {method}", "the symmetric form",
                                expected, frechet_distance(a, b, method).value, 1e-6))
        self_fd = frechet_distance(a, a, "eigen").value / float(np.trace(a.cov))
        checks.append(Check(f"FD fadtk {first} vs itself / tr(cov)", "0", 0.0, self_fd, 1e-6))
    return checks


SUITES: dict[str, Callable[[], list[Check]]] = {"kl": kl_checks, "is": is_checks, "fd": fd_checks, "kad": kad_checks}


def run(fadtk_wheel: str | Path | None = None, expected_sha256: str = FADTK_WHEEL_SHA256) -> tuple[list[Check], list[str]]:
    """(every check, lines saying what was skipped and why)."""
    checks = [check for suite in SUITES.values() for check in suite()]
    skipped = []
    if fadtk_wheel is None:
        skipped.append(f"fadtk FMA-Pop statistics: no --fadtk-wheel given (`pip download fadtk==1.1.0 --no-deps -d DIR`, "
                       f"then --fadtk-wheel DIR/{FADTK_WHEEL})")
    else:
        checks += fadtk_checks(read_fadtk_stats(fadtk_wheel, expected_sha256))
    return checks, skipped


def table(checks: list[Check], skipped: list[str], seconds: float) -> str:
    lines = [f"{'result':6s}  {'check':58s}  {'expected':>16s}  {'got':>16s}  source"]
    for c in checks:
        lines.append(f"{'pass' if c.passed else 'FAIL':6s}  {c.name:58s}  {c.expected:16.10g}  {c.got:16.10g}  {c.source}")
    lines += [f"skipped  {line}" for line in skipped]
    failed = sum(not c.passed for c in checks)
    lines.append(f"selftest: {len(checks) - failed} of {len(checks)} checks passed, {failed} failed, "
                 f"{len(skipped)} skipped, {seconds:.1f} s")
    return "\n".join(lines)


def main(fadtk_wheel: str | Path | None = None) -> tuple[bool, str]:
    start = time.perf_counter()
    checks, skipped = run(fadtk_wheel)
    return all(c.passed for c in checks), table(checks, skipped, time.perf_counter() - start)
