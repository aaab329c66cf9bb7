"""Recipe registry (every knob hashed, versions resolvable) and the audio policies it names."""

import dataclasses

import numpy as np
import pytest

from siren_bench.audio_input import apply_policy, resample
from siren_bench.recipes import REGISTRY, AudioPolicy, get_recipe


def test_registry_resolves_names_and_versions():
    assert get_recipe("clean") is get_recipe("clean@1")
    assert {"audioldm_eval", "google_fad", "clean", "smoke", "stable_audio_metrics", "audiocraft"} <= {r.name for r in REGISTRY.values()}
    with pytest.raises(KeyError, match="unknown recipe"):
        get_recipe("fad_the_usual_way")


def test_every_preset_names_registered_metrics_and_embedders():
    from siren_bench import scoring  # noqa: F401  (registers the metrics)
    from siren_bench.evaluation import embedding  # noqa: F401  (registers the embedders)
    from siren_bench.registry import EMBEDDERS, METRICS

    for recipe in REGISTRY.values():
        for spec in recipe.metrics:
            assert spec.metric in METRICS, (recipe.id, spec.metric)
            assert spec.embedder in EMBEDDERS or spec.embedder in embedding.NOT_BUILT, (recipe.id, spec.embedder)


def test_every_knob_changes_the_hash():
    recipe = get_recipe("audioldm_eval")
    base = recipe.sha256
    fad = recipe.spec("fad")
    changed_policy = dataclasses.replace(fad, audio=dataclasses.replace(fad.audio, channels="mean"))
    changed_option = dataclasses.replace(fad, options=(("fd_method", "eigen"),))
    for spec in (changed_policy, changed_option):
        variant = dataclasses.replace(recipe, metrics=(spec,) + recipe.metrics[1:])
        assert variant.sha256 != base
    assert dataclasses.replace(recipe, bootstrap_seed=1).sha256 != base
    assert get_recipe("audioldm_eval").sha256 == base  # stable across lookups


def test_unknown_knob_values_are_refused():
    with pytest.raises(ValueError, match="channels"):
        AudioPolicy(16000, channels="left")
    with pytest.raises(ValueError, match="max_seconds and crop"):
        AudioPolicy(16000, max_seconds=10.0)


