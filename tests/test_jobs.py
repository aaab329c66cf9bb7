"""siren-bench-jobs (siren_bench/jobs.py): the Hydra app that submits the outside-DVC jobs to
Slurm. The submission itself, two local tasks training one expert, is in test_pipeline.py."""

from __future__ import annotations

import os

import pytest
from hydra import compose, initialize_config_module

from siren_bench import jobs


def _job(*overrides):
    with initialize_config_module(config_module="siren_bench", version_base="1.3"):
        return compose(config_name="jobs", overrides=list(overrides))


def test_each_job_is_the_command_line_it_names():
    assert jobs.command_line(_job("index=3")) == ["train-expert", "--index", "3", "--replicate", "0", "--params", "params.yaml"]
    assert jobs.command_line(_job("job=train-baseline", "name=ar_nar", "params=p.yaml", "replicate=1")) == [
        "train-baseline", "--name", "ar_nar", "--replicate", "1", "--params", "p.yaml"]
    assert jobs.command_line(_job("index=2", "replicate=2"))[:4] == ["train-expert", "--index", "2", "--replicate"]
    assert jobs.command_line(_job("job=generate-shard", "name=siren", "replicate=2")) == [
        "generate-shard", "--system", "siren", "--replicate", "2", "--params", "params.yaml"]


@pytest.mark.parametrize("overrides, message", [(["job=train"], "job=train: one of train-expert"),
                                                (["job=train-baseline"], "needs name=<baseline>"),
                                                (["job=generate-shard"], "needs name=<system>")])
def test_a_job_it_cannot_run_is_refused_by_name(overrides, message):
    with pytest.raises(ValueError, match=message):
        jobs.command_line(_job(*overrides))


def test_the_default_launcher_is_slurm_one_task_per_gpu():
    with initialize_config_module(config_module="siren_bench", version_base="1.3"):
        config = compose(config_name="jobs", return_hydra_config=True)
    launcher = config.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher") and launcher.tasks_per_node == launcher.gpus_per_node == 8
    assert config.hydra.job.chdir is False  # params.yaml and artifacts/ resolve where the job was submitted


def test_outside_a_job_nothing_is_exported(monkeypatch):
    for key in [k for k in os.environ if k.startswith(("SLURM_", "SUBMITIT_"))] + ["RANK", "WORLD_SIZE"]:
        monkeypatch.delenv(key, raising=False)
    assert jobs.join_task_group() == 1
    assert "RANK" not in os.environ and "WORLD_SIZE" not in os.environ


def test_a_task_of_a_two_task_job_exports_the_rendezvous_torch_reads(monkeypatch):
    """What submitit's local executor sets for task 1 of 2 (Slurm's variables play the same role)."""
    for key in [k for k in os.environ if k.startswith("SLURM_")]:
        monkeypatch.delenv(key, raising=False)
    for key, value in {"SUBMITIT_LOCAL_JOB_ID": "77", "SUBMITIT_LOCAL_NTASKS": "2", "SUBMITIT_LOCAL_JOB_NUM_NODES": "1",
                       "SUBMITIT_LOCAL_NODEID": "0", "SUBMITIT_LOCAL_GLOBALID": "1", "SUBMITIT_LOCAL_LOCALID": "1",
                       "SUBMITIT_EXECUTOR": "local", "CUDA_VISIBLE_DEVICES": "0,1"}.items():
        monkeypatch.setenv(key, value)
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR"):
        monkeypatch.setenv(key, "stale")  # a job launched from inside another: overwritten, not kept
    monkeypatch.setenv("MASTER_PORT", "29611")  # a port the user chose is kept
    assert jobs.join_task_group() == 2
    assert (os.environ["RANK"], os.environ["WORLD_SIZE"], os.environ["LOCAL_RANK"]) == ("1", "2", "1")
    assert os.environ["MASTER_PORT"] == "29611" and os.environ["MASTER_ADDR"] not in ("", "stale")
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "0,1"  # every GPU stays visible: the task takes cuda:LOCAL_RANK
