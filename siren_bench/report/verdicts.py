"""Verdicts: one sentence per claim of the paper, saying whether this run's numbers agree with it.

A verdict compares an effect's 95 % interval with the threshold the claim implies (0 for a claim
of direction): "agrees" when the whole interval lies on the claim's side, "contradicts" when it
lies wholly on the other side, "inconclusive" when it straddles the threshold, with the reason.
The cards compute each effect from their own numbers; nothing here is written by hand.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from siren_bench import replicates

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


def unmeasured(claim: str, why: str) -> Verdict:
    """A claim this run cannot test, with the reason."""
    return Verdict(claim, "inconclusive", "not measured", why)


def render(verdicts: list[Verdict]) -> str:
    """The verdict sentences as a markdown list, under a fixed lead-in."""
    return "What these numbers say about the paper's claims:\n\n" + "\n".join(v.sentence() for v in verdicts) + "\n"
