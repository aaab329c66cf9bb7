"""Cache correctness through the score stage's own path (evaluation.score.score_sets): a changed
audio file, recipe knob or checkpoint recomputes exactly the embeddings and reference statistics
it affects, nothing else; a damaged cache entry is recomputed, never used; and every warm-cache
score equals a cold one bit for bit. The tokenize stage's codes cache likewise.

The smoke recipe on smoke evaluators with random weights (untrained: what they say does not
matter here, only which entries are computed and that the numbers agree).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch

from siren_bench.cache import ContentCache
from siren_bench.codecs.base import CodecInfo
from siren_bench.data.manifest import write_manifest
from siren_bench.data.synthcaps import CLASS_NAMES, generate_clip
from siren_bench.embedders.smoke import (
    CLAP_KIND, TAGGER_KIND, SmokeAudioConfig, SmokeClapConfig, SmokeClapNet, SmokeTaggerConfig, SmokeTaggerNet,
    SmokeTrainResult, config_path, save_smoke_evaluator,
)
from siren_bench.evaluation import score as score_module
from siren_bench.evaluation.clipsets import folder_clips, manifest_clips
from siren_bench.evaluation.embedding import EmbedderLoader, EmbeddingCompute, embedding_key, embedding_knobs
from siren_bench.io import sha256_file
from siren_bench.recipes import AudioPolicy, MetricSpec, get_recipe
from siren_bench.stages.tokenize import codes_key, tokenize_clips
from siren_bench.text import load_minilm
from tests.test_tokenize import _codec, _manifest

SR, N = 16000, 10  # 10 clips: the smoke recipe's IS takes 10 splits
AUDIO = SmokeAudioConfig(channels=(16, 16, 16, 16), hidden_dim=32, embed_dim=16)
SMOKE = get_recipe("smoke@1")  # three embedding groups of the tagger and CLAP; version 2 moves FD to aisfx
GROUPS = ("fad", "fd", "clap")  # one metric of each embedding group: tagger patches, tagger clip vectors, CLAP


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Models this small gain nothing from a second thread, and on a shared machine they lose
    a lot to it (spinning threads): one thread here, the setting restored after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class RecordingCache(ContentCache):
    """A ContentCache that also remembers which keys it served and which it missed."""

    def __init__(self, root: Path):
        super().__init__(root)
        self.served: list[str] = []
        self.missed: list[str] = []

    def get(self, key: str):
        arrays = super().get(key)
        (self.missed if arrays is None else self.served).append(key)
        return arrays


def _save_random_evaluators(folder: Path, seed: int) -> None:
    """Untrained smoke evaluators under the smoke recipe's checkpoint names."""
    minilm = load_minilm()
    folder.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        tagger = SmokeTaggerNet(AUDIO, len(CLASS_NAMES)).eval()
        clap_config = SmokeClapConfig(audio=AUDIO, shared_dim=16, text_hidden_dim=32)
        clap = SmokeClapNet(clap_config, 384).eval()
    save_smoke_evaluator(SmokeTrainResult(TAGGER_KIND, tagger, SmokeTaggerConfig(audio=AUDIO), seed, [], {},
                                          {"class_names": list(CLASS_NAMES)}), folder / "tagger.safetensors")
    identity = {"name": minilm.name, "weights_sha256": minilm.weights_sha256, "dim": 384}
    save_smoke_evaluator(SmokeTrainResult(CLAP_KIND, clap, clap_config, seed, [], {}, {"text_encoder": identity}),
                         folder / "clap.safetensors")


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("weights")
    _save_random_evaluators(folder, seed=0)
    return folder


def _wave(seed: int, index: int) -> np.ndarray:
    return generate_clip(seed, index, SR, 1.0, max_events=1).wave


def _write_reference(paths: dict, waves: dict[str, np.ndarray], captions: dict[str, str]) -> None:
    """Reference clips and their manifest, as the prepare stage leaves them."""
    rows = []
    for clip_id, wave in waves.items():
        path = paths["reference"] / f"{clip_id}.wav"
        sf.write(path, wave, SR, subtype="PCM_16")
        rows.append({"clip_id": clip_id, "split": "test", "audio": path.name, "sha256": sha256_file(path),
                     "caption": captions[clip_id], "sample_rate": SR, "num_samples": len(wave)})
    write_manifest(paths["manifest"], rows)


