"""Stage `align_siren`: anti-causal alignment of Siren's coarse expert (models/align.py).

Starts from the `train_siren` stage's experts and tunes one of them (align.expert, default the
first, coarse one) with the group-relative clipped policy gradient of models/align.py against a
reward on fully decoded audio: the frozen downstream experts complete each sampled sequence, the
pipeline's codec decodes it, and the reward compares the result with the caption's reference
clip (train split) through the embedder of `align.audio_metric` in the reward recipe
(align.reward_recipe, by default eval.recipe), optionally plus the CLAP similarity to the caption
through `align.clap_metric`'s model. With the smoke
recipe that is the `evaluators` stage's tagger embedding (and small CLAP); docs/alignment.md
says why, and what it means for the scores.

Output (artifacts/<profile>/siren_aligned/): expert_<i>.safetensors (the tuned expert only; the
others are the Stage-1 files, checked by hash when loaded), aligned.json (settings, reward, the
Stage-1 files it started from, a summary), align_log.jsonl (reward, KL, entropy, advantage and
clipping statistics per step) and provenance.json. An interrupted run resumes from
artifacts/<profile>/resume/ to the same numbers.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from safetensors.torch import save_file

from siren_bench import replicates
from siren_bench.artifacts import STAGES, expert_file
from siren_bench.audio_input import apply_policy
from siren_bench.codecs import Codec, load_stage_codec
from siren_bench.config import AlignConfig, ConfigError, align_config, eval_config, model_config
from siren_bench.data.decode import read_clip
from siren_bench.data.manifest import MANIFEST_NAME, audio_sources, read_manifest
from siren_bench.evaluation.embedding import EmbedderLoader
from siren_bench.io import atomic_directory, sha256_file, sha256_json, write_json_atomic, write_text_atomic
from siren_bench.models.align import Aligner, AudioReward, LazyRows
from siren_bench.models.collaborative import Siren
from siren_bench.models.experts import encode_captions, load_stage_siren, stage1_hashes, text_encoder
from siren_bench.provenance import build_record, write_provenance
from siren_bench.recipes import MetricSpec, get_recipe, needs_smoke_evaluators
from siren_bench.stage_context import open_stage

ALIGNED_INFO_NAME = STAGES["siren_aligned"].file("info")
LOG_NAME = STAGES["siren_aligned"].file("log")
REFERENCE_SPLIT = "train"  # the captions the policy practises on, and the clips its reward compares with


def clip_embedder(spec: MetricSpec, loader: EmbedderLoader, sample_rate: int):
    """waves [N, T] at `sample_rate` -> [N, D]: the recipe's audio policy, then the mean of the
    embedder's frames (a clip vector, whatever the embedder's framing)."""
    embedder = loader.open(spec)

    def embed(waves: torch.Tensor) -> torch.Tensor:
        inputs = [apply_policy(w, sample_rate, spec.audio, f"rollout {i}") for i, w in enumerate(waves.double().numpy())]
        return torch.from_numpy(np.stack([e.frames.mean(0) for e in embedder.embed(inputs)]))

    return embed, embedder


def build_reward(config: AlignConfig, recipe_name: str, loader: EmbedderLoader, codec: Codec,
                 reference: Callable[[int], np.ndarray], captions: list[str]) -> tuple[AudioReward, dict]:
    """The reward on decoded codes, reference clip i (`reference(i)`, the wave of caption i) and
    caption i embedded when a rollout first needs them (LazyRows); and a description of it
    (embedders, checkpoints, weights hashes) for aligned.json."""
    try:
        recipe = get_recipe(recipe_name)
    except KeyError as exc:
        raise ConfigError(f"align.reward_recipe: {exc.args[0]}") from exc
    described = {"recipe": recipe.id, "audio_weight": config.audio_weight, "clap_weight": config.clap_weight}
    fields: dict = {"audio_weight": config.audio_weight, "clap_weight": config.clap_weight}
    with torch.no_grad():
        if config.audio_weight:
            spec = _spec(recipe, config.audio_metric, "align.audio_metric")
            embed, embedder = clip_embedder(spec, loader, codec.sample_rate)
            fields |= {"embed_audio": embed,
                       "reference_embeddings": LazyRows(lambda i, embed=embed: embed(torch.from_numpy(reference(i))[None])[0],
                                                        len(captions))}
            described["audio"] = {"metric": config.audio_metric, "embedder": embedder.info.name,
                                  "checkpoint": spec.checkpoint, "weights_sha256": embedder.info.weights_sha256}
        else:
            fields |= {"embed_audio": None, "reference_embeddings": None}
        if config.clap_weight:
            spec = _spec(recipe, config.clap_metric, "align.clap_metric")
            embed, embedder = clip_embedder(spec, loader, codec.sample_rate)
            if not hasattr(embedder, "embed_text"):
                raise ConfigError(f"align.clap_metric={config.clap_metric}: embedder {embedder.info.name} has no text tower")
            fields |= {"embed_clap_audio": embed, "caption_embeddings": LazyRows(
                lambda i, embedder=embedder: torch.from_numpy(np.asarray(embedder.embed_text([captions[i]]), dtype=np.float64))[0],
                len(captions))}
            described["clap"] = {"metric": config.clap_metric, "embedder": embedder.info.name,
                                 "checkpoint": spec.checkpoint, "weights_sha256": embedder.info.weights_sha256}

    def decode(codes: torch.Tensor) -> torch.Tensor:  # where the codec is (the stage's device), to float64 on the host
        return torch.from_numpy(codec.decode_numpy(codes))

    return AudioReward(decode, **fields), described


def _spec(recipe, metric: str, key: str) -> MetricSpec:
    try:
        return recipe.spec(metric)
    except KeyError as exc:
        raise ConfigError(f"{key}: {exc.args[0]}") from exc


def reference_clips(frame, n_samples: int, sample_rate: int, source: str) -> Callable[[int], np.ndarray]:
    """Clip i's first `n_samples` (the rollout's length), mono, zero-padded if shorter, read when
    asked for; every clip's rate is checked against the codec's at once, from the manifest."""
    sources = list(audio_sources(frame))
    for (path, _), rate in zip(sources, frame["sample_rate"]):
        if int(rate) != sample_rate:
            raise ValueError(f"{source}: {path} is {rate} Hz but the codec runs at {sample_rate} Hz")

    def clip(i: int) -> np.ndarray:
        wave = read_clip(*sources[i])[0].mean(axis=0)[:n_samples]
        return np.pad(wave, (0, n_samples - len(wave)))

    return clip


def run(params_path: str | Path = "params.yaml") -> Path:
    stage = open_stage(params_path)
    run_cfg, evaluation, config = stage.run, eval_config(stage.params, stage.source), align_config(stage.params, stage.source)
    out_dir = stage.dir("siren_aligned")
    if "siren_aligned" not in evaluation.systems:
        with atomic_directory(out_dir) as staging:
            write_json_atomic(staging / ALIGNED_INFO_NAME, {"trained": False, "reason": "eval.systems does not list siren_aligned"})
            write_provenance(staging, build_record("align_siren", {"run": run_cfg, "align": config}, device="cpu"))
        return out_dir

    prepare_dir, siren_dir, codec_dir = stage.dir("prepare"), stage.dir("siren"), stage.dir("codec")
    model_cfg = model_config(stage.params, stage.source)
    siren, info = load_stage_siren(siren_dir)
    if not 0 <= config.expert < len(siren.experts):
        raise ConfigError(f"{stage.source}: align.expert={config.expert} but Siren has experts 0..{len(siren.experts) - 1}")
    codec = load_stage_codec(codec_dir).to(stage.device())  # the reward decodes every rollout
    manifest = read_manifest(prepare_dir / MANIFEST_NAME)
    train = manifest[manifest["split"] == REFERENCE_SPLIT]
    if len(train) < 1:
        raise ConfigError(f"{prepare_dir / MANIFEST_NAME}: no {REFERENCE_SPLIT} clips to align on")
    captions = train["caption"].tolist()
    encoder = text_encoder(model_cfg).to(stage.device())
    if encoder.weights_sha256 != info["text_encoder"]["weights_sha256"]:
        raise ConfigError(f"{siren_dir}: Siren was trained with another text encoder than model.text_encoder loads")
    recipe = config.reward_recipe or evaluation.recipe
    weights_dir = stage.dir("evaluators") if needs_smoke_evaluators(recipe) else evaluation.weights_dir
    loader = EmbedderLoader(weights_dir, evaluation.weights_sha256)  # the reward embeds on the CPU
    references = reference_clips(train, config.n_frames * codec.hop_length, codec.sample_rate, str(prepare_dir / MANIFEST_NAME))
    reward, reward_info = build_reward(config, recipe, loader, codec, references, captions)
    state_dir = Path(run_cfg.artifacts_dir) / run_cfg.profile / "resume"

    device, seeds = stage.device(), evaluation.seeds
    text = encode_captions(encoder, captions)
    with atomic_directory(out_dir) as staging:
        finished = [_align_replicate(replicates.align_config(config, k), replicates.folder(siren_dir, k), reward, reward_info,
                                     text, len(captions), device, prepare_dir / MANIFEST_NAME, state_dir,
                                     replicates.folder(staging, k), siren if k == 0 else None) for k in range(seeds)]
        write_provenance(staging, build_record(
            "align_siren", {"run": run_cfg, "align": config, "eval": evaluation},
            inputs={"siren": siren_dir, "codec": codec_dir / "model", "manifest": prepare_dir / MANIFEST_NAME,
                    "reward_weights": Path(weights_dir) if weights_dir else None},
            seeds={"align.seed": config.seed,
                   **{f"replicate {k} align.seed": config.seed + k * replicates.SEED_STRIDE for k in range(1, seeds)}},
            device=device.type))
    for state_file in finished:
        state_file.unlink(missing_ok=True)
    return out_dir


def _align_replicate(config: AlignConfig, siren_dir: Path, reward: AudioReward, reward_info: dict, text, n_captions: int,
                     device: torch.device, manifest: Path, state_dir: Path, folder: Path, siren: Siren | None = None) -> Path:
    """Align one seed replicate's Siren (in `siren_dir`; `siren` when already loaded from there)
    into `folder`; returns its resume file."""
    siren = siren if siren is not None else load_stage_siren(siren_dir)[0]
    started_from = stage1_hashes(siren_dir, len(siren.experts))
    key = sha256_json({"align": asdict(config), "stage1": started_from, "reward": reward_info,
                       "manifest": sha256_file(manifest), "device": device.type})[:16]
    state_file = state_dir / f"align_expert{config.expert}_{key}.pt"
    aligner = Aligner(siren, config, reward, device)
    start = time.perf_counter()
    log = aligner.train(text, state_file)
    seconds = time.perf_counter() - start
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in aligner.policy.state_dict().items()}, folder / expert_file(config.expert))
    write_text_atomic(folder / LOG_NAME, "".join(json.dumps(row) + "\n" for row in log))
    window = max(1, min(10, len(log) // 4))
    summary = {"first_reward_mean": float(np.mean([r["reward_mean"] for r in log[:window]])),
               "last_reward_mean": float(np.mean([r["reward_mean"] for r in log[-window:]])),
               "last_kl": float(np.mean([r["kl"] for r in log[-window:]])), "window_steps": window,
               "rollouts": len(log) * config.captions_per_step * config.group_size}
    write_json_atomic(folder / ALIGNED_INFO_NAME, {
        "trained": True, "expert": config.expert, "codebooks": siren.experts[config.expert].group,
        "settings": asdict(config), "reward": reward_info, "stage1_expert_sha256": started_from,
        "n_captions": n_captions, "summary": summary, "seconds": round(seconds, 1), "device": device.type})
    return state_file
