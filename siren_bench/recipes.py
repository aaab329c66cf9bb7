"""Named, versioned metric recipes: every knob that changes a number, explicit and hashed.

"FAD", "KL" and "CLAP score" each name several incompatible computations (REFERENCES.md §4), so
a score is only meaningful with its recipe. A `Recipe` lists, for each metric, the embedder and
its checkpoint, the audio policy (channels, DC removal, resampler, level, padding/cropping) and
the metric's options (FD method, KL direction and eps, IS splits and seed, ...). Its SHA-256
(`recipe.sha256`) goes into every result and every cache key; changing any knob changes it.

Presets reproduce the anchor toolkits, quirks included (listed in `quirks`, not fixed); `clean`
is the default for new work on real weights, `smoke` the same policies on the evaluators the
smoke profile trains. A recipe is looked up as "name" (its current version) or "name@version";
published versions are never edited in place: a change is a new version.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from siren_bench.io import sha256_json

CHANNEL_POLICIES = ("first", "mean")
RESAMPLERS = ("soxr_vhq", "sinc_hann")
LEVEL_POLICIES = ("none", "peak_max0.1", "peak_-1dBFS")
PAD_POLICIES = ("zero", "repeat", "none")
CROP_POLICIES = ("none", "centre", "start")


@dataclass(frozen=True)
class AudioPolicy:
    """How a file becomes the embedder's input."""

    sample_rate: int
    channels: str = "mean"
    remove_dc: bool = False
    resampler: str = "soxr_vhq"
    level: str = "none"
    min_seconds: float = 0.0  # shorter clips are padded up to this (pad policy), or refused (pad "none")
    pad: str = "zero"
    max_seconds: float | None = None  # longer clips are cropped (crop policy), deterministically
    crop: str = "none"
    int16_roundtrip: bool = False

    def __post_init__(self):
        _check("channels", self.channels, CHANNEL_POLICIES)
        _check("resampler", self.resampler, RESAMPLERS)
        _check("level", self.level, LEVEL_POLICIES)
        _check("pad", self.pad, PAD_POLICIES)
        _check("crop", self.crop, CROP_POLICIES)
        if (self.max_seconds is None) != (self.crop == "none"):
            raise ValueError("max_seconds and crop go together: both set or neither")


@dataclass(frozen=True)
class MetricSpec:
    metric: str  # a name in siren_bench.registry.METRICS (tests/test_recipes.py checks every preset's)
    embedder: str  # vggish | panns_cnn14_16k | panns_cnn14_32k | clap | smoke_tagger | smoke_clap | ...
    checkpoint: str  # the weights it was defined with (file name as published); the hash is recorded at run time
    audio: AudioPolicy
    framing: str = "clip"  # embedder framing, e.g. "torchvggish" (0.96 s / 0.96 s) or "google_1s_0.5s"
    options: tuple[tuple[str, object], ...] = ()  # metric options as sorted (key, value) pairs

    def option(self, key: str, default=None):
        return dict(self.options).get(key, default)


@dataclass(frozen=True)
class Recipe:
    name: str
    version: int
    description: str
    metrics: tuple[MetricSpec, ...]
    n_boot: int = 1000  # bootstrap resamples for the confidence intervals
    bootstrap_seed: int = 0
    quirks: tuple[str, ...] = ()  # behaviours of the original toolkit reproduced on purpose

    @property
    def id(self) -> str:
        return f"{self.name}@{self.version}"

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    @property
    def sha256(self) -> str:
        return sha256_json(self.as_dict())

    def spec(self, metric: str) -> MetricSpec:
        for spec in self.metrics:
            if spec.metric == metric:
                return spec
        raise KeyError(f"recipe {self.id} has no {metric!r} metric (it has {[s.metric for s in self.metrics]})")


