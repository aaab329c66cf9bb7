"""PANNs Cnn14 embedder: checkpoint layout and refusal, front-end math, and parity with the reference.

The reference is panns-inference's Cnn14 (with torchlibrosa's front end), loaded from its files
without running the package __init__ (which runs wget for a label file). It needs
`pip install --no-deps panns-inference torchlibrosa`; torchlibrosa imports librosa at module
level, only to build the STFT window and mel matrix at construction. When librosa is missing, a
stand-in provides those two construction helpers (scipy's Hann window, our mel matrix): both
tensors are then overwritten by the shared state dict, so every tensor and every operation of
the reference forward pass is still the reference's own.

The model (~81 M parameters) is built and loaded once per module; clips are under a second.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from siren_bench.embedders.base import Embedding
from siren_bench.embedders.panns import (
    CNN14_CONFIGS,
    Cnn14,
    PannsEmbedder,
    expected_front_end,
    slaney_mel_matrix,
    windowed_dft_kernels,
)
from siren_bench.io import sha256_file
from siren_bench.weights import CheckpointError

CFG16, CFG32 = CNN14_CONFIGS[16000], CNN14_CONFIGS[32000]
FRONT_KEYS = ("spectrogram_extractor.stft.conv_real.weight", "spectrogram_extractor.stft.conv_imag.weight",
              "logmel_extractor.melW")


def release_keys_and_shapes(cfg) -> dict[str, tuple[int, ...]]:
    """The released Cnn14 state dict, written out from the architecture's published facts."""
    bins = cfg.n_fft // 2 + 1
    shapes = {
        "spectrogram_extractor.stft.conv_real.weight": (bins, 1, cfg.n_fft),
        "spectrogram_extractor.stft.conv_imag.weight": (bins, 1, cfg.n_fft),
        "logmel_extractor.melW": (bins, 64),
    }

    def bn(prefix, c):
        shapes.update({f"{prefix}.weight": (c,), f"{prefix}.bias": (c,), f"{prefix}.running_mean": (c,),
                       f"{prefix}.running_var": (c,), f"{prefix}.num_batches_tracked": ()})

    bn("bn0", 64)
    c_in = 1
    for i, c in enumerate((64, 128, 256, 512, 1024, 2048), start=1):
        shapes[f"conv_block{i}.conv1.weight"] = (c, c_in, 3, 3)
        shapes[f"conv_block{i}.conv2.weight"] = (c, c, 3, 3)
        bn(f"conv_block{i}.bn1", c)
        bn(f"conv_block{i}.bn2", c)
        c_in = c
    shapes.update({"fc1.weight": (2048, 2048), "fc1.bias": (2048,),
                   "fc_audioset.weight": (527, 2048), "fc_audioset.bias": (527,)})
    return shapes


def random_state(cfg, seed: int) -> dict[str, torch.Tensor]:
    """Random Cnn14 weights (He-scaled convs, non-trivial BatchNorm statistics) with the true front end."""
    gen = torch.Generator().manual_seed(seed)
    front = {k: torch.from_numpy(v) for k, v in expected_front_end(cfg).items()}
    state = {}
    for key, shape in release_keys_and_shapes(cfg).items():
        if key in front:
            state[key] = front[key]
        elif key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(1000 + seed, dtype=torch.long)
        elif key == "bn0.running_mean":
            state[key] = -20.0 + 5.0 * torch.randn(shape, generator=gen)
        elif key == "bn0.running_var":
            state[key] = 100.0 * (0.5 + torch.rand(shape, generator=gen))
        elif key.endswith("running_var"):
            state[key] = 0.5 + 1.5 * torch.rand(shape, generator=gen)
        elif key.endswith("running_mean") or key.endswith("bias"):
            state[key] = 0.1 * torch.randn(shape, generator=gen)
        elif len(shape) == 1:  # BatchNorm scale
            state[key] = 0.5 + torch.rand(shape, generator=gen)
        else:  # conv / linear weight
            fan_in = int(np.prod(shape[1:]))
            state[key] = torch.randn(shape, generator=gen) * (2.0 / fan_in) ** 0.5
    return state


