"""Rendering (siren_bench/generation.py): a render killed after some batches and restarted from
its resume folder writes the audio an uninterrupted render writes, bit for bit."""

from __future__ import annotations

from types import SimpleNamespace

import pandas as pd
import pytest
import soundfile as sf
import torch

from siren_bench.codecs.base import Codec
from siren_bench.config import ModelConfig
from siren_bench.generation import render
from tests.test_siren import random_text, tiny_siren


class _Codec(Codec):
    """Codes -> a waveform that depends on every code (a stand-in decoder; its `model` only says
    where it runs)."""

    hop_length, sample_rate = 4, 16000
    model = torch.nn.Linear(1, 1)
    encode = layer_features = decode_latent = None

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        frames = (codes.float() / 16).mean(1)  # [B, F]
        return frames.repeat_interleave(self.hop_length, dim=1) * 0.5


class _Encoder:
    def encode(self, captions):
        text = random_text(len(captions), seed=len(captions[0]))
        return SimpleNamespace(tokens=text.tokens, mask=text.mask, pooled=text.pooled)


def _render(out, resume, stop_after=None, seed=5):
    test = pd.DataFrame({"clip_id": [f"c{i}" for i in range(7)], "caption": [f"caption {i}" for i in range(7)]})
    lengths = {f"c{i}": 4 * (3 + i % 3) for i in range(7)}
    config = ModelConfig(guidance=2.0, generation_seed=seed)
    torch.manual_seed(0)
    return render(tiny_siren(), "codes", "siren", _Codec(), _Encoder(), test, lengths, config, out, 2,
                  torch.device("cpu"), resume, stop_after)


def _same_audio(a, b, clips=range(7)) -> list[bool]:
    return [bool((sf.read(a / f"c{i}.wav")[0] == sf.read(b / f"c{i}.wav")[0]).all()) for i in clips]


def test_a_killed_render_resumes_to_the_uninterrupted_audio(tmp_path):
    _render(tmp_path / "whole", None)
    assert _render(tmp_path / "killed", tmp_path / "resume", stop_after=2) == {}  # "killed" after 2 of 4 batches
    assert sorted(p.name for p in (tmp_path / "resume").glob("*.wav")) == ["c0.wav", "c1.wav", "c2.wav", "c3.wav"]
    assert sorted(p.name for p in (tmp_path / "resume").glob("*.done")) == ["batch-000000.done", "batch-000001.done"]
    facts = _render(tmp_path / "killed", tmp_path / "resume")
    assert facts["n_clips"] == 7 and facts["seeding"].startswith("per batch")
    assert all(_same_audio(tmp_path / "whole", tmp_path / "killed"))
    # and the check can fail: the last two batches under another seed give other audio
    for b in (2, 3):
        (tmp_path / "resume" / f"batch-{b:06d}.done").unlink()
    _render(tmp_path / "other", tmp_path / "resume", seed=6)
    assert _same_audio(tmp_path / "whole", tmp_path / "other") == [True] * 4 + [False] * 3


def test_batches_rendered_by_two_torchrun_ranks_are_the_one_process_audio(tmp_path):
    """`siren-bench generate-shard` under torchrun: ranks render alternate batches into the shared
    resume folder; the stage's render then finds every batch and links the one-process audio."""
    import subprocess
    import sys
    from pathlib import Path

    from tests.conftest import REPO

    torchrun = Path(sys.executable).parent / "torchrun"
    done = subprocess.run([str(torchrun), "--standalone", "--nproc-per-node", "2", "-m", "tests.generation_ddp_worker",
                           str(tmp_path / "resume")], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(list((tmp_path / "resume").glob("batch-*.done"))) == 4
    assert _render(tmp_path / "assembled", tmp_path / "resume")["n_clips"] == 7  # nothing left to render: links only
    _render(tmp_path / "whole", None)
    assert all(_same_audio(tmp_path / "whole", tmp_path / "assembled"))


def test_assembling_a_render_with_a_batch_missing_is_refused(tmp_path):
    _render(None, tmp_path / "resume")
    (tmp_path / "resume" / "batch-000001.done").unlink()  # rank 1's share
    import siren_bench.generation as generation

    with pytest.MonkeyPatch.context() as patch:  # as if this process were rank 0 of 2, whose share is done
        patch.setattr(generation, "rank_and_world", lambda: (0, 2))
        patch.setattr(generation, "barrier", lambda: None)
        with pytest.raises(RuntimeError, match=r"batches \[1\] of siren were not rendered"):
            _render(tmp_path / "out", tmp_path / "resume")
    assert not (tmp_path / "out").exists()


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
