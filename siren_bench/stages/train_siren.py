"""Stage `train_siren`: Siren Stage 1, one expert after another on this device.

Each expert trains as its own job (seed + expert index) on the train split's codes and captions,
with the val split's loss logged. Text conditioning: the encoder `model.text_encoder` names
(token states, mask, pooled vector): the offline MiniLM in the smoke profile, CLAP's text tower
(the official choice) or T5 from local weights. Codes are embedded through the codec's own
per-codebook decode vectors (frozen) and a trainable projector.

Experts share nothing. This stage runs them in sequence on one device; `siren-bench
train-expert --index I` runs one outside DVC (one job per GPU, or data-parallel under torchrun)
and leaves its finished state in artifacts/<profile>/resume/, which the stage then assembles
instead of training that expert again. Output (artifacts/<profile>/siren/): siren.json (the
architecture, groups, codec and text encoder identities, per-expert losses),
expert_<i>.safetensors, train_log.jsonl, provenance.json.
"""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path

from safetensors.torch import save_file

from siren_bench.artifacts import STAGES, expert_file
from siren_bench.config import ConfigError, ModelConfig, eval_config, model_config
from siren_bench.data.manifest import MANIFEST_NAME
from siren_bench.distributed import launched_world, torchrun_group
from siren_bench.io import atomic_directory, write_json_atomic, write_text_atomic
from siren_bench.models.experts import SIREN_INFO_NAME, expert_jobs
from siren_bench.models.official import deviations
from siren_bench.models.train import check_batch_splits, clear_resume_state, resume_file
from siren_bench import replicates
from siren_bench.provenance import build_record, write_provenance
from siren_bench.stage_context import open_stage



def train_one_expert(params_path: str | Path, index: int, replicate: int = 0) -> Path:
    """`siren-bench train-expert --index I [--replicate K]`: train expert I (of seed replicate K)
    to the end outside DVC (one job per GPU, in parallel), leaving its finished state where the
    `train_siren` stage picks it up instead of training it again. Under torchrun (WORLD_SIZE > 1)
    the ranks train this one expert data-parallel: NCCL on CUDA (rank r on cuda:LOCAL_RANK), gloo on CPU."""
    stage = open_stage(params_path)
    evaluation = eval_config(stage.params, stage.source)
    if "siren" not in evaluation.systems:
        raise ConfigError(f"{stage.source}: eval.systems does not list siren; there is nothing to train")
    check_batch_splits(model_config(stage.params, stage.source), launched_world(), stage.source)
    jobs = expert_jobs(stage)  # loads the codes and encodes the captions: checked before
    jobs = replace(jobs, config=replicates.model_config(jobs.config, replicates.check(replicate, evaluation.seeds, stage.source)))
    if not 0 <= index < len(jobs.siren.expert_groups()):
        raise ConfigError(f"--index {index}: the model has experts 0..{len(jobs.siren.expert_groups()) - 1}")
    with torchrun_group(stage.device()) as device:
        jobs.train_expert(index, device)
    return resume_file(jobs.resume_dir, jobs.config, jobs.siren, index, jobs.data_id)


def run(params_path: str | Path = "params.yaml") -> Path:
    stage = open_stage(params_path)
    run_cfg, config = stage.run, model_config(stage.params, stage.source)
    out_dir = stage.dir("siren")
    evaluation = eval_config(stage.params, stage.source)
    if "siren" not in evaluation.systems:
        return _not_trained(stage, config, out_dir, "eval.systems does not list siren")
    prepare_dir, tokenize_dir, codec_dir = stage.dir("prepare"), stage.dir("tokenize"), stage.dir("codec")
    jobs = expert_jobs(stage)
    device = stage.device()
    finished = []
    with atomic_directory(out_dir) as staging:
        for k in range(evaluation.seeds):
            finished += _train_replicate(replace(jobs, config=replicates.model_config(config, k)), device,
                                         replicates.folder(staging, k))
        record = build_record("train_siren", {"run": run_cfg, "model": config, "seeds": evaluation.seeds},
                              inputs={"codes": tokenize_dir / STAGES["tokenize"].file("codes"), "manifest": prepare_dir / MANIFEST_NAME,
                                      "codec": codec_dir / "model"},
                              seeds={"model.seed (expert i uses seed + i)": config.seed,
                                     **_replicate_seeds(evaluation.seeds, config.seed)}, device=device.type)
        write_provenance(staging, record)
    for path in finished:
        clear_resume_state(path)
    return out_dir


def _replicate_seeds(n: int, seed: int) -> dict:
    return {f"replicate {k} model.seed": seed + k * replicates.SEED_STRIDE for k in range(1, n)}


def _train_replicate(jobs, device, folder: Path) -> list[Path]:
    """Every expert of one replicate into `folder` (expert files, train_log.jsonl, siren.json);
    returns the resume files to clear once the stage output is safe."""
    siren, config, finished = jobs.siren, jobs.config, []
    folder.mkdir(parents=True, exist_ok=True)
    logs, summaries = [], []
    for index in range(len(siren.expert_groups())):
        result = jobs.train_expert(index, device)
        save_file({k: v.detach().cpu().contiguous() for k, v in result.expert.state_dict().items()},
                  folder / expert_file(index))
        logs += [{"expert": index, **row} for row in result.log]
        vals = [r["val_loss"] for r in result.log if "val_loss" in r]
        summaries.append({"expert": index, "codebooks": siren.expert_groups()[index], "steps": len(result.log),
                          "final_train_loss": result.log[-1]["loss"], "final_val_loss": vals[-1] if vals else None,
                          "resumed_from_step": result.resumed_from, "seed": config.seed + index,
                          "parameters": sum(p.numel() for p in result.expert.parameters()),
                          "trainable_parameters": sum(p.numel() for p in result.expert.parameters() if p.requires_grad)})
        finished.append(resume_file(jobs.resume_dir, config, siren, index, jobs.data_id))
    write_text_atomic(folder / "train_log.jsonl", "".join(json.dumps(row) + "\n" for row in logs))
    info = {"trained": True, "architecture": asdict(siren), "experts": summaries, "codec": jobs.codec.info.as_dict(),
            "text_encoder": {"kind": config.text_encoder, **jobs.encoder.identity()}, "seed": config.seed,
            "n_train_clips": len(jobs.train.codes), "n_val_clips": len(jobs.val.codes) if jobs.val else 0,
            "device": device.type, "deviations_from_official": deviations(config, siren)}
    write_json_atomic(folder / SIREN_INFO_NAME, info)
    return finished


def _not_trained(stage, config: ModelConfig, out_dir: Path, reason: str) -> Path:
    """A stage folder saying why nothing was trained, so later stages and the report can say so."""
    with atomic_directory(out_dir) as staging:
        write_json_atomic(staging / SIREN_INFO_NAME, {"trained": False, "reason": reason})
        write_provenance(staging, build_record("train_siren", {"run": stage.run, "model": config}, device="cpu"))
    return out_dir


