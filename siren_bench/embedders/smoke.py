"""The smoke profile's own evaluators: a small audio tagger and a small CLAP, trained on SynthCaps.

The smoke profile has no VGGish / PANNs / CLAP weights (nothing can be downloaded), so it trains
two small models on the SynthCaps training split and the metrics read them through the same
`Embedder` interface as the real backbones. They say how far apart two sets of SynthCaps-like
sounds are; they say nothing about real-world audio, and smoke numbers are not comparable with
published FAD / KL / IS / CLAP scores.

Front end (both models, torch, float32), VGGish's framing: 16 kHz mono; frames of 400 samples
(25 ms) every 160 samples (10 ms), no centring or padding (a clip of N >= 400 samples gives
1 + (N - 400) // 160 frames); periodic Hann window, FFT size 512, magnitude spectrum; 64 mel
bands from 125 to 7500 Hz (HTK scale, transformers' `mel_filter_bank`, no area normalisation);
natural log of (mel + 0.01), within about 0.01 of the VGGish embedder's log-mel (transformers'
triangles are linear in Hz, VGGish's in mel); then a per-band standardisation whose mean and
std are fitted on the training clips and saved with the weights. The log-mel is cut into
non-overlapping patches of 96 frames (0.96 s), incomplete trailing patches dropped:
1 + (F - 96) // 96 patches, so a clip needs at least 15600 samples (0.975 s). As in the VGGish
embedder, a shorter clip is an error, not padded: padding belongs to the metric recipe.

Audio encoder (both models, separate weights): per patch [96 frames, 64 bands], the mel bands
are the input channels of a 1-D CNN over time: four blocks of Conv1d(kernel 3) -> BatchNorm ->
ReLU -> max-pool 2 (128 channels each by default; 96 -> 6 time steps, each seeing
46 frames), then mean + max over time, then Linear(256, 256) -> ReLU -> Linear(256, 128).
Convolving over time only (not over frequency as a 2-D CNN would) gives up shift invariance in
pitch, which SynthCaps does not need (every pitched class draws its f0 from the same ranges);
on 2 CPU cores it ran about 8x faster per training step than a 2-D CNN (3x3 convs, 16-32-64-128
channels) and, after the same 240 steps on 400 four-second clips, reached a higher held-out mAP
(0.70 against 0.63 on 80 clips).

SmokeTagger (multi-label tagger, n_classes = 12 SynthCaps classes), the one design:
  - patch embedding e_p: the 128-d output of the encoder's last Linear for patch p (no
    activation after it), like VGGish's 128-d embedding per 0.96 s example;
  - clip embedding: the mean of the clip's patch embeddings, mean_p e_p;
  - patch logits: W e_p + b, one linear head (128 -> 12) on the patch embedding;
  - clip logits: W (mean_p e_p) + b, which equals the mean of the patch logits (the head is
    linear). Training is clip-level: BCE-with-logits of the clip logits against the clip's
    multi-hot labels (the labels say which classes occur somewhere in the clip).
  Two views of the same weights meet the Embedder interface:
    level="patch" (name "smoke_tagger"): frames = patch embeddings [n_patches, 128],
      logits = patch logits [n_patches, 12] (for FAD-style frame statistics, like VGGish);
    level="clip" (name "smoke_tagger_clip"): frames = clip embedding [1, 128],
      logits = clip logits [1, 12] (for FD and KL / IS, like PANNs' clip-level output;
      KL / IS take a softmax over these logits, even though training was multi-label).

SmokeClap (contrastive audio-text model):
  - audio: encoder patch embeddings -> mean over patches -> Linear(128, 128) -> L2 normalise;
  - text: the FROZEN offline MiniLM caption vector (384-d, mean-pooled and L2-normalised by
    siren_bench.text) -> Linear(384, 256) -> ReLU -> Linear(256, 128) -> L2 normalise;
  - trained with the symmetric InfoNCE loss (CLIP / CLAP) with a learnable temperature
    (logit scale initialised to 1 / 0.07, clamped at 100). CLAP score = cosine(text, audio).
  embed() gives frames = the clip's normalised audio embedding [1, 128] and no logits;
  embed_text(captions) gives [N, 128] normalised text embeddings. The MiniLM weights' SHA-256
  is recorded at training time and a SmokeClap refuses to load with a different text encoder.

Training (`train_smoke_tagger`, `train_smoke_clap`): float32 on CPU by default, AdamW with a
linear warm-up and cosine decay, batches drawn by a numpy generator seeded from the seed, model
initialisation seeded inside torch.random.fork_rng (the global torch RNG is left as it was), no
dropout and no augmentation, so the same seed, data and thread count give the same weights bit
for bit. The loop is the one training engine's (siren_bench/trainer.py): progress in tqdm, and
with `resume_dir` the state saved every `checkpoint_every` steps for a restarted run to continue. Each returns a
short held-out evaluation next to the chance level and the untrained model's score, so the
stage can report whether the evaluators are any good.

Files: weights as safetensors and, beside them (same name, .json), a config with the kind, the
architecture, the training config, seed, class names or text-encoder identity, the held-out
numbers and the weights file's SHA-256; both written atomically. `load_smoke_tagger` /
`load_smoke_clap` refuse a missing file, a hash that differs from the recorded (or a pinned)
one, or weights that do not fit, naming the file. `EmbedderInfo.weights_sha256` is the SHA-256
of the safetensors file; `cache_identity` adds the front end and text encoder the JSON names,
which change the outputs without changing that file.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn import functional as F
from transformers.audio_utils import mel_filter_bank

from siren_bench.data.synthcaps import CLASS_NAMES
from siren_bench.embedders.base import Embedder, EmbedderInfo, Embedding
from siren_bench.io import atomic_path, sha256_bytes, sha256_json, write_json_atomic
from siren_bench.registry import EMBEDDERS
from siren_bench.trainer import Trainer
from siren_bench.weights import CheckpointError, load_exact, verify_sha256

FORMAT_VERSION = 1
TAGGER_KIND = "smoke_tagger"
CLAP_KIND = "smoke_clap"
LEVELS = ("patch", "clip")


# ---------------------------------------------------------------------------------------------
# Configs
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SmokeAudioConfig:
    """Front end and audio encoder (architecture: saved with the weights)."""

    sample_rate: int = 16000
    win_length: int = 400  # 25 ms
    hop_length: int = 160  # 10 ms
    n_fft: int = 512
    n_mels: int = 64
    f_min: float = 125.0
    f_max: float = 7500.0
    log_offset: float = 0.01
    patch_frames: int = 96  # 0.96 s
    channels: tuple[int, ...] = (128, 128, 128, 128)
    kernel_size: int = 3
    hidden_dim: int = 256
    embed_dim: int = 128

    def __post_init__(self):
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        if not 0 < self.f_min < self.f_max <= self.sample_rate / 2:
            raise ValueError(f"mel band edges {self.f_min}..{self.f_max} Hz do not fit a {self.sample_rate} Hz sample rate")
        if self.win_length > self.n_fft or self.hop_length < 1 or self.kernel_size % 2 != 1:
            raise ValueError(f"inconsistent smoke front end / encoder (window within the FFT, hop >= 1, odd kernel): {self}")
        if not self.channels or self.patch_frames < 2 ** len(self.channels):
            raise ValueError(f"{len(self.channels)} pooling blocks need patches of at least {2 ** len(self.channels)} frames")

    @property
    def min_samples(self) -> int:
        """Fewest samples that give one patch."""
        return self.win_length + (self.patch_frames - 1) * self.hop_length


@dataclass(frozen=True)
class SmokeTaggerConfig:
    audio: SmokeAudioConfig = field(default_factory=SmokeAudioConfig)
    steps: int = 600
    batch_size: int = 24  # clips per step
    learning_rate: float = 3e-3
    weight_decay: float = 1e-2
    warmup_fraction: float = 0.05
    val_fraction: float = 0.15  # held out from the given clips when no validation set is passed
    checkpoint_every: int = 50


@dataclass(frozen=True)
class SmokeClapConfig:
    audio: SmokeAudioConfig = field(default_factory=SmokeAudioConfig)
    shared_dim: int = 128
    text_hidden_dim: int = 256
    init_temperature: float = 0.07
    max_logit_scale: float = 100.0
    steps: int = 400
    batch_size: int = 32  # clips per step (each one's negatives are the other clips of the batch)
    learning_rate: float = 2e-3
    weight_decay: float = 1e-2
    warmup_fraction: float = 0.05
    val_fraction: float = 0.15
    checkpoint_every: int = 50


def _audio_config_from(data: dict) -> SmokeAudioConfig:
    return SmokeAudioConfig(**{**data, "channels": tuple(data["channels"])})


def _train_config_from(cls, data: dict):
    return cls(**{**data, "audio": _audio_config_from(data["audio"])})


# ---------------------------------------------------------------------------------------------
# Front end and networks
# ---------------------------------------------------------------------------------------------

class LogMel(nn.Module):
    """Mono wave [T] -> log-mel [frames, n_mels] (VGGish framing, float32), and 96-frame patches."""

    def __init__(self, config: SmokeAudioConfig):
        super().__init__()
        self.config = config
        bank = mel_filter_bank(
            num_frequency_bins=config.n_fft // 2 + 1, num_mel_filters=config.n_mels, min_frequency=config.f_min,
            max_frequency=config.f_max, sampling_rate=config.sample_rate, norm=None, mel_scale="htk",
        )
        self.register_buffer("mel_matrix", torch.tensor(bank, dtype=torch.float32), persistent=False)  # [bins, mels]
        self.register_buffer("window", torch.hann_window(config.win_length, periodic=True), persistent=False)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        # Frames of win_length samples, each zero-padded to n_fft (VGGish's framing). torch.stft
        # would take n_fft-sample frames with the window centred in them: the same magnitudes,
        # but 1 + (N - n_fft) // hop frames instead of 1 + (N - win_length) // hop.
        c = self.config
        frames = wave.unfold(0, c.win_length, c.hop_length) * self.window  # [frames, win_length]
        magnitude = torch.fft.rfft(frames, n=c.n_fft, dim=-1).abs()  # [frames, n_fft // 2 + 1]
        return torch.log(magnitude @ self.mel_matrix + c.log_offset)

    def patches(self, wave: torch.Tensor) -> torch.Tensor:
        """[n_patches, patch_frames, n_mels]; the wave must hold at least config.min_samples."""
        frames = self(wave)
        n = 1 + (frames.shape[0] - self.config.patch_frames) // self.config.patch_frames
        return frames[: n * self.config.patch_frames].reshape(n, self.config.patch_frames, -1)


class SmokeAudioEncoder(nn.Module):
    """Normalised log-mel patches [P, 96, 64] -> patch embeddings [P, embed_dim]."""

    def __init__(self, config: SmokeAudioConfig):
        super().__init__()
        self.config = config
        self.frontend = LogMel(config)
        self.register_buffer("mel_mean", torch.zeros(config.n_mels))
        self.register_buffer("mel_std", torch.ones(config.n_mels))
        blocks: list[nn.Module] = []
        c_in = config.n_mels
        for c_out in config.channels:
            blocks += [nn.Conv1d(c_in, c_out, config.kernel_size, padding=config.kernel_size // 2, bias=False),
                       nn.BatchNorm1d(c_out), nn.ReLU(), nn.MaxPool1d(2)]
            c_in = c_out
        self.blocks = nn.Sequential(*blocks)
        self.project = nn.Sequential(nn.Linear(2 * c_in, config.hidden_dim), nn.ReLU(), nn.Linear(config.hidden_dim, config.embed_dim))

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        x = (patches - self.mel_mean) / self.mel_std
        x = self.blocks(x.transpose(1, 2))  # mel bands as channels: [P, C, time]
        return self.project(torch.cat([x.mean(dim=2), x.amax(dim=2)], dim=1))


class SmokeTaggerNet(nn.Module):
    def __init__(self, config: SmokeAudioConfig, n_classes: int):
        super().__init__()
        self.encoder = SmokeAudioEncoder(config)
        self.head = nn.Linear(config.embed_dim, n_classes)


class SmokeClapNet(nn.Module):
    def __init__(self, config: SmokeClapConfig, text_dim: int):
        super().__init__()
        self.encoder = SmokeAudioEncoder(config.audio)
        self.audio_proj = nn.Linear(config.audio.embed_dim, config.shared_dim)
        self.text_proj = nn.Sequential(nn.Linear(text_dim, config.text_hidden_dim), nn.ReLU(),
                                       nn.Linear(config.text_hidden_dim, config.shared_dim))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / config.init_temperature)))
        self.max_logit_scale = config.max_logit_scale

    def audio(self, clip_embeddings: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.audio_proj(clip_embeddings), dim=-1)

    def text(self, text_vectors: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.text_proj(text_vectors), dim=-1)

    def scale(self) -> torch.Tensor:
        return self.logit_scale.exp().clamp(max=self.max_logit_scale)


def _clip_means(patch_values: torch.Tensor, counts: Sequence[int]) -> torch.Tensor:
    """Mean over each clip's consecutive rows: [sum(counts), D] -> [len(counts), D]."""
    return torch.stack([part.mean(dim=0) for part in torch.split(patch_values, list(counts))])


