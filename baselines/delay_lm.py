"""Delay-pattern language model: the AudioGen / MusicGen baseline (REFERENCES.md §3), our own writing.

One decoder-only transformer reads and predicts all K codebooks at once. With plain stacking the
K codes of a frame would be predicted independently of each other; the "delay" pattern shifts
codebook q right by q steps, so when step s predicts codebook q (frame s - q) it has already seen
the codebooks below q of that same frame (they sat at steps s - q .. s - 1). The cost is K - 1
extra steps, against K x more steps for full flattening. The layout is the `delay` pattern of
siren_bench/models/patterns.py.

  delayed step s:     0    1    2    3    4    5
  codebook 0:        c00  c01  c02  c03   .    .
  codebook 1:         .   c10  c11  c12  c13   .        ( . = pad, q = 1 shifted by one)
  codebook 2:         .    .   c20  c21  c22  c23

The input at step s is the sum over codebooks of per-codebook embeddings of the tokens at step
s - 1 (at s = 0, the sum of the special ids' embeddings: a learned start), plus sinusoidal
positions. Siren's `TemporalBlock`s (text cross-attention, causal self-attention, SwiGLU) do the
rest; K linear heads predict the K tokens of step s.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from baselines.base import BaselineSpec, Generator, NullCaption, masked_mean
from siren_bench.config import BlockShape
from siren_bench.models.patterns import CodebookPattern, delay
from siren_bench.models.sampling import SamplingConfig, guided, sample_codes
from siren_bench.models.siren import KVCache, RMSNorm, TemporalBlock, Text, sinusoidal_positions
from siren_bench.registry import SYSTEMS

# ---------------------------------------------------------------------------- configuration


@dataclass
class DelayLMConfig(BlockShape):
    layers: int = 4


def delay_lm_config(**fields) -> DelayLMConfig:
    """A config from `fields`; unknown names are refused. The published sizes (AudioGen medium)
    are conf/baselines/paper.yaml's."""
    unknown = set(fields) - set(DelayLMConfig.__dataclass_fields__)
    if unknown:
        raise ValueError(f"unknown DelayLMConfig fields: {sorted(unknown)}")
    return DelayLMConfig(**fields)


# ---------------------------------------------------------------------------- the model


