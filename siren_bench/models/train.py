"""Stage-1 training of one Siren expert: teacher-forced cross-entropy over its codebooks.

The official recipe's shape (REFERENCES.md §2): AdamW with weight decay on matrices only, linear
warm-up then cosine decay to `min_lr_ratio` x lr, gradient clipping, bf16 autocast on GPU, each
expert its own job seeded with seed + expert index. Added here: caption dropout (the null
caption, for classifier-free guidance) and a validation loss on held-out clips. The schedule,
gradient accumulation, clipping, autocast and resumption after a kill are the one training
engine's (siren_bench/trainer.py); this module brings the batches, the loss and the optimizer.

Data parallelism (one expert over several devices, launched by torchrun): every rank draws the
same global batch from the same seeded stream, keeps rows rank, rank + W, ... and divides its
loss by the global batch's frame count times 1 / W, so DistributedDataParallel's gradient mean
is the one-process gradient of the whole batch. With dropout 0 the run matches a one-process
run to float rounding; with dropout, every rank draws the same masks (one shared torch stream,
which keeps resumption exact), so losses match in distribution, not bit for bit. Rank 0 alone
validates and writes the resume state.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from siren_bench.config import ConfigError, ModelConfig, SirenConfig, config_hash, training_identity
from siren_bench.models.siren import CaptionBank, DepthBlock, SirenExpert, TemporalBlock, Text
from siren_bench.distributed import rank_and_world
from siren_bench.trainer import Trainer


@dataclass
class TokenSet:
    """Clips as training sees them: codes [K, F_i] per clip and their captions' embeddings."""

    codes: list[np.ndarray]
    text: Text | CaptionBank  # row i belongs to clip i

    def __post_init__(self):
        if len(self.codes) != len(self.text) or not self.codes:
            raise ValueError(f"{len(self.codes)} clips but {len(self.text)} caption rows")

    def rows(self, index) -> Text:
        return self.text.select(index)


def make_batch(tokens: TokenSet, rows: np.ndarray, offsets_rng: np.random.Generator, crop: int):
    """Codes [B, K, F] (random crops of up to `crop` frames, zero-padded), frame mask [B, F], text."""
    pieces = []
    for r in rows:
        clip = tokens.codes[int(r)]
        start = int(offsets_rng.integers(0, clip.shape[1] - crop + 1)) if clip.shape[1] > crop else 0
        pieces.append(clip[:, start : start + crop])
    width = max(p.shape[1] for p in pieces)
    codes = np.zeros((len(pieces), pieces[0].shape[0], width), dtype=np.int64)
    mask = np.zeros((len(pieces), width), dtype=bool)
    for i, p in enumerate(pieces):
        codes[i, :, : p.shape[1]] = p
        mask[i, : p.shape[1]] = True
    return torch.from_numpy(codes), torch.from_numpy(mask), tokens.rows(rows)


def optimizer_for(expert: torch.nn.Module, config: ModelConfig) -> torch.optim.AdamW:
    """Weight decay on the linear layers' matrices only; none on norms, start, slot and null
    caption vectors."""
    decayed = {id(m.weight) for m in expert.modules() if isinstance(m, torch.nn.Linear)}
    trainable = [p for p in expert.parameters() if p.requires_grad]
    return torch.optim.AdamW(
        [{"params": [p for p in trainable if id(p) in decayed], "weight_decay": config.weight_decay},
         {"params": [p for p in trainable if id(p) not in decayed], "weight_decay": 0.0}],
        lr=config.learning_rate, betas=tuple(config.betas))


@torch.no_grad()
def validation_loss(expert: torch.nn.Module, tokens: TokenSet, device: torch.device, batch: int = 16) -> float:
    """Mean per-frame loss over whole held-out clips, no caption dropout, eval mode."""
    was_training = expert.training
    expert.eval()
    total, frames = 0.0, 0
    for start in range(0, len(tokens.codes), batch):
        rows = np.arange(start, min(start + batch, len(tokens.codes)))
        codes, mask, text = make_batch(tokens, rows, np.random.default_rng(0), crop=10**9)
        loss = expert.loss(codes.to(device), text.to(device), mask.to(device))
        n = int(mask.sum())
        total, frames = total + loss.item() * n, frames + n
    expert.train(was_training)
    return total / frames


@dataclass
class TrainedExpert:
    expert: SirenExpert
    log: list[dict]
    resumed_from: int


def resume_file(resume_dir: Path, config: ModelConfig, siren: SirenConfig, index: int, data_id: str) -> Path:
    """Where an interrupted run of exactly this expert, config and data keeps its state."""
    return resume_dir / f"siren-expert{index}-{config_hash({'model': training_identity(config), 'siren': siren, 'data': data_id})[:16]}.pt"


class Probe(Protocol):
    """A measurement taken during training every `every` steps (and at the first and last):
    (model, step) -> numbers for that step's log row. It must leave the model's mode and the
    RNG streams as it found them, so a probed run trains exactly like an unprobed one."""

    every: int

    def __call__(self, model: torch.nn.Module, step: int) -> dict: ...


