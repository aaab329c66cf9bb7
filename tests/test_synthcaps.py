"""SynthCaps: determinism, audible attributes, temporal relations, captions and splits."""

from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np
import pytest

from siren_bench.data import synthcaps as sc

SR = 16000
CLIP_S = 4.0


@pytest.fixture(scope="module")
def clips() -> list[sc.Clip]:
    return [sc.generate_clip(7, i, SR, CLIP_S) for i in range(400)]


def test_at_least_ten_classes_with_distinct_names():
    assert len(sc.CLASS_NAMES) >= 10
    assert len(set(sc.CLASS_NAMES)) == len(sc.CLASS_NAMES)


def test_same_seed_and_index_give_identical_clip():
    a, b = sc.generate_clip(3, 11, SR, CLIP_S), sc.generate_clip(3, 11, SR, CLIP_S)
    assert np.array_equal(a.wave, b.wave)
    assert a.caption == b.caption
    assert [e.as_dict() for e in a.events] == [e.as_dict() for e in b.events]


def test_other_seed_or_index_gives_other_clip():
    base = sc.generate_clip(3, 11, SR, CLIP_S)
    assert not np.array_equal(base.wave, sc.generate_clip(4, 11, SR, CLIP_S).wave)
    assert not np.array_equal(base.wave, sc.generate_clip(3, 12, SR, CLIP_S).wave)


def test_audio_is_finite_in_range_and_of_configured_length(clips):
    for clip in clips:
        assert clip.wave.shape == (int(SR * CLIP_S),)
        assert np.all(np.isfinite(clip.wave))
        assert np.max(np.abs(clip.wave)) <= sc.PEAK_CEILING + 1e-12


@pytest.mark.parametrize("sample_rate, seconds", [(22050, 3.0), (8000, 1.0), (16000, 10.0)])
def test_sample_rate_and_clip_length_are_configurable(sample_rate, seconds):
    clip = sc.generate_clip(0, 5, sample_rate, seconds)
    assert clip.wave.size == int(round(sample_rate * seconds))
    assert all(0.0 <= e.start_s < e.end_s <= seconds for e in clip.events)


def test_every_class_is_used_and_clips_have_one_to_three_distinct_events(clips):
    used = Counter(label for clip in clips for label in clip.labels)
    assert set(used) == set(sc.CLASS_NAMES)
    for clip in clips:
        assert 1 <= len(clip.events) <= 3
        assert len(clip.labels) == len(clip.events)  # no class twice in a clip
    assert {len(c.events) for c in clips} == {1, 2, 3}


def test_relations_hold_in_the_event_timeline(clips):
    """Each relation joins the new event to the span of all earlier ones (the caption's clause)."""
    seen = Counter()
    for clip in clips:
        assert len(clip.relations) == len(clip.events) - 1
        for k, relation in enumerate(clip.relations):
            earlier, b = clip.events[: k + 1], clip.events[k + 1]
            a_start, a_end = min(e.start_s for e in earlier), max(e.end_s for e in earlier)
            seen[relation] += 1
            if relation == "sequential":
                assert b.start_s > a_end
            elif relation == "simultaneous":
                assert a_start <= b.start_s and b.end_s <= a_end
            else:
                assert a_start < b.start_s < a_end < b.end_s
        assert all(0.0 <= e.start_s < e.end_s <= CLIP_S for e in clip.events)
    assert set(seen) == set(sc.RELATIONS)


def test_duration_labels_match_the_event_spans(clips):
    for clip in clips:
        for event in clip.events:
            fraction = event.seconds / CLIP_S
            expected = "short" if fraction < sc.BRIEF_FRACTION else "long" if fraction >= sc.LONG_FRACTION else "medium"
            assert event.duration == expected


def test_caption_contains_each_event_phrase_and_its_attribute_words(clips):
    for clip in clips:
        lowered = clip.caption.lower()
        for event in clip.events:
            assert event.phrase.lower() in lowered
            cls = next(c for c in sc.EVENT_CLASSES if c.name == event.label)
            nouns = [n.removeprefix("a ").removeprefix("an ") for n in cls.nouns]
            assert any(event.phrase.endswith(noun) for noun in nouns), (event.phrase, nouns)
            if event.loudness in sc.LOUDNESS_WORDS:
                assert any(w in event.phrase.split() for w in sc.LOUDNESS_WORDS[event.loudness])
            if event.pitch in sc.PITCH_WORDS:
                assert any(w in event.phrase.split() for w in sc.PITCH_WORDS[event.pitch])


def test_three_event_captions_never_put_the_last_event_first(clips):
    """A b-first wording ("{b} during {a}") would attach the 3rd event to the wrong clause."""
    three = [c for c in clips if len(c.events) == 3]
    assert three
    for clip in three:
        lowered = clip.caption.lower()
        assert lowered.index(clip.events[1].phrase.lower()) < lowered.index(clip.events[2].phrase.lower()) or \
            lowered.startswith(clip.events[1].phrase.lower())


