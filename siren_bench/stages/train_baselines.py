"""Stage `train_baselines`: the comparison systems of baselines/, trained on Siren's data.

Every baseline listed in eval.systems (shared_lm, delay_lm, ar_nar, latent_diffusion) trains on
exactly the tokens, captions, text encoder and training settings (model.*) that Siren's experts
train on, each with its own seed (model.seed + the registry's offset), resumably. The shared LM
also logs gradient interference (diagnostics/interference.py) on the same fixed val batch as
Siren's experts, so the report can set the two side by side.

Output (artifacts/<profile>/baselines/): <name>/model.safetensors + config.json (architecture,
parameter count, losses) and <name>/train_log.jsonl per baseline, baselines.json (what was
trained) and provenance.json.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import torch

from baselines import registry
from siren_bench import replicates
from siren_bench.config import ConfigError, baseline_systems, baselines_config, eval_config, model_config
from siren_bench.distributed import launched_world, torchrun_group
from siren_bench.diagnostics.interference import interference_probe
from siren_bench.io import atomic_directory, write_json_atomic, write_text_atomic
from siren_bench.models.train import check_batch_splits, clear_resume_state, train_model
from siren_bench.provenance import build_record, write_provenance
from siren_bench.artifacts import STAGES
from siren_bench.models.experts import ExpertJobs, expert_jobs
from siren_bench.stage_context import open_stage

SUMMARY_NAME = STAGES["baselines"].file("summary")


def shape_of(jobs: ExpertJobs) -> dict:
    s = jobs.siren
    return {"n_codebooks": s.n_codebooks, "codebook_size": s.codebook_size, "code_dim": s.code_dim, "latent_dim": s.code_dim,
            "text_dim": s.text_dim, "max_frames": s.max_frames}


def train_baseline(name: str, jobs: ExpertJobs, overrides: dict, device: torch.device, source: str):
    """(model, its config, log, resumed_from, resume state path) for one baseline."""
    config, spec = jobs.config, registry.spec(name)
    torch.manual_seed(config.seed + spec.seed_offset)
    model, arch = registry.build(name, registry.architecture(name, jobs.siren, overrides), shape_of(jobs), source)
    model.set_code_table(jobs.table)
    if hasattr(model, "fit_normaliser"):  # latent diffusion: per-channel latent statistics of the train clips
        model.fit_normaliser(jobs.train.codes)
    probe = interference_probe(config, jobs.val or jobs.train) if name == "shared_lm" else None
    key = registry.config_key(name, arch, config, jobs.data_id)
    state_file = jobs.resume_dir / f"baseline-{name}-{key}.pt"
    log, start = train_model(model, name, config, jobs.train, jobs.val, state_file, device,
                             [config.seed, spec.seed_offset, 0xBA5E], probe=probe)
    return model, arch, log, start, state_file


def train_one_baseline(params_path: str | Path, name: str, replicate: int = 0) -> Path:
    """`siren-bench train-baseline --name N [--replicate K]`: train baseline N (of seed replicate
    K) to the end outside DVC (a job per
    GPU, or data-parallel under torchrun: NCCL with rank r on cuda:LOCAL_RANK, gloo on the CPU),
    leaving its finished state where `train_baselines` picks it up instead of training it again.
    Under data parallelism every rank draws the whole batch from the same stream and trains on its
    rows: with no dropout and a deterministic loss (shared_lm, delay_lm) the result is the
    one-process run's to float rounding; losses that draw their own noise per row (ar_nar's NAR
    stage, latent_diffusion's timesteps) match it in distribution (each rank's torch draws are
    seeded by step and rank, trainer.rank_step_seed)."""
    stage = open_stage(params_path)
    names = baseline_systems(stage.params, stage.source)
    if name not in names:
        raise ConfigError(f"{stage.source}: eval.systems does not list baseline {name!r} (it lists {names})")
    check_batch_splits(model_config(stage.params, stage.source), launched_world(), stage.source)
    jobs = expert_jobs(stage)  # loads the codes and encodes the captions: checked before
    seeds = eval_config(stage.params, stage.source).seeds
    jobs = replace(jobs, config=replicates.model_config(jobs.config, replicates.check(replicate, seeds, stage.source)))
    with torchrun_group(stage.device()) as device:
        *_, state_file = train_baseline(name, jobs, baselines_config(stage.params, stage.source)[name], device, stage.source)
    return state_file


def run(params_path: str | Path = "params.yaml") -> Path:
    stage = open_stage(params_path)
    names = baseline_systems(stage.params, stage.source)
    overrides = baselines_config(stage.params, stage.source)
    out_dir = stage.dir("baselines")
    if not names:
        with atomic_directory(out_dir) as staging:
            write_json_atomic(staging / SUMMARY_NAME, {"trained": [], "reason": "eval.systems lists no baseline"})
            write_provenance(staging, build_record("train_baselines", {"run": stage.run}, device="cpu"))
        return out_dir
    jobs = expert_jobs(stage)
    device = stage.device()
    seeds = eval_config(stage.params, stage.source).seeds
    finished = []
    with atomic_directory(out_dir) as staging:
        for k in range(seeds):
            finished += _train_replicate(names, replace(jobs, config=replicates.model_config(jobs.config, k)), overrides,
                                         device, stage.source, replicates.folder(staging, k))
        write_provenance(staging, build_record(
            "train_baselines", {"run": stage.run, "model": jobs.config, "baselines": overrides, "seeds": seeds},
            inputs={"codes": stage.dir("tokenize") / STAGES["tokenize"].file("codes"), "codec": stage.dir("codec") / "model"},
            seeds={f"{n} (model.seed + offset{f', + {replicates.SEED_STRIDE} k in replicate k' if seeds > 1 else ''})":
                   jobs.config.seed + registry.spec(n).seed_offset for n in names},
            device=device.type))
    for path in finished:
        clear_resume_state(path)
    return out_dir


def _train_replicate(names: list[str], jobs: ExpertJobs, overrides: dict, device: torch.device, source: str,
                     folder: Path) -> list[Path]:
    """Every listed baseline of one seed replicate into `folder` (<name>/ and baselines.json);
    returns the resume files to clear once the stage output is safe."""
    finished, summary = [], {"trained": names, "models": {}}
    for name in names:
        model, arch, log, start, state_file = train_baseline(name, jobs, overrides[name], device, source)
        vals = [r["val_loss"] for r in log if "val_loss" in r]
        facts = {"description": registry.spec(name).description, "parameters": registry.parameter_count(model),
                 "steps": len(log), "final_train_loss": log[-1]["loss"], "final_val_loss": vals[-1] if vals else None,
                 "resumed_from_step": start, "seed": jobs.config.seed + registry.spec(name).seed_offset,
                 "output": model.output, "codec": jobs.codec.info.as_dict(),
                 "text_encoder": {"kind": jobs.config.text_encoder, **jobs.encoder.identity()}}
        registry.save(model, name, arch, folder / name, facts)
        write_text_atomic(folder / name / "train_log.jsonl", "".join(json.dumps(row) + "\n" for row in log))
        summary["models"][name] = {k: v for k, v in facts.items() if k not in ("codec", "text_encoder")}
        finished.append(state_file)
    write_json_atomic(folder / SUMMARY_NAME, summary)
    return finished
