"""Launched by test_generation under torchrun (gloo, CPU): each rank renders its share of the
batches of test_generation's small render into the shared resume folder given as argument."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from siren_bench.distributed import torchrun_group
from tests.test_generation import _render


def main(resume: Path) -> None:
    with torchrun_group(torch.device("cpu")):
        torch.set_num_threads(1)
        assert _render(None, resume) == {}


if __name__ == "__main__":
    main(Path(sys.argv[1]))
