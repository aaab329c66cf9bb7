"""The small codec of the smoke profile: a spectral encoder, DAC's residual quantizer and a
Vocos-style inverse-STFT decoder.

Why not a small waveform DAC: at CPU size and a few hundred steps, DacModel's waveform encoder
learns an input-independent latent and its decoder the data's average spectrum (a collapsed
codec; README "Codecs" lists what was tried). Here the encoder starts from log-mel frames, so its
latent depends on the input from the first step, and the decoder predicts each frame's STFT
magnitude and phase, turned into audio by one inverse STFT. The quantizer is transformers'
DacResidualVectorQuantizer (factorised, l2-normalised codes, quantizer dropout), so the codes,
their per-layer vectors and the losses are DAC's.

Frames are STFT frames: hop = sample_rate / frame_rate (320 at 16 kHz, 50 frames/s as DAC
16 kHz), window 4 x hop. Every layer is frame-local or a convolution over neighbouring frames,
with a per-frame LayerNorm, so a frame's codes depend only on its neighbourhood (19 frames
either side), not on where the clip or crop ends.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import torch
from torch import nn
from transformers import DacConfig, PretrainedConfig, PreTrainedModel
from transformers.audio_utils import mel_filter_bank
from transformers.models.dac.modeling_dac import DacResidualVectorQuantizer

from siren_bench.codecs.base import FolderCodec
from siren_bench.codecs.dac import rvq_layer_features
from siren_bench.registry import CODECS

LOG_MEL_FLOOR = 1e-7  # mel power; well below SynthCaps' -65 dBFS noise floor
MAX_LOG_MAGNITUDE = 6.0  # caps exp() of the decoder's log-magnitude (|X| <= e^6) so it cannot overflow


class SpectralCodecConfig(PretrainedConfig):
    model_type = "siren_spectral_codec"

    def __init__(self, sampling_rate: int = 16000, hop_length: int = 320, n_mels: int = 80, width: int = 128,
                 n_blocks: int = 4, latent_dim: int = 64, n_codebooks: int = 8, codebook_size: int = 256,
                 codebook_dim: int = 8, quantizer_dropout: float = 0.5, commitment_loss_weight: float = 0.25,
                 codebook_loss_weight: float = 1.0, **kwargs):
        self.sampling_rate = sampling_rate
        self.hop_length = hop_length
        self.n_mels = n_mels
        self.width = width
        self.n_blocks = n_blocks
        self.latent_dim = latent_dim
        self.n_codebooks = n_codebooks
        self.codebook_size = codebook_size
        self.codebook_dim = codebook_dim
        self.quantizer_dropout = quantizer_dropout
        self.commitment_loss_weight = commitment_loss_weight
        self.codebook_loss_weight = codebook_loss_weight
        super().__init__(**kwargs)

    @property
    def n_fft(self) -> int:
        return 4 * self.hop_length

    def quantizer_config(self) -> DacConfig:
        config = DacConfig(n_codebooks=self.n_codebooks, codebook_size=self.codebook_size, codebook_dim=self.codebook_dim,
                           quantizer_dropout=self.quantizer_dropout, sampling_rate=self.sampling_rate)
        config.hidden_size = self.latent_dim  # the quantizer reads only this from the encoder side
        return config


@dataclass
class SpectralCodecOutput:
    """The fields of DacModel's output that training uses, with the same names."""

    audio_values: torch.Tensor  # [B, T]
    audio_codes: torch.Tensor  # [B, K, F]
    projected_latents: torch.Tensor  # [B, K * codebook_dim, F]
    loss: torch.Tensor  # weighted commitment + codebook loss


