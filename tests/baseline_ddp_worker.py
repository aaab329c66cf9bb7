"""Launched by test_baselines under torchrun (gloo, CPU): trains the tiny delay-pattern LM
data-parallel through the one engine and writes rank 0's weights and log, for comparison with a
one-process run of the same batches."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from siren_bench.distributed import rank_and_world, torchrun_group
from siren_bench.models.train import train_model
from tests.test_baselines import ddp_delay_case


def main(out: Path) -> None:
    with torchrun_group(torch.device("cpu")):
        torch.set_num_threads(1)
        model, config, tokens = ddp_delay_case()
        rank, _ = rank_and_world()
        log, _ = train_model(model, "delay_lm", config, tokens, None, out / f"state-rank{rank}.pt", torch.device("cpu"), [0, 7])
        if rank == 0:
            torch.save(model.state_dict(), out / "model.pt")
            (out / "log.json").write_text(json.dumps(log))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
