"""LAION-CLAP (HTSAT audio tower + RoBERTa text tower) through transformers' ClapModel.

What "CLAP score" reads: the cosine between a caption's text embedding and a clip's audio
embedding, both taken after the projection heads and L2-normalised. Which checkpoint is loaded
changes the number a lot (REFERENCES.md section 4), so the weights are always named by hash.

Two ways in, one model class (transformers' ``ClapModel``, unfused):

- an HF-format folder (``laion/clap-htsat-unfused`` style: config.json, model.safetensors and the
  RoBERTa tokenizer files), loaded strictly: a tensor missing from the folder is an error;
- an original LAION-CLAP checkpoint (``630k-audioset-best.pt``, ``630k-best.pt``,
  ``music_speech_audioset_epoch_15_esc_89.98.pt`` ...): ``{"state_dict": {"module.<key>": ...},
  ...}`` as written by the LAION training code under DistributedDataParallel. Its keys are mapped
  onto ClapModel's (see :func:`map_original_clap_state`) and loaded with every key accounted for.
  The model's sizes are read off the tensor shapes. The tokenizer is not in that file: pass
  ``tokenizer_dir``, a local folder with the roberta-base tokenizer files.

A fusion checkpoint (``*-fusion-*``: ``enable_fusion``, extra ``patch_embed.mel_conv2d`` /
``fusion_model`` tensors) is refused: the fusion front end is not implemented here.

Audio recipe (LAION-CLAP's unfused inference path, ``CLAP_Module.get_audio_embedding_from_data``):

1. the clip is mono at 48 kHz (resampling is the caller's job: ``sample_rate`` is 48000);
2. int16 round trip: float32, clip to [-1, 1], ``x * 32767`` cast to int16 (truncation toward
   zero), then ``/ 32767`` back to float32;
3. fit to 10 s = 480000 samples. Shorter clips are "repeat-padded" exactly as LAION does: the
   clip is tiled ``floor(480000 / n)`` whole times and the rest is zero-padded (so a 4 s clip
   becomes 4 s + 4 s + 2 s of silence, not 10 s of repetition). Longer clips are cropped to 10 s.
   The original code draws that crop offset at random (``randint(0, n - 480000)``); here it is
   deterministic and chosen by ``crop``:
   - ``"center"`` (default): offset ``(n - 480000) // 2``;
   - ``"start"``: offset 0 (the first 10 s);
   - ``"random"``: the offset is drawn uniformly from ``[0, n - 480000]`` like the original, but
     from a generator seeded with ``(crop_seed, SHA-256 of the clip's int16 samples)``, so the
     same clip always gets the same crop, whatever batch or order it comes in;
4. log-mel: STFT with a 1024-point periodic Hann window, hop 480, centred frames (reflect
   padding), power spectrum, 64 Slaney mel bands from 50 Hz to 14 kHz (librosa's filters, which
   the original checkpoints carry as ``logmel_extractor.melW``), ``10 log10(max(mel, 1e-10))``,
   no top_db: 1001 frames x 64 bands (transformers' ClapFeatureExtractor with
   ``truncation="rand_trunc"``, which is its name for the unfused path; it is only ever handed
   exactly 480000 samples, so its own random crop never runs);
5. ClapModel's audio tower (BatchNorm over mel bands, bicubic resize to 1024 frames, HTSAT
   Swin layers, mean pool) and audio projection (Linear, ReLU, Linear).

Text recipe: RoBERTa BPE tokens, padded to and truncated at 77 tokens (LAION's
``CLAP_Module.tokenizer``), the text tower's pooled output (first token, dense + tanh), text
projection. Both towers' outputs are cast to float64 and L2-normalised in float64.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from transformers.audio_utils import mel_filter_bank

# transformers' CLAP classes are imported where a model is built, not here: every scoring run
# imports this module (it registers the embedder), and most recipes never open a CLAP model.
if TYPE_CHECKING:
    from transformers import ClapConfig, ClapFeatureExtractor, ClapModel

from siren_bench.embedders.base import Embedder, EmbedderInfo, Embedding
from siren_bench.io import sha256_file, sha256_json
from siren_bench.registry import EMBEDDERS
from siren_bench.weights import CheckpointError, from_pretrained_strict, load_exact, load_torch_checkpoint, verify_sha256

SAMPLE_RATE = 48_000
CLIP_SAMPLES = 480_000  # 10 s at 48 kHz
TEXT_MAX_TOKENS = 77
CROP_MODES = ("center", "start", "random")

# The unfused LAION-CLAP audio front end (HTSAT-tiny/base/large configs: sample_rate 48000,
# window_size 1024, hop_size 480, mel_bins 64, fmin 50, fmax 14000, clip_samples 480000).
FRONT_END = {
    "sampling_rate": SAMPLE_RATE,
    "feature_size": 64,
    "fft_window_size": 1024,
    "hop_length": 480,
    "frequency_min": 50,
    "frequency_max": 14_000,
    "max_length_s": 10,
    "top_db": None,
}
# Largest |difference| accepted between a checkpoint's frozen front-end tensors and ours, relative
# to the largest |value| of the tensor (float32 rounding in the original is ~1e-7).
FRONT_END_TOLERANCE = 1e-4

TOKENIZER_FILES = ("vocab.json", "merges.txt", "tokenizer.json", "tokenizer_config.json",
                   "special_tokens_map.json", "added_tokens.json")


# --------------------------------------------------------------------------- preprocessing


def int16_round_trip(wave: np.ndarray) -> np.ndarray:
    """Quantise to int16 and back, as LAION-CLAP does to every input clip (float32 out)."""
    x = np.clip(np.asarray(wave, dtype=np.float32), -1.0, 1.0) * np.float32(32767.0)
    return (x.astype(np.int16) / 32767.0).astype(np.float32)


def crop_offset(wave: np.ndarray, n_samples: int = CLIP_SAMPLES, crop: str = "center", crop_seed: int = 0) -> int:
    """Where a clip longer than `n_samples` is cropped (see the module docstring)."""
    overflow = len(wave) - n_samples
    if overflow <= 0:
        return 0
    if crop == "center":
        return overflow // 2
    if crop == "start":
        return 0
    if crop == "random":
        digest = hashlib.sha256(np.ascontiguousarray(wave).tobytes()).digest()
        rng = np.random.default_rng([int(crop_seed), int.from_bytes(digest[:8], "little")])
        return int(rng.integers(0, overflow + 1))
    raise ValueError(f"crop must be one of {CROP_MODES}, got {crop!r}")


def fit_to_clip(wave: np.ndarray, n_samples: int = CLIP_SAMPLES, crop: str = "center", crop_seed: int = 0) -> np.ndarray:
    """Repeat-pad (whole repeats, then zeros) or crop a 1-D wave to exactly `n_samples`."""
    n = len(wave)
    if n == 0:
        raise ValueError("cannot embed an empty clip")
    if n > n_samples:
        start = crop_offset(wave, n_samples, crop, crop_seed)
        return wave[start:start + n_samples]
    if n < n_samples:
        wave = np.tile(wave, n_samples // n)
        wave = np.pad(wave, (0, n_samples - len(wave)))
    return wave


def preprocess_clip(wave: np.ndarray, crop: str = "center", crop_seed: int = 0) -> np.ndarray:
    """One mono 48 kHz clip -> the 480000 float32 samples LAION-CLAP's audio tower sees."""
    wave = np.asarray(wave)
    if wave.ndim != 1:
        raise ValueError(f"expected a mono 1-D wave, got shape {wave.shape}")
    if not np.all(np.isfinite(wave)):
        raise ValueError("the clip contains NaN or infinite samples")
    return fit_to_clip(int16_round_trip(wave), CLIP_SAMPLES, crop, crop_seed)


