"""The one training engine: every model the harness trains runs its optimisation through `Trainer`.

Siren's experts, the four baselines (the latent diffusion included), the small codec, the smoke
evaluators and the alignment policy each bring only what is theirs: the model, its optimizer
(which parameters decay, which betas) and what one step computes. The engine owns the rest, so
that no model re-implements it and a fix reaches them all:

- the learning-rate schedule (`warmup_cosine`): linear warm-up, then cosine decay to
  `min_lr_ratio` x lr; `min_lr_ratio=1` is warm-up then constant (the alignment's choice);
- one optimizer update (`update`): `grad_accum` micro-batches under bf16 autocast on CUDA,
  backward, the logged loss averaged over data-parallel ranks, gradient clipping, the step;
- the seeded NumPy stream batches are drawn from (`rng`), the torch and CUDA generators, and any
  state the model's step keeps besides (`extra_state`: a torch.Generator, a tensor);
- resumption: every `checkpoint_every` steps and at the last one, model, optimizer, schedule,
  every RNG, the extra state and the log go into one atomically written file; a restarted run
  loads it and continues to the numbers an uninterrupted run gets (tests/test_crash_safety.py);
- the log (per step: its number, the model's numbers, the learning rate it used, seconds, and
  frames per second where the step counts the frames it trained on) and the progress bar;
- the live log through dvclive, beside the resume state (`live_folder`): one TSV per logged
  number under plots/metrics/ (loss, learning rate, gradient norm, validation, frames/s, seconds)
  as the steps happen, readable during a run with `dvc plots show <folder>/plots/metrics` or any
  TSV reader; a resumed run rewrites it from the restored log, so it never holds the steps a kill
  lost;
- activation checkpointing as an option (`checkpoint_blocks`): the named block types recompute
  their activations in the backward pass instead of keeping them, memory for compute.

Data parallelism: under torchrun `rank` and `world` come from the process group; the model's
step picks its rank's rows and wraps its loss module with `data_parallel` (DistributedDataParallel
when there are several ranks). Only rank 0 shows progress and writes the resume state and the live log.
The model's train / eval mode is the caller's: the alignment trains its policy in eval mode.
"""

from __future__ import annotations

import json
import math
import time
import types
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from dvclive import Live
from torch.utils.checkpoint import checkpoint
from tqdm import tqdm

from siren_bench.distributed import rank_and_world
from siren_bench.io import atomic_path
from siren_bench.weights import CheckpointError, load_resume_state

STATE_FORMAT = "siren-bench trainer 1"  # in every resume file; another format is refused, not misread

# () -> (the micro-batch's loss, numbers to log with it)
LossFn = Callable[[], tuple[torch.Tensor, dict]]
COUNTED = ("frames",)  # numbers a LossFn logs that add up over micro-batches (the rest are averaged)
TIMING = ("seconds", "frames_per_s")  # the log's wall-clock columns: the only ones two identical runs differ in


def live_folder(state_file: Path) -> Path:
    """A training job's dvclive folder: dvclive/<job>/ beside its resume state (for the pipeline,
    artifacts/<profile>/resume/dvclive/<job>/, outside every DVC output)."""
    return state_file.parent / "dvclive" / state_file.stem


def _log_live(live: Live, row: dict) -> None:
    live.step = int(row["step"])
    for key, value in row.items():
        if key != "step" and isinstance(value, (int, float)) and math.isfinite(value):
            live.log_metric(key, value)
    live.next_step()


