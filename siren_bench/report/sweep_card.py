"""Report section for the fidelity-capacity sweep: generation quality of Siren and the shared LM,
and the codec's own resynthesis, at each RVQ depth, next to reconstruction fidelity."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from siren_bench.artifacts import RunArtifacts
from siren_bench import replicates
from siren_bench.replicates import clip_se
from siren_bench.report import figures
from siren_bench.report.section import Section, md_table, report_section
from siren_bench.report.scores import INTERVALS, SEEDS, interval_text, seed_mean
from siren_bench.report.verdicts import Verdict, judge_over_seeds, render, unmeasured

SERIES = ("codec_resynthesis", "siren", "shared_lm")
PANELS = (("fad", "FAD (lower is better)"), ("clap", "CLAP cosine (higher is better)"))


def _runs(entry: dict) -> list[dict]:
    """A sweep entry's metrics under each seed replicate, replicate 0 first."""
    return [entry["metrics"], *(r["metrics"] for r in entry.get("replicates", []))]


def _point(runs: list[dict], spread: dict) -> dict:
    """`runs`: the metrics under each replicate (the verdicts pair them by replicate); `metrics`: what
    the table shows, the mean over the replicates with its combined interval (scores.seed_mean)."""
    metrics = {m: seed_mean(r, spread[m]) if m in spread else r for m, r in runs[0].items()}
    return {"runs": runs, "metrics": metrics}


def _main_run(store: RunArtifacts, name: str, system: dict) -> dict:
    """The main run's full-depth point of `name`, its replicates' metrics read from score/<name>/seed<k>/."""
    spread = system.get("over_seeds", {})
    n = next(iter(spread.values()))["n"] if spread else 1
    further = [store.json("score", "results", f"{name}/{replicates.name(k)}")["metrics"] for k in range(1, n)]
    return _point([system["metrics"], *further], spread)


def _points(sweep: dict, store: RunArtifacts) -> dict[str, dict[int, dict]]:
    """system -> depth -> point (`_point`), the sweep's depths plus the main run's full depth. A Siren
    the stage trained only as an ablation's reference (at a depth outside sweep.depths) is not a
    point. The main run's replicates must be the sweep's, replicate k of both trained with the
    same seeds: every depth of a system has as many replicates, or the run is refused."""
    depths = {str(d) for d in sweep["depths"]}
    points = {name: {int(d): _point(_runs(entry), entry.get("over_seeds", {}))
                     for d, entry in sweep["systems"].get(name, {}).items() if d in depths} for name in SERIES}
    main = store.json("score", "summary")["systems"] if store.exists("score", "summary") else {}
    for name in SERIES:
        if name in main and points[name]:
            points[name][sweep["full_depth"]] = _main_run(store, name, main[name])
        counts = {d: len(p["runs"]) for d, p in points[name].items()}
        if name != "codec_resynthesis" and len(set(counts.values())) > 1:  # the codec's resynthesis is one run at every depth
            raise ValueError(f"{store.path('sweep', 'summary')}: {name} has a different number of seed replicates per depth "
                             f"({counts}; the full depth from {store.path('score', 'summary')}); re-run both with the same eval.seeds")
    return {name: dict(sorted(p.items())) for name, p in points.items() if p}


@report_section("sweep", "Fidelity-capacity sweep", reads="sweep", order=120)
def sweep_section(store: RunArtifacts, out: Path) -> Section:
    sweep = store.json("sweep", "summary")
    if not sweep["depths"]:  # the ablations (their own section) may still have run
        reason = sweep.get("reason", "sweep.depths (or sweep.systems) is empty")
        return Section("sweep", sweep, f"## Fidelity-capacity sweep\n\nNot run: {reason}.\n")
    points = _points(sweep, store)
    panels = [(m, label) for m, label in PANELS if any(m in point["metrics"] for p in points.values() for point in p.values())]
    fidelity = store.json("diagnose", "fidelity") if store.exists("diagnose", "fidelity") else None
    n_panels = len(panels) + (1 if fidelity else 0)
    fig, axes = plt.subplots(1, n_panels, figsize=(4.2 * n_panels, 3.4), squeeze=False)
    for ax, (metric, label) in zip(axes[0], panels):
        for name, by_depth in points.items():
            depths = [d for d, p in by_depth.items() if metric in p["metrics"]]
            values = [by_depth[d]["metrics"][metric] for d in depths]
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
        for depth, point in by_depth.items():
            m, val = point["metrics"], _val_loss(sweep["systems"].get(name, {}).get(str(depth), {}))
            rows.append([name, depth, *(interval_text(m[k]) if k in m else "" for k in metrics),
                         "-" if val is None else f"{val:.3f}", "main run" if depth == sweep["full_depth"] else "sweep"])
    verdicts = sweep_verdicts(points)
    results = {"depths": sweep["depths"], "full_depth": sweep["full_depth"], "recipe": sweep["recipe"],
               "seeds": sweep.get("seeds", []),
               "points": {n: {str(d): {k: pt["metrics"][k] for k in metrics if k in pt["metrics"]} for d, pt in p.items()}
                          for n, p in points.items()},
               "verdicts": [v.as_dict() for v in verdicts]}
    n_seeds = len(sweep.get("seeds", [])) or 1
    seeded = (f"Siren and the shared LM ran with {n_seeds} seed replicates at every depth (replicate k with the main run's "
              f"replicate-k seeds), each trained, sampled and scored; the val loss is their mean. {SEEDS}") if n_seeds > 1 else ""
    markdown = f"""## Fidelity-capacity sweep

{render(verdicts)}
Siren and the shared LM retrained from scratch on the first d codebooks (d = {', '.join(map(str, sweep['depths']))}) with the main
run's settings, generating the test captions; the codec's resynthesis from the test clips' first d codebooks is
the ceiling at each depth. The {sweep['full_depth']}-codebook points are the main run's rows. Recipe `{sweep['recipe']}`.
{seeded}{INTERVALS} The shared LM has the main run's architecture at every depth (sized to Siren's full
depth), so its curve is one model's capacity spread over more codebooks; Siren gains an expert per
group of codebooks, so below the full depth it is the smaller model.

{md_table(["system", "depth", *[label.split(' (')[0] for _, label in panels], "val loss", "from"], rows)}

![depth sweep](figures/depth_sweep.png)
"""
    return Section("sweep", results, markdown)


