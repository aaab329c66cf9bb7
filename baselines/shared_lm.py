"""The conventional shared LM: one temporal transformer over frames and one depth transformer
over the K codes of each frame (RQ-Transformer's spatial/depth split; UniAudio's global/local
multi-scale transformer), every codebook's loss flowing into the same trunk.

It is exactly one Siren expert that owns all K codebooks (REFERENCES.md §3: "each Siren expert
is this shape"), so the comparison with Siren isolates the one thing Siren changes: splitting the
codebooks over isolated experts. Same blocks, same code embedding through the codec's frozen
decode vectors, same text cross-attention, same sampling; with no codebook below the group,
the depth path's causal conditioning reduces to the pooled text vector.
"""

from __future__ import annotations

import dataclasses

import torch

from baselines.base import BaselineSpec, Generator
from siren_bench.config import SirenConfig
from siren_bench.models.collaborative import Siren
from siren_bench.models.patterns import CodebookPattern, frame_major
from siren_bench.models.sampling import SamplingConfig
from siren_bench.models.siren import SirenExpert, Text
from siren_bench.registry import SYSTEMS


class SharedLM(SirenExpert, Generator):
    def __init__(self, config: SirenConfig):
        config = dataclasses.replace(config, groups=[list(range(config.n_codebooks))], codebooks_per_expert=config.n_codebooks)
        super().__init__(config, config.expert_groups()[0])

    def pattern(self, n_frames: int) -> CodebookPattern:
        """As Siren's: frame by frame, a frame's codebooks coarse to fine."""
        return frame_major(self.config.n_codebooks, n_frames)

    @torch.no_grad()
    def generate(self, text: Text, n_frames: int, sampling: SamplingConfig,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """Frame by frame with KV caches, exactly as Siren generates with its single expert."""
        return Siren(self.config, experts=[self]).generate(text, n_frames, sampling, generator)


SYSTEMS.add("shared_lm", BaselineSpec(
    "shared_lm", "shared LM: one temporal + depth transformer over all codebooks (RQ-Transformer / UniAudio shape)",
    seed_offset=100, config_class=SirenConfig, model_class=SharedLM, sizes_from_siren=True))
