"""CSV tables beside results.json, for spreadsheets and scripts that should not walk its JSON.

Each table is a flat view of one results.json section; results.json stays the source of truth.
A section that is absent (its stage has not run) writes no table.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from siren_bench.io import atomic_path

SCORE_COLUMNS = ("system", "metric", "value", "ci_low", "ci_high", "n_generated", "n_frames", "n_reference", "recipe")
PAIRED_COLUMNS = ("system", "versus", "measure", "value", "ci_low", "ci_high", "ci_level", "p_value", "p_holm", "p_floor", "n",
                  "n_boot", "bootstrap_seed")


def score_rows(scores: dict) -> list[dict]:
    """One row per system and metric of the `scores` section."""
    rows = []
    for system, entry in sorted(scores["systems"].items()):
        for metric, result in sorted(entry["metrics"].items()):
            rows.append({"system": system, "metric": metric, **{k: result.get(k) for k in SCORE_COLUMNS[2:7]},
                         "n_reference": entry.get("n_reference"), "recipe": scores["recipe"]})
    return rows


def paired_rows(paired: dict) -> list[dict]:
    """One row per compared system and per-clip measure of the `paired` section (Siren minus it;
    its `verdicts` entry holds the sentences, not a system)."""
    return [
        {"system": "siren", "versus": versus, "measure": measure, **{k: stats.get(k) for k in PAIRED_COLUMNS[3:]}}
        for versus, measures in sorted(paired.items()) if versus != "verdicts"
        for measure, stats in sorted(measures.items())
    ]


def write_tables(results: dict, out: Path) -> list[Path]:
    """scores.csv and paired.csv in `out` from a results.json dict; returns the files written."""
    sections = results["sections"]
    tables = []
    if "scores" in sections:
        tables.append(("scores.csv", score_rows(sections["scores"]), SCORE_COLUMNS))
    if sections.get("paired"):
        tables.append(("paired.csv", paired_rows(sections["paired"]), PAIRED_COLUMNS))
    written = []
    for name, rows, columns in tables:
        with atomic_path(out / name) as tmp:
            pd.DataFrame(rows, columns=list(columns)).to_csv(tmp, index=False, lineterminator="\n")
        written.append(out / name)
    return written
