"""Anti-causal alignment (models/align.py): a reward that prefers a token raises its probability;
with a flat reward the KL term pulls the policy back to the reference; nothing but the tuned
expert receives a gradient; resumption continues to the same numbers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from siren_bench.models.align import AlignConfig, Aligner, AudioReward, clipped_objective, group_advantages
from tests.test_siren import random_text, tiny_siren

TOKEN = 3


def _prefers_token(codes: torch.Tensor, clip_index: np.ndarray) -> torch.Tensor:
    """Reward = share of codebook 0's codes that equal TOKEN (seen only through the full stack)."""
    return (codes[:, 0] == TOKEN).double().mean(1)


def _token_probability(aligner: Aligner, text) -> float:
    codes = torch.zeros(2, 4, 6, dtype=torch.long)
    with torch.no_grad():
        logits = aligner.policy(codes, text.select(torch.arange(2)))
    return float(logits[:, 0].softmax(-1)[..., TOKEN].mean())


def _config(**overrides) -> AlignConfig:
    return AlignConfig(**(dict(steps=12, captions_per_step=2, group_size=4, n_frames=6, learning_rate=3e-3, kl_coef=0.0, warmup_steps=2,
                               checkpoint_every=4) | overrides))


def test_a_reward_that_prefers_a_token_raises_its_probability(tmp_path):
    text = random_text(3)
    aligner = Aligner(tiny_siren(), _config(), _prefers_token)
    before = _token_probability(aligner, text)
    log = aligner.train(text, tmp_path / "state.pt")
    after = _token_probability(aligner, text)
    assert after > 2 * before, (before, after)
    assert np.mean([r["reward_mean"] for r in log[-3:]]) > np.mean([r["reward_mean"] for r in log[:3]])


def test_with_a_flat_reward_the_kl_term_pulls_the_policy_back_to_the_reference(tmp_path):
    text = random_text(3)
    aligner = Aligner(tiny_siren(), _config(kl_coef=1.0, learning_rate=1e-2, steps=20), lambda c, i: torch.ones(len(i)))
    with torch.no_grad():  # move the policy away from the Stage-1 expert it must return to
        for p in aligner.policy.heads.parameters():
            p.add_(0.3 * torch.randn_like(p))
    log = aligner.train(text, tmp_path / "state.pt")
    assert all(r["advantage_abs_mean"] == 0.0 for r in log)  # a flat reward gives no advantage
    assert log[-1]["kl"] < 0.25 * log[0]["kl"] and log[0]["kl"] > 1e-3


def test_a_flat_reward_without_drift_leaves_the_policy_where_it_is(tmp_path):
    aligner = Aligner(tiny_siren(), _config(kl_coef=0.1, steps=3), lambda c, i: torch.full((len(i),), 0.5))
    start = {k: v.clone() for k, v in aligner.policy.state_dict().items()}
    log = aligner.train(random_text(3), tmp_path / "state.pt")
    assert all(r["kl"] == 0.0 for r in log)
    for key, value in aligner.policy.state_dict().items():
        assert torch.equal(value, start[key]), key


def test_no_gradient_reaches_the_frozen_experts_or_the_reward_models(tmp_path):
    siren = tiny_siren()
    frozen = {k: v.clone() for k, v in siren.state_dict().items() if not k.startswith("experts.0.")}
    embedder = torch.nn.Linear(8, 5)
    embedder_start = {k: v.clone() for k, v in embedder.state_dict().items()}
    decoder = torch.nn.Linear(6, 8)  # stands in for the codec: codes of codebook 0 -> a "wave"

    def decode(codes):
        return decoder(codes[:, 0].float())

    reward = AudioReward(decode, embedder, reference_embeddings=torch.randn(3, 5))
    aligner = Aligner(siren, _config(steps=2), reward)
    aligner.train(random_text(3), tmp_path / "state.pt")
    for key, value in siren.state_dict().items():
        if key in frozen:
            assert torch.equal(value, frozen[key]), key
    assert all(p.grad is None for n, p in siren.named_parameters() if not n.startswith("experts.0."))
    assert all(p.grad is None for p in [*embedder.parameters(), *decoder.parameters()])
    assert all(torch.equal(v, embedder_start[k]) for k, v in embedder.state_dict().items())
    assert any(p.grad is not None for p in aligner.policy.parameters())


