"""aisfx: our front end and network against the aisfx package's own code (installed with
--no-deps from requirements-nodeps.txt, with Essentia for its original front end), on the real
checkpoint that ships inside the wheel, loaded without running pickled code."""

from __future__ import annotations

import io
import pickle

import numpy as np
import pytest
import soundfile as sf
import torch

from siren_bench.embedders import aisfx
from siren_bench.weights import CheckpointError

CHECKPOINT = aisfx.packaged_checkpoint()


@pytest.fixture(scope="module")
def embedder() -> aisfx.AisfxEmbedder:
    return aisfx.AisfxEmbedder.from_checkpoint(CHECKPOINT)


def _clip(seconds: float, seed: int) -> np.ndarray:
    """A tone over noise with a burst, at 44.1 kHz, within +-1 (Essentia's loader clips beyond)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * aisfx.SAMPLE_RATE)) / aisfx.SAMPLE_RATE
    wave = 0.2 * np.sin(2 * np.pi * (300 + 200 * seed) * t) + 0.01 * rng.standard_normal(t.size)
    wave[t.size // 3 : t.size // 2] += 0.1 * rng.standard_normal(t.size // 2 - t.size // 3)
    return wave.astype(np.float32)


@pytest.mark.parametrize("seconds", [1.3, 2.0, 4.0, 10.0])
def test_front_end_matches_the_package_essentia_spectrogram(seconds, tmp_path):
    """The package's Essentia path reads a file; ours reads the same samples. Float32 Essentia
    against float64 numpy: agreement to 1e-5 of the normalised log-mel, and the same frames."""
    from aisfx.preprocessing import spectrogram_normalize
    from aisfx.spectrogram.spectrogram_essentia import compute_spectrogram

    wave = _clip(seconds, 0)
    path = tmp_path / "clip.wav"
    sf.write(path, wave, aisfx.SAMPLE_RATE, subtype="FLOAT")
    theirs = spectrogram_normalize(compute_spectrogram(str(path), sr=float(aisfx.SAMPLE_RATE), block_size=aisfx.FRAME_SAMPLES,
                                                       hop_size=aisfx.HOP_SAMPLES, n_mels=aisfx.N_MELS, f_min=aisfx.FMIN_HZ,
                                                       f_max=aisfx.FMAX_HZ))
    ours = aisfx.spectrogram(wave)
    assert ours.shape == theirs.shape
    np.testing.assert_allclose(ours, theirs, atol=1e-5)


@pytest.mark.parametrize("frames", [51, 99, 100, 150, 151, 174, 431])
def test_blocks_match_the_package_blocking(frames):
    from aisfx.preprocessing import blocking, compute_hopSize

    spec = np.random.default_rng(frames).random((frames, aisfx.N_MELS))
    hop = compute_hopSize(aisfx.BLOCK_FRAMES, 0.5, spec)
    np.testing.assert_array_equal(aisfx.blocks(spec), blocking(spec, aisfx.BLOCK_FRAMES, hop, drop_partial_block=True))


def test_a_clip_the_package_refuses_is_refused_by_name(embedder):
    with pytest.raises(ValueError, match=r"clip 1: clip of 45 aisfx frames is too short: it needs more than 50 frames \(over 50176 samples"):
        embedder.embed([_clip(2.0, 0), _clip(1.0, 1)])


def test_embeddings_match_the_package_network_on_the_real_weights(embedder, tmp_path):
    """The package's CrossNet, built by its own loader (which unpickles with torch.load's
    defaults, so it runs only here, on the pinned file), embeds the same blocks."""
    from aisfx.inference import load_bestModel, load_weights

    assert embedder.info.weights_sha256 == aisfx.CHECKPOINT_SHA256
    waves = [_clip(4.0, 0), _clip(2.5, 1), _clip(10.0, 2)]
    ours = embedder.embed(waves)
    with torch.serialization.safe_globals([(np.int64(0).__reduce__()[0], "numpy.core.multiarray.scalar"), np.dtype,
                                           type(np.dtype(np.int64))]):
        weights, datasets = load_weights("cpu")
    model = load_bestModel(weights, datasets, "cpu")
    for wave, embedding in zip(waves, ours):
        with torch.no_grad():
            theirs = model.get_embedding(torch.from_numpy(aisfx.blocks(aisfx.spectrogram(wave))).float()).double().numpy()
        assert embedding.frames.shape == theirs.shape and embedding.logits is None
        np.testing.assert_allclose(embedding.frames, theirs, rtol=1e-5, atol=1e-5)
    assert ours[0].frames.shape == (2, 512) and ours[2].frames.shape == (7, 512)
    assert not np.allclose(ours[0].frames.mean(0), ours[1].frames.mean(0), rtol=0.05)  # different audio, different embedding


def test_the_checkpoint_loads_without_running_pickled_code(tmp_path):
    """A pickle that asks for any global beyond NumPy's scalar and dtypes is refused, not run;
    so is a file with another hash."""
    class Payload:
        def __reduce__(self):
            return (print, ("pickled code ran",))

    bad = tmp_path / "checkpoint.pth"
    buffer = io.BytesIO()
    torch.save(({"embedding_net.x": torch.zeros(1)}, {"d": Payload()}), buffer, pickle_protocol=pickle.HIGHEST_PROTOCOL)
    bad.write_bytes(buffer.getvalue())
    with pytest.raises(CheckpointError, match="weights-only unpickler"):
        aisfx.load_checkpoint_state(bad)
    with pytest.raises(CheckpointError, match="SHA-256"):
        aisfx.AisfxEmbedder.from_checkpoint(bad)
    state = aisfx.load_checkpoint_state(CHECKPOINT)
    assert len(state) == 4 * 12 and state["conv_block4.conv2.weight"].shape == (512, 512, 3, 3)
