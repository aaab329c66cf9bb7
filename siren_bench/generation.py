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
from siren_bench.io import atomic_path, link_or_copy, write_wav
from siren_bench.models.sampling import SamplingConfig
from siren_bench.models.experts import encode_captions
from siren_bench.weights import load_resume_state


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
           out: Path, batch: int, device: torch.device, resume_dir: Path | None = None,
           stop_after: int | None = None) -> dict:
    """Every caption of `test` through `model.generate` on `device` (seeded by
    model.generation_seed; sampling model.temperature / top_k / top_p / guidance, the same for
    every system), decoded by the codec on CPU from codes or from a latent (`output`), written as
    float WAV trimmed to the reference length. Returns the sampling facts systems.json records.

    With `resume_dir` (a folder named by everything the audio depends on) the clips are written
    there batch by batch, each batch followed by the sampling generator's state, and linked into
    `out` at the end: a killed run continues after its last finished batch with the generator
    where it was, so the audio is the uninterrupted run's. `stop_after` ends after that many
    batches, as a kill would (tests)."""
    model.to(device)
    sampling = SamplingConfig(config.temperature, config.top_k, config.top_p, config.guidance)
    generator = torch.Generator(device).manual_seed(config.generation_seed)
    ids, captions = test["clip_id"].tolist(), test["caption"].tolist()
    target = out if resume_dir is None else resume_dir
    target.mkdir(parents=True, exist_ok=True)
    state_file = None if resume_dir is None else resume_dir / "generator.pt"
    done = 0  # batches finished by an earlier, killed run
    if state_file is not None and state_file.is_file():
        state = load_resume_state(state_file)
        done = int(state["batches"])
        generator.set_state(state["generator"].cpu())
    starts = list(range(0, len(ids), batch))
    progress = tqdm(starts[done:], desc=f"{name} generate", unit="batch", initial=done, total=len(starts))
    for number, start in enumerate(progress, start=done + 1):
        if stop_after is not None and number > stop_after:
            return {}
        chunk = ids[start : start + batch]
        n_frames = max(-(-lengths[c] // codec.hop_length) for c in chunk)
        text = encode_captions(encoder, captions[start : start + batch]).to(device)
        generated = model.generate(text, n_frames, sampling, generator).cpu()
        with torch.no_grad():
            decoded = (codec.decode(generated) if output == "codes" else codec.decode_latent(generated.float())).double().numpy()
        for clip_id, wave in zip(chunk, decoded):
            write_wav(target / f"{clip_id}.wav", wave[: lengths[clip_id]], codec.sample_rate, subtype="FLOAT")
        if state_file is not None:
            with atomic_path(state_file) as tmp:
                torch.save({"batches": number, "generator": generator.get_state()}, tmp)
    if resume_dir is not None:
        out.mkdir(parents=True, exist_ok=True)
        for clip_id in ids:
            link_or_copy(resume_dir / f"{clip_id}.wav", out / f"{clip_id}.wav")
    return {"n_clips": len(ids), "sample_rate": codec.sample_rate, "split": SCORED_SPLIT, "seed": config.generation_seed,
            "sampling": vars(sampling), "batch": batch, "device": device.type}
