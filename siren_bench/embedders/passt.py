"""PaSST (Koutini et al., "Efficient Training of Audio Transformers with Patchout", 2022) as an
Embedder: the AudioSet tagger behind the KL of audiocraft and stable-audio-metrics.

Our own implementation of the released ``passt-s-f128-p16-s10-ap.476-swa.pt`` (hear21passt's
``passt_s_swa_p16_128_ap476``), laid out so that the released state dict loads key for key:

- ``patch_embed.proj`` (Conv2d 1 -> 768, 16x16 patches, stride 10 over the 128 x 998 log-mel),
  ``cls_token`` and ``dist_token`` (DeiT-distilled), ``new_pos_embed`` [1, 2, 768] for those two
  tokens, ``freq_new_pos_embed`` [1, 768, 12, 1] and ``time_new_pos_embed`` [1, 768, 1, 99];
- ``blocks.0..11`` pre-norm ViT blocks (``norm1``, ``attn.qkv`` with bias, ``attn.proj``,
  ``norm2``, ``mlp.fc1``/``fc2`` with GELU; LayerNorm eps 1e-6), then ``norm``;
- ``head`` = LayerNorm (eps 1e-5) + Linear(768, 527), ``head_dist`` = Linear(768, 527).

Inference (eval mode: no patchout, no SpecAugment, no random mel-range augmentation):

1. front end (hear21passt's AugmentMelSTFT in eval mode): pre-emphasis y[n] = x[n+1] - 0.97 x[n]
   (one sample shorter), centred STFT (n_fft 1024, reflect padding) with a symmetric 800-sample
   Hann window zero-padded to 1024, hop 320; power; Kaldi mel filters (128 bands, 0-15000 Hz:
   fmax = sr/2 - 1000, triangles in Kaldi's mel space, Nyquist column zero); log(mel + 1e-5);
   then (x + 4.5) / 5;
2. patches + frequency and time position embeddings (the time table is cut to the clip's
   patches, so inputs up to 10 s of 32 kHz audio fit), the two tokens, 12 blocks, ``norm``;
3. features = mean of the cls and dist token outputs (768-d); logits = ``head(features)``.
   ``head_dist`` is in the checkpoint but, as in hear21passt's forward, not used.

``frames`` are the per-window features, ``logits`` the per-window pre-sigmoid logits; the two
toolkits' windowing is a framing knob (see `window_starts`). Nothing downloads: weights load
from a local file with ``torch.load(weights_only=True)`` after an optional SHA-256 check.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers.audio_utils import mel_filter_bank

from siren_bench.embedders.base import Embedder, EmbedderInfo, Embedding
from siren_bench.registry import EMBEDDERS
from siren_bench.weights import CheckpointError, load_exact, load_torch_checkpoint, verify_sha256

RELEASE_FILE = "passt-s-f128-p16-s10-ap.476-swa.pt"
FRAMINGS = ("windows_10s_hop5s", "chunks_10s")


@dataclass(frozen=True)
class PasstConfig:
    sample_rate: int = 32000
    n_fft: int = 1024
    win_length: int = 800
    hop: int = 320
    n_mels: int = 128
    fmin: float = 0.0
    fmax: float = 15000.0  # hear21passt: sr // 2 - fmax_aug_range // 2 with fmax_aug_range 2000
    preemphasis: float = 0.97
    input_frames: int = 998  # the model's time extent in mel frames (10 s)
    patch: int = 16
    stride: int = 10
    dim: int = 768
    depth: int = 12
    heads: int = 12
    mlp_ratio: int = 4
    n_classes: int = 527

    @property
    def grid(self) -> tuple[int, int]:
        return self.n_mels // self.stride, self.input_frames // self.stride

    @property
    def min_samples(self) -> int:
        """Fewest samples that give one patch in time (16 mel frames after pre-emphasis)."""
        return (self.patch - 1) * self.hop + 2


def kaldi_mel_filters(cfg: PasstConfig) -> np.ndarray:
    """[n_fft/2 + 1, n_mels] Kaldi mel filters (torchaudio.compliance.kaldi.get_mel_banks, VTLN
    off) with the Nyquist row zero, as hear21passt pads them; transformers' implementation."""
    filters = mel_filter_bank(num_frequency_bins=cfg.n_fft // 2 + 1, num_mel_filters=cfg.n_mels, min_frequency=cfg.fmin,
                              max_frequency=cfg.fmax, sampling_rate=cfg.sample_rate, norm=None, mel_scale="kaldi",
                              triangularize_in_mel_space=True)
    filters[-1] = 0.0  # Kaldi's bank covers bins 0 .. n_fft/2 - 1; hear21passt pads the last one with zero
    return filters


