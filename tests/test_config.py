"""Hydra composition, the committed params.yaml, and typed config sections."""

from __future__ import annotations

import dataclasses

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from siren_bench.config import (
    AudioCapsConfig, ConfigError, SynthCapsConfig, align_config, data_config, eval_config, load_params, run_config,
)
from tests.conftest import REPO


def _compose(*overrides: str) -> dict:
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base=None):
        return OmegaConf.to_container(compose(config_name="config", overrides=list(overrides)), resolve=True)


def test_committed_params_yaml_is_the_default_composition():
    """`dvc repro` reads params.yaml as is: it must equal what `dvc exp run` would compose."""
    assert OmegaConf.to_container(OmegaConf.load(REPO / "params.yaml")) == _compose()


def test_profiles_resize_without_changing_groups():
    smoke, ci = _compose(), _compose("profile=ci")
    assert smoke["run"]["profile"] == "smoke" and ci["run"]["profile"] == "ci"
    assert ci["data"]["n_clips"] < smoke["data"]["n_clips"]
    assert ci["data"]["name"] == smoke["data"]["name"] == "synthcaps"
    assert set(ci) == set(smoke)


def test_audiocaps_profile_switches_data_source_and_requires_paths(tmp_path):
    composed = _compose("profile=audiocaps")
    assert composed["data"]["name"] == "audiocaps" and composed["data"]["audio_dir"] == "???"
    path = tmp_path / "params.yaml"
    path.write_text(OmegaConf.to_yaml(OmegaConf.create(composed)))
    with pytest.raises(ConfigError, match="required value not set: data.audio_dir"):
        data_config(load_params(path), str(path))


def test_audiocaps_profile_is_the_papers_table_at_paper_size():
    composed = _compose("profile=audiocaps")
    assert composed["eval"]["systems"] == ["codec_resynthesis", "real_unpaired", "siren", "siren_aligned",
                                           "shared_lm", "delay_lm", "ar_nar", "latent_diffusion"]
    assert (composed["codec"]["name"], composed["model"]["name"], composed["model"]["text_encoder"]) == ("dac_16khz", "siren_1_6b", "clap")
    assert composed["baselines"]["shared_lm"]["temporal_layers"] == 96  # matched_1_6b: sized to Siren 1.6B
    assert composed["eval"]["recipe"] == "clean" and composed["run"]["device"] == "cuda"
    assert composed["eval"]["allow_clipped"]  # full-scale YouTube clips are scored and listed, not a stop after training


def test_single_key_override():
    assert _compose("data.n_clips=64")["data"]["n_clips"] == 64


def test_typed_sections(tmp_path):
    params = load_params(REPO / "params.yaml")
    assert isinstance(data_config(params), SynthCapsConfig)
    assert run_config(params).profile == "smoke"


@pytest.mark.parametrize(
    "data, message",
    [
        ({"name": "synthcaps", "n_clips": "many"}, "n_clips"),
        ({"name": "synthcaps", "n_clips": 1}, "at least 3"),
        ({"name": "synthcaps", "splits": {"train": 0.5, "val": 0.1, "test": 0.1}}, "sum to 1"),
        ({"name": "synthcaps", "max_events": 5}, "max_events"),
        ({"name": "nosuch"}, "data.name must be one of"),
        ({"name": "audiocaps", "audio_dir": "x", "test_list": "y", "channel_policy": "left"}, "channel_policy"),
    ],
    ids=["wrong-type", "too-few", "splits", "events", "unknown-source", "bad-choice"],
)
def test_bad_values_name_file_and_key(tmp_path, write_params, data, message):
    path = write_params(data)
    with pytest.raises(ConfigError, match=message) as info:
        data_config(load_params(path), str(path))
    assert str(path) in str(info.value)


def test_missing_params_file(tmp_path):
    with pytest.raises(ConfigError, match="params file not found"):
        load_params(tmp_path / "nope.yaml")


def test_audiocaps_defaults_are_complete():
    assert AudioCapsConfig().filename_patterns and AudioCapsConfig().extensions


@pytest.mark.parametrize(
    "data, message",
    [
        ({"name": "audiocaps", "audio_dir": "x", "test_list": "y", "clip_seconds": 0}, "clip_seconds"),
        ({"name": "audiocaps", "audio_dir": "x", "test_list": "y", "sample_rate": 0}, "sample_rate"),
        ({"name": "audiocaps", "audio_dir": "x", "test_list": "y", "filename_patterns": ["{ytid}.wav"]}, "filename_patterns"),
        ({"name": "synthcaps", "seed": -1}, "data.seed"),
    ],
    ids=["clip-seconds", "sample-rate", "pattern-field", "negative-seed"],
)
def test_ranges_are_checked(write_params, data, message):
    path = write_params(data)
    with pytest.raises(ConfigError, match=message):
        data_config(load_params(path), str(path))


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"group_size": 1}, "group_size must be at least 2"),
        ({"clip_eps": 1.5}, "clip_eps"),
        ({"audio_weight": 0.0, "clap_weight": 0.0}, "not both 0"),
        ({"steps": "many"}, "steps"),
    ],
    ids=["group", "clip", "no-reward", "wrong-type"],
)
def test_bad_alignment_settings_name_the_file(tmp_path, overrides, message):
    path = tmp_path / "params.yaml"
    OmegaConf.save(OmegaConf.create({"align": overrides}), path)
    with pytest.raises(ConfigError, match=message) as info:
        align_config(load_params(path), str(path))
    assert str(path) in str(info.value)


