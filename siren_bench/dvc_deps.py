"""dvc.yaml's code dependencies, derived from what each stage's command actually imports.

A stage whose code changed must re-run, or `dvc repro` calls a stale number current. Hand-kept
dep lists drift (a new import is never added), so the code deps of every stage are computed
here: the import closure, within this repository's packages (siren_bench/, baselines/), of the
module the stage's command runs. `siren-bench dvc-deps --check` says where dvc.yaml and the
closures differ (a file missing, or a dep the stage does not import, which re-runs it for
nothing); `--write` rewrites the code deps in place and leaves every other line (comments, data
deps, params, outs) as it is.

How the closure is read, and why:
- statically (`ast`), every `import` and `from ... import` anywhere in a module, inside functions
  too: a lazy import still runs when the stage calls that function;
- `from pkg import name` adds pkg/name.py when that is a module, and every package's
  __init__.py on the way, since importing a submodule executes them;
- a call `import_package("pkg")` (siren_bench/registry.py: a registry found by folder) adds
  every module of pkg, as it imports them all;
- the command line module (siren_bench/cli.py) counts with its module-level imports only: the
  stage command dispatches to siren_bench/stages/<stage>.py, and cli's lazily imported handlers
  belong to other sub-commands;
- a folder of the closure stands as one dep when every file DVC would hash in it is in the
  closure, so dvc.yaml stays short; otherwise each file is listed.
A runtime test (tests/test_dvc_deps.py) imports each stage in a fresh process and checks that
every repository module it loaded is covered, which catches imports the static read cannot see.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

# Where the project's own code lives; imports of anything else are third-party or stdlib.
CODE_ROOTS = ("siren_bench", "baselines")
CLI_MODULE = "siren_bench/cli.py"
STAGE_COMMAND = re.compile(r"^siren-bench\s+([a-z_]+)\b")


class DvcDepsError(ValueError):
    """dvc.yaml names a stage command the closure cannot be computed for."""


@dataclass(frozen=True)
class StageDeps:
    stage: str
    closure: frozenset[str]      # every repository file the command imports, repo-relative
    declared: tuple[str, ...]    # the code deps dvc.yaml lists now
    wanted: tuple[str, ...]      # the code deps it should list (folders collapsed)

    def missing(self, root: Path) -> list[str]:
        """Closure files no declared dep covers: editing them would not re-run the stage."""
        covered = _expand(root, self.declared)
        return sorted(self.closure - covered)

    def extra(self, root: Path) -> list[str]:
        """Declared files outside the closure: editing them re-runs the stage for nothing."""
        return sorted(_expand(root, self.declared) - self.closure)


def _module_path(root: Path, dotted: str) -> str | None:
    """Repo-relative path of a module or package named `dotted`, if it is the project's."""
    if dotted.split(".")[0] not in CODE_ROOTS:
        return None
    base = Path(*dotted.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if (root / candidate).is_file():
            return candidate.as_posix()
    return None


def _packages_of(path: str) -> list[str]:
    """The __init__.py of every package that importing `path` executes."""
    parts = Path(path).parts[:-1]
    return [Path(*parts[: i + 1], "__init__.py").as_posix() for i in range(len(parts))]


def _imports(root: Path, path: str, module_level_only: bool = False) -> set[str]:
    """Repo-relative files `path` imports (see the module docstring for what counts)."""
    source = (root / path).read_text()
    tree = ast.parse(source, filename=str(root / path))
    nodes = tree.body if module_level_only else list(ast.walk(tree))
    package = Path(path).parent.parts
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Call) and _called_name(node) == "import_package" and node.args \
                and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
            found |= _package_modules(root, node.args[0].value)
            continue
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = package[: len(package) - (node.level - 1)]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            else:
                base = node.module or ""
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            resolved = _module_path(root, name)
            if resolved:
                found.add(resolved)
    return found


def _called_name(call: ast.Call) -> str | None:
    func = call.func
    return func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None


def _package_modules(root: Path, package: str) -> set[str]:
    """What `import_package(package)` imports: each module of the package (a sub-package by its __init__.py)."""
    folder = root / Path(*package.split("."))
    if package.split(".")[0] not in CODE_ROOTS or not (folder / "__init__.py").is_file():
        return set()
    found = {p.relative_to(root).as_posix() for p in folder.glob("*.py")}
    found |= {p.relative_to(root).as_posix() for p in folder.glob("*/__init__.py")}
    return found


