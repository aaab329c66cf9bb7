"""The AudioCaps source: a user's local audio folder plus the split lists.

The train, val and test lists of AudioCaps 1.0 ship in protocols/audiocaps/ (MIT, see the
README there) and every list, shipped or the user's, is verified by row count and SHA-256 and
named. Published numbers are comparable only inside one test protocol (the full 975-clip test
set, AudioLDM's 964-clip subset, Tango's 886-clip subset), so the test list may be either. A
YouTube id in two splits is an error (leakage). Every audio file is checked (corrupt, empty,
NaN/inf, silent: an error naming it); a sample-rate mismatch is resampled with soxr and
recorded per clip (or refused, by config). Clips absent from the folder are counted and listed
per split, never silently dropped, and above `data.max_missing_fraction` of a split the run
refuses, naming the split and the count.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import os
import re
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from siren_bench.config import AudioCapsConfig, ConfigError
from siren_bench.data.decode import DecodePolicy, decode_source
from siren_bench.io import AudioFileError, atomic_path, sha256_bytes, sha256_file, write_json_atomic
from siren_bench.errors import AudioCapsError  # noqa: F401  (re-exported)


SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Protocol:
    name: str
    description: str
    kind: str  # list format: "csv" | "audioldm_json" | "tango_jsonl"
    n_rows: int
    n_clips: int
    sha256: str
    split: str  # the split whose list it is


# Counts and hashes of the public lists (../shared/REFERENCES.md section 5).
PROTOCOLS: tuple[Protocol, ...] = (
    Protocol("audiocaps_test_975x5", "AudioCaps test set, 5 captions per clip", "csv", 4875, 975,
             "b91c4b7ded2f4f6e7db5b9c4983dc1e1dca3d556f505b61e3fd65cac7e1c638a", "test"),
    Protocol("audioldm_964", "AudioLDM's AudioCaps test subset (audioldm_eval protocol)", "audioldm_json", 964, 964,
             "1830860b4b717fa20da9662b12b33e2239afd40925daaa9ffcb0548824100faa", "test"),
    Protocol("tango_886", "Tango's AudioCaps test subset", "tango_jsonl", 886, 886,
             "90389ee3a577394e3a5063d5a2014279d2d02c7445ce4412740839c1344488e1", "test"),
    Protocol("audiocaps_train_49838", "AudioCaps 1.0 train set, 1 caption per clip", "csv", 49838, 49838,
             "c0c5223db682b3bf724ce7e7ce58d5b36929f74572e8526a7211f92d2eef7c8e", "train"),
    Protocol("audiocaps_val_495x5", "AudioCaps 1.0 val set, 5 captions per clip", "csv", 2475, 495,
             "dab1c96641d5f3053ddb99dca3949450da9a75737bda53e11cc0aa8b102be0c3", "val"),
)
PROTOCOLS_BY_NAME = {p.name: p for p in PROTOCOLS}
PROTOCOLS_BY_HASH = {p.sha256: p for p in PROTOCOLS}


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


def identify_protocol(path: Path, requested: str, n_rows: int, split: str = "test") -> dict:
    """Verify the `split` list against the known protocols of that split; return what the report
    records about it. `requested`: auto (any known list of the split), custom (any list), or a
    protocol's name."""
    digest = sha256_file(path)
    known = PROTOCOLS_BY_HASH.get(digest)
    record = {"list_file": str(path), "list_sha256": digest, "list_rows": n_rows}
    if requested == "custom":
        return record | {"protocol": known.name if known else "custom", "protocol_description": known.description if known else "user-supplied list"}
    of_split = [p for p in PROTOCOLS if p.split == split]
    if requested != "auto" and requested not in {p.name for p in of_split}:
        raise ConfigError(f"data.protocol must be auto, custom or one of {sorted(p.name for p in of_split)}, got {requested!r}")
    expected = PROTOCOLS_BY_NAME.get(requested)
    if known is not None and known.split != split:
        raise AudioCapsError(f"{path}: this is the {known.name} list (the {known.split} split), given as data.{split}_list")
    if known is None:
        table = "; ".join(f"{p.name}: {p.n_rows} rows, sha256 {p.sha256}" for p in of_split)
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
    """Map each file stem in the folder tree to its paths (several means ambiguous). Symlinked
    folders are followed (a split often lives on another disk: train -> /mnt/...), each real
    folder once, so a link loop ends."""
    if not audio_dir.is_dir():
        raise AudioCapsError(f"{audio_dir}: AudioCaps audio folder not found (set data.audio_dir)")
    wanted = {e.lower() for e in extensions}
    index: dict[str, list[Path]] = {}
    visited: set[str] = set()
    for root, folders, files in os.walk(audio_dir, followlinks=True):
        real = os.path.realpath(root)
        if real in visited:
            folders[:] = []
            continue
        visited.add(real)
        folders.sort()
        for name in sorted(files):
            path = Path(root) / name
            if path.suffix.lower() in wanted and path.is_file():
                index.setdefault(path.stem, []).append(path)
    return {stem: sorted(paths) for stem, paths in index.items()}


