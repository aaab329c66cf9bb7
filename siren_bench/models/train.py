"""Stage-1 training of one Siren expert: teacher-forced cross-entropy over its codebooks.

The official recipe's shape (REFERENCES.md §2): AdamW with weight decay on matrices only, linear
warm-up then cosine decay to `min_lr_ratio` x lr, gradient clipping, bf16 autocast on GPU, each
expert its own job seeded with seed + expert index. Added here: gradient accumulation, caption
dropout (the null caption, for classifier-free guidance), a validation loss on held-out clips,
and resumption: every `checkpoint_every` steps the expert, optimizer, schedule, both RNGs and
the log go into one atomically written file, and a restarted run continues from it to the same
losses as an uninterrupted one.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from siren_bench.config import ModelConfig, config_hash
from siren_bench.io import atomic_path
from siren_bench.models.siren import SirenConfig, SirenExpert, Text


@dataclass
class TokenSet:
    """Clips as training sees them: codes [K, F_i] per clip and their captions' embeddings."""

    codes: list[np.ndarray]
    text: Text  # row i belongs to clip i

    def __post_init__(self):
        if len(self.codes) != self.text.tokens.shape[0] or not self.codes:
            raise ValueError(f"{len(self.codes)} clips but {self.text.tokens.shape[0]} caption rows")

    def rows(self, index) -> Text:
        index = torch.as_tensor(index)
        return Text(self.text.tokens[index], self.text.mask[index], self.text.pooled[index])


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


def lr_factor(step: int, config: ModelConfig) -> float:
    """Linear warm-up to 1, then cosine decay to min_lr_ratio at train_steps."""
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    progress = min(1.0, (step - config.warmup_steps) / max(1, config.train_steps - config.warmup_steps))
    return config.min_lr_ratio + (1 - config.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def optimizer_for(expert: SirenExpert, config: ModelConfig) -> torch.optim.AdamW:
    """Weight decay on the linear layers' matrices only; none on norms, start, slot and null
    caption vectors."""
    decayed = {id(m.weight) for m in expert.modules() if isinstance(m, torch.nn.Linear)}
    trainable = [p for p in expert.parameters() if p.requires_grad]
    return torch.optim.AdamW(
        [{"params": [p for p in trainable if id(p) in decayed], "weight_decay": config.weight_decay},
         {"params": [p for p in trainable if id(p) not in decayed], "weight_decay": 0.0}],
        lr=config.learning_rate, betas=tuple(config.betas))


@torch.no_grad()
def validation_loss(expert: SirenExpert, tokens: TokenSet, device: torch.device, batch: int = 16) -> float:
    """Mean per-frame loss over whole held-out clips, no caption dropout, eval mode."""
    was_training = expert.training
    expert.eval()
    total, frames = 0.0, 0
    for start in range(0, len(tokens.codes), batch):
        rows = np.arange(start, min(start + batch, len(tokens.codes)))
        codes, mask, text = make_batch(tokens, rows, np.random.default_rng(0), crop=10**9)
        loss = expert.loss(codes.to(device), _to(text, device), mask.to(device))
        n = int(mask.sum())
        total, frames = total + loss.item() * n, frames + n
    expert.train(was_training)
    return total / frames


def _to(text: Text, device: torch.device) -> Text:
    return Text(text.tokens.to(device), text.mask.to(device), text.pooled.to(device))


@dataclass
class TrainedExpert:
    expert: SirenExpert
    log: list[dict]
    resumed_from: int


def resume_file(resume_dir: Path, config: ModelConfig, siren: SirenConfig, index: int, data_id: str) -> Path:
    """Where an interrupted run of exactly this expert, config and data keeps its state."""
    return resume_dir / f"siren-expert{index}-{config_hash({'model': config, 'siren': siren, 'data': data_id})[:16]}.pt"


def train_expert(index: int, siren: SirenConfig, config: ModelConfig, code_table: torch.Tensor, train: TokenSet,
                 val: TokenSet | None, resume_dir: Path, data_id: str, device: torch.device,
                 stop_after: int | None = None) -> TrainedExpert:
    """Train expert `index` (codebooks siren.expert_groups()[index]); `stop_after` ends early
    (tests of resumption). `data_id` names the training data in the resume file's key."""
    torch.manual_seed(config.seed + index)
    expert = SirenExpert(siren, siren.expert_groups()[index])
    expert.set_code_table(code_table)
    expert.to(device).train()
    optimizer = optimizer_for(expert, config)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, config))
    rng = np.random.default_rng(np.random.SeedSequence([config.seed, index, 0x51E]))
    log: list[dict] = []
    start = 0
    state_file = resume_file(resume_dir, config, siren, index, data_id)
    if state_file.is_file():
        state = torch.load(state_file, map_location=device, weights_only=True)
        expert.load_state_dict(state["expert"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        torch.set_rng_state(state["torch_rng"].cpu())
        if device.type == "cuda":  # dropout on the GPU draws from the CUDA generator
            torch.cuda.set_rng_state(state["cuda_rng"].cpu(), device)
        rng.bit_generator.state = json.loads(state["numpy_rng"])
        log, start = json.loads(state["log"]), int(state["step"])

    autocast = device.type == "cuda" and config.bf16
    last = config.train_steps if stop_after is None else min(config.train_steps, stop_after)
    progress = tqdm(range(start, last), desc=f"siren expert {index}", unit="step", initial=start, total=config.train_steps)
    for step in progress:
        began = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        step_loss = 0.0
        for _ in range(config.grad_accum):
            rows = rng.integers(0, len(train.codes), size=config.batch_size)
            codes, mask, text = make_batch(train, rows, rng, config.crop_frames)
            drop = torch.from_numpy(rng.random(config.batch_size) < config.caption_dropout).to(device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                loss = expert.loss(codes.to(device), _to(text, device), mask.to(device), drop) / config.grad_accum
            loss.backward()
            step_loss += loss.item()
        grad_norm = torch.nn.utils.clip_grad_norm_(expert.parameters(), config.grad_clip)
        optimizer.step()
        schedule.step()
        row = {"step": step + 1, "loss": step_loss, "grad_norm": float(grad_norm), "lr": schedule.get_last_lr()[0]}
        if val is not None and ((step + 1) % config.val_every == 0 or step + 1 == config.train_steps):
            row["val_loss"] = validation_loss(expert, val, device)
        row["seconds"] = time.perf_counter() - began  # the step and its validation
        log.append(row)
        progress.set_postfix(loss=f"{step_loss:.3f}")
        if (step + 1) % config.checkpoint_every == 0 or step + 1 == last:
            _save_state(state_file, expert, optimizer, schedule, rng, log, step + 1, device)
    expert.eval()
    return TrainedExpert(expert, log, start)


def _save_state(path: Path, expert, optimizer, schedule, rng, log, step: int, device: torch.device) -> None:
    state = {"expert": expert.state_dict(), "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(),
             "torch_rng": torch.get_rng_state(), "numpy_rng": json.dumps(rng.bit_generator.state),
             "log": json.dumps(log), "step": step}
    if device.type == "cuda":
        state["cuda_rng"] = torch.cuda.get_rng_state(device)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def clear_resume_state(path: Path) -> None:
    path.unlink(missing_ok=True)
