"""The one token sampler every model generates with: sampling settings, classifier-free guidance
and the draw itself (temperature, top-k, top-p from a seeded torch.Generator).

Siren's collaborative generation and the baselines all sample through these functions, so a
sampling setting means the same thing for every system in a table, and a seed gives the same
codes. Guidance runs the caption and the model's learned null caption as one doubled batch
(rows [:B] conditional, [B:] unconditional) and samples from uncond + scale * (cond - uncond).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from siren_bench.models.siren import Text


@dataclass
class SamplingConfig:
    temperature: float = 1.0  # 0 = greedy
    top_k: int = 0  # 0 = off
    top_p: float = 1.0  # 1 = off
    guidance: float = 1.0  # classifier-free guidance scale; 1 = no guidance (no null-caption pass)

    def __post_init__(self):
        if self.temperature < 0 or self.top_k < 0 or not 0 < self.top_p <= 1 or self.guidance < 0:
            raise ValueError(f"invalid sampling settings {self}")

    @property
    def guided(self) -> bool:
        return self.guidance != 1.0


def sample_codes(logits: torch.Tensor, sampling: SamplingConfig, generator: torch.Generator | None) -> torch.Tensor:
    """[B, V] logits -> [B] codes under temperature, top-k and top-p."""
    if sampling.temperature == 0:
        return logits.argmax(-1)
    logits = logits.float() / sampling.temperature
    if sampling.top_k:
        kth = torch.topk(logits, min(sampling.top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if sampling.top_p < 1:
        ordered, order = logits.sort(dim=-1, descending=True)
        mass_before = ordered.softmax(-1).cumsum(-1) - ordered.softmax(-1)
        drop = (mass_before >= sampling.top_p).scatter(-1, order, mass_before >= sampling.top_p)
        logits = logits.masked_fill(drop, float("-inf"))
    return torch.multinomial(logits.softmax(-1), 1, generator=generator)[:, 0]


def with_null_rows(text: Text) -> tuple[Text, torch.Tensor]:
    """The captions twice, and the mask [2B] of the rows (B..2B-1) a model replaces with its null
    caption: one batch for classifier-free guidance."""
    both = Text(*(torch.cat([x, x]) for x in (text.tokens, text.mask, text.pooled)))
    B = text.tokens.shape[0]
    return both, torch.arange(2 * B, device=text.tokens.device) >= B


def guided(logits: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance on a doubled batch: rows [:B] conditional, [B:] unconditional."""
    B = logits.shape[0] // 2
    cond, uncond = logits[:B].float(), logits[B:].float()
    return uncond + scale * (cond - uncond)
