"""PaSST embedder: the release layout, parity with hear21passt, the toolkits' windowing, and scoring.

The reference is hear21passt's own model and front end (installed without dependencies, see the
Makefile: its declared timm / torchaudio pull torchvision and torchaudio builds that do not
import with this torch). Its modules are loaded with stand-ins for what they import but never
use at inference: timm's initialisation helpers (the weights are then overwritten by the shared
state dict) and torchaudio's SpecAugment masks (identity in eval mode). torchaudio's Kaldi mel
filter function is the one stand-in that computes something; it is written here from Kaldi's
definition, independently of the transformers implementation that siren_bench uses.
"""

from __future__ import annotations

import contextlib
import io
import sys
import types
from functools import partial

import numpy as np
import pytest
import soundfile as sf
import torch
from torch import nn

from siren_bench.cache import ContentCache
from siren_bench.data.manifest import write_manifest
from siren_bench.embedders.passt import (
    RELEASE_FILE, Passt, PasstConfig, PasstEmbedder, PasstFrontEnd, kaldi_mel_filters, window_starts,
)
from siren_bench.evaluation.clipsets import folder_clips, manifest_clips
from siren_bench.evaluation.embedding import EmbedderLoader
from siren_bench.evaluation.score import score_sets
from siren_bench.io import sha256_file
from siren_bench.recipes import get_recipe
from siren_bench.weights import CheckpointError

SR = 32000
SMALL = PasstConfig(depth=2)


