"""Anti-causal alignment: policy-gradient fine-tuning of one Siren expert against the final audio.

The paper's RL stage is not public (REFERENCES.md §1: no algorithm, reward or hyper-parameters),
so everything here is the harness's own interpretation, each choice a field of `AlignConfig`:

- **Policy**: one expert (`expert`, default 0, the coarse one) of the Stage-1 Siren; every other
  expert, the codec and the reward models are frozen. A frozen copy of the Stage-1 expert is the
  reference policy of the KL penalty.
- **Rollouts**: for each caption, `group_size` samples of the full code stack, the policy's
  codebooks sampled by the policy and the rest completed by the frozen experts, frame by frame
  (collaborative generation) at `temperature` with no top-k / top-p and no guidance, so that the
  sampling distribution is exactly the policy's softmax that the update differentiates.
- **Reward** on the decoded audio (the "anti-causal" credit: the first layer is judged by what
  later layers and the decoder make of it): any callable from (codes, clip indices) to one
  number per sample; `AudioReward` is cosine(embed(sample), embed(the caption's reference clip))
  x `audio_weight` + CLAP cosine(sample, caption) x `clap_weight`.
- **Objective** (GRPO-style): advantage = reward - its group's mean, divided by the group's std
  when `normalise_std`; per token of the policy's codebooks, the PPO clipped surrogate
  min(r A, clip(r, 1 - eps, 1 + eps) A) with r = pi / pi_old, minus `kl_coef` x the k3 estimate
  of KL(pi || pi_ref) = exp(ref - new) - (ref - new) - 1; means over tokens, then samples.
  `ppo_epochs` updates per batch of rollouts, the learning rate warmed up linearly over
  `warmup_steps` batches. Dropout is off throughout (eval mode), so r = 1 on
  the first update.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from siren_bench.config import AlignConfig
from siren_bench.models.collaborative import Siren
from siren_bench.models.sampling import SamplingConfig
from siren_bench.models.siren import SirenExpert, Text
from siren_bench.trainer import Trainer

# (codes [N, K, F], clip index of each sample [N]) -> rewards [N] (float64)
RewardFn = Callable[[torch.Tensor, np.ndarray], torch.Tensor]


def token_logprobs(expert: SirenExpert, codes: torch.Tensor, text: Text, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """log pi(code) of the expert's codebooks in `codes`, and the entropy there: both [N, g, F]."""
    logits = expert(codes, text).float() / temperature  # [N, g, F, V]
    logp = F.log_softmax(logits, dim=-1)
    taken = logp.gather(-1, codes[:, expert.group, :, None])[..., 0]
    entropy = -(logp.exp() * logp).sum(-1)
    return taken, entropy


def group_advantages(rewards: torch.Tensor, group_size: int, normalise_std: bool, eps: float = 1e-6) -> torch.Tensor:
    """Rewards [N] in consecutive groups of `group_size` -> reward minus its group's mean (over
    the group's std when asked; a group of equal rewards gets advantage 0, not a division by 0)."""
    grouped = rewards.view(-1, group_size)
    centred = grouped - grouped.mean(1, keepdim=True)
    if normalise_std:
        centred = centred / (grouped.std(1, keepdim=True, unbiased=False) + eps)
    return centred.reshape(-1)


def clipped_objective(logp: torch.Tensor, logp_old: torch.Tensor, logp_ref: torch.Tensor, advantages: torch.Tensor,
                      clip_eps: float, kl_coef: float) -> tuple[torch.Tensor, dict]:
    """The loss to minimise (negated surrogate + KL penalty), and its statistics."""
    ratio = torch.exp(logp - logp_old)
    adv = advantages.view(-1, *([1] * (logp.dim() - 1))).to(logp.dtype)
    surrogate = torch.minimum(ratio * adv, ratio.clamp(1 - clip_eps, 1 + clip_eps) * adv)
    log_ref_ratio = logp_ref - logp
    kl = torch.exp(log_ref_ratio) - log_ref_ratio - 1  # k3: unbiased, non-negative per token
    per_sample = (-surrogate + kl_coef * kl).flatten(1).mean(1)
    stats = {"kl": float(kl.detach().mean()), "clip_fraction": float(((ratio.detach() - 1).abs() > clip_eps).float().mean()),
             "ratio_max": float(ratio.detach().max())}
    return per_sample.mean(), stats


