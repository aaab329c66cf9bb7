"""A corpus of bad inputs, built under tmp_path and fed to the entry points the stages use.

Each case gets a clear error naming the input and the problem, or a documented handling that is
recorded in the stage's output; none may be skipped silently, replaced or turned into a sentinel
value, and a failed run leaves no output behind. Categories:

- audio: zero-byte, corrupt, truncated (WAV, FLAC), empty, NaN, inf, all-silent, clipped
  (refused; scored and listed with allow_clipped), beyond full scale, three channels, stereo
  and another sample rate (mixed / resampled by the recipe and recorded per clip), shorter than
  a recipe's minimum (refused with pad "none", zero-padded and recorded otherwise), a wrong rate
  or channel count in a manifest the codec stage reads, AudioCaps files at another rate
  (refused or resampled, by config, and recorded);
- clip ids and sets: duplicated ids (folder, manifest, captions), missing ids (empty in a
  manifest or captions file, absent from the generated set, without a caption), extra ids, a
  reference file changed after its manifest, an empty folder;
- manifests: absolute paths, `..` escaping the data folder, missing audio, unreadable CSV,
  missing columns;
- captions: not UTF-8, missing file, wrong columns, empty caption;
- checkpoints: missing, truncated, wrong pinned hash, changed after training, unexpected or
  missing keys, a pickle carrying code (which must not run);
- params: overrides of the wrong type, a section that is not a mapping.
"""

from __future__ import annotations

import json
import pickle
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
import yaml
from safetensors.torch import load_file, save_file

from siren_bench.cache import ContentCache
from siren_bench.codecs import load_pretrained, load_stage_codec
from siren_bench.config import CodecConfig, ConfigError, eval_config, load_params, model_config
from siren_bench.data.audiocaps import AudioCapsError
from siren_bench.data.manifest import ManifestError, load_waves, read_manifest, write_manifest
from siren_bench.data.synthcaps import CLASS_NAMES
from siren_bench.embedders.smoke import SmokeAudioConfig, SmokeTaggerConfig, save_smoke_evaluator, train_smoke_tagger
from siren_bench.evaluation.clipsets import ClipSetError, clip_set, read_captions
from siren_bench.evaluation.embedding import EmbedderLoader
from siren_bench.evaluation.score import score_sets, write_score
from siren_bench.io import AudioFileError, sha256_file
from siren_bench.recipes import get_recipe
from siren_bench.stages import prepare
from siren_bench.weights import CheckpointError

SR = 16000
IDS = ("clip00", "clip01", "clip02")
SMOKE = get_recipe("smoke")
NO_PADDING = replace(SMOKE, metrics=tuple(replace(s, audio=replace(s.audio, pad="none")) for s in SMOKE.metrics))
TINY_DAC = dict(encoder_dim=4, encoder_rates=[2, 2], decoder_dim=8, decoder_rates=[2, 2], n_codebooks=2, codebook_size=8,
                codebook_dim=4, sample_rate=SR)


