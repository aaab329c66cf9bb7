"""The one config loader every stage uses.

`params.yaml` is the composed Hydra config (conf/ -> params.yaml, rewritten by `dvc exp run`).
Stages read it here and turn the sections they need into typed dataclasses, so a value of the
wrong type or a missing required value fails up front with the file and key named, instead of
deep inside a stage.
"""

from __future__ import annotations

import dataclasses
import math
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, TypeVar

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from siren_bench.io import sha256_json
from siren_bench.errors import ConfigError  # noqa: F401  (re-exported)

T = TypeVar("T")


@dataclass
class RunConfig:
    profile: str
    seed: int = 0
    device: str = "auto"
    artifacts_dir: str = "artifacts"
    reports_dir: str = "reports"
    cache_dir: str = "artifacts/cache"  # content-addressed, shared by profiles
    threads: int = 2  # torch CPU threads


@dataclass
class SplitFractions:
    train: float = 0.8
    val: float = 0.1
    test: float = 0.1


@dataclass
class SynthCapsConfig:
    name: str = "synthcaps"
    sample_rate: int = 16000
    clip_seconds: float = 4.0
    n_clips: int = 480
    seed: int = 1234
    max_events: int = 3
    splits: SplitFractions = field(default_factory=SplitFractions)


@dataclass
class AudioCapsConfig:
    name: str = "audiocaps"
    audio_dir: str = "???"  # one folder, searched recursively, holding every split's files
    # The split lists (conf/data/audiocaps.yaml: the AudioCaps 1.0 lists shipped in protocols/audiocaps/).
    # test_list may be a published subset (AudioLDM's 964-clip JSON, Tango's 886-clip JSONL); null
    # train_list / val_list: a run without that split (scoring only).
    test_list: str = "???"
    train_list: str | None = None
    val_list: str | None = None
    # auto: name the test protocol from the list's SHA-256; a protocol name: require that one;
    # custom: accept any lists, recording their counts and hashes (train and val are otherwise
    # required to be AudioCaps 1.0's).
    protocol: str = "auto"
    max_missing_fraction: float = 0.15  # of a split's clips absent from audio_dir; above it the run refuses
    workers: int = 2  # processes decoding and hashing the clips in the prepare stage
    # false: no decoded copy; each stage that reads a clip decodes its source file (the same samples
    # and hash); true: decode once into artifacts/<profile>/resume/ and hard-link it (16 GB for train)
    store_decoded: bool = False
    sample_rate: int = 16000
    clip_seconds: float = 10.0
    channel_policy: str = "mean"  # mean | first
    on_sample_rate_mismatch: str = "resample"  # resample | error
    filename_patterns: list[str] = field(
        default_factory=lambda: [
            "{youtube_id}",
            "Y{youtube_id}",
            "{youtube_id}_{start_time}",
            "Y{youtube_id}_{start_time}",
            "{audiocap_id}",
        ]
    )
    extensions: list[str] = field(default_factory=lambda: [".wav", ".flac", ".ogg", ".mp3"])


CODEC_SOURCES = ("train", "dac_original", "dac_hf", "encodec_original", "encodec_hf")


