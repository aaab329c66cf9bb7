"""Stage `tokenize`: every clip of the manifest -> RVQ codes [K, F], stored compactly.

Output (artifacts/<profile>/tokenize/): codes/shard-<n>.npy (uint16 [K, frames] of up to 4096
clips end to end, memory-mappable), index.csv (clip id, split, audio hash, shard, offset,
frames), codec.json (the codec that made them) and provenance.json (artifacts.write_codes). Per-clip codes are cached by (audio content hash, codec weights identity), so
re-tokenizing after adding clips or switching back to a codec encodes only what is new, and a
killed run resumes from the clips it finished.

At scale: the codec encodes batches (`codec.batch_clips`) on `run.device` (CUDA when present),
and under torchrun (`torchrun --nproc-per-node N -m siren_bench.cli tokenize`) rank r encodes
clips r, r + N, ...; every rank writes its clips' codes to the shared content cache, and after a
barrier rank 0 assembles the stage output from it, identical to a one-process run's.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from siren_bench.artifacts import write_codes
from siren_bench.cache import ContentCache, cache_key
from siren_bench.codecs import CODEC_INFO_NAME, Codec, load_stage_codec
from siren_bench.config import codec_config
from siren_bench.data.decode import read_clip
from siren_bench.data.manifest import MANIFEST_NAME, ManifestError, audio_sources, read_manifest
from siren_bench.distributed import barrier, rank_and_world, torchrun_group
from siren_bench.io import atomic_directory, write_json_atomic
from siren_bench.provenance import build_record, write_provenance
from siren_bench.stage_context import open_stage


# Bump when the way codes are computed changes (padding, bandwidth, dtype): old entries then miss.
CODES_VERSION = 1


def codes_key(audio_sha256: str, codec: Codec) -> str:
    """Cache key: the audio's content, the codec's weights and shape, and the encoding recipe."""
    return cache_key(kind="rvq-codes", version=CODES_VERSION, audio=audio_sha256, codec=codec.info.as_dict())


def tokenize_clips(codec: Codec, manifest: pd.DataFrame, cache: ContentCache, batch: int,
                   device: torch.device | str = "cpu") -> dict[str, np.ndarray]:
    """Every clip's codes, from the cache where its (audio hash, codec) entry exists, the rest
    encoded on `device` (this rank's share of them under torchrun). Codes are cached under the
    manifest's hash, so the stage reads the manifest with its hashes verified."""
    rank, world = rank_and_world()
    codes: dict[str, np.ndarray] = {}
    todo = []
    for clip_id, audio_hash, source in zip(manifest["clip_id"], manifest["sha256"], audio_sources(manifest)):
        hit = cache.get(codes_key(audio_hash, codec))
        if hit is None:
            todo.append((clip_id, audio_hash, source))
        else:
            codes[clip_id] = hit["codes"]
    barrier()  # every rank has listed its misses before any rank writes an entry
    mine = todo[rank::world]
    for start in tqdm(range(0, len(mine), batch), desc="tokenize", unit="batch", disable=rank > 0):
        chunk = mine[start : start + batch]
        waves = []
        for _, _, (path, decode) in chunk:
            wave, rate = read_clip(path, decode)
            if rate != codec.sample_rate or wave.shape[0] != 1:
                raise ManifestError(f"{path}: {wave.shape[0]} channel(s) at {rate} Hz; the codec takes mono {codec.sample_rate} Hz "
                                    f"audio (set data.sample_rate={codec.sample_rate})")
            waves.append(wave[0])
        with torch.no_grad():
            encoded = codec.encode(torch.from_numpy(np.stack(waves).astype(np.float32)).to(device)).cpu().numpy()
        if encoded.max() > np.iinfo(np.uint16).max:
            raise ValueError(f"codebook indices up to {encoded.max()} do not fit uint16")
        for (clip_id, audio_hash, _), clip_codes in zip(chunk, encoded.astype(np.uint16)):
            cache.put(codes_key(audio_hash, codec), {"codes": clip_codes})
            codes[clip_id] = clip_codes
    if world > 1:
        barrier()  # every rank's codes are in the cache now
        for clip_id, audio_hash, _ in todo:
            if clip_id not in codes:
                codes[clip_id] = cache.get(codes_key(audio_hash, codec))["codes"]
    return codes


def run(params_path: str | Path = "params.yaml") -> Path:
    stage = open_stage(params_path)
    run_cfg, config = stage.run, codec_config(stage.params, stage.source)
    prepare_dir, codec_dir = stage.dir("prepare"), stage.dir("codec")
    manifest = read_manifest(prepare_dir / MANIFEST_NAME, verify_hashes=True)  # codes are cached under these hashes
    codec = load_stage_codec(codec_dir)
    cache = ContentCache(Path(run_cfg.cache_dir) / "codes")
    out_dir = stage.dir("tokenize")
    with torchrun_group(stage.device()) as device:
        codes = tokenize_clips(codec.to(device), manifest, cache, config.batch_clips, device)
        if rank_and_world()[0] > 0:
            return out_dir  # rank 0 writes the output
    with atomic_directory(out_dir) as staging:
        write_codes(staging, codes, pd.DataFrame({"clip_id": manifest["clip_id"], "split": manifest["split"],
                                                  "audio_sha256": manifest["sha256"]}))
        write_json_atomic(staging / CODEC_INFO_NAME, json.loads((codec_dir / CODEC_INFO_NAME).read_text()))
        record = build_record("tokenize", {"run": run_cfg, "codec": config},
                              inputs={"manifest": prepare_dir / MANIFEST_NAME, "codec": codec_dir / "model"}, device=run_cfg.device,
                              extra={"cache": {"hits": cache.hits, "misses": cache.misses}})
        write_provenance(staging, record)
    return out_dir
