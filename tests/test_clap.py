"""LAION-CLAP embedders: HF folders and original checkpoints load (or are refused by name), the
original key layout maps completely, embeddings match the original architecture's, and the audio
preprocessing (int16 round trip, repeat-pad, deterministic crop) does what the docs say.

The fixture tests/fixtures/clap_original_layout.json holds facts read off the original LAION-CLAP
code (github.com/LAION-AI/CLAP, src/laion_clap, instantiated with random weights outside this
repository): the state-dict layout of the HTSAT-tiny + roberta-base model, the same layout at
reduced widths (same key names), and the embeddings the original model code computes for the
random-weight checkpoint that `original_state` below writes in that reduced layout. Nothing of
that code is part of this project; only its outputs are recorded.

Models here are small (HTSAT width 16, text width 128) so that the whole module runs in seconds.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import ClapConfig, ClapModel

from siren_bench.embedders.base import Embedding
from siren_bench.embedders.clap import (
    CLIP_SAMPLES, ClapEmbedders, clap_config_from_original_state, crop_offset, fit_to_clip, front_end_tensors,
    int16_round_trip, map_original_clap_state, preprocess_clip, shifted_window_mask, strip_module_prefix,
)
from siren_bench.weights import CheckpointError
from tests.conftest import REPO

FIXTURE_PATH = REPO / "tests" / "fixtures" / "clap_original_layout.json"
SR = 48_000


@functools.cache
def fixture() -> dict:
    return json.loads(FIXTURE_PATH.read_text())


# --------------------------------------------------------------------------- shared helpers
# (also imported by the script that recorded the fixture, so both sides use the same inputs)


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2 / RoBERTa byte-level BPE alphabet: printable bytes stand for themselves, the rest are
    moved to code points from 256 up."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


TINY_MERGES = ["Ġ d", "o g", "Ġd og", "Ġ a", "Ġ b", "a r", "ar k", "Ġb ark", "Ġ c", "a t", "Ġc at", "i n", "Ġ r", "Ġr a", "Ġra in"]


def write_tiny_tokenizer(folder: Path) -> Path:
    """A RoBERTa-style byte-level BPE tokenizer small enough to write in a test (~280 tokens)."""
    folder.mkdir(parents=True, exist_ok=True)
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    for ch in sorted(set(_bytes_to_unicode().values())):
        vocab.setdefault(ch, len(vocab))
    for merge in TINY_MERGES:
        vocab.setdefault(merge.replace(" ", ""), len(vocab))
    vocab["<mask>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(TINY_MERGES) + "\n")
    return folder


CAPTIONS = ["a dog barks", "rain on a tin roof while a cat meows", "a"]


def reference_waves() -> list[np.ndarray]:
    """Clips at 48 kHz: shorter than 10 s (repeat-padded), exactly 10 s, one with peaks above 1."""
    rng = np.random.default_rng(7)

    def clip(seconds, freq, amp):
        t = np.arange(int(seconds * SR)) / SR
        return (amp * np.sin(2 * np.pi * freq * t) * (1 + 0.5 * np.sin(2 * np.pi * 1.3 * t))
                + 0.05 * rng.standard_normal(t.size)).astype(np.float32)

    return [clip(3.3, 440.0, 0.3), clip(10.0, 1250.0, 1.2), clip(0.5, 97.0, 0.5), clip(10.0, 3000.0, 0.05)]


def relative_position_index(window: int) -> torch.Tensor:
    """Swin's pairwise relative-position index for a window x window patch grid."""
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window - 1)
    return rel[:, :, 0] * (2 * window - 1) + rel[:, :, 1]


