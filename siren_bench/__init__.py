"""siren-bench: a reproducibility harness for LM-based text-to-audio generation around Siren."""

from __future__ import annotations

import importlib

__version__ = "0.1.0"


def compare(name, generator=None, *, audio=None, entry_point=None, params="params.yaml"):
    """Score your model beside a finished run's systems under its identical protocol (test clips,
    captions, recipe, embedders, reference statistics, paired tests against Siren and every
    baseline) and write its report; returns the report folder, reports/compare/<profile>/<name>/.

    `generator(captions, num_samples, sample_rate, seed)` returns one mono waveform per caption
    (siren_bench/external.py); or give `audio`, a folder of rendered test clips (<clip_id>.wav), or
    `entry_point`, "module:function". With none of them, the installed entry point `name` in the
    group siren_bench.generators. `params`: the run's params.yaml (run `dvc repro` first).

        import siren_bench
        from examples.noise_generator import generate
        siren_bench.compare("noise", generate)
    """
    # Imported by name when called: every stage imports this package, none calls compare, so the
    # scorer's modules stay out of each stage's import closure (its DVC code deps, dvc_deps.py).
    comparison = importlib.import_module("siren_bench.comparison")
    return comparison.compare(name, params, audio=audio, entry_point=entry_point, generator=generator)
