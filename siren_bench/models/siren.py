"""Siren Stage 1: isolated expert transformers over groups of RVQ codebooks, linked by causal
conditioning (REFERENCES.md §2 describes the official code; this is our own writing of it).

One `SirenExpert` predicts the codebooks of its group (default two per expert, six experts for
12 codebooks). Each expert has two paths:

- temporal: at frame t its input is a learned start vector (t = 0) or the projected SUM of the
  embeddings of all K codebooks at frame t-1, plus sinusoidal positions; blocks of text
  cross-attention, causal self-attention and SwiGLU;
- depth, per frame, a causal sequence of g + 1 slots: [temporal(t), before(t), before(t) + e_0,
  ..., before(t) + e_0 + ... + e_{g-2}], where before(t) = pooled text + the projected sum of
  all codebooks BELOW the group at frame t (the causal conditioning) and e_i the projected
  embedding of the group's i-th codebook at frame t; slot j + 1 predicts the group's codebook j.

Codes are embedded as their codec decode contribution (the frozen table `code_table`, one D-dim
vector per (codebook, entry), the codec's `layer_features`), then a trainable projector D -> dim.
Experts share no parameters; generation interleaves them frame by frame (`collaborative.py`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from siren_bench.config import SirenConfig


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        normed = x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + self.eps)
        return normed.type_as(x) * self.weight


class SwiGLU(nn.Module):
    def __init__(self, dim: int, hidden: int, dropout: float):
        super().__init__()
        self.gate = nn.Linear(dim, hidden, bias=False)
        self.up = nn.Linear(dim, hidden, bias=False)
        self.down = nn.Linear(hidden, dim, bias=False)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.down(F.silu(self.gate(x)) * self.up(x)))


class KVCache:
    """Keys and values of one attention layer, grown one step at a time: [B, H_kv, T, head]."""

    def __init__(self):
        self.k: torch.Tensor | None = None
        self.v: torch.Tensor | None = None

    def extend(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.k = k if self.k is None else torch.cat([self.k, k], dim=2)
        self.v = v if self.v is None else torch.cat([self.v, v], dim=2)
        return self.k, self.v


class Attention(nn.Module):
    """Multi-head attention with grouped KV heads through scaled_dot_product_attention. Self-
    attention is causal unless `causal=False` (the baselines' non-autoregressive and diffusion
    models); cross-attention reads `context` (text tokens) under its key mask."""

    def __init__(self, config: SirenConfig, context_dim: int | None = None, causal: bool = True):
        super().__init__()
        self.causal = causal
        if config.dim % config.n_heads or config.n_heads % config.n_kv_heads:
            raise ValueError(f"dim {config.dim}, n_heads {config.n_heads}, n_kv_heads {config.n_kv_heads}: heads must divide dim and kv heads divide heads")
        self.n_heads, self.n_kv_heads = config.n_heads, config.n_kv_heads
        self.head_dim = config.dim // config.n_heads
        kv_dim = self.n_kv_heads * self.head_dim
        self.q = nn.Linear(config.dim, config.dim, bias=False)
        self.k = nn.Linear(context_dim or config.dim, kv_dim, bias=False)
        self.v = nn.Linear(context_dim or config.dim, kv_dim, bias=False)
        self.out = nn.Linear(config.dim, config.dim, bias=False)
        self.dropout = config.dropout

    def _heads(self, x: torch.Tensor, n: int) -> torch.Tensor:
        return x.view(x.shape[0], x.shape[1], n, self.head_dim).transpose(1, 2)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None, context_mask: torch.Tensor | None = None,
                cache: KVCache | None = None) -> torch.Tensor:
        """x [B, T, dim]. Self-attention (context None): causal over the cache plus x. Cross-
        attention: attends to context [B, L, context_dim] where context_mask [B, L] is True."""
        q = self._heads(self.q(x), self.n_heads)
        source = x if context is None else context
        k, v = self._heads(self.k(source), self.n_kv_heads), self._heads(self.v(source), self.n_kv_heads)
        past = 0
        if cache is not None:
            past = 0 if cache.k is None else cache.k.shape[2]
            k, v = cache.extend(k, v)
        if context is None and not self.causal:
            mask = None
        elif context is None:
            # query i sits at absolute position past + i and may see keys 0..past + i
            mask = torch.ones(x.shape[1], k.shape[2], dtype=torch.bool, device=x.device).tril(diagonal=past)
        else:
            mask = context_mask[:, None, None, :].bool()
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0,
                                           enable_gqa=self.n_kv_heads != self.n_heads)
        return self.out(y.transpose(1, 2).reshape(x.shape[0], x.shape[1], -1))


class TemporalBlock(nn.Module):
    """Text cross-attention, self-attention (causal unless `causal=False`), SwiGLU; pre-norm."""

    def __init__(self, config: SirenConfig, causal: bool = True):
        super().__init__()
        self.cross_norm = RMSNorm(config.dim, config.norm_eps)
        self.cross = Attention(config, context_dim=config.text_dim)
        self.self_norm = RMSNorm(config.dim, config.norm_eps)
        self.attn = Attention(config, causal=causal)
        self.mlp_norm = RMSNorm(config.dim, config.norm_eps)
        self.mlp = SwiGLU(config.dim, config.ffn_hidden, config.dropout)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x, text, text_mask, cache: KVCache | None = None):
        x = x + self.dropout(self.cross(self.cross_norm(x), text, text_mask))
        x = x + self.dropout(self.attn(self.self_norm(x), cache=cache))
        return x + self.mlp(self.mlp_norm(x))


class DepthBlock(nn.Module):
    def __init__(self, config: SirenConfig):
        super().__init__()
        self.self_norm = RMSNorm(config.dim, config.norm_eps)
        self.attn = Attention(config)
        self.mlp_norm = RMSNorm(config.dim, config.norm_eps)
        self.mlp = SwiGLU(config.dim, config.ffn_hidden, config.dropout)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x, cache: KVCache | None = None):
        x = x + self.dropout(self.attn(self.self_norm(x), cache=cache))
        return x + self.mlp(self.mlp_norm(x))


def sinusoidal_positions(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """[T] integer positions -> [T, dim] (sin on the first half of the channels, cos on the rest)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=positions.device) / half)
    angles = positions.float()[:, None] * freqs[None]
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


