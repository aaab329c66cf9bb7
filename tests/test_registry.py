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
