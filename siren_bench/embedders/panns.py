"""PANNs Cnn14 (AudioSet tagger) as an Embedder: the backbone of audioldm_eval's FD, KL and IS.

Our own implementation of the published architecture (Kong et al., "PANNs", 2020), laid out so
that the released checkpoints load key for key:

- ``Cnn14_16k_mAP=0.438.pth``: 16 kHz, window 512, hop 160, 64 mel bands 50-8000 Hz;
- ``Cnn14_mAP=0.431.pth``: 32 kHz, window 1024, hop 320, 64 mel bands 50-14000 Hz.

Each file is a dict whose ``"model"`` entry is the state dict: 84 tensors, namely the front end
(``spectrogram_extractor.stft.conv_real.weight`` and ``.conv_imag.weight`` [n_fft/2+1, 1, n_fft],
``logmel_extractor.melW`` [n_fft/2+1, 64]), ``bn0`` (a BatchNorm over the 64 mel bands), six conv
blocks ``conv_block1..6`` (each conv1, bn1, conv2, bn2; 3x3 convs without bias, 64 -> 2048
channels), ``fc1`` [2048, 2048] and ``fc_audioset`` [527, 2048]. Every BatchNorm carries
weight, bias, running_mean, running_var and num_batches_tracked.

Forward pass (inference only: eval mode, no SpecAugment, no mixup, no random crop, dropout off):

1. power spectrogram: centred frames (reflect padding of n_fft/2 on both sides), periodic Hann
   window, |DFT|^2; the windowed DFT basis is the checkpoint's conv_real / conv_imag kernels,
   applied as a strided 1-D convolution, so frames = n_samples // hop + 1;
2. mel: power @ melW (librosa's Slaney-scale, area-normalised filters);
3. log: 10 log10(max(mel, amin)) - 10 log10(max(amin, ref)) with ref = 1.0, amin = 1e-10 and
   top_db = None (no dynamic-range clipping) - the reference's power_to_db settings;
4. bn0 per mel band, conv blocks 1-5 each followed by 2x2 average pooling, block 6 without
   pooling, mean over the mel axis, then max over time + mean over time;
5. embedding = ReLU(fc1(x)) (2048-d); logits = fc_audioset(embedding) (527 AudioSet classes).

What audioldm_eval consumes (read from its ``feature_extractors/panns/models.py``, ``eval.py``
and ``metrics/kl.py``, ``metrics/isc.py``): its Cnn14 returns ``"2048"`` = ReLU(fc1(x)) and
``"logits"`` = fc_audioset(ReLU(fc1(x))), the pre-sigmoid output of the classifier (its
``"clipwise_output"``, like panns-inference's, is sigmoid(logits)). FD uses ``"2048"``; KL uses
softmax(``"logits"``) on both sides (``kl_div((softmax(gen) + 1e-6).log(), softmax(ref), sum) /
n``); IS uses softmax(``"logits"``) in float64. :class:`PannsEmbedder` therefore returns
``frames`` = the 2048-d embedding and ``logits`` = the pre-sigmoid fc_audioset output. The
sigmoid outputs of panns-inference cannot stand in for them: inverting a saturated sigmoid in
float32 loses the logit.

Nothing here downloads; weights load from a local file with ``torch.load(weights_only=True)``,
after an optional SHA-256 check.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from siren_bench.embedders.base import Embedder, EmbedderInfo, Embedding
from siren_bench.registry import EMBEDDERS
from siren_bench.weights import CheckpointError, load_exact, load_torch_checkpoint, verify_sha256

EMBEDDING_DIM = 2048
N_CLASSES = 527  # AudioSet ontology classes
MIN_FRAMES = 32  # five 2x2 poolings need at least 32 spectrogram frames
FRONT_END_TOLERANCE = 1e-3  # see PannsEmbedder.from_checkpoint


@dataclass(frozen=True)
class Cnn14Config:
    """The front-end settings of one released Cnn14 checkpoint."""

    sample_rate: int
    n_fft: int  # window length = FFT size
    hop: int
    n_mels: int
    fmin: float
    fmax: float
    release_file: str

    @property
    def n_bins(self) -> int:
        return self.n_fft // 2 + 1

    @property
    def min_samples(self) -> int:
        """The shortest input that survives the five poolings (frames = samples // hop + 1)."""
        return (MIN_FRAMES - 1) * self.hop

    @property
    def name(self) -> str:
        return f"panns_cnn14_{self.sample_rate // 1000}k"


CNN14_CONFIGS: dict[int, Cnn14Config] = {
    16000: Cnn14Config(16000, 512, 160, 64, 50.0, 8000.0, "Cnn14_16k_mAP=0.438.pth"),
    32000: Cnn14Config(32000, 1024, 320, 64, 50.0, 14000.0, "Cnn14_mAP=0.431.pth"),
}


def cnn14_config(sample_rate: int) -> Cnn14Config:
    if sample_rate not in CNN14_CONFIGS:
        raise ValueError(f"PANNs Cnn14 checkpoints exist for sample rates {sorted(CNN14_CONFIGS)}, not {sample_rate}")
    return CNN14_CONFIGS[sample_rate]


# --- front end -------------------------------------------------------------------------------


def slaney_mel_matrix(sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """[n_fft/2+1, n_mels] float32 Slaney-scale, area-normalised triangular filters.

    Configured to equal librosa.filters.mel(sr, n_fft, n_mels, fmin, fmax) (its defaults:
    htk=False, norm="slaney", float32), transposed: checked bit for bit against librosa 0.11 at
    both Cnn14 settings. librosa is not a dependency; transformers builds the same matrix.
    """
    from transformers.audio_utils import mel_filter_bank

    return mel_filter_bank(
        num_frequency_bins=n_fft // 2 + 1,
        num_mel_filters=n_mels,
        min_frequency=fmin,
        max_frequency=fmax,
        sampling_rate=sample_rate,
        norm="slaney",
        mel_scale="slaney",
        dtype=np.float32,
    )


def windowed_dft_kernels(n_fft: int) -> tuple[np.ndarray, np.ndarray]:
    """Real and imaginary parts of the periodic-Hann-windowed DFT basis, [n_fft/2+1, 1, n_fft] float32.

    Row k, tap n: w[n] * exp(-2 pi i k n / n_fft), w[n] = 0.5 - 0.5 cos(2 pi n / n_fft).
    """
    n = np.arange(n_fft)
    k = np.arange(n_fft // 2 + 1)
    window = 0.5 - 0.5 * np.cos(2.0 * np.pi * n / n_fft)
    phase = 2.0 * np.pi * ((k[:, None] * n[None, :]) % n_fft) / n_fft  # reduced mod n_fft: exact angles
    real = (np.cos(phase) * window).astype(np.float32)[:, None, :]
    imag = (-np.sin(phase) * window).astype(np.float32)[:, None, :]
    return real, imag


class _FixedKernel(nn.Module):
    """Holds one frozen tensor under the name ``weight`` (the checkpoint's key layout)."""

    def __init__(self, value: torch.Tensor):
        super().__init__()
        self.weight = nn.Parameter(value, requires_grad=False)


class _WindowedDft(nn.Module):
    def __init__(self, n_fft: int, hop: int):
        super().__init__()
        real, imag = windowed_dft_kernels(n_fft)
        self.n_fft, self.hop = n_fft, hop
        self.conv_real = _FixedKernel(torch.as_tensor(real))
        self.conv_imag = _FixedKernel(torch.as_tensor(imag))

    def forward(self, wave: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, L] -> real, imag parts [B, n_bins, frames]."""
        half = self.n_fft // 2
        x = F.pad(wave[:, None, :], (half, half), mode="reflect")
        return (F.conv1d(x, self.conv_real.weight, stride=self.hop),
                F.conv1d(x, self.conv_imag.weight, stride=self.hop))


class PowerSpectrogram(nn.Module):
    """[B, L] -> |STFT|^2 as [B, 1, frames, n_fft/2+1]."""

    def __init__(self, n_fft: int, hop: int):
        super().__init__()
        self.stft = _WindowedDft(n_fft, hop)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        real, imag = self.stft(wave)
        return (real * real + imag * imag).transpose(1, 2)[:, None]


class LogMel(nn.Module):
    """Power spectrogram [..., n_bins] -> log-mel in dB [..., n_mels] (ref 1.0, amin 1e-10, no top_db)."""

    def __init__(self, cfg: Cnn14Config, ref: float = 1.0, amin: float = 1e-10):
        super().__init__()
        self.ref, self.amin = ref, amin
        mel = slaney_mel_matrix(cfg.sample_rate, cfg.n_fft, cfg.n_mels, cfg.fmin, cfg.fmax)
        self.melW = nn.Parameter(torch.as_tensor(mel), requires_grad=False)

    def forward(self, power: torch.Tensor) -> torch.Tensor:
        mel = torch.matmul(power, self.melW)
        db = 10.0 * torch.log10(torch.clamp(mel, min=self.amin))
        return db - 10.0 * float(np.log10(max(self.amin, self.ref)))


# --- network ---------------------------------------------------------------------------------


class ConvBlock(nn.Module):
    """(3x3 conv, BatchNorm, ReLU) twice, then average pooling."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, kernel_size=3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(c_out, c_out, kernel_size=3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.bn2 = nn.BatchNorm2d(c_out)

    def forward(self, x: torch.Tensor, pool: int) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return F.avg_pool2d(x, kernel_size=pool) if pool > 1 else x


class Cnn14(nn.Module):
    """Cnn14 with its log-mel front end; attribute names follow the released state dicts."""

    WIDTHS = (64, 128, 256, 512, 1024, 2048)

    def __init__(self, cfg: Cnn14Config, n_classes: int = N_CLASSES):
        super().__init__()
        self.cfg = cfg
        self.spectrogram_extractor = PowerSpectrogram(cfg.n_fft, cfg.hop)
        self.logmel_extractor = LogMel(cfg)
        self.bn0 = nn.BatchNorm2d(cfg.n_mels)
        c_in = 1
        for i, c_out in enumerate(self.WIDTHS, start=1):
            setattr(self, f"conv_block{i}", ConvBlock(c_in, c_out))
            c_in = c_out
        self.fc1 = nn.Linear(EMBEDDING_DIM, EMBEDDING_DIM)
        self.fc_audioset = nn.Linear(EMBEDDING_DIM, n_classes)

    def logmel(self, wave: torch.Tensor) -> torch.Tensor:
        """[B, L] -> [B, 1, frames, n_mels] log-mel in dB."""
        return self.logmel_extractor(self.spectrogram_extractor(wave))

    def forward(self, wave: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, L] -> (embedding [B, 2048], pre-sigmoid logits [B, n_classes]). Use in eval mode."""
        x = self.logmel(wave)
        x = self.bn0(x.transpose(1, 3)).transpose(1, 3)  # normalise each mel band
        for i in range(1, len(self.WIDTHS) + 1):
            x = getattr(self, f"conv_block{i}")(x, pool=2 if i < len(self.WIDTHS) else 1)
        x = x.mean(dim=3)  # over mel -> [B, 2048, time]
        x = x.amax(dim=2) + x.mean(dim=2)  # max + mean over time
        embedding = F.relu(self.fc1(x))
        return embedding, self.fc_audioset(embedding)


def expected_front_end(cfg: Cnn14Config) -> dict[str, np.ndarray]:
    """The front-end tensors a Cnn14 checkpoint at this configuration carries, by state-dict key."""
    real, imag = windowed_dft_kernels(cfg.n_fft)
    return {
        "spectrogram_extractor.stft.conv_real.weight": real,
        "spectrogram_extractor.stft.conv_imag.weight": imag,
        "logmel_extractor.melW": slaney_mel_matrix(cfg.sample_rate, cfg.n_fft, cfg.n_mels, cfg.fmin, cfg.fmax),
    }


def front_end_deviation(state: dict[str, torch.Tensor], cfg: Cnn14Config) -> float:
    """Largest deviation of a state dict's front end from the expected one, relative to each tensor's peak.

    The imaginary kernel is compared up to its sign: |DFT|^2 does not depend on it.
    """
    worst = 0.0
    for key, want in expected_front_end(cfg).items():
        have = state[key].detach().to("cpu", torch.float64).numpy()
        scale = float(np.abs(want).max())
        dev = np.abs(have - want).max()
        if key.endswith("conv_imag.weight"):
            dev = min(dev, np.abs(have + want).max())
        worst = max(worst, float(dev) / scale)
    return worst


# --- the embedder ----------------------------------------------------------------------------


class PannsEmbedder(Embedder):
    """PANNs Cnn14 at 16 or 32 kHz: per clip, frames = [1, 2048] embedding, logits = [1, 527].

    ``frames`` is ReLU(fc1(.)) - audioldm_eval's ``"2048"`` feature, the input of its FD;
    ``logits`` is the pre-sigmoid fc_audioset output - audioldm_eval's ``"logits"``, which its KL
    and IS pass through softmax (not the sigmoid ``clipwise_output``). Both are returned as
    float64 copies of the float32 network outputs.

    Input: mono float waves at ``sample_rate``, any length of at least ``min_samples`` (32
    spectrogram frames: 0.31 s). Channel policy, DC removal, resampling and padding (audioldm_eval
    zero-pads to 2 s) belong to the metric recipe; nothing is padded or cropped here. Each clip
    runs alone through the network (batch of one, as audioldm_eval does), so a clip's outputs do
    not depend on which other clips share the call.
    """

    def __init__(self, model: Cnn14, weights_sha256: str, device: str | torch.device = "cpu"):
        self.model = model.to(device).eval().requires_grad_(False)
        self.device = torch.device(device)
        self.cfg = model.cfg
        self.front_end_deviation: float | None = None  # set by from_checkpoint
        self.info = EmbedderInfo(
            name=self.cfg.name,
            sample_rate=self.cfg.sample_rate,
            dim=EMBEDDING_DIM,
            n_classes=model.fc_audioset.out_features,
            weights_sha256=weights_sha256,
        )

    @property
    def min_samples(self) -> int:
        return self.cfg.min_samples

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        sample_rate: int = 16000,
        expected_sha256: str | None = None,
        device: str | torch.device = "cpu",
    ) -> PannsEmbedder:
        """Load a released Cnn14 checkpoint (``{"model": state_dict}``; a bare state dict is accepted too).

        ``sample_rate`` picks the configuration: 16000 for ``Cnn14_16k_mAP=0.438.pth``, 32000 for
        ``Cnn14_mAP=0.431.pth``. Raises CheckpointError naming the file when it is missing, its
        SHA-256 differs from ``expected_sha256``, it is not a weights-only torch file, its keys or
        shapes differ from Cnn14's in any way, or its front end (STFT basis, mel filters) is not
        the one of this sample rate (relative deviation above 1e-3: a checkpoint for other
        front-end settings; float rounding is ~1e-7).
        """
        cfg = cnn14_config(sample_rate)
        path = Path(path)
        sha = verify_sha256(path, expected_sha256)
        obj = load_torch_checkpoint(path)
        state = obj.get("model", obj)
        if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise CheckpointError(
                f"{path}: expected a PANNs checkpoint, a dict whose 'model' entry is a state dict of tensors "
                f"(top-level keys: {sorted(map(str, obj))[:5]})")
        with torch.device("meta"):  # skip random initialisation: every tensor comes from the file
            model = Cnn14(cfg)
        model.to_empty(device="cpu")
        load_exact(model, state, path)
        deviation = front_end_deviation(state, cfg)
        if deviation > FRONT_END_TOLERANCE:
            raise CheckpointError(
                f"{path}: the front end (STFT basis / mel filters) does not match Cnn14 at {cfg.sample_rate} Hz "
                f"(window {cfg.n_fft}, hop {cfg.hop}, {cfg.n_mels} mel, {cfg.fmin:g}-{cfg.fmax:g} Hz; relative "
                f"deviation {deviation:.3g}); the {cfg.sample_rate} Hz release is {cfg.release_file}")
        embedder = cls(model, sha, device=device)
        embedder.front_end_deviation = deviation
        return embedder

    def _prepare(self, wave: np.ndarray, index: int) -> torch.Tensor:
        x = np.asarray(wave)
        if x.ndim != 1:
            raise ValueError(f"clip {index}: expected a mono 1-D wave, got shape {x.shape} "
                             "(the metric recipe picks the channel)")
        if not np.issubdtype(x.dtype, np.floating):
            raise ValueError(f"clip {index}: expected float samples, got {x.dtype}")
        if x.shape[0] < self.min_samples:
            raise ValueError(
                f"clip {index}: {x.shape[0]} samples is shorter than Cnn14's minimum {self.min_samples} "
                f"({self.min_samples / self.sample_rate:.2f} s at {self.sample_rate} Hz); pad in the metric recipe")
        if not np.isfinite(x).all():
            raise ValueError(f"clip {index}: wave contains NaN or infinite samples")
        return torch.as_tensor(x.astype(np.float32, copy=False), device=self.device)[None]

    def embed(self, waves: list[np.ndarray]) -> list[Embedding]:
        """Mono float waves at ``sample_rate`` -> one Embedding per wave ([1, 2048] frames, [1, 527] logits)."""
        inputs = [self._prepare(w, i) for i, w in enumerate(waves)]  # validate all before any work
        out: list[Embedding | None] = [None] * len(inputs)
        with torch.inference_mode():
            for length in sorted({x.shape[-1] for x in inputs}):  # one forward per clip length
                rows = [i for i, x in enumerate(inputs) if x.shape[-1] == length]
                embedding, logits = self.model(torch.cat([inputs[i] for i in rows]))
                embedding, logits = embedding.to("cpu", torch.float64).numpy(), logits.to("cpu", torch.float64).numpy()
                for row, i in enumerate(rows):
                    out[i] = Embedding(frames=embedding[row:row + 1].copy(), logits=logits[row:row + 1].copy())
        return out


@EMBEDDERS.register("panns_cnn14_16k")
@EMBEDDERS.register("panns_cnn14_32k")
def open_panns(spec, path: Path, pin: str | None, loader) -> PannsEmbedder:
    """PANNs Cnn14 at the rate the embedder's name says."""
    return PannsEmbedder.from_checkpoint(path, 16000 if spec.embedder.endswith("16k") else 32000, pin, device=loader.device)
