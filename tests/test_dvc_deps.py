"""dvc.yaml's code deps are each stage's import closure, so `dvc repro` never calls a stage whose
code changed up to date; and no stage imports another (they meet through siren_bench/artifacts.py)."""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from siren_bench import dvc_deps

ROOT = Path(__file__).resolve().parents[1]
DVC = Path(sys.executable).with_name("dvc")


def _copy_code(tmp_path: Path) -> Path:
    """The code, dvc.yaml and params of the repository in a scratch folder (nothing else)."""
    for name in dvc_deps.CODE_ROOTS:
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("dvc.yaml", "params.yaml", ".dvcignore"):
        shutil.copy(ROOT / name, tmp_path / name)
    return tmp_path


def test_every_stage_depends_on_exactly_its_import_closure():
    assert dvc_deps.check(ROOT) == []


def test_no_stage_module_imports_another_stage():
    offenders = []
    for path in sorted((ROOT / "siren_bench" / "stages").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] + [f"{node.module}.{a.name}" for a in node.names] if isinstance(node, ast.ImportFrom) else [])
            offenders += [f"{path.name}: {n}" for n in names if n.startswith("siren_bench.stages")]
    assert offenders == []


# Imports every stage module in a child of one process that already holds the third-party
# packages, and prints the repository files each child loaded: what the static read must cover.
_RUNTIME_PROBE = r"""
import importlib, json, os, sys
root, stages = sys.argv[1], sys.argv[2:]


def in_child(work):
    # work() runs in a forked child; its JSON result comes back through a pipe
    read, write = os.pipe()
    if os.fork() == 0:
        status = 1
        try:
            os.close(read)
            os.write(write, json.dumps(work()).encode())
            status = 0
        except BaseException:
            import traceback

            traceback.print_exc()
        finally:
            os._exit(status)  # never return into the parent's loop, whatever work() raised
    os.close(write)
    chunks = []
    while chunk := os.read(read, 1 << 16):
        chunks.append(chunk)
    if os.wait()[1] != 0:
        sys.exit("a child failed; its traceback is above")
    return json.loads(b"".join(chunks))


# First the third-party modules that any stage loads, imported once here and shared by every
# forked child, so that each child imports only the repository's own modules.
def import_everything():
    for stage in stages:
        importlib.import_module(f"siren_bench.stages.{stage}")
    return [n for n in sys.modules if n.split(".")[0] not in ("siren_bench", "baselines")]


def repository_files_of(stage):
    importlib.import_module("siren_bench.cli")
    importlib.import_module(f"siren_bench.stages.{stage}")
    files = sorted(os.path.relpath(m.__file__, root) for m in list(sys.modules.values())
                   if getattr(m, "__file__", None) and os.path.abspath(m.__file__).startswith(root + os.sep))
    return [f for f in files if f.split(os.sep)[0] in ("siren_bench", "baselines")]


for name in in_child(import_everything):
    try:
        importlib.import_module(name)
    except Exception:  # aliases and half-initialised entries of sys.modules: only a speed-up is lost
        pass
result = {stage: in_child(lambda: repository_files_of(stage)) for stage in stages}
print(json.dumps(result))
"""


def test_modules_a_stage_loads_at_run_time_are_all_declared():
    """Catches what the static read cannot see (an importlib call with a computed name)."""
    stages = {d.stage: d for d in dvc_deps.stage_deps(ROOT)}
    modules = {name: Path(dvc_deps.stage_module(name, "siren-bench " + name)).stem for name in stages}
    probe = subprocess.run([sys.executable, "-c", _RUNTIME_PROBE, str(ROOT), *sorted(set(modules.values()))],
                           capture_output=True, text=True, cwd=ROOT, check=True)
    loaded = json.loads(probe.stdout)
    for name, deps in stages.items():
        files = set(loaded[modules[name]])
        assert f"siren_bench/stages/{modules[name]}.py" in files
        assert files <= dvc_deps._expand(ROOT, deps.declared), (name, sorted(files - dvc_deps._expand(ROOT, deps.declared)))


