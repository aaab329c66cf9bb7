"""What each stage writes: the contract between stages, and between stages and the report.

Stages meet only through their declared artifacts. A stage reads another's output through the
names and loaders here, never by importing that stage's module, and never by spelling a file name
of its own: artifacts/<profile>/<folder>/<file> is known in this one place. Report sections read
their numbers through `RunArtifacts`, so a section renders from a folder of small fixture files
in a unit test as well as from a real run.

`schema_version` is the version of a stage folder's layout, to bump when a file is renamed or a
field a reader uses changes meaning. Every stage records it in its provenance.json
(siren_bench/provenance.py), and reading a folder through `RunArtifacts` refuses one written
under another version, naming the stage to re-run (a folder from before versions were recorded
counts as version 1). Some writers still spell their own file names (diagnose, codec, prepare);
the readers all go through here. This module imports nothing heavier than numpy, so that it sits cheaply in every stage's
dependency closure (siren_bench/dvc_deps.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True)
class StageArtifacts:
    """One stage's output folder: the DVC stage that writes it and its files by role."""

    stage: str                    # the dvc.yaml stage (and `siren-bench` sub-command)
    folder: str                   # artifacts/<profile>/<folder>
    files: Mapping[str, str]      # role -> file or sub-folder name inside the folder
    schema_version: int = 1
    per_system: Mapping[str, str] = field(default_factory=dict)  # role -> file inside <folder>/<system>/

    def file(self, role: str) -> str:
        try:
            return self.files[role]
        except KeyError:
            raise KeyError(f"stage {self.stage!r} declares no artifact {role!r}; it has {sorted(self.files)}") from None


PROVENANCE_NAME = "provenance.json"  # every stage folder's record of what made it

SCORED_SPLIT = "test"            # the split every system renders and is scored on
UNPAIRED_SPLIT = "val"           # where real_unpaired draws its clips from
REPLICATES = "replicates"        # <stage>/replicates/seed<k>/, score/<system>/seed<k>/: seed replicates (replicates.py)

STAGES: dict[str, StageArtifacts] = {a.folder: a for a in (
    StageArtifacts("prepare", "prepare", {"manifest": "manifest.csv", "dataset": "dataset.json", "audio": "audio"}),
    StageArtifacts("codec", "codec", {"info": "codec.json", "model": "model", "evaluation": "evaluation.json",
                                      "train_log": "train_log.jsonl"}),
    StageArtifacts("tokenize", "tokenize", {"codes": "codes", "index": "index.csv", "codec": "codec.json"}, schema_version=2),
    StageArtifacts("diagnose", "diagnose", {"status": "diagnose.json", "fidelity": "fidelity.json",
                                            "fidelity_per_clip": "fidelity_per_clip.csv",
                                            "orthogonality": "orthogonality.json", "semantics": "semantics.json",
                                            "text_probe": "text_probe.json", "aisfx_probe": "aisfx_probe.json"}),
    StageArtifacts("evaluators", "evaluators", {"summary": "evaluators.json"}),
    StageArtifacts("train_siren", "siren", {"info": "siren.json", "train_log": "train_log.jsonl"}),
    StageArtifacts("align_siren", "siren_aligned", {"info": "aligned.json", "log": "align_log.jsonl"}),
    StageArtifacts("train_baselines", "baselines", {"summary": "baselines.json"},
                   per_system={"config": "config.json", "weights": "model.safetensors", "train_log": "train_log.jsonl"}),
    StageArtifacts("generate", "generate", {"systems": "systems.json"}),
    StageArtifacts("score", "score", {"summary": "summary.json", "reference_stats": "reference_stats.npz",
                                      "ranking": "ranking.json", "ranking_recipes": "ranking_recipes"},
                   per_system={"results": "results.json", "per_clip": "per_clip.csv"}),
    StageArtifacts("sweep", "sweep", {"summary": "sweep.json"}),
)}
SCHEMA_VERSIONS = {a.stage: a.schema_version for a in STAGES.values()}  # by dvc.yaml stage, as provenance records it


def expert_file(index: int) -> str:
    """A trained (or aligned) Siren expert's weights in the siren / siren_aligned folders."""
    return f"expert_{index}.safetensors"


class ArtifactError(FileNotFoundError):
    """A stage output that is missing or unreadable; the message names the file and its stage."""


