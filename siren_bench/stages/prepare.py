"""Stage `prepare`: captions + audio -> a manifest of fixed-length clips with content hashes.

Output folder (artifacts/<profile>/prepare/): manifest.csv, dataset.json (what the dataset card
and later stages need to know about the source), provenance.json and, for SynthCaps, audio/*.wav.
The folder is built in a staging directory and swapped in only when complete. dvc.yaml pins its
hash but keeps it out of DVC's cache (`cache: false`).

AudioCaps: every clip is decoded, checked and hashed in worker processes (resumable after a kill:
each finished clip's record is kept in artifacts/<profile>/resume/prepare-audiocaps-<decoding
settings>/). By default nothing decoded is kept: the manifest names each clip's source file and
the decoding policy (`decode` column), and the stages that read audio decode it there
(data/decode.py: the same samples and content hash every time). With data.store_decoded=true the
decoded WAVs are kept in that resume folder and hard-linked into audio/, so re-running prepare
links them again instead of decoding.
"""

from __future__ import annotations

from pathlib import Path

from tqdm import tqdm

from siren_bench.config import AudioCapsConfig, SynthCapsConfig, config_hash, data_config
from siren_bench.data import audiocaps, synthcaps
from siren_bench.data.manifest import MANIFEST_NAME, json_cell, write_manifest
from siren_bench.io import atomic_directory, link_or_copy, sha256_file, write_json_atomic, write_wav
from siren_bench.provenance import build_record, write_provenance
from siren_bench.stage_context import open_stage

DATASET_INFO_NAME = "dataset.json"


def prepare_synthcaps(config: SynthCapsConfig, out: Path) -> tuple[list[dict], dict]:
    splits = synthcaps.assign_splits(config.n_clips, vars(config.splits), config.seed)
    rows = []
    for index in tqdm(range(config.n_clips), desc="synthcaps", unit="clip"):
        clip = synthcaps.generate_clip(config.seed, index, config.sample_rate, config.clip_seconds, config.max_events)
        clip_id = f"synthcaps_{index:06d}"
        rel = f"audio/{clip_id}.wav"
        write_wav(out / rel, clip.wave, config.sample_rate)
        row = {
            "clip_id": clip_id,
            "split": splits[index],
            "audio": rel,
            "sha256": sha256_file(out / rel),
            "caption": clip.caption,
            "sample_rate": config.sample_rate,
            "num_samples": clip.wave.size,
            "labels": ";".join(clip.labels),
            "n_events": len(clip.events),
            "relations": ";".join(clip.relations),
            "template": clip.template,
            "peak_gain_db": clip.peak_gain_db,
            "events": json_cell([e.as_dict() for e in clip.events]),
        }
        row |= {f"label_{name}": int(name in clip.labels) for name in synthcaps.CLASS_NAMES}
        rows.append(row)
    info = {
        "name": "synthcaps",
        "classes": list(synthcaps.CLASS_NAMES),
        "relations": list(synthcaps.RELATIONS),
        "attributes": {
            "pitch": list(synthcaps.PITCH_RANGES_HZ),
            "loudness": list(synthcaps.LOUDNESS_DBFS),
            "rate": list(synthcaps.RATE_LEVELS),
            "duration": ["short", "medium", "long"],
        },
        "pitch_ranges_hz": synthcaps.PITCH_RANGES_HZ,
        "loudness_dbfs": synthcaps.LOUDNESS_DBFS,
        "duration_thresholds": {"short_below_fraction": synthcaps.BRIEF_FRACTION, "long_from_fraction": synthcaps.LONG_FRACTION},
        "sample_rate": config.sample_rate,
        "clip_seconds": config.clip_seconds,
    }
    return rows, info


def prepare_audiocaps(config: AudioCapsConfig, out: Path, work_dir: Path) -> tuple[list[dict], dict]:
    """Decode every listed clip found (in data.workers processes; resumable through `work_dir`)
    into out/audio/, and the manifest rows in list order."""
    sources = audiocaps.resolve_sources(config)
    records = audiocaps.decode_all(sources, config, work_dir)
    on_demand = "" if config.store_decoded else audiocaps.decode_policy(config).cell()
    rows = []
    for split, source in sources.items():
        for entry, path in source.present:
            clip_id = entry.youtube_id
            record = dict(records[(split, clip_id)])
            if config.store_decoded:
                audio = f"audio/{clip_id}.wav"
                link_or_copy(work_dir / f"{clip_id}.wav", out / audio)
            else:
                audio = str(path.resolve())  # decoded where a stage reads it (the `decode` column)
            rows.append({
                "clip_id": clip_id,
                "split": split,
                "audio": audio,
                "decode": on_demand,
                "sha256": record.pop("sha256"),
                "caption": entry.captions[0],
                "sample_rate": config.sample_rate,
                "num_samples": record.pop("num_samples"),
                "captions": json_cell(entry.captions),
                "youtube_id": entry.youtube_id,
                "start_time": entry.start_time or "",
                **{k: record[k] for k in sorted(record) if k != "source_mtime_ns"},  # one order, fresh or resumed
            })
    splits = {}
    for split, source in sources.items():
        splits[split] = source.protocol | {
            "clips_found": len(source.present), "clips_missing": len(source.missing),
            "missing_fraction": len(source.missing) / source.protocol["list_clips"],
            "missing": [{"youtube_id": e.youtube_id, "start_time": e.start_time} for e in source.missing]}
    info = {
        "name": "audiocaps",
        "splits": splits,
        "max_missing_fraction": config.max_missing_fraction,
        "resampled": sum(r["resampled"] for r in rows),
        "resample_policy": f"soxr HQ to {config.sample_rate} Hz" if config.on_sample_rate_mismatch == "resample" else "error",
        "decoded_copy": "kept in audio/ (data.store_decoded)" if config.store_decoded else "none: decoded from the source files where read",
        "channel_policy": config.channel_policy,
        "sample_rate": config.sample_rate,
        "clip_seconds": config.clip_seconds,
    }
    return rows, info


def run(params_path: str | Path = "params.yaml") -> Path:
    stage = open_stage(params_path)
    run_cfg, data_cfg = stage.run, data_config(stage.params, stage.source)
    out_dir = stage.dir("prepare")
    with atomic_directory(out_dir) as staging:
        if isinstance(data_cfg, SynthCapsConfig):
            rows, info = prepare_synthcaps(data_cfg, staging)
            seeds = {"data.seed": data_cfg.seed}
            inputs = {}
        else:
            decoding = {k: getattr(data_cfg, k) for k in ("audio_dir", "sample_rate", "clip_seconds", "channel_policy",
                                                          "on_sample_rate_mismatch")}
            work_dir = stage.dir("resume") / f"prepare-audiocaps-{config_hash(decoding)[:16]}"
            rows, info = prepare_audiocaps(data_cfg, staging, work_dir)
            seeds = {}
            inputs = {f"{split}_list": str(path) for split, path in audiocaps.split_lists(data_cfg).items()}
        write_manifest(staging / MANIFEST_NAME, rows)
        write_json_atomic(staging / DATASET_INFO_NAME, info)
        record = build_record("prepare", {"run": run_cfg, "data": data_cfg}, inputs=inputs, seeds=seeds, device=run_cfg.device,
                              extra={"outputs": {MANIFEST_NAME: sha256_file(staging / MANIFEST_NAME)}})
        write_provenance(staging, record)
    return out_dir
