"""aiSFX (Ma et al., "Representation Learning for the Automatic Indexing of Sound Effects
Libraries", ISMIR 2022) as an Embedder: a real pretrained audio model whose weights ship inside
a PyPI package (aisfx 0.1.2, MIT code, CC BY 4.0 model), so the smoke run can score with it
offline.

Written for this project; the constants, the front end and the state-dict names are those of the
aisfx package (aisfx/inference.py, preprocessing.py, spectrogram/spectrogram_essentia.py,
models/cnn2d.py), read for facts. The tests check parity against the package's own code.

Front end (numpy, float64), as the package's Essentia path computes it (the one its ISMIR paper
used; its librosa path returns the spectrogram transposed, which its blocking then cuts along
the mel axis, so it is not the reference here):
  - 44.1 kHz mono, no level normalisation;
  - frames of 2048 samples every 1024, the first centred on sample 0 (half a frame of zeros
    before the clip, zeros after it), as many as start before the clip's end plus half a
    frame: ceil((N + 1024) / 1024) frames;
  - symmetric Hann window (numpy.hanning), magnitude spectrum of the 1025 rfft bins, squared;
  - 96 triangular bands between 0 and 22050 Hz, triangles linear on the HTK mel scale
    1127 ln(1 + f / 700), bin frequencies linspace(0, 22050, 1025), each band's weights summing
    to 1 (Essentia's MelBands: warping weighting, unit_sum);
  - log10(10^4 x + 1), then divided by 9.457798957824707 (the package's "original" min-max
    normalisation: min 0, max over the paper's training spectrograms);
  - blocks of 100 frames (2.3 s) every 50 frames; a trailing block that does not fit whole is
    dropped, and a clip with fewer than 100 frames gives one block, zero-padded (the package's
    `blocking`). A clip of 50 frames or fewer (50176 samples, 1.138 s, or fewer) is refused, as the package refuses it.

Network: the package's EmbeddingNet (the DCASE cross-task 9-layer CNN: four blocks of two 3x3
convolutions without bias, batch norm and ReLU, 2x2 max pooling after the first three; then the
mean over frequency and the max over time): [N, 100, 96] -> [N, 512], in float32 like the
released weights. The checkpoint also holds the training heads of nine sound-effects datasets
(`fc.*`); they are not used (an embedding model, no class probabilities).

Checkpoint: the package's models/checkpoint.pth, a pickled (state dict, dataset dict) tuple,
loaded with torch's weights-only unpickler and only three globals allowed (NumPy's scalar
reconstructor, dtype and int64 dtype, which the dataset dict's int64 indices need): no pickled
code runs. Its SHA-256 is pinned.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from siren_bench.embedders.base import Embedder, EmbedderInfo, Embedding
from siren_bench.registry import EMBEDDERS
from siren_bench.weights import CheckpointError, load_exact, packaged_file, verify_sha256

PACKAGE = "aisfx"
PACKAGE_CHECKPOINT = "models/checkpoint.pth"  # inside the installed package
CHECKPOINT_SHA256 = "499ea75909c932a2f94c35fa722fa4fabc5bcb7e84917209cc5f7402627b7eb5"  # aisfx 0.1.2

SAMPLE_RATE = 44100
FRAME_SAMPLES = 2048
HOP_SAMPLES = 1024
N_MELS = 96
FMIN_HZ, FMAX_HZ = 0.0, 22050.0
LOG_SCALE = 1e4  # log10(LOG_SCALE * x + 1): Essentia's "shift_scale_log"
NORM_MAX = 9.457798957824707  # the package's 'original' normalisation (min 0)
BLOCK_FRAMES = 100
BLOCK_HOP_FRAMES = 50  # round(100 * 0.5): the package's default emb_hop_size
EMBEDDING_DIM = 512


def packaged_checkpoint() -> Path:
    """Where the installed aisfx package keeps its weights (the package is not imported)."""
    return packaged_file(PACKAGE, PACKAGE_CHECKPOINT)


# ---------------------------------------------------------------------------------------------
# Front end
# ---------------------------------------------------------------------------------------------

def hz_to_mel_htk(freq_hz) -> np.ndarray:
    return 1127.0 * np.log(1.0 + np.asarray(freq_hz, dtype=np.float64) / 700.0)


def mel_matrix() -> np.ndarray:
    """[1025, 96] weights from power spectrum bins to bands, each band's weights summing to 1."""
    bin_mel = hz_to_mel_htk(np.linspace(0.0, SAMPLE_RATE / 2.0, FRAME_SAMPLES // 2 + 1))[:, None]
    edges = np.linspace(hz_to_mel_htk(FMIN_HZ), hz_to_mel_htk(FMAX_HZ), N_MELS + 2)
    low, centre, high = edges[:-2][None, :], edges[1:-1][None, :], edges[2:][None, :]
    weights = np.maximum(0.0, np.minimum((bin_mel - low) / (centre - low), (high - bin_mel) / (high - centre)))
    return weights / weights.sum(axis=0, keepdims=True)


_MEL = mel_matrix()
_WINDOW = np.hanning(FRAME_SAMPLES)


def n_frames(n_samples: int) -> int:
    return -(-(n_samples + FRAME_SAMPLES // 2) // HOP_SAMPLES)


def spectrogram(wave: np.ndarray) -> np.ndarray:
    """44.1 kHz mono wave -> normalised log-mel frames [n_frames, 96] (float64)."""
    wave = np.asarray(wave, dtype=np.float64)
    if wave.ndim != 1 or not np.all(np.isfinite(wave)):
        raise ValueError(f"expected a finite mono 1-D waveform, got shape {wave.shape}")
    count = n_frames(wave.size)
    half = FRAME_SAMPLES // 2
    padded = np.concatenate([np.zeros(half), wave, np.zeros(count * HOP_SAMPLES + FRAME_SAMPLES)])
    frames = np.lib.stride_tricks.sliding_window_view(padded, FRAME_SAMPLES)[::HOP_SAMPLES][:count]
    power = np.abs(np.fft.rfft(frames * _WINDOW, axis=-1)) ** 2
    return np.log10(LOG_SCALE * (power @ _MEL) + 1.0) / NORM_MAX


def blocks(spec: np.ndarray) -> np.ndarray:
    """[n_frames, 96] -> [n_blocks, 100, 96], the package's blocking with drop_partial_block."""
    count = spec.shape[0]
    if count <= BLOCK_HOP_FRAMES:
        raise ValueError(f"clip of {count} aisfx frames is too short: it needs more than {BLOCK_HOP_FRAMES} frames "
                         f"(over {(BLOCK_HOP_FRAMES - 1) * HOP_SAMPLES} samples, {(BLOCK_HOP_FRAMES - 1) * HOP_SAMPLES / SAMPLE_RATE:.3f} s at {SAMPLE_RATE} Hz); "
                         "padding is the metric recipe's job")
    n_blocks = int(np.ceil((count - BLOCK_FRAMES) / BLOCK_HOP_FRAMES + 1))
    if (count - BLOCK_FRAMES) % BLOCK_HOP_FRAMES != 0:
        n_blocks -= 1
    n_blocks = max(n_blocks, 1)
    data = np.vstack([spec, np.zeros((BLOCK_FRAMES, spec.shape[1]))])
    return np.stack([data[i * BLOCK_HOP_FRAMES : i * BLOCK_HOP_FRAMES + BLOCK_FRAMES] for i in range(n_blocks)])


# ---------------------------------------------------------------------------------------------
# Network
# ---------------------------------------------------------------------------------------------

class ConvBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.bn2 = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor, pool: int) -> torch.Tensor:
        x = F.relu(self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))))
        return F.max_pool2d(x, kernel_size=pool)