# ---------------------------------------------------------------------------------------------
# Waves -> patches
# ---------------------------------------------------------------------------------------------

def _check_wave(wave: Any, index: int, config: SmokeAudioConfig) -> np.ndarray:
    wave = np.asarray(wave)
    if wave.ndim != 1:
        raise ValueError(f"clip {index}: expected a mono 1-D waveform, got shape {wave.shape}")
    if not np.all(np.isfinite(wave)):
        raise ValueError(f"clip {index}: waveform has NaN or infinite samples")
    if wave.shape[0] < config.min_samples:
        raise ValueError(f"clip {index}: {wave.shape[0]} samples is shorter than one smoke-evaluator patch "
                         f"({config.min_samples} samples, {config.min_samples / config.sample_rate:.4f} s at "
                         f"{config.sample_rate} Hz); padding is the metric recipe's job, the embedder never pads")
    return wave


@torch.no_grad()  # not inference_mode: training runs autograd on these patches
def _wave_patches(frontend: LogMel, waves: Sequence[np.ndarray], device: torch.device) -> list[torch.Tensor]:
    """Un-normalised log-mel patches [P_i, 96, 64] per clip (float32, on `device`)."""
    checked = [_check_wave(w, i, frontend.config) for i, w in enumerate(waves)]
    frontend = frontend.to(device)
    return [frontend.patches(torch.as_tensor(w, dtype=torch.float32, device=device)) for w in checked]


