"""Report section: the environment and provenance of every stage behind the report.

Read from each stage folder's provenance.json under artifacts/<profile>/: which commit, package
versions, device, config, seeds and input hashes made it, and how long it ran. Stages made by
different commits or machines are flagged, since their numbers may not belong together.

Machine details and timings differ between two runs on the same inputs, so they go to the
markdown only; the section's results (into results.json) keep the deterministic part: recipe,
seeds and config hashes.
"""

from __future__ import annotations

import json
from pathlib import Path

from siren_bench.artifacts import PROVENANCE_NAME, RunArtifacts
from siren_bench.report.section import Section, md_table, report_section

HASH_CHARS = 16


def stage_records(profile_dir: Path) -> dict[str, dict]:
    """Stage folder name -> its provenance record, for every finished stage folder."""
    records = {}
    for path in sorted(profile_dir.glob(f"*/{PROVENANCE_NAME}")):
        if path.parent.name.startswith("."):  # a stage's staging folder, still being written
            continue
        try:
            records[path.parent.name] = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not a valid provenance record ({exc})") from exc
    return records


def _environment(record: dict) -> dict[str, str]:
    """What made one stage output, as item -> printable value."""
    git, device = record["git"], record["device"]
    items = {
        "git commit": git["commit"] or f"none ({git.get('error', 'no git')})",
        "work tree dirty": {True: "yes", False: "no", None: "unknown"}[git["dirty"]],
        "siren_bench": record["siren_bench_version"],
        "python": device["python"],
        "platform": device["platform"],
        "device requested": device["requested"],
        "CUDA": ", ".join(device.get("cuda_devices", [])) or ("available" if device["cuda_available"] else "none"),
        "CPU threads": str(device["cpu_threads"]),
    }
    items |= {name: version or "not installed" for name, version in record["packages"].items()}
    items["differs from requirements.lock"] = _lock_text(record.get("lock"))
    return items


def _lock_text(lock: dict | None) -> str:
    """The packages a stage ran with that the lock pins otherwise, as one printable value."""
    if lock is None:
        return "not recorded"
    if lock["file"] is None:
        return "no lock file beside this installation"
    if not lock["differs"]:
        return f"none of {lock['packages']} pinned packages (lock {lock['sha256']})"
    return "; ".join(f"{name} {v['installed'] or 'missing'} (lock {v['locked']})" for name, v in sorted(lock["differs"].items()))


def _recipes(store: RunArtifacts, records: dict[str, dict]) -> dict:
    """The recipe named in each stage's eval config, and the resolved one the score stage used."""
    recipes = {"configured": {stage: r["config"]["eval"]["recipe"] for stage, r in records.items()
                              if "recipe" in r["config"].get("eval", {})}}
    if "score" in records and store.exists("score", "summary"):
        scored = store.json("score", "summary")
        recipes["scored"] = {"id": scored["recipe"], "sha256": scored["recipe_sha256"]}
    return recipes


def _seeds_text(seeds: dict) -> str:
    return "; ".join(f"{name} = {value}" for name, value in seeds.items()) or "none recorded"


def _environment_rows(records: dict[str, dict]) -> tuple[list[list], list[str]]:
    """One row per (item, value) with the stages that had it; and the items that differ."""
    environments = {stage: _environment(r) for stage, r in records.items()}
    rows, varying = [], []
    for item in dict.fromkeys(item for env in environments.values() for item in env):
        values: dict[str, list[str]] = {}
        for stage, env in environments.items():
            values.setdefault(env.get(item, "not recorded"), []).append(stage)
        if len(values) > 1:
            varying.append(item)
        rows += [[item, f"`{value}`", "all" if len(values) == 1 else ", ".join(stages)] for value, stages in values.items()]
    return rows, varying


def _warnings(records: dict[str, dict], varying: list[str]) -> list[str]:
    commits = {r["git"]["commit"] for r in records.values()}
    warnings = []
    if len(commits) > 1:
        warnings.append(f"**The stages were made by {len(commits)} different commits**: their numbers may come from different code.")
    if any(r["git"]["dirty"] for r in records.values()):
        warnings.append("**Some stages ran on a dirty work tree**: their code is not exactly any commit.")
    if varying:
        warnings.append("Differs between stages: " + ", ".join(varying) + " (see the table).")
    return warnings or ["All stages: one commit, one machine setup."]


def _total_time(records: dict[str, dict]) -> str:
    timed = {stage: r["wall_seconds"] for stage, r in records.items() if r.get("wall_seconds") is not None}
    untimed = [stage for stage in records if stage not in timed]
    if not timed:
        return "not recorded (records written before stages recorded their wall time)"
    return f"{sum(timed.values()):.1f} s" + (f" (without {', '.join(untimed)}: no time recorded)" if untimed else "")


@report_section("environment", "Environment and provenance", reads=None, order=150)
def environment_section(store: RunArtifacts, out: Path) -> Section:
    profile_dir = store.root
    records = stage_records(profile_dir)
    if not records:
        return Section("environment", {}, f"## Environment and provenance\n\nNo stage in `{profile_dir}` has a provenance record.\n")
    recipes = _recipes(store, records)
    results = {
        "recipes": recipes,
        "stages": {stage: {"stage": r["stage"], "config_sha256": r["config_sha256"], "seeds": r["seeds"]}
                   for stage, r in records.items()},
    }
    env_rows, varying = _environment_rows(records)
    warnings = "\n".join(f"- {w}" for w in _warnings(records, varying))
    stage_rows = [[stage, r["stage"], f"`{r['config_sha256'][:HASH_CHARS]}`", _seeds_text(r["seeds"]),
                   # absent from records written before stages recorded it
                   f"{r['wall_seconds']:.1f}" if r.get("wall_seconds") is not None else "not recorded"]
                  for stage, r in records.items()]
    input_rows = [[stage, name, f"`{entry['path']}`", f"`{entry['sha256'][:HASH_CHARS]}`"]
                  for stage, r in records.items() for name, entry in r["inputs"].items()]
    inputs = md_table(["stage folder", "input", "path", "hash"], input_rows) if input_rows else "No stage recorded inputs."
    recipe_lines = [f"- `{stage}` config: `{name}`" for stage, name in recipes["configured"].items()]
    if "scored" in recipes:
        recipe_lines.insert(0, f"- scored with `{recipes['scored']['id']}` (SHA-256 `{recipes['scored']['sha256'][:HASH_CHARS]}...`)")
    recipe_text = "\n".join(recipe_lines) or "No stage names a recipe."
    markdown = f"""## Environment and provenance

What made each stage output, from `{profile_dir}/<stage>/{PROVENANCE_NAME}` (full records there;
the report's own record is `provenance.json` beside this report). Hashes are SHA-256, first
{HASH_CHARS} hex digits.

{warnings}

### Code and machine

{md_table(["item", "value", "stages"], env_rows)}

### Stages: config, seeds and time

Wall time is each stage process's run time. Total: {_total_time(records)}.

{md_table(["stage folder", "stage", "config hash", "seeds", "wall time (s)"], stage_rows)}

### Inputs

Content hashes of each stage's inputs (codec weights, evaluator weights, checkpoints, codes, manifests).

{inputs}

### Recipe

{recipe_text}
"""
    return Section("environment", results, markdown)
