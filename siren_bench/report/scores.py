"""Report sections for the smoke evaluators and the scored systems."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd

from siren_bench import replicates
from siren_bench.artifacts import RunArtifacts
from siren_bench.audio_input import CLIPPED_FRACTION
from siren_bench.recipes import get_recipe
from siren_bench.report.verdicts import Verdict, paired_verdict, render
from siren_bench.report.section import Section, md_table, report_section
from siren_bench.report.paired import (PAIRED, PAIRED_RESAMPLES, adjust_holm, difference_text, over_seeds_text, p_text,
                                       paired_over_replicates)

# column order and labels of the main table; "kl" also shows its second direction where computed
COLUMNS = (("fad", "FAD"), ("fad_inf", "FAD-inf"), ("kad", "KAD (x100)"), ("fd", "FD"), ("kl", "KL"), ("is", "IS"),
           ("clap", "CLAP (cosine)"))


def reward_contaminated(store: RunArtifacts) -> dict[str, str]:
    """The metrics scored with a network whose weights the alignment reward optimised (metric ->
    the reward term: "audio" or "clap"), matched by weights SHA-256; empty when no alignment ran
    or the score has no aligned system. Such a metric cannot tell alignment from reward hacking."""
    if not store.exists("siren_aligned", "info") or not store.exists("score", "results", "siren_aligned"):
        return {}
    info = store.json("siren_aligned", "info")
    if not info.get("trained"):
        return {}
    used = {term: info["reward"][term]["weights_sha256"] for term in ("audio", "clap") if term in info["reward"]}
    metrics = store.json("score", "results", "siren_aligned")["metrics"]
    return {metric: term for metric, result in metrics.items() for term, sha in used.items()
            if result.get("weights_sha256") == sha}


def contamination_note(contaminated: dict[str, str]) -> str:
    if not contaminated:
        return ""
    labels = dict(COLUMNS)
    listed = ", ".join(f"{labels.get(m, m)} (the reward's {term} network)" for m, term in contaminated.items())
    return (f"\n\\* For `siren_aligned`, {listed}: scored with the very weights the alignment reward optimised "
            "(same SHA-256), so a gain there is partly the reward being optimised, not independent evidence.\n")


def interval_text(result: dict) -> str:
    if result.get("ci_low") is None:
        return f"{result['value']:.4g}"
    return f"{result['value']:.4g} [{result['ci_low']:.4g}, {result['ci_high']:.4g}]"


INTERVALS = ("95 % intervals over the generated clips: for the set statistics (FAD, FAD-inf, KAD, FD, IS) a delete-a-group "
             "jackknife (20 seeded groups, value ± t(19) se), centred on the estimate, whose coverage the README's "
             "simulation measures for the distances; for the means of per-clip terms (KL, CLAP) a percentile bootstrap.")

SEEDS = ("A system run with several seeds shows the mean over its seed replicates with a 95 % interval that holds "
         "both the seed-to-seed variance and the clip variance (siren_bench/replicates.py: se^2 = sd^2 / n + the mean of "
         "the replicates' clip variances, each the square of the standard error its interval recorded (jackknife or "
         "bootstrap), t with Welch-Satterthwaite's df, IS floored at 1); the others, one run with its interval over "
         "clips. ")

LOWER_IS_BETTER = {"fad", "fad_inf", "kad", "fd", "kl"}


def seed_agreement(siren: dict, other: dict, metric: str) -> tuple[int, int] | None:
    """(seeds under which Siren scores better than `other` on `metric`, seeds compared), pairing
    the two systems' runs by generation seed; None when they share fewer than two seeds."""
    a = dict(zip(siren[metric]["seeds"], siren[metric]["values"]))
    b = dict(zip(other[metric]["seeds"], other[metric]["values"]))
    shared = sorted(set(a) & set(b))
    if len(shared) < 2:
        return None
    better = sum((a[s] < b[s]) if metric in LOWER_IS_BETTER else (a[s] > b[s]) for s in shared)
    return better, len(shared)


def seed_mean(record: dict, spread: dict) -> dict:
    """A metric of a replicated system as tables show it: the mean over its seed replicates with the
    interval holding seed and clip variance (`spread`, replicates.over_seeds), replicate 0's value kept."""
    return record | {"value": spread["mean"], "ci_low": spread["ci_low"], "ci_high": spread["ci_high"], "n_seeds": spread["n"],
                     "seed0_value": record["value"]}


