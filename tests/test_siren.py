"""Siren experts: cached collaborative generation reproduces the teacher-forced logits exactly;
no prediction depends on later frames or on codebooks at or above its own; the published
configurations have the published sizes; a tiny model overfits; sampling is seeded."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
import yaml

from siren_bench.config import SirenConfig
from siren_bench.models.collaborative import Siren
from siren_bench.models.official import load_official_expert
from siren_bench.models.sampling import SamplingConfig, sample_codes
from siren_bench.models.siren import SirenExpert, Text
from siren_bench.weights import CheckpointError
from tests.conftest import REPO


def tiny_config(**overrides) -> SirenConfig:
    fields = dict(n_codebooks=4, codebook_size=16, code_dim=8, codebooks_per_expert=2, dim=32, n_heads=4, n_kv_heads=2,
                  temporal_layers=2, depth_layers=2, text_dim=12, dropout=0.0, max_frames=64)
    return SirenConfig(**(fields | overrides))


def tiny_siren(seed: int = 0, **overrides) -> Siren:
    torch.manual_seed(seed)
    config = tiny_config(**overrides)
    model = Siren(config).eval()
    model.set_code_table(torch.randn(config.n_codebooks, config.codebook_size, config.code_dim))
    return model


def random_text(batch: int, length: int = 5, dim: int = 12, seed: int = 1) -> Text:
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(batch, length, dtype=torch.bool)
    mask[0, 3:] = False  # a shorter caption in the batch
    return Text(torch.randn(batch, length, dim, generator=g), mask, torch.randn(batch, dim, generator=g))


@pytest.mark.parametrize("grouping", [dict(), dict(codebooks_per_expert=1), dict(groups=[[0], [1, 2, 3]])])
def test_cached_generation_gives_exactly_the_teacher_forced_logits(grouping):
    model = tiny_siren(**grouping)
    text = random_text(2)
    codes, cached = model.generate(text, 6, SamplingConfig(), torch.Generator().manual_seed(0), return_logits=True)
    assert codes.shape == (2, 4, 6) and cached.shape == (2, 4, 6, 16)
    with torch.no_grad():
        uncached = model(codes, text)
    torch.testing.assert_close(cached, uncached, rtol=1e-5, atol=1e-5)


def test_no_prediction_sees_later_frames_or_its_own_or_higher_codebooks():
    model = tiny_siren()
    text = random_text(1)
    g = torch.Generator().manual_seed(3)
    codes = torch.randint(0, 16, (1, 4, 8), generator=g)
    with torch.no_grad():
        base = model(codes, text)
        t = 4
        for k in range(4):
            changed = codes.clone()
            changed[:, k:, t] = (changed[:, k:, t] + 1) % 16  # codebook k and above at frame t
            changed[:, :, t + 1 :] = torch.randint(0, 16, changed[:, :, t + 1 :].shape, generator=g)  # later frames
            after = model(changed, text)
            torch.testing.assert_close(after[:, k, : t + 1], base[:, k, : t + 1], rtol=0, atol=0)
        # and the test can fail: the previous frame does matter
        earlier = codes.clone()
        earlier[:, :, t - 1] = (earlier[:, :, t - 1] + 1) % 16
        assert not torch.allclose(model(earlier, text)[:, :, t], base[:, :, t])
        # as do the lower codebooks of the same frame (causal conditioning)
        lower = codes.clone()
        lower[:, 0, t] = (lower[:, 0, t] + 1) % 16
        assert not torch.allclose(model(lower, text)[:, 2, t], base[:, 2, t])


def _preset(name: str) -> SirenConfig:
    params = yaml.safe_load((REPO / "conf" / "model" / f"{name}.yaml").read_text())
    fields = {k: v for k, v in params.items() if k in SirenConfig.__dataclass_fields__}
    return SirenConfig(**fields)


OFFICIAL = json.loads((REPO / "tests" / "fixtures" / "siren_official_layout.json").read_text())


def _official_meta_state(shapes: dict[str, list[int]]) -> dict[str, torch.Tensor]:
    return {key: torch.empty(shape, device="meta") for key, shape in shapes.items()}


@pytest.mark.parametrize("name", ["siren_1_6b", "siren_3_1b"])
def test_an_official_state_dict_loads_into_the_preset_with_the_published_size(name):
    """A state dict in the official layout (every key and shape the official SirenExpert has at its
    published config, tests/fixtures/siren_official_layout.json) loads strictly into our preset,
    built on the meta device: same trainable parameters, and the official count (1.64 B / 3.09 B
    for six experts). Ours stores each codebook's decode table (12 x 1024 x 1024, frozen) where the
    official code stores DAC's codebook and out-projection (0.21 M, frozen)."""
    published = OFFICIAL["published_configs"][name]
    config = dataclasses.replace(_preset(name), null_caption=False)
    assert config.expert_groups() == [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9], [10, 11]]
    official = _official_meta_state(published["state_dict_shapes"])
    assert sum(t.numel() for t in official.values()) == published["params_per_expert"]
    with torch.device("meta"):
        expert = SirenExpert(config, [0, 1])
    load_official_expert(expert, official)
    trainable = sum(p.numel() for p in expert.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in expert.parameters() if not p.requires_grad)
    assert trainable == published["trainable_per_expert"]
    assert frozen == 12 * 1024 * 1024
    assert 6 * published["params_per_expert"] == {"siren_1_6b": 1_636_184_064, "siren_3_1b": 3_090_014_208}[name]