def test_interrupted_alignment_resumes_to_the_same_numbers(tmp_path):
    text = random_text(3)
    full = Aligner(tiny_siren(), _config(steps=8), _prefers_token).train(text, tmp_path / "a.pt")
    Aligner(tiny_siren(), _config(steps=4), _prefers_token).train(text, tmp_path / "b.pt")  # "killed" after step 4
    resumed = Aligner(tiny_siren(), _config(steps=8), _prefers_token)
    log = resumed.train(text, tmp_path / "b.pt")
    from siren_bench.trainer import TIMING

    untimed = lambda rows: [{k: v for k, v in r.items() if k not in TIMING} for r in rows]  # noqa: E731
    assert untimed(log) == untimed(full) and len(log) == 8


def test_group_advantages_and_the_clipped_objective():
    rewards = torch.tensor([1.0, 2.0, 3.0, 5.0, 5.0, 5.0], dtype=torch.float64)
    torch.testing.assert_close(group_advantages(rewards, 3, False), torch.tensor([-1.0, 0.0, 1.0, 0, 0, 0], dtype=torch.float64))
    normalised = group_advantages(rewards, 3, True)
    assert normalised[:3].std(unbiased=False) == pytest.approx(1.0, abs=1e-5) and not normalised[3:].any()
    logp = torch.log(torch.tensor([[0.5], [0.5]]))
    old = torch.log(torch.tensor([[0.25], [0.25]]))  # ratio 2: clipped at 1.2 for a positive advantage
    loss, stats = clipped_objective(logp, old, logp, torch.tensor([1.0, -1.0]), clip_eps=0.2, kl_coef=0.0)
    assert loss.item() == pytest.approx(-(1.2 * 1.0 + 2.0 * -1.0) / 2)  # min(r A, clip(r) A) per sample
    assert stats["clip_fraction"] == 1.0 and stats["kl"] == 0.0


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="group_size must be at least 2"):
        AlignConfig(group_size=1)
    with pytest.raises(ValueError, match="expert 9"):
        Aligner(tiny_siren(), _config(expert=9), _prefers_token)
    with pytest.raises(ValueError, match="CLAP reward weight needs"):
        AudioReward(lambda c: c, lambda w: w, torch.zeros(1, 2), clap_weight=1.0)


def test_the_kl_penalty_estimates_kl_of_the_policy_from_the_reference():
    """k3 = r - 1 - log r with r = reference / policy, on tokens the policy sampled: its mean under
    the policy is exactly KL(policy || reference), not the reverse direction."""
    policy, reference = torch.tensor([0.6, 0.3, 0.1], dtype=torch.float64), torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64)
    per_token = []
    for token in range(3):
        logp, logp_ref = policy[token].log().view(1, 1), reference[token].log().view(1, 1)
        _, stats = clipped_objective(logp, logp, logp_ref, torch.zeros(1), clip_eps=0.2, kl_coef=1.0)
        per_token.append(stats["kl"])
    expected = float((policy * (policy / reference).log()).sum())
    assert float((policy * torch.tensor(per_token, dtype=torch.float64)).sum()) == pytest.approx(expected, abs=1e-12)
    assert expected != pytest.approx(float((reference * (reference / policy).log()).sum()), abs=1e-3)


def test_reward_rows_are_made_on_first_use_one_at_a_time_and_kept():
    """The reward's reference rows: only the clips a rollout asks for are read and embedded, each
    once and alone, so the alignment of a 49,838-clip train split reads the few hundred it uses."""
    from siren_bench.models.align import LazyRows

    made = []
    rows = LazyRows(lambda i: made.append(i) or torch.tensor([float(i), 2.0 * i]), 10)
    assert len(rows) == 10 and made == []
    assert torch.equal(rows[np.array([3, 1, 3])], torch.tensor([[3.0, 6.0], [1.0, 2.0], [3.0, 6.0]]))
    assert torch.equal(rows[torch.tensor([1, 7])], torch.tensor([[1.0, 2.0], [7.0, 14.0]]))
    assert made == [3, 1, 7]
    with pytest.raises(IndexError, match="row 10 of 10"):
        rows[np.array([10])]
