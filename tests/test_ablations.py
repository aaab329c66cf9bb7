"""Siren's ablations: without causal conditioning an expert's prediction at frame t no longer
depends on the lower codebooks at t (with it, it does); the first expert is untouched by that
ablation, so the sweep may share it; a no-op ablation and unknown names are refused."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from omegaconf import OmegaConf

from siren_bench.config import ConfigError, ModelConfig, sweep_config
from siren_bench.models.ablations import ABLATIONS, ablated, shared_experts
from siren_bench.models.train import train_expert
from tests.test_siren import _token_set, random_text, tiny_config, tiny_siren


@pytest.mark.parametrize("causal", [True, False])
def test_causal_conditioning_is_what_carries_the_current_frames_lower_codebooks(causal):
    model = tiny_siren(causal_conditioning=causal)
    expert = model.experts[1]  # codebooks 2, 3: conditioned on 0, 1
    codes = torch.randint(0, 16, (1, 4, 8), generator=torch.Generator().manual_seed(0))
    changed = codes.clone()
    changed[:, 0, 4] = (changed[:, 0, 4] + 1) % 16  # codebook 0 at frame 4 only
    with torch.no_grad():
        base, other = expert(codes, random_text(1)), expert(changed, random_text(1))
    assert torch.equal(base[:, :, :4], other[:, :, :4])  # earlier frames never see frame 4
    assert (not torch.allclose(base[:, :, 4], other[:, :, 4])) == causal  # frame 4: only through causal conditioning
    assert not torch.allclose(base[:, :, 5], other[:, :, 5])  # frame 5 sees frame 4 through the temporal path either way


def test_the_first_expert_trains_identically_without_causal_conditioning(tmp_path):
    reference = tiny_config(dropout=0.1)
    variant = ablated("no_causal_conditioning", reference)
    assert variant.causal_conditioning is False and shared_experts(reference, variant) == [0]
    config = ModelConfig(train_steps=3, batch_size=2, crop_frames=6, checkpoint_every=3, val_every=3, warmup_steps=1,
                         interference_every=0)
    table, train = torch.randn(4, 16, 8), _token_set(3, 8, 0)
    cpu = torch.device("cpu")
    a = train_expert(0, reference, config, table, train, None, tmp_path / "a", "d", cpu)
    b = train_expert(0, variant, config, table, train, None, tmp_path / "b", "d", cpu)
    assert [r["loss"] for r in a.log] == [r["loss"] for r in b.log]
    c = train_expert(1, reference, config, table, train, None, tmp_path / "a", "d", cpu)
    d = train_expert(1, variant, config, table, train, None, tmp_path / "b", "d", cpu)
    assert [r["loss"] for r in c.log] != [r["loss"] for r in d.log]  # expert 1 does change


def test_grouping_ablations_and_refusals():
    two = tiny_config()
    one = ablated("one_codebook_per_expert", two)
    assert one.expert_groups() == [[0], [1], [2], [3]] and shared_experts(two, one) == []
    with pytest.raises(ValueError, match="unchanged"):
        ablated("two_codebooks_per_expert", two)
    with pytest.raises(ValueError, match="unchanged"):
        ablated("no_causal_conditioning", dataclasses.replace(two, causal_conditioning=False))


def test_sweep_config_names_unknown_ablations():
    params = OmegaConf.create({"sweep": {"ablations": {"no_text": None}}})
    with pytest.raises(ConfigError, match="unknown ablation 'no_text'"):
        sweep_config(params, "p.yaml", ABLATIONS)
    params = OmegaConf.create({"sweep": {"ablations": {"no_causal_conditioning": 0}}})
    with pytest.raises(ConfigError, match="no_causal_conditioning: depth must be"):
        sweep_config(params, "p.yaml", ABLATIONS)
    params = OmegaConf.create({"sweep": {"ablations": {"no_causal_conditioning": None, "one_codebook_per_expert": 2}}})
    assert sweep_config(params, "p.yaml", ABLATIONS).ablations == {"no_causal_conditioning": None, "one_codebook_per_expert": 2}


def test_each_seed_replicate_of_an_ablation_pairs_with_the_same_replicate_of_its_reference(tmp_path):
    """eval.seeds = 2, no sweep depth and `no_causal_conditioning` at depth 4: the sweep stage trains
    Siren at depth 4 under both replicates as the reference, and the variant under both, replicate k
    against replicate k (each replicate's reference differs, so a reference shared by every
    replicate fails); the report's ablation card pairs the per-clip scores seed by seed and gives a
    verdict resting on both. A full-depth ablation without the main run's Siren replicates, or
    with replicates of another architecture than params.yaml's, is refused before anything trains."""
    import json

    import pandas as pd
    import yaml

    from siren_bench.artifacts import RunArtifacts
    from siren_bench.report.ablation_card import ablation_section
    from siren_bench.stages import codec as codec_stage
    from siren_bench.stages import evaluators, prepare, sweep, tokenize
    from tests.test_config import _compose

    params = _compose("profile=ci", "eval.seeds=2", f"run.artifacts_dir={tmp_path / 'artifacts'}",
                      f"run.cache_dir={tmp_path / 'cache'}", "codec.text_probe=false", "codec.aisfx_probe=false",
                      "codec.codebook_size=32", "codec.kmeans_iterations=5", "codec.griffin_lim_iters=2",
                      "model.train_steps=4", "model.val_every=2", "model.checkpoint_every=2", "eval.tagger_steps=5",
                      "eval.clap_steps=5", "sweep.depths=[]")
    params["sweep"]["ablations"] = {"no_causal_conditioning": 4}
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    for stage in (prepare, codec_stage, tokenize, evaluators, sweep):
        stage.run(path)
    out = tmp_path / "artifacts" / "ci" / "sweep"
    summary = json.loads((out / "sweep.json").read_text())
    entry = summary["ablations"]["no_causal_conditioning"]
    assert [r["seed"] for r in entry["replicates"]] == summary["seeds"][1:] and len(summary["seeds"]) == 2
    assert entry["experts_from_reference"] == [0] and entry["reference"] == {"system": "siren_d4", "stage": "sweep"}
    assert entry["over_seeds"]["clap"]["n"] == 2 and summary["systems"]["siren"]["4"]["over_seeds"]["clap"]["n"] == 2
    for folder in (out, out / "replicates" / "seed1"):
        assert (folder / "no_causal_conditioning_d4" / "per_clip.csv").is_file() and (folder / "siren_d4" / "per_clip.csv").is_file()
    runs = [entry["metrics"], entry["replicates"][0]["metrics"]]
    assert runs[0]["clap"]["value"] != runs[1]["clap"]["value"]  # another seed: another model and other samples
    assert entry["reference_val_loss"] != entry["replicates"][0]["reference_val_loss"]
    section = ablation_section(RunArtifacts(tmp_path / "artifacts" / "ci"), tmp_path / "report")
    row = section.results["rows"]["no_causal_conditioning"]
    assert row["seeds"] == section.results["seeds"] == 2
    paired = row["paired"]["clap_cosine"]["over_seeds"]
    variant, reference = (pd.read_csv(out / "replicates" / "seed1" / name / "per_clip.csv").set_index("clip_id")["clap_cosine"]
                          for name in ("no_causal_conditioning_d4", "siren_d4"))
    assert paired["n"] == 2 and paired["values"][1] == pytest.approx((variant - reference).mean(), abs=1e-12)  # seed 1 with seed 1
    (verdict,) = section.results["verdicts"]
    assert verdict["claim"].startswith("conditioning each expert on the lower codebooks") and "over 2 seeds" in verdict["effect"]
    assert "Over 2 seed replicates" in verdict["reason"]
    params["sweep"]["ablations"] = {"no_causal_conditioning": None}  # against the main run's Siren, never trained here
    path.write_text(yaml.safe_dump(params))
    with pytest.raises(ConfigError, match=r"eval.seeds = 2, but the main run's Siren has no replicate 0 \(.*siren is missing\)"):
        sweep.run(path)
    # a main run whose replicate 1 was trained before params.yaml's Siren changed: refused before
    # anything trains, the depth-4 ablation listed first included
    from safetensors.torch import save_file

    from siren_bench.models.collaborative import Siren
    from siren_bench.models.experts import SIREN_INFO_NAME, expert_file, expert_jobs
    from siren_bench.replicates import folder
    from siren_bench.stage_context import open_stage

    described = expert_jobs(open_stage(path)).siren
    for k, architecture in enumerate((described, dataclasses.replace(described, codebooks_per_expert=4))):
        siren_dir = folder(tmp_path / "artifacts" / "ci" / "siren", k)
        siren_dir.mkdir(parents=True)
        for index, expert in enumerate(Siren(architecture).experts):
            save_file({n: t.contiguous() for n, t in expert.state_dict().items()}, siren_dir / expert_file(index))
        (siren_dir / SIREN_INFO_NAME).write_text(json.dumps({"trained": True, "architecture": dataclasses.asdict(architecture),
                                                             "experts": []}))
    params["sweep"]["ablations"] = {"no_causal_conditioning": 4, "one_codebook_per_expert": None}
    path.write_text(yaml.safe_dump(params))
    resume = tmp_path / "artifacts" / "ci" / "resume"
    before = sorted(resume.rglob("*")) if resume.exists() else []
    with pytest.raises(ConfigError, match=r"the main run's Siren \(.*siren/replicates/seed1\) is not the architecture "
                                          r"params.yaml describes"):
        sweep.run(path)
    assert (sorted(resume.rglob("*")) if resume.exists() else []) == before
    params["sweep"]["ablations"] = {"two_codebooks_per_expert": 6}  # the ci Siren's own grouping: a no-op
    path.write_text(yaml.safe_dump(params))
    with pytest.raises(ConfigError, match="sweep.ablations.two_codebooks_per_expert: .*leaves this Siren unchanged"):
        sweep.run(path)
    assert (sorted(resume.rglob("*")) if resume.exists() else []) == before  # refused before Siren trained at depth 6
