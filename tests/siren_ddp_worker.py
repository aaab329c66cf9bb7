"""Launched by test_siren under torchrun (gloo, CPU): trains one tiny expert data-parallel and
writes rank 0's weights and log, for comparison with a one-process run of the same batch.
`fsdp` as the second argument shards the expert (model.sharding=fsdp) and stops after step 2,
then resumes from the gathered state to the end, as a killed job does."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from siren_bench.models.train import train_expert
from tests.test_siren import ddp_case


def main(out: Path, sharding: str) -> None:
    dist.init_process_group("gloo")
    torch.set_num_threads(1)
    unsynced = []  # the micro-batches run under DDP's no_sync (the engine's one all-reduce per step)
    no_sync = torch.nn.parallel.DistributedDataParallel.no_sync
    torch.nn.parallel.DistributedDataParallel.no_sync = lambda self: unsynced.append(1) or no_sync(self)
    args = ddp_case(sharding)
    # sharded, the ranks resume from one state (rank 0 writes it; a job's ranks share its folder)
    resume = out / ("resume" if sharding == "fsdp" else f"resume-rank{dist.get_rank()}")
    if sharding == "fsdp":
        train_expert(*args, resume, "d", torch.device("cpu"), stop_after=2)
    result = train_expert(*args, resume, "d", torch.device("cpu"))
    if dist.get_rank() == 0:
        if sharding == "ddp":  # (sharded, the whole weights are in the resume state rank 0 gathered)
            torch.save(result.expert.state_dict(), out / "expert.pt")
        (out / "log.json").write_text(json.dumps(result.log))
        (out / "no_sync.json").write_text(json.dumps(len(unsynced)))
    # both ranks leave together: a rank that tore its gloo group down while rank 0 was still writing
    # was once killed at exit ("terminate called without an active exception"; fresh-clone make test)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else "ddp")