def test_audio_policy_steps():
    sr = 16000
    stereo = np.stack([np.full(sr, 0.5), np.full(sr, -0.1)], axis=1)
    first = apply_policy(stereo, sr, AudioPolicy(sr, channels="first"), "x.wav")
    mean = apply_policy(stereo, sr, AudioPolicy(sr, channels="mean"), "x.wav")
    assert first[0] == pytest.approx(0.5) and mean[0] == pytest.approx(0.2)
    dc_removed = apply_policy(stereo, sr, AudioPolicy(sr, channels="first", remove_dc=True), "x.wav")
    assert abs(dc_removed.mean()) < 1e-12
    short = np.ones(sr // 2)
    assert len(apply_policy(short, sr, AudioPolicy(sr, min_seconds=2.0, pad="zero"), "s.wav")) == 2 * sr
    repeated = apply_policy(np.arange(4.0) / 10, 4, AudioPolicy(4, min_seconds=2.5, pad="repeat"), "r.wav")
    np.testing.assert_allclose(repeated, [0, 0.1, 0.2, 0.3, 0, 0.1, 0.2, 0.3, 0, 0.1])
    with pytest.raises(ValueError, match="s.wav: 0.500 s is shorter"):
        apply_policy(short, sr, AudioPolicy(sr, min_seconds=1.0, pad="none"), "s.wav")
    long = np.arange(30.0)
    centre = apply_policy(long, 1, AudioPolicy(1, max_seconds=10.0, crop="centre"), "l.wav")
    np.testing.assert_allclose(centre, np.arange(10.0, 20.0))
    signed = np.array([0.2, -0.9, 0.4])  # Google's FAD divides by the largest signed sample, floor 0.1
    np.testing.assert_allclose(apply_policy(signed, 1, AudioPolicy(1, level="peak_max0.1"), "g.wav"), signed / 0.4)
    np.testing.assert_allclose(apply_policy(signed * 0.1, 1, AudioPolicy(1, level="peak_max0.1"), "g.wav"), signed)
    quiet = np.full(100, 0.01)
    assert np.abs(apply_policy(quiet, 100, AudioPolicy(100, level="peak_max0.1"), "q.wav")).max() == pytest.approx(0.1)
    assert np.abs(apply_policy(quiet, 100, AudioPolicy(100, level="peak_-1dBFS"), "q.wav")).max() == pytest.approx(10 ** (-1 / 20))
    with pytest.raises(ValueError, match="z.wav: silent"):
        apply_policy(np.zeros(100), 100, AudioPolicy(100, level="peak_-1dBFS"), "z.wav")
    rounded = apply_policy(np.array([0.123456789]), 1, AudioPolicy(1, int16_roundtrip=True), "i.wav")
    assert rounded[0] * 32767 == pytest.approx(round(0.123456789 * 32767))


@pytest.mark.parametrize("method", ["soxr_vhq", "sinc_hann"])
def test_resamplers_keep_an_in_band_tone(method):
    t = np.arange(44100) / 44100
    tone = np.sin(2 * np.pi * 1000 * t)
    out = resample(tone, 44100, 16000, method)
    assert len(out) == 16000
    expected = np.sin(2 * np.pi * 1000 * np.arange(16000) / 16000)
    assert np.abs(out[500:-500] - expected[500:-500]).max() < 2e-3


def test_transplant_keeps_the_embedders_and_takes_the_anchors_audio_handling_and_options():
    from siren_bench.recipes import AUDIOLDM_EVAL, GOOGLE_FAD, SMOKE, SMOKE_AS_ANCHORS, STABLE_AUDIO_METRICS, transplant

    moved = transplant(AUDIOLDM_EVAL, SMOKE)
    assert moved.id == "smoke_as_audioldm_eval@1" and [s.metric for s in moved.metrics] == ["fad", "fd", "kl", "is"]
    for spec in moved.metrics:
        own, anchor = SMOKE.spec(spec.metric), AUDIOLDM_EVAL.spec(spec.metric)
        assert (spec.embedder, spec.checkpoint, spec.framing) == (own.embedder, own.checkpoint, own.framing)
        assert spec.options == anchor.options and spec.audio.sample_rate == own.audio.sample_rate
        assert (spec.audio.channels, spec.audio.remove_dc, spec.audio.resampler) == ("first", True, "sinc_hann")
        assert spec.audio.min_seconds == max(own.audio.min_seconds, anchor.audio.min_seconds)
    # an embedder's own minimum length is kept: aisfx needs 2 s, stable-audio-metrics asks for none
    sam_fd = transplant(STABLE_AUDIO_METRICS, SMOKE).spec("fd")
    assert sam_fd.embedder == "aisfx" and sam_fd.audio.min_seconds == 2.0 and sam_fd.audio.level == "peak_-1dBFS"
    assert transplant(GOOGLE_FAD, SMOKE).spec("fad").audio.level == "peak_max0.1"
    assert len({r.sha256 for r in SMOKE_AS_ANCHORS} | {SMOKE.sha256}) == len(SMOKE_AS_ANCHORS) + 1
    assert all(get_recipe(r.name) is r for r in SMOKE_AS_ANCHORS)
    with pytest.raises(ValueError, match="share no metric"):
        transplant(GOOGLE_FAD, dataclasses.replace(SMOKE, metrics=(SMOKE.spec("kl"),)))


def test_measure_names_carry_their_recipe_and_keep_the_metric():
    from siren_bench.recipes import measure_name, metric_of

    assert measure_name("clap", "smoke_as_audiocraft@1") == "clap @ smoke_as_audiocraft@1"
    assert metric_of("clap @ smoke_as_audiocraft@1") == "clap" and metric_of("fad") == "fad"