def test_captions_vary_in_wording_for_each_structure(clips):
    wordings = defaultdict(set)
    for clip in clips:
        if not clip.relations:
            for template in sc.TEMPLATES["single"]:
                prefix = template.split("{a}")[0]
                if clip.caption.lower().startswith(prefix) and prefix:
                    wordings["single"].add(template)
        elif len(clip.relations) == 1:
            a, b = clip.events[0].phrase, clip.events[1].phrase
            for template in sc.TEMPLATES[clip.relations[0]]:
                if template.format(a=a, b=b).lower() == clip.caption.lower():
                    wordings[clip.relations[0]].add(template)
    for structure in sc.RELATIONS:
        assert len(wordings[structure]) >= 3, (structure, wordings[structure])
    assert len({c.caption for c in clips}) > 0.95 * len(clips)


def _event(label: str, **attrs) -> sc.Event:
    base = dict(label=label, start_s=0.0, end_s=1.0, pitch="mid", loudness="medium", rate="medium",
                duration="medium", f0_hz=440.0, level_dbfs=-26.0)
    return sc.Event(**(base | attrs))


def _centroid(wave: np.ndarray) -> float:
    power = np.abs(np.fft.rfft(wave)) ** 2
    freqs = np.fft.rfftfreq(wave.size, 1 / SR)
    return float((freqs * power).sum() / power.sum())


def test_pitch_attribute_raises_spectral_centroid():
    low = sc.render_event(np.random.default_rng(0), _event("harmonic_tone", f0_hz=150.0), SR)
    high = sc.render_event(np.random.default_rng(0), _event("harmonic_tone", f0_hz=1200.0), SR)
    assert _centroid(high) > 3 * _centroid(low)


def test_loudness_level_sets_measured_rms_and_peak():
    quiet, loud = _event("pure_tone", level_dbfs=-36.0), _event("pure_tone", level_dbfs=-19.0)
    sc.render_event(np.random.default_rng(0), quiet, SR)
    sc.render_event(np.random.default_rng(0), loud, SR)
    assert quiet.rms_dbfs == pytest.approx(-36.0, abs=0.01)
    assert loud.rms_dbfs == pytest.approx(-19.0, abs=0.01)
    hits = _event("percussive_hit", level_dbfs=-20.0)
    sc.render_event(np.random.default_rng(0), hits, SR)  # impulsive: set by peak
    assert hits.peak_dbfs == pytest.approx(-20.0 + sc.IMPULSIVE_CREST_DB, abs=0.01)


def test_rate_attribute_changes_click_count():
    def clicks(rate: str) -> int:
        wave = sc.render_event(np.random.default_rng(0), _event("click_train", rate=rate), SR)
        envelope = np.abs(wave) > 0.5 * np.abs(wave).max()
        return int(np.count_nonzero(np.diff(envelope.astype(int)) == 1))

    assert clicks("slow") < clicks("medium") < clicks("fast")


def _band_power(wave: np.ndarray, sr: int, centre: float, width: float = 60.0) -> float:
    power = np.abs(np.fft.rfft(wave)) ** 2
    freqs = np.fft.rfftfreq(wave.size, 1 / sr)
    return float(power[np.abs(freqs - centre) < width].sum() / power.sum())


def test_harmonic_tones_do_not_alias_above_nyquist():
    # 8 harmonics of 1700 Hz at 16 kHz: 5-8 (8.5-13.6 kHz) would fold to 7.5, 5.8, 4.1, 2.4 kHz
    wave = sc.render_event(np.random.default_rng(0), _event("harmonic_tone", f0_hz=1700.0), SR)
    for folded in (7500.0, 5800.0, 4100.0, 2400.0):
        assert _band_power(wave, SR, folded) < 1e-6
    assert _band_power(wave, SR, 3400.0) > 1e-3  # harmonic 2 is there


def test_fast_high_chirp_keeps_rising_at_8_khz():
    """Uncapped, a 2-octave sweep from 1.8 kHz passes Nyquist at 8 kHz and folds back down."""
    wave = sc.render_event(np.random.default_rng(0), _event("chirp", f0_hz=1800.0, rate="fast"), 8000)
    quarter = wave.size // 4
    assert _centroid_sr(wave[-quarter:], 8000) > _centroid_sr(wave[:quarter], 8000) + 500.0


def _centroid_sr(wave: np.ndarray, sr: int) -> float:
    power = np.abs(np.fft.rfft(wave)) ** 2
    return float((np.fft.rfftfreq(wave.size, 1 / sr) * power).sum() / power.sum())


@pytest.mark.parametrize("n", [3, 10, 48, 481])
def test_splits_have_exact_counts_and_are_deterministic(n):
    fractions = {"train": 0.8, "val": 0.1, "test": 0.1}
    splits = sc.assign_splits(n, fractions, seed=5)
    assert splits == sc.assign_splits(n, fractions, seed=5)
    counts = Counter(splits)
    assert sum(counts.values()) == n and set(counts) == set(fractions)
    for name, fraction in fractions.items():
        assert abs(counts[name] - fraction * n) <= 1 or (n < 10 and counts[name] >= 1)
    assert splits != sc.assign_splits(n, fractions, seed=6) or n <= 3
