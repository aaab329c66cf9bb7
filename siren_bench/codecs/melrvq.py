"""The default small codec: residual vector quantization of log-mel frames, with a fixed
analysis (STFT -> mel power -> log) and a fixed synthesis (non-negative mel inversion, then
Griffin-Lim phase recovery).

Why not a learned encoder and decoder: at CPU size the trained spectral codec decoded as well
from 1 codebook as from 8 (mel distance 0.416 vs 0.412), because its decoder learned the data's
envelopes from the first code and ignored the rest. Here nothing is learned but the codebooks,
fitted by k-means on the training split's residuals layer by layer (the classic RVQ
construction; EnCodec and DAC initialise their codebooks the same way), so every codebook
reduces the residual it is fitted to, and the synthesis cannot ignore what the codes say.

What it cannot do: the synthesis recovers phase by Griffin-Lim, so the waveform is not the
input's (SI-SNR is far below zero at every depth) and tonal sounds come out slightly rough;
the measures that read magnitudes (mel distance, log-spectral distance) are what it is built for.

Frames: hop = sample_rate / frame_rate (320 at 16 kHz: 50 frames/s, as DAC 16 kHz), window
4 x hop, centred; frame f of a clip depends only on the samples within two hops of f * hop, so a
frame's codes do not depend on where the clip ends. The latent the codes sum to is the log-mel
frame minus the training split's mean frame (so each layer's vectors are zero-mean directions,
what the orthogonality diagnostic compares).
"""

from __future__ import annotations

import time

import numpy as np
import torch
from sklearn.cluster import KMeans, kmeans_plusplus
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel

from siren_bench.codecs.base import FolderCodec, codebook_usage
from siren_bench.codecs.spectral import mel_bank
from siren_bench.registry import CODECS

NNLS_ITERATIONS = 5  # multiplicative updates from mel power back to linear power (5 vs 20: mel distance within 1 %)
GRIFFIN_LIM_MOMENTUM = 0.99  # "fast Griffin-Lim" (Perraudin et al., 2013)


class MelRVQConfig(PretrainedConfig):
    model_type = "siren_mel_rvq"

    def __init__(self, sampling_rate: int = 16000, hop_length: int = 320, n_mels: int = 128, n_codebooks: int = 8,
                 codebook_size: int = 256, griffin_lim_iters: int = 32, log_floor: float = 1e-10, **kwargs):
        self.sampling_rate = sampling_rate
        self.hop_length = hop_length
        self.n_mels = n_mels
        self.n_codebooks = n_codebooks
        self.codebook_size = codebook_size
        self.griffin_lim_iters = griffin_lim_iters
        self.log_floor = log_floor  # added to the mel power before the log (as the fidelity metric's floor)
        super().__init__(**kwargs)

    @property
    def n_fft(self) -> int:
        return 4 * self.hop_length


def nearest_entry(vectors: torch.Tensor, book: torch.Tensor) -> torch.Tensor:
    """[..., D] vectors, [N, D] codebook (float64) -> [...] index of each vector's nearest entry
    (squared Euclidean distance): what encoding picks and what k-means fitting assigns."""
    return ((vectors**2).sum(-1, keepdim=True) - 2 * vectors @ book.T + (book**2).sum(-1)).argmin(-1)


