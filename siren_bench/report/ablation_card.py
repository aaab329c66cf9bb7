"""Report section for Siren's ablations: each variant (sweep stage) against the unablated Siren
at the same depth, and Stage 1 against the aligned Siren (main run), unpaired metrics with
their intervals and the paired per-clip differences."""

from __future__ import annotations

from pathlib import Path

from siren_bench.artifacts import RunArtifacts
from siren_bench.report.section import Section, md_table, report_section
from siren_bench.report.paired import PAIRED, adjust_holm, difference_text, p_text, paired_between
from siren_bench.report.scores import interval_text

METRICS = (("fad", "FAD"), ("kl", "KL"), ("clap", "CLAP"))


def _row(label: str, depth: int, variant: dict, reference: dict, paired: dict, note: str) -> list:
    cells = [label, depth]
    for metric, _ in METRICS:
        cells.append(f"{interval_text(reference[metric])} → {interval_text(variant[metric])}"
                     if metric in variant and metric in reference else "")
    for column, _, _ in PAIRED[:2]:
        p = paired.get(column)
        cells.append(f"{difference_text(p)}, p = {p_text(p)}, p (Holm) = {p_text(p, 'p_holm')}" if p else "")
    return cells + [note]


def _loss(value: float | None) -> str:
    return "not measured (no val split)" if value is None else f"{value:.3f}"


@report_section("ablations", "Ablations", reads="sweep", order=130)
def ablation_section(store: RunArtifacts, out: Path) -> Section:
    sweep_dir, score_dir = store.dir("sweep"), store.dir("score")
    sweep = store.json("sweep", "summary")
    main = store.json("score", "summary")["systems"] if store.exists("score", "summary") else {}
    results, pending = {}, []  # the rows wait for the Holm adjustment over the whole table
    for name, entry in sweep.get("ablations", {}).items():
        reference = entry["reference"]
        if reference["stage"] == "score":
            if reference["system"] not in main:
                raise ValueError(f"{store.path('sweep', 'summary')}: ablation {name} compares with {reference['system']!r}, "
                                 f"which {store.path('score', 'summary')} does not hold")
            ref_metrics, ref_dir = main[reference["system"]]["metrics"], score_dir / reference["system"]
        else:
            ref_metrics, ref_dir = sweep["systems"]["siren"][str(entry["depth"])]["metrics"], sweep_dir / reference["system"]
        paired = paired_between(sweep_dir / entry["variant"], ref_dir)
        results[name] = {"depth": entry["depth"], "variant": entry["variant"], "reference": reference["system"],
                         "metrics": {m: entry["metrics"][m]["value"] for m, _ in METRICS if m in entry["metrics"]},
                         "reference_metrics": {m: ref_metrics[m]["value"] for m, _ in METRICS if m in ref_metrics},
                         "paired": paired, "val_loss": entry["val_loss"], "reference_val_loss": entry["reference_val_loss"]}
        shared = entry["experts_from_reference"]
        note = (f"experts {entry['groups']} vs {entry['reference_groups']}; val loss {_loss(entry['reference_val_loss'])} → "
                f"{_loss(entry['val_loss'])}" + (f"; expert(s) {shared} shared with the reference" if shared else ""))
        pending.append((entry["label"], entry["depth"], entry["metrics"], ref_metrics, paired, note))
    if "siren" in main and "siren_aligned" in main:
        paired = paired_between(score_dir / "siren", score_dir / "siren_aligned")
        results["no_alignment"] = {"depth": sweep.get("full_depth"), "variant": "siren", "reference": "siren_aligned",
                                   "metrics": {m: main["siren"]["metrics"][m]["value"] for m, _ in METRICS
                                               if m in main["siren"]["metrics"]},
                                   "reference_metrics": {m: main["siren_aligned"]["metrics"][m]["value"] for m, _ in METRICS
                                                         if m in main["siren_aligned"]["metrics"]},
                                   "paired": paired}
        pending.append(("without alignment (Stage 1 only)", sweep.get("full_depth", ""), main["siren"]["metrics"],
                        main["siren_aligned"]["metrics"], paired, "main run: `siren` against `siren_aligned`"))
    holm_note = adjust_holm([p for *_, paired, _ in pending for column, _, _ in PAIRED[:2] if (p := paired.get(column))])
    rows = [_row(*row) for row in pending]
    if not rows:
        return Section("ablations", {}, "## Ablations\n\nNone configured (sweep.ablations) and no aligned Siren in the run.\n")
    header = ["ablation", "depth", *(f"{label}: Siren → ablated" for _, label in METRICS),
              *(f"paired {label} (ablated − Siren)" for _, label, _ in PAIRED[:2]), "notes"]
    markdown = f"""## Ablations

Each row turns one of Siren's design choices off and compares with the unablated Siren at the same depth,
trained with the same settings, seed and data (`sweep` stage; models/ablations.py). At a depth below the
codec's, the reference is Siren retrained at that depth; at the full depth, the main run's. The paired
columns are the ablated model minus Siren, clip by clip, with 95 % paired bootstrap intervals: a positive
CLAP or a negative KL difference means the ablation helped. "Without causal conditioning" removes the
current frame's lower codebooks from an expert's depth path (its temporal path still sees the previous
frame's sum of all codebooks); the first expert has nothing below it, so it is the reference's own.

{md_table(header, rows)}

{holm_note}
"""
    return Section("ablations", results, markdown)
