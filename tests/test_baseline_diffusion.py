"""Latent diffusion baseline: DDIM with a perfect denoiser lands on its target and reproduces
Gaussian data; the schedule and the prediction conversions are exact; the training latent is the
codes' summed table rows, standardised; padding and dropped captions are honoured; a tiny model
learns; generation is seeded, guided and un-normalised; models share no tensors."""

from __future__ import annotations

import math

import pytest
import torch

from baselines.latent_diffusion import (PAPER_GUIDANCE, DenoiserBlock, LatentDiffusion,
                                        LatentDiffusionConfig, NoiseSchedule, ddim_sample)
from siren_bench.models.sampling import SamplingConfig
from siren_bench.models.siren import Text
from tests.conftest import paper_scale


def tiny_config(**overrides) -> LatentDiffusionConfig:
    fields = dict(latent_dim=8, n_codebooks=3, codebook_size=16, text_dim=12, dim=64, n_heads=4, n_kv_heads=2,
                  layers=2, dropout=0.0, max_frames=32, sampling_steps=4)
    return LatentDiffusionConfig(**(fields | overrides))


def random_text(batch: int, length: int = 5, dim: int = 12, seed: int = 1) -> Text:
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(batch, length, dtype=torch.bool)
    mask[0, 3:] = False  # a shorter caption in the batch
    return Text(torch.randn(batch, length, dim, generator=g), mask, torch.randn(batch, dim, generator=g))


def random_codes(batch: int, frames: int, config: LatentDiffusionConfig, seed: int = 2) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, config.codebook_size, (batch, config.n_codebooks, frames), generator=g)


def tiny_model(seed: int = 0, **overrides) -> LatentDiffusion:
    torch.manual_seed(seed)
    config = tiny_config(**overrides)
    model = LatentDiffusion(config).eval()
    g = torch.Generator().manual_seed(seed + 100)
    model.set_code_table(torch.randn(config.n_codebooks, config.codebook_size, config.latent_dim, generator=g))
    model.fit_normaliser([random_codes(4, 16, config, seed=seed + 200)])
    return model


# ---------------------------------------------------------------------------------------- sampler