def _fit_normaliser(encoder: SmokeAudioEncoder, patches: list[torch.Tensor]) -> None:
    frames = torch.cat([p.reshape(-1, p.shape[-1]) for p in patches]).double()
    encoder.mel_mean.copy_(frames.mean(dim=0).float())
    encoder.mel_std.copy_(frames.std(dim=0).clamp_min(1e-3).float())


def _encode_patches(encoder: SmokeAudioEncoder, patches: list[torch.Tensor], batch_patches: int) -> list[torch.Tensor]:
    """Patch embeddings per clip, the network run over chunks of at most `batch_patches` patches."""
    if not patches:
        return []
    stacked = torch.cat(patches)
    out = torch.cat([encoder(stacked[s : s + batch_patches]) for s in range(0, stacked.shape[0], batch_patches)])
    return list(torch.split(out, [p.shape[0] for p in patches]))


# ---------------------------------------------------------------------------------------------
# Embedders
# ---------------------------------------------------------------------------------------------

class SmokeTagger(Embedder):
    """The smoke tagger as an Embedder. level="patch": frames = patch embeddings [n_patches, 128],
    logits = patch logits [n_patches, n_classes]; level="clip": their means, one row each (the
    clip logits are exactly the head applied to the clip embedding)."""

    def __init__(self, net: SmokeTaggerNet, class_names: Sequence[str], weights_sha256: str, level: str = "patch",
                 batch_patches: int = 256, device: str | torch.device = "cpu"):
        if level not in LEVELS:
            raise ValueError(f"unknown smoke tagger level {level!r}; choose one of {', '.join(LEVELS)}")
        if len(class_names) != net.head.out_features:
            raise ValueError(f"{len(class_names)} class names for a head of {net.head.out_features} classes")
        self.net = net.to(device).eval()
        self.device = torch.device(device)
        self.level = level
        self.batch_patches = int(batch_patches)
        config = net.encoder.config
        self.info = EmbedderInfo(
            name=TAGGER_KIND if level == "patch" else f"{TAGGER_KIND}_clip", sample_rate=config.sample_rate,
            dim=config.embed_dim, n_classes=len(class_names), weights_sha256=weights_sha256, labels=tuple(class_names),
        )

    @property
    def cache_identity(self) -> str:
        """The weights and the front end (read from the JSON beside them, not from the weights file)."""
        return sha256_json({"weights": self.info.weights_sha256, "audio": dataclasses.asdict(self.net.encoder.config)})

    def at_level(self, level: str) -> "SmokeTagger":
        """The other view of the same weights."""
        return SmokeTagger(self.net, self.info.labels, self.info.weights_sha256, level, self.batch_patches, self.device)

    @torch.inference_mode()
    def embed(self, waves: list[np.ndarray]) -> list[Embedding]:
        patches = _wave_patches(self.net.encoder.frontend, waves, self.device)
        out = []
        for emb in _encode_patches(self.net.encoder, patches, self.batch_patches):
            if self.level == "clip":
                emb = emb.mean(dim=0, keepdim=True)
            logits = self.net.head(emb)
            out.append(Embedding(frames=emb.to("cpu", torch.float64).numpy(), logits=logits.to("cpu", torch.float64).numpy()))
        return out