def warmup_cosine(step: int, steps: int, warmup_steps: int, min_lr_ratio: float) -> float:
    """The learning-rate factor at 0-based `step`: linear warm-up to 1 over `warmup_steps`, then
    cosine decay to `min_lr_ratio` at `steps`."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, steps - warmup_steps))
    return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def _checkpointed_forward(self, *args, **kwargs):
    forward = type(self).forward
    if torch.is_grad_enabled():
        return checkpoint(forward, self, *args, use_reentrant=False, **kwargs)
    return forward(self, *args, **kwargs)


def checkpoint_activations(model: torch.nn.Module, block_types: tuple[type, ...]) -> int:
    """Make every `block_types` module of `model` recompute its activations in the backward pass
    instead of keeping them (only while gradients are on, so validation and generation run as
    before). torch's non-reentrant checkpoint restores the RNG state for the recomputation, so
    dropout draws the same masks and the numbers do not change. Returns how many blocks it set."""
    blocks = [m for m in model.modules() if isinstance(m, block_types)]
    for block in blocks:  # a bound method: a deep copy of the model rebinds it to the copy
        block.forward = types.MethodType(_checkpointed_forward, block)
    return len(blocks)


class Trainer:
    """Optimises `model` with `optimizer` for `steps` steps, resumable from `state_file` (None:
    not resumable, nothing written). `stream` seeds `rng`, the NumPy generator the model's step
    draws its batches from."""

    def __init__(self, label: str, model: torch.nn.Module, optimizer: torch.optim.Optimizer, *, steps: int,
                 grad_clip: float, checkpoint_every: int, stream: Sequence[int], state_file: Path | None,
                 device: torch.device | str = "cpu", warmup_steps: int = 0, min_lr_ratio: float = 0.1,
                 grad_accum: int = 1, bf16: bool = False, extra_state: dict | None = None,
                 checkpoint_blocks: tuple[type, ...] = ()):
        if steps < 0 or grad_accum < 1 or checkpoint_every < 1 or warmup_steps < 0 or grad_clip <= 0:
            raise ValueError(f"{label}: steps and warmup_steps must be >= 0, grad_accum and checkpoint_every >= 1, "
                             f"grad_clip > 0; got {steps}, {warmup_steps}, {grad_accum}, {checkpoint_every}, {grad_clip}")
        self.label, self.model, self.optimizer = label, model, optimizer
        self.steps, self.grad_clip, self.checkpoint_every, self.grad_accum = steps, grad_clip, checkpoint_every, grad_accum
        self.state_file, self.device = state_file, torch.device(device)
        self.autocast = self.device.type == "cuda" and bf16
        self.schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: warmup_cosine(step, steps, warmup_steps, min_lr_ratio))
        self.rng = np.random.default_rng(np.random.SeedSequence(list(stream)))
        self.rank, self.world = rank_and_world()
        self.checkpointed_blocks = checkpoint_activations(model, checkpoint_blocks) if checkpoint_blocks else 0
        self.extra_state = dict(extra_state or {})
        self.log: list[dict] = []
        self.start = 0  # the step a resumed run continued from (0: a fresh run)
        self.current_step = 0  # 1-based, while `fit` runs a step
        if state_file is not None and state_file.is_file():
            self._resume(state_file)

    def data_parallel(self, module: torch.nn.Module) -> torch.nn.Module:
        """`module` wrapped for data parallelism when several ranks train, else itself.
        find_unused_parameters: a shard may leave a parameter unused (e.g. the null caption)."""
        if self.world == 1:
            return module
        return DistributedDataParallel(module, device_ids=[self.device] if self.device.type == "cuda" else None,
                                       find_unused_parameters=True)

    def update(self, loss_fn: LossFn) -> dict:
        """One optimizer step over `grad_accum` calls of `loss_fn`; returns the step's loss (over
        all ranks), the mean of the numbers `loss_fn` logged, and the gradient norm before clipping."""
        self.optimizer.zero_grad(set_to_none=True)
        total = torch.zeros((), device=self.device)
        numbers: dict[str, float] = {}
        for _ in range(self.grad_accum):
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
                loss, logged = loss_fn()
            if self.grad_accum > 1:
                loss = loss / self.grad_accum
            loss.backward()
            total += loss.detach()
            for key, value in logged.items():
                numbers[key] = numbers.get(key, 0.0) + (value if key in COUNTED else value / self.grad_accum)
        if self.world > 1:
            dist.all_reduce(total)
            total /= self.world
        trained = [p for p in self.model.parameters() if p.grad is not None]
        grad_norm = torch.nn.utils.clip_grad_norm_(trained, self.grad_clip)
        self.optimizer.step()
        return {"loss": total.item(), **numbers, "grad_norm": float(grad_norm)}

    def fit(self, step: Callable[[], dict], stop_after: int | None = None,
            measure: Callable[[int], dict] | None = None) -> list[dict]:
        """Run the steps left: each calls `step()` (which calls `update` once or more and returns
        the row's numbers), then `measure(step number)` (validation, probes: numbers for the row).
        `stop_after` ends early, as a kill would (tests of resumption). Returns the whole log."""
        last = self.steps if stop_after is None else min(self.steps, stop_after)
        live = self._open_live_log()
        progress = tqdm(range(self.start, last), desc=self.label, unit="step", initial=self.start, total=self.steps,
                        disable=self.rank > 0)
        for index in progress:
            began = time.perf_counter()
            lr = self.schedule.get_last_lr()[0]
            self.current_step = index + 1
            row = {"step": index + 1, **step(), "lr": lr}
            self.schedule.step()
            if "frames" in row:
                row["frames_per_s"] = row["frames"] / (time.perf_counter() - began)  # the step alone
            if measure is not None:
                row |= measure(index + 1)
            row["seconds"] = time.perf_counter() - began  # the step and its measurements
            self.log.append(row)
            if live is not None:
                _log_live(live, row)
            progress.set_postfix(loss=f"{row['loss']:.3f}")
            if self.rank == 0 and self.state_file is not None and ((index + 1) % self.checkpoint_every == 0 or index + 1 == last):
                self._save(index + 1)
        if live is not None and last == self.steps:
            live.end()
        return self.log

    def _open_live_log(self) -> Live | None:
        """Rank 0's dvclive log, started afresh and filled with the log so far (a resumed run's
        restored rows), so it holds exactly the steps the model has taken."""
        if self.rank > 0 or self.state_file is None:
            return None
        live = Live(dir=str(live_folder(self.state_file)), resume=False, save_dvc_exp=False, dvcyaml=None, report=None)
        for row in self.log:
            _log_live(live, row)
        return live

    def _save(self, step: int) -> None:
        state = {"format": STATE_FORMAT, "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "schedule": self.schedule.state_dict(), "torch_rng": torch.get_rng_state(),
                 "numpy_rng": json.dumps(self.rng.bit_generator.state), "log": json.dumps(self.log), "step": step}
        if self.device.type == "cuda":  # dropout on the GPU draws from the CUDA generator
            state["cuda_rng"] = torch.cuda.get_rng_state(self.device)
        for name, value in self.extra_state.items():
            state[f"extra/{name}"] = value.get_state() if isinstance(value, torch.Generator) else value
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.state_file) as tmp:
            torch.save(state, tmp)

    def _resume(self, path: Path) -> None:
        state = load_resume_state(path)
        if state.get("format") != STATE_FORMAT:
            raise CheckpointError(f"{path}: a resume state of format {state.get('format')!r}, not {STATE_FORMAT!r} "
                                  f"(written by another version of siren-bench); delete it to restart that run from step 0")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        torch.set_rng_state(state["torch_rng"].cpu())
        if self.device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"].cpu(), self.device)
        self.rng.bit_generator.state = json.loads(state["numpy_rng"])
        for name, value in self.extra_state.items():
            saved = state[f"extra/{name}"]
            if isinstance(value, torch.Generator):
                value.set_state(saved.cpu())
            else:
                value.copy_(saved)
        self.log, self.start = json.loads(state["log"]), int(state["step"])
