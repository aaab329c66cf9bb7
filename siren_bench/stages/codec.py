"""Stage `codec`: the tokenizer every later stage uses, as an HF-format folder.

source=train: train (or, for the mel-RVQ codec, fit) the small codec (`codec.architecture`) on the
training split, then measure it on the validation split against a trivial baseline (the same
architecture untrained), so the report shows what training bought, and count how the codes use
each codebook (perplexity, dead entries). Pretrained sources: load the
user's local weights (verified by hash), and save them in the same folder format.

With eval.seeds = n > 1 a trained codec is also fitted n - 1 more times, codec.seed shifted by
k * 1000 (replicates.py), into replicates/seed<k>/ (model/, codec.json, train_log.jsonl): the
diagnose stage measures the RVQ claims on each, so its verdicts rest on more than one k-means
seed. Every later stage tokenizes with replicate 0, the codec as configured.

Output (artifacts/<profile>/codec/): model/ (config.json + model.safetensors), codec.json
(backend, shape, weights identity), train_log.jsonl, evaluation.json, provenance.json. Resume
state for interrupted training lives in artifacts/<profile>/resume/, outside the DVC output.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from siren_bench import replicates
from siren_bench.codecs import CODEC_INFO_NAME, load_pretrained, wrap_trained
from siren_bench.codecs.base import Codec, codebook_usage
from siren_bench.codecs.train import clear_resume_state, train_small_codec, untrained_baseline
from siren_bench.config import CodecConfig, codec_config, data_config, eval_config
from siren_bench.data.manifest import MANIFEST_NAME, load_waves, read_manifest
from siren_bench.diagnostics.fidelity import METRICS, reconstruction_metrics, summarize
from siren_bench.io import atomic_directory, write_json_atomic, write_text_atomic
from siren_bench.provenance import build_record, write_provenance
from siren_bench.stage_context import open_stage

EVAL_SPLIT = "val"


def reconstruct(codec: Codec, waves: np.ndarray, batch: int = 16, shift: int = 0) -> list[np.ndarray]:
    """Encode and decode each clip; with shift=s, clip i is decoded from clip i+s's codes (the
    shuffled-codes control: if that scores like the clip's own codes, the decoder ignores them)."""
    codes = torch.roll(codec.encode_waves(waves, batch), shifts=-shift, dims=0)
    return [y for i in range(0, len(codes), batch) for y in codec.decode_numpy(codes[i : i + batch])]


def evaluate(codec: Codec, waves: np.ndarray, clip_ids: list[str], shift: int = 0) -> dict:
    rows = [
        {"clip_id": cid, **reconstruction_metrics(ref, est, codec.sample_rate)}
        for cid, ref, est in zip(clip_ids, waves, reconstruct(codec, waves, shift=shift))
    ]
    return {"per_clip": rows, "summary": {m: summarize(np.array([r[m] for r in rows])) for m in METRICS}}


def codes_matter(own: dict, shuffled: dict) -> dict:
    """Paired comparison, per clip, of own-codes vs shuffled-codes mel distance."""
    diff = np.array([s["mel_distance"] - o["mel_distance"] for o, s in zip(own["per_clip"], shuffled["per_clip"])])
    summary = summarize(diff)
    return {"mel_distance_gain": summary, "decoder_uses_codes": bool(summary["ci95_low"] > 0)}


