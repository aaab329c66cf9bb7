"""Stage `train_siren`: Siren Stage 1, one expert after another on this device.

Each expert trains as its own job (seed + expert index) on the train split's codes and captions,
with the val split's loss logged. Text conditioning: the encoder `model.text_encoder` names
(token states, mask, pooled vector): the offline MiniLM in the smoke profile, CLAP's text tower
(the official choice) or T5 from local weights. Codes are embedded through the codec's own
per-codebook decode vectors (frozen) and a trainable projector.

Experts share nothing. This stage runs them in sequence on one device; `siren-bench
train-expert --index I` runs one outside DVC (one job per GPU, or data-parallel under torchrun)
and leaves its finished state in artifacts/<profile>/resume/, which the stage then assembles
instead of training that expert again. Output (artifacts/<profile>/siren/): siren.json (the
architecture, groups, codec and text encoder identities, per-expert losses),
expert_<i>.safetensors, train_log.jsonl, provenance.json.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from siren_bench.codecs import Codec, load_stage_codec
from siren_bench.config import ConfigError, ModelConfig, eval_config, model_config
from siren_bench.data.manifest import MANIFEST_NAME, read_manifest
from siren_bench.io import atomic_directory, sha256_file, sha256_json, write_json_atomic, write_text_atomic
from siren_bench.models.collaborative import Siren
from siren_bench.models.siren import SirenConfig, Text
from siren_bench.models.train import TokenSet, clear_resume_state, resume_file, train_expert
from siren_bench.provenance import build_record, write_provenance
from siren_bench.stages.common import open_stage
from siren_bench.stages.tokenize import load_codes
from siren_bench.text import TextEncoder, load_text_encoder
from siren_bench.weights import CheckpointError

SIREN_INFO_NAME = "siren.json"


def code_table(codec: Codec) -> torch.Tensor:
    """[K, V, D]: every codebook entry's decode vector (what `layer_features` gives it)."""
    entries = torch.arange(codec.info.codebook_size).expand(1, codec.n_codebooks, -1)
    with torch.no_grad():
        return codec.layer_features(entries)[0].transpose(1, 2).contiguous().float()


def siren_config(config: ModelConfig, codec: Codec, text_dim: int, source: str) -> SirenConfig:
    """The architecture, with the codec's shape filled in where the config leaves it null."""
    from_codec = {"n_codebooks": codec.n_codebooks, "codebook_size": codec.info.codebook_size,
                  "code_dim": codec.info.latent_dim, "text_dim": text_dim}
    fields = {k: getattr(config, k) for k in SirenConfig.__dataclass_fields__ if hasattr(config, k)}
    for key, actual in from_codec.items():
        if fields[key] is None:
            fields[key] = actual
        elif fields[key] != actual:
            raise ConfigError(f"{source}: model.{key}={fields[key]} but the pipeline's codec / text encoder has {actual}")
    siren = SirenConfig(**fields)
    try:
        siren.expert_groups()
    except ValueError as exc:
        raise ConfigError(f"{source}: {exc}") from exc
    return siren


def encode_captions(encoder: TextEncoder, captions: list[str]) -> Text:
    embedded = encoder.encode(captions)
    return Text(embedded.tokens.float(), embedded.mask.bool(), embedded.pooled.float())


def token_set(frame, codes: dict[str, np.ndarray], encoder: TextEncoder) -> TokenSet:
    return TokenSet([codes[c].astype(np.int64) for c in frame["clip_id"]], encode_captions(encoder, frame["caption"].tolist()))


@dataclass
class ExpertJobs:
    """Everything an expert's training job reads, built the same way by the stage and by
    `siren-bench train-expert`, so both find the same resume state (its key holds data_id)."""

    siren: SirenConfig
    config: ModelConfig
    table: torch.Tensor
    train: TokenSet
    val: TokenSet | None
    resume_dir: Path
    data_id: str
    encoder: TextEncoder
    codec: Codec

    def train_expert(self, index: int, device: torch.device):
        """Train (or resume) expert `index`, logging its codebooks' gradient interference."""
        from siren_bench.diagnostics.interference import interference_probe

        return train_expert(index, self.siren, self.config, self.table, self.train, self.val, self.resume_dir,
                            self.data_id, device, probe=interference_probe(self.config, self.val or self.train))


def expert_jobs(stage) -> ExpertJobs:
    config = model_config(stage.params, stage.source)
    prepare_dir, tokenize_dir, codec_dir = stage.dir("prepare"), stage.dir("tokenize"), stage.dir("codec")
    manifest = read_manifest(prepare_dir / MANIFEST_NAME)
    codec = load_stage_codec(codec_dir)
    encoder = text_encoder(config)
    siren = siren_config(config, codec, encoder.dim, stage.source)
    splits = {name: manifest[manifest["split"] == name] for name in ("train", "val")}
    if splits["train"].empty:
        raise ConfigError(f"{prepare_dir / MANIFEST_NAME}: no train clips to train Siren on; leave siren out of eval.systems "
                          "for a test-only dataset")
    codes = load_codes(tokenize_dir, required=[c for split in splits.values() for c in split["clip_id"]])
    data_id = sha256_json({"codes": sha256_file(tokenize_dir / "codes.npz"), "codec": codec.info.weights_sha256,
                           "manifest": sha256_file(prepare_dir / MANIFEST_NAME), "text_encoder": encoder.weights_sha256})
    return ExpertJobs(siren, config, code_table(codec), token_set(splits["train"], codes, encoder),
                      token_set(splits["val"], codes, encoder) if not splits["val"].empty else None,
                      Path(stage.run.artifacts_dir) / stage.run.profile / "resume", data_id, encoder, codec)


