"""Stage `evaluators`: train the smoke profile's own metric models on the SynthCaps train split.

The smoke recipe scores with a small audio tagger (FAD / FD / KAD from its embeddings, KL / IS
from its logits) and a small CLAP trained against the frozen offline MiniLM text model, because
no pretrained VGGish, PANNs or CLAP weights exist on this machine (embedders/smoke.py says what
they are). They are trained on the train split and checked on the val split; the test split,
which the systems are scored on, is never seen.

Output (artifacts/<profile>/evaluators/): tagger.safetensors + tagger.json, clap.safetensors +
clap.json (weights, architecture, SHA-256, held-out quality), evaluators.json (held-out quality
next to chance and the untrained model) and provenance.json. A recipe on pretrained weights
needs no training: the folder then holds evaluators.json saying so. Interrupted training resumes
from artifacts/<profile>/resume/, outside the DVC output.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from siren_bench.audio_input import resample
from siren_bench.config import ConfigError, EvalConfig, eval_config
from siren_bench.data.decode import read_clip
from siren_bench.data.manifest import MANIFEST_NAME, ManifestError, audio_sources, read_manifest
from siren_bench.embedders.smoke import (
    SmokeClapConfig, SmokeTaggerConfig, clear_resume_state, save_smoke_evaluator, train_smoke_clap, train_smoke_tagger,
)
from siren_bench.io import atomic_directory, write_json_atomic
from siren_bench.provenance import build_record, write_provenance
from siren_bench.artifacts import STAGES
from siren_bench.recipes import get_recipe, needs_smoke_evaluators
from siren_bench.stage_context import open_stage
from siren_bench.text import load_minilm

TAGGER_FILE, CLAP_FILE = "tagger.safetensors", "clap.safetensors"
SUMMARY_NAME = STAGES["evaluators"].file("summary")


def _mono_waves(frame, sample_rate: int) -> list[np.ndarray]:
    """The clips as mono float64 at the evaluators' sample rate (soxr VHQ where it differs)."""
    waves = []
    for path, decode in audio_sources(frame):
        wave, rate = read_clip(path, decode)
        waves.append(resample(wave.mean(axis=0), rate, sample_rate, "soxr_vhq"))
    return waves


def train_evaluators(manifest, config: EvalConfig, resume_dir: Path, staging: Path) -> tuple[dict, tuple]:
    """Train and save both models into `staging`; (summary, training results)."""
    label_columns = sorted(c for c in manifest.columns if c.startswith("label_"))
    if not label_columns:
        raise ManifestError("the smoke evaluators need SynthCaps class labels (label_* columns) in the manifest; "
                            "score AudioCaps with a recipe on pretrained weights (eval.recipe=clean, eval.weights_dir=...)")
    train, val = (manifest[manifest["split"] == s] for s in ("train", "val"))
    if len(train) < 2 or len(val) < 2:
        raise ManifestError(f"the smoke evaluators need at least 2 train and 2 val clips, found {len(train)} and {len(val)}")
    class_names = [c.removeprefix("label_") for c in label_columns]
    tagger_config, clap_config = SmokeTaggerConfig(steps=config.tagger_steps), SmokeClapConfig(steps=config.clap_steps)
    rate = tagger_config.audio.sample_rate
    train_waves, val_waves = _mono_waves(train, rate), _mono_waves(val, rate)

    tagger = train_smoke_tagger(train_waves, train[label_columns].to_numpy(), tagger_config, config.evaluator_seed,
                                val_waves=val_waves, val_labels=val[label_columns].to_numpy(), class_names=class_names,
                                resume_dir=resume_dir)
    clap = train_smoke_clap(train_waves, train["caption"].tolist(), load_minilm(), clap_config, config.evaluator_seed,
                            val_waves=val_waves, val_captions=val["caption"].tolist(), resume_dir=resume_dir)
    summary = {"trained": True, "seed": config.evaluator_seed, "class_names": class_names}
    for name, result, file in (("tagger", tagger, TAGGER_FILE), ("clap", clap, CLAP_FILE)):
        summary[name] = {"file": file, "weights_sha256": save_smoke_evaluator(result, staging / file),
                         "steps": len(result.log), "resumed_from_step": result.resumed_from, "heldout": result.heldout}
    return summary, (tagger, clap)


def run(params_path: str | Path = "params.yaml") -> Path:
    stage = open_stage(params_path)
    run_cfg = stage.run
    config = eval_config(stage.params, stage.source)
    prepare_dir = stage.dir("prepare")
    out_dir = stage.dir("evaluators")
    resume_dir = Path(run_cfg.artifacts_dir) / run_cfg.profile / "resume"
    trained = ()
    with atomic_directory(out_dir) as staging:
        if needs_smoke_evaluators(config.recipe):
            manifest = read_manifest(prepare_dir / MANIFEST_NAME)
            summary, trained = train_evaluators(manifest, config, resume_dir, staging)
        elif config.weights_dir is None:
            raise ConfigError(f"{stage.source}: eval.recipe={config.recipe} scores with pretrained embedders; set "
                              "eval.weights_dir to the folder holding its checkpoint files")
        else:
            summary = {"trained": False, "reason": f"recipe {get_recipe(config.recipe).id} uses pretrained embedders "
                                                   f"from eval.weights_dir={config.weights_dir}"}
        write_json_atomic(staging / SUMMARY_NAME, summary)
        record = build_record("evaluators", {"run": run_cfg, "eval": config}, inputs={"manifest": prepare_dir / MANIFEST_NAME},
                              seeds={"evaluator_seed": config.evaluator_seed}, device=run_cfg.device)
        write_provenance(staging, record)
    for result in trained:  # only once the finished weights are in place
        clear_resume_state(result)
    return out_dir
