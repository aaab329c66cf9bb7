"""The real run at toy size, on the real AudioCaps lists: a few real ids of each shipped list
(train, val, test), synthetic audio named the ways users name AudioCaps files (some ids missing
on purpose), and random-weight checkpoints in the exact layouts the real run loads: DAC 16 kHz
(the original file's keys), the CLAP text tower Siren conditions on and the CLAP, VGGish and
PANNs files the clean recipe scores with (and the alignment's reward embeds with). The params
are the `audiocaps` profile as composed for users, scaled down only in width, depth, steps and
clip length; every stage runs on the code paths the full run takes."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import pytest
import torch
import yaml
from safetensors.torch import load_file

from siren_bench.artifacts import load_codes
from siren_bench.config import ConfigError
from siren_bench.data import audiocaps as ac
from siren_bench.data.synthcaps import generate_clip
from siren_bench.embedders.panns import CNN14_CONFIGS
from siren_bench.io import sha256_file
from siren_bench.stages import align_siren, diagnose, evaluators, generate, prepare, report, score, sweep, tokenize
from siren_bench.stages import codec as codec_stage
from siren_bench.stages import train_baselines, train_siren
from siren_bench.trainer import TIMING
from tests.conftest import REPO, write_audio
from tests.test_clap import _save_original, original_state, write_tiny_tokenizer
from tests.test_clap import fixture as clap_layouts
from tests.test_codecs import DAC_16K_KWARGS, _random_state, dac_original_layout
from tests.test_config import _compose
from tests.test_panns import random_state as panns_random_state
from tests.test_panns import save_release
from tests.test_vggish import he_random_state

SHIPPED = REPO / "protocols" / "audiocaps"
N = {"train": 12, "val": 4, "test": 10}  # 10 test clips: the Inception Score's 10 splits
MISSING = {"train": 1, "val": 0, "test": 0}  # 8 % of train: under data.max_missing_fraction
SYSTEMS = ["codec_resynthesis", "real_unpaired", "siren", "siren_aligned", "shared_lm", "delay_lm", "ar_nar", "latent_diffusion"]
# DAC 16 kHz's file, keys and codes (12 x 1024 at 50 frames/s), narrower convolutions (latent 128, not 1024)
NARROW_DAC = DAC_16K_KWARGS | {"encoder_dim": 8, "decoder_dim": 32}
# The audiocaps profile as users compose it, scaled down in width, depth, steps and clip length only.
TOY = [
    "model.code_dim=128", "model.dim=32", "model.n_heads=2", "model.n_kv_heads=2", "model.temporal_layers=1", "model.depth_layers=1",
    "model.text_dim=null", "model.train_steps=4", "model.batch_size=4", "model.crop_frames=25", "model.warmup_steps=1",
    "model.checkpoint_every=2", "model.val_every=2", "model.interference_every=2", "model.interference_clips=2",
    "baselines.shared_lm.temporal_layers=1",
    "baselines.delay_lm.dim=32", "baselines.delay_lm.n_heads=2", "baselines.delay_lm.n_kv_heads=2", "baselines.delay_lm.layers=1",
    "baselines.ar_nar.dim=32", "baselines.ar_nar.n_heads=2", "baselines.ar_nar.n_kv_heads=2",
    "baselines.ar_nar.ar_layers=1", "baselines.ar_nar.nar_layers=1",
    "baselines.latent_diffusion.dim=32", "baselines.latent_diffusion.n_heads=2", "baselines.latent_diffusion.n_kv_heads=2",
    "baselines.latent_diffusion.layers=1", "baselines.latent_diffusion.sampling_steps=3",
    "align.steps=2", "align.captions_per_step=2", "align.group_size=2", "align.n_frames=25", "align.checkpoint_every=1",
    "align.warmup_steps=1", "codec.batch_clips=8", "codec.probe_seeds=2", "eval.n_bootstrap=2",
    # the sweep at one depth, each system twice (eval.seeds): the ablations, run by the ci profile,
    # would add minutes of scoring with the full-size evaluators
    "sweep.depths=[2]",  # (and no ablations, set below: a Hydra override merges dicts, so `={}` keeps them)
    "run.device=cpu", "run.threads=1", "data.clip_seconds=1.0", "data.workers=2",
    "data.protocol=custom", "eval.allow_clipped=true",  # random-weight DAC decoders saturate
    "eval.ranking_resamples=0",  # ranked on all clips: at d = 2048 each re-measured FD costs seconds (resampling: ci and unit tests)
    "eval.seeds=2",  # the profile's 3, less one: every trained system trained, rendered and scored twice
]


def _real_rows(name: str, clips: int) -> pd.DataFrame:
    frame = pd.read_csv(SHIPPED / name, dtype=str, keep_default_na=False)
    keep = list(dict.fromkeys(frame["youtube_id"]))[:clips]  # the first `clips` clips, every caption of each
    return frame[frame["youtube_id"].isin(keep)]


@pytest.fixture(scope="module")
def fixture_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("audiocaps_fixture")
    lists = {}
    for split, name in (("train", "audiocaps_train_49838.csv"), ("val", "audiocaps_val_495x5.csv"),
                        ("test", "audiocaps_test_975x5.csv")):
        rows = _real_rows(name, N[split])
        rows.to_csv(root / f"{split}.csv", index=False)
        lists[split] = rows
        for i, (ytid, start) in enumerate(dict.fromkeys(zip(rows["youtube_id"], rows["start_time"]))):
            if i < MISSING[split]:
                continue  # "no longer on YouTube"
            clip = generate_clip(7, {"train": 0, "val": 100, "test": 200}[split] + i, 44100 if i % 3 == 0 else 16000, 1.0)
            wave = np.stack([clip.wave, clip.wave]).T if i % 3 == 0 else clip.wave  # some stereo 44.1 kHz downloads
            stem = (f"Y{ytid}", f"{ytid}_{start}", ytid)[i % 3]
            write_audio(root / "audio" / split / f"{stem}.{'flac' if i % 2 else 'wav'}", wave, 44100 if i % 3 == 0 else 16000)
    checkpoint = root / "weights_16khz.pth"
    torch.save({"state_dict": _random_state(dac_original_layout(NARROW_DAC)), "metadata": {"kwargs": NARROW_DAC}}, checkpoint)
    weights = _evaluator_weights(root / "weights")
    params = _compose("profile=audiocaps", *TOY, f"data.audio_dir={root / 'audio'}",
                      *(f"data.{split}_list={root / f'{split}.csv'}" for split in N),
                      f"run.artifacts_dir={root / 'artifacts'}", f"run.reports_dir={root / 'reports'}",
                      f"run.cache_dir={root / 'cache'}", "run.profile=fixture", f"codec.path={checkpoint}",
                      f"model.text_encoder_path={weights / '630k-audioset-best.pt'}", f"eval.weights_dir={weights}")
    # every file pinned by its hash (file names with '=' and '.' do not fit a Hydra override key)
    params["eval"]["weights_sha256"] = {p.name: sha256_file(p) for p in weights.iterdir() if p.is_file()}
    params["sweep"]["ablations"] = {}
    return root, lists, params


def _evaluator_weights(folder):
    """The clean recipe's files under their published names, random weights in the exact layouts:
    VGGish (torchvggish's release), PANNs Cnn14 32 kHz, and LAION-CLAP 630k at reduced widths
    (same keys) with its roberta-base tokenizer folder; the CLAP file doubles as Siren's text tower."""
    folder.mkdir()
    torch.save(he_random_state(), folder / "vggish-10086976.pth")
    save_release(folder / "Cnn14_mAP=0.431.pth", panns_random_state(CNN14_CONFIGS[32000], seed=0))
    _save_original(folder / "630k-audioset-best.pt", original_state(clap_layouts()["reduced_layout"]))
    write_tiny_tokenizer(folder / "roberta-base")
    return folder


def _write(params: dict, path):
    path.write_text(yaml.safe_dump(params))
    return path


def test_prepare_codec_and_tokenize_run_on_the_real_lists(fixture_run):
    root, lists, data = fixture_run
    params = _write(data, root / "params.yaml")
    manifest = pd.read_csv(prepare.run(params) / "manifest.csv", keep_default_na=False)
    found = {s: N[s] - MISSING[s] for s in N}
    assert manifest.groupby("split").size().to_dict() == found
    assert set(manifest["clip_id"]) <= set().union(*(set(rows["youtube_id"]) for rows in lists.values()))
    info = json.loads((root / "artifacts" / "fixture" / "prepare" / "dataset.json").read_text())
    assert info["splits"]["train"]["clips_missing"] == 1 and info["splits"]["train"]["list_rows"] == N["train"]
    assert info["splits"]["test"]["list_rows"] == len(lists["test"]) > N["test"]  # five captions a clip
    assert info["resampled"] == sum(1 for s in N for i in range(MISSING[s], N[s]) if i % 3 == 0)  # the 44.1 kHz ones
    from siren_bench.claims import CLAIMS, comparability

    audioldm = next(c for c in CLAIMS if c.protocol == "audioldm_964")
    assert comparability(audioldm, info, "audioldm_eval@2") == (False, "this run's list is custom, the claim's audioldm_964")
    # the profile keeps no decoded copy: each row names its source file and the decoding policy
    assert (manifest["decode"] != "").all() and not (root / "artifacts" / "fixture" / "prepare" / "audio").exists()
    assert all(Path(a).is_absolute() and Path(a).is_relative_to(root / "audio") for a in manifest["audio"])

    codec_dir = codec_stage.run(params)
    assert json.loads((codec_dir / "codec.json").read_text())["backend"] == "dac"
    # tokenized by one process (into a cache of its own), then by 2 gloo ranks that share the clips
    single = _write({**data, "run": {**data["run"], "cache_dir": str(root / "single-process-cache")}}, root / "single.yaml")
    one_process = load_codes(tokenize.run(single))
    done = _torchrun(root / "tokenize", "tokenize", "--params", str(params))
    assert done.returncode == 0, done.stderr[-3000:]
    codes = load_codes(root / "artifacts" / "fixture" / "tokenize")
    assert codes.keys() == one_process.keys() and all(np.array_equal(codes[c], one_process[c]) for c in codes)
    assert sorted(codes) == sorted(manifest["clip_id"])
    assert {codes[c].shape for c in codes} == {(12, 50)}  # 12 codebooks, 1 s at 50 frames/s


def _through_tokenize(root, data: dict):
    """The params file, with the first three stages run (by the first test, or here when run alone)."""
    params = _write(data, root / "params.yaml")
    if not (root / "artifacts" / "fixture" / "tokenize").is_dir():
        for stage in (prepare, codec_stage, tokenize):
            stage.run(params)
    return params


def _torchrun_command(workdir: Path, *args: str, slow: float = 0.0) -> list[str]:
    """`siren-bench ARGS` on 2 gloo ranks through tests/crash_worker.py, which slows every optimizer
    step by `slow` seconds (so a test can kill the run part-way) and records each rank's step count."""
    return [str(Path(sys.executable).parent / "torchrun"), "--standalone", "--nproc-per-node", "2",
            "-m", "tests.crash_worker", "cli", "--slow", str(slow), str(workdir), *args]


def _torchrun(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(_torchrun_command(workdir, *args), cwd=REPO, capture_output=True, text=True, timeout=300)


def _expert_0_by_two_ranks_killed_and_resumed(root: Path, params: Path) -> dict:
    """Siren's expert 0 trained by 2 gloo ranks with `siren-bench train-expert`: once uninterrupted,
    once killed (SIGKILL to the launcher and both ranks) after its step-2 checkpoint and run again.
    The second run resumes at step 2, trains only steps 3 and 4 and ends with the uninterrupted
    run's weights and losses, bit for bit. Its finished state is left for the stage; returns its weights."""
    from siren_bench.models.experts import expert_jobs
    from siren_bench.models.train import resume_file
    from siren_bench.stage_context import open_stage

    jobs = expert_jobs(open_stage(params))
    state_file = resume_file(jobs.resume_dir, jobs.config, jobs.siren, 0, jobs.data_id)
    train = ("train-expert", "--index", "0", "--params", str(params))
    whole = _torchrun(root / "expert-whole", *train)
    assert whole.returncode == 0, whole.stderr[-3000:]
    uninterrupted = torch.load(state_file, map_location="cpu", weights_only=True)
    state_file.unlink()

    killed = subprocess.Popen(_torchrun_command(root / "expert-killed", *train, slow=0.5), cwd=REPO,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while not state_file.exists():
        assert killed.poll() is None, "the run ended before its first checkpoint"
        assert time.monotonic() < deadline, "no checkpoint in 240 s"
        time.sleep(0.05)
    processes = [psutil.Process(killed.pid), *psutil.Process(killed.pid).children(recursive=True)]
    assert len(processes) >= 3  # the launcher and its two ranks (torchrun puts them in sessions of their own)
    for process in processes:
        process.send_signal(signal.SIGKILL)  # no cleanup code runs
    psutil.wait_procs(processes, timeout=30)
    assert not (root / "expert-killed" / "optimizer-steps-rank0.txt").exists()  # the ranks did not finish
    assert int(torch.load(state_file, map_location="cpu", weights_only=True)["step"]) == 2

    again = _torchrun(root / "expert-again", *train)
    assert again.returncode == 0, again.stderr[-3000:]
    assert [(root / "expert-again" / f"optimizer-steps-rank{r}.txt").read_text() for r in (0, 1)] == ["2", "2"]
    resumed = torch.load(state_file, map_location="cpu", weights_only=True)
    assert resumed["step"] == uninterrupted["step"] == 4
    untimed = [[{k: v for k, v in row.items() if k not in TIMING} for row in json.loads(s["log"])] for s in (resumed, uninterrupted)]
    assert untimed[0] == untimed[1]
    assert resumed["model"].keys() == uninterrupted["model"].keys()
    assert all(torch.equal(resumed["model"][k], uninterrupted["model"][k]) for k in resumed["model"])
    return resumed["model"]


def test_every_later_stage_of_the_audiocaps_profile_runs_at_toy_size(fixture_run):
    """From the codes on: diagnostics, Siren (six experts on the CLAP text tower), the four
    baselines, the alignment with the VGGish reward, all eight systems rendered, scored with the
    clean recipe's three pretrained evaluators, the sweep at depth 2 and the report."""
    root, _, data = fixture_run
    params = _through_tokenize(root, data)
    diagnose.run(params)
    evaluators.run(params)
    expert_0 = _expert_0_by_two_ranks_killed_and_resumed(root, params)
    baseline = _torchrun(root / "shared_lm", "train-baseline", "--name", "shared_lm", "--params", str(params))
    assert baseline.returncode == 0, baseline.stderr[-3000:]
    for stage in (train_siren, train_baselines, align_siren):
        stage.run(params)
    # the stages assembled what the ranks trained (resumed at the last step), training neither again
    siren_info = json.loads((root / "artifacts" / "fixture" / "siren" / "siren.json").read_text())
    assert [e["resumed_from_step"] for e in siren_info["experts"]] == [4, 0, 0, 0, 0, 0]
    assert load_file(root / "artifacts" / "fixture" / "siren" / "expert_0.safetensors").keys() == expert_0.keys()
    assert all(torch.equal(load_file(root / "artifacts" / "fixture" / "siren" / "expert_0.safetensors")[k], v)
               for k, v in expert_0.items())
    baselines_info = json.loads((root / "artifacts" / "fixture" / "baselines" / "baselines.json").read_text())
    assert baselines_info["models"]["shared_lm"]["resumed_from_step"] == 4
    assert baselines_info["models"]["delay_lm"]["resumed_from_step"] == 0
    # one system's batches rendered by 2 gloo ranks outside DVC; the stage links them, rendering nothing again
    done = _torchrun(root / "delay_lm", "generate-shard", "--system", "delay_lm", "--params", str(params))
    assert done.returncode == 0, done.stderr[-3000:]
    shard = next(root.glob("artifacts/fixture/resume/generate-delay_lm-*"))
    sharded = {p.name: p.read_bytes() for p in shard.glob("*.wav")}
    assert len(sharded) == N["test"] and len(list(shard.glob("batch-*.done"))) == 2  # 10 clips in batches of 8
    # its second seed replicate rendered ahead too (one process here), and a replicate the run does not have refused
    replicate = generate.render_shard(params, "delay_lm", replicate=1)
    replicated = {p.name: p.read_bytes() for p in replicate.glob("*.wav")}
    assert replicate != shard and len(replicated) == N["test"] and replicated != sharded
    with pytest.raises(ConfigError, match=r"--replicate 2 is not a replicate of this run \(eval.seeds = 2"):
        generate.render_shard(params, "delay_lm", replicate=2)
    for stage in (generate, score, sweep, report):
        stage.run(params)
    rendered_dir = root / "artifacts" / "fixture" / "generate"
    assert {p.name: p.read_bytes() for p in (rendered_dir / "delay_lm").glob("*.wav")} == sharded
    assert {p.name: p.read_bytes() for p in (rendered_dir / "replicates" / "seed1" / "delay_lm").glob("*.wav")} == replicated
    out = root / "artifacts" / "fixture"
    siren = json.loads((out / "siren" / "siren.json").read_text())
    assert len(siren["experts"]) == 6 and siren["text_encoder"]["name"] == "clap_text:630k-audioset-best.pt"
    rendered = json.loads((out / "generate" / "systems.json").read_text())
    assert set(rendered) == set(SYSTEMS)
    assert rendered["real_unpaired"]["n_distinct_clips"] == N["val"] < rendered["real_unpaired"]["n_clips"] == N["test"]
    results = json.loads((root / "reports" / "fixture" / "results.json").read_text())
    scores = results["sections"]["scores"]["systems"]
    assert set(scores) == set(SYSTEMS)
    assert {"fad", "kad", "fd", "kl", "is", "clap"} <= set(scores["siren"]["metrics"])
    assert all(np.isfinite(v["value"]) for s in scores.values() for v in s["metrics"].values())
    # every trained system trained, aligned, rendered and scored again from seeds shifted by 1000
    assert rendered["siren"]["replicates"] == {"seed1": {"folder": "replicates/seed1/siren", "seed": 1000, "replicate": 1,
                                                         "training_seed": 1000}}
    assert json.loads((out / "siren" / "replicates" / "seed1" / "siren.json").read_text())["seed"] == 1000
    assert json.loads((out / "siren_aligned" / "replicates" / "seed1" / "aligned.json").read_text())["settings"]["seed"] == 1000
    assert json.loads((out / "baselines" / "replicates" / "seed1" / "delay_lm" / "config.json").read_text())["seed"] == 1200
    spread, fad = scores["siren"]["over_seeds"]["fad"], scores["siren"]["metrics"]["fad"]
    assert spread["seeds"] == [0, 1000] and spread["values"][0] == fad["seed0_value"] and fad["value"] == spread["mean"]
    assert (root / "artifacts" / "fixture" / "score" / "delay_lm" / "seed1" / "results.json").is_file()
    # the reward embeds with the clean recipe's VGGish: the metrics on that network are marked
    assert results["sections"]["scores"]["reward_contaminated"] == {"fad": "audio", "fad_inf": "audio", "kad": "audio"}
    assert results["sections"]["dataset"]["splits"]["train"]["clips_missing"] == MISSING["train"]
    claims = results["sections"]["claims"]["rows"]
    assert claims and {row["role"] for row in claims} <= set(SYSTEMS) and all(row["reproduced"] for row in claims)
    # the sweep trained and scored Siren and the shared LM at depth 2 under each replicate's seeds
    swept = json.loads((out / "sweep" / "sweep.json").read_text())
    assert swept["seeds"] == [0, 1000] and set(swept["systems"]) == {"codec_resynthesis", "siren", "shared_lm"}
    assert [r["seed"] for r in swept["systems"]["shared_lm"]["2"]["replicates"]] == [1000]
    assert swept["systems"]["siren"]["2"]["over_seeds"]["fad"]["n"] == 2
    assert (out / "sweep" / "replicates" / "seed1" / "siren_d2" / "results.json").is_file()
    assert "replicates" not in swept["systems"]["codec_resynthesis"]["2"]  # one codec: nothing to replicate
    seed0, seed1 = ({p.name: p.read_bytes() for p in (folder / "audio" / "shared_lm_d2").glob("*.wav")}
                    for folder in (out / "sweep", out / "sweep" / "replicates" / "seed1"))
    assert len(seed0) == N["test"] and seed0.keys() == seed1.keys() and seed0 != seed1
    verdicts = results["sections"]["sweep"]["verdicts"]
    assert len(verdicts) == 2 and all("mean over 2 seeds" in v["effect"] for v in verdicts)
    assert results["sections"]["sweep"]["points"]["siren"]["12"]["fad"]["n_seeds"] == 2  # the main run's replicates joined


@pytest.mark.parametrize("key, value", [("code_dim", 1024), ("n_codebooks", 8), ("codebook_size", 2048)])
def test_a_model_config_that_does_not_match_the_codec_is_refused_by_key(fixture_run, tmp_path, key, value):
    """The paper's config names DAC's 1024-d latent; this codec is narrower: refused before training."""
    root, _, data = fixture_run
    _through_tokenize(root, data)
    wrong = _write({**data, "model": {**data["model"], key: value}, "run": {**data["run"], "artifacts_dir": str(tmp_path)}},
                   tmp_path / "params.yaml")
    for stage in ("prepare", "codec", "tokenize"):  # the same upstream artifacts, in another run folder
        (tmp_path / "fixture").mkdir(exist_ok=True)
        (tmp_path / "fixture" / stage).symlink_to(root / "artifacts" / "fixture" / stage)
    with pytest.raises(ConfigError, match=rf"params.yaml: model.{key}={value} but the pipeline's codec / text encoder has "):
        train_siren.run(wrong)
    assert not (tmp_path / "fixture" / "siren").exists()


def test_a_real_test_clip_put_into_the_train_list_is_leakage(fixture_run, tmp_path):
    root, lists, data = fixture_run
    leaked = pd.concat([lists["train"], lists["test"].iloc[:1]])
    leaked.to_csv(tmp_path / "train.csv", index=False)
    with pytest.raises(ac.AudioCapsError, match=rf"share 1 clip\(s\), e.g. {lists['test'].iloc[0]['youtube_id']}"):
        prepare.run(_write({**data, "data": {**data["data"], "train_list": str(tmp_path / "train.csv")}}, tmp_path / "p.yaml"))
