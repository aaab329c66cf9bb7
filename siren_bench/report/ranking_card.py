"""Report section: does the ranking of the systems survive the measure, the recipe, and the
draw of test clips?

Reads the score stage's ranking.json (evaluation/ranking.py): the systems' ranks under every
metric of the run's recipe and of its further recipes (eval.ranking_recipes), Kendall's tau
between the measures' orders (a figure), and for Siren against every other system how many
measures (and recipes) keep the pair's order and how often half-samples of the clips flip it,
with one verdict line per pair.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from siren_bench.artifacts import RunArtifacts
from siren_bench.recipes import get_recipe, metric_of, needs_smoke_evaluators
from siren_bench.report import figures
from siren_bench.report.scores import COLUMNS
from siren_bench.report.section import Section, md_table, report_section

FIGURE = "ranking_kendall_tau.png"
LABELS = dict(COLUMNS)  # the Scores table's column labels
FLIPPY = 0.2  # a pair whose order flips in more than this share of half-samples is not settled by these clips


def recipe_of(measure: str, main: str) -> str:
    """The recipe a measure was scored under: its " @ <recipe id>" suffix, else the run's own."""
    return measure.split(" @ ", 1)[1] if " @ " in measure else main


def label(measure: str) -> str:
    name = LABELS.get(metric_of(measure), metric_of(measure))
    return f"{name} @ {recipe_of(measure, '')}" if " @ " in measure else name


def recipe_order(ranking: dict, main: str) -> list[str]:
    """The run's own recipe first, then the further ones by name (ranking.json's keys are sorted,
    so its order says nothing about which recipe is the run's)."""
    return [main, *sorted(r for r in ranking.get("recipes", {}) if r != main)]


def _pairs_of_interest(systems: list[str]) -> list[tuple[str, str]]:
    """Siren against every other system of the run (the aligned Siren and the references included)."""
    if "siren" not in systems:
        return []
    return [("siren", other) for other in systems if other != "siren"]


def pair_verdict(ranking: dict, a: str, b: str, main: str = "") -> dict:
    """Under how many measures `a` ranks above `b` (or below), under how many recipes the majority
    of that recipe's measures agrees, and how often the half-samples flip each measure's order:
    the one-line verdict of a pair. `main`: the run's own recipe id (names its plain measures).
    `orders`: per measure, +1 when `a` ranks above `b`, -1 below, 0 tied."""
    key, flip = (f"{a}|{b}", 1) if f"{a}|{b}" in ranking["pairs"] else (f"{b}|{a}", -1)
    cells = ranking["pairs"][key]
    orders = {m: flip * c["order"] for m, c in cells.items()}
    above, below = sum(o > 0 for o in orders.values()), sum(o < 0 for o in orders.values())
    leader, follower, holds = (a, b, above) if above >= below else (b, a, below)
    sign = 1 if leader == a else -1
    by_recipe: dict[str, list[int]] = {}
    for m, o in orders.items():
        by_recipe.setdefault(recipe_of(m, main), []).append(sign * o)
    recipes = {r: {"holds": sum(o > 0 for o in os), "measures": len(os)} for r, os in by_recipe.items()}
    recipes_holding = sum(2 * v["holds"] > v["measures"] for v in recipes.values())
    flips = {m: c["flip_fraction"] for m, c in cells.items() if "flip_fraction" in c}
    text = f"`{leader}` above `{follower}` holds under {holds} of {len(orders)} measures"
    if len(recipes) > 1:
        text += f" and under the majority of the measures of {recipes_holding} of {len(recipes)} recipes"
    return {"leader": leader, "follower": follower, "holds": holds, "measures": len(orders), "ties": len(orders) - above - below,
            "orders": orders, "recipes": recipes, "recipes_holding": recipes_holding, "flip_fraction": flips, "text": text}


def _tau_figure(ranking: dict, path: Path) -> Path:
    measures = ranking["measures"]
    n = len(measures)
    grid = np.eye(n)
    for i in range(n):
        for j in range(i + 1, n):
            tau = ranking["kendall_tau"].get(f"{measures[i]}|{measures[j]}")
            grid[i, j] = grid[j, i] = np.nan if tau is None else tau
    fig, ax = figures.plt.subplots(figsize=(1.5 + 0.75 * n, 1.2 + 0.7 * n))
    image = ax.imshow(grid, vmin=-1, vmax=1, cmap="RdBu")
    labels = [label(m) for m in measures]
    ax.set_xticks(range(n), labels, rotation=35, ha="right")
    ax.set_yticks(range(n), labels)
    ax.set_xlabel("measure")
    ax.set_ylabel("measure")
    for i in range(n):
        for j in range(n):
            ax.text(j, i, "-" if np.isnan(grid[i, j]) else f"{grid[i, j]:.2f}", ha="center", va="center", fontsize=7)
    fig.colorbar(image, ax=ax, label="Kendall's tau of the systems' orders")
    ax.set_title(f"Agreement of the {len(ranking['systems'])} systems' rankings between measures")
    return figures.save(fig, path)