@dataclass
class CodecConfig:
    """Which codec tokenizes the audio: the small codec trained by the `codec` stage
    (source=train), or pretrained weights from a local file or HF folder."""

    name: str = "small_rvq"
    source: str = "train"
    path: str | None = None  # pretrained sources: the weights file or HF folder
    sha256: str | None = None  # pretrained sources: pinned SHA-256 of the weights file (all 64 hex digits)
    # architecture of the trained codec: "mel" (RVQ of log-mel frames fitted by k-means, Griffin-Lim
    # synthesis; codecs/melrvq.py), "spectral" (log-mel encoder, DAC's quantizer, inverse-STFT
    # decoder; codecs/spectral.py) or "dac" (transformers' DacModel)
    architecture: str = "mel"
    hop_length: int = 320  # mel, spectral: samples per frame (the STFT window is 4x)
    n_mels: int = 128  # mel: the quantized frame; spectral: the encoder input
    griffin_lim_iters: int = 8  # mel: phase-recovery iterations of the synthesis
    kmeans_iterations: int = 30  # mel: Lloyd iterations per codebook (0: k-means++ seeding only)
    kmeans_max_frames: int = 50000  # mel: training frames drawn for the fit
    width: int = 128  # spectral: channels of encoder and decoder
    n_blocks: int = 4  # spectral: ConvNeXt blocks in each of encoder and decoder
    latent_dim: int = 64  # spectral: the latent the quantizer sees
    # dac: transformers DacConfig fields
    encoder_hidden_size: int = 8
    decoder_hidden_size: int = 64
    downsampling_ratios: list[int] = field(default_factory=lambda: [2, 4, 5, 8])
    n_codebooks: int = 8
    codebook_size: int = 256
    codebook_dim: int = 8
    quantizer_dropout: float = 0.5
    # training
    train_steps: int = 400
    batch_size: int = 8
    crop_seconds: float = 1.0
    learning_rate: float = 1e-3
    seed: int = 0
    checkpoint_every: int = 100
    mel_windows: list[int] = field(default_factory=lambda: [256, 512, 1024])
    mel_weight: float = 1.0
    mel_floor: float = 1e-5  # additive floor of the log-mel loss (mel power units)
    waveform_weight: float = 1.0
    vq_weight: float = 1.0
    dead_code_reset_every: int = 10  # steps; 0 turns it off
    # tokenize / diagnose
    batch_clips: int = 16
    probe_seeds: int = 5  # bootstrap fits per linear probe (error bars of semantic richness)
    text_probe: bool = True  # also regress caption text embeddings (offline MiniLM)
    aisfx_probe: bool = True  # also regress each clip's pretrained aisfx embedding (the smoke recipe's FD network)


@dataclass
class BlockShape:
    """What Siren's blocks (attention, temporal and depth blocks, SwiGLU) read, and the data's
    shape. Siren's config and every baseline's extend it, so these fields are defined once.
    Defaults: the official Siren 1.6B (REFERENCES.md §2); the shape fields may be null in params
    (then the pipeline fills them from its codec and text encoder)."""

    n_codebooks: int | None = 12
    codebook_size: int | None = 1024
    text_dim: int | None = 768
    dim: int = 1024
    n_heads: int = 16
    n_kv_heads: int = 16  # < n_heads: grouped KV heads
    dropout: float = 0.1
    max_frames: int = 2048
    norm_eps: float = 1e-5
    init_std: float = 0.02
    ffn_multiple: int = 256  # SwiGLU hidden = int(8 dim / 3) rounded up to this multiple

    @property
    def ffn_hidden(self) -> int:
        hidden = int(8 * self.dim / 3)
        return self.ffn_multiple * math.ceil(hidden / self.ffn_multiple)


@dataclass
class SirenConfig(BlockShape):
    code_dim: int | None = 1024  # the codec's latent width D (DAC 16 kHz: 1024)
    codebooks_per_expert: int = 2
    groups: list[list[int]] | None = None  # explicit grouping; overrides codebooks_per_expert
    # False: the ablation without causal conditioning; before(t) is the pooled text alone, so an
    # expert sees lower codebooks only through frame t-1's sum in its temporal path
    causal_conditioning: bool = True
    # ours, not the official code's: a learned null caption per expert, which caption dropout
    # trains and classifier-free guidance samples against (false: the official module set)
    null_caption: bool = True
    temporal_layers: int = 14
    depth_layers: int = 2

    def expert_groups(self) -> list[list[int]]:
        """The codebooks each expert predicts, in order; they must tile 0..K-1 contiguously."""
        if self.groups is not None:
            groups = [list(map(int, g)) for g in self.groups]
        else:
            size = self.codebooks_per_expert
            if size < 1 or self.n_codebooks % size:
                raise ValueError(f"codebooks_per_expert={size} does not divide n_codebooks={self.n_codebooks}; give model.groups explicitly")
            groups = [list(range(start, start + size)) for start in range(0, self.n_codebooks, size)]
        flat = [k for g in groups for k in g]
        if flat != list(range(self.n_codebooks)) or any(not g for g in groups):
            raise ValueError(f"expert groups {groups} must split codebooks 0..{self.n_codebooks - 1} into contiguous, ordered, non-empty runs")
        return groups