@pytest.fixture
def paths(tmp_path, weights) -> dict:
    """A reference manifest with captions and a generated folder with the same clip ids."""
    paths = {"generated": tmp_path / "generated", "reference": tmp_path / "reference", "cache": tmp_path / "cache",
             "manifest": tmp_path / "reference" / "manifest.csv", "weights": weights, "tmp": tmp_path}
    paths["generated"].mkdir()
    paths["reference"].mkdir()
    ids = [f"clip{i:02d}" for i in range(N)]
    _write_reference(paths, {c: _wave(21, i) for i, c in enumerate(ids)},
                     {c: generate_clip(21, i, SR, 1.0, max_events=1).caption for i, c in enumerate(ids)})
    for i, clip_id in enumerate(ids):
        sf.write(paths["generated"] / f"{clip_id}.wav", _wave(22, i), SR, subtype="FLOAT")
    return paths


def _score(paths: dict, recipe=SMOKE, cache: Path | None = None, weights: Path | None = None, n_boot: int = 20, **kwargs):
    """Score as the score stage does, each call with a fresh loader and cache object (a new run)."""
    recording = RecordingCache(cache or paths["cache"])
    outcome = score_module.score_sets(folder_clips(paths["generated"]), manifest_clips(paths["manifest"]), recipe,
                                      EmbedderLoader(weights or paths["weights"]), recording, n_boot=n_boot, **kwargs)
    return outcome, recording


def _cold(paths: dict, name: str, **kwargs):
    """The same score from an empty cache."""
    return _score(paths, cache=paths["tmp"] / f"cold-{name}", **kwargs)[0]


def _assert_same_numbers(outcome, expected) -> None:
    """Every number and record in results.json and per_clip.csv equal, bit for bit."""
    assert outcome.results | {"cache_dir": None} == expected.results | {"cache_dir": None}
    pd.testing.assert_frame_equal(outcome.per_clip, expected.per_clip, check_exact=True)


def _keys(paths: dict, metric: str, recipe=SMOKE, weights: Path | None = None, which=("generated", "reference"),
          ids=None) -> set[str]:
    """Embedding cache keys of `metric`'s embedder for the clips of the named sets."""
    spec = recipe.spec(metric)
    identity = EmbedderLoader(weights or paths["weights"]).open(spec).cache_identity
    sets = {"generated": folder_clips(paths["generated"]), "reference": manifest_clips(paths["manifest"])}
    return {embedding_key(clip.sha256, spec, identity, EmbeddingCompute()) for side in which for cid, clip in sets[side].clips.items()
            if ids is None or cid in ids}


@pytest.fixture
def reference_stats_calls(monkeypatch) -> list:
    """The levels at which reference statistics are computed (not served from the cache)."""
    calls = []
    original = score_module.reference_gaussian
    monkeypatch.setattr(score_module, "reference_gaussian", lambda ref, level: calls.append(level) or original(ref, level))
    return calls


def _replace_spec(recipe, metric: str, **changes):
    return dataclasses.replace(recipe, metrics=tuple(dataclasses.replace(s, **changes) if s.metric == metric else s
                                                     for s in recipe.metrics))


# ------------------------------------------------------------------------------------- unchanged inputs

def test_rescoring_unchanged_inputs_is_all_hits_and_the_same_numbers(paths, reference_stats_calls):
    cold, first = _score(paths)
    embeddings = set().union(*(_keys(paths, m) for m in GROUPS))
    assert len(embeddings) == 3 * 2 * N
    # every embedding, every caption's text embedding, the reference statistics at two levels (frames, clip)
    assert len(first.missed) == len(set(first.missed)) == 3 * 2 * N + N + 2 and embeddings <= set(first.missed)
    assert sorted(reference_stats_calls) == ["clip", "frames"]

    warm, again = _score(paths)
    assert again.missed == [] and set(again.served) == set(first.missed)
    assert (warm.cache_hits, warm.cache_misses) == (len(again.served), 0)
    assert sorted(reference_stats_calls) == ["clip", "frames"]  # not computed again
    _assert_same_numbers(warm, cold)


# ------------------------------------------------------------------------------------- changed audio

def test_one_changed_generated_clip_is_embedded_again_once_per_embedder_and_nothing_else(paths, reference_stats_calls):
    _score(paths)
    before = {m: _keys(paths, m, which=("generated",), ids={"clip03"}) for m in GROUPS}
    sf.write(paths["generated"] / "clip03.wav", _wave(23, 3), SR, subtype="FLOAT")
    after = {m: _keys(paths, m, which=("generated",), ids={"clip03"}) for m in GROUPS}
    assert all(before[m].isdisjoint(after[m]) for m in GROUPS)

    outcome, cache = _score(paths)
    assert sorted(cache.missed) == sorted(set().union(*after.values()))  # 3 keys: no reference statistics, no text
    assert sorted(reference_stats_calls) == ["clip", "frames"]  # from the first run only: reused
    _assert_same_numbers(outcome, _cold(paths, "generated"))


