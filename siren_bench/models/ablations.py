"""Siren's ablations: each turns one design choice of the paper off, as a change of the
architecture (SirenConfig) that the `sweep` stage retrains from scratch with the main run's
training settings and scores next to the unablated Siren at the same depth.

Alignment is the fourth ablation the report shows, but it needs no retraining: `siren` (Stage 1)
against `siren_aligned` in the main run.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable

from siren_bench.config import SirenConfig


@dataclass(frozen=True)
class Ablation:
    label: str  # how the report names the variant
    change: Callable[[SirenConfig], SirenConfig]
    claim: str  # what the paper, or the official code by its choice, holds about what the ablation changes
    claim_favours_variant: bool = False  # the claim holds when the ablated model is the better one


GROUPING_CLAIM = ("two codebooks per expert, the official code's grouping, generate better than one codebook per expert "
                  "(a choice of the official code; the paper's summary describes one expert per RVQ layer)")

ABLATIONS: dict[str, Ablation] = {
    # before(t) loses the current frame's lower codebooks; the temporal path still sees frame t-1
    "no_causal_conditioning": Ablation("without causal conditioning",
                                       lambda s: dataclasses.replace(s, causal_conditioning=False),
                                       "conditioning each expert on the lower codebooks of its frame (the experts' "
                                       "collaboration) improves Siren"),
    "one_codebook_per_expert": Ablation("one codebook per expert",
                                        lambda s: dataclasses.replace(s, codebooks_per_expert=1, groups=None), GROUPING_CLAIM),
    "two_codebooks_per_expert": Ablation("two codebooks per expert",
                                         lambda s: dataclasses.replace(s, codebooks_per_expert=2, groups=None), GROUPING_CLAIM,
                                         claim_favours_variant=True),
}


def ablated(name: str, siren: SirenConfig) -> SirenConfig:
    """The architecture with ablation `name` applied; an ablation that changes nothing is an error
    (it would report seed-free noise as an effect)."""
    variant = ABLATIONS[name].change(siren)
    if (variant.expert_groups(), variant.causal_conditioning) == (siren.expert_groups(), siren.causal_conditioning):
        raise ValueError(f"ablation {name!r} leaves this Siren unchanged ({siren.expert_groups()} groups, "
                         f"causal_conditioning={siren.causal_conditioning})")
    return variant


def shared_experts(reference: SirenConfig, variant: SirenConfig) -> list[int]:
    """Experts the variant can take from the reference unchanged: same group, and nothing below
    the group, so causal conditioning (the only other thing an ablation changes) is void for it.
    They would train to the same weights (same seed, same data stream); reusing them saves time."""
    same_otherwise = dataclasses.replace(variant, causal_conditioning=reference.causal_conditioning) == reference
    if not same_otherwise:
        return []
    return [i for i, (a, b) in enumerate(zip(reference.expert_groups(), variant.expert_groups())) if a == b and a[0] == 0]