class SmokeClap(Embedder):
    """The small CLAP: embed(waves) -> one normalised audio vector per clip (frames [1, 128]),
    embed_text(captions) -> normalised text vectors [N, 128]; CLAP score = their cosine."""

    def __init__(self, net: SmokeClapNet, text_encoder, weights_sha256: str, batch_patches: int = 256,
                 device: str | torch.device = "cpu"):
        self.net = net.to(device).eval()
        self.text_encoder = text_encoder
        self.device = torch.device(device)
        self.batch_patches = int(batch_patches)
        config = net.encoder.config
        self.info = EmbedderInfo(name=CLAP_KIND, sample_rate=config.sample_rate, dim=net.audio_proj.out_features,
                                 n_classes=None, weights_sha256=weights_sha256)

    @property
    def cache_identity(self) -> str:
        """The weights, the front end and the text encoder (both named by the JSON beside the weights)."""
        return sha256_json({"weights": self.info.weights_sha256, "audio": dataclasses.asdict(self.net.encoder.config),
                            "text_encoder": [self.text_encoder.name, self.text_encoder.weights_sha256]})

    @torch.inference_mode()
    def embed(self, waves: list[np.ndarray]) -> list[Embedding]:
        patches = _wave_patches(self.net.encoder.frontend, waves, self.device)
        out = []
        for emb in _encode_patches(self.net.encoder, patches, self.batch_patches):
            vector = self.net.audio(emb.mean(dim=0, keepdim=True))
            out.append(Embedding(frames=vector.to("cpu", torch.float64).numpy(), logits=None))
        return out

    @torch.inference_mode()
    def embed_text(self, captions: list[str]) -> np.ndarray:
        pooled = self.text_encoder.encode(list(captions)).pooled.to(self.device, torch.float32)
        return self.net.text(pooled).to("cpu", torch.float64).numpy()

    def score(self, waves: list[np.ndarray], captions: list[str]) -> np.ndarray:
        """Per pair (wave i, caption i): cosine of the two embeddings (the CLAP score), float64 [N]."""
        if len(waves) != len(captions):
            raise ValueError(f"{len(waves)} waves but {len(captions)} captions")
        audio = np.concatenate([e.frames for e in self.embed(waves)])
        return np.sum(audio * self.embed_text(captions), axis=1)


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------