def skeleton_state(cfg, real_front_end: bool = True) -> dict[str, torch.Tensor]:
    """A full-shape state dict whose learned tensors are stride-0 views of one scalar: kilobytes on disk."""
    front = expected_front_end(cfg)
    state = {}
    for key, shape in release_keys_and_shapes(cfg).items():
        if key in front and real_front_end:
            state[key] = torch.from_numpy(front[key])
        elif key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(0, dtype=torch.long)
        else:
            unit = key.endswith(("running_var", "bn1.weight", "bn2.weight"))
            fill = 1.0 if unit else 0.01
            state[key] = torch.tensor(fill).expand(shape)
    return state


def save_release(path: Path, state: dict) -> Path:
    torch.save({"model": state}, path)
    return path


def make_clip(seconds: float, sample_rate: int, seed: int = 0) -> np.ndarray:
    """A fixed test clip: a chirp, a tone and seeded noise."""
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    rng = np.random.default_rng(seed)
    chirp = 0.3 * np.sin(2 * np.pi * (200 * t + 2000 * t**2))
    return (chirp + 0.1 * np.sin(2 * np.pi * 1234.5 * t) + 0.05 * rng.standard_normal(t.size)).astype(np.float32)


@pytest.fixture(scope="module")
def ckpt16(tmp_path_factory):
    """A random-weight 16 kHz checkpoint in the released layout ({"model": state_dict}), ~320 MB."""
    path = save_release(tmp_path_factory.mktemp("panns") / "Cnn14_16k_random.pth", random_state(CFG16, seed=0))
    yield path
    path.unlink(missing_ok=True)


@pytest.fixture(scope="module")
def emb16(ckpt16) -> PannsEmbedder:
    return PannsEmbedder.from_checkpoint(ckpt16, sample_rate=16000)


# --- layout ----------------------------------------------------------------------------------


@pytest.mark.parametrize("cfg", [CFG16, CFG32], ids=["16k", "32k"])
def test_state_dict_is_the_release_layout(cfg):
    with torch.device("meta"):
        model = Cnn14(cfg)
    have = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert have == release_keys_and_shapes(cfg)
    assert len(have) == 84
    learned = sum(int(np.prod(s)) for k, s in have.items() if k not in FRONT_KEYS and "running" not in k
                  and "num_batches" not in k)
    assert learned == 80_753_615  # Cnn14: 80.8 M learned parameters


# --- loading and embedding -------------------------------------------------------------------


def test_random_checkpoint_loads_and_embeds(emb16, ckpt16):
    info = emb16.info
    assert (info.name, info.sample_rate, info.dim, info.n_classes) == ("panns_cnn14_16k", 16000, 2048, 527)
    assert info.weights_sha256 == sha256_file(ckpt16)
    assert emb16.front_end_deviation < 1e-6
    assert not emb16.model.training
    waves = [make_clip(0.5, 16000, seed=1), make_clip(0.8, 16000, seed=2).astype(np.float64)]
    out = emb16.embed(waves)
    assert len(out) == 2 and all(isinstance(e, Embedding) for e in out)
    for e in out:
        assert e.frames.shape == (1, 2048) and e.logits.shape == (1, 527)
        assert e.frames.dtype == np.float64 and e.logits.dtype == np.float64
        assert np.isfinite(e.frames).all() and np.isfinite(e.logits).all()
        assert (e.frames >= 0).all() and (e.frames > 0).any()  # post-ReLU embedding, not all dead
    assert not np.allclose(out[0].logits, out[1].logits)
    # logits are the pre-sigmoid fc_audioset output of the returned embedding
    w = emb16.model.fc_audioset.weight.detach().double().numpy()
    b = emb16.model.fc_audioset.bias.detach().double().numpy()
    np.testing.assert_allclose(out[0].logits[0], w @ out[0].frames[0] + b, rtol=1e-4,
                               atol=1e-4 * np.abs(out[0].logits).max())
    # deterministic, and independent of the other clips in the call
    again = emb16.embed([waves[1]])
    np.testing.assert_array_equal(again[0].frames, out[1].frames)
    np.testing.assert_array_equal(again[0].logits, out[1].logits)