def original_state(layout: dict[str, list[int]], seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights in the original layout; the frozen tensors carry their true values (front
    end, index buffers, shifted-window masks), as in a real checkpoint."""
    g = torch.Generator().manual_seed(seed)
    front = front_end_tensors()
    state = {}
    for key, shape in layout.items():
        if key in front:
            value = torch.from_numpy(front[key])
        elif key.endswith("relative_position_index"):
            value = relative_position_index(int(round((shape[0]) ** 0.5)))
        elif key.endswith("attn_mask"):
            layer = int(key.split(".layers.")[1].split(".")[0])
            side = 64 // 2 ** layer
            value = shifted_window_mask(side, side, 8, 4)
        elif key.endswith("position_ids"):
            value = torch.arange(shape[1])[None]
        elif key.endswith("num_batches_tracked"):
            value = torch.tensor(1000)
        elif key.endswith("running_var"):
            value = torch.rand(shape, generator=g) + 0.5
        elif key.endswith("running_mean"):
            value = torch.randn(shape, generator=g) * 0.1
        elif key.startswith("logit_scale"):
            value = torch.tensor(float(np.log(1 / 0.07)))
        elif len(shape) == 1 and key.endswith("weight"):  # LayerNorm / BatchNorm scales
            value = 1 + 0.1 * torch.randn(shape, generator=g)
        elif len(shape) >= 2:
            value = torch.randn(shape, generator=g) / float(np.prod(shape[1:])) ** 0.5
        else:
            value = torch.randn(shape, generator=g) * 0.02
        assert list(value.shape) == list(shape), key
        state[key] = value
    return state


def _save_original(path: Path, state: dict[str, torch.Tensor], prefix: str = "module.") -> Path:
    torch.save({"epoch": 45, "name": "test", "state_dict": {prefix + k: v for k, v in state.items()}}, path)
    return path


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The models here are tiny: one thread is ~20x faster than two on a shared 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory) -> Path:
    return write_tiny_tokenizer(tmp_path_factory.mktemp("tok"))


@pytest.fixture(scope="module")
def reduced_state() -> dict[str, torch.Tensor]:
    return original_state(fixture()["reduced_layout"])


@pytest.fixture(scope="module")
def original_ckpt(tmp_path_factory, reduced_state) -> Path:
    return _save_original(tmp_path_factory.mktemp("clap") / "630k-audioset-test.pt", reduced_state)


@pytest.fixture(scope="module")
def clap_from_original(original_ckpt, tokenizer_dir) -> ClapEmbedders:
    return ClapEmbedders.from_original_checkpoint(original_ckpt, tokenizer_dir=tokenizer_dir)


def small_clap_config() -> ClapConfig:
    return ClapConfig(
        text_config=dict(vocab_size=300, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                         max_position_embeddings=130, layer_norm_eps=1e-5),
        audio_config=dict(patch_embeds_hidden_size=8, depths=[1, 1, 2, 1], num_attention_heads=[1, 1, 2, 2], hidden_size=64),
        projection_dim=24,
    )


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("clap_hf")
    torch.manual_seed(0)
    ClapModel(small_clap_config()).save_pretrained(folder)
    write_tiny_tokenizer(folder)
    return folder


# --------------------------------------------------------------------------- HF folder


def test_hf_folder_embeds_audio_and_text(hf_folder):
    clap = ClapEmbedders.from_hf_folder(hf_folder)
    waves = reference_waves()[:3]
    out = clap.embed(waves)
    assert len(out) == 3 and all(isinstance(e, Embedding) and e.logits is None for e in out)
    for e in out:
        assert e.frames.shape == (1, 24) and e.frames.dtype == np.float64
        assert abs(np.linalg.norm(e.frames) - 1) < 1e-12
    text = clap.embed_text(CAPTIONS)
    assert text.shape == (3, 24) and text.dtype == np.float64
    np.testing.assert_allclose(np.linalg.norm(text, axis=1), 1, atol=1e-12)
    assert clap.info.sample_rate == 48_000 and clap.info.dim == 24 and clap.info.n_classes is None
    # deterministic: a second load, another batch composition, the same numbers
    again = ClapEmbedders.from_hf_folder(hf_folder, batch_size=1)
    for a, b in zip(out, again.embed(waves)):
        np.testing.assert_allclose(a.frames, b.frames, atol=1e-6)
    np.testing.assert_array_equal(clap.embed_text(CAPTIONS), text)
    assert again.info.weights_sha256 == clap.info.weights_sha256
    assert clap.text_info.weights_sha256 != clap.info.weights_sha256
    # the recipe is part of the key: another crop rule, another hash
    assert ClapEmbedders.from_hf_folder(hf_folder, crop="start").info.weights_sha256 != clap.info.weights_sha256


def test_hf_folder_hash_names_the_content_not_the_path(hf_folder, tmp_path):
    import shutil
    copy = tmp_path / "elsewhere"
    shutil.copytree(hf_folder, copy)
    a, b = ClapEmbedders.from_hf_folder(hf_folder), ClapEmbedders.from_hf_folder(copy)
    assert (a.info.weights_sha256, a.text_info.weights_sha256) == (b.info.weights_sha256, b.text_info.weights_sha256)
    (copy / "merges.txt").write_text("\n".join((copy / "merges.txt").read_text().splitlines()[:-1]) + "\n")  # another tokenizer
    c = ClapEmbedders.from_hf_folder(copy)
    assert c.info.weights_sha256 == a.info.weights_sha256 and c.text_info.weights_sha256 != a.text_info.weights_sha256
    (copy / "merges.txt").write_text((copy / "merges.txt").read_text() + "Ġ t\n")  # merges into a token not in vocab.json
    with pytest.raises(CheckpointError, match="cannot load the RoBERTa tokenizer") as info:
        ClapEmbedders.from_hf_folder(copy)
    assert str(copy) in str(info.value)


def test_hf_folder_missing_a_tensor_is_refused_by_name(hf_folder, tmp_path):
    from safetensors.torch import load_file, save_file

    import shutil
    folder = tmp_path / "broken"
    shutil.copytree(hf_folder, folder)
    weights = load_file(folder / "model.safetensors")
    del weights["audio_projection.linear2.weight"]
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="missing keys") as info:
        ClapEmbedders.from_hf_folder(folder)
    assert str(folder) in str(info.value)


def test_hf_folder_needs_its_tokenizer_and_an_unfused_model(hf_folder, tmp_path):
    import shutil
    folder = tmp_path / "no_tokenizer"
    shutil.copytree(hf_folder, folder)
    (folder / "vocab.json").unlink()
    with pytest.raises(CheckpointError, match="no RoBERTa tokenizer files") as info:
        ClapEmbedders.from_hf_folder(folder)
    assert str(folder) in str(info.value)

    fused = tmp_path / "fused"
    config = small_clap_config()
    config.audio_config.enable_fusion = True
    config.audio_config.fusion_type = "aff_2d"
    ClapModel(config).save_pretrained(fused)
    write_tiny_tokenizer(fused)
    with pytest.raises(CheckpointError, match="fusion"):
        ClapEmbedders.from_hf_folder(fused)

    with pytest.raises(CheckpointError, match="does not match the pinned"):
        ClapEmbedders.from_hf_folder(hf_folder, expected_sha256="0" * 64)


def test_hf_folder_with_another_front_end_is_refused(hf_folder, tmp_path):
    import shutil
    folder = tmp_path / "other_front_end"
    shutil.copytree(hf_folder, folder)
    (folder / "preprocessor_config.json").write_text(json.dumps({"feature_extractor_type": "ClapFeatureExtractor",
                                                                 "sampling_rate": 48000, "frequency_min": 0}))
    with pytest.raises(CheckpointError, match="frequency_min=0"):
        ClapEmbedders.from_hf_folder(folder)


# --------------------------------------------------------------------------- original layout


def test_full_size_original_layout_maps_onto_clap_model_key_for_key():
    """HTSAT-tiny + roberta-base (630k-audioset-best.pt's architecture), shapes only (meta
    tensors): the inferred config is the published one and every mapped key and shape is
    ClapModel's, none missing, none left over."""
    layout = fixture()["htsat_tiny_roberta_base_layout"]
    front = front_end_tensors()
    state = {k: torch.from_numpy(front[k]) if k in front else torch.empty(shape, device="meta") for k, shape in layout.items()}
    config = clap_config_from_original_state(state, Path("full.pt"))
    audio, text = config.audio_config, config.text_config
    assert (audio.patch_embeds_hidden_size, list(audio.depths), list(audio.num_attention_heads), audio.window_size, audio.hidden_size) == (96, [2, 2, 6, 2], [4, 8, 16, 32], 8, 768)
    assert (text.vocab_size, text.hidden_size, text.num_hidden_layers, text.num_attention_heads, text.intermediate_size, text.max_position_embeddings) == (50265, 768, 12, 12, 3072, 514)
    assert config.projection_dim == 512
    mapped, constants = map_original_clap_state(state, Path("full.pt"))
    assert sorted(constants) == sorted(list(front) + [k for k in layout if k.endswith("attn_mask")])
    with torch.device("meta"):
        model = ClapModel(config)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in mapped.items()}
    filled = {"text_model.embeddings.token_type_ids"}  # never saved in original checkpoints
    assert set(expected) - set(got) == filled
    assert set(got) <= set(expected)
    assert all(got[k] == expected[k] for k in got)