def test_aligned_siren_needs_the_stage1_system(tmp_path):
    path = tmp_path / "params.yaml"
    OmegaConf.save(OmegaConf.create({"eval": {"systems": ["codec_resynthesis", "siren_aligned"]}}), path)
    with pytest.raises(ConfigError, match="siren_aligned without siren"):
        eval_config(load_params(path), str(path))


@pytest.mark.parametrize("name", ["siren", "my model"])
def test_external_models_need_names_of_their_own(tmp_path, name):
    path = tmp_path / "params.yaml"
    OmegaConf.save(OmegaConf.create({"eval": {"systems": ["siren"], "external": {name: "pkg.mod:generate"}}}), path)
    with pytest.raises(ConfigError, match="eval.external: model names must be identifiers") as info:
        eval_config(load_params(path), str(path))
    assert str(path) in str(info.value) and repr(name) in str(info.value)


def test_a_baseline_is_nameable_only_with_its_section(tmp_path):
    path = tmp_path / "params.yaml"
    OmegaConf.save(OmegaConf.create({"eval": {"systems": ["siren", "delay_lm"]}, "baselines": {"ar_nar": {}}}), path)
    with pytest.raises(ConfigError, match=r"eval.systems must list some of .*'ar_nar'.*section in 'baselines'.*delay_lm"):
        eval_config(load_params(path), str(path))
    OmegaConf.save(OmegaConf.create({"eval": {"systems": ["siren"]}, "baselines": {"siren": {}}}), path)
    with pytest.raises(ConfigError, match="baselines.siren: a baseline name must be an identifier other than"):
        eval_config(load_params(path), str(path))
    OmegaConf.save(OmegaConf.create({"eval": {"systems": ["siren"]}, "baselines": {"delay_lm": 3}}), path)
    with pytest.raises(ConfigError, match="baselines.delay_lm must be a mapping"):
        eval_config(load_params(path), str(path))


def test_each_config_field_is_defined_once():
    """Siren's architecture is SirenConfig's, the blocks' fields BlockShape's: ModelConfig and every
    baseline config inherit them, and no subclass declares a field its base already has."""
    from baselines import registry
    from siren_bench.config import BlockShape, ModelConfig, SirenConfig

    def own_fields(cls):
        base = next(b for b in cls.__mro__[1:] if dataclasses.is_dataclass(b)) if cls is not BlockShape else None
        inherited = set(base.__dataclass_fields__) if base else set()
        declared = set(cls.__annotations__)
        return declared & inherited

    classes = [SirenConfig, ModelConfig, *(registry.spec(n).config_class for n in registry.names())]
    assert all(issubclass(c, BlockShape) for c in classes)
    assert {c.__name__: own_fields(c) for c in classes} == {c.__name__: set() for c in classes}
    assert set(SirenConfig.__dataclass_fields__) <= set(ModelConfig.__dataclass_fields__)


@pytest.mark.parametrize("preset", ["siren_tiny", "siren_1_6b", "siren_3_1b"])
def test_model_presets_spell_out_every_modelconfig_field(preset):
    """So that `-S model.<any key>=...` overrides every preset (Hydra refuses a key the group lacks)."""
    import yaml

    from siren_bench.config import ModelConfig

    values = yaml.safe_load((REPO / "conf" / "model" / f"{preset}.yaml").read_text())
    assert set(values) == set(ModelConfig.__dataclass_fields__), set(values) ^ set(ModelConfig.__dataclass_fields__)


@pytest.mark.parametrize("group, option, cls", [
    ("data", "synthcaps", "SynthCapsConfig"), ("data", "audiocaps", "AudioCapsConfig"), ("codec", "small_rvq", "CodecConfig"),
    ("codec", "dac_16khz", "CodecConfig"), ("codec", "encodec_24khz", "CodecConfig"), ("align", "grpo", "AlignConfig"),
    ("eval", "smoke", "EvalConfig"), ("sweep", "default", "SweepConfig"),
])
def test_every_group_option_spells_out_its_sections_fields(group, option, cls):
    """`-S <group>.<key>=...` must work on every option: Hydra refuses to override a key the
    composed group lacks (found when the audiocaps fixture could not set data.workers)."""
    import yaml

    from siren_bench import config

    values = yaml.safe_load((REPO / "conf" / group / f"{option}.yaml").read_text())
    composed = set(_compose(f"{group}={option}")[group]) if "defaults" in values else set(values)
    fields = set(getattr(config, cls).__dataclass_fields__)
    assert fields <= composed, fields - composed


