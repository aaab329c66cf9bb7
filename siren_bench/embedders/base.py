"""The Embedder interface every metric backbone meets.

An embedder takes mono float waveforms at its own `sample_rate` (resampling, channel policy and
padding belong to the metric recipe, not to the model) and returns, per clip, a float array of
frame embeddings [n_frames, dim] (one row for clip-level models such as PANNs or CLAP) and,
where the model has a classifier head, logits [n_frames, n_classes]. `weights_sha256` names the
weights (file hashes), so caches and results can key on exactly what produced a number.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class EmbedderInfo:
    name: str  # e.g. "vggish", "panns_cnn14_16k", "clap_audio", "smoke_tagger"
    sample_rate: int
    dim: int
    n_classes: int | None  # None: no classifier head (no KL / IS from this model)
    weights_sha256: str
    labels: tuple[str, ...] = field(default=())  # class names, where known

    def as_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(self).items()}


@dataclass
class Embedding:
    """One clip's outputs: frame embeddings [n_frames, dim] and optional logits [n_frames, C]."""

    frames: np.ndarray
    logits: np.ndarray | None = None


class Embedder(ABC):
    info: EmbedderInfo

    @property
    def sample_rate(self) -> int:
        return self.info.sample_rate

    @property
    def cache_identity(self) -> str:
        """What, beside the audio and the recipe's knobs, determines this embedder's outputs: caches
        key on it. The weights' hash, where every setting that changes an output lies in the
        weights file or in code; an embedder configured by a file beside its weights adds that."""
        return self.info.weights_sha256

    @abstractmethod
    def embed(self, waves: list[np.ndarray]) -> list[Embedding]:
        """Mono float waves at `sample_rate` (any lengths) -> one Embedding per wave, float64."""
