"""VGGish embedder: the front end's framing and counts, a random-weight checkpoint in the released
file's exact layout loads and embeds deterministically, bad checkpoints are refused by name, and
(where the torchvggish package is installed) parity with torchvggish's front end and network."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from siren_bench.embedders.vggish import (
    EMBEDDING_DIM,
    VGGISH_SHA256_PREFIX,
    VGGishEmbedder,
    VGGishNetwork,
    log_mel,
    min_samples,
    n_examples,
    vggish_mel_matrix,
    waveform_to_examples,
)
from siren_bench.io import sha256_file
from siren_bench.weights import CheckpointError

SR = 16000

# Keys and shapes of torchvggish's released vggish-10086976.pth (its VGG module's state dict),
# written out here rather than taken from the code under test.
RELEASED_LAYOUT = {
    "features.0.weight": (64, 1, 3, 3), "features.0.bias": (64,),
    "features.3.weight": (128, 64, 3, 3), "features.3.bias": (128,),
    "features.6.weight": (256, 128, 3, 3), "features.6.bias": (256,),
    "features.8.weight": (256, 256, 3, 3), "features.8.bias": (256,),
    "features.11.weight": (512, 256, 3, 3), "features.11.bias": (512,),
    "features.13.weight": (512, 512, 3, 3), "features.13.bias": (512,),
    "embeddings.0.weight": (4096, 12288), "embeddings.0.bias": (4096,),
    "embeddings.2.weight": (4096, 4096), "embeddings.2.bias": (4096,),
    "embeddings.4.weight": (128, 4096), "embeddings.4.bias": (128,),
}


def _signal(seconds: float, seed: int = 0) -> np.ndarray:
    """A chirp plus a little noise: every mel band gets energy at some point."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(seconds * SR))) / SR
    return 0.4 * np.sin(2 * np.pi * (150 + 700 * t) * t) + 0.05 * rng.standard_normal(t.shape[0])


def _lean_state(layout=RELEASED_LAYOUT) -> dict[str, torch.Tensor]:
    """Tensors of the right shapes with one stored element each (stride 0): tiny files."""
    return {key: torch.zeros(()).expand(shape) for key, shape in layout.items()}