def seeds_markdown(systems: dict, present: list[tuple[str, str]]) -> str:
    """Each replicated system's value under every seed, and whether Siren's order against each
    system holds under every seed."""
    seeded = {name: s["over_seeds"] for name, s in systems.items() if "over_seeds" in s}
    if not seeded:
        return ""
    n = max(next(iter(v.values()))["n"] for v in seeded.values())
    rows = [[name] + [" / ".join(f"{v:.4g}" for v in spread[m]["values"]) + f" (sd {spread[m]['sd']:.2g})" if m in spread else ""
                      for m, _ in present]
            for name, spread in sorted(seeded.items())]
    text = f"""
### Over seeds

The value under each of the {n} seed replicates, in order (replicate 0, 1, ...; replicate k trains, aligns and samples with
every seed + {replicates.SEED_STRIDE} k), and their standard deviation: how far retraining moves a number. The
table above gives their mean.

{md_table(["system"] + [label for _, label in present], rows)}
"""
    if "siren" not in seeded:
        return text
    agree = []
    for other in sorted(set(seeded) - {"siren"}):
        cells = [seed_agreement(seeded["siren"], seeded[other], m) if m in seeded[other] and m in seeded["siren"] else None
                 for m, _ in present]
        agree.append([f"`{other}`"] + ["" if c is None else f"{c[0]} of {c[1]}" for c in cells])
    return text + f"""
Seeds under which Siren scores better than each system (paired by replicate; "{n} of {n}" or "0 of {n}": the order
holds under every seed; anything between: the order depends on the seed and this run does not settle it):

{md_table(["Siren better than"] + [label for _, label in present], agree)}
"""


@report_section("evaluators", "Evaluators", reads="evaluators", order=40)
def evaluators_section(store: RunArtifacts, out: Path) -> Section:
    summary = store.json("evaluators", "summary")
    if not summary["trained"]:
        return Section("evaluators", summary, f"## Evaluators\n\n{summary['reason']}.\n")
    tagger, clap = summary["tagger"]["heldout"], summary["clap"]["heldout"]
    rows = [
        ["tagger: mAP of clip logits", f"{tagger['map']:.3f}", f"{tagger['untrained_map']:.3f}", f"{tagger['chance_map']:.3f}"],
        ["tagger: macro-F1 at p = 0.5", f"{tagger['macro_f1']:.3f}", "", ""],
        ["CLAP: text-to-audio recall@1", f"{clap['t2a_recall_at_1']:.3f}", f"{clap['untrained_t2a_recall_at_1']:.3f}",
         f"{clap['chance_recall_at_1']:.3f}"],
        ["CLAP: text-to-audio recall@5", f"{clap['t2a_recall_at_5']:.3f}", "", f"{clap['chance_recall_at_5']:.3f}"],
        ["CLAP: matched / mismatched cosine", f"{clap['matched_cosine']:.3f} / {clap['mismatched_cosine']:.3f}",
         f"{clap['untrained_matched_cosine']:.3f} / {clap['untrained_mismatched_cosine']:.3f}", ""],
    ]
    markdown = f"""## Evaluators

No pretrained VGGish, PANNs or CLAP weights exist on the build machine, so the smoke recipe
scores with two small models trained by the `evaluators` stage on the SynthCaps train split
({tagger['n_train']} clips, {summary['tagger']['steps']} and {summary['clap']['steps']} steps, seed {summary['seed']}): a 12-class tagger
(embeddings and class logits) and a CLAP-style audio encoder trained
against the frozen offline MiniLM text model. Their quality on the {tagger['n_val']} val clips, which
says how much the smoke metrics can resolve:

{md_table(["held-out measure", "trained", "untrained", "chance"], rows)}

Weights: tagger `{summary['tagger']['weights_sha256'][:16]}...`, CLAP `{summary['clap']['weights_sha256'][:16]}...`
(SHA-256 of the safetensors files; every score records them).
{_networks_of_the_recipe(store)}"""
    return Section("evaluators", summary, markdown)


PRETRAINED = {
    "aisfx": ("aisfx, a pretrained sound-effects embedding (Ma et al., ISMIR 2022) whose weights ship in the aisfx 0.1.2 wheel, "
              "run on 44.1 kHz audio: the one network here that this run did not train, so its numbers do not move with the "
              "run's seeds or machine"),
}


def _networks_of_the_recipe(store: RunArtifacts) -> str:
    """Which network each metric of the scored recipe reads, and what the pretrained ones are."""
    if not store.exists("score", "summary"):
        return ""
    recipe = get_recipe(store.json("score", "summary")["recipe"])
    labels, reads = dict(COLUMNS), {}
    for spec in recipe.metrics:
        reads.setdefault(spec.embedder, []).append(labels.get(spec.metric, spec.metric))
    lines = [f"- `{embedder}`: {', '.join(metrics)}" + (f". {PRETRAINED[embedder]}." if embedder in PRETRAINED else "")
             for embedder, metrics in reads.items()]
    return f"\nThe network each metric of recipe `{recipe.id}` reads:\n\n" + "\n".join(lines) + "\n"


