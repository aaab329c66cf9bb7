"""Loading an expert trained by the official Siren code (wjc2830/Siren, one safetensors file per
expert) into `SirenExpert`.

Every module name is the official one except the frozen code embedding: the official expert holds,
per codebook, DAC's codebook [V, c] and out-projection [D, c] + bias [D] (frozen) before its
projector; ours holds their product, each entry's decode vector [V, D] (what the codec's
`layer_features` gives), so one table serves every codec. The mapping composes them in float64.
Our null caption has no official counterpart: an official expert loads into a Siren with
`null_caption=false`.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from safetensors.torch import load_file

from siren_bench.models.siren import SirenExpert
from siren_bench.weights import CheckpointError

_FACTOR = re.compile(r"codebooks\.layers\.(\d+)\.(codebook\.weight|dac_out\.weight|dac_out\.bias)$")


def official_to_ours(state: dict[str, torch.Tensor], source: str = "state dict") -> dict[str, torch.Tensor]:
    """Official expert keys -> ours: each codebook's (codebook, dac_out) pair becomes its decode
    table `codebooks.layers.<k>.table.weight` = codebook @ dac_out.weight^T + dac_out.bias; all
    other keys pass through. Works on meta tensors (shapes only)."""
    factors: dict[int, dict[str, torch.Tensor]] = {}
    mapped = {}
    for key, value in state.items():
        match = _FACTOR.match(key)
        if match:
            factors.setdefault(int(match.group(1)), {})[match.group(2)] = value
        else:
            mapped[key] = value
    for k, parts in sorted(factors.items()):
        missing = {"codebook.weight", "dac_out.weight", "dac_out.bias"} - set(parts)
        if missing:
            raise CheckpointError(f"{source}: codebook layer {k} lacks {sorted(missing)}")
        codebook, weight, bias = parts["codebook.weight"], parts["dac_out.weight"], parts["dac_out.bias"]
        if codebook.shape[1] != weight.shape[1] or weight.shape[0] != bias.shape[0]:
            raise CheckpointError(f"{source}: codebook layer {k}: codebook {tuple(codebook.shape)}, dac_out "
                                  f"{tuple(weight.shape)} + {tuple(bias.shape)} do not compose")
        table = codebook.double() @ weight.double().T + bias.double()
        mapped[f"codebooks.layers.{k}.table.weight"] = table.to(codebook.dtype)
    return mapped


def load_official_expert(expert: SirenExpert, checkpoint: str | Path | dict[str, torch.Tensor]) -> SirenExpert:
    """Load an official expert's weights (a safetensors path or its state dict) into `expert`,
    strictly: every key and shape must match. `expert` may live on the meta device (the tensors
    are then assigned, not copied)."""
    source = str(checkpoint) if not isinstance(checkpoint, dict) else "official state dict"
    state = checkpoint if isinstance(checkpoint, dict) else load_file(str(checkpoint))
    mapped = official_to_ours(state, source)
    on_meta = next(expert.parameters()).is_meta
    try:
        expert.load_state_dict(mapped, strict=True, assign=on_meta)
    except RuntimeError as exc:
        raise CheckpointError(f"{source}: does not fit this expert (official layout expected; "
                              f"model.null_caption must be false for official weights): {exc}") from exc
    expert.make_trainable()
    return expert
