"""DVC-native views of a report run, beside results.json (which stays the source of truth).

- metrics.json: the headline numbers, two levels deep (`scores.siren.fad`, `diagnose.mel_distance_depth_1`,
  ...), for `dvc metrics show`, `dvc metrics diff` and the result columns of `dvc exp show`;
- plots/: small CSV tables for `dvc plots show` / `dvc plots diff`: fidelity_vs_depth.csv, one
  training_loss/<model>.csv per trained model, one depth_sweep/<system>.csv per swept system.

dvc.yaml declares both at its top level (`metrics:` and `plots:`), with the axes of each plot.
Numbers are copied from the report's sections and the stage logs, never recomputed here.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from siren_bench.artifacts import RunArtifacts
from siren_bench.io import atomic_path, write_json_atomic

METRICS_FILE = "metrics.json"
PLOTS_DIR = "plots"
FIDELITY_METRICS = ("mel_distance", "si_snr_db", "lsd_db")


def _number(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) else None


def _numbers(mapping: dict) -> dict:
    """The entries that are finite numbers (DVC shows nothing else as a metric)."""
    return {k: v for k, value in mapping.items() if (v := _number(value)) is not None}


def headline_metrics(sections: dict) -> dict:
    """section -> name -> number, from results.json's sections (those the run has)."""
    out: dict[str, dict] = {}
    if scores := sections.get("scores"):
        out["scores"] = {f"{system}.{metric}": result["value"] for system, entry in sorted(scores["systems"].items())
                         for metric, result in sorted(entry["metrics"].items()) if _number(result.get("value")) is not None}
    if diagnose := sections.get("diagnose"):
        fidelity, figures = diagnose.get("fidelity", {}), {}
        for metric in FIDELITY_METRICS:
            rows = fidelity.get("metrics", {}).get(metric, [])
            for depth, row in zip(fidelity.get("codebooks", []), rows):
                if depth in (1, fidelity["codebooks"][-1]):
                    figures[f"{metric}_depth_{depth}"] = row["mean"]
        figures["orthogonality_mean_abs_cosine"] = diagnose.get("orthogonality", {}).get("mean_abs_off_diagonal")
        out["diagnose"] = _numbers(figures)
    if (siren := sections.get("siren")) and siren.get("trained"):
        out["siren"] = _numbers({f"expert_{e['expert']}.final_val_loss": e.get("final_val_loss") for e in siren["experts"]})
    if (baselines := sections.get("baselines")) and baselines.get("models"):
        out["baselines"] = _numbers({f"{name}.final_val_loss": facts.get("final_val_loss")
                                     for name, facts in sorted(baselines["models"].items())})
    if (alignment := sections.get("alignment")) and alignment.get("trained"):
        out["alignment"] = _numbers({key: alignment["summary"].get(key) for key in ("first_reward_mean", "last_reward_mean", "last_kl")})
    if (sweep := sections.get("sweep")) and sweep.get("points"):
        out["sweep"] = _numbers({f"{system}.fad_depth_{depth}": metrics.get("fad", {}).get("value")
                                 for system, by_depth in sorted(sweep["points"].items()) for depth, metrics in sorted(by_depth.items())})
    return {section: values for section, values in out.items() if values}


def _write_csv(path: Path, frame: pd.DataFrame) -> None:
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False, lineterminator="\n", float_format="%.8g")


def write_dvc_outputs(sections: dict, store: RunArtifacts, out: Path) -> list[Path]:
    """metrics.json and plots/ in the report folder `out`; returns the files written."""
    written = [out / METRICS_FILE]
    write_json_atomic(out / METRICS_FILE, headline_metrics(sections))
    plots = out / PLOTS_DIR
    fidelity = sections.get("diagnose", {}).get("fidelity")
    if fidelity:
        table = {"codebooks": fidelity["codebooks"]}
        table |= {m: [row["mean"] for row in fidelity["metrics"][m]] for m in FIDELITY_METRICS if m in fidelity["metrics"]}
        written.append(plots / "fidelity_vs_depth.csv")
        _write_csv(written[-1], pd.DataFrame(table))
    logs = {}
    if store.exists("siren", "train_log") and sections.get("siren", {}).get("trained"):
        rows = store.jsonl("siren", "train_log")
        for expert in sorted({r["expert"] for r in rows}):
            logs[f"siren_expert_{expert}"] = [r for r in rows if r["expert"] == expert]
    for name in sorted(sections.get("baselines", {}).get("models", {})):
        logs[name] = store.jsonl("baselines", "train_log", name)
    for name, rows in logs.items():
        written.append(plots / "training_loss" / f"{name}.csv")
        _write_csv(written[-1], pd.DataFrame({"step": [r["step"] for r in rows], "loss": [r["loss"] for r in rows]}))
    for system, by_depth in sorted(sections.get("sweep", {}).get("points", {}).items()):
        depths = sorted(by_depth, key=int)
        if all("fad" in by_depth[d] for d in depths):
            written.append(plots / "depth_sweep" / f"{system}.csv")
            _write_csv(written[-1], pd.DataFrame({"codebooks": [int(d) for d in depths],
                                                  "fad": [by_depth[d]["fad"]["value"] for d in depths]}))
    return written
