"""Report section: the published numbers (siren_bench/claims.py) beside this run's, with deltas,
each marked comparable or not, and why not."""

from __future__ import annotations

from pathlib import Path

from siren_bench.artifacts import RunArtifacts
from siren_bench.claims import CLAIMS, CLAIMS_VERSION, comparability
from siren_bench.report.section import Section, md_table, report_section
from siren_bench.report.scores import interval_text

LABELS = {"fad": "FAD", "fd": "FD", "kl": "KL", "is": "IS", "clap": "CLAP (cosine)"}


@report_section("claims", "Claimed vs reproduced", reads="score", order=100)
def claims_section(store: RunArtifacts, out: Path) -> Section:
    summary = store.json("score", "summary")
    dataset = store.json("prepare", "dataset")
    systems = summary["systems"]
    rows, results, not_comparable = [], [], {}
    for claim in CLAIMS:
        comparable, why = comparability(claim, dataset, summary["recipe"])
        reproduced = systems.get(claim.role, {}).get("metrics", {}).get(claim.metric)
        delta = None if reproduced is None else reproduced["value"] - claim.value
        results.append({"label": claim.label, "role": claim.role, "metric": claim.metric, "claimed": claim.value,
                        "source": claim.source, "protocol": claim.protocol, "recipe": claim.recipe,
                        "reproduced": None if reproduced is None else {k: reproduced.get(k) for k in ("value", "ci_low", "ci_high")},
                        "delta": delta, "comparable": comparable, "why_not": why})
        if comparable:
            rows.append([claim.label, LABELS[claim.metric], f"{claim.value:g}", f"`{claim.role}`",
                         "not in this run" if reproduced is None else interval_text(reproduced),
                         "" if delta is None else f"{delta:+.4g}"])
        else:  # one line per published system and reason, its metrics listed
            line = not_comparable.setdefault((claim.label, claim.role, why), [])
            line.append(f"{LABELS[claim.metric]} {claim.value:g}")
    comparable_md = (md_table(["published system", "metric", "claimed", "harness role", "reproduced [95 % CI]", "delta"], rows)
                     if rows else "No published number is comparable with this run.")
    other_md = ("\n\nNot comparable, one line per published system (its numbers are in `results.json` beside this run's):\n\n"
                + md_table(["published system", "claimed", "harness role", "why not comparable"],
                           [[label, ", ".join(metrics), f"`{role}`", why] for (label, role, why), metrics in not_comparable.items()])
                if not_comparable else "")
    test = dataset.get("splits", {}).get("test", {})
    if rows and test.get("clips_missing"):  # a real copy of AudioCaps lacks some clips; so did the published ones
        comparable_md += (f"\n\nThis run's copy lacks {test['clips_missing']} of the list's {test['list_clips']} test clips "
                          f"({test['missing_fraction']:.1%}; `dataset.json` names them): the reproduced values score the "
                          f"{test['clips_found']} found, as the published evaluations scored the copies their authors had.")
    sources = sorted({c.source for c in CLAIMS})
    notes = sorted({f"{c.label}: {c.note}" for c in CLAIMS if c.note})
    markdown = f"""## Claimed vs reproduced

The published numbers (claims registry v{CLAIMS_VERSION}, `siren_bench/claims.py`). A published number is
comparable with this run's system in the same role only when this run used the claim's AudioCaps test list
and its metric recipe; those are shown beside the reproduced value, with the difference reproduced minus
claimed. The others are listed once per published system with the reason, and no difference is printed
for them: it would not be a reproduction gap. This run: dataset `{dataset.get('name')}`, recipe `{summary['recipe']}`.

{comparable_md}{other_md}

Sources: {'; '.join(sources)}.

""" + "".join(f"- {n}\n" for n in notes)
    return Section("claims", {"version": CLAIMS_VERSION, "dataset": dataset.get("name"), "recipe": summary["recipe"],
                              "rows": results}, markdown)