@dataclass
class ModelConfig(SirenConfig):
    """Siren (`model.*`): the architecture (SirenConfig's fields, inherited, so defined once; the
    codec's shape fields and text_dim null = taken from the pipeline's codec and text encoder),
    the text conditioning, Stage-1 training and sampling. conf/model/*.yaml hold each preset's
    values, every field spelled out (siren_1_6b / siren_3_1b: the official architecture and
    training recipe; siren_tiny: the CPU smoke size); the defaults here are a small CPU recipe."""

    name: str = "siren_1_6b"
    # text conditioning (siren_bench/text.py): minilm (shipped in its package), clap or t5 from local weights
    text_encoder: str = "minilm"
    text_encoder_path: str | None = None  # clap: an HF ClapModel folder or a LAION .pt; t5: an HF folder
    text_encoder_sha256: str | None = None  # pin of the weights file
    text_max_tokens: int = 128  # the official code's CLAP limit
    # Stage-1 training (the official recipe's shape: AdamW, warm-up, cosine to 0.1 x lr, clip 1.0)
    train_steps: int = 800
    batch_size: int = 16
    grad_accum: int = 1
    crop_frames: int = 300  # official: 6 s crops = 300 frames; shorter clips train whole
    learning_rate: float = 3e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    weight_decay: float = 0.05  # matrices only
    warmup_steps: int = 50
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0
    caption_dropout: float = 0.1  # for classifier-free guidance
    seed: int = 0  # expert i trains with seed + i
    checkpoint_every: int = 100
    val_every: int = 100
    # gradient interference (diagnostics/interference.py), measured on a fixed batch of val clips
    interference_every: int = 100  # steps; 0 turns it off
    interference_clips: int = 8
    bf16: bool = True  # autocast on CUDA only
    activation_checkpointing: bool = False  # recompute block activations in backward: memory for compute (GPU sizes)
    # several ranks: "ddp" replicates the model on each; "fsdp" shards each block's parameters,
    # gradients and optimizer state over them (FSDP2), for a model whose training states do not fit one GPU
    sharding: str = "ddp"
    # generation
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    guidance: float = 3.0
    generation_seed: int = 0


@dataclass
class AlignConfig:
    """The anti-causal alignment stage (models/align.py; its choices in docs/alignment.md). The
    paper publishes no algorithm, reward or hyper-parameters: every value here is the harness's."""

    expert: int = 0  # which expert is tuned (0: the coarse one, as the paper describes)
    steps: int = 100
    captions_per_step: int = 4
    group_size: int = 4  # samples per caption; advantages are relative within the group
    n_frames: int = 100  # length of each rollout (the reward's reference clip is cut to match)
    temperature: float = 1.0
    ppo_epochs: int = 2
    clip_eps: float = 0.2
    kl_coef: float = 0.05  # weight of KL(policy || Stage-1 expert)
    normalise_std: bool = True  # advantages divided by their group's std
    learning_rate: float = 1e-5
    warmup_steps: int = 10  # linear warm-up of the learning rate (Adam's first steps are large otherwise)
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    # reward = audio_weight x cosine(audio embedding of the sample, of the caption's reference clip)
    #        + clap_weight x cosine(CLAP audio embedding of the sample, CLAP text embedding of the caption)
    audio_weight: float = 1.0
    clap_weight: float = 0.0
    reward_recipe: str | None = None  # recipe whose embedders the reward uses; null: eval.recipe
    audio_metric: str = "fad"  # its metric whose embedder gives the audio embedding (mean over frames)
    clap_metric: str = "clap"  # its metric whose CLAP model gives the text-audio term
    seed: int = 0
    checkpoint_every: int = 25

    def __post_init__(self):
        problems = [f"{k} must be positive, got {getattr(self, k)}" for k in
                    ("steps", "captions_per_step", "n_frames", "ppo_epochs", "checkpoint_every", "temperature")
                    if not getattr(self, k) > 0]
        if self.group_size < 2:
            problems.append(f"group_size must be at least 2 (advantages are relative within a group), got {self.group_size}")
        if not 0 < self.clip_eps < 1:
            problems.append(f"clip_eps must be in (0, 1), got {self.clip_eps}")
        if self.kl_coef < 0 or self.learning_rate <= 0 or self.grad_clip <= 0 or self.warmup_steps < 0:
            problems.append("kl_coef and warmup_steps must be non-negative, learning_rate and grad_clip positive")
        if self.audio_weight < 0 or self.clap_weight < 0 or not (self.audio_weight or self.clap_weight):
            problems.append(f"audio_weight and clap_weight must be non-negative and not both 0, got "
                            f"{self.audio_weight} and {self.clap_weight}")
        if problems:
            raise ConfigError("align: " + "; ".join(problems))


