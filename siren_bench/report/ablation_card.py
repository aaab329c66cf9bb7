"""Report section for Siren's ablations: each variant (sweep stage) against the unablated Siren
at the same depth, and Stage 1 against the aligned Siren (main run), unpaired metrics with
their intervals and the paired per-clip differences, paired seed replicate by seed replicate,
and one verdict per retrained ablation on the claim its design choice carries."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from siren_bench import replicates
from siren_bench.artifacts import RunArtifacts
from siren_bench.report.section import Section, md_table, report_section
from siren_bench.report.paired import PAIRED, adjust_holm, difference_text, over_seeds_text, p_text, paired_over_replicates
from siren_bench.report.scores import interval_text, score_replicate, seed_count, seed_mean
from siren_bench.report.verdicts import Verdict, paired_verdict, render

METRICS = (("fad", "FAD"), ("kl", "KL"), ("clap", "CLAP"))


def _shown(metrics: dict, spread: dict) -> dict:
    """The unpaired metrics as the table shows them: the mean over seed replicates where there are several."""
    return {m: seed_mean(metrics[m], spread[m]) if m in spread else metrics[m] for m, _ in METRICS if m in metrics}


def _row(label: str, depth: int, variant: dict, reference: dict, paired: dict, note: str) -> list:
    cells = [label, depth]
    for metric, _ in METRICS:
        cells.append(f"{interval_text(reference[metric])} → {interval_text(variant[metric])}"
                     if metric in variant and metric in reference else "")
    for column, _, _ in PAIRED:
        p = paired.get(column)
        text = f"{difference_text(p)}, p = {p_text(p)}, p (Holm) = {p_text(p, 'p_holm')}" if p else ""
        if p and "over_seeds" in p:
            text += f"; {over_seeds_text(p['over_seeds'])}"
        cells.append(text)
    return cells + [note]


def _loss(value: float | None) -> str:
    return "not measured (no val split)" if value is None else f"{value:.3f}"


def _losses(entry: dict, key: str) -> str:
    values = [entry[key], *(r[key] for r in entry.get("replicates", []))]
    return " / ".join(_loss(v) for v in values)


def ablation_verdict(entry: dict, paired: dict) -> Verdict:
    """The verdict on the claim an ablation tests (`entry`, its sweep.json record) from its paired
    measures, ablated minus Siren: the claim holds when the ablated model is the worse one, unless
    the claim favours the ablated model's design (`claim_favours_variant`)."""
    return paired_verdict(entry["claim"] + ".", f"{entry['label']} minus Siren at depth {entry['depth']}",
                          [(label, better, p) for column, label, better in PAIRED if (p := paired.get(column))],
                          flip=not entry["claim_favours_variant"])


def _reference(store: RunArtifacts, sweep: dict, main: dict, name: str, entry: dict) -> tuple[dict, dict, Callable[[int], Path]]:
    """(metrics, over_seeds, replicate k -> scored folder) of an ablation's reference: the main run's
    system (score stage) or Siren retrained at the ablation's depth (sweep stage)."""
    reference = entry["reference"]
    if reference["stage"] == "score":
        if reference["system"] not in main:
            raise ValueError(f"{store.path('sweep', 'summary')}: ablation {name} compares with {reference['system']!r}, "
                             f"which {store.path('score', 'summary')} does not hold")
        system = main[reference["system"]]
        return system["metrics"], system.get("over_seeds", {}), lambda k: score_replicate(store.dir("score"), reference["system"], k)
    system = sweep["systems"]["siren"][str(entry["depth"])]
    return system["metrics"], system.get("over_seeds", {}), lambda k: replicates.folder(store.dir("sweep"), k) / reference["system"]


