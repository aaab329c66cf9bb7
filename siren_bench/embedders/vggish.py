"""VGGish (the torchvggish port of Google's AudioSet model) as an Embedder, for FAD.

Written for this project; the constants and the state-dict key names are those of torchvggish
(harritaylor/torchvggish) and of Google's VGGish / FAD code, which were read for facts only.

Front end (numpy, float64), as torchvggish's `waveform_to_examples` computes it for 16 kHz mono:
  - frames of 400 samples (25 ms) every 160 samples (10 ms), no centring or padding: a clip of
    N >= 400 samples gives 1 + (N - 400) // 160 frames, the trailing partial frame is dropped;
  - periodic Hann window 0.5 - 0.5 cos(2 pi k / 400), k = 0..399;
  - FFT size 512 (next power of two above 400), magnitude (not power) of the 257 rfft bins;
  - 64 triangular mel bands between 125 and 7500 Hz on the HTK mel scale 1127 ln(1 + f / 700):
    66 equally spaced mel edges, triangles linear in mel, the bin frequencies
    linspace(0, 8000, 257), no area normalisation, and the DC bin weighted 0 in every band;
  - natural log of (mel + 0.01);
  - examples are patches of 96 consecutive frames [96, 64].

Framings (which 96-frame patches become examples):
  - "torchvggish": patches start every 96 frames (0.96 s windows, 0.96 s hop), incomplete
    trailing patches are dropped: 1 + (F - 96) // 96 examples for F >= 96 frames, so a clip
    needs at least 400 + 95 * 160 = 15600 samples (0.975 s). This is what audioldm_eval's FAD
    feeds the network.
  - "google_1s_0.5s": Google's original FAD (create_embeddings_main: step 8000 samples;
    AudioSetModel.extract_features) cuts the clip into 1 s windows (16000 samples) starting every
    0.5 s (8000 samples), keeping only windows that fit entirely, i.e. starts 0, 8000, ... while
    start + 16000 <= N, giving 1 + (N - 16000) // 8000 examples for N >= 16000. It computes the
    log-mel of each window on its own (98 frames) and keeps its first 96 frames as the one
    example of that window. Because 8000 samples = 50 hops of 160 exactly, and a window's frame
    j covers the same samples as frame 50 k + j of the whole clip, the example of window k is
    exactly patch [50 k, 50 k + 96) of the whole clip's log-mel. So here the clip's log-mel is
    computed once and the patches at frame offsets 0, 50, 100, ... are taken; their count comes
    from the 1 s window rule above, not from how many 96-frame patches fit (a clip of 15600 to
    15999 samples has one full patch but no full 1 s window: it gives no example there).
    Google's FAD also peak-normalises each clip first (the recipe's level policy "peak_max0.1", siren_bench/audio_input.py); that is a
    recipe step, as is padding, and is not done by the embedder.

Network: the VGG stack of torchvggish with its exact state-dict names (features.N.* for the six
3x3 convolutions, embeddings.0/2/4.* for the fully connected layers), so the released
vggish-10086976.pth loads key for key; input [N, 1, 96, 64] (frames x mel bands); the conv
output [N, 512, 6, 4] is flattened channels-last (as TF did) to 12288 values; no PCA / 8-bit
post-processing and no ReLU after the last linear layer (audioldm_eval drops the last child of
`embeddings`, a ReLU, and sets postprocess=False). It runs in float32 like the reference (the
released weights are float32); embeddings are returned as float64.

No short clip is padded here: a clip shorter than one example is a ValueError, because padding
(audioldm_eval zero-pads to 2 s) is part of the metric recipe.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from siren_bench.embedders.base import Embedder, EmbedderInfo, Embedding
from siren_bench.registry import EMBEDDERS
from siren_bench.weights import CheckpointError, load_exact, load_torch_checkpoint, verify_sha256

# The released file is vggish-10086976.pth (torchvggish release v0.1). Its full SHA-256 is not
# pinned here (not established as a fact); as with torch hub file names, the 8 hex digits in
# the name are the start of the file's SHA-256, and that prefix is checked.
VGGISH_SHA256_PREFIX = "10086976"
VGGISH_RELEASE_FILENAME = f"vggish-{VGGISH_SHA256_PREFIX}.pth"

SAMPLE_RATE = 16000
WINDOW_SAMPLES = 400  # round(16000 * 0.025)
HOP_SAMPLES = 160  # round(16000 * 0.010)
FFT_SIZE = 512  # 2 ** ceil(log2(400))
N_MELS = 64
MEL_FMIN_HZ = 125.0
MEL_FMAX_HZ = 7500.0
LOG_OFFSET = 0.01
EXAMPLE_FRAMES = 96
EMBEDDING_DIM = 128

GOOGLE_WINDOW_SAMPLES = 16000  # 1 s
GOOGLE_STEP_SAMPLES = 8000  # 0.5 s = 50 hops of 160 samples
GOOGLE_STEP_FRAMES = GOOGLE_STEP_SAMPLES // HOP_SAMPLES

FRAMINGS = ("torchvggish", "google_1s_0.5s")


# ---------------------------------------------------------------------------------------------
# Front end
# ---------------------------------------------------------------------------------------------

def periodic_hann(length: int) -> np.ndarray:
    """Hann window of period `length` (ends one sample before the closing zero)."""
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(length) / length)


def hz_to_mel_htk(freq_hz: np.ndarray | float) -> np.ndarray:
    return 1127.0 * np.log(1.0 + np.asarray(freq_hz, dtype=np.float64) / 700.0)


def vggish_mel_matrix(n_mels: int = N_MELS, n_bins: int = FFT_SIZE // 2 + 1, sample_rate: int = SAMPLE_RATE,
                      fmin: float = MEL_FMIN_HZ, fmax: float = MEL_FMAX_HZ) -> np.ndarray:
    """[n_bins, n_mels] weights that map STFT magnitudes (frames x bins) to mel bands."""
    bin_mel = hz_to_mel_htk(np.linspace(0.0, sample_rate / 2.0, n_bins))[:, None]
    edges = np.linspace(hz_to_mel_htk(fmin), hz_to_mel_htk(fmax), n_mels + 2)
    low, centre, high = edges[:-2][None, :], edges[1:-1][None, :], edges[2:][None, :]
    rising = (bin_mel - low) / (centre - low)
    falling = (high - bin_mel) / (high - centre)
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights[0, :] = 0.0  # the DC bin feeds no band
    return weights


_MEL_MATRIX = vggish_mel_matrix()
_WINDOW = periodic_hann(WINDOW_SAMPLES)


def _as_mono_float64(wave: np.ndarray, what: str = "wave") -> np.ndarray:
    wave = np.asarray(wave)
    if wave.ndim != 1:
        raise ValueError(f"{what}: expected a mono 1-D waveform, got shape {wave.shape}")
    wave = wave.astype(np.float64, copy=False)
    if not np.all(np.isfinite(wave)):
        raise ValueError(f"{what}: waveform has NaN or infinite samples")
    return wave


def log_mel(wave: np.ndarray) -> np.ndarray:
    """Log-mel spectrogram [n_frames, 64] (float64) of a 16 kHz mono waveform, n_frames >= 1."""
    wave = _as_mono_float64(wave)
    if wave.shape[0] < WINDOW_SAMPLES:
        raise ValueError(f"waveform of {wave.shape[0]} samples is shorter than one STFT window ({WINDOW_SAMPLES})")
    frames = np.lib.stride_tricks.sliding_window_view(wave, WINDOW_SAMPLES)[::HOP_SAMPLES]
    magnitude = np.abs(np.fft.rfft(frames * _WINDOW, n=FFT_SIZE, axis=-1))
    return np.log(magnitude @ _MEL_MATRIX + LOG_OFFSET)


def min_samples(framing: str) -> int:
    """Fewest samples that give one example under `framing`."""
    _check_framing(framing)
    if framing == "torchvggish":
        return WINDOW_SAMPLES + (EXAMPLE_FRAMES - 1) * HOP_SAMPLES  # 15600
    return GOOGLE_WINDOW_SAMPLES


def n_examples(n_samples: int, framing: str) -> int:
    """How many examples a clip of `n_samples` samples gives (0 when it is too short)."""
    if n_samples < min_samples(framing):
        return 0
    if framing == "torchvggish":
        n_frames = 1 + (n_samples - WINDOW_SAMPLES) // HOP_SAMPLES
        return 1 + (n_frames - EXAMPLE_FRAMES) // EXAMPLE_FRAMES
    return 1 + (n_samples - GOOGLE_WINDOW_SAMPLES) // GOOGLE_STEP_SAMPLES


def waveform_to_examples(wave: np.ndarray, framing: str = "torchvggish") -> np.ndarray:
    """16 kHz mono waveform -> examples [n, 96, 64] (float64); ValueError when it gives none."""
    wave = _as_mono_float64(wave)
    count = n_examples(wave.shape[0], framing)
    if count == 0:
        need = min_samples(framing)
        raise ValueError(f"clip of {wave.shape[0]} samples ({wave.shape[0] / SAMPLE_RATE:.4f} s) is shorter than one VGGish "
                         f"example under framing {framing!r}: it needs at least {need} samples ({need / SAMPLE_RATE:.4f} s "
                         f"at {SAMPLE_RATE} Hz); padding is the metric recipe's job, the embedder never pads")
    mel = log_mel(wave)
    hop = EXAMPLE_FRAMES if framing == "torchvggish" else GOOGLE_STEP_FRAMES
    starts = np.arange(count) * hop
    assert starts[-1] + EXAMPLE_FRAMES <= mel.shape[0]
    return np.stack([mel[s:s + EXAMPLE_FRAMES] for s in starts])



def _check_framing(framing: str) -> None:
    if framing not in FRAMINGS:
        raise ValueError(f"unknown VGGish framing {framing!r}; choose one of {', '.join(FRAMINGS)}")


# ---------------------------------------------------------------------------------------------
# Network
# ---------------------------------------------------------------------------------------------

def _conv(c_in: int, c_out: int) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, kernel_size=3, padding=1)


class VGGishNetwork(nn.Module):
    """VGGish with torchvggish's module layout, no PCA and no final ReLU: [N, 1, 96, 64] -> [N, 128].

    features: 0 conv 1->64, 1 ReLU, 2 pool, 3 conv 64->128, 4 ReLU, 5 pool, 6 conv 128->256, 7 ReLU,
    8 conv 256->256, 9 ReLU, 10 pool, 11 conv 256->512, 12 ReLU, 13 conv 512->512, 14 ReLU, 15 pool.
    embeddings: 0 linear 12288->4096, 1 ReLU, 2 linear 4096->4096, 3 ReLU, 4 linear 4096->128.
    """

    def __init__(self):
        super().__init__()
        pool = lambda: nn.MaxPool2d(kernel_size=2, stride=2)  # noqa: E731
        self.features = nn.Sequential(
            _conv(1, 64), nn.ReLU(), pool(),
            _conv(64, 128), nn.ReLU(), pool(),
            _conv(128, 256), nn.ReLU(), _conv(256, 256), nn.ReLU(), pool(),
            _conv(256, 512), nn.ReLU(), _conv(512, 512), nn.ReLU(), pool(),
        )
        self.embeddings = nn.Sequential(
            nn.Linear(512 * 6 * 4, 4096), nn.ReLU(),
            nn.Linear(4096, 4096), nn.ReLU(),
            nn.Linear(4096, EMBEDDING_DIM),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or tuple(x.shape[1:]) != (1, EXAMPLE_FRAMES, N_MELS):
            raise ValueError(f"VGGish expects input [N, 1, {EXAMPLE_FRAMES}, {N_MELS}], got {tuple(x.shape)}")
        x = self.features(x)  # [N, 512, 6, 4]
        x = x.permute(0, 2, 3, 1).reshape(x.shape[0], -1)  # channels last, as the TF original flattens
        return self.embeddings(x)


# ---------------------------------------------------------------------------------------------
# Embedder
# ---------------------------------------------------------------------------------------------

class VGGishEmbedder(Embedder):
    """Frame embeddings [n_examples, 128] per clip; no classifier head (logits None)."""

    def __init__(self, network: VGGishNetwork, weights_sha256: str, framing: str = "torchvggish",
                 batch_size: int = 32, device: str | torch.device = "cpu"):
        _check_framing(framing)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.framing = framing
        self.batch_size = int(batch_size)
        self.device = torch.device(device)
        self.network = network.to(self.device).eval()
        name = "vggish" if framing == "torchvggish" else f"vggish_{framing}"
        self.info = EmbedderInfo(name=name, sample_rate=SAMPLE_RATE, dim=EMBEDDING_DIM, n_classes=None,
                                 weights_sha256=weights_sha256)

    @classmethod
    def from_checkpoint(cls, path: str | Path, expected_sha256: str | None = None, framing: str = "torchvggish",
                        published_prefix: str | None = VGGISH_SHA256_PREFIX, batch_size: int = 32,
                        device: str | torch.device = "cpu") -> "VGGishEmbedder":
        """Load torchvggish's released state dict (vggish-10086976.pth) from a local file.

        `expected_sha256`: pin the full hash. `published_prefix`: the 8 hex digits in the released
        file's name, a 32-bit check that this is that file (None to skip, e.g. for test weights).
        """
        _check_framing(framing)
        path = Path(path)
        digest = verify_sha256(path, expected_sha256)
        if published_prefix and not digest.startswith(published_prefix.lower()):
            raise CheckpointError(f"{path}: SHA-256 {digest} does not start with {published_prefix}, the digest prefix in the "
                                  f"released file's name (vggish-{published_prefix}.pth); is this torchvggish's VGGish?")
        state = load_torch_checkpoint(path)
        not_tensors = sorted(str(k) for k, v in state.items() if not isinstance(v, torch.Tensor))
        if not_tensors:
            raise CheckpointError(f"{path}: expected a flat state dict of tensors; non-tensor entries: {', '.join(not_tensors[:3])}")
        with torch.device("meta"):  # skip the random initialisation: every tensor is overwritten
            network = VGGishNetwork()
        network = network.to_empty(device="cpu")
        load_exact(network, state, path)
        return cls(network, digest, framing=framing, batch_size=batch_size, device=device)

    def examples(self, wave: np.ndarray, index: int = 0) -> np.ndarray:
        """The [n, 96, 64] float64 log-mel examples of one clip under this embedder's framing."""
        try:
            return waveform_to_examples(wave, self.framing)
        except ValueError as exc:
            raise ValueError(f"clip {index}: {exc}") from exc

    def embed(self, waves: list[np.ndarray]) -> list[Embedding]:
        per_clip = [self.examples(wave, i) for i, wave in enumerate(waves)]
        if not per_clip:
            return []
        stacked = np.concatenate(per_clip, axis=0)
        outputs = []
        with torch.inference_mode():
            for start in range(0, stacked.shape[0], self.batch_size):
                chunk = torch.from_numpy(stacked[start:start + self.batch_size]).to(self.device, torch.float32)
                outputs.append(self.network(chunk[:, None]).to("cpu", torch.float64).numpy())
        frames = np.concatenate(outputs, axis=0)
        bounds = np.cumsum([0] + [e.shape[0] for e in per_clip])
        return [Embedding(frames=frames[a:b].copy(), logits=None) for a, b in zip(bounds[:-1], bounds[1:])]


@EMBEDDERS.register("vggish")
def open_vggish(spec, path: Path, pin: str | None, loader) -> VGGishEmbedder:
    """A recipe's VGGish: the published file (its name's hash prefix checked unless pinned)."""
    return VGGishEmbedder.from_checkpoint(path, pin, framing=spec.framing, device=loader.device,
                                          published_prefix=None if pin else VGGISH_SHA256_PREFIX)
