"""`siren-bench score` and `audit` on folders of audio (siren_bench.evaluation): the numbers are the
metrics of the files' embeddings, every input is recorded by hash, the cache answers only what
it should, audit re-derives a score and names what changed, and bad input stops with the file.

Runs the smoke recipe on small evaluators trained for a few steps on 1 s SynthCaps clips.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from siren_bench.audio_input import apply_policy
from siren_bench.cache import ContentCache
from siren_bench.cli import main
from siren_bench.data.manifest import write_manifest
from siren_bench.data.synthcaps import CLASS_NAMES, generate_clip
from siren_bench.embedders.smoke import (
    SmokeAudioConfig, SmokeClapConfig, SmokeTaggerConfig, load_smoke_tagger, save_smoke_evaluator, train_smoke_clap,
    train_smoke_tagger,
)
from siren_bench.evaluation import score as score_module
from siren_bench.evaluation.audit import audit
from siren_bench.evaluation.clipsets import ClipSetError, clip_set, folder_clips, manifest_clips
from siren_bench.evaluation.embedding import EmbedderLoader
from siren_bench.evaluation.score import score_sets
from siren_bench.io import AudioFileError, read_audio, sha256_file
from siren_bench.metrics.frechet import GaussianStats, frechet_distance
from siren_bench.recipes import get_recipe
from siren_bench.text import load_minilm
from siren_bench.weights import CheckpointError

SR = 16000
N = 12
AUDIO = SmokeAudioConfig(channels=(16, 16, 16, 16), hidden_dim=32, embed_dim=16)
SMOKE = get_recipe("smoke@1")  # the tagger-only version: these tests are about scoring mechanics, fast on random tagger weights


def _clip(seed: int, index: int):
    return generate_clip(seed, index, SR, 1.0, max_events=1)


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    """Smoke evaluators with the recipe's file names, trained a few steps on other clips."""
    folder = tmp_path_factory.mktemp("weights")
    clips = [_clip(5, i) for i in range(24)]
    waves = [c.wave for c in clips]
    labels = np.array([[int(n in c.labels) for n in CLASS_NAMES] for c in clips])
    tagger = train_smoke_tagger(waves[:18], labels[:18], SmokeTaggerConfig(audio=AUDIO, steps=10, batch_size=8), seed=0,
                                val_waves=waves[18:], val_labels=labels[18:])
    clap = train_smoke_clap(waves[:18], [c.caption for c in clips[:18]], load_minilm(),
                            SmokeClapConfig(audio=AUDIO, shared_dim=16, text_hidden_dim=32, steps=10, batch_size=8), seed=0,
                            val_waves=waves[18:], val_captions=[c.caption for c in clips[18:]])
    save_smoke_evaluator(tagger, folder / "tagger.safetensors")
    save_smoke_evaluator(clap, folder / "clap.safetensors")
    return folder


@pytest.fixture
def sets(tmp_path) -> dict:
    """A reference manifest (12 clips with captions) and a generated folder with the same ids."""
    rows = []
    for i in range(N):
        clip, clip_id = _clip(21, i), f"clip{i:02d}"
        path = tmp_path / "reference" / "audio" / f"{clip_id}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, clip.wave, SR, subtype="PCM_16")
        rows.append({"clip_id": clip_id, "split": "test", "audio": f"audio/{clip_id}.wav", "sha256": sha256_file(path),
                     "caption": clip.caption, "sample_rate": SR, "num_samples": len(clip.wave)})
        generated = tmp_path / "generated" / f"{clip_id}.wav"
        generated.parent.mkdir(exist_ok=True)
        sf.write(generated, _clip(22, i).wave, SR, subtype="FLOAT")
    write_manifest(tmp_path / "reference" / "manifest.csv", rows)
    return {"generated": tmp_path / "generated", "manifest": tmp_path / "reference" / "manifest.csv",
            "cache": tmp_path / "cache", "out": tmp_path / "out"}


def _cli_score(sets, weights, *extra, out=None) -> int:
    return main(["score", "--generated", str(sets["generated"]), "--reference", str(sets["manifest"]), "--recipe", "smoke@1",
                 "--weights-dir", str(weights), "--out", str(out or sets["out"]), "--cache-dir", str(sets["cache"]),
                 "--n-boot", "20", *extra])


def _score(sets, weights, recipe=SMOKE, **kwargs):
    return score_sets(folder_clips(sets["generated"]), manifest_clips(sets["manifest"]), recipe, EmbedderLoader(weights),
                      ContentCache(sets["cache"]), n_boot=10, **kwargs)