class PasstFrontEnd(nn.Module):
    """Mono wave [B, T] -> normalised log-mel [B, 128, frames] (hear21passt's eval-mode front end)."""

    def __init__(self, cfg: PasstConfig):
        super().__init__()
        self.cfg = cfg
        window = torch.hann_window(cfg.win_length, periodic=False, dtype=torch.float64)
        self.register_buffer("window", window.float(), persistent=False)
        self.register_buffer("mel", torch.from_numpy(kaldi_mel_filters(cfg).T.copy()).float(), persistent=False)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        c = self.cfg
        x = wave[:, 1:] - c.preemphasis * wave[:, :-1]
        spec = torch.stft(x, c.n_fft, hop_length=c.hop, win_length=c.win_length, window=self.window, center=True,
                          pad_mode="reflect", normalized=False, return_complex=True)
        power = spec.real.square() + spec.imag.square()
        mel = torch.matmul(self.mel, power)
        return (torch.log(mel + 1e-5) + 4.5) / 5.0


class PatchEmbed(nn.Module):
    def __init__(self, cfg: PasstConfig):
        super().__init__()
        self.proj = nn.Conv2d(1, cfg.dim, kernel_size=cfg.patch, stride=cfg.stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class Attention(nn.Module):
    def __init__(self, cfg: PasstConfig):
        super().__init__()
        self.heads = cfg.heads
        self.qkv = nn.Linear(cfg.dim, 3 * cfg.dim)
        self.proj = nn.Linear(cfg.dim, cfg.dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        return self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, d))


