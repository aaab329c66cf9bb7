"""Launched by test_siren under torchrun (gloo, CPU): trains one tiny expert data-parallel and
writes rank 0's weights and log, for comparison with a one-process run of the same batch."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from siren_bench.models.train import train_expert
from tests.test_siren import ddp_case


def main(out: Path) -> None:
    dist.init_process_group("gloo")
    torch.set_num_threads(1)
    args = ddp_case()
    result = train_expert(*args, out / f"resume-rank{dist.get_rank()}", "d", torch.device("cpu"))
    if dist.get_rank() == 0:
        torch.save(result.expert.state_dict(), out / "expert.pt")
        (out / "log.json").write_text(json.dumps(result.log))
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