def measure_name(metric: str, recipe_id: str) -> str:
    """A metric scored under a further recipe, as a ranking measure (evaluation/ranking.py); the
    run's own recipe's metrics are named by the metric alone."""
    return f"{metric} @ {recipe_id}"


def metric_of(measure: str) -> str:
    """The metric a ranking measure computes (its direction and resampling rules are the metric's)."""
    return measure.split(" @ ", 1)[0]


def _check(knob: str, value, allowed) -> None:
    if value not in allowed:
        raise ValueError(f"unknown {knob} {value!r}; choose one of {allowed}")


def _opts(**kwargs) -> tuple[tuple[str, object], ...]:
    return tuple(sorted(kwargs.items()))


# --- presets -----------------------------------------------------------------------------------

_AUDIOLDM_16K = AudioPolicy(16000, channels="first", remove_dc=True, resampler="sinc_hann", min_seconds=2.0, pad="zero")
_CLEAN_16K = AudioPolicy(16000, channels="mean", resampler="soxr_vhq", min_seconds=1.0, pad="zero")
_CLEAN_32K = dataclasses.replace(_CLEAN_16K, sample_rate=32000)
_CLAP_48K = AudioPolicy(48000, channels="mean", resampler="soxr_vhq", min_seconds=10.0, pad="repeat",
                        max_seconds=10.0, crop="centre", int16_roundtrip=True)

# Version 1 shuffled IS with NumPy's default_rng and split with np.array_split, which is not
# audioldm_eval's split (at N = 964 its std differed by 16 %); version 2 does as audioldm_eval does.
_AUDIOLDM_PANNS = ("panns_cnn14_16k", "Cnn14_16k_mAP=0.438.pth", _AUDIOLDM_16K, "clip")
_AUDIOLDM_METRICS = (
    MetricSpec("fad", "vggish", "vggish-10086976.pth", _AUDIOLDM_16K, "torchvggish", _opts(fd_method="sqrtm_eps_retry")),
    MetricSpec("fd", *_AUDIOLDM_PANNS, _opts(fd_method="sqrtm_eps_retry")),
    MetricSpec("kl", *_AUDIOLDM_PANNS, _opts(direction="ref_gen", eps=1e-6)),
)
_AUDIOLDM_QUIRKS = (
    "keeps the first channel of multi-channel files",
    "subtracts the DC mean before resampling",
    "windowed-sinc (Hann) resampling to 16 kHz",
    "zero-pads clips shorter than 2 s",
    "matrix square root by scipy sqrtm with an eps 1e-6 diagonal retry",
    "KL(reference || generated) with eps 1e-6 inside the log of the generated side",
)
_AUDIOLDM_DESCRIPTION = "audioldm_eval as used by AudioLDM, Tango and Make-An-Audio tables: VGGish FAD, PANNs Cnn14 FD / KL / IS."
AUDIOLDM_EVAL_V1 = Recipe(
    "audioldm_eval", 1,
    _AUDIOLDM_DESCRIPTION + " Superseded by version 2 (the IS shuffle and split points).",
    _AUDIOLDM_METRICS + (MetricSpec("is", *_AUDIOLDM_PANNS, _opts(splits=10, seed=2020, shuffle=True)),),
    quirks=_AUDIOLDM_QUIRKS,
)
AUDIOLDM_EVAL = Recipe(
    "audioldm_eval", 2,
    _AUDIOLDM_DESCRIPTION,
    _AUDIOLDM_METRICS + (
        MetricSpec("is", *_AUDIOLDM_PANNS, _opts(splits=10, seed=2020, shuffle=True, shuffler="randomstate", chunks="floor")),),
    quirks=_AUDIOLDM_QUIRKS + (
        "IS: clips permuted by np.random.RandomState(2020), splits cut at i * N // 10, population std over splits",),
)

