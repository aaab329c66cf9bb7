"""Latent diffusion baseline (AudioLDM / Tango style) with a small transformer denoiser.

AudioLDM and Tango diffuse a VAE's continuous audio latent with a UNet. Here the latent is the
codec's own quantized latent, so the baseline sees exactly the audio Siren's tokens describe and
the codec decodes its samples (`output = "latent"`, then `codec.decode_latent`):

    x0 = sum_k table[k, codes[:, k, f]]   [B, D, F]   (the frozen code table of `set_code_table`)

normalised per channel with a mean and std fitted once on training codes (`fit_normaliser`).

Diffusion (Ho et al. 2020; cosine schedule of Nichol & Dhariwal 2021; v-prediction of Salimans &
Ho 2022; DDIM sampling of Song et al. 2021), with a = sqrt(alpha_bar_t), s = sqrt(1 - alpha_bar_t):

    x_t = a x0 + s eps,   v = a eps - s x0,   x0 = a x_t - s v,   eps = s x_t + a v.

The denoiser is a bidirectional transformer over frames: the noisy latent projected D -> dim,
plus sinusoidal positions, plus one conditioning vector (timestep embedding + projected pooled
caption) on every frame; then Siren's `TemporalBlock`s (text cross-attention, self-attention,
SwiGLU) without the causal mask; RMSNorm; projection dim -> D. Sampling: DDIM with
classifier-free guidance through a learned null caption; of `SamplingConfig` only `guidance`
matters here (temperature, top-k and top-p are for token sampling).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterable

import torch
from torch import nn

from baselines.base import BaselineSpec, Generator, NullCaption, masked_mean
from siren_bench.config import BlockShape
from siren_bench.models.sampling import SamplingConfig, guided
from siren_bench.models.siren import RMSNorm, TemporalBlock, Text, sinusoidal_positions
from siren_bench.registry import SYSTEMS

PREDICTIONS = ("v", "epsilon")
SCHEDULES = ("cosine", "linear")


@dataclass
class LatentDiffusionConfig(BlockShape):
    latent_dim: int = 1024  # D, the codec's latent width (DAC 16 kHz: 1024)
    layers: int = 4
    train_timesteps: int = 1000
    schedule: str = "cosine"  # "cosine" (Nichol & Dhariwal) or "linear" (DDPM)
    prediction: str = "v"  # "v" or "epsilon"; see NoiseSchedule.split on why v is the default
    sampling_steps: int = 50  # DDIM steps
    eta: float = 0.0  # 0 = deterministic DDIM, 1 = ancestral (DDPM-like) noise

    def __post_init__(self):
        if self.prediction not in PREDICTIONS:
            raise ValueError(f"prediction must be one of {PREDICTIONS}, got {self.prediction!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if not 1 <= self.sampling_steps <= self.train_timesteps:
            raise ValueError(f"sampling_steps must be in 1..train_timesteps={self.train_timesteps}, got {self.sampling_steps}")
        if self.eta < 0:
            raise ValueError(f"eta must be >= 0, got {self.eta}")


# Tango's sampler (REFERENCES.md §3): 200 DDIM steps (conf/baselines/paper.yaml, with our width and depth) and
PAPER_GUIDANCE = 3.0  # Tango's classifier-free guidance scale: SamplingConfig(guidance=PAPER_GUIDANCE)


# ---------------------------------------------------------------------------------------- schedule


class NoiseSchedule:
    """alpha_bar_t for t = 0..T-1 in float64 and the conversions between x0, eps, v and x_t.

    Coefficients are taken in float64 and cast to the tensor's dtype, so a float64 sampler state
    keeps full precision where alpha_bar is ~1e-9 (the cosine schedule's last step)."""

    def __init__(self, timesteps: int = 1000, kind: str = "cosine"):
        if kind == "cosine":  # alpha_bar(t) = f(t) / f(0), f(t) = cos^2((t/T + s) / (1 + s) pi/2); betas clipped at 0.999
            s = 0.008
            f = torch.cos((torch.arange(timesteps + 1, dtype=torch.float64) / timesteps + s) / (1 + s) * math.pi / 2) ** 2
            betas = (1 - f[1:] / f[:-1]).clamp(max=0.999)
        elif kind == "linear":  # DDPM's 1e-4 .. 0.02 over 1000 steps, rescaled for other T
            scale = 1000 / timesteps
            betas = torch.linspace(1e-4 * scale, 0.02 * scale, timesteps, dtype=torch.float64)
        else:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {kind!r}")
        self.timesteps = timesteps
        self.alpha_bar = torch.cumprod(1 - betas, dim=0)

    def coefficients(self, t: torch.Tensor | int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(sqrt(alpha_bar_t), sqrt(1 - alpha_bar_t)) in like's dtype and device, shaped to
        broadcast over like [B, ...] (t an int or [B] timesteps)."""
        t = torch.as_tensor(t, device="cpu")
        alpha_bar = self.alpha_bar[t]
        shape = (-1,) + (1,) * (like.dim() - 1) if t.dim() else ()
        to = dict(dtype=like.dtype, device=like.device)
        return alpha_bar.sqrt().to(**to).view(shape), (1 - alpha_bar).sqrt().to(**to).view(shape)

    def q_sample(self, x0: torch.Tensor, t, noise: torch.Tensor) -> torch.Tensor:
        a, s = self.coefficients(t, x0)
        return a * x0 + s * noise

    def target(self, x0: torch.Tensor, noise: torch.Tensor, t, prediction: str) -> torch.Tensor:
        """What the network learns to output: v = a eps - s x0, or eps itself."""
        if prediction == "epsilon":
            return noise
        if prediction != "v":
            raise ValueError(f"prediction must be one of {PREDICTIONS}, got {prediction!r}")
        a, s = self.coefficients(t, x0)
        return a * noise - s * x0

    def split(self, x_t: torch.Tensor, t, output: torch.Tensor, prediction: str) -> tuple[torch.Tensor, torch.Tensor]:
        """A prediction at x_t -> (x0, eps). From v it is a rotation, well conditioned at every t;
        from eps, x0 = (x_t - s eps) / a amplifies the error by 1 / a, which is ~2e4 at the cosine
        schedule's last step: why v is the default."""
        a, s = self.coefficients(t, x_t)
        if prediction == "v":
            return a * x_t - s * output, s * x_t + a * output
        if prediction == "epsilon":
            return (x_t - s * output) / a, output
        raise ValueError(f"prediction must be one of {PREDICTIONS}, got {prediction!r}")

    def ddim_timesteps(self, steps: int) -> list[int]:
        """`steps` evenly spaced timesteps from T-1 (pure noise) down to 0."""
        if not 1 <= steps <= self.timesteps:
            raise ValueError(f"steps must be in 1..{self.timesteps}, got {steps}")
        return torch.linspace(self.timesteps - 1, 0, steps, dtype=torch.float64).round().long().tolist()


def ddim_sample(predict: Callable[[torch.Tensor, int], torch.Tensor], shape: tuple[int, ...], schedule: NoiseSchedule,
                steps: int, eta: float, generator: torch.Generator | None, prediction: str,
                device: torch.device | str | None = None) -> torch.Tensor:
    """DDIM (Song et al. 2021, eq. 12) from pure noise; `predict(x_t, t)` returns the model's
    output (v or eps) for the float64 state x_t at integer timestep t. Each step goes from t to
    the next timestep t' (after the last, alpha_bar' = 1, i.e. the x0 estimate):

        x_t' = sqrt(ab') x0 + sqrt(1 - ab' - sigma^2) eps + sigma z,
        sigma = eta sqrt((1 - ab') / (1 - ab)) sqrt(1 - ab / ab').

    Noise (the start and every z) comes from `generator`. Returns the float64 x0 [shape]."""
    if eta < 0:
        raise ValueError(f"eta must be >= 0, got {eta}")
    source = generator.device if generator is not None else torch.device("cpu")  # seeds mean the same on every device
    device = torch.device(device) if device is not None else source

    def noise() -> torch.Tensor:
        return torch.randn(shape, generator=generator, dtype=torch.float64, device=source).to(device)

    x = noise()
    timesteps = schedule.ddim_timesteps(steps)
    for i, t in enumerate(timesteps):
        x0, eps = schedule.split(x, t, predict(x, t).to(torch.float64), prediction)
        alpha_bar = float(schedule.alpha_bar[t])
        alpha_bar_next = float(schedule.alpha_bar[timesteps[i + 1]]) if i + 1 < len(timesteps) else 1.0
        sigma = eta * math.sqrt((1 - alpha_bar_next) / (1 - alpha_bar) * (1 - alpha_bar / alpha_bar_next))
        x = math.sqrt(alpha_bar_next) * x0 + math.sqrt(max(1 - alpha_bar_next - sigma**2, 0.0)) * eps
        if sigma > 0:
            x = x + sigma * noise()
    return x


# ---------------------------------------------------------------------------------------- network


class DenoiserBlock(TemporalBlock):
    """Siren's TemporalBlock without the causal mask; in a batch of clips of unequal length its
    self-attention skips the padded frames (`frame_mask`, True = valid) as keys."""

    def __init__(self, config: BlockShape):
        super().__init__(config, causal=False)

    def forward(self, x, text, text_mask, frame_mask: torch.Tensor | None = None):
        return super().forward(x, text, text_mask, key_mask=frame_mask)


class Denoiser(nn.Module):
    """x_t [B, D, F], timesteps [B], text -> prediction [B, D, F] (v or eps, normalised units)."""

    def __init__(self, config: LatentDiffusionConfig):
        super().__init__()
        self.config = config
        self.input = nn.Linear(config.latent_dim, config.dim)
        self.time_mlp = nn.Sequential(nn.Linear(config.dim, config.dim), nn.SiLU(), nn.Linear(config.dim, config.dim))
        self.text_pool = nn.Linear(config.text_dim, config.dim, bias=False)
        self.blocks = nn.ModuleList(DenoiserBlock(config) for _ in range(config.layers))
        self.norm = RMSNorm(config.dim, config.norm_eps)
        self.output = nn.Linear(config.dim, config.latent_dim)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=config.init_std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, text: Text, frame_mask: torch.Tensor | None = None) -> torch.Tensor:
        n_frames = x_t.shape[-1]
        x = self.input(x_t.transpose(1, 2))  # [B, F, dim]
        x = x + sinusoidal_positions(torch.arange(n_frames, device=x.device), self.config.dim)
        condition = self.time_mlp(sinusoidal_positions(t, self.config.dim)) + self.text_pool(text.pooled)
        x = x + condition[:, None]
        if frame_mask is not None:
            frame_mask = frame_mask.bool()
            if bool(frame_mask.all()):
                frame_mask = None  # the unmasked (faster) path
            else:
                frame_mask = frame_mask | ~frame_mask.any(1, keepdim=True)  # an all-padding row would attend to nothing
        for block in self.blocks:
            x = block(x, text.tokens, text.mask, frame_mask)
        return self.output(self.norm(x)).transpose(1, 2)


class LatentDiffusion(Generator):
    """Text -> quantized codec latent [B, D, F] by DDIM over a transformer denoiser."""

    output = "latent"

    def __init__(self, config: LatentDiffusionConfig):
        super().__init__()
        self.config = config
        self.schedule = NoiseSchedule(config.train_timesteps, config.schedule)
        self.denoiser = Denoiser(config)
        self.null = NullCaption(config.text_dim, config.init_std)
        K, V, D = config.n_codebooks, config.codebook_size, config.latent_dim
        # frozen data pipeline: the codec's decode vectors and the latent's per-channel statistics
        self.register_buffer("code_table", torch.zeros(K, V, D))
        self.register_buffer("latent_mean", torch.zeros(D))
        self.register_buffer("latent_std", torch.ones(D))
        self.register_buffer("table_set", torch.tensor(False))
        self.register_buffer("normaliser_set", torch.tensor(False))

    # ------------------------------------------------------------------ data

    def set_code_table(self, table: torch.Tensor) -> None:
        """table [K, V, D]: each codebook entry's decode contribution (codec.layer_features)."""
        shape = (self.config.n_codebooks, self.config.codebook_size, self.config.latent_dim)
        if tuple(table.shape) != shape:
            raise ValueError(f"code table must be [{', '.join(map(str, shape))}], got {tuple(table.shape)}")
        self.code_table.copy_(table.detach())
        self.table_set.fill_(True)

    def _check_codes(self, codes: torch.Tensor) -> None:
        K = self.config.n_codebooks
        if codes.dim() != 3 or codes.shape[1] != K or not 1 <= codes.shape[2] <= self.config.max_frames:
            raise ValueError(f"codes must be [B, {K}, F] with 1 <= F <= {self.config.max_frames}, got {tuple(codes.shape)}")
        if not bool(self.table_set):
            raise ValueError("no code table: call set_code_table(table [K, V, D]) first")

    def latent(self, codes: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """codes [B, K, F] -> the codec's quantized latent [B, D, F]: the sum over codebooks of
        their entries' decode vectors (one codebook at a time: no [B, K, F, D] intermediate)."""
        self._check_codes(codes)
        table = self.code_table.to(dtype)
        total = sum(table[k][codes[:, k]] for k in range(codes.shape[1]))  # [B, F, D]
        return total.transpose(1, 2)

    @torch.no_grad()
    def fit_normaliser(self, codes_list: Iterable[torch.Tensor]) -> None:
        """Per-channel mean and std of the training latent, accumulated in float64 over every
        frame of `codes_list` (clips [K, F], e.g. a TokenSet's NumPy arrays, or unpadded batches
        [B, K, F]), stored float32."""
        D = self.config.latent_dim
        total = torch.zeros(D, dtype=torch.float64)
        squares = torch.zeros(D, dtype=torch.float64)
        count = 0
        for codes in codes_list:
            codes = torch.as_tensor(codes, dtype=torch.long)
            codes = codes[None] if codes.dim() == 2 else codes
            x = self.latent(codes.to(self.code_table.device), torch.float64).transpose(1, 2).reshape(-1, D).cpu()
            total += x.sum(0)
            squares += x.pow(2).sum(0)
            count += x.shape[0]
        if count < 2:
            raise ValueError(f"fit_normaliser needs at least 2 frames of codes, got {count}")
        mean = total / count
        std = (squares / count - mean**2).clamp_min(0).sqrt().clamp_min(1e-5)  # a dead channel stays finite
        self.latent_mean.copy_(mean.float())
        self.latent_std.copy_(std.float())
        self.normaliser_set.fill_(True)

    def normalise(self, latent: torch.Tensor) -> torch.Tensor:
        return (latent - self.latent_mean[:, None]) / self.latent_std[:, None]

    def unnormalise(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.latent_std[:, None].to(x) + self.latent_mean[:, None].to(x)

    def _check_ready(self) -> None:
        if not bool(self.table_set):
            raise ValueError("no code table: call set_code_table(table [K, V, D]) first")
        if not bool(self.normaliser_set):
            raise ValueError("no latent normaliser: call fit_normaliser(training codes) first")

    def _check_text(self, text: Text, batch: int | None = None) -> None:
        B, dim = text.tokens.shape[0], self.config.text_dim
        if (text.tokens.dim() != 3 or text.tokens.shape[-1] != dim or tuple(text.mask.shape) != tuple(text.tokens.shape[:2])
                or tuple(text.pooled.shape) != (B, dim) or (batch is not None and B != batch)):
            raise ValueError(f"text must be tokens [B, L, {dim}], mask [B, L], pooled [B, {dim}] with B = {batch or B}, got "
                             f"{tuple(text.tokens.shape)}, {tuple(text.mask.shape)}, {tuple(text.pooled.shape)}")

    # ------------------------------------------------------------------ training

    def loss(self, codes: torch.Tensor, text: Text, frame_mask: torch.Tensor | None = None,
             drop: torch.Tensor | None = None, n_frames: float | None = None) -> torch.Tensor:
        """MSE between the prediction and its target (v or eps), mean over D, averaged over valid
        frames; timesteps uniform and noise Gaussian from torch's global RNG (seed it to fix them)."""
        self._check_codes(codes)
        self._check_ready()
        self._check_text(text, codes.shape[0])
        if frame_mask is not None and tuple(frame_mask.shape) != (codes.shape[0], codes.shape[2]):
            raise ValueError(f"frame_mask must be [{codes.shape[0]}, {codes.shape[2]}], got {tuple(frame_mask.shape)}")
        x0 = self.normalise(self.latent(codes))
        t = torch.randint(0, self.schedule.timesteps, (codes.shape[0],), device=codes.device)
        noise = torch.randn_like(x0)
        x_t = self.schedule.q_sample(x0, t, noise)
        prediction = self.denoiser(x_t, t, self.null(text, drop), frame_mask)
        target = self.schedule.target(x0, noise, t, self.config.prediction)
        per_frame = (prediction.float() - target).pow(2).mean(1)  # [B, F]
        return masked_mean(per_frame, frame_mask, n_frames)

    # ------------------------------------------------------------------ sampling

    @torch.no_grad()
    def generate(self, text: Text, n_frames: int, sampling: SamplingConfig,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """DDIM from the seeded noise of `generator`; classifier-free guidance when
        sampling.guidance != 1 (caption and null caption in one doubled batch, outputs combined
        as uncond + g (cond - uncond)). Returns the un-normalised latent [B, D, n_frames] float32.
        Like Siren's, it leaves train/eval mode to the caller: call .eval() so dropout is off."""
        self._check_ready()
        self._check_text(text)
        if not 1 <= n_frames <= self.config.max_frames:
            raise ValueError(f"n_frames must be in 1..{self.config.max_frames}, got {n_frames}")
        B, device = text.tokens.shape[0], self.code_table.device
        guidance = sampling.guidance
        condition = self.null.doubled(text) if guidance != 1.0 else text
        rows = condition.tokens.shape[0]

        def predict(x: torch.Tensor, t: int) -> torch.Tensor:
            x = x.float()
            if guidance != 1.0:
                x = torch.cat([x, x])
            out = self.denoiser(x, torch.full((rows,), t, device=device), condition)
            return guided(out, guidance) if guidance != 1.0 else out

        x0 = ddim_sample(predict, (B, self.config.latent_dim, n_frames), self.schedule, self.config.sampling_steps,
                         self.config.eta, generator, self.config.prediction, device=device)
        return self.unnormalise(x0).float()


SYSTEMS.add("latent_diffusion", BaselineSpec(
    "latent_diffusion", "latent diffusion: transformer denoiser on the codec's quantized latent, DDIM (AudioLDM / Tango)",
    seed_offset=400, config_class=LatentDiffusionConfig, model_class=LatentDiffusion))
