"""Report section for the anti-causal alignment: its training curves, and Siren with and without
it side by side on every metric of the score table, with paired per-clip differences.

Both rows come from the same captions, seed and sampling settings, so per-clip metrics (KL,
CLAP cosine, distance to the reference mean) pair clip by clip: the paired bootstrap interval of
the mean difference says whether alignment moved them, whichever way.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from siren_bench.artifacts import RunArtifacts
from siren_bench.report import figures
from siren_bench.report.section import Section, md_table, report_section
from siren_bench.report.paired import PAIRED, adjust_holm, difference_text, p_text, paired_differences
from siren_bench.report.scores import COLUMNS, contamination_note, interval_text, reward_contaminated

CURVES = (("reward_mean", "reward (group mean)"), ("kl", "KL to Stage 1 (k3)"), ("entropy", "entropy (nats / token)"),
          ("clip_fraction", "clipped ratio share"))


def _smooth(values: np.ndarray) -> tuple[np.ndarray, int]:
    window = max(1, len(values) // 10)
    return np.convolve(values, np.ones(window) / window, mode="valid"), window


def _curves(log: list[dict], path: Path) -> Path:
    steps = np.array([r["step"] for r in log])
    fig, axes = plt.subplots(1, len(CURVES), figsize=(3.3 * len(CURVES), 3.0))
    for ax, (key, label) in zip(axes, CURVES):
        values = np.array([r[key] for r in log], dtype=np.float64)
        ax.plot(steps, values, color="tab:blue", alpha=0.3, linewidth=0.8)
        smooth, window = _smooth(values)
        ax.plot(steps[window - 1 :], smooth, color="tab:blue", label=f"mean of {window} steps")
        if key == "reward_mean":
            spread = np.array([r["reward_std"] for r in log])
            ax.fill_between(steps, values - spread, values + spread, color="tab:blue", alpha=0.1, linewidth=0)
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0].legend(fontsize=7)
    fig.suptitle("Anti-causal alignment of the coarse expert", y=1.03)
    return figures.save(fig, path)


@report_section("alignment", "Anti-causal alignment", reads="siren_aligned", order=110)
def alignment_section(store: RunArtifacts, out: Path) -> Section:
    info = store.json("siren_aligned", "info")
    if not info.get("trained"):
        return Section("alignment", {"trained": False, "reason": info.get("reason")},
                       f"## Anti-causal alignment\n\nNot run: {info.get('reason')}.\n")
    log = store.jsonl("siren_aligned", "log")
    s, summary, reward = info["settings"], info["summary"], info["reward"]
    figure = _curves(log, out / "figures" / "alignment_curves.png")
    terms = []
    if "audio" in reward:
        terms.append(f"{reward['audio_weight']} x cosine to the reference clip in `{reward['audio']['embedder']}`'s embedding")
    if "clap" in reward:
        terms.append(f"{reward['clap_weight']} x text-audio cosine in `{reward['clap']['embedder']}`")
    results = {"trained": True, "expert": info["expert"], "settings": s, "reward": reward, "summary": summary}
    markdown = f"""## Anti-causal alignment

Expert {info['expert']} (codebooks {info['codebooks']}) tuned for {s['steps']} steps on the {info['n_captions']}
train captions, the other experts, the codec and the reward models frozen: {s['captions_per_step']} captions x
{s['group_size']} rollouts of {s['n_frames']} frames per step ({summary['rollouts']} rollouts in all), reward =
{' + '.join(terms)} (recipe `{reward['recipe']}`), group-relative advantages{' / group std' if s['normalise_std'] else ''},
PPO clip {s['clip_eps']}, KL coefficient {s['kl_coef']}, learning rate {s['learning_rate']}, seed {s['seed']}
({info['seconds']} s on {info['device']}). The paper's own recipe is not public: docs/alignment.md lists
each choice and the config key that changes it. Mean reward over the first / last {summary['window_steps']} steps:
{summary['first_reward_mean']:.4f} / {summary['last_reward_mean']:.4f} (each step draws other captions, so single
steps are noisy); KL to Stage 1 over the last steps: {summary['last_kl']:.4f}.

![alignment curves](figures/alignment_curves.png)
"""
    if not store.exists("score", "results", "siren_aligned") or not store.exists("score", "results", "siren"):
        return Section("alignment", results, markdown + "\nNo scores for `siren` and `siren_aligned` yet (score stage).\n", [figure])
    side, paired = _side_by_side(store)
    contaminated = reward_contaminated(store)
    results |= {"side_by_side": side, "paired": paired, "reward_contaminated": contaminated}
    header = ["metric", "siren (Stage 1)", "siren_aligned", "better"]
    rows = [[label, side[m]["siren"], side[m]["siren_aligned"] + (" \\*" if m in contaminated else ""),
             "lower" if m not in ("is", "clap") else "higher"] for m, label in COLUMNS if m in side]
    family = [(label, better, p) for column, label, better in PAIRED if (p := paired.get(column))]
    holm_note = adjust_holm([p for *_, p in family])
    paired_rows = [[label, difference_text(p), p_text(p), p_text(p, "p_holm"), better, p["n"]] for label, better, p in family]
    markdown += f"""
Siren with and without alignment on the test captions (same seed and sampling; the score stage's 95 %
intervals):

{md_table(header, rows)}

Paired per-clip differences, aligned minus Stage 1 (mean, 95 % paired bootstrap interval, two-sided bootstrap p):

{md_table(["per-clip measure", "aligned - Stage 1", "p", "p (Holm)", "better", "clips"], paired_rows)}

{holm_note}
{contamination_note(contaminated) or "No metric of the table is scored with the reward's networks: every row is held out from the reward."}
"""
    return Section("alignment", results, markdown, [figure])


def _side_by_side(store: RunArtifacts) -> tuple[dict, dict]:
    full = {name: store.json("score", "results", name) for name in ("siren", "siren_aligned")}
    side = {}
    for metric, _ in COLUMNS:
        if all(metric in f["metrics"] for f in full.values()):
            side[metric] = {name: interval_text(f["metrics"][metric]) for name, f in full.items()}
    return side, paired_differences(store.dir("score"), "siren_aligned", "siren")