def kaldi_get_mel_banks(num_bins, window_length_padded, sample_freq, low_freq, high_freq, vtln_low, vtln_high,
                        vtln_warp_factor):
    """Kaldi's MelBanks (mel-banks.cc) without VTLN: triangles in mel = 1127 ln(1 + f / 700)."""
    assert vtln_warp_factor == 1.0
    mel = lambda f: 1127.0 * np.log(1.0 + np.asarray(f, dtype=np.float64) / 700.0)  # noqa: E731
    if high_freq <= 0:
        high_freq += sample_freq / 2
    low, delta = mel(low_freq), (mel(high_freq) - mel(low_freq)) / (num_bins + 1)
    left = low + delta * np.arange(num_bins)[:, None]
    m = mel(sample_freq / window_length_padded * np.arange(window_length_padded // 2))[None]
    banks = np.maximum(0.0, np.minimum((m - left) / delta, (left + 2 * delta - m) / delta))
    return torch.from_numpy(banks).float(), None


@pytest.fixture(scope="module")
def hear21passt():
    """hear21passt's PaSST class and AugmentMelSTFT, with stand-ins for its unused imports."""
    pytest.importorskip("hear21passt", reason="install with: pip install --no-deps hear21passt==0.0.26 (make test does)")
    helpers = types.ModuleType("hear21passt.models.helpers.vit_helpers")
    helpers.trunc_normal_ = nn.init.trunc_normal_
    helpers.DropPath = lambda p: nn.Identity()
    helpers.update_default_cfg_and_kwargs = helpers.build_model_with_cfg = None
    torchaudio = types.ModuleType("torchaudio")
    torchaudio.compliance = types.SimpleNamespace(kaldi=types.SimpleNamespace(get_mel_banks=kaldi_get_mel_banks))
    torchaudio.transforms = types.SimpleNamespace(FrequencyMasking=lambda *a, **k: nn.Identity(),
                                                  TimeMasking=lambda *a, **k: nn.Identity())
    saved = {k: sys.modules.get(k) for k in (helpers.__name__, "torchaudio", "hear21passt.models.passt",
                                             "hear21passt.models.preprocess")}
    sys.modules.update({helpers.__name__: helpers, "torchaudio": torchaudio})
    sys.modules.pop("hear21passt.models.passt", None)
    sys.modules.pop("hear21passt.models.preprocess", None)
    try:
        from hear21passt.models.passt import PaSST
        from hear21passt.models.preprocess import AugmentMelSTFT
        yield PaSST, AugmentMelSTFT
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v


def release_keys_and_shapes() -> dict[str, tuple[int, ...]]:
    """passt-s-f128-p16-s10-ap.476-swa.pt, written out from the architecture's published facts."""
    d = 768
    shapes = {"cls_token": (1, 1, d), "dist_token": (1, 1, d), "new_pos_embed": (1, 2, d),
              "freq_new_pos_embed": (1, d, 12, 1), "time_new_pos_embed": (1, d, 1, 99),
              "patch_embed.proj.weight": (d, 1, 16, 16), "patch_embed.proj.bias": (d,),
              "norm.weight": (d,), "norm.bias": (d,), "head.0.weight": (d,), "head.0.bias": (d,),
              "head.1.weight": (527, d), "head.1.bias": (527,), "head_dist.weight": (527, d), "head_dist.bias": (527,)}
    for i in range(12):
        b = f"blocks.{i}."
        shapes.update({b + "norm1.weight": (d,), b + "norm1.bias": (d,), b + "norm2.weight": (d,), b + "norm2.bias": (d,),
                       b + "attn.qkv.weight": (3 * d, d), b + "attn.qkv.bias": (3 * d,),
                       b + "attn.proj.weight": (d, d), b + "attn.proj.bias": (d,),
                       b + "mlp.fc1.weight": (4 * d, d), b + "mlp.fc1.bias": (4 * d,),
                       b + "mlp.fc2.weight": (d, 4 * d), b + "mlp.fc2.bias": (d,)})
    return shapes


def _random_state(cfg: PasstConfig = PasstConfig(), seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    model = Passt(cfg)
    for p in (model.cls_token, model.dist_token, model.new_pos_embed, model.freq_new_pos_embed, model.time_new_pos_embed):
        nn.init.normal_(p, std=0.02)
    return model.state_dict()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("passt") / RELEASE_FILE
    torch.save(_random_state(), path)
    return path


@pytest.fixture(scope="module")
def embedder(checkpoint):
    return PasstEmbedder.from_checkpoint(checkpoint, framing="chunks_10s")


def test_state_dict_is_the_release_layout():
    with torch.device("meta"):
        model = Passt()
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert shapes == release_keys_and_shapes()
    assert 86.0e6 < sum(p.numel() for p in model.parameters()) < 86.5e6  # PaSST-S: a DeiT-base, ~86 M


def test_model_matches_hear21passt_with_identical_weights(hear21passt):
    PaSST, _ = hear21passt
    torch.manual_seed(0)
    with contextlib.redirect_stdout(io.StringIO()):  # hear21passt prints shapes on its first forward
        reference = PaSST(img_size=(128, 998), patch_size=16, stride=10, in_chans=1, num_classes=527, embed_dim=768,
                          depth=SMALL.depth, num_heads=12, distilled=True).eval()
        ours = Passt(SMALL).eval()
        ours.load_state_dict(reference.state_dict(), strict=True)
        for frames in (1001, 500):  # a full 10 s input, and a shorter one that cuts the time table
            mel = torch.randn(2, 1, 128, frames)
            with torch.no_grad(), pytest.warns(UserWarning, match="Input image size"):
                expected = reference(mel)
            got = ours(mel)
            for e, g in zip(expected, got):  # float32 attention in a different kernel: ~1e-6
                torch.testing.assert_close(g, e, rtol=0, atol=1e-4)


def test_front_end_matches_hear21passt_eval_mode(hear21passt):
    _, AugmentMelSTFT = hear21passt
    with contextlib.redirect_stdout(io.StringIO()):
        reference = AugmentMelSTFT(n_mels=128, sr=SR, win_length=800, hopsize=320, n_fft=1024, freqm=48, timem=192,
                                   htk=False, fmin=0.0, fmax=None, norm=1, fmin_aug_range=10, fmax_aug_range=2000).eval()
    assert reference.fmax == SMALL.fmax
    wave = 0.3 * torch.randn(2, 3 * SR, generator=torch.Generator().manual_seed(1))
    stft = torch.stft
    torch.stft = partial(stft, return_complex=False)  # the reference predates return_complex (as audiocraft patches it)
    try:
        expected = reference(wave)
    finally:
        torch.stft = stft
    got = PasstFrontEnd(SMALL)(wave)
    assert got.shape == expected.shape == (2, 128, 300)
    # log(mel + 1e-5) of float32 powers; the filters differ by float32 rounding (~1e-7 relative)
    torch.testing.assert_close(got, expected, rtol=0, atol=5e-4)


def test_kaldi_filters_follow_kaldis_definition():
    ours = kaldi_mel_filters(SMALL)
    expected, _ = kaldi_get_mel_banks(128, 1024, SR, 0.0, 15000.0, 100.0, -500.0, 1.0)
    assert ours.shape == (513, 128) and not ours[-1].any()
    np.testing.assert_allclose(ours[:-1], expected.numpy().T, atol=1e-6)


@pytest.mark.parametrize("seconds, framing, expected", [
    (4.0, "windows_10s_hop5s", [(0, True)]),  # padded to 10 s
    (1.0, "windows_10s_hop5s", [(0, False)]),  # 1.5 s or less: passed unpadded (the quirk)
    (10.0, "windows_10s_hop5s", [(0, False)]),
    (15.0, "windows_10s_hop5s", [(0, False), (5 * SR, False)]),
    (17.0, "windows_10s_hop5s", [(0, False), (5 * SR, False), (10 * SR, True)]),
    (4.0, "chunks_10s", [(0, False)]),
    (20.1, "chunks_10s", [(0, False)] + [(10 * SR, False)]),  # the 0.1 s tail is dropped
    (25.0, "chunks_10s", [(0, False), (10 * SR, False), (20 * SR, False)]),
])
def test_window_starts_follow_each_toolkit(seconds, framing, expected):
    assert window_starts(int(seconds * SR), framing) == expected


def test_embeddings_are_the_models_outputs_per_window(checkpoint):
    embedder = PasstEmbedder.from_checkpoint(checkpoint, framing="windows_10s_hop5s")
    wave = 0.2 * np.random.default_rng(0).standard_normal(15 * SR)
    (out,) = embedder.embed([wave])
    assert out.frames.shape == (2, 768) and out.logits.shape == (2, 527) and out.frames.dtype == np.float64
    with torch.no_grad():
        second = torch.as_tensor(wave[5 * SR:], dtype=torch.float32)[None]
        logits, features = embedder.model(embedder.front_end(second)[:, None])
    np.testing.assert_allclose(out.logits[1], logits[0].double().numpy(), rtol=0, atol=1e-6)
    np.testing.assert_allclose(out.frames[1], features[0].double().numpy(), rtol=0, atol=1e-6)


def test_bad_inputs_are_refused(embedder):
    with pytest.raises(ValueError, match="clip 1: .* give no PaSST window"):
        embedder.embed([np.zeros(SR), np.zeros(1000)])
    with pytest.raises(ValueError, match="clip 0: wave contains NaN"):
        embedder.embed([np.full(SR, np.nan)])
    with pytest.raises(ValueError, match="mono 1-D float"):
        embedder.embed([np.zeros((2, SR))])
    with pytest.raises(ValueError, match="unknown PaSST framing"):
        window_starts(SR, "whole_clip")


def test_wrong_checkpoints_are_refused(tmp_path, checkpoint):
    with pytest.raises(CheckpointError, match="does not match the pinned"):
        PasstEmbedder.from_checkpoint(checkpoint, expected_sha256="0" * 64)
    state = _random_state(SMALL)
    torch.save(state, tmp_path / "small.pt")
    with pytest.raises(CheckpointError, match=r"small\.pt: weights do not fit the model: 120 missing"):
        PasstEmbedder.from_checkpoint(tmp_path / "small.pt")
    (tmp_path / "cut.pt").write_bytes(checkpoint.read_bytes()[:4096])
    with pytest.raises(CheckpointError, match=r"cut\.pt: cannot be loaded as a weights-only"):
        PasstEmbedder.from_checkpoint(tmp_path / "cut.pt")


@pytest.mark.parametrize("recipe", ["audiocraft", "stable_audio_metrics"])
def test_preset_kl_scores_with_passt(tmp_path, checkpoint, recipe):
    """The two presets' KL runs end to end. Identical sets score the toolkits' eps quirk, not 0:
    sum_c p_c (log p_c - log(p_c + 1e-6)) ~ -527e-6 when every p_c >> 1e-6."""
    rng = np.random.default_rng(3)
    rows = []
    for i in range(2):  # two clips a set: each is a full-size PaSST forward over a padded 10 s window
        wave = (0.3 * rng.standard_normal(2 * 16000)).clip(-0.9, 0.9)
        tone = 0.5 * np.sin(2 * np.pi * (300 + 100 * i) * np.arange(2 * 16000) / 16000)
        for folder in ("reference/audio", "generated", "same"):
            (tmp_path / folder).mkdir(parents=True, exist_ok=True)
            sf.write(tmp_path / folder / f"c{i}.wav", tone if folder == "generated" else wave, 16000, subtype="FLOAT")
        path = tmp_path / "reference/audio" / f"c{i}.wav"
        rows.append({"clip_id": f"c{i}", "split": "test", "audio": f"audio/c{i}.wav", "sha256": sha256_file(path),
                     "caption": "noise", "sample_rate": 16000, "num_samples": len(wave)})
    write_manifest(tmp_path / "reference/manifest.csv", rows)
    spec = get_recipe(recipe)
    loader = EmbedderLoader(checkpoint.parent)
    reference = manifest_clips(tmp_path / "reference/manifest.csv")
    same = score_sets(folder_clips(tmp_path / "same"), reference, spec, loader, ContentCache(tmp_path / "cache"),
                      n_boot=10, metrics=["kl"])
    assert same.results["metrics"]["kl"]["value"] == pytest.approx(-527e-6, rel=0.01)
    other = score_sets(folder_clips(tmp_path / "generated"), reference, spec, loader, ContentCache(tmp_path / "cache"),
                       n_boot=10, metrics=["kl"])
    assert other.results["metrics"]["kl"]["value"] > 1e-4
