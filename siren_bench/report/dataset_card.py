"""The dataset card: what the `prepare` stage produced, as numbers, figures and examples.

Statistics are computed from the manifest and the audio files themselves, so the card
describes the data actually on disk, not the config that asked for it.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from siren_bench.artifacts import RunArtifacts
from siren_bench.data.manifest import read_manifest
from siren_bench.data.decode import read_clip
from siren_bench.report import figures
from siren_bench.report.section import Section, md_table, report_section

SPLIT_ORDER = ("train", "val", "test")
N_CAPTION_EXAMPLES = 10
N_SPECTROGRAMS = 8


def _ordered_splits(frame: pd.DataFrame) -> list[str]:
    present = list(dict.fromkeys(frame["split"]))
    return [s for s in SPLIT_ORDER if s in present] + sorted(s for s in present if s not in SPLIT_ORDER)


def _caption_stats(captions: pd.Series) -> dict:
    words = captions.str.lower().str.findall(r"[a-z][a-z'-]*")
    return {
        "unique_captions": int(captions.nunique()),
        "mean_words": round(float(words.map(len).mean()), 3),
        "vocabulary_size": len({w for ws in words for w in ws}),
    }


def _examples(frame: pd.DataFrame, columns: list[str]) -> list[list]:
    """Caption examples: the first clips of the test split (a fixed, reproducible choice)."""
    chosen = frame[frame["split"] == "test"] if "test" in set(frame["split"]) else frame
    return chosen.head(N_CAPTION_EXAMPLES)[columns].values.tolist()


def _spectrograms(frame: pd.DataFrame, path: Path) -> Path:
    chosen = frame[frame["split"] == "test"] if "test" in set(frame["split"]) else frame
    items = []
    for _, row in chosen.head(N_SPECTROGRAMS).iterrows():
        wave, sample_rate = read_clip(row["audio_path"], row.get("decode", ""))
        items.append((f"{row['clip_id']}: {row['caption']}", wave[0], sample_rate))
    return figures.spectrogram_grid(path, items)


# --------------------------------------------------------------------------- SynthCaps


def synthcaps_stats(frame: pd.DataFrame, info: dict) -> tuple[dict, np.ndarray]:
    """Card statistics, and the event durations for the histogram."""
    splits = _ordered_splits(frame)
    classes = info["classes"]
    events = [e for cell in frame["events"] for e in json.loads(cell)]
    durations = np.array([e["end_s"] - e["start_s"] for e in events])
    attributes = {
        name: {value: sum(1 for e in events if e[name] == value) for value in values}
        | {"n/a": sum(1 for e in events if e[name] is None)}
        for name, values in info["attributes"].items()
    }
    return {
        "name": "synthcaps",
        "n_clips": len(frame),
        "split_counts": {s: int((frame["split"] == s).sum()) for s in splits},
        "class_counts": {s: {c: int(frame.loc[frame["split"] == s, f"label_{c}"].sum()) for c in classes} for s in splits},
        "events_per_clip": {str(k): int(v) for k, v in sorted(Counter(frame["n_events"]).items())},
        "relation_counts": dict(Counter(r for cell in frame["relations"] for r in cell.split(";") if r)),
        "attribute_counts": {name: {k: v for k, v in counts.items() if v} for name, counts in attributes.items()},
        "event_seconds": {
            "n": int(durations.size), "mean": round(float(durations.mean()), 4),
            "min": round(float(durations.min()), 4), "max": round(float(durations.max()), 4),
        },
        "clip_seconds": round(float((frame["num_samples"] / frame["sample_rate"]).mean()), 4),
        "sample_rate": int(frame["sample_rate"].iloc[0]),
        "clips_with_peak_gain": int((frame["peak_gain_db"] < 0).sum()),
        "captions": _caption_stats(frame["caption"]),
    }, durations


def synthcaps_section(frame: pd.DataFrame, info: dict, out: Path) -> Section:
    stats, durations = synthcaps_stats(frame, info)
    fig_dir = out / "figures"
    classes = info["classes"]
    figs = [
        figures.grouped_bars(fig_dir / "dataset_class_balance.png", "SynthCaps: clips containing each class",
                             classes, {s: list(stats["class_counts"][s].values()) for s in stats["split_counts"]}),
        figures.bar_panels(fig_dir / "dataset_attribute_balance.png", "SynthCaps: event attributes", stats["attribute_counts"]),
        figures.histogram(fig_dir / "dataset_event_durations.png", "SynthCaps: event durations", durations, "seconds"),
        _spectrograms(frame, fig_dir / "dataset_spectrograms.png"),
    ]
    splits_md = md_table(["split", "clips"], [[s, n] for s, n in stats["split_counts"].items()] + [["all", stats["n_clips"]]])
    classes_md = md_table(["class"] + list(stats["class_counts"]), [[c] + [stats["class_counts"][s][c] for s in stats["class_counts"]] for c in classes])
    attrs_md = md_table(["attribute", "values (events)"], [[a, ", ".join(f"{k}: {v}" for k, v in counts.items())] for a, counts in stats["attribute_counts"].items()])
    structure_md = md_table(
        ["what", "counts"],
        [["events per clip", ", ".join(f"{k}: {v}" for k, v in stats["events_per_clip"].items())],
         ["relations", ", ".join(f"{k}: {v}" for k, v in sorted(stats["relation_counts"].items()))],
         ["event seconds", "mean {mean}, min {min}, max {max} (n = {n})".format(**stats["event_seconds"])],
         ["clips scaled to stay below full scale", stats["clips_with_peak_gain"]]],
    )
    caps = stats["captions"]
    examples_md = md_table(["clip", "caption", "classes", "structure"], _examples(frame, ["clip_id", "caption", "labels", "template"]))
    markdown = f"""## Dataset card: SynthCaps

