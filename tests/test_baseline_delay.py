"""Delay-pattern LM baseline: the pattern round-trips; cached generation reproduces the teacher-
forced logits exactly; no prediction sees a later delayed step; a tiny model learns; sampling is
seeded; the loss honours frame masks; models share no parameters."""

from __future__ import annotations

import pytest
import torch

from baselines.delay_lm import DelayPatternLM, delay_lm_config
from siren_bench.models.patterns import delay
from siren_bench.models.sampling import SamplingConfig
from siren_bench.models.siren import Text
from tests.conftest import paper_scale
from tests.generation_checks import assert_seeded_codes, fit_losses

K, V, TEXT_DIM = 3, 16, 12


def tiny_model(seed: int = 0, **overrides) -> DelayPatternLM:
    torch.manual_seed(seed)
    fields = dict(n_codebooks=K, codebook_size=V, text_dim=TEXT_DIM, dim=32, n_heads=4, n_kv_heads=2, layers=2,
                  dropout=0.0, max_frames=32)
    return DelayPatternLM(delay_lm_config(**(fields | overrides))).eval()


def random_text(batch: int, length: int = 5, seed: int = 1) -> Text:
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(batch, length, dtype=torch.bool)
    mask[0, 3:] = False  # a shorter caption in the batch
    return Text(torch.randn(batch, length, TEXT_DIM, generator=g), mask, torch.randn(batch, TEXT_DIM, generator=g))