class ChannelNorm(nn.Module):
    """LayerNorm over channels of each frame of a [B, C, F] tensor."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = nn.LayerNorm(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.transpose(1, 2)).transpose(1, 2)


class ConvNeXtBlock(nn.Module):
    """Depthwise temporal convolution, per-frame norm, pointwise MLP, residual (as in Vocos)."""

    def __init__(self, width: int, dilation: int):
        super().__init__()
        self.temporal = nn.Conv1d(width, width, kernel_size=7, padding=3 * dilation, dilation=dilation, groups=width)
        self.norm = ChannelNorm(width)
        self.expand = nn.Conv1d(width, 2 * width, kernel_size=1)
        self.project = nn.Conv1d(2 * width, width, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.project(nn.functional.gelu(self.expand(self.norm(self.temporal(x)))))


def conv_stack(in_channels: int, out_channels: int, width: int, n_blocks: int) -> nn.Sequential:
    blocks = [ConvNeXtBlock(width, dilation=1 + i % 2) for i in range(n_blocks)]
    return nn.Sequential(nn.Conv1d(in_channels, width, kernel_size=3, padding=1), *blocks, ChannelNorm(width),
                         nn.Conv1d(width, out_channels, kernel_size=1))


@lru_cache(maxsize=8)
def mel_bank(n_fft: int, n_mels: int, sample_rate: int) -> torch.Tensor:
    """[n_mels, n_fft // 2 + 1] slaney mel filters."""
    bank = mel_filter_bank(num_frequency_bins=n_fft // 2 + 1, num_mel_filters=n_mels, min_frequency=0.0,
                           max_frequency=sample_rate / 2, sampling_rate=sample_rate, norm="slaney", mel_scale="slaney")
    return torch.tensor(bank.T, dtype=torch.float32)


class SpectralCodecModel(PreTrainedModel):
    config_class = SpectralCodecConfig
    base_model_prefix = "spectral_codec"
    main_input_name = "input_values"

    def __init__(self, config: SpectralCodecConfig):
        super().__init__(config)
        n_bins = config.n_fft // 2 + 1
        self.encoder = conv_stack(config.n_mels, config.latent_dim, config.width, config.n_blocks)
        self.quantizer = DacResidualVectorQuantizer(config.quantizer_config())
        self.decoder = conv_stack(config.latent_dim, 2 * n_bins, config.width, config.n_blocks)
        self.post_init()

    def _init_weights(self, module):
        """PyTorch's own (fan-in) initialisation; the codebooks N(0, 1) as nn.Embedding's default."""
        if isinstance(module, (nn.Conv1d, nn.LayerNorm, nn.Embedding)):
            module.reset_parameters()

    def window(self, like: torch.Tensor) -> torch.Tensor:
        # Computed, not a buffer: from_pretrained builds the model on the meta device and would
        # leave a non-persistent buffer uninitialised.
        return torch.hann_window(self.config.n_fft, device=like.device)

    def log_mel(self, wave: torch.Tensor) -> torch.Tensor:
        """[B, T] -> [B, n_mels, T // hop]: the encoder's input, one column per codec frame."""
        cfg = self.config
        spec = torch.stft(wave, cfg.n_fft, cfg.hop_length, window=self.window(wave), return_complex=True)
        bank = mel_bank(cfg.n_fft, cfg.n_mels, cfg.sampling_rate).to(wave.device)
        return torch.log(bank @ spec[..., : wave.shape[-1] // cfg.hop_length].abs().pow(2) + LOG_MEL_FLOOR)

    def encode_latent(self, wave: torch.Tensor) -> torch.Tensor:
        """[B, T] (T a multiple of hop) -> [B, latent_dim, F] continuous latent."""
        return self.encoder(self.log_mel(wave))

    def decode_latent(self, latent: torch.Tensor) -> torch.Tensor:
        """[B, latent_dim, F] -> [B, F * hop]: predicted log-magnitude and phase, inverse STFT."""
        log_magnitude, phase = self.decoder(latent).chunk(2, dim=1)
        spec = torch.polar(torch.exp(log_magnitude.clamp(max=MAX_LOG_MAGNITUDE)), phase * math.pi)
        spec = nn.functional.pad(spec, (0, 1))  # the centred STFT of F * hop samples has F + 1 frames
        length = latent.shape[-1] * self.config.hop_length
        return torch.istft(spec, self.config.n_fft, self.config.hop_length, window=self.window(latent), length=length)

    def encode(self, wave: torch.Tensor) -> torch.Tensor:
        """[B, T] -> [B, K, F] codes of all codebooks."""
        _, codes, _, _, _ = self.quantizer(self.encode_latent(wave), n_quantizers=self.config.n_codebooks)
        return codes

    def forward(self, input_values: torch.Tensor) -> SpectralCodecOutput:
        """[B, 1, T] -> reconstruction, codes and VQ loss (quantizer dropout applies in training)."""
        wave = input_values.squeeze(1)
        quantized, codes, projected, commitment, codebook = self.quantizer(self.encode_latent(wave))
        loss = self.config.commitment_loss_weight * commitment + self.config.codebook_loss_weight * codebook
        return SpectralCodecOutput(self.decode_latent(quantized), codes, projected, loss)


@CODECS.register("spectral")
class SpectralCodec(FolderCodec):
    """The Codec interface over SpectralCodecModel (saved and loaded as an HF-format folder)."""

    model_class, default_name, latent_dim_field = SpectralCodecModel, "spectral", "latent_dim"

    @torch.no_grad()
    def encode(self, wave: torch.Tensor) -> torch.Tensor:
        return self.model.encode(self._pad_to_frames(wave))

    def layer_features(self, codes: torch.Tensor) -> torch.Tensor:
        return rvq_layer_features(self.model.quantizer, codes)

    def decode_latent(self, latent: torch.Tensor) -> torch.Tensor:
        return self.model.decode_latent(latent)