TEXT_ENCODERS = ("minilm", "clap", "t5")  # Siren's text conditioning backends (text.py)
CODEC_ARCHITECTURES = ("mel", "spectral", "dac")  # of the trainable small codec (codecs/train.py)
# The systems `generate` renders besides the baselines; a baseline is any key of params' `baselines`
# section (see baselines_config), registered by its module in baselines/ (baselines/registry.py).
BUILTIN_SYSTEMS = ("codec_resynthesis", "real_unpaired", "siren", "siren_aligned")


@dataclass
class EvalConfig:
    """How generated audio is scored (`evaluators`, `generate` and `score` stages)."""

    recipe: str = "smoke"  # a name in siren_bench.recipes.REGISTRY, "name" or "name@version"
    systems: list[str] = field(default_factory=lambda: ["codec_resynthesis", "real_unpaired"])  # rendered by `generate`
    # user-registered models, also rendered by `generate` and scored like the rest: name -> a folder
    # of rendered test clips (<clip_id>.wav) or a generator `module:function` (siren_bench/external.py)
    external: dict[str, str] = field(default_factory=dict)
    n_bootstrap: int | None = None  # None: the recipe's own number of bootstrap resamples
    weights_dir: str | None = None  # folder holding the checkpoint files the recipe names (real recipes)
    weights_sha256: dict[str, str] = field(default_factory=dict)  # checkpoint name -> pinned SHA-256
    allow_clipped: bool = False  # score clipped clips (recorded per clip) instead of refusing them
    # Where and how scoring embeds: "auto" is CUDA when present; clips per embedder call (null: 1 on
    # the CPU, 32 on CUDA); threads decoding and resampling the next clips while the model runs.
    # Device and clips per call are in every cached embedding's key (siren_bench/evaluation/embedding.py).
    device: str = "auto"
    embed_batch: int | None = None
    loader_threads: int = 2
    # seed replicates (siren_bench/replicates.py): each trained system (siren, siren_aligned,
    # baselines) is trained, aligned, rendered and scored this many times, replicate k with every
    # seed shifted by k * 1000; the report's table gives the mean over them
    seeds: int = 1
    # ranking robustness (evaluation/ranking.py): half-samples of the test clips over which each
    # pair of systems' order is re-measured under every metric; 0 ranks on all clips only
    ranking_resamples: int = 30
    # further recipes the score stage measures every system's first replicate under, for the ranking
    # only ("would the order change under another toolkit's recipe?"); their embedders must come
    # from the same place as eval.recipe's (the evaluators stage for smoke, else eval.weights_dir)
    ranking_recipes: list[str] = field(default_factory=list)
    # the smoke evaluators (SynthCaps tagger, small CLAP against frozen MiniLM)
    tagger_steps: int = 600
    clap_steps: int = 400
    evaluator_seed: int = 0


DataConfig = SynthCapsConfig | AudioCapsConfig
_DATA_CONFIGS: dict[str, type] = {"synthcaps": SynthCapsConfig, "audiocaps": AudioCapsConfig}


