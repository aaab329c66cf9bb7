"""The report's first screen: the headline scores, every verdict on the paper's claims, and what
this run could not do, gathered from the sections' own results (nothing here is computed anew or
written by hand)."""

from __future__ import annotations

from siren_bench.report.scores import COLUMNS, interval_text
from siren_bench.report.section import Section, md_table

HEADLINE = tuple((m, label) for m, label in COLUMNS if m in ("fad", "kad", "kl", "clap"))  # the Scores table's labels


def _scores(results: dict) -> str:
    systems = results.get("systems", {})
    present = [(m, label) for m, label in HEADLINE if any(m in s["metrics"] for s in systems.values())]
    if not systems or not present:
        return ""
    first = present[0][0]
    order = sorted(systems, key=lambda s: (systems[s]["metrics"].get(first, {}).get("value", float("inf")), s))
    rows = [[f"`{s}`", *(interval_text(systems[s]["metrics"][m]) if m in systems[s]["metrics"] else "" for m, _ in present)]
            for s in order]
    seeds = [r["n_seeds"] for s in systems.values() for r in s["metrics"].values() if r.get("n_seeds")]
    spread = (f"a trained system's number is the mean over its {max(seeds)} seed replicates, with a 95 % interval "
              "holding the seed and the clip variance; the others' intervals are over the test clips" if seeds else
              "95 % intervals over the test clips")
    return (f"Scores under recipe `{results['recipe']}` ({spread}; sorted by {present[0][1]}; "
            "every metric and interval is in the Scores section):\n\n"
            + md_table(["system", *[label for _, label in present]], rows) + "\n")


def _verdicts(sections: dict[str, Section]) -> tuple[str, dict[str, int]]:
    rows, counts = [], {}
    for key, section in sections.items():
        for verdict in section.results.get("verdicts", []) if isinstance(section.results, dict) else []:
            if not isinstance(verdict, dict) or "outcome" not in verdict:
                continue
            counts[verdict["outcome"]] = counts.get(verdict["outcome"], 0) + 1
            rows.append([verdict["claim"].split(" (here:")[0].rstrip("."), f"**{verdict['outcome']}**", key])
    if not rows:
        return "", counts
    tally = ", ".join(f"{n} {outcome}" for outcome, n in sorted(counts.items()))
    return (f"The paper's claims as this run tests them ({tally}; each with its effect, interval and reason in the "
            "section named):\n\n" + md_table(["claim", "this run", "section"], rows) + "\n"), counts


def _and(parts: list[str]) -> str:
    """'a, b and c'."""
    return " and ".join(", ".join(parts).rsplit(", ", 1))


def _limits(sections: dict[str, Section], skipped: list[str]) -> str:
    lines = [line.lstrip("- ") for line in skipped]
    scores = sections.get("scores")
    if scores is not None and scores.results.get("recipe", "").startswith("smoke"):
        pretrained = "; FD reads aisfx, a pretrained model, but on SynthCaps" if scores.results["recipe"] != "smoke@1" else ""
        lines.append("The tagger and CLAP evaluators were trained in this run on SynthCaps" + pretrained + ": the scores rank "
                     "this run's systems and are not comparable with published FAD / FD / KL / CLAP numbers.")
    if scores is not None:
        seeded = [s["over_seeds"] for s in scores.results.get("systems", {}).values() if "over_seeds" in s]
        if seeded:
            n = next(iter(seeded[0].values()))["n"]
            diagnose = sections.get("diagnose")
            codecs = len(diagnose.results.get("codec_seeds", [])) if diagnose is not None else 0
            sweep, ablations = sections.get("sweep"), sections.get("ablations")
            ran = sweep is not None and sweep.results.get("points")  # sweep.depths empty: no sweep, whatever else the stage ran
            parts = [("the sweep", len(sweep.results.get("seeds", [])) > 1) if ran else None,
                     ("the ablations", ablations.results.get("seeds", 1) > 1) if ablations is not None and ablations.results else None,
                     ("the RVQ diagnostics", codecs > 1) if diagnose is not None else None]
            present = [part for part in parts if part is not None]
            single = _and([part for part, replicated in present if not replicated])
            also = _and([part for part, _ in present])
            lines.append(f"Each trained system was trained, aligned and sampled from {n} seeds; the table's means and "
                         "intervals hold that spread" + (f", but {single} ran with one seed." if single else
                                                         f", and so do those of {also}." if also else "."))
        else:
            lines.append("Each trained system was trained once and sampled with one seed (eval.seeds = 1): the "
                         "intervals cover the choice of test clips, not retraining, which can move every number beyond them.")
    ranking = sections.get("ranking")
    further = ranking.results.get("recipes", [])[1:] if ranking is not None else []
    if further and scores is not None and scores.results.get("recipe", "").startswith("smoke"):
        lines.append(f"The ranking's further recipe{'s' if len(further) > 1 else ''} ({', '.join(f'`{r}`' for r in further)}) apply the "
                     "anchor toolkits' audio handling and metric options to this run's evaluators: the anchors' own "
                     "embedders (VGGish, PANNs, PaSST, LAION CLAP) need pretrained weights this run does not have.")
    for key, section in sections.items():
        for verdict in section.results.get("verdicts", []) if isinstance(section.results, dict) else []:
            if isinstance(verdict, dict) and verdict.get("effect") == "not measured":
                lines.append(f"Not measured ({key}): {verdict['claim']} {verdict['reason']}")
    return "What this run could not do:\n\n" + "\n".join(f"- {line}" for line in lines) + "\n" if lines else ""


def summary_markdown(sections: list[Section], skipped: list[str]) -> str:
    """## Summary: headline table, verdict table, limits; empty parts are left out."""
    by_key = {s.key: s for s in sections}
    parts = []
    if "scores" in by_key:
        parts.append(_scores(by_key["scores"].results))
    verdicts, _ = _verdicts(by_key)
    parts += [verdicts, _limits(by_key, skipped)]
    body = "\n".join(p for p in parts if p)
    return f"## Summary\n\n{body}" if body else ""
