"""Report section for Siren Stage 1: the experts, their training and validation loss curves.

Losses are per-token cross-entropy in nats; ln(codebook size) is what a uniform guess scores,
so the table shows how far each expert got below chance. Wall-clock time stays in report.md.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from siren_bench.artifacts import RunArtifacts
from siren_bench.report import figures
from siren_bench.report.section import Section, md_table, report_section


@report_section("siren", "Siren Stage 1", reads="siren", order=50)
def siren_section(store: RunArtifacts, out: Path) -> Section:
    info = store.json("siren", "info")
    if not info.get("trained"):
        return Section("siren", {"trained": False, "reason": info.get("reason")},
                       f"## Siren Stage 1\n\nNot trained in this run: {info.get('reason')}.\n")
    log = store.jsonl("siren", "train_log")
    arch = info["architecture"]
    chance = math.log(arch["codebook_size"])

    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    for summary in info["experts"]:
        rows = [r for r in log if r["expert"] == summary["expert"]]
        steps, losses = np.array([r["step"] for r in rows]), np.array([r["loss"] for r in rows])
        window = max(1, len(rows) // 20)
        line, = ax.plot(steps[window - 1 :], np.convolve(losses, np.ones(window) / window, mode="valid"),
                        label=f"expert {summary['expert']} (codebooks {summary['codebooks']})")
        val = [(r["step"], r["val_loss"]) for r in rows if "val_loss" in r]
        if val:
            ax.plot(*zip(*val), marker="o", linestyle="--", color=line.get_color())
    ax.axhline(chance, color="grey", linewidth=0.8, linestyle=":", label=f"uniform guess (ln {arch['codebook_size']})")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats / token)")
    ax.set_title("Siren Stage 1: training (lines) and validation (dots) loss")
    ax.legend(fontsize=7)
    curve = figures.save(fig, out / "figures" / "siren_training.png")

    table = [[s["expert"], ", ".join(map(str, s["codebooks"])), f"{s['parameters']:,}", f"{s.get('trainable_parameters', s['parameters']):,}",
              s["steps"], f"{s['final_train_loss']:.3f}",
              "-" if s["final_val_loss"] is None else f"{s['final_val_loss']:.3f}"] for s in info["experts"]]
    seconds = round(sum(r["seconds"] for r in log), 1)
    rows = info.get("deviations_from_official")
    deviation_text = _deviations_text(rows)
    results = {"trained": True, "architecture": arch, "experts": info["experts"], "n_train_clips": info["n_train_clips"], "n_val_clips": info["n_val_clips"], "chance_loss": chance,
               "deviations_from_official": rows}
    markdown = f"""## Siren Stage 1

{len(info['experts'])} isolated experts over {arch['n_codebooks']} codebooks of {arch['codebook_size']} entries
(dim {arch['dim']}, {arch['temporal_layers']} temporal + {arch['depth_layers']} depth layers,
{arch['n_heads']} heads / {arch['n_kv_heads']} KV heads; built as the official code builds it: one
projector with bias per codebook, positions re-added at every block; "parameters" include each
expert's frozen decode tables, "trainable" does not), text from `{info['text_encoder']['name']}`; trained on
{info['n_train_clips']} clips, validated on {info['n_val_clips']} ({seconds} s of training and validation on {info['device']}). Stage 1 only:
no alignment. A uniform guess scores {chance:.3f} nats per token.

{md_table(['expert', 'codebooks', 'parameters', 'trainable', 'steps', 'final train loss', 'final val loss'], table)}

{deviation_text}

![siren training](figures/siren_training.png)
"""
    return Section("siren", results, markdown, [curve])


def _deviations_text(rows: list[dict] | None) -> str:
    """Our additions as a table, then the settings where the run departs from the published 1.6B model."""
    if rows is None:
        return "This Siren folder does not record its deviations from the official code (written before they were)."
    additions = [[f"`{r['setting']}`", r["value"], r["official"], r["what"]] for r in rows if r["kind"] == "addition"]
    sizes = ", ".join(f"`{r['setting']}` {r['value']} (official {r['official']})" for r in rows if r["kind"] == "size")
    text = ("Our additions to the official code, each a switch (set it to the official value to turn it off):\n\n"
            + md_table(["setting", "this run", "official code", "what"], additions) if additions
            else "No additions to the official code: the null caption, caption dropout and guidance are off.")
    return text + (f"\n\nScale, tokenizer and recipe differ from the published 1.6B model: {sizes}." if sizes
                   else "\n\nScale, tokenizer and recipe are the published 1.6B model's.")