Procedural captioned audio: {stats['n_clips']} clips of {stats['clip_seconds']} s at {stats['sample_rate']} Hz,
{len(classes)} sound-event classes, 1-3 events per clip placed by a temporal relation that the
caption states. Every number below is counted from the manifest and audio on disk.

{splits_md}

### Class balance

![class balance](figures/dataset_class_balance.png)

{classes_md}

### Attributes and structure

![attribute balance](figures/dataset_attribute_balance.png)

{attrs_md}

{structure_md}

![event durations](figures/dataset_event_durations.png)

### Captions

{caps['unique_captions']} distinct captions for {stats['n_clips']} clips, {caps['mean_words']} words on average,
a vocabulary of {caps['vocabulary_size']} words. The first test clips:

{examples_md}

### Spectrograms (first test clips)

![spectrograms](figures/dataset_spectrograms.png)
"""
    return Section("dataset", stats, markdown, figs)


# --------------------------------------------------------------------------- AudioCaps


def audiocaps_section(frame: pd.DataFrame, info: dict, out: Path) -> Section:
    fig_dir = out / "figures"
    source_seconds = frame["source_seconds"].to_numpy(dtype=np.float64)
    splits = info["splits"]
    keys = ("protocol", "list_sha256", "list_rows", "list_clips", "clips_found", "clips_missing", "missing_fraction")
    stats = {
        "name": "audiocaps",
        "protocol": splits["test"]["protocol"],
        "splits": {split: {k: s[k] for k in keys} for split, s in splits.items()},
        "clips_found": sum(s["clips_found"] for s in splits.values()),
        "clips_missing": sum(s["clips_missing"] for s in splits.values()),
        "max_missing_fraction": info["max_missing_fraction"],
        "resampled": info["resampled"],
        "source_sample_rates": {str(k): int(v) for k, v in sorted(Counter(frame["source_sample_rate"]).items())},
        "source_channels": {str(k): int(v) for k, v in sorted(Counter(frame["source_channels"]).items())},
        "padded_clips": int((frame["padded_seconds"] > 0).sum()),
        "peak_normalised": int(frame["peak_normalised"].astype(bool).sum()),
        "clip_seconds": info["clip_seconds"],
        "sample_rate": info["sample_rate"],
        "captions": _caption_stats(frame["caption"]),
    }
    missing = pd.DataFrame([{"split": split, **m} for split, s in splits.items() for m in s["missing"]],
                           columns=["split", "youtube_id", "start_time"])
    missing_csv = out / "audiocaps_missing.csv"
    missing.to_csv(missing_csv, index=False, lineterminator="\n")
    figs = [
        figures.histogram(fig_dir / "dataset_source_durations.png", "AudioCaps: source durations", source_seconds, "seconds"),
        _spectrograms(frame, fig_dir / "dataset_spectrograms.png"),
    ]
    listing = _listing(missing, ["split", "youtube_id", "start_time"], "None: every clip of every list was found.", missing_csv.name)
    split_table = md_table(
        ["split", "list", "protocol", "rows", "clips", "found", "missing"],
        [[split, f"`{s['list_file']}`", s["protocol"], s["list_rows"], s["list_clips"], s["clips_found"],
          f"{s['clips_missing']} ({s['missing_fraction']:.1%})"] for split, s in splits.items()])
    resampled = frame.loc[frame["resampled"].astype(bool), ["clip_id", "source_file", "source_sample_rate", "source_channels"]]
    resampled_listing = _listing(resampled, list(resampled.columns), "None.", "manifest.csv of the prepare stage")
    scaled = frame.loc[frame["peak_normalised"].astype(bool), ["clip_id", "source_file"]]
    scaled_listing = _listing(scaled, list(scaled.columns), "None.", "manifest.csv of the prepare stage")
    examples_md = md_table(["clip", "caption"], _examples(frame, ["clip_id", "caption"]))
    markdown = f"""## Dataset card: AudioCaps ({stats['protocol']})