class AisfxNetwork(nn.Module):
    """EmbeddingNet('max', 3, 1, 64) with the package's module names: [N, 100, 96] -> [N, 512]."""

    def __init__(self, width: int = 64):
        super().__init__()
        self.conv_block1 = ConvBlock(1, width)
        self.conv_block2 = ConvBlock(width, 2 * width)
        self.conv_block3 = ConvBlock(2 * width, 4 * width)
        self.conv_block4 = ConvBlock(4 * width, 8 * width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, None]  # [N, 1, time, freq]
        for block, pool in ((self.conv_block1, 2), (self.conv_block2, 2), (self.conv_block3, 2), (self.conv_block4, 1)):
            x = block(x, pool)
        return x.mean(dim=3).amax(dim=2)


def load_checkpoint_state(path: Path) -> dict[str, torch.Tensor]:
    """The embedding network's tensors from the package's (state dict, dataset dict) pickle,
    unpickled weights-only with NumPy's scalar and dtype the only globals allowed."""
    numpy_scalar = np.int64(0).__reduce__()[0]  # NumPy's scalar reconstructor, pickled under its NumPy 1 name
    allowed = [(numpy_scalar, "numpy.core.multiarray.scalar"), np.dtype, type(np.dtype(np.int64))]
    try:
        with torch.serialization.safe_globals(allowed):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a pickle asking for any other global, a truncated file, not a torch file
        raise CheckpointError(f"{path}: cannot be loaded as the aisfx checkpoint with the weights-only unpickler "
                              f"({type(exc).__name__}: {exc})") from exc
    if not (isinstance(obj, tuple) and len(obj) == 2 and isinstance(obj[0], dict)):
        raise CheckpointError(f"{path}: expected aisfx's (state dict, dataset dict) pair, got {type(obj).__name__}")
    prefix = "embedding_net."
    return {key[len(prefix):]: value for key, value in obj[0].items() if key.startswith(prefix)}


