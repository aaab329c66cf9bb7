"""The one training engine: every model the harness trains runs its optimisation through `Trainer`.

Siren's experts, the four baselines (the latent diffusion included), the small codec, the smoke
evaluators and the alignment policy each bring only what is theirs: the model, its optimizer
(which parameters decay, which betas) and what one step computes. The engine owns the rest, so
that no model re-implements it and a fix reaches them all:

- the learning-rate schedule (`warmup_cosine`): linear warm-up, then cosine decay to
  `min_lr_ratio` x lr; `min_lr_ratio=1` is warm-up then constant (the alignment's choice);
- one optimizer update (`update`): `grad_accum` micro-batches under bf16 autocast on CUDA,
  backward (under DDP the gradients are all-reduced once per step, in the last micro-batch's
  backward; sharded, every micro-batch reduce-scatters, which keeps the gradients sharded), the
  logged loss averaged over data-parallel ranks, gradient clipping, the step;
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
With `shard_blocks` (model.sharding=fsdp) and several ranks the engine shards instead (FSDP2's
`fully_shard`): each named block keeps 1/W of its parameters, gradients and optimizer state per
rank, gathered for the block's forward and backward; the small rest of the model stays whole on
every rank with its gradients averaged as DDP averages them (`shard_parameters`). Resume states
then hold the full, gathered state dicts (keyed by parameter name), so a one-process run (the
stage assembling a finished job) loads them as it loads any other.
The model's train / eval mode is the caller's: the alignment trains its policy in eval mode.
"""

from __future__ import annotations

import contextlib
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
from siren_bench.errors import ConfigError
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


def shard_parameters(model: torch.nn.Module, optimizer: torch.optim.Optimizer, block_types: tuple[type, ...]) -> list:
    """Shard each `block_types` module of `model` over the process group with FSDP2 and point
    `optimizer` (not stepped yet) at the sharded parameters fully_shard puts in place of the
    originals. The parameters outside the blocks (embeddings, heads, the null caption: a small
    share) stay whole on every rank and are returned: the trainer averages their gradients over
    the ranks itself, as DDP does, because some are unused on some ranks (the null caption when a
    rank's rows drop no caption) and FSDP's reduce-scatter needs every rank to hold every gradient."""
    from torch.distributed.fsdp import fully_shard

    if optimizer.state:
        raise ValueError("shard the model before the optimizer's first step")
    names = {id(p): name for name, p in model.named_parameters()}
    blocks = [m for m in model.modules() if isinstance(m, block_types)]
    if not blocks:
        raise ConfigError(f"model.sharding=fsdp: the model has no {', '.join(b.__name__ for b in block_types)} to shard")
    for block in blocks:
        fully_shard(block)
    sharded = dict(model.named_parameters())
    for group in optimizer.param_groups:
        group["params"] = [sharded[names[id(p)]] for p in group["params"]]
    return [p for p in model.parameters() if p.requires_grad and not hasattr(p, "full_tensor")]


def _average_whole_gradients(params: list, world: int) -> None:
    """DDP's reduction for the unsharded parameters: each gradient averaged over the ranks, a rank
    that did not use the parameter counting zeros; one no rank used keeps no gradient."""
    # on the parameters' device: an NCCL group has no CPU backend
    used = torch.tensor([p.grad is not None for p in params], dtype=torch.int32, device=params[0].device if params else None)
    dist.all_reduce(used)
    for p, count in zip(params, used.tolist()):
        if count:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            dist.all_reduce(p.grad)
            p.grad /= world


def _clip_mixed(params: list, max_norm: float) -> torch.Tensor:
    """clip_grad_norm_ over sharded (DTensor) and whole gradients: the global norm from every
    rank's shards plus the whole gradients (the same on every rank) once."""
    grads = [p.grad for p in params if p.grad is not None]
    shards = [g.to_local() for g in grads if hasattr(g, "to_local")]
    whole = [g for g in grads if not hasattr(g, "to_local")]
    device = grads[0].device if grads else None  # collectives on the gradients' device (NCCL: CUDA only)
    sharded = torch.stack([s.double().pow(2).sum() for s in shards]).sum() if shards else torch.zeros((), dtype=torch.float64, device=device)
    dist.all_reduce(sharded)
    total = sharded + (torch.stack([g.double().pow(2).sum() for g in whole]).sum() if whole else 0.0)
    norm = total.sqrt()
    coefficient = torch.clamp(max_norm / (norm + 1e-6), max=1.0)
    for g in shards + whole:
        g.mul_(coefficient.to(g.dtype))
    return norm