class Mlp(nn.Module):
    def __init__(self, cfg: PasstConfig):
        super().__init__()
        self.fc1 = nn.Linear(cfg.dim, cfg.mlp_ratio * cfg.dim)
        self.fc2 = nn.Linear(cfg.mlp_ratio * cfg.dim, cfg.dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, cfg: PasstConfig):
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.dim, eps=1e-6)
        self.attn = Attention(cfg)
        self.norm2 = nn.LayerNorm(cfg.dim, eps=1e-6)
        self.mlp = Mlp(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class Passt(nn.Module):
    """Log-mel [B, 1, 128, frames <= 998 (+3)] -> (logits [B, 527], features [B, 768])."""

    def __init__(self, cfg: PasstConfig = PasstConfig()):
        super().__init__()
        self.cfg = cfg
        freq, time = cfg.grid
        self.patch_embed = PatchEmbed(cfg)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.dim))
        self.dist_token = nn.Parameter(torch.zeros(1, 1, cfg.dim))
        self.new_pos_embed = nn.Parameter(torch.zeros(1, 2, cfg.dim))
        self.freq_new_pos_embed = nn.Parameter(torch.zeros(1, cfg.dim, freq, 1))
        self.time_new_pos_embed = nn.Parameter(torch.zeros(1, cfg.dim, 1, time))
        self.blocks = nn.Sequential(*[Block(cfg) for _ in range(cfg.depth)])
        self.norm = nn.LayerNorm(cfg.dim, eps=1e-6)
        self.head = nn.Sequential(nn.LayerNorm(cfg.dim), nn.Linear(cfg.dim, cfg.n_classes))
        self.head_dist = nn.Linear(cfg.dim, cfg.n_classes)

    def forward(self, mel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.patch_embed(mel)  # [B, D, freq patches, time patches]
        if x.shape[-1] > self.time_new_pos_embed.shape[-1]:
            raise ValueError(f"{x.shape[-1]} time patches exceed PaSST's {self.time_new_pos_embed.shape[-1]} (10 s)")
        x = x + self.time_new_pos_embed[..., : x.shape[-1]] + self.freq_new_pos_embed
        x = x.flatten(2).transpose(1, 2)
        b = x.shape[0]
        tokens = torch.cat([self.cls_token + self.new_pos_embed[:, :1], self.dist_token + self.new_pos_embed[:, 1:]], dim=1)
        x = self.norm(self.blocks(torch.cat([tokens.expand(b, -1, -1), x], dim=1)))
        features = (x[:, 0] + x[:, 1]) / 2
        return self.head(features), features


def window_starts(n_samples: int, framing: str, sample_rate: int = 32000) -> list[tuple[int, bool]]:
    """(start sample, zero-pad to 10 s?) of each analysis window under a toolkit's framing.

    ``windows_10s_hop5s`` (stable-audio-metrics' return_probabilities): starts 0, 5 s, 10 s, ...
    below max(5 s, length - 5 s); a window shorter than 10 s is zero-padded to 10 s when it holds
    more than 1.5 s of audio and is passed as it is otherwise (its quirk, reproduced).
    ``chunks_10s`` (audiocraft's PasstKLDivergenceMetric): consecutive 10 s chunks, never padded;
    chunks of 0.15 s or less are dropped.
    """
    window, step = 10 * sample_rate, 5 * sample_rate
    if framing == "windows_10s_hop5s":
        starts = range(0, max(step, n_samples - step), step)
        return [(s, 0.15 * window < min(window, n_samples - s) < window) for s in starts]
    if framing == "chunks_10s":
        return [(s, False) for s in range(0, n_samples, window) if min(window, n_samples - s) > 0.15 * sample_rate]
    raise ValueError(f"unknown PaSST framing {framing!r}; choose one of {FRAMINGS}")


class PasstEmbedder(Embedder):
    """PaSST at 32 kHz: per clip, frames = [n_windows, 768] features, logits = [n_windows, 527].

    Each window runs alone (batch of one, as both toolkits do). The metric code averages the
    window logits before its softmax: stable-audio-metrics' ``collect='mean'`` exactly; for
    audiocraft, which pairs the clips' chunks one by one, this is the same whenever a clip is one
    chunk (clips up to 10 s, such as AudioCaps').
    """

    def __init__(self, model: Passt, weights_sha256: str, framing: str = "chunks_10s", device: str | torch.device = "cpu"):
        if framing not in FRAMINGS:
            raise ValueError(f"unknown PaSST framing {framing!r}; choose one of {FRAMINGS}")
        self.cfg = model.cfg
        self.framing = framing
        self.device = torch.device(device)
        self.front_end = PasstFrontEnd(self.cfg).to(self.device)
        self.model = model.to(self.device).eval().requires_grad_(False)
        self.info = EmbedderInfo(name="passt_32k", sample_rate=self.cfg.sample_rate, dim=self.cfg.dim,
                                 n_classes=self.cfg.n_classes, weights_sha256=weights_sha256)

    @classmethod
    def from_checkpoint(cls, path: str | Path, expected_sha256: str | None = None, framing: str = "chunks_10s",
                        device: str | torch.device = "cpu") -> PasstEmbedder:
        """Load the released state dict (bare, or under ``"model"``); CheckpointError naming the
        file when it is missing, its hash differs, it is not weights-only, or any key or shape differs."""
        path = Path(path)
        sha = verify_sha256(path, expected_sha256)
        obj = load_torch_checkpoint(path)
        state = obj.get("model", obj)
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise CheckpointError(f"{path}: expected a PaSST state dict of tensors (top-level keys: {sorted(map(str, obj))[:5]})")
        with torch.device("meta"):
            model = Passt()
        model.to_empty(device="cpu")
        load_exact(model, state, path)
        return cls(model, sha, framing=framing, device=device)

    def windows(self, wave: np.ndarray, index: int) -> list[torch.Tensor]:
        x = np.asarray(wave)
        if x.ndim != 1 or not np.issubdtype(x.dtype, np.floating):
            raise ValueError(f"clip {index}: expected a mono 1-D float wave, got shape {x.shape}, dtype {x.dtype}")
        if not np.isfinite(x).all():
            raise ValueError(f"clip {index}: wave contains NaN or infinite samples")
        size = 10 * self.cfg.sample_rate
        out = []
        for start, pad in window_starts(x.shape[0], self.framing, self.cfg.sample_rate):
            piece = x[start:start + size].astype(np.float32)
            if pad:
                piece = np.pad(piece, (0, size - piece.shape[0]))
            out.append(torch.as_tensor(piece, device=self.device)[None])
        if not out or min(w.shape[-1] for w in out) < self.cfg.min_samples:
            raise ValueError(f"clip {index}: {x.shape[0]} samples ({x.shape[0] / self.sample_rate:.3f} s) give no PaSST "
                             f"window of at least {self.cfg.min_samples} samples under framing {self.framing!r}; "
                             "pad in the metric recipe")
        return out

    def embed(self, waves: list[np.ndarray]) -> list[Embedding]:
        """Every window of every clip, one forward per window length; a clip's frames are its
        windows' features (and logits) in order."""
        prepared = [self.windows(w, i) for i, w in enumerate(waves)]  # validate every clip before any work
        flat = [(clip, k, window) for clip, windows in enumerate(prepared) for k, window in enumerate(windows)]
        done: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = {}
        with torch.inference_mode():
            for length in sorted({window.shape[-1] for *_, window in flat}):
                same = [(clip, k, window) for clip, k, window in flat if window.shape[-1] == length]
                logits, features = self.model(self.front_end(torch.cat([window for *_, window in same]))[:, None])
                for row, (clip, k, _) in enumerate(same):
                    done[clip, k] = logits[row:row + 1], features[row:row + 1]
        out = []
        for clip, windows in enumerate(prepared):
            pieces = [done[clip, k] for k in range(len(windows))]
            out.append(Embedding(frames=torch.cat([f for _, f in pieces]).to("cpu", torch.float64).numpy(),
                                 logits=torch.cat([lg for lg, _ in pieces]).to("cpu", torch.float64).numpy()))
        return out


@EMBEDDERS.register("passt_32k")
def open_passt(spec, path: Path, pin: str | None, loader) -> PasstEmbedder:
    return PasstEmbedder.from_checkpoint(path, pin, framing=spec.framing, device=loader.device)
