"""Gradient interference: do the codebooks pull a shared trunk in different directions?

The claim behind Siren's isolated experts is that one transformer predicting every RVQ layer
receives conflicting gradients: the coarse layers' loss wants one thing of the shared weights,
the fine layers' loss another. Measured here directly: for a fixed probe batch, the gradient
that each codebook's cross-entropy sends into the trunk (every trainable parameter except the
output heads, which no two codebooks share), flattened, and the pairwise cosine similarity of
those gradients. Negative cosines are conflict; near-zero is independence; positive, agreement.

In the shared LM every codebook pair shares the trunk. In Siren only the codebooks of one expert
do; two codebooks of different experts touch disjoint parameters, so their gradient cosine is 0
by construction, not by measurement (the report says so rather than computing zeros).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from siren_bench.config import ModelConfig
from siren_bench.models.siren import SirenExpert, Text
from siren_bench.models.train import TokenSet, make_batch


PROBE_BYTES = 8 * 2**30  # gradient storage of one probe pass: g float32 gradients + their float64 copies


def parameter_chunks(params: list[torch.nn.Parameter], g: int, budget: int = PROBE_BYTES) -> list[list[torch.nn.Parameter]]:
    """Consecutive groups of whole parameter tensors whose g gradients (12 bytes a value: float32
    and the float64 copy the Gram is computed in) fit `budget`. A model that fits is one chunk;
    the shared LM matched to Siren 1.6B (1.6 G trunk values, 12 codebooks: 230 GB at once) is
    about 30, each costing g backward passes on the probe batch, instead of running out of memory."""
    chunks, current, size = [], [], 0
    for p in params:
        need = 12 * g * p.numel()
        if current and size + need > budget:
            chunks.append(current)
            current, size = [], 0
        current.append(p)
        size += need
    return chunks + [current] if current else chunks


def codebook_gradient_cosines(model: SirenExpert, codes: torch.Tensor, text: Text, frame_mask: torch.Tensor,
                              budget: int = PROBE_BYTES) -> np.ndarray:
    """[g, g] float64 cosine similarities of the trunk gradients of the expert's codebooks'
    losses (g = len(model.group)), in eval mode (no dropout), on one batch. The Gram matrix of
    the flattened gradients is summed over chunks of the trunk (`parameter_chunks`), so memory
    stays within `budget` whatever the model's size."""
    was_training = model.training
    model.eval()
    trunk = [p for name, p in model.named_parameters() if p.requires_grad and not name.startswith("heads.")]
    g = len(model.group)
    try:
        logits = model(codes, text)  # [B, g, F, V]
        weight = frame_mask[:, None, :].float()
        per_token = F.cross_entropy(logits.flatten(0, 2).float(), codes[:, model.group].flatten(), reduction="none")
        per_codebook = (per_token.view(codes.shape[0], g, -1) * weight).sum((0, 2)) / weight.sum().clamp_min(1)
        chunks = parameter_chunks(trunk, g, budget)
        gram = torch.zeros(g, g, dtype=torch.float64, device=per_codebook.device)
        for c, chunk in enumerate(chunks):
            rows = []
            for j in range(g):
                last = c + 1 == len(chunks) and j + 1 == g
                grads = torch.autograd.grad(per_codebook[j], chunk, retain_graph=not last, allow_unused=True)
                rows.append(torch.cat([(x if x is not None else torch.zeros_like(p)).flatten() for x, p in zip(grads, chunk)]))
            matrix = torch.stack(rows).double()
            gram += matrix @ matrix.T
            del rows, matrix
    finally:
        model.train(was_training)
    norms = gram.diagonal().sqrt().clamp_min(1e-30)
    return (gram / (norms[:, None] * norms[None, :])).cpu().numpy()  # computed where the model is, returned on the host


@dataclass
class InterferenceProbe:
    """A training probe (models/train.Probe): the gradient cosines on a fixed batch, logged as
    `interference` (the [g, g] matrix as nested lists) every `every` steps."""

    codes: torch.Tensor
    text: Text
    frame_mask: torch.Tensor
    every: int

    def __call__(self, model: torch.nn.Module, step: int) -> dict:
        device = next(model.parameters()).device
        cosines = codebook_gradient_cosines(model, self.codes.to(device), self.text.to(device), self.frame_mask.to(device))
        return {"interference": cosines.round(6).tolist()}


def interference_probe(config: ModelConfig, tokens: TokenSet, n_codebooks: int | None = None) -> InterferenceProbe | None:
    """The fixed probe batch: the first `interference_clips` clips of `tokens` (the val split),
    their first crop_frames frames, first `n_codebooks` codebooks."""
    if not config.interference_every:
        return None
    rows = np.arange(min(config.interference_clips, len(tokens.codes)))
    codes, mask, text = make_batch(tokens, rows, np.random.default_rng(0), config.crop_frames)
    return InterferenceProbe(codes if n_codebooks is None else codes[:, :n_codebooks], text, mask, config.interference_every)