def test_an_official_expert_gives_the_official_logits():
    """Weights in the official layout, filled as the fixture records, give the logits the official
    code computed from them (to float32 rounding): the same network, module for module."""
    case = OFFICIAL["tiny_parity"]
    c = case["config"]
    config = SirenConfig(n_codebooks=12, codebook_size=c["codebook_size"], code_dim=c["dac_feature_dim"],
                         text_dim=c["prompt_dim"], dim=c["dim"], n_heads=c["n_heads"], n_kv_heads=c["n_kv_heads"],
                         temporal_layers=c["spatial_layers"], depth_layers=c["factorized_layers"], dropout=0.0,
                         max_frames=c["max_seq_len"], norm_eps=c["norm_eps"], ffn_multiple=c["ffn_multiple_of"],
                         null_caption=False)
    g = torch.Generator().manual_seed(case["weight_seed"])
    state = {k: torch.randn(shape, generator=g) * 0.2 + (1.0 if k.endswith("norm.weight") else 0.0)
             for k, shape in case["state_dict_shapes"].items()}
    start = case["start_codebook"]
    expert = load_official_expert(SirenExpert(config, [start, start + 1]), state).eval()
    gi = torch.Generator().manual_seed(case["input_seed"])
    codes = torch.randint(0, 1024, (2, 12, 5), generator=gi)
    prompt = torch.randn(2, 6, c["prompt_dim"], generator=gi)
    mask = torch.tensor(case["prompt_mask"], dtype=torch.bool)
    pooled = (prompt * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
    with torch.no_grad():
        logits = expert(codes, Text(prompt, mask, pooled))
    for j in range(2):
        torch.testing.assert_close(logits[:, j, :, :16], torch.tensor(case["logits_first_16"][j]), rtol=1e-4, atol=1e-4)
        assert logits[:, j].double().abs().sum().item() == pytest.approx(case["logits_abs_sum"][j], rel=1e-5)
    # and the comparison can fail: our old single bias-free projector cannot load this layout
    state["codebooks.layers.0.projector.bias"] = torch.zeros(7)
    with pytest.raises(CheckpointError, match="does not fit"):
        load_official_expert(SirenExpert(config, [start, start + 1]), state)


def test_an_official_state_dict_needs_null_caption_off():
    case = OFFICIAL["tiny_parity"]
    c = case["config"]
    config = SirenConfig(n_codebooks=12, codebook_size=1024, code_dim=c["dac_feature_dim"], text_dim=c["prompt_dim"],
                         dim=c["dim"], n_heads=c["n_heads"], n_kv_heads=c["n_kv_heads"], temporal_layers=2, depth_layers=1,
                         ffn_multiple=c["ffn_multiple_of"])
    with torch.device("meta"):
        expert = SirenExpert(config, [2, 3])
    with pytest.raises(CheckpointError, match="null_caption must be false"):
        load_official_expert(expert, _official_meta_state(case["state_dict_shapes"]))


def test_tiny_siren_overfits_a_handful_of_clips():
    model = tiny_siren(seed=0)
    model.train()
    text = random_text(4)
    codes = torch.randint(0, 16, (4, 4, 12), generator=torch.Generator().manual_seed(5))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(150):
        loss = sum(expert.loss(codes, text) for expert in model.experts) / len(model.experts)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[0] > 2.5  # about ln 16 at initialisation
    assert losses[-1] < 0.1 * losses[0], losses[::25]


def test_frozen_code_table_gets_no_gradient():
    model = tiny_siren()
    model.train()
    text = random_text(2)
    codes = torch.randint(0, 16, (2, 4, 5))
    model.experts[0].loss(codes, text).backward()
    layer = model.experts[0].codebooks.layers[0]
    assert layer.table.weight.grad is None and not layer.table.weight.requires_grad
    assert layer.projector.weight.grad is not None and layer.projector.bias.grad is not None
    assert all(p.grad is None for p in model.experts[1].parameters())  # experts share nothing


def test_generation_is_seeded_and_guidance_uses_the_null_caption():
    model = tiny_siren()
    text = random_text(2)
    sampling = SamplingConfig(temperature=1.0, top_k=8, top_p=0.9, guidance=3.0)
    a = model.generate(text, 5, sampling, torch.Generator().manual_seed(7))
    b = model.generate(text, 5, sampling, torch.Generator().manual_seed(7))
    c = model.generate(text, 5, sampling, torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.min() >= 0 and a.max() < 16


def test_guided_sampling_follows_uncond_plus_scale_times_the_difference():
    """Greedy guided generation picks, at every step, the argmax of u + s (c - u), where c and u
    are the teacher-forced logits with the caption and with the learned null caption."""
    model = tiny_siren(init_std=0.5)  # weights large enough that the caption decides the argmax
    for expert in model.experts:  # make the null caption differ clearly from the captions
        torch.nn.init.normal_(expert.null_tokens, std=1.0)
        torch.nn.init.normal_(expert.null_pooled, std=1.0)
    text = random_text(2)
    codes = model.generate(text, 5, SamplingConfig(temperature=0, guidance=3.0))
    with torch.no_grad():
        cond = model(codes, text)
        drop = torch.ones(2, dtype=torch.bool)
        uncond = torch.cat([expert(codes, text, drop) for expert in model.experts], dim=1)
    assert not torch.allclose(cond, uncond, atol=1e-3)  # the null caption is really used
    assert torch.equal(codes, (uncond + 3.0 * (cond - uncond)).argmax(-1))
    assert not torch.equal(codes, cond.argmax(-1))  # and guidance changed something


def test_sampling_filters():
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.0]])
    g = torch.Generator().manual_seed(0)
    assert sample_codes(logits, SamplingConfig(temperature=0), g).item() == 1
    assert all(sample_codes(logits, SamplingConfig(top_k=1), g).item() == 1 for _ in range(20))
    assert all(sample_codes(logits, SamplingConfig(top_p=0.01), g).item() == 1 for _ in range(20))
    drawn = {sample_codes(logits, SamplingConfig(top_k=2), g).item() for _ in range(200)}
    assert drawn == {1, 3}
    with pytest.raises(ValueError):
        SamplingConfig(top_p=0.0)