def run(params_path: str | Path = "params.yaml") -> Path:
    stage = open_stage(params_path)
    run_cfg, data_cfg, config = stage.run, data_config(stage.params, stage.source), codec_config(stage.params, stage.source)
    seeds = eval_config(stage.params, stage.source).seeds if config.source == "train" else 1  # pretrained: one set of weights
    prepare_dir = stage.dir("prepare")
    manifest = read_manifest(prepare_dir / MANIFEST_NAME)
    out_dir = stage.dir("codec")
    resume_dir = Path(run_cfg.artifacts_dir) / run_cfg.profile / "resume"
    replicate_configs = [replace(config, seed=config.seed + k * replicates.SEED_STRIDE) for k in range(1, seeds)]
    with atomic_directory(out_dir) as staging:
        if config.source == "train":
            backend = config.architecture
            train_waves, held_out = _splits(manifest, data_cfg.sample_rate)
            codec, extra = _train(config, train_waves, held_out, data_cfg.sample_rate, resume_dir, staging)
            for k, replicate in enumerate(replicate_configs, start=1):
                folder = replicates.folder(staging, k)
                _save(wrap_trained(backend, _fit(replicate, train_waves, data_cfg.sample_rate, resume_dir, folder).model,
                                   config.name, weights_sha256="unsaved"), backend, config.name, folder)
        else:
            backend, codec = load_pretrained(config)
            extra = {"source_file": str(config.path), "source_sha256": codec.info.weights_sha256}
        _save(codec, backend, config.name, staging)
        record = build_record("codec", {"run": run_cfg, "codec": config, "seeds": seeds}, inputs={"prepare": prepare_dir / MANIFEST_NAME},
                              seeds={"codec.seed": config.seed, **{f"replicate {k} codec.seed": c.seed for k, c in enumerate(replicate_configs, start=1)}},
                              device=run_cfg.device, extra=extra)
        write_provenance(staging, record)
    if config.source == "train":
        for c in [config, *replicate_configs]:
            clear_resume_state(resume_dir, c)
    return out_dir


def _save(codec: Codec, backend: str, name: str, folder: Path) -> None:
    """The codec as an HF-format folder (model/) and its identity (codec.json), read back from the saved files."""
    codec.model.save_pretrained(folder / "model", safe_serialization=True)
    saved = type(codec).from_hf_folder(folder / "model", name=name)
    write_json_atomic(folder / CODEC_INFO_NAME, saved.info.as_dict() | {"backend": backend})


def _splits(manifest, sample_rate: int):
    """The train split's waves, and the held-out split's rows the codec is measured on."""
    train = manifest[manifest["split"] == "train"]
    held_out = manifest[manifest["split"] == EVAL_SPLIT]
    if train.empty or held_out.empty:
        raise ValueError(f"the codec needs clips in the train and {EVAL_SPLIT} splits; the manifest has {manifest['split'].value_counts().to_dict()}")
    return load_waves(train, sample_rate), held_out


def _fit(config: CodecConfig, train_waves: np.ndarray, sample_rate: int, resume_dir: Path, folder: Path):
    """Train (or fit) the codec on the train split's waves; its log goes to folder/train_log.jsonl."""
    result = train_small_codec(config, train_waves, sample_rate, resume_dir)
    folder.mkdir(parents=True, exist_ok=True)
    write_text_atomic(folder / "train_log.jsonl", "".join(json.dumps(row) + "\n" for row in result.log))
    return result


def _train(config: CodecConfig, train_waves: np.ndarray, held_out, sample_rate: int, resume_dir: Path, staging: Path) -> tuple[Codec, dict]:
    """Replicate 0: fitted, then measured against its untrained baseline and the shuffled-codes control."""
    result = _fit(config, train_waves, sample_rate, resume_dir, staging)
    codec = wrap_trained(config.architecture, result.model, config.name, weights_sha256="unsaved")
    untrained = wrap_trained(config.architecture, untrained_baseline(config, train_waves, sample_rate), "untrained", weights_sha256="untrained")
    waves, ids = load_waves(held_out, sample_rate), held_out["clip_id"].tolist()
    trained, shuffled = evaluate(codec, waves, ids), evaluate(codec, waves, ids, shift=1)
    evaluation = {"split": EVAL_SPLIT, "n_clips": len(ids), "trained": trained, "untrained_baseline": evaluate(untrained, waves, ids),
                  "shuffled_codes_control": shuffled, "codes_matter": codes_matter(trained, shuffled),
                  "codebook_usage": codebook_usage(codec.encode_waves(waves), codec.info.codebook_size)}
    write_json_atomic(staging / "evaluation.json", evaluation)
    size = {"fitted_codebooks": len(result.log)} if config.architecture == "mel" else {"train_steps": len(result.log)}
    return codec, size | {"resumed_from_step": result.resumed_from}
