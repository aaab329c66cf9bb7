"""EnCodec 24 kHz through transformers' EncodecModel, from an HF folder or the original file.

The original file (encodec_24khz-d7cc33bc.th) is a flat state dict with no config; its name
carries the first 8 hex digits of its SHA-256, which is checked (a user can pin the full hash). The 24 kHz configuration is
EncodecConfig's default (32 codebooks x 1024, 75 frames/s, causal, weight norm). All 32
codebooks are used (bandwidth 24 kbps): transformers' encode() defaults to the lowest
bandwidth (2 codebooks), which would silently truncate.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from transformers import EncodecConfig, EncodecModel

from siren_bench.codecs.base import CodecInfo, FolderCodec
from siren_bench.weights import CheckpointError, load_exact, load_torch_checkpoint, verify_sha256
from siren_bench.registry import CODECS

ENCODEC_24KHZ_SHA256_PREFIX = "d7cc33bc"


@CODECS.register("encodec")
class EncodecCodec(FolderCodec):
    model_class, default_name = EncodecModel, "encodec"

    def __init__(self, model: EncodecModel, name: str, weights_sha256: str):
        self.model = model.eval()
        cfg = model.config
        self.bandwidth = max(cfg.target_bandwidths)
        self.info = CodecInfo(
            name=name,
            sample_rate=cfg.sampling_rate,
            frame_rate=float(cfg.frame_rate),
            n_codebooks=int(self.model.quantizer.get_num_quantizers_for_bandwidth(self.bandwidth)),
            codebook_size=cfg.codebook_size,
            latent_dim=cfg.hidden_size,
            weights_sha256=weights_sha256,
        )
        if cfg.normalize:
            raise CheckpointError(f"{name}: EnCodec models with normalize=True (48 kHz) need per-chunk scales; only the 24 kHz model is supported")

    @torch.no_grad()
    def encode(self, wave: torch.Tensor) -> torch.Tensor:
        wave = self._pad_to_frames(wave)
        latent = self.model.encoder(wave[:, None, :])
        return self.model.quantizer.encode(latent, bandwidth=self.bandwidth).transpose(0, 1)  # [B, K, F]

    def layer_features(self, codes: torch.Tensor) -> torch.Tensor:
        return torch.stack([self.model.quantizer.layers[i].decode(codes[:, i]) for i in range(codes.shape[1])], dim=1)

    def decode_latent(self, latent: torch.Tensor) -> torch.Tensor:
        return self.model.decoder(latent).squeeze(1)

    @classmethod
    def from_original_checkpoint(cls, path: str | Path, name: str = "encodec", expected_sha256: str | None = None,
                                 published_prefix: str | None = ENCODEC_24KHZ_SHA256_PREFIX) -> "EncodecCodec":
        """`published_prefix`: the 8 hex digits in the released file's name (a 32-bit check that
        it is that file, not a security pin: pin the full hash with `expected_sha256`)."""
        path = Path(path)
        digest = verify_sha256(path, expected_sha256)
        if published_prefix and not digest.startswith(published_prefix):
            raise CheckpointError(f"{path}: SHA-256 {digest} does not start with {published_prefix}, the digest prefix in the "
                                  f"published file's name (encodec_24khz-{published_prefix}.th); is this the released 24 kHz model?")
        state = load_torch_checkpoint(path)
        model = EncodecModel(EncodecConfig())  # the 24 kHz model's configuration
        load_exact(model, map_original_encodec_keys(state, path), path)
        return cls(model, name, digest)


_ENCODEC_RULES = (
    (r"^(encoder|decoder)\.model\.", r"\1.layers."),
    (r"\.conv\.conv\.", ".conv."),
    (r"\.convtr\.convtr\.", ".conv."),
    (r"^quantizer\.vq\.layers\.(\d+)\._codebook\.", r"quantizer.layers.\1.codebook."),
    (r"\.weight_g$", ".parametrizations.weight.original0"),
    (r"\.weight_v$", ".parametrizations.weight.original1"),
)


def map_original_encodec_keys(state: dict[str, torch.Tensor], source: Path) -> dict[str, torch.Tensor]:
    """Rename original EnCodec keys to EncodecModel's (weight norm kept as a parametrization)."""
    if not any(key.startswith("quantizer.vq.layers.") for key in state):
        raise CheckpointError(f"{source}: not an original EnCodec checkpoint (no quantizer.vq.layers.* keys)")
    renamed = {}
    for key, value in state.items():
        new = key
        for pattern, replacement in _ENCODEC_RULES:
            new = re.sub(pattern, replacement, new)
        renamed[new] = value
    return renamed