{split_table}

Every list is pinned by its SHA-256 (test: {splits['test']['protocol_description']}, `{splits['test']['list_sha256']}`);
no clip is in two splits. Found {stats['clips_found']} clips, missing {stats['clips_missing']} (a split missing more
than {stats['max_missing_fraction']:.0%} of its clips is refused: `data.max_missing_fraction`).
Audio prepared as mono ({info['channel_policy']} of channels), {stats['sample_rate']} Hz, cropped or zero-padded to
{stats['clip_seconds']} s; {stats['resampled']} files resampled ({info['resample_policy']}), {stats['padded_clips']} padded.

{md_table(['source sample rate', 'files'], [[k, v] for k, v in stats['source_sample_rates'].items()])}

### Missing clips

{listing}

### Resampled files

{len(resampled)} of {len(frame)} files were resampled to {stats['sample_rate']} Hz ({info['resample_policy']}):

{resampled_listing}

### Files beyond full scale

Sources whose prepared clip exceeded full scale (float files, or resampling overshoot) were
divided by their peak; {len(scaled)} such files:

{scaled_listing}

![source durations](figures/dataset_source_durations.png)

### Captions

{examples_md}

![spectrograms](figures/dataset_spectrograms.png)
"""
    return Section("dataset", stats, markdown, figs + [missing_csv])


def _listing(frame: pd.DataFrame, columns: list[str], when_empty: str, full_list: str, limit: int = 50) -> str:
    if frame.empty:
        return when_empty
    table = md_table(columns, frame[columns].head(limit).values.tolist())
    return table + (f"\n\n... and {len(frame) - limit} more; all are in `{full_list}`." if len(frame) > limit else "")


@report_section("dataset", "Dataset card", reads="prepare", order=10)
def build(store: RunArtifacts, out: Path) -> Section:
    frame = read_manifest(store.path("prepare", "manifest"))
    info = store.json("prepare", "dataset")
    if info["name"] == "synthcaps":
        return synthcaps_section(frame, info, out)
    return audiocaps_section(frame, info, out)
