"""The Codec interface every tokenizer meets: audio <-> RVQ codes, plus per-layer features.

Shapes: waveforms are float [B, T] at `sample_rate`; codes are int64 [B, K, F] with K codebooks
at `frame_rate` frames per second. `decode` accepts any prefix of the codebooks (k <= K), which
is what the fidelity-vs-depth diagnostic and coarse-to-fine generation need. `layer_features`
gives each codebook's quantized contribution in the shared latent space ([B, K, D, F], summing
over K to the quantized latent the decoder sees), the object of the orthogonality and
semantic-richness diagnostics.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from siren_bench.weights import load_hf_folder


@dataclass(frozen=True)
class CodecInfo:
    name: str
    sample_rate: int
    frame_rate: float
    n_codebooks: int
    codebook_size: int
    latent_dim: int
    weights_sha256: str  # identity of the weights: hashes of the files they came from

    def as_dict(self) -> dict:
        return dict(vars(self))


class Codec(ABC):
    info: CodecInfo

    @property
    def sample_rate(self) -> int:
        return self.info.sample_rate

    @property
    def n_codebooks(self) -> int:
        return self.info.n_codebooks

    @property
    def hop_length(self) -> int:
        return int(round(self.info.sample_rate / self.info.frame_rate))

    def to(self, device: torch.device | str) -> "Codec":
        """The codec with its network (every implementation keeps it in `self.model`) on `device`;
        `encode` then takes waveforms there."""
        self.model.to(device)
        return self

    @property
    def device(self) -> torch.device:
        """Where the network is (its first parameter's device)."""
        return next(self.model.parameters()).device

    def decode_numpy(self, codes: torch.Tensor, latent: bool = False) -> np.ndarray:
        """[B, k, F] codes (or with `latent`, a [B, D, F] latent), wherever they are, decoded where the
        network is, as float64 waves [B, F * hop] on the host. The stages put the codec on their
        device first: the real run's 19,000-odd 10 s DAC decodes would take about a day on 2 CPU threads."""
        with torch.no_grad():
            wave = self.decode_latent(codes.to(self.device).float()) if latent else self.decode(codes.to(self.device))
        return wave.double().cpu().numpy()

    @abstractmethod
    def encode(self, wave: torch.Tensor) -> torch.Tensor:
        """[B, T] float -> [B, K, F] int64; T is zero-padded up to a whole number of frames."""

    def encode_waves(self, waves: np.ndarray, batch: int = 16) -> torch.Tensor:
        """[N, T] float waves (on the CPU) -> [N, K, F] codes on the CPU, `batch` clips per forward where the network is."""
        with torch.no_grad():
            return torch.cat([self.encode(torch.from_numpy(waves[i : i + batch].astype(np.float32)).to(self.device)).cpu()
                              for i in range(0, len(waves), batch)])

    @abstractmethod
    def layer_features(self, codes: torch.Tensor) -> torch.Tensor:
        """[B, k, F] codes -> [B, k, D, F]: each codebook's quantized vector per frame."""

    @abstractmethod
    def decode_latent(self, latent: torch.Tensor) -> torch.Tensor:
        """[B, D, F] quantized latent -> [B, F * hop] waveform."""

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """[B, k, F] codes of the first k codebooks -> [B, F * hop] waveform."""
        if codes.dim() != 3 or not 1 <= codes.shape[1] <= self.n_codebooks:
            raise ValueError(f"codes must be [B, k, F] with 1 <= k <= {self.n_codebooks}, got {tuple(codes.shape)}")
        return self.decode_latent(self.layer_features(codes).sum(dim=1))

    def _pad_to_frames(self, wave: torch.Tensor) -> torch.Tensor:
        if wave.dim() != 2:
            raise ValueError(f"wave must be [B, T], got {tuple(wave.shape)}")
        remainder = wave.shape[-1] % self.hop_length
        return torch.nn.functional.pad(wave, (0, self.hop_length - remainder)) if remainder else wave


class FolderCodec(Codec):
    """A codec over one transformers model (`self.model`) loadable from an HF-format folder
    (config.json and the weights): the pretrained DAC and EnCodec, and the small codecs the `codec`
    stage fits and saves. The constructor reads sampling_rate, hop_length, n_codebooks and
    codebook_size from the config; EnCodec, whose config names its frame rate and bandwidths
    instead, has its own."""

    model_class: type  # the transformers model class the folder holds
    default_name: str
    latent_dim_field: str = "hidden_size"  # the config field giving the latent's dimension

    def __init__(self, model, name: str, weights_sha256: str):
        self.model = model.eval()
        cfg = model.config
        self.info = CodecInfo(
            name=name, sample_rate=cfg.sampling_rate, frame_rate=cfg.sampling_rate / cfg.hop_length,
            n_codebooks=cfg.n_codebooks, codebook_size=cfg.codebook_size, latent_dim=getattr(cfg, self.latent_dim_field),
            weights_sha256=weights_sha256,
        )

    @classmethod
    def from_hf_folder(cls, folder: str | Path, name: str | None = None, expected_sha256: str | None = None):
        model, identity = load_hf_folder(cls.model_class, Path(folder), expected_sha256)
        return cls(model, cls.default_name if name is None else name, identity)


def codebook_usage(codes: torch.Tensor, codebook_size: int) -> list[dict]:
    """Per layer of [B, K, F] codes: perplexity (exp of the entropy of code frequencies; at most
    codebook_size) and how many entries no frame used."""
    rows = []
    for k in range(codes.shape[1]):
        counts = torch.bincount(codes[:, k].flatten(), minlength=codebook_size).to(torch.float64)
        p = counts[counts > 0] / counts.sum()
        rows.append({"layer": k + 1, "perplexity": float(torch.exp(-(p * p.log()).sum())), "dead_codes": int((counts == 0).sum())})
    return rows
