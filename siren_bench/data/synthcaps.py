"""SynthCaps: a procedural captioned-audio dataset that makes the offline default meaningful.

Each clip holds 1-3 sound events drawn from twelve classes synthesised from signal primitives
(tones, chirps, sirens, noise bursts, click trains, AM/FM tones, percussive hits, rain). Every
event carries attributes (pitch, loudness, rate, duration) that change the audio audibly, and
events are laid out in time by a relation (sequential, simultaneous, overlapping) that the
caption states. Captions come from several wordings per structure, so a text encoder sees
paraphrases of the same content, as in AudioCaps.

Clip i is a pure function of (seed, i, sample_rate, clip_seconds, max_events): its random
generator is seeded from SeedSequence([seed, i]). Every frequency stays below 0.45 x the sample
rate, so nothing aliases at any configured rate. Durations are stated relative to the clip length ("brief"
is under 15 % of the clip, "long" 40 % or more), so the captions stay true at any clip length.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from scipy import signal

# --------------------------------------------------------------------------- attributes

PITCH_RANGES_HZ = {"low": (110.0, 220.0), "mid": (300.0, 600.0), "high": (900.0, 1800.0)}
# Event level in dBFS. Sustained classes are set by RMS; impulsive ones (clicks, hits, rain) by
# peak at this level + IMPULSIVE_CREST_DB, since their RMS says little about how loud they sound
# and RMS-matching them would push their peaks past full scale.
LOUDNESS_DBFS = {"quiet": (-38.0, -34.0), "medium": (-29.0, -26.0), "loud": (-21.0, -18.0)}
IMPULSIVE_CREST_DB = 12.0
RATE_LEVELS = ("slow", "medium", "fast")
BRIEF_FRACTION, LONG_FRACTION = 0.15, 0.40
NOISE_FLOOR_DBFS = -65.0
PEAK_CEILING = 0.98

PITCH_WORDS = {"low": ["low", "deep", "low-pitched"], "high": ["high", "high-pitched", "shrill"]}
LOUDNESS_WORDS = {"quiet": ["quiet", "faint", "soft"], "loud": ["loud", "strong", "powerful"]}
DURATION_WORDS = {"short": ["brief", "short"], "long": ["long", "sustained", "prolonged"]}
GENERIC_RATE_WORDS = {"slow": ["slow"], "fast": ["fast", "rapid"]}


def duration_label(event_seconds: float, clip_seconds: float) -> str:
    fraction = event_seconds / clip_seconds
    if fraction < BRIEF_FRACTION:
        return "short"
    return "long" if fraction >= LONG_FRACTION else "medium"


# --------------------------------------------------------------------------- primitives
# Each primitive returns float64 audio of n samples with roughly unit RMS; the event renderer
# applies envelope and level.


def _time(n: int, sr: int) -> np.ndarray:
    return np.arange(n, dtype=np.float64) / sr


def _phase(freq_hz: np.ndarray, sr: int) -> np.ndarray:
    """Phase of an oscillator whose instantaneous frequency follows freq_hz (per sample)."""
    return 2.0 * np.pi * np.cumsum(freq_hz) / sr


def _harmonics(freq_hz: np.ndarray, sr: int, n_harmonics: int, rolloff: float = 1.0) -> np.ndarray:
    """A band-limited harmonic tone: harmonic k sounds only while k * f stays below 0.45 sr,
    so high notes do not alias back into the band."""
    phase = _phase(freq_hz, sr)
    out = np.zeros_like(phase)
    for k in range(1, n_harmonics + 1):
        audible = (k * freq_hz) < 0.45 * sr
        if audible.any():
            out += audible * np.sin(k * phase) / k**rolloff
    return out


def _unit_rms(x: np.ndarray) -> np.ndarray:
    rms = float(np.sqrt(np.mean(x**2)))
    if rms == 0.0:
        raise ValueError("a SynthCaps primitive rendered silence; this is a bug in the generator")
    return x / rms


def _pink_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.arange(spectrum.size, dtype=np.float64)
    freqs[0] = 1.0
    return np.fft.irfft(spectrum / np.sqrt(freqs), n)


def _bandpass(x: np.ndarray, low_hz: float, high_hz: float, sr: int) -> np.ndarray:
    nyquist = sr / 2.0
    sos = signal.butter(2, [low_hz / nyquist, min(high_hz / nyquist, 0.95)], btype="band", output="sos")
    return signal.sosfilt(sos, x)


def _decaying_burst(n: int, sr: int, freq: float, decay_s: float, rng: np.random.Generator) -> np.ndarray:
    """A struck resonance: a damped sinusoid plus a short noise transient."""
    t = _time(n, sr)
    envelope = np.exp(-t / decay_s)
    transient = rng.standard_normal(n) * np.exp(-t / 0.004)
    return envelope * np.sin(2 * np.pi * freq * t + rng.uniform(0, 2 * np.pi)) + 0.3 * transient


# Per class: parameters drawn from the attributes, then rendered. `f0` is the pitch in Hz,
# `rate` the class's modulation / repetition rate in Hz.


def _pure_tone(n, sr, f0, rate, rng):
    return np.sin(_phase(np.full(n, f0), sr))


def _harmonic_tone(n, sr, f0, rate, rng):
    return _harmonics(np.full(n, f0), sr, 8, rolloff=1.0)


def _chirp(n, sr, f0, rate, rng):
    # a rising sweep; rate sets its span in octaves over the event
    octaves = {"slow": 0.5, "medium": 1.0, "fast": 2.0}[rate]
    return np.sin(_phase(np.geomspace(f0, min(f0 * 2**octaves, 0.45 * sr), n), sr))


def _two_tone_siren(n, sr, f0, rate, rng):
    hz = {"slow": 0.8, "medium": 1.5, "fast": 3.0}[rate]
    square = signal.square(2 * np.pi * hz * _time(n, sr))
    freq = np.where(square > 0, f0 * 4.0 / 3.0, f0)
    return _harmonics(freq, sr, 5, rolloff=1.5)


def _wailing_siren(n, sr, f0, rate, rng):
    hz = {"slow": 0.25, "medium": 0.5, "fast": 1.0}[rate]
    sweep = 0.5 * (1 - np.cos(2 * np.pi * hz * _time(n, sr)))
    return _harmonics(f0 * (1.0 + sweep), sr, 4, rolloff=1.5)


def _white_noise(n, sr, f0, rate, rng):
    return rng.standard_normal(n)


def _pink_noise_burst(n, sr, f0, rate, rng):
    return _pink_noise(n, rng)


def _click_train(n, sr, f0, rate, rng):
    hz = {"slow": 4.0, "medium": 9.0, "fast": 20.0}[rate]
    out = np.zeros(n)
    click_len = min(n, int(0.01 * sr))
    click = _decaying_burst(click_len, sr, min(f0 * 4, 0.45 * sr), 0.002, rng)
    for onset in np.arange(0, n, sr / hz).astype(int):
        end = min(n, onset + click_len)
        out[onset:end] += click[: end - onset]
    return out


def _am_tone(n, sr, f0, rate, rng):
    hz = {"slow": 2.0, "medium": 5.0, "fast": 11.0}[rate]
    t = _time(n, sr)
    return (0.55 + 0.45 * np.sin(2 * np.pi * hz * t)) * np.sin(_phase(np.full(n, f0), sr))


def _fm_tone(n, sr, f0, rate, rng):
    hz = {"slow": 2.0, "medium": 5.0, "fast": 9.0}[rate]
    freq = f0 * (1.0 + 0.06 * np.sin(2 * np.pi * hz * _time(n, sr)))
    return _harmonics(freq, sr, 3, rolloff=2.0)


def _percussive_hits(n, sr, f0, rate, rng):
    hz = {"slow": 1.5, "medium": 3.0, "fast": 6.0}[rate]
    out = np.zeros(n)
    hit_len = min(n, int(0.3 * sr))
    for onset in np.arange(0, n, sr / hz).astype(int):
        end = min(n, onset + hit_len)
        out[onset:end] += _decaying_burst(end - onset, sr, f0, 0.05, rng)
    return out


def _rain(n, sr, f0, rate, rng):
    drops_per_s = {"slow": 15.0, "medium": 50.0, "fast": 160.0}[rate]
    bed = _bandpass(_pink_noise(n, rng), 400.0, 6000.0, sr) * 0.3
    drops = np.zeros(n)
    drop_len = min(n, int(0.006 * sr))
    n_drops = rng.poisson(drops_per_s * n / sr)
    for onset in rng.integers(0, n, size=n_drops):
        end = min(n, onset + drop_len)
        freq = rng.uniform(1500.0, min(6000.0, 0.45 * sr))
        drops[onset:end] += rng.uniform(0.3, 1.0) * _decaying_burst(end - onset, sr, freq, 0.0015, rng)
    return _unit_rms(bed) * 0.5 + (_unit_rms(drops) if n_drops else 0.0)


@dataclass(frozen=True)
class EventClass:
    name: str
    nouns: tuple[str, ...]  # wordings; a leading "a "/"an " marks a count noun
    render: Callable[..., np.ndarray]
    pitched: bool = True
    has_rate: bool = True
    impulsive: bool = False
    rate_words: dict[str, list[str]] = field(default_factory=lambda: GENERIC_RATE_WORDS)


EVENT_CLASSES: tuple[EventClass, ...] = (
    EventClass("pure_tone", ("a beep", "a pure tone", "a sine tone"), _pure_tone, has_rate=False),
    EventClass("harmonic_tone", ("a buzzing hum", "a harmonic drone", "an organ-like note"), _harmonic_tone, has_rate=False),
    EventClass(
        "chirp", ("a chirp", "a sweeping tone", "a frequency sweep"), _chirp,
        rate_words={"slow": ["gently rising"], "fast": ["steeply rising", "fast-rising"]},
    ),
    EventClass("two_tone_siren", ("a two-tone siren", "a hi-lo siren", "an alternating siren"), _two_tone_siren),
    EventClass("wailing_siren", ("a wailing siren", "a siren wail", "a howling siren"), _wailing_siren),
    EventClass("white_noise_burst", ("a burst of white noise", "a hiss", "a burst of static"), _white_noise, pitched=False, has_rate=False),
    EventClass("pink_noise_burst", ("a rumble of pink noise", "a whoosh", "a soft roar of noise"), _pink_noise_burst, pitched=False, has_rate=False),
    EventClass("click_train", ("clicking", "ticking", "a train of clicks"), _click_train, impulsive=True),
    EventClass("am_tone", ("a pulsing tone", "a throbbing tone", "a tremolo tone"), _am_tone),
    EventClass("fm_tone", ("a warbling tone", "a vibrato tone", "a wavering tone"), _fm_tone),
    EventClass("percussive_hit", ("knocking", "drum hits", "a series of thuds"), _percussive_hits, impulsive=True),
    EventClass(
        "rain", ("rain", "rainfall", "a patter of rain"), _rain, pitched=False, impulsive=True,
        rate_words={"slow": ["light", "gentle"], "fast": ["heavy", "pouring"]},
    ),
)
CLASS_NAMES: tuple[str, ...] = tuple(c.name for c in EVENT_CLASSES)
_BY_NAME = {c.name: c for c in EVENT_CLASSES}

# --------------------------------------------------------------------------- structure

RELATIONS = ("sequential", "simultaneous", "overlapping")
# Several wordings per structure; {a} and {b} are event phrases (or a clause for 3 events).
TEMPLATES: dict[str, tuple[str, ...]] = {
    "single": ("{a}", "{a} can be heard", "the sound of {a}", "there is {a}"),
    "sequential": ("{a}, then {b}", "{a} followed by {b}", "first {a}, then {b}", "{a} and afterwards {b}"),
    "simultaneous": ("{a} while {b} plays", "{a} together with {b}", "{a} along with {b} at the same time", "{b} during {a}"),
    "overlapping": ("{a} overlapping with {b}", "{a}, and {b} begins before it ends", "{a} running into {b}", "{a} with {b} joining in as it fades"),
}
EVENT_COUNT_PROBS = {1: 0.3, 2: 0.45, 3: 0.25}


@dataclass
class Event:
    label: str
    start_s: float
    end_s: float
    pitch: str | None
    loudness: str
    rate: str | None
    duration: str
    f0_hz: float | None
    level_dbfs: float  # the drawn level (RMS, or peak - crest for impulsive classes)
    rms_dbfs: float = float("nan")  # measured on the rendered event
    peak_dbfs: float = float("nan")
    phrase: str = ""

    @property
    def seconds(self) -> float:
        return self.end_s - self.start_s

    def as_dict(self) -> dict:
        return {
            "label": self.label,
            "start_s": round(self.start_s, 4),
            "end_s": round(self.end_s, 4),
            "pitch": self.pitch,
            "loudness": self.loudness,
            "rate": self.rate,
            "duration": self.duration,
            "f0_hz": None if self.f0_hz is None else round(self.f0_hz, 3),
            "level_dbfs": round(self.level_dbfs, 3),
            "rms_dbfs": round(self.rms_dbfs, 3),
            "peak_dbfs": round(self.peak_dbfs, 3),
            "phrase": self.phrase,
        }


@dataclass
class Clip:
    index: int
    wave: np.ndarray  # float64 mono, in [-1, 1]
    caption: str
    events: list[Event]
    relations: list[str]
    template: str
    peak_gain_db: float  # gain applied to keep the mix below full scale (0 when none)

    @property
    def labels(self) -> list[str]:
        return sorted({e.label for e in self.events})


def _layout(rng: np.random.Generator, n_events: int, clip_s: float) -> tuple[list[tuple[float, float]], list[str]]:
    """Place n events on [0, clip_s] following randomly drawn relations.

    Durations are drawn first; each next event is placed relative to the span of all earlier
    events (the clause its caption attaches to); if the
    whole timeline overruns the clip it is scaled down to fit (the duration labels are taken
    from the final spans, so they stay true).
    """
    margin = 0.03 * clip_s
    usable = clip_s - 2 * margin
    spans: list[tuple[float, float]] = []
    relations: list[str] = []
    duration = rng.uniform(0.1, 0.6) * clip_s
    spans.append((0.0, duration))
    for _ in range(n_events - 1):
        relation = str(rng.choice(RELATIONS))
        # Relative to the span of everything so far: the caption joins the new event to the
        # whole clause before it ("X, then Y, together with Z" puts Z within X..Y).
        prev_start, prev_end = min(s for s, _ in spans), max(e for _, e in spans)
        prev_len = prev_end - prev_start
        if relation == "sequential":
            gap = rng.uniform(0.02, 0.12) * clip_s
            start = prev_end + gap
            end = start + rng.uniform(0.1, 0.5) * clip_s
        elif relation == "simultaneous":  # contained in the previous event
            length = rng.uniform(0.3, 0.8) * prev_len
            start = prev_start + rng.uniform(0.0, 1.0) * (prev_len - length)
            end = start + length
        else:  # overlapping: starts in the second half of the previous event, ends after it
            start = prev_start + rng.uniform(0.5, 0.85) * prev_len
            end = prev_end + rng.uniform(0.1, 0.4) * clip_s
        spans.append((start, end))
        relations.append(relation)
    total = max(end for _, end in spans)
    scale = min(1.0, usable / total)
    slack = max(0.0, usable - total * scale)  # rounding can make it -1e-16
    offset = margin + rng.uniform(0.0, slack)
    return [(offset + s * scale, offset + e * scale) for s, e in spans], relations


def _pick(rng: np.random.Generator, options) -> str:
    return str(options[int(rng.integers(len(options)))])


def _phrase(rng: np.random.Generator, event: Event) -> str:
    """An event as words: non-neutral attributes become adjectives before a class noun."""
    cls = _BY_NAME[event.label]
    noun = _pick(rng, cls.nouns)
    article = ""
    for candidate in ("a ", "an "):
        if noun.startswith(candidate):
            article, noun = "a", noun[len(candidate):]
    adjectives = []
    if event.loudness in LOUDNESS_WORDS:
        adjectives.append(_pick(rng, LOUDNESS_WORDS[event.loudness]))
    if event.duration in DURATION_WORDS:
        adjectives.append(_pick(rng, DURATION_WORDS[event.duration]))
    if event.rate in cls.rate_words:
        adjectives.append(_pick(rng, cls.rate_words[event.rate]))
    if event.pitch in PITCH_WORDS:
        adjectives.append(_pick(rng, PITCH_WORDS[event.pitch]))
    words = " ".join(adjectives + [noun])
    if article:
        article = "an" if words[0] in "aeiou" else "a"
        return f"{article} {words}"
    return words


def _caption(rng: np.random.Generator, phrases: list[str], relations: list[str]) -> str:
    if not relations:
        template = _pick(rng, TEMPLATES["single"])
        text = template.format(a=phrases[0])
    else:
        text = phrases[0]
        for position, (relation, phrase) in enumerate(zip(relations, phrases[1:])):
            # "{b} during {a}" reads right only when {a} is a single event
            options = [t for t in TEMPLATES[relation] if position == 0 or t.startswith("{a}")]
            text = _pick(rng, options).format(a=text, b=phrase)
    return text[0].upper() + text[1:]


def render_event(rng: np.random.Generator, event: Event, sr: int) -> np.ndarray:
    n = max(1, int(round(event.seconds * sr)))
    cls = _BY_NAME[event.label]
    wave = cls.render(n, sr, event.f0_hz, event.rate or "medium", rng)
    fade = min(n // 2, int(0.01 * sr))
    if fade:
        ramp = np.linspace(0.0, 1.0, fade)
        wave[:fade] *= ramp
        wave[-fade:] *= ramp[::-1]
    if cls.impulsive:
        wave = wave / np.max(np.abs(wave)) * 10 ** ((event.level_dbfs + IMPULSIVE_CREST_DB) / 20.0)
    else:
        wave = _unit_rms(wave) * 10 ** (event.level_dbfs / 20.0)
    event.rms_dbfs = 20.0 * np.log10(np.sqrt(np.mean(wave**2)))
    event.peak_dbfs = 20.0 * np.log10(np.max(np.abs(wave)))
    return wave


def generate_clip(seed: int, index: int, sample_rate: int, clip_seconds: float, max_events: int = 3) -> Clip:
    """Clip `index` of the dataset with this seed: audio, caption, events and relations."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, index]))
    counts = [k for k in EVENT_COUNT_PROBS if k <= max_events]
    probs = np.array([EVENT_COUNT_PROBS[k] for k in counts])
    n_events = int(rng.choice(counts, p=probs / probs.sum()))
    labels = [CLASS_NAMES[i] for i in rng.choice(len(CLASS_NAMES), size=n_events, replace=False)]
    spans, relations = _layout(rng, n_events, clip_seconds)

    events = []
    for label, (start, end) in zip(labels, spans):
        cls = _BY_NAME[label]
        pitch = str(rng.choice(list(PITCH_RANGES_HZ))) if cls.pitched else None
        loudness = str(rng.choice(list(LOUDNESS_DBFS)))
        low, high = PITCH_RANGES_HZ[pitch] if pitch else (0.0, 0.0)
        events.append(Event(
            label=label, start_s=start, end_s=end, pitch=pitch, loudness=loudness,
            rate=str(rng.choice(RATE_LEVELS)) if cls.has_rate else None,
            duration=duration_label(end - start, clip_seconds),
            f0_hz=float(np.exp(rng.uniform(np.log(low), np.log(high)))) if cls.pitched else None,
            level_dbfs=float(rng.uniform(*LOUDNESS_DBFS[loudness])),
        ))
    for event in events:
        event.phrase = _phrase(rng, event)
    caption = _caption(rng, [e.phrase for e in events], relations)
    template = "single" if not relations else "+".join(relations)

    n = int(round(clip_seconds * sample_rate))
    mix = rng.standard_normal(n) * 10 ** (NOISE_FLOOR_DBFS / 20.0)
    for event in events:
        audio = render_event(rng, event, sample_rate)
        start = min(int(round(event.start_s * sample_rate)), n - 1)
        stop = min(n, start + audio.size)
        mix[start:stop] += audio[: stop - start]
    peak = float(np.max(np.abs(mix)))
    gain_db = 0.0
    if peak > PEAK_CEILING:
        gain_db = 20.0 * np.log10(PEAK_CEILING / peak)
        mix *= PEAK_CEILING / peak
    return Clip(index, mix, caption, events, relations, template, round(gain_db, 4))


def assign_splits(n_clips: int, fractions: dict[str, float], seed: int) -> list[str]:
    """Exact-count split assignment (largest remainder), shuffled deterministically by seed."""
    names = list(fractions)
    raw = np.array([fractions[name] * n_clips for name in names])
    counts = np.floor(raw).astype(int)
    for i in np.argsort(-(raw - counts), kind="stable")[: n_clips - counts.sum()]:
        counts[i] += 1
    for i in range(len(names)):  # every split gets at least one clip
        if counts[i] == 0:
            counts[int(np.argmax(counts))] -= 1
            counts[i] = 1
    order = np.random.default_rng(np.random.SeedSequence([seed, 0x5917])).permutation(n_clips)
    splits = [""] * n_clips
    position = 0
    for name, count in zip(names, counts):
        for idx in order[position : position + count]:
            splits[int(idx)] = name
        position += count
    return splits