def test_reduced_layout_has_the_original_key_names():
    full, reduced = fixture()["htsat_tiny_roberta_base_layout"], fixture()["reduced_layout"]
    assert set(full) == set(reduced)
    assert len(full) == 418  # 417 tensors of the model plus text_branch.embeddings.position_ids


def test_original_checkpoint_loads_every_key(original_ckpt, reduced_state, clap_from_original):
    model = clap_from_original.model
    sd = model.state_dict()
    # the qkv split: rows [0, C) are the query, [C, 2C) the key, [2C, 3C) the value
    qkv = reduced_state["audio_branch.layers.2.blocks.3.attn.qkv.weight"]
    c = qkv.shape[1]
    prefix = "audio_model.audio_encoder.layers.2.blocks.3.attention.self."
    for i, part in enumerate(("query", "key", "value")):
        assert torch.equal(sd[prefix + part + ".weight"], qkv[i * c:(i + 1) * c])
    assert torch.equal(sd["audio_model.audio_encoder.batch_norm.running_var"], reduced_state["audio_branch.bn0.running_var"])
    assert torch.equal(sd["text_projection.linear2.weight"], reduced_state["text_projection.2.weight"])
    assert torch.equal(sd["audio_model.audio_encoder.layers.1.blocks.0.layernorm_after.bias"], reduced_state["audio_branch.layers.1.blocks.0.norm2.bias"])
    assert clap_from_original.info.dim == 512
    assert clap_from_original.checkpoint_sha256 == __import__("siren_bench.io", fromlist=["sha256_file"]).sha256_file(original_ckpt)