def test_one_changed_reference_clip_recomputes_its_embeddings_and_the_reference_statistics(paths, reference_stats_calls):
    _score(paths)
    reference = manifest_clips(paths["manifest"])
    waves = {cid: sf.read(clip.path, dtype="float64")[0] for cid, clip in reference.clips.items()}
    waves["clip07"] = _wave(24, 7)
    _write_reference(paths, waves, {cid: clip.caption for cid, clip in reference.clips.items()})
    reference_stats_calls.clear()

    outcome, cache = _score(paths)
    changed = set().union(*(_keys(paths, m, which=("reference",), ids={"clip07"}) for m in GROUPS))
    assert len(changed) == 3 and changed <= set(cache.missed)
    assert len(cache.missed) == 3 + 2  # and the reference statistics at both levels
    assert sorted(reference_stats_calls) == ["clip", "frames"]
    _assert_same_numbers(outcome, _cold(paths, "reference"))


def test_one_changed_caption_recomputes_only_its_text_embedding(paths):
    _score(paths)
    reference = manifest_clips(paths["manifest"])
    captions = {cid: clip.caption for cid, clip in reference.clips.items()} | {"clip02": "a dog barks twice, far away"}
    _write_reference(paths, {cid: sf.read(c.path, dtype="float64")[0] for cid, c in reference.clips.items()}, captions)

    outcome, cache = _score(paths)
    assert len(cache.missed) == 1
    assert outcome.results["captions"]["texts"]["clip02"] == "a dog barks twice, far away"
    _assert_same_numbers(outcome, _cold(paths, "caption"))


def test_another_batch_shape_recomputes_the_embeddings_and_reference_statistics_not_the_captions(paths, reference_stats_calls):
    """Entries made under one batch shape are never mixed into a run under another (the last bits
    differ): every embedding and the reference statistics built from them are computed again;
    caption embeddings (one per call whatever the batch) are keyed by the device only."""
    _, first = _score(paths)
    reference_stats_calls.clear()
    recording = RecordingCache(paths["cache"])
    score_module.score_sets(folder_clips(paths["generated"]), manifest_clips(paths["manifest"]), SMOKE,
                            EmbedderLoader(paths["weights"], compute=EmbeddingCompute(batch_clips=4)), recording, n_boot=20)
    assert set(recording.missed).isdisjoint(first.missed) and len(recording.missed) == 3 * 2 * N + 2
    assert len(set(recording.served) & set(first.missed)) == N  # of the first run's entries: the captions' text embeddings
    assert sorted(reference_stats_calls) == ["clip", "frames"]


# ------------------------------------------------------------------------------------- recipe knobs

def test_every_setting_of_a_metric_spec_but_the_metric_and_its_options_is_in_the_embedding_key():
    """A new MetricSpec or AudioPolicy field fails here until it is put in the key, or said not to be."""
    knobs = embedding_knobs(SMOKE.spec("fad"))
    assert set(knobs) == {f.name for f in dataclasses.fields(MetricSpec)} - {"metric", "options"}
    assert set(knobs["audio"]) == {f.name for f in dataclasses.fields(AudioPolicy)}


EMBEDDING_KNOBS = {
    "channels": dict(channels="first"),
    "remove_dc": dict(remove_dc=True),
    "resampler": dict(resampler="sinc_hann"),
    "level": dict(level="peak_-1dBFS"),
    "min_seconds": dict(min_seconds=2.0),
    "pad": dict(pad="repeat"),
    "crop": dict(max_seconds=1.0, crop="centre"),
    "int16_roundtrip": dict(int16_roundtrip=True),
}


