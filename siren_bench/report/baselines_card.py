"""Report sections for the baselines: their training, and gradient interference in the shared LM
against Siren's isolated experts (diagnostics/interference.py says what is measured)."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from scipy import stats

from siren_bench.diagnostics.orthogonality import off_diagonal_summary
from siren_bench.artifacts import RunArtifacts
from siren_bench.replicates import further as replicate_folders
from siren_bench.report import figures
from siren_bench.report.verdicts import Verdict, judge, render, unmeasured
from siren_bench.report.section import Section, md_table, report_section


@report_section("baselines", "Baselines", reads="baselines", order=60)
def baselines_section(store: RunArtifacts, out: Path) -> Section:
    summary = store.json("baselines", "summary")
    if not summary["trained"]:
        return Section("baselines", summary, f"## Baselines\n\nNone trained in this run: {summary['reason']}.\n")
    siren = siren_trainable_parameters(store)
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    rows, parity = [], {}
    for name, facts in summary["models"].items():
        parity[name] = None if siren is None else facts["parameters"] / siren
        log = store.jsonl("baselines", "train_log", name)
        steps, losses = np.array([r["step"] for r in log]), np.array([r["loss"] for r in log])
        window = max(1, len(log) // 20)
        ax.plot(steps[window - 1 :], np.convolve(losses, np.ones(window) / window, mode="valid"), label=name)
        rows.append([name, f"{facts['parameters']:,}", "-" if parity[name] is None else f"{parity[name]:.2f}",
                     facts["steps"], f"{facts['final_train_loss']:.3f}",
                     "-" if facts["final_val_loss"] is None else f"{facts['final_val_loss']:.3f}", facts["output"]])
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_yscale("log")
    ax.set_title("Baselines: training loss (its own objective each)")
    ax.legend(fontsize=7)
    figures.save(fig, out / "figures" / "baselines_training.png")
    descriptions = "\n".join(f"- `{n}`: {f['description']} (seed {f['seed']})" for n, f in summary["models"].items())
    markdown = f"""## Baselines

Trained by `train_baselines` on Siren's tokens, captions and text encoder with Siren's training settings
(`model.*`); generated with the same seed and sampling. Losses are not comparable across model kinds:
per-token cross-entropy for shared_lm and delay_lm, the sum of the AR and the NAR cross-entropies for
ar_nar, the denoising MSE (of the configured v- or epsilon-prediction) for latent_diffusion.

{md_table(["baseline", "trainable parameters", "x Siren's", "steps", "final train loss", "final val loss", "generates"], rows)}

{parity_reading(parity, siren)}

{descriptions}

![baselines training](figures/baselines_training.png)
"""
    return Section("baselines", summary | {"siren_trainable_parameters": siren, "parameters_vs_siren": parity}, markdown)


def siren_trainable_parameters(store: RunArtifacts) -> int | None:
    """Siren's trainable parameters, all experts: their counts less each one's frozen code table."""
    if not store.exists("siren", "info"):
        return None
    info = store.json("siren", "info")
    if not info.get("trained"):
        return None
    arch = info["architecture"]
    table = arch["n_codebooks"] * arch["codebook_size"] * arch["code_dim"]
    return sum(e["parameters"] - table for e in info["experts"])


def parity_reading(parity: dict[str, float | None], siren: int | None) -> str:
    """Which baselines are compared with Siren at its size (within 10 %), and which are not."""
    if siren is None:
        return "Siren was not trained in this run, so no baseline is compared with its size."
    matched = [n for n, r in parity.items() if abs(r - 1) <= 0.10]
    unmatched = [f"{n} ({r:.2f}x)" for n, r in parity.items() if abs(r - 1) > 0.10]
    text = f"Siren has {siren:,} trainable parameters over its experts. "
    if not unmatched:
        return text + "Every baseline is within 10 % of that: the comparison is at matched size."
    return text + (f"Within 10 % of it: {', '.join(matched) or 'none'}. Not matched: {', '.join(unmatched)}; "
                   "their differences from Siren mix the design with the size, so read them as such.")


@report_section("interference", "Gradient interference", reads="baselines", order=70)
def interference_section(store: RunArtifacts, out: Path) -> Section:
    if not store.exists("baselines", "train_log", "shared_lm") or not store.exists("siren", "train_log"):
        return Section("interference", {"measured": False},
                       "## Gradient interference\n\nNeeds both the shared LM (`shared_lm` in eval.systems) and Siren trained.\n")
    shared = [r for r in store.jsonl("baselines", "train_log", "shared_lm") if "interference" in r]
    siren = [r for r in store.jsonl("siren", "train_log") if "interference" in r]
    if not shared:
        return Section("interference", {"measured": False}, "## Gradient interference\n\nNot measured (model.interference_every = 0).\n")
    experts = sorted({r["expert"] for r in siren})
    series = {"shared_lm": [(r["step"], off_diagonal_summary(np.array(r["interference"]))) for r in shared]}
    for e in experts:
        series[f"siren expert {e}"] = [(r["step"], off_diagonal_summary(np.array(r["interference"]))) for r in siren if r["expert"] == e]
    last = np.array(shared[-1]["interference"])

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8), gridspec_kw={"width_ratios": [1.6, 1]})
    for name, points in series.items():
        if points and points[0][1]["pairs"]:
            left.plot([s for s, _ in points], [p["mean"] for _, p in points], marker="o", label=name,
                      linewidth=2.2 if name == "shared_lm" else 1.0)
    left.axhline(0, color="grey", linewidth=0.8)
    left.set_xlabel("training step")
    left.set_ylabel("mean pairwise gradient cosine")
    left.set_title("Codebook gradients into the shared trunk")
    left.legend(fontsize=7)
    image = right.imshow(last, vmin=-1, vmax=1, cmap="coolwarm")
    right.set_title(f"shared_lm, step {shared[-1]['step']}: cosine per codebook pair", fontsize=9)
    right.set_xlabel("codebook")
    right.set_ylabel("codebook")
    fig.colorbar(image, ax=right, fraction=0.046)
    figures.save(fig, out / "figures" / "gradient_interference.png")

    rows = []
    for name, points in series.items():
        first, final = points[0][1], points[-1][1]
        if not final["pairs"]:
            continue
        rows.append([name, final["pairs"], f"{first['mean']:+.3f}", f"{final['mean']:+.3f}", f"{final['min']:+.3f}",
                     f"{final['negative_share']:.2f}"])
    verdict = interference_verdict(series["shared_lm"], [
        [(r["step"], off_diagonal_summary(np.array(r["interference"]))) for r in rows if "interference" in r]
        for rows in _replicate_logs(store.dir("baselines"), "shared_lm")])
    results = {"measured": True, "series": {n: [{"step": s, **p} for s, p in pts] for n, pts in series.items()},
               "shared_lm_final_matrix": last.tolist(), "verdicts": [verdict.as_dict()]}
    markdown = f"""## Gradient interference

