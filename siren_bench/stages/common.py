"""What every stage starts with: its params, its run config, and where stage folders live."""

from __future__ import annotations

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


def open_stage(params_path: str | Path) -> StageContext:
    """Load and validate the params, and apply the run's CPU thread count."""
    params = load_params(params_path)
    run = run_config(params, str(params_path))
    torch.set_num_threads(run.threads)
    return StageContext(params, str(params_path), run)
