"""Training the small RVQ codec on the training split: the mel-RVQ codec (codecs/melrvq.py, the
default: codebooks fitted by k-means, no gradient training), the spectral codec
(codecs/spectral.py) or transformers' DacModel at CPU size (`codec.architecture=dac`).

The rest of this docstring is about the two gradient-trained architectures.

Losses: multi-scale log-mel L1 (the reconstruction term DAC and EnCodec train with), waveform
L1, and the VQ commitment + codebook losses of DAC's quantizer, which both architectures share.
Quantizer dropout (the quantizer's own) makes every prefix of codebooks a usable decoder input.
No adversarial losses: a GAN does not train usefully in the smoke budget, so the small codec is
blurrier than a real one.

AdamW (betas 0.8, 0.99) with a cosine decay to 10 % of the learning rate, no warm-up, clipping
at 1. The loop is the one training engine's (siren_bench/trainer.py): it resumes from a file
named by the config hash, the code-usage counts of the dead-code reset included, to the same
losses as an uninterrupted run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import DacConfig, DacModel
from transformers.audio_utils import mel_filter_bank

from siren_bench.codecs.melrvq import MelRVQConfig, MelRVQModel, fit_mel_rvq
from siren_bench.codecs.spectral import SpectralCodecConfig, SpectralCodecModel
from siren_bench.config import CODEC_ARCHITECTURES, CodecConfig, config_hash
from siren_bench.trainer import Trainer

N_MELS = {256: 32, 512: 64, 1024: 80, 2048: 128}


def build_small_codec(config: CodecConfig, sample_rate: int) -> SpectralCodecModel | DacModel:
    """The untrained model of a gradient-trained `codec.architecture`, at the seed's current RNG state."""
    if config.architecture == "mel":
        raise ValueError("codec.architecture='mel' is fitted, not built at random: use untrained_baseline(config, waves, rate)")
    if config.architecture == "spectral":
        return SpectralCodecModel(SpectralCodecConfig(
            sampling_rate=sample_rate, hop_length=config.hop_length, n_mels=config.n_mels, width=config.width,
            n_blocks=config.n_blocks, latent_dim=config.latent_dim, n_codebooks=config.n_codebooks,
            codebook_size=config.codebook_size, codebook_dim=config.codebook_dim,
            quantizer_dropout=config.quantizer_dropout,
        ))
    if config.architecture == "dac":
        return build_small_dac(config, sample_rate)
    raise ValueError(f"codec.architecture={config.architecture!r}: expected one of {CODEC_ARCHITECTURES}")


def codec_hop(config: CodecConfig) -> int:
    """Samples per codec frame."""
    return int(np.prod(config.downsampling_ratios)) if config.architecture == "dac" else config.hop_length


def mel_rvq_config(config: CodecConfig, sample_rate: int) -> MelRVQConfig:
    return MelRVQConfig(sampling_rate=sample_rate, hop_length=config.hop_length, n_mels=config.n_mels, n_codebooks=config.n_codebooks,
                        codebook_size=config.codebook_size, griffin_lim_iters=config.griffin_lim_iters)


def untrained_baseline(config: CodecConfig, train_waves: np.ndarray, sample_rate: int) -> MelRVQModel | SpectralCodecModel | DacModel:
    """What the codec stage compares the trained codec against: the same architecture untrained
    (gradient architectures: the random initialisation of codec.seed; mel: codebooks from the
    k-means++ seeding alone, no Lloyd iterations)."""
    if config.architecture == "mel":
        return fit_mel_rvq(mel_rvq_config(config, sample_rate), train_waves, config.seed, config.kmeans_max_frames, kmeans_iterations=0)[0]
    torch.manual_seed(config.seed)
    return build_small_codec(config, sample_rate).eval()


def build_small_dac(config: CodecConfig, sample_rate: int) -> DacModel:
    return DacModel(DacConfig(
        encoder_hidden_size=config.encoder_hidden_size,
        downsampling_ratios=list(config.downsampling_ratios),
        decoder_hidden_size=config.decoder_hidden_size,
        n_codebooks=config.n_codebooks,
        codebook_size=config.codebook_size,
        codebook_dim=config.codebook_dim,
        quantizer_dropout=config.quantizer_dropout,
        sampling_rate=sample_rate,
    ))


