"""The AudioCaps source: a user's local audio folder plus an official list or published subset.

Published AudioCaps numbers are comparable only inside one protocol (the full 975-clip test set,
AudioLDM's 964-clip subset, Tango's 886-clip subset), so the list a user supplies is verified
by row count and SHA-256 and named. Every audio file is checked (corrupt, empty, NaN/inf,
silent: an error naming it); a sample-rate mismatch is resampled with soxr and recorded per clip
(or refused, by config); clips absent from the folder are listed, never silently dropped.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soxr
from tqdm import tqdm

from siren_bench.config import AudioCapsConfig, ConfigError
from siren_bench.io import AudioFileError, read_audio, sha256_file
from siren_bench.errors import AudioCapsError  # noqa: F401  (re-exported)


@dataclass(frozen=True)
class Protocol:
    name: str
    description: str
    kind: str  # list format: "csv" | "audioldm_json" | "tango_jsonl"
    n_rows: int
    n_clips: int
    sha256: str


# Counts and hashes of the public lists (../shared/REFERENCES.md section 5).
PROTOCOLS: tuple[Protocol, ...] = (
    Protocol("audiocaps_test_975x5", "AudioCaps test set, 5 captions per clip", "csv", 4875, 975,
             "b91c4b7ded2f4f6e7db5b9c4983dc1e1dca3d556f505b61e3fd65cac7e1c638a"),
    Protocol("audioldm_964", "AudioLDM's AudioCaps test subset (audioldm_eval protocol)", "audioldm_json", 964, 964,
             "1830860b4b717fa20da9662b12b33e2239afd40925daaa9ffcb0548824100faa"),
    Protocol("tango_886", "Tango's AudioCaps test subset", "tango_jsonl", 886, 886,
             "90389ee3a577394e3a5063d5a2014279d2d02c7445ce4412740839c1344488e1"),
)
PROTOCOLS_BY_NAME = {p.name: p for p in PROTOCOLS}
PROTOCOLS_BY_HASH = {p.sha256: p for p in PROTOCOLS}


SILENCE_PEAK = 1e-4  # -80 dBFS: a prepared clip quieter than this carries no sound
CLIP_ID = re.compile(r"[A-Za-z0-9_-]+")


@dataclass
class ListEntry:
    youtube_id: str
    start_time: str | None
    audiocap_id: str | None
    captions: list[str]


# --------------------------------------------------------------------------- the list


def list_kind(path: Path) -> str:
    suffix = path.suffix.lower()
    kinds = {".csv": "csv", ".json": "audioldm_json", ".jsonl": "tango_jsonl"}
    if suffix not in kinds:
        raise AudioCapsError(f"{path}: unknown list format {suffix!r}; expected .csv (official), .json (AudioLDM) or .jsonl (Tango)")
    return kinds[suffix]


def parse_list(path: Path) -> tuple[list[ListEntry], int]:
    """Entries (one per clip, captions grouped) and the number of rows in the file."""
    kind = list_kind(path)
    try:
        if kind == "csv":
            rows = _parse_csv(path)
        elif kind == "audioldm_json":
            rows = _parse_audioldm_json(path)
        else:
            rows = _parse_tango_jsonl(path)
    except (KeyError, TypeError, AttributeError, json.JSONDecodeError, UnicodeDecodeError, csv.Error) as exc:
        raise AudioCapsError(f"{path}: not a valid {kind} AudioCaps list ({type(exc).__name__}: {exc})") from exc
    if not rows:
        raise AudioCapsError(f"{path}: the list has no entries")
    entries: dict[str, ListEntry] = {}
    for number, row in enumerate(rows, start=1):
        if not CLIP_ID.fullmatch(row.youtube_id) or (row.audiocap_id and not CLIP_ID.fullmatch(row.audiocap_id)):
            raise AudioCapsError(f"{path}, entry {number}: clip id {row.youtube_id!r} is not a YouTube id (letters, digits, '-' and '_' only)")
        if not all(c.strip() for c in row.captions):
            raise AudioCapsError(f"{path}, entry {number} (clip {row.youtube_id}): empty caption")
        entry = entries.get(row.youtube_id)
        if entry is None:
            entries[row.youtube_id] = row
        elif row.start_time is not None and entry.start_time is not None and row.start_time != entry.start_time:
            raise AudioCapsError(f"{path}: YouTube id {row.youtube_id} appears with two start times ({entry.start_time}, {row.start_time})")
        else:
            entry.captions.extend(row.captions)
    return list(entries.values()), len(rows)


def _parse_csv(path: Path) -> list[ListEntry]:
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = {"youtube_id", "start_time", "caption"} - set(reader.fieldnames or [])
        if missing:
            raise AudioCapsError(f"{path}: CSV lacks columns {sorted(missing)}")
        return [
            ListEntry(r["youtube_id"].strip(), r["start_time"].strip(), (r.get("audiocap_id") or "").strip() or None, [r["caption"].strip()])
            for r in reader
        ]


def _parse_audioldm_json(path: Path) -> list[ListEntry]:
    data = json.loads(path.read_text(encoding="utf-8"))["data"]
    entries = []
    for item in data:
        stem = Path(item["wav"]).stem
        entries.append(ListEntry(stem[1:] if stem.startswith("Y") else stem, None, None, [item["caption"].strip()]))
    return entries


def _parse_tango_jsonl(path: Path) -> list[ListEntry]:
    entries = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        item = json.loads(line)
        youtube_id, _, start = Path(item["location"]).stem.rpartition("_")
        captions = item["captions"]
        entries.append(ListEntry(youtube_id, start, None, [captions] if isinstance(captions, str) else list(captions)))
    return entries


def identify_protocol(path: Path, requested: str, n_rows: int) -> dict:
    """Verify the list against the known protocols; return what the report records about it."""
    digest = sha256_file(path)
    known = PROTOCOLS_BY_HASH.get(digest)
    record = {"list_file": str(path), "list_sha256": digest, "list_rows": n_rows}
    if requested == "custom":
        return record | {"protocol": known.name if known else "custom", "protocol_description": known.description if known else "user-supplied list"}
    if requested != "auto" and requested not in PROTOCOLS_BY_NAME:
        raise ConfigError(f"data.protocol must be auto, custom or one of {sorted(PROTOCOLS_BY_NAME)}, got {requested!r}")
    expected = PROTOCOLS_BY_NAME.get(requested)
    if known is None:
        table = "; ".join(f"{p.name}: {p.n_rows} rows, sha256 {p.sha256}" for p in PROTOCOLS)
        wanted = f"protocol {requested}" if expected else "any known protocol"
        raise AudioCapsError(
            f"{path}: {n_rows} rows, sha256 {digest} matches {wanted} ({table}). "
            "Use the unmodified public file, or set data.protocol=custom to score against your own list "
            "(results will not be comparable with published numbers)."
        )
    if expected is not None and known is not expected:
        raise AudioCapsError(f"{path}: this is the {known.name} list, but data.protocol asks for {expected.name}")
    if n_rows != known.n_rows:  # cannot happen for an unmodified file; guards the parser
        raise AudioCapsError(f"{path}: parsed {n_rows} rows, protocol {known.name} has {known.n_rows}")
    return record | {"protocol": known.name, "protocol_description": known.description}


# --------------------------------------------------------------------------- the audio folder


def index_audio_folder(audio_dir: Path, extensions: list[str]) -> dict[str, list[Path]]:
    """Map each file stem in the folder tree to its paths (several means ambiguous)."""
    if not audio_dir.is_dir():
        raise AudioCapsError(f"{audio_dir}: AudioCaps audio folder not found (set data.audio_dir)")
    wanted = {e.lower() for e in extensions}
    index: dict[str, list[Path]] = {}
    for path in sorted(audio_dir.rglob("*")):
        if path.is_file() and path.suffix.lower() in wanted:
            index.setdefault(path.stem, []).append(path)
    return index


def resolve_audio(entry: ListEntry, index: dict[str, list[Path]], patterns: list[str]) -> Path | None:
    """The one file in the folder for this clip, None if absent; an error if ambiguous."""
    fields = {"youtube_id": entry.youtube_id, "start_time": entry.start_time, "audiocap_id": entry.audiocap_id}
    found: set[Path] = set()
    for pattern in patterns:
        needed = [name for name in fields if "{" + name + "}" in pattern]
        if any(fields[name] is None for name in needed):
            continue
        found.update(index.get(pattern.format(**fields), []))
    if len(found) > 1:
        names = ", ".join(str(p) for p in sorted(found))
        raise AudioCapsError(f"clip {entry.youtube_id}: several files match ({names}); keep one")
    return found.pop() if found else None


def load_clip(path: Path, config: AudioCapsConfig) -> tuple[np.ndarray, dict]:
    """Mono float64 audio at the target rate, cropped/padded to clip_seconds, plus what was done."""
    wave, source_rate = read_audio(path)
    channels = wave.shape[0]
    mono = wave.mean(axis=0) if config.channel_policy == "mean" else wave[0]
    resampled = source_rate != config.sample_rate
    if resampled:
        if config.on_sample_rate_mismatch == "error":
            raise AudioFileError(path, f"sample rate {source_rate} Hz, expected {config.sample_rate} Hz (data.on_sample_rate_mismatch=error)")
        mono = soxr.resample(mono, source_rate, config.sample_rate, quality="HQ")
    target = int(round(config.clip_seconds * config.sample_rate))
    source_samples = mono.size
    if mono.size >= target:
        mono = mono[:target]
    else:
        mono = np.pad(mono, (0, target - mono.size))
    peak = float(np.max(np.abs(mono)))
    if peak < SILENCE_PEAK:
        raise AudioFileError(path, f"silent after {config.channel_policy} channel mix and crop to {config.clip_seconds} s (peak {peak:.1e})")
    if peak > 1.0:  # beyond full scale (float source, or resampling overshoot): scale, and list it
        mono = mono / peak
    record = {
        "source_file": str(path),
        "source_sha256": sha256_file(path),
        "source_sample_rate": source_rate,
        "source_channels": channels,
        "source_seconds": round(source_samples / config.sample_rate, 4),
        "resampled": resampled,
        "peak_normalised": peak > 1.0,
        "padded_seconds": round(max(0, target - source_samples) / config.sample_rate, 4),
    }
    return mono, record


@dataclass
class AudioCapsSource:
    """Resolved AudioCaps input: protocol record, clips found and clips missing."""

    protocol: dict
    present: list[tuple[ListEntry, Path]]
    missing: list[ListEntry]


def resolve_source(config: AudioCapsConfig) -> AudioCapsSource:
    list_path = Path(config.list_file).expanduser()
    if not list_path.is_file():
        raise AudioCapsError(f"{list_path}: AudioCaps list file not found (set data.list_file)")
    entries, n_rows = parse_list(list_path)
    protocol = identify_protocol(list_path, config.protocol, n_rows)
    protocol["list_clips"] = len(entries)
    index = index_audio_folder(Path(config.audio_dir).expanduser(), config.extensions)
    present, missing = [], []
    for entry in entries:
        path = resolve_audio(entry, index, config.filename_patterns)
        (missing.append(entry) if path is None else present.append((entry, path)))
    if not present:
        raise AudioCapsError(f"{config.audio_dir}: none of the {len(entries)} clips of {list_path.name} was found (file name patterns: {config.filename_patterns})")
    return AudioCapsSource(protocol, present, missing)


def load_all(source: AudioCapsSource, config: AudioCapsConfig):
    """Yield (entry, wave, record) for every present clip; collect every bad file, then fail.

    A folder with several broken files gets one error listing all of them, so a user fixes
    them in one pass.
    """
    problems: list[str] = []
    for entry, path in tqdm(source.present, desc="audiocaps", unit="clip"):
        try:
            wave, record = load_clip(path, config)
        except AudioFileError as exc:
            problems.append(str(exc))
            continue
        if not problems:
            yield entry, wave, record
    if problems:
        listing = "\n  ".join(problems)
        raise AudioCapsError(f"{len(problems)} unusable audio file(s) in {config.audio_dir}:\n  {listing}")
