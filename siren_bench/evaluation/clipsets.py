"""The sets of clips a score compares: a folder of audio files named by clip id, or a manifest.

A generated set is any folder of audio files whose names (without extension) are clip ids,
which is how a user hands in a new model's output. A reference set is such a folder or a
manifest written by the `prepare` stage (optionally one split of it), which also supplies the
captions. Every clip is identified by its file's SHA-256, so results and caches name the exact
audio they came from.
"""

from __future__ import annotations

import logging
import dataclasses
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from siren_bench.data.manifest import read_manifest
from siren_bench.io import sha256_file, sha256_json
from siren_bench.errors import ClipSetError  # noqa: F401  (re-exported)

log = logging.getLogger(__name__)
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3")


@dataclass(frozen=True)
class Clip:
    clip_id: str
    path: Path
    sha256: str  # of the audio scored: the file, or the clip decoded from it
    caption: str | None = None
    decode: str = ""  # a manifest's decoding policy: `path` is a source file decoded where read (data/decode.py)


@dataclass
class ClipSet:
    source: str  # the folder or manifest as the user gave it
    kind: str  # "folder" | "manifest"
    clips: dict[str, Clip]
    split: str | None = None

    def __len__(self) -> int:
        return len(self.clips)

    @property
    def ids(self) -> list[str]:
        return sorted(self.clips)

    @property
    def sha256(self) -> str:
        """Identity of the set's content: the sorted (clip id, audio SHA-256) pairs."""
        return sha256_json([[cid, self.clips[cid].sha256] for cid in self.ids])

    def captions(self) -> dict[str, str]:
        return {cid: c.caption for cid, c in self.clips.items() if c.caption is not None}

    def moved_to(self, folder: str | Path) -> "ClipSet":
        """The same clips (ids, hashes, captions) as they will lie in `folder`: for a set scored in
        a staging folder that is then renamed, so results.json names where the files end up."""
        folder = Path(folder)
        clips = {cid: dataclasses.replace(c, path=folder / Path(c.path).name) for cid, c in self.clips.items()}
        return dataclasses.replace(self, source=str(folder), clips=clips)

    def record(self) -> dict:
        """What results.json says about the set; enough for `audit` to re-check every file."""
        return {"source": self.source, "kind": self.kind, "split": self.split, "n_clips": len(self), "sha256": self.sha256,
                "clips": [{"clip_id": cid, "path": portable_path(self.clips[cid].path), "sha256": self.clips[cid].sha256,
                           **({"decode": self.clips[cid].decode} if self.clips[cid].decode else {})} for cid in self.ids]}


def portable_path(path: Path) -> str:
    """Relative to the working directory where the file lies under it (results then read the
    same in any clone of the repository), absolute otherwise."""
    path = Path(path).absolute()
    try:
        return path.relative_to(Path.cwd()).as_posix()
    except ValueError:
        return str(path)


