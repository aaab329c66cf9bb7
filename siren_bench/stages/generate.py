"""Stage `generate`: render each configured system's audio for the test clips, one folder each.

Built so far (eval.systems picks among them):
- `codec_resynthesis`: the test clips' own codes decoded by the pipeline's codec: the ceiling any
  LM over this tokenizer can reach, since a perfect LM would emit exactly these codes;
- `real_unpaired`: real clips of the val split, one per test clip id in a seeded order (reused
  in fresh permutations when val is the smaller split, as in AudioCaps): audio from the
  reference distribution that ignores its captions. It anchors the score table: its
  FAD / FD / KAD show what "same distribution" scores with these evaluators and this many clips,
  its KL and CLAP what "unrelated to the caption" scores.
- `siren`: the trained experts (train_siren stage) generate codes for each test caption,
  collaboratively and seeded (model.generation_seed, model.temperature / top_k / top_p /
  guidance), as many frames as the reference clip lasts; the codec decodes them.
- `siren_aligned`: the same, with the align_siren stage's tuned expert swapped in; same seed and
  sampling, so the two rows differ only by the alignment.
- `shared_lm`, `delay_lm`, `ar_nar`, `latent_diffusion`: the train_baselines stage's models,
  rendered with the same captions, seed and sampling settings as Siren (baselines/registry.py);
- each model of `eval.external` (siren_bench/external.py): a user's generator called on the test
  captions with model.generation_seed, or a user's folder of rendered test clips, copied.

Output (artifacts/<profile>/generate/): <system>/<clip_id>.wav (32-bit float WAV at the codec's
rate, trimmed to the reference clip's length: a model's raw output, so any overshoot past full
scale reaches the scorer instead of being clipped on write), systems.json (per system: what it
is, clip count, sample rate; for real_unpaired which val clip stands under which test id) and
provenance.json. With eval.seeds = n > 1, each trained system's seed replicates k = 1 .. n - 1
(siren_bench/replicates.py: trained from seeds shifted by 1000 k) render with model.generation_seed
+ 1000 k into replicates/seed<k>/<system>/ (listed under the system's "replicates" in
systems.json), which the score stage scores beside the system.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import torch

from siren_bench import replicates
from siren_bench.artifacts import SCORED_SPLIT, STAGES, UNPAIRED_SPLIT, load_codes
from siren_bench.codecs import Codec, load_stage_codec
from siren_bench.config import ConfigError, ModelConfig, baseline_systems, codec_config, data_config, eval_config, model_config
from siren_bench.data.decode import DecodePolicy, decode_source
from siren_bench.data.manifest import MANIFEST_NAME, read_manifest
from siren_bench.external import render_external
from siren_bench.generation import codec_resynthesis, render
from siren_bench.io import atomic_directory, sha256_json, sha256_path, write_json_atomic
from siren_bench.models.experts import check_trained_with, load_stage_aligned, load_stage_siren
from siren_bench.provenance import build_record, write_provenance
from siren_bench.stage_context import open_stage

SYSTEMS_NAME = STAGES["generate"].file("systems")


def resume_folder(stage, system: str, model_dirs: list[Path], codec: Codec, test, lengths: dict[str, int],
                  config: ModelConfig, batch: int) -> Path:
    """Where a killed run's rendered clips wait: named by everything the audio depends on (the
    model's files, the codec, the clips and their lengths, the sampling settings and the batch,
    since the seeded stream runs across batches)."""
    key = sha256_json({"system": system, "models": [sha256_path(d) for d in model_dirs], "codec": codec.info.as_dict(),
                       "clips": test["clip_id"].tolist(), "captions": test["caption"].tolist(),
                       "lengths": [lengths[c] for c in test["clip_id"]], "batch": batch,
                       "sampling": [config.temperature, config.top_k, config.top_p, config.guidance, config.generation_seed]})
    return stage.dir("resume") / f"generate-{system}-{key[:16]}"


def siren_system(siren_dir: Path, codec: Codec, test, lengths: dict[str, int], config: ModelConfig, out: Path | None,
                 batch: int, device: torch.device, aligned_dir: Path | None = None, resume_dir: Path | None = None) -> dict:
    """The trained experts, with the aligned expert swapped in when `aligned_dir` is given."""
    model, info = load_stage_siren(siren_dir) if aligned_dir is None else load_stage_aligned(siren_dir, aligned_dir)
    encoder = check_trained_with(siren_dir, info, codec, config)
    what = ("Stage 1 only" if aligned_dir is None else
            f"expert {info['aligned']['expert']} aligned for {info['aligned']['settings']['steps']} steps")
    return {"description": f"Siren ({len(model.experts)} experts, {what}) generating the captions",
            **render(model, "codes", "siren" if aligned_dir is None else "siren_aligned", codec, encoder, test, lengths,
                     config, out, batch, device, resume_dir)}


def baseline_system(folder: Path, codec: Codec, test, lengths: dict[str, int], config: ModelConfig, out: Path | None, batch: int,
                    device: torch.device, resume_dir: Path | None = None) -> dict:
    """A trained baseline (train_baselines stage) generating the captions, like Siren."""
    from baselines import registry

    model, info = registry.load(folder)
    encoder = check_trained_with(folder, info, codec, config)
    return {"description": f"{info['description']}; {info['parameters']:,} parameters",
            **render(model, model.output, info["name"], codec, encoder, test, lengths, config, out, batch, device, resume_dir)}


def generate_captions(params_path: str | Path, captions_path: str | Path, out: Path, seconds: float | None,
                      system: str = "siren") -> Path:
    """`siren-bench generate --system siren|siren_aligned --captions FILE --out DIR`: the trained
    Siren of the params' profile (with its aligned expert for siren_aligned) renders every caption
    of FILE into DIR/<clip_id>.wav, with systems.json and provenance.json beside them. DIR must
    not exist (nothing is overwritten)."""
    import pandas as pd

    from siren_bench.evaluation.clipsets import read_captions

    stage = open_stage(params_path)
    if out.exists():
        raise ConfigError(f"{out}: already exists; choose a new --out folder")
    captions = read_captions(captions_path)
    if not captions:
        raise ConfigError(f"{captions_path}: no captions")
    unsafe = [c for c in captions if not c or Path(c).name != c or c in (".", "..")]
    if unsafe:
        raise ConfigError(f"{captions_path}: clip ids must be plain file names (they name the output files), got {unsafe[:3]}")
    seconds = data_config(stage.params, stage.source).clip_seconds if seconds is None else seconds
    if seconds <= 0:
        raise ConfigError(f"--seconds must be positive, got {seconds}")
    codec = load_stage_codec(stage.dir("codec"))
    frame = pd.DataFrame({"clip_id": list(captions), "caption": list(captions.values())})
    length = int(round(seconds * codec.sample_rate))
    config = model_config(stage.params, stage.source)
    with atomic_directory(out) as staging:
        device = stage.device()
        aligned = stage.dir("siren_aligned") if system == "siren_aligned" else None
        record = siren_system(stage.dir("siren"), codec, frame, {c: length for c in captions}, config, staging,
                              codec_config(stage.params, stage.source).batch_clips, device, aligned)
        write_json_atomic(staging / SYSTEMS_NAME, {system: record | {"captions": str(captions_path), "seconds": seconds}})
        write_provenance(staging, build_record("generate", {"run": stage.run, "model": config},
                                               inputs={"captions": Path(captions_path), "siren": stage.dir("siren"),
                                                       "codec": stage.dir("codec") / "model",
                                                       **({"siren_aligned": aligned} if aligned else {})}, device=device.type))
    return out


def real_unpaired(manifest, test_ids: list[str], seed: int, out: Path, source: str) -> dict[str, str]:
    """Copy val clips, unchanged, under the test ids; returns test id -> source clip id.

    The draw is seeded and without replacement while the pool lasts: with at least as many val
    clips as test ids every test id gets a different clip. A smaller pool (AudioCaps: 495 val
    clips for 975 test ids) is walked in fresh seeded permutations, so every val clip is used
    once before any is used twice, and no clip more than ceil(test / val) times; systems.json
    says how many distinct clips stand under the ids, since repeats shrink the spread a set-level
    metric sees."""
    pool = manifest[manifest["split"] == UNPAIRED_SPLIT].sort_values("clip_id")
    if pool.empty:
        raise ConfigError(f"{source}: the real_unpaired system draws from the {UNPAIRED_SPLIT} split, which has no clips; "
                          f"give the run {UNPAIRED_SPLIT} clips or leave real_unpaired out of eval.systems")
    rng = np.random.default_rng(seed)
    rounds = -(-len(test_ids) // len(pool))
    order = np.concatenate([rng.permutation(len(pool)) for _ in range(rounds)])[: len(test_ids)]
    out.mkdir(parents=True)
    mapping = {}
    for test_id, row in zip(sorted(test_ids), order):
        source_row = pool.iloc[int(row)]
        path, decode = Path(source_row["audio_path"]), source_row.get("decode", "")
        if decode:  # no decoded copy: the clip the policy makes, as the bytes a stored copy would have
            (out / f"{test_id}.wav").write_bytes(decode_source(path, DecodePolicy.from_cell(decode, path))[0])
        else:
            shutil.copyfile(path, out / f"{test_id}{path.suffix}")
        mapping[test_id] = source_row["clip_id"]
    return mapping


def _test_clips(stage):
    """(manifest, test rows, codec, clip id -> length in samples) the systems render for."""
    manifest_path = stage.dir("prepare") / MANIFEST_NAME
    manifest = read_manifest(manifest_path)
    test = manifest[manifest["split"] == SCORED_SPLIT]
    if test.empty:
        raise ValueError(f"{manifest_path}: no clips in the {SCORED_SPLIT} split to generate for")
    codec = load_stage_codec(stage.dir("codec"))
    for clip_id, rate in zip(test["clip_id"], test["sample_rate"]):
        if int(rate) != codec.sample_rate:
            raise ValueError(f"{manifest_path}: clip {clip_id} is {rate} Hz but the codec runs at {codec.sample_rate} Hz")
    return manifest, test, codec, dict(zip(test["clip_id"], test["num_samples"].astype(int)))


def _model_dirs(stage, system: str, replicate: int = 0) -> list[Path]:
    """The stage outputs (of seed replicate `replicate`) a model system's audio depends on."""
    siren = replicates.folder(stage.dir("siren"), replicate)
    if system == "siren":
        return [siren]
    if system == "siren_aligned":
        return [siren, replicates.folder(stage.dir("siren_aligned"), replicate)]
    return [replicates.folder(stage.dir("baselines"), replicate) / system]


