"""Codecs behind one interface (base.Codec): DAC and EnCodec from local weights, and the small
trainable codecs (the mel-RVQ codec, the spectral codec, or DacModel at CPU size). `load_pretrained` reads a user's weights; `load_stage_codec` reads the folder
the `codec` stage wrote, which every later stage uses."""

from __future__ import annotations

import json
from pathlib import Path

from siren_bench.codecs.base import Codec, CodecInfo
from siren_bench.codecs.dac import DacCodec  # each module registers its Codec class in CODECS
from siren_bench.codecs.encodec import EncodecCodec
from siren_bench.codecs.melrvq import MelRVQCodec
from siren_bench.codecs.spectral import SpectralCodec
from siren_bench.config import CodecConfig
from siren_bench.registry import CODECS, RegistryError
from siren_bench.weights import CheckpointError

CODEC_INFO_NAME = "codec.json"

__all__ = ["Codec", "CodecInfo", "DacCodec", "EncodecCodec", "MelRVQCodec", "SpectralCodec", "CheckpointError", "load_pretrained",
           "load_stage_codec", "wrap_trained"]


def wrap_trained(backend: str, model, name: str, weights_sha256: str) -> Codec:
    """The Codec interface over a model the codec stage built or trained."""
    return CODECS.get(backend)(model, name, weights_sha256)


def load_pretrained(config: CodecConfig) -> tuple[str, Codec]:
    """(backend name, codec) for a pretrained source named in the config."""
    backend, form = config.source.split("_", 1)
    cls = CODECS.get(backend)
    loader = cls.from_original_checkpoint if form == "original" else cls.from_hf_folder
    return backend, loader(Path(config.path).expanduser(), name=config.name, expected_sha256=config.sha256)


def load_stage_codec(codec_dir: str | Path) -> Codec:
    codec_dir = Path(codec_dir)
    info_path = codec_dir / CODEC_INFO_NAME
    if not info_path.is_file():
        raise CheckpointError(f"{info_path}: not found (run the codec stage first)")
    info = json.loads(info_path.read_text())
    try:
        backend = CODECS.get(info.get("backend"))
    except RegistryError as exc:
        raise CheckpointError(f"{info_path}: {exc}") from exc
    codec = backend.from_hf_folder(codec_dir / "model", name=info["name"])
    if codec.info.weights_sha256 != info["weights_sha256"]:
        raise CheckpointError(f"{codec_dir / 'model'}: weights identity {codec.info.weights_sha256} differs from {info_path}'s {info['weights_sha256']}")
    return codec
