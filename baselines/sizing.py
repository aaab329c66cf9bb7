"""Baselines at Siren's size: the depth at which each baseline has Siren's trainable parameters.

A comparison of Siren with a baseline of a third of its size mixes the design with the size.
`match_depths` finds, for each baseline with the widths its config section gives, the depth
(its `depth_fields`, all set to one value) whose trainable parameter count is nearest to
Siren's over all its experts (less the frozen code tables, as the report counts them). Models
are built on the meta device, so a 1.6B-parameter count costs no memory; parameters are affine
in the depth, so two builds give the slope and a third checks the answer.

`siren-bench match-baselines -S model=siren_1_6b -S baselines=paper` prints the counts and the
overrides; conf/baselines/matched_1_6b.yaml holds them for the paper-scale run (a test checks it
is within 10 %, the tolerance the real-run issue asks for, and the report states every ratio).
"""

from __future__ import annotations

import dataclasses

import torch

DEPTH_FIELDS = {  # the fields that set each baseline's depth, moved together
    "shared_lm": ("temporal_layers",),
    "delay_lm": ("layers",),
    "ar_nar": ("ar_layers", "nar_layers"),
    "latent_diffusion": ("layers",),
}
TOLERANCE = 0.10


def trainable(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def siren_trainable(siren) -> int:
    """Siren's trainable parameters (all experts), counted on the meta device."""
    from siren_bench.models.collaborative import Siren

    with torch.device("meta"):
        return trainable(Siren(siren))


def baseline_trainable(name: str, architecture: dict, shape: dict) -> int:
    from baselines import registry

    with torch.device("meta"):
        model, _ = registry.build(name, architecture, shape)
    return trainable(model)


def match_depth(name: str, architecture: dict, shape: dict, target: int) -> dict:
    """The depth whose count is nearest to `target`, and the counts: {depth, parameters, ratio}."""
    fields = DEPTH_FIELDS[name]

    def count(depth: int) -> int:
        return baseline_trainable(name, architecture | {f: depth for f in fields}, shape)

    one, two = count(1), count(2)
    slope = two - one
    depth = max(1, round(1 + (target - one) / slope))
    parameters = count(depth)
    return {"fields": list(fields), "depth": depth, "parameters": parameters, "ratio": parameters / target}


def match_depths(siren, architectures: dict[str, dict], names: list[str]) -> dict:
    """For each baseline of `names`, its depth matched to `siren` (a SirenConfig) at the widths in
    `architectures` (params' `baselines` section); shared_lm starts from one expert's sizes."""
    from baselines import registry

    target = siren_trainable(siren)
    shape = {"n_codebooks": siren.n_codebooks, "codebook_size": siren.codebook_size, "code_dim": siren.code_dim,
             "latent_dim": siren.code_dim, "text_dim": siren.text_dim, "max_frames": siren.max_frames}
    matched = {}
    for name in names:
        architecture = registry.architecture(name, siren, architectures.get(name, {}))
        matched[name] = match_depth(name, architecture, shape, target)
    return {"siren_trainable_parameters": target, "tolerance": TOLERANCE, "baselines": matched}


def overrides(matched: dict, architectures: dict[str, dict]) -> dict[str, dict]:
    """The `baselines` section with each matched depth set (widths as given)."""
    return {name: dict(architectures.get(name, {})) | {f: m["depth"] for f in m["fields"]}
            for name, m in matched["baselines"].items()}


def siren_of(model_config) -> "object":
    """The SirenConfig a ModelConfig describes, its shape fields required (the presets set them)."""
    from siren_bench.config import SirenConfig

    fields = {f.name: getattr(model_config, f.name) for f in dataclasses.fields(SirenConfig)}
    missing = [k for k in ("n_codebooks", "codebook_size", "code_dim", "text_dim") if fields[k] is None]
    if missing:
        raise ValueError(f"model.{missing[0]} is null (taken from the pipeline's codec): give the shape to size against, "
                         "e.g. -S model=siren_1_6b")
    return SirenConfig(**fields)