GOOGLE_FAD = Recipe(
    "google_fad", 1,
    "Google's original FAD: VGGish on 1 s windows with 0.5 s hop, each clip peak-normalised.",
    (MetricSpec("fad", "vggish", "vggish-10086976.pth",
                AudioPolicy(16000, channels="mean", resampler="soxr_vhq", level="peak_max0.1", min_seconds=1.0, pad="zero"),
                "google_1s_0.5s", _opts(fd_method="eigen")),),
    quirks=("divides each clip by max(0.1, its largest signed sample) before embedding (not its largest magnitude)",),
)

CLEAN = Recipe(
    "clean", 1,
    "The default for new work: mono by channel mean, soxr VHQ, no hidden randomness, eigen-form FD in float64, "
    "both KL directions reported, KAD and FAD-inf next to FAD.",
    (
        MetricSpec("fad", "vggish", "vggish-10086976.pth", _CLEAN_16K, "torchvggish", _opts(fd_method="eigen")),
        MetricSpec("fad_inf", "vggish", "vggish-10086976.pth", _CLEAN_16K, "torchvggish", _opts(fd_method="eigen", seed=0, n_points=15)),
        MetricSpec("kad", "vggish", "vggish-10086976.pth", _CLEAN_16K, "torchvggish", _opts(bandwidth="median_reference")),
        MetricSpec("fd", "panns_cnn14_32k", "Cnn14_mAP=0.431.pth", _CLEAN_32K, "clip", _opts(fd_method="eigen")),
        MetricSpec("kl", "panns_cnn14_32k", "Cnn14_mAP=0.431.pth", _CLEAN_32K, "clip", _opts(direction="ref_gen", eps=0.0, also="gen_ref")),
        MetricSpec("is", "panns_cnn14_32k", "Cnn14_mAP=0.431.pth", _CLEAN_32K, "clip", _opts(splits=10, seed=0, shuffle=True)),
        MetricSpec("clap", "clap", "630k-audioset-best.pt", _CLAP_48K, "clip", _opts(report="raw")),
    ),
)