@dataclass
class Text:
    """Conditioning as every expert reads it: token states, their mask and the pooled vector."""

    tokens: torch.Tensor  # [B, L, text_dim]
    mask: torch.Tensor  # [B, L] bool
    pooled: torch.Tensor  # [B, text_dim]

    def to(self, device: torch.device | str) -> "Text":
        return Text(self.tokens.to(device), self.mask.to(device), self.pooled.to(device))

    def select(self, index) -> "Text":
        """The rows `index` picks (a slice, or integer indices)."""
        index = index if isinstance(index, slice) else torch.as_tensor(index)
        return Text(self.tokens[index], self.mask[index], self.pooled[index])


def drop_captions(text: Text, drop: torch.Tensor | None, null_tokens: torch.Tensor, null_pooled: torch.Tensor) -> Text:
    """Rows where `drop` is True get the null caption: one learned token [1, text_dim] (the rest
    masked out) and a learned pooled vector [text_dim]; classifier-free guidance's unconditional."""
    if drop is None or not bool(drop.any()):
        return text
    B, L, _ = text.tokens.shape
    tokens = F.pad(null_tokens, (0, 0, 0, L - 1))[None].expand(B, L, -1)
    mask = torch.zeros(B, L, dtype=torch.bool, device=text.mask.device)
    mask[:, 0] = True
    d = drop[:, None]
    return Text(torch.where(d[..., None], tokens, text.tokens), torch.where(d, mask, text.mask.bool()),
                torch.where(d, null_pooled[None], text.pooled))


