"""Codebook patterns: the order in which a model produces the K x F grid of RVQ codes.

A pattern gives each code cell (codebook q, frame t) the sequence step at which the model
produces it. Its contract: a model's teacher-forced prediction of a cell reads the caption and
exactly the cells of earlier steps, never a cell of its own step or a later one. Every code LM
here names its pattern (`model.pattern(n_frames)`), and tests/test_patterns.py checks each
model against it by changing the cells it must not read (audiocraft keeps its codebook
orderings as pattern objects the same way; this is our own, smaller writing):

  parallel       every codebook of frame t at step t (MusicGen's "parallel"; the grid's plain layout)
  delay          codebook q of frame t at step t + q (AudioGen / MusicGen; baselines/delay_lm.py)
  frame_major    codebook q of frame t at step t K + q: a frame's codebooks coarse to fine, after
                 every earlier frame (Siren's collaborating experts, each owning a contiguous
                 group of codebooks, and the shared LM, one expert owning all; RQ-Transformer)
  coarse_first   codebook 0 of frame t at step t, then codebook k of every frame at once at step
                 F - 1 + k (VALL-E's AR + NAR; baselines/ar_nar.py)

Where no step holds two frames of one codebook (parallel, delay, frame_major) a pattern also
lays codes out as a step sequence [B, K, S] (`sequence`) and maps per-step outputs back to
frames (`frames`), which is how the delay LM builds its inputs and reads its logits.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True, eq=False)
class CodebookPattern:
    name: str
    steps: np.ndarray  # [K, F] int64: the step that produces each cell

    @property
    def n_codebooks(self) -> int:
        return self.steps.shape[0]

    @property
    def n_frames(self) -> int:
        return self.steps.shape[1]

    @property
    def n_steps(self) -> int:
        return int(self.steps.max()) + 1

    def may_read(self, codebook: int, frame: int) -> np.ndarray:
        """[K, F] bool: the cells a prediction of (codebook, frame) may read (those of earlier steps)."""
        return self.steps < self.steps[codebook, frame]

    def valid(self, device: torch.device | str | None = None) -> torch.Tensor:
        """[K, S] bool: where the step sequence holds a code (elsewhere: padding)."""
        self._check_sequence()
        mask = torch.zeros(self.n_codebooks, self.n_steps, dtype=torch.bool)
        mask.scatter_(1, torch.from_numpy(self.steps), True)
        return mask.to(device)

    def sequence(self, codes: torch.Tensor, pad: int) -> torch.Tensor:
        """codes [B, K, F] -> [B, K, S]: row q holds codebook q's codes at their steps, `pad` elsewhere."""
        self._check_sequence()
        self._check_codes(codes)
        out = codes.new_full((codes.shape[0], self.n_codebooks, self.n_steps), pad)
        return out.scatter_(2, self._index(codes.device).expand_as(codes), codes)

    def frames(self, sequence: torch.Tensor) -> torch.Tensor:
        """[B, K, S, ...] -> [B, K, F, ...]: the inverse of `sequence`; trailing dims ride along, so it
        maps per-step outputs (logits [B, K, S, V]) back to the frame layout."""
        self._check_sequence()
        if sequence.dim() < 3 or tuple(sequence.shape[1:3]) != (self.n_codebooks, self.n_steps):
            raise ValueError(f"{self.name}: a step sequence must be [B, {self.n_codebooks}, {self.n_steps}, ...], "
                             f"got {tuple(sequence.shape)}")
        trailing = sequence.shape[3:]
        index = self._index(sequence.device).view(1, self.n_codebooks, self.n_frames, *([1] * len(trailing)))
        return sequence.gather(2, index.expand(sequence.shape[0], -1, -1, *trailing))

    def _index(self, device) -> torch.Tensor:
        return torch.from_numpy(self.steps).to(device)[None]  # [1, K, F]

    def _check_codes(self, codes: torch.Tensor) -> None:
        if codes.dim() != 3 or tuple(codes.shape[1:]) != (self.n_codebooks, self.n_frames):
            raise ValueError(f"{self.name}: codes must be [B, {self.n_codebooks}, {self.n_frames}], got {tuple(codes.shape)}")

    def _check_sequence(self) -> None:
        for q in range(self.n_codebooks):
            if len(np.unique(self.steps[q])) != self.n_frames:
                raise ValueError(f"the {self.name} pattern produces several frames of codebook {q} at one step, "
                                 "so it has no step-sequence layout")


def _grid(n_codebooks: int, n_frames: int) -> tuple[np.ndarray, np.ndarray]:
    if n_codebooks < 1 or n_frames < 1:
        raise ValueError(f"a pattern needs at least one codebook and one frame, got {n_codebooks} x {n_frames}")
    return np.meshgrid(np.arange(n_codebooks), np.arange(n_frames), indexing="ij")  # q [K, F], t [K, F]


def parallel(n_codebooks: int, n_frames: int) -> CodebookPattern:
    q, t = _grid(n_codebooks, n_frames)
    return CodebookPattern("parallel", t.astype(np.int64))


def delay(n_codebooks: int, n_frames: int) -> CodebookPattern:
    q, t = _grid(n_codebooks, n_frames)
    return CodebookPattern("delay", (t + q).astype(np.int64))


def frame_major(n_codebooks: int, n_frames: int) -> CodebookPattern:
    q, t = _grid(n_codebooks, n_frames)
    return CodebookPattern("frame_major", (t * n_codebooks + q).astype(np.int64))


def coarse_first(n_codebooks: int, n_frames: int) -> CodebookPattern:
    q, t = _grid(n_codebooks, n_frames)
    return CodebookPattern("coarse_first", np.where(q == 0, t, n_frames - 1 + q).astype(np.int64))
