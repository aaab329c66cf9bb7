"""Stage `sweep`: Siren retrained from scratch in variants, each generating and scored like the
main run's systems.

The fidelity-capacity sweep: for each d in sweep.depths, Siren (its experts over the first d
codebooks, model.codebooks_per_expert each) and the shared LM (one trunk over the first d
codebooks) are trained on the first d codebooks of the same tokens, with the same settings
(model.*) as the main run, and generate the test captions; the codec decodes the d-codebook codes
(every prefix decodes: the codec trains with quantizer dropout), and the profile's recipe scores
them, together with the codec's own resynthesis from the test clips' first d codebooks (the
ceiling at that depth). The full depth is the main run's `siren`, `shared_lm` and
`codec_resynthesis` rows, which the report joins in.

The shared LM has the main run's architecture (`baselines.shared_lm`, sized to Siren's full-depth
parameter count) at every depth, so its curve is one model's capacity spread over more and more
codebooks, the paper's dilemma; Siren gains an expert per model.codebooks_per_expert codebooks,
so below the full depth it is the smaller of the two.

Seed replicates (eval.seeds, siren_bench/replicates.py): Siren and the shared LM are trained and
sampled at every depth once per replicate, replicate k with the main run's replicate-k seeds, so
that the sweep's verdicts rest on the same seed spread as the main table's. The codec's
resynthesis is deterministic and made once.

The ablations (sweep.ablations, models/ablations.py): each is Siren with one design choice
changed, at a depth d, retrained and scored against the unablated Siren at d (the sweep's
retrained one, trained here if the sweep has none at d; at the full depth, the main run's), once
per seed replicate: replicate k of the variant against replicate k of its reference, both
trained with replicate k's seeds, so that the report pairs them seed by seed.

Output (artifacts/<profile>/sweep/): <system>_d<d>/ (results.json, per_clip.csv),
audio/<system>_d<d>/*.wav, the same for replicate k under replicates/seed<k>/, sweep.json (per
system and depth: replicate 0's metrics and validation loss, each further replicate's, and
`over_seeds` as the score stage's summary has it; per ablation: its label, the claim it tests and
whether the claim favours the ablated model, variant, reference, expert groups, the experts taken
from the reference, replicate 0's metrics and validation losses, each further replicate's, and
`over_seeds`) and provenance.json. A Siren trained only as an ablation's reference (at a depth
outside sweep.depths) is recorded under `systems` too, but the report draws no sweep point from it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from baselines import registry
from siren_bench import replicates
from siren_bench.artifacts import SCORED_SPLIT, STAGES, load_codes
from siren_bench.config import ConfigError, SirenConfig, baselines_config, codec_config, eval_config, sweep_config
from siren_bench.data.manifest import MANIFEST_NAME, read_manifest
from siren_bench.io import atomic_directory, write_json_atomic
from siren_bench.models.ablations import ABLATIONS, ablated, shared_experts
from siren_bench.models.collaborative import Siren
from siren_bench.models.siren import SirenExpert
from siren_bench.models.train import TokenSet, clear_resume_state, resume_file, train_expert, train_model
from siren_bench.provenance import build_record, write_provenance
from siren_bench.replicates import over_seeds
from siren_bench.evaluation.scorer import stage_scorer
from siren_bench.generation import codec_resynthesis, render
from siren_bench.models.experts import ExpertJobs, expert_jobs, load_stage_siren
from siren_bench.stage_context import open_stage

SUMMARY_NAME = STAGES["sweep"].file("summary")


def truncate(tokens: TokenSet | None, depth: int) -> TokenSet | None:
    return None if tokens is None else TokenSet([c[:depth] for c in tokens.codes], tokens.text)


@dataclass
class TrainedSiren:
    model: Siren
    val_losses: list[float | None]  # each expert's last validation loss

    def mean_val_loss(self) -> float | None:
        known = [v for v in self.val_losses if v is not None]
        return float(np.mean(known)) if known else None


def train_siren(siren: SirenConfig, depth: int, jobs: ExpertJobs, device: torch.device, finished: list[Path],
                reference: TrainedSiren | None = None, reuse: list[int] = ()) -> TrainedSiren:
    """Siren with architecture `siren` trained on the first `depth` codebooks; the experts listed
    in `reuse` are copied from `reference` (same group) instead of trained."""
    config, train, val, table = jobs.config, truncate(jobs.train, depth), truncate(jobs.val, depth), jobs.table[:depth]
    data_id = f"{jobs.data_id}-depth{depth}"
    try:
        groups = siren.expert_groups()
    except ValueError as exc:
        raise ConfigError(f"sweep at depth {depth}: {exc}") from exc
    experts, vals = [], []
    for index, group in enumerate(groups):
        if index in reuse:
            expert = SirenExpert(siren, group)
            expert.load_state_dict(reference.model.experts[index].state_dict(), strict=True)
            experts.append(expert)
            vals.append(reference.val_losses[index])
            continue
        result = train_expert(index, siren, config, table, train, val, jobs.resume_dir, data_id, device)
        experts.append(result.expert)
        vals.append(([r["val_loss"] for r in result.log if "val_loss" in r] or [None])[-1])
        finished.append(resume_file(jobs.resume_dir, config, siren, index, data_id))
    return TrainedSiren(Siren(siren, experts).eval(), vals)


def train_shared_lm(depth: int, jobs: ExpertJobs, fields: dict, device: torch.device, finished: list[Path]):
    """(the shared LM, the main run's architecture `fields`, retrained on the first `depth`
    codebooks; its final val loss)."""
    config, train, val, table = jobs.config, truncate(jobs.train, depth), truncate(jobs.val, depth), jobs.table[:depth]
    data_id = f"{jobs.data_id}-depth{depth}"
    spec = registry.spec("shared_lm")
    torch.manual_seed(config.seed + spec.seed_offset)
    arch = registry.architecture("shared_lm", jobs.siren, fields) | {"n_codebooks": depth}
    model, arch = registry.build("shared_lm", arch, {})
    model.set_code_table(table)
    state = jobs.resume_dir / f"sweep-shared_lm-d{depth}-{registry.config_key('shared_lm', arch, config, data_id)}.pt"
    log, _ = train_model(model, f"shared_lm d={depth}", config, train, val, state, device, [config.seed, spec.seed_offset, depth])
    finished.append(state)
    vals = [r["val_loss"] for r in log if "val_loss" in r]
    return model.eval(), vals[-1] if vals else None


def depth_entry(seeds: list[int], runs: list[tuple[float | None, dict]]) -> dict:
    """One system at one depth over its seed replicates, `runs` (validation loss, metrics) in
    replicate order: replicate 0's numbers, each further replicate's, and `over_seeds` (per metric
    the values and their combination, replicates.over_seeds) as the score stage's summary has it."""
    (val_loss, metrics), further = runs[0], runs[1:]
    entry = {"val_loss": val_loss, "metrics": metrics}
    if further:
        entry["replicates"] = [{"seed": seed, "val_loss": v, "metrics": m} for seed, (v, m) in zip(seeds[1:], further)]
        entry["over_seeds"] = over_seeds(seeds, [m for _, m in runs])
    return entry


