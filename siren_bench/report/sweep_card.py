"""Report section for the fidelity-capacity sweep: generation quality of Siren and the shared LM,
and the codec's own resynthesis, at each RVQ depth, next to reconstruction fidelity."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from siren_bench.artifacts import RunArtifacts
from siren_bench.replicates import clip_se
from siren_bench.report import figures
from siren_bench.report.section import Section, md_table, report_section
from siren_bench.report.scores import INTERVALS, interval_text
from siren_bench.report.verdicts import Verdict, judge, render, unmeasured

SERIES = ("codec_resynthesis", "siren", "shared_lm")
PANELS = (("fad", "FAD (lower is better)"), ("clap", "CLAP cosine (higher is better)"))


def _points(sweep: dict, store: RunArtifacts) -> dict[str, dict[int, dict]]:
    """system -> depth -> metrics, the sweep's depths plus the main run's full depth."""
    points = {name: {int(d): entry["metrics"] for d, entry in sweep["systems"].get(name, {}).items()} for name in SERIES}
    if store.exists("score", "summary"):
        main = store.json("score", "summary")["systems"]
        for name in SERIES:
            if name in main and points[name]:
                points[name][sweep["full_depth"]] = main[name]["metrics"]
    return {name: dict(sorted(p.items())) for name, p in points.items() if p}


@report_section("sweep", "Fidelity-capacity sweep", reads="sweep", order=120)
def sweep_section(store: RunArtifacts, out: Path) -> Section:
    sweep = store.json("sweep", "summary")
    if not sweep["depths"]:  # the ablations (their own section) may still have run
        reason = sweep.get("reason", "sweep.depths (or sweep.systems) is empty")
        return Section("sweep", sweep, f"## Fidelity-capacity sweep\n\nNot run: {reason}.\n")
    points = _points(sweep, store)
    panels = [(m, label) for m, label in PANELS if any(m in metrics for p in points.values() for metrics in p.values())]
    fidelity = store.json("diagnose", "fidelity") if store.exists("diagnose", "fidelity") else None
    n_panels = len(panels) + (1 if fidelity else 0)
    fig, axes = plt.subplots(1, n_panels, figsize=(4.2 * n_panels, 3.4), squeeze=False)
    for ax, (metric, label) in zip(axes[0], panels):
        for name, by_depth in points.items():
            depths = [d for d, m in by_depth.items() if metric in m]
            values = [by_depth[d][metric] for d in depths]
            (line,) = ax.plot(depths, [v["value"] for v in values], marker="o", label=name)
            # intervals drawn as they are, not as error bars: a bootstrap interval (IS) may exclude its estimate
            ax.vlines(depths, [v["ci_low"] for v in values], [v["ci_high"] for v in values], color=line.get_color(), alpha=0.6)
        ax.set_xlabel("codebooks (RVQ depth)")
        ax.set_title(label, fontsize=9)
        ax.set_xticks(sorted({d for p in points.values() for d in p}))
    axes[0][0].legend(fontsize=7)
    if fidelity:
        ax = axes[0][-1]
        distance = fidelity["metrics"]["mel_distance"]
        ax.plot(fidelity["codebooks"], [r["mean"] for r in distance], marker="o", color="tab:grey")
        ax.set_xlabel("codebooks (RVQ depth)")
        ax.set_title("codec reconstruction: mel distance (diagnose)", fontsize=9)
    fig.suptitle("Fidelity-capacity sweep", y=1.03)
    figures.save(fig, out / "figures" / "depth_sweep.png")

    metrics = [m for m, _ in panels]
    rows = []
    for name, by_depth in points.items():
        for depth, m in by_depth.items():
            val = sweep["systems"].get(name, {}).get(str(depth), {}).get("val_loss")
            rows.append([name, depth, *(interval_text(m[k]) if k in m else "" for k in metrics),
                         "-" if val is None else f"{val:.3f}", "main run" if depth == sweep["full_depth"] else "sweep"])
    verdicts = sweep_verdicts(points)
    results = {"depths": sweep["depths"], "full_depth": sweep["full_depth"], "recipe": sweep["recipe"],
               "points": {n: {str(d): {k: m[k] for k in metrics if k in m} for d, m in p.items()} for n, p in points.items()},
               "verdicts": [v.as_dict() for v in verdicts]}
    markdown = f"""## Fidelity-capacity sweep

