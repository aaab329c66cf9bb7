"""Running a stage over several processes with torchrun: which rank this is, and the process group.

Every multi-process part of the harness (data-parallel training in siren_bench/trainer.py, the
sharded tokenize stage) reads its rank here, so one process without torchrun is simply rank 0
of 1 and runs the same code.
"""

from __future__ import annotations

import datetime
import os
from contextlib import contextmanager
from typing import Iterator

import torch
import torch.distributed as dist

from siren_bench.errors import RankMismatchError


def rank_and_world() -> tuple[int, int]:
    """This process's rank and the number of ranks (0, 1 without a process group)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


COLLECTIVE_TIMEOUT = datetime.timedelta(hours=1)


def launched_world() -> int:
    """How many ranks torchrun launched (WORLD_SIZE; 1 outside torchrun), known before any process
    group exists, so a job can be refused before it loads data."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank_device(device: torch.device) -> torch.device:
    """`device`, or under torchrun with CUDA this rank's GPU (cuda:LOCAL_RANK), also before the
    process group exists."""
    if device.type == "cuda" and launched_world() > 1:
        return torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    return device


@contextmanager
def torchrun_group(device: torch.device) -> Iterator[torch.device]:
    """Under torchrun (WORLD_SIZE > 1): the process group for the block (NCCL with this rank on
    cuda:LOCAL_RANK when `device` is CUDA, gloo on the CPU), destroyed afterwards; yields the
    rank's device. Without torchrun: `device`, and no group."""
    if launched_world() == 1:
        yield device
        return
    device = rank_device(device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    # rank 0 alone validates, runs the interference probe and writes multi-GB resume states while
    # the others wait in their next collective: allow it an hour, not the default 10 minutes
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=COLLECTIVE_TIMEOUT)
    try:
        yield device
    finally:
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every rank (nothing to wait for in one process)."""
    if rank_and_world()[1] > 1:
        dist.barrier()


def require_same_on_ranks(value: str, what: str) -> None:
    """Every rank must hold the same `value` (e.g. the hash of the clip list it is about to split):
    gathered from all ranks, which also waits for every rank; a rank that differs is an error
    naming `what` and the ranks, on every rank, never a silently mixed result."""
    rank, world = rank_and_world()
    if world == 1:
        return
    seen: list = [None] * world
    dist.all_gather_object(seen, value)
    if len(set(seen)) > 1:
        groups: dict = {}
        for r, v in enumerate(seen):
            groups.setdefault(v, []).append(r)
        raise RankMismatchError(f"{what} differs between ranks: " + "; ".join(
            f"ranks {ranks} hold {str(v)[:16]}" for v, ranks in groups.items()) + " (every rank must be given the same inputs)")