def main_run_siren(siren_dir: Path) -> TrainedSiren:
    model, info = load_stage_siren(siren_dir)
    return TrainedSiren(model, [e.get("final_val_loss") for e in info["experts"]])


def run(params_path: str | Path = "params.yaml") -> Path:
    stage = open_stage(params_path)
    sweep, evaluation = sweep_config(stage.params, stage.source, ABLATIONS), eval_config(stage.params, stage.source)
    out_dir = stage.dir("sweep")
    depths = sorted(sweep.depths) if sweep.systems else []
    if not depths and not sweep.ablations:
        with atomic_directory(out_dir) as staging:
            write_json_atomic(staging / SUMMARY_NAME, {"depths": [], "ablations": {},
                                                       "reason": "sweep.depths (or sweep.systems) and sweep.ablations are empty"})
            write_provenance(staging, build_record("sweep", {"run": stage.run, "sweep": sweep}, device="cpu"))
        return out_dir
    jobs = expert_jobs(stage)
    full = jobs.siren.n_codebooks
    if depths and max(depths) >= full:
        raise ConfigError(f"{stage.source}: sweep.depths {sweep.depths} must stay below the codec's {full} "
                          "codebooks (the full depth is the main run's)")
    def siren_at(depth: int) -> SirenConfig:
        """The unablated Siren at `depth`: the main run's architecture, or its default grouping retrained there."""
        return jobs.siren if depth == full else dataclasses.replace(jobs.siren, n_codebooks=depth, groups=None)

    variants: dict[str, SirenConfig] = {}  # every ablation checked before anything trains
    for name, at in sweep.ablations.items():
        if at is not None and at > full:
            raise ConfigError(f"{stage.source}: sweep.ablations.{name}: depth {at} exceeds the codec's {full} codebooks")
        try:
            variants[name] = ablated(name, siren_at(full if at is None else at))
        except ValueError as exc:
            raise ConfigError(f"{stage.source}: sweep.ablations.{name}: {exc}") from exc
    if any(at in (None, full) for at in sweep.ablations.values()):  # full-depth ablations: replicate k against the main run's
        for k in range(evaluation.seeds):
            if not (siren_dir := replicates.folder(stage.dir("siren"), k)).is_dir():
                raise ConfigError(f"{stage.source}: eval.seeds = {evaluation.seeds}, but the main run's Siren has no "
                                  f"replicate {k} ({siren_dir} is missing); re-run train_siren with the same eval.seeds")
            # the only reference not trained here from siren_at(depth): it must be what params.yaml describes
            if (main_config := load_stage_siren(siren_dir)[0].config) != jobs.siren:
                raise ConfigError(f"{stage.source}: the main run's Siren ({siren_dir}) is not the architecture params.yaml "
                                  f"describes ({main_config} vs {jobs.siren}); re-run train_siren")
    manifest = read_manifest(stage.dir("prepare") / MANIFEST_NAME)
    test = manifest[manifest["split"] == SCORED_SPLIT]
    lengths = dict(zip(test["clip_id"], test["num_samples"].astype(int)))
    test_codes = load_codes(stage.dir("tokenize"), required=test["clip_id"].tolist())
    device, codec, config = stage.device(), jobs.codec.to(stage.device()), jobs.config  # the codec decodes where the models run
    scorer = stage_scorer(stage)
    batch = codec_config(stage.params, stage.source).batch_clips  # as the generate stage renders
    shared_fields = baselines_config(stage.params, stage.source).get("shared_lm", {})  # the main run's shared LM
    summary: dict = {"depths": depths, "full_depth": full, "recipe": scorer.recipe.id, "systems": {}, "ablations": {}}
    finished: list[Path] = []
    sirens: dict[tuple[int, int], TrainedSiren] = {}  # (depth, replicate) -> Siren retrained there: an ablation's reference
    reference_depths = {at for at in sweep.ablations.values() if at not in (None, full)}  # the only ones kept in `sirens`

    replicate_jobs = [dataclasses.replace(jobs, config=replicates.model_config(config, k)) for k in range(evaluation.seeds)]
    seeds = [j.config.generation_seed for j in replicate_jobs]  # each replicate named as the score stage names it
    summary["seeds"] = seeds

    with atomic_directory(out_dir) as staging:
        def scored(model, name: str, k: int = 0) -> dict:
            where, final = replicates.folder(staging, k), replicates.folder(out_dir, k)
            render(model, "codes", name, codec, jobs.encoder, test, lengths, replicate_jobs[k].config, where / "audio" / name,
                   batch, device)
            return scorer.score(where / "audio" / name, where / name, final / "audio" / name)["metrics"]

        def trained_siren(depth: int, k: int) -> TrainedSiren:
            return train_siren(siren_at(depth), depth, replicate_jobs[k], device, finished)

        def replicate(system: str, depth: int, k: int) -> tuple[float | None, dict]:
            name = f"{system}_d{depth}"
            if system == "siren":
                trained = trained_siren(depth, k)
                if depth in reference_depths:
                    sirens[depth, k] = trained
                return trained.mean_val_loss(), scored(trained.model, name, k)
            model, val_loss = train_shared_lm(depth, replicate_jobs[k], shared_fields, device, finished)
            return val_loss, scored(model, name, k)

        def sweep_point(system: str, depth: int) -> None:
            summary["systems"].setdefault(system, {})[depth] = depth_entry(
                seeds, [replicate(system, depth, k) for k in range(evaluation.seeds)])

        for depth in depths:
            name = f"codec_resynthesis_d{depth}"
            folder = staging / "audio" / name
            codec_resynthesis(codec, test["clip_id"].tolist(), {c: v[:depth] for c, v in test_codes.items()}, lengths, folder,
                              batch)
            summary["systems"].setdefault("codec_resynthesis", {})[depth] = {"val_loss": None,
                                                                              "metrics": scorer.score(folder, staging / name, out_dir / "audio" / name)["metrics"]}
            for system in sweep.systems:
                sweep_point(system, depth)

        def reference_at(depth: int, k: int) -> TrainedSiren:
            """Replicate k of the unablated Siren at `depth`: the main run's at the full depth."""
            return main_run_siren(replicates.folder(stage.dir("siren"), k)) if depth == full else sirens[depth, k]

        def ablation_run(name: str, variant: SirenConfig, depth: int, k: int, reference: TrainedSiren) -> dict:
            """Replicate k of an ablation: the variant trained with replicate k's seeds, beside replicate
            k of its reference."""
            reuse = shared_experts(reference.model.config, variant)
            trained = train_siren(variant, depth, replicate_jobs[k], device, finished, reference, reuse)
            return {"val_loss": trained.mean_val_loss(), "reference_val_loss": reference.mean_val_loss(),
                    "metrics": scored(trained.model, name, k), "experts_from_reference": reuse}

        for ablation, at in sweep.ablations.items():
            depth = full if at is None else at
            if depth != full and (depth, 0) not in sirens:  # no sweep at this depth: Siren there under every replicate
                sweep_point("siren", depth)
            first_reference, variant = reference_at(depth, 0), variants[ablation]
            reference_config = first_reference.model.config
            name = f"{ablation}_d{depth}"
            first, *further = [ablation_run(name, variant, depth, k, first_reference if k == 0 else reference_at(depth, k))
                               for k in range(evaluation.seeds)]
            reference_entry = ({"system": "siren", "stage": "score"} if depth == full
                               else {"system": f"siren_d{depth}", "stage": "sweep"})
            entry = summary["ablations"][ablation] = {
                "label": ABLATIONS[ablation].label, "claim": ABLATIONS[ablation].claim,
                "claim_favours_variant": ABLATIONS[ablation].claim_favours_variant, "depth": depth, "variant": name,
                "reference": reference_entry, "groups": variant.expert_groups(),
                "reference_groups": reference_config.expert_groups(), **first}
            if further:
                entry["replicates"] = [{"seed": seed, **run} for seed, run in zip(seeds[1:], further)]
                entry["over_seeds"] = over_seeds(seeds, [run["metrics"] for run in (first, *further)])
        write_json_atomic(staging / SUMMARY_NAME, summary)
        write_provenance(staging, build_record(
            "sweep", {"run": stage.run, "sweep": sweep, "model": config, "eval": evaluation},
            inputs={"codes": stage.dir("tokenize") / STAGES["tokenize"].file("codes"), "codec": stage.dir("codec") / "model",
                    "manifest": stage.dir("prepare") / MANIFEST_NAME,
                    **({"siren": stage.dir("siren")} if any(at in (None, full) for at in sweep.ablations.values()) else {})},
            seeds={"model.seed": config.seed, "generation_seed": config.generation_seed,
                   **{f"replicate {k} model.seed": j.config.seed for k, j in enumerate(replicate_jobs) if k}},
            device=device.type))
    for path in finished:
        clear_resume_state(path)
    return out_dir
