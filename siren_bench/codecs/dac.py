"""Descript Audio Codec through transformers' DacModel: pretrained (16 kHz) or small and trained.

Two ways in, one model class:
- an HF-format folder (config.json + model.safetensors), e.g. descript/dac_16khz or the small
  codec the `codec` stage trains and saves;
- the original descript-audio-codec file (weights_16khz.pth: {"state_dict", "metadata":
  {"kwargs"}}), whose keys are mapped onto DacModel's and whose weight-norm pairs are fused.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from transformers import DacConfig, DacModel

from siren_bench.codecs.base import FolderCodec
from siren_bench.weights import (
    CheckpointError, fuse_all_weight_norms, load_exact, load_torch_checkpoint, verify_sha256,
)
from siren_bench.registry import CODECS


@CODECS.register("dac")
class DacCodec(FolderCodec):
    model_class, default_name = DacModel, "dac"

    @torch.no_grad()
    def encode(self, wave: torch.Tensor) -> torch.Tensor:
        wave = self._pad_to_frames(wave)
        return self.model.encode(wave[:, None, :]).audio_codes

    def layer_features(self, codes: torch.Tensor) -> torch.Tensor:
        return rvq_layer_features(self.model.quantizer, codes)

    def decode_latent(self, latent: torch.Tensor) -> torch.Tensor:
        return self.model.decoder(latent).squeeze(1)

    # ------------------------------------------------------------------ loading

    @classmethod
    def from_original_checkpoint(cls, path: str | Path, name: str = "dac", expected_sha256: str | None = None) -> "DacCodec":
        path = Path(path)
        digest = verify_sha256(path, expected_sha256)
        checkpoint = load_torch_checkpoint(path)
        if "state_dict" not in checkpoint or "kwargs" not in checkpoint.get("metadata", {}):
            raise CheckpointError(f"{path}: not a descript-audio-codec checkpoint (expected keys 'state_dict' and 'metadata.kwargs')")
        config = dac_config_from_kwargs(checkpoint["metadata"]["kwargs"], path)
        model = DacModel(config)
        state = map_original_dac_keys(fuse_all_weight_norms(checkpoint["state_dict"], path), len(config.downsampling_ratios), path)
        load_exact(model, state, path)
        return cls(model, name, digest)


def rvq_layer_features(quantizer, codes: torch.Tensor) -> torch.Tensor:
    """[B, k, F] codes -> [B, k, D, F] through a DacResidualVectorQuantizer: each layer's code
    vector projected back to the latent space (the terms the quantized latent sums)."""
    layers = []
    for i in range(codes.shape[1]):
        layer = quantizer.quantizers[i]
        vectors = layer.codebook(codes[:, i]).transpose(1, 2)  # [B, d, F]
        layers.append(layer.out_proj(vectors))  # [B, D, F]
    return torch.stack(layers, dim=1)


def dac_config_from_kwargs(kwargs: dict, source: Path) -> DacConfig:
    try:
        encoder_rates = list(kwargs["encoder_rates"])
        if list(kwargs.get("decoder_rates", encoder_rates[::-1])) != encoder_rates[::-1]:
            raise CheckpointError(f"{source}: decoder_rates {kwargs['decoder_rates']} are not the reverse of encoder_rates {encoder_rates}; DacModel cannot represent that")
        return DacConfig(
            encoder_hidden_size=int(kwargs["encoder_dim"]),
            downsampling_ratios=encoder_rates,
            decoder_hidden_size=int(kwargs["decoder_dim"]),
            n_codebooks=int(kwargs["n_codebooks"]),
            codebook_size=int(kwargs["codebook_size"]),
            codebook_dim=int(kwargs["codebook_dim"]),
            sampling_rate=int(kwargs["sample_rate"]),
        )
    except KeyError as exc:
        raise CheckpointError(f"{source}: metadata.kwargs lacks {exc}") from exc


_RES_UNIT = ("snake1", "conv1", "snake2", "conv2")


def map_original_dac_keys(state: dict[str, torch.Tensor], n_blocks: int, source: Path) -> dict[str, torch.Tensor]:
    """Rename original descript-audio-codec keys (weight norm already fused) to DacModel's.

    Encoder: block.0 -> conv1; block.1..n -> block.0..n-1 (3 residual units, snake, strided
    conv); block.n+1 -> snake1; block.n+2 -> conv2. Decoder mirrors it under `model.` with the
    transposed conv second in each block. Quantizer names are shared.
    """
    renamed = {}
    for key, value in state.items():
        new = _map_dac_key(key, n_blocks)
        if new is None:
            raise CheckpointError(f"{source}: unexpected key {key!r} for a descript-audio-codec checkpoint")
        renamed[new] = value
    return renamed


def _map_dac_key(key: str, n: int) -> str | None:
    if key.startswith("quantizer."):
        return key
    if m := re.fullmatch(r"(encoder)\.block\.(\d+)\.(.+)|(decoder)\.model\.(\d+)\.(.+)", key):
        side, i, rest = (m[1], int(m[2]), m[3]) if m[1] else (m[4], int(m[5]), m[6])
        ends = {0: "conv1", n + 1: "snake1", n + 2: "conv2"}  # both sides: input conv, final snake, output conv
        if i in ends:
            return f"{side}.{ends[i]}.{rest}"
        return _map_dac_block(side, i - 1, rest)
    return None


def _map_dac_block(side: str, block: int, rest: str) -> str | None:
    """Inside block `block`: the encoder has 3 residual units, a snake and a strided conv; the
    decoder a snake, a transposed conv and 3 residual units."""
    if side == "encoder":
        if r := re.fullmatch(r"block\.([0-2])\.block\.([0-3])\.(.+)", rest):
            return f"encoder.block.{block}.res_unit{int(r[1]) + 1}.{_RES_UNIT[int(r[2])]}.{r[3]}"
        if r := re.fullmatch(r"block\.([34])\.(.+)", rest):
            return f"encoder.block.{block}.{'snake1' if r[1] == '3' else 'conv1'}.{r[2]}"
        return None
    if r := re.fullmatch(r"block\.([01])\.(.+)", rest):
        return f"decoder.block.{block}.{'snake1' if r[1] == '0' else 'conv_t1'}.{r[2]}"
    if r := re.fullmatch(r"block\.([2-4])\.block\.([0-3])\.(.+)", rest):
        return f"decoder.block.{block}.res_unit{int(r[1]) - 1}.{_RES_UNIT[int(r[2])]}.{r[3]}"
    return None
