"""Shared fixtures. Tests never touch the network: the hub is forced offline before imports."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import soundfile as sf  # noqa: E402
import yaml  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
LOOPBACK = ("127.0.0.1", "localhost", "::1")


@pytest.fixture(autouse=True, scope="session")
def refuse_network():
    """In-process tests may not open connections off this machine (loopback, which torchrun's
    rendezvous uses, stays open). Subprocesses (dvc, torchrun) run with the hub offline."""
    import socket

    connect = socket.socket.connect

    def guarded(sock, address):
        host = address[0] if isinstance(address, tuple) else None
        if sock.family in (socket.AF_INET, socket.AF_INET6) and host not in LOOPBACK:
            raise RuntimeError(f"a test tried to reach the network: {address}")
        return connect(sock, address)

    socket.socket.connect = guarded
    yield
    socket.socket.connect = connect


@pytest.fixture
def write_params(tmp_path: Path):
    """Write a params.yaml for a stage run inside tmp_path; returns its path."""

    def _write(data: dict, profile: str = "test") -> Path:
        params = {
            "run": {"profile": profile, "seed": 0, "device": "cpu",
                    "artifacts_dir": str(tmp_path / "artifacts"), "reports_dir": str(tmp_path / "reports")},
            "data": data,
        }
        path = tmp_path / "params.yaml"
        path.write_text(yaml.safe_dump(params))
        return path

    return _write


def tone(seconds: float, sample_rate: int, channels: int = 1, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    wave = 0.3 * np.sin(2 * np.pi * freq * t)
    return np.stack([wave] * channels, axis=1) if channels > 1 else wave


def write_audio(path: Path, wave: np.ndarray, sample_rate: int, subtype: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), wave, sample_rate, subtype=subtype)
    return path


def paper_scale(name: str) -> dict:
    """A baseline's published sizes, as conf/baselines/paper.yaml (their one home) holds them."""
    import yaml

    return yaml.safe_load((REPO / "conf" / "baselines" / "paper.yaml").read_text())[name]



@pytest.fixture(autouse=True)
def torch_threads_restored():
    """A stage run in-process sets torch's thread count from its params (run.threads); put it back,
    so `make test`'s two workers (OMP_NUM_THREADS=1 each) do not oversubscribe the 2 cores."""
    import torch

    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


HEAVY_FIRST = ("tests/test_pipeline.py", "tests/test_audiocaps_fixture.py")


def pytest_collection_modifyitems(items):
    """The two longest files first: `make test` hands whole files to two xdist workers in this
    order (--dist loadfile --no-loadscope-reorder), so each worker starts on one of them instead of
    a 6-minute file starting last; every other file keeps its place (the sort is stable)."""
    rank = {name: i for i, name in enumerate(HEAVY_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))
