"""Collaborative generation: Siren's experts interleaved frame by frame.

Every expert's temporal path reads all K codebooks of the previous frame, so no expert can run
ahead: at frame t expert 0 samples its codebooks, expert 1 conditions on them (causal
conditioning) and samples its own, and so on up to the last expert; then frame t + 1. The
official code does not release inference; this order is what its training forward implies
(REFERENCES.md §2). Temporal paths keep a KV cache across frames, depth paths one per frame.

Classifier-free guidance runs each expert on the caption and on its learned null caption in one
batch and samples from uncond + scale * (cond - uncond). Sampling: temperature, top-k, top-p,
from a seeded torch.Generator, so a seed gives the same codes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from siren_bench.models.siren import SirenConfig, SirenExpert, Text


@dataclass
class SamplingConfig:
    temperature: float = 1.0  # 0 = greedy
    top_k: int = 0  # 0 = off
    top_p: float = 1.0  # 1 = off
    guidance: float = 1.0  # classifier-free guidance scale; 1 = no guidance (no null-caption pass)

    def __post_init__(self):
        if self.temperature < 0 or self.top_k < 0 or not 0 < self.top_p <= 1 or self.guidance < 0:
            raise ValueError(f"invalid sampling settings {self}")


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


class Siren(torch.nn.Module):
    """The experts together. `experts[i]` predicts `config.expert_groups()[i]`."""

    def __init__(self, config: SirenConfig, experts: list[SirenExpert] | None = None):
        super().__init__()
        self.config = config
        groups = config.expert_groups()
        self.experts = torch.nn.ModuleList(experts if experts is not None else [SirenExpert(config, g) for g in groups])
        if [e.group for e in self.experts] != groups:
            raise ValueError(f"experts predict {[e.group for e in self.experts]}, config groups are {groups}")

    def set_code_table(self, table: torch.Tensor) -> None:
        for expert in self.experts:
            expert.set_code_table(table)

    def forward(self, codes: torch.Tensor, text: Text) -> torch.Tensor:
        """Teacher-forced logits of every codebook: [B, K, F, V]."""
        return torch.cat([expert(codes, text) for expert in self.experts], dim=1)

    @torch.no_grad()
    def generate(self, text: Text, n_frames: int, sampling: SamplingConfig, generator: torch.Generator | None = None,
                 return_logits: bool = False):
        """codes [B, K, n_frames] (and, if asked, the conditional logits [B, K, n_frames, V])."""
        if not 1 <= n_frames <= self.config.max_frames:
            raise ValueError(f"n_frames must be in 1..{self.config.max_frames}, got {n_frames}")
        B, K = text.tokens.shape[0], self.config.n_codebooks
        guided = sampling.guidance != 1.0
        if guided:  # rows B..2B-1 carry the null caption
            doubled = Text(*(torch.cat([x, x]) for x in (text.tokens, text.mask, text.pooled)))
            drop = torch.arange(2 * B, device=text.tokens.device) >= B
            texts = [expert.condition(doubled, drop) for expert in self.experts]
        else:
            texts = [text] * len(self.experts)
        rows = 2 * B if guided else B

        def pick(logits: torch.Tensor) -> torch.Tensor:
            if guided:
                cond, uncond = logits[:B].float(), logits[B:].float()
                chosen = sample_codes(uncond + sampling.guidance * (cond - uncond), sampling, generator)
                return torch.cat([chosen, chosen])
            return sample_codes(logits, sampling, generator)

        codes = torch.zeros(rows, K, n_frames, dtype=torch.long, device=text.tokens.device)
        logits_out = [] if return_logits else None
        caches = [expert.new_cache() for expert in self.experts]
        for t in range(n_frames):
            frame_logits = []
            for expert, expert_text, cache in zip(self.experts, texts, caches):
                previous = None if t == 0 else expert.code_vectors(codes[:, :, t - 1 : t]).sum(1)[:, 0]
                hidden = expert.temporal_step(previous, t, expert_text, cache)
                first = expert.group[0]
                below = expert.code_vectors(codes[:, :first, t : t + 1]).sum(1)[:, 0] if first else hidden.new_zeros(rows, self.config.code_dim)
                logits, chosen = expert.depth_step(hidden, below, expert_text.pooled, pick)
                codes[:, expert.group, t] = chosen
                frame_logits.append(logits[:B])
            if return_logits:
                logits_out.append(torch.cat(frame_logits, dim=1))
        codes = codes[:B]
        return (codes, torch.stack(logits_out, dim=2)) if return_logits else codes