def _wave(seed: int, seconds: float = 1.0, rate: int = SR, channels: int = 1) -> np.ndarray:
    """A tone plus a little noise, different per seed; [T] or [T, channels]."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(seconds * rate))) / rate
    wave = 0.3 * np.sin(2 * np.pi * (200 + 50 * seed) * t) + 0.02 * rng.standard_normal(t.size)
    return np.stack([wave] * channels, axis=1) if channels > 1 else wave


def _write(path: Path, wave: np.ndarray, rate: int = SR, subtype: str = "FLOAT") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), wave, rate, subtype=subtype)
    return path


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    """A smoke tagger with the smoke recipe's file name, small and trained for one step: the
    cases need its loading and input checks, not good embeddings."""
    folder = tmp_path_factory.mktemp("weights")
    labels = np.eye(len(CLASS_NAMES), dtype=int)
    config = SmokeTaggerConfig(audio=SmokeAudioConfig(channels=(8, 8, 8, 8), hidden_dim=16, embed_dim=8), steps=1, batch_size=2)
    tagger = train_smoke_tagger([_wave(i) for i in range(4)], labels[:4], config, seed=0,
                                val_waves=[_wave(i) for i in (4, 5)], val_labels=labels[4:6])
    save_smoke_evaluator(tagger, folder / "tagger.safetensors")
    return folder


@dataclass
class Env:
    """One test's inputs: a generated folder and a reference manifest (clip00..clip02, 1 s each),
    the evaluator weights; every entry point that writes writes under `out`."""

    root: Path
    weights: Path

    @property
    def generated(self) -> Path:
        return self.root / "generated"

    @property
    def manifest(self) -> Path:
        return self.root / "reference" / "manifest.csv"

    @property
    def out(self) -> Path:
        return self.root / "out"

    def score(self, recipe=SMOKE, metrics=("kad",), allow_clipped=False, captions_file: Path | None = None):
        """What `siren-bench score` and the score stage do: both sets, score_sets, write_score."""
        captions = read_captions(captions_file) if captions_file else None
        outcome = score_sets(clip_set(self.generated), clip_set(self.manifest), recipe, EmbedderLoader(self.weights),
                             ContentCache(self.root / "cache"), metrics=list(metrics), n_boot=5, captions=captions,
                             captions_source=None if captions_file is None else str(captions_file), allow_clipped=allow_clipped)
        return write_score(self.out, outcome)

    def manifest_rows(self) -> list[dict]:
        return pd.read_csv(self.manifest, dtype=str, keep_default_na=False).to_dict("records")

    def rewrite_manifest(self, edit: Callable[[list[dict]], list[dict]]) -> Path:
        write_manifest(self.manifest, edit(self.manifest_rows()))
        return self.manifest


@pytest.fixture
def env(tmp_path, weights) -> Env:
    env = Env(tmp_path, weights)
    rows = []
    for i, clip_id in enumerate(IDS):
        _write(env.generated / f"{clip_id}.wav", _wave(10 + i))
        audio = _write(env.manifest.parent / "audio" / f"{clip_id}.wav", _wave(20 + i), subtype="PCM_16")
        rows.append({"clip_id": clip_id, "split": "test", "audio": f"audio/{clip_id}.wav", "sha256": sha256_file(audio),
                     "caption": f"a tone number {i}", "sample_rate": SR, "num_samples": SR})
    write_manifest(env.manifest, rows)
    return env


# ----------------------------------------------------------------------------------- builders
# Each builder makes the bad input in an Env and returns the call that must refuse (or record) it.

def generated_clip(write: Callable[[Path], Any], **score: Any) -> Callable[[Env], Callable[[], Any]]:
    """clip01 of the generated set replaced by what `write` puts at .../clip01.wav; then scored."""

    def build(env: Env):
        target = env.generated / "clip01.wav"
        target.unlink()
        write(target)
        return lambda: env.score(**score)

    return build


def truncated(fmt: str) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        path = path.with_suffix(f".{fmt.lower()}")
        sf.write(str(path), _wave(11), SR, format=fmt, subtype="PCM_16")
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])

    return write


def with_sample(value: float) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        wave = _wave(11)
        wave[100] = value
        _write(path, wave)

    return write


def hard_clipped(path: Path) -> None:
    wave = _wave(11)
    _write(path, np.clip(3 * wave / np.abs(wave).max(), -1.0, 1.0))  # a loud render, clipped at full scale


def extra_generated_file(name: str, **score: Any):
    def build(env: Env):
        _write(env.generated / name, _wave(13), subtype="PCM_16")
        return lambda: env.score(**score)

    return build


def remove_generated(clip_id: str, **score: Any):
    def build(env: Env):
        (env.generated / f"{clip_id}.wav").unlink()
        return lambda: env.score(**score)

    return build


def empty_generated(env: Env):
    for path in env.generated.iterdir():
        path.unlink()
    return lambda: env.score()


def changed_reference(env: Env):
    _write(env.manifest.parent / "audio" / "clip01.wav", _wave(99), subtype="PCM_16")
    return lambda: env.score()


def manifest_edit(edit: Callable[[list[dict]], list[dict]]):
    """The reference manifest rewritten by `edit`; read as the scorer reads it."""

    def build(env: Env):
        env.rewrite_manifest(edit)
        return lambda: env.score()

    return build


def set_audio(clip_id: str, audio: str) -> Callable[[list[dict]], list[dict]]:
    return lambda rows: [r | {"audio": audio} if r["clip_id"] == clip_id else r for r in rows]


def manifest_bytes(content: bytes):
    def build(env: Env):
        env.manifest.write_bytes(content)
        return lambda: read_manifest(env.manifest)

    return build


def codec_stage_audio(wave: np.ndarray, rate: int):
    """clip01 of the manifest replaced (hash updated) by audio the codec stage cannot train on."""

    def build(env: Env):
        audio = _write(env.manifest.parent / "audio" / "clip01.wav", wave, rate, subtype="PCM_16")
        env.rewrite_manifest(lambda rows: [r | {"sha256": sha256_file(audio)} if r["clip_id"] == "clip01" else r for r in rows])
        return lambda: load_waves(read_manifest(env.manifest, verify_hashes=True), SR)

    return build


def audiocaps(bad_wave: np.ndarray, bad_rate: int, **data: Any):
    """The prepare stage on a two-clip AudioCaps folder whose second file is `bad_wave`."""

    def build(env: Env):
        audio = env.root / "audiocaps"
        _write(audio / "aaa.wav", _wave(1), subtype="PCM_16")
        _write(audio / "bbb.wav", bad_wave, bad_rate, subtype="PCM_16")
        listing = env.root / "list.csv"
        listing.write_text("audiocap_id,youtube_id,start_time,caption\n1,aaa,0,A tone\n2,bbb,0,Another tone\n")
        params = env.root / "params.yaml"
        params.write_text(yaml.safe_dump({
            "run": {"profile": "test", "device": "cpu", "artifacts_dir": str(env.out), "reports_dir": str(env.root / "reports")},
            "data": {"name": "audiocaps", "audio_dir": str(audio), "test_list": str(listing), "protocol": "custom",
                     "clip_seconds": 1.0, **data}}))
        return lambda: prepare.run(params)

    return build


def captions(content: bytes | None, **score: Any):
    """A captions file (clip_id,caption) as `siren-bench score --captions` reads it."""

    def build(env: Env):
        path = env.root / "captions.csv"
        if content is not None:
            path.write_bytes(content)
        if score:  # scored with these captions
            return lambda: env.score(captions_file=path, **score)
        return lambda: read_captions(path)

    return build


def evaluator(edit: Callable[[Path], None], pins: dict | None = None):
    """A copy of the smoke tagger (weights + config JSON) changed by `edit`, opened as the scorer does."""

    def build(env: Env):
        folder = env.root / "w"
        folder.mkdir()
        for name in ("tagger.safetensors", "tagger.json"):
            (folder / name).write_bytes((env.weights / name).read_bytes())
        edit(folder / "tagger.safetensors")
        return lambda: EmbedderLoader(folder, pins).open(SMOKE.spec("fad"))

    return build


def drop_a_tensor(path: Path) -> None:
    """Weights without one tensor, re-recorded in the config so that only the keys are wrong."""
    state = load_file(str(path))
    del state[sorted(state)[0]]
    save_file(state, str(path))
    meta_path = path.with_suffix(".json")
    meta_path.write_text(json.dumps(json.loads(meta_path.read_text()) | {"weights_sha256": sha256_file(path)}))


def dac_checkpoint(make: Callable[[Path], None], sha256: str | None = None):
    """An original descript-audio-codec file made by `make`, loaded as the codec stage loads it."""

    def build(env: Env):
        path = env.root / "weights_16khz.pth"
        make(path)
        config = CodecConfig(name="dac_16khz", source="dac_original", path=str(path), sha256=sha256)
        return lambda: load_pretrained(config)

    return build


def dac_file(state: dict) -> Callable[[Path], None]:
    return lambda path: torch.save({"state_dict": state, "metadata": {"kwargs": TINY_DAC}}, path)


def dac_truncated(path: Path) -> None:
    dac_file({"quantizer.quantizers.0.codebook.weight": torch.randn(256, 64)})(path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


class Smuggler:
    """Unpickling this calls open(marker, "w"): code run by loading a checkpoint."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