@pytest.mark.parametrize("prediction", ["v", "epsilon"])
@pytest.mark.parametrize("eta", [0.0, 0.8])
def test_ddim_with_a_perfect_denoiser_lands_on_its_target(prediction, eta):
    schedule = NoiseSchedule(1000, "cosine")
    target = torch.randn(2, 3, 5, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    states, implied_noise = [], []

    def oracle(x_t, t):  # the exact output for x0 = target, given x_t and t
        ab = schedule.alpha_bar[t]
        eps = (x_t - ab.sqrt() * target) / (1 - ab).sqrt()
        states.append(x_t.clone())
        implied_noise.append(eps)
        return ab.sqrt() * eps - (1 - ab).sqrt() * target if prediction == "v" else eps

    out = ddim_sample(oracle, (2, 3, 5), schedule, 50, eta, torch.Generator().manual_seed(0), prediction)
    assert out.dtype == torch.float64 and len(implied_noise) == 50
    torch.testing.assert_close(out, target, rtol=0, atol=1e-5)
    start = torch.randn(2, 3, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert torch.equal(states[0], start)  # the first step sees the seeded noise
    if eta == 0:  # deterministic DDIM keeps every x_t on the line a x0 + s eps of one eps
        for eps in implied_noise:
            torch.testing.assert_close(eps, implied_noise[0], rtol=0, atol=1e-8)
    else:
        assert not torch.allclose(implied_noise[-1], implied_noise[0], atol=1e-3)


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_ddim_with_the_exact_posterior_mean_reproduces_gaussian_data(eta):
    """x0 ~ N(mu, tau^2): E[x0 | x_t] = mu + a tau^2 / (a^2 tau^2 + s^2) (x_t - a mu). Samples
    must have mean mu and std tau (a wrong sigma or noise coefficient moves the std)."""
    schedule, mu, tau = NoiseSchedule(), 0.7, 0.5

    def posterior(x_t, t):
        a, s = schedule.coefficients(t, x_t)
        x0 = mu + a * tau**2 / (a**2 * tau**2 + s**2) * (x_t - a * mu)
        return schedule.target(x0, (x_t - a * x0) / s, t, "v")

    out = ddim_sample(posterior, (40000,), schedule, 200, eta, torch.Generator().manual_seed(0), "v")
    assert abs(out.mean().item() - mu) < 0.02 and abs(out.std().item() - tau) < 0.02


def test_schedule_and_prediction_conversions():
    T, s = 1000, 0.008
    schedule = NoiseSchedule(T, "cosine")
    ab = schedule.alpha_bar
    assert ab.dtype == torch.float64 and ab.shape == (T,)
    assert bool((ab[1:] < ab[:-1]).all()) and ab[0] > 0.9999 and ab[-1] < 1e-6
    f = torch.cos((torch.arange(T + 1, dtype=torch.float64) / T + s) / (1 + s) * math.pi / 2) ** 2
    torch.testing.assert_close(ab[:-1], f[1:T] / f[0], rtol=1e-12, atol=0)  # closed form where beta is not clipped
    linear = NoiseSchedule(T, "linear").alpha_bar
    assert bool((linear[1:] < linear[:-1]).all()) and linear[0] > 0.9998 and linear[-1] < 1e-4
    steps = schedule.ddim_timesteps(50)
    assert len(steps) == 50 and steps[0] == T - 1 and steps[-1] == 0 and all(a > b for a, b in zip(steps, steps[1:]))
    with pytest.raises(ValueError):
        schedule.ddim_timesteps(T + 1)

    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(6, 4, 3, generator=g, dtype=torch.float64), torch.randn(6, 4, 3, generator=g, dtype=torch.float64)
    t = torch.tensor([0, 1, 250, 500, 998, 999])
    x_t = schedule.q_sample(x0, t, eps)
    a, sigma = ab[t].sqrt()[:, None, None], (1 - ab[t]).sqrt()[:, None, None]
    torch.testing.assert_close(x_t, a * x0 + sigma * eps, rtol=0, atol=1e-15)
    v = schedule.target(x0, eps, t, "v")
    torch.testing.assert_close(v, a * eps - sigma * x0, rtol=0, atol=1e-15)
    assert schedule.target(x0, eps, t, "epsilon") is eps
    for prediction, output in (("v", v), ("epsilon", eps)):
        back_x0, back_eps = schedule.split(x_t, t, output, prediction)
        torch.testing.assert_close(back_eps, eps, rtol=0, atol=1e-12)
        # from eps, x0 = (x_t - s eps) / a: at t = 999 (a ~ 5e-5) float64 round-off grows to ~1e-11
        torch.testing.assert_close(back_x0, x0, rtol=0, atol=1e-12 if prediction == "v" else 1e-10)


# ---------------------------------------------------------------------------------------- data


def test_latent_is_the_sum_of_the_code_table_rows():
    model = tiny_model()
    config = model.config
    codes = random_codes(2, 7, config, seed=5)
    table = model.code_table
    manual = torch.zeros(2, config.latent_dim, 7)
    for b in range(2):
        for f in range(7):
            for k in range(config.n_codebooks):
                manual[b, :, f] += table[k, codes[b, k, f]]
    torch.testing.assert_close(model.latent(codes), manual, rtol=1e-6, atol=1e-6)
    assert not any(buffer is p for buffer in model.buffers() for p in model.parameters())
    assert "code_table" not in dict(model.named_parameters()) and "code_table" in model.state_dict()
    with pytest.raises(ValueError, match="code table"):
        model.set_code_table(torch.zeros(config.n_codebooks, config.codebook_size + 1, config.latent_dim))


def test_normaliser_standardises_the_training_latents():
    config = tiny_config()
    model = LatentDiffusion(config)
    g = torch.Generator().manual_seed(3)
    # channels with very different offsets and scales
    table = torch.randn(config.n_codebooks, config.codebook_size, config.latent_dim, generator=g)
    model.set_code_table(table * torch.linspace(0.1, 20, config.latent_dim) + torch.linspace(-50, 50, config.latent_dim))
    clips = [random_codes(1, n, config, seed=n)[0] for n in (5, 9, 13)] + [random_codes(2, 6, config, seed=4)]
    model.fit_normaliser(clips)
    assert model.latent_mean.dtype == torch.float32 and model.latent_std.dtype == torch.float32
    latents = torch.cat([model.latent(c[None] if c.dim() == 2 else c, torch.float64).transpose(1, 2).reshape(-1, config.latent_dim)
                         for c in clips])
    normalised = (latents - model.latent_mean.double()) / model.latent_std.double()
    # to float32 storage: a mean of 50 rounds by ~4e-6, over a std of ~0.2
    torch.testing.assert_close(normalised.mean(0), torch.zeros(config.latent_dim, dtype=torch.float64), rtol=0, atol=1e-4)
    torch.testing.assert_close(normalised.std(0, unbiased=False), torch.ones(config.latent_dim, dtype=torch.float64), rtol=0, atol=1e-5)
    torch.testing.assert_close(model.unnormalise(model.normalise(latents.T.float()[None])), latents.T.float()[None], rtol=1e-5, atol=1e-4)
    mean, std = model.latent_mean.clone(), model.latent_std.clone()
    model.fit_normaliser([c.numpy() for c in clips])  # a TokenSet's clips are NumPy arrays
    assert torch.equal(model.latent_mean, mean) and torch.equal(model.latent_std, std)


# ---------------------------------------------------------------------------------------- training


def test_padding_and_dropped_captions_are_honoured():
    model = tiny_model()
    codes = random_codes(2, 10, model.config, seed=6)
    mask = torch.ones(2, 10, dtype=torch.bool)
    mask[1, 6:] = False
    text = random_text(2)

    def loss(codes, text=text, drop=None, n_frames=None):
        torch.manual_seed(11)  # same timesteps and noise
        with torch.no_grad():
            return model.loss(codes, text, mask, drop, n_frames).item()

    base = loss(codes)
    other_padding = codes.clone()
    other_padding[1, :, 6:] = (other_padding[1, :, 6:] + 3) % model.config.codebook_size
    assert loss(other_padding) == base  # padded frames are neither scored nor attended to
    inputs = [model.normalise(model.latent(c)) for c in (codes, other_padding)]
    t = torch.full((2,), 500)
    with torch.no_grad():
        masked = [model.denoiser(x, t, text, mask)[1, :, :6] for x in inputs]
        unmasked = [model.denoiser(x, t, text)[1, :, :6] for x in inputs]
    assert torch.equal(*masked) and not torch.equal(*unmasked)  # the mask, not small weights, hides the padding
    changed_valid = codes.clone()
    changed_valid[1, :, 5] = (changed_valid[1, :, 5] + 3) % model.config.codebook_size
    assert loss(changed_valid) != pytest.approx(base, rel=1e-4)
    assert loss(codes, n_frames=2 * int(mask.sum())) == pytest.approx(base / 2, rel=1e-5)

    drop = torch.tensor([True, False])
    other_text = random_text(2, seed=9)
    mixed = Text(torch.stack([other_text.tokens[0], text.tokens[1]]), torch.stack([other_text.mask[0], text.mask[1]]),
                 torch.stack([other_text.pooled[0], text.pooled[1]]))
    assert loss(codes, drop=drop) != pytest.approx(base, rel=1e-4)  # row 0 now reads the null caption
    assert loss(codes, mixed, drop) == pytest.approx(loss(codes, drop=drop), rel=1e-6)  # a dropped caption is not read

    # the masked self-attention path is TemporalBlock's own computation when nothing is masked
    block = model.denoiser.blocks[0]
    assert isinstance(block, DenoiserBlock)
    x = torch.randn(2, 10, model.config.dim)
    with torch.no_grad():
        torch.testing.assert_close(block(x, text.tokens, text.mask, torch.ones(2, 10, dtype=torch.bool)),
                                   block(x, text.tokens, text.mask), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("prediction, ratio", [("v", 0.75), ("epsilon", 0.85)])
def test_a_tiny_model_learns(prediction, ratio):
    torch.manual_seed(0)
    config = tiny_config(prediction=prediction)
    model = LatentDiffusion(config)
    g = torch.Generator().manual_seed(1)
    model.set_code_table(torch.randn(config.n_codebooks, config.codebook_size, config.latent_dim, generator=g))
    # four fixed clips, each one random frame of codes held for 16 frames (a sustained sound)
    codes = torch.randint(0, config.codebook_size, (4, config.n_codebooks, 1), generator=g).expand(-1, -1, 16).contiguous()
    text = random_text(4)
    model.fit_normaliser([codes])

    def evaluation() -> float:  # fixed timesteps and noise
        torch.manual_seed(123)
        with torch.no_grad():
            return sum(model.loss(codes, text).item() for _ in range(4)) / 4

    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    before, losses = evaluation(), []
    for step in range(40):
        torch.manual_seed(1000 + step)
        loss = model.loss(codes, text)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    after = evaluation()
    assert after < ratio * before, (before, after)
    assert sum(losses[-5:]) < sum(losses[:5])


# ---------------------------------------------------------------------------------------- generation


def test_generation_is_seeded_guided_and_checked():
    model = tiny_model()
    config = model.config
    text = random_text(2)
    plain = SamplingConfig()

    def generate(seed: int, sampling: SamplingConfig = plain, n_frames: int = 6) -> torch.Tensor:
        return model.generate(text, n_frames, sampling, torch.Generator().manual_seed(seed))

    first = generate(0)
    assert first.dtype == torch.float32 and first.shape == (2, config.latent_dim, 6)
    assert torch.isfinite(first).all()
    assert torch.equal(first, generate(0))
    assert not torch.allclose(first, generate(1))
    assert model.output == "latent"
    guided_out = generate(0, SamplingConfig(guidance=3.0))
    assert guided_out.shape == first.shape and torch.isfinite(guided_out).all() and not torch.allclose(guided_out, first)

    with pytest.raises(ValueError, match="n_frames"):
        generate(0, n_frames=config.max_frames + 1)
    with pytest.raises(ValueError, match="text"):
        model.generate(random_text(2, dim=7), 4, plain)
    fresh = LatentDiffusion(config)
    with pytest.raises(ValueError, match="code table"):
        fresh.generate(text, 4, plain)
    with pytest.raises(ValueError, match="code table"):
        fresh.loss(random_codes(2, 4, config), text)
    fresh.set_code_table(model.code_table)
    with pytest.raises(ValueError, match="normaliser"):
        fresh.generate(text, 4, plain)


def test_generation_unnormalises_and_combines_guidance_in_the_right_direction():
    """A stub denoiser whose x0 estimate is +1 for caption rows and -1 for null-caption rows (in
    normalised units): DDIM returns mean + std x (-1 + g (1 - (-1)))."""
    model = tiny_model()
    model.latent_mean.copy_(torch.linspace(-3, 3, model.config.latent_dim))
    model.latent_std.copy_(torch.linspace(0.5, 4, model.config.latent_dim))
    B = 2

    class Stub(torch.nn.Module):
        def forward(self, x_t, t, text, frame_mask=None):
            a, s = model.schedule.coefficients(t, x_t)
            x0 = torch.ones_like(x_t)
            x0[B:] = -1  # the doubled batch's null-caption rows
            return (a * x_t - x0) / s  # the v whose x0 estimate is x0

    model.denoiser = Stub()
    for guidance in (1.0, 3.0):
        out = model.generate(random_text(B), 5, SamplingConfig(guidance=guidance), torch.Generator().manual_seed(0))
        value = 1.0 if guidance == 1.0 else -1 + guidance * 2
        expected = (model.latent_mean + model.latent_std * value)[None, :, None].expand(B, -1, 5)
        torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------------------------------- configuration


def test_models_share_no_tensors_and_configs_are_checked():
    config = tiny_config()
    one, two = LatentDiffusion(config), LatentDiffusion(config)
    pointers = lambda m: {t.data_ptr() for t in (*m.parameters(), *m.buffers())}  # noqa: E731
    assert not pointers(one) & pointers(two)
    with torch.no_grad():
        next(one.parameters()).add_(1.0)
    assert not torch.equal(next(one.parameters()), next(two.parameters()))

    for bad in (dict(prediction="x0"), dict(schedule="sigmoid"), dict(sampling_steps=0), dict(sampling_steps=1001), dict(eta=-1)):
        with pytest.raises(ValueError):
            tiny_config(**bad)

    paper = LatentDiffusionConfig(**paper_scale("latent_diffusion"))
    assert paper.sampling_steps == 200 and PAPER_GUIDANCE == 3.0
    with torch.device("meta"):
        size = sum(p.numel() for p in LatentDiffusion(paper).parameters())
    assert 0.35e9 < size < 0.45e9, size
