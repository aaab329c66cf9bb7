"""Which readings of a report survive a re-run: compare two reports' results.json.

    python benchmarks/seed_replicate.py reports/smoke/results.json OTHER/reports/smoke/results.json

The second report is the same profile re-run with other training seeds (or on another machine).
Printed: every verdict on the paper's claims in both runs (held or changed), per metric Kendall's
tau between the two runs' orders of the systems, and how many (system, metric) intervals of one
run overlap the other's. Nothing is written; the numbers go in the README and the session note.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from scipy.stats import kendalltau


def _verdicts(sections: dict) -> dict[str, str]:
    out = {}
    for key, section in sections.items():
        for verdict in section.get("verdicts", []) if isinstance(section, dict) else []:
            if isinstance(verdict, dict) and "outcome" in verdict:
                out[f"{key}: {verdict['claim'].split(' (here:')[0]}"] = verdict["outcome"]
    return out


def compare(first: dict, second: dict) -> str:
    lines = []
    a, b = _verdicts(first["sections"]), _verdicts(second["sections"])
    held = sum(a[k] == b[k] for k in a if k in b)
    lines.append(f"verdicts: {held} of {len(set(a) & set(b))} held")
    for claim in sorted(set(a) | set(b)):
        mark = "held   " if a.get(claim) == b.get(claim) else "CHANGED"
        lines.append(f"  {mark} {a.get(claim, '-'):12s} -> {b.get(claim, '-'):12s} {claim}")
    systems_a, systems_b = first["sections"]["scores"]["systems"], second["sections"]["scores"]["systems"]
    systems = sorted(set(systems_a) & set(systems_b))
    metrics = sorted(set.intersection(*(set(systems_a[s]["metrics"]) & set(systems_b[s]["metrics"]) for s in systems)))
    overlap = total = 0
    for metric in metrics:
        x = [systems_a[s]["metrics"][metric]["value"] for s in systems]
        y = [systems_b[s]["metrics"][metric]["value"] for s in systems]
        tau = kendalltau(x, y).statistic
        lines.append(f"{metric:8s} Kendall tau of the {len(systems)} systems' orders between the runs: {tau:+.2f}")
        for s in systems:
            p, q = systems_a[s]["metrics"][metric], systems_b[s]["metrics"][metric]
            if p.get("ci_low") is None or q.get("ci_low") is None:
                continue
            total += 1
            overlap += p["ci_low"] <= q["ci_high"] and q["ci_low"] <= p["ci_high"]
    lines.append(f"intervals: {overlap} of {total} (system, metric) intervals overlap between the runs")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("first", type=Path)
    parser.add_argument("second", type=Path)
    args = parser.parse_args()
    print(compare(*(json.loads(p.read_text()) for p in (args.first, args.second))))


if __name__ == "__main__":
    main()
