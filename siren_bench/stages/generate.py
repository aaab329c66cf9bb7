"""Stage `generate`: render each configured system's audio for the test clips, one folder each.

Built so far: `codec_resynthesis`, the test clips' own codes decoded by the pipeline's codec:
the ceiling any LM over this tokenizer can reach, since a perfect LM would emit exactly these
codes. Siren, its ablations and the baselines join as their stages arrive (issues 5-8).

Output (artifacts/<profile>/generate/): <system>/<clip_id>.wav (32-bit float WAV at the codec's
rate, trimmed to the reference clip's length: a model's raw output, so any overshoot past full
scale reaches the scorer instead of being clipped on write), systems.json (per system: what it
is, clip count, sample rate) and provenance.json.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from siren_bench.codecs import Codec, load_stage_codec
from siren_bench.config import codec_config
from siren_bench.data.manifest import MANIFEST_NAME, read_manifest
from siren_bench.io import atomic_directory, write_json_atomic, write_wav
from siren_bench.provenance import build_record, write_provenance
from siren_bench.stages.common import open_stage
from siren_bench.stages.tokenize import load_codes

SCORED_SPLIT = "test"
SYSTEMS_NAME = "systems.json"


def codec_resynthesis(codec: Codec, ids: list[str], codes: dict[str, np.ndarray], lengths: dict[str, int], out: Path,
                      batch: int) -> None:
    """Decode every clip's full code stack and write it as float WAV, named by clip id."""
    out.mkdir(parents=True)
    with torch.no_grad():
        for start in tqdm(range(0, len(ids), batch), desc="codec resynthesis", unit="batch"):
            chunk = ids[start : start + batch]
            decoded = codec.decode(torch.from_numpy(np.stack([codes[c] for c in chunk]))).double().numpy()
            for clip_id, wave in zip(chunk, decoded):
                write_wav(out / f"{clip_id}.wav", wave[: lengths[clip_id]], codec.sample_rate, subtype="FLOAT")


def run(params_path: str | Path = "params.yaml") -> Path:
    stage = open_stage(params_path)
    run_cfg, config = stage.run, codec_config(stage.params, stage.source)
    prepare_dir, tokenize_dir, codec_dir = stage.dir("prepare"), stage.dir("tokenize"), stage.dir("codec")
    manifest = read_manifest(prepare_dir / MANIFEST_NAME)
    test = manifest[manifest["split"] == SCORED_SPLIT]
    if test.empty:
        raise ValueError(f"{prepare_dir / MANIFEST_NAME}: no clips in the {SCORED_SPLIT} split to generate for")
    codes = load_codes(tokenize_dir)
    codec = load_stage_codec(codec_dir)
    ids = test["clip_id"].tolist()
    missing = [c for c in ids if c not in codes]
    if missing:
        raise ValueError(f"{tokenize_dir}: no codes for {len(missing)} test clips (e.g. {missing[:3]}); re-run tokenize")
    for clip_id, rate in zip(test["clip_id"], test["sample_rate"]):
        if int(rate) != codec.sample_rate:
            raise ValueError(f"{prepare_dir / MANIFEST_NAME}: clip {clip_id} is {rate} Hz but the codec runs at {codec.sample_rate} Hz")
    lengths = dict(zip(test["clip_id"], test["num_samples"].astype(int)))

    out_dir = stage.dir("generate")
    with atomic_directory(out_dir) as staging:
        codec_resynthesis(codec, ids, codes, lengths, staging / "codec_resynthesis", config.batch_clips)
        systems = {"codec_resynthesis": {
            "description": f"the {SCORED_SPLIT} clips' own {codec.n_codebooks}-codebook codes decoded by the codec "
                           f"({codec.info.name}): the ceiling for a codec LM", "n_clips": len(ids),
            "sample_rate": codec.sample_rate, "split": SCORED_SPLIT, "seed": None}}
        write_json_atomic(staging / SYSTEMS_NAME, systems)
        record = build_record("generate", {"run": run_cfg, "codec": config},
                              inputs={"manifest": prepare_dir / MANIFEST_NAME, "codes": tokenize_dir / "codes.npz",
                                      "codec": codec_dir / "model"}, device=run_cfg.device)
        write_provenance(staging, record)
    return out_dir
