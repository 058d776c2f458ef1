"""One generic registry per kind of plug-in: defenses, attacks, metrics, datasets and architectures.

A plug-in is a class with the class attributes `name` (its registry key), `paper` (the citation shown by
`mibench list`), `version` (bumped when its behaviour changes, which invalidates its cached artifacts) and `Params`
(a pydantic model whose defaults are the paper's values). It registers itself where it is defined::

    @DEFENSES.register
    class NoDefense(Defense):
        name = "none"
        ...

Built-in plug-ins are imported on first lookup; third-party packages can add theirs through the entry-point group
``mibench.plugins`` (each entry point names a module to import), and modules that are not installed as packages
through ``MIBENCH_PLUGINS`` (comma-separated module names on ``sys.path``; worker processes inherit it).
"""

from __future__ import annotations

import importlib
import os
import pkgutil
from collections.abc import Iterator
from importlib.metadata import entry_points
from typing import Any, Generic, TypeVar

from mibench.errors import MibenchError, UnknownNameError

T = TypeVar("T", bound=type)

_BUILTIN_PACKAGES = ("mibench.data", "mibench.models", "mibench.defenses", "mibench.attacks", "mibench.metrics")
_loaded = False
PLUGINS_VARIABLE = "MIBENCH_PLUGINS"


def import_submodules(package: str) -> None:
    """Import every module of `package`, so that dropping a file into it is all it takes to register a method."""
    pkg = importlib.import_module(package)
    for info in pkgutil.iter_modules(pkg.__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{package}.{info.name}")


def load_plugins() -> None:
    """Import the built-in plug-in packages and any `mibench.plugins` entry points (once)."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    for package in _BUILTIN_PACKAGES:
        import_submodules(package)
    for ep in entry_points(group="mibench.plugins"):
        importlib.import_module(ep.value)
    for module in (m.strip() for m in os.environ.get(PLUGINS_VARIABLE, "").split(",")):
        if module:
            try:
                importlib.import_module(module)
            except ImportError as exc:
                raise MibenchError(f"{PLUGINS_VARIABLE}: cannot import plug-in module {module!r}: {exc}") from exc


class Registry(Generic[T]):
    """Maps names to plug-in classes of one kind.

    Args:
        kind: What the entries are ("defense", "attack", ...); used in error messages.
        base: Every registered class must subclass it.
    """

    def __init__(self, kind: str, base: type | None = None):
        self.kind = kind
        self.base = base
        self._entries: dict[str, T] = {}

    def register(self, cls: T) -> T:
        """Class decorator: add `cls` under `cls.name`. A second class under the same name raises."""
        name = getattr(cls, "name", None)
        if not isinstance(name, str) or not name:
            raise TypeError(f"{cls.__qualname__} needs a class attribute `name` to be registered as a {self.kind}")
        if self.base is not None and not issubclass(cls, self.base):
            raise TypeError(f"{cls.__qualname__} must subclass {self.base.__name__} to be registered as a {self.kind}")
        for attr in ("paper", "Params"):
            if not hasattr(cls, attr):
                raise TypeError(f"{self.kind} {name!r} ({cls.__qualname__}) lacks the class attribute `{attr}`")
        existing = self._entries.get(name)
        if existing is not None and existing is not cls:
            raise ValueError(
                f"{self.kind} {name!r} is registered twice: by {existing.__module__}.{existing.__qualname__} "
                f"and by {cls.__module__}.{cls.__qualname__}"
            )
        self._entries[name] = cls
        return cls

    def get(self, name: str) -> T:
        """The class registered under `name`; an unknown name raises with did-you-mean suggestions."""
        load_plugins()
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(self.kind, name, self._entries) from None

    def names(self) -> list[str]:
        """All registered names, sorted."""
        load_plugins()
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        load_plugins()
        return name in self._entries

    def __iter__(self) -> Iterator[tuple[str, T]]:
        load_plugins()
        return iter(sorted(self._entries.items()))

    def unregister(self, name: str) -> None:
        """Remove an entry (tests register throw-away plug-ins)."""
        self._entries.pop(name, None)


def build_params(cls: Any, params: dict[str, Any] | None) -> Any:
    """Validate `params` against `cls.Params` (raises pydantic's ValidationError)."""
    return cls.Params.model_validate(params or {})


# The registries. Base classes are checked lazily by the plug-in base modules to avoid import cycles.
DEFENSES: Registry = Registry("defense")
ATTACKS: Registry = Registry("attack")
METRICS: Registry = Registry("metric")
DATASETS: Registry = Registry("dataset")
ARCHITECTURES: Registry = Registry("architecture")

REGISTRIES: dict[str, Registry] = {
    "defenses": DEFENSES,
    "attacks": ATTACKS,
    "metrics": METRICS,
    "datasets": DATASETS,
    "architectures": ARCHITECTURES,
}