def test_original_checkpoint_matches_the_original_architecture(clap_from_original):
    """Same weights, same clips and captions: the embeddings the original LAION-CLAP code gave
    (fixture). Key names and shapes alone cannot catch two same-shaped tensors swapped."""
    ref = fixture()["reference"]
    audio = np.concatenate([e.frames for e in clap_from_original.embed(reference_waves())])
    text = clap_from_original.embed_text(CAPTIONS)
    ref_audio, ref_text = np.asarray(ref["audio"]), np.asarray(ref["text"])
    cos_audio = np.sum(audio * ref_audio, axis=1) / np.linalg.norm(ref_audio, axis=1)
    cos_text = np.sum(text * ref_text, axis=1) / np.linalg.norm(ref_text, axis=1)
    # measured: 1 - cosine ~2e-8, max |difference| ~6e-8 (audio) and ~1.3e-7 (text); swapping one
    # block's query and key weights moves the audio embeddings by 1.4e-3, so the bounds catch it
    assert cos_audio.min() > 1 - 1e-6, cos_audio
    assert cos_text.min() > 1 - 1e-6, cos_text
    np.testing.assert_allclose(audio, ref_audio, atol=1e-5)
    np.testing.assert_allclose(text, ref_text, atol=1e-5)
    # random weights still separate the inputs: the comparison is not between constant outputs
    assert (audio @ audio.T)[np.triu_indices(4, 1)].max() < 0.995
    assert (text @ text.T)[np.triu_indices(3, 1)].max() < 0.995


