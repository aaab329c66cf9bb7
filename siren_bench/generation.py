"""Rendering audio from the pipeline's models: the test clips' own codes decoded (codec
resynthesis), and any model's `generate` driven caption batch by caption batch, seeded, decoded
by the codec and written as float WAV. Used by the generate stage and the depth sweep."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from siren_bench.artifacts import SCORED_SPLIT
from siren_bench.codecs import Codec
from siren_bench.config import ModelConfig
from siren_bench.io import write_wav
from siren_bench.models.sampling import SamplingConfig
from siren_bench.models.experts import encode_captions


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


def render(model, output: str, name: str, codec: Codec, encoder, test, lengths: dict[str, int], config: ModelConfig,
           out: Path, batch: int, device: torch.device) -> dict:
    """Every caption of `test` through `model.generate` on `device` (seeded by
    model.generation_seed; sampling model.temperature / top_k / top_p / guidance, the same for
    every system), decoded by the codec on CPU from codes or from a latent (`output`), written as
    float WAV trimmed to the reference length. Returns the sampling facts systems.json records."""
    model.to(device)
    sampling = SamplingConfig(config.temperature, config.top_k, config.top_p, config.guidance)
    generator = torch.Generator(device).manual_seed(config.generation_seed)
    ids, captions = test["clip_id"].tolist(), test["caption"].tolist()
    out.mkdir(parents=True, exist_ok=True)
    for start in tqdm(range(0, len(ids), batch), desc=f"{name} generate", unit="batch"):
        chunk = ids[start : start + batch]
        n_frames = max(-(-lengths[c] // codec.hop_length) for c in chunk)
        text = encode_captions(encoder, captions[start : start + batch]).to(device)
        generated = model.generate(text, n_frames, sampling, generator).cpu()
        with torch.no_grad():
            decoded = (codec.decode(generated) if output == "codes" else codec.decode_latent(generated.float())).double().numpy()
        for clip_id, wave in zip(chunk, decoded):
            write_wav(out / f"{clip_id}.wav", wave[: lengths[clip_id]], codec.sample_rate, subtype="FLOAT")
    return {"n_clips": len(ids), "sample_rate": codec.sample_rate, "split": SCORED_SPLIT, "seed": config.generation_seed,
            "sampling": vars(sampling), "batch": batch, "device": device.type}