def dac_pickle_with_code(path: Path) -> None:
    path.write_bytes(pickle.dumps({"state_dict": Smuggler(path.parent / "code-ran"), "metadata": {"kwargs": TINY_DAC}}, protocol=2))


def no_code_ran(env: Env, result) -> None:
    assert not (env.root / "code-ran").exists(), "unpickling the checkpoint ran its code"


def missing_stage_codec(env: Env):
    return lambda: load_stage_codec(env.root / "artifacts" / "codec")


def params_file(sections: dict, read: Callable):
    """A params.yaml as `dvc exp run -S key=value` would leave it, read by a stage's config loader."""

    def build(env: Env):
        path = env.root / "params.yaml"
        path.write_text(yaml.safe_dump(sections))
        return lambda: read(load_params(path), str(path))

    return build


# ----------------------------------------------------------------------------------- recorded handling

def per_clip(env: Env) -> pd.DataFrame:
    return pd.read_csv(env.out / "per_clip.csv").set_index("clip_id")


def clipped_listed(env: Env, result) -> None:
    results = json.loads((env.out / "results.json").read_text())
    assert results["allow_clipped"] is True
    assert results["clipped_clips"] == {"generated": ["clip01"], "reference": []}
    assert per_clip(env).loc["clip01", "clipped_fraction"] > 0.001