def he_random_state(seed: int = 1234) -> dict[str, torch.Tensor]:
    """He-scaled random weights in the released layout, so activations stay of order one through the stack."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in RELEASED_LAYOUT.items():
        if key.endswith(".weight"):
            fan_in = int(np.prod(shape[1:]))
            state[key] = torch.randn(shape, generator=g) * (2.0 / fan_in) ** 0.5
        else:
            state[key] = torch.randn(shape, generator=g) * 0.1
    return state


@pytest.fixture(scope="module")
def random_state() -> dict[str, torch.Tensor]:
    return he_random_state()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, random_state) -> Path:
    path = tmp_path_factory.mktemp("vggish") / "vggish-random.pth"
    torch.save(random_state, path)
    return path


@pytest.fixture(scope="module")
def embedder(checkpoint) -> VGGishEmbedder:
    return VGGishEmbedder.from_checkpoint(checkpoint, published_prefix=None)


# --- front end ------------------------------------------------------------------------------

def test_mel_matrix_shape_and_dc_bin():
    mel = vggish_mel_matrix()
    assert mel.shape == (257, 64)
    assert np.all(mel[0] == 0.0) and np.all(mel >= 0.0) and np.all(mel.max(axis=0) > 0.5)
    # nothing above 7500 Hz (bin 240 = 7500 Hz) and nothing at or below 125 Hz (bin 4 = 125 Hz)
    assert np.all(mel[241:] == 0.0) and np.all(mel[:5] == 0.0)


def test_torchvggish_framing_counts_and_edges():
    assert min_samples("torchvggish") == 15600  # 400 + 95 * 160
    assert n_examples(15599, "torchvggish") == 0
    assert n_examples(15600, "torchvggish") == 1
    assert n_examples(2 * SR, "torchvggish") == 2  # 198 frames
    assert n_examples(10 * SR, "torchvggish") == 10  # 998 frames
    ex = waveform_to_examples(_signal(2.0))
    assert ex.shape == (2, 96, 64) and ex.dtype == np.float64
    full = log_mel(_signal(2.0))
    np.testing.assert_array_equal(ex[1], full[96:192])
    with pytest.raises(ValueError, match="15600 samples"):
        waveform_to_examples(np.zeros(15599))


def test_google_framing_10s_clip_gives_19_examples_from_one_second_windows():
    wave = _signal(10.0, seed=3)
    ex = waveform_to_examples(wave, "google_1s_0.5s")
    assert ex.shape == (19, 96, 64)  # windows start at 0, 0.5, ..., 9.0 s
    # Each example is the first 96 frames of the log-mel of its own 1 s window (Google's way)...
    for k in (0, 1, 7, 18):
        window = wave[8000 * k:8000 * k + 16000]
        np.testing.assert_allclose(ex[k], log_mel(window)[:96], rtol=0, atol=1e-12)
    # ... which is the patch at frame offset 50 k of the whole clip's log-mel.
    full = log_mel(wave)
    np.testing.assert_allclose(ex, np.stack([full[50 * k:50 * k + 96] for k in range(19)]), rtol=0, atol=1e-12)


def test_google_framing_counts_whole_windows_not_patches():
    assert min_samples("google_1s_0.5s") == 16000
    assert n_examples(15999, "google_1s_0.5s") == 0  # one 96-frame patch fits, no whole 1 s window
    assert n_examples(16000, "google_1s_0.5s") == 1
    assert n_examples(23999, "google_1s_0.5s") == 1  # two patches at 50-frame hop fit, one window
    assert n_examples(24000, "google_1s_0.5s") == 2
    with pytest.raises(ValueError, match="16000 samples"):
        waveform_to_examples(np.zeros(15999), "google_1s_0.5s")
    with pytest.raises(ValueError, match="framing"):
        waveform_to_examples(np.zeros(SR), "google")


def test_front_end_rejects_non_mono_and_non_finite():
    with pytest.raises(ValueError, match="mono"):
        waveform_to_examples(np.zeros((SR, 2)))
    bad = np.zeros(2 * SR)
    bad[5] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        waveform_to_examples(bad)


# --- checkpoint and embedding ---------------------------------------------------------------

def test_network_layout_is_the_released_files():
    with torch.device("meta"):  # shapes only, no 72M random numbers
        network = VGGishNetwork()
    assert {k: tuple(v.shape) for k, v in network.state_dict().items()} == RELEASED_LAYOUT
    with pytest.raises(ValueError, match=r"\[N, 1, 96, 64\]"):
        network(torch.zeros(2, 96, 64, device="meta"))


def test_random_checkpoint_loads_and_embeds(embedder, checkpoint):
    assert embedder.info.name == "vggish" and embedder.info.sample_rate == SR
    assert embedder.info.dim == EMBEDDING_DIM and embedder.info.n_classes is None
    assert embedder.info.weights_sha256 == sha256_file(checkpoint)
    assert not embedder.network.training
    waves = [_signal(2.0, seed=1), _signal(1.0, seed=2).astype(np.float32)]
    out = embedder.embed(waves)
    assert [e.frames.shape for e in out] == [(2, 128), (1, 128)]
    assert all(e.frames.dtype == np.float64 and e.logits is None for e in out)
    assert np.all(np.isfinite(out[0].frames)) and np.std(out[0].frames) > 1e-3
    assert np.min(out[0].frames) < 0  # no final ReLU
    again = embedder.embed(waves)
    for a, b in zip(out, again):
        np.testing.assert_array_equal(a.frames, b.frames)
    # chunking through the network does not change the result
    small_batches = VGGishEmbedder(embedder.network, embedder.info.weights_sha256, batch_size=1)
    alone = small_batches.embed(waves[:1])[0].frames
    np.testing.assert_allclose(alone, out[0].frames, rtol=1e-5, atol=1e-5 * np.abs(out[0].frames).max())
    assert embedder.embed([]) == []


def test_short_clip_is_an_error_not_padding(embedder):
    with pytest.raises(ValueError, match=r"clip 1: .*15599 samples.*never pads"):
        embedder.embed([_signal(2.0), np.zeros(15599)])


def test_google_framing_embedder(embedder):
    google = VGGishEmbedder(embedder.network, embedder.info.weights_sha256, framing="google_1s_0.5s")
    assert google.info.name != embedder.info.name  # caches keyed on info see the framing
    assert google.embed([_signal(1.6)])[0].frames.shape == (2, 128)


def test_lean_checkpoint_in_the_released_layout_loads(tmp_path):
    path = tmp_path / "lean.pth"
    torch.save(_lean_state(), path)
    assert VGGishEmbedder.from_checkpoint(path, published_prefix=None).info.weights_sha256 == sha256_file(path)


def _refused(path: Path, match: str, **kwargs) -> None:
    with pytest.raises(CheckpointError, match=match) as err:
        VGGishEmbedder.from_checkpoint(path, **kwargs)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("change", ["renamed", "missing", "wrong_shape", "extra_pca", "not_tensor"])
def test_bad_layouts_are_refused_naming_the_file(tmp_path, change):
    state = _lean_state()
    match = {"renamed": "missing.*unexpected", "missing": "1 missing", "wrong_shape": "wrong shape",
             "extra_pca": "unexpected", "not_tensor": "non-tensor"}[change]
    if change == "renamed":
        state["embeddings.4.weights"] = state.pop("embeddings.4.weight")
    elif change == "missing":
        del state["features.13.bias"]
    elif change == "wrong_shape":
        state["embeddings.0.weight"] = torch.zeros(()).expand(4096, 12289)
    elif change == "extra_pca":
        state["pproc.pca_means"] = torch.zeros(128, 1)
    else:
        state["meta"] = "v0.1"
    path = tmp_path / f"{change}.pth"
    torch.save(state, path)
    _refused(path, match, published_prefix=None)


def test_missing_file_wrong_hash_and_wrong_prefix_are_refused(tmp_path):
    _refused(tmp_path / "vggish-10086976.pth", "not found")
    path = tmp_path / "lean.pth"
    torch.save(_lean_state(), path)
    _refused(path, "does not match", expected_sha256="0" * 64)
    assert not sha256_file(path).startswith(VGGISH_SHA256_PREFIX)
    _refused(path, VGGISH_SHA256_PREFIX)  # the released file's name prefix is checked by default
    with pytest.raises(ValueError, match="framing"):
        VGGishEmbedder.from_checkpoint(path, published_prefix=None, framing="1s")


# --- parity with the torchvggish package (skipped when it is not installed) ------------------

@pytest.fixture(scope="module")
def tv():
    pytest.importorskip("resampy")  # torchvggish.vggish_input imports it at module level
    package = pytest.importorskip("torchvggish")
    from torchvggish import mel_features, torchvggish as model_module, vggish_input
    if not hasattr(model_module, "VGG") or not hasattr(model_module, "make_layers"):
        pytest.skip("torchvggish layout differs from the PyPI 0.2 release this test was written against")
    return package, mel_features, vggish_input, model_module


@pytest.fixture(scope="module")
def reference_network(tv, random_state):
    """torchvggish's VGG, no PCA post-processor, with its last child (the final ReLU) dropped as
    audioldm_eval does, loaded strictly with the same random state dict."""
    _, _, _, model_module = tv
    net = model_module.VGG(model_module.make_layers(), postprocess=False)
    net.embeddings = torch.nn.Sequential(*list(net.embeddings.children())[:-1])
    net.load_state_dict(random_state, strict=True)
    return net.eval()


def test_parity_front_end_with_torchvggish(tv):
    _, mel_features, vggish_input, _ = tv
    wave = _signal(3.7, seed=5)  # 3 whole examples and a dropped remainder
    ours = waveform_to_examples(wave)
    ref64 = vggish_input.waveform_to_examples(wave, SR, return_tensor=False)
    assert ref64.shape == ours.shape == (3, 96, 64)
    # Same float64 arithmetic up to summation order: measured max |diff| ~3e-14 on values ~5.
    np.testing.assert_allclose(ours, ref64, rtol=0, atol=1e-10)
    # What torchvggish hands its network is that, rounded to float32: within half a float32 ulp.
    ref32 = vggish_input.waveform_to_examples(wave, SR, return_tensor=True).detach().numpy()[:, 0]
    np.testing.assert_allclose(ours, ref32, rtol=2.0 ** -23, atol=0)
    ref_mel = mel_features.spectrogram_to_mel_matrix(num_mel_bins=64, num_spectrogram_bins=257, audio_sample_rate=SR,
                                                     lower_edge_hertz=125, upper_edge_hertz=7500)
    np.testing.assert_allclose(vggish_mel_matrix(), ref_mel, rtol=0, atol=1e-15)


def test_parity_network_with_torchvggish(tv, reference_network, embedder):
    """End to end: torchvggish's front end and network vs ours, same random weights."""
    _, _, vggish_input, _ = tv
    assert {k: tuple(v.shape) for k, v in reference_network.state_dict().items()} == RELEASED_LAYOUT
    wave = _signal(3.7, seed=6)
    examples = vggish_input.waveform_to_examples(wave, SR, return_tensor=True).detach()
    with torch.inference_mode():
        ref = reference_network(examples).double().numpy()
    ours = embedder.embed([wave])[0].frames
    assert np.min(ref) < 0  # the reference's final ReLU is really gone
    # Same float32 weights, inputs and layer order: measured bit-identical; allow float32 noise.
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-5 * np.abs(ref).max())