def test_bad_groupings_are_refused():
    with pytest.raises(ValueError, match="does not divide"):
        tiny_config(codebooks_per_expert=3).expert_groups()
    with pytest.raises(ValueError, match="contiguous"):
        tiny_config(groups=[[0, 2], [1, 3]]).expert_groups()


def _token_set(n: int, frames: int, seed: int):
    from siren_bench.models.train import TokenSet

    g = torch.Generator().manual_seed(seed)
    codes = [torch.randint(0, 16, (4, frames + i), generator=g).numpy() for i in range(n)]  # unequal lengths
    return TokenSet(codes, random_text(n, seed=seed))


def test_interrupted_siren_training_resumes_to_the_same_losses(tmp_path):
    from siren_bench.config import ModelConfig
    from siren_bench.models.train import train_expert

    siren = tiny_config(dropout=0.1)
    config = ModelConfig(train_steps=6, batch_size=3, crop_frames=6, checkpoint_every=3, val_every=3, warmup_steps=2,
                         learning_rate=1e-3, grad_accum=2)
    table = torch.randn(4, 16, 8)
    train, val = _token_set(5, 8, 0), _token_set(2, 7, 1)
    args = (1, siren, config, table, train, val)
    full = train_expert(*args, tmp_path / "a", "d", torch.device("cpu"))
    train_expert(*args, tmp_path / "b", "d", torch.device("cpu"), stop_after=3)  # "killed" after step 3
    resumed = train_expert(*args, tmp_path / "b", "d", torch.device("cpu"))
    assert resumed.resumed_from == 3
    assert [r["loss"] for r in resumed.log] == [r["loss"] for r in full.log]
    assert [r.get("val_loss") for r in resumed.log] == [r.get("val_loss") for r in full.log]
    assert full.log[2]["val_loss"] > 0 and "val_loss" not in full.log[0]
    for key, value in full.expert.state_dict().items():
        assert torch.equal(value, resumed.expert.state_dict()[key]), key