def test_check_names_an_undeclared_import_and_a_needless_dep_and_write_fixes_both(tmp_path):
    repo = _copy_code(tmp_path)
    prepare = repo / "siren_bench" / "stages" / "prepare.py"
    prepare.write_text(prepare.read_text() + "\n\ndef _late():\n    from siren_bench.report import html  # noqa: F401\n")
    text = (repo / "dvc.yaml").read_text()
    (repo / "dvc.yaml").write_text(text.replace("      - siren_bench/stages/report.py\n",
                                                "      - siren_bench/stages/report.py\n      - siren_bench/models/align.py\n", 1))
    problems = dvc_deps.check(repo)
    assert "prepare: imports siren_bench/report/html.py, which no dep covers" in problems
    assert "report: depends on siren_bench/models/align.py, which it does not import" in problems
    assert dvc_deps.write(repo) == ["prepare", "report"]
    assert dvc_deps.check(repo) == []
    rewritten = (repo / "dvc.yaml").read_text()
    keep = lambda t: [line for line in t.splitlines() if not line.strip().startswith(("- siren_bench", "- baselines"))]
    assert keep(rewritten) == keep(text)  # comments, data deps, params and outs untouched


def test_a_folder_is_one_dep_only_when_the_stage_imports_all_of_it():
    deps = {d.stage: d for d in dvc_deps.stage_deps(ROOT)}
    assert "siren_bench/report" in deps["report"].wanted
    assert "siren_bench/report" not in deps["train_siren"].wanted
    assert not any(d.startswith("siren_bench/report") for d in deps["train_siren"].wanted)
    assert not any(d.startswith(("siren_bench/models", "baselines")) for d in deps["report"].wanted)


def _dvc(repo: Path, *args: str) -> str:
    done = subprocess.run([str(DVC), *args], cwd=repo, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.skipif(not DVC.exists(), reason="dvc is installed with the project (make test)")
def test_editing_a_file_in_a_stage_closure_makes_dvc_see_that_stage_changed(tmp_path):
    """DVC itself, on a scratch copy: commit train_siren and report with stand-in outputs, then
    edit a file only train_siren imports, and one only report imports."""
    repo = _copy_code(tmp_path)
    _dvc(repo, "init", "--no-scm", "-q")
    for folder in ("prepare", "tokenize", "codec", "diagnose", "evaluators", "siren", "siren_aligned", "baselines",
                   "generate", "score", "sweep"):
        (repo / "artifacts" / "smoke" / folder).mkdir(parents=True)
        (repo / "artifacts" / "smoke" / folder / "stand_in.json").write_text("{}")
    (repo / "reports" / "smoke").mkdir(parents=True)
    _dvc(repo, "commit", "-f", "-q", "train_siren", "report")
    assert json.loads(_dvc(repo, "status", "--json", "train_siren", "report")) == {}

    closures = {d.stage: d.closure for d in dvc_deps.stage_deps(repo)}
    model_file = "siren_bench/models/siren.py"
    report_file = "siren_bench/report/siren_card.py"
    assert model_file in closures["train_siren"] and model_file not in closures["report"]
    assert report_file in closures["report"] and report_file not in closures["train_siren"]

    (repo / model_file).write_text((repo / model_file).read_text() + "\n# edited\n")
    status = json.loads(_dvc(repo, "status", "--json", "train_siren", "report"))
    assert set(status) == {"train_siren"}
    assert {"changed deps": {model_file: "modified"}} in status["train_siren"]

    (repo / model_file).write_text((repo / model_file).read_text().removesuffix("\n# edited\n"))
    (repo / report_file).write_text((repo / report_file).read_text() + "\n# edited\n")
    status = json.loads(_dvc(repo, "status", "--json", "train_siren", "report"))
    assert set(status) == {"report"}
    assert {"changed deps": {"siren_bench/report": "modified"}} in status["report"]