@dataclass(frozen=True)
class RunArtifacts:
    """artifacts/<profile>/ of one run, read through the declared layout."""

    root: Path

    def dir(self, folder: str) -> Path:
        _declared(folder)
        return Path(self.root) / folder

    def has(self, folder: str) -> bool:
        return self.dir(folder).is_dir()

    def path(self, folder: str, role: str, system: str | None = None) -> Path:
        declared = _declared(folder)
        self._check_schema(declared)
        if system is None:
            return self.dir(folder) / declared.file(role)
        if role not in declared.per_system:
            raise KeyError(f"stage {declared.stage!r} declares no per-system artifact {role!r}")
        return self.dir(folder) / system / declared.per_system[role]

    def _check_schema(self, declared: StageArtifacts) -> None:
        record = Path(self.root) / declared.folder / PROVENANCE_NAME
        if not record.is_file():
            return  # nothing written yet (or a hand-made fixture): the files themselves are checked as read
        found = json.loads(record.read_text()).get("schema_version", 1)
        if found != declared.schema_version:
            raise ArtifactError(f"{record.parent}: written under layout version {found} of stage {declared.stage!r}, and "
                                f"this code reads version {declared.schema_version}; re-run it (dvc repro {declared.stage})")

    def exists(self, folder: str, role: str, system: str | None = None) -> bool:
        return self.path(folder, role, system).exists()

    def json(self, folder: str, role: str, system: str | None = None) -> Any:
        return self._read(folder, role, system, json.loads, "a JSON file")

    def jsonl(self, folder: str, role: str, system: str | None = None) -> list[dict]:
        def rows(text: str) -> list[dict]:
            return [json.loads(line) for line in text.splitlines() if line.strip()]

        return self._read(folder, role, system, rows, "a JSON-lines file")

    def _read(self, folder: str, role: str, system: str | None, parse, kind: str):
        path, stage = self.path(folder, role, system), _declared(folder).stage
        try:
            return parse(path.read_text())
        except FileNotFoundError:
            raise ArtifactError(f"{path}: missing (written by the {stage} stage; re-run it)") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ArtifactError(f"{path}: not {kind} ({exc}); re-run the {stage} stage") from None


def _declared(folder: str) -> StageArtifacts:
    try:
        return STAGES[folder]
    except KeyError:
        raise KeyError(f"no stage writes artifacts/<profile>/{folder}; declared: {sorted(STAGES)}") from None


CODES_PER_SHARD = 4096  # clips per shard: about 50 MB of uint16 codes for 10 s of DAC 16 kHz (12 x 500)


def write_codes(tokenize_dir: Path, codes: Mapping[str, np.ndarray], index: "pd.DataFrame") -> None:
    """The tokenize stage's codes as sharded integer arrays: codes/shard-<n>.npy, each one uint16
    array [K, total frames] of up to CODES_PER_SHARD clips laid end to end in `index` order, and
    index.csv (`index`'s columns plus shard, offset and frames per clip), so a reader maps only
    the shards it needs (np.load with mmap_mode) instead of decompressing every clip."""
    folder = tokenize_dir / STAGES["tokenize"].file("codes")
    folder.mkdir()
    ids = index["clip_id"].tolist()
    shards, offsets = [], []
    for number, start in enumerate(range(0, len(ids), CODES_PER_SHARD)):
        chunk = [codes[c] for c in ids[start : start + CODES_PER_SHARD]]
        np.save(folder / f"shard-{number:05d}.npy", np.concatenate(chunk, axis=1).astype(np.uint16), allow_pickle=False)
        shards += [number] * len(chunk)
        offsets += list(np.cumsum([0] + [c.shape[1] for c in chunk[:-1]]))
    index = index.assign(shard=shards, offset=offsets, frames=[codes[c].shape[1] for c in ids])
    index.to_csv(tokenize_dir / STAGES["tokenize"].file("index"), index=False, lineterminator="\n")


def load_codes(tokenize_dir: str | Path, required=()) -> dict[str, np.ndarray]:
    """Clips' codes [K, T] (int64) from the tokenize stage: the `required` ones (every clip when
    none are named), read from memory-mapped shards; a required clip without codes is an error
    naming the folder."""
    import pandas as pd

    tokenize_dir = Path(tokenize_dir)
    index = pd.read_csv(tokenize_dir / STAGES["tokenize"].file("index"), dtype={"clip_id": str}, keep_default_na=False)
    wanted = list(required) if len(required) else index["clip_id"].tolist()
    rows = index.set_index("clip_id")
    missing = [c for c in wanted if c not in rows.index]
    if missing:
        raise ValueError(f"{tokenize_dir}: no codes for {len(missing)} clips (e.g. {missing[:3]}); re-run tokenize")
    folder = tokenize_dir / STAGES["tokenize"].file("codes")
    shards: dict[int, np.ndarray] = {}
    codes = {}
    for clip_id in wanted:
        shard, offset, frames = (int(rows.at[clip_id, k]) for k in ("shard", "offset", "frames"))
        if shard not in shards:
            shards[shard] = np.load(folder / f"shard-{shard:05d}.npy", mmap_mode="r", allow_pickle=False)
        codes[clip_id] = np.asarray(shards[shard][:, offset : offset + frames], dtype=np.int64)
    return codes
