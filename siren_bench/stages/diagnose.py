"""Stage `diagnose`: the paper's RVQ measurements for whichever codec the pipeline uses.

a. fidelity vs depth: test clips decoded from their first r = 1..K codebooks, scored against
   the originals (multi-scale mel distance, SI-SNR, log-spectral distance; mean and 95 % CI);
b. cross-layer orthogonality: per-frame cosines between the layers' quantized vectors on the
   test clips (K x K mean and std, mean |cos| off the diagonal);
c. semantic richness per layer: linear probes from each layer's features (alone, and layers
   1..k summed) to the clips' class labels, trained on the train split and scored on val+test,
   with bootstrap error bars. This needs class labels (SynthCaps); for label-free data the
   section says so instead of reporting a number.

Output (artifacts/<profile>/diagnose/): fidelity.json, fidelity_per_clip.csv,
orthogonality.json, semantics.json (or its absence recorded in diagnose.json), provenance.json.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from siren_bench.codecs import Codec, load_stage_codec
from siren_bench.config import codec_config, load_params, run_config
from siren_bench.data.manifest import MANIFEST_NAME, load_waves, read_manifest
from siren_bench.diagnostics.fidelity import METRICS, reconstruction_metrics, summarize
from siren_bench.diagnostics.orthogonality import OrthogonalityStats
from siren_bench.diagnostics.semantics import pooled_layers, semantic_richness
from siren_bench.io import atomic_directory, write_json_atomic
from siren_bench.provenance import build_record, write_provenance
from siren_bench.stages.prepare import stage_dir
from siren_bench.stages.tokenize import load_codes

FIDELITY_SPLIT = "test"
PROBE_TRAIN, PROBE_EVAL = ("train",), ("val", "test")


def _batches(ids: list[str], codes: dict[str, np.ndarray], size: int):
    for start in range(0, len(ids), size):
        chunk = ids[start : start + size]
        yield chunk, torch.from_numpy(np.stack([codes[c] for c in chunk]))


def fidelity_vs_depth(codec: Codec, ids: list[str], codes: dict, waves: np.ndarray, batch: int) -> tuple[dict, pd.DataFrame]:
    rows = []
    reference = dict(zip(ids, waves))
    with torch.no_grad():
        for chunk, chunk_codes in tqdm(list(_batches(ids, codes, batch)), desc="fidelity", unit="batch"):
            for depth in range(1, codec.n_codebooks + 1):
                decoded = codec.decode(chunk_codes[:, :depth]).double().numpy()
                rows += [{"clip_id": cid, "codebooks": depth, **reconstruction_metrics(reference[cid], est, codec.sample_rate)}
                         for cid, est in zip(chunk, decoded)]
    frame = pd.DataFrame(rows).sort_values(["codebooks", "clip_id"], kind="stable").reset_index(drop=True)
    summary = {m: [summarize(frame.loc[frame["codebooks"] == d, m].to_numpy()) for d in range(1, codec.n_codebooks + 1)] for m in METRICS}
    return {"codebooks": list(range(1, codec.n_codebooks + 1)), "metrics": summary, "n_clips": len(ids)}, frame


def layer_statistics(codec: Codec, ids: list[str], codes: dict, batch: int, orthogonality: OrthogonalityStats | None):
    """Pooled per-layer features (alone, cumulative) for the clips; updates orthogonality."""
    alone, cumulative = [], []
    with torch.no_grad():
        for _, chunk_codes in tqdm(list(_batches(ids, codes, batch)), desc="layers", unit="batch"):
            features = codec.layer_features(chunk_codes).double().numpy()
            if orthogonality is not None:
                orthogonality.update(features)
            a, c = pooled_layers(features)
            alone.append(a)
            cumulative.append(c)
    return np.concatenate(alone), np.concatenate(cumulative)


def run(params_path: str | Path = "params.yaml") -> Path:
    params = load_params(params_path)
    run_cfg, config = run_config(params, str(params_path)), codec_config(params, str(params_path))
    torch.set_num_threads(run_cfg.threads)
    prepare_dir = stage_dir(run_cfg.artifacts_dir, run_cfg.profile, "prepare")
    tokenize_dir = stage_dir(run_cfg.artifacts_dir, run_cfg.profile, "tokenize")
    codec_dir = stage_dir(run_cfg.artifacts_dir, run_cfg.profile, "codec")
    manifest = read_manifest(prepare_dir / MANIFEST_NAME)
    codec = load_stage_codec(codec_dir)
    codes = load_codes(tokenize_dir)
    missing = sorted(set(manifest["clip_id"]) - set(codes))
    if missing:
        raise ValueError(f"{tokenize_dir}: no codes for {len(missing)} clips of the manifest (e.g. {missing[:3]}); re-run tokenize")

    test = manifest[manifest["split"] == FIDELITY_SPLIT]
    if test.empty:  # AudioCaps has only a test split; SynthCaps has all three
        raise ValueError(f"{prepare_dir / MANIFEST_NAME}: no clips in the {FIDELITY_SPLIT} split")
    test_ids = test["clip_id"].tolist()
    fidelity, per_clip = fidelity_vs_depth(codec, test_ids, codes, load_waves(test, codec.sample_rate), config.batch_clips)
    ortho = OrthogonalityStats(codec.n_codebooks, codec.info.latent_dim)
    layer_statistics(codec, test_ids, codes, config.batch_clips, ortho)

    label_columns = sorted(c for c in manifest.columns if c.startswith("label_"))
    probe_train = manifest[manifest["split"].isin(PROBE_TRAIN)]
    probe_eval = manifest[manifest["split"].isin(PROBE_EVAL)]
    semantics = None
    if label_columns and not probe_train.empty and not probe_eval.empty:
        train_feats = layer_statistics(codec, probe_train["clip_id"].tolist(), codes, config.batch_clips, None)
        eval_feats = layer_statistics(codec, probe_eval["clip_id"].tolist(), codes, config.batch_clips, None)
        seeds = [run_cfg.seed * 1000 + i for i in range(config.probe_seeds)]
        semantics = semantic_richness(train_feats, probe_train[label_columns].to_numpy(), eval_feats,
                                      probe_eval[label_columns].to_numpy(), seeds)
        semantics["labels"] = [c.removeprefix("label_") for c in label_columns]

    out_dir = stage_dir(run_cfg.artifacts_dir, run_cfg.profile, "diagnose")
    with atomic_directory(out_dir) as staging:
        write_json_atomic(staging / "fidelity.json", fidelity)
        per_clip.to_csv(staging / "fidelity_per_clip.csv", index=False, lineterminator="\n", float_format="%.6g")
        write_json_atomic(staging / "orthogonality.json", ortho.result())
        status = {"codec": codec.info.as_dict(), "semantics": "computed" if semantics else
                  "not computed: the manifest has no class labels (label_* columns); a text-embedding probe for AudioCaps is not built yet"}
        if semantics:
            write_json_atomic(staging / "semantics.json", semantics)
        write_json_atomic(staging / "diagnose.json", status)
        record = build_record("diagnose", {"run": run_cfg, "codec": config},
                              inputs={"manifest": prepare_dir / MANIFEST_NAME, "codes": tokenize_dir / "codes.npz", "codec": codec_dir / "model"},
                              seeds={"probe_seeds": semantics["seeds"] if semantics else []}, device=run_cfg.device)
        write_provenance(staging, record)
    return out_dir