def test_an_untrained_siren_folder_is_refused_by_name(tmp_path):
    from siren_bench.models.experts import load_stage_siren
    from siren_bench.weights import CheckpointError

    (tmp_path / "siren.json").write_text('{"trained": false, "reason": "eval.systems does not list siren"}')
    with pytest.raises(CheckpointError, match="not trained.*eval.systems does not list siren"):
        load_stage_siren(tmp_path)


@pytest.mark.parametrize("device, problem", [("gpu", "must be auto, cpu or cuda"), ("cuda", "no CUDA device")])
def test_run_device_is_checked(device, problem):
    from omegaconf import OmegaConf

    from siren_bench.config import ConfigError, RunConfig
    from siren_bench.stage_context import StageContext

    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    context = StageContext(OmegaConf.create({}), "params.yaml", RunConfig(profile="ci", device=device))
    with pytest.raises(ConfigError, match=problem):
        context.device()


def ddp_case(sharding: str = "ddp"):
    """A tiny expert's training inputs (dropout 0, so the data-parallel run must equal one process;
    caption dropout still applies, drawn from the shared batch stream)."""
    from siren_bench.config import ModelConfig

    config = ModelConfig(train_steps=4, batch_size=4, crop_frames=6, checkpoint_every=2, val_every=2, warmup_steps=2,
                         learning_rate=1e-3, grad_accum=2, caption_dropout=0.25, sharding=sharding)
    return 0, tiny_config(dropout=0.0), config, torch.randn(4, 16, 8, generator=torch.Generator().manual_seed(5)), \
        _token_set(6, 8, 0), _token_set(2, 7, 1)


