"""Verdicts: one sentence per claim of the paper, saying whether this run's numbers agree with it.

A verdict compares an effect's 95 % interval with the threshold the claim implies (0 for a claim
of direction): "agrees" when the whole interval lies on the claim's side, "contradicts" when it
lies wholly on the other side, "inconclusive" when it straddles the threshold, with the reason.
The cards compute each effect from their own numbers; nothing here is written by hand.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

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


def unmeasured(claim: str, why: str) -> Verdict:
    """A claim this run cannot test, with the reason."""
    return Verdict(claim, "inconclusive", "not measured", why)


def render(verdicts: list[Verdict]) -> str:
    """The verdict sentences as a markdown list, under a fixed lead-in."""
    return "What these numbers say about the paper's claims:\n\n" + "\n".join(v.sentence() for v in verdicts) + "\n"
