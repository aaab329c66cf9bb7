"""Atomic writes and validated audio reading."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from siren_bench.io import (
    AudioFileError, atomic_directory, atomic_path, read_audio, sha256_path, write_json_atomic, write_wav,
)
from tests.conftest import tone, write_audio


def test_atomic_path_keeps_old_file_when_writer_fails(tmp_path):
    target = tmp_path / "out.json"
    write_json_atomic(target, {"v": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("partial")
            raise RuntimeError("killed mid-write")
    assert target.read_text().strip().startswith("{") and '"v": 1' in target.read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]  # no temporary left behind


def test_atomic_directory_leaves_no_partial_output(tmp_path):
    out = tmp_path / "stage"
    with pytest.raises(ValueError):
        with atomic_directory(out) as staging:
            (staging / "half.txt").write_text("x")
            raise ValueError("bad input found halfway")
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_atomic_directory_replaces_previous_output_whole(tmp_path):
    out = tmp_path / "stage"
    with atomic_directory(out) as staging:
        (staging / "old.txt").write_text("old")
    with atomic_directory(out) as staging:
        (staging / "new.txt").write_text("new")
    assert sorted(p.name for p in out.iterdir()) == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stage"]


def test_read_audio_returns_float64_channels_first(tmp_path):
    path = write_audio(tmp_path / "a.wav", tone(0.5, 16000, channels=2), 16000)
    wave, sr = read_audio(path)
    assert sr == 16000 and wave.dtype == np.float64 and wave.shape == (2, 8000)


@pytest.mark.parametrize(
    "make, problem",
    [
        (lambda p: p.write_bytes(b""), "zero-byte"),
        (lambda p: p.write_bytes(b"RIFF\x00\x00garbage that is not audio" * 10), "corrupt or unreadable"),
        (lambda p: sf.write(str(p), np.zeros(0), 16000, subtype="FLOAT"), "empty audio"),
        (lambda p: sf.write(str(p), np.full(1600, np.nan), 16000, subtype="FLOAT"), "NaN or infinite"),
        (lambda p: sf.write(str(p), np.r_[np.zeros(100), np.inf, np.zeros(100)], 16000, subtype="FLOAT"), "NaN or infinite"),
        (lambda p: sf.write(str(p), np.zeros(1600), 16000), "all samples are zero"),
    ],
    ids=["zero-byte", "corrupt", "empty", "nan", "inf", "silent"],
)
def test_read_audio_names_file_and_problem(tmp_path, make, problem):
    path = tmp_path / "bad.wav"
    make(path)
    with pytest.raises(AudioFileError) as info:
        read_audio(path)
    assert str(path) in str(info.value) and problem in str(info.value)


def test_read_audio_missing_file(tmp_path):
    with pytest.raises(AudioFileError, match="file not found"):
        read_audio(tmp_path / "nope.wav")


def test_write_wav_refuses_out_of_range_and_nan(tmp_path):
    with pytest.raises(AudioFileError, match="beyond full scale"):
        write_wav(tmp_path / "x.wav", np.array([0.5, 1.5]), 16000)
    with pytest.raises(AudioFileError, match="NaN"):
        write_wav(tmp_path / "x.wav", np.array([0.5, np.nan]), 16000)
    assert not (tmp_path / "x.wav").exists()


def test_sha256_path_of_directory_tracks_content_and_names(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.txt").write_text("1")
    first = sha256_path(tmp_path / "d")
    (tmp_path / "d" / "a.txt").write_text("2")
    second = sha256_path(tmp_path / "d")
    (tmp_path / "d" / "a.txt").rename(tmp_path / "d" / "b.txt")
    assert len({first, second, sha256_path(tmp_path / "d")}) == 3


def test_float_wav_bytes_do_not_depend_on_the_time_of_writing(tmp_path):
    """libsndfile stamps float WAVs' PEAK chunk with the time; the same samples must give the same
    bytes (content hashes key the caches and the provenance)."""
    import time

    import soundfile

    from siren_bench.io import sha256_file, write_wav

    wave = np.linspace(-0.5, 1.25, 321)
    write_wav(tmp_path / "a.wav", wave, 16000, subtype="FLOAT")
    time.sleep(1.1)  # the stamp has one-second resolution
    write_wav(tmp_path / "b.wav", wave, 16000, subtype="FLOAT")
    assert sha256_file(tmp_path / "a.wav") == sha256_file(tmp_path / "b.wav")
    assert b"PEAK" in (tmp_path / "a.wav").read_bytes()  # the chunk stays, only its stamp is zero
    np.testing.assert_allclose(soundfile.read(tmp_path / "a.wav")[0], wave, atol=1e-7)