def train_expert(index: int, siren: SirenConfig, config: ModelConfig, code_table: torch.Tensor, train: TokenSet,
                 val: TokenSet | None, resume_dir: Path, data_id: str, device: torch.device,
                 stop_after: int | None = None, probe: Probe | None = None) -> TrainedExpert:
    """Train expert `index` (codebooks siren.expert_groups()[index]); `stop_after` ends early
    (tests of resumption). `data_id` names the training data in the resume file's key."""
    torch.manual_seed(config.seed + index)
    expert = SirenExpert(siren, siren.expert_groups()[index])
    expert.set_code_table(code_table)
    log, start = train_model(expert, f"siren expert {index}", config, train, val,
                             resume_file(resume_dir, config, siren, index, data_id), device, [config.seed, index, 0x51E],
                             stop_after, probe)
    return TrainedExpert(expert, log, start)


def check_batch_splits(config: ModelConfig, world: int, source: str = "model") -> None:
    """model.batch_size is the global batch: the ranks split it, so the result does not depend on
    how many there are (the official recipe's "24 per GPU" is 24 at one GPU per job). A batch
    that does not split is refused; the job entry points check it before loading any data."""
    if config.batch_size % world:
        divisors = [w for w in range(1, config.batch_size + 1) if config.batch_size % w == 0]
        raise ConfigError(f"{source}: model.batch_size={config.batch_size} (the global batch) does not split over {world} "
                          f"data-parallel ranks; run on {divisors} ranks, or set model.batch_size to a multiple of {world} "
                          f"(which changes the optimisation)")


def train_model(model: torch.nn.Module, label: str, config: ModelConfig, train: TokenSet, val: TokenSet | None,
                state_file: Path, device: torch.device, stream: list[int], stop_after: int | None = None,
                probe: Probe | None = None) -> tuple[list[dict], int]:
    """Train a code model (Siren's experts, the baselines) through the engine: `model.loss(codes,
    text, frame_mask, drop, n_frames=)` on seeded batches from the NumPy stream `stream`,
    resumable from `state_file`; returns (log, the step it resumed from). The caller seeds torch
    and builds the model, so initialisation belongs to the model's own seed. `probe`, every
    `probe.every` steps, adds measurements (e.g. gradient interference) to the log row."""
    check_batch_splits(config, rank_and_world()[1])
    model.to(device).train()
    trainer = Trainer(label, model, optimizer_for(model, config), steps=config.train_steps, grad_clip=config.grad_clip,
                      checkpoint_every=config.checkpoint_every, stream=stream, state_file=state_file, device=device,
                      warmup_steps=config.warmup_steps, min_lr_ratio=config.min_lr_ratio, grad_accum=config.grad_accum,
                      bf16=config.bf16, checkpoint_blocks=(TemporalBlock, DepthBlock) if config.activation_checkpointing else (),
                      shard_blocks=(TemporalBlock, DepthBlock) if config.sharding == "fsdp" else ())
    shard_loss = trainer.data_parallel(_ShardLoss(model))
    rng = trainer.rng

    def batch_loss():
        rows = rng.integers(0, len(train.codes), size=config.batch_size)
        codes, mask, text = make_batch(train, rows, rng, config.crop_frames)
        drop = torch.from_numpy(rng.random(config.batch_size) < config.caption_dropout)
        shard = slice(trainer.rank, None, trainer.world)  # every rank drew the whole batch; it trains on its rows
        frames = float(mask.sum())  # the whole batch's, over every rank
        loss = shard_loss(codes[shard].to(device), text.select(shard).to(device), mask[shard].to(device),
                          drop[shard].to(device), frames)
        return loss, {"frames": frames}

    def measure(step: int) -> dict:
        row = {}
        last = step == config.train_steps
        # sharded, every rank takes part in the validation forwards (they gather the parameters)
        if (trainer.rank == 0 or trainer.sharded) and val is not None and (step % config.val_every == 0 or last):
            row["val_loss"] = validation_loss(model, val, device)
        if trainer.rank == 0 and probe is not None and (step == 1 or step % probe.every == 0 or last):
            row |= probe(model, step)
        return row

    log = trainer.fit(lambda: trainer.update(batch_loss), stop_after, measure)
    model.eval()
    return log, trainer.start


class _ShardLoss(torch.nn.Module):
    """The expert's loss as a module forward, so DistributedDataParallel can wrap it: the shard's
    share of the whole batch's mean loss (its sum over n_frames, the batch's frame count), times
    W because DDP averages the ranks' gradients where the batch mean needs their sum."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.expert = model

    def forward(self, codes, text: Text, mask, drop, n_frames: float) -> torch.Tensor:
        return rank_and_world()[1] * self.expert.loss(codes, text, mask, drop, n_frames=n_frames)


def clear_resume_state(path: Path) -> None:
    path.unlink(missing_ok=True)
