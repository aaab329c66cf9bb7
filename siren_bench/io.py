"""File I/O every stage shares: atomic writes, content hashes and validated audio reading.

Stages never leave a half-written file behind: each output is written to a temporary path in
the same directory and moved into place with os.replace, so a reader sees either the old file
or the complete new one. Audio reading refuses bad input loudly (naming the file) instead of
returning zeros or skipping it.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import soundfile as sf

from siren_bench.errors import AudioFileError  # noqa: F401  (re-exported)

_CHUNK = 1 << 20


# --------------------------------------------------------------------------- hashing


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no whitespace: the form every config/recipe hash is taken of."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def sha256_json(obj: Any) -> str:
    return sha256_bytes(canonical_json(obj).encode())


def sha256_path(path: str | os.PathLike) -> str:
    """Hash of a file, or of a directory as the sorted list of (relative path, file hash)."""
    path = Path(path)
    if path.is_file():
        return sha256_file(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such file or directory to hash")
    entries = [
        (file.relative_to(path).as_posix(), sha256_file(file))
        for file in sorted(p for p in path.rglob("*") if p.is_file())
    ]
    return sha256_json(entries)


# --------------------------------------------------------------------------- atomic writes


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it replaces `path` atomically.

    On any exception the temporary file is removed and `path` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; outputs get normal modes
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n")


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike) -> Iterator[Path]:
    """Build a whole output directory in a temporary sibling and swap it in when complete.

    The previous directory (if any) is kept until the new one is in place, so an interrupted
    stage leaves either the old complete output or nothing new: never a partial directory
    under the final name.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    os.chmod(staging, 0o777 & ~_umask())
    try:
        yield staging
        retired = None
        if path.exists():
            # Unique like the staging folder: the leftover of a writer killed while deleting its
            # retired folder must not block a later one (a process id recurs, e.g. in containers).
            retired = staging.with_suffix(".old")
            os.replace(path, retired)
        os.replace(staging, path)
        if retired is not None:
            shutil.rmtree(retired)
    finally:
        if staging.exists():
            shutil.rmtree(staging)


# --------------------------------------------------------------------------- audio


def read_audio(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """Read an audio file as float64 [channels, samples]; refuse unreadable or invalid content.

    Raises AudioFileError for: a missing, zero-byte, corrupt, truncated or unsupported file; zero
    samples; NaN or infinite samples; content that is exactly zero everywhere (a failed download
    or render, not a sound).
    """
    path = Path(path)
    if not path.is_file():
        raise AudioFileError(path, "file not found")
    if path.stat().st_size == 0:
        raise AudioFileError(path, "zero-byte file")
    try:
        data, sample_rate = sf.read(str(path), dtype="float64", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        raise AudioFileError(path, f"corrupt or unreadable audio ({exc})") from exc
    shortfall = wav_shortfall(path)
    if shortfall:
        raise AudioFileError(path, f"truncated WAV file: its data chunk lacks {shortfall} of its declared bytes")
    wave = np.ascontiguousarray(data.T)
    if wave.shape[1] == 0:
        raise AudioFileError(path, "empty audio (0 samples)")
    if not np.all(np.isfinite(wave)):
        bad = int(np.size(wave) - np.count_nonzero(np.isfinite(wave)))
        raise AudioFileError(path, f"{bad} NaN or infinite samples")
    if not np.any(wave):
        raise AudioFileError(path, "all samples are zero (silent file)")
    return wave, int(sample_rate)


def wav_shortfall(path: Path) -> int:
    """How many bytes of a WAV file's declared data chunk are missing from the file (0 if none,
    or not a RIFF/WAVE file). libsndfile reads a WAV cut short in its data without complaint,
    returning the samples that are there, so a truncated download would pass as a shorter clip.
    A data size of 0 or 0xFFFFFFFF (streamed output, length unknown) declares nothing."""
    size = path.stat().st_size
    with open(path, "rb") as handle:
        header = handle.read(12)
        if len(header) < 12 or header[:4] != b"RIFF" or header[8:] != b"WAVE":
            return 0
        position = 12
        while position + 8 <= size:
            handle.seek(position)
            chunk_id, chunk_size = handle.read(4), int.from_bytes(handle.read(4), "little")
            if chunk_id == b"data":
                available = size - position - 8
                return chunk_size - available if chunk_size not in (0, 0xFFFFFFFF) and chunk_size > available else 0
            position += 8 + chunk_size + (chunk_size & 1)  # chunks are padded to even sizes
    return 0


def link_or_copy(source: str | os.PathLike, target: str | os.PathLike) -> None:
    """`target` with `source`'s bytes: a hard link where the file system allows one (no second
    copy of a large file), else a copy."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def write_wav(path: str | os.PathLike, wave: np.ndarray, sample_rate: int, subtype: str = "PCM_16") -> None:
    """Write mono or [channels, samples] float audio as WAV, atomically.

    PCM_16 (datasets) refuses samples outside [-1, 1] rather than letting the encoder clip them
    silently; FLOAT (a model's raw output) stores them as they are, so a scorer sees any
    overshoot instead of a clipped copy.
    """
    data = wav_bytes(wave, sample_rate, subtype, where=path)
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(data)


def wav_bytes(wave: np.ndarray, sample_rate: int, subtype: str = "PCM_16", where: str | os.PathLike = "audio") -> bytes:
    """The bytes write_wav writes for this audio (its content hash is theirs); `where` names it in errors."""
    if subtype not in ("PCM_16", "FLOAT"):
        raise ValueError(f"subtype must be PCM_16 or FLOAT, got {subtype!r}")
    wave = np.asarray(wave, dtype=np.float64)
    if not np.all(np.isfinite(wave)):
        raise AudioFileError(where, "refusing to write NaN or infinite samples")
    peak = float(np.max(np.abs(wave))) if wave.size else 0.0
    if peak > 1.0 and subtype == "PCM_16":
        raise AudioFileError(where, f"refusing to write samples beyond full scale (peak {peak:.3f})")
    frames = wave.T if wave.ndim == 2 else wave
    buffer = io.BytesIO()
    sf.write(buffer, frames, sample_rate, subtype=subtype, format="WAV")
    return _without_peak_timestamp(buffer.getvalue())


def read_wav_bytes(data: bytes) -> tuple[np.ndarray, int]:
    """Audio from bytes that wav_bytes made: float64 [channels, samples], as read_audio reads their file."""
    wave, sample_rate = sf.read(io.BytesIO(data), dtype="float64", always_2d=True)
    return np.ascontiguousarray(wave.T), int(sample_rate)


def _without_peak_timestamp(data: bytes) -> bytes:
    """libsndfile adds a PEAK chunk to float WAV files holding the time of writing, so the same
    samples written twice would hash differently (and miss every content-addressed cache).
    Zero that timestamp: the chunk is 'PEAK', size, version (4 bytes), timestamp (4 bytes), ..."""
    data = bytearray(data)
    offset = 12  # after 'RIFF', size, 'WAVE'
    while offset + 8 <= len(data):
        chunk, size = bytes(data[offset : offset + 4]), int.from_bytes(data[offset + 4 : offset + 8], "little")
        if chunk == b"PEAK" and size >= 8:
            data[offset + 12 : offset + 16] = bytes(4)
        offset += 8 + size + (size & 1)  # chunks are padded to even sizes
    return bytes(data)
