"""Collaborative generation: Siren's experts interleaved frame by frame.

Every expert's temporal path reads all K codebooks of the previous frame, so no expert can run
ahead: at frame t expert 0 samples its codebooks, expert 1 conditions on them (causal
conditioning) and samples its own, and so on up to the last expert; then frame t + 1. The
official code does not release inference; this order is what its training forward implies
(REFERENCES.md §2). Temporal paths keep a KV cache across frames, depth paths one per frame.

Classifier-free guidance runs each expert on the caption and on its learned null caption in one
batch; tokens are drawn by the one sampler every model uses (models/sampling.py).
"""

from __future__ import annotations

import torch

from siren_bench.config import SirenConfig
from siren_bench.models.patterns import CodebookPattern, frame_major
from siren_bench.models.sampling import SamplingConfig, guided, sample_codes, with_null_rows
from siren_bench.models.siren import SirenExpert, Text


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

    def pattern(self, n_frames: int) -> CodebookPattern:
        """Frame by frame; within a frame, each expert's codebooks after the codebooks below them,
        whichever expert owns those (the collaboration: expert i reads groups 0..i-1's codes)."""
        return frame_major(self.config.n_codebooks, n_frames)

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
        if sampling.guided:  # rows B..2B-1 carry the null caption
            doubled, drop = with_null_rows(text)
            texts = [expert.condition(doubled, drop) for expert in self.experts]
        else:
            texts = [text] * len(self.experts)
        rows = 2 * B if sampling.guided else B

        def pick(logits: torch.Tensor) -> torch.Tensor:
            if sampling.guided:
                chosen = sample_codes(guided(logits, sampling.guidance), sampling, generator)
                return torch.cat([chosen, chosen])
            return sample_codes(logits, sampling, generator)

        codes = torch.zeros(rows, K, n_frames, dtype=torch.long, device=text.tokens.device)
        logits_out = [] if return_logits else None
        caches = [expert.new_cache() for expert in self.experts]
        for t in range(n_frames):
            frame_logits = []
            for expert, expert_text, cache in zip(self.experts, texts, caches):
                hidden = expert.temporal_step(None if t == 0 else codes[:, :, t - 1], t, expert_text, cache)
                logits, chosen = expert.depth_step(hidden, codes[:, : expert.group[0], t], expert_text.pooled, pick)
                codes[:, expert.group, t] = chosen
                frame_logits.append(logits[:B])
            if return_logits:
                logits_out.append(torch.cat(frame_logits, dim=1))
        codes = codes[:B]
        return (codes, torch.stack(logits_out, dim=2)) if return_logits else codes