def test_score_cli_writes_results_whose_fad_is_the_files_fad(sets, weights, capsys):
    assert _cli_score(sets, weights) == 0
    assert "score: wrote" in capsys.readouterr().out
    results = json.loads((sets["out"] / "results.json").read_text())
    assert results["recipe"]["id"] == "smoke@1" and results["recipe"]["sha256"] == SMOKE.sha256
    assert set(results["metrics"]) == {"fad", "fad_inf", "kad", "fd", "kl", "is", "clap"}
    for metric, r in results["metrics"].items():
        assert r["n_generated"] == N and r["ci_low"] < r["ci_high"], metric
    for metric in ("kl", "clap", "fad_inf"):  # means of per-clip values, and a fitted intercept: the value lies inside;
        r = results["metrics"][metric]  # FD-type intervals may not contain it (bootstrap bias, metrics/bootstrap.py)
        assert r["ci_low"] <= r["value"] <= r["ci_high"], metric
    assert results["metrics"]["fad"]["weights_sha256"] == sha256_file(weights / "tagger.safetensors")
    assert results["metrics"]["clap"]["weights_sha256"] == sha256_file(weights / "clap.safetensors")
    assert [c["sha256"] for c in results["generated"]["clips"]] == [sha256_file(p) for p in sorted(sets["generated"].iterdir())]
    assert results["captions"]["texts"]["clip00"] == _clip(21, 0).caption
    assert results["packages"]["numpy"] == np.__version__

    # FAD recomputed here by hand: the tagger's patch embeddings of each file, Gaussian FD
    tagger = load_smoke_tagger(weights / "tagger.safetensors", level="patch")
    spec = SMOKE.spec("fad")

    def frames(folder: Path) -> np.ndarray:
        waves = []
        for path in sorted(folder.glob("*.wav")):
            wave, rate = read_audio(path)
            waves.append(apply_policy(wave.T, rate, spec.audio, path.name))
        return np.concatenate([tagger.embed([w])[0].frames for w in waves])  # one clip per call, as the scorer does

    expected = frechet_distance(GaussianStats.from_features(frames(sets["generated"])),
                                GaussianStats.from_features(frames(sets["manifest"].parent / "audio"))).value
    assert results["metrics"]["fad"]["value"] == pytest.approx(expected, rel=1e-9)
    assert results["metrics"]["fad"]["n_frames"] == len(frames(sets["generated"]))

    per_clip = pd.read_csv(sets["out"] / "per_clip.csv")
    assert len(per_clip) == N and {"fad_clip_fd", "kl", "clap_cosine", "clipped_fraction"} <= set(per_clip.columns)
    assert per_clip["kl"].mean() == pytest.approx(results["metrics"]["kl"]["value"], rel=1e-9)
    assert per_clip["clap_cosine"].mean() == pytest.approx(results["metrics"]["clap"]["value"], rel=1e-9)


def test_warm_cache_embeds_nothing_and_gives_the_same_file(sets, weights, tmp_path):
    assert _cli_score(sets, weights) == 0
    first = (sets["out"] / "results.json").read_bytes()
    cold = _score(sets, weights)
    warm = _score(sets, weights)
    assert cold.cache_hits > 0 and warm.cache_misses == 0
    assert _cli_score(sets, weights, out=tmp_path / "again") == 0
    assert (tmp_path / "again" / "results.json").read_bytes() == first


def _misses_by_kind(monkeypatch) -> dict:
    """Count cache misses per key kind (embedding, text-embedding, reference-stats)."""
    counts: dict = {}
    original = score_module.embed_clips

    def counting(clips, spec, embedder, cache, **kwargs):
        before = cache.misses
        result = original(clips, spec, embedder, cache, **kwargs)
        counts[(spec.embedder, spec.framing)] = counts.get((spec.embedder, spec.framing), 0) + cache.misses - before
        return result

    monkeypatch.setattr(score_module, "embed_clips", counting)
    return counts


def test_a_changed_file_recipe_knob_or_checkpoint_recomputes_exactly_what_it_affects(sets, weights, tmp_path, monkeypatch):
    _score(sets, weights)
    counts = _misses_by_kind(monkeypatch)

    # one generated file changes: that clip, once per embedding group (tagger patch, tagger clip, CLAP)
    sf.write(sets["generated"] / "clip03.wav", _clip(23, 3).wave, SR, subtype="FLOAT")
    _score(sets, weights)
    assert counts == {("smoke_tagger", "frames"): 1, ("smoke_tagger", "clip"): 1, ("smoke_clap", "clip"): 1}

    # one audio-policy knob of the CLAP metric: every CLAP embedding (generated and reference), nothing else
    counts.clear()
    clap = SMOKE.spec("clap")
    changed = dataclasses.replace(SMOKE, metrics=tuple(
        dataclasses.replace(s, audio=dataclasses.replace(s.audio, remove_dc=True)) if s is clap else s for s in SMOKE.metrics))
    assert changed.sha256 != SMOKE.sha256
    _score(sets, weights, recipe=changed)
    assert counts == {("smoke_tagger", "frames"): 0, ("smoke_tagger", "clip"): 0, ("smoke_clap", "clip"): 2 * N}

    # a metric option (KL direction) changes the recipe but no embedding
    counts.clear()
    kl = SMOKE.spec("kl")
    other_kl = dataclasses.replace(SMOKE, metrics=tuple(
        dataclasses.replace(s, options=(("direction", "gen_ref"), ("eps", 0.0))) if s is kl else s for s in SMOKE.metrics))
    _score(sets, weights, recipe=other_kl, metrics=["kl"])
    assert counts == {("smoke_tagger", "clip"): 0}

    # another tagger checkpoint: every tagger embedding, no CLAP one
    counts.clear()
    swapped = tmp_path / "swapped"
    shutil.copytree(weights, swapped)
    other = train_smoke_tagger([_clip(6, i).wave for i in range(8)], np.eye(len(CLASS_NAMES), dtype=int)[np.arange(8) % 12],
                               SmokeTaggerConfig(audio=AUDIO, steps=2, batch_size=4), seed=1,
                               val_waves=[_clip(7, i).wave for i in range(2)], val_labels=np.eye(len(CLASS_NAMES), dtype=int)[:2])
    save_smoke_evaluator(other, swapped / "tagger.safetensors")
    _score(sets, swapped)
    assert counts == {("smoke_tagger", "frames"): 2 * N, ("smoke_tagger", "clip"): 2 * N, ("smoke_clap", "clip"): 0}