class SirenExpert(nn.Module):
    def __init__(self, config: SirenConfig, group: list[int]):
        super().__init__()
        self.config, self.group = config, list(group)
        K, V = config.n_codebooks, config.codebook_size
        # frozen: row k * V + c is codebook k's entry c as the codec decodes it
        self.code_table = nn.Embedding(K * V, config.code_dim)
        self.code_table.weight.requires_grad_(False)
        self.projector = nn.Linear(config.code_dim, config.dim, bias=False)
        self.start = nn.Parameter(torch.zeros(config.dim))
        self.text_pool = nn.Linear(config.text_dim, config.dim, bias=False)
        self.null_tokens = nn.Parameter(torch.zeros(1, config.text_dim))  # caption dropout (CFG)
        self.null_pooled = nn.Parameter(torch.zeros(config.text_dim))
        self.temporal = nn.ModuleList(TemporalBlock(config) for _ in range(config.temporal_layers))
        self.temporal_norm = RMSNorm(config.dim, config.norm_eps)
        self.slot_embedding = nn.Parameter(torch.zeros(len(self.group) + 1, config.dim))
        self.depth = nn.ModuleList(DepthBlock(config) for _ in range(config.depth_layers))
        self.depth_norm = RMSNorm(config.dim, config.norm_eps)
        self.heads = nn.ModuleList(nn.Linear(config.dim, V, bias=False) for _ in self.group)
        for parameter in (*[m.weight for m in self.modules() if isinstance(m, nn.Linear)],
                          self.start, self.null_tokens, self.null_pooled, self.slot_embedding):
            nn.init.normal_(parameter, std=config.init_std)

    # ------------------------------------------------------------------ inputs

    def set_code_table(self, table: torch.Tensor) -> None:
        """table [K, V, D]: each codebook entry's decode contribution (codec.layer_features)."""
        K, V, D = self.config.n_codebooks, self.config.codebook_size, self.config.code_dim
        if tuple(table.shape) != (K, V, D):
            raise ValueError(f"code table must be [{K}, {V}, {D}], got {tuple(table.shape)}")
        with torch.no_grad():
            self.code_table.weight.copy_(table.reshape(K * V, D))

    def code_vectors(self, codes: torch.Tensor) -> torch.Tensor:
        """[B, k, F] codes of codebooks 0..k-1 -> [B, k, F, D] frozen decode vectors."""
        offsets = torch.arange(codes.shape[1], device=codes.device)[None, :, None] * self.config.codebook_size
        return self.code_table(codes + offsets)

    def condition(self, text: Text, drop: torch.Tensor | None) -> Text:
        """Replace the captions of rows where `drop` is True by the learned null caption."""
        return drop_captions(text, drop, self.null_tokens, self.null_pooled)

    # ------------------------------------------------------------------ teacher-forced forward

    def forward(self, codes: torch.Tensor, text: Text, drop: torch.Tensor | None = None) -> torch.Tensor:
        """codes [B, K, F] (all codebooks) -> logits [B, g, F, V] for this expert's codebooks."""
        B, K, n_frames = codes.shape
        if K != self.config.n_codebooks or n_frames > self.config.max_frames:
            raise ValueError(f"codes must be [B, {self.config.n_codebooks}, F <= {self.config.max_frames}], got {tuple(codes.shape)}")
        text = self.condition(text, drop)
        vectors = self.code_vectors(codes)  # [B, K, F, D]
        previous = self.projector(vectors.sum(1)[:, :-1])  # frame t-1's sum feeds frame t
        x = torch.cat([self.start.expand(B, 1, -1), previous], dim=1)
        x = x + sinusoidal_positions(torch.arange(n_frames, device=codes.device), self.config.dim)
        for block in self.temporal:
            x = block(x, text.tokens, text.mask)
        hidden = self.temporal_norm(x)  # [B, F, dim]
        slots = self._depth_inputs(hidden, vectors, text.pooled)  # [B, F, g + 1, dim]
        y = slots.reshape(B * n_frames, len(self.group) + 1, -1)
        for block in self.depth:
            y = block(y)
        y = self.depth_norm(y).reshape(B, n_frames, len(self.group) + 1, -1)
        return torch.stack([head(y[:, :, j + 1]) for j, head in enumerate(self.heads)], dim=1)

    def _depth_inputs(self, hidden: torch.Tensor, vectors: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
        """[temporal, before, before + e_0, ...] per frame, with slot embeddings: [B, F, g + 1, dim]."""
        first = self.group[0]
        below = vectors[:, :first].sum(1) if first else torch.zeros_like(vectors[:, 0])
        before = self.text_pool(pooled)[:, None] + self._conditioning(below)
        own = self.projector(vectors[:, self.group[:-1]])  # [B, g - 1, F, dim]
        running = before[:, None] + torch.cat([torch.zeros_like(own[:, :1]), own.cumsum(1)], dim=1) if len(self.group) > 1 else before[:, None]
        slots = torch.cat([hidden[:, None], running], dim=1).transpose(1, 2)  # [B, F, g + 1, dim]
        return slots + self.slot_embedding

    def _conditioning(self, below: torch.Tensor) -> torch.Tensor:
        """The causal conditioning: the projected sum of the codebooks below the group (zero
        when the ablation turns it off)."""
        projected = self.projector(below)
        return projected if self.config.causal_conditioning else torch.zeros_like(projected)

    def loss(self, codes: torch.Tensor, text: Text, frame_mask: torch.Tensor | None = None,
             drop: torch.Tensor | None = None, n_frames: float | None = None) -> torch.Tensor:
        """Cross-entropy averaged over the expert's codebooks and the valid frames (teacher forcing).
        `n_frames`: divide by this many valid frames instead of this batch's own (a data-parallel
        shard divides by the whole batch's, so the shards' losses add up to the batch mean)."""
        logits = self(codes, text, drop)  # [B, g, F, V]
        targets = codes[:, self.group]  # [B, g, F]
        per_token = F.cross_entropy(logits.flatten(0, 2).float(), targets.flatten(), reduction="none").view_as(targets)
        if frame_mask is None:
            frame_mask = torch.ones(targets.shape[0], targets.shape[2], device=targets.device)
        weight = frame_mask[:, None, :].expand_as(per_token).float()
        total = weight.sum() if n_frames is None else torch.tensor(n_frames * len(self.group), device=weight.device)
        return (per_token * weight).sum() / total.clamp_min(1.0)

    # ------------------------------------------------------------------ cached, step-by-step inference

    def new_cache(self) -> list[KVCache]:
        return [KVCache() for _ in self.temporal]

    def temporal_step(self, previous_sum: torch.Tensor | None, t: int, text: Text, cache: list[KVCache]) -> torch.Tensor:
        """One frame of the temporal path. previous_sum [B, D]: frame t-1's summed code vectors
        (None at t = 0). Returns [B, dim], the temporal output at frame t."""
        B = text.tokens.shape[0]
        x = self.start.expand(B, -1) if previous_sum is None else self.projector(previous_sum)
        x = (x + sinusoidal_positions(torch.tensor([t], device=x.device), self.config.dim))[:, None]
        for block, layer_cache in zip(self.temporal, cache):
            x = block(x, text.tokens, text.mask, cache=layer_cache)
        return self.temporal_norm(x)[:, 0]

    def depth_step(self, hidden: torch.Tensor, below_sum: torch.Tensor, pooled: torch.Tensor,
                   sample) -> tuple[torch.Tensor, torch.Tensor]:
        """The depth path of one frame, slot by slot with a KV cache. hidden [B, dim]: temporal
        output; below_sum [B, D]: summed vectors of the codebooks below the group at this frame;
        sample(logits [B, V]) -> codes [B]. Returns logits [B, g, V] and codes [B, g]."""
        caches = [KVCache() for _ in self.depth]

        def feed(slot: int, value: torch.Tensor) -> torch.Tensor:
            y = (value + self.slot_embedding[slot])[:, None]
            for block, cache in zip(self.depth, caches):
                y = block(y, cache=cache)
            return self.depth_norm(y)[:, 0]

        feed(0, hidden)
        current = self.text_pool(pooled) + self._conditioning(below_sum)
        all_logits, all_codes = [], []
        for j, head in enumerate(self.heads):
            logits = head(feed(j + 1, current))
            codes = sample(logits)
            all_logits.append(logits)
            all_codes.append(codes)
            current = current + self.projector(self.code_table(codes + self.group[j] * self.config.codebook_size))
        return torch.stack(all_logits, dim=1), torch.stack(all_codes, dim=1)