def _render_model(stage, system: str, codec: Codec, test, lengths, config: ModelConfig, out: Path | None,
                  device: torch.device, replicate: int = 0) -> tuple[dict, Path]:
    """One model system of seed replicate `replicate` (whose seeds `config` already carries)
    rendered through its resume folder; (systems.json record, that folder)."""
    batch = codec_config(stage.params, stage.source).batch_clips
    dirs = _model_dirs(stage, system, replicate)
    folder = resume_folder(stage, system, dirs, codec, test, lengths, config, batch)
    if system in ("siren", "siren_aligned"):
        aligned = dirs[1] if system == "siren_aligned" else None
        return siren_system(dirs[0], codec, test, lengths, config, out, batch, device, aligned, folder), folder
    return baseline_system(dirs[0], codec, test, lengths, config, out, batch, device, folder), folder


def render_shard(params_path: str | Path, system: str, replicate: int = 0) -> Path:
    """`siren-bench generate-shard --system NAME [--replicate K]`, alone or under torchrun: this
    rank's batches of one model system (siren, siren_aligned or a baseline) of seed replicate K
    (0: the configured seeds), rendered into the resume folder the generate stage reads, which
    then only links them. Returns that folder."""
    from siren_bench.distributed import torchrun_group

    stage = open_stage(params_path)
    evaluation = eval_config(stage.params, stage.source)
    models = ("siren", "siren_aligned", *baseline_systems(stage.params, stage.source))
    if system not in models or system not in evaluation.systems:
        raise ConfigError(f"{stage.source}: generate-shard renders a trained system of eval.systems "
                          f"({', '.join(s for s in models if s in evaluation.systems)}), not {system!r}")
    replicates.check(replicate, evaluation.seeds, stage.source)
    _, test, codec, lengths = _test_clips(stage)
    config = replicates.model_config(model_config(stage.params, stage.source), replicate)
    with torchrun_group(stage.device()) as device:
        _, folder = _render_model(stage, system, codec, test, lengths, config, None, device, replicate)
    return folder


