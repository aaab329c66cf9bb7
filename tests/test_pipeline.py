"""End to end: the DVC pipeline on a copy of the repository, as a user runs it."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import siren_bench
from examples.noise_generator import generate
from siren_bench.external import CompareError
from tests.browser import broken_links, browser_available, browser_required, open_page, require_browser
from tests.conftest import REPO

pytestmark = pytest.mark.e2e


def _run(args: list[str], cwd: Path) -> str:
    env = os.environ | {
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "DVC_NO_ANALYTICS": "1", "HF_HUB_OFFLINE": "1",
        "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid",
        "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.invalid",
    }
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, f"{' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


def _json(args: list[str], cwd: Path):
    """A command's standard output as JSON (DVC's warnings go to standard error)."""
    env = os.environ | {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}", "DVC_NO_ANALYTICS": "1"}
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, f"{' '.join(args)} failed:\n{done.stderr}"
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    """A fresh git repository holding the project's files (tracked and not ignored)."""
    dest = tmp_path_factory.mktemp("clone")
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
                            cwd=REPO, capture_output=True, text=True, check=True).stdout
    for name in filter(None, listed.split("\0")):
        source = REPO / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    _run(["git", "init", "-q"], dest)
    _run(["git", "add", "-A"], dest)
    _run(["git", "commit", "-qm", "copy"], dest)
    return dest


def _results(repo: Path, profile: str) -> dict:
    return json.loads((repo / "reports" / profile / "results.json").read_text())


# a user's generator registered as a system of the pipeline (eval.external), the README's example
EXTERNAL = "+eval.external.noise_system=examples.noise_generator:generate"


