"""The manifest the `prepare` stage writes and every later stage reads.

One CSV row per clip: id, split, audio path (relative to the manifest's folder), the audio
file's SHA-256, caption(s), and source-specific columns. A row whose `decode` cell holds a
decoding policy names its source file instead (an absolute path: AudioCaps without a decoded
copy), and `sha256` is then the hash of the clip that policy makes from it (data/decode.py);
read_clip(path, decode) reads either kind. Readers verify what a later stage relies on: unique
ids, paths that stay inside the data folder (or exist, for sources), files that exist.
"""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd

from siren_bench.data.decode import DecodePolicy, decode_source, read_clip
from siren_bench.io import atomic_path, sha256_bytes, sha256_file
from siren_bench.errors import ManifestError  # noqa: F401  (re-exported)

MANIFEST_NAME = "manifest.csv"
REQUIRED_COLUMNS = ("clip_id", "split", "audio", "sha256", "caption", "sample_rate", "num_samples")


def write_manifest(path: str | Path, rows: list[dict]) -> None:
    frame = pd.DataFrame(rows)
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise ManifestError(f"{path}: rows lack required columns {missing}")
    columns = list(REQUIRED_COLUMNS) + [c for c in frame.columns if c not in REQUIRED_COLUMNS]
    with atomic_path(path) as tmp:
        frame[columns].to_csv(tmp, index=False, lineterminator="\n")


def read_manifest(path: str | Path, *, verify_hashes: bool = False) -> pd.DataFrame:
    """Load and validate a manifest; `audio_path` is added with each clip's absolute path."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: manifest not found (run the prepare stage first)")
    try:
        frame = pd.read_csv(path, dtype={"clip_id": str, "split": str, "audio": str, "sha256": str, "caption": str},
                            keep_default_na=False)
    except ValueError as exc:  # pandas' parser and empty-file errors, and bytes that are not UTF-8, are ValueErrors
        raise ManifestError(f"{path}: not a readable manifest CSV ({type(exc).__name__}: {exc})") from exc
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise ManifestError(f"{path}: missing columns {missing}")
    empty = [number for number, clip_id in enumerate(frame["clip_id"], start=2) if not clip_id.strip()]
    if empty:
        raise ManifestError(f"{path}: empty clip id on line(s) {empty[:10]}")
    duplicated = frame["clip_id"][frame["clip_id"].duplicated()].unique().tolist()
    if duplicated:
        raise ManifestError(f"{path}: duplicated clip ids {duplicated[:10]}")
    root = path.parent.resolve()
    if "decode" not in frame.columns:
        frame["decode"] = ""
    frame["decode"] = frame["decode"].astype(str)
    absolute = []
    for row_number, (clip_id, rel, decode) in enumerate(zip(frame["clip_id"], frame["audio"], frame["decode"]), start=2):
        where = f"{path}, line {row_number} (clip {clip_id!r})"
        if not rel:
            raise ManifestError(f"{where}: empty audio path")
        if decode:  # a source file, decoded where it is read
            if not Path(rel).is_absolute():
                raise ManifestError(f"{where}: source file {rel!r} of a clip decoded on reading must be an absolute path")
            if not Path(rel).is_file():
                raise ManifestError(f"{where}: source file {rel} does not exist (moved or deleted since prepare ran?)")
            absolute.append(Path(rel))
            continue
        if PurePosixPath(rel).is_absolute() or Path(rel).is_absolute():
            raise ManifestError(f"{where}: audio path {rel!r} is absolute; manifests hold paths relative to their folder")
        resolved = (root / rel).resolve()
        if not resolved.is_relative_to(root):
            raise ManifestError(f"{where}: audio path {rel!r} escapes the data folder {root}")
        if not resolved.is_file():
            raise ManifestError(f"{where}: audio file {resolved} does not exist")
        absolute.append(resolved)
    frame["audio_path"] = absolute
    if verify_hashes:
        # a clip decoded where it is read: its source file must be the one prepare decoded and hashed
        # (`source_sha256`); the decode is deterministic, so checking the source spares a second decode
        sources = frame["source_sha256"] if "source_sha256" in frame.columns else [""] * len(frame)
        for clip_id, file, expected, decode, source in zip(frame["clip_id"], frame["audio_path"], frame["sha256"],
                                                           frame["decode"], sources):
            actual, recorded = (sha256_file(file), source) if decode and source else (clip_sha256(file, decode), expected)
            if actual != recorded:
                raise ManifestError(f"{file}: SHA-256 {actual} does not match the manifest's {recorded} (clip {clip_id!r}, {path})")
    return frame


def json_cell(value) -> str:
    """Nested per-clip data (events, captions) stored in one CSV cell as canonical JSON."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def clip_sha256(path: Path, decode: str = "") -> str:
    """The content hash of a manifest clip: its file's, or that of the clip decoded from its source."""
    return sha256_bytes(decode_source(Path(path), DecodePolicy.from_cell(decode, path))[0]) if decode else sha256_file(path)


def audio_sources(frame: pd.DataFrame) -> list[tuple[Path, str]]:
    """Each clip's (path, decode policy) in row order, what read_clip takes; no `decode` column:
    every file is a prepared clip."""
    decodes = frame["decode"] if "decode" in frame.columns else [""] * len(frame)
    return [(Path(path), decode or "") for path, decode in zip(frame["audio_path"], decodes)]


def load_waves(frame: pd.DataFrame, sample_rate: int) -> np.ndarray:
    """The clips of a (validated) manifest as one float64 [N, T] array of mono audio."""
    waves = []
    for path, decode in audio_sources(frame):
        wave, rate = read_clip(path, decode)
        if rate != sample_rate or wave.shape[0] != 1:
            raise ManifestError(f"{path}: expected mono {sample_rate} Hz audio, found {wave.shape[0]} channel(s) at {rate} Hz")
        waves.append(wave[0])
    lengths = {w.size for w in waves}
    if len(lengths) > 1:
        raise ManifestError(f"clips have different lengths {sorted(lengths)[:5]}; the prepare stage writes fixed-length clips")
    return np.stack(waves) if waves else np.zeros((0, 0))
