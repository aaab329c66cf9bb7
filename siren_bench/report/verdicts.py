"""Verdicts: one sentence per claim of the paper, saying whether this run's numbers agree with it.

A verdict compares an effect's 95 % interval with the threshold the claim implies (0 for a claim
of direction): "agrees" when the whole interval lies on the claim's side, "contradicts" when it
lies wholly on the other side, "inconclusive" when it straddles the threshold, with the reason.
The cards compute each effect from their own numbers; nothing here is written by hand.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from siren_bench import replicates
from siren_bench.report.paired import difference_text, over_seeds_text, p_text

OUTCOMES = ("agrees", "contradicts", "inconclusive")


@dataclass(frozen=True)
class Verdict:
    claim: str  # the paper's claim, as this card tests it
    outcome: str  # one of OUTCOMES
    effect: str  # the effect with its interval, in words
    reason: str = ""  # why inconclusive, or a caveat that applies whatever the outcome

    def sentence(self) -> str:
        tail = f" {self.reason}" if self.reason else ""
        return f"- Paper: {self.claim} This run **{self.outcome}**: {self.effect}.{tail}"

    def as_dict(self) -> dict:
        return asdict(self)


def judge(claim: str, value: float, low: float, high: float, *, threshold: float = 0.0, below: bool = False,
          name: str = "effect", fmt: str = "{:.3g}", caveat: str = "") -> Verdict:
    """The verdict on a claim that the effect exceeds `threshold` (or lies below it, `below`),
    from the effect's value and 95 % interval."""
    if not low <= value <= high:
        raise ValueError(f"{name}: interval [{low}, {high}] does not contain its value {value}")
    effect = f"{name} {fmt.format(value)} [95 % CI {fmt.format(low)}, {fmt.format(high)}]"
    bound = "0" if threshold == 0 else fmt.format(threshold)
    if low > threshold:
        return Verdict(claim, "contradicts" if below else "agrees", effect, caveat)
    if high < threshold:
        return Verdict(claim, "agrees" if below else "contradicts", effect, caveat)
    reason = f"The interval contains {bound}, so the data cannot tell either way."
    return Verdict(claim, "inconclusive", effect, f"{reason} {caveat}".strip())


def seed_interval(values: list[float], ses: list[float]) -> tuple[float, float, float]:
    """(estimate, low, high) from seed replicates' estimates and standard errors: one replicate,
    value ± 1.96 se; several, their mean with the interval `replicates.combine` gives (the
    seed-to-seed variance plus the replicates' own)."""
    if len(values) == 1:
        return values[0], values[0] - 1.96 * ses[0], values[0] + 1.96 * ses[0]
    spread = replicates.combine(values, ses)
    return spread["mean"], spread["ci_low"], spread["ci_high"]


def judge_over_seeds(claim: str, values: list[float], ses: list[float], *, threshold: float = 0.0, below: bool = False,
                     name: str = "effect", fmt: str = "{:.3g}", caveat: str = "") -> Verdict:
    """The verdict from each seed replicate's estimate of an effect and its standard error, on
    `seed_interval`; with several replicates "agrees" or "contradicts" only when, besides, every
    seed's estimate lies on the same side of the threshold."""
    value, low, high = seed_interval(values, ses)
    if len(values) > 1:
        name = f"{name}, mean over {len(values)} seeds ({', '.join(fmt.format(v) for v in values)})"
    verdict = judge(claim, value, low, high, threshold=threshold, below=below, name=name, fmt=fmt, caveat=caveat)
    if verdict.outcome != "inconclusive" and len(values) > 1 and (len({v > threshold for v in values}) > 1 or threshold in values):
        bound = "0" if threshold == 0 else fmt.format(threshold)
        return Verdict(claim, "inconclusive", verdict.effect,
                       f"The seeds' estimates lie on both sides of {bound}, so the reading depends on the seed. {caveat}".strip())
    return verdict


def paired_verdict(claim: str, subject: str, measures: list[tuple[str, str, dict]], *, flip: bool = False,
                   note: str = "") -> Verdict:
    """One sentence on a claim that the first of two systems is better than the second, from their
    paired per-clip measures (label, which side is better, report.paired's difference `subject`
    names, first minus second); `flip`: the claim is that the first is the worse. A measure counts
    for a side when, over seed replicates (a measure's `over_seeds`), its sign holds under every
    seed and the interval combining seed and clip variance excludes zero; with one seed, when
    p (Holm) < 0.05. "agrees" when at least one measure counts for the claim and none against it,
    "contradicts" in the opposite case, "inconclusive" when none counts or they disagree. Over seed
    replicates a measure whose sign holds against the counting side under every seed also makes it
    inconclusive, significant or not: which of two steadily opposed measures crosses its threshold
    is what a re-run changes (measured: a seed-shifted re-run turned "agrees" into "contradicts" so)."""
    verdicts, steady, parts, n_seeds = [], [], [], 1  # steady: the side of each measure whose sign every seed shares
    for label, better, p in measures:
        if "over_seeds" in p:
            o = p["over_seeds"]
            n_seeds = o["n"]
            one_sign = all(v > 0 for v in o["values"]) or all(v < 0 for v in o["values"])
            counts, value = one_sign and (o["ci_low"] > 0 or o["ci_high"] < 0), o["mean"]
            if one_sign:
                steady.append(((value > 0) == (better == "higher")) != flip)
            parts.append(f"{label} {over_seeds_text(o)}")
        else:
            counts, value = p["p_holm"] < 0.05, p["value"]
            parts.append(f"{label} {difference_text(p)} (p Holm {p_text(p, 'p_holm')})")
        if counts:
            verdicts.append(((value > 0) == (better == "higher")) != flip)
    effect = f"{subject}: " + "; ".join(parts)
    if n_seeds > 1:
        caveat = (f"Over {n_seeds} seed replicates; a measure counts only when its sign holds under every seed and its "
                  "interval excludes zero.")
        none = "No paired measure keeps one sign under every seed with an interval that excludes zero."
    else:
        caveat = "One training seed per model: retraining may move these."
        none = "No paired measure differs at p (Holm) < 0.05."
    caveat += note
    if verdicts and all(verdicts) and all(steady):
        return Verdict(claim, "agrees", effect, caveat)
    if verdicts and not any(verdicts) and not any(steady):
        return Verdict(claim, "contradicts", effect, caveat)
    if not verdicts:
        reason = none
    elif all(verdicts) or not any(verdicts):
        reason = ("Another measure keeps the opposite sign under every seed, though its interval includes zero: the "
                  "measures disagree, and which of them reaches its threshold depends on the seeds.")
    else:
        reason = "The measures that count disagree in direction."
    return Verdict(claim, "inconclusive", effect, f"{reason} {caveat}")


def unmeasured(claim: str, why: str) -> Verdict:
    """A claim this run cannot test, with the reason."""
    return Verdict(claim, "inconclusive", "not measured", why)


def render(verdicts: list[Verdict]) -> str:
    """The verdict sentences as a markdown list, under a fixed lead-in."""
    return "What these numbers say about the paper's claims:\n\n" + "\n".join(v.sentence() for v in verdicts) + "\n"
