"""AR + NAR baseline (VALL-E style): cached AR generation reproduces the teacher-forced logits;
the AR never sees the current or later frames of codebook 0, the NAR stage k never sees
codebooks >= k but sees codebooks < k at every frame; a tiny model learns; generation is seeded
and greedy NAR passes depend only on codebook 0 and the caption; models share nothing."""

from __future__ import annotations

import pytest
import torch

from baselines.ar_nar import ArNarConfig, ArNarLM
from siren_bench.models.sampling import SamplingConfig
from siren_bench.models.siren import Text
from tests.conftest import paper_scale
from tests.generation_checks import assert_seeded_codes, fit_losses

K, V, TEXT_DIM = 4, 16, 12


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny matrices: one thread is fastest and does not fight a busy machine for cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_model(seed: int = 0, **overrides) -> ArNarLM:
    torch.manual_seed(seed)
    fields = dict(n_codebooks=K, codebook_size=V, text_dim=TEXT_DIM, dim=32, n_heads=4, n_kv_heads=2, ar_layers=2,
                  nar_layers=2, dropout=0.0, max_frames=64, ffn_multiple=32)
    return ArNarLM(ArNarConfig(**(fields | overrides))).eval()


def random_text(batch: int, length: int = 5, dim: int = TEXT_DIM, seed: int = 1) -> Text:
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(batch, length, dtype=torch.bool)
    mask[0, 3:] = False  # a shorter caption in the batch
    return Text(torch.randn(batch, length, dim, generator=g), mask, torch.randn(batch, dim, generator=g))


def random_codes(batch: int, frames: int, seed: int = 3) -> torch.Tensor:
    return torch.randint(0, V, (batch, K, frames), generator=torch.Generator().manual_seed(seed))


def test_cached_ar_generation_gives_exactly_the_teacher_forced_logits():
    model = tiny_model()
    text = random_text(2)
    codes, cached = model.generate(text, 7, SamplingConfig(), torch.Generator().manual_seed(0), return_logits=True)
    assert codes.shape == (2, K, 7) and cached.shape == (2, 7, V)
    with torch.no_grad():
        uncached = model.forward_ar(codes, text)
    torch.testing.assert_close(cached, uncached, rtol=1e-5, atol=1e-5)


def test_ar_is_causal_over_frames():
    model = tiny_model()
    text = random_text(1)
    codes = random_codes(1, 8)
    t = 4
    with torch.no_grad():
        base = model.forward_ar(codes, text)
        changed = codes.clone()
        changed[:, 0, t] = (changed[:, 0, t] + 1) % V
        changed[:, 1:] = (changed[:, 1:] + 5) % V  # the AR reads codebook 0 only
        after = model.forward_ar(changed, text)
    torch.testing.assert_close(after[:, : t + 1], base[:, : t + 1], rtol=0, atol=0)
    assert not torch.allclose(after[:, t + 1], base[:, t + 1])  # the next frame does see it


@pytest.mark.parametrize("stage", [1, 2, 3])
def test_nar_stage_reads_only_lower_codebooks_at_every_frame(stage):
    model = tiny_model()
    text = random_text(1)
    codes = random_codes(1, 8)
    with torch.no_grad():
        base = model.forward_nar(codes, stage, text)
        higher = codes.clone()
        higher[:, stage:] = (higher[:, stage:] + 7) % V  # the target codebook and above
        torch.testing.assert_close(model.forward_nar(higher, stage, text), base, rtol=0, atol=0)
        lower = codes.clone()
        lower[:, stage - 1, 6] = (lower[:, stage - 1, 6] + 1) % V  # a lower codebook at a later frame
        after = model.forward_nar(lower, stage, text)
    assert not torch.allclose(after[:, 2], base[:, 2])  # bidirectional: frame 2 sees frame 6


def test_tiny_model_learns_a_handful_of_clips():
    losses = fit_losses(tiny_model(seed=0), random_codes(4, 10, seed=5), random_text(4), steps=40)
    assert losses[0] > 4.5  # about 2 ln 16 at initialisation
    assert losses[-1] < 0.7 * losses[0], losses[::5]


def test_loss_honours_frame_mask_caption_dropout_and_n_frames():
    model = tiny_model()
    text = random_text(2)
    codes = random_codes(2, 6)
    mask = torch.ones(2, 6, dtype=torch.bool)
    mask[1, 4:] = False
    drop = torch.tensor([False, True])

    def loss(**kwargs):
        torch.manual_seed(11)  # the same NAR stages each call
        return model.loss(codes, text, **kwargs).item()

    full, masked = loss(), loss(frame_mask=mask)
    assert masked != full
    assert loss(frame_mask=mask, n_frames=20) == pytest.approx(masked * 10 / 20, rel=1e-5)  # 10 valid frames
    assert loss(drop=drop) != full


