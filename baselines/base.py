"""The interface every baseline meets, so one training loop, one generation path and one scorer
serve them all, exactly as they serve Siren.

A `Generator` is an nn.Module over the pipeline's RVQ codes [B, K, F] (int64) and captions
(`Text`: token states, mask, pooled vector, from the same text encoder as Siren):

- `loss(codes, text, frame_mask, drop, n_frames=None)`: the training objective on a batch, a
  scalar averaged over valid frames (`frame_mask` [B, F] bool), with the captions of rows where
  `drop` [B] is True replaced by the model's learned null caption (classifier-free guidance).
  `n_frames`, when given, is the denominator in place of this batch's own valid-frame count.
- `generate(text, n_frames, sampling, generator)`: seeded sampling for each caption, returning
  codes [B, K, n_frames] (`output = "codes"`) or a quantized-latent sequence [B, D, n_frames]
  that the codec's `decode_latent` turns into audio (`output = "latent"`).
- `set_code_table(table [K, V, D])`: the codec's per-entry decode vectors, as Siren's experts
  get them (frozen); models that embed codes their own way may ignore it.

Models share nothing mutable: each builds its own modules from its own config.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from siren_bench.models.sampling import SamplingConfig, with_null_rows
from siren_bench.models.siren import Text, drop_captions


@dataclass(frozen=True)
class BaselineSpec:
    """A baseline as the pipeline knows it; each baseline module registers one in SYSTEMS
    (siren_bench/registry.py) under its `name`, which is also its key in conf/baselines/."""

    name: str
    description: str
    seed_offset: int  # the model trains with model.seed + this (distinct from Siren's experts' and other baselines')
    config_class: type  # its architecture dataclass
    model_class: Callable[..., "Generator"]  # config -> the untrained model
    sizes_from_siren: bool = False  # default sizes: one Siren expert's (model.*), not the config class's


class Generator(nn.Module, ABC):
    output: str = "codes"  # "codes" [B, K, F] or "latent" [B, D, F]

    @abstractmethod
    def loss(self, codes: torch.Tensor, text: Text, frame_mask: torch.Tensor | None = None,
             drop: torch.Tensor | None = None, n_frames: float | None = None) -> torch.Tensor: ...

    @abstractmethod
    def generate(self, text: Text, n_frames: int, sampling: SamplingConfig,
                 generator: torch.Generator | None = None) -> torch.Tensor: ...

    def set_code_table(self, table: torch.Tensor) -> None:
        """Default: the model embeds codes with its own learned tables."""


class NullCaption(nn.Module):
    """A learned null caption (one token and a pooled vector) that replaces dropped captions."""

    def __init__(self, text_dim: int, init_std: float = 0.02):
        super().__init__()
        self.tokens = nn.Parameter(torch.randn(1, text_dim) * init_std)
        self.pooled = nn.Parameter(torch.randn(text_dim) * init_std)

    def forward(self, text: Text, drop: torch.Tensor | None) -> Text:
        return drop_captions(text, drop, self.tokens, self.pooled)

    def doubled(self, text: Text) -> Text:
        """Rows 0..B-1 the captions, rows B..2B-1 the null caption: one batch for guidance."""
        return self(*with_null_rows(text))


def masked_mean(per_item: torch.Tensor, frame_mask: torch.Tensor | None, n_frames: float | None,
                per_frame: int = 1) -> torch.Tensor:
    """Sum of `per_item` [B, ..., F] over valid frames divided by (valid frames x `per_frame`),
    or by (`n_frames` x `per_frame`) when given."""
    if frame_mask is None:
        frame_mask = torch.ones(per_item.shape[0], per_item.shape[-1], dtype=torch.bool, device=per_item.device)
    weight = frame_mask.view(frame_mask.shape[0], *([1] * (per_item.dim() - 2)), frame_mask.shape[1]).expand_as(per_item).float()
    total = weight.sum() if n_frames is None else torch.tensor(float(n_frames) * per_frame, device=weight.device)
    return (per_item.float() * weight).sum() / total.clamp_min(1.0)
