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


# What the official code does where ours has a switch (REFERENCES.md §2): our additions first,
# then the published 1.6B architecture, field by field. `deviations` lists every difference.
OUR_ADDITIONS = (
    ("null_caption", False, "a learned null caption per expert (the unconditional input of guidance)"),
    ("caption_dropout", 0.0, "captions replaced by the null caption in training, for guidance"),
    ("guidance", 1.0, "classifier-free guidance at sampling (the official code releases no inference)"),
)
PUBLISHED_1_6B = {"n_codebooks": 12, "codebook_size": 1024, "code_dim": 1024, "text_dim": 768, "codebooks_per_expert": 2,
                  "dim": 1024, "n_heads": 16, "n_kv_heads": 16, "temporal_layers": 14, "depth_layers": 2, "dropout": 0.1,
                  "text_encoder": "clap", "crop_frames": 300, "learning_rate": 3e-4, "warmup_steps": 2000}


def deviations(config, siren=None) -> list[dict]:
    """Every setting of `config` (a ModelConfig; the architecture's values from `siren`, the
    SirenConfig with the codec's shape filled in, where given) where this Siren differs from the
    official code's 1.6B model and recipe: {"setting", "value", "official", "kind": "addition" |
    "size", "what"}."""
    def value(key):
        return getattr(siren, key) if siren is not None and hasattr(siren, key) else getattr(config, key)

    rows = [{"setting": f"model.{key}", "value": value(key), "official": official, "kind": "addition", "what": what}
            for key, official, what in OUR_ADDITIONS if value(key) != official]
    if config.groups is not None:
        rows.append({"setting": "model.groups", "value": config.groups, "official": None, "kind": "size",
                     "what": "explicit expert grouping (official: two codebooks per expert)"})
    rows += [{"setting": f"model.{key}", "value": value(key), "official": official, "kind": "size",
              "what": "scale, tokenizer or recipe"}
             for key, official in PUBLISHED_1_6B.items() if value(key) != official]
    return rows
