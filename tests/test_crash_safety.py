"""kill -9 at the library level: a writer killed inside an atomic write leaves the old output (or
none) under the final name, one killed while deleting the folder it replaced leaves the new one,
and neither blocks a later writer; a training run (a Siren expert, the smoke tagger) killed after a checkpoint, run
again, ends with exactly the weights and log of an uninterrupted run; a resume state damaged
after it was written is refused by name, not used.

The killed processes are tests/crash_worker.py; each waits at its kill point (a file appears)
and the test sends SIGKILL, so no cleanup code of the child runs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from siren_bench.io import atomic_directory, write_text_atomic
from siren_bench.weights import CheckpointError
from siren_bench.trainer import TIMING
from tests.conftest import REPO
from tests.crash_worker import STEPS


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """As in the workers (below): one thread for the tiny in-process runs, restored after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _start(mode: str, workdir: Path, *args: str) -> subprocess.Popen:
    workdir.mkdir(parents=True, exist_ok=True)
    # One thread: tiny models, and a second thread only spins on a shared machine. Every run of a
    # test uses the same setting, so their numbers compare bit for bit.
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    with open(workdir / "stderr.txt", "ab") as stderr:
        return subprocess.Popen([sys.executable, "-m", "tests.crash_worker", mode, str(workdir), *args], cwd=REPO, env=env,
                                stdout=subprocess.DEVNULL, stderr=stderr)


def _stderr(workdir: Path) -> str:
    return (workdir / "stderr.txt").read_text(errors="replace")[-3000:]


def _kill_when(process: subprocess.Popen, workdir: Path, ready, timeout: float = 60.0) -> None:
    """SIGKILL the worker as soon as `ready()` holds; it must still be running then."""
    deadline = time.monotonic() + timeout
    while not ready():
        assert process.poll() is None, f"the worker ended before its kill point:\n{_stderr(workdir)}"
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"the worker did not reach its kill point in {timeout} s:\n{_stderr(workdir)}")
        time.sleep(0.005)
    os.kill(process.pid, signal.SIGKILL)
    assert process.wait(timeout=30) == -signal.SIGKILL


def _result(process: subprocess.Popen, workdir: Path) -> dict:
    """The finished run's weights (bytes), log and optimizer steps."""
    assert process.wait(timeout=300) == 0, _stderr(workdir)
    run = json.loads((workdir / "result" / "run.json").read_text())
    run["weights"] = (workdir / "result" / "weights.safetensors").read_bytes()
    run["log"] = [{k: v for k, v in row.items() if k not in TIMING} for row in run["log"]]  # wall-clock time differs
    return run


def _visible(folder: Path) -> list[str]:
    """What a reader listing the folder sees: temporaries are hidden (".name.*.tmp")."""
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))


def _temporaries(folder: Path, name: str) -> list[Path]:
    return [p for p in folder.iterdir() if p.name.startswith(f".{name}.") and p.name.endswith(".tmp")]


# ------------------------------------------------------------------------------------- atomic writes

@pytest.mark.parametrize("old", [True, False], ids=["over an old file", "no old file"])
def test_a_writer_killed_inside_atomic_path_leaves_the_old_file_and_blocks_no_later_writer(tmp_path, old):
    target = tmp_path / "out.txt"
    if old:
        write_text_atomic(target, "old, complete")
    _kill_when(_start("write-file", tmp_path), tmp_path, lambda: (tmp_path / "ready").exists())

    assert (target.read_text() == "old, complete") if old else not target.exists()
    assert _visible(tmp_path) == sorted(["ready", "stderr.txt"] + (["out.txt"] if old else []))
    # the killed writer's temporary (it ran no cleanup) is hidden beside the target, never under its name
    assert [p.read_text() for p in _temporaries(tmp_path, "out.txt")] == ["new content, half writ"]

    write_text_atomic(target, "newer, complete")
    assert target.read_text() == "newer, complete"


@pytest.mark.parametrize("old", [True, False], ids=["over an old folder", "no old folder"])
def test_a_writer_killed_inside_atomic_directory_leaves_the_old_folder_and_blocks_no_later_writer(tmp_path, old):
    target = tmp_path / "out"
    if old:
        with atomic_directory(target) as staging:
            (staging / "old.txt").write_text("old")
    _kill_when(_start("write-dir", tmp_path), tmp_path, lambda: (tmp_path / "ready").exists())

    assert (sorted(p.name for p in target.iterdir()) == ["old.txt"]) if old else not target.exists()
    assert _visible(tmp_path) == sorted(["ready", "stderr.txt"] + (["out"] if old else []))
    [staging] = _temporaries(tmp_path, "out")  # the killed writer's half-built folder, hidden beside it
    assert [p.name for p in staging.iterdir()] == ["new.txt"]

    with atomic_directory(target) as staging:  # a fresh staging folder of its own: the leftover is in no one's way
        (staging / "newer.txt").write_text("newer")
    assert sorted(p.name for p in target.iterdir()) == ["newer.txt"]