_SMOKE_16K = AudioPolicy(16000, channels="mean", resampler="soxr_vhq", min_seconds=1.0, pad="zero")
_SMOKE_TAGGER = (
    MetricSpec("fad", "smoke_tagger", "tagger.safetensors", _SMOKE_16K, "frames", _opts(fd_method="eigen")),
    MetricSpec("fad_inf", "smoke_tagger", "tagger.safetensors", _SMOKE_16K, "frames", _opts(fd_method="eigen", seed=0, n_points=15)),
    MetricSpec("kad", "smoke_tagger", "tagger.safetensors", _SMOKE_16K, "clip", _opts(bandwidth="median_reference")),
)
_SMOKE_TAGGER_LOGITS = (
    MetricSpec("kl", "smoke_tagger", "tagger.safetensors", _SMOKE_16K, "clip", _opts(direction="ref_gen", eps=0.0, also="gen_ref")),
    MetricSpec("is", "smoke_tagger", "tagger.safetensors", _SMOKE_16K, "clip", _opts(splits=10, seed=0, shuffle=True)),
    MetricSpec("clap", "smoke_clap", "clap.safetensors", _SMOKE_16K, "clip", _opts(report="raw")),
)
SMOKE_V1 = Recipe(
    "smoke", 1,
    "The clean policies on the smoke profile's own evaluators (a SynthCaps tagger and a small CLAP trained "
    "against frozen MiniLM): numbers comparable only within a smoke run. Superseded by version 2 (FD on aisfx).",
    _SMOKE_TAGGER + (MetricSpec("fd", "smoke_tagger", "tagger.safetensors", _SMOKE_16K, "clip", _opts(fd_method="eigen")),)
    + _SMOKE_TAGGER_LOGITS,
    n_boot=200,
)
# aisfx: a pretrained sound-effects embedding whose weights ship inside its PyPI wheel (aisfx
# 0.1.2), at 44.1 kHz; clips of 2 s at least (its blocks are 2.3 s; it refuses under 1.14 s).
AISFX_44K = AudioPolicy(44100, channels="mean", resampler="soxr_vhq", min_seconds=2.0, pad="zero")
SMOKE = Recipe(
    "smoke", 2,
    "The clean policies on the smoke profile's own evaluators (a SynthCaps tagger and a small CLAP trained "
    "against frozen MiniLM), and FD on a real pretrained model (aisfx, from its PyPI wheel): the tagger and CLAP "
    "numbers are comparable only within a smoke run; FD's embedding is the same on every machine.",
    _SMOKE_TAGGER + (MetricSpec("fd", "aisfx", "package:aisfx/models/checkpoint.pth", AISFX_44K, "blocks", _opts(fd_method="eigen")),)
    + _SMOKE_TAGGER_LOGITS,
    n_boot=200,
)
# Version 1 of the two PaSST presets was recorded before PaSST was built and got two facts wrong:
# both toolkits put eps = 1e-6 inside the log of KL's second argument (not exact log-softmax), and
# the checkpoint file is "passt-s-f128-p16-s10-ap.476-swa.pt". Published versions are never
# edited, so version 2 corrects them; version 1 stays resolvable as "name@1".
_PASST = "passt-s-f128-p16-s10-ap.476-swa.pt"
_SAM_44K = AudioPolicy(44100, channels="mean", level="peak_-1dBFS")
_SAM_32K = AudioPolicy(32000, channels="mean", level="peak_-1dBFS")
_SAM_QUIRKS = (
    "OpenL3 on stereo channels",
    "PaSST logits averaged over 10 s windows at a 5 s hop (collect='mean'), then one softmax per clip",
    "a window shorter than 10 s is zero-padded when it holds more than 1.5 s and passed unpadded otherwise",
    "KL(generated || reference) with eps 1e-6 inside the log of the reference distribution",
    "audio peak-normalised to -1 dBFS",
)
_AUDIOCRAFT_QUIRKS = (
    "10 s chunks without padding; chunks of 0.15 s or less dropped",
    "softmax of each chunk's PaSST logits; KL(reference || generated) with eps 1e-6 inside the log of the generated distribution",
    "the FAD background set is the evaluated batch's own references",
)
# Where siren-bench does not reproduce the toolkit bit for bit (listed in the README too).
_PASST_DIFFERENCES = (
    "resampling is soxr VHQ here (stable-audio-metrics: librosa's soxr_hq; audiocraft: julius' windowed sinc)",
    "clips longer than 10 s: audiocraft pairs generated and reference chunks one by one; siren-bench averages a "
    "clip's chunk logits first (identical for clips of at most 10 s, such as AudioCaps')",
)

STABLE_AUDIO_METRICS_V1 = Recipe(
    "stable_audio_metrics", 1,
    "stable-audio-metrics: OpenL3 FD at 44.1 kHz stereo, PaSST KL(generated || reference), LAION CLAP fusion. "
    "Superseded by version 2 (KL eps and checkpoint file name).",
    (
        MetricSpec("fd", "openl3_44k_stereo", "openl3 (env, mel256, 512)", _SAM_44K, "clip", _opts(fd_method="sqrtm")),
        MetricSpec("kl", "passt_32k", "passt-s-f128-p16-s10-ap.476-swa", _SAM_32K, "windows_10s_hop5s", _opts(direction="gen_ref", eps=0.0)),
        MetricSpec("clap", "clap", "630k-audioset-fusion-best.pt", _CLAP_48K, "clip", _opts(report="raw")),
    ),
    quirks=("OpenL3 on stereo channels", "KL(generated || reference) on PaSST logits averaged over 10 s windows, 5 s hop",
            "audio peak-normalised to -1 dBFS"),
)