@dataclass
class SmokeTrainResult:
    kind: str  # TAGGER_KIND or CLAP_KIND
    net: nn.Module  # SmokeTaggerNet or SmokeClapNet, in eval mode
    config: SmokeTaggerConfig | SmokeClapConfig
    seed: int
    log: list[dict]
    heldout: dict[str, float]
    extra: dict  # tagger: {"class_names": [...]}; clap: {"text_encoder": {...}}
    resumed_from: int = 0  # the step a resumed run continued from (0: a fresh run)
    resume_path: Path | None = None  # the run's resume state, when it kept one


def _split(n: int, fraction: float, seed: int, what: str) -> tuple[np.ndarray, np.ndarray]:
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"{what}: val_fraction must be in (0, 1) when no validation set is given, got {fraction}")
    n_val = max(1, int(round(fraction * n)))
    if n - n_val < 2:
        raise ValueError(f"{what}: {n} clips are too few to hold out {n_val} for validation and still train")
    order = np.random.default_rng(np.random.SeedSequence([seed, 0x5A1D])).permutation(n)
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def _fingerprint(*arrays: np.ndarray | list) -> str:
    parts = []
    for array in arrays:
        if isinstance(array, list) and array and isinstance(array[0], str):
            parts.append(sha256_json(array))
        else:
            parts.append(sha256_bytes(b"".join(np.ascontiguousarray(np.asarray(a, dtype=np.float32)).tobytes() for a in array)))
    return sha256_json(parts)


def resume_file(resume_dir: Path, kind: str, config, seed: int, data_fingerprint: str) -> Path:
    """Where an interrupted run of exactly this kind, config, seed and data keeps its state."""
    key = sha256_json({"kind": kind, "config": dataclasses.asdict(config), "seed": seed, "data": data_fingerprint})
    return Path(resume_dir) / f"{kind}-{key[:16]}.pt"