def test_original_and_hf_paths_agree(clap_from_original, tokenizer_dir, tmp_path):
    """The mapped model saved as an HF folder loads through the other path with equal outputs."""
    folder = tmp_path / "converted"
    clap_from_original.model.save_pretrained(folder)
    write_tiny_tokenizer(folder)
    hf = ClapEmbedders.from_hf_folder(folder)
    waves = reference_waves()[:2]
    for a, b in zip(clap_from_original.embed(waves), hf.embed(waves)):
        np.testing.assert_array_equal(a.frames, b.frames)
    np.testing.assert_array_equal(clap_from_original.embed_text(CAPTIONS), hf.embed_text(CAPTIONS))


def test_module_prefix_is_optional_but_not_mixed(reduced_state, tokenizer_dir, tmp_path):
    plain = _save_original(tmp_path / "plain.pt", reduced_state, prefix="")
    ClapEmbedders.from_original_checkpoint(plain, tokenizer_dir=tokenizer_dir)
    with pytest.raises(CheckpointError, match="some keys carry"):
        strip_module_prefix({"module.a": torch.zeros(1), "b": torch.zeros(1)}, Path("x.pt"))


def _altered(state: dict, drop=(), add=None, change=None) -> dict:
    out = {k: v for k, v in state.items() if k not in drop}
    out.update(add or {})
    for key, fn in (change or {}).items():
        out[key] = fn(out[key])
    return out


@pytest.mark.parametrize(
    "alter, problem",
    [
        (lambda s: _altered(s, add={"audio_branch.patch_embed.mel_conv2d.weight": torch.zeros(16, 1, 4, 12)}), "fusion"),
        (lambda s: _altered(s, add={"audio_branch.layers.0.blocks.0.attn.extra": torch.zeros(3)}), "unexpected key.*attn.extra"),
        (lambda s: _altered(s, drop=["audio_branch.layers.3.blocks.1.mlp.fc2.bias"]), "missing.*layers.3.blocks.1.output.dense.bias"),
        (lambda s: _altered(s, change={"audio_branch.logmel_extractor.melW": lambda v: v * 1.01}), "differs from the LAION front end"),
        (lambda s: _altered(s, change={"audio_branch.layers.0.blocks.1.attn_mask": lambda v: torch.zeros_like(v)}), "not the shifted-window mask"),
        (lambda s: _altered(s, change={"audio_branch.layers.0.blocks.0.attn.relative_position_index": lambda v: v.flip(0)}), "not the index buffer"),
        (lambda s: _altered(s, change={"audio_projection.2.weight": lambda v: v[:, :100]}), "wrong shape"),
        (lambda s: {k: v for k, v in s.items() if not k.startswith("text_branch.")}, "no text_branch"),
    ],
    ids=["fusion", "unexpected", "missing", "front-end", "mask", "index-buffer", "shape", "no-text-tower"],
)
def test_bad_original_checkpoints_are_refused_by_name(reduced_state, tokenizer_dir, tmp_path, alter, problem):
    path = _save_original(tmp_path / "bad.pt", alter(reduced_state))
    with pytest.raises(CheckpointError, match=problem) as info:
        ClapEmbedders.from_original_checkpoint(path, tokenizer_dir=tokenizer_dir)
    assert str(path) in str(info.value)


def test_original_checkpoint_needs_a_local_tokenizer(original_ckpt, tmp_path):
    with pytest.raises(CheckpointError, match="pass tokenizer_dir"):
        ClapEmbedders.from_original_checkpoint(original_ckpt)
    with pytest.raises(CheckpointError, match="tokenizer folder not found"):
        ClapEmbedders.from_original_checkpoint(original_ckpt, tokenizer_dir=tmp_path / "nowhere")


def test_front_end_tensors_match_torchlibrosa():
    """Our STFT basis and mel matrix against values read off torchlibrosa/librosa (fixture)."""
    probe = fixture()["front_end_probe"]
    ours = front_end_tensors()
    for key, facts in probe.items():
        value = ours[key].astype(np.float64)
        np.testing.assert_allclose(value.sum(axis=tuple(range(1, value.ndim))) if value.ndim > 1 else value, facts["row_sums"], atol=1e-4)
        for index, expected in facts["samples"]:
            assert abs(value[tuple(index)] - expected) < 1e-6, (key, index)