def test_bad_inputs_refused(emb16):
    with pytest.raises(ValueError, match="clip 1: .*shorter than Cnn14's minimum 4960"):
        emb16.embed([make_clip(0.5, 16000), np.zeros(4959, np.float32)])
    emb16.embed([np.zeros(4960, np.float32)])  # the minimum itself works
    with pytest.raises(ValueError, match="mono 1-D"):
        emb16.embed([np.zeros((2, 16000), np.float32)])
    with pytest.raises(ValueError, match="NaN or infinite"):
        emb16.embed([np.full(16000, np.nan, np.float32)])
    with pytest.raises(ValueError, match="float samples"):
        emb16.embed([np.zeros(16000, np.int16)])


def test_32k_checkpoint_loads_and_embeds(tmp_path):
    path = save_release(tmp_path / "Cnn14_mAP=0.431.pth", skeleton_state(CFG32))
    assert path.stat().st_size < 10_000_000  # stride-0 weights: only the front end takes space
    emb = PannsEmbedder.from_checkpoint(path, sample_rate=32000)
    assert (emb.info.name, emb.sample_rate, emb.min_samples) == ("panns_cnn14_32k", 32000, 9920)
    (e,) = emb.embed([make_clip(0.4, 32000)])
    assert e.frames.shape == (1, 2048) and e.logits.shape == (1, 527)
    assert np.isfinite(e.logits).all()


# --- refusals --------------------------------------------------------------------------------


def _refused(path: Path, sample_rate: int = 16000, **kw) -> str:
    with pytest.raises(CheckpointError) as info:
        PannsEmbedder.from_checkpoint(path, sample_rate=sample_rate, **kw)
    message = str(info.value)
    assert str(path) in message
    return message


def test_missing_file_and_wrong_hash(tmp_path):
    assert "not found" in _refused(tmp_path / "Cnn14_16k_mAP=0.438.pth")
    path = save_release(tmp_path / "ok.pth", skeleton_state(CFG16))
    assert "does not match the pinned" in _refused(path, expected_sha256="ab" * 32)
    PannsEmbedder.from_checkpoint(path, 16000, expected_sha256=sha256_file(path))


@pytest.mark.parametrize("edit", ["renamed", "missing", "unexpected", "wrong_shape"])
def test_wrong_keys_refused(tmp_path, edit):
    state = skeleton_state(CFG16)
    if edit == "renamed":
        state["conv_block3.conv_1.weight"] = state.pop("conv_block3.conv1.weight")
    elif edit == "missing":
        del state["bn0.num_batches_tracked"]
    elif edit == "unexpected":
        state["fc_extra.weight"] = torch.zeros(3)
    else:
        state["fc_audioset.weight"] = torch.tensor(0.0).expand(500, 2048)
    message = _refused(save_release(tmp_path / f"{edit}.pth", state))
    assert "do not fit the model" in message
    expected = {"renamed": "conv_block3.conv1.weight", "missing": "bn0.num_batches_tracked",
                "unexpected": "fc_extra.weight", "wrong_shape": "fc_audioset.weight"}[edit]
    assert expected in message


def test_other_sample_rate_refused(tmp_path):
    path = save_release(tmp_path / "Cnn14_16k_mAP=0.438.pth", skeleton_state(CFG16))
    assert "wrong shape" in _refused(path, sample_rate=32000)
    with pytest.raises(ValueError, match="44100"):
        PannsEmbedder.from_checkpoint(path, sample_rate=44100)


def test_foreign_front_end_refused(tmp_path):
    state = skeleton_state(CFG16)
    other = slaney_mel_matrix(16000, 512, 64, 0.0, 8000.0)  # right shape, other fmin
    state["logmel_extractor.melW"] = torch.from_numpy(other)
    assert "front end" in _refused(save_release(tmp_path / "fmin0.pth", state))
    state = skeleton_state(CFG16, real_front_end=False)
    assert "front end" in _refused(save_release(tmp_path / "flat.pth", state))


def test_not_a_release_file_refused(tmp_path):
    bad = tmp_path / "garbage.pth"
    bad.write_bytes(b"not a checkpoint")
    assert "weights-only" in _refused(bad)
    listy = tmp_path / "list.pth"
    torch.save([1, 2, 3], listy)
    _refused(listy)
    nested = tmp_path / "nested.pth"
    torch.save({"model": {"inner": {"a": torch.zeros(1)}}}, nested)
    assert "'model' entry" in _refused(nested)
    code = tmp_path / "code.pth"
    torch.save({"model": skeleton_state(CFG16), "extra": types.SimpleNamespace(a=1)}, code)
    assert "weights-only" in _refused(code)


