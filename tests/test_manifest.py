"""Manifest reading refuses what later stages must not trust."""

from __future__ import annotations

import pytest

from siren_bench.data.manifest import ManifestError, read_manifest, write_manifest
from siren_bench.io import sha256_file
from tests.conftest import tone, write_audio


def _row(clip_id: str, audio: str, sha: str = "0" * 64) -> dict:
    return {"clip_id": clip_id, "split": "test", "audio": audio, "sha256": sha, "caption": "a beep",
            "sample_rate": 16000, "num_samples": 8000}


@pytest.fixture
def data_dir(tmp_path):
    write_audio(tmp_path / "audio" / "a.wav", tone(0.5, 16000), 16000)
    (tmp_path.parent / "outside.wav").write_bytes((tmp_path / "audio" / "a.wav").read_bytes())
    return tmp_path


def test_valid_manifest_round_trips_with_hash_check(data_dir):
    path = data_dir / "manifest.csv"
    write_manifest(path, [_row("a", "audio/a.wav", sha256_file(data_dir / "audio" / "a.wav"))])
    frame = read_manifest(path, verify_hashes=True)
    assert frame["clip_id"].tolist() == ["a"] and frame["audio_path"][0].is_file()


@pytest.mark.parametrize(
    "rows, problem",
    [
        ([_row("a", "/abs/a.wav")], "is absolute"),
        ([_row("a", "../outside.wav")], "escapes the data folder"),
        ([_row("a", "audio/a.wav"), _row("a", "audio/a.wav")], "duplicated clip ids"),
        ([_row("a", "audio/missing.wav")], "does not exist"),
        ([_row("a", "")], "empty audio path"),
    ],
    ids=["absolute", "escape", "duplicate", "missing", "empty"],
)
def test_bad_manifests_are_refused_with_location(data_dir, rows, problem):
    path = data_dir / "manifest.csv"
    write_manifest(path, rows)
    with pytest.raises(ManifestError, match=problem) as info:
        read_manifest(path)
    assert str(path) in str(info.value)


def test_hash_mismatch_is_reported(data_dir):
    path = data_dir / "manifest.csv"
    write_manifest(path, [_row("a", "audio/a.wav", "f" * 64)])
    with pytest.raises(ManifestError, match="does not match"):
        read_manifest(path, verify_hashes=True)


def test_missing_columns_refused(tmp_path):
    with pytest.raises(ManifestError, match="required columns"):
        write_manifest(tmp_path / "m.csv", [{"clip_id": "a"}])
