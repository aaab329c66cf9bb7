"""Stage `sweep`: how generation quality and reconstruction fidelity move with RVQ depth.

For each d in sweep.depths, Siren (its experts over the first d codebooks, model.codebooks_per_expert
each) and the shared LM (one trunk over the first d codebooks) are trained from scratch on the
first d codebooks of the same tokens, with the same settings (model.*) as the main run, and
generate the test captions; the codec decodes the d-codebook codes (every prefix decodes: the
codec trains with quantizer dropout), and the profile's recipe scores them, together with the
codec's own resynthesis from the test clips' first d codebooks (the ceiling at that depth). The
full depth is the main run's `siren`, `shared_lm` and `codec_resynthesis` rows, which the report
joins in.

With two codebooks per expert, Siren at depth 2 is one expert over both codebooks: the same
architecture as the shared LM at depth 2, trained with another seed. The pair then measures seed
noise, which the report says.

Output (artifacts/<profile>/sweep/): <system>_d<d>/ (results.json, per_clip.csv),
audio/<system>_d<d>/*.wav, sweep.json (per system and depth: metrics, validation loss) and
provenance.json.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from baselines import registry
from siren_bench.config import ConfigError, codec_config, eval_config, sweep_config
from siren_bench.data.manifest import MANIFEST_NAME, read_manifest
from siren_bench.io import atomic_directory, write_json_atomic
from siren_bench.models.collaborative import Siren
from siren_bench.models.train import TokenSet, clear_resume_state, resume_file, train_expert, train_model
from siren_bench.provenance import build_record, write_provenance
from siren_bench.stages.common import open_stage
from siren_bench.stages.generate import SCORED_SPLIT, codec_resynthesis, render
from siren_bench.stages.score import stage_scorer
from siren_bench.stages.tokenize import load_codes
from siren_bench.stages.train_baselines import architecture
from siren_bench.stages.train_siren import ExpertJobs, expert_jobs

SUMMARY_NAME = "sweep.json"


def truncate(tokens: TokenSet | None, depth: int) -> TokenSet | None:
    return None if tokens is None else TokenSet([c[:depth] for c in tokens.codes], tokens.text)


def train_at_depth(system: str, depth: int, jobs: ExpertJobs, device: torch.device, finished: list[Path]):
    """(model, its final val loss) for `system` retrained on the first `depth` codebooks."""
    config, train, val, table = jobs.config, truncate(jobs.train, depth), truncate(jobs.val, depth), jobs.table[:depth]
    data_id = f"{jobs.data_id}-depth{depth}"
    if system == "siren":
        siren = dataclasses.replace(jobs.siren, n_codebooks=depth, groups=None)
        try:
            groups = siren.expert_groups()
        except ValueError as exc:
            raise ConfigError(f"sweep.depths: {exc}") from exc
        experts, vals = [], []
        for index in range(len(groups)):
            result = train_expert(index, siren, config, table, train, val, jobs.resume_dir, data_id, device)
            experts.append(result.expert)
            vals += [r["val_loss"] for r in result.log if "val_loss" in r][-1:]
            finished.append(resume_file(jobs.resume_dir, config, siren, index, data_id))
        return Siren(siren, experts).eval(), float(np.mean(vals)) if vals else None
    spec = registry.BASELINES["shared_lm"]
    torch.manual_seed(config.seed + spec.seed_offset)
    arch = architecture("shared_lm", jobs, {}) | {"n_codebooks": depth}
    model, arch = registry.build("shared_lm", arch, {})
    model.set_code_table(table)
    state = jobs.resume_dir / f"sweep-shared_lm-d{depth}-{registry.config_key('shared_lm', arch, config, data_id)}.pt"
    log, _ = train_model(model, f"shared_lm d={depth}", config, train, val, state, device, [config.seed, spec.seed_offset, depth])
    finished.append(state)
    vals = [r["val_loss"] for r in log if "val_loss" in r]
    return model.eval(), vals[-1] if vals else None


def run(params_path: str | Path = "params.yaml") -> Path:
    stage = open_stage(params_path)
    sweep, evaluation = sweep_config(stage.params, stage.source), eval_config(stage.params, stage.source)
    out_dir = stage.dir("sweep")
    if not sweep.depths or not sweep.systems:
        with atomic_directory(out_dir) as staging:
            write_json_atomic(staging / SUMMARY_NAME, {"depths": [], "reason": "sweep.depths or sweep.systems is empty"})
            write_provenance(staging, build_record("sweep", {"run": stage.run, "sweep": sweep}, device="cpu"))
        return out_dir
    jobs = expert_jobs(stage)
    if max(sweep.depths) >= jobs.siren.n_codebooks:
        raise ConfigError(f"{stage.source}: sweep.depths {sweep.depths} must stay below the codec's {jobs.siren.n_codebooks} "
                          "codebooks (the full depth is the main run's)")
    manifest = read_manifest(stage.dir("prepare") / MANIFEST_NAME)
    test = manifest[manifest["split"] == SCORED_SPLIT]
    lengths = dict(zip(test["clip_id"], test["num_samples"].astype(int)))
    test_codes = load_codes(stage.dir("tokenize"), required=test["clip_id"].tolist())
    device, codec, config = stage.device(), jobs.codec, jobs.config
    scorer = stage_scorer(stage)
    batch = codec_config(stage.params, stage.source).batch_clips  # as the generate stage renders
    summary: dict = {"depths": sorted(sweep.depths), "full_depth": jobs.siren.n_codebooks, "recipe": scorer.recipe.id,
                     "systems": {}}
    finished: list[Path] = []
    with atomic_directory(out_dir) as staging:
        for depth in sorted(sweep.depths):
            name = f"codec_resynthesis_d{depth}"
            folder = staging / "audio" / name
            codec_resynthesis(codec, test["clip_id"].tolist(), {c: v[:depth] for c, v in test_codes.items()}, lengths, folder,
                              batch)
            summary["systems"].setdefault("codec_resynthesis", {})[depth] = {"val_loss": None,
                                                                              "metrics": scorer.score(folder, staging / name)["metrics"]}
            for system in sweep.systems:
                model, val_loss = train_at_depth(system, depth, jobs, device, finished)
                name = f"{system}_d{depth}"
                render(model, "codes", name, codec, jobs.encoder, test, lengths, config, staging / "audio" / name, batch, device)
                scored = scorer.score(staging / "audio" / name, staging / name)
                summary["systems"].setdefault(system, {})[depth] = {"val_loss": val_loss, "metrics": scored["metrics"]}
        write_json_atomic(staging / SUMMARY_NAME, summary)
        write_provenance(staging, build_record(
            "sweep", {"run": stage.run, "sweep": sweep, "model": config, "eval": evaluation},
            inputs={"codes": stage.dir("tokenize") / "codes.npz", "codec": stage.dir("codec") / "model",
                    "manifest": stage.dir("prepare") / MANIFEST_NAME},
            seeds={"model.seed": config.seed, "generation_seed": config.generation_seed}, device=device.type))
    for path in finished:
        clear_resume_state(path)
    return out_dir
