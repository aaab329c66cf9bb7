"""One registry per kind of pluggable thing, filled by the file that defines each thing.

A metric, an embedder, a codec or a report section registers itself where it is written, with a
decorator:

    @METRICS.register("fad")
    def score_fad(...): ...

or, where mutation testing must reach the function (mutmut leaves decorated functions unmutated:
the metrics do this), by a call after it: `METRICS.add("fad", score_fad)`.

The module that looks a kind up imports the modules that fill it, by name (metrics:
siren_bench/scoring.py; embedders: siren_bench/evaluation/embedding.py; codecs:
siren_bench/codecs/__init__.py; report sections: siren_bench/stages/report.py), so a new one is
one new file plus one import line there, and the static import closure behind `dvc.yaml` sees it
(siren_bench/dvc_deps.py). Baselines (SYSTEMS) are the one kind found by folder: baselines/registry.py
calls `import_package("baselines")`, which imports every module there, so a new baseline is its
file and its sizes in conf/baselines/ (dvc_deps reads the call as an import of the whole folder).
Third-party embedders and systems register through Python entry points (groups
`siren_bench.embedders`, `siren_bench.systems`): an installed package's entry point names the
thing, which the registry adds under the entry point's name the first time a name is looked up
and not found.
"""

from __future__ import annotations

import importlib
import pkgutil
from importlib.metadata import entry_points
from typing import Callable, Generic, TypeVar

T = TypeVar("T")


class RegistryError(KeyError):
    """A name no module registered, or registered twice; the message lists what is known."""

    def __str__(self) -> str:  # KeyError would print the message in quotes
        return str(self.args[0])


class Registry(Generic[T]):
    """Names -> things of one kind (a metric's scoring function, an embedder's loader, ...)."""

    def __init__(self, kind: str, entry_point_group: str | None = None):
        self.kind = kind
        self.entry_point_group = entry_point_group
        self._items: dict[str, T] = {}
        self._entry_points_loaded = False

    def register(self, name: str) -> Callable[[T], T]:
        def add(thing: T) -> T:
            self.add(name, thing)
            return thing

        return add

    def add(self, name: str, thing: T) -> None:
        if name in self._items and self._items[name] is not thing:
            raise RegistryError(f"{self.kind} {name!r} is registered twice ({self._items[name]!r} and {thing!r})")
        self._items[name] = thing

    def _load_entry_points(self) -> None:
        if self._entry_points_loaded or self.entry_point_group is None:
            return
        self._entry_points_loaded = True
        for point in entry_points(group=self.entry_point_group):
            if point.name in self._items:
                continue  # a built-in name wins: an installed package cannot silently replace it
            try:
                self.add(point.name, point.load())
            except Exception as exc:  # noqa: BLE001 - any failure to import a plug-in is reported by name
                raise RegistryError(f"{self.kind} {point.name!r}: entry point {point.value!r} of group "
                                    f"{self.entry_point_group} failed to load: {type(exc).__name__}: {exc}") from exc

    def get(self, name: str) -> T:
        if name not in self._items:
            self._load_entry_points()
        try:
            return self._items[name]
        except KeyError:
            raise RegistryError(f"unknown {self.kind} {name!r}; registered: {sorted(self._items)}") from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        return name in self._items


# The kinds. A module that looks one up imports the package that fills it (statically, so that
# the stage's dvc deps hold the package): `import siren_bench.metrics` before METRICS.get(...).
METRICS: Registry[Callable] = Registry("metric")
EMBEDDERS: Registry[Callable] = Registry("embedder", entry_point_group="siren_bench.embedders")
REPORT_SECTIONS: Registry = Registry("report section")  # siren_bench/report/section.py
CODECS: Registry = Registry("codec")  # Codec classes by backend name; siren_bench/codecs/__init__.py imports them
SYSTEMS: Registry = Registry("system", entry_point_group="siren_bench.systems")  # baselines.base.BaselineSpec


def import_package(package: str) -> list[str]:
    """Import every module of `package` (in name order) so each registers what it defines; returns
    their names. siren_bench/dvc_deps.py reads a call with a literal name as an import of every
    file in the package, so a stage's dvc deps hold them all."""
    root = importlib.import_module(package)
    names = sorted(info.name for info in pkgutil.iter_modules(root.__path__))
    for name in names:
        importlib.import_module(f"{package}.{name}")
    return names