def checkpoint_activations(model: torch.nn.Module, block_types: tuple[type, ...]) -> int:
    """Make every `block_types` module of `model` recompute its activations in the backward pass
    instead of keeping them (only while gradients are on, so validation and generation run as
    before). torch's non-reentrant checkpoint restores the RNG state for the recomputation, so
    dropout draws the same masks and the numbers do not change. Returns how many blocks it set."""
    blocks = [m for m in model.modules() if isinstance(m, block_types)]
    for block in blocks:  # a bound method: a deep copy of the model rebinds it to the copy
        block.forward = types.MethodType(_checkpointed_forward, block)
    return len(blocks)


def rank_step_seed(stream: Sequence[int], step: int, rank: int) -> int:
    """The torch seed of one rank's step under data parallelism. Every rank seeded alike would draw
    the same numbers for its rows (a diffusion loss's timesteps and noise, the AR+NAR stage,
    dropout masks): W shards of one draw, not the W independent draws one process makes. Seeded
    by step and rank, the ranks draw independently and a resumed job draws what it would have."""
    return int(np.random.SeedSequence([*stream, step, rank]).generate_state(1, np.uint64)[0])


class Trainer:
    """Optimises `model` with `optimizer` for `steps` steps, resumable from `state_file` (None:
    not resumable, nothing written). `stream` seeds `rng`, the NumPy generator the model's step
    draws its batches from."""

    def __init__(self, label: str, model: torch.nn.Module, optimizer: torch.optim.Optimizer, *, steps: int,
                 grad_clip: float, checkpoint_every: int, stream: Sequence[int], state_file: Path | None,
                 device: torch.device | str = "cpu", warmup_steps: int = 0, min_lr_ratio: float = 0.1,
                 grad_accum: int = 1, bf16: bool = False, extra_state: dict | None = None,
                 checkpoint_blocks: tuple[type, ...] = (), shard_blocks: tuple[type, ...] = ()):
        if steps < 0 or grad_accum < 1 or checkpoint_every < 1 or warmup_steps < 0 or grad_clip <= 0:
            raise ValueError(f"{label}: steps and warmup_steps must be >= 0, grad_accum and checkpoint_every >= 1, "
                             f"grad_clip > 0; got {steps}, {warmup_steps}, {grad_accum}, {checkpoint_every}, {grad_clip}")
        self.rank, self.world = rank_and_world()
        self.checkpointed_blocks = checkpoint_activations(model, checkpoint_blocks) if checkpoint_blocks else 0
        self.sharded = bool(shard_blocks) and self.world > 1
        self.synced: DistributedDataParallel | None = None  # the module `data_parallel` wrapped, if any
        self.whole_params = shard_parameters(model, optimizer, shard_blocks) if self.sharded else []
        self.label, self.model, self.optimizer = label, model, optimizer
        self.steps, self.grad_clip, self.checkpoint_every, self.grad_accum = steps, grad_clip, checkpoint_every, grad_accum
        self.state_file, self.device = state_file, torch.device(device)
        self.autocast = self.device.type == "cuda" and bf16
        self.schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: warmup_cosine(step, steps, warmup_steps, min_lr_ratio))
        self.stream = [int(v) for v in stream]
        self.rng = np.random.default_rng(np.random.SeedSequence(self.stream))
        self.extra_state = dict(extra_state or {})
        self.log: list[dict] = []
        self.start = 0  # the step a resumed run continued from (0: a fresh run)
        self.current_step = 0  # 1-based, while `fit` runs a step
        if state_file is not None and state_file.is_file():
            self._resume(state_file)

    def data_parallel(self, module: torch.nn.Module) -> torch.nn.Module:
        """`module` wrapped for data parallelism when several ranks train, else itself (itself too
        when the model is sharded: FSDP reduces the blocks' gradients, `update` the rest's).
        find_unused_parameters: a shard may leave a parameter unused (e.g. the null caption)."""
        if self.world == 1 or self.sharded:
            return module
        self.synced = DistributedDataParallel(module, device_ids=[self.device] if self.device.type == "cuda" else None,
                                              find_unused_parameters=True)
        return self.synced

    def _micro_batch(self, index: int) -> contextlib.AbstractContextManager:
        """DDP all-reduces the gradients in every backward: the micro-batches before a step's last
        keep theirs local (no_sync, forward included), so a step reduces once, not `grad_accum` times."""
        if self.synced is not None and index < self.grad_accum - 1:
            return self.synced.no_sync()
        return contextlib.nullcontext()

    def update(self, loss_fn: LossFn) -> dict:
        """One optimizer step over `grad_accum` calls of `loss_fn`; returns the step's loss (over
        all ranks), the mean of the numbers `loss_fn` logged, and the gradient norm before clipping."""
        self.optimizer.zero_grad(set_to_none=True)
        total = torch.zeros((), device=self.device)
        numbers: dict[str, float] = {}
        for index in range(self.grad_accum):
            with self._micro_batch(index):
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
        if self.sharded:
            _average_whole_gradients(self.whole_params, self.world)
            grad_norm = _clip_mixed(list(self.model.parameters()), self.grad_clip)
        else:
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
            if self.world > 1:
                torch.manual_seed(rank_step_seed(self.stream, index + 1, self.rank))
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
            due = self.state_file is not None and ((index + 1) % self.checkpoint_every == 0 or index + 1 == last)
            if due and (self.rank == 0 or self.sharded):  # sharded: every rank gathers, rank 0 writes
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
        model_state, optimizer_state = self._full_states()
        if self.rank == 0:
            self._write_state(step, model_state, optimizer_state)
        if self.sharded and self.world > 1:
            # every rank gathered, so every rank waits here until rank 0's file is whole: a rank that
            # resumes right after (a stopped job restarted in the same processes) must not find it
            # missing and start from step 0 while rank 0 resumes, which deadlocks their collectives
            dist.barrier()

    def _write_state(self, step: int, model_state: dict, optimizer_state: dict) -> None:
        state = {"format": STATE_FORMAT, "model": model_state, "optimizer": optimizer_state, "by_name": self.sharded,
                 "schedule": self.schedule.state_dict(), "torch_rng": torch.get_rng_state(),
                 "numpy_rng": json.dumps(self.rng.bit_generator.state), "log": json.dumps(self.log), "step": step}
        if self.device.type == "cuda":  # dropout on the GPU draws from the CUDA generator
            state["cuda_rng"] = torch.cuda.get_rng_state(self.device)
        for name, value in self.extra_state.items():
            state[f"extra/{name}"] = value.get_state() if isinstance(value, torch.Generator) else value
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.state_file) as tmp:
            torch.save(state, tmp)

    def _full_states(self) -> tuple[dict, dict]:
        """The model's and the optimizer's state dicts; when sharded, gathered on every rank (a
        collective) into full, named CPU tensors."""
        if not self.sharded:
            return self.model.state_dict(), self.optimizer.state_dict()
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict, get_optimizer_state_dict

        full = StateDictOptions(full_state_dict=True, cpu_offload=True)
        return get_model_state_dict(self.model, options=full), get_optimizer_state_dict(self.model, self.optimizer, options=full)

    def _resume(self, path: Path) -> None:
        state = load_resume_state(path)
        if state.get("format") != STATE_FORMAT:
            raise CheckpointError(f"{path}: a resume state of format {state.get('format')!r}, not {STATE_FORMAT!r} "
                                  f"(written by another version of siren-bench); delete it to restart that run from step 0")
        if self.sharded or state.get("by_name"):  # full states gathered from a sharded run, keyed by name
            from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict, set_optimizer_state_dict

            full = StateDictOptions(full_state_dict=True)
            set_model_state_dict(self.model, state["model"], options=full)
            set_optimizer_state_dict(self.model, self.optimizer, state["optimizer"], options=full)
        else:
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