def load_params(path: str | Path = "params.yaml") -> DictConfig:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: params file not found (run from the repository root or pass --params)")
    try:
        params = OmegaConf.load(path)
    except Exception as exc:  # yaml errors come in several types
        raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
    if not isinstance(params, DictConfig):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    OmegaConf.set_struct(params, False)
    return params


def section(params: DictConfig, key: str, schema: type[T], *, source: str = "params.yaml") -> T:
    """Validate `params[key]` against a dataclass schema and return an instance of it."""
    if key not in params:
        raise ConfigError(f"{source}: missing section '{key}'")
    if not isinstance(params[key], DictConfig):
        raise ConfigError(f"{source}: section '{key}' must be a mapping of keys to values, got {params[key]!r}")
    try:
        merged = OmegaConf.merge(OmegaConf.structured(schema), params[key])
        missing = sorted(OmegaConf.missing_keys(merged))
        if missing:
            keys = ", ".join(f"{key}.{m}" for m in missing)
            raise ConfigError(f"{source}: required value not set: {keys} (pass e.g. -S {key}.{missing[0]}=...)")
        return OmegaConf.to_object(merged)  # type: ignore[return-value]
    except OmegaConfBaseException as exc:  # name the dotted key (OmegaConf's own text names it relative to the section)
        where = f"{key}.{exc.full_key}" if getattr(exc, "full_key", None) else f"section '{key}'"
        raise ConfigError(f"{source}: invalid value for {where}: {str(exc).splitlines()[0]}") from exc


def run_config(params: DictConfig, source: str = "params.yaml") -> RunConfig:
    return section(params, "run", RunConfig, source=source)


def data_config(params: DictConfig, source: str = "params.yaml") -> DataConfig:
    name = OmegaConf.select(params, "data.name")
    if name not in _DATA_CONFIGS:
        raise ConfigError(f"{source}: data.name must be one of {sorted(_DATA_CONFIGS)}, got {name!r}")
    config = section(params, "data", _DATA_CONFIGS[name], source=source)
    if isinstance(config, SynthCapsConfig):
        _check_synthcaps(config, source)
    else:
        _check_audiocaps(config, source)
    return config


def _check_audiocaps(config: AudioCapsConfig, source: str) -> None:
    _check_choice(source, "data.channel_policy", config.channel_policy, ("mean", "first"))
    _check_choice(source, "data.on_sample_rate_mismatch", config.on_sample_rate_mismatch, ("resample", "error"))
    problems = _common_audio_problems(config.sample_rate, config.clip_seconds)
    if config.workers < 1:
        problems.append(f"data.workers must be at least 1, got {config.workers}")
    if not 0.0 <= config.max_missing_fraction < 1.0:
        problems.append(f"data.max_missing_fraction must be in [0, 1), got {config.max_missing_fraction}")
    fields = {"youtube_id", "start_time", "audiocap_id"}
    for pattern in config.filename_patterns:
        try:
            used = {name for _, name, _, _ in string.Formatter().parse(pattern) if name is not None}
        except ValueError as exc:
            problems.append(f"data.filename_patterns entry {pattern!r} is malformed ({exc})")
            continue
        if not used or used - fields:
            problems.append(f"data.filename_patterns entry {pattern!r} must use only {sorted(fields)}")
    if problems:
        raise ConfigError(f"{source}: " + "; ".join(problems))


def _common_audio_problems(sample_rate: int, clip_seconds: float) -> list[str]:
    problems = []
    if sample_rate < 8000:
        problems.append(f"data.sample_rate must be at least 8000 Hz, got {sample_rate}")
    if clip_seconds < 1.0:
        problems.append(f"data.clip_seconds must be at least 1.0, got {clip_seconds}")
    return problems