def random_codes(batch: int, frames: int, seed: int = 3) -> torch.Tensor:
    return torch.randint(0, V, (batch, K, frames), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("n_codebooks, n_frames", [(1, 4), (2, 1), (4, 7), (8, 3)])
def test_delay_round_trips_and_pads_exactly_the_triangles(n_codebooks, n_frames):
    pad = 99
    codes = torch.randint(0, 50, (2, n_codebooks, n_frames), generator=torch.Generator().manual_seed(n_frames))
    pattern = delay(n_codebooks, n_frames)
    delayed = pattern.sequence(codes, pad)
    assert delayed.shape == (2, n_codebooks, n_frames + n_codebooks - 1)
    assert torch.equal(pattern.frames(delayed), codes)
    expected_pad = torch.tensor([[s < q or s >= q + n_frames for s in range(delayed.shape[2])] for q in range(n_codebooks)])
    assert torch.equal(delayed == pad, expected_pad[None].expand_as(delayed))
    assert torch.equal(pattern.valid(), ~expected_pad)


def test_delay_pattern_on_a_written_out_example():
    codes = torch.tensor([[[1, 2, 3], [4, 5, 6], [7, 8, 9]]])
    assert delay(3, 3).sequence(codes, 0).tolist() == [[[1, 2, 3, 0, 0], [0, 4, 5, 6, 0], [0, 0, 7, 8, 9]]]


@pytest.mark.parametrize("sampling", [SamplingConfig(), SamplingConfig(top_k=4, top_p=0.9, guidance=3.0)])
def test_cached_generation_gives_exactly_the_teacher_forced_logits(sampling):
    model = tiny_model()
    text = random_text(2)
    codes, cached = model.generate(text, 6, sampling, torch.Generator().manual_seed(0), return_logits=True)
    assert codes.shape == (2, K, 6) and cached.shape == (2, K, 6, V)
    with torch.no_grad():
        uncached = model(codes, text)
    torch.testing.assert_close(cached, uncached, rtol=1e-5, atol=1e-5)


def test_no_prediction_sees_its_own_or_a_later_delayed_step():
    model = tiny_model()
    text = random_text(1)
    g = torch.Generator().manual_seed(4)
    codes = random_codes(1, 8)
    step = torch.arange(8)[None, :] + torch.arange(K)[:, None]  # delayed step of (codebook q, frame t)
    with torch.no_grad():
        base = model(codes, text)
        for q, t in [(q, t) for q in range(K) for t in (0, 5)]:
            s0 = t + q
            changed = codes.clone()
            changed[:, q, t] = (changed[:, q, t] + 1) % V
            later = step > s0  # and scramble everything later in the delayed order
            changed[:, later] = torch.randint(0, V, changed[:, later].shape, generator=g)
            after = model(changed, text)
            seen_before = step <= s0  # predictions made at or before step s0 read only steps < s0
            assert torch.equal(after[:, seen_before], base[:, seen_before])
            # and the test can fail: the very next step reads the changed code
            assert not torch.allclose(after[:, step == s0 + 1], base[:, step == s0 + 1])


def test_tiny_model_learns_a_handful_of_clips():
    losses = fit_losses(tiny_model(seed=0), random_codes(4, 8, seed=5), random_text(4), steps=30)
    assert losses[0] > 2.5  # about ln 16 at initialisation
    assert losses[-1] < 0.7 * losses[0], losses[::5]


def test_loss_ignores_masked_frames_and_dropped_captions():
    model = tiny_model()
    text = random_text(2)
    codes = random_codes(2, 6)
    frame_mask = torch.ones(2, 6, dtype=torch.bool)
    frame_mask[1, 4:] = False
    with torch.no_grad():
        base = model.loss(codes, text, frame_mask)
        padded = codes.clone()
        padded[1, :, 4:] = (padded[1, :, 4:] + 1) % V  # only padding frames change
        assert torch.equal(model.loss(padded, text, frame_mask), base)  # nor do later codebooks read them
        padded[1, :, 4:] = -1  # padding may hold anything
        assert torch.equal(model.loss(padded, text, frame_mask), base)
        assert model.loss(padded.clamp_min(0), text) != model.loss(codes, text)  # without the mask they count
        # a masked clip is trained exactly as the clip cut to its length
        torch.testing.assert_close(model(codes, text, frame_mask=frame_mask)[1:, :, :4], model(codes[1:, :, :4], text.select([1])),
                                   rtol=1e-5, atol=1e-5)
        # n_frames replaces the valid-frame count: 10 valid frames x K, 20 x K as denominator
        assert torch.allclose(model.loss(codes, text, frame_mask, n_frames=20), base / 2)
        drop = torch.tensor([True, False])
        other = Text(torch.randn_like(text.tokens), text.mask, torch.randn_like(text.pooled))
        mixed = Text(torch.stack([other.tokens[0], text.tokens[1]]), text.mask, torch.stack([other.pooled[0], text.pooled[1]]))
        assert torch.equal(model.loss(codes, mixed, drop=drop), model.loss(codes, text, drop=drop))
        assert model.loss(codes, mixed) != model.loss(codes, text)


def test_generation_is_seeded_in_range_and_guidance_runs():
    assert_seeded_codes(tiny_model(), random_text(2), K, V, n_frames=5)


def test_guided_greedy_sampling_follows_uncond_plus_scale_times_the_difference():
    model = tiny_model(init_std=0.3)  # large enough weights that the caption moves the logits
    torch.nn.init.normal_(model.null_caption.tokens, std=1.0)  # make the null caption differ clearly
    torch.nn.init.normal_(model.null_caption.pooled, std=1.0)
    text = random_text(2)
    codes = model.generate(text, 5, SamplingConfig(temperature=0, guidance=3.0))
    with torch.no_grad():
        cond = model(codes, text)
        uncond = model(codes, text, drop=torch.ones(2, dtype=torch.bool))
    assert not torch.allclose(cond, uncond, atol=1e-3)
    assert torch.equal(codes, (uncond + 3.0 * (cond - uncond)).argmax(-1))
    assert not torch.equal(codes, cond.argmax(-1))


def test_bad_inputs_are_refused():
    model = tiny_model()
    text = random_text(2)
    with pytest.raises(ValueError, match="n_frames"):
        model.generate(text, 33, SamplingConfig())
    with pytest.raises(ValueError, match="codes must be"):
        model.loss(torch.zeros(2, K + 1, 4, dtype=torch.long), text)
    with pytest.raises(ValueError, match="codes must lie"):
        model.loss(torch.full((2, K, 4), V), text)
    with pytest.raises(ValueError, match="n_frames"):
        model.loss(torch.zeros(2, K, 33, dtype=torch.long), text)
    with pytest.raises(ValueError, match="text must be"):
        model.loss(torch.zeros(3, K, 4, dtype=torch.long), text)
    with pytest.raises(ValueError, match="unknown"):
        delay_lm_config(width=3)


def test_models_share_no_parameters():
    config = delay_lm_config(n_codebooks=K, codebook_size=V, text_dim=TEXT_DIM, dim=32, layers=1)
    a, b = DelayPatternLM(config), DelayPatternLM(config)
    pointers = lambda m: {p.data_ptr() for p in m.parameters()}  # noqa: E731
    assert not pointers(a) & pointers(b)
    assert a.config is not b.config and a.config is not config


def test_paper_scale_is_about_the_published_size():
    """AudioGen-medium is ~1.5 B; with SwiGLU and 768-d text cross-attention this writing has ~1.7 B."""
    with torch.device("meta"):
        model = DelayPatternLM(delay_lm_config(**paper_scale("delay_lm"), n_codebooks=4, codebook_size=2048, text_dim=768))
    count = sum(p.numel() for p in model.parameters())  # EnCodec 16 kHz: 4 codebooks x 2048 entries
    assert model.config.layers == 48 and 1.4e9 < count < 1.9e9, count