def folder_clips(folder: str | Path) -> ClipSet:
    """Every audio file directly inside `folder` (.wav .flac .ogg .mp3), its stem as the clip id."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ClipSetError(f"{folder}: not a folder of audio files")
    clips: dict[str, Clip] = {}
    others, unusable = [], []
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() not in AUDIO_EXTENSIONS:
            others.append(path.name)
            continue
        try:
            path.name.encode("utf-8")
        except UnicodeEncodeError:
            unusable.append(f"{path.name!r}: the file name is not valid UTF-8 (rename it)")
            continue
        if not path.is_file():
            kind = "a broken symbolic link" if path.is_symlink() and not path.exists() else "not a regular file"
            unusable.append(f"{path.name}: {kind}")
            continue
        if path.stem in clips:
            raise ClipSetError(f"{folder}: clip id {path.stem!r} is given twice ({clips[path.stem].path.name} and {path.name})")
        clips[path.stem] = Clip(path.stem, path, sha256_file(path))
    if unusable:
        raise ClipSetError(f"{folder}: {len(unusable)} audio entries cannot be read: " + "; ".join(unusable))
    if not clips:
        raise ClipSetError(f"{folder}: no audio files ({', '.join(AUDIO_EXTENSIONS)})")
    if others:
        log.info("%s: ignoring %d entries that are not audio files (e.g. %s)", folder, len(others), others[0])
    return ClipSet(str(folder), "folder", clips)


def manifest_clips(manifest: str | Path, split: str | None = None) -> ClipSet:
    """The clips of a prepare-stage manifest (one split, or all), with their captions. Each file's
    SHA-256 must match the manifest's: a changed file is an error, not a silent new reference."""
    manifest = Path(manifest)
    frame = read_manifest(manifest)
    if split is not None:
        if split not in set(frame["split"]):
            raise ClipSetError(f"{manifest}: no clips in split {split!r} (splits: {sorted(set(frame['split']))})")
        frame = frame[frame["split"] == split]
    clips = {}
    sources = frame["source_sha256"] if "source_sha256" in frame.columns else [""] * len(frame)
    for clip_id, path, expected, caption, decode, source_hash in zip(
            frame["clip_id"], frame["audio_path"], frame["sha256"], frame["caption"], frame["decode"], sources):
        if "\x00" in str(path):
            raise ClipSetError(f"{manifest}: the path of clip {clip_id!r} holds a NUL byte ({str(path)!r})")
        # a clip decoded where read: its source file must be the one prepare decoded and hashed
        actual, recorded = sha256_file(path), (source_hash if decode else expected)
        if actual != recorded:
            raise ClipSetError(f"{path}: SHA-256 {actual} differs from {recorded} in {manifest} (clip {clip_id!r}): "
                               "the file changed after the manifest was written")
        clips[clip_id] = Clip(clip_id, Path(path), expected, caption or None, decode)
    return ClipSet(str(manifest), "manifest", clips, split)


def clip_set(source: str | Path, split: str | None = None) -> ClipSet:
    """A folder (audio files) or a manifest file (.csv)."""
    source = Path(source)
    if source.is_dir():
        if split is not None:
            raise ClipSetError(f"{source}: a split ({split!r}) applies to a manifest, not to a folder of audio files")
        return folder_clips(source)
    if source.is_file() and source.suffix.lower() == ".csv":
        return manifest_clips(source, split)
    raise ClipSetError(f"{source}: neither a folder of audio files nor a manifest .csv")


def read_captions(path: str | Path) -> dict[str, str]:
    """A CSV with columns clip_id and caption (one row per clip)."""
    path = Path(path)
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ClipSetError(f"{path}: cannot read captions ({exc})") from exc
    if not {"clip_id", "caption"} <= set(frame.columns):
        raise ClipSetError(f"{path}: captions need columns clip_id and caption, found {list(frame.columns)}")
    blank = [number for number, clip_id in enumerate(frame["clip_id"], start=2) if not clip_id.strip()]
    if blank:
        raise ClipSetError(f"{path}: empty clip id on line(s) {blank[:5]}")
    duplicated = frame["clip_id"][frame["clip_id"].duplicated()].unique().tolist()
    if duplicated:
        raise ClipSetError(f"{path}: clip ids given twice: {duplicated[:5]}")
    empty = frame["clip_id"][frame["caption"].str.strip() == ""].tolist()
    if empty:
        raise ClipSetError(f"{path}: empty captions for clips {empty[:5]}")
    return dict(zip(frame["clip_id"], frame["caption"]))


def require_same_ids(generated: ClipSet, reference: ClipSet, why: str) -> None:
    """Paired metrics compare clip i with reference clip i: both sets must hold the same ids."""
    missing = sorted(set(reference.clips) - set(generated.clips))
    extra = sorted(set(generated.clips) - set(reference.clips))
    if missing or extra:
        raise ClipSetError(
            f"{why} pairs clips by id, but {generated.source} and {reference.source} differ: "
            f"{len(missing)} reference ids have no generated clip (e.g. {missing[:3]}), "
            f"{len(extra)} generated ids have no reference (e.g. {extra[:3]})")