class Aligner:
    """One expert of a trained Siren, tuned against a reward on complete rollouts."""

    def __init__(self, siren: Siren, config: AlignConfig, reward: RewardFn, device: torch.device | str = "cpu"):
        if not 0 <= config.expert < len(siren.experts):
            raise ValueError(f"expert {config.expert}: the model has experts 0..{len(siren.experts) - 1}")
        self.config, self.reward, self.device = config, reward, torch.device(device)
        self.siren = siren.to(self.device).eval().requires_grad_(False)
        self.policy = self.siren.experts[config.expert]
        self.reference = copy.deepcopy(self.policy).eval()
        self.policy.make_trainable()
        self.sampling = SamplingConfig(temperature=config.temperature)

    def train(self, text: Text, state_file: Path) -> list[dict]:
        """`config.steps` steps over the captions of `text` (clip i = row i), drawn per step from a
        seeded stream, through the one training engine: the policy, optimizer, both RNGs and the
        log are saved every `checkpoint_every` steps, and a restarted run continues to the same
        numbers. The learning rate warms up over `warmup_steps` rollout batches, then holds."""
        c = self.config
        trainable = [p for p in self.policy.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(trainable, lr=c.learning_rate, weight_decay=c.weight_decay, betas=(0.9, 0.95))
        generator = torch.Generator(self.device).manual_seed(c.seed)  # the rollouts' sampling
        trainer = Trainer(f"align expert {c.expert}", self.policy, optimizer, steps=c.steps, grad_clip=c.grad_clip,
                          checkpoint_every=c.checkpoint_every, stream=[c.seed, c.expert, 0xA11], state_file=state_file,
                          device=self.device, warmup_steps=c.warmup_steps, min_lr_ratio=1.0,
                          extra_state={"generator": generator})
        n = text.tokens.shape[0]

        def step() -> dict:
            rows = trainer.rng.choice(n, size=min(c.captions_per_step, n), replace=False)
            return self.rollout_step(trainer, text.select(torch.as_tensor(rows)), rows, generator)

        return trainer.fit(step)

    def rollout_step(self, trainer: Trainer, text: Text, clip_index: np.ndarray, generator: torch.Generator) -> dict:
        """One batch of rollouts (every caption of `text` x group_size) and ppo_epochs updates;
        the row's loss and gradient norm are the last update's."""
        c = self.config
        repeat = torch.arange(text.tokens.shape[0], device=self.device).repeat_interleave(c.group_size)
        group_text = text.to(self.device).select(repeat)
        codes = self.siren.generate(group_text, c.n_frames, self.sampling, generator)
        rewards = self.reward(codes, np.asarray(clip_index)[repeat.cpu().numpy()]).to(self.device, torch.float64)
        advantages = group_advantages(rewards, c.group_size, c.normalise_std)
        with torch.no_grad():
            logp_old, entropy = token_logprobs(self.policy, codes, group_text, c.temperature)
            logp_ref, _ = token_logprobs(self.reference, codes, group_text, c.temperature)

        def objective():
            logp, _ = token_logprobs(self.policy, codes, group_text, c.temperature)
            return clipped_objective(logp, logp_old, logp_ref, advantages, c.clip_eps, c.kl_coef)

        for _ in range(c.ppo_epochs):
            update = trainer.update(objective)
        return {"reward_mean": float(rewards.mean()), "reward_std": float(rewards.std(unbiased=False)),
                "advantage_mean": float(advantages.mean()), "advantage_abs_mean": float(advantages.abs().mean()),
                "entropy": float(entropy.mean()), **update}


def cosine_rows(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise cosine similarity in float64."""
    a, b = a.double(), b.double()
    return (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1)).clamp_min(1e-12)


class LazyRows:
    """Rows of a reward's reference table made on first use, one per call, and kept: `row(i)` ->
    [D]. Indexed like a tensor (`rows[index]` -> [len(index), D]). An alignment run reads steps x
    captions_per_step of the train clips (400 in the default), not all of them (49,838 in
    AudioCaps: embedding them at once ran out of memory); one row per call keeps each row
    independent of which others a step needed (a batch's shape changes the rounding)."""

    def __init__(self, row: Callable[[int], torch.Tensor], n: int):
        self.row, self.n, self.rows = row, n, {}

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index) -> torch.Tensor:
        wanted = torch.as_tensor(index).reshape(-1).tolist()
        for i in wanted:
            if not 0 <= i < self.n:
                raise IndexError(f"row {i} of {self.n}")
            if i not in self.rows:
                self.rows[i] = self.row(i)
        return torch.stack([self.rows[i] for i in wanted])


@dataclass
class AudioReward:
    """Decode the codes, embed the audio, and score it against the caption's reference clip (and
    the caption itself, through CLAP). `embed_audio` / `embed_clap_audio`: waves [N, T] at the
    codec's rate -> [N, D]; `reference_embeddings` [n_clips, D] and `caption_embeddings`
    [n_clips, D'] (tensors, or LazyRows made on first use) from the reference clips and captions."""

    decode: Callable[[torch.Tensor], torch.Tensor]
    embed_audio: Callable[[torch.Tensor], torch.Tensor]
    reference_embeddings: torch.Tensor | LazyRows
    audio_weight: float = 1.0
    embed_clap_audio: Callable[[torch.Tensor], torch.Tensor] | None = None
    caption_embeddings: torch.Tensor | LazyRows | None = None
    clap_weight: float = 0.0

    def __post_init__(self):
        if self.clap_weight and (self.embed_clap_audio is None or self.caption_embeddings is None):
            raise ValueError("a CLAP reward weight needs the CLAP audio embedder and the caption embeddings")
        if not (self.audio_weight or self.clap_weight) or not math.isfinite(self.audio_weight + self.clap_weight):
            raise ValueError("the reward needs a finite, non-zero audio or CLAP weight")

    @torch.no_grad()
    def __call__(self, codes: torch.Tensor, clip_index: np.ndarray) -> torch.Tensor:
        waves = self.decode(codes)
        index = torch.as_tensor(clip_index)
        reward = torch.zeros(len(index), dtype=torch.float64)
        if self.audio_weight:
            reward += self.audio_weight * cosine_rows(self.embed_audio(waves), self.reference_embeddings[index])
        if self.clap_weight:
            reward += self.clap_weight * cosine_rows(self.embed_clap_audio(waves), self.caption_embeddings[index])
        return reward