class DelayPatternLM(Generator):
    """One causal transformer over the delayed code sequence. It embeds codes with its own
    per-codebook tables (one extra id, `codebook_size`, for pad and start), so `set_code_table`
    is the default no-op."""

    def __init__(self, config: DelayLMConfig):
        super().__init__()
        self.config = dataclasses.replace(config)  # own copy: models share nothing mutable
        K, V = config.n_codebooks, config.codebook_size
        self.special = V  # pad / start id
        self.embeddings = nn.ModuleList(nn.Embedding(V + 1, config.dim) for _ in range(K))
        self.null_caption = NullCaption(config.text_dim, config.init_std)
        self.blocks = nn.ModuleList(TemporalBlock(config, causal=True) for _ in range(config.layers))
        self.norm = RMSNorm(config.dim, config.norm_eps)
        self.heads = nn.ModuleList(nn.Linear(config.dim, V, bias=False) for _ in range(K))
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=config.init_std)

    # ------------------------------------------------------------------ checks

    def _check(self, text: Text, n_frames: int, codes: torch.Tensor | None = None,
               frame_mask: torch.Tensor | None = None) -> None:
        c = self.config
        if codes is not None:
            if codes.dim() != 3 or codes.shape[1] != c.n_codebooks:
                raise ValueError(f"codes must be [B, {c.n_codebooks}, F], got {tuple(codes.shape)}")
            if frame_mask is not None and tuple(frame_mask.shape) != (codes.shape[0], codes.shape[2]):
                raise ValueError(f"frame_mask must be [{codes.shape[0]}, {codes.shape[2]}], got {tuple(frame_mask.shape)}")
            real = codes if frame_mask is None else codes.transpose(1, 2)[frame_mask.bool()]  # padding may hold anything
            if real.numel() and (int(real.min()) < 0 or int(real.max()) >= c.codebook_size):
                raise ValueError(f"codes must lie in [0, {c.codebook_size}), got [{int(real.min())}, {int(real.max())}]")
        if not 1 <= n_frames <= c.max_frames:
            raise ValueError(f"n_frames must be in 1..{c.max_frames}, got {n_frames}")
        B = text.tokens.shape[0] if codes is None else codes.shape[0]
        if text.tokens.dim() != 3 or text.tokens.shape[0] != B or text.tokens.shape[2] != c.text_dim \
                or tuple(text.mask.shape) != tuple(text.tokens.shape[:2]) or tuple(text.pooled.shape) != (B, c.text_dim):
            raise ValueError(f"text must be tokens [{B}, L, {c.text_dim}], mask [{B}, L], pooled [{B}, {c.text_dim}]; got "
                             f"{tuple(text.tokens.shape)}, {tuple(text.mask.shape)}, {tuple(text.pooled.shape)}")

    def pattern(self, n_frames: int) -> CodebookPattern:
        """Codebook q of frame t is produced at step t + q."""
        return delay(self.config.n_codebooks, n_frames)

    # ------------------------------------------------------------------ teacher-forced forward

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens [B, K, T] (codes or the special id) -> [B, T, dim], summed over codebooks."""
        return sum(table(tokens[:, q]) for q, table in enumerate(self.embeddings))

    def logits(self, x: torch.Tensor, text: Text, positions: torch.Tensor, caches: list[KVCache] | None = None) -> torch.Tensor:
        """Step inputs x [B, T, dim] at `positions` [T] -> per-step logits [B, K, T, V]."""
        x = x + sinusoidal_positions(positions, self.config.dim).to(x.dtype)
        for i, block in enumerate(self.blocks):
            x = block(x, text.tokens, text.mask, cache=None if caches is None else caches[i])
        x = self.norm(x)
        return torch.stack([head(x) for head in self.heads], dim=1)

    def forward(self, codes: torch.Tensor, text: Text, drop: torch.Tensor | None = None,
                frame_mask: torch.Tensor | None = None) -> torch.Tensor:
        """codes [B, K, F] -> logits [B, K, F, V] in the frame layout: logits[:, q, t] predict
        codes[:, q, t] from delayed steps before t + q (teacher forcing).

        Under the delay, codebook q of frame t reads the lower codebooks of frames up to
        t + q - 1, so a clip's last frames read past its end. Frames outside `frame_mask` [B, F]
        therefore enter as the pad id, as they do when generating exactly that many frames."""
        self._check(text, codes.shape[-1], codes, frame_mask)
        text = self.null_caption(text, drop)
        if frame_mask is not None:
            codes = codes.masked_fill(~frame_mask.bool()[:, None, :], self.special)
        pattern = self.pattern(codes.shape[-1])
        delayed = pattern.sequence(codes, self.special)  # [B, K, S]
        start = torch.full_like(delayed[:, :, :1], self.special)
        inputs = torch.cat([start, delayed[:, :, :-1]], dim=2)  # step s reads step s - 1
        steps = torch.arange(delayed.shape[2], device=codes.device)
        return pattern.frames(self.logits(self.embed(inputs), text, steps))

    def loss(self, codes: torch.Tensor, text: Text, frame_mask: torch.Tensor | None = None,
             drop: torch.Tensor | None = None, n_frames: float | None = None) -> torch.Tensor:
        """Cross-entropy over the delayed grid's real positions (the undelayed logits are exactly
        those) whose frame is valid under `frame_mask`, per codebook and frame; divided by
        n_frames x K when `n_frames` is given."""
        logits = self(codes, text, drop, frame_mask)  # [B, K, F, V]
        targets = codes if frame_mask is None else codes.masked_fill(~frame_mask.bool()[:, None, :], 0)  # weight 0 there
        per_token = F.cross_entropy(logits.flatten(0, 2).float(), targets.flatten(), reduction="none").view_as(codes)
        return masked_mean(per_token, frame_mask, n_frames, per_frame=self.config.n_codebooks)

    # ------------------------------------------------------------------ cached sampling

    @torch.no_grad()
    def generate(self, text: Text, n_frames: int, sampling: SamplingConfig, generator: torch.Generator | None = None,
                 return_logits: bool = False):
        """codes [B, K, n_frames] int64 (and, if asked, the conditional logits [B, K, n_frames, V]).

        Steps s = 0 .. n_frames + K - 2, one KV cache per layer; at step s every codebook whose
        delayed position is real is sampled, the others get the pad id. Guidance != 1 runs the
        captions and the null caption as one doubled batch and samples from `guided` logits."""
        self._check(text, n_frames)
        K, V = self.config.n_codebooks, self.config.codebook_size
        B = text.tokens.shape[0]
        use_guidance = sampling.guided
        cond_text = self.null_caption.doubled(text) if use_guidance else text
        rows = 2 * B if use_guidance else B
        device = text.tokens.device
        pattern = self.pattern(n_frames)
        valid = pattern.valid(device)  # [K, S]
        n_steps = valid.shape[1]
        delayed = torch.full((rows, K, n_steps), self.special, dtype=torch.long, device=device)
        caches = [KVCache() for _ in self.blocks]
        previous = torch.full((rows, K, 1), self.special, dtype=torch.long, device=device)  # start
        step_logits = []
        for s in range(n_steps):
            logits = self.logits(self.embed(previous), cond_text, torch.tensor([s], device=device), caches)[:, :, 0]  # [rows, K, V]
            live = valid[:, s].nonzero()[:, 0]  # codebooks with a real code at this step
            picked = logits[:, live]  # [rows, k, V]
            if use_guidance:
                chosen = sample_codes(guided(picked, sampling.guidance).reshape(-1, V), sampling, generator).view(B, -1)
                chosen = torch.cat([chosen, chosen])
            else:
                chosen = sample_codes(picked.reshape(-1, V), sampling, generator).view(rows, -1)
            delayed[:, live, s] = chosen
            previous = delayed[:, :, s : s + 1]
            if return_logits:
                step_logits.append(logits[:B])
        codes = pattern.frames(delayed[:B])
        if return_logits:
            return codes, pattern.frames(torch.stack(step_logits, dim=2))
        return codes


SYSTEMS.add("delay_lm", BaselineSpec(
    "delay_lm", "delay-pattern LM: one transformer over all codebooks, codebook q delayed q steps (AudioGen / MusicGen)",
    seed_offset=200, config_class=DelayLMConfig, model_class=DelayPatternLM))