def numpy1_release(path: Path, state: dict) -> Path:
    """A release file as the Zenodo ones are: the weights beside the training loop's NumPy values
    (a sampler state, the iteration), pickled under NumPy 1's module names (numpy.core)."""
    import zipfile

    torch.save({"model": state, "sampler": {"indexes": np.arange(5), "rng": np.random.default_rng(0).random(3)},
                "iteration": np.int64(560000), "mAP": np.float64(0.438)}, path)
    with zipfile.ZipFile(path) as source:
        entries = [(info, source.read(info)) for info in source.infolist()]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as target:
        for info, data in entries:
            target.writestr(info, data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
                            if info.filename.endswith("data.pkl") else data)
    return path


def test_a_release_with_numpy_values_beside_the_weights_loads(tmp_path):
    """The real Cnn14 files carry NumPy objects; the weights-only load accepts NumPy data (under
    NumPy 1's and 2's module names) and nothing else, and the embedder uses the weights only."""
    state = skeleton_state(CFG16)
    path = numpy1_release(tmp_path / "Cnn14_16k_mAP=0.438.pth", state)
    assert b"numpy.core.multiarray" in next(data for name, data in _zip_members(path) if name.endswith("data.pkl"))
    loaded = PannsEmbedder.from_checkpoint(path, sample_rate=16000)
    plain = PannsEmbedder.from_checkpoint(save_release(tmp_path / "plain.pth", state), sample_rate=16000)
    clip = make_clip(1.0, 16000)
    assert np.array_equal(loaded.embed([clip])[0].frames, plain.embed([clip])[0].frames)


def _zip_members(path: Path):
    import zipfile

    with zipfile.ZipFile(path) as archive:
        return [(name, archive.read(name)) for name in archive.namelist()]


# --- front-end math --------------------------------------------------------------------------


