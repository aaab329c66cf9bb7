"""Siren Stage 1: isolated expert transformers over groups of RVQ codebooks, linked by causal
conditioning, built as the official code builds it (REFERENCES.md §2; our own writing, with the
official module names, so an official state dict loads: `official.py`).

One `SirenExpert` predicts the codebooks of its group (default two per expert, six experts for
12 codebooks). Every code is embedded as its codec decode vector (frozen, one [V, D] table per
codebook, the codec's `layer_features`) and then by that codebook's own trainable projector
D -> dim with bias. Each expert has two paths:

- temporal ("spatial" in the official names): at frame t its input is a learned start vector
  (t = 0) or the SUM over all K codebooks of the embeddings at frame t-1; sinusoidal positions
  are re-added at the input of every block; blocks of text cross-attention, causal
  self-attention and SwiGLU;
- depth ("factorized"), per frame, a causal sequence of g + 1 slots: [temporal(t), before(t),
  before(t) + e_0, ..., before(t) + e_0 + ... + e_{g-2}], where before(t) = the pooled text
  (linear with bias) + the embeddings of all codebooks BELOW the group at frame t (the causal
  conditioning) and e_i the embedding of the group's i-th codebook at frame t; slot positions
  re-added at every block; slot j + 1 predicts the group's codebook j.

Ours, not the official code's (README "Siren"): the null caption of classifier-free guidance
(`model.null_caption`) and any grouping other than two codebooks per expert.
Experts share no parameters; generation interleaves them frame by frame (`collaborative.py`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from siren_bench.config import BlockShape, SirenConfig


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        normed = x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + self.eps)
        return normed.type_as(x) * self.weight


class SwiGLU(nn.Module):
    """One fused projection to gate and value (gate the first half), SiLU gate, down-projection."""

    def __init__(self, dim: int, hidden: int, dropout: float):
        super().__init__()
        self.gate_value = nn.Linear(dim, 2 * hidden, bias=False)
        self.down = nn.Linear(hidden, dim, bias=False)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, value = self.gate_value(x).chunk(2, dim=-1)
        return self.dropout(self.down(F.silu(gate) * value))


class KVCache:
    """Keys and values of one attention layer, grown one step at a time: [B, H_kv, T, head]."""

    def __init__(self):
        self.k: torch.Tensor | None = None
        self.v: torch.Tensor | None = None

    def extend(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.k = k if self.k is None else torch.cat([self.k, k], dim=2)
        self.v = v if self.v is None else torch.cat([self.v, v], dim=2)
        return self.k, self.v


def _heads(x: torch.Tensor, n: int, head_dim: int) -> torch.Tensor:
    return x.view(x.shape[0], x.shape[1], n, head_dim).transpose(1, 2)


class SelfAttention(nn.Module):
    """Self-attention with one fused q/k/v projection and grouped KV heads, bias-free; causal
    unless `causal=False` (the baselines' non-autoregressive and diffusion models). `key_mask`
    [B, T] (True = attend) hides padded frames."""

    def __init__(self, config: BlockShape, causal: bool = True):
        super().__init__()
        if config.dim % config.n_heads or config.n_heads % config.n_kv_heads:
            raise ValueError(f"dim {config.dim}, n_heads {config.n_heads}, n_kv_heads {config.n_kv_heads}: heads must divide dim and kv heads divide heads")
        self.causal = causal
        self.n_heads, self.n_kv_heads = config.n_heads, config.n_kv_heads
        self.head_dim = config.dim // config.n_heads
        self.qkv = nn.Linear(config.dim, (self.n_heads + 2 * self.n_kv_heads) * self.head_dim, bias=False)
        self.output = nn.Linear(config.dim, config.dim, bias=False)
        self.dropout = config.dropout

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        kv_dim = self.n_kv_heads * self.head_dim
        q, k, v = self.qkv(x).split((self.n_heads * self.head_dim, kv_dim, kv_dim), dim=-1)
        q, k, v = _heads(q, self.n_heads, self.head_dim), _heads(k, self.n_kv_heads, self.head_dim), _heads(v, self.n_kv_heads, self.head_dim)
        past = 0
        if cache is not None:
            past = 0 if cache.k is None else cache.k.shape[2]
            k, v = cache.extend(k, v)
        mask = None
        # plain causal attention (training, a whole sequence) says so, which lets SDPA use its flash
        # kernel on a GPU; on the CPU it is bit for bit the explicit mask (tests/test_siren.py)
        plain_causal = self.causal and past == 0 and key_mask is None
        if self.causal and not plain_causal:  # query i sits at absolute position past + i and may see keys 0..past + i
            mask = torch.ones(x.shape[1], k.shape[2], dtype=torch.bool, device=x.device).tril(diagonal=past)
        if key_mask is not None:
            keys = key_mask[:, None, None, :].bool()
            mask = keys if mask is None else mask & keys
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0,
                                           is_causal=plain_causal, enable_gqa=self.n_kv_heads != self.n_heads)
        return self.output(y.transpose(1, 2).reshape(x.shape[0], x.shape[1], -1))


class CrossAttention(nn.Module):
    """Attention from the frames to the text tokens (all heads, projections with bias); keys
    where `context_mask` [B, L] is False are ignored."""

    def __init__(self, config: BlockShape):
        super().__init__()
        if config.dim % config.n_heads:
            raise ValueError(f"dim {config.dim} is not a multiple of n_heads {config.n_heads}")
        self.n_heads, self.head_dim = config.n_heads, config.dim // config.n_heads
        self.query = nn.Linear(config.dim, config.dim, bias=True)
        self.key_value = nn.Linear(config.text_dim, 2 * config.dim, bias=True)
        self.output = nn.Linear(config.dim, config.dim, bias=True)
        self.dropout = config.dropout

    def forward(self, x: torch.Tensor, context: torch.Tensor, context_mask: torch.Tensor) -> torch.Tensor:
        q = _heads(self.query(x), self.n_heads, self.head_dim)
        k, v = self.key_value(context).chunk(2, dim=-1)
        k, v = _heads(k, self.n_heads, self.head_dim), _heads(v, self.n_heads, self.head_dim)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=context_mask[:, None, None, :].bool(),
                                           dropout_p=self.dropout if self.training else 0.0)
        return self.output(y.transpose(1, 2).reshape(x.shape[0], x.shape[1], -1))


class TemporalBlock(nn.Module):
    """Text cross-attention, self-attention (causal unless `causal=False`), SwiGLU; pre-RMSNorm
    (the official CrossTransformerBlock, module names included)."""

    def __init__(self, config: BlockShape, causal: bool = True):
        super().__init__()
        self.cross_norm = RMSNorm(config.dim, config.norm_eps)
        self.cross_attention = CrossAttention(config)
        self.self_norm = RMSNorm(config.dim, config.norm_eps)
        self.self_attention = SelfAttention(config, causal=causal)
        self.ffn_norm = RMSNorm(config.dim, config.norm_eps)
        self.feed_forward = SwiGLU(config.dim, config.ffn_hidden, config.dropout)

    def forward(self, x, text, text_mask, cache: KVCache | None = None, key_mask: torch.Tensor | None = None):
        x = x + self.cross_attention(self.cross_norm(x), text, text_mask)
        x = x + self.self_attention(self.self_norm(x), cache=cache, key_mask=key_mask)
        return x + self.feed_forward(self.ffn_norm(x))


class DepthBlock(nn.Module):
    """Causal self-attention and SwiGLU, pre-RMSNorm (the official TransformerBlock)."""

    def __init__(self, config: BlockShape):
        super().__init__()
        self.attention_norm = RMSNorm(config.dim, config.norm_eps)
        self.attention = SelfAttention(config)
        self.ffn_norm = RMSNorm(config.dim, config.norm_eps)
        self.feed_forward = SwiGLU(config.dim, config.ffn_hidden, config.dropout)

    def forward(self, x, cache: KVCache | None = None):
        x = x + self.attention(self.attention_norm(x), cache=cache)
        return x + self.feed_forward(self.ffn_norm(x))


def sinusoidal_positions(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """[T] integer positions -> [T, dim]: sin on the even channels, cos on the odd ones, channel
    pair i at frequency 10000^(-2i / dim) (the official code's layout)."""
    freqs = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32, device=positions.device) * (-math.log(10000.0) / dim))
    angles = positions.float()[:, None] * freqs[None]
    out = torch.zeros(positions.shape[0], dim, device=positions.device)
    out[:, 0::2] = angles.sin()
    out[:, 1::2] = angles[:, : dim // 2].cos()
    return out


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

    def __len__(self) -> int:
        return self.tokens.shape[0]


@dataclass
class CaptionBank:
    """A split's captions as training draws from them: the text encoder's batches, each padded only
    to its own longest caption. `select` gives the rows a step picks as the Text one [N, L, D]
    tensor padded to the longest caption of all would give (zeros past a batch's width, masked),
    without holding that tensor: for AudioCaps' 49,838 train captions it is gigabytes in every
    training process (more while it is concatenated)."""

    tokens: list[torch.Tensor]  # per encoder batch [b, L_b, text_dim]
    mask: list[torch.Tensor]  # per encoder batch [b, L_b] bool
    pooled: torch.Tensor  # [N, text_dim]

    def __post_init__(self):
        sizes = [t.shape[0] for t in self.tokens]
        if not sizes or sum(sizes) != self.pooled.shape[0] or [m.shape for m in self.mask] != [t.shape[:2] for t in self.tokens]:
            raise ValueError(f"caption batches of {sizes} rows and masks {[tuple(m.shape) for m in self.mask]} "
                             f"do not make the {self.pooled.shape[0]} pooled rows")
        self.batch_of = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
        self.row_in_batch = torch.cat([torch.arange(n) for n in sizes])
        self.width = max(t.shape[1] for t in self.tokens)

    def __len__(self) -> int:
        return self.pooled.shape[0]

    def select(self, index) -> Text:
        """The rows `index` picks (a slice, or integer indices), padded to the longest caption."""
        rows = torch.arange(len(self))[index if isinstance(index, slice) else torch.as_tensor(index)]
        first = self.tokens[0]
        tokens = first.new_zeros((len(rows), self.width, first.shape[2]))
        mask = torch.zeros((len(rows), self.width), dtype=torch.bool)
        batches = self.batch_of[rows]
        for b in batches.unique().tolist():
            picked = (batches == b).nonzero()[:, 0]
            source = self.row_in_batch[rows[picked]]
            tokens[picked, : self.tokens[b].shape[1]] = self.tokens[b][source]
            mask[picked, : self.mask[b].shape[1]] = self.mask[b][source]
        return Text(tokens, mask, self.pooled[rows])


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


class CodebookLayer(nn.Module):
    """One codebook as an expert reads it: the frozen decode vector of each entry (the codec's
    `layer_features`; the official code's DAC codebook and out-projection, composed) and a
    trainable projector D -> dim with bias."""

    def __init__(self, config: SirenConfig):
        super().__init__()
        self.table = nn.Embedding(config.codebook_size, config.code_dim)
        self.table.weight.requires_grad_(False)
        self.projector = nn.Linear(config.code_dim, config.dim, bias=True)

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        return self.projector(self.table(codes))


class CodebookBank(nn.Module):
    """All K codebook layers: every expert holds its own copy (experts share no parameters)."""

    def __init__(self, config: SirenConfig):
        super().__init__()
        self.layers = nn.ModuleList(CodebookLayer(config) for _ in range(config.n_codebooks))

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        """[B, k, F] codes of codebooks 0..k-1 -> [B, k, F, dim] projected embeddings."""
        return torch.stack([layer(codes[:, i]) for i, layer in enumerate(self.layers[: codes.shape[1]])], dim=1)


class SirenExpert(nn.Module):
    """One expert, with the official code's module names (spatial = temporal path, factorized =
    depth path). `null_tokens` / `null_pooled` (the null caption of classifier-free guidance) are
    ours and exist only with `config.null_caption`."""

    def __init__(self, config: SirenConfig, group: list[int]):
        super().__init__()
        self.config, self.group = config, list(group)
        self.codebooks = CodebookBank(config)
        self.sos = nn.Parameter(torch.empty(1, 1, config.dim))
        self.prompt_summary = nn.Linear(config.text_dim, config.dim, bias=True)
        self.spatial_blocks = nn.ModuleList(TemporalBlock(config) for _ in range(config.temporal_layers))
        self.spatial_norm = RMSNorm(config.dim, config.norm_eps)
        self.factorized_blocks = nn.ModuleList(DepthBlock(config) for _ in range(config.depth_layers))
        self.factorized_norm = RMSNorm(config.dim, config.norm_eps)
        self.heads = nn.ModuleList(nn.Linear(config.dim, config.codebook_size, bias=False) for _ in self.group)
        if config.null_caption:
            self.null_tokens = nn.Parameter(torch.empty(1, config.text_dim))
            self.null_pooled = nn.Parameter(torch.empty(config.text_dim))
        self._initialize()

    def _initialize(self) -> None:
        """The official initialisation: every linear and embedding weight N(0, init_std), biases
        zero, the start vector N(0, init_std), RMSNorm weights one; our null caption N(0, init_std).
        The frozen tables are overwritten by `set_code_table`."""
        std = self.config.init_std
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=std)
                if getattr(module, "bias", None) is not None:
                    nn.init.zeros_(module.bias)
        extra = [self.null_tokens, self.null_pooled] if self.config.null_caption else []
        for parameter in (self.sos, *extra):
            nn.init.normal_(parameter, std=std)

    def make_trainable(self) -> None:
        """requires_grad on every parameter except the frozen decode tables."""
        for name, parameter in self.named_parameters():
            parameter.requires_grad_(not name.endswith(".table.weight"))

    # ------------------------------------------------------------------ inputs

    def set_code_table(self, table: torch.Tensor) -> None:
        """table [K, V, D]: each codebook entry's decode contribution (codec.layer_features)."""
        K, V, D = self.config.n_codebooks, self.config.codebook_size, self.config.code_dim
        if tuple(table.shape) != (K, V, D):
            raise ValueError(f"code table must be [{K}, {V}, {D}], got {tuple(table.shape)}")
        with torch.no_grad():
            for layer, rows in zip(self.codebooks.layers, table):
                layer.table.weight.copy_(rows)

    def condition(self, text: Text, drop: torch.Tensor | None) -> Text:
        """Replace the captions of rows where `drop` is True by the learned null caption."""
        if drop is None or not bool(drop.any()):
            return text
        if not self.config.null_caption:
            raise ValueError("this Siren has no null caption (model.null_caption=false): no caption dropout or guidance")
        return drop_captions(text, drop, self.null_tokens, self.null_pooled)

    def positions(self, n: int, device) -> torch.Tensor:
        return sinusoidal_positions(torch.arange(n, device=device), self.config.dim)

    # ------------------------------------------------------------------ teacher-forced forward

    def forward(self, codes: torch.Tensor, text: Text, drop: torch.Tensor | None = None) -> torch.Tensor:
        """codes [B, K, F] (all codebooks) -> logits [B, g, F, V] for this expert's codebooks."""
        B, K, n_frames = codes.shape
        if K != self.config.n_codebooks or n_frames > self.config.max_frames:
            raise ValueError(f"codes must be [B, {self.config.n_codebooks}, F <= {self.config.max_frames}], got {tuple(codes.shape)}")
        text = self.condition(text, drop)
        embedded = self.codebooks(codes)  # [B, K, F, dim]
        x = torch.cat([self.sos.expand(B, 1, -1), embedded.sum(1)[:, :-1]], dim=1)  # frame t-1's sum feeds frame t
        positions = self.positions(n_frames, codes.device)
        for block in self.spatial_blocks:  # positions re-added at every block, as the official code does
            x = block(x + positions, text.tokens, text.mask)
        hidden = self.spatial_norm(x)  # [B, F, dim]
        slots = self._depth_inputs(hidden, embedded, text.pooled)  # [B, F, g + 1, dim]
        y = slots.reshape(B * n_frames, len(self.group) + 1, -1)
        slot_positions = self.positions(len(self.group) + 1, codes.device)
        for block in self.factorized_blocks:
            y = block(y + slot_positions)
        y = self.factorized_norm(y).reshape(B, n_frames, len(self.group) + 1, -1)
        return torch.stack([head(y[:, :, j + 1]) for j, head in enumerate(self.heads)], dim=1)

    def _depth_inputs(self, hidden: torch.Tensor, embedded: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
        """[temporal, before, before + e_0, ...] per frame: [B, F, g + 1, dim]."""
        before = self.prompt_summary(pooled)[:, None].expand(-1, hidden.shape[1], -1)
        if self.group[0]:
            before = before + self._conditioning(embedded[:, : self.group[0]])
        own = embedded[:, self.group[:-1]]  # [B, g - 1, F, dim]
        running = before[:, None] + torch.cat([torch.zeros_like(before[:, None]), own.cumsum(1)], dim=1)
        return torch.cat([hidden[:, None], running], dim=1).transpose(1, 2)

    def _conditioning(self, below: torch.Tensor) -> torch.Tensor:
        """The causal conditioning: the summed projected embeddings of the codebooks below the group
        at this frame, [B, k, F, dim] -> [B, F, dim] (zero when the ablation turns it off)."""
        total = below.sum(1)
        return total if self.config.causal_conditioning else torch.zeros_like(total)

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
        return [KVCache() for _ in self.spatial_blocks]

    def temporal_step(self, previous: torch.Tensor | None, t: int, text: Text, cache: list[KVCache]) -> torch.Tensor:
        """One frame of the temporal path. previous [B, K]: frame t-1's codes (None at t = 0).
        Returns [B, dim], the temporal output at frame t."""
        B = text.tokens.shape[0]
        x = (self.sos.expand(B, 1, -1) if previous is None else self.codebooks(previous[:, :, None]).sum(1))
        position = sinusoidal_positions(torch.tensor([t], device=x.device), self.config.dim)
        for block, layer_cache in zip(self.spatial_blocks, cache):
            x = block(x + position, text.tokens, text.mask, cache=layer_cache)
        return self.spatial_norm(x)[:, 0]

    def depth_step(self, hidden: torch.Tensor, below: torch.Tensor, pooled: torch.Tensor,
                   sample) -> tuple[torch.Tensor, torch.Tensor]:
        """The depth path of one frame, slot by slot with a KV cache. hidden [B, dim]: temporal
        output; below [B, group[0]]: this frame's codes of the codebooks below the group;
        sample(logits [B, V]) -> codes [B]. Returns logits [B, g, V] and codes [B, g]."""
        caches = [KVCache() for _ in self.factorized_blocks]
        slot_positions = self.positions(len(self.group) + 1, hidden.device)

        def feed(slot: int, value: torch.Tensor) -> torch.Tensor:
            y = value[:, None]
            for block, cache in zip(self.factorized_blocks, caches):
                y = block(y + slot_positions[slot], cache=cache)
            return self.factorized_norm(y)[:, 0]

        feed(0, hidden)
        current = self.prompt_summary(pooled)
        if below.shape[1]:
            current = current + self._conditioning(self.codebooks(below[:, :, None]))[:, 0]
        all_logits, all_codes = [], []
        for j, head in enumerate(self.heads):
            logits = head(feed(j + 1, current))
            codes = sample(logits)
            all_logits.append(logits)
            all_codes.append(codes)
            current = current + self.codebooks.layers[self.group[j]](codes)
        return torch.stack(all_logits, dim=1), torch.stack(all_codes, dim=1)
