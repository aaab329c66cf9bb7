"""Provenance records and the determinism of stage outputs."""

from __future__ import annotations

import json
import os
import subprocess

import pandas as pd

from siren_bench.io import sha256_path
from siren_bench.provenance import build_record, git_state
from siren_bench.stages import prepare, report
from tests.conftest import REPO

SMALL = {"name": "synthcaps", "n_clips": 12, "clip_seconds": 1.5, "seed": 9}


def test_record_has_code_config_inputs_seeds_and_device(tmp_path):
    (tmp_path / "in.txt").write_text("x")
    record = build_record("s", {"a": 1}, inputs={"in": tmp_path / "in.txt"}, seeds={"seed": 3}, device="cpu")
    assert record["git"]["commit"] is None or len(record["git"]["commit"]) == 40
    assert record["packages"]["numpy"] and record["packages"]["torch"]
    assert record["config"] == {"a": 1} and len(record["config_sha256"]) == 64
    assert record["inputs"]["in"]["sha256"] == sha256_path(tmp_path / "in.txt")
    assert record["seeds"] == {"seed": 3} and record["device"]["requested"] == "cpu"
    assert record["device"]["cpu_model"] and record["device"]["cpu_capability"] in ("DEFAULT", "VSX", "Z VECTOR", "NO AVX", "AVX2", "AVX512", "SVE256")
    assert build_record("s", {"a": 2})["config_sha256"] != record["config_sha256"]


def test_git_state_inside_and_outside_a_repository(tmp_path):
    assert git_state(REPO)["commit"] is None or isinstance(git_state(REPO)["dirty"], bool)
    outside = git_state(tmp_path)
    assert outside["commit"] is None and outside["dirty"] is None and outside["error"]


def test_prepare_and_report_are_deterministic(tmp_path, write_params):
    """Same params, two runs: identical audio, manifest and results.json, byte for byte."""
    params = write_params(SMALL)
    first = prepare.run(params)
    manifest_hash, audio_hash = sha256_path(first / "manifest.csv"), sha256_path(first / "audio")
    results = (report.run(params) / "results.json").read_bytes()
    second = prepare.run(params)
    assert sha256_path(second / "manifest.csv") == manifest_hash and sha256_path(second / "audio") == audio_hash
    assert (report.run(params) / "results.json").read_bytes() == results


def test_stage_outputs_carry_provenance(tmp_path, write_params):
    params = write_params(SMALL)
    out = prepare.run(params)
    record = json.loads((out / "provenance.json").read_text())
    assert record["stage"] == "prepare" and record["seeds"] == {"data.seed": 9}
    assert record["config"]["data"]["n_clips"] == 12
    assert record["outputs"]["manifest.csv"] == sha256_path(out / "manifest.csv")
    report_record = json.loads((report.run(params) / "provenance.json").read_text())
    assert report_record["inputs"]["prepare"]["sha256"] == sha256_path(out)


def test_report_counts_match_the_manifest(tmp_path, write_params):
    params = write_params(SMALL)
    out = prepare.run(params)
    results = json.loads((report.run(params) / "results.json").read_text())["sections"]["dataset"]
    manifest = pd.read_csv(out / "manifest.csv")
    assert results["n_clips"] == len(manifest) == 12
    assert results["split_counts"] == manifest["split"].value_counts().reindex(["train", "val", "test"]).to_dict()
    total_labels = sum(sum(v.values()) for v in results["class_counts"].values())
    assert total_labels == manifest["n_events"].sum()


def test_dirty_flag_ignores_pipeline_products_only(tmp_path):
    env = os.environ | {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x.invalid",
                        "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@x.invalid"}
    for name in ("dvc.lock", "code.py"):
        (tmp_path / name).write_text("v1")
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "c"]):
        subprocess.run(["git", *args], cwd=tmp_path, env=env, check=True)
    assert git_state(tmp_path)["dirty"] is False
    (tmp_path / "dvc.lock").write_text("v2")
    state = git_state(tmp_path)
    assert state["dirty"] is False and state["dirty_paths"] == ["dvc.lock"]
    (tmp_path / "code.py").write_text("v2")
    assert git_state(tmp_path)["dirty"] is True


def test_packages_that_differ_from_the_lock_are_recorded_and_reported(tmp_path):
    from importlib import metadata

    from siren_bench.provenance import LOCK_FILE, lock_differences
    from siren_bench.report.environment import _lock_text

    numpy = metadata.version("numpy")
    lock = tmp_path / "requirements.lock"
    lock.write_text(f"# header\nnumpy=={numpy}\n    # via scipy\nscipy==0.0.1\nno-such-package-here==1.0\n")
    found = lock_differences(lock)
    assert found["packages"] == 3 and set(found["differs"]) == {"scipy", "no-such-package-here"}
    assert found["differs"]["no-such-package-here"] == {"locked": "1.0", "installed": None}
    text = _lock_text(found)
    assert f"scipy {metadata.version('scipy')} (lock 0.0.1)" in text and "no-such-package-here missing (lock 1.0)" in text
    assert lock_differences(tmp_path / "absent.lock") == {"file": None}
    # the project's own lock is what `make setup` installed
    assert LOCK_FILE.is_file() and lock_differences()["differs"] == {}