class MelRVQModel(PreTrainedModel):
    """The fitted state: the training split's mean log-mel frame and K codebooks of log-mel
    directions. Parameters (not buffers) so that they are saved, but never trained by gradient."""

    config_class = MelRVQConfig
    base_model_prefix = "mel_rvq"
    main_input_name = "input_values"

    def __init__(self, config: MelRVQConfig):
        super().__init__(config)
        self.mean = nn.Parameter(torch.zeros(config.n_mels), requires_grad=False)
        self.codebooks = nn.Parameter(torch.zeros(config.n_codebooks, config.codebook_size, config.n_mels), requires_grad=False)
        # the loudest training frame's bounds: each band's largest log-mel, and the largest log of a frame's total power
        self.band_max = nn.Parameter(torch.zeros(config.n_mels), requires_grad=False)
        self.frame_max = nn.Parameter(torch.zeros(1), requires_grad=False)
        self.post_init()

    def _init_weights(self, module):
        """Nothing to initialise: the state is set by fit_mel_rvq (or loaded)."""

    def _bank(self, like: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        return mel_bank(cfg.n_fft, cfg.n_mels, cfg.sampling_rate).to(device=like.device, dtype=torch.float64)

    def _window(self, like: torch.Tensor) -> torch.Tensor:
        return torch.hann_window(self.config.n_fft, device=like.device, dtype=torch.float64)

    def log_mel(self, wave: torch.Tensor) -> torch.Tensor:
        """[B, T] (T a multiple of hop) -> [B, n_mels, T // hop] float64 natural-log mel power."""
        cfg = self.config
        wave = wave.to(torch.float64)
        spec = torch.stft(wave, cfg.n_fft, cfg.hop_length, window=self._window(wave), return_complex=True)
        power = spec[..., : wave.shape[-1] // cfg.hop_length].abs().pow(2)
        return torch.log(self._bank(wave) @ power + cfg.log_floor)

    def encode_latent(self, wave: torch.Tensor) -> torch.Tensor:
        """[B, T] -> [B, n_mels, F]: the log-mel frames minus the mean frame (what the codes approximate)."""
        return self.log_mel(wave) - self.mean.to(torch.float64)[:, None]

    def quantize(self, latent: torch.Tensor, n_codebooks: int | None = None) -> torch.Tensor:
        """[B, D, F] latent -> [B, k, F] codes: each layer's nearest entry to what the layers
        before it left (greedy residual quantization, float64)."""
        residual = latent.to(torch.float64).transpose(1, 2)  # [B, F, D]
        codes = []
        for book in self.codebooks[: n_codebooks or self.config.n_codebooks].to(torch.float64):
            code = nearest_entry(residual, book)
            residual = residual - book[code]
            codes.append(code)
        return torch.stack(codes, dim=1)

    def layer_vectors(self, codes: torch.Tensor) -> torch.Tensor:
        """[B, k, F] codes -> [B, k, D, F]: each layer's codebook entry per frame."""
        return torch.stack([self.codebooks[i][codes[:, i]].transpose(1, 2) for i in range(codes.shape[1])], dim=1)

    def bounded_log_mel(self, latent: torch.Tensor) -> torch.Tensor:
        """[B, D, F] latent -> log-mel frames no louder than the training split's: each band at
        most its training maximum, each frame's total power at most the loudest training frame's.
        Codes the encoder gives for real audio are barely touched; an LM's arbitrary combination of
        codes cannot decode to audio beyond anything the codec was fitted on (DAC bounds its output
        with a tanh for the same reason)."""
        log_mel = torch.minimum(latent.to(torch.float64) + self.mean.to(torch.float64)[:, None], self.band_max.to(torch.float64)[:, None])
        excess = (torch.logsumexp(log_mel, dim=1, keepdim=True) - self.frame_max.to(torch.float64)).clamp_min(0.0)
        return log_mel - excess

    def linear_magnitude(self, latent: torch.Tensor) -> torch.Tensor:
        """[B, D, F] latent -> [B, n_fft // 2 + 1, F + 1] float32 STFT magnitude: the bounded
        log-mel back to linear power by non-negative least squares (multiplicative updates)."""
        cfg = self.config
        bank = self._bank(latent)
        mel = (torch.exp(self.bounded_log_mel(latent)) - cfg.log_floor).clamp_min(0.0)
        target = bank.T @ mel
        power = target / (bank.T @ bank.sum(dim=1, keepdim=True)).clamp_min(1e-12)
        for _ in range(NNLS_ITERATIONS):
            power = power * target / (bank.T @ (bank @ power)).clamp_min(1e-30)
        return nn.functional.pad(power.sqrt(), (0, 1), mode="replicate").to(torch.float32)  # centred STFT: F + 1 frames

    def synthesize(self, latent: torch.Tensor) -> torch.Tensor:
        """[B, D, F] latent -> [B, F * hop] waveform: `linear_magnitude`, then Griffin-Lim from a
        fixed random phase (seeded, so the same codes always give the same audio, alone or in a batch)."""
        cfg = self.config
        magnitude = self.linear_magnitude(latent)
        length, window = latent.shape[-1] * cfg.hop_length, self._window(latent).to(torch.float32)
        # Every clip of a batch starts from the same phases (drawn frame by frame, so frame f's do
        # not depend on the length either): a clip decodes the same alone or batched.
        generator = torch.Generator(device="cpu").manual_seed(0)
        phase = torch.rand(magnitude.shape[-1], magnitude.shape[-2], generator=generator).T.to(latent.device) * (2 * np.pi)
        spec = torch.polar(magnitude, phase.expand_as(magnitude))
        previous = spec
        for _ in range(cfg.griffin_lim_iters):
            wave = torch.istft(spec, cfg.n_fft, cfg.hop_length, window=window, length=length)
            rebuilt = torch.stft(wave, cfg.n_fft, cfg.hop_length, window=window, return_complex=True)
            accelerated = rebuilt + GRIFFIN_LIM_MOMENTUM * (rebuilt - previous)
            previous = rebuilt
            spec = magnitude * accelerated / accelerated.abs().clamp_min(1e-12)
        return torch.istft(spec, cfg.n_fft, cfg.hop_length, window=window, length=length)

    def synthesize_with_phase(self, latent: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """[B, D, F] latent, [B, F * hop] reference waves -> waveform: `linear_magnitude` with the
        reference's own STFT phase (an oracle no decoder has). What the codes' magnitudes are
        worth once phase recovery is out of the way: benchmarks/codec_depth.py compares it with
        `synthesize` to separate the quantizer's depth gain from Griffin-Lim's error."""
        cfg = self.config
        window = self._window(latent)
        phase = torch.stft(reference.to(torch.float64), cfg.n_fft, cfg.hop_length, window=window, return_complex=True).angle()
        spec = torch.polar(self.linear_magnitude(latent).to(torch.float64), phase)
        return torch.istft(spec, cfg.n_fft, cfg.hop_length, window=window, length=latent.shape[-1] * cfg.hop_length)


@CODECS.register("mel")
class MelRVQCodec(FolderCodec):
    """The Codec interface over MelRVQModel (saved and loaded as an HF-format folder)."""

    model_class, default_name, latent_dim_field = MelRVQModel, "mel", "n_mels"

    @torch.no_grad()
    def encode(self, wave: torch.Tensor) -> torch.Tensor:
        return self.model.quantize(self.model.encode_latent(self._pad_to_frames(wave)))

    def layer_features(self, codes: torch.Tensor) -> torch.Tensor:
        return self.model.layer_vectors(codes)

    @torch.no_grad()
    def decode_latent(self, latent: torch.Tensor) -> torch.Tensor:
        return self.model.synthesize(latent)


def fit_mel_rvq(config: MelRVQConfig, train_waves: np.ndarray, seed: int, max_frames: int, kmeans_iterations: int) -> tuple[MelRVQModel, list[dict]]:
    """Fit the mean frame and the codebooks on [N, T] training waves, layer by layer: k-means
    (k-means++ seeding) on what the layers before left of up to `max_frames` frames drawn at
    random. With kmeans_iterations=0 each codebook is the k-means++ seeding alone (the untrained
    baseline the codec stage compares against). Returns the model and one log row per layer."""
    if train_waves.ndim != 2 or len(train_waves) == 0:
        raise ValueError(f"training waves must be a non-empty [N, T] array, got shape {train_waves.shape}")
    model = MelRVQModel(config)
    hop = config.hop_length
    waves = torch.from_numpy(np.asarray(train_waves[:, : train_waves.shape[1] - train_waves.shape[1] % hop], dtype=np.float64))
    if waves.shape[1] == 0:
        raise ValueError(f"training clips of {train_waves.shape[1]} samples are shorter than one codec frame ({hop} samples)")
    frames = torch.cat([model.log_mel(waves[i : i + 32]) for i in range(0, len(waves), 32)]).transpose(1, 2).reshape(-1, config.n_mels)
    if len(frames) < config.codebook_size:
        raise ValueError(f"{len(frames)} training frames cannot fit {config.codebook_size} codebook entries")
    rng = np.random.default_rng(seed)
    picked = np.sort(rng.choice(len(frames), size=min(max_frames, len(frames)), replace=False))
    mean = frames.mean(dim=0)
    residual = (frames[picked] - mean).numpy()
    log = []
    for layer in range(config.n_codebooks):
        start = time.perf_counter()
        state, iterations = int(rng.integers(2**31)), 0
        if kmeans_iterations:
            kmeans = KMeans(config.codebook_size, init="k-means++", n_init=1, max_iter=kmeans_iterations, random_state=state).fit(residual)
            book, iterations = kmeans.cluster_centers_, int(kmeans.n_iter_)
        else:  # the seeding alone, no Lloyd iterations
            book, _ = kmeans_plusplus(residual, config.codebook_size, random_state=state)
        book_t = torch.from_numpy(book)
        nearest = nearest_entry(torch.from_numpy(residual), book_t)
        before = float((residual**2).mean())
        residual = residual - book[nearest.numpy()]
        usage = codebook_usage(nearest[None, None, :], config.codebook_size)[0]
        log.append({"layer": layer + 1, "frames": len(residual), "residual_mse_before": before, "residual_mse_after": float((residual**2).mean()),
                    "perplexity": usage["perplexity"], "dead_codes": usage["dead_codes"],
                    "kmeans_iterations": iterations, "seconds": round(time.perf_counter() - start, 3)})
        model.codebooks.data[layer] = book_t.to(torch.float32)
    model.mean.data = mean.to(torch.float32)
    model.band_max.data = frames.amax(dim=0).to(torch.float32)
    model.frame_max.data = torch.logsumexp(frames, dim=1).amax().reshape(1).to(torch.float32)
    return model.eval(), log
