"""`siren-bench-jobs`: the outside-DVC jobs submitted to Slurm through Hydra's submitit launcher.

The expensive parts of the real run (each Siren expert, each baseline, each system's rendering) are
jobs of the `siren-bench` command line (`train-expert`, `train-baseline`, `generate-shard`) that
leave their finished state where the DVC stage picks it up. Under Slurm, Hydra's submitit launcher
(hydra-submitit-launcher) submits them: one Slurm job per swept value, `nodes` x `tasks_per_node`
tasks per job, one task per GPU. Every task joins one process group through torch's env://
rendezvous, the variables submitit derives from the job (MASTER_ADDR from the first node, RANK,
WORLD_SIZE, LOCAL_RANK), so the job runs the same code path as torchrun: data parallelism over
its tasks, rank 0 writing the resume state. A job Slurm stops (time limit, preemption) and
resubmits (`hydra.launcher.max_num_timeout`) resumes from its last checkpoint, as after a kill.

    siren-bench-jobs --multirun job=train-expert index=0,1,2,3,4,5 hydra.launcher.nodes=1 \\
        hydra.launcher.partition=gpu hydra.launcher.max_num_timeout=3

`hydra/launcher=submitit_local` runs the same jobs as local processes (tests/test_pipeline.py
trains an expert over two local tasks this way).
"""

from __future__ import annotations

import os
import sys

import hydra
from omegaconf import DictConfig

COMMANDS = ("train-expert", "train-baseline", "generate-shard")


def command_line(job: DictConfig) -> list[str]:
    """The `siren-bench` arguments this job runs."""
    if job.job not in COMMANDS:
        raise ValueError(f"job={job.job}: one of {', '.join(COMMANDS)}")
    if job.job == "train-expert":
        chosen = ["--index", str(int(job.index))]
    elif job.name is None:
        raise ValueError(f"job={job.job} needs name=<{'baseline' if job.job == 'train-baseline' else 'system'}>")
    elif job.job == "train-baseline":
        chosen = ["--name", str(job.name)]
    else:
        chosen = ["--system", str(job.name)]
    return [job.job, *chosen, "--replicate", str(int(job.replicate)), "--params", str(job.params)]


def join_task_group() -> int:
    """Inside a submitit job of several tasks, export the env:// rendezvous variables torch reads
    (every GPU of the node stays visible: the task takes cuda:LOCAL_RANK). Returns the number of
    tasks (1 outside a job, where nothing is exported)."""
    import submitit

    try:
        environment = submitit.JobEnvironment()
    except RuntimeError:  # not a submitit job (Hydra's basic launcher): one process
        return 1
    if environment.num_tasks > 1:
        submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
    return environment.num_tasks


@hydra.main(version_base="1.3", config_path=".", config_name="jobs")
def main(job: DictConfig) -> None:
    from siren_bench import cli

    arguments = command_line(job)
    tasks = join_task_group()
    print(f"siren-bench-jobs: rank {os.environ.get('RANK', '0')} of {tasks}: siren-bench {' '.join(arguments)}", flush=True)
    status = cli.main(arguments)
    if status:
        raise SystemExit(f"siren-bench {' '.join(arguments)} failed with status {status}")


if __name__ == "__main__":
    sys.exit(main())
