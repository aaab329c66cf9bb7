"""The baselines by name: how each is built from the pipeline's shapes and its config section,
saved, and loaded back. `eval.systems` names the ones a run trains, renders and scores.

Each entry takes the shape of the data from the pipeline (codebooks, entries, code vector width,
text width, longest sequence) and its architecture from `baselines.<name>` in params (fields of
its config dataclass; anything unknown is an error). Training settings (steps, batch, learning
rate schedule, caption dropout, seed) are `model.*`, shared with Siren so that every system
gets the same budget on the same tokens and captions.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from baselines.base import BaselineSpec, Generator
from siren_bench.io import sha256_file, write_json_atomic
from siren_bench.registry import SYSTEMS, RegistryError, import_package
from siren_bench.weights import CheckpointError


import_package("baselines")  # every baseline module registers its BaselineSpec in SYSTEMS


def spec(name: str) -> BaselineSpec:
    """The registered baseline `name` (a module of baselines/ or an installed `siren_bench.systems` entry point)."""
    found = SYSTEMS.get(name)
    if not isinstance(found, BaselineSpec):
        raise RegistryError(f"system {name!r} is registered as {found!r}, not a baselines.base.BaselineSpec")
    return found


def names() -> list[str]:
    """The baselines registered by the modules of baselines/ (installed plug-ins join when looked up)."""
    return SYSTEMS.names()


# pipeline shape -> the config fields it fills when a config class has them
SHAPE_FIELDS = ("n_codebooks", "codebook_size", "code_dim", "latent_dim", "text_dim", "max_frames")


def build(name: str, architecture: dict, shape: dict, source: str = "params.yaml") -> tuple[Generator, dict]:
    """The untrained model and its full config (as saved beside the weights)."""
    config_class = spec(name).config_class
    fields = {f.name for f in dataclasses.fields(config_class)}
    unknown = sorted(set(architecture) - fields)
    if unknown:
        raise ValueError(f"{source}: baselines.{name} has unknown keys {unknown}; {config_class.__name__} takes {sorted(fields)}")
    values = {k: v for k, v in shape.items() if k in fields} | dict(architecture)
    config = config_class(**values)
    return spec(name).model_class(config), dataclasses.asdict(config)


def save(model: Generator, name: str, config: dict, folder: Path, extra: dict) -> None:
    folder.mkdir(parents=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, folder / "model.safetensors")
    write_json_atomic(folder / "config.json", {"name": name, "config": config, **extra})


def load(folder: Path) -> tuple[Generator, dict]:
    """A trained baseline from its folder, every tensor checked against the saved architecture."""
    info_path, weights = folder / "config.json", folder / "model.safetensors"
    if not info_path.is_file() or not weights.is_file():
        raise CheckpointError(f"{folder}: no trained baseline here (config.json and model.safetensors; run train_baselines)")
    info = json.loads(info_path.read_text())
    try:
        found = spec(info.get("name"))
    except RegistryError as exc:
        raise CheckpointError(f"{info_path}: {exc}") from exc
    model = found.model_class(found.config_class(**info["config"]))
    try:
        model.load_state_dict(load_file(weights), strict=True)
    except (RuntimeError, OSError) as exc:
        raise CheckpointError(f"{weights}: does not fit {info['name']} as {info_path} describes it: {exc}") from exc
    return model.eval(), info | {"weights_sha256": sha256_file(weights)}


def parameter_count(model: torch.nn.Module, trainable_only: bool = True) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def config_key(name: str, architecture: dict, training, data_id: str) -> str:
    """Names an interrupted run of exactly this model, training config and data (resume files)."""
    from siren_bench.config import config_hash, training_identity

    return config_hash({"name": name, "architecture": architecture, "training": training_identity(training), "data": data_id})[:16]


def architecture(name: str, siren, overrides: dict) -> dict:
    """A baseline with `sizes_from_siren` (shared_lm) starts from the sizes of one Siren expert
    (`siren`, a SirenConfig); the others from their own config class's defaults."""
    if not spec(name).sizes_from_siren:
        return dict(overrides)
    return {k: v for k, v in dataclasses.asdict(siren).items() if k not in ("groups", "codebooks_per_expert")} | dict(overrides)