def _over_full_scale(per_clip: Path) -> dict:
    """The generated clips the scorer flags as clipped (peak above 1, or too many samples at full
    scale), scored as generated because eval.allow_clipped is on: their count and largest peak."""
    frame = pd.read_csv(per_clip)
    flagged = frame[(frame["peak"] > 1.0) | (frame["clipped_fraction"] > CLIPPED_FRACTION)]
    return {"clips": int(len(flagged)), "of": int(len(frame)), "max_peak": float(flagged["peak"].max())} if len(flagged) else {}


def _over_full_scale_note(systems: dict) -> str:
    flagged = {name: s["over_full_scale"] for name, s in systems.items() if "over_full_scale" in s}
    if not flagged:
        return ""
    parts = [f"`{name}` {o['clips']} of {o['of']} (largest peak {o['max_peak']:.3f})" for name, o in sorted(flagged.items())]
    return ("\nClips over full scale, scored as generated (eval.allow_clipped; a player or a 16-bit file would clip them): "
            + ", ".join(parts) + ".\n")


@report_section("scores", "Scores", reads="score", order=80)
def scores_section(store: RunArtifacts, out: Path) -> Section:
    summary = store.json("score", "summary")
    recipe = get_recipe(summary["recipe"])
    systems = summary["systems"]
    present = [(m, label) for m, label in COLUMNS if any(m in s["metrics"] for s in systems.values())]
    contaminated = reward_contaminated(store)
    rows, results = [], {"recipe": summary["recipe"], "recipe_sha256": summary["recipe_sha256"], "split": summary["split"],
                         "systems": {}, "reward_contaminated": contaminated}
    for name in sorted(systems):
        full = store.json("score", "results", name)
        metrics, seeded = full["metrics"], systems[name].get("over_seeds", {})
        table = {m: {k: r.get(k) for k in ("value", "ci_low", "ci_high", "n_generated", "n_frames")} for m, r in metrics.items()}
        if "kl" in metrics:  # its direction, and the other direction where the recipe computes both
            table["kl"] |= {k: v for k, v in metrics["kl"].items() if k == "direction" or k.startswith("value_")}
        for metric, spread in seeded.items():  # replicated: the mean over seeds and its combined interval
            table[metric] = seed_mean(table[metric], spread)
        cells = [name, str(full["generated"]["n_clips"]), str(next(iter(seeded.values()))["n"]) if seeded else "1"]
        for metric, _ in present:
            mark = " \\*" if name == "siren_aligned" and metric in contaminated else ""
            cells.append(interval_text(table[metric]) + mark if metric in table else "")
        rows.append(cells)
        results["systems"][name] = {"description": systems[name]["description"],
                                    "n_reference": full["reference"]["n_clips"], "metrics": table}
        if seeded:
            results["systems"][name]["over_seeds"] = seeded
        over = _over_full_scale(store.path("score", "per_clip", name))
        if over:
            results["systems"][name]["over_full_scale"] = over
    kl = recipe.spec("kl") if any(s.metric == "kl" for s in recipe.metrics) else None
    kl_note = (f" KL is KL({'reference || generated' if kl.option('direction') == 'ref_gen' else 'generated || reference'}) "
               "on softmax of the clip logits, paired by clip id." if kl else "")
    markdown = f"""## Scores

Recipe `{recipe.id}` (SHA-256 `{recipe.sha256[:16]}...`): {recipe.description} Each system is
scored against the {summary['split']} references (`{summary['reference']}`); cells are the value with its
interval. {SEEDS if any("over_seeds" in s for s in systems.values()) else ""}{INTERVALS}{kl_note} Lower is better for FAD, FAD-inf, KAD,
FD and KL; higher for IS and CLAP. Full results, per-clip scores and every input hash:
`artifacts/<profile>/score/<system>/`; `siren-bench audit` re-derives them.

{md_table(["system", "clips", "seeds"] + [label for _, label in present], rows)}

""" + "\n".join(f"- `{name}`: {systems[name]['description']}" for name in sorted(systems)) + "\n" + contamination_note(contaminated)
    markdown += _over_full_scale_note(results["systems"])
    markdown += seeds_markdown(systems, present)
    stats = store.path("score", "reference_stats")
    if stats.is_file():  # shipped with the report: score a new model against these references without their audio
        for source in (stats, stats.with_suffix(".json")):
            shutil.copyfile(source, out / source.name)
        results["reference_stats"] = {"file": stats.name, "npz_sha256": json.loads(stats.with_suffix(".json").read_text())["npz_sha256"]}
        markdown += (f"\nThe references' statistics under `{recipe.id}` are in `{stats.name}` (+ `.json`) beside this report: "
                     "`siren-bench score --generated DIR --reference-stats FILE.npz` scores FAD, FD and FAD-inf against them "
                     "without the audio, refusing them under other evaluator weights, another recipe or another clip list.\n")
    if recipe.name == "smoke":
        markdown += ("\nThese are smoke-evaluator numbers: comparable between systems of one smoke run, not with "
                     "published FAD / KL / IS / CLAP scores, which use VGGish, PANNs and LAION CLAP on AudioCaps.\n")
    return Section("scores", results, markdown)