def _trainer(kind: str, net: nn.Module, config, seed: int, state_file: Path | None, device: torch.device) -> Trainer:
    """The engine set up as both evaluators train: AdamW, warm-up over `warmup_fraction` of the
    steps then cosine decay to 10 %, clipping at 5, batches from the stream (seed, 0xBA7C)."""
    optimizer = torch.optim.AdamW(net.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    return Trainer(kind.replace("_", " "), net, optimizer, steps=config.steps, grad_clip=5.0,
                   checkpoint_every=config.checkpoint_every, stream=[seed, 0xBA7C], state_file=state_file, device=device,
                   warmup_steps=max(1, int(round(config.warmup_fraction * config.steps))), min_lr_ratio=0.1)


def _fit(trainer: Trainer, n_train: int, batch_size: int, loss_fn, stop_after: int | None) -> None:
    """Train on batches of distinct clips (sorted rows), `loss_fn(rows)` -> (loss, numbers)."""
    size = min(batch_size, n_train)
    trainer.model.train()
    trainer.fit(lambda: trainer.update(lambda: loss_fn(np.sort(trainer.rng.choice(n_train, size=size, replace=False)))),
                stop_after)
    trainer.model.eval()


def _final_loss(log: list[dict]) -> dict:
    """The mean training loss over the last 10 % of steps (none when no step ran)."""
    if not log:
        return {}
    tail = log[-max(1, len(log) // 10):]
    return {"final_train_loss": float(np.mean([row["loss"] for row in tail]))}


def _as_wave_list(waves, what: str) -> list[np.ndarray]:
    waves = [np.asarray(w) for w in waves]
    if not waves:
        raise ValueError(f"{what}: no clips")
    return waves


def mean_average_precision(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float, int]:
    """Macro AP over the classes with both positives and negatives; also the chance level (the
    mean prevalence of those classes: a random scorer's expected AP) and how many classes count."""
    from sklearn.metrics import average_precision_score

    labels = np.asarray(labels).astype(int)
    scored = [c for c in range(labels.shape[1]) if 0 < labels[:, c].sum() < labels.shape[0]]
    if not scored:
        raise ValueError("no class has both positive and negative validation clips; mAP is undefined")
    ap = [average_precision_score(labels[:, c], scores[:, c]) for c in scored]
    return float(np.mean(ap)), float(np.mean(labels[:, scored].mean(axis=0))), len(scored)


def _tagger_heldout(net: SmokeTaggerNet, patches: list[torch.Tensor], labels: np.ndarray, batch_patches: int = 256) -> dict:
    net.eval()
    with torch.inference_mode():
        logits = torch.stack([net.head(e.mean(dim=0)) for e in _encode_patches(net.encoder, patches, batch_patches)])
    scores = logits.double().numpy()
    mean_ap, chance, n_scored = mean_average_precision(scores, labels)
    predicted = scores > 0.0
    truth = labels.astype(bool)
    f1 = []
    for c in range(labels.shape[1]):
        tp = np.sum(predicted[:, c] & truth[:, c])
        denominator = predicted[:, c].sum() + truth[:, c].sum()
        if truth[:, c].any():
            f1.append(2.0 * tp / denominator)
    return {"map": mean_ap, "chance_map": chance, "n_classes_scored": n_scored, "macro_f1": float(np.mean(f1))}


def train_smoke_tagger(
    waves: Sequence[np.ndarray] | np.ndarray, labels: np.ndarray, config: SmokeTaggerConfig | None = None, seed: int = 0,
    *, val_waves: Sequence[np.ndarray] | None = None, val_labels: np.ndarray | None = None,
    class_names: Sequence[str] = CLASS_NAMES, resume_dir: Path | None = None, stop_after: int | None = None,
    device: str | torch.device = "cpu",
) -> SmokeTrainResult:
    """Train the tagger on mono waves at config.audio.sample_rate with multi-hot labels [N, C].

    Without `val_waves`, config.val_fraction of the clips is held out (chosen by the seed). The
    held-out dict: mAP of the clip logits, the chance mAP, the untrained model's mAP, macro-F1
    at logit 0 (probability 0.5), and the counts. `stop_after` ends early (tests of resumption).
    """
    config = config or SmokeTaggerConfig()
    waves = _as_wave_list(waves, "smoke tagger training")
    labels = np.asarray(labels)
    if labels.shape != (len(waves), len(class_names)) or not np.isin(labels, (0, 1)).all():
        raise ValueError(f"labels must be a 0/1 array [{len(waves)} clips, {len(class_names)} classes], got shape {labels.shape}")
    if (val_waves is None) != (val_labels is None):
        raise ValueError("pass both val_waves and val_labels, or neither")
    if val_waves is None:
        train_rows, val_rows = _split(len(waves), config.val_fraction, seed, "smoke tagger")
        val_waves, val_labels = [waves[i] for i in val_rows], labels[val_rows]
        waves, labels = [waves[i] for i in train_rows], labels[train_rows]
    val_waves, val_labels = _as_wave_list(val_waves, "smoke tagger validation"), np.asarray(val_labels)
    if val_labels.shape != (len(val_waves), len(class_names)):
        raise ValueError(f"val_labels must be [{len(val_waves)}, {len(class_names)}], got shape {val_labels.shape}")

    device = torch.device(device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = SmokeTaggerNet(config.audio, len(class_names)).to(device)
    train_patches = _wave_patches(net.encoder.frontend, waves, device)
    val_patches = _wave_patches(net.encoder.frontend, val_waves, device)
    _fit_normaliser(net.encoder, train_patches)
    untrained = _tagger_heldout(net, val_patches, val_labels)

    targets = torch.as_tensor(labels, dtype=torch.float32, device=device)
    state_file = None
    if resume_dir is not None:
        state_file = resume_file(resume_dir, TAGGER_KIND, config, seed, _fingerprint(waves, labels, val_waves, val_labels))
    trainer = _trainer(TAGGER_KIND, net, config, seed, state_file, device)

    def loss_fn(rows: np.ndarray):
        batch = [train_patches[i] for i in rows]
        emb = net.encoder(torch.cat(batch))
        logits = net.head(_clip_means(emb, [p.shape[0] for p in batch]))
        return F.binary_cross_entropy_with_logits(logits, targets[rows]), {}

    _fit(trainer, len(waves), config.batch_size, loss_fn, stop_after)
    heldout = _tagger_heldout(net, val_patches, val_labels)
    heldout |= {"untrained_map": untrained["map"], "n_train": len(waves), "n_val": len(val_waves), **_final_loss(trainer.log)}
    return SmokeTrainResult(TAGGER_KIND, net, config, seed, trainer.log, heldout, {"class_names": list(class_names)},
                            trainer.start, state_file)


def retrieval_metrics(audio: np.ndarray, text: np.ndarray) -> dict:
    """Text -> audio retrieval over N matched pairs (row i of each belongs together)."""
    similarity = text @ audio.T  # [captions, clips]
    n = similarity.shape[0]
    matched = np.diag(similarity)
    rank = (similarity > matched[:, None]).sum(axis=1)  # 0 = the matching clip ranks first
    rank_a2t = (similarity.T > matched[:, None]).sum(axis=1)
    off = similarity[~np.eye(n, dtype=bool)]
    return {
        "t2a_recall_at_1": float(np.mean(rank < 1)), "t2a_recall_at_5": float(np.mean(rank < 5)),
        "a2t_recall_at_1": float(np.mean(rank_a2t < 1)),
        "chance_recall_at_1": 1.0 / n, "chance_recall_at_5": min(5, n) / n,
        "matched_cosine": float(matched.mean()), "mismatched_cosine": float(off.mean()) if off.size else float("nan"),
    }


def _clap_heldout(net: SmokeClapNet, patches: list[torch.Tensor], text: torch.Tensor, batch_patches: int = 256) -> dict:
    net.eval()
    with torch.inference_mode():
        audio = net.audio(torch.stack([e.mean(dim=0) for e in _encode_patches(net.encoder, patches, batch_patches)]))
        text = net.text(text)
    return retrieval_metrics(audio.double().numpy(), text.double().numpy())


def train_smoke_clap(
    waves: Sequence[np.ndarray] | np.ndarray, captions: Sequence[str], text_encoder, config: SmokeClapConfig | None = None,
    seed: int = 0, *, val_waves: Sequence[np.ndarray] | None = None, val_captions: Sequence[str] | None = None,
    resume_dir: Path | None = None, stop_after: int | None = None, device: str | torch.device = "cpu",
) -> SmokeTrainResult:
    """Train the small CLAP on (wave, caption) pairs against the frozen `text_encoder` (an
    HFSentenceEncoder: `.encode(captions).pooled`, `.name`, `.weights_sha256`).

    Without `val_waves`, config.val_fraction of the pairs is held out (chosen by the seed). The
    held-out dict: text -> audio recall@1 / @5 among the held-out clips, audio -> text recall@1,
    chance levels, mean matched and mismatched cosine, and the untrained model's recall@1.
    """
    config = config or SmokeClapConfig()
    waves = _as_wave_list(waves, "smoke CLAP training")
    captions = list(captions)
    if len(captions) != len(waves):
        raise ValueError(f"{len(waves)} waves but {len(captions)} captions")
    if (val_waves is None) != (val_captions is None):
        raise ValueError("pass both val_waves and val_captions, or neither")
    if val_waves is None:
        train_rows, val_rows = _split(len(waves), config.val_fraction, seed, "smoke CLAP")
        val_waves, val_captions = [waves[i] for i in val_rows], [captions[i] for i in val_rows]
        waves, captions = [waves[i] for i in train_rows], [captions[i] for i in train_rows]
    val_waves, val_captions = _as_wave_list(val_waves, "smoke CLAP validation"), list(val_captions)
    if len(val_captions) != len(val_waves) or len(val_waves) < 2:
        raise ValueError(f"retrieval needs at least 2 validation pairs with one caption each; got {len(val_waves)} "
                         f"waves and {len(val_captions)} captions")
    if len(waves) < 2:
        raise ValueError("the contrastive loss needs at least 2 training pairs")

    device = torch.device(device)
    text = text_encoder.encode(captions).pooled.to(device, torch.float32)
    val_text = text_encoder.encode(val_captions).pooled.to(device, torch.float32)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = SmokeClapNet(config, text.shape[1]).to(device)
    train_patches = _wave_patches(net.encoder.frontend, waves, device)
    val_patches = _wave_patches(net.encoder.frontend, val_waves, device)
    _fit_normaliser(net.encoder, train_patches)
    untrained = _clap_heldout(net, val_patches, val_text)

    state_file = None
    if resume_dir is not None:
        fingerprint = _fingerprint(waves, captions, val_waves, val_captions)
        state_file = resume_file(resume_dir, CLAP_KIND, config, seed, sha256_json([fingerprint, text_encoder.weights_sha256]))
    trainer = _trainer(CLAP_KIND, net, config, seed, state_file, device)

    def loss_fn(rows: np.ndarray):
        batch = [train_patches[i] for i in rows]
        audio = net.audio(_clip_means(net.encoder(torch.cat(batch)), [p.shape[0] for p in batch]))
        scale = net.scale()
        logits = scale * net.text(text[rows]) @ audio.T  # [captions, clips]
        target = torch.arange(len(rows), device=logits.device)
        loss = 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))
        return loss, {"logit_scale": float(scale.detach())}

    _fit(trainer, len(waves), config.batch_size, loss_fn, stop_after)
    heldout = _clap_heldout(net, val_patches, val_text)
    heldout |= {"untrained_t2a_recall_at_1": untrained["t2a_recall_at_1"],
                "untrained_matched_cosine": untrained["matched_cosine"],
                "untrained_mismatched_cosine": untrained["mismatched_cosine"],
                "temperature": float(1.0 / net.scale().detach()), "n_train": len(waves), "n_val": len(val_waves),
                **_final_loss(trainer.log)}
    identity = {"name": text_encoder.name, "weights_sha256": text_encoder.weights_sha256, "dim": int(text.shape[1])}
    return SmokeTrainResult(CLAP_KIND, net, config, seed, trainer.log, heldout, {"text_encoder": identity}, trainer.start, state_file)


def clear_resume_state(result: SmokeTrainResult) -> None:
    """Drop the run's resume state once the finished weights are safely saved."""
    if result.resume_path is not None:
        result.resume_path.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------

def config_path(weights_path: str | Path) -> Path:
    """The JSON beside a weights file: same name, .json suffix."""
    return Path(weights_path).with_suffix(".json")


def save_smoke_evaluator(result: SmokeTrainResult, path: str | Path) -> str:
    """Write the weights (safetensors) and the JSON config beside them, each atomically; returns
    the weights file's SHA-256 (the embedder's weights_sha256)."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"{path}: smoke evaluator weights are written as a .safetensors file")
    state = {k: v.detach().to("cpu").contiguous() for k, v in result.net.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp))
    digest = verify_sha256(path, None)
    write_json_atomic(config_path(path), {
        "kind": result.kind, "format_version": FORMAT_VERSION, "weights_file": path.name, "weights_sha256": digest,
        "config": dataclasses.asdict(result.config), "seed": result.seed, **result.extra,
        "heldout": result.heldout, "steps_trained": len(result.log),
    })
    return digest


def _read_checkpoint(path: str | Path, kind: str, expected_sha256: str | None) -> tuple[Path, dict, dict, str]:
    path = Path(path)
    digest = verify_sha256(path, expected_sha256)
    meta_path = config_path(path)
    if not meta_path.is_file():
        raise CheckpointError(f"{meta_path}: the config file that belongs beside {path.name} is missing")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{meta_path}: not valid JSON ({exc})") from exc
    if meta.get("kind") != kind or meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{meta_path}: holds kind {meta.get('kind')!r} format {meta.get('format_version')!r}, "
                              f"expected {kind!r} format {FORMAT_VERSION}")
    if meta.get("weights_sha256") != digest:
        raise CheckpointError(f"{path}: SHA-256 {digest} does not match the {meta.get('weights_sha256')} recorded in "
                              f"{meta_path.name} (the weights were changed or corrupted after training)")
    try:
        state = load_file(str(path))
    except Exception as exc:  # a file whose hash was pinned to a broken one
        raise CheckpointError(f"{path}: cannot be read as safetensors ({type(exc).__name__}: {exc})") from exc
    return path, meta, state, digest


def load_smoke_tagger(path: str | Path, expected_sha256: str | None = None, level: str = "patch",
                      device: str | torch.device = "cpu") -> SmokeTagger:
    path, meta, state, digest = _read_checkpoint(path, TAGGER_KIND, expected_sha256)
    config = _train_config_from(SmokeTaggerConfig, meta["config"])
    net = SmokeTaggerNet(config.audio, len(meta["class_names"]))
    load_exact(net, state, path)
    return SmokeTagger(net, meta["class_names"], digest, level=level, device=device)


def load_smoke_clap(path: str | Path, text_encoder=None, expected_sha256: str | None = None,
                    device: str | torch.device = "cpu") -> SmokeClap:
    """`text_encoder` defaults to the offline MiniLM; it must be the one the model was trained
    against (same weights SHA-256), or the text side would be meaningless."""
    path, meta, state, digest = _read_checkpoint(path, CLAP_KIND, expected_sha256)
    if text_encoder is None:
        from siren_bench.text import load_minilm

        text_encoder = load_minilm()
    trained_with = meta["text_encoder"]
    if text_encoder.weights_sha256 != trained_with["weights_sha256"]:
        raise CheckpointError(f"{path}: trained against text encoder {trained_with['name']} with weights "
                              f"{trained_with['weights_sha256']}, but the given one ({text_encoder.name}) has "
                              f"{text_encoder.weights_sha256}")
    net = SmokeClapNet(_train_config_from(SmokeClapConfig, meta["config"]), int(trained_with["dim"]))
    load_exact(net, state, path)
    return SmokeClap(net, text_encoder, digest, device=device)


@EMBEDDERS.register("smoke_tagger")
def open_smoke_tagger(spec, path: Path, pin: str | None, loader):
    """The evaluators stage's tagger: framing "frames" gives its patch embeddings, "clip" one vector."""
    level = {"frames": "patch", "clip": "clip"}.get(spec.framing)
    if level is None:
        raise ValueError(f"smoke_tagger framing must be 'frames' or 'clip', got {spec.framing!r}")
    return load_smoke_tagger(path, pin, level=level, device=loader.device)


@EMBEDDERS.register("smoke_clap")
def open_smoke_clap(spec, path: Path, pin: str | None, loader):
    return load_smoke_clap(path, expected_sha256=pin, device=loader.device)