def _val_loss(entry: dict) -> float | None:
    """The validation loss the table shows: the mean over the seed replicates that logged one."""
    known = [v for v in [entry.get("val_loss"), *(r["val_loss"] for r in entry.get("replicates", []))] if v is not None]
    return float(np.mean(known)) if known else None


def _rises(by_depth: dict[int, dict], metric: str) -> tuple[list[float], list[float]] | None:
    """Per seed replicate, the metric at the largest depth minus at the smallest, with its se
    (two separate trainings, so their standard errors add as independent)."""
    depths = [d for d, p in by_depth.items() if metric in p["runs"][0]]
    if len(depths) < 2:
        return None
    low, high = by_depth[min(depths)]["runs"], by_depth[max(depths)]["runs"]
    return ([h[metric]["value"] - lo[metric]["value"] for lo, h in zip(low, high, strict=True)],
            [float(np.hypot(clip_se(lo[metric]), clip_se(h[metric]))) for lo, h in zip(low, high, strict=True)])


def sweep_verdicts(points: dict[str, dict[int, dict]]) -> list[Verdict]:
    """The fidelity-capacity dilemma, on FAD: the shared LM gets worse as codebooks are added, and
    Siren gets worse by less. Each seed replicate gives one estimate of each effect with its clip
    standard error; `judge_over_seeds` combines them (one replicate: a normal interval)."""
    dilemma = "a conventional (shared) LM generates worse as RVQ codebooks are added: the fidelity-capacity dilemma (here: the shared LM's FAD rises from the smallest to the full depth)."
    relief = "Siren's quality degrades less with depth than the shared LM's (here: the shared LM's FAD rise minus Siren's is above 0)."
    shared, siren = points.get("shared_lm"), points.get("siren")
    rise_shared = _rises(shared, "fad") if shared else None
    if rise_shared is None:
        return [unmeasured(dilemma, "The sweep has fewer than two depths of the shared LM with FAD."),
                unmeasured(relief, "The sweep has fewer than two depths of the shared LM with FAD.")]
    values, ses = rise_shared
    if len(values) == 1:
        caveat = "One training seed per depth; each depth's model is a separate run, so the two estimates are combined as independent."
    else:
        caveat = (f"Seed replicate k's rise is the main run's replicate k at the full depth minus the sweep's replicate k at the "
                  f"smallest (separate trainings, combined as independent); the interval holds the {len(values)} seeds' spread "
                  "and each one's clip variance.")
    ceiling = _rises(points["codec_resynthesis"], "fad") if "codec_resynthesis" in points else None
    fidelity_note = "" if ceiling is None else (
        f" Over the same depths the codec's own resynthesis FAD (one codec, no seeds) changes by {ceiling[0][0]:+.4g} "
        f"[95 % CI {ceiling[0][0] - 1.96 * ceiling[1][0]:+.4g}, {ceiling[0][0] + 1.96 * ceiling[1][0]:+.4g}]: the dilemma's "
        f"other half (fidelity gained with depth) {'shows' if ceiling[0][0] + 1.96 * ceiling[1][0] < 0 else 'does not show'} here.")
    verdicts = [judge_over_seeds(dilemma, values, ses, name="FAD rise", fmt="{:+.4g}", caveat=caveat + fidelity_note)]
    rise_siren = _rises(siren, "fad") if siren else None
    if rise_siren is None:
        return verdicts + [unmeasured(relief, "The sweep has fewer than two depths of Siren with FAD.")]
    gaps = [a - b for a, b in zip(values, rise_siren[0], strict=True)]  # replicate k of both systems
    gap_ses = [float(np.hypot(a, b)) for a, b in zip(ses, rise_siren[1], strict=True)]
    verdicts.append(judge_over_seeds(relief, gaps, gap_ses, name="shared LM's FAD rise minus Siren's", fmt="{:+.4g}",
                                     caveat=caveat))
    return verdicts
