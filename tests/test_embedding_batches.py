"""Batched embedding (evaluation/embedding.py, EmbeddingCompute): every embedder call gets a fixed
number of clips of one length, so a clip's embedding must not depend on which clips share its call
or on its place in it, bit for bit; otherwise a cached entry would depend on the batch it happened
to be in. Checked here per embedder (random weights in the release layouts), and that the clips per
call and the device are in the cache key while the numbers stay the model's."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

from siren_bench.cache import ContentCache
from siren_bench.embedders.panns import CNN14_CONFIGS, PannsEmbedder
from siren_bench.embedders.smoke import SmokeAudioConfig, SmokeTagger, SmokeTaggerNet
from siren_bench.embedders.vggish import VGGishEmbedder
from siren_bench.errors import ConfigError
from siren_bench.evaluation.clipsets import folder_clips
from siren_bench.evaluation.embedding import EmbeddingCompute, embed_clips, resolve_compute
from siren_bench.io import AudioFileError
from siren_bench.recipes import get_recipe


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _vggish(tmp_path):
    from tests.test_vggish import he_random_state

    torch.save(he_random_state(), tmp_path / "vggish.pth")
    return VGGishEmbedder.from_checkpoint(tmp_path / "vggish.pth", published_prefix=None)


def _panns(tmp_path):
    from tests.test_panns import random_state, save_release

    save_release(tmp_path / "cnn14.pth", random_state(CNN14_CONFIGS[16000], seed=0))
    return PannsEmbedder.from_checkpoint(tmp_path / "cnn14.pth", sample_rate=16000)


def _passt(tmp_path):
    from siren_bench.embedders.passt import PasstEmbedder
    from tests.test_passt import _random_state

    torch.save(_random_state(), tmp_path / "passt.pt")
    return PasstEmbedder.from_checkpoint(tmp_path / "passt.pt", framing="chunks_10s")


def _smoke_tagger(tmp_path):
    torch.manual_seed(0)
    net = SmokeTaggerNet(SmokeAudioConfig(channels=(16, 16, 16, 16), hidden_dim=32, embed_dim=16), n_classes=5)
    return SmokeTagger(net, [f"c{i}" for i in range(5)], "0" * 64, level="patch", batch_patches=7)


def _clap(tmp_path):
    from siren_bench.evaluation.embedding import EmbedderLoader
    from tests.test_clap import _save_original, original_state, write_tiny_tokenizer
    from tests.test_clap import fixture as clap_layouts

    _save_original(tmp_path / "630k-audioset-best.pt", original_state(clap_layouts()["reduced_layout"]))
    write_tiny_tokenizer(tmp_path / "roberta-base")
    return EmbedderLoader(tmp_path).open(get_recipe("clean").spec("clap"))


EMBEDDERS = {"vggish": (_vggish, 2.0), "panns": (_panns, 1.0), "smoke_tagger": (_smoke_tagger, 1.0),
             "clap": (_clap, 1.0), "passt": (_passt, 1.0)}


@pytest.mark.parametrize("name", list(EMBEDDERS))
def test_a_clips_embedding_ignores_its_neighbours_and_its_place_in_the_call(tmp_path, name):
    build, seconds = EMBEDDERS[name]
    embedder = build(tmp_path)
    rng = np.random.default_rng(1)
    n = int(seconds * embedder.sample_rate)
    mine, *others = [(0.3 * rng.standard_normal(n)).clip(-0.9, 0.9) for _ in range(5)]
    first = embedder.embed([mine, others[0], others[1]])[0]
    moved = embedder.embed([others[2], others[3], mine])[2]
    assert np.array_equal(first.frames, moved.frames)
    assert (first.logits is None and moved.logits is None) or np.array_equal(first.logits, moved.logits)


def _folder(tmp_path, lengths, rate=16000):
    rng = np.random.default_rng(2)
    folder = tmp_path / "clips"
    folder.mkdir()
    for i, seconds in enumerate(lengths):
        sf.write(folder / f"c{i}.wav", (0.3 * rng.standard_normal(int(seconds * rate))).clip(-0.9, 0.9), rate, subtype="FLOAT")
    return folder_clips(folder)


@pytest.fixture(scope="module")
def vggish(tmp_path_factory):
    return _vggish(tmp_path_factory.mktemp("vggish"))


def test_batched_calls_cache_what_calls_of_that_shape_compute_and_the_shape_is_in_the_key(tmp_path, vggish):
    """Seven clips of two lengths in calls of 3 (threads decoding ahead): each entry equals the clip
    embedded in a call of 3 on its own (the silent filler changes nothing), and calls of 1 are
    other cache entries with (nearly) the same numbers."""
    clips = _folder(tmp_path, [2.0, 2.0, 3.0, 2.0, 3.0, 2.0, 2.0])
    spec = get_recipe("clean").spec("fad")
    cache = ContentCache(tmp_path / "cache")
    three = EmbeddingCompute("cpu", 3, loader_threads=2)
    batched = embed_clips([clips.clips[c] for c in clips.ids], spec, vggish, cache, compute=three)
    from siren_bench.evaluation.embedding import load_clip

    for clip_id in clips.ids:
        wave, _ = load_clip(clips.clips[clip_id], spec, False)
        alone = vggish.embed([wave, np.zeros_like(wave), np.zeros_like(wave)])[0]
        assert np.array_equal(batched.embeddings[clip_id].frames, alone.frames), clip_id
    single = embed_clips([clips.clips[c] for c in clips.ids], spec, vggish, cache, compute=EmbeddingCompute())
    assert set(single.keys.values()).isdisjoint(batched.keys.values()) and cache.misses == 14
    for clip_id in clips.ids:
        np.testing.assert_allclose(single.embeddings[clip_id].frames, batched.embeddings[clip_id].frames, rtol=1e-4, atol=1e-5)
    again = embed_clips([clips.clips[c] for c in clips.ids], spec, vggish, cache, compute=three)
    assert again.keys == batched.keys and cache.hits == 7 and cache.misses == 14


def test_a_clip_the_embedder_refuses_is_named_even_inside_a_batch(tmp_path):
    """An embedder's own refusal (a ValueError for the whole call) is traced to the clip."""
    from siren_bench.embedders.base import Embedder, Embedding, EmbedderInfo
    from siren_bench.evaluation.embedding import _embed_call

    class Picky(Embedder):
        info = EmbedderInfo("picky", 16000, 1, None, "0" * 64)

        def embed(self, waves):
            if any(np.abs(w).max() > 0.5 for w in waves):
                raise ValueError("too loud for this model")
            return [Embedding(np.zeros((1, 1))) for _ in waves]

    clips = _folder(tmp_path, [1.0, 1.0, 1.0])
    group = [(clips.clips[c], np.full(16000, 0.9 if c == "c1" else 0.1)) for c in clips.ids]
    with pytest.raises(AudioFileError, match=r"c1\.wav.*too loud for this model"):
        _embed_call(Picky(), get_recipe("clean").spec("fad"), group, 4)
    assert len(_embed_call(Picky(), get_recipe("clean").spec("fad"), group[::2], 4)) == 2  # the filler is dropped


def test_a_cuda_device_that_is_not_there_is_refused_and_auto_picks_the_cpu_with_one_clip_a_call():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ConfigError, match="eval.device=cuda but torch sees no CUDA device"):
        resolve_compute("cuda", None, 2)
    assert resolve_compute("auto", None, 2) == EmbeddingCompute("cpu", 1, 2)
    assert resolve_compute("auto", 8, 0) == EmbeddingCompute("cpu", 8, 0)
