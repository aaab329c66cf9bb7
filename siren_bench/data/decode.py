"""A source audio file made into a prepared clip: mono, at the run's rate, cut or padded to the
clip length, as a 16-bit WAV. The prepare stage does it for every AudioCaps clip (to check it and
hash the result); with `data.store_decoded=false` it keeps nothing, and every stage that reads a
clip's audio decodes its source again here, getting the very samples and content hash a stored
copy would have (the manifest's `decode` column holds the policy; read_clip is the one reader).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import soxr

from siren_bench.io import AudioFileError, read_audio, read_wav_bytes, wav_bytes

SILENCE_PEAK = 1e-4  # -80 dBFS: a prepared clip quieter than this carries no sound


@dataclass(frozen=True)
class DecodePolicy:
    sample_rate: int
    clip_seconds: float
    channel_policy: str  # mean | first
    on_sample_rate_mismatch: str  # resample | error

    def cell(self) -> str:
        """The policy as the manifest's `decode` cell (canonical JSON)."""
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_cell(cls, cell: str, where: str | Path) -> "DecodePolicy":
        try:
            return cls(**json.loads(cell))
        except (json.JSONDecodeError, TypeError) as exc:
            raise AudioFileError(where, f"the manifest's decode policy {cell!r} is not one this version reads ({exc})") from exc


def decode_source(path: Path, policy: DecodePolicy) -> tuple[bytes, dict]:
    """The prepared clip's WAV bytes, and what was done to the source to make them."""
    wave, source_rate = read_audio(path)
    channels = wave.shape[0]
    mono = wave.mean(axis=0) if policy.channel_policy == "mean" else wave[0]
    resampled = source_rate != policy.sample_rate
    if resampled:
        if policy.on_sample_rate_mismatch == "error":
            raise AudioFileError(path, f"sample rate {source_rate} Hz, expected {policy.sample_rate} Hz (data.on_sample_rate_mismatch=error)")
        mono = soxr.resample(mono, source_rate, policy.sample_rate, quality="HQ")
    target = int(round(policy.clip_seconds * policy.sample_rate))
    source_samples = mono.size
    if source_samples > 2 * target:  # cropping it from 0 s would keep the wrong 10 s, silently
        raise AudioFileError(path, f"lasts {source_samples / policy.sample_rate:.1f} s, more than twice data.clip_seconds "
                                   f"({policy.clip_seconds} s): the whole video rather than its AudioCaps clip? Cut it at the "
                                   "start time the list gives, or move it out of data.audio_dir (it then counts as missing)")
    mono = mono[:target] if mono.size >= target else np.pad(mono, (0, target - mono.size))
    peak = float(np.max(np.abs(mono)))
    if peak < SILENCE_PEAK:
        raise AudioFileError(path, f"silent after {policy.channel_policy} channel mix and crop to {policy.clip_seconds} s (peak {peak:.1e})")
    if peak > 1.0:  # beyond full scale (float source, or resampling overshoot): scale, and list it
        mono = mono / peak
    record = {
        "source_sample_rate": source_rate,
        "source_channels": channels,
        "source_seconds": round(source_samples / policy.sample_rate, 4),
        "resampled": resampled,
        "peak_normalised": peak > 1.0,
        "padded_seconds": round(max(0, target - source_samples) / policy.sample_rate, 4),
        "num_samples": int(mono.size),
    }
    return wav_bytes(mono, policy.sample_rate, where=path), record


def read_clip(path: str | Path, decode: str = "") -> tuple[np.ndarray, int]:
    """A manifest clip's audio as float64 [channels, samples]: its prepared file (`decode` empty),
    or its source file decoded now under the manifest's policy."""
    if not decode:
        return read_audio(path)
    data, _ = decode_source(Path(path), DecodePolicy.from_cell(decode, path))
    return read_wav_bytes(data)