{render([verdict])}
For a fixed batch of {len(shared[-1]['interference'])}-codebook val clips, the gradient each codebook's loss sends into the
parameters it shares with other codebooks (everything but the output heads), compared pairwise by cosine
similarity (`siren_bench/diagnostics/interference.py`). In the shared LM all {last.shape[0]} codebooks share one trunk;
in Siren only the codebooks of one expert do, and codebooks of different experts share no parameter, so their
cosine is 0 by construction. Negative values mean one codebook's loss pushes the shared weights against
another's.

{md_table(["model", "codebook pairs", "mean cosine, first probe", "mean cosine, last probe", "min, last", "share negative, last"], rows)}

![gradient interference](figures/gradient_interference.png)
"""
    return Section("interference", results, markdown)


def _replicate_logs(baselines_dir: Path, name: str) -> list[list[dict]]:
    """The training logs of baseline `name` in the further seed replicates (eval.seeds), in order."""
    logs = []
    for folder in replicate_folders(baselines_dir):
        path = folder / name / "train_log.jsonl"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing (seed replicate {folder.name} of the train_baselines stage; re-run it)")
        logs.append([json.loads(line) for line in path.read_text().splitlines() if line.strip()])
    return logs


def _late_mean(points: list[tuple[int, dict]]) -> float:
    return float(np.mean([p["mean"] for _, p in points[len(points) // 2 :]]))


def interference_verdict(points: list[tuple[int, dict]], replicates: list[list[tuple[int, dict]]] = ()) -> Verdict:
    """The paper's claim that a shared trunk gets conflicting gradients, judged on the shared LM's
    mean pairwise cosine over the probes of the second half of training: with seed replicates, the
    mean over seeds of each run's late-probe mean with a t interval over the seeds; with one run, a
    t interval over its late probes."""
    claim = "a transformer shared by all codebooks receives conflicting gradients from their heads (here: the shared LM's mean pairwise gradient cosine below 0)."
    runs = [points, *[r for r in replicates if r]]
    if len(runs) >= 2:
        per_seed = np.array([_late_mean(r) for r in runs])
        half = stats.t.ppf(0.975, len(runs) - 1) * per_seed.std(ddof=1) / np.sqrt(len(runs))
        return judge(claim, float(per_seed.mean()), max(-1.0, float(per_seed.mean() - half)),
                     min(1.0, float(per_seed.mean() + half)), below=True,
                     name=f"mean cosine of the late probes over {len(runs)} seeds ({', '.join(f'{v:+.3f}' for v in per_seed)})",
                     fmt="{:+.3f}", caveat=f"t interval over the {len(runs)} seed replicates.")
    late = np.array([p["mean"] for _, p in points[len(points) // 2 :]])
    if len(late) < 2:
        return unmeasured(claim, f"{len(late)} probe(s) in the second half of training; an interval needs at least 2.")
    half = stats.t.ppf(0.975, len(late) - 1) * late.std(ddof=1) / np.sqrt(len(late))
    return judge(claim, float(late.mean()), max(-1.0, float(late.mean() - half)), min(1.0, float(late.mean() + half)), below=True,
                 name=f"mean cosine over the last {len(late)} probes", fmt="{:+.3f}",
                 caveat="One training seed; successive probes of one run are not independent, so the interval is optimistic.")
