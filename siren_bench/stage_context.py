"""What every stage starts with: its params, its run config, and where stage folders live."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig

from siren_bench.config import ConfigError, RunConfig, load_params, run_config


def stage_dir(artifacts_dir: str | Path, profile: str, stage: str) -> Path:
    return Path(artifacts_dir) / profile / stage


@dataclass
class StageContext:
    params: DictConfig
    source: str  # the params file, named in config errors
    run: RunConfig

    def dir(self, stage: str) -> Path:
        """artifacts/<profile>/<stage>: where that stage's output folder lives."""
        return stage_dir(self.run.artifacts_dir, self.run.profile, stage)

    def device(self) -> torch.device:
        """run.device resolved: auto = CUDA where present, else CPU; cuda without a GPU is an error."""
        requested = self.run.device
        if requested not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"{self.source}: run.device must be auto, cpu or cuda, got {requested!r}")
        if requested == "cuda" and not torch.cuda.is_available():
            raise ConfigError(f"{self.source}: run.device=cuda but no CUDA device is available")
        return torch.device("cuda" if requested != "cpu" and torch.cuda.is_available() else "cpu")


def use_deterministic_kernels(device_setting: str) -> None:
    """Make torch pick its deterministic kernels, so a rerun gives the same bits.

    Without this, CPU ops such as the backward of indexing with repeated indices (index_put_ with
    accumulate) add in whatever order the threads finish, and two runs of the same training drift
    apart in the last bits within a few steps. On the CPU an op with no deterministic kernel is an
    error; on a GPU, where some ops have none, torch warns instead, and cuBLAS gets the fixed
    workspace its deterministic mode needs (set before CUDA starts; a user's setting wins)."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    on_gpu = device_setting != "cpu" and torch.cuda.is_available()
    torch.use_deterministic_algorithms(True, warn_only=on_gpu)


def open_stage(params_path: str | Path) -> StageContext:
    """Load and validate the params, apply the run's CPU thread count and deterministic kernels."""
    params = load_params(params_path)
    run = run_config(params, str(params_path))
    torch.set_num_threads(run.threads)
    use_deterministic_kernels(run.device)
    return StageContext(params, str(params_path), run)
