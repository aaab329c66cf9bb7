"""A report section, and the registry its module fills.

Each section is built by a function of the run's artifacts (siren_bench/artifacts.py) and the
report's staging folder, registered where it is written:

    @report_section("siren", "Siren Stage 1", reads="siren", order=50)
    def siren_section(store: RunArtifacts, out: Path) -> Section: ...

The report stage renders the registered sections in `order`, skipping (with a line saying so)
each whose `reads` folder the run has not produced; `reads=None` means the whole run. Because a
builder sees only `RunArtifacts`, a unit test renders it from a folder of small fixture files.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from siren_bench.registry import REPORT_SECTIONS


@dataclass
class Section:
    """One report section: its numbers (into results.json), its markdown and its figures."""

    key: str
    results: dict
    markdown: str
    figures: list[Path] = field(default_factory=list)


@dataclass(frozen=True)
class SectionSpec:
    key: str          # the section's key in results.json
    title: str        # how the report names it, also when it is skipped
    reads: str | None  # the stage folder it needs (artifacts.STAGES); None: the whole run
    order: int        # where it stands in the report
    build: Callable   # (RunArtifacts, staging folder) -> Section


def report_section(key: str, title: str, reads: str | None, order: int):
    """Register the decorated builder as the report section `key`."""

    def add(build: Callable) -> Callable:
        REPORT_SECTIONS.add(key, SectionSpec(key, title, reads, order, build))
        return build

    return add


def ordered_sections() -> list[SectionSpec]:
    return sorted((REPORT_SECTIONS.get(name) for name in REPORT_SECTIONS.names()), key=lambda s: s.order)


def md_table(header: list[str], rows: list[list]) -> str:
    escape = lambda v: str(v).replace("|", "\\|").replace("\n", " ")  # noqa: E731
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(escape(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)