class MultiScaleMelLoss(torch.nn.Module):
    """Mean over window sizes of L1 between log-mel spectrograms (hop = window / 4)."""

    def __init__(self, sample_rate: int, windows: list[int], floor: float = 1e-5):
        super().__init__()
        self.windows = list(windows)
        self.floor = floor
        for n_fft in self.windows:
            bank = mel_filter_bank(
                num_frequency_bins=n_fft // 2 + 1, num_mel_filters=N_MELS.get(n_fft, 64),
                min_frequency=0.0, max_frequency=sample_rate / 2, sampling_rate=sample_rate,
                norm="slaney", mel_scale="slaney",
            )
            self.register_buffer(f"mel_{n_fft}", torch.tensor(bank.T, dtype=torch.float32), persistent=False)
            self.register_buffer(f"window_{n_fft}", torch.hann_window(n_fft), persistent=False)

    def log_mel(self, wave: torch.Tensor, n_fft: int) -> torch.Tensor:
        spec = torch.stft(wave, n_fft, hop_length=n_fft // 4, window=getattr(self, f"window_{n_fft}"), return_complex=True)
        mel = getattr(self, f"mel_{n_fft}") @ spec.abs().pow(2)
        # An additive floor: bins far below it barely count (SynthCaps clips are mostly a -65 dBFS
        # noise floor, which would otherwise dominate the loss and let a decoder that ignores its
        # codes win), while, unlike a clamp, it still passes gradient to a near-silent output.
        return torch.log10(mel + self.floor)

    def forward(self, estimate: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        losses = [(self.log_mel(estimate, n) - self.log_mel(target, n)).abs().mean() for n in self.windows]
        return torch.stack(losses).mean()


@dataclass
class TrainResult:
    model: MelRVQModel | SpectralCodecModel | DacModel
    log: list[dict]
    resumed_from: int


def code_usage(codes: torch.Tensor, codebook_size: int) -> torch.Tensor:
    """[B, K, F] codes -> [K, codebook_size] counts."""
    return torch.stack([torch.bincount(codes[:, k].flatten(), minlength=codebook_size) for k in range(codes.shape[1])])


@torch.no_grad()
def reset_dead_codes(model: SpectralCodecModel | DacModel, usage: torch.Tensor, projected: torch.Tensor, rng: np.random.Generator) -> int:
    """Re-seed the codebook entries no frame used since the last reset with latents of the batch.

    Usage is counted over the whole interval (`dead_code_reset_every` batches), not one batch:
    a single batch uses only a fraction of the entries, and re-seeding all the rest would throw
    away what the codebooks learned. Without any reset the small codec's layers collapsed onto
    a single code each within 100 steps. Returns how many entries moved.
    """
    moved = 0
    dim = model.config.codebook_dim
    for i, quantizer in enumerate(model.quantizer.quantizers):
        dead = torch.nonzero(usage[i] == 0).flatten()
        if dead.numel() == 0:
            continue
        latents = projected[:, i * dim : (i + 1) * dim].permute(0, 2, 1).reshape(-1, dim)
        picks = torch.from_numpy(rng.integers(0, latents.shape[0], size=dead.numel()))
        quantizer.codebook.weight[dead] = latents[picks]
        moved += dead.numel()
    return moved


def resume_file(resume_dir: Path, config: CodecConfig) -> Path:
    """Where an interrupted run of exactly this config keeps its state."""
    return resume_dir / f"codec-{config_hash(config)[:16]}.pt"


def train_small_codec(
    config: CodecConfig, train_waves: np.ndarray, sample_rate: int, resume_dir: Path, stop_after: int | None = None,
) -> TrainResult:
    """Train on [N, T] float waves; `stop_after` ends early (for tests of resumption). The mel
    architecture is fitted in one pass (seconds, nothing to resume): its log has a row per layer."""
    if config.architecture == "mel":
        model, log = fit_mel_rvq(mel_rvq_config(config, sample_rate), train_waves, config.seed, config.kmeans_max_frames, config.kmeans_iterations)
        return TrainResult(model, log, 0)
    if train_waves.ndim != 2 or len(train_waves) == 0:
        raise ValueError(f"training waves must be a non-empty [N, T] array, got shape {train_waves.shape}")
    crop = int(config.crop_seconds * sample_rate)
    hop = codec_hop(config)
    crop -= crop % hop
    if train_waves.shape[1] < crop:
        raise ValueError(f"clips of {train_waves.shape[1]} samples are shorter than codec.crop_seconds={config.crop_seconds}")

    torch.manual_seed(config.seed)
    model = build_small_codec(config, sample_rate)
    model.train()
    mel_loss = MultiScaleMelLoss(sample_rate, config.mel_windows, config.mel_floor)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, betas=(0.8, 0.99))
    waves = torch.from_numpy(train_waves.astype(np.float32))
    usage = torch.zeros(config.n_codebooks, config.codebook_size, dtype=torch.int64)  # since the last reset
    trainer = Trainer("codec", model, optimizer, steps=config.train_steps, grad_clip=1.0,
                      checkpoint_every=config.checkpoint_every, stream=[config.seed, 0xC0DEC],
                      state_file=resume_file(resume_dir, config), min_lr_ratio=0.1, extra_state={"usage": usage})
    rng = trainer.rng
    forward = {}  # the last forward's outputs, for the code usage and dead-code reset

    def batch_loss():
        rows = rng.integers(0, len(waves), size=config.batch_size)
        offsets = rng.integers(0, waves.shape[1] - crop + 1, size=config.batch_size)
        batch = torch.stack([waves[r, o : o + crop] for r, o in zip(rows, offsets)])
        out = forward["out"] = model(batch[:, None, :])
        recon = out.audio_values[..., : batch.shape[-1]]
        target = batch[..., : recon.shape[-1]]
        losses = {"mel": mel_loss(recon, target), "waveform": (recon - target).abs().mean(), "vq": out.loss.mean()}
        total = config.mel_weight * losses["mel"] + config.waveform_weight * losses["waveform"] + config.vq_weight * losses["vq"]
        return total, {k: v.item() for k, v in losses.items()}

    def step() -> dict:
        row = trainer.update(batch_loss)
        usage.add_(code_usage(forward["out"].audio_codes, config.codebook_size))
        if config.dead_code_reset_every and trainer.current_step % config.dead_code_reset_every == 0:
            reset_dead_codes(model, usage, forward["out"].projected_latents, rng)
            usage.zero_()
        return row

    log = trainer.fit(step, stop_after)
    model.eval()
    return TrainResult(model, log, trainer.start)


def clear_resume_state(resume_dir: Path, config: CodecConfig) -> None:
    """Drop the resume file once the finished model is safely in the stage output."""
    resume_file(resume_dir, config).unlink(missing_ok=True)
