"""Report section: listen to what each system generated, next to the reference and its caption.

The first test clips of every system and their references are copied into the report's own
audio/ folder as 16-bit FLAC (lossless for the references, which are 16-bit; generated float WAVs
are rounded to 16 bits, inaudibly), so the links work in a clone that never ran `dvc repro`: the
generate stage's folders are DVC outputs, not committed. A spectrogram figure shows the same clips.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import soundfile as sf

from siren_bench.artifacts import RunArtifacts
from siren_bench.diagnostics.fidelity import power_spectrogram
from siren_bench.data.decode import read_clip
from siren_bench.io import atomic_path
from siren_bench.report import figures
from siren_bench.report.section import Section, md_table, report_section

N_CLIPS = 3  # x (systems + reference) FLAC files of about 55 kB each, in every archived run


def _copy(source: tuple[Path, str], out: Path, system: str, clip_id: str) -> str:
    """`source` (a path and its decode policy, as read_clip takes them) as
    out/audio/<system>/<clip_id>.flac (16-bit; the same audio gives the same bytes); returns the
    link relative to the report."""
    target = Path("audio") / system / f"{clip_id}.flac"
    wave, rate = read_clip(*source)
    (out / target).parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / target) as staging:
        sf.write(staging, wave.T, rate, format="FLAC", subtype="PCM_16")
    return target.as_posix()


@report_section("listening", "Listen", reads="generate", order=140)
def listening_section(store: RunArtifacts, out: Path) -> Section:
    generate_dir = store.dir("generate")
    systems = store.json("generate", "systems")
    manifest = pd.read_csv(store.path("prepare", "manifest"), dtype={"clip_id": str}, keep_default_na=False)
    test = manifest[manifest["split"] == "test"].sort_values("clip_id").head(N_CLIPS)
    prepare_dir = store.dir("prepare")
    names = sorted(systems)
    rows, files = [], []
    decodes = test["decode"] if "decode" in test.columns else [""] * len(test)
    for clip_id, caption, audio, decode in zip(test["clip_id"], test["caption"], test["audio"], decodes):
        reference = (prepare_dir / audio, decode)  # an absolute source path stays itself
        cells = [clip_id, caption, f"[flac]({_copy(reference, out, 'reference', clip_id)})"]
        clip_files = [reference]
        for name in names:
            found = sorted((generate_dir / name).glob(f"{clip_id}.*"))
            if not found:
                raise FileNotFoundError(f"{generate_dir / name}: no audio for test clip {clip_id}")
            cells.append(f"[flac]({_copy((found[0], ''), out, name, clip_id)})")
            clip_files.append((found[0], ""))
        rows.append(cells)
        files.append(clip_files)

    fig, axes = plt.subplots(len(files), 1 + len(names), figsize=(2.6 * (1 + len(names)), 1.9 * len(files)), squeeze=False)
    for r, clip_files in enumerate(files):
        for c, source in enumerate(clip_files):
            wave, rate = read_clip(*source)
            power = power_spectrogram(wave.mean(axis=0), 512, 128)
            axes[r, c].imshow(10 * np.log10(power + 1e-10), origin="lower", aspect="auto", vmin=-100, vmax=0, cmap="magma",
                              extent=(0, wave.shape[1] / rate, 0, rate / 2000))
            if r == 0:
                axes[r, c].set_title("reference" if c == 0 else names[c - 1], fontsize=8)
            if c == 0:
                axes[r, c].set_ylabel(f"{test['clip_id'].iloc[r]}\nkHz", fontsize=7)
            axes[r, c].tick_params(labelsize=6)
    fig.supxlabel("seconds", fontsize=8)
    fig.tight_layout()
    figure = figures.save(fig, out / "figures" / "listening_spectrograms.png", dpi=64)  # noisy: keep the PNG (and HTML) small
    markdown = f"""## Listen

The first {len(rows)} test clips: the reference and each system's output (16-bit FLAC copies in this
report's `audio/` folder; every test clip is in `artifacts/<profile>/generate/` after `dvc repro`).

{md_table(['clip', 'caption', 'reference'] + names, rows)}

![spectrograms of generated clips](figures/listening_spectrograms.png)
"""
    return Section("listening", {"clips": test["clip_id"].tolist(), "systems": names}, markdown, [figure])