def train_one_expert(params_path: str | Path, index: int) -> Path:
    """`siren-bench train-expert --index I`: train expert I to the end outside DVC (one job per
    GPU, in parallel), leaving its finished state where the `train_siren` stage picks it up
    instead of training it again. Under torchrun (WORLD_SIZE > 1) the ranks train this one
    expert data-parallel: NCCL on CUDA (rank r on cuda:LOCAL_RANK), gloo on CPU."""
    import os

    import torch.distributed as dist

    stage = open_stage(params_path)
    if "siren" not in eval_config(stage.params, stage.source).systems:
        raise ConfigError(f"{stage.source}: eval.systems does not list siren; there is nothing to train")
    jobs = expert_jobs(stage)
    if not 0 <= index < len(jobs.siren.expert_groups()):
        raise ConfigError(f"--index {index}: the model has experts 0..{len(jobs.siren.expert_groups()) - 1}")
    device = stage.device()
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        jobs.train_expert(index, device)
    finally:
        if world > 1:
            dist.destroy_process_group()
    return resume_file(jobs.resume_dir, jobs.config, jobs.siren, index, jobs.data_id)


def run(params_path: str | Path = "params.yaml") -> Path:
    stage = open_stage(params_path)
    run_cfg, config = stage.run, model_config(stage.params, stage.source)
    out_dir = stage.dir("siren")
    if "siren" not in eval_config(stage.params, stage.source).systems:
        return _not_trained(stage, config, out_dir, "eval.systems does not list siren")
    prepare_dir, tokenize_dir, codec_dir = stage.dir("prepare"), stage.dir("tokenize"), stage.dir("codec")
    jobs = expert_jobs(stage)
    siren, train, val, encoder, codec = jobs.siren, jobs.train, jobs.val, jobs.encoder, jobs.codec
    device = stage.device()

    finished = []
    with atomic_directory(out_dir) as staging:
        logs, summaries = [], []
        for index in range(len(siren.expert_groups())):
            result = jobs.train_expert(index, device)
            save_file({k: v.detach().cpu().contiguous() for k, v in result.expert.state_dict().items()},
                      staging / f"expert_{index}.safetensors")
            logs += [{"expert": index, **row} for row in result.log]
            vals = [r["val_loss"] for r in result.log if "val_loss" in r]
            summaries.append({"expert": index, "codebooks": siren.expert_groups()[index], "steps": len(result.log),
                              "final_train_loss": result.log[-1]["loss"], "final_val_loss": vals[-1] if vals else None,
                              "resumed_from_step": result.resumed_from,
                              "parameters": sum(p.numel() for p in result.expert.parameters())})
            finished.append(resume_file(jobs.resume_dir, config, siren, index, jobs.data_id))
        write_text_atomic(staging / "train_log.jsonl", "".join(json.dumps(row) + "\n" for row in logs))
        info = {"trained": True, "architecture": asdict(siren), "experts": summaries, "codec": codec.info.as_dict(),
                "text_encoder": {"kind": config.text_encoder, **encoder.identity()},
                "n_train_clips": len(train.codes), "n_val_clips": len(val.codes) if val else 0, "device": device.type}
        write_json_atomic(staging / SIREN_INFO_NAME, info)
        record = build_record("train_siren", {"run": run_cfg, "model": config},
                              inputs={"codes": tokenize_dir / "codes.npz", "manifest": prepare_dir / MANIFEST_NAME,
                                      "codec": codec_dir / "model"},
                              seeds={"model.seed (expert i uses seed + i)": config.seed}, device=device.type)
        write_provenance(staging, record)
    for path in finished:
        clear_resume_state(path)
    return out_dir


def _not_trained(stage, config: ModelConfig, out_dir: Path, reason: str) -> Path:
    """A stage folder saying why nothing was trained, so later stages and the report can say so."""
    with atomic_directory(out_dir) as staging:
        write_json_atomic(staging / SIREN_INFO_NAME, {"trained": False, "reason": reason})
        write_provenance(staging, build_record("train_siren", {"run": stage.run, "model": config}, device="cpu"))
    return out_dir


def text_encoder(config: ModelConfig) -> TextEncoder:
    try:
        return load_text_encoder(config.text_encoder, config.text_encoder_path, config.text_encoder_sha256,
                                 config.text_max_tokens)
    except ValueError as exc:  # CheckpointError included: it names the file
        raise ConfigError(f"model.text_encoder: {exc}") from exc


def load_stage_siren(siren_dir: str | Path) -> tuple[Siren, dict]:
    """The trained experts from the stage folder, every tensor checked against the architecture."""
    siren_dir = Path(siren_dir)
    info_path = siren_dir / SIREN_INFO_NAME
    if not info_path.is_file():
        raise CheckpointError(f"{info_path}: not found (run the train_siren stage first)")
    info = json.loads(info_path.read_text())
    if not info.get("trained"):
        raise CheckpointError(f"{info_path}: Siren was not trained ({info.get('reason')}); re-run train_siren with siren in eval.systems")
    model = Siren(SirenConfig(**info["architecture"]))
    for index, expert in enumerate(model.experts):
        path = siren_dir / f"expert_{index}.safetensors"
        if not path.is_file():
            raise CheckpointError(f"{path}: missing (the stage trains every expert into one folder)")
        try:
            expert.load_state_dict(load_file(path), strict=True)
        except (RuntimeError, OSError) as exc:
            raise CheckpointError(f"{path}: does not fit expert {index} of {info_path}: {exc}") from exc
    return model.eval(), info