def _same_metric_taus(ranking: dict) -> list[str]:
    """For each further recipe's measure, Kendall's tau with the run's own recipe's same metric:
    does another toolkit's handling of the audio alone reorder the systems?"""
    lines = []
    for measure in ranking["measures"]:
        own = metric_of(measure)
        if measure == own or own not in ranking["measures"]:
            continue
        tau = ranking["kendall_tau"].get(f"{own}|{measure}", ranking["kendall_tau"].get(f"{measure}|{own}"))
        lines.append(f"{label(measure)} vs {label(own)}: " + ("undefined (ties)" if tau is None else f"{tau:.2f}"))
    return lines


@report_section("ranking", "Ranking robustness", reads="score", order=95)
def ranking_section(store: RunArtifacts, out: Path) -> Section:
    path = store.path("score", "ranking")
    if not path.is_file():
        return Section("ranking", {}, "## Ranking robustness\n\nThe score stage wrote no ranking.json: it scored fewer than two systems, or its output predates the ranking (re-run `dvc repro score`).\n")
    ranking = store.json("score", "ranking")
    main = store.json("score", "summary")["recipe"]
    recipes = recipe_order(ranking, main)
    measures, systems, sampling = ranking["measures"], ranking["systems"], ranking["resampling"]
    headline = measures[0]
    order = sorted(systems, key=lambda s: (ranking["ranks"][headline][s], s))
    rank_rows = [[label(metric_of(m)), f"`{recipe_of(m, main)}`", *(ranking["ranks"][m][s] for s in order)] for m in measures]
    taus = [t for t in ranking["kendall_tau"].values() if t is not None]
    figure = _tau_figure(ranking, out / "figures" / FIGURE)

    verdicts, pair_rows, pairs = [], {m: [label(m)] for m in measures}, _pairs_of_interest(systems)
    for a, b in pairs:
        verdict = pair_verdict(ranking, a, b, main)
        flips = verdict["flip_fraction"]
        unsettled = sorted(label(m) for m, f in flips.items() if f > FLIPPY)
        line = verdict["text"] + (f"; the half-samples flip it in more than {FLIPPY:.0%} of draws under "
                                  f"{', '.join(unsettled)}" if unsettled else "; no measure's order flips in more than "
                                  f"{FLIPPY:.0%} of half-samples")
        verdicts.append(line + ".")
        for m in measures:  # `a`'s order against `b` under m, and the share of half-samples flipping it
            pair_rows[m].append({1: "above", -1: "below", 0: "tied"}[verdict["orders"][m]] + (f" ({flips[m]:.0%})" if m in flips else ""))
    by_reason: dict[str, list[str]] = {}
    for m, why in sampling["not_resampled"].items():
        by_reason.setdefault(why, []).append(label(m))
    not_resampled = "".join(f"\n- Ranked on all clips only: {', '.join(names)}. Why: {why}." for why, names in by_reason.items())
    tau_text = (f"Kendall's tau between the measures' orders ranges from {min(taus):.2f} to {max(taus):.2f} "
                f"(median {float(np.median(taus)):.2f}; 1 = the same order, -1 = reversed)" if taus else
                "Kendall's tau is undefined here (ties)")
    same = _same_metric_taus(ranking)
    same_text = ("\n\nThe same metric under another recipe (Kendall's tau of the systems' orders): " + "; ".join(same) + "."
                 if same else "")
    recipe_lines = "\n".join(f"- `{r}`: {get_recipe(r).description}" for r in recipes)
    weights_text = ("These recipes all score with the run's own evaluators: the anchors' audio handling and metric options "
                    "are tried on them, but the anchors' real embedders (VGGish, PANNs, PaSST, LAION CLAP) need their "
                    "pretrained weights (eval.weights_dir, the audiocaps profile), which this run does not have."
                    if needs_smoke_evaluators(main) else
                    "Further recipes (the anchor presets whose checkpoints are in eval.weights_dir) are added with "
                    "eval.ranking_recipes.")
    markdown = f"""## Ranking robustness

Would the order of the systems change under another measure, another toolkit's recipe, or another draw of test
clips? Each metric of each recipe is one way a toolkit could rank them. The recipes (the run's own first; the others
score each system's first seed replicate, `score/ranking_recipes/`):

{recipe_lines}

{weights_text}

Ranks (1 = best; lower is better except IS and CLAP), systems sorted by {label(headline)}:

{md_table(["measure", "recipe", *[f"`{s}`" for s in order]], rank_rows)}

{tau_text}; the figure shows every pair.{same_text}

![Kendall's tau between the measures' rankings](figures/{FIGURE})

*Figure: Kendall's tau-b between the systems' orders under each pair of measures. Read the off-diagonal
cells: blue means the two measures rank the systems alike, red that they reverse them.*

Siren against each system: whether Siren ranks above or below it under each measure, and in parentheses the share of
{sampling['resamples']} half-samples ({sampling['clips_per_resample']} of the {sampling['of_clips']} test clips each,
without replacement, the same clips for every system, each measure recomputed by its own scoring function)
in which that order flips:

{md_table(["measure", *[f"`{a}` vs `{b}`" for a, b in pairs]], list(pair_rows.values()))}

""" + "\n".join(f"- {v}" for v in verdicts) + f"""
{not_resampled}
"""
    results = {"measures": measures, "recipes": recipes, "ranks": ranking["ranks"], "kendall_tau": ranking["kendall_tau"],
               "resampling": sampling, "pair_verdicts": verdicts}
    return Section("ranking", results, markdown, [figure])