def test_reference_statistics_are_computed_once_for_every_system(sets, weights, monkeypatch):
    calls = []
    original = score_module.reference_gaussian
    monkeypatch.setattr(score_module, "reference_gaussian", lambda ref, level: calls.append(level) or original(ref, level))
    _score(sets, weights)
    assert sorted(calls) == ["clip", "frames"]  # FD (clip vectors) and FAD / FAD-inf (frames)
    sf.write(sets["generated"] / "clip00.wav", _clip(24, 0).wave, SR, subtype="FLOAT")  # another system
    _score(sets, weights)
    assert sorted(calls) == ["clip", "frames"]


def test_audit_rederives_a_score_and_names_what_differs(sets, weights):
    assert _cli_score(sets, weights) == 0
    report = audit(sets["out"])
    assert report.ok, report.text()
    assert report.cache_misses == 0 and report.cache_hits > 0

    # a corrupted cache entry is detected and recomputed, and the numbers still agree
    entry = next(sets["cache"].rglob("*.npz"))
    entry.write_bytes(entry.read_bytes()[:-10] + b"0123456789")
    again = audit(sets["out"])
    assert again.ok and again.cache_misses == 1

    # an edited number
    results = json.loads((sets["out"] / "results.json").read_text())
    results["metrics"]["kl"]["value"] += 0.01
    (sets["out"] / "results.json").write_text(json.dumps(results))
    edited = audit(sets["out"])
    assert not edited.ok and any(d.startswith("kl: kl.value recorded") for d in edited.differences)
    assert main(["audit", str(sets["out"] / "results.json")]) == 1

    # a changed input file
    assert _cli_score(sets, weights) == 0
    sf.write(sets["generated"] / "clip05.wav", _clip(25, 5).wave, SR, subtype="FLOAT")
    changed = audit(sets["out"])
    assert not changed.ok and any("clip05.wav" in d and "SHA-256" in d for d in changed.differences)

    # changed weights
    assert _cli_score(sets, weights) == 0
    moved = sets["out"].parent / "other-weights"
    shutil.copytree(weights, moved)
    (moved / "clap.safetensors").write_bytes((moved / "clap.safetensors").read_bytes() + b" ")
    swapped = audit(sets["out"], weights_dir=moved)
    assert not swapped.ok and any("weights of clap" in d for d in swapped.differences)


# ----------------------------------------------------------------------------------- bad input

def _write_bad(folder: Path, case: str) -> str:
    """Make one generated file bad in the way `case` says; returns what the error must mention."""
    target = folder / "clip04.wav"
    if case == "unreadable":
        target.write_bytes(b"RIFF\x00\x00not audio at all")
        return "clip04.wav"
    if case == "zero_bytes":
        target.write_bytes(b"")
        return "zero-byte"
    if case == "nan":
        wave = _clip(22, 4).wave.copy()
        wave[100] = np.nan
        sf.write(target, wave, SR, subtype="FLOAT")
        return "NaN"
    if case == "clipped":
        wave = _clip(22, 4).wave
        sf.write(target, np.clip(3 * wave / np.abs(wave).max(), -1, 1), SR, subtype="FLOAT")  # a loud render, hard-clipped
        return "clipped"
    if case == "beyond_full_scale":
        wave = _clip(22, 4).wave.copy()
        wave[10] = 1.5
        sf.write(target, wave, SR, subtype="FLOAT")
        return "clipped"
    if case == "three_channels":
        sf.write(target, np.stack([_clip(22, 4).wave] * 3, axis=1), SR, subtype="FLOAT")
        return "3 channels"
    if case == "missing_clip":
        target.unlink()
        return "clip04"
    if case == "extra_clip":
        sf.write(folder / "stranger.wav", _clip(22, 4).wave, SR, subtype="FLOAT")
        return "stranger"
    if case == "duplicate_id":
        sf.write(folder / "clip04.flac", _clip(22, 4).wave, SR)
        return "given twice"
    if case == "empty_folder":
        for path in folder.iterdir():
            path.unlink()
        return "no audio files"
    raise AssertionError(case)


