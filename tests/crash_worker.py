"""Child processes for tests/test_crash_safety.py, which kill them with SIGKILL at a point they
wait for. Run as `python -m tests.crash_worker MODE WORKDIR [--slow SECONDS]` from the repository.

write-file, write-dir: start an atomic write of WORKDIR/out.txt (io.atomic_path) or WORKDIR/out
(io.atomic_directory), put new content in its temporary, touch WORKDIR/ready, sleep until killed.
replace-dir: swap a new WORKDIR/out in over the old one, and wait to be killed while deleting the old.

cli (`cli [--slow S] WORKDIR ARGS`): `siren-bench ARGS` (e.g. `train-expert --index 0 --params P`),
optimizer steps slowed by --slow; also under torchrun, where every rank is slowed alike.

siren, smoke-tagger: a tiny resumable run (a Siren expert's training, the smoke tagger's) of
STEPS steps, its resume state under WORKDIR/resume written every 2 steps. A run
that finishes writes WORKDIR/result/: weights.safetensors (the trained weights) and run.json
(the log, and how many optimizer steps this process ran).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from siren_bench.io import atomic_directory, atomic_path, write_json_atomic

# The training modes import torch and the models inside their functions: the write modes start fast.

STEPS = 8


def _wait_to_be_killed(workdir: Path) -> None:
    (workdir / "ready").touch()
    time.sleep(600)


def write_file(workdir: Path) -> None:
    with atomic_path(workdir / "out.txt") as tmp:
        tmp.write_text("new content, half writ")
        _wait_to_be_killed(workdir)


def write_dir(workdir: Path) -> None:
    with atomic_directory(workdir / "out") as staging:
        (staging / "new.txt").write_text("new")
        _wait_to_be_killed(workdir)


def replace_dir(workdir: Path) -> None:
    import shutil

    delete = shutil.rmtree

    def killed_while_deleting(path, *args, **kwargs):
        if Path(path).parent == workdir:  # the retired old folder; the new one is in place by now
            _wait_to_be_killed(workdir)
        delete(path, *args, **kwargs)

    shutil.rmtree = killed_while_deleting
    with atomic_directory(workdir / "out") as staging:
        (staging / "new.txt").write_text("new")


def count_optimizer_steps(slow: float) -> list:
    """Each training loop clips its gradients once per optimizer step, through this attribute:
    wrap it to count the steps this process runs, sleeping `slow` seconds before each (so that a
    test can kill the run part-way; the numbers are the same with or without the sleep)."""
    import torch

    calls = []
    clip = torch.nn.utils.clip_grad_norm_

    def counted(*args, **kwargs):
        calls.append(1)
        time.sleep(slow)
        return clip(*args, **kwargs)

    torch.nn.utils.clip_grad_norm_ = counted
    return calls


def train_siren(resume: Path) -> tuple[dict, list[dict]]:
    import torch

    from siren_bench.config import ModelConfig
    from siren_bench.models.train import train_expert
    from tests.test_siren import _token_set, tiny_config

    config = ModelConfig(train_steps=STEPS, batch_size=3, crop_frames=6, checkpoint_every=2, val_every=2, warmup_steps=2,
                         learning_rate=1e-3, grad_accum=2)
    torch.manual_seed(0)
    table = torch.randn(4, 16, 8)
    trained = train_expert(1, tiny_config(dropout=0.1), config, table, _token_set(5, 8, 0), _token_set(2, 7, 1), resume,
                           "crash-test", torch.device("cpu"))
    return trained.expert.state_dict(), trained.log


def train_tagger(resume: Path) -> tuple[dict, list[dict]]:
    import numpy as np

    from siren_bench.data.synthcaps import CLASS_NAMES, generate_clip
    from siren_bench.embedders.smoke import SmokeAudioConfig, SmokeTaggerConfig, train_smoke_tagger

    clips = [generate_clip(5, i, 16000, 1.0, max_events=1) for i in range(12)]
    labels = np.array([[int(name in c.labels) for name in CLASS_NAMES] for c in clips])
    config = SmokeTaggerConfig(audio=SmokeAudioConfig(channels=(16, 16, 16, 16), hidden_dim=32, embed_dim=16), steps=STEPS,
                               batch_size=4, checkpoint_every=2)
    waves = [c.wave for c in clips]
    result = train_smoke_tagger(waves[:8], labels[:8], config, seed=0, val_waves=waves[8:], val_labels=labels[8:],
                                resume_dir=resume)
    return result.net.state_dict(), result.log


RUNS = {"siren": train_siren, "smoke-tagger": train_tagger}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["write-file", "write-dir", "replace-dir", "cli", *RUNS])
    parser.add_argument("workdir", type=Path)
    parser.add_argument("--slow", type=float, default=0.0, help="seconds to sleep before each optimizer step")
    parser.add_argument("cli_args", nargs=argparse.REMAINDER, help="cli mode: siren-bench's arguments")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    if args.mode == "cli":
        from siren_bench.cli import main as siren_bench

        import os

        steps = count_optimizer_steps(args.slow)
        status = siren_bench(args.cli_args)
        (args.workdir / f"optimizer-steps-rank{os.environ.get('RANK', 0)}.txt").write_text(str(len(steps)))
        raise SystemExit(status)
    if args.mode == "write-file":
        return write_file(args.workdir)
    if args.mode == "write-dir":
        return write_dir(args.workdir)
    if args.mode == "replace-dir":
        return replace_dir(args.workdir)
    from safetensors.torch import save_file

    steps = count_optimizer_steps(args.slow)
    state, log = RUNS[args.mode](args.workdir / "resume")
    with atomic_directory(args.workdir / "result") as staging:
        save_file({k: v.detach().contiguous() for k, v in state.items()}, staging / "weights.safetensors")
        write_json_atomic(staging / "run.json", {"log": log, "optimizer_steps": len(steps)})


if __name__ == "__main__":
    main()
