"""`siren-bench selftest`: passes here, fails when a metric is wrong, reads fadtk's statistics by hash."""

from __future__ import annotations

import hashlib
import io
import zipfile

import numpy as np
import pytest

from siren_bench import selftest
from siren_bench.cli import main
from siren_bench.errors import ConfigError
from siren_bench.metrics import divergence


def test_selftest_passes_and_says_what_it_skipped(capsys):
    assert main(["selftest"]) == 0
    out = capsys.readouterr().out
    assert "FAIL" not in out and "12 of 12 checks passed, 0 failed, 1 skipped" in out
    assert "skipped  fadtk FMA-Pop statistics: no --fadtk-wheel given" in out


@pytest.mark.parametrize("mutant", ["kl_swapped", "paired_direction_swapped", "kad_biased", "is_log2"])
def test_a_wrong_metric_fails_the_selftest(monkeypatch, mutant, capsys):
    if mutant == "kl_swapped":
        monkeypatch.setattr(selftest, "kl", lambda p, q, *a, **k: divergence.kl(q, p))
    elif mutant == "paired_direction_swapped":
        swap = {"ref_gen": "gen_ref", "gen_ref": "ref_gen"}
        monkeypatch.setattr(selftest, "paired_kl", lambda r, g, direction: divergence.paired_kl(r, g, swap[direction]))
    elif mutant == "kad_biased":  # the V-statistic: diagonal terms included
        def biased(x, y, bandwidth):
            k = lambda a, b: np.exp(-((a - b.T) ** 2) / (2 * bandwidth ** 2))  # noqa: E731
            return 100 * (k(x, x).mean() + k(y, y).mean() - 2 * k(x, y).mean()), bandwidth
        monkeypatch.setattr(selftest, "kernel_audio_distance", biased)
    else:
        monkeypatch.setattr(selftest, "inception_score", lambda logits, splits: type("IS", (), {
            "mean": float(np.exp2(np.log(divergence.inception_score(logits, splits=splits).mean)))})())
    assert main(["selftest"]) == 1
    assert "FAIL" in capsys.readouterr().out


def _fake_wheel(path) -> str:
    """A zip holding fadtk/stats/fma_pop.npz with each compared model's mu and cov (random SPD,
    small: the test checks the reading and the checks, the real wheel's sizes cost seconds)."""
    rng = np.random.default_rng(0)
    arrays = {}
    for k, (first, second) in enumerate(selftest.FADTK_PAIRS):
        d = 8 * (k + 1)
        for name in (first, second):
            m = rng.standard_normal((d, d)) / np.sqrt(d)
            arrays[f"{name}.mu"], arrays[f"{name}.cov"] = rng.standard_normal(d), m @ m.T + 0.1 * np.eye(d)
    npz = io.BytesIO()
    np.savez(npz, **arrays)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(selftest.FADTK_STATS, npz.getvalue())
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_fadtk_statistics_are_read_from_a_pinned_wheel(tmp_path):
    wheel = tmp_path / selftest.FADTK_WHEEL
    digest = _fake_wheel(wheel)
    checks, skipped = selftest.run(wheel, expected_sha256=digest)
    fadtk = [c for c in checks if c.name.startswith("FD fadtk")]
    assert not skipped and len(fadtk) == 3 * len(selftest.FADTK_PAIRS) and all(c.passed for c in fadtk)
    with pytest.raises(ConfigError, match=f"{wheel}: SHA-256 {digest} is not the pinned"):
        selftest.run(wheel)  # the real wheel's pin
    with pytest.raises(ConfigError, match="no such file"):
        selftest.run(tmp_path / "missing.whl")