def test_ci_profile_runs_then_repro_does_no_work(repo):
    out = _run(["dvc", "exp", "run", "-S", "profile=ci", "-S", EXTERNAL], repo)
    for stage in ("prepare", "codec", "tokenize", "diagnose", "evaluators", "train_siren", "train_baselines", "align_siren",
                  "generate", "score", "sweep", "report"):
        assert f"Running stage '{stage}'" in out
    assert "profile: ci" in (repo / "params.yaml").read_text()
    report = (repo / "reports" / "ci" / "report.md").read_text()
    assert "Dataset card: SynthCaps" in report and "![spectrograms]" in report
    for heading in ("## Codec", "### a. Fidelity vs depth", "### b. Cross-layer orthogonality", "### c. Semantic richness per layer"):
        assert heading in report
    results = _results(repo, "ci")["sections"]
    assert results["dataset"]["n_clips"] == 48
    assert results["diagnose"]["fidelity"]["codebooks"] == list(range(1, 9))
    assert 0.0 <= results["diagnose"]["orthogonality"]["mean_abs_off_diagonal"] <= 1.0
    assert len(results["diagnose"]["semantics"]["alone"]) == 8
    for heading in ("## Evaluators", "## Scores"):
        assert heading in report
    baselines = {"shared_lm", "delay_lm", "ar_nar", "latent_diffusion"}
    assert set(results["scores"]["systems"]) == {"codec_resynthesis", "real_unpaired", "siren", "siren_aligned",
                                                 "noise_system"} | baselines
    assert set(results["baselines"]["models"]) == baselines and all(m["steps"] == 20 for m in results["baselines"]["models"].values())
    interference = results["interference"]["series"]
    assert [p["step"] for p in interference["shared_lm"]] == [1, 10, 20] and interference["shared_lm"][0]["pairs"] == 28
    assert all(-1 <= p["mean"] <= 1 for p in interference["shared_lm"]) and interference["siren expert 0"][0]["pairs"] == 1
    sweep = results["sweep"]["points"]
    assert set(sweep) == {"codec_resynthesis", "siren", "shared_lm"} and all(set(p) == {"2", "4", "8"} for p in sweep.values())
    ablations = results["ablations"]["rows"]
    assert set(ablations) == {"no_causal_conditioning", "one_codebook_per_expert", "no_alignment"}
    assert results["ablations"]["seeds"] == 1 and all(a["seeds"] == 1 for a in ablations.values())
    assert [v["claim"].split(" ")[0] for v in results["ablations"]["verdicts"]] == ["conditioning", "two"]  # one per retrained ablation
    assert all("One training seed per model" in v["reason"] for v in results["ablations"]["verdicts"])
    assert ablations["no_causal_conditioning"]["reference"] == "siren_d4" and ablations["one_codebook_per_expert"]["depth"] == 2
    assert all(a["paired"]["clap_cosine"]["n"] == 12 for a in ablations.values())
    swept = json.loads((repo / "artifacts" / "ci" / "sweep" / "sweep.json").read_text())["ablations"]
    assert swept["no_causal_conditioning"]["experts_from_reference"] == [0]
    assert swept["one_codebook_per_expert"]["groups"] == [[0], [1]]
    for heading in ("## Baselines", "## Gradient interference", "## Fidelity-capacity sweep", "![depth sweep]",
                    "## Claimed vs reproduced", "## Ablations", "## Environment and provenance"):
        assert heading in report
    assert set(results["paired"]) == {"siren_aligned", "noise_system", "verdicts"} | baselines  # Siren against every other model
    assert {v["outcome"] for v in results["paired"]["verdicts"]} <= {"agrees", "contradicts", "inconclusive"}
    assert len(results["diagnose"]["verdicts"]) == 4 and "What these numbers say about the paper's claims" in report
    claims = results["claims"]["rows"]
    assert claims and not any(r["comparable"] for r in claims)  # SynthCaps: nothing compares with AudioCaps claims
    assert all(r["reproduced"] is not None for r in claims)  # every role is in the ci run
    alignment = results["alignment"]
    assert "## Anti-causal alignment" in report and "![alignment curves]" in report
    assert alignment["summary"]["rollouts"] == 4 * 2 * 2 and alignment["reward"]["audio"]["embedder"] == "smoke_tagger"
    assert set(alignment["side_by_side"]) == {"fad", "fad_inf", "kad", "fd", "kl", "is", "clap"}
    for paired in alignment["paired"].values():
        assert paired["n"] == 12 and paired["ci_low"] <= paired["value"] <= paired["ci_high"] and 0 <= paired["p_value"] <= 1
    log = [json.loads(line) for line in (repo / "artifacts" / "ci" / "siren_aligned" / "align_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4] and all(r["kl"] >= 0 for r in log)
    siren = json.loads((repo / "artifacts" / "ci" / "siren" / "siren.json").read_text())
    assert [e["codebooks"] for e in siren["experts"]] == [[0, 1], [2, 3], [4, 5], [6, 7]]
    assert all(e["steps"] == 20 and e["final_val_loss"] > 0 for e in siren["experts"])
    for system in results["scores"]["systems"].values():
        assert set(system["metrics"]) == {"fad", "fad_inf", "kad", "fd", "kl", "is", "clap"}
        assert all(s["n_generated"] == 12 and s["ci_low"] is not None for s in system["metrics"].values())
    tokenize = json.loads((repo / "artifacts" / "ci" / "tokenize" / "provenance.json").read_text())
    assert tokenize["cache"] == {"hits": 0, "misses": 48}
    audit = _run(["siren-bench", "audit", "artifacts/ci/score/codec_resynthesis/results.json"], repo)
    assert "0 differ" in audit and "0 recomputed" in audit
    # the references' statistics ship with the report; scored against them, a system's FAD is the stage's
    assert (repo / "reports" / "ci" / "reference_stats.npz").read_bytes() == (repo / "artifacts/ci/score/reference_stats.npz").read_bytes()
    _run(["siren-bench", "score", "--generated", "artifacts/ci/generate/siren", "--reference-stats", "reports/ci/reference_stats.npz",
          "--recipe", "smoke", "--weights-dir", "artifacts/ci/evaluators", "--metrics", "fad", "--n-boot", "1",
          "--out", str(repo.parent / "by-stats")], repo)
    by_stats = json.loads((repo.parent / "by-stats" / "results.json").read_text())["metrics"]["fad"]
    assert by_stats["value"] == results["scores"]["systems"]["siren"]["metrics"]["fad"]["value"]
    # the sweep scores audio in its staging folder; its results.json must name where the audio ends up
    swept_clips = json.loads((repo / "artifacts" / "ci" / "sweep" / "siren_d2" / "results.json").read_text())["generated"]["clips"]
    assert all(c["path"].startswith("artifacts/ci/sweep/audio/siren_d2/") for c in swept_clips)
    assert "0 differ" in _run(["siren-bench", "audit", "artifacts/ci/sweep/siren_d2/results.json"], repo)
    assert (repo / "artifacts" / "ci" / "prepare" / "provenance.json").is_file()
    # the report opens with its summary, and every link and figure in it is a file of the report folder itself
    report_md = (repo / "reports" / "ci" / "report.md").read_text()
    assert report_md.index("## Summary") < report_md.index("## Dataset card") and "What this run could not do:" in report_md
    targets = [t for t in re.findall(r"\]\(([^)#]+)\)", report_md) if "://" not in t]
    assert any(t.endswith(".flac") for t in targets) and any(t.endswith(".png") for t in targets)
    assert all(not t.startswith(("/", "..")) and (repo / "reports" / "ci" / t).is_file() for t in targets), targets
    if browser_available() or browser_required():  # and in a browser (make test installs one; tests/browser.py)
        require_browser()
        page = open_page(repo / "reports" / "ci" / "report.html")
        assert page.images and all(image["loaded"] for image in page.images), page.images
        assert broken_links(page, repo / "reports" / "ci" / "report.html", repo) == []
    ranked = json.loads((repo / "artifacts" / "ci" / "score" / "ranking.json").read_text())
    assert {m for m in ranked["measures"] if " @ " not in m} == {"fad", "fad_inf", "kad", "fd", "kl", "is", "clap"}
    further = {m.split(" @ ")[1] for m in ranked["measures"] if " @ " in m}  # eval.ranking_recipes: the anchors on the smoke evaluators
    assert further == {"smoke_as_audioldm_eval@1", "smoke_as_google_fad@1", "smoke_as_stable_audio_metrics@1", "smoke_as_audiocraft@1"}
    assert set(ranked["recipes"]) == {"smoke@2", *further}
    assert (repo / "artifacts" / "ci" / "score" / "ranking_recipes" / "smoke_as_google_fad@1" / "siren" / "results.json").is_file()
    assert "is" in ranked["resampling"]["not_resampled"]  # 6 clips a half-sample, 10 IS splits: said, not hidden
    assert "## Ranking robustness" in report_md and "holds under" in report_md
    # DVC-native: the report's metrics.json and plots/ are what `dvc metrics show` and `dvc plots show` read
    shown = _json(["dvc", "metrics", "show", "--json"], repo)[""]["data"]["reports/ci/metrics.json"]["data"]
    assert shown["scores"]["siren.fad"] == results["scores"]["systems"]["siren"]["metrics"]["fad"]["value"]
    assert sum(len(values) for values in shown.values()) >= 20 and {"diagnose", "siren", "baselines", "sweep"} <= set(shown)
    plots = _json(["dvc", "plots", "show", "--json"], repo)["data"]
    assert "reports/ci/plots/fidelity_vs_depth.csv" in plots
    assert any("training_loss/siren_expert_0.csv" in name for name in plots) and any("depth_sweep/siren.csv" in n for n in plots)
    again = _run(["dvc", "repro"], repo)
    assert "Running stage" not in again and "up to date" in again
    # (scoring again ends with the same bytes: the next test's re-runs, killed and resumed, check it)


def _kill_when(args: list[str], cwd: Path, ready, what: str) -> None:
    """Start `args`, SIGKILL its whole process group the moment `ready()` holds (no clean-up runs)."""
    env = os.environ | {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}", "DVC_NO_ANALYTICS": "1"}
    process = subprocess.Popen(args, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 300
    while not ready():
        assert process.poll() is None, f"{what}: the run ended before the kill point"
        assert time.monotonic() < deadline, f"{what}: kill point not reached"
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def test_a_second_run_killed_in_every_stage_kind_ends_bit_identical(repo):
    """Determinism and crash safety: the ci pipeline forced to run again from the alignment on
    (it, generation, scoring, report), killed -9 mid-alignment (after a checkpoint), mid-generation
    and mid-scoring, each time re-run from the killed stage on (`dvc repro --force --downstream`,
    so the killed stage resumes), ends with the first run's results.json and every system's scores
    (which hold the generated audio's hashes), byte for byte. (Forcing the earlier stages too costs
    minutes; a Siren expert's, the smoke tagger's and the codec's training killed and resumed to
    the uninterrupted numbers are in test_crash_safety.py and test_codecs.py, SynthCaps'
    determinism in test_synthcaps.py.)"""
    ci = repo / "artifacts" / "ci"
    first = {p.relative_to(repo): p.read_bytes() for p in [repo / "reports" / "ci" / "results.json",
                                                           *sorted((ci / "score").glob("*/*.csv")),
                                                           *sorted((ci / "score").glob("*/results.json"))]}
    assert len(first) == 1 + 2 * 9
    staging = lambda stage: any(p.is_dir() and any(p.iterdir()) for p in ci.glob(f".{stage}.*.tmp"))  # noqa: E731
    # Each re-run is forced from the killed stage on: the stages before it are up to date, and with
    # identical outputs a plain `dvc repro` would restore the killed stage from DVC's run cache.
    rerun = ["dvc", "repro", "--force", "--downstream"]
    _kill_when(rerun + ["align_siren"], repo, lambda: any((ci / "resume").glob("align*")), "align_siren")
    assert not (ci / "siren_aligned").exists()  # DVC cleared it; nothing partial under the final name
    _kill_when(rerun + ["align_siren"], repo, lambda: staging("generate"), "generate")
    _kill_when(rerun + ["generate"], repo, lambda: staging("score"), "score")
    out = _run(rerun + ["score"], repo)
    assert "Running stage 'report'" in out and "Running stage 'align_siren'" not in out
    assert {p: (repo / p).read_bytes() for p in first} == first


def test_a_users_model_is_compared_under_the_runs_protocol(repo, tmp_path, monkeypatch):
    """`siren-bench compare`: a generator entry point (the README's example) and a folder of audio
    join the run's table; a copy of Siren's own audio scores exactly as Siren. From Python,
    `siren_bench.compare` takes the generator function itself and gives the same numbers."""
    out = _run(["siren-bench", "compare", "noise", "--entry-point", "examples.noise_generator:generate"], repo)
    assert "reports/compare/ci/noise/report.md" in out
    results = json.loads((repo / "reports" / "compare" / "ci" / "noise" / "results.json").read_text())
    assert {"siren", "ar_nar", "noise"} <= set(results["systems"]) and results["paired"]["siren"]["kl"]["n"] == 12
    monkeypatch.chdir(repo)
    report = siren_bench.compare("noise_from_python", generate)
    assert report == Path("reports") / "compare" / "ci" / "noise_from_python" and (report / "report.html").is_file()
    from_python = json.loads((report / "results.json").read_text())
    assert from_python["systems"]["noise_from_python"] == results["systems"]["noise"]
    assert from_python["paired"]["siren"]["kl"]["n"] == 12
    with pytest.raises(CompareError, match="not audio and generator"):
        siren_bench.compare("twice", generate, audio=tmp_path)
    copy = tmp_path / "siren_copy"
    shutil.copytree(repo / "artifacts" / "ci" / "generate" / "siren", copy)
    _run(["siren-bench", "compare", "siren_copy", "--audio", str(copy)], repo)
    systems = json.loads((repo / "reports" / "compare" / "ci" / "siren_copy" / "results.json").read_text())["systems"]
    assert systems["siren_copy"] == systems["siren"]  # identical protocol: same bytes, same numbers
    env = os.environ | {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    again = subprocess.run(["siren-bench", "compare", "noise", "--entry-point", "examples.noise_generator:generate"],
                           cwd=repo, capture_output=True, text=True, env=env)
    assert again.returncode == 2 and "already exists" in again.stderr
    next(copy.glob("*.wav")).unlink()
    short = subprocess.run(["siren-bench", "compare", "short", "--audio", str(copy)], cwd=repo, capture_output=True, text=True, env=env)
    assert short.returncode == 2 and "missing 1" in short.stderr and not (repo / "artifacts" / "ci" / "compare" / "short").exists()
    # the run itself rendered the same generator as `noise_system` (eval.external): the same audio, the same numbers
    scores = _results(repo, "ci")["sections"]["scores"]["systems"]
    assert {m: v["value"] for m, v in scores["noise_system"]["metrics"].items()} == results["systems"]["noise"]


def test_trained_siren_renders_a_captions_file(repo, tmp_path):
    """The aligned system (Stage-1 experts with the aligned one swapped in, so both load paths) renders
    a user's captions; an existing --out folder is never overwritten."""
    import soundfile

    captions = tmp_path / "captions.csv"
    captions.write_text('clip_id,caption\nmine_1,A loud siren wails\nmine_2,"Rain, then a click train"\n')
    for system in ("siren_aligned",):
        out = tmp_path / f"rendered_{system}"
        args = ["siren-bench", "generate", "--system", system, "--captions", str(captions), "--out", str(out), "--seconds", "1.5"]
        _run(args, repo)
        for clip_id in ("mine_1", "mine_2"):
            wave, rate = soundfile.read(out / f"{clip_id}.wav")
            assert rate == 16000 and wave.shape == (24000,) and wave.std() > 0
        assert json.loads((out / "systems.json").read_text())[system]["n_clips"] == 2
    done = subprocess.run(args, cwd=repo, capture_output=True, text=True, env=os.environ | {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"})
    assert done.returncode == 2 and "already exists" in done.stderr  # nothing is overwritten


def test_expert_jobs_trained_outside_the_stage_are_assembled_not_retrained(repo):
    """`siren-bench train-expert` (the one-job-per-GPU path) leaves finished states that the stage
    picks up. Expert 0 goes the Slurm way, submitted by `siren-bench-jobs` through Hydra's submitit
    launcher (its local executor here) as one job of 2 tasks that train it data-parallel (gloo);
    a plain job trains exactly the expert the stage itself trained."""
    siren_dir = repo / "artifacts" / "ci" / "siren"
    before = (siren_dir / "expert_1.safetensors").read_bytes()
    _run(["siren-bench-jobs", "--multirun", "job=train-expert", "index=0", "hydra.sweep.dir=artifacts/jobs/expert0",
          "hydra/launcher=submitit_local", "hydra.launcher.tasks_per_node=2", "hydra.launcher.gpus_per_node=0"], repo)
    logs = sorted((repo / "artifacts" / "jobs" / "expert0" / ".submitit").glob("*/*_log.out"))
    said = [log.read_text() for log in logs]
    assert len(said) == 2 and all("expert 0 (replicate 0) finished" in text for text in said)
    assert {"rank 0 of 2", "rank 1 of 2"} == {line.split(": ")[1] for text in said for line in text.splitlines()
                                               if line.startswith("siren-bench-jobs: rank")}
    _run(["siren-bench", "train-expert", "--index", "1"], repo)
    _run(["siren-bench", "train_siren"], repo)
    experts = json.loads((siren_dir / "siren.json").read_text())["experts"]
    assert [e["resumed_from_step"] for e in experts] == [20, 20, 0, 0]
    assert (siren_dir / "expert_1.safetensors").read_bytes() == before
    assert not list((repo / "artifacts" / "ci" / "resume").glob("*.pt"))  # assembled states are cleared


def test_a_single_key_override_reruns_only_the_stages_that_read_it(repo):
    """`-S eval.n_bootstrap=60`: of the stages up to scoring only `score` declares it, so only it
    runs again, and it embeds nothing: the embedding cache is keyed on the audio and the recipe's
    networks, not on how the intervals resample. (Last: it leaves other params in params.yaml.)"""
    out = _run(["dvc", "exp", "run", "-S", "profile=ci", "-S", EXTERNAL, "-S", "eval.n_bootstrap=60", "score"], repo)
    ran = [stage for stage in ("prepare", "codec", "tokenize", "diagnose", "evaluators", "train_siren", "train_baselines",
                               "align_siren", "generate", "score") if f"Running stage '{stage}'" in out]
    assert ran == ["score"]
    summary = json.loads((repo / "artifacts" / "ci" / "score" / "summary.json").read_text())
    assert len(summary["systems"]) == 9 and all(s["cache"]["misses"] == 0 and s["cache"]["hits"] > 0 for s in summary["systems"].values())
    results = json.loads((repo / "artifacts" / "ci" / "score" / "siren" / "results.json").read_text())
    assert results["n_bootstrap"] == 60
