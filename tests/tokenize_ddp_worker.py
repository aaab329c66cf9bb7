"""Launched by test_tokenize under torchrun (gloo, CPU): tokenizes the test's clips sharded over
the ranks through the shared content cache; rank 0 writes what it assembled."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from siren_bench.cache import ContentCache
from siren_bench.distributed import rank_and_world, torchrun_group
from siren_bench.stages.tokenize import tokenize_clips
from tests.test_tokenize import _codec


def main(root: Path) -> None:
    manifest = pd.read_csv(root / "manifest.csv")
    with torchrun_group(torch.device("cpu")):
        torch.set_num_threads(1)
        cache = ContentCache(root / "cache")
        encoded, put = [], cache.put
        cache.put = lambda key, value: encoded.append(key) or put(key, value)  # the clips this rank encoded
        codes = tokenize_clips(_codec(0), manifest, cache, batch=2)
        rank, world = rank_and_world()
        (root / f"encoded-rank{rank}.txt").write_text(str(len(encoded)))
        if rank == 0:
            np.savez(root / "sharded.npz", **codes)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
