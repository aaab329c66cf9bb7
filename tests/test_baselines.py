"""The baselines behind one interface: each builds from the registry, trains a few steps through
the shared loop with falling loss, saves and loads back exactly, generates the right shapes; the
shared LM is one Siren expert over every codebook; gradient interference is measured right."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from baselines import registry
from baselines.shared_lm import SharedLM
from siren_bench.config import ModelConfig, SirenConfig
from siren_bench.diagnostics.interference import codebook_gradient_cosines, interference_probe, parameter_chunks
from siren_bench.diagnostics.orthogonality import off_diagonal_summary
from siren_bench.models.sampling import SamplingConfig
from siren_bench.models.train import TokenSet, train_model
from tests.test_siren import random_text

K, V, D, TEXT = 4, 16, 8, 12
SHAPE = {"n_codebooks": K, "codebook_size": V, "code_dim": D, "latent_dim": D, "text_dim": TEXT, "max_frames": 64}
SMALL = {"shared_lm": {"dim": 32, "n_heads": 4, "n_kv_heads": 2, "temporal_layers": 1, "depth_layers": 1, "dropout": 0.0},
         "delay_lm": {"dim": 32, "n_heads": 4, "n_kv_heads": 2, "layers": 2, "dropout": 0.0},
         "ar_nar": {"dim": 32, "n_heads": 4, "n_kv_heads": 2, "ar_layers": 1, "nar_layers": 1, "dropout": 0.0},
         "latent_diffusion": {"dim": 32, "n_heads": 4, "n_kv_heads": 2, "layers": 2, "dropout": 0.0, "sampling_steps": 4,
                             "prediction": "epsilon"}}  # v-prediction falls more slowly at first (tests/test_baseline_diffusion.py)


@pytest.fixture(scope="module")
def tokens() -> TokenSet:
    rng = np.random.default_rng(0)
    # learnable structure: codebook k repeats a clip-specific pattern, shifted by k
    codes = [np.stack([(np.arange(12) * (i + 1) + k) % V for k in range(K)]).astype(np.int64) for i in range(6)]
    del rng
    return TokenSet(codes, random_text(6))


def _training(**overrides) -> ModelConfig:
    return ModelConfig(**({"train_steps": 80, "batch_size": 4, "crop_frames": 12, "learning_rate": 3e-3, "warmup_steps": 2,
                           "checkpoint_every": 80, "val_every": 80, "caption_dropout": 0.1, "interference_every": 0} | overrides))


def _build(name: str):
    torch.manual_seed(0)
    model, config = registry.build(name, SMALL[name], SHAPE)
    model.set_code_table(torch.randn(K, V, D))
    return model, config


@pytest.mark.parametrize("name", registry.names())
def test_each_baseline_trains_with_falling_loss_saves_loads_and_generates(name, tokens, tmp_path):
    model, config = _build(name)
    if hasattr(model, "fit_normaliser"):
        model.fit_normaliser(tokens.codes)
    log, start = train_model(model, name, _training(), tokens, None, tmp_path / "state.pt", torch.device("cpu"), [0, 1])
    first, last = np.mean([r["loss"] for r in log[:5]]), np.mean([r["loss"] for r in log[-5:]])
    assert start == 0 and last < 0.8 * first, (first, last)
    registry.save(model, name, config, tmp_path / name, {"parameters": registry.parameter_count(model)})
    loaded, info = registry.load(tmp_path / name)
    assert type(loaded) is type(model) and info["name"] == name and len(info["weights_sha256"]) == 64
    for key, value in model.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key
    out = loaded.generate(random_text(2), 5, SamplingConfig(guidance=2.0), torch.Generator().manual_seed(0))
    if loaded.output == "codes":
        assert out.shape == (2, K, 5) and out.dtype == torch.int64 and 0 <= int(out.min()) and int(out.max()) < V
    else:
        assert out.shape == (2, D, 5) and torch.isfinite(out).all()


def test_baselines_share_no_mutable_state():
    models = {name: _build(name)[0] for name in registry.names()}
    seen: dict[int, str] = {}
    for name, model in models.items():
        for tensor in [*model.parameters(), *model.buffers()]:
            assert seen.setdefault(tensor.data_ptr(), name) == name, f"{name} shares a tensor with {seen[tensor.data_ptr()]}"


def test_unknown_architecture_keys_are_refused():
    with pytest.raises(ValueError, match="unknown keys"):
        registry.build("delay_lm", {"depth": 3}, SHAPE, "params.yaml")


def test_the_shared_lm_is_one_siren_expert_over_every_codebook():
    model, _ = _build("shared_lm")
    assert isinstance(model, SharedLM) and model.group == list(range(K)) and len(model.heads) == K


def test_gradient_cosines_match_a_direct_computation_and_see_conflict():
    """Per-codebook trunk gradients computed one backward at a time give the same cosines; a
    codebook whose target is the negation of another's in a linear trunk gives cosine -1."""
    torch.manual_seed(0)
    model = SharedLM(SirenConfig(n_codebooks=3, codebook_size=V, code_dim=D, dim=32, n_heads=4, n_kv_heads=2,
                                 temporal_layers=1, depth_layers=1, text_dim=TEXT, dropout=0.0))
    model.set_code_table(torch.randn(3, V, D))
    codes = torch.randint(0, V, (2, 3, 7), generator=torch.Generator().manual_seed(1))
    mask = torch.ones(2, 7, dtype=torch.bool)
    text = random_text(2)
    cosines = codebook_gradient_cosines(model, codes, text, mask)
    trunk = [p for n, p in model.named_parameters() if p.requires_grad and not n.startswith("heads.")]
    direct = []
    for j in range(3):
        model.zero_grad()
        logits = model(codes, text)[:, j]
        torch.nn.functional.cross_entropy(logits.flatten(0, 1), codes[:, j].flatten()).backward()
        direct.append(torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten() for p in trunk]).double())
    direct = torch.stack(direct)
    expected = (direct @ direct.T) / (direct.norm(dim=1)[:, None] * direct.norm(dim=1)[None])
    np.testing.assert_allclose(cosines, expected.numpy(), atol=1e-5)
    assert np.allclose(np.diag(cosines), 1.0) and model.training  # restored to training mode
    # a model too large for one pass: the Gram matrix summed over parameter chunks is the same
    trunk_values = sum(p.numel() for p in trunk)
    chunks = parameter_chunks(trunk, 3, budget=12 * 3 * trunk_values // 5)
    assert 5 <= len(chunks) < len(trunk) and [p for c in chunks for p in c] == trunk
    assert all(12 * 3 * sum(p.numel() for p in c) <= 12 * 3 * trunk_values // 5 for c in chunks if len(c) > 1)
    chunked = codebook_gradient_cosines(model, codes, text, mask, budget=12 * 3 * trunk_values // 5)
    np.testing.assert_allclose(chunked, cosines, rtol=0, atol=1e-12)
    assert parameter_chunks(trunk, 3) == [trunk]
    summary = off_diagonal_summary(np.array([[1.0, -1.0], [-1.0, 1.0]]))
    assert summary == {"mean": -1.0, "min": -1.0, "negative_share": 1.0, "pairs": 1}


def test_a_probed_run_trains_exactly_like_an_unprobed_one(tokens, tmp_path):
    """The interference probe runs in eval mode on a fixed batch and draws no random numbers."""
    logs = []
    for every in (0, 7):
        torch.manual_seed(0)
        model, _ = registry.build("shared_lm", SMALL["shared_lm"] | {"dropout": 0.2}, SHAPE)  # dropout draws random numbers
        model.set_code_table(torch.randn(K, V, D))
        config = _training(train_steps=15, interference_every=every)
        probe = interference_probe(config, tokens)
        log, _ = train_model(model, "shared", config, tokens, None, tmp_path / f"s{every}.pt", torch.device("cpu"), [0, 2],
                             probe=probe)
        logs.append(log)
    assert [r["loss"] for r in logs[0]] == [r["loss"] for r in logs[1]]
    probed = [r for r in logs[1] if "interference" in r]
    assert [r["step"] for r in probed] == [1, 7, 14, 15] and np.array(probed[0]["interference"]).shape == (K, K)


def test_every_registered_baseline_has_a_default_section_and_its_own_seed():
    import yaml

    from tests.conftest import REPO

    tiny = yaml.safe_load((REPO / "conf" / "baselines" / "tiny.yaml").read_text())
    assert sorted(tiny) == registry.names() == ["ar_nar", "delay_lm", "latent_diffusion", "shared_lm"]
    offsets = [registry.spec(name).seed_offset for name in registry.names()]
    assert len(set(offsets)) == len(offsets) and all(o > 0 for o in offsets)  # Siren's experts use offsets 0..E-1


def test_the_matched_paper_scale_baselines_are_within_10_percent_of_siren():
    """conf/baselines/matched_1_6b.yaml is what `siren-bench match-baselines model=siren_1_6b
    baselines=paper` computes today, and every baseline there is within 10 % of Siren 1.6B's
    trainable parameters (counted on the meta device)."""
    import yaml
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from baselines import sizing
    from siren_bench.config import baselines_config, model_config
    from tests.conftest import REPO

    def composed(*overrides):
        with initialize_config_dir(config_dir=str(REPO / "conf"), version_base=None):
            return OmegaConf.create(OmegaConf.to_container(compose(config_name="config", overrides=list(overrides)), resolve=True))

    paper = composed("model=siren_1_6b", "baselines=paper")
    siren = sizing.siren_of(model_config(paper))
    matched = sizing.match_depths(siren, baselines_config(paper), registry.names())
    committed = yaml.safe_load((REPO / "conf" / "baselines" / "matched_1_6b.yaml").read_text())
    assert committed == sizing.overrides(matched, baselines_config(paper))
    target = sizing.siren_trainable(siren)
    assert target == matched["siren_trainable_parameters"] > 1.5e9
    architectures = baselines_config(composed("model=siren_1_6b", "baselines=matched_1_6b"))
    shape = {"n_codebooks": 12, "codebook_size": 1024, "code_dim": 1024, "latent_dim": 1024, "text_dim": 768, "max_frames": 2048}
    for name in registry.names():
        count = sizing.baseline_trainable(name, registry.architecture(name, siren, architectures[name]), shape)
        assert abs(count / target - 1) <= sizing.TOLERANCE, (name, count, target)


def test_the_smoke_profile_compares_siren_with_baselines_of_its_size():
    """The default run's Siren and baselines at the smoke codec's shape (8 x 256 codes of 128-d
    log-mel vectors, MiniLM's 384-d text): the shared LM within 5 % of Siren's trainable
    parameters, every other baseline within 10 % (the counts the baselines card states)."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from baselines import sizing
    from siren_bench.config import baselines_config, model_config
    from tests.conftest import REPO

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base=None):
        params = OmegaConf.create(OmegaConf.to_container(compose(config_name="config", overrides=[
            "model.n_codebooks=8", "model.codebook_size=256", "model.code_dim=128", "model.text_dim=384"]), resolve=True))
    assert params.codec.n_codebooks == 8 and params.codec.codebook_size == 256 and params.codec.n_mels == 128
    siren = sizing.siren_of(model_config(params))
    target = sizing.siren_trainable(siren)
    shape = {"n_codebooks": 8, "codebook_size": 256, "code_dim": 128, "latent_dim": 128, "text_dim": 384, "max_frames": siren.max_frames}
    architectures = baselines_config(params)
    ratios = {name: sizing.baseline_trainable(name, registry.architecture(name, siren, architectures[name]), shape) / target
              for name in registry.names()}
    assert abs(ratios["shared_lm"] - 1) <= 0.05, ratios
    assert all(abs(r - 1) <= sizing.TOLERANCE for r in ratios.values()), ratios


def ddp_delay_case():
    """The delay LM without dropout (its loss is deterministic given the batch), clips of unequal
    lengths, caption dropout drawn from the shared batch stream."""
    rng = np.random.default_rng(3)
    codes = [rng.integers(0, V, size=(K, 8 + i)).astype(np.int64) for i in range(6)]
    torch.manual_seed(0)
    model, _ = registry.build("delay_lm", SMALL["delay_lm"], SHAPE)
    config = _training(train_steps=4, batch_size=4, crop_frames=6, checkpoint_every=2, grad_accum=2, caption_dropout=0.25)
    return model, config, TokenSet(codes, random_text(6))


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_baseline_trains_data_parallel_over_two_ranks_as_in_one_process(tmp_path):
    """The one engine's DDP path serves a baseline as it serves Siren's experts: 2 gloo ranks,
    each on half of every batch, end where one process ends (float rounding apart). The ranks
    come from two torchrun launchers (one process each) that meet through torchrun's c10d
    rendezvous, as two machines do (`--nnodes 2 --rdzv-endpoint host:port`), here both on this
    machine (one launcher with 2 ranks, `--standalone`, is test_siren.py's DDP test)."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    from tests.conftest import REPO

    torchrun = str(Path(sys.executable).parent / "torchrun")
    worker = ["-m", "tests.baseline_ddp_worker", str(tmp_path)]
    rendezvous = ["--nnodes", "2", "--nproc-per-node", "1", "--rdzv-backend", "c10d",
                  "--rdzv-endpoint", f"127.0.0.1:{_free_port()}", "--rdzv-id", "siren-bench-test"]
    launchers = [[torchrun, *rendezvous, *worker] for _ in range(2)]
    running = [subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for args in launchers]
    for process in running:
        _, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr[-3000:]
    model, config, tokens = ddp_delay_case()
    log, _ = train_model(model, "delay_lm", config, tokens, None, tmp_path / "single.pt", torch.device("cpu"), [0, 7])
    parallel = json.loads((tmp_path / "log.json").read_text())
    assert [r["step"] for r in parallel] == [1, 2, 3, 4]
    for a, b in zip(log, parallel):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5) and b["frames"] == a["frames"]
    weights = torch.load(tmp_path / "model.pt", weights_only=True)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(weights[key], value, rtol=1e-4, atol=1e-5, msg=key)