@pytest.mark.parametrize("sharding", ["ddp", "fsdp"])
def test_data_parallel_training_over_two_ranks_equals_one_process(tmp_path, sharding):
    """torchrun with 2 CPU ranks (gloo): each rank trains on half of every batch (clips of unequal
    lengths, so the shards hold unequal frame counts) and the result is the one-process run.
    fsdp: the ranks hold half of each block's parameters and optimizer state, stop after step 2
    and resume from the gathered state; one process then loads that finished state as it is."""
    import json
    import subprocess
    import sys

    from siren_bench.models.train import resume_file, train_expert

    torchrun = Path(sys.executable).parent / "torchrun"
    done = subprocess.run([str(torchrun), "--standalone", "--nproc-per-node", "2", "-m", "tests.siren_ddp_worker",
                           str(tmp_path), sharding], cwd=REPO, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    single = train_expert(*ddp_case(), tmp_path / "single", "d", torch.device("cpu"))
    if sharding == "fsdp":
        index, siren, config, *_ = ddp_case(sharding)
        state = torch.load(resume_file(tmp_path / "resume", config, siren, index, "d"), weights_only=True)
        assert state["by_name"] is True and state["step"] == 4  # gathered from the shards, keyed by name
        assembled = train_expert(*ddp_case(sharding), tmp_path / "resume", "d", torch.device("cpu"))
        assert assembled.resumed_from == 4
        weights = assembled.expert.state_dict()
    else:
        weights = torch.load(tmp_path / "expert.pt", weights_only=True)
    parallel = json.loads((tmp_path / "log.json").read_text())
    assert [r["step"] for r in parallel] == [1, 2, 3, 4]
    # DDP: each step's first of 2 micro-batches kept its gradients local; sharded, none did
    assert json.loads((tmp_path / "no_sync.json").read_text()) == (4 if sharding == "ddp" else 0)
    for a, b in zip(single.log, parallel):  # float32 sums in another order: agreement to ~1e-6
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5)
        assert b.get("val_loss", 0.0) == pytest.approx(a.get("val_loss", 0.0), rel=1e-5)
    for key, value in single.expert.state_dict().items():
        torch.testing.assert_close(weights[key], value, rtol=1e-4, atol=1e-5, msg=key)


def test_plain_causal_attention_is_the_explicit_mask_bit_for_bit_with_dropout():
    """Whole-sequence causal self-attention asks SDPA for is_causal (its flash kernel on a GPU);
    on the CPU that is the explicit lower-triangular mask exactly: outputs, gradients and the
    dropout draws, so the default run's numbers do not depend on which one the code uses."""
    import torch.nn.functional as F

    from siren_bench.models.siren import SelfAttention

    torch.manual_seed(0)
    attention = SelfAttention(tiny_config(dropout=0.1), causal=True).train()
    x = torch.randn(3, 29, attention.output.in_features, requires_grad=True)

    def explicit(module, inputs):
        q, k, v = module.qkv(inputs).split((module.n_heads * module.head_dim,) + (module.n_kv_heads * module.head_dim,) * 2, -1)
        heads = lambda t, n: t.view(*t.shape[:2], n, module.head_dim).transpose(1, 2)  # noqa: E731
        mask = torch.ones(inputs.shape[1], inputs.shape[1], dtype=torch.bool).tril()
        y = F.scaled_dot_product_attention(heads(q, module.n_heads), heads(k, module.n_kv_heads), heads(v, module.n_kv_heads),
                                           attn_mask=mask, dropout_p=module.dropout, enable_gqa=module.n_kv_heads != module.n_heads)
        return module.output(y.transpose(1, 2).reshape(inputs.shape[0], inputs.shape[1], -1))

    results = []
    for forward in (lambda: attention(x), lambda: explicit(attention, x)):
        torch.manual_seed(7)
        out = forward()
        results.append((out, torch.autograd.grad(out.square().sum(), [x, *attention.parameters()]), torch.rand(2)))
    (a, grads_a, after_a), (b, grads_b, after_b) = results
    assert torch.equal(a, b) and all(torch.equal(g, h) for g, h in zip(grads_a, grads_b)) and torch.equal(after_a, after_b)
