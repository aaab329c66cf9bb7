"""User-registered models: a generator (`module:function`, or an installed entry point in the
group `siren_bench.generators`) or a folder of rendered test clips, brought into the run under
the identical protocol by `siren-bench compare` and by the generate stage (`eval.external`).

A generator is called once with the test captions and returns one mono waveform per caption:

    def generate(captions: list[str], num_samples: list[int], sample_rate: int, seed: int) -> list[np.ndarray]

each exactly `num_samples[i]` long at `sample_rate`; `seed` is the run's model.generation_seed.
A folder must hold exactly the test clips, one `<clip_id>.wav` (or .flac, .ogg, .mp3) each.
"""

from __future__ import annotations

import importlib
import shutil
import sys
from importlib.metadata import entry_points
from pathlib import Path
from typing import Callable

import numpy as np

from siren_bench.config import ConfigError
from siren_bench.evaluation.clipsets import ClipSetError, folder_clips
from siren_bench.io import write_wav

ENTRY_POINT_GROUP = "siren_bench.generators"


class CompareError(ConfigError):
    """A user's model or audio that cannot be compared; the message names it and the problem."""


def load_generator(name: str, entry_point: str | None) -> tuple[Callable, str]:
    """(the callable, where it came from): `module:function`, or the installed entry point NAME."""
    if entry_point is None:
        found = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == name]
        if not found:
            raise CompareError(f"no audio folder, no --entry-point and no installed entry point {name!r} in group "
                               f"{ENTRY_POINT_GROUP!r}")
        entry_point = found[0].value
    module_name, _, attribute = entry_point.partition(":")
    if not module_name or not attribute:
        raise CompareError(f"--entry-point {entry_point!r}: expected module:function")
    if str(Path.cwd()) not in sys.path:  # as `python -m` does: a module beside the project imports
        sys.path.insert(0, str(Path.cwd()))
    try:
        target = importlib.import_module(module_name)
    except ImportError as exc:
        raise CompareError(f"--entry-point {entry_point!r}: cannot import {module_name!r} ({exc})") from exc
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise CompareError(f"--entry-point {entry_point!r}: {module_name} has no {attribute!r}")
        target = getattr(target, part)
    if not callable(target):
        raise CompareError(f"--entry-point {entry_point!r}: {attribute!r} is not callable")
    return target, entry_point


def render_entry_point(generate: Callable, source: str, test, sample_rate: int, seed: int, out: Path) -> None:
    """Call the user's generator on the test captions and write its waveforms as float WAV."""
    ids, lengths = test["clip_id"].tolist(), test["num_samples"].astype(int).tolist()
    waves = list(generate(test["caption"].tolist(), lengths, sample_rate, seed))
    if len(waves) != len(ids):
        raise CompareError(f"{source}: returned {len(waves)} waveforms for {len(ids)} captions")
    out.mkdir(parents=True)
    for clip_id, length, wave in zip(ids, lengths, waves):
        wave = np.asarray(wave, dtype=np.float64)
        if wave.shape != (length,):
            raise CompareError(f"{source}: clip {clip_id}: expected a mono waveform of {length} samples, got shape {wave.shape}")
        if not np.isfinite(wave).all():
            raise CompareError(f"{source}: clip {clip_id}: the waveform has NaN or infinite samples")
        write_wav(out / f"{clip_id}.wav", wave, sample_rate, subtype="FLOAT")


def copy_audio_folder(folder: Path, test_ids: list[str], out: Path) -> None:
    """Copy the folder's audio after checking it holds exactly the test clips."""
    clips = folder_clips(folder)
    missing, extra = sorted(set(test_ids) - set(clips.ids)), sorted(set(clips.ids) - set(test_ids))
    if missing or extra:
        raise ClipSetError(f"{folder}: must hold exactly the {len(test_ids)} test clips of the run; "
                           f"missing {len(missing)} (e.g. {missing[:3]}), extra {len(extra)} (e.g. {extra[:3]})")
    out.mkdir(parents=True)
    for clip_id in test_ids:
        source = clips.clips[clip_id].path
        shutil.copyfile(source, out / source.name)


def render_external(name: str, source: str, test, sample_rate: int, seed: int, out: Path) -> dict:
    """`source` (a folder of audio, else `module:function`) rendered or copied into `out`; returns
    what the generate stage's systems.json records for it."""
    if Path(source).is_dir():
        copy_audio_folder(Path(source), test["clip_id"].tolist(), out)
        return {"description": f"user model {name}: audio folder {Path(source).resolve()}", "n_clips": len(test),
                "split": "test", "seed": None, "audio_dir": str(Path(source).resolve())}
    generate, where = load_generator(name, source)
    render_entry_point(generate, where, test, sample_rate, seed, out)
    return {"description": f"user model {name}: generator {where}", "n_clips": len(test), "sample_rate": sample_rate,
            "split": "test", "seed": seed, "entry_point": where}