SHIPPED_LISTS = Path(__file__).resolve().parents[2] / "protocols" / "audiocaps"


def shipped_start_times() -> dict[str, str]:
    """YouTube id -> start time in the AudioCaps 1.0 lists shipped in protocols/audiocaps/ (ids
    listed with two start times left out; empty where the checkout lacks them). AudioLDM's
    964-clip list names clips by id alone."""
    times: dict[str, set[str]] = {}
    for path in sorted(SHIPPED_LISTS.glob("audiocaps_*.csv")):
        for entry in _parse_csv(path):
            times.setdefault(entry.youtube_id, set()).add(entry.start_time)
    return {clip: next(iter(starts)) for clip, starts in times.items() if len(starts) == 1}


def with_start_times(entries: list[ListEntry], patterns: list[str]) -> tuple[list[ListEntry], int]:
    """Entries without a start time given the shipped lists' (so `{youtube_id}_{start_time}` file
    names resolve), and how many were filled. Without the shipped lists, files named by id alone
    still resolve; if every pattern needs a start time, nothing could: an error."""
    needs_start = [p for p in patterns if "{start_time}" in p]
    if all(e.start_time is not None for e in entries) or not needs_start:
        return entries, 0
    known = shipped_start_times()
    if not known and len(needs_start) == len(patterns):
        raise AudioCapsError(f"{SHIPPED_LISTS}: no shipped AudioCaps lists (audiocaps_*.csv) to take start times from, "
                             f"and every data.filename_patterns entry needs one ({patterns}); restore protocols/audiocaps/ "
                             "from the repository, give a list with start times, or add a pattern such as '{youtube_id}'")
    filled = [dataclasses.replace(e, start_time=known[e.youtube_id]) if e.start_time is None and e.youtube_id in known else e
              for e in entries]
    return filled, sum(a is not b for a, b in zip(entries, filled))


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


def decode_policy(config: AudioCapsConfig) -> DecodePolicy:
    return DecodePolicy(config.sample_rate, config.clip_seconds, config.channel_policy, config.on_sample_rate_mismatch)


@dataclass
class SplitSource:
    """One split's list, verified, and its clips found and missing in the audio folder."""

    split: str
    protocol: dict
    present: list[tuple[ListEntry, Path]]
    missing: list[ListEntry]


def split_lists(config: AudioCapsConfig) -> dict[str, Path]:
    """The splits the config names a list for (train and val may be null), in SPLITS order."""
    lists = {"train": config.train_list, "val": config.val_list, "test": config.test_list}
    return {split: Path(path).expanduser() for split, path in lists.items() if path}


def check_no_leakage(lists: dict[str, tuple[Path, list[ListEntry]]]) -> None:
    """A clip (YouTube id) in two splits would score a model on audio it trained or was tuned on."""
    splits = list(lists)
    for i, first in enumerate(splits):
        for second in splits[i + 1:]:
            shared = sorted({e.youtube_id for e in lists[first][1]} & {e.youtube_id for e in lists[second][1]})
            if shared:
                raise AudioCapsError(
                    f"{lists[first][0]} ({first}) and {lists[second][0]} ({second}) share {len(shared)} clip(s), "
                    f"e.g. {', '.join(shared[:5])}: a clip may belong to one split only (leakage)")


