"""The GPU benchmark script (benchmarks/gpu/run.py) runs end to end at toy size on the CPU, so it
still works on the day a GPU is lent; its FLOP count is checked against a hand count."""

from __future__ import annotations

import importlib.util
import json

import pytest

from tests.conftest import REPO


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("gpu_bench", REPO / "benchmarks" / "gpu" / "run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_part_runs_at_toy_size_and_writes_its_json(bench, tmp_path):
    out = tmp_path / "gpu.json"
    results = bench.main(["--tiny", "--device", "cpu", "--steps", "1", "--batch", "2", "--frames", "12", "--gen-frames", "3",
                          "--gen-batches", "1,2", "--text-tokens", "4", "--peak-tflops", "1.0", "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(results))
    train = results["train"]
    assert train["tokens_per_s"] > 0 and 0 < train["mfu"] < 1 and train["mfu"] == pytest.approx(train["achieved_tflops"])
    assert set(results["generate"]) == {"batch_1", "batch_2"} and results["generate"]["batch_2"]["real_time_factor"] > 0
    assert results["tokenize"]["codes_shape"] == [2, 4, 500] and results["estimate"]["is_estimate"] is True
    assert set(results["memory"]) == {"shared_lm", "delay_lm", "ar_nar", "latent_diffusion"}
    assert all(m["fits_batch"] == 2 and m["parameters"] > 0 for m in results["memory"].values())
    assert set(results["embed"]) == {"vggish", "panns_cnn14_32k"} and all(e["clips_per_s"] > 0 for e in results["embed"].values())


def test_the_counted_flops_match_a_hand_count_of_the_matmuls(bench):
    """One temporal layer, no depth layers would not build; so: the count grows by exactly the
    hand-counted FLOPs of one more temporal block (forward + backward = 3 x forward)."""
    from siren_bench.config import SirenConfig

    base = dict(n_codebooks=2, codebook_size=16, code_dim=8, text_dim=16, dim=32, n_heads=4, n_kv_heads=4,
                depth_layers=1, ffn_multiple=32)
    frames, tokens = 10, 6
    one = bench.training_flops_per_frame(SirenConfig(temporal_layers=1, **base), frames, tokens) * frames
    two = bench.training_flops_per_frame(SirenConfig(temporal_layers=2, **base), frames, tokens) * frames
    d, h, t = 32, SirenConfig(**base).ffn_hidden, 16
    forward = 2 * (frames * (4 * d * d + 2 * d * d + 3 * d * h) + tokens * 2 * t * d)  # self q,k,v,o; cross q,o; SwiGLU; cross k,v
    forward += 2 * 2 * frames * frames * d + 2 * 2 * frames * tokens * d  # scores and values, self and cross
    assert two - one == pytest.approx(3 * forward, rel=0.02)


def test_the_full_size_estimate_is_labelled_and_positive(bench):
    estimate = bench.estimate(bench.siren_config(False), False, 989.0, 0.4, 0.1, 1.0, 1, 128)
    assert estimate["is_estimate"] and all(v > 0 for v in estimate["gpu_hours"].values())
    assert 1.5e-3 < estimate["training_tflops_per_frame_one_expert"] < 2.5e-3  # ~6 x 0.27 B parameters, plus attention