def test_a_writer_killed_while_deleting_the_folder_it_replaced_leaves_the_new_one_and_blocks_no_later_writer(
        tmp_path, monkeypatch):
    target = tmp_path / "out"
    with atomic_directory(target) as staging:
        (staging / "old.txt").write_text("old")
    process = _start("replace-dir", tmp_path)
    _kill_when(process, tmp_path, lambda: (tmp_path / "ready").exists())

    assert [p.name for p in target.iterdir()] == ["new.txt"]  # swapped in whole before the old one is deleted
    assert _visible(tmp_path) == ["out", "ready", "stderr.txt"]  # the undeleted old folder is hidden

    # a later writer that happens to get the killed one's process id, as processes in containers do
    monkeypatch.setattr(os, "getpid", lambda: process.pid)
    with atomic_directory(target) as staging:
        (staging / "newer.txt").write_text("newer")
    assert [p.name for p in target.iterdir()] == ["newer.txt"]


# ------------------------------------------------------------------------------------- resumable runs

# (The alignment's kill and resume runs inside the pipeline: test_pipeline.py kills align_siren.)
@pytest.mark.parametrize("mode", ["siren", "smoke-tagger"])
def test_a_run_killed_after_a_checkpoint_ends_with_the_numbers_of_an_uninterrupted_run(tmp_path, mode):
    uninterrupted = _start(mode, tmp_path / "full")  # alongside the killed run

    killed = tmp_path / "killed"
    resume = killed / "resume"
    _kill_when(_start(mode, killed, "--slow", "0.25"), killed, lambda: any(resume.glob("*.pt")))
    assert not (killed / "result").exists()
    [state_file] = resume.glob("*.pt")  # complete, or it would not carry its final name
    saved_step = int(torch.load(state_file, map_location="cpu", weights_only=True)["step"])
    assert 0 < saved_step < STEPS

    again = _result(_start(mode, killed), killed)
    full = _result(uninterrupted, tmp_path / "full")
    assert again["weights"] == full["weights"]  # the same tensors, bit for bit
    assert again["log"] == full["log"]
    # it resumed (a restart from step 0 would end the same): this process ran only the remaining steps
    assert again["optimizer_steps"] == full["optimizer_steps"] * (STEPS - saved_step) // STEPS


def _siren_run(resume: Path, stop_after: int | None = None):
    from siren_bench.config import ModelConfig
    from siren_bench.models.train import resume_file, train_expert
    from tests.test_siren import _token_set, tiny_config

    siren, config = tiny_config(), ModelConfig(train_steps=4, batch_size=2, crop_frames=6, checkpoint_every=2, warmup_steps=1)
    torch.manual_seed(0)
    table = torch.randn(4, 16, 8)
    trained = train_expert(0, siren, config, table, _token_set(3, 8, 0), None, resume, "damage-test", torch.device("cpu"),
                           stop_after=stop_after)
    return trained, resume_file(resume, config, siren, 0, "damage-test")


DAMAGE = {
    "garbage": lambda path: path.write_bytes(b"not a torch file" * 8),
    "empty": lambda path: path.write_bytes(b""),
    "truncated": lambda path: path.write_bytes(path.read_bytes()[: path.stat().st_size // 2]),
}


@pytest.mark.parametrize("damage", list(DAMAGE.values()), ids=list(DAMAGE))
def test_a_damaged_resume_state_is_refused_by_name_and_deleting_it_restarts_the_run(tmp_path, damage):
    full, _ = _siren_run(tmp_path / "full")
    _, state_file = _siren_run(tmp_path / "resume", stop_after=2)
    damage(state_file)
    with pytest.raises(CheckpointError, match="delete it to restart that run from step 0") as info:
        _siren_run(tmp_path / "resume")
    assert str(state_file) in str(info.value)

    state_file.unlink()
    restarted, _ = _siren_run(tmp_path / "resume")
    assert restarted.resumed_from == 0 and [r["loss"] for r in restarted.log] == [r["loss"] for r in full.log]


def test_alignment_and_the_smoke_evaluators_refuse_a_damaged_resume_state_too(tmp_path):
    from siren_bench.data.synthcaps import CLASS_NAMES, generate_clip
    from siren_bench.embedders.smoke import SmokeAudioConfig, SmokeTaggerConfig, train_smoke_tagger
    from siren_bench.models.align import Aligner
    from tests.test_align import _config, _prefers_token
    from tests.test_siren import random_text, tiny_siren

    state_file = tmp_path / "align.pt"
    state_file.write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match="resume state") as info:
        Aligner(tiny_siren(), _config(steps=2), _prefers_token).train(random_text(3), state_file)
    assert str(state_file) in str(info.value)

    clips = [generate_clip(5, i, 16000, 1.0, max_events=1) for i in range(6)]
    waves, labels = [c.wave for c in clips], [[int(n in c.labels) for n in CLASS_NAMES] for c in clips]
    config = SmokeTaggerConfig(audio=SmokeAudioConfig(channels=(8, 8, 8, 8), hidden_dim=16, embed_dim=8), steps=2, batch_size=2)
    first = train_smoke_tagger(waves[:4], labels[:4], config, val_waves=waves[4:], val_labels=labels[4:], resume_dir=tmp_path,
                               stop_after=1)
    first.resume_path.write_bytes(b"")
    with pytest.raises(CheckpointError, match="resume state") as info:
        train_smoke_tagger(waves[:4], labels[:4], config, val_waves=waves[4:], val_labels=labels[4:], resume_dir=tmp_path)
    assert str(first.resume_path) in str(info.value)