def recorded_fact(column: str, value: float) -> Callable[[Env, Any], None]:
    def check(env: Env, result) -> None:
        table = per_clip(env)
        assert table.loc["clip01", column] == pytest.approx(value)
        assert (table.drop(index="clip01")[column] != table.loc["clip01", column]).all()

    return check


def audiocaps_recorded(env: Env, result) -> None:
    row = pd.read_csv(Path(result) / "manifest.csv").set_index("clip_id").loc["bbb"]
    assert row["source_sample_rate"] == 22050 and bool(row["resampled"])
    assert row["source_channels"] == 2 and row["padded_seconds"] == pytest.approx(0.5)
    assert json.loads((Path(result) / "dataset.json").read_text())["resampled"] == 1


# ----------------------------------------------------------------------------------- the corpus

@dataclass(frozen=True)
class Case:
    id: str
    build: Callable[[Env], Callable[[], Any]]
    raises: type[Exception] | None  # None: a documented handling, checked by `check`
    patterns: tuple[str, ...] = ()  # regexes the message must match: the input's name and the problem
    check: Callable[[Env, Any], None] | None = None


CASES = [
    # audio, through scoring
    Case("audio-zero-byte", generated_clip(lambda p: p.write_bytes(b"")), AudioFileError, (r"clip01\.wav", "zero-byte file")),
    Case("audio-corrupt", generated_clip(lambda p: p.write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunk" * 20)), AudioFileError,
         (r"clip01\.wav", "corrupt or unreadable audio")),
    Case("audio-truncated-wav", generated_clip(truncated("WAV")), AudioFileError, (r"clip01\.wav", "truncated WAV file")),
    Case("audio-truncated-flac", generated_clip(truncated("FLAC")), AudioFileError, (r"clip01\.flac", "corrupt or unreadable")),
    Case("audio-no-samples", generated_clip(lambda p: _write(p, np.zeros(0))), AudioFileError, (r"clip01\.wav", r"empty audio \(0 samples\)")),
    Case("audio-nan", generated_clip(with_sample(np.nan)), AudioFileError, (r"clip01\.wav", "1 NaN or infinite samples")),
    Case("audio-inf", generated_clip(with_sample(-np.inf)), AudioFileError, (r"clip01\.wav", "1 NaN or infinite samples")),
    Case("audio-all-silent", generated_clip(lambda p: _write(p, np.zeros(SR))), AudioFileError,
         (r"clip01\.wav", "all samples are zero")),
    Case("audio-clipped-refused", generated_clip(hard_clipped), AudioFileError, (r"clip01\.wav", r"clipped: .*\(allow with --allow-clipped")),
    Case("audio-clipped-allowed-is-listed", generated_clip(hard_clipped, allow_clipped=True), None, check=clipped_listed),
    Case("audio-beyond-full-scale", generated_clip(with_sample(1.5)), AudioFileError, (r"clip01\.wav", r"clipped: .*peak 1\.5000")),
    Case("audio-three-channels", generated_clip(lambda p: _write(p, _wave(11, channels=3))), AudioFileError,
         (r"clip01\.wav", "3 channels; scoring takes mono or stereo")),
    Case("audio-stereo-is-mixed-and-recorded", generated_clip(lambda p: _write(p, _wave(11, channels=2))), None,
         check=recorded_fact("channels", 2)),
    Case("audio-other-rate-is-resampled-and-recorded", generated_clip(lambda p: _write(p, _wave(11, rate=22050), 22050)), None,
         check=recorded_fact("sample_rate", 22050)),
    Case("audio-short-refused-without-padding", generated_clip(lambda p: _write(p, _wave(11, 0.5)), recipe=NO_PADDING),
         AudioFileError, (r"clip01\.wav", r"0\.500 s is shorter than the recipe's minimum 1\.0 s")),
    Case("audio-short-is-padded-and-recorded", generated_clip(lambda p: _write(p, _wave(11, 0.5))), None,
         check=recorded_fact("seconds", 0.5)),
    # audio the pipeline's own stages read
    Case("codec-stage-wrong-sample-rate", codec_stage_audio(_wave(21, rate=22050), 22050), ManifestError,
         (r"clip01\.wav", r"expected mono 16000 Hz audio, found 1 channel\(s\) at 22050 Hz")),
    Case("codec-stage-wrong-channel-count", codec_stage_audio(_wave(21, channels=2), SR), ManifestError,
         (r"clip01\.wav", r"found 2 channel\(s\)")),
    Case("audiocaps-wrong-rate-refused", audiocaps(_wave(2, rate=22050), 22050, on_sample_rate_mismatch="error"), AudioCapsError,
         (r"bbb\.wav", "sample rate 22050 Hz, expected 16000 Hz")),
    Case("audiocaps-silent-refused", audiocaps(np.zeros(SR), SR), AudioCapsError, (r"bbb\.wav", "all samples are zero")),
    Case("audiocaps-rate-channels-length-recorded", audiocaps(_wave(2, 0.5, rate=22050, channels=2), 22050), None,
         check=audiocaps_recorded),
    # clip ids and matching sets
    Case("ids-duplicated-in-folder", extra_generated_file("clip01.flac"), ClipSetError,
         (r"generated", r"clip id 'clip01' is given twice \(clip01\.flac and clip01\.wav\)")),
    Case("ids-duplicated-in-manifest", manifest_edit(lambda rows: rows + rows[1:2]), ManifestError,
         (r"manifest\.csv", r"duplicated clip ids \['clip01'\]")),
    Case("ids-missing-in-manifest", manifest_edit(lambda rows: [r | {"clip_id": ""} if r["clip_id"] == "clip01" else r for r in rows]),
         ManifestError, (r"manifest\.csv", r"empty clip id on line\(s\) \[3\]")),
    Case("ids-generated-lacks-a-reference-clip", remove_generated("clip02", metrics=("kl",)), ClipSetError,
         (r"KL pairs clips by id", r"1 reference ids have no generated clip \(e\.g\. \['clip02'\]\)")),
    Case("ids-generated-has-an-extra-clip", extra_generated_file("stranger.wav", metrics=("kl",)), ClipSetError,
         (r"KL pairs clips by id", r"1 generated ids have no reference \(e\.g\. \['stranger'\]\)")),
    Case("ids-generated-clip-without-caption", captions(b"clip_id,caption\nclip00,a tone\nclip01,a tone\n", metrics=("clap",)),
         ClipSetError, (r"captions\.csv", r"needs a caption for every generated clip; 1 have none \(e\.g\. \['clip02'\]\)")),
    Case("set-reference-changed-after-manifest", changed_reference, ClipSetError,
         (r"clip01\.wav", r"SHA-256 .* differs from .* in .*manifest\.csv \(clip 'clip01'\)")),
    Case("set-generated-folder-empty", empty_generated, ClipSetError, (r"generated", "no audio files")),
    # manifests
    Case("manifest-absolute-path", manifest_edit(set_audio("clip01", "/etc/passwd")), ManifestError,
         (r"manifest\.csv, line 3 \(clip 'clip01'\)", r"audio path '/etc/passwd' is absolute")),
    Case("manifest-dotdot-escape", manifest_edit(set_audio("clip01", "audio/../../generated/clip01.wav")), ManifestError,
         (r"manifest\.csv, line 3 \(clip 'clip01'\)", "escapes the data folder")),
    Case("manifest-missing-audio-file", manifest_edit(set_audio("clip01", "audio/gone.wav")), ManifestError,
         (r"manifest\.csv, line 3", r"audio file .*gone\.wav does not exist")),
    Case("manifest-not-utf8", manifest_bytes(b"\xff\xfeclip_id,split\x00\x81\n"), ManifestError,
         (r"manifest\.csv", "not a readable manifest CSV")),
    Case("manifest-truncated", manifest_bytes(b'clip_id,split,audio,sha256,caption\nclip00,test,audio/clip00.wav,abc,"a to'),
         ManifestError, (r"manifest\.csv", "not a readable manifest CSV")),
    Case("manifest-missing-columns", manifest_bytes(b"clip_id,audio\nclip00,audio/clip00.wav\n"), ManifestError,
         (r"manifest\.csv", r"missing columns \['split', 'sha256'")),
    # captions
    Case("captions-not-utf8", captions(b"clip_id,caption\nclip00,caf\xe9 noise\n"), ClipSetError, (r"captions\.csv", "cannot read captions")),
    Case("captions-missing-file", captions(None), ClipSetError, (r"captions\.csv", "cannot read captions")),
    Case("captions-wrong-columns", captions(b"id,text\nclip00,a tone\n"), ClipSetError,
         (r"captions\.csv", r"captions need columns clip_id and caption, found \['id', 'text'\]")),
    Case("captions-empty-caption", captions(b"clip_id,caption\nclip00,a tone\nclip01,  \n"), ClipSetError,
         (r"captions\.csv", r"empty captions for clips \['clip01'\]")),
    Case("captions-missing-clip-id", captions(b"clip_id,caption\nclip00,a tone\n,a tone\n"), ClipSetError,
         (r"captions\.csv", r"empty clip id on line\(s\) \[3\]")),
    Case("captions-duplicated-clip-id", captions(b"clip_id,caption\nclip00,a tone\nclip00,a bell\n"), ClipSetError,
         (r"captions\.csv", r"clip ids given twice: \['clip00'\]")),
    # checkpoints
    Case("checkpoint-missing", evaluator(lambda p: p.unlink()), CheckpointError,
         (r"tagger\.safetensors", "checkpoint 'tagger.safetensors' for smoke_tagger not found")),
    Case("checkpoint-truncated", dac_checkpoint(dac_truncated), CheckpointError,
         (r"weights_16khz\.pth", "cannot be loaded as a weights-only torch checkpoint")),
    Case("checkpoint-changed-after-training", evaluator(lambda p: p.write_bytes(p.read_bytes()[:-100])), CheckpointError,
         (r"tagger\.safetensors", r"does not match the .* recorded in tagger\.json")),
    Case("checkpoint-wrong-pinned-hash", dac_checkpoint(dac_file({}), sha256="0" * 64), CheckpointError,
         (r"weights_16khz\.pth", "does not match the pinned 0{64}")),
    Case("checkpoint-wrong-pinned-hash-evaluator", evaluator(lambda p: None, pins={"tagger.safetensors": "f" * 64}), CheckpointError,
         (r"tagger\.safetensors", "does not match the pinned f{64}")),
    Case("checkpoint-unexpected-key", dac_checkpoint(dac_file({"transformer.layers.0.weight": torch.zeros(4)})), CheckpointError,
         (r"weights_16khz\.pth", "unexpected key 'transformer.layers.0.weight'")),
    Case("checkpoint-missing-key", evaluator(drop_a_tensor), CheckpointError,
         (r"tagger\.safetensors", r"weights do not fit the model: 1 missing")),
    Case("checkpoint-pickle-with-code", dac_checkpoint(dac_pickle_with_code), CheckpointError,
         (r"weights_16khz\.pth", "cannot be loaded as a weights-only torch checkpoint"), check=no_code_ran),
    Case("checkpoint-stage-codec-missing", missing_stage_codec, CheckpointError, (r"codec/codec\.json", "run the codec stage first")),
    # params
    Case("params-int-given-a-word", params_file({"model": {"dim": "wide"}}, model_config), ConfigError,
         (r"params\.yaml", r"model\.dim", "could not be converted to Integer")),
    Case("params-int-given-a-float", params_file({"model": {"batch_size": 2.5}}, model_config), ConfigError,
         (r"params\.yaml", r"model\.batch_size", "could not be converted to Integer")),
    Case("params-bool-given-a-word", params_file({"eval": {"allow_clipped": "sometimes"}}, eval_config), ConfigError,
         (r"params\.yaml", r"eval\.allow_clipped", "not a valid bool")),
    Case("params-mapping-given-a-number", params_file({"eval": {"weights_sha256": 5}}, eval_config), ConfigError,
         (r"params\.yaml", r"eval\.weights_sha256", "Cannot assign int")),
    Case("params-section-not-a-mapping", params_file({"model": "tiny"}, model_config), ConfigError,
         (r"params\.yaml", "section 'model' must be a mapping")),
]


def _files_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_refused_by_name_or_handled_as_documented(env, case):
    call = case.build(env)
    if case.raises is None:
        result = call()
    else:
        with pytest.raises(case.raises) as info:
            call()
        message, result = str(info.value), None
        for pattern in case.patterns:
            assert re.search(pattern, message), f"{pattern!r} not in the message: {message}"
        # resume state is not output: AudioCaps keeps the clips it decoded before meeting a bad file,
        # so the run after the fix does not decode 50k clips again (the error says where they are)
        output = [f for f in _files_under(env.out) if "resume" not in Path(f).parts]
        assert output == [], "a failed run left output behind"
    if case.check is not None:
        case.check(env, result)


def test_the_corpus_covers_the_issue():
    """At least 25 distinct cases; ids are unique (they name the case in a failure)."""
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids)) >= 25
