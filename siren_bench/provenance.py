"""Provenance records written beside every stage output.

A record answers a reviewer's questions about an output: which code (git commit, dirty flag,
package versions), which config (the resolved section and its hash), which inputs (content
hashes), which seeds and which device made it, and how long the stage took.
"""

from __future__ import annotations

import platform
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from siren_bench import __version__
from siren_bench.artifacts import PROVENANCE_NAME, SCHEMA_VERSIONS
from siren_bench.config import config_hash, to_plain
from siren_bench.io import sha256_path, write_json_atomic

# Each pipeline stage runs in its own process (`siren-bench <stage>`) and imports this module
# before it starts work, so the time since import when a record is built is the stage's wall
# time. Several stages run in one process (tests) each get the time since the first import.
_IMPORTED_AT = time.monotonic()
TRACKED_PACKAGES = (
    "torch", "numpy", "scipy", "soundfile", "soxr", "pandas", "matplotlib",
    "omegaconf", "hydra-core", "dvc", "transformers",
)


# Pipeline products, not inputs: DVC rewrites dvc.lock and clears stage outputs while it runs,
# so they never make the code "dirty".
PIPELINE_PRODUCTS = ("dvc.lock", "reports/")


def git_state(cwd: str | Path = ".") -> dict[str, Any]:
    """Commit and dirty flag of the working tree; explicit nulls (with the reason) outside git.

    `dirty` is true when tracked code or config differ from the commit; `dirty_paths` lists
    every modified tracked path, pipeline products included.
    """
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        reason = exc.stderr.strip() if isinstance(exc, subprocess.CalledProcessError) else str(exc)
        return {"commit": None, "dirty": None, "error": reason or "not a git repository"}
    dirty_paths = [line[3:] for line in status.splitlines() if line.strip()]
    dirty = any(not path.startswith(PIPELINE_PRODUCTS) for path in dirty_paths)
    return {"commit": commit, "dirty": dirty, "dirty_paths": dirty_paths[:50], "dirty_ignores": list(PIPELINE_PRODUCTS)}


def package_versions(names: tuple[str, ...] = TRACKED_PACKAGES) -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


LOCK_FILE = Path(__file__).resolve().parents[1] / "requirements.lock"


def lock_differences(lock_file: Path = LOCK_FILE) -> dict[str, Any]:
    """Every package pinned in the lock (`make lock`, pip-compile) whose installed version is
    another, or which is missing: {"file", "sha256", "packages": how many are pinned, "differs":
    {name: {"locked", "installed"}}}. A copy installed outside the repository has no lock file:
    {"file": None}."""
    if not lock_file.is_file():
        return {"file": None}
    pins = {}
    for line in lock_file.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line and not line.startswith("-"):
            name, version = line.split("==", 1)
            pins[name.strip()] = version.strip()
    differs = {}
    for name, locked in pins.items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            installed = None
        if installed != locked:
            differs[name] = {"locked": locked, "installed": installed}
    return {"file": lock_file.name, "sha256": sha256_path(lock_file)[:16], "packages": len(pins), "differs": differs}


def cpu_model() -> str:
    """The CPU's model name (Linux: /proc/cpuinfo), else what `platform` knows: float results of
    trained models differ across CPUs, so every output says which one made it."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_info(requested: str = "cpu") -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {
        "requested": requested,
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "cpu_model": cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),  # the vector ISA torch's kernels use (AVX2, AVX512, ...)
        "cpu_threads": torch.get_num_threads(),
        "cuda_available": torch.cuda.is_available(),
    }
    if torch.cuda.is_available():
        info["cuda_devices"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return info


def build_record(
    stage: str,
    config: Any,
    *,
    inputs: dict[str, str | Path] | None = None,
    seeds: dict[str, int] | None = None,
    device: str = "cpu",
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The provenance of one stage output. `inputs` maps a name to a file or folder to hash.

    `wall_seconds` is the time since this module was imported (see _IMPORTED_AT): build the
    record when the stage's work is done.
    """
    plain = to_plain(config)
    return {
        "stage": stage,
        **({"schema_version": SCHEMA_VERSIONS[stage]} if stage in SCHEMA_VERSIONS else {}),
        "siren_bench_version": __version__,
        "git": git_state(),
        "packages": package_versions(),
        "lock": lock_differences(),
        "config": plain,
        "config_sha256": config_hash(plain),
        "inputs": {name: {"path": str(path), "sha256": sha256_path(path)} for name, path in (inputs or {}).items()},
        "seeds": dict(seeds or {}),
        "device": device_info(device),
        "wall_seconds": round(time.monotonic() - _IMPORTED_AT, 3),
        **(extra or {}),
    }


def write_provenance(out_dir: str | Path, record: dict[str, Any]) -> Path:
    path = Path(out_dir) / PROVENANCE_NAME
    write_json_atomic(path, record)
    return path