@pytest.mark.parametrize("overrides, problem", [
    (["model.sharding=zero3"], "model.sharding must be ddp or fsdp"),
    (["model.sharding=fsdp"], "model.sharding=fsdp: the gradient-interference probe needs the whole model"),
])
def test_sharding_is_checked(overrides, problem):
    from omegaconf import OmegaConf

    from siren_bench.config import model_config

    with pytest.raises(ConfigError, match=problem):
        model_config(OmegaConf.create(_compose(*overrides)))
    assert model_config(OmegaConf.create(_compose("model.sharding=fsdp", "model.interference_every=0"))).sharding == "fsdp"


@pytest.mark.parametrize("field, value", [("kmeans_iterations", -1), ("griffin_lim_iters", -2), ("kmeans_max_frames", 100)])
def test_mel_codec_settings_are_checked(field, value):
    from omegaconf import OmegaConf

    from siren_bench.config import codec_config

    params = OmegaConf.create({"codec": {"architecture": "mel", "codebook_size": 256, field: value}})
    with pytest.raises(ConfigError, match=f"codec.kmeans_iterations and codec.griffin_lim_iters must be >= 0.*{value}"):
        codec_config(params, "p.yaml")


@pytest.mark.parametrize("ranking_recipes, recipe, problem", [
    (["no_such_recipe"], "smoke", "eval.ranking_recipes: unknown recipe 'no_such_recipe'"),
    (["smoke_as_google_fad", "smoke_as_google_fad@1"], "smoke", "lists smoke_as_google_fad@1 twice"),
    (["smoke@2"], "smoke", "lists smoke@2 twice or as eval.recipe itself"),
    (["audioldm_eval"], "smoke", "audioldm_eval@2 reads its weights from eval.weights_dir, eval.recipe smoke@2 from the evaluators stage"),
    (["smoke_as_audiocraft"], "clean", "smoke_as_audiocraft@1 reads its weights from the evaluators stage"),
])
def test_ranking_recipes_are_known_distinct_and_read_the_same_weights(tmp_path, ranking_recipes, recipe, problem):
    path = tmp_path / "params.yaml"
    OmegaConf.save(OmegaConf.create({"eval": {"recipe": recipe, "ranking_recipes": ranking_recipes}}), path)
    with pytest.raises(ConfigError, match=problem.replace("(", r"\(")) as info:
        eval_config(load_params(path), str(path))
    assert str(path) in str(info.value)
    OmegaConf.save(OmegaConf.create({"eval": {"recipe": "clean", "ranking_recipes": ["google_fad", "audioldm_eval@1"]}}), path)
    assert eval_config(load_params(path), str(path)).ranking_recipes == ["google_fad", "audioldm_eval@1"]


@pytest.mark.parametrize("job", ["train_siren", "train_baselines"])
def test_a_global_batch_that_does_not_split_over_the_ranks_is_refused_before_any_data_loads(tmp_path, monkeypatch, job):
    """model.batch_size is the global batch; a job launched on ranks that do not divide it (the
    paper profile's 24 on 2 nodes x 8 GPUs) stops at once, naming the rank counts that work."""
    import importlib

    import yaml

    module = importlib.import_module(f"siren_bench.stages.{job}")
    params = _compose("profile=ci", f"run.artifacts_dir={tmp_path / 'artifacts'}", "model.batch_size=24")
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    monkeypatch.setattr(module, "expert_jobs", lambda stage: pytest.fail("loaded the data before checking the batch"))
    monkeypatch.setenv("WORLD_SIZE", "16")
    entry = module.train_one_expert if job == "train_siren" else module.train_one_baseline
    args = (path, 0) if job == "train_siren" else (path, "shared_lm")
    with pytest.raises(ConfigError, match=r"params.yaml: model.batch_size=24 \(the global batch\) does not split over 16 "
                                          r"data-parallel ranks; run on \[1, 2, 3, 4, 6, 8, 12, 24\] ranks"):
        entry(*args)


def test_resume_keys_name_what_training_depends_on_and_nothing_else(tmp_path):
    """Changing how a trained model is sampled, measured or where its text encoder lies still finds
    the finished train-expert / train-baseline states; changing the training does not."""
    import dataclasses

    from baselines import registry
    from siren_bench.config import NOT_TRAINING, ModelConfig, SirenConfig
    from siren_bench.models.train import resume_file

    base, siren = ModelConfig(), SirenConfig()
    keys = lambda c: (resume_file(tmp_path, c, siren, 0, "data"), registry.config_key("delay_lm", {"dim": 8}, c, "data"))  # noqa: E731
    unchanged = dict(temperature=0.9, top_k=250, top_p=0.95, guidance=1.5, generation_seed=7, val_every=7, checkpoint_every=9,
                     interference_every=3, interference_clips=2, text_encoder_path="/elsewhere/clap", text_encoder_sha256="a" * 64)
    assert set(unchanged) == set(NOT_TRAINING)
    for field, value in unchanged.items():
        assert keys(dataclasses.replace(base, **{field: value})) == keys(base), field
    for field, value in dict(learning_rate=1e-4, seed=1, batch_size=8, crop_frames=200, caption_dropout=0.0, dim=128).items():
        changed = keys(dataclasses.replace(base, **{field: value}))
        assert changed[0] != keys(base)[0] and changed[1] != keys(base)[1], field
