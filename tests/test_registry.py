"""The registries: a new metric or embedder is a registered function, found by name; plug-ins come
through entry points; an unknown, doubled or broken name is an error that says what is known."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import numpy as np
import pytest

from siren_bench import registry as registry_module
from siren_bench.embedders.base import Embedding
from siren_bench.metrics.base import MetricInputs
from siren_bench.metrics.bootstrap import bootstrap
from siren_bench.recipes import get_recipe
from siren_bench.registry import Registry, RegistryError
from siren_bench.scoring import score_metric


def _clips(rng, n, shift=0.0):
    return {f"c{i:02d}": Embedding(frames=rng.normal(shift, 1.0, size=(3, 4))) for i in range(n)}


def test_a_new_metric_is_one_registered_function(monkeypatch):
    """The README's worked example: a metric module registers its scoring function, and a recipe
    entry naming it is scored like the built-in ones."""
    metrics = Registry("metric")
    monkeypatch.setattr(registry_module, "METRICS", metrics)
    monkeypatch.setattr("siren_bench.scoring.METRICS", metrics)

    @metrics.register("centroid_cosine")
    def score_centroid_cosine(inputs: MetricInputs) -> dict:
        centroid = np.mean([e.frames.mean(axis=0) for e in inputs.reference.values()], axis=0)
        means = np.stack([inputs.generated[i].frames.mean(axis=0) for i in inputs.ids])
        per_clip = means @ centroid / (np.linalg.norm(means, axis=1) * np.linalg.norm(centroid))
        out = bootstrap(lambda idx: float(per_clip[idx].mean()), len(inputs.ids), inputs.n_boot, inputs.seed).as_dict()
        return out | {"per_clip": dict(zip(inputs.ids, per_clip.tolist()))}

    rng = np.random.default_rng(0)
    reference, near, far = _clips(rng, 20, 2.0), _clips(rng, 20, 2.0), _clips(rng, 20, -2.0)
    spec = dataclasses.replace(get_recipe("smoke").spec("fad"), metric="centroid_cosine")
    close, apart = (score_metric(spec, s, reference, n_boot=20, seed=0) for s in (near, far))
    assert close["metric"] == "centroid_cosine" and close["n_generated"] == 20 and len(close["per_clip"]) == 20
    assert close["value"] > 0.5 > -0.5 > apart["value"]
    with pytest.raises(ValueError, match="unknown metric 'fad'; registered: \\['centroid_cosine'\\]"):
        score_metric(get_recipe("smoke").spec("fad"), near, reference, n_boot=5, seed=0)


def test_a_name_registered_twice_is_refused_and_unknown_names_list_the_known():
    things = Registry("thing")
    things.register("a")(len)
    things.register("a")(len)  # the same object again: harmless (a module imported twice)
    with pytest.raises(RegistryError, match="thing 'a' is registered twice"):
        things.add("a", max)
    with pytest.raises(RegistryError, match=r"unknown thing 'b'; registered: \['a'\]"):
        things.get("b")


class _Point:
    def __init__(self, name, value, loaded):
        self.name, self.value, self._loaded = name, value, loaded

    def load(self):
        if isinstance(self._loaded, Exception):
            raise self._loaded
        return self._loaded


def test_plug_ins_come_through_entry_points_and_cannot_replace_a_built_in(monkeypatch):
    def opener(spec, path, pin, loader):
        return "my embedder"

    points = [_Point("mine", "my_pkg.embed:opener", opener), _Point("vggish", "evil:opener", lambda *a: "replaced")]
    monkeypatch.setattr(registry_module, "entry_points", lambda group: points if group == "siren_bench.embedders" else [])
    embedders = Registry("embedder", entry_point_group="siren_bench.embedders")
    embedders.add("vggish", len)
    assert embedders.get("mine") is opener and embedders.get("vggish") is len


def test_a_plug_in_that_fails_to_import_is_named(monkeypatch):
    points = [_Point("broken", "broken_pkg:opener", ImportError("No module named 'broken_pkg'"))]
    monkeypatch.setattr(registry_module, "entry_points", lambda group: points)
    embedders = Registry("embedder", entry_point_group="siren_bench.embedders")
    with pytest.raises(RegistryError, match="embedder 'broken': entry point 'broken_pkg:opener' of group "
                                            "siren_bench.embedders failed to load: ImportError"):
        embedders.get("anything")


def test_the_loader_opens_a_plug_in_embedder_by_the_recipe_name(monkeypatch, tmp_path):
    from siren_bench.evaluation.embedding import EmbedderLoader

    seen = {}

    def opener(spec, path, pin, loader):
        seen.update(spec=spec.embedder, path=path, pin=pin, device=loader.device)
        return SimpleNamespace(name="mine")

    monkeypatch.setattr(registry_module, "entry_points", lambda group: [_Point("my_embedder", "m:o", opener)])
    monkeypatch.setattr(registry_module.EMBEDDERS, "_entry_points_loaded", False)
    monkeypatch.setattr(registry_module.EMBEDDERS, "_items", dict(registry_module.EMBEDDERS._items))
    (tmp_path / "weights.bin").write_bytes(b"w")
    spec = dataclasses.replace(get_recipe("smoke").spec("fad"), embedder="my_embedder", checkpoint="weights.bin")
    embedder = EmbedderLoader(tmp_path, {"weights.bin": "ab" * 32}).open(spec)
    assert embedder.name == "mine" and seen == {"spec": "my_embedder", "path": tmp_path / "weights.bin", "pin": "ab" * 32,
                                                "device": "cpu"}


def test_the_readme_baseline_is_one_file_and_its_section(tmp_path):
    """The README's worked example: a copy of baselines/ with the file added; the config check
    accepts the name once it has a section, the registry builds it, the one engine trains it and
    it generates codes in range."""
    import re
    import shutil
    import subprocess
    import sys

    from tests.conftest import REPO

    readme = (REPO / "README.md").read_text()
    example = re.search(r"```python\n(# baselines/caption_unigram\.py\n.*?)```", readme, re.S).group(1)
    shutil.copytree(REPO / "baselines", tmp_path / "baselines", ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "baselines" / "caption_unigram.py").write_text(example)
    script = """