# The OpenL3 backbone is not built in this harness: its FD stops with an error naming it.
STABLE_AUDIO_METRICS_V2 = Recipe(
    "stable_audio_metrics", 2,
    "stable-audio-metrics: OpenL3 FD at 44.1 kHz stereo (not built here), PaSST KL(generated || reference), "
    "LAION CLAP fusion.",
    (
        MetricSpec("fd", "openl3_44k_stereo", "openl3 (env, mel256, 512)", _SAM_44K, "clip", _opts(fd_method="sqrtm")),
        MetricSpec("kl", "passt_32k", _PASST, _SAM_32K, "windows_10s_hop5s", _opts(direction="gen_ref", eps=1e-6)),
        MetricSpec("clap", "clap", "630k-audioset-fusion-best.pt", _CLAP_48K, "clip", _opts(report="raw")),
    ),
    quirks=_SAM_QUIRKS + tuple(f"not reproduced: {d}" for d in _PASST_DIFFERENCES),
)

AUDIOCRAFT_V1 = Recipe(
    "audiocraft", 1,
    "audiocraft: PaSST KL at 32 kHz on 10 s chunks without padding; FAD background = the batch's own references; "
    "CLAP text consistency with LAION music_audioset_epoch_15_esc_90.14. Superseded by version 2 (KL eps and "
    "checkpoint file name).",
    (
        MetricSpec("kl", "passt_32k", "passt-s-f128-p16-s10-ap.476-swa",
                   AudioPolicy(32000, channels="mean", pad="none"), "chunks_10s", _opts(direction="ref_gen", eps=0.0)),
        MetricSpec("clap", "clap", "music_audioset_epoch_15_esc_90.14.pt", _CLAP_48K, "clip", _opts(report="raw")),
    ),
    quirks=("10 s chunks without padding", "the FAD background set is the evaluated batch's own references"),
)

AUDIOCRAFT_V2 = Recipe(
    "audiocraft", 2,
    "audiocraft: PaSST KL at 32 kHz on 10 s chunks without padding; FAD background = the batch's own references; "
    "CLAP text consistency with LAION music_audioset_epoch_15_esc_90.14.",
    (
        MetricSpec("kl", "passt_32k", _PASST, AudioPolicy(32000, channels="mean", pad="none"), "chunks_10s",
                   _opts(direction="ref_gen", eps=1e-6)),
        MetricSpec("clap", "clap", "music_audioset_epoch_15_esc_90.14.pt", _CLAP_48K, "clip", _opts(report="raw")),
    ),
    quirks=_AUDIOCRAFT_QUIRKS + tuple(f"not reproduced: {d}" for d in _PASST_DIFFERENCES),
)

# Version 3 of the two: stable-audio-metrics peak-normalises to -1 dBFS before CLAP too (its
# clap_score.py does, before the int16 round trip), which version 2's CLAP policy lacked; and
# audiocraft's version 2 named a FAD background set although the preset has no FAD.
_SAM_CLAP_48K = dataclasses.replace(_CLAP_48K, level="peak_-1dBFS")
STABLE_AUDIO_METRICS = dataclasses.replace(
    STABLE_AUDIO_METRICS_V2, version=3,
    metrics=STABLE_AUDIO_METRICS_V2.metrics[:2] + (
        MetricSpec("clap", "clap", "630k-audioset-fusion-best.pt", _SAM_CLAP_48K, "clip", _opts(report="raw")),),
    quirks=STABLE_AUDIO_METRICS_V2.quirks + ("CLAP on audio peak-normalised to -1 dBFS, then the int16 round trip",
                                             "not built: the fusion CLAP checkpoint (scoring CLAP with it is an error naming it)"),
)
AUDIOCRAFT = dataclasses.replace(
    AUDIOCRAFT_V2, version=3,
    description="audiocraft: PaSST KL at 32 kHz on 10 s chunks without padding; CLAP text consistency with LAION "
                "music_audioset_epoch_15_esc_90.14. No FAD: audiocraft computes it with Google's TensorFlow FAD tool "
                "(TF VGGish, background = the evaluated batch's references), whose recipe is `google_fad` here.",
    quirks=tuple(q for q in _AUDIOCRAFT_QUIRKS if "FAD" not in q) + (
        "not included: FAD (Google's TensorFlow tool in audiocraft; see google_fad)",)
    + tuple(f"not reproduced: {d}" for d in _PASST_DIFFERENCES),
)