class AisfxEmbedder(Embedder):
    """Block embeddings [n_blocks, 512] per 44.1 kHz clip; no classifier head (logits None)."""

    def __init__(self, network: AisfxNetwork, weights_sha256: str, batch_size: int = 32, device: str | torch.device = "cpu"):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = int(batch_size)
        self.device = torch.device(device)
        self.network = network.to(self.device).eval()
        self.info = EmbedderInfo(name="aisfx", sample_rate=SAMPLE_RATE, dim=EMBEDDING_DIM, n_classes=None, weights_sha256=weights_sha256)

    @classmethod
    def from_checkpoint(cls, path: str | Path, expected_sha256: str | None = CHECKPOINT_SHA256, batch_size: int = 32,
                        device: str | torch.device = "cpu") -> "AisfxEmbedder":
        path = Path(path)
        digest = verify_sha256(path, expected_sha256)
        with torch.device("meta"):  # every tensor is overwritten by the checkpoint's
            network = AisfxNetwork()
        network = network.to_empty(device="cpu")
        load_exact(network, load_checkpoint_state(path), path)
        return cls(network, digest, batch_size=batch_size, device=device)

    def embed(self, waves: list[np.ndarray]) -> list[Embedding]:
        per_clip = []
        for i, wave in enumerate(waves):
            try:
                per_clip.append(blocks(spectrogram(wave)))
            except ValueError as exc:
                raise ValueError(f"clip {i}: {exc}") from exc
        if not per_clip:
            return []
        stacked = np.concatenate(per_clip)
        outputs = []
        with torch.inference_mode():
            for start in range(0, len(stacked), self.batch_size):
                chunk = torch.from_numpy(stacked[start : start + self.batch_size]).to(self.device, torch.float32)
                outputs.append(self.network(chunk).to("cpu", torch.float64).numpy())
        frames = np.concatenate(outputs)
        bounds = np.cumsum([0] + [len(b) for b in per_clip])
        return [Embedding(frames=frames[a:b].copy(), logits=None) for a, b in zip(bounds[:-1], bounds[1:])]


@EMBEDDERS.register("aisfx")
def open_aisfx(spec, path: Path, pin: str | None, loader) -> AisfxEmbedder:
    """A recipe's aisfx: the package's checkpoint, pinned to aisfx 0.1.2's unless another pin is given."""
    return AisfxEmbedder.from_checkpoint(path, pin or CHECKPOINT_SHA256, device=loader.device)
