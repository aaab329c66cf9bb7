"""Siren as the pipeline builds, trains and loads it: one expert's training job from the stage
folders (tokenize, codec, prepare), and the trained or aligned model from the siren /
siren_aligned folders, every tensor checked against the recorded architecture.

The stages train_siren, align_siren, train_baselines, generate and sweep all go through here, so
they build the same jobs (and find the same resume states) without importing each other.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from siren_bench.artifacts import STAGES, expert_file, load_codes
from siren_bench.codecs import Codec, load_stage_codec
from siren_bench.config import ConfigError, ModelConfig, SirenConfig, model_config
from siren_bench.data.manifest import read_manifest
from siren_bench.distributed import rank_device
from siren_bench.diagnostics.interference import interference_probe
from siren_bench.io import sha256_file, sha256_json, sha256_path
from siren_bench.models.collaborative import Siren
from siren_bench.models.siren import CaptionBank, Text
from siren_bench.models.train import TokenSet, train_expert
from siren_bench.text import TextEncoder, load_text_encoder
from siren_bench.weights import CheckpointError

SIREN_INFO_NAME = STAGES["siren"].file("info")
ALIGNED_INFO_NAME = STAGES["siren_aligned"].file("info")


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


def caption_bank(encoder: TextEncoder, captions: list[str]) -> CaptionBank:
    """A split's captions for training: each encoder batch kept at its own width (CaptionBank)."""
    parts = encoder.encode_batches(captions)
    return CaptionBank([h.float() for h, _, _ in parts], [m.bool() for _, m, _ in parts], torch.cat([p for _, _, p in parts]).float())


def token_set(frame, codes: dict[str, np.ndarray], encoder: TextEncoder) -> TokenSet:
    return TokenSet([codes[c].astype(np.int64) for c in frame["clip_id"]], caption_bank(encoder, frame["caption"].tolist()))


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
        return train_expert(index, self.siren, self.config, self.table, self.train, self.val, self.resume_dir,
                            self.data_id, device, probe=interference_probe(self.config, self.val or self.train))


def expert_jobs(stage) -> ExpertJobs:
    """The training job of every expert of the params' model, from the run's stage folders."""
    config = model_config(stage.params, stage.source)
    prepare_dir, tokenize_dir, codec_dir = stage.dir("prepare"), stage.dir("tokenize"), stage.dir("codec")
    manifest_path = prepare_dir / STAGES["prepare"].file("manifest")
    manifest = read_manifest(manifest_path)
    codec = load_stage_codec(codec_dir)
    encoder = text_encoder(config).to(rank_device(stage.device()))  # the captions below encode on the GPU
    siren = siren_config(config, codec, encoder.dim, stage.source)
    splits = {name: manifest[manifest["split"] == name] for name in ("train", "val")}
    if splits["train"].empty:
        raise ConfigError(f"{manifest_path}: no train clips to train Siren on; leave siren out of eval.systems "
                          "for a test-only dataset")
    codes = load_codes(tokenize_dir, required=[c for split in splits.values() for c in split["clip_id"]])
    data_id = sha256_json({"codes": sha256_path(tokenize_dir / STAGES["tokenize"].file("codes")), "codec": codec.info.weights_sha256,
                           "manifest": sha256_file(manifest_path), "text_encoder": encoder.weights_sha256})
    return ExpertJobs(siren, config, code_table(codec), token_set(splits["train"], codes, encoder),
                      token_set(splits["val"], codes, encoder) if not splits["val"].empty else None,
                      Path(stage.run.artifacts_dir) / stage.run.profile / "resume", data_id, encoder, codec)


def text_encoder(config: ModelConfig) -> TextEncoder:
    """The text encoder `model.text_encoder` names, from its local weights."""
    try:
        return load_text_encoder(config.text_encoder, config.text_encoder_path, config.text_encoder_sha256,
                                 config.text_max_tokens)
    except ValueError as exc:  # CheckpointError included: it names the file
        raise ConfigError(f"model.text_encoder: {exc}") from exc


def _trained_info(info_path: Path, stage: str, untrained: str) -> dict:
    """A model folder's info file, refused by name when missing or when the stage trained nothing
    (`untrained` is the message, with the recorded reason in its {})."""
    if not info_path.is_file():
        raise CheckpointError(f"{info_path}: not found (run the {stage} stage first)")
    info = json.loads(info_path.read_text())
    if not info.get("trained"):
        raise CheckpointError(f"{info_path}: " + untrained.format(info.get("reason")))
    return info


def load_stage_siren(siren_dir: str | Path) -> tuple[Siren, dict]:
    """The trained experts from the stage folder, every tensor checked against the architecture."""
    siren_dir = Path(siren_dir)
    info_path = siren_dir / SIREN_INFO_NAME
    info = _trained_info(info_path, "train_siren", "Siren was not trained ({}); re-run train_siren with siren in eval.systems")
    model = Siren(SirenConfig(**info["architecture"]))
    for index, expert in enumerate(model.experts):
        path = siren_dir / expert_file(index)
        if not path.is_file():
            raise CheckpointError(f"{path}: missing (the stage trains every expert into one folder)")
        try:
            expert.load_state_dict(load_file(path), strict=True)
        except (RuntimeError, OSError) as exc:
            raise CheckpointError(f"{path}: does not fit expert {index} of {info_path}: {exc}") from exc
    return model.eval(), info


def stage1_hashes(siren_dir: Path, n_experts: int) -> list[str]:
    """The Stage-1 experts' file hashes: alignment records them, loading checks them."""
    return [sha256_file(siren_dir / expert_file(i)) for i in range(n_experts)]


def load_stage_aligned(siren_dir: str | Path, aligned_dir: str | Path) -> tuple[Siren, dict]:
    """Stage-1 Siren with the aligned expert swapped in; refuses Stage-1 files other than the
    ones alignment started from (a retrained Siren needs a new alignment run)."""
    siren_dir, aligned_dir = Path(siren_dir), Path(aligned_dir)
    info_path = aligned_dir / ALIGNED_INFO_NAME
    aligned = _trained_info(info_path, "align_siren", "no aligned model ({})")
    model, info = load_stage_siren(siren_dir)
    if stage1_hashes(siren_dir, len(model.experts)) != aligned["stage1_expert_sha256"]:
        raise CheckpointError(f"{info_path}: aligned from other Stage-1 experts than those in {siren_dir}; re-run align_siren")
    path = aligned_dir / expert_file(aligned["expert"])
    try:
        model.experts[aligned["expert"]].load_state_dict(load_file(path), strict=True)
    except (RuntimeError, OSError) as exc:
        raise CheckpointError(f"{path}: does not fit expert {aligned['expert']}: {exc}") from exc
    return model.eval(), info | {"aligned": aligned}


def check_trained_with(where: Path, info: dict, codec: Codec, config: ModelConfig):
    """The pipeline's text encoder, after checking that the model at `where` was trained on this
    codec and this text encoder (its info records both)."""
    if info["codec"]["weights_sha256"] != codec.info.weights_sha256:
        raise ValueError(f"{where}: trained on codec {info['codec']['weights_sha256'][:16]}..., the pipeline's codec is "
                         f"{codec.info.weights_sha256[:16]}...; re-run its training stage")
    encoder = text_encoder(config)
    if encoder.weights_sha256 != info["text_encoder"]["weights_sha256"]:
        raise ValueError(f"{where}: trained with text encoder {info['text_encoder']['name']} "
                         f"({info['text_encoder']['weights_sha256'][:16]}...), model.text_encoder loads {encoder.name} "
                         f"({encoder.weights_sha256[:16]}...)")
    return encoder