@report_section("paired", "Paired comparisons", reads="score", order=90)
def paired_section(store: RunArtifacts, out: Path) -> Section:
    """Siren against every other generating system of the run, paired clip by clip, under every
    seed replicate both were run with."""
    systems = store.json("score", "summary")["systems"]
    others = [name for name in sorted(systems) if name not in ("siren", "codec_resynthesis", "real_unpaired")]
    if "siren" not in systems or not others:
        return Section("paired", {}, "## Paired comparisons\n\nNeeds Siren and at least one other model in eval.systems.\n")
    score_dir = store.dir("score")
    results = {other: paired_over_replicates([(score_replicate(score_dir, "siren", k), score_replicate(score_dir, other, k))
                                              for k in range(min(seed_count(systems["siren"]), seed_count(systems[other])))])
               for other in others}
    family = [(other, label, better, p) for other in others for column, label, better in PAIRED
              if (p := results[other].get(column)) is not None]
    holm_note = adjust_holm([p for *_, p in family])
    seeded = any("over_seeds" in p for *_, p in family)
    rows = [[f"`{other}`", label, difference_text(p), p_text(p), p_text(p, "p_holm"), better, p["n"]]
            + ([over_seeds_text(p["over_seeds"]) if "over_seeds" in p else ""] if seeded else [])
            for other, label, better, p in family]
    verdicts = [comparison_verdict(other, [(label, better, p) for o, label, better, p in family if o == other]) for other in others]
    results = results | {"verdicts": [v.as_dict() for v in verdicts]}
    seed_text = (" The last column pairs the two systems' seed replicates (replicate k with replicate k): the mean difference "
                 "over seeds with an interval holding the seed and the clip variance (as in the score table), then each "
                 "seed's difference. A verdict rests on it: a measure counts only when its sign holds under every seed "
                 "and that interval excludes zero." if seeded else "")
    markdown = f"""## Paired comparisons

{render(verdicts)}
Siren (Stage 1) minus each other model, clip by clip on the same test captions and seed: the mean per-clip
difference with its 95 % paired bootstrap interval and two-sided bootstrap p ({PAIRED_RESAMPLES:,} resamples, the
recipe's seed), for replicate 0. "better" says which sign favours Siren: a positive CLAP difference, a negative KL
or distance.{seed_text}

{md_table(["Siren minus", "per-clip measure", "difference [95 % CI]", "p", "p (Holm)", "better for Siren", "clips"]
          + (["over seeds: mean [95 % CI] (each seed)"] if seeded else []), rows)}

{holm_note}
"""
    return Section("paired", results, markdown)


def score_replicate(score_dir: Path, system: str, k: int) -> Path:
    """Where the score stage put replicate k of `system`: score/<system>/, then score/<system>/seed<k>/."""
    return score_dir / system if k == 0 else score_dir / system / replicates.name(k)


def seed_count(system: dict) -> int:
    """How many seed replicates a scored system has (1: none beyond the run itself)."""
    spread = system.get("over_seeds")
    return next(iter(spread.values()))["n"] if spread else 1


CLAIMS_AGAINST = {
    "shared_lm": "Siren's isolated experts generate better than one transformer shared by all codebooks",
    "delay_lm": "Siren generates better than a delay-pattern LM (AudioGen / MusicGen)",
    "ar_nar": "Siren generates better than an AR + NAR LM (VALL-E)",
    "latent_diffusion": "Siren (an LM) matches or beats a latent diffusion model",
    "siren_aligned": "anti-causal alignment improves Siren",
}


def comparison_verdict(other: str, measures: list[tuple[str, str, dict]]) -> Verdict:
    """One sentence on Siren against `other` from its paired measures (verdicts.paired_verdict); for
    the aligned Siren the claim is that Siren minus it is worse."""
    flip = other == "siren_aligned"  # the claim is about the aligned model: Siren minus it must be worse
    return paired_verdict(CLAIMS_AGAINST.get(other, f"Siren generates better than `{other}`") + ".", f"Siren minus `{other}`",
                          measures, flip=flip,
                          note=" Measures on the network the alignment reward used are marked under Scores: not independent "
                               "evidence." if flip else "")