{render(verdicts)}
Siren and the shared LM retrained from scratch on the first d codebooks (d = {', '.join(map(str, sweep['depths']))}) with the main
run's settings, generating the test captions; the codec's resynthesis from the test clips' first d codebooks is
the ceiling at each depth. The {sweep['full_depth']}-codebook points are the main run's rows. Recipe `{sweep['recipe']}`.
{INTERVALS} The shared LM has the main run's architecture at every depth (sized to Siren's full
depth), so its curve is one model's capacity spread over more codebooks; Siren gains an expert per
group of codebooks, so below the full depth it is the smaller model.

{md_table(["system", "depth", *[label.split(' (')[0] for _, label in panels], "val loss", "from"], rows)}

![depth sweep](figures/depth_sweep.png)
"""
    return Section("sweep", results, markdown)


def _rise(by_depth: dict[int, dict], metric: str) -> tuple[float, float] | None:
    """metric at the largest depth minus at the smallest, with its se (the two runs independent)."""
    depths = [d for d, m in by_depth.items() if metric in m]
    if len(depths) < 2:
        return None
    low, high = by_depth[min(depths)][metric], by_depth[max(depths)][metric]
    return high["value"] - low["value"], float(np.hypot(clip_se(low), clip_se(high)))


def sweep_verdicts(points: dict[str, dict[int, dict]]) -> list[Verdict]:
    """The fidelity-capacity dilemma, on FAD: the shared LM gets worse as codebooks are added, and
    Siren gets worse by less. Normal intervals from the per-depth standard errors."""
    caveat = "One training seed per depth; each depth's model is a separate run, so the two estimates are combined as independent."
    dilemma = "a conventional (shared) LM generates worse as RVQ codebooks are added: the fidelity-capacity dilemma (here: the shared LM's FAD rises from the smallest to the full depth)."
    relief = "Siren's quality degrades less with depth than the shared LM's (here: the shared LM's FAD rise minus Siren's is above 0)."
    shared, siren = points.get("shared_lm"), points.get("siren")
    rise_shared = _rise(shared, "fad") if shared else None
    if rise_shared is None:
        return [unmeasured(dilemma, "The sweep has fewer than two depths of the shared LM with FAD."),
                unmeasured(relief, "The sweep has fewer than two depths of the shared LM with FAD.")]
    value, se = rise_shared
    ceiling = _rise(points["codec_resynthesis"], "fad") if "codec_resynthesis" in points else None
    fidelity_note = "" if ceiling is None else (
        f" Over the same depths the codec's own resynthesis FAD changes by {ceiling[0]:+.4g} "
        f"[95 % CI {ceiling[0] - 1.96 * ceiling[1]:+.4g}, {ceiling[0] + 1.96 * ceiling[1]:+.4g}]: the dilemma's other half "
        f"(fidelity gained with depth) {'shows' if ceiling[0] + 1.96 * ceiling[1] < 0 else 'does not show'} here.")
    verdicts = [judge(dilemma, value, value - 1.96 * se, value + 1.96 * se, name="FAD rise", fmt="{:+.4g}",
                      caveat=caveat + fidelity_note)]
    rise_siren = _rise(siren, "fad") if siren else None
    if rise_siren is None:
        return verdicts + [unmeasured(relief, "The sweep has fewer than two depths of Siren with FAD.")]
    gap, gap_se = value - rise_siren[0], float(np.hypot(se, rise_siren[1]))
    verdicts.append(judge(relief, gap, gap - 1.96 * gap_se, gap + 1.96 * gap_se, name="shared LM's FAD rise minus Siren's",
                          fmt="{:+.4g}", caveat=caveat))
    return verdicts