def test_shifted_window_mask_matches_transformers():
    from transformers.models.clap.modeling_clap import ClapAudioLayer

    config = small_clap_config().audio_config
    layer = ClapAudioLayer(config, dim=8, input_resolution=(16, 16), num_heads=1, shift_size=4)
    hf = layer.get_attn_mask(16, 16, dtype=torch.float32, device="cpu")
    assert torch.equal(shifted_window_mask(16, 16, 8, 4), hf)


# --------------------------------------------------------------------------- preprocessing


def test_int16_round_trip():
    x = np.array([0.5, -0.5, 1.5, -1.5, 1e-5, -1e-5, 0.999999, 0.25], dtype=np.float64)
    y = int16_round_trip(x)
    assert y.dtype == np.float32
    expected = np.array([16383, -16383, 32767, -32767, 0, 0, 32766, 8191]) / 32767.0  # truncation toward zero
    np.testing.assert_array_equal(y, expected.astype(np.float32))
    z = preprocess_clip(np.full(CLIP_SAMPLES, 0.3))  # applied by the recipe
    assert z[0] == np.float32(int(np.float32(0.3) * np.float32(32767)) / 32767.0) and z[0] != np.float32(0.3)


def test_repeat_pad_uses_whole_repeats_then_zeros():
    wave = np.arange(1, 4 * SR + 1, dtype=np.float32)  # 4 s
    out = fit_to_clip(wave)
    assert out.shape == (CLIP_SAMPLES,)
    np.testing.assert_array_equal(out[:4 * SR], wave)
    np.testing.assert_array_equal(out[4 * SR:8 * SR], wave)
    assert not out[8 * SR:].any()  # 2 s of zeros, not a third partial repeat
    short = np.ones(7)
    out = fit_to_clip(short)
    assert out[:CLIP_SAMPLES // 7 * 7].all() and not out[CLIP_SAMPLES // 7 * 7:].any()
    half = np.arange(1, CLIP_SAMPLES // 2 + 1, dtype=np.float32)
    np.testing.assert_array_equal(fit_to_clip(half), np.tile(half, 2))  # divides evenly: no zeros
    with pytest.raises(ValueError, match="empty"):
        fit_to_clip(np.zeros(0))


def test_long_clips_are_cropped_deterministically():
    wave = np.arange(CLIP_SAMPLES + 1001, dtype=np.float32)
    assert crop_offset(wave, crop="center") == 500 and fit_to_clip(wave)[0] == 500
    assert crop_offset(wave, crop="start") == 0
    offsets = {crop_offset(wave, crop="random", crop_seed=s) for s in range(20)}
    assert len(offsets) > 10 and all(0 <= o <= 1001 for o in offsets)  # spread like the original's randint
    assert crop_offset(wave, crop="random", crop_seed=3) == crop_offset(wave.copy(), crop="random", crop_seed=3)
    other = wave.copy()
    other[5] += 1
    assert len({crop_offset(w, crop="random", crop_seed=3) for w in (wave, other, wave[::-1].copy())}) > 1
    with pytest.raises(ValueError, match="crop must be one of"):
        crop_offset(wave, crop="middle")


def test_long_clip_embeds_as_its_centre_window(hf_folder):
    clap = ClapEmbedders.from_hf_folder(hf_folder)
    rng = np.random.default_rng(1)
    long = (0.2 * rng.standard_normal(CLIP_SAMPLES + 9600)).astype(np.float32)
    centre = long[4800:4800 + CLIP_SAMPLES]
    a, b = clap.embed([long, centre])
    np.testing.assert_array_equal(a.frames, b.frames)
    start = ClapEmbedders.from_hf_folder(hf_folder, crop="start").embed([long])[0]
    assert not np.array_equal(start.frames, a.frames)
    with pytest.raises(ValueError, match="mono"):
        clap.embed([np.zeros((2, 100))])
    with pytest.raises(ValueError, match="NaN"):
        clap.embed([np.array([0.1, np.nan])])
