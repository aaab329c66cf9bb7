"""Rendering (siren_bench/generation.py): a render killed after some batches and restarted from
its resume folder writes the audio an uninterrupted render writes, bit for bit."""

from __future__ import annotations

from types import SimpleNamespace

import pandas as pd
import pytest
import soundfile as sf
import torch

from siren_bench.config import ModelConfig
from siren_bench.generation import render
from tests.test_siren import random_text, tiny_siren


class _Codec:
    """Codes -> a waveform that depends on every code (a stand-in decoder)."""

    hop_length, sample_rate = 4, 16000

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        frames = (codes.float() / 16).mean(1)  # [B, F]
        return frames.repeat_interleave(self.hop_length, dim=1) * 0.5


class _Encoder:
    def encode(self, captions):
        text = random_text(len(captions), seed=len(captions[0]))
        return SimpleNamespace(tokens=text.tokens, mask=text.mask, pooled=text.pooled)


def _render(out, resume, stop_after=None):
    test = pd.DataFrame({"clip_id": [f"c{i}" for i in range(7)], "caption": [f"caption {i}" for i in range(7)]})
    lengths = {f"c{i}": 4 * (3 + i % 3) for i in range(7)}
    config = ModelConfig(guidance=2.0, generation_seed=5)
    torch.manual_seed(0)
    return render(tiny_siren(), "codes", "siren", _Codec(), _Encoder(), test, lengths, config, out, 2,
                  torch.device("cpu"), resume, stop_after)


def test_a_killed_render_resumes_to_the_uninterrupted_audio(tmp_path):
    _render(tmp_path / "whole", None)
    assert _render(tmp_path / "killed", tmp_path / "resume", stop_after=2) == {}  # "killed" after 2 of 4 batches
    assert sorted(p.name for p in (tmp_path / "resume").glob("*.wav")) == ["c0.wav", "c1.wav", "c2.wav", "c3.wav"]
    facts = _render(tmp_path / "killed", tmp_path / "resume")
    assert facts["n_clips"] == 7
    for i in range(7):
        whole, _ = sf.read(tmp_path / "whole" / f"c{i}.wav")
        resumed, _ = sf.read(tmp_path / "killed" / f"c{i}.wav")
        assert whole.shape == resumed.shape and (whole == resumed).all(), i
    # and the check can fail: a fresh stream for the second half gives other audio
    (tmp_path / "resume" / "generator.pt").unlink()
    for i in range(4, 7):
        (tmp_path / "resume" / f"c{i}.wav").unlink()
    torch.save({"batches": 2, "generator": torch.Generator().manual_seed(99).get_state()}, tmp_path / "resume" / "generator.pt")
    _render(tmp_path / "other", tmp_path / "resume")
    differs = [not (sf.read(tmp_path / "whole" / f"c{i}.wav")[0] == sf.read(tmp_path / "other" / f"c{i}.wav")[0]).all()
               for i in range(4, 7)]
    assert any(differs)


def _pool(tmp_path, n_val: int) -> pd.DataFrame:
    rows = []
    for i in range(n_val):
        path = tmp_path / "val" / f"v{i}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, [0.01 * (i + 1)] * 8, 16000)
        rows.append({"clip_id": f"v{i}", "split": "val", "audio_path": str(path)})
    return pd.DataFrame(rows + [{"clip_id": "t0", "split": "test", "audio_path": "unused"}])


def test_real_unpaired_uses_every_val_clip_before_any_twice(tmp_path):
    """AudioCaps has 495 val clips for 975 test ids: the pool is walked in fresh permutations."""
    from siren_bench.stages.generate import real_unpaired

    test_ids = [f"t{i:02d}" for i in range(7)]
    mapping = real_unpaired(_pool(tmp_path, 3), test_ids, 0, tmp_path / "out", "params.yaml")
    used = list(mapping.values())
    assert sorted(mapping) == test_ids and sorted(used[:3]) == sorted(used[3:6]) == ["v0", "v1", "v2"]
    assert max(used.count(c) for c in set(used)) == 3  # ceil(7 / 3)
    for test_id, clip in mapping.items():  # copied unchanged
        assert (tmp_path / "out" / f"{test_id}.wav").read_bytes() == (tmp_path / "val" / f"{clip}.wav").read_bytes()
    enough = real_unpaired(_pool(tmp_path / "b", 9), test_ids, 0, tmp_path / "out2", "params.yaml")
    assert len(set(enough.values())) == 7  # a large enough pool: no repeats


def test_real_unpaired_without_val_clips_is_an_error(tmp_path):
    from siren_bench.config import ConfigError
    from siren_bench.stages.generate import real_unpaired

    with pytest.raises(ConfigError, match="params.yaml: the real_unpaired system draws from the val split, which has no clips"):
        real_unpaired(_pool(tmp_path, 0), ["t0"], 0, tmp_path / "out", "params.yaml")