def test_generation_is_seeded_in_range_and_guided():
    assert_seeded_codes(tiny_model(), random_text(2), K, V, n_frames=6)


def test_greedy_nar_is_a_function_of_codebook_zero_and_the_text():
    model = tiny_model()
    text = random_text(2)
    sampling = SamplingConfig(temperature=1.0)
    a = model.generate(text, 6, sampling, torch.Generator().manual_seed(1))
    redone = model.complete(a[:, 0], text, sampling, torch.Generator().manual_seed(99))
    assert torch.equal(redone, a)
    with torch.no_grad():  # and each pass is the argmax of the teacher-forced NAR logits
        for k in range(1, K):
            assert torch.equal(a[:, k], model.forward_nar(a, k, text).argmax(-1))
    # the test can fail: sampled NAR passes do depend on the seed
    sampled = tiny_model(nar_sampling="sample")
    x = sampled.complete(a[:, 0], text, sampling, torch.Generator().manual_seed(1))
    y = sampled.complete(a[:, 0], text, sampling, torch.Generator().manual_seed(2))
    assert torch.equal(x[:, 0], a[:, 0]) and not torch.equal(x, y)


def test_models_share_no_parameters():
    config = ArNarConfig(n_codebooks=K, codebook_size=V, text_dim=TEXT_DIM, dim=32, ar_layers=1, nar_layers=1)
    one, two = ArNarLM(config), ArNarLM(config)
    pointers = {p.data_ptr() for p in one.parameters()}
    assert not pointers & {p.data_ptr() for p in two.parameters()}
    assert len(pointers) == len(list(one.parameters()))  # and no tensor is tied within a model


def test_bad_inputs_are_refused():
    model = tiny_model()
    text = random_text(2)
    with pytest.raises(ValueError, match="n_frames"):
        model.generate(text, 65, SamplingConfig())
    with pytest.raises(ValueError, match="codes must be"):
        model.loss(torch.zeros(2, K + 1, 5, dtype=torch.long), text)
    with pytest.raises(ValueError, match="codes must be"):
        model.forward_ar(torch.zeros(2, K, 65, dtype=torch.long), text)
    with pytest.raises(ValueError, match="text tokens"):
        model.loss(random_codes(3, 5), text)
    with pytest.raises(ValueError, match="stage"):
        model.forward_nar(random_codes(2, 5), K, text)
    with pytest.raises(ValueError, match="nar_sampling"):
        ArNarConfig(nar_sampling="beam")


def test_paper_scale_is_valle_sized():
    config = ArNarConfig(n_codebooks=8, codebook_size=1024, **paper_scale("ar_nar"))
    with torch.device("meta"):
        model = ArNarLM(config)
    blocks = sum(p.numel() for part in (model.ar.blocks, model.nar.blocks) for p in part.parameters())
    assert len(model.ar.blocks) == len(model.nar.blocks) == 12 and config.dim == 1024 and config.n_heads == 16
    assert 250e6 < blocks < 450e6, blocks  # 24 layers of width 1024 with cross-attention


def test_guided_greedy_generation_follows_uncond_plus_scale_times_the_difference():
    """Both parts pick the argmax of u + s (c - u), c and u the teacher-forced logits with the
    caption and with the shared learned null caption."""
    model = tiny_model()
    torch.nn.init.normal_(model.null.tokens, std=1.0)  # a null caption clearly unlike the captions
    torch.nn.init.normal_(model.null.pooled, std=1.0)
    text = random_text(2)
    codes = model.generate(text, 6, SamplingConfig(temperature=0, guidance=3.0))
    drop = torch.ones(2, dtype=torch.bool)
    with torch.no_grad():
        cond, uncond = model.forward_ar(codes, text), model.forward_ar(codes, text, drop)
        assert not torch.allclose(cond, uncond, atol=1e-3)
        assert torch.equal(codes[:, 0], (uncond + 3.0 * (cond - uncond)).argmax(-1))
        for k in range(1, K):
            cond, uncond = model.forward_nar(codes, k, text), model.forward_nar(codes, k, text, drop)
            assert torch.equal(codes[:, k], (uncond + 3.0 * (cond - uncond)).argmax(-1))