def transplant(anchor: Recipe, onto: Recipe, version: int = 1) -> Recipe:
    """`onto`'s embedders under `anchor`'s choices: for every metric both recipes have, `onto`'s
    embedder, checkpoint, framing and sample rate, with the anchor's audio handling (channels, DC
    removal, resampler, level, padding, cropping, int16 round trip) and metric options (FD's matrix
    square root, KL's direction and eps, IS's shuffle and splits). What the ranking asks of a run
    without the anchor's weights: would its order change if the anchor toolkit had scored it?
    The shortest clip stays the longer of the two (an embedder's own minimum is kept)."""
    specs = []
    for spec in anchor.metrics:
        if not any(s.metric == spec.metric for s in onto.metrics):
            continue
        own = onto.spec(spec.metric)
        audio = dataclasses.replace(spec.audio, sample_rate=own.audio.sample_rate,
                                    min_seconds=max(own.audio.min_seconds, spec.audio.min_seconds))
        specs.append(dataclasses.replace(own, audio=audio, options=spec.options))
    if not specs:
        raise ValueError(f"recipes {anchor.id} and {onto.id} share no metric")
    return Recipe(f"{onto.name}_as_{anchor.name}", version,
                  f"{onto.id}'s embedders, framings and sample rates under {anchor.id}'s audio handling and metric "
                  f"options, for the metrics both have ({', '.join(s.metric for s in specs)}); the anchor's own "
                  "embedders and their framings are not reproduced.",
                  tuple(specs), n_boot=onto.n_boot, bootstrap_seed=onto.bootstrap_seed)


# The anchors' choices on the smoke evaluators: the recipes a run without real weights can afford
# for the ranking's question (eval.ranking_recipes).
SMOKE_AS_ANCHORS = tuple(transplant(anchor, SMOKE) for anchor in (AUDIOLDM_EVAL, GOOGLE_FAD, STABLE_AUDIO_METRICS, AUDIOCRAFT))

REGISTRY: dict[str, Recipe] = {r.id: r for r in (AUDIOLDM_EVAL_V1, AUDIOLDM_EVAL, GOOGLE_FAD, CLEAN, SMOKE_V1, SMOKE, STABLE_AUDIO_METRICS_V1,
                                                  STABLE_AUDIO_METRICS_V2, STABLE_AUDIO_METRICS, AUDIOCRAFT_V1, AUDIOCRAFT_V2,
                                                  AUDIOCRAFT, *SMOKE_AS_ANCHORS)}


def get_recipe(name: str) -> Recipe:
    """'name' (newest version) or 'name@version'."""
    if "@" in name:
        if name not in REGISTRY:
            raise KeyError(f"unknown recipe {name!r}; known: {sorted(REGISTRY)}")
        return REGISTRY[name]
    versions = [r for r in REGISTRY.values() if r.name == name]
    if not versions:
        raise KeyError(f"unknown recipe {name!r}; known: {sorted({r.name for r in REGISTRY.values()})}")
    return max(versions, key=lambda r: r.version)


# The embedders whose weights the `evaluators` stage trains (smoke profile), not local checkpoints.
SMOKE_EMBEDDERS = ("smoke_tagger", "smoke_clap")


def needs_smoke_evaluators(recipe_name: str) -> bool:
    """Whether the recipe scores with the evaluators stage's models (its weights are that folder)."""
    return any(spec.embedder in SMOKE_EMBEDDERS for spec in get_recipe(recipe_name).metrics)
