"""Launched by test_evaluation under torchrun (gloo, CPU): embeds a folder's clips with the ranks
sharing the work through the content cache; each rank writes what it holds and what it embedded.
With "mismatch", rank 1 is given one clip fewer; with "private-cache", each rank has a cache folder of
its own (as node-local disks would be); each rank then writes the error it raised."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

from siren_bench.cache import ContentCache
from siren_bench.distributed import rank_and_world, torchrun_group
from siren_bench.errors import RankMismatchError
from siren_bench.embedders.base import Embedder, EmbedderInfo, Embedding
from siren_bench.evaluation.clipsets import folder_clips
from siren_bench.evaluation.embedding import embed_clips
from siren_bench.recipes import get_recipe


class FrameStats(Embedder):
    """A deterministic stand-in network: per 0.25 s frame, mean, RMS and peak; and it counts calls."""

    def __init__(self):
        self.info = EmbedderInfo("frame_stats", 16000, 3, None, "f" * 64)
        self.calls = 0

    def embed(self, waves: list[np.ndarray]) -> list[Embedding]:
        self.calls += len(waves)
        out = []
        for wave in waves:
            frames = wave[: len(wave) // 4000 * 4000].reshape(-1, 4000)
            out.append(Embedding(np.stack([frames.mean(1), np.sqrt((frames ** 2).mean(1)), np.abs(frames).max(1)], 1), None))
        return out


def embed(root: Path, cache_dir: Path, drop: int = 0) -> tuple[dict, int]:
    clips = folder_clips(root / "audio")
    embedder = FrameStats()
    spec = get_recipe("smoke").spec("fad")
    done = embed_clips([clips.clips[c] for c in clips.ids[drop:]], spec, embedder, ContentCache(cache_dir))
    return {c: e.frames for c, e in done.embeddings.items()}, embedder.calls


def main(root: Path, mode: str) -> None:
    with torchrun_group(torch.device("cpu")):
        rank, _ = rank_and_world()
        if mode:
            try:
                if mode == "mismatch":
                    embed(root, root / "cache", drop=rank)
                else:
                    embed(root, root / f"cache-{mode}-rank{rank}")
            except RankMismatchError as exc:
                (root / f"error-{mode}-rank{rank}.txt").write_text(str(exc))
            return
        held, calls = embed(root, root / "cache")
        np.savez(root / f"rank{rank}.npz", **held)
        (root / f"calls-rank{rank}.txt").write_text(str(calls))


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else "")
