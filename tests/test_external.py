"""User-registered models (siren_bench/external.py): a generator's waveforms and a folder's clips
are checked clip by clip before anything is scored, and bad ones are refused by name."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import soundfile

from siren_bench.evaluation.clipsets import ClipSetError
from siren_bench.external import CompareError, load_generator, render_external

TEST = pd.DataFrame({"clip_id": ["a", "b"], "caption": ["a dog barks", "rain"], "num_samples": [800, 1200]})


def test_the_worked_example_renders_every_test_clip_at_its_length(tmp_path):
    facts = render_external("noise", "examples.noise_generator:generate", TEST, 16000, 7, tmp_path / "out")
    assert facts["seed"] == 7 and facts["entry_point"] == "examples.noise_generator:generate"
    for clip_id, n in zip(TEST["clip_id"], TEST["num_samples"]):
        wave, rate = soundfile.read(tmp_path / "out" / f"{clip_id}.wav")
        assert rate == 16000 and wave.shape == (n,) and wave.std() > 0
    again = render_external("noise", "examples.noise_generator:generate", TEST, 16000, 7, tmp_path / "again")
    assert facts == again and (tmp_path / "out" / "a.wav").read_bytes() == (tmp_path / "again" / "a.wav").read_bytes()


def _bad(kind):
    def generate(captions, num_samples, sample_rate, seed):
        waves = [np.zeros(n) + 0.1 for n in num_samples]
        if kind == "short":
            waves[1] = waves[1][:-1]
        elif kind == "nan":
            waves[0][3] = np.nan
        elif kind == "count":
            waves = waves[:1]
        elif kind == "stereo":
            waves[0] = np.zeros((2, num_samples[0]))
        return waves
    return generate


@pytest.mark.parametrize("kind, message", [("short", r"clip b: expected a mono waveform of 1200 samples"),
                                           ("nan", r"clip a: the waveform has NaN"),
                                           ("count", r"returned 1 waveforms for 2 captions"),
                                           ("stereo", r"clip a: expected a mono waveform of 800 samples, got shape \(2, 800\)")])
def test_a_generators_bad_output_is_refused_by_clip(tmp_path, monkeypatch, kind, message):
    import examples.noise_generator as example

    monkeypatch.setattr(example, "generate", _bad(kind))
    with pytest.raises(CompareError, match=message):
        render_external("bad", "examples.noise_generator:generate", TEST, 16000, 0, tmp_path / "out")


def test_a_folder_must_hold_exactly_the_test_clips(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    soundfile.write(folder / "a.wav", np.full(800, 0.1), 16000)
    soundfile.write(folder / "z.wav", np.full(800, 0.1), 16000)
    with pytest.raises(ClipSetError, match=r"mine: must hold exactly the 2 test clips.*missing 1 \(e.g. \['b'\]\), extra 1 \(e.g. \['z'\]\)"):
        render_external("mine", str(folder), TEST, 16000, 0, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("source, message", [("examples.noise_generator", "expected module:function"),
                                             ("examples.no_such_module:generate", "cannot import"),
                                             ("examples.noise_generator:nothing", "has no 'nothing'")])
def test_bad_entry_points_are_refused_by_name(source, message):
    with pytest.raises(CompareError, match=message):
        load_generator("x", source)


def test_registering_a_model_reruns_generation_not_the_sweep():
    """The sweep reads only the eval keys of its recipe, so adding a user model to eval.external
    (or a system to eval.systems) leaves its retrained models cached; generate depends on them."""
    import yaml

    from tests.conftest import REPO

    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    assert not [p for p in stages["sweep"]["params"] if p == "eval" or p.startswith(("eval.external", "eval.systems"))]
    assert "eval" in stages["generate"]["params"] or "eval.external" in stages["generate"]["params"]