def run(params_path: str | Path = "params.yaml") -> Path:
    stage = open_stage(params_path)
    run_cfg, config = stage.run, codec_config(stage.params, stage.source)
    evaluation = eval_config(stage.params, stage.source)
    systems, baselines = evaluation.systems, baseline_systems(stage.params, stage.source)
    prepare_dir, tokenize_dir, codec_dir = stage.dir("prepare"), stage.dir("tokenize"), stage.dir("codec")
    manifest, test, codec, lengths = _test_clips(stage)
    ids = test["clip_id"].tolist()
    codes = load_codes(tokenize_dir, required=ids)

    out_dir = stage.dir("generate")
    rendered = {}
    with atomic_directory(out_dir) as staging:
        if "codec_resynthesis" in systems:
            codec_resynthesis(codec.to(stage.device()), ids, codes, lengths, staging / "codec_resynthesis", config.batch_clips)
            rendered["codec_resynthesis"] = {
                "description": f"the {SCORED_SPLIT} clips' own {codec.n_codebooks}-codebook codes decoded by the codec "
                               f"({codec.info.name}): the ceiling for a codec LM", "n_clips": len(ids),
                "sample_rate": codec.sample_rate, "split": SCORED_SPLIT, "seed": None}
        if "real_unpaired" in systems:
            mapping = real_unpaired(manifest, ids, run_cfg.seed, staging / "real_unpaired", stage.source)
            distinct = len(set(mapping.values()))
            reuse = "" if distinct == len(ids) else f"; only {distinct} distinct clips, each used up to {-(-len(ids) // distinct)} times"
            rendered["real_unpaired"] = {
                "description": f"real {UNPAIRED_SPLIT} clips under the {SCORED_SPLIT} ids (seeded draw{reuse}): the reference "
                               "distribution, unrelated to the captions", "n_clips": len(ids), "n_distinct_clips": distinct,
                "sample_rate": codec.sample_rate, "split": UNPAIRED_SPLIT, "seed": run_cfg.seed, "source_clips": mapping}
        needs_model = any(s in systems for s in ("siren", "siren_aligned", *baselines))
        model_cfg = model_config(stage.params, stage.source) if needs_model else None
        resumed = []
        for system in [s for s in ("siren", "siren_aligned") if s in systems] + baselines:
            rendered[system], folder = _render_model(stage, system, codec, test, lengths, model_cfg, staging / system,
                                                     stage.device())
            resumed.append(folder)
            further = {}
            for k in range(1, evaluation.seeds):  # the seed replicates: models trained and sampled from other seeds
                seeded, where = replicates.model_config(model_cfg, k), replicates.folder(staging, k) / system
                _, folder = _render_model(stage, system, codec, test, lengths, seeded, where, stage.device(), k)
                resumed.append(folder)
                further[replicates.name(k)] = {"folder": where.relative_to(staging).as_posix(), "seed": seeded.generation_seed,
                                               "replicate": k, "training_seed": seeded.seed}
            if further:
                rendered[system]["replicates"] = further
        for name, source in evaluation.external.items():
            rendered[name] = render_external(name, source, test, codec.sample_rate,
                                             model_config(stage.params, stage.source).generation_seed, staging / name)
        write_json_atomic(staging / SYSTEMS_NAME, rendered)
        models = [s for s in systems if s in ("siren", "siren_aligned", *baselines)]
        record = build_record("generate", {"run": run_cfg, "codec": config, "systems": systems, "external": evaluation.external,
                                           "model": model_config(stage.params, stage.source) if models else None},
                              inputs={"manifest": prepare_dir / MANIFEST_NAME, "codes": tokenize_dir / STAGES["tokenize"].file("codes"),
                                      "codec": codec_dir / "model",
                                      **{s: _model_dirs(stage, s)[-1] for s in models},
                                      **{n: staging / n for n in evaluation.external}},
                              device=stage.device().type if models else "cpu")
        write_provenance(staging, record)
    for folder in resumed:  # the clips are safely in the stage output now
        shutil.rmtree(folder, ignore_errors=True)
    return out_dir
