"""Rendering audio from the pipeline's models: the test clips' own codes decoded (codec
resynthesis), and any model's `generate` driven caption batch by caption batch, seeded, decoded
by the codec and written as float WAV. Used by the generate stage and the depth sweep."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from siren_bench.artifacts import SCORED_SPLIT
from siren_bench.codecs import Codec
from siren_bench.config import ModelConfig
from siren_bench.distributed import barrier, rank_and_world
from siren_bench.io import link_or_copy, write_text_atomic, write_wav
from siren_bench.models.sampling import SamplingConfig
from siren_bench.models.experts import encode_captions


def codec_resynthesis(codec: Codec, ids: list[str], codes: dict[str, np.ndarray], lengths: dict[str, int], out: Path,
                      batch: int) -> None:
    """Decode every clip's full code stack (where the codec is) and write it as float WAV, named by clip id."""
    out.mkdir(parents=True)
    for start in tqdm(range(0, len(ids), batch), desc="codec resynthesis", unit="batch"):
        chunk = ids[start : start + batch]
        decoded = codec.decode_numpy(torch.from_numpy(np.stack([codes[c] for c in chunk])))
        for clip_id, wave in zip(chunk, decoded):
            write_wav(out / f"{clip_id}.wav", wave[: lengths[clip_id]], codec.sample_rate, subtype="FLOAT")


def batch_seed(seed: int, batch: int) -> int:
    """The seed of batch `batch` of a render (its clips in sorted-id order, `batch` at a time):
    drawn from NumPy's SeedSequence of (seed, batch), so batches are independent streams and any
    batch can be rendered alone (by a resumed run, or by another rank) to the same codes."""
    return int(np.random.SeedSequence([seed, batch]).generate_state(1)[0])


def render(model, output: str, name: str, codec: Codec, encoder, test, lengths: dict[str, int], config: ModelConfig,
           out: Path | None, batch: int, device: torch.device, resume_dir: Path | None = None,
           stop_after: int | None = None) -> dict:
    """Every caption of `test` through `model.generate` on `device` (sampling model.temperature /
    top_k / top_p / guidance, the same for every system), decoded by the codec, also on `device`,
    from codes or from a latent (`output`), written as float WAV trimmed to the reference length. Returns
    the sampling facts systems.json records.

    Batch b draws from its own generator (`batch_seed(model.generation_seed, b)`), so the audio
    of a batch depends on the seed, the batch size and the batch's clips, never on which process
    rendered it or what ran before. With `resume_dir` (a folder named by everything the audio
    depends on) each finished batch leaves its clips and a mark there: a killed run renders only
    the batches without a mark, and under torchrun rank r renders batches r, r + world, ...; the
    clips are linked into `out` once every batch is there. `out=None` renders this rank's batches
    and stops (the `siren-bench generate-shard` job; the generate stage assembles them).
    `stop_after` ends after that many batches, as a kill would (tests)."""
    model.to(device)
    codec.to(device)
    sampling = SamplingConfig(config.temperature, config.top_k, config.top_p, config.guidance)
    ids, captions = test["clip_id"].tolist(), test["caption"].tolist()
    if resume_dir is None and (out is None or rank_and_world()[1] > 1):
        raise ValueError(f"{name}: rendering without an output folder, or over several ranks, needs a resume folder")
    target = out if resume_dir is None else resume_dir
    target.mkdir(parents=True, exist_ok=True)
    rank, world = rank_and_world()
    starts = list(range(0, len(ids), batch))
    mine = [b for b in range(len(starts)) if b % world == rank]
    todo = [b for b in mine if resume_dir is None or not _batch_mark(resume_dir, b).is_file()]
    progress = tqdm(todo, desc=f"{name} generate", unit="batch", initial=len(mine) - len(todo), total=len(mine),
                    disable=rank > 0)
    for count, number in enumerate(progress, start=1):
        if stop_after is not None and count > stop_after:
            return {}
        start = starts[number]
        chunk = ids[start : start + batch]
        n_frames = max(-(-lengths[c] // codec.hop_length) for c in chunk)
        text = encode_captions(encoder, captions[start : start + batch]).to(device)
        generator = torch.Generator(device).manual_seed(batch_seed(config.generation_seed, number))
        decoded = codec.decode_numpy(model.generate(text, n_frames, sampling, generator), latent=output != "codes")
        for clip_id, wave in zip(chunk, decoded):
            write_wav(target / f"{clip_id}.wav", wave[: lengths[clip_id]], codec.sample_rate, subtype="FLOAT")
        if resume_dir is not None:
            write_text_atomic(_batch_mark(resume_dir, number), json.dumps(chunk))
    barrier()
    if out is None:
        return {}
    if resume_dir is not None:
        missing = [b for b in range(len(starts)) if not _batch_mark(resume_dir, b).is_file()]
        if missing:
            raise RuntimeError(f"{resume_dir}: batches {missing[:5]} of {name} were not rendered (a shard job that did not finish?)")
        out.mkdir(parents=True, exist_ok=True)
        for clip_id in ids:
            link_or_copy(resume_dir / f"{clip_id}.wav", out / f"{clip_id}.wav")
    return {"n_clips": len(ids), "sample_rate": codec.sample_rate, "split": SCORED_SPLIT, "seed": config.generation_seed,
            "seeding": "per batch: batch b of the sorted clips samples from batch_seed(seed, b)",
            "sampling": vars(sampling), "batch": batch, "device": device.type}


def _batch_mark(resume_dir: Path, number: int) -> Path:
    return resume_dir / f"batch-{number:06d}.done"