@report_section("ablations", "Ablations", reads="sweep", order=130)
def ablation_section(store: RunArtifacts, out: Path) -> Section:
    sweep = store.json("sweep", "summary")
    main = store.json("score", "summary")["systems"] if store.exists("score", "summary") else {}
    rows, pending, verdict_inputs = {}, [], []  # the rows wait for the Holm adjustment over the whole table
    for name, entry in sweep.get("ablations", {}).items():
        ref_metrics, ref_spread, ref_dir = _reference(store, sweep, main, name, entry)
        n, n_reference = 1 + len(entry.get("replicates", [])), seed_count({"over_seeds": ref_spread})
        if n_reference != n:
            raise ValueError(f"{store.path('sweep', 'summary')}: ablation {name} has {n} seed replicates, its reference "
                             f"{entry['reference']['system']!r} {n_reference}; re-run both with the same eval.seeds")
        paired = paired_over_replicates([(replicates.folder(store.dir("sweep"), k) / entry["variant"], ref_dir(k)) for k in range(n)])
        variant, reference = _shown(entry["metrics"], entry.get("over_seeds", {})), _shown(ref_metrics, ref_spread)
        rows[name] = {"depth": entry["depth"], "variant": entry["variant"], "reference": entry["reference"]["system"],
                      "seeds": n, "metrics": {m: r["value"] for m, r in variant.items()},
                      "reference_metrics": {m: r["value"] for m, r in reference.items()},
                      "paired": paired, "val_loss": entry["val_loss"], "reference_val_loss": entry["reference_val_loss"]}
        shared = entry["experts_from_reference"]
        note = (f"experts {entry['groups']} vs {entry['reference_groups']}; val loss {_losses(entry, 'reference_val_loss')} → "
                f"{_losses(entry, 'val_loss')}" + (f"; expert(s) {shared} shared with the reference" if shared else ""))
        pending.append((entry["label"], entry["depth"], variant, reference, paired, note))
        verdict_inputs.append((entry, paired))
    if "siren" in main and "siren_aligned" in main:
        seeds = min(seed_count(main["siren"]), seed_count(main["siren_aligned"]))
        paired = paired_over_replicates([(score_replicate(store.dir("score"), "siren", k),
                                          score_replicate(store.dir("score"), "siren_aligned", k)) for k in range(seeds)])
        variant = _shown(main["siren"]["metrics"], main["siren"].get("over_seeds", {}))
        reference = _shown(main["siren_aligned"]["metrics"], main["siren_aligned"].get("over_seeds", {}))
        rows["no_alignment"] = {"depth": sweep.get("full_depth"), "variant": "siren", "reference": "siren_aligned",
                                "seeds": seeds, "metrics": {m: r["value"] for m, r in variant.items()},
                                "reference_metrics": {m: r["value"] for m, r in reference.items()}, "paired": paired}
        pending.append(("without alignment (Stage 1 only)", sweep.get("full_depth", ""), variant, reference, paired,
                        "main run: `siren` against `siren_aligned`; its verdict is under Paired comparisons"))
    holm_note = adjust_holm([p for *_, paired, _ in pending for column, _, _ in PAIRED if (p := paired.get(column))])
    if not pending:
        return Section("ablations", {}, "## Ablations\n\nNone configured (sweep.ablations) and no aligned Siren in the run.\n")
    verdicts = [ablation_verdict(entry, paired) for entry, paired in verdict_inputs]
    counts = {row["seeds"] for row in rows.values()}
    if len(counts) > 1:
        raise ValueError(f"{store.path('sweep', 'summary')} and {store.path('score', 'summary')} hold different numbers of seed "
                         f"replicates ({sorted(counts)}); re-run the sweep with the main run's eval.seeds")
    seeds = counts.pop()
    header = ["ablation", "depth", *(f"{label}: Siren → ablated" for _, label in METRICS),
              *(f"paired {label} (ablated − Siren)" for _, label, _ in PAIRED), "notes"]
    replicated = (f" Every row ran under {seeds} seed replicates: replicate k of the ablated model against replicate k of "
                  "its reference, both trained with replicate k's seeds. The unpaired columns show the mean over the seeds "
                  "with an interval holding the seed and the clip variance; the paired columns show replicate 0's "
                  "difference, its p and p (Holm), then the mean over the seeds with that interval and each seed's "
                  "difference, on which the verdicts rest." if seeds > 1 else
                  " One seed: retraining may move every row.")
    markdown = f"""## Ablations

{render(verdicts) if verdicts else ""}
Each row turns one of Siren's design choices off and compares with the unablated Siren at the same depth,
trained with the same settings, seeds and data (`sweep` stage; models/ablations.py). At a depth below the
codec's, the reference is Siren retrained at that depth; at the full depth, the main run's. The paired
columns are the ablated model minus Siren, clip by clip, with 95 % paired bootstrap intervals: a positive
CLAP or a negative KL or distance difference means the ablation helped.{replicated} "Without causal
conditioning" removes the current frame's lower codebooks from an expert's depth path (its temporal path
still sees the previous frame's sum of all codebooks); the first expert has nothing below it, so it is the
reference's own. Validation losses are listed per seed.

{md_table(header, [_row(*row) for row in pending])}

{holm_note}
"""
    return Section("ablations", {"rows": rows, "seeds": seeds, "verdicts": [v.as_dict() for v in verdicts]}, markdown)

