"""Report section: does the ranking of the systems survive the measure, and the draw of test clips?

Reads the score stage's ranking.json (evaluation/ranking.py): the systems' ranks under every
metric of the recipe, Kendall's tau between the metrics' orders (a figure), and for Siren against
every other system how many measures keep the pair's order and how often half-samples of the
clips flip it, with one verdict line per pair.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from siren_bench.artifacts import RunArtifacts
from siren_bench.report import figures
from siren_bench.report.scores import COLUMNS
from siren_bench.report.section import Section, md_table, report_section

FIGURE = "ranking_kendall_tau.png"
LABELS = dict(COLUMNS)  # the Scores table's column labels
FLIPPY = 0.2  # a pair whose order flips in more than this share of half-samples is not settled by these clips


def _pairs_of_interest(systems: list[str]) -> list[tuple[str, str]]:
    """Siren against every other system of the run (the aligned Siren and the references included)."""
    if "siren" not in systems:
        return []
    return [("siren", other) for other in systems if other != "siren"]


def pair_verdict(ranking: dict, a: str, b: str) -> dict:
    """Under how many measures `a` ranks above `b` (or below), and how often the half-samples
    flip each measure's order: the one-line verdict of a pair."""
    key, flip = (f"{a}|{b}", 1) if f"{a}|{b}" in ranking["pairs"] else (f"{b}|{a}", -1)
    cells = ranking["pairs"][key]
    orders = {m: flip * c["order"] for m, c in cells.items()}
    above, below = sum(o > 0 for o in orders.values()), sum(o < 0 for o in orders.values())
    leader, follower, holds = (a, b, above) if above >= below else (b, a, below)
    flips = {m: c["flip_fraction"] for m, c in cells.items() if "flip_fraction" in c}
    return {"leader": leader, "follower": follower, "holds": holds, "measures": len(orders), "ties": len(orders) - above - below,
            "flip_fraction": flips,
            "text": f"`{leader}` above `{follower}` holds under {holds} of {len(orders)} measures"}


def _tau_figure(ranking: dict, path: Path) -> Path:
    measures = ranking["measures"]
    n = len(measures)
    grid = np.eye(n)
    for i in range(n):
        for j in range(i + 1, n):
            tau = ranking["kendall_tau"].get(f"{measures[i]}|{measures[j]}")
            grid[i, j] = grid[j, i] = np.nan if tau is None else tau
    fig, ax = figures.plt.subplots(figsize=(1.0 + 0.75 * n, 0.8 + 0.7 * n))
    image = ax.imshow(grid, vmin=-1, vmax=1, cmap="RdBu")
    labels = [LABELS.get(m, m) for m in measures]
    ax.set_xticks(range(n), labels, rotation=35, ha="right")
    ax.set_yticks(range(n), labels)
    ax.set_xlabel("measure")
    ax.set_ylabel("measure")
    for i in range(n):
        for j in range(n):
            ax.text(j, i, "-" if np.isnan(grid[i, j]) else f"{grid[i, j]:.2f}", ha="center", va="center", fontsize=8)
    fig.colorbar(image, ax=ax, label="Kendall's tau of the systems' orders")
    ax.set_title(f"Agreement of the {len(ranking['systems'])} systems' rankings between measures")
    return figures.save(fig, path)


@report_section("ranking", "Ranking robustness", reads="score", order=95)
def ranking_section(store: RunArtifacts, out: Path) -> Section:
    path = store.path("score", "ranking")
    if not path.is_file():
        return Section("ranking", {}, "## Ranking robustness\n\nThe score stage wrote no ranking.json: it scored fewer than two systems, or its output predates the ranking (re-run `dvc repro score`).\n")
    ranking = store.json("score", "ranking")
    measures, systems, sampling = ranking["measures"], ranking["systems"], ranking["resampling"]
    headline = measures[0]
    order = sorted(systems, key=lambda s: (ranking["ranks"][headline][s], s))
    rank_rows = [[f"`{s}`", *(ranking["ranks"][m][s] for m in measures)] for s in order]
    taus = [t for t in ranking["kendall_tau"].values() if t is not None]
    figure = _tau_figure(ranking, out / "figures" / FIGURE)

    verdicts, pair_rows = [], []
    for a, b in _pairs_of_interest(systems):
        verdict = pair_verdict(ranking, a, b)
        flips = verdict["flip_fraction"]
        unsettled = sorted(LABELS.get(m, m) for m, f in flips.items() if f > FLIPPY)
        line = verdict["text"] + (f"; the half-samples flip it in more than {FLIPPY:.0%} of draws under "
                                  f"{', '.join(unsettled)}" if unsettled else "; no measure's order flips in more than "
                                  f"{FLIPPY:.0%} of half-samples")
        verdicts.append(line + ".")
        pair_rows.append([f"`{a}` vs `{b}`", f"`{verdict['leader']}` ({verdict['holds']} of {verdict['measures']})",
                          *(f"{flips[m]:.0%}" if m in flips else "-" for m in measures)])
    not_resampled = "".join(f"\n- {LABELS.get(m, m)} is ranked on all clips only: {why}" for m, why in
                            sampling["not_resampled"].items())
    tau_text = (f"Kendall's tau between the measures' orders ranges from {min(taus):.2f} to {max(taus):.2f} "
                f"(median {float(np.median(taus)):.2f}; 1 = the same order, -1 = reversed)" if taus else
                "Kendall's tau is undefined here (ties)")
    markdown = f"""## Ranking robustness

Would the order of the systems change under another measure, or another draw of test clips? Each metric
of the recipe is one way a toolkit could rank them. Ranks (1 = best; lower is better except IS and CLAP),
sorted by {LABELS.get(headline, headline)}:

{md_table(["system", *[LABELS.get(m, m) for m in measures]], rank_rows)}

{tau_text}; the figure shows every pair.

![Kendall's tau between the measures' rankings](figures/{FIGURE})

*Figure: Kendall's tau-b between the systems' orders under each pair of measures. Read the off-diagonal
cells: blue means the two measures rank the systems alike, red that they reverse them.*

Siren against each system: which one ranks higher under most measures (and under how many), and the share of
{sampling['resamples']} half-samples ({sampling['clips_per_resample']} of the {sampling['of_clips']} test clips each,
without replacement, the same clips for every system, each measure recomputed by its own scoring function)
in which that measure's order of the pair flips:

{md_table(["pair", "ranked higher (measures)", *[LABELS.get(m, m) for m in measures]], pair_rows)}

""" + "\n".join(f"- {v}" for v in verdicts) + f"""

Only the run's own recipe (`{store.json('score', 'summary')['recipe']}`) and its evaluators are compared here: other
recipes (VGGish, PANNs, PaSST, LAION CLAP, the anchor presets) need their pretrained weights (eval.weights_dir), which
the smoke run does not have.{not_resampled}
"""
    results = {"measures": measures, "ranks": ranking["ranks"], "kendall_tau": ranking["kendall_tau"],
               "resampling": sampling, "pair_verdicts": verdicts}
    return Section("ranking", results, markdown, [figure])
