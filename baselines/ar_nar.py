"""VALL-E-style baseline: an autoregressive (AR) model for codebook 0, then a non-autoregressive
(NAR) model for codebooks 1..K-1, one codebook per pass (Wang et al., 2023, "Neural Codec
Language Models are Zero-Shot Text to Speech Synthesizers"; our own writing).

Why two models: codebook 0 carries most of the content and its frames depend strongly on each
other, so it is generated frame by frame; the finer codebooks mostly refine a frame given the
coarser ones, so each can be predicted for all frames at once, K-1 passes in all instead of
K x F steps.

- AR: a causal decoder over codebook 0. At frame t its input is a learned embedding of the
  codebook-0 code at t-1 (a learned start vector at t = 0) plus sinusoidal positions; Siren's
  TemporalBlocks (text cross-attention, causal self-attention, SwiGLU); one head over V.
  Generation is step by step with a KV cache. Clips have a fixed frame count, so no end token.
- NAR: a bidirectional transformer. To predict codebook k (1 <= k < K) at every frame it reads,
  at each frame, the SUM of its own learned embeddings of codebooks 0..k-1, plus a learned stage
  embedding for k and positions, with text cross-attention; one head per target codebook.
  Training draws one stage per batch row uniformly from 1..K-1, as VALL-E does; generation
  takes the argmax of each pass by default (VALL-E's NAR is greedy), or samples.

Text conditioning is cross-attention to the shared caption encoder's token states (VALL-E
prefixes phonemes instead); both parts read the same learned null caption, so classifier-free
guidance drops the caption for the whole model at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from baselines.base import BaselineSpec, Generator, NullCaption, masked_mean
from siren_bench.config import BlockShape
from siren_bench.models.patterns import CodebookPattern, coarse_first
from siren_bench.models.sampling import SamplingConfig, guided, sample_codes
from siren_bench.models.siren import KVCache, RMSNorm, TemporalBlock, Text, sinusoidal_positions
from siren_bench.registry import SYSTEMS

NAR_SAMPLING = ("greedy", "sample")


@dataclass
class ArNarConfig(BlockShape):
    ar_layers: int = 3
    nar_layers: int = 3
    nar_sampling: str = "greedy"  # "greedy": argmax per NAR pass (VALL-E); "sample": use the SamplingConfig

    def __post_init__(self):
        if self.n_codebooks < 2:
            raise ValueError(f"an AR + NAR model needs n_codebooks >= 2, got {self.n_codebooks}")
        if self.nar_sampling not in NAR_SAMPLING:
            raise ValueError(f"nar_sampling must be one of {NAR_SAMPLING}, got {self.nar_sampling!r}")


class ArDecoder(nn.Module):
    """Causal decoder over codebook 0: frame t sees the codes of frames < t and the caption."""

    def __init__(self, config: ArNarConfig):
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.codebook_size, config.dim)
        self.start = nn.Parameter(torch.zeros(config.dim))
        self.blocks = nn.ModuleList(TemporalBlock(config, causal=True) for _ in range(config.ar_layers))
        self.norm = RMSNorm(config.dim, config.norm_eps)
        self.head = nn.Linear(config.dim, config.codebook_size, bias=False)

    def forward(self, first: torch.Tensor, text: Text) -> torch.Tensor:
        """first [B, F] codebook-0 codes -> teacher-forced logits [B, F, V] (frame t from codes < t)."""
        B, n_frames = first.shape
        x = torch.cat([self.start.expand(B, 1, -1), self.embed(first[:, :-1])], dim=1)
        x = x + sinusoidal_positions(torch.arange(n_frames, device=first.device), self.config.dim)
        for block in self.blocks:
            x = block(x, text.tokens, text.mask)
        return self.head(self.norm(x))

    def new_cache(self) -> list[KVCache]:
        return [KVCache() for _ in self.blocks]

    def step(self, previous: torch.Tensor | None, t: int, text: Text, cache: list[KVCache]) -> torch.Tensor:
        """One frame: previous [B] the code of frame t-1 (None at t = 0) -> logits [B, V] of frame t."""
        B = text.tokens.shape[0]
        x = self.start.expand(B, -1) if previous is None else self.embed(previous)
        x = (x + sinusoidal_positions(torch.tensor([t], device=x.device), self.config.dim))[:, None]
        for block, layer_cache in zip(self.blocks, cache):
            x = block(x, text.tokens, text.mask, cache=layer_cache)
        return self.head(self.norm(x))[:, 0]


class NarDecoder(nn.Module):
    """Bidirectional transformer predicting codebook k at all frames from codebooks 0..k-1."""

    def __init__(self, config: ArNarConfig):
        super().__init__()
        self.config = config
        K, V = config.n_codebooks, config.codebook_size
        # codebooks 0..K-2 are inputs (codebook K-1 never is); row j * V + c is codebook j's entry c
        self.embed = nn.Embedding((K - 1) * V, config.dim)
        self.stage = nn.Embedding(K - 1, config.dim)  # row k-1: "now predict codebook k"
        self.blocks = nn.ModuleList(TemporalBlock(config, causal=False) for _ in range(config.nar_layers))
        self.norm = RMSNorm(config.dim, config.norm_eps)
        self.heads = nn.ModuleList(nn.Linear(config.dim, V, bias=False) for _ in range(K - 1))  # heads[k-1] -> codebook k

    def forward(self, codes: torch.Tensor, stage: torch.Tensor, text: Text) -> torch.Tensor:
        """codes [B, K, F] (only codebooks < stage are read), stage [B] in 1..K-1 -> logits [B, F, V]
        of codebook `stage` of each row."""
        B, K, n_frames = codes.shape
        inputs = codes[:, : K - 1]
        offsets = torch.arange(K - 1, device=codes.device)[None, :, None] * self.config.codebook_size
        vectors = self.embed(inputs + offsets)  # [B, K-1, F, dim]
        below = torch.arange(K - 1, device=codes.device)[None] < stage[:, None]  # [B, K-1]
        x = torch.where(below[:, :, None, None], vectors, torch.zeros_like(vectors)).sum(1)
        x = x + self.stage(stage - 1)[:, None]
        x = x + sinusoidal_positions(torch.arange(n_frames, device=codes.device), self.config.dim)
        for block in self.blocks:
            x = block(x, text.tokens, text.mask)
        weight = torch.stack([head.weight for head in self.heads])[stage - 1]  # [B, V, dim]
        return torch.einsum("bfd,bvd->bfv", self.norm(x), weight)


class ArNarLM(Generator):
    """AR (codebook 0) + NAR (codebooks 1..K-1) over the pipeline's RVQ codes.

    Codes are embedded with the model's own learned tables, so `set_code_table` stays the
    base class's no-op: the codec's decode vectors are not used."""

    output = "codes"

    def __init__(self, config: ArNarConfig):
        super().__init__()
        self.config = config
        self.null = NullCaption(config.text_dim, config.init_std)  # shared by AR and NAR
        self.ar = ArDecoder(config)
        self.nar = NarDecoder(config)
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=config.init_std)
        nn.init.normal_(self.ar.start, std=config.init_std)

    # ------------------------------------------------------------------ checks

    def _check(self, codes: torch.Tensor, text: Text) -> None:
        K, T = self.config.n_codebooks, self.config.max_frames
        if codes.dim() != 3 or codes.shape[1] != K or not 1 <= codes.shape[2] <= T:
            raise ValueError(f"codes must be [B, {K}, 1..{T}], got {tuple(codes.shape)}")
        if codes.dtype.is_floating_point or codes.dtype == torch.bool:
            raise ValueError(f"codes must be integer, got {codes.dtype}")
        self._check_text(text, codes.shape[0])

    def _check_text(self, text: Text, batch: int | None = None) -> None:
        tokens = text.tokens
        if tokens.dim() != 3 or tokens.shape[-1] != self.config.text_dim or (batch is not None and tokens.shape[0] != batch):
            raise ValueError(f"text tokens must be [{batch if batch is not None else 'B'}, L, {self.config.text_dim}], got {tuple(tokens.shape)}")
        if tuple(text.mask.shape) != tuple(tokens.shape[:2]) or tuple(text.pooled.shape) != (tokens.shape[0], self.config.text_dim):
            raise ValueError(f"text mask {tuple(text.mask.shape)} / pooled {tuple(text.pooled.shape)} do not match tokens {tuple(tokens.shape)}")

    def _stage(self, stage, batch: int, device) -> torch.Tensor:
        stage = torch.as_tensor(stage, dtype=torch.long, device=device).expand(batch)
        if bool((stage < 1).any()) or bool((stage >= self.config.n_codebooks).any()):
            raise ValueError(f"NAR stage must be in 1..{self.config.n_codebooks - 1}, got {stage.tolist()}")
        return stage

    def pattern(self, n_frames: int) -> CodebookPattern:
        """Codebook 0 frame by frame, then each finer codebook for every frame at once."""
        return coarse_first(self.config.n_codebooks, n_frames)

    # ------------------------------------------------------------------ teacher-forced forward and loss

    def forward(self, codes: torch.Tensor, text: Text, drop: torch.Tensor | None = None) -> torch.Tensor:
        """codes [B, K, F] -> logits [B, K, F, V]: the AR's for codebook 0 and each NAR pass's for
        codebooks 1..K-1, all teacher-forced (what generation computes, given the true codes)."""
        nar = [self.forward_nar(codes, k, text, drop) for k in range(1, self.config.n_codebooks)]
        return torch.stack([self.forward_ar(codes, text, drop), *nar], dim=1)

    def forward_ar(self, codes: torch.Tensor, text: Text, drop: torch.Tensor | None = None) -> torch.Tensor:
        """codes [B, K, F] -> AR logits [B, F, V] for codebook 0 (frame t from frames < t)."""
        self._check(codes, text)
        return self.ar(codes[:, 0], self.null(text, drop))

    def forward_nar(self, codes: torch.Tensor, stage, text: Text, drop: torch.Tensor | None = None) -> torch.Tensor:
        """codes [B, K, F], stage (int or [B]) in 1..K-1 -> NAR logits [B, F, V] for codebook `stage`."""
        self._check(codes, text)
        return self.nar(codes, self._stage(stage, codes.shape[0], codes.device), self.null(text, drop))

    def loss(self, codes: torch.Tensor, text: Text, frame_mask: torch.Tensor | None = None,
             drop: torch.Tensor | None = None, n_frames: float | None = None) -> torch.Tensor:
        """AR cross-entropy (codebook 0) + NAR cross-entropy (each row's stage, drawn uniformly from
        1..K-1 with torch's global RNG, so torch.manual_seed fixes it as it fixes dropout), each
        averaged over valid frames (`n_frames` overrides the count, see `masked_mean`)."""
        self._check(codes, text)
        B, K, n = codes.shape
        if frame_mask is not None and tuple(frame_mask.shape) != (B, n):
            raise ValueError(f"frame_mask must be [{B}, {n}], got {tuple(frame_mask.shape)}")
        text = self.null(text, drop)
        ar_logits = self.ar(codes[:, 0], text)
        ar_ce = F.cross_entropy(ar_logits.flatten(0, 1).float(), codes[:, 0].flatten(), reduction="none").view(B, n)
        stage = torch.randint(1, K, (B,), device=codes.device)
        nar_logits = self.nar(codes, stage, text)
        targets = codes.gather(1, stage[:, None, None].expand(B, 1, n))[:, 0]
        nar_ce = F.cross_entropy(nar_logits.flatten(0, 1).float(), targets.flatten(), reduction="none").view(B, n)
        return masked_mean(ar_ce, frame_mask, n_frames) + masked_mean(nar_ce, frame_mask, n_frames)

    # ------------------------------------------------------------------ generation

    @torch.no_grad()
    def generate(self, text: Text, n_frames: int, sampling: SamplingConfig, generator: torch.Generator | None = None,
                 return_logits: bool = False):
        """codes [B, K, n_frames]: codebook 0 sampled frame by frame (KV cache), then the NAR passes.
        With `return_logits`, also the AR's conditional logits [B, n_frames, V] at each step."""
        if not 1 <= n_frames <= self.config.max_frames:
            raise ValueError(f"n_frames must be in 1..{self.config.max_frames}, got {n_frames}")
        self._check_text(text)
        B = text.tokens.shape[0]
        guide = sampling.guided
        context = self.null.doubled(text) if guide else text  # rows B..2B-1: the null caption
        cache = self.ar.new_cache()
        first = torch.zeros(B, n_frames, dtype=torch.long, device=text.tokens.device)
        steps, previous = [], None
        for t in range(n_frames):
            logits = self.ar.step(previous, t, context, cache)
            steps.append(logits[:B])
            first[:, t] = sample_codes(guided(logits, sampling.guidance) if guide else logits, sampling, generator)
            previous = torch.cat([first[:, t], first[:, t]]) if guide else first[:, t]
        codes = self.complete(first, text, sampling, generator)
        return (codes, torch.stack(steps, dim=1)) if return_logits else codes

    @torch.no_grad()
    def complete(self, first: torch.Tensor, text: Text, sampling: SamplingConfig,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """The NAR half of generation: codebook 0 [B, F] -> codes [B, K, F], one pass per codebook
        1..K-1. Greedy (config.nar_sampling = "greedy") passes ignore temperature / top-k / top-p
        and the generator, but not guidance, so the result is a function of codebook 0 and text."""
        B, n_frames = first.shape
        K = self.config.n_codebooks
        if not 1 <= n_frames <= self.config.max_frames:
            raise ValueError(f"n_frames must be in 1..{self.config.max_frames}, got {n_frames}")
        self._check_text(text, B)
        guide = sampling.guided
        context = self.null.doubled(text) if guide else text
        rows = 2 * B if guide else B
        codes = torch.zeros(rows, K, n_frames, dtype=torch.long, device=first.device)
        codes[:, 0] = torch.cat([first, first]) if guide else first
        for k in range(1, K):
            logits = self.nar(codes, torch.full((rows,), k, device=first.device), context)  # [rows, F, V]
            if guide:
                logits = guided(logits, sampling.guidance)
            if self.config.nar_sampling == "greedy":
                chosen = logits.argmax(-1)
            else:
                chosen = sample_codes(logits.flatten(0, 1), sampling, generator).view(B, n_frames)
            codes[:, k] = torch.cat([chosen, chosen]) if guide else chosen
        return codes[:B]


SYSTEMS.add("ar_nar", BaselineSpec(
    "ar_nar", "AR + NAR LM: autoregressive first codebook, non-autoregressive rest (VALL-E)",
    seed_offset=300, config_class=ArNarConfig, model_class=ArNarLM))