def import_closure(root: Path, entry: str) -> frozenset[str]:
    """Every repository file a command entering at `entry` (after cli.py) imports."""
    seen: set[str] = set()
    todo = [entry, *_imports(root, CLI_MODULE, module_level_only=True), CLI_MODULE]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        todo += _packages_of(path)
        if path != CLI_MODULE:
            todo += _imports(root, path)
    return frozenset(seen)


def _hashed_files(root: Path, folder: str) -> set[str]:
    """The files DVC hashes for a folder dep (bytecode caches are in .dvcignore)."""
    return {p.relative_to(root).as_posix() for p in (root / folder).rglob("*")
            if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"}


def _expand(root: Path, deps) -> set[str]:
    files: set[str] = set()
    for dep in deps:
        files |= _hashed_files(root, dep) if (root / dep).is_dir() else {dep}
    return files


def collapse(root: Path, closure: frozenset[str]) -> tuple[str, ...]:
    """The closure as dvc deps: a whole folder where all its files are in the closure."""
    deps: list[str] = []
    covered: set[str] = set()
    folders = sorted({Path(*Path(f).parts[: i + 1]).as_posix() for f in closure for i in range(len(Path(f).parts) - 1)},
                     key=lambda f: (f.count("/"), f))
    for folder in folders:
        if any(folder.startswith(d + "/") for d in deps):
            continue
        files = _hashed_files(root, folder)
        if files and files <= closure:
            deps.append(folder)
            covered |= files
    deps += [f for f in closure if f not in covered]
    return tuple(sorted(deps))


def _is_code(dep: str) -> bool:
    return dep.split("/")[0] in CODE_ROOTS


def stage_module(stage: str, command: str) -> str:
    """siren_bench/stages/<name>.py for a `siren-bench <name> ...` command."""
    match = STAGE_COMMAND.match(command.strip())
    if not match:
        raise DvcDepsError(f"dvc.yaml: stage {stage}: command {command!r} is not `siren-bench <stage> ...`")
    return f"siren_bench/stages/{match.group(1)}.py"


def _load(dvc_yaml: Path):
    from ruamel.yaml import YAML

    # ruamel's round-trip mode: comments and layout survive --write, and, like safe loading, it
    # builds only plain mappings, sequences and scalars, never arbitrary Python objects
    round_trip = YAML(typ="rt")
    round_trip.width = 4096
    round_trip.indent(mapping=2, sequence=4, offset=2)
    return round_trip, round_trip.load(dvc_yaml.read_text())


def stage_deps(root: Path) -> list[StageDeps]:
    """Every stage of root/dvc.yaml with its declared and computed code deps."""
    _, document = _load(root / "dvc.yaml")
    result = []
    for name, stage in document["stages"].items():
        entry = stage_module(name, stage["cmd"])
        if not (root / entry).is_file():
            raise DvcDepsError(f"dvc.yaml: stage {name}: {entry} does not exist")
        closure = import_closure(root, entry)
        declared = tuple(str(d) for d in stage.get("deps", []) if _is_code(str(d)))
        result.append(StageDeps(name, closure, declared, collapse(root, closure)))
    return result


def check(root: Path) -> list[str]:
    """One line per problem; empty when every stage's code deps equal its closure."""
    problems = []
    for deps in stage_deps(root):
        for path in deps.missing(root):
            problems.append(f"{deps.stage}: imports {path}, which no dep covers")
        for path in deps.extra(root):
            problems.append(f"{deps.stage}: depends on {path}, which it does not import")
    return problems


def write(root: Path) -> list[str]:
    """Rewrite each stage's code deps as its collapsed closure; returns the stages changed."""
    round_trip, document = _load(root / "dvc.yaml")
    wanted = {d.stage: d.wanted for d in stage_deps(root)}
    changed = []
    for name, stage in document["stages"].items():
        deps = stage.get("deps", [])
        current = [str(d) for d in deps if _is_code(str(d))]
        if current == list(wanted[name]):
            continue
        for index in reversed(range(len(deps))):  # item by item, so data deps keep their place and comments
            if _is_code(str(deps[index])):
                del deps[index]
        deps.extend(wanted[name])
        changed.append(name)
    if changed:
        from siren_bench.io import atomic_path

        with atomic_path(root / "dvc.yaml") as tmp, open(tmp, "w") as handle:
            round_trip.dump(document, handle)
    return changed