def _slaney_mel_formula(sr, n_fft, n_mels, fmin, fmax) -> np.ndarray:
    """Slaney's auditory-toolbox mel filters, written independently with np.interp triangles."""
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, np.log(6.4) / 27.0

    def to_mel(f):
        f = np.asarray(f, float)
        return np.where(f < min_log_hz, f / f_sp, min_log_mel + np.log(np.maximum(f, 1e-9) / min_log_hz) / logstep)

    def to_hz(m):
        return np.where(m < min_log_mel, m * f_sp, min_log_hz * np.exp(logstep * (m - min_log_mel)))

    edges = to_hz(np.linspace(to_mel(fmin), to_mel(fmax), n_mels + 2))
    freqs = np.linspace(0, sr / 2, n_fft // 2 + 1)
    bank = np.stack([np.interp(freqs, edges[i:i + 3], [0.0, 1.0, 0.0]) * 2.0 / (edges[i + 2] - edges[i])
                     for i in range(n_mels)], axis=1)
    return bank


@pytest.mark.parametrize("cfg", [CFG16, CFG32], ids=["16k", "32k"])
def test_mel_matrix_is_slaney(cfg):
    ours = slaney_mel_matrix(cfg.sample_rate, cfg.n_fft, cfg.n_mels, cfg.fmin, cfg.fmax)
    ref = _slaney_mel_formula(cfg.sample_rate, cfg.n_fft, cfg.n_mels, cfg.fmin, cfg.fmax)
    assert ours.shape == (cfg.n_fft // 2 + 1, 64) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-6 * ref.max())


@pytest.mark.parametrize("cfg", [CFG16, CFG32], ids=["16k", "32k"])
def test_mel_matrix_equals_librosa(cfg):
    librosa = pytest.importorskip("librosa", reason="librosa not installed (not a dependency)")
    ref = librosa.filters.mel(sr=cfg.sample_rate, n_fft=cfg.n_fft, n_mels=cfg.n_mels, fmin=cfg.fmin, fmax=cfg.fmax)
    np.testing.assert_array_equal(slaney_mel_matrix(cfg.sample_rate, cfg.n_fft, cfg.n_mels, cfg.fmin, cfg.fmax), ref.T)


def test_logmel_matches_float64_numpy():
    """Our torch front end (float32) against an rfft-based float64 computation of the same definition."""
    import scipy.signal

    cfg = CFG16
    with torch.device("meta"):
        model = Cnn14(cfg)
    model.spectrogram_extractor.to_empty(device="cpu")
    model.logmel_extractor.to_empty(device="cpu")
    real, imag = windowed_dft_kernels(cfg.n_fft)
    model.spectrogram_extractor.stft.conv_real.weight.data.copy_(torch.from_numpy(real))
    model.spectrogram_extractor.stft.conv_imag.weight.data.copy_(torch.from_numpy(imag))
    model.logmel_extractor.melW.data.copy_(torch.from_numpy(slaney_mel_matrix(16000, 512, 64, 50, 8000)))
    x = make_clip(0.5, 16000)
    with torch.inference_mode():
        ours = model.logmel(torch.from_numpy(x)[None])[0, 0].double().numpy()

    xp = np.pad(x.astype(np.float64), cfg.n_fft // 2, mode="reflect")
    n_frames = x.size // cfg.hop + 1
    idx = np.arange(cfg.n_fft)[None, :] + cfg.hop * np.arange(n_frames)[:, None]
    window = scipy.signal.get_window("hann", cfg.n_fft, fftbins=True)
    power = np.abs(np.fft.rfft(xp[idx] * window, axis=1)) ** 2
    ref = 10 * np.log10(np.maximum(power @ _slaney_mel_formula(16000, 512, 64, 50, 8000), 1e-10))
    assert ours.shape == ref.shape == (n_frames, 64)
    print(f"\nlog-mel vs float64 numpy: max {np.abs(ours - ref).max():.2e} dB")
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-3)  # dB; float32 rounding: 3.8e-5 dB measured


# --- parity with panns-inference --------------------------------------------------------------


@contextlib.contextmanager
def _isolated_modules(*prefixes: str):
    """Restore every sys.modules entry under these names on exit (imports inside stay private)."""
    def owned(name):
        return any(name == p or name.startswith(p + ".") for p in prefixes)

    saved = {k: v for k, v in sys.modules.items() if owned(k)}
    try:
        yield
    finally:
        for k in [k for k in sys.modules if owned(k)]:
            del sys.modules[k]
        sys.modules.update(saved)


def _librosa_stand_in() -> types.ModuleType:
    """Only what torchlibrosa calls while constructing Spectrogram / LogmelFilterBank."""
    import scipy.signal

    def pad_center(data, size):
        lpad = (size - len(data)) // 2
        return np.pad(data, (lpad, size - len(data) - lpad))

    stub = types.ModuleType("librosa")
    stub.filters = types.SimpleNamespace(
        get_window=lambda window, n, fftbins=True: scipy.signal.get_window(window, n, fftbins=fftbins),
        mel=lambda sr, n_fft, n_mels, fmin, fmax: slaney_mel_matrix(sr, n_fft, n_mels, fmin, fmax).T,
    )
    stub.util = types.SimpleNamespace(pad_center=pad_center)
    return stub


@pytest.fixture(scope="module")
def reference_cnn14():
    """panns_inference.models.Cnn14, imported from its file without the package __init__ (wget at import)."""
    panns = importlib.util.find_spec("panns_inference")
    tl = importlib.util.find_spec("torchlibrosa")
    if panns is None or tl is None:
        pytest.skip("reference not installed: pip install --no-deps panns-inference torchlibrosa")
    pytest.importorskip("matplotlib", reason="panns_inference.models imports matplotlib")
    try:
        importlib.import_module("librosa")
        have_librosa = True
    except Exception:  # absent, or present but unimportable (numba / numpy mismatch)
        have_librosa = False
    with _isolated_modules("librosa", "torchlibrosa", "_panns_reference"):
        if not have_librosa:  # torchlibrosa imports librosa at module level
            for k in [k for k in sys.modules if k == "librosa" or k.startswith("librosa.")]:
                del sys.modules[k]
            sys.modules["librosa"] = _librosa_stand_in()
        importlib.import_module("torchlibrosa.stft")
        importlib.import_module("torchlibrosa.augmentation")
        package = types.ModuleType("_panns_reference")
        package.__path__ = list(panns.submodule_search_locations)
        sys.modules["_panns_reference"] = package
        spec = importlib.util.spec_from_file_location(
            "_panns_reference.models", Path(panns.submodule_search_locations[0]) / "models.py")
        models = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = models
        spec.loader.exec_module(models)
    return models.Cnn14, have_librosa


def _reference_outputs(ref_class, cfg, state, wave):
    ref = ref_class(sample_rate=cfg.sample_rate, window_size=cfg.n_fft, hop_size=cfg.hop, mel_bins=cfg.n_mels,
                    fmin=cfg.fmin, fmax=cfg.fmax, classes_num=527)
    # the front end the reference builds itself (torchlibrosa's DFT basis and window; librosa's mel
    # matrix, or ours through the stand-in) against the one we build and check checkpoints against
    built = ref.state_dict()
    front_dev = {k.removesuffix(".weight").split(".")[-1]: _rel(built[k].double().numpy(), v)
                 for k, v in expected_front_end(cfg).items()}
    ref.load_state_dict(state, strict=True)  # our key names are the reference's, one for one
    ref.eval()
    x = torch.from_numpy(wave)[None]
    with torch.inference_mode():
        out = ref(x)
        logmel = ref.logmel_extractor(ref.spectrogram_extractor(x))[0, 0]
        # audioldm_eval's "logits": fc_audioset applied to the post-ReLU fc1 output
        logits = ref.fc_audioset(out["embedding"])
    return {"embedding": out["embedding"][0].double().numpy(), "clipwise": out["clipwise_output"][0].double().numpy(),
            "logits": logits[0].double().numpy(), "logmel": logmel.double().numpy(), "front_dev": front_dev}


def _rel(a, b) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


PARITY_RTOL = 1e-4  # relative to the tensor's peak; same float32 ops in the same order, see the report


def _check_parity(model, ref, wave, label):
    with torch.inference_mode():
        x = torch.from_numpy(wave)[None]
        logmel = model.logmel(x)[0, 0].double().numpy()
        emb, logits = model(x)
    emb, logits = emb[0].double().numpy(), logits[0].double().numpy()
    errors = {"logmel_dB_abs": float(np.abs(logmel - ref["logmel"]).max()),
              "embedding_rel": _rel(emb, ref["embedding"]),
              "logits_rel": _rel(logits, ref["logits"]),
              "sigmoid_abs": float(np.abs(1 / (1 + np.exp(-logits)) - ref["clipwise"]).max())}
    print(f"\nparity {label}: {errors}; |embedding| max {np.abs(emb).max():.3g}, "
          f"|logits| max {np.abs(logits).max():.3g}; reference-built front end vs ours (relative): {ref['front_dev']}")
    assert max(ref["front_dev"].values()) < 1e-6
    assert errors["logmel_dB_abs"] < 1e-3
    assert errors["embedding_rel"] < PARITY_RTOL and errors["logits_rel"] < PARITY_RTOL
    assert errors["sigmoid_abs"] < 1e-5


def test_parity_with_panns_inference_16k(emb16, reference_cnn14):
    ref_class, _ = reference_cnn14
    wave = make_clip(0.6, 16000, seed=3)
    ref = _reference_outputs(ref_class, CFG16, emb16.model.state_dict(), wave)
    _check_parity(emb16.model, ref, wave, "16k")
    (e,) = emb16.embed([wave])  # the embedder's public outputs are the same tensors
    np.testing.assert_allclose(e.frames[0], ref["embedding"], rtol=0, atol=PARITY_RTOL * np.abs(ref["embedding"]).max())
    np.testing.assert_allclose(e.logits[0], ref["logits"], rtol=0, atol=PARITY_RTOL * np.abs(ref["logits"]).max())


def test_parity_with_panns_inference_32k(emb16, reference_cnn14):
    ref_class, _ = reference_cnn14
    state = dict(emb16.model.state_dict())  # the same learned weights, with the 32 kHz front end
    state.update({k: torch.from_numpy(v) for k, v in expected_front_end(CFG32).items()})
    with torch.device("meta"):
        model = Cnn14(CFG32)
    model.to_empty(device="cpu")
    model.load_state_dict(state, strict=True)
    model.eval()
    wave = make_clip(0.5, 32000, seed=4)
    _check_parity(model, _reference_outputs(ref_class, CFG32, state, wave), wave, "32k")
