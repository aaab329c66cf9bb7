"""Training the small RVQ codec on the training split: the spectral codec (codecs/spectral.py,
the default) or transformers' DacModel at CPU size (`codec.architecture=dac`).

Losses: multi-scale log-mel L1 (the reconstruction term DAC and EnCodec train with), waveform
L1, and the VQ commitment + codebook losses of DAC's quantizer, which both architectures share.
Quantizer dropout (the quantizer's own) makes every prefix of codebooks a usable decoder input.
No adversarial losses: a GAN does not train usefully in the smoke budget, so the small codec is
blurrier than a real one.

Training resumes: every `checkpoint_every` steps the model, optimizer, RNG states and log are
saved in one file (written atomically, loaded weights-only) named by the config hash, and a
restarted run continues from there to the same losses as an uninterrupted one.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm
from transformers import DacConfig, DacModel
from transformers.audio_utils import mel_filter_bank

from siren_bench.codecs.spectral import SpectralCodecConfig, SpectralCodecModel
from siren_bench.config import CODEC_ARCHITECTURES, CodecConfig, config_hash
from siren_bench.io import atomic_path
from siren_bench.weights import load_resume_state

N_MELS = {256: 32, 512: 64, 1024: 80, 2048: 128}


def build_small_codec(config: CodecConfig, sample_rate: int) -> SpectralCodecModel | DacModel:
    """The untrained model `codec.architecture` names, at the seed's current RNG state."""
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
    return config.hop_length if config.architecture == "spectral" else int(np.prod(config.downsampling_ratios))


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
    model: SpectralCodecModel | DacModel
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
    """Train on [N, T] float waves; `stop_after` ends early (for tests of resumption)."""
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
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.train_steps, eta_min=0.1 * config.learning_rate)
    batches = np.random.default_rng(np.random.SeedSequence([config.seed, 0xC0DEC]))
    waves = torch.from_numpy(train_waves.astype(np.float32))

    log: list[dict] = []
    start = 0
    usage = torch.zeros(config.n_codebooks, config.codebook_size, dtype=torch.int64)  # since the last reset
    state_file = resume_file(resume_dir, config)
    if state_file.is_file():
        state = load_resume_state(state_file)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        torch.set_rng_state(state["torch_rng"])
        batches.bit_generator.state = json.loads(state["numpy_rng"])
        log = json.loads(state["log"])
        usage = state["usage"]
        start = int(state["step"])

    last = config.train_steps if stop_after is None else min(config.train_steps, stop_after)
    progress = tqdm(range(start, last), desc="codec", unit="step", initial=start, total=config.train_steps)
    for step in progress:
        began = time.perf_counter()
        rows = batches.integers(0, len(waves), size=config.batch_size)
        offsets = batches.integers(0, waves.shape[1] - crop + 1, size=config.batch_size)
        batch = torch.stack([waves[r, o : o + crop] for r, o in zip(rows, offsets)])
        out = model(batch[:, None, :])
        recon = out.audio_values[..., : batch.shape[-1]]
        target = batch[..., : recon.shape[-1]]
        losses = {
            "mel": mel_loss(recon, target),
            "waveform": (recon - target).abs().mean(),
            "vq": out.loss.mean(),
        }
        total = config.mel_weight * losses["mel"] + config.waveform_weight * losses["waveform"] + config.vq_weight * losses["vq"]
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        usage += code_usage(out.audio_codes, config.codebook_size)
        if config.dead_code_reset_every and (step + 1) % config.dead_code_reset_every == 0:
            reset_dead_codes(model, usage, out.projected_latents, batches)
            usage.zero_()
        row = {"step": step + 1, "loss": total.item(), **{k: v.item() for k, v in losses.items()},
               "grad_norm": float(grad_norm), "lr": schedule.get_last_lr()[0], "seconds": time.perf_counter() - began}
        log.append(row)
        progress.set_postfix(loss=f"{row['loss']:.3f}", mel=f"{row['mel']:.3f}")
        if (step + 1) % config.checkpoint_every == 0 or step + 1 == last:
            _save_resume_state(state_file, model, optimizer, schedule, batches, log, usage, step + 1)
    model.eval()
    return TrainResult(model, log, start)


def _save_resume_state(path: Path, model, optimizer, schedule, batches, log, usage, step: int) -> None:
    """One file, written atomically: model, optimizer, schedule, both RNGs, log, usage and step."""
    state = {
        "model": model.state_dict(), "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(),
        "torch_rng": torch.get_rng_state(), "numpy_rng": json.dumps(batches.bit_generator.state),
        "log": json.dumps(log), "usage": usage, "step": step,
    }
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def clear_resume_state(resume_dir: Path, config: CodecConfig) -> None:
    """Drop the resume file once the finished model is safely in the stage output."""
    resume_file(resume_dir, config).unlink(missing_ok=True)