import numpy as np, torch
from pathlib import Path
from omegaconf import OmegaConf
import baselines
from baselines import registry
from siren_bench.config import ConfigError, ModelConfig, eval_config
from siren_bench.models.sampling import SamplingConfig
from siren_bench.models.train import TokenSet, train_model
from tests.test_siren import random_text

assert baselines.__file__.startswith(%r), baselines.__file__
params = OmegaConf.create({"eval": {"systems": ["siren", "caption_unigram"]}})
try:
    eval_config(params)
    raise SystemExit("a baseline without its section was accepted")
except ConfigError:
    pass
params.baselines = {"caption_unigram": {}}
assert eval_config(params).systems == ["siren", "caption_unigram"]
torch.manual_seed(0)
model, _ = registry.build("caption_unigram", {}, {"n_codebooks": 3, "codebook_size": 8, "text_dim": 12})
codes = [np.stack([np.full(6, (i + k) %% 8) for k in range(3)]).astype(np.int64) for i in range(4)]
config = ModelConfig(train_steps=60, batch_size=4, crop_frames=6, learning_rate=1e-2, warmup_steps=2, checkpoint_every=60,
                     val_every=60, interference_every=0)
log, _ = train_model(model, "caption_unigram", config, TokenSet(codes, random_text(4)), None, Path(%r), torch.device("cpu"), [0, 5])
out = model.generate(random_text(2), 5, SamplingConfig(), torch.Generator().manual_seed(0))
assert out.shape == (2, 3, 5) and 0 <= int(out.min()) and int(out.max()) < 8
assert log[-1]["loss"] < 0.5 * log[0]["loss"], (log[0]["loss"], log[-1]["loss"])
print("trained", round(log[0]["loss"], 3), round(log[-1]["loss"], 3))
""" % (str(tmp_path), str(tmp_path / "state.pt"))
    env = {"PYTHONPATH": f"{tmp_path}:{REPO}", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "trained" in done.stdout, done.stderr[-3000:]


def test_import_package_imports_every_module_and_dvc_deps_sees_them_all(tmp_path, monkeypatch):
    from siren_bench.dvc_deps import _imports

    package = tmp_path / "plugpkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    for name in ("alpha", "beta"):
        (package / f"{name}.py").write_text(f"from siren_bench.registry import SYSTEMS\nSYSTEMS.add('test-{name}', '{name}')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry_module.SYSTEMS, "_items", dict(registry_module.SYSTEMS._items))  # restored afterwards
    assert registry_module.import_package("plugpkg") == ["alpha", "beta"]
    assert {"test-alpha", "test-beta"} <= set(registry_module.SYSTEMS.names())
    from tests.conftest import REPO

    seen = _imports(REPO, "baselines/registry.py")
    assert {f"baselines/{p.name}" for p in (REPO / "baselines").glob("*.py")} <= seen


def test_a_plug_in_system_must_be_a_baseline_spec(monkeypatch):
    from baselines import registry as baselines_registry
    from baselines.base import BaselineSpec

    spec = BaselineSpec("plug", "a plug-in", 900, dict, dict)
    points = [_Point("plug", "my_pkg:SPEC", spec), _Point("odd", "my_pkg:thing", object())]
    monkeypatch.setattr(registry_module, "entry_points", lambda group: points if group == "siren_bench.systems" else [])
    monkeypatch.setattr(registry_module.SYSTEMS, "_entry_points_loaded", False)
    monkeypatch.setattr(registry_module.SYSTEMS, "_items", dict(registry_module.SYSTEMS._items))
    assert baselines_registry.spec("plug") is spec
    with pytest.raises(RegistryError, match="system 'odd' is registered as .*not a baselines.base.BaselineSpec"):
        baselines_registry.spec("odd")
