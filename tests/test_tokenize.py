"""Tokenization is cached by (audio content, codec weights): exactly the changed work is redone."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from transformers import DacConfig, DacModel

from siren_bench.cache import ContentCache
from siren_bench.codecs import DacCodec
from siren_bench.io import sha256_file
from siren_bench.stages.tokenize import tokenize_clips
from tests.conftest import tone, write_audio


def _codec(seed: int) -> DacCodec:
    torch.manual_seed(seed)
    model = DacModel(DacConfig(encoder_hidden_size=4, decoder_hidden_size=16, n_codebooks=3, codebook_size=32, downsampling_ratios=[2, 4, 5, 8]))
    return DacCodec(model, "tiny", weights_sha256=f"tiny-{seed}")


def test_cache_key_covers_weights_shape_and_recipe_version(monkeypatch):
    from siren_bench.stages import tokenize

    codec = _codec(0)
    base = tokenize.codes_key("a" * 64, codec)
    assert base != tokenize.codes_key("b" * 64, codec) != tokenize.codes_key("a" * 64, _codec(1))
    monkeypatch.setattr(tokenize, "CODES_VERSION", tokenize.CODES_VERSION + 1)
    assert tokenize.codes_key("a" * 64, codec) != base


def _manifest(tmp_path, freqs) -> pd.DataFrame:
    paths = [write_audio(tmp_path / f"c{i}.wav", tone(0.5, 16000, freq=f), 16000) for i, f in enumerate(freqs)]
    return pd.DataFrame({"clip_id": [p.stem for p in paths], "sha256": [sha256_file(p) for p in paths], "audio_path": paths})


def test_cache_hits_misses_and_invalidation(tmp_path):
    cache = ContentCache(tmp_path / "cache")
    codec = _codec(0)
    manifest = _manifest(tmp_path, [300.0, 500.0, 700.0])
    first = tokenize_clips(codec, manifest, cache, batch=2)
    assert (cache.hits, cache.misses) == (0, 3)
    assert all(c.shape == (3, 25) and c.dtype == np.uint16 for c in first.values())

    again = tokenize_clips(codec, manifest, cache, batch=2)
    assert (cache.hits, cache.misses) == (3, 3)
    assert all(np.array_equal(first[k], again[k]) for k in first)

    changed = _manifest(tmp_path, [300.0, 500.0, 900.0])  # one clip's audio changes
    tokenize_clips(codec, changed, cache, batch=2)
    assert (cache.hits, cache.misses) == (5, 4)

    tokenize_clips(_codec(1), manifest, cache, batch=2)  # other weights: everything recomputed
    assert cache.misses == 7


def test_stereo_or_wrong_rate_audio_is_refused_by_name(tmp_path):
    import pytest

    from siren_bench.data.manifest import ManifestError

    stereo = write_audio(tmp_path / "st.wav", np.stack([tone(0.5, 16000), tone(0.5, 16000, freq=300.0)], axis=1), 16000)
    manifest = pd.DataFrame({"clip_id": ["st"], "sha256": [sha256_file(stereo)], "audio_path": [stereo]})
    with pytest.raises(ManifestError, match=r"st\.wav: 2 channel\(s\) at 16000 Hz; the codec takes mono 16000 Hz"):
        tokenize_clips(_codec(0), manifest, ContentCache(tmp_path / "cache"), batch=2)


def test_two_torchrun_ranks_share_the_clips_and_assemble_the_one_process_codes(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    from tests.conftest import REPO

    manifest = _manifest(tmp_path, [200.0, 300.0, 500.0, 700.0, 1100.0])
    manifest.to_csv(tmp_path / "manifest.csv", index=False)
    torchrun = Path(sys.executable).parent / "torchrun"
    done = subprocess.run([str(torchrun), "--standalone", "--nproc-per-node", "2", "-m", "tests.tokenize_ddp_worker",
                           str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    encoded = [int((tmp_path / f"encoded-rank{r}.txt").read_text()) for r in (0, 1)]
    assert encoded == [3, 2]  # clips 0, 2, 4 on rank 0; 1, 3 on rank 1: each encoded once
    single = tokenize_clips(_codec(0), manifest, ContentCache(tmp_path / "single-cache"), batch=2)
    with np.load(tmp_path / "sharded.npz") as sharded:
        assert sorted(sharded.files) == sorted(single)
        assert all(np.array_equal(sharded[k], single[k]) for k in single)
