"""Stage `diagnose`: the paper's RVQ measurements for whichever codec the pipeline uses.

a. fidelity vs depth: test clips decoded from their first r = 1..K codebooks, scored against
   the originals (multi-scale mel distance, SI-SNR, log-spectral distance; mean and 95 % CI);
b. cross-layer orthogonality: per-frame cosines between the layers' quantized vectors on the
   test clips (K x K mean and std, mean |cos| off the diagonal);
c. semantic richness per layer: linear probes from each layer's features (alone, and layers
   1..k summed) to the clips' class labels, trained on the train split and scored on val+test,
   with bootstrap error bars (needs class labels: SynthCaps); and ridge regression from the
   same features to each caption's text embedding (offline MiniLM), scored by held-out R^2 and
   cosine over repeated random splits: this one needs only captions, so it runs on AudioCaps;
   and the same ridge probe onto each clip's embedding by a pretrained network (aisfx, the mean
   of its blocks, under the smoke recipe's FD audio policy), a view of what the layers carry that
   does not depend on a model trained in this run.

Output (artifacts/<profile>/diagnose/): fidelity.json, fidelity_per_clip.csv,
orthogonality.json, semantics.json, text_probe.json, aisfx_probe.json (what was not computed is said in
diagnose.json), provenance.json.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from siren_bench import replicates
from siren_bench.codecs import Codec, load_stage_codec
from siren_bench.config import codec_config
from siren_bench.data.manifest import MANIFEST_NAME, load_waves, read_manifest
from siren_bench.diagnostics.fidelity import METRICS, reconstruction_metrics, summarize
from siren_bench.diagnostics.orthogonality import OrthogonalityStats
from siren_bench.diagnostics.semantics import pooled_layers, semantic_richness, text_richness
from siren_bench.io import atomic_directory, write_json_atomic
from siren_bench.provenance import build_record, write_provenance
from siren_bench.stage_context import open_stage
from siren_bench.artifacts import STAGES, load_codes
from siren_bench.audio_input import apply_policy
from siren_bench.embedders.aisfx import AisfxEmbedder, packaged_checkpoint
from siren_bench.evaluation.embedding import resolve_compute
from siren_bench.recipes import AISFX_44K
from siren_bench.text import load_minilm

FIDELITY_SPLIT = "test"
PROBE_TRAIN, PROBE_EVAL = ("train",), ("val", "test")


def _batches(ids: list[str], codes: dict[str, np.ndarray], size: int):
    for start in range(0, len(ids), size):
        chunk = ids[start : start + size]
        yield chunk, torch.from_numpy(np.stack([codes[c] for c in chunk]))


def fidelity_vs_depth(codec: Codec, ids: list[str], codes: dict, waves: np.ndarray, batch: int) -> tuple[dict, pd.DataFrame]:
    rows = []
    reference = dict(zip(ids, waves))
    for chunk, chunk_codes in tqdm(list(_batches(ids, codes, batch)), desc="fidelity", unit="batch"):
        for depth in range(1, codec.n_codebooks + 1):
            decoded = codec.decode_numpy(chunk_codes[:, :depth])
            rows += [{"clip_id": cid, "codebooks": depth, **reconstruction_metrics(reference[cid], est, codec.sample_rate)}
                     for cid, est in zip(chunk, decoded)]
    frame = pd.DataFrame(rows).sort_values(["codebooks", "clip_id"], kind="stable").reset_index(drop=True)
    summary = {m: [summarize(frame.loc[frame["codebooks"] == d, m].to_numpy()) for d in range(1, codec.n_codebooks + 1)] for m in METRICS}
    by_depth = frame.pivot(index="clip_id", columns="codebooks", values="mel_distance")
    gain = summarize((by_depth[1] - by_depth[codec.n_codebooks]).to_numpy())  # paired, per clip
    steps = [summarize((by_depth[d] - by_depth[d + 1]).to_numpy()) for d in range(1, codec.n_codebooks)]  # what codebook d + 1 adds
    return {"codebooks": list(range(1, codec.n_codebooks + 1)), "metrics": summary, "n_clips": len(ids),
            "depth_gain_mel_distance": gain, "step_gains_mel_distance": steps}, frame


def pooled_features(codec: Codec, ids: list[str], codes: dict, batch: int, orthogonality: OrthogonalityStats, measure: set[str]):
    """Pooled per-layer features (alone, cumulative) of every clip, in one pass; the per-frame
    orthogonality statistics accumulate over the clips in `measure`."""
    alone, cumulative = [], []
    with torch.no_grad():
        for chunk, chunk_codes in tqdm(list(_batches(ids, codes, batch)), desc="layers", unit="batch"):
            features = codec.layer_features(chunk_codes.to(codec.device)).double().cpu().numpy()
            selected = [i for i, cid in enumerate(chunk) if cid in measure]
            if selected:
                orthogonality.update(features[selected])
            a, c = pooled_layers(features)
            alone.append(a)
            cumulative.append(c)
    return np.concatenate(alone), np.concatenate(cumulative)


def aisfx_clip_embeddings(manifest: pd.DataFrame, sample_rate: int, device: str, batch: int = 16) -> tuple[np.ndarray, str]:
    """Each clip's aisfx embedding (the mean over its blocks) and the weights' SHA-256."""
    embedder = AisfxEmbedder.from_checkpoint(packaged_checkpoint(), device=device)
    rows = []
    for start in tqdm(range(0, len(manifest), batch), desc="aisfx probe targets", unit="batch"):
        chunk = manifest.iloc[start : start + batch]
        waves = [apply_policy(w, sample_rate, AISFX_44K, name) for w, name in zip(load_waves(chunk, sample_rate), chunk["audio_path"])]
        rows.extend(e.frames.mean(axis=0) for e in embedder.embed(waves))
    return np.stack(rows), embedder.info.weights_sha256


def layer_diagnostics(codec: Codec, manifest: pd.DataFrame, codes: dict, test_waves: np.ndarray, batch: int, seeds: list[int]) -> dict:
    """Fidelity vs depth, orthogonality and the class probe of one codec: what is measured on
    every codec replicate. Also returns the pooled layer features, for the probes run on replicate 0 alone."""
    test_ids = manifest.loc[manifest["split"] == FIDELITY_SPLIT, "clip_id"].tolist()
    fidelity, per_clip = fidelity_vs_depth(codec, test_ids, codes, test_waves, batch)
    ortho = OrthogonalityStats(codec.n_codebooks, codec.info.latent_dim)
    alone, cumulative = pooled_features(codec, manifest["clip_id"].tolist(), codes, batch, ortho, set(test_ids))
    label_columns = sorted(c for c in manifest.columns if c.startswith("label_"))
    train_rows = manifest["split"].isin(PROBE_TRAIN).to_numpy()
    eval_rows = manifest["split"].isin(PROBE_EVAL).to_numpy()
    semantics = None
    if label_columns and train_rows.any() and eval_rows.any():
        labels = manifest[label_columns].to_numpy()
        semantics = semantic_richness((alone[train_rows], cumulative[train_rows]), labels[train_rows],
                                      (alone[eval_rows], cumulative[eval_rows]), labels[eval_rows], seeds)
        semantics["labels"] = [c.removeprefix("label_") for c in label_columns]
    return {"fidelity": fidelity, "per_clip": per_clip, "orthogonality": ortho.result(), "semantics": semantics,
            "alone": alone, "cumulative": cumulative}


def _write_layer_diagnostics(folder: Path, measured: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    write_json_atomic(folder / "fidelity.json", measured["fidelity"])
    measured["per_clip"].to_csv(folder / "fidelity_per_clip.csv", index=False, lineterminator="\n", float_format="%.6g")
    write_json_atomic(folder / "orthogonality.json", measured["orthogonality"])
    if measured["semantics"]:
        write_json_atomic(folder / "semantics.json", measured["semantics"])


def run(params_path: str | Path = "params.yaml") -> Path:
    stage = open_stage(params_path)
    run_cfg, config = stage.run, codec_config(stage.params, stage.source)
    prepare_dir, tokenize_dir, codec_dir = stage.dir("prepare"), stage.dir("tokenize"), stage.dir("codec")
    manifest = read_manifest(prepare_dir / MANIFEST_NAME)
    codec = load_stage_codec(codec_dir).to(stage.device())  # the real run decodes 975 clips x 12 depths
    codes = load_codes(tokenize_dir, required=sorted(manifest["clip_id"]))

    test = manifest[manifest["split"] == FIDELITY_SPLIT]
    if test.empty:  # AudioCaps has only a test split; SynthCaps has all three
        raise ValueError(f"{prepare_dir / MANIFEST_NAME}: no clips in the {FIDELITY_SPLIT} split")
    test_waves = load_waves(test, codec.sample_rate)
    seeds = [run_cfg.seed * 1000 + i for i in range(config.probe_seeds)]
    measured = layer_diagnostics(codec, manifest, codes, test_waves, config.batch_clips, seeds)
    alone, cumulative, semantics = measured["alone"], measured["cumulative"], measured["semantics"]
    further = []  # the codec's seed replicates: the same measurements, the clips tokenized here
    if replicate_dirs := replicates.further(codec_dir):
        all_waves = load_waves(manifest, codec.sample_rate)
        for folder in tqdm(replicate_dirs, desc="codec replicates", unit="codec"):
            other = load_stage_codec(folder).to(stage.device())
            other_codes = dict(zip(manifest["clip_id"], other.encode_waves(all_waves, config.batch_clips).numpy()))
            further.append(layer_diagnostics(other, manifest, other_codes, test_waves, config.batch_clips, seeds))
    text = None
    if config.text_probe:
        encoder = load_minilm()
        targets = encoder.encode(manifest["caption"].tolist()).pooled.double().numpy()
        text = text_richness((alone, cumulative), targets, seeds) | {"text_encoder": encoder.name, "text_encoder_sha256": encoder.weights_sha256}
    aisfx = None
    if config.aisfx_probe:
        targets, weights = aisfx_clip_embeddings(manifest, codec.sample_rate, resolve_compute(run_cfg.device, None, 0).device)
        aisfx = text_richness((alone, cumulative), targets, seeds) | {"embedder": "aisfx", "weights_sha256": weights}

    out_dir = stage.dir("diagnose")
    with atomic_directory(out_dir) as staging:
        _write_layer_diagnostics(staging, measured)
        for k, other in enumerate(further, start=1):
            _write_layer_diagnostics(replicates.folder(staging, k), other)
        status = {"codec": codec.info.as_dict(), "codec_replicates": 1 + len(further),
                  "semantics": "computed" if semantics else "not computed: the manifest has no class labels (label_* columns)",
                  "text_probe": "computed" if text else "off (codec.text_probe=false)",
                  "aisfx_probe": "computed" if aisfx else "off (codec.aisfx_probe=false)"}
        if text:
            write_json_atomic(staging / "text_probe.json", text)
        if aisfx:
            write_json_atomic(staging / "aisfx_probe.json", aisfx)
        write_json_atomic(staging / "diagnose.json", status)
        record = build_record("diagnose", {"run": run_cfg, "codec": config},
                              inputs={"manifest": prepare_dir / MANIFEST_NAME, "codes": tokenize_dir / STAGES["tokenize"].file("codes"), "codec": codec_dir / "model",
                                      **{f"codec replicate {k}": folder / "model" for k, folder in enumerate(replicate_dirs, start=1)}},
                              seeds={"probe_seeds": semantics["seeds"] if semantics else []}, device=run_cfg.device)
        write_provenance(staging, record)
    return out_dir