def laion_feature_extractor() -> ClapFeatureExtractor:
    from transformers import ClapFeatureExtractor

    return ClapFeatureExtractor(**FRONT_END, truncation="rand_trunc", padding="repeatpad")


def front_end_tensors(n_fft: int = 1024, n_mels: int = 64) -> dict[str, np.ndarray]:
    """The frozen front-end tensors an original checkpoint must carry: the windowed DFT basis
    (torchlibrosa's STFT as a 1-D convolution, [n_fft/2+1, 1, n_fft]) and the Slaney mel matrix
    [n_fft/2+1, n_mels], the same filters ClapFeatureExtractor applies on the unfused path."""
    n = np.arange(n_fft)
    window = 0.5 - 0.5 * np.cos(2 * np.pi * n / n_fft)  # periodic Hann
    k = np.arange(n_fft // 2 + 1)
    angle = 2 * np.pi * np.outer(k, n) / n_fft
    mel = mel_filter_bank(num_frequency_bins=n_fft // 2 + 1, num_mel_filters=n_mels,
                          min_frequency=FRONT_END["frequency_min"], max_frequency=FRONT_END["frequency_max"],
                          sampling_rate=SAMPLE_RATE, norm="slaney", mel_scale="slaney")
    return {
        "audio_branch.spectrogram_extractor.stft.conv_real.weight": (np.cos(angle) * window)[:, None, :].astype(np.float32),
        "audio_branch.spectrogram_extractor.stft.conv_imag.weight": (-np.sin(angle) * window)[:, None, :].astype(np.float32),
        "audio_branch.logmel_extractor.melW": mel.astype(np.float32),
    }


def shifted_window_mask(height: int, width: int, window: int, shift: int) -> torch.Tensor:
    """The Swin attention mask of a shifted-window block: [n_windows, window^2, window^2], 0 where
    two positions of a window come from the same region of the rolled map, -100 elsewhere."""
    def regions(size: int) -> torch.Tensor:
        idx = torch.arange(size)
        return (idx >= size - window).long() + (idx >= size - shift).long()

    label = regions(height)[:, None] * 3 + regions(width)[None, :]  # [H, W]
    windows = label.reshape(height // window, window, width // window, window).permute(0, 2, 1, 3).reshape(-1, window * window)
    same = windows[:, None, :] == windows[:, :, None]
    return torch.where(same, 0.0, -100.0)


# --------------------------------------------------------------------------- the embedder


class ClapEmbedders(Embedder):
    """CLAP's audio tower as an Embedder (one [1, D] row per clip, no logits) plus its text tower
    (:meth:`embed_text`). Both give projected, L2-normalised float64 embeddings."""

    def __init__(self, model: ClapModel, tokenizer, name: str, checkpoint_sha256: str, tokenizer_sha256: str,
                 crop: str = "center", crop_seed: int = 0, batch_size: int = 8, device: str | torch.device = "cpu"):
        if crop not in CROP_MODES:
            raise ValueError(f"crop must be one of {CROP_MODES}, got {crop!r}")
        cfg = model.config
        if cfg.audio_config.enable_fusion:
            raise CheckpointError(f"{name}: a fusion CLAP model (enable_fusion=true); only unfused models are supported")
        if tokenizer.pad_token_id != cfg.text_config.pad_token_id:
            raise CheckpointError(f"{name}: the tokenizer pads with id {tokenizer.pad_token_id}, the text tower expects {cfg.text_config.pad_token_id}")
        if len(tokenizer) > cfg.text_config.vocab_size:
            raise CheckpointError(f"{name}: the tokenizer has {len(tokenizer)} tokens, the text tower only {cfg.text_config.vocab_size}")
        self.device = torch.device(device)
        self.model = model.eval().to(self.device)
        self.tokenizer = tokenizer
        self.feature_extractor = laion_feature_extractor()
        self.crop, self.crop_seed, self.batch_size = crop, int(crop_seed), int(batch_size)
        self.checkpoint_sha256 = checkpoint_sha256
        self.audio_recipe = {
            "recipe": "laion_clap_unfused", "sample_rate": SAMPLE_RATE, "clip_samples": CLIP_SAMPLES,
            "int16_round_trip": True, "fill": "repeatpad", "crop": crop,
            **({"crop_seed": self.crop_seed} if crop == "random" else {}), "front_end": FRONT_END,
        }
        self.text_recipe = {"recipe": "laion_clap_text", "max_tokens": TEXT_MAX_TOKENS, "padding": "max_length", "truncation": True}
        dim = cfg.projection_dim
        # weights_sha256 keys caches: the weights file plus every setting that changes the output.
        self.info = EmbedderInfo(name=f"{name}_audio", sample_rate=SAMPLE_RATE, dim=dim, n_classes=None,
                                 weights_sha256=sha256_json({"weights": checkpoint_sha256, "recipe": self.audio_recipe}))
        self.text_info = EmbedderInfo(name=f"{name}_text", sample_rate=0, dim=dim, n_classes=None,
                                      weights_sha256=sha256_json({"weights": checkpoint_sha256, "tokenizer": tokenizer_sha256, "recipe": self.text_recipe}))

    # ------------------------------------------------------------------ audio

    def preprocess(self, wave: np.ndarray) -> np.ndarray:
        return preprocess_clip(wave, self.crop, self.crop_seed)

    def log_mel(self, clips: np.ndarray) -> torch.Tensor:
        """[B, 480000] preprocessed clips -> [B, 1, 1001, 64] float32 log-mel input features."""
        features = self.feature_extractor(list(clips), sampling_rate=SAMPLE_RATE, truncation="rand_trunc",
                                          padding="repeatpad", return_tensors="np")["input_features"]
        return torch.as_tensor(np.asarray(features, dtype=np.float32))

    @torch.no_grad()
    def audio_features(self, input_features: torch.Tensor) -> np.ndarray:
        pooled = self.model.audio_model(input_features=input_features.to(self.device)).pooler_output
        return _normalise(self.model.audio_projection(pooled))

    def embed(self, waves: list[np.ndarray]) -> list[Embedding]:
        out: list[Embedding] = []
        for start in range(0, len(waves), self.batch_size):
            clips = np.stack([self.preprocess(w) for w in waves[start:start + self.batch_size]])
            for row in self.audio_features(self.log_mel(clips)):
                out.append(Embedding(frames=row[None, :], logits=None))
        return out

    # ------------------------------------------------------------------ text

    def tokenize(self, captions: list[str]) -> dict[str, torch.Tensor]:
        if isinstance(captions, str) or not all(isinstance(c, str) for c in captions):
            raise TypeError("captions must be a list of strings")
        return self.tokenizer(list(captions), padding="max_length", truncation=True, max_length=TEXT_MAX_TOKENS, return_tensors="pt")

    @torch.no_grad()
    def embed_text(self, captions: list[str]) -> np.ndarray:
        """Captions -> [N, D] float64 unit vectors."""
        rows = []
        for start in range(0, len(captions), 64):
            tokens = self.tokenize(captions[start:start + 64])
            pooled = self.model.text_model(input_ids=tokens["input_ids"].to(self.device),
                                           attention_mask=tokens["attention_mask"].to(self.device)).pooler_output
            rows.append(_normalise(self.model.text_projection(pooled)))
        return np.concatenate(rows) if rows else np.zeros((0, self.info.dim))

    # ------------------------------------------------------------------ loading

    @classmethod
    def from_hf_folder(cls, folder: str | Path, name: str = "clap", expected_sha256: str | None = None, **options) -> "ClapEmbedders":
        """An HF-format ClapModel folder with its tokenizer files (nothing is downloaded)."""
        folder = Path(folder)
        if not folder.is_dir():
            raise CheckpointError(f"{folder}: CLAP model folder not found")
        weights = next((folder / f for f in ("model.safetensors", "pytorch_model.bin") if (folder / f).is_file()), None)
        if weights is None:
            raise CheckpointError(f"{folder}: no model.safetensors or pytorch_model.bin in the folder")
        digest = verify_sha256(weights, expected_sha256)
        _check_front_end_config(folder)
        from transformers import ClapModel

        model = from_pretrained_strict(ClapModel, folder)
        if model.config.audio_config.enable_fusion:
            raise CheckpointError(f"{folder}: a fusion CLAP model (audio_config.enable_fusion=true); only unfused models are supported")
        tokenizer, tokenizer_sha = load_roberta_tokenizer(folder)
        checkpoint_sha = sha256_json({"weights": digest, "config": _config_fingerprint(model.config)})
        return cls(model, tokenizer, name, checkpoint_sha, tokenizer_sha, **options)

    @classmethod
    def from_original_checkpoint(cls, path: str | Path, tokenizer_dir: str | Path | None = None, name: str = "clap",
                                 expected_sha256: str | None = None, **options) -> "ClapEmbedders":
        """An original LAION-CLAP .pt checkpoint (unfused HTSAT + RoBERTa) and a local folder with
        the roberta-base tokenizer files (vocab.json + merges.txt, or tokenizer.json)."""
        path = Path(path)
        if tokenizer_dir is None:
            raise CheckpointError(f"{path}: an original LAION-CLAP checkpoint carries no tokenizer; pass tokenizer_dir, "
                                  "a local folder with the roberta-base tokenizer files (vocab.json and merges.txt)")
        digest = verify_sha256(path, expected_sha256)
        checkpoint = load_torch_checkpoint(path)
        state = checkpoint.get("state_dict", checkpoint)
        if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise CheckpointError(f"{path}: not a LAION-CLAP checkpoint (expected a 'state_dict' of tensors)")
        state = strip_module_prefix(state, path)
        config = clap_config_from_original_state(state, path)
        mapped, constants = map_original_clap_state(state, path)
        check_original_constants(constants, config, path)
        from transformers import ClapModel

        model = ClapModel(config)
        fill_constant_buffers(mapped, model, path)
        load_exact(model, mapped, path)
        tokenizer, tokenizer_sha = load_roberta_tokenizer(Path(tokenizer_dir))
        return cls(model, tokenizer, name, digest, tokenizer_sha, **options)


def _normalise(x: torch.Tensor) -> np.ndarray:
    x = x.detach().cpu().numpy().astype(np.float64)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _config_fingerprint(config: ClapConfig) -> dict:
    """The config as hashed: without the folder it was read from (``_name_or_path``) or other
    private fields, and without the transformers version that wrote it."""
    def clean(d):
        if isinstance(d, dict):
            return {k: clean(v) for k, v in d.items() if not k.startswith("_") and k != "transformers_version"}
        return d
    return clean(json.loads(json.dumps(config.to_dict(), default=str)))


def _check_front_end_config(folder: Path) -> None:
    """A folder whose preprocessor_config.json describes another front end is a different recipe."""
    path = folder / "preprocessor_config.json"
    if not path.is_file():
        return
    saved = json.loads(path.read_text())
    for key, ours in FRONT_END.items():
        if key in saved and saved[key] != ours and not (isinstance(ours, (int, float)) and isinstance(saved[key], (int, float)) and math.isclose(saved[key], ours)):
            raise CheckpointError(f"{folder}: preprocessor_config.json has {key}={saved[key]!r}; the LAION-CLAP recipe uses {ours!r}")


def load_roberta_tokenizer(folder: Path):
    """The RoBERTa BPE tokenizer from local files only; returns it and a hash of its files."""
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: tokenizer folder not found")
    present = [f for f in TOKENIZER_FILES if (folder / f).is_file()]
    if "tokenizer.json" not in present and not {"vocab.json", "merges.txt"} <= set(present):
        raise CheckpointError(f"{folder}: no RoBERTa tokenizer files (need tokenizer.json, or vocab.json and merges.txt)")
    from transformers import RobertaTokenizer

    try:
        tokenizer = RobertaTokenizer.from_pretrained(folder, local_files_only=True)
    except Exception as exc:  # the tokenizers backend raises bare Exceptions for inconsistent files
        raise CheckpointError(f"{folder}: cannot load the RoBERTa tokenizer ({type(exc).__name__}: {exc})") from exc
    return tokenizer, sha256_json({f: sha256_file(folder / f) for f in present})


# --------------------------------------------------------------------------- original layout

# Original LAION-CLAP state-dict layout (model CLAP with audio_cfg.model_type "HTSAT" and text
# model_type "roberta", unfused), after removing DDP's "module." prefix:
#   logit_scale_a, logit_scale_t                            -> same names
#   audio_branch.spectrogram_extractor.stft.conv_{real,imag}.weight, audio_branch.logmel_extractor.melW
#                                                           frozen front end: checked, then dropped
#   audio_branch.bn0.*                                      -> audio_model.audio_encoder.batch_norm.*
#   audio_branch.patch_embed.{proj,norm}.*                  -> audio_model.audio_encoder.patch_embed.*
#   audio_branch.layers.i.blocks.j.norm1 / norm2            -> ...layers.i.blocks.j.layernorm_before / layernorm_after
#   audio_branch.layers.i.blocks.j.attn.qkv [3C, C]         -> ...attention.self.query / key / value (rows split in thirds)
#   audio_branch.layers.i.blocks.j.attn.proj                -> ...attention.output.dense
#   audio_branch.layers.i.blocks.j.attn.relative_position_{bias_table,index}
#                                                           -> ...attention.self.relative_position_*
#   audio_branch.layers.i.blocks.j.mlp.fc1 / fc2            -> ...intermediate.dense / output.dense
#   audio_branch.layers.i.blocks.j.attn_mask                shifted-window mask: checked, then dropped
#   audio_branch.layers.i.downsample.{reduction,norm}.*     -> same names under audio_model.audio_encoder
#   audio_branch.norm.*                                     -> audio_model.audio_encoder.norm.*
#   audio_branch.tscam_conv.*, audio_branch.head.*          sound-event head, not on the embedding path: dropped
#   audio_projection.0 / .2                                 -> audio_projection.linear1 / linear2
#   text_branch.* (a transformers RobertaModel)             -> text_model.* (same inner names)
#   text_projection.0 / .2                                  -> text_projection.linear1 / linear2
#   audio_transform.*, text_transform.*                     MLPs used only inside the training loss: dropped

_DROPPED_PREFIXES = {
    "audio_branch.tscam_conv.": "HTSAT's sound-event head (framewise/clipwise outputs)",
    "audio_branch.head.": "HTSAT's sound-event head (framewise/clipwise outputs)",
    "audio_transform.": "the MLP used only inside the contrastive training loss",
    "text_transform.": "the MLP used only inside the contrastive training loss",
}
_FUSION_MARKERS = ("audio_branch.patch_embed.mel_conv2d.", "audio_branch.patch_embed.fusion_model.",
                   "audio_branch.mel_conv1d.", "audio_branch.fusion_model.")
_BLOCK_RENAMES = (
    ("norm1", "layernorm_before"),
    ("norm2", "layernorm_after"),
    ("attn.proj", "attention.output.dense"),
    ("attn.relative_position_bias_table", "attention.self.relative_position_bias_table"),
    ("attn.relative_position_index", "attention.self.relative_position_index"),
    ("mlp.fc1", "intermediate.dense"),
    ("mlp.fc2", "output.dense"),
)
_AUDIO = "audio_model.audio_encoder."
_SPEC_SIZE = 256  # HTSAT's spectrogram "image" side in every LAION HTSAT config (tiny, base, large)
_PATCH_STRIDE = 4
_ROBERTA_HEAD_DIM = 64  # roberta-base: 768 / 12 heads; roberta-large: 1024 / 16
_ROBERTA_LAYER_NORM_EPS = 1e-5  # roberta-base's config (ClapTextConfig's default is 1e-12)


def strip_module_prefix(state: dict[str, torch.Tensor], source: Path) -> dict[str, torch.Tensor]:
    """Remove DistributedDataParallel's "module." prefix (all keys carry it, or none)."""
    prefixed = [k.startswith("module.") for k in state]
    if all(prefixed):
        return {k[len("module."):]: v for k, v in state.items()}
    if any(prefixed):
        raise CheckpointError(f"{source}: some keys carry the 'module.' prefix and some do not")
    return dict(state)


def _shape(state: dict, key: str, source: Path) -> tuple[int, ...]:
    if key not in state:
        raise CheckpointError(f"{source}: not an unfused HTSAT + RoBERTa LAION-CLAP checkpoint (no {key})")
    return tuple(state[key].shape)


def _indices(state: dict, pattern: str) -> list[int]:
    found = {int(m[1]) for k in state if (m := re.match(pattern, k))}
    return sorted(found)


def clap_config_from_original_state(state: dict[str, torch.Tensor], source: Path) -> ClapConfig:
    """The ClapConfig an original (unfused HTSAT + RoBERTa) checkpoint describes, read off shapes."""
    if any(k.startswith(_FUSION_MARKERS) for k in state):
        raise CheckpointError(f"{source}: a fusion LAION-CLAP checkpoint (it has patch_embed fusion tensors); only unfused models are supported")
    if any(k.startswith("audio_branch.conv_block") for k in state):
        raise CheckpointError(f"{source}: a PANN-based LAION-CLAP checkpoint; only HTSAT audio towers are supported")
    if "token_embedding.weight" in state or "positional_embedding" in state:
        raise CheckpointError(f"{source}: a LAION-CLAP checkpoint with the CLIP-style 'transformer' text tower; only RoBERTa is supported")
    a = "audio_branch."
    embed, _, patch, _ = _shape(state, a + "patch_embed.proj.weight", source)
    layers = _indices(state, r"audio_branch\.layers\.(\d+)\.")
    if not layers or layers != list(range(len(layers))):
        raise CheckpointError(f"{source}: HTSAT layers {layers} are not numbered 0..n-1")
    depths = [len(_indices(state, rf"audio_branch\.layers\.{i}\.blocks\.(\d+)\.")) for i in layers]
    heads, window = [], None
    for i in layers:
        rows, n_heads = _shape(state, f"{a}layers.{i}.blocks.0.attn.relative_position_bias_table", source)
        w = (math.isqrt(rows) + 1) // 2
        if (2 * w - 1) ** 2 != rows or window not in (None, w):
            raise CheckpointError(f"{source}: relative position table of layer {i} has {rows} rows; not a square window of one size")
        heads.append(n_heads)
        window = w
    hidden = embed * 2 ** (len(layers) - 1)
    proj_out, proj_in = _shape(state, "audio_projection.0.weight", source)
    if proj_in != hidden:
        raise CheckpointError(f"{source}: audio_projection takes {proj_in} features but the HTSAT tower gives {hidden}")
    mlp_hidden = _shape(state, f"{a}layers.0.blocks.0.mlp.fc1.weight", source)[0]
    mel_bins = _shape(state, a + "bn0.weight", source)[0]
    n_classes = _shape(state, a + "head.weight", source)[0] if a + "head.weight" in state else 527

    t = "text_branch."
    vocab, width = _shape(state, t + "embeddings.word_embeddings.weight", source)
    text_layers = _indices(state, r"text_branch\.encoder\.layer\.(\d+)\.")
    if width % _ROBERTA_HEAD_DIM:
        raise CheckpointError(f"{source}: text width {width} is not a multiple of RoBERTa's head size {_ROBERTA_HEAD_DIM}")
    if _shape(state, "text_projection.0.weight", source) != (proj_out, width):
        raise CheckpointError(f"{source}: text_projection.0 has shape {tuple(state['text_projection.0.weight'].shape)}, expected {(proj_out, width)}")
    text_config = {
        "vocab_size": vocab,
        "hidden_size": width,
        "num_hidden_layers": len(text_layers),
        "num_attention_heads": width // _ROBERTA_HEAD_DIM,
        "intermediate_size": _shape(state, t + "encoder.layer.0.intermediate.dense.weight", source)[0],
        "max_position_embeddings": _shape(state, t + "embeddings.position_embeddings.weight", source)[0],
        "type_vocab_size": _shape(state, t + "embeddings.token_type_embeddings.weight", source)[0],
        "layer_norm_eps": _ROBERTA_LAYER_NORM_EPS,
        "hidden_act": "gelu",
        "pad_token_id": 1, "bos_token_id": 0, "eos_token_id": 2,
    }
    audio_config = {
        "patch_embeds_hidden_size": embed,
        "patch_size": patch,
        "patch_stride": [_PATCH_STRIDE, _PATCH_STRIDE],
        "spec_size": _SPEC_SIZE,
        "num_mel_bins": mel_bins,
        "depths": depths,
        "num_attention_heads": heads,
        "window_size": window,
        "mlp_ratio": mlp_hidden / embed,
        "hidden_size": hidden,
        "num_classes": n_classes,
        "enable_fusion": False,
        "hidden_act": "gelu",
        "layer_norm_eps": 1e-5,
    }
    from transformers import ClapConfig

    return ClapConfig(text_config=text_config, audio_config=audio_config, projection_dim=proj_out, projection_hidden_act="relu")


def map_original_clap_state(state: dict[str, torch.Tensor], source: Path) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Rename an original state dict (no "module." prefix) to ClapModel's keys.

    Returns (mapped tensors, frozen constants to check). Every key is either renamed, split
    (qkv), set aside as a constant to check (front end, shifted-window masks) or dropped by
    name (sound-event head, training-loss MLPs); anything else is an error naming the key."""
    mapped: dict[str, torch.Tensor] = {}
    constants: dict[str, torch.Tensor] = {}

    def put(key: str, value: torch.Tensor) -> None:
        if key in mapped:
            raise CheckpointError(f"{source}: two checkpoint tensors map onto {key}")
        mapped[key] = value

    for key, value in state.items():
        if key.startswith(_FUSION_MARKERS):
            raise CheckpointError(f"{source}: a fusion LAION-CLAP checkpoint ({key}); only unfused models are supported")
        if key.startswith(tuple(_DROPPED_PREFIXES)):
            continue
        if key in ("logit_scale_a", "logit_scale_t"):
            put(key, value)
        elif key.startswith(("audio_branch.spectrogram_extractor.", "audio_branch.logmel_extractor.")):
            constants[key] = value
        elif m := re.fullmatch(r"audio_branch\.layers\.(\d+)\.blocks\.(\d+)\.(.+)", key):
            prefix, rest = f"{_AUDIO}layers.{m[1]}.blocks.{m[2]}.", m[3]
            if rest == "attn_mask":
                constants[key] = value
            elif qkv := re.fullmatch(r"attn\.qkv\.(weight|bias)", rest):
                if value.shape[0] % 3:
                    raise CheckpointError(f"{source}: {key} has {value.shape[0]} rows, not 3 x width")
                for part, chunk in zip(("query", "key", "value"), value.chunk(3, dim=0)):
                    put(f"{prefix}attention.self.{part}.{qkv[1]}", chunk.clone())
            else:
                for old, new in _BLOCK_RENAMES:
                    if rest == old or rest.startswith(old + "."):
                        put(prefix + new + rest[len(old):], value)
                        break
                else:
                    raise CheckpointError(f"{source}: unexpected key in a LAION-CLAP checkpoint: {key}")
        elif m := re.fullmatch(r"audio_branch\.(bn0|patch_embed\.(?:proj|norm)|layers\.\d+\.downsample\.(?:reduction|norm)|norm)\.(\w+)", key):
            module = "batch_norm" if m[1] == "bn0" else m[1]
            put(f"{_AUDIO}{module}.{m[2]}", value)
        elif m := re.fullmatch(r"(audio|text)_projection\.([02])\.(weight|bias)", key):
            put(f"{m[1]}_projection.linear{1 if m[2] == '0' else 2}.{m[3]}", value)
        elif key.startswith("text_branch."):
            put("text_model." + key[len("text_branch."):], value)
        else:
            raise CheckpointError(f"{source}: unexpected key in a LAION-CLAP checkpoint: {key}")
    return mapped, constants


def check_original_constants(constants: dict[str, torch.Tensor], config: ClapConfig, source: Path) -> None:
    """The frozen tensors ClapModel does not hold must equal what it computes in their place:
    the STFT basis and mel matrix of the LAION front end, and each shifted-window mask."""
    expected = front_end_tensors(n_mels=config.audio_config.num_mel_bins)
    for key, ref in expected.items():
        if key not in constants:
            raise CheckpointError(f"{source}: no {key}; cannot check the audio front end")
        got = constants[key].detach().cpu().double().numpy()
        if got.shape != ref.shape:
            raise CheckpointError(f"{source}: {key} has shape {got.shape}, the LAION front end {ref.shape}")
        deviation = float(np.abs(got - ref).max() / np.abs(ref).max())
        if deviation > FRONT_END_TOLERANCE:
            raise CheckpointError(f"{source}: {key} differs from the LAION front end (48 kHz, n_fft 1024, 64 Slaney mels 50-14000 Hz) "
                                  f"by {deviation:.2e} of its range; the checkpoint uses another front end")
    audio = config.audio_config
    grid = audio.spec_size // audio.patch_stride[0]
    masks = {}
    for i, depth in enumerate(audio.depths):
        side = grid // 2 ** i
        if side > audio.window_size:  # else the block attends over the whole map, unshifted
            for j in range(1, depth, 2):
                masks[f"audio_branch.layers.{i}.blocks.{j}.attn_mask"] = shifted_window_mask(side, side, audio.window_size, audio.window_size // 2)
    for key, value in constants.items():
        if key in expected:
            continue
        if key not in masks:
            raise CheckpointError(f"{source}: unexpected {key}: this HTSAT configuration has no shifted-window mask there")
        if tuple(value.shape) != tuple(masks[key].shape) or not torch.equal(value.float().cpu(), masks[key]):
            raise CheckpointError(f"{source}: {key} is not the shifted-window mask of a {audio.spec_size}x{audio.spec_size} HTSAT input")


_CONSTANT_BUFFERS = ("text_model.embeddings.position_ids", "text_model.embeddings.token_type_ids", ".relative_position_index")


def fill_constant_buffers(mapped: dict[str, torch.Tensor], model: ClapModel, source: Path) -> None:
    """Index buffers (RoBERTa's position_ids / token_type_ids, Swin's relative_position_index) are
    functions of the config: when the checkpoint has them they must equal the model's own (a
    mismatch is an error), when it does not (position_ids is absent from checkpoints saved with
    transformers >= 4.31, token_type_ids from all) the model's own are used."""
    for key, value in model.state_dict().items():
        if not (key in _CONSTANT_BUFFERS[:2] or key.endswith(_CONSTANT_BUFFERS[2])):
            continue
        if key not in mapped:
            mapped[key] = value.clone()
        elif tuple(mapped[key].shape) != tuple(value.shape) or not torch.equal(mapped[key].to(value.dtype), value):
            raise CheckpointError(f"{source}: the checkpoint's {key} is not the index buffer this configuration uses")


@EMBEDDERS.register("clap")
def open_clap(spec, path: Path, pin: str | None, loader) -> ClapEmbedders:
    """An HF-format CLAP folder, or an original LAION .pt with the roberta-base tokenizer files in
    the weights folder's roberta-base/."""
    if path.is_dir():
        return ClapEmbedders.from_hf_folder(path, expected_sha256=pin)
    return ClapEmbedders.from_original_checkpoint(path, loader.weights_dir / "roberta-base", expected_sha256=pin)