BAD_CASES = ["unreadable", "zero_bytes", "nan", "clipped", "beyond_full_scale", "three_channels", "missing_clip",
             "extra_clip", "duplicate_id", "empty_folder"]


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_generated_input_is_refused_by_name_and_writes_nothing(sets, weights, case, capsys):
    needle = _write_bad(sets["generated"], case)
    assert _cli_score(sets, weights) == 2
    err = capsys.readouterr().err
    assert "error:" in err and needle in err, err
    assert not sets["out"].exists()


def test_clipped_clips_are_scored_and_listed_when_allowed(sets, weights):
    _write_bad(sets["generated"], "clipped")
    assert _cli_score(sets, weights, "--allow-clipped") == 0
    results = json.loads((sets["out"] / "results.json").read_text())
    assert results["allow_clipped"] and results["clipped_clips"] == {"generated": ["clip04"], "reference": []}


def test_clips_shorter_than_a_no_padding_recipe_allows_are_refused(sets, weights):
    sf.write(sets["generated"] / "clip02.wav", _clip(22, 2).wave[: SR // 2], SR, subtype="FLOAT")
    strict = dataclasses.replace(SMOKE, metrics=tuple(dataclasses.replace(s, audio=dataclasses.replace(s.audio, pad="none"))
                                                      for s in SMOKE.metrics))
    with pytest.raises(AudioFileError, match=r"clip02\.wav.*shorter than the recipe's minimum"):
        _score(sets, weights, recipe=strict)


@pytest.mark.parametrize("case", ["missing", "wrong_pin", "corrupt"])
def test_missing_or_wrong_weights_are_refused_by_name(sets, weights, tmp_path, case, capsys):
    folder = tmp_path / "w"
    shutil.copytree(weights, folder)
    extra = []
    if case == "missing":
        (folder / "tagger.safetensors").unlink()
    elif case == "wrong_pin":
        extra = ["--pin", "tagger.safetensors=" + "0" * 64]
    else:
        (folder / "clap.safetensors").write_bytes(b"\x00" * 100)
    assert _cli_score(sets, folder, *extra) == 2
    err = capsys.readouterr().err
    assert ("tagger.safetensors" if case != "corrupt" else "clap.safetensors") in err
    assert not sets["out"].exists()


def test_clap_without_captions_is_an_error_unless_left_out(sets, weights, tmp_path, capsys):
    folder = tmp_path / "refs"
    shutil.copytree(sets["manifest"].parent / "audio", folder)
    main(["score", "--generated", str(sets["generated"]), "--reference", str(folder), "--recipe", "smoke@1", "--weights-dir",
          str(weights), "--out", str(sets["out"]), "--cache-dir", str(sets["cache"]), "--n-boot", "5"])
    assert "needs a caption for every generated clip" in capsys.readouterr().err
    captions = tmp_path / "captions.csv"
    pd.DataFrame({"clip_id": [f"clip{i:02d}" for i in range(N)], "caption": ["a tone"] * N}).to_csv(captions, index=False)
    assert main(["score", "--generated", str(sets["generated"]), "--reference", str(folder), "--recipe", "smoke@1",
                 "--weights-dir", str(weights), "--out", str(sets["out"]), "--cache-dir", str(sets["cache"]),
                 "--n-boot", "5", "--captions", str(captions)]) == 0
    assert main(["score", "--generated", str(sets["generated"]), "--reference", str(folder), "--recipe", "smoke@1",
                 "--weights-dir", str(weights), "--out", str(tmp_path / "o2"), "--cache-dir", str(sets["cache"]),
                 "--n-boot", "5", "--metrics", "fad,kad"]) == 0
    assert set(json.loads((tmp_path / "o2" / "results.json").read_text())["metrics"]) == {"fad", "kad"}


def test_out_folder_that_is_not_a_score_is_never_replaced(sets, weights, capsys):
    sets["out"].mkdir()
    (sets["out"] / "thesis.tex").write_text("precious")
    assert _cli_score(sets, weights) == 2
    assert "not an earlier score output" in capsys.readouterr().err
    assert (sets["out"] / "thesis.tex").read_text() == "precious"


def test_a_changed_reference_file_is_not_taken_for_the_manifests(sets):
    path = sets["manifest"].parent / "audio" / "clip01.wav"
    sf.write(path, _clip(30, 1).wave, SR, subtype="PCM_16")
    with pytest.raises(ClipSetError, match=r"clip01\.wav: SHA-256 .* differs"):
        clip_set(sets["manifest"])


def test_recipes_with_unbuilt_backbones_say_so(sets, weights):
    with pytest.raises(CheckpointError, match="OpenL3"):
        _score(sets, weights, recipe=get_recipe("stable_audio_metrics"), metrics=["fd"])


def test_asking_for_a_metric_the_recipe_lacks_is_an_error(sets, weights):
    with pytest.raises(ClipSetError, match=r"recipe google_fad@1 has no \['kl'\]"):
        _score(sets, weights, recipe=get_recipe("google_fad"), metrics=["kl"])


def test_a_metric_that_is_not_finite_is_an_error_not_a_null(sets, weights, monkeypatch):
    monkeypatch.setattr(score_module, "score_metric", lambda spec, *a, **k: {"metric": spec.metric, "value": float("inf")})
    with pytest.raises(ClipSetError, match="fad: value is not finite"):
        _score(sets, weights, metrics=["fad"])


def test_two_torchrun_ranks_share_the_embedding_and_each_holds_the_one_process_set(tmp_path):
    """Rank r embeds the uncached clips r, r + 2, ...; after the barrier both ranks hold every
    clip's embedding, bit for bit what one process computes, and each clip was embedded once."""
    import subprocess
    import sys

    import numpy as np

    from tests.conftest import REPO, tone, write_audio
    from tests.embed_ddp_worker import embed

    for i in range(5):
        write_audio(tmp_path / "audio" / f"c{i}.wav", tone(1.0, 16000, freq=200.0 * (i + 1)), 16000)
    torchrun = Path(sys.executable).parent / "torchrun"
    done = subprocess.run([str(torchrun), "--standalone", "--nproc-per-node", "2", "-m", "tests.embed_ddp_worker", str(tmp_path)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert [int((tmp_path / f"calls-rank{r}.txt").read_text()) for r in (0, 1)] == [3, 2]
    single, calls = embed(tmp_path, tmp_path / "single-cache")
    assert calls == 5
    for rank in (0, 1):
        with np.load(tmp_path / f"rank{rank}.npz") as held:
            assert sorted(held.files) == sorted(single)
            assert all(np.array_equal(held[k], single[k]) for k in single)

    # ranks given different clip lists: each rank stops with the error, none embeds a mixed split
    done = subprocess.run([str(torchrun), "--standalone", "--nproc-per-node", "2", "-m", "tests.embed_ddp_worker", str(tmp_path),
                           "mismatch"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    for rank in (0, 1):
        error = (tmp_path / f"error-mismatch-rank{rank}.txt").read_text()
        assert "the list of clips or the compute settings ({'device': 'cpu', 'batch_clips': " in error, error
        assert "differs between ranks: ranks [0] hold" in error and "ranks [1] hold" in error, error

    # a cache folder per rank (node-local disks): the rank that cannot read the others' share says so
    done = subprocess.run([str(torchrun), "--standalone", "--nproc-per-node", "2", "-m", "tests.embed_ddp_worker", str(tmp_path),
                           "private-cache"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    for rank, other in ((0, 1), (1, 0)):
        error = (tmp_path / f"error-private-cache-rank{rank}.txt").read_text()
        assert f"rank {rank} cannot read " in error and f"cache-private-cache-rank{rank}, where rank {other} stored it" in error, error
        assert "every rank needs the same cache folder" in error


def test_a_folder_scored_by_two_torchrun_ranks_is_the_one_process_score(sets, weights, tmp_path):
    """`siren-bench score` under torchrun: the ranks share the embedding, rank 0 alone writes, and
    the files are the one-process files (but for the cache path they name)."""
    import subprocess
    import sys

    from tests.conftest import REPO

    torchrun = Path(sys.executable).parent / "torchrun"
    args = ["--generated", str(sets["generated"]), "--reference", str(sets["manifest"]), "--recipe", "smoke@1", "--weights-dir",
            str(weights), "--n-boot", "20", "--metrics", "fad,kad,fd,kl,is"]
    done = subprocess.run([str(torchrun), "--standalone", "--nproc-per-node", "2", "-m", "siren_bench.cli", "score", *args,
                           "--out", str(tmp_path / "ranks"), "--cache-dir", str(tmp_path / "ranks-cache")],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("score: wrote") == 1
    assert main(["score", *args, "--out", str(tmp_path / "one"), "--cache-dir", str(tmp_path / "one-cache")]) == 0
    ranks, one = (json.loads((tmp_path / d / "results.json").read_text()) for d in ("ranks", "one"))
    assert ranks.pop("cache_dir") != one.pop("cache_dir") and ranks == one
    assert (tmp_path / "ranks" / "per_clip.csv").read_bytes() == (tmp_path / "one" / "per_clip.csv").read_bytes()
    embedded = sorted(p.name for p in (tmp_path / "ranks-cache").rglob("*.npz"))
    assert embedded == sorted(p.name for p in (tmp_path / "one-cache").rglob("*.npz"))  # each entry once, the same keys


# ----------------------------------------------------------------------------------- reference statistics files

def _export(sets, weights, out: Path, *extra) -> int:
    return main(["stats", "export", "--reference", str(sets["manifest"]), "--split", "test", "--recipe", "smoke@1",
                 "--weights-dir", str(weights), "--cache-dir", str(sets["cache"]), "--out", str(out), *extra])


def _score_against_stats(sets, weights, stats: Path, *extra, out=None) -> int:
    return main(["score", "--generated", str(sets["generated"]), "--reference-stats", str(stats), "--recipe", "smoke@1",
                 "--weights-dir", str(weights), "--out", str(out or sets["out"]), "--cache-dir", str(sets["cache"]),
                 "--n-boot", "20", *extra])


def test_scores_against_exported_statistics_are_the_scores_against_the_clips(sets, weights, tmp_path):
    """FAD, FD and FAD-inf (values, intervals, per-clip values) against a statistics file equal,
    bit for bit, those against the reference clips it was made from; IS needs no reference; the
    export writes the same bytes twice; audit re-derives a score made against the file."""
    stats = tmp_path / "stats" / "test.npz"
    assert _export(sets, weights, stats) == 0
    header = json.loads(stats.with_suffix(".json").read_text())
    assert sorted(header["metrics"]) == ["fad", "fad_inf", "fd"]
    assert header["list"]["clip_ids"] == [f"clip{i:02d}" for i in range(N)] and header["recipe"]["sha256"] == SMOKE.sha256
    assert header["metrics"]["fd"]["weights_sha256"] == sha256_file(weights / "tagger.safetensors")
    first = stats.read_bytes(), stats.with_suffix(".json").read_bytes()
    assert _export(sets, weights, stats) == 0
    assert (stats.read_bytes(), stats.with_suffix(".json").read_bytes()) == first

    assert _score_against_stats(sets, weights, stats, "--metrics", "fad,fd,fad_inf,is") == 0
    assert _cli_score(sets, weights, "--metrics", "fad,fd,fad_inf,is", out=tmp_path / "clips") == 0
    by_stats = json.loads((sets["out"] / "results.json").read_text())
    by_clips = json.loads((tmp_path / "clips" / "results.json").read_text())
    assert by_stats["reference"]["kind"] == "stats" and by_stats["reference"]["npz_sha256"] == header["npz_sha256"]
    for metric in ("fad", "fd", "fad_inf", "is"):
        assert by_stats["metrics"][metric] == by_clips["metrics"][metric], metric
    assert (sets["out"] / "per_clip.csv").read_bytes() == (tmp_path / "clips" / "per_clip.csv").read_bytes()
    report = audit(sets["out"])
    assert report.ok, report.text()

    data = bytearray(stats.read_bytes())
    data[-30] ^= 0xFF  # the file changed after scoring: the audit says so
    stats.write_bytes(bytes(data))
    changed = audit(sets["out"])
    assert not changed.ok and any(d.startswith("reference statistics") for d in changed.differences)


@pytest.mark.parametrize("case", ["truncated", "recipe", "weights", "list", "kad", "no-header", "not-npz"])
def test_a_statistics_file_made_under_anything_else_is_refused_by_name(sets, weights, tmp_path, case, capsys):
    stats = tmp_path / "stats.npz"
    assert _export(sets, weights, stats) == 0
    header_path = stats.with_suffix(".json")
    header = json.loads(header_path.read_text())
    extra, needle = [], str(stats)
    if case == "truncated":
        stats.write_bytes(stats.read_bytes()[:-100])
        needle = "truncated"
    elif case in ("recipe", "weights"):
        if case == "recipe":
            header["recipe"]["sha256"] = "0" * 64
        else:
            header["metrics"]["fd"]["weights_sha256"] = "0" * 64
        header_path.write_text(json.dumps(header))
        needle = "made under recipe" if case == "recipe" else "weights"
    elif case == "list":
        (sets["generated"] / "clip03.wav").unlink()
        needle = "1 of its 12 listed clips have no generated clip (e.g. ['clip03'])"
    elif case == "kad":
        extra, needle = ["--metrics", "fad,kad"], "['kad'] need the reference clips"
    elif case == "no-header":
        header_path.unlink()
        needle = f"{header_path}: no such file"
    else:
        stats = tmp_path / "stats.csv"
        needle = "give the .npz"
    capsys.readouterr()
    assert _score_against_stats(sets, weights, stats, *extra) == 2
    err = capsys.readouterr().err
    assert "error:" in err and needle in err and str(tmp_path) in err, err
    assert not sets["out"].exists()


def test_value_only_is_the_scored_value_for_every_metric(sets, weights):
    """What ranking robustness re-measures on subsets: each metric's value without its interval,
    the same number the full scoring reports, for every metric of the recipe."""
    from siren_bench.scoring import score_metric

    outcome = _score(sets, weights)
    assert sorted(outcome.metric_inputs) == sorted(s.metric for s in SMOKE.metrics)
    for metric, args in outcome.metric_inputs.items():
        only = score_metric(args.spec, args.generated, args.reference, 1, SMOKE.bootstrap_seed, args.text,
                            args.reference_stats, value_only=True)
        assert set(only) == {"metric", "embedder", "n_generated", "n_reference", "value"}, metric
        assert only["value"] == outcome.results["metrics"][metric]["value"], metric


# --- added after the first mutmut run over the scoring code (2026-12-05) ---------------------------

def test_results_record_the_bootstrap_count_given_the_embedders_used_and_refuse_clipped_audio_by_default(sets, weights):
    """n_boot given overrides the recipe's (the intervals are made with it); each embedder's record
    names the checkpoint file and frame counts actually used; clipped audio is refused unless asked."""
    outcome = _score(sets, weights, metrics=["fd", "kl"])
    results = outcome.results
    assert results["n_bootstrap"] == 10 != SMOKE.n_boot and results["allow_clipped"] is False
    assert all(m.get("n_boot", 10) == 10 for m in results["metrics"].values())
    assert results["metrics"]["kl"]["n_generated"] == N
    for record in results["embedders"].values():
        assert Path(record["checkpoint_path"]).parent == weights and record["info"]
        assert record["n_frames_generated"] >= N and record["n_frames_reference"] >= N
    loud = folder_clips(sets["generated"])
    first = loud.clips[loud.ids[0]].path
    wave = sf.read(first)[0]
    sf.write(first, np.clip(wave / np.abs(wave).max() * 4.0, -1.0, 1.0), SR, subtype="FLOAT")  # hard-clipped
    with pytest.raises(AudioFileError, match="clipped"):
        score_sets(folder_clips(sets["generated"]), manifest_clips(sets["manifest"]), SMOKE, EmbedderLoader(weights),
                   ContentCache(sets["cache"]), metrics=["fd"], n_boot=10)


def test_results_json_holds_every_field_a_reviewer_audits(sets, weights):
    """results.json's schema: every key, the recipe's full definition, each metric's embedding group,
    weights and options, frame counts per clip embedding, the per-clip facts and the cache counters."""
    cache = ContentCache(sets["cache"])
    loader = EmbedderLoader(weights)
    cold = score_sets(folder_clips(sets["generated"]), manifest_clips(sets["manifest"]), SMOKE, loader, cache)
    results = cold.results
    assert set(results) == {"schema_version", "recipe", "n_bootstrap", "bootstrap_seed", "metrics", "embedders",
                            "embedding_compute", "generated", "reference", "captions", "allow_clipped", "clipped_clips",
                            "weights_dir", "weights_pins", "cache_dir", "packages"}
    assert results["recipe"] == {"id": SMOKE.id, "sha256": SMOKE.sha256, "definition": SMOKE.as_dict()}
    assert results["n_bootstrap"] == SMOKE.n_boot and results["bootstrap_seed"] == SMOKE.bootstrap_seed  # none given: the recipe's
    assert results["captions"]["source"] == f"{sets['manifest']} (caption column)" and len(results["captions"]["texts"]) == N
    assert results["weights_dir"] == str(weights) and results["weights_pins"] == loader.pins
    for metric, record in results["metrics"].items():
        spec = SMOKE.spec(metric)
        assert record["embedding"] in results["embedders"] and record["options"] == dict(spec.options)
        assert record["weights_sha256"] == loader.open(spec).info.weights_sha256
    clip_level = [e for e in results["embedders"].values() if e["framing"] == "clip"]
    assert clip_level and all(e["n_frames_generated"] == N == e["n_frames_reference"] for e in clip_level)  # one vector a clip
    table = cold.per_clip
    assert table["sample_rate"].tolist() == [SR] * N and table["channels"].tolist() == [1] * N
    assert table["seconds"].tolist() == pytest.approx([1.0] * N)
    # the same cache object again: every lookup a hit, counted from this call's start
    warm = score_sets(folder_clips(sets["generated"]), manifest_clips(sets["manifest"]), SMOKE, loader, cache)
    assert cold.cache_misses > 0 and warm.cache_misses == 0 and warm.cache_hits == cold.cache_hits + cold.cache_misses


def test_cached_reference_statistics_are_keyed_by_the_reference_set_and_the_embedder(sets, weights, tmp_path):
    """A shared cache never hands one reference set's (or one network's) Gaussian to another."""
    def fd(manifest, weights_dir, cache_dir):
        return score_sets(folder_clips(sets["generated"]), manifest_clips(manifest), SMOKE, EmbedderLoader(weights_dir),
                          ContentCache(cache_dir), metrics=["fd", "fad"], n_boot=2).results["metrics"]

    first = fd(sets["manifest"], weights, sets["cache"])
    other = pd.read_csv(sets["manifest"])  # another reference set: clip00's audio replaced
    path = sets["manifest"].parent / "audio" / "clip00.wav"
    sf.write(path, _clip(23, 0).wave, SR, subtype="PCM_16")
    other.loc[0, "sha256"] = sha256_file(path)
    other.to_csv(sets["manifest"], index=False)
    shared, fresh = fd(sets["manifest"], weights, sets["cache"]), fd(sets["manifest"], weights, tmp_path / "fresh")
    assert shared["fd"]["value"] == fresh["fd"]["value"] != first["fd"]["value"]
    assert shared["fad"]["value"] == fresh["fad"]["value"]
    clips = [_clip(6, i) for i in range(12)]  # other tagger weights under the same file name
    other_weights = tmp_path / "other_weights"
    other_weights.mkdir()
    tagger = train_smoke_tagger([c.wave for c in clips], np.array([[int(n in c.labels) for n in CLASS_NAMES] for c in clips]),
                                SmokeTaggerConfig(audio=AUDIO, steps=3, batch_size=4), seed=1)
    save_smoke_evaluator(tagger, other_weights / "tagger.safetensors")
    shared, fresh = fd(sets["manifest"], other_weights, sets["cache"]), fd(sets["manifest"], other_weights, tmp_path / "fresh2")
    assert shared["fd"]["value"] == fresh["fd"]["value"] and shared["fad"]["value"] == fresh["fad"]["value"]


def test_clipped_references_are_scored_when_allowed(sets, weights):
    path = sets["manifest"].parent / "audio" / "clip03.wav"
    wave = _clip(21, 3).wave
    sf.write(path, np.clip(3 * wave / np.abs(wave).max(), -1, 1), SR, subtype="PCM_16")
    frame = pd.read_csv(sets["manifest"])
    frame.loc[3, "sha256"] = sha256_file(path)
    frame.to_csv(sets["manifest"], index=False)
    outcome = _score(sets, weights, metrics=["fd"], allow_clipped=True)
    assert outcome.results["clipped_clips"] == {"generated": [], "reference": ["clip03"]}
    with pytest.raises(AudioFileError, match="clipped"):
        _score(sets, weights, metrics=["fd"])


def test_kl_refuses_sets_with_other_ids_and_unknown_metrics_are_named(sets, weights):
    (sets["generated"] / "clip05.wav").unlink()
    with pytest.raises(ClipSetError, match=r"^KL pairs clips by id, but .* 1 reference ids have no generated clip \(e.g. \['clip05'\]\)"):
        _score(sets, weights, metrics=["kl"])
    fd_only = _score(sets, weights, metrics=["fd"]).results
    assert fd_only["generated"]["n_clips"] == N - 1 and fd_only["captions"] is None  # FD pairs nothing and reads no captions
    with pytest.raises(ClipSetError, match=r"^unknown metrics \['nope'\]; choose from \["):
        _score(sets, weights, metrics=["fd", "nope"])


def test_a_metric_error_names_the_sets_and_keeps_its_reason(sets, weights, monkeypatch):
    def fails(*args, **kwargs):
        raise ValueError("is: 12 clips cannot fill 20 splits")

    monkeypatch.setattr(score_module, "score_metric", fails)
    with pytest.raises(ClipSetError, match=rf"^fd of {sets['generated']} against {sets['manifest']}.*: is: 12 clips cannot fill 20 splits$"):
        _score(sets, weights, metrics=["fd"])


def test_a_list_valued_result_with_a_non_finite_entry_is_an_error(sets, weights, monkeypatch):
    monkeypatch.setattr(score_module, "score_metric",
                        lambda spec, *a, **k: {"metric": spec.metric, "value": 1.0, "splits": [1.0, float("nan")]})
    with pytest.raises(ClipSetError, match=r"^is: splits is not finite \(\[1.0, nan\]\); the embeddings or logits"):
        _score(sets, weights, metrics=["is"])


def test_clap_records_the_captions_it_read_and_where_they_came_from(sets, weights):
    clap = SMOKE
    captions = {f"clip{i:02d}": f"caption {i}" for i in range(N)}
    given = _score(sets, weights, recipe=clap, metrics=["clap"], captions=captions).results["captions"]
    assert given == {"source": "given", "texts": captions}
    named = _score(sets, weights, recipe=clap, metrics=["clap"], captions=captions, captions_source="mine.csv")
    assert named.results["captions"]["source"] == "mine.csv"
    default = _score(sets, weights, recipe=clap, metrics=["clap"]).results["captions"]
    assert default["source"] == f"{manifest_clips(sets['manifest']).source} (caption column)"


def test_a_run_without_a_weights_folder_records_none_not_a_path(sets):
    """aisfx's weights ship in its wheel: scoring FD on it needs no weights folder, and results.json
    says so with null, not the string "None"."""
    outcome = score_sets(folder_clips(sets["generated"]), manifest_clips(sets["manifest"]), get_recipe("smoke"),
                         EmbedderLoader(None), ContentCache(sets["cache"]), metrics=["fd"], n_boot=2)
    assert outcome.results["weights_dir"] is None and outcome.results["metrics"]["fd"]["embedder"] == "aisfx"


def test_each_torchrun_rank_embeds_on_its_own_gpu():
    """eval.device=cuda:0 names the kind of device; under torchrun each rank's loader is moved to
    the GPU torchrun gave it (cuda:LOCAL_RANK), keeping its weights folder, pins and batch shape."""
    import torch

    from siren_bench.evaluation.embedding import EmbedderLoader, EmbeddingCompute

    loader = EmbedderLoader("/weights", {"a.pt": "0" * 64}, EmbeddingCompute(device="cuda:0", batch_clips=32, loader_threads=2))
    moved = loader.on_device(torch.device("cuda", 3))
    assert moved.compute == EmbeddingCompute(device="cuda:3", batch_clips=32, loader_threads=2) and moved.device == "cuda:3"
    assert (moved.weights_dir, moved.pins) == (loader.weights_dir, loader.pins) and loader.compute.device == "cuda:0"
    assert loader.on_device(torch.device("cuda", 0)) is loader
