"""The one config loader every stage uses.

`params.yaml` is the composed Hydra config (conf/ -> params.yaml, rewritten by `dvc exp run`).
Stages read it here and turn the sections they need into typed dataclasses, so a value of the
wrong type or a missing required value fails up front with the file and key named, instead of
deep inside a stage.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from siren_bench.io import sha256_json

T = TypeVar("T")


class ConfigError(ValueError):
    """A params file that cannot be used; the message names the file and the key."""


@dataclass
class RunConfig:
    profile: str
    seed: int = 0
    device: str = "auto"
    artifacts_dir: str = "artifacts"
    reports_dir: str = "reports"


@dataclass
class SplitFractions:
    train: float = 0.8
    val: float = 0.1
    test: float = 0.1


@dataclass
class SynthCapsConfig:
    name: str = "synthcaps"
    sample_rate: int = 16000
    clip_seconds: float = 4.0
    n_clips: int = 480
    seed: int = 1234
    max_events: int = 3
    splits: SplitFractions = field(default_factory=SplitFractions)


@dataclass
class AudioCapsConfig:
    name: str = "audiocaps"
    audio_dir: str = "???"
    list_file: str = "???"
    # auto: name the protocol from the list's SHA-256; a protocol name: require that one;
    # custom: accept any list, recording its count and hash.
    protocol: str = "auto"
    sample_rate: int = 16000
    clip_seconds: float = 10.0
    channel_policy: str = "mean"  # mean | first
    on_sample_rate_mismatch: str = "resample"  # resample | error
    filename_patterns: list[str] = field(
        default_factory=lambda: [
            "{youtube_id}",
            "Y{youtube_id}",
            "{youtube_id}_{start_time}",
            "Y{youtube_id}_{start_time}",
            "{audiocap_id}",
        ]
    )
    extensions: list[str] = field(default_factory=lambda: [".wav", ".flac", ".ogg", ".mp3"])


DataConfig = SynthCapsConfig | AudioCapsConfig
_DATA_CONFIGS: dict[str, type] = {"synthcaps": SynthCapsConfig, "audiocaps": AudioCapsConfig}


def load_params(path: str | Path = "params.yaml") -> DictConfig:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: params file not found (run from the repository root or pass --params)")
    try:
        params = OmegaConf.load(path)
    except Exception as exc:  # yaml errors come in several types
        raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
    if not isinstance(params, DictConfig):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    OmegaConf.set_struct(params, False)
    return params


def section(params: DictConfig, key: str, schema: type[T], *, source: str = "params.yaml") -> T:
    """Validate `params[key]` against a dataclass schema and return an instance of it."""
    if key not in params:
        raise ConfigError(f"{source}: missing section '{key}'")
    try:
        merged = OmegaConf.merge(OmegaConf.structured(schema), params[key])
        missing = sorted(OmegaConf.missing_keys(merged))
        if missing:
            keys = ", ".join(f"{key}.{m}" for m in missing)
            raise ConfigError(f"{source}: required value not set: {keys} (pass e.g. -S {key}.{missing[0]}=...)")
        return OmegaConf.to_object(merged)  # type: ignore[return-value]
    except OmegaConfBaseException as exc:
        raise ConfigError(f"{source}: invalid value in section '{key}': {exc}".strip()) from exc


def run_config(params: DictConfig, source: str = "params.yaml") -> RunConfig:
    return section(params, "run", RunConfig, source=source)


def data_config(params: DictConfig, source: str = "params.yaml") -> DataConfig:
    name = OmegaConf.select(params, "data.name")
    if name not in _DATA_CONFIGS:
        raise ConfigError(f"{source}: data.name must be one of {sorted(_DATA_CONFIGS)}, got {name!r}")
    config = section(params, "data", _DATA_CONFIGS[name], source=source)
    if isinstance(config, SynthCapsConfig):
        _check_synthcaps(config, source)
    else:
        _check_choice(source, "data.channel_policy", config.channel_policy, ("mean", "first"))
        _check_choice(source, "data.on_sample_rate_mismatch", config.on_sample_rate_mismatch, ("resample", "error"))
    return config


def _check_choice(source: str, key: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{source}: {key} must be one of {list(choices)}, got {value!r}")


def _check_synthcaps(config: SynthCapsConfig, source: str) -> None:
    problems = []
    if config.n_clips < 3:
        problems.append(f"data.n_clips must be at least 3 (one per split), got {config.n_clips}")
    if config.sample_rate < 8000:
        problems.append(f"data.sample_rate must be at least 8000 Hz, got {config.sample_rate}")
    if config.clip_seconds < 1.0:
        problems.append(f"data.clip_seconds must be at least 1.0, got {config.clip_seconds}")
    if not 1 <= config.max_events <= 3:
        problems.append(f"data.max_events must be 1, 2 or 3, got {config.max_events}")
    fractions = dataclasses.astuple(config.splits)
    if min(fractions) <= 0 or abs(sum(fractions) - 1.0) > 1e-9:
        problems.append(f"data.splits must be positive and sum to 1, got {fractions}")
    if problems:
        raise ConfigError(f"{source}: " + "; ".join(problems))


def to_plain(obj: Any) -> Any:
    """A dataclass or DictConfig as plain JSON-able data (for provenance and hashing)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    if isinstance(obj, DictConfig):
        return OmegaConf.to_container(obj, resolve=True)
    if isinstance(obj, dict):
        return {key: to_plain(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_plain(value) for value in obj]
    return obj


def config_hash(obj: Any) -> str:
    return sha256_json(to_plain(obj))
