"""Matplotlib figures for the report, saved as deterministic PNGs (no timestamp or version tag)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from scipy import signal  # noqa: E402

from siren_bench.io import atomic_path  # noqa: E402


def save(fig: plt.Figure, path: Path, dpi: int = 100) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return path


def grouped_bars(path: Path, title: str, categories: list[str], groups: dict[str, list[int]], ylabel: str = "count") -> Path:
    """One bar per (category, group), e.g. class counts per split."""
    fig, ax = plt.subplots(figsize=(max(6.0, 0.6 * len(categories) + 2), 3.6))
    width = 0.8 / max(1, len(groups))
    x = np.arange(len(categories))
    for i, (name, values) in enumerate(groups.items()):
        ax.bar(x + (i - (len(groups) - 1) / 2) * width, values, width, label=name)
    ax.set_xticks(x, categories, rotation=35, ha="right")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if len(groups) > 1:
        ax.legend(fontsize=8)
    return save(fig, path)


def bar_panels(path: Path, title: str, panels: dict[str, dict[str, int]]) -> Path:
    """Several small bar charts side by side, one per attribute."""
    fig, axes = plt.subplots(1, len(panels), figsize=(3.0 * len(panels), 3.0), squeeze=False)
    for ax, (name, counts) in zip(axes[0], panels.items()):
        ax.bar(list(counts), list(counts.values()), color="tab:blue")
        ax.set_title(name, fontsize=10)
        ax.tick_params(axis="x", labelrotation=30, labelsize=8)
    fig.suptitle(title, y=1.04)
    return save(fig, path)


def histogram(path: Path, title: str, values: np.ndarray, xlabel: str, bins: int = 30) -> Path:
    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    ax.hist(values, bins=bins, color="tab:green", edgecolor="white")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("count")
    ax.set_title(title)
    return save(fig, path)


def log_spectrogram(wave: np.ndarray, sample_rate: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """dB magnitude STFT (25 ms Hann window, 10 ms hop) for display."""
    nperseg = int(0.025 * sample_rate)
    freqs, times, spec = signal.stft(wave, sample_rate, window="hann", nperseg=nperseg, noverlap=nperseg - int(0.010 * sample_rate))
    return freqs, times, 20.0 * np.log10(np.abs(spec) + 1e-6)


def spectrogram_grid(path: Path, items: list[tuple[str, np.ndarray, int]], columns: int = 4) -> Path:
    """A grid of spectrograms, each titled with its (wrapped) caption."""
    rows = int(np.ceil(len(items) / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(3.6 * columns, 2.9 * rows), squeeze=False)
    for ax in axes.flat[len(items):]:
        ax.axis("off")
    for ax, (caption, wave, sample_rate) in zip(axes.flat, items):
        freqs, times, db = log_spectrogram(wave, sample_rate)
        extent = (times[0], times[-1], freqs[0] / 1000.0, freqs[-1] / 1000.0)
        ax.imshow(db, origin="lower", aspect="auto", extent=extent, vmin=db.max() - 60, vmax=db.max(), cmap="magma")
        ax.set_title("\n".join(textwrap.wrap(caption, 42)[:3]), fontsize=8)
        ax.set_xlabel("s", fontsize=8)
        ax.set_ylabel("kHz", fontsize=8)
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    return save(fig, path, dpi=72)  # noisy images compress poorly: keep the versioned PNG small
