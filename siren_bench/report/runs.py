"""Versioned report runs: every `report` run is kept, and the latest is also at the top level.

    reports/<profile>/
        report.md, report.html, results.json, *.csv, figures/, provenance.json, run.json
                              the latest run (the paths README and tests name)
        runs/<run_id>/        every run ever published, the same files, never overwritten
        index.md, index.json  every run, newest first

A run is built whole in a staging folder that becomes runs/<run_id>/ in one rename, then its
files replace the top-level ones one by one (each atomically) and top-level files it did not
write are removed, so the top level never mixes two runs for longer than the copy. The index
is rebuilt from runs/ each time, so it cannot disagree with the folders.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from siren_bench.io import atomic_directory, atomic_path, write_json_atomic, write_text_atomic
from siren_bench.report import html
from siren_bench.report.section import md_table

RUNS_DIR = "runs"
RUN_RECORD = "run.json"
INDEX_FILES = ("index.md", "index.json")
REPORT_MD, REPORT_HTML = "report.md", "report.html"
TIME_FORMAT = "%Y%m%dT%H%M%SZ"
COMMIT_CHARS = 12
# (system, metric) pairs whose value the index shows for each run, where results.json has them
HEADLINE = (("siren", "fad"), ("siren", "clap"))

# a markdown link target that leaves the report folder, e.g. ](../../artifacts/x.wav)
_OUTWARD_LINK = re.compile(r"\]\((\.\./[^)\s]*)\)")


class RunExistsError(FileExistsError):
    """A run id that runs/ already holds: runs are archived, never overwritten."""


def format_run_id(created: datetime, git: dict[str, Any]) -> str:
    """UTC time, short commit and a dirty mark: `20250101T120000Z-0123456789ab[-dirty]`."""
    commit = git["commit"][:COMMIT_CHARS] if git.get("commit") else "nogit"
    return f"{created.astimezone(timezone.utc):{TIME_FORMAT}}-{commit}" + ("-dirty" if git.get("dirty") else "")


def new_run_id(profile_dir: Path, git: dict[str, Any]) -> str:
    """An id for a run starting now that runs/ does not hold yet.

    Ids have one-second resolution, so a run started in the same second as the previous one (a
    script or test running the report twice) waits for the next second instead of failing.
    """
    while True:
        run_id = format_run_id(datetime.now(timezone.utc), git)
        if not (Path(profile_dir) / RUNS_DIR / run_id).exists():
            return run_id
        time.sleep(1 - time.time() % 1)


def _refuse_existing(run_dir: Path) -> None:
    if run_dir.exists():
        raise RunExistsError(f"{run_dir}: a report run with this id already exists; runs are never overwritten")


@contextlib.contextmanager
def build_run(profile_dir: Path, run_id: str, git: dict[str, Any]) -> Iterator[Path]:
    """Yield a staging folder for the run's files; on success it becomes runs/<run_id>/, with
    run.json (id, time, commit) added. Refuses a run id that runs/ already holds."""
    profile_dir = Path(profile_dir)
    run_dir = profile_dir / RUNS_DIR / run_id
    _refuse_existing(run_dir)
    created = datetime.strptime(run_id.split("-")[0], TIME_FORMAT).replace(tzinfo=timezone.utc)
    with atomic_directory(run_dir) as staging:
        yield staging
        write_json_atomic(staging / RUN_RECORD, {
            "run_id": run_id, "created": created.isoformat().replace("+00:00", "Z"), "profile": profile_dir.name,
            "commit": git.get("commit"), "dirty": git.get("dirty"),
        })
        _refuse_existing(run_dir)  # another process published the same id while this one built


def rebase_links(markdown: str, from_dir: Path, to_dir: Path) -> str:
    """Links that leave the report folder (../...), rewritten for a copy of it in `to_dir`."""

    def rebase(match: re.Match) -> str:
        target = os.path.abspath(os.path.join(from_dir, match.group(1)))
        return "](" + os.path.relpath(target, to_dir).replace(os.sep, "/") + ")"

    return _OUTWARD_LINK.sub(rebase, markdown)


def publish_run(profile_dir: Path, run_id: str) -> None:
    """Make runs/<run_id>/ the latest: copy its files to the top level, remove top-level files it
    does not have (never runs/ or the index), and rebuild the index.

    The top-level report.md gets its outward links (audio under artifacts/) rebased, and
    report.html is rendered again from it, since the top level is two folders higher.
    """
    profile_dir = Path(profile_dir)
    run_dir = profile_dir / RUNS_DIR / run_id
    if not (run_dir / RUN_RECORD).is_file():
        raise FileNotFoundError(f"{run_dir}: not a finished report run (no {RUN_RECORD})")
    rewritten = {}
    if (run_dir / REPORT_MD).is_file():
        rewritten[REPORT_MD] = rebase_links((run_dir / REPORT_MD).read_text(encoding="utf-8"), run_dir, profile_dir)
    published = set()
    for entry in sorted(run_dir.iterdir()):
        target = profile_dir / entry.name
        published.add(entry.name)
        if entry.name in rewritten:
            write_text_atomic(target, rewritten[entry.name])
        elif entry.name == REPORT_HTML and REPORT_MD in rewritten:
            continue  # rendered below from the rebased markdown, once the figures it embeds are copied
        elif entry.is_dir():
            with atomic_directory(target) as staging:
                shutil.copytree(entry, staging, dirs_exist_ok=True)
        else:
            with atomic_path(target) as tmp:
                shutil.copyfile(entry, tmp)
    if REPORT_HTML in published and REPORT_MD in rewritten:  # every path in it is now relative to the top level
        write_text_atomic(profile_dir / REPORT_HTML, html.render(rewritten[REPORT_MD], profile_dir))
    keep = published | {RUNS_DIR, *INDEX_FILES}
    for entry in sorted(profile_dir.iterdir()):
        if entry.name in keep or entry.name.startswith("."):  # dot names: another writer's temporary files
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    write_index(profile_dir)


def _headline(results_path: Path) -> dict[str, float]:
    if not results_path.is_file():
        return {}
    systems = json.loads(results_path.read_text())["sections"].get("scores", {}).get("systems", {})
    return {f"{system}_{metric}": systems[system]["metrics"][metric]["value"]
            for system, metric in HEADLINE if metric in systems.get(system, {}).get("metrics", {})}


def list_runs(profile_dir: Path) -> list[dict[str, Any]]:
    """Every published run of a profile, newest first, with links and headline numbers."""
    runs_dir = Path(profile_dir) / RUNS_DIR
    runs = []
    for run_dir in sorted(runs_dir.iterdir()) if runs_dir.is_dir() else []:
        if run_dir.name.startswith("."):  # a run still being built
            continue
        record_path = run_dir / RUN_RECORD
        if not record_path.is_file():
            raise FileNotFoundError(f"{run_dir}: a folder in {runs_dir} without {RUN_RECORD}; not a report run")
        record = json.loads(record_path.read_text())
        links = {f"report_{name.split('.')[1]}": f"{RUNS_DIR}/{run_dir.name}/{name}"
                 for name in (REPORT_MD, REPORT_HTML) if (run_dir / name).is_file()}
        runs.append(record | links | {"headline": _headline(run_dir / "results.json")})
    return sorted(runs, key=lambda r: (r["created"], r["run_id"]), reverse=True)


def write_index(profile_dir: Path) -> None:
    """index.json and index.md: every run of runs/, newest first."""
    profile_dir = Path(profile_dir)
    runs = list_runs(profile_dir)
    write_json_atomic(profile_dir / "index.json", {"profile": profile_dir.name, "runs": runs})
    headline = [f"{system}_{metric}" for system, metric in HEADLINE]
    rows = []
    for r in runs:
        links = " / ".join(f"[{kind}]({r[f'report_{kind}']})" for kind in ("md", "html") if f"report_{kind}" in r)
        numbers = [f"{r['headline'][key]:.4g}" if key in r["headline"] else "" for key in headline]
        dirty = {True: "yes", False: "no", None: "unknown"}[r["dirty"]]
        rows.append([f"`{r['run_id']}`", r["created"], f"`{r['commit'][:COMMIT_CHARS]}`" if r["commit"] else "none", dirty, *numbers, links])
    table = md_table(["run", "created (UTC)", "commit", "dirty", *(k.replace("_", " ") for k in headline), "report"], rows)
    write_text_atomic(profile_dir / "index.md", f"""# siren-bench report runs: profile `{profile_dir.name}`

Every run of `siren-bench report`, newest first; the newest is also at the top of this folder.
Rebuilt from `{RUNS_DIR}/` by each run.

{table}
""")