def resolve_sources(config: AudioCapsConfig) -> dict[str, SplitSource]:
    """Every split's list verified, no clip in two splits, each clip found or counted missing;
    a split missing more than data.max_missing_fraction of its clips is refused by name."""
    parsed = {}
    for split, path in split_lists(config).items():
        if not path.is_file():
            raise AudioCapsError(f"{path}: AudioCaps {split} list file not found (set data.{split}_list)")
        entries, n_rows = parse_list(path)
        requested = config.protocol if split == "test" else ("custom" if config.protocol == "custom" else "auto")
        protocol = identify_protocol(path, requested, n_rows, split) | {"list_clips": len(entries)}
        entries, filled = with_start_times(entries, config.filename_patterns)
        if filled:
            protocol["start_times_from_shipped_lists"] = filled
        parsed[split] = (path, entries, protocol)
    check_no_leakage({split: (path, entries) for split, (path, entries, _) in parsed.items()})
    index = index_audio_folder(Path(config.audio_dir).expanduser(), config.extensions)
    sources = {}
    for split, (path, entries, protocol) in parsed.items():
        present, missing = [], []
        for entry in entries:
            found = resolve_audio(entry, index, config.filename_patterns)
            (missing.append(entry) if found is None else present.append((entry, found)))
        if not present:
            raise AudioCapsError(f"{config.audio_dir}: none of the {len(entries)} clips of {path.name} ({split}) was found "
                                 f"(file name patterns: {config.filename_patterns})")
        fraction = len(missing) / len(entries)
        if fraction > config.max_missing_fraction:
            raise AudioCapsError(
                f"{path} ({split}): {len(missing)} of {len(entries)} clips ({fraction:.1%}) are not in {config.audio_dir}, "
                f"more than data.max_missing_fraction={config.max_missing_fraction}; first missing: "
                f"{', '.join(e.youtube_id for e in missing[:10])}. Fetch them, or raise the threshold knowing the "
                "split is smaller than the published one")
        sources[split] = SplitSource(split, protocol, present, missing)
    return sources


def _decode_one(job: tuple[str, str, Path, Path, DecodePolicy, bool]) -> tuple[str, str, dict | None, str | None]:
    """One clip decoded, checked and hashed; with `store`, its WAV written (atomically) into the
    work folder. Its record is written there last, so its presence means the clip is done.
    Returns (split, clip id, record, problem)."""
    split, clip_id, source, target, policy, store = job
    try:
        data, record = decode_source(source, policy)
    except AudioFileError as exc:
        return split, clip_id, None, str(exc)
    if store:
        with atomic_path(target) as tmp:
            tmp.write_bytes(data)
    stat = source.stat()
    record |= {"source_file": str(source), "source_sha256": sha256_file(source), "sha256": sha256_bytes(data),
               "source_bytes": stat.st_size, "source_mtime_ns": stat.st_mtime_ns}
    write_json_atomic(target.with_suffix(".json"), record)
    return split, clip_id, record, None


def _done(target: Path, source: Path, store: bool) -> dict | None:
    """The record of a clip a killed run finished, if its source file is unchanged since (and,
    storing the decoded clips, its WAV is there)."""
    record_path = target.with_suffix(".json")
    if not record_path.is_file() or (store and not target.is_file()):
        return None
    record = json.loads(record_path.read_text())
    stat = source.stat()
    if (record.get("source_bytes"), record.get("source_mtime_ns")) != (stat.st_size, stat.st_mtime_ns):
        return None
    return record


def decode_all(sources: dict[str, SplitSource], config: AudioCapsConfig, work_dir: Path) -> dict[tuple[str, str], dict]:
    """Decode, check and hash every present clip in `data.workers` processes, with a progress bar
    (with data.store_decoded, into work_dir/<clip id>.wav); returns (split, clip id) -> its record.
    Resumable: a clip a killed run already finished (record present, source file unchanged) is not
    decoded again. Every bad file is collected and listed in one error, so a user fixes them in one pass."""
    work_dir.mkdir(parents=True, exist_ok=True)
    policy, store = decode_policy(config), config.store_decoded
    records: dict[tuple[str, str], dict] = {}
    jobs = []
    for source in sources.values():
        for entry, path in source.present:
            target = work_dir / f"{entry.youtube_id}.wav"
            done = _done(target, path, store)
            if done is None:
                jobs.append((source.split, entry.youtube_id, path, target, policy, store))
            else:
                records[(source.split, entry.youtube_id)] = done
    problems: list[str] = []
    progress = tqdm(total=len(jobs) + len(records), initial=len(records), desc="audiocaps", unit="clip")
    with contextlib.ExitStack() as stack:
        if config.workers > 1 and len(jobs) > 1:
            pool = stack.enter_context(ProcessPoolExecutor(max_workers=config.workers))
            results = pool.map(_decode_one, jobs, chunksize=max(1, min(64, len(jobs) // (4 * config.workers))))
        else:
            results = map(_decode_one, jobs)
        for split, clip_id, record, problem in results:
            if problem:
                problems.append(problem)
            else:
                records[(split, clip_id)] = record
            progress.update()
    progress.close()
    if problems:
        listing = "\n  ".join(sorted(problems))
        raise AudioCapsError(f"{len(problems)} unusable audio file(s) in {config.audio_dir}:\n  {listing}\n"
                             f"The {len(records)} clips checked so far are kept for the next run in {work_dir}. Replace "
                             "these files, or move them out of data.audio_dir: a clip not found counts as missing (up "
                             "to data.max_missing_fraction of its split) and is listed in dataset.json.")
    return records