@pytest.mark.parametrize("change", list(EMBEDDING_KNOBS.values()) + ["checkpoint"], ids=list(EMBEDDING_KNOBS) + ["checkpoint"])
def test_an_embedding_knob_embeds_every_clip_of_its_metric_again_and_nothing_else(paths, change, tmp_path):
    _score(paths)
    spec = SMOKE.spec("fad")
    weights = paths["weights"]
    if change == "checkpoint":  # the same bytes under another checkpoint name: another knob value, so misses
        weights = tmp_path / "renamed"
        shutil.copytree(paths["weights"], weights)
        shutil.copy(weights / "tagger.safetensors", weights / "tagger-copy.safetensors")
        shutil.copy(config_path(weights / "tagger.safetensors"), config_path(weights / "tagger-copy.safetensors"))
        changed = _replace_spec(SMOKE, "fad", checkpoint="tagger-copy.safetensors")
    else:
        changed = _replace_spec(SMOKE, "fad", audio=dataclasses.replace(spec.audio, **change))
    assert changed.sha256 != SMOKE.sha256

    outcome, cache = _score(paths, recipe=changed, weights=weights)
    refreshed = _keys(paths, "fad", recipe=changed, weights=weights)
    assert refreshed.isdisjoint(_keys(paths, "fad")) and refreshed <= set(cache.missed)
    # only FAD's clips (FAD-inf keeps the old knobs, FD / KL / IS / KAD / CLAP other embedders) and FAD's reference statistics
    assert len(cache.missed) == 2 * N + 1
    _assert_same_numbers(outcome, _cold(paths, "knob", recipe=changed, weights=weights))


METRIC_OPTIONS = {  # (recipe, score_sets arguments)
    "n_boot": (SMOKE, dict(n_boot=37)),
    "bootstrap_seed": (dataclasses.replace(SMOKE, bootstrap_seed=5), {}),
    "fd_method": (_replace_spec(SMOKE, "fad", options=(("fd_method", "symmetric"),)), {}),
    "fad_inf_points": (_replace_spec(SMOKE, "fad_inf", options=(("fd_method", "eigen"), ("n_points", 7), ("seed", 3))), {}),
    "is_splits": (_replace_spec(SMOKE, "is", options=(("seed", 1), ("shuffle", False), ("splits", 5))), {}),
    "kl_direction": (_replace_spec(SMOKE, "kl", options=(("direction", "gen_ref"), ("eps", 1e-6))), {}),
}


@pytest.mark.parametrize("recipe, arguments", list(METRIC_OPTIONS.values()), ids=list(METRIC_OPTIONS))
def test_a_metric_option_embeds_nothing_again(paths, recipe, arguments):
    _, first = _score(paths)
    outcome, cache = _score(paths, recipe=recipe, **arguments)
    assert cache.missed == [] and set(cache.served) == set(first.missed)
    _assert_same_numbers(outcome, _cold(paths, "option", recipe=recipe, **arguments))


# ------------------------------------------------------------------------------------- checkpoints

def _edit_front_end(folder: Path) -> None:
    """Change the tagger's log-mel offset in the JSON beside its weights: the weights file, and so
    its SHA-256, stay as they were, but every embedding changes."""
    meta_path = config_path(folder / "tagger.safetensors")
    meta = json.loads(meta_path.read_text())
    meta["config"]["audio"]["log_offset"] = 0.5
    meta_path.write_text(json.dumps(meta))


@pytest.mark.parametrize("checkpoint", ["other weights", "edited front end", "same files elsewhere"])
def test_another_tagger_checkpoint_embeds_every_tagger_clip_again_and_no_clap_clip(paths, tmp_path, checkpoint):
    _score(paths)
    other = tmp_path / "other-weights"
    shutil.copytree(paths["weights"], other)
    if checkpoint == "other weights":
        _save_random_evaluators(tmp_path / "seed1", seed=1)
        shutil.copy(tmp_path / "seed1" / "tagger.safetensors", other / "tagger.safetensors")
        shutil.copy(config_path(tmp_path / "seed1" / "tagger.safetensors"), config_path(other / "tagger.safetensors"))
        assert sha256_file(other / "tagger.safetensors") != sha256_file(paths["weights"] / "tagger.safetensors")
    elif checkpoint == "edited front end":
        _edit_front_end(other)

    outcome, cache = _score(paths, weights=other)
    if checkpoint == "same files elsewhere":  # keyed by content, not by folder
        assert cache.missed == []
    else:
        tagger = _keys(paths, "fad", weights=other) | _keys(paths, "fd", weights=other)
        assert len(tagger) == 2 * 2 * N and tagger.isdisjoint(_keys(paths, "fad") | _keys(paths, "fd"))
        assert tagger <= set(cache.missed) and len(cache.missed) == 2 * 2 * N + 2  # and both reference statistics
    _assert_same_numbers(outcome, _cold(paths, "checkpoint", weights=other))


# ------------------------------------------------------------------------------------- damaged entries

