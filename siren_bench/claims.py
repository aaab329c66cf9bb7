"""Published numbers that siren-bench reproduces against, each with its source and protocol.

A claim is comparable with a reproduced number only when both come from the same evaluation
protocol: the same AudioCaps test list (each list's SHA-256 is pinned in siren_bench/data/audiocaps.py)
scored with the same metric recipe.
Where a source does not say which list or toolkit it used, the claim is shown but never marked
comparable. Values are stored in the harness's units (CLAP as a raw cosine; a source printing
cosine x 100 is divided by 100 and says so). Each claim names the harness system in the same
role (Siren with its RL stage -> `siren_aligned`; a diffusion model -> `latent_diffusion`; an
earlier single-transformer LM -> `delay_lm`): the delta compares roles, not the same weights.

Like the recipes, this registry is versioned: edit a claim only by adding a new version of it.
"""

from __future__ import annotations

from dataclasses import dataclass

CLAIMS_VERSION = 2  # 2: sources cite public documents only (1 pointed at a notes file users do not have)

# Each claim cites its public source, so a reader of the report can look it up; nothing here points
# at a file outside this repository.
DESIGN_BRIEF = "siren-bench design brief: the project's founding summary of the paper's headline (not a publication)"
SIREN_README = "official Siren README quoting its Table 1, AudioCaps test (github.com/wjc2830/Siren)"
AUDIOLDM_TABLE = "AudioLDM paper's AudioCaps rows, scored with audioldm_eval (16 kHz, 964 clips)"
TANGO_TABLE = "Tango paper, AudioCaps (its 886-clip protocol)"
TANGO2_TABLE = "Tango 2 paper's table (CLAP 630k-audioset-best)"
TANGO_RERUN = "a user's re-run of the released Tango checkpoint on the Tango protocol"


@dataclass(frozen=True)
class Claim:
    label: str  # the published system, as its source names it
    role: str  # the harness system in the same role
    metric: str  # a metric of siren_bench.registry.METRICS
    value: float  # in the harness's units
    source: str
    protocol: str | None  # AudioCaps list (siren_bench.data.audiocaps.PROTOCOLS), None: not stated
    recipe: str | None  # the harness recipe that computes the metric as the source did, None: unknown
    note: str = ""


def _rows(label: str, role: str, source: str, protocol: str | None, recipe: str | None, note: str = "", **metrics) -> list[Claim]:
    return [Claim(label, role, metric, value, source, protocol, recipe, note) for metric, value in metrics.items()]


_X100 = "published as cosine x 100"
CLAIMS: tuple[Claim, ...] = tuple(
    _rows("Siren", "siren_aligned", DESIGN_BRIEF, None, None, fad=0.92)
    + _rows("best diffusion baseline", "latent_diffusion", DESIGN_BRIEF, None, None, fad=1.22)
    + _rows("best earlier LM", "delay_lm", DESIGN_BRIEF, None, None, fad=2.20)
    + _rows("Siren 1.6B", "siren_aligned", SIREN_README, None, None, "needs the unreleased RL stage; CLAP " + _X100,
            fad=1.35, fd=10.65, **{"is": 12.85}, kl=1.33, clap=0.2418)
    + _rows("Siren 3.1B", "siren_aligned", SIREN_README, None, None, "needs the unreleased RL stage; CLAP " + _X100,
            fad=1.28, fd=10.35, **{"is": 13.93}, kl=1.36, clap=0.2564)
    + _rows("AudioLDM-S", "latent_diffusion", AUDIOLDM_TABLE, "audioldm_964", "audioldm_eval", fd=29.48, kl=1.97, fad=2.43)
    + _rows("AudioLDM-L", "latent_diffusion", AUDIOLDM_TABLE, "audioldm_964", "audioldm_eval", fd=27.12, kl=1.86, fad=2.08)
    + _rows("AudioLDM-L-Full-FT", "latent_diffusion", AUDIOLDM_TABLE, "audioldm_964", "audioldm_eval", fd=23.31, kl=1.59,
            fad=1.96)
    + _rows("AudioGen (its paper)", "delay_lm", AUDIOLDM_TABLE, None, None, "AudioGen's own evaluation", kl=2.09, fad=3.13)
    + _rows("Tango", "latent_diffusion", TANGO_TABLE, "tango_886", "audioldm_eval", fd=24.52, kl=1.37, fad=1.59)
    + _rows("AudioLDM 2-Full-Large", "latent_diffusion", TANGO2_TABLE, "tango_886", None, fad=2.11, kl=1.54, **{"is": 8.29}, clap=0.44)
    + _rows("Tango-full-FT", "latent_diffusion", TANGO2_TABLE, "tango_886", None, fad=2.51, kl=1.15, **{"is": 7.87}, clap=0.54)
    + _rows("Tango 2", "latent_diffusion", TANGO2_TABLE, "tango_886", None, fad=2.69, kl=1.12, **{"is": 9.09}, clap=0.57)
    + _rows("Tango (released checkpoint, re-run)", "latent_diffusion", TANGO_RERUN, "tango_886", "audioldm_eval",
            "a reproduction, not the paper's number", fd=28.08, fad=2.24, kl=2.10)
)


def comparability(claim: Claim, dataset: dict, recipe_id: str) -> tuple[bool, str]:
    """(comparable, why not) for a claim against a run on `dataset` (prepare's dataset.json)
    scored with recipe `recipe_id` ("name@version")."""
    if dataset.get("name") != "audiocaps":
        return False, f"this run is on {dataset.get('name')}, not AudioCaps"
    if claim.protocol is None:
        return False, "the source does not state its test list"
    protocol = dataset.get("splits", {}).get("test", {}).get("protocol")  # prepare's record of the test list
    if protocol != claim.protocol:
        return False, f"this run's list is {protocol}, the claim's {claim.protocol}"
    if claim.recipe is None:
        return False, "the source's metric toolkit has no harness recipe"
    if recipe_id.split("@")[0] != claim.recipe:
        return False, f"this run's recipe is {recipe_id}, the claim's {claim.recipe}"
    return True, ""