def _check_choice(source: str, key: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{source}: {key} must be one of {list(choices)}, got {value!r}")


def _check_synthcaps(config: SynthCapsConfig, source: str) -> None:
    problems = _common_audio_problems(config.sample_rate, config.clip_seconds)
    if config.n_clips < 3:
        problems.append(f"data.n_clips must be at least 3 (one per split), got {config.n_clips}")
    if config.seed < 0:
        problems.append(f"data.seed must be non-negative, got {config.seed}")
    if not 1 <= config.max_events <= 3:
        problems.append(f"data.max_events must be 1, 2 or 3, got {config.max_events}")
    fractions = dataclasses.astuple(config.splits)
    if min(fractions) <= 0 or abs(sum(fractions) - 1.0) > 1e-9:
        problems.append(f"data.splits must be positive and sum to 1, got {fractions}")
    if problems:
        raise ConfigError(f"{source}: " + "; ".join(problems))


def codec_config(params: DictConfig, source: str = "params.yaml") -> CodecConfig:
    config = section(params, "codec", CodecConfig, source=source)
    _check_choice(source, "codec.source", config.source, CODEC_SOURCES)
    _check_choice(source, "codec.architecture", config.architecture, CODEC_ARCHITECTURES)
    if config.source != "train" and not config.path:
        raise ConfigError(f"{source}: codec.source={config.source} needs codec.path (a local weights file or folder)")
    if config.source == "train" and (config.train_steps < 1 or config.n_codebooks < 1):
        raise ConfigError(f"{source}: codec.train_steps and codec.n_codebooks must be positive")
    if config.source == "train" and config.architecture == "mel" and (
            config.kmeans_iterations < 0 or config.griffin_lim_iters < 0 or config.kmeans_max_frames < config.codebook_size):
        raise ConfigError(f"{source}: codec.kmeans_iterations and codec.griffin_lim_iters must be >= 0 and codec.kmeans_max_frames "
                          f"at least codec.codebook_size ({config.codebook_size}); got {config.kmeans_iterations}, "
                          f"{config.griffin_lim_iters}, {config.kmeans_max_frames}")
    return config


def model_config(params: DictConfig, source: str = "params.yaml") -> ModelConfig:
    config = section(params, "model", ModelConfig, source=source)
    problems = [f"model.{k} must be positive, got {getattr(config, k)}" for k in
                ("train_steps", "batch_size", "grad_accum", "crop_frames", "checkpoint_every", "val_every", "interference_clips")
                if getattr(config, k) < 1]
    if config.interference_every < 0:
        problems.append(f"model.interference_every must be 0 (off) or positive, got {config.interference_every}")
    if not 0 <= config.caption_dropout < 1:
        problems.append(f"model.caption_dropout must be in [0, 1), got {config.caption_dropout}")
    if not config.null_caption and (config.caption_dropout or config.guidance != 1.0):
        problems.append(f"model.null_caption=false leaves Siren no null caption, so model.caption_dropout "
                        f"({config.caption_dropout}) must be 0 and model.guidance ({config.guidance}) 1, as in the official code")
    if config.sharding not in ("ddp", "fsdp"):
        problems.append(f"model.sharding must be ddp or fsdp, got {config.sharding!r}")
    elif config.sharding == "fsdp" and config.interference_every:
        problems.append("model.sharding=fsdp: the gradient-interference probe needs the whole model on one rank; "
                        "set model.interference_every=0 (interference is then not measured)")
    if config.text_encoder not in TEXT_ENCODERS:
        problems.append(f"model.text_encoder must be one of {list(TEXT_ENCODERS)}, got {config.text_encoder!r}")
    elif config.text_encoder == "minilm" and config.text_encoder_path is not None:
        problems.append("model.text_encoder_path must be null for minilm (it ships in its package)")
    if problems:
        raise ConfigError(f"{source}: " + "; ".join(problems))
    return config


def align_config(params: DictConfig, source: str = "params.yaml") -> AlignConfig:
    try:
        return section(params, "align", AlignConfig, source=source)
    except ConfigError as exc:
        if str(exc).startswith("align: "):  # from AlignConfig's own checks, which do not know the file
            raise ConfigError(f"{source}: {exc}") from exc
        raise


@dataclass
class SweepConfig:
    """Siren retrained from scratch in variants (`sweep` stage), each scored with the profile's
    recipe. The fidelity-capacity sweep: Siren and the shared LM on the first d codebooks for
    each d in `depths`, next to the codec's own resynthesis at depth d (the full depth is the
    main run's). The ablations: `ablations` maps an ablation (models/ablations.py) to the depth
    it runs at (null: the full depth, compared with the main run's Siren; a depth d: compared
    with Siren retrained at d)."""

    depths: list[int] = field(default_factory=lambda: [2, 4])
    systems: list[str] = field(default_factory=lambda: ["siren", "shared_lm"])
    ablations: dict[str, Optional[int]] = field(default_factory=dict)


def sweep_config(params: DictConfig, source: str = "params.yaml", known_ablations=()) -> SweepConfig:
    """The sweep section; `known_ablations` are the names models/ablations.py registers (passed in
    by the sweep stage, so that the config, imported by every stage, does not import the models)."""
    config = section(params, "sweep", SweepConfig, source=source)
    unknown = [s for s in config.systems if s not in ("siren", "shared_lm")]
    if unknown or any(d < 1 for d in config.depths) or len(set(config.depths)) != len(config.depths):
        raise ConfigError(f"{source}: sweep.systems must be among [siren, shared_lm] and sweep.depths distinct positive "
                          f"codebook counts, got {config.systems} and {config.depths}")
    for name, depth in config.ablations.items():
        if name not in known_ablations:
            raise ConfigError(f"{source}: sweep.ablations: unknown ablation {name!r}; known: {sorted(known_ablations)}")
        if depth is not None and depth < 1:
            raise ConfigError(f"{source}: sweep.ablations.{name}: depth must be a positive codebook count or null, got {depth}")
    return config


def baselines_config(params: DictConfig, source: str = "params.yaml") -> dict[str, dict]:
    """Architectures of the baselines (`train_baselines` stage), by name: each holds fields of that
    model's config dataclass (its module in baselines/; unknown fields are refused when it is
    built), the pipeline fills the data's shape, and `{}` keeps the class's defaults (shared_lm's:
    one Siren expert's sizes). They train with model.* settings, like Siren. A key here is what
    makes a baseline nameable in eval.systems, so a misspelt system fails before any training;
    without the section no baseline is."""
    value = params.get("baselines") or OmegaConf.create({})  # no section: no baseline can be named
    if not isinstance(value, DictConfig):
        raise ConfigError(f"{source}: section 'baselines' must map baseline names to their architecture fields, got {value!r}")
    architectures = {}
    for name, fields in value.items():
        if not str(name).isidentifier() or name in BUILTIN_SYSTEMS:
            raise ConfigError(f"{source}: baselines.{name}: a baseline name must be an identifier other than {list(BUILTIN_SYSTEMS)}")
        if fields is not None and not isinstance(fields, DictConfig):
            raise ConfigError(f"{source}: baselines.{name} must be a mapping of architecture fields (or {{}}), got {fields!r}")
        architectures[str(name)] = {} if fields is None else OmegaConf.to_container(fields, resolve=True)
    return architectures


def baseline_systems(params: DictConfig, source: str = "params.yaml") -> list[str]:
    """The baselines eval.systems asks for, in its order."""
    known = baselines_config(params, source)
    return [name for name in eval_config(params, source).systems if name in known]


def _check_ranking_recipes(config: EvalConfig, source: str) -> None:
    """Each ranking recipe is known, distinct from the others and from eval.recipe, and reads its
    weights where eval.recipe does (one evaluators folder or weights_dir per scoring run)."""
    from siren_bench.recipes import get_recipe, needs_smoke_evaluators

    main = get_recipe(config.recipe)
    seen = {main.id}
    for name in config.ranking_recipes:
        try:
            recipe = get_recipe(name)
        except KeyError as exc:
            raise ConfigError(f"{source}: eval.ranking_recipes: {exc.args[0]}") from exc
        if recipe.id in seen:
            raise ConfigError(f"{source}: eval.ranking_recipes lists {recipe.id} twice or as eval.recipe itself")
        seen.add(recipe.id)
        if needs_smoke_evaluators(recipe.id) != needs_smoke_evaluators(main.id):
            raise ConfigError(f"{source}: eval.ranking_recipes: {recipe.id} reads its weights from "
                              f"{'the evaluators stage' if needs_smoke_evaluators(recipe.id) else 'eval.weights_dir'}, "
                              f"eval.recipe {main.id} from {'the evaluators stage' if needs_smoke_evaluators(main.id) else 'eval.weights_dir'}: "
                              "a run scores from one of the two")


def eval_config(params: DictConfig, source: str = "params.yaml") -> EvalConfig:
    config = section(params, "eval", EvalConfig, source=source)
    from siren_bench.recipes import get_recipe  # recipes import nothing from here; keep config light

    try:
        get_recipe(config.recipe)
    except KeyError as exc:
        raise ConfigError(f"{source}: eval.recipe: {exc.args[0]}") from exc
    if config.n_bootstrap is not None and config.n_bootstrap < 1:
        raise ConfigError(f"{source}: eval.n_bootstrap must be positive or null, got {config.n_bootstrap}")
    if config.ranking_resamples < 0:
        raise ConfigError(f"{source}: eval.ranking_resamples must be 0 or more, got {config.ranking_resamples}")
    _check_ranking_recipes(config, source)
    if config.seeds < 1:
        raise ConfigError(f"{source}: eval.seeds must be at least 1, got {config.seeds}")
    generated = [*BUILTIN_SYSTEMS, *baselines_config(params, source)]
    unknown = [name for name in config.systems if name not in generated]
    if unknown or not config.systems:
        raise ConfigError(f"{source}: eval.systems must list some of {generated} (the built-in systems and the "
                          f"baselines with a section in 'baselines'), got {config.systems}")
    clashing = [name for name in config.external if not name.isidentifier() or name in generated]
    if clashing:
        raise ConfigError(f"{source}: eval.external: model names must be identifiers other than the generated systems "
                          f"{generated}, got {clashing}")
    if "siren_aligned" in config.systems and "siren" not in config.systems:
        raise ConfigError(f"{source}: eval.systems lists siren_aligned without siren: alignment starts from the Stage-1 "
                          "model, and the report compares the two")
    if config.tagger_steps < 1 or config.clap_steps < 1:
        raise ConfigError(f"{source}: eval.tagger_steps and eval.clap_steps must be positive")
    if config.device not in ("auto", "cpu") and not config.device.startswith("cuda"):
        raise ConfigError(f"{source}: eval.device must be auto, cpu or cuda[:N], got {config.device!r}")
    if (config.embed_batch is not None and config.embed_batch < 1) or config.loader_threads < 0:
        raise ConfigError(f"{source}: eval.embed_batch must be positive or null and eval.loader_threads >= 0, "
                          f"got {config.embed_batch} and {config.loader_threads}")
    return config


def to_plain(obj: Any) -> Any:
    """A dataclass or DictConfig as plain JSON-able data (for provenance and hashing)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    if isinstance(obj, DictConfig):
        return OmegaConf.to_container(obj, resolve=True)
    if isinstance(obj, dict):
        return {key: to_plain(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_plain(value) for value in obj]
    return obj


def config_hash(obj: Any) -> str:
    return sha256_json(to_plain(obj))


# model.* fields that do not change the weights training produces: sampling, how often it is
# measured and checkpointed (the probe and validation draw no random numbers), and where the text
# encoder lies (its weights' hash is in the data identity)
NOT_TRAINING = ("temperature", "top_k", "top_p", "guidance", "generation_seed", "val_every", "checkpoint_every",
                "interference_every", "interference_clips", "text_encoder_path", "text_encoder_sha256")


def training_identity(config: "ModelConfig") -> dict:
    """What names a training run in its resume key: model.* without NOT_TRAINING, so changing the
    guidance scale after the train-expert jobs finished, or mounting the weights elsewhere, still
    finds their states instead of training everything again."""
    return {k: v for k, v in to_plain(config).items() if k not in NOT_TRAINING}
