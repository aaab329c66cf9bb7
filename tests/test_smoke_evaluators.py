"""The smoke profile's own evaluators (siren_bench.embedders.smoke): the tagger and the small CLAP
learn something a random or untrained model does not; files round-trip and bad ones are refused
by name; shapes follow the Embedder contract; training is deterministic and resumes exactly.

Everything runs on a few dozen 1 s SynthCaps clips with a narrow network and tens of steps.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score

from siren_bench.data.synthcaps import CLASS_NAMES, generate_clip
from siren_bench.embedders.base import Embedder
from siren_bench.embedders.smoke import (
    SmokeAudioConfig, SmokeClapConfig, SmokeTaggerConfig, config_path, load_smoke_clap, load_smoke_tagger,
    save_smoke_evaluator, train_smoke_clap, train_smoke_tagger,
)
from siren_bench.io import sha256_file
from siren_bench.text import load_minilm
from siren_bench.weights import CheckpointError

SR = 16000
AUDIO = SmokeAudioConfig(channels=(32, 32, 32, 32), hidden_dim=64, embed_dim=32)
TAGGER = SmokeTaggerConfig(audio=AUDIO, steps=150, batch_size=16, learning_rate=3e-3, checkpoint_every=4)
CLAP = SmokeClapConfig(audio=AUDIO, shared_dim=32, text_hidden_dim=64, steps=80, batch_size=16, learning_rate=3e-3)


def _clips(seed: int, n: int, seconds: float = 1.0, max_events: int = 1):
    clips = [generate_clip(seed, i, SR, seconds, max_events) for i in range(n)]
    labels = np.array([[int(name in c.labels) for name in CLASS_NAMES] for c in clips])
    return [c.wave for c in clips], labels, [c.caption for c in clips]


@pytest.fixture(scope="module")
def data():
    """Single-event clips (the class is unambiguous), disjoint train and held-out sets."""
    train_waves, train_labels, train_caps = _clips(seed=11, n=72)
    test_waves, test_labels, test_caps = _clips(seed=12, n=36)
    return {"train": (train_waves, train_labels, train_caps), "test": (test_waves, test_labels, test_caps)}


@pytest.fixture(scope="module")
def minilm():
    return load_minilm()


@pytest.fixture(scope="module")
def tagger_files(data, tmp_path_factory):
    """A trained tagger and the same seed untrained (0 steps), saved; plus the training result."""
    folder = tmp_path_factory.mktemp("tagger")
    waves, labels, _ = data["train"]
    val_waves, val_labels, _ = data["test"]
    trained = train_smoke_tagger(waves, labels, TAGGER, seed=0, val_waves=val_waves[:12], val_labels=val_labels[:12])
    untrained = train_smoke_tagger(waves, labels, dataclasses.replace(TAGGER, steps=0), seed=0,
                                   val_waves=val_waves[:12], val_labels=val_labels[:12])
    save_smoke_evaluator(trained, folder / "tagger.safetensors")
    save_smoke_evaluator(untrained, folder / "untrained.safetensors")
    return folder / "tagger.safetensors", folder / "untrained.safetensors", trained


@pytest.fixture(scope="module")
def clap_files(data, minilm, tmp_path_factory):
    folder = tmp_path_factory.mktemp("clap")
    waves, _, captions = data["train"]
    val_waves, _, val_captions = data["test"]
    trained = train_smoke_clap(waves, captions, minilm, CLAP, seed=0, val_waves=val_waves[:12], val_captions=val_captions[:12])
    untrained = train_smoke_clap(waves, captions, minilm, dataclasses.replace(CLAP, steps=0), seed=0,
                                 val_waves=val_waves[:12], val_captions=val_captions[:12])
    save_smoke_evaluator(trained, folder / "clap.safetensors")
    save_smoke_evaluator(untrained, folder / "untrained.safetensors")
    return folder / "clap.safetensors", folder / "untrained.safetensors", trained


def _mean_ap(scores: np.ndarray, labels: np.ndarray) -> float:
    present = [c for c in range(labels.shape[1]) if 0 < labels[:, c].sum() < len(labels)]
    return float(np.mean([average_precision_score(labels[:, c], scores[:, c]) for c in present]))


# --------------------------------------------------------------------------- it learns


def test_tagger_beats_random_and_untrained_on_held_out_clips(tagger_files, data):
    trained_path, untrained_path, _ = tagger_files
    waves, labels, _ = data["test"]

    def clip_logits(path):
        return np.concatenate([e.logits for e in load_smoke_tagger(path, level="clip").embed(waves)])

    trained = _mean_ap(clip_logits(trained_path), labels)
    untrained = _mean_ap(clip_logits(untrained_path), labels)
    rng = np.random.default_rng(0)
    random = np.mean([_mean_ap(rng.standard_normal(labels.shape), labels) for _ in range(50)])
    assert trained > random + 0.2, (trained, random)
    assert trained > untrained + 0.15, (trained, untrained)


def test_tagger_reports_its_held_out_numbers(tagger_files):
    heldout = tagger_files[2].heldout
    assert set(heldout) >= {"map", "chance_map", "untrained_map", "macro_f1", "n_train", "n_val", "final_train_loss"}
    assert heldout["n_train"] == 72 and heldout["n_val"] == 12
    assert 0.0 < heldout["chance_map"] < heldout["map"] <= 1.0
    stored = json.loads(config_path(tagger_files[0]).read_text())
    assert stored["heldout"] == heldout and stored["class_names"] == list(CLASS_NAMES)


def test_clap_pairs_matching_captions_and_audio_on_held_out_clips(clap_files, data, minilm):
    trained_path, untrained_path, _ = clap_files
    waves, _, captions = data["test"]

    def gap(path):
        clap = load_smoke_clap(path, text_encoder=minilm)
        audio = np.concatenate([e.frames for e in clap.embed(waves)])
        similarity = clap.embed_text(captions) @ audio.T
        off_diagonal = similarity[~np.eye(len(waves), dtype=bool)]
        return float(np.diag(similarity).mean() - off_diagonal.mean())

    trained, untrained = gap(trained_path), gap(untrained_path)
    assert trained > 0.15, trained
    assert trained > untrained + 0.15, (trained, untrained)


def test_clap_reports_retrieval_against_chance(clap_files):
    heldout = clap_files[2].heldout
    assert heldout["chance_recall_at_1"] == pytest.approx(1 / 12) and heldout["chance_recall_at_5"] == pytest.approx(5 / 12)
    assert heldout["t2a_recall_at_5"] > heldout["chance_recall_at_5"]
    assert heldout["matched_cosine"] > heldout["mismatched_cosine"]
    assert 0.0 < heldout["temperature"] < 1.0


# --------------------------------------------------------------------------- shapes and contract


def test_tagger_shapes_and_views(tagger_files):
    patch_view = load_smoke_tagger(tagger_files[0])
    clip_view = patch_view.at_level("clip")
    assert isinstance(patch_view, Embedder)
    assert patch_view.info.name == "smoke_tagger" and clip_view.info.name == "smoke_tagger_clip"
    assert patch_view.info.weights_sha256 == clip_view.info.weights_sha256 == sha256_file(tagger_files[0])
    assert patch_view.info.labels == CLASS_NAMES and patch_view.info.n_classes == 12 and patch_view.sample_rate == SR
    waves = [generate_clip(3, 0, SR, 2.5).wave, generate_clip(3, 1, SR, 1.0).wave]  # 2 patches, 1 patch
    patches, clips = patch_view.embed(waves), clip_view.embed(waves)
    assert [e.frames.shape for e in patches] == [(2, 32), (1, 32)]
    assert [e.logits.shape for e in patches] == [(2, 12), (1, 12)]
    assert [e.frames.shape for e in clips] == [(1, 32), (1, 32)] and clips[0].logits.shape == (1, 12)
    assert all(e.frames.dtype == np.float64 and e.logits.dtype == np.float64 for e in patches + clips)
    # the clip embedding is the mean patch embedding, and its logits the mean patch logits
    np.testing.assert_allclose(clips[0].frames, patches[0].frames.mean(axis=0, keepdims=True), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(clips[0].logits, patches[0].logits.mean(axis=0, keepdims=True), rtol=1e-5, atol=1e-5)
    shortest = 400 + 95 * 160  # one 96-frame patch of 25 ms frames every 10 ms: 0.975 s
    assert [e.frames.shape for e in patch_view.embed([waves[0][:shortest], waves[0][:shortest + 96 * 160]])] == [(1, 32), (2, 32)]
    with pytest.raises(ValueError, match="clip 1: 15599 samples is shorter than one smoke-evaluator patch"):
        patch_view.embed([waves[0], waves[0][: shortest - 1]])
    with pytest.raises(ValueError, match="clip 0: .*NaN"):
        patch_view.embed([np.full(SR, np.nan)])


def test_clap_shapes_and_unit_vectors(clap_files, minilm):
    clap = load_smoke_clap(clap_files[0], text_encoder=minilm)
    assert isinstance(clap, Embedder) and clap.info.n_classes is None and clap.info.dim == 32
    out = clap.embed([generate_clip(3, 0, SR, 2.5).wave, generate_clip(3, 1, SR, 1.0).wave])
    assert [e.frames.shape for e in out] == [(1, 32), (1, 32)] and all(e.logits is None for e in out)
    text = clap.embed_text(["a loud beep", "rain"])
    assert text.shape == (2, 32) and text.dtype == np.float64
    np.testing.assert_allclose(np.linalg.norm(text, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose([np.linalg.norm(e.frames) for e in out], 1.0, rtol=1e-5)


# --------------------------------------------------------------------------- files


def test_save_load_round_trip_gives_identical_embeddings(tagger_files, clap_files, data, minilm, tmp_path):
    waves = data["test"][0][:4]
    tagger = load_smoke_tagger(tagger_files[0])
    again = tmp_path / "copy.safetensors"
    digest = save_smoke_evaluator(tagger_files[2], again)  # the in-memory model, saved a second time
    assert digest == tagger.info.weights_sha256  # same tensors, same bytes
    for a, b in zip(tagger.embed(waves), load_smoke_tagger(again).embed(waves)):
        assert np.array_equal(a.frames, b.frames) and np.array_equal(a.logits, b.logits)
    clap = load_smoke_clap(clap_files[0], text_encoder=minilm)
    clap_again = load_smoke_clap(clap_files[0], text_encoder=minilm, expected_sha256=clap.info.weights_sha256)
    assert all(np.array_equal(a.frames, b.frames) for a, b in zip(clap.embed(waves), clap_again.embed(waves)))
    assert np.array_equal(clap.embed_text(["a siren"]), clap_again.embed_text(["a siren"]))


def _copy(path: Path, folder: Path) -> Path:
    folder.mkdir()
    target = folder / path.name
    target.write_bytes(path.read_bytes())
    config_path(target).write_bytes(config_path(path).read_bytes())
    return target


def test_bad_files_are_refused_by_name(tagger_files, tmp_path):
    good = _copy(tagger_files[0], tmp_path / "a")
    with pytest.raises(CheckpointError, match=r"missing\.safetensors: checkpoint file not found"):
        load_smoke_tagger(tmp_path / "missing.safetensors")

    corrupt = _copy(tagger_files[0], tmp_path / "b")
    data = bytearray(corrupt.read_bytes())
    data[-10] ^= 0xFF  # one flipped byte inside a tensor
    corrupt.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=rf"{corrupt.name}: SHA-256 .* does not match .* recorded in"):
        load_smoke_tagger(corrupt)

    with pytest.raises(CheckpointError, match=rf"{good.name}: SHA-256 .* does not match the pinned"):
        load_smoke_tagger(good, expected_sha256="0" * 64)

    config_path(good).unlink()
    with pytest.raises(CheckpointError, match=r"tagger\.json: the config file .* is missing"):
        load_smoke_tagger(good)

    with pytest.raises(CheckpointError, match="expected 'smoke_clap'"):
        load_smoke_clap(tagger_files[0], text_encoder=object())


def test_clap_refuses_a_different_text_encoder(clap_files):
    class OtherEncoder:
        name, weights_sha256 = "other", "f" * 64

    with pytest.raises(CheckpointError, match="clap.safetensors: trained against text encoder all-MiniLM-L6-v2"):
        load_smoke_clap(clap_files[0], text_encoder=OtherEncoder())


# --------------------------------------------------------------------------- determinism


def test_same_seed_same_weights_bit_for_bit(data, tmp_path):
    waves, labels, _ = data["train"]
    config = dataclasses.replace(TAGGER, steps=6)
    runs = [train_smoke_tagger(waves[:40], labels[:40], config, seed=seed) for seed in (5, 5, 6)]
    first, second, other = (r.net.state_dict() for r in runs)
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert not all(torch.equal(first[k], other[k]) for k in first)
    assert runs[0].log == [dict(r, seconds=a["seconds"]) for a, r in zip(runs[0].log, runs[1].log)]
    hashes = [save_smoke_evaluator(r, tmp_path / f"{i}.safetensors") for i, r in enumerate(runs)]
    assert hashes[0] == hashes[1] != hashes[2]


def test_interrupted_training_resumes_to_the_same_weights(data, minilm, tmp_path):
    waves, _, captions = data["train"]
    config = dataclasses.replace(CLAP, steps=8, checkpoint_every=2)
    full = train_smoke_clap(waves[:40], captions[:40], minilm, config, seed=1)
    stopped = train_smoke_clap(waves[:40], captions[:40], minilm, config, seed=1, resume_dir=tmp_path, stop_after=5)
    assert stopped.resume_path is not None and stopped.resume_path.is_file() and len(stopped.log) == 5
    resumed = train_smoke_clap(waves[:40], captions[:40], minilm, config, seed=1, resume_dir=tmp_path)
    assert resumed.resumed_from == 5 and resumed.resume_path == stopped.resume_path
    assert [r["loss"] for r in resumed.log] == [r["loss"] for r in full.log]
    state, expected = resumed.net.state_dict(), full.net.state_dict()
    assert all(torch.equal(state[k], expected[k]) for k in expected)
    other_seed = train_smoke_clap(waves[:40], captions[:40], minilm, config, seed=2, resume_dir=tmp_path, stop_after=1)
    assert other_seed.resumed_from == 0 and other_seed.resume_path != stopped.resume_path  # keyed by seed (and config, data)