def _flip_byte(path: Path, at: int, mask: int) -> None:
    raw = bytearray(path.read_bytes())
    raw[at] ^= mask
    path.write_bytes(bytes(raw))


def _flip_middle_byte(path: Path) -> None:
    _flip_byte(path, path.stat().st_size // 2, 0xFF)


DAMAGE = {
    "flipped payload byte": lambda npz, sidecar: _flip_middle_byte(npz),
    "truncated payload": lambda npz, sidecar: npz.write_bytes(npz.read_bytes()[: npz.stat().st_size // 2]),
    "empty payload": lambda npz, sidecar: npz.write_bytes(b""),
    "missing payload": lambda npz, sidecar: npz.unlink(),
    "missing sidecar": lambda npz, sidecar: sidecar.unlink(),
    "sidecar not text": lambda npz, sidecar: _flip_byte(sidecar, 0, 0x80),  # not even UTF-8
    "sidecar of another entry": lambda npz, sidecar: sidecar.write_text("0" * 64 + "\n"),
}


@pytest.mark.parametrize("damage", list(DAMAGE.values()), ids=list(DAMAGE))
def test_damaged_entries_are_recomputed_exactly_and_the_numbers_are_the_clean_ones(paths, damage):
    clean, first = _score(paths)
    entries = sorted(paths["cache"].rglob("*.npz"))
    assert {p.stem for p in entries} == set(first.missed)  # the file name is the key
    damaged = entries[::2]  # every other entry: embeddings, text embeddings and statistics among them
    for npz in damaged:
        damage(npz, npz.with_suffix(".sha256"))

    outcome, cache = _score(paths)
    assert sorted(cache.missed) == sorted(p.stem for p in damaged)
    _assert_same_numbers(outcome, clean)
    repaired, again = _score(paths)  # rewritten whole: served from now on
    assert again.missed == []
    _assert_same_numbers(repaired, clean)


# ------------------------------------------------------------------------------------- the codes cache

@pytest.mark.parametrize("field", [f.name for f in dataclasses.fields(CodecInfo)])
def test_a_codes_key_changes_with_every_part_of_the_codec_identity(field):
    codec = _codec(0)
    value = getattr(codec.info, field)
    other = dataclasses.replace(codec.info, **{field: value + "x" if isinstance(value, str) else value + 1})
    changed = _codec(0)
    changed.info = other
    assert codes_key("a" * 64, changed) != codes_key("a" * 64, codec)


def test_damaged_codes_are_recomputed_to_the_same_codes(tmp_path):
    cache = ContentCache(tmp_path / "cache")
    codec = _codec(0)
    manifest = _manifest(tmp_path, [300.0, 500.0, 700.0])
    clean = tokenize_clips(codec, manifest, cache, batch=2)
    _flip_middle_byte(sorted((tmp_path / "cache").rglob("*.npz"))[1])
    again = tokenize_clips(codec, manifest, cache, batch=2)
    assert (cache.hits, cache.misses) == (2, 3 + 1)
    assert all(np.array_equal(again[c], clean[c]) for c in clean)


def test_cached_codes_do_not_depend_on_the_clips_they_were_batched_with(tmp_path):
    """Entries are written per clip but encoded in batches: a clip's codes must not change with
    its batch neighbours, or a warm cache would answer differently from a cold one."""
    codec = _codec(0)
    manifest = _manifest(tmp_path, [300.0, 500.0, 700.0, 1100.0])
    batched = tokenize_clips(codec, manifest, ContentCache(tmp_path / "a"), batch=4)
    alone = tokenize_clips(codec, manifest, ContentCache(tmp_path / "b"), batch=1)
    assert all(np.array_equal(batched[c], alone[c]) for c in batched)


def test_embedders_run_without_tf32_and_the_results_say_so(paths, monkeypatch):
    """GPUs run cuDNN convolutions in TF32 unless told not to; every embedder call is made with it
    off (and the setting restored after), and results.json records that."""
    from siren_bench.embedders.smoke import SmokeClap, SmokeTagger

    seen = []
    for embedder in (SmokeTagger, SmokeClap):
        for name in ("embed", "embed_text"):
            if hasattr(embedder, name):
                original = getattr(embedder, name)
                monkeypatch.setattr(embedder, name, lambda self, *a, original=original, **k: seen.append(
                    (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)) or original(self, *a, **k))
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True
    try:
        outcome, _ = _score(paths)
        assert (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) == (True, True)
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = True, False  # torch's defaults
    assert seen and set(seen) == {(False, False)}
    assert outcome.results["embedding_compute"]["tf32"] is False
