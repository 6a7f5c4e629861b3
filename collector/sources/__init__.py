"""The registry of sources: one `SourceSpec` per source. Adding a source is one package and one line here.

A spec names the source (its settings section `COLLECTOR_<NAME>__*`, its `source` metric label and
its key here, all one string by construction), its settings model and its class, both by name: the
models are light (no library at all), while a source's libraries
(stripe, websockets, gidgethub, psutil, ...) are imported only when that source is enabled, so a
collector that only tails logs does not carry them in memory or pay for them at start-up. The
loaders' return types let mypy check that each class conforms to `collector.source.Source`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collector.settings.base import SourceSettings
    from collector.source import Source

__all__ = ["SOURCES", "Registry", "SourceSpec"]


@dataclass(frozen=True)
class SourceSpec:
    """One source's declaration in the registry.

    Args:
        name: settings section, metric label and registry key (lowercase identifier).
        settings: its settings model (a `SourceSettings`): the class name in `collector.settings.sources`
            (light: no library), or a function returning the class (a source declared elsewhere).
        source: its class (a `SourceBase`): `"module:attr"`, imported only when the source is enabled,
            or a function returning the class.
    """

    name: str
    settings: str | Callable[[], type[SourceSettings]]
    source: str | Callable[[], type[Source]]

    def __post_init__(self) -> None:
        if not self.name.isidentifier() or self.name != self.name.lower():
            raise ValueError(f"source name {self.name!r} must be a lowercase identifier")

    def settings_model(self) -> type[SourceSettings]:
        """The settings model (imports `collector.settings.sources`, never the source's libraries).

        Raises:
            TypeError: the declared model is not a `SourceSettings`.
        """
        from collector.settings.base import SourceSettings

        if isinstance(self.settings, str):
            from collector.settings import sources as models

            model = getattr(models, self.settings)
        else:
            model = self.settings()
        if not (isinstance(model, type) and issubclass(model, SourceSettings)):
            raise TypeError(f"source {self.name!r}: settings {model!r} is not a SourceSettings model")
        return model

    def load(self) -> type[Source]:
        """The source class (imports its module and libraries: call it only for an enabled source).

        Raises:
            TypeError: the declared class does not subclass `SourceBase`, whose declarations mypy
                checks every source against.
        """
        from collector.source import SourceBase

        if isinstance(self.source, str):
            module, _, attr = self.source.partition(":")
            cls = getattr(importlib.import_module(module), attr)
        else:
            cls = self.source()
        if not (isinstance(cls, type) and issubclass(cls, SourceBase)):
            raise TypeError(f"source {self.name!r}: {cls!r} does not subclass collector.source.SourceBase")
        if cls.name != self.name:
            raise TypeError(f"source {self.name!r}: its class {cls.__name__} is named {cls.name!r}")
        return cls


class Registry(Mapping[str, SourceSpec]):
    """An immutable, ordered set of source specs, keyed by their names (order: settings, start-up).

    Args:
        specs: the sources; a name given twice raises ValueError.
    """

    def __init__(self, *specs: SourceSpec) -> None:
        self._specs: dict[str, SourceSpec] = {}
        for spec in specs:
            if spec.name in self._specs:
                raise ValueError(f"source {spec.name!r} is registered twice")
            self._specs[spec.name] = spec

    def __getitem__(self, name: str) -> SourceSpec:
        return self._specs[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._specs)

    def __len__(self) -> int:
        return len(self._specs)

    def __repr__(self) -> str:
        return f"Registry({', '.join(self._specs)})"

    def plus(self, *specs: SourceSpec) -> Registry:
        """This registry with `specs` added after its own (a test's extra source)."""
        return Registry(*self.values(), *specs)

    def only(self, *names: str) -> Registry:
        """The specs named, in this registry's order."""
        return Registry(*(spec for name, spec in self.items() if name in names))


#: Every source, in settings order (the order `--help` and the config dump list them).
SOURCES = Registry(
    SourceSpec("process", "ProcessSettings", "collector.sources.process:ProcessSource"),
    SourceSpec("stripe", "StripeSettings", "collector.sources.stripe.source:StripeSource"),
    SourceSpec("github", "GitHubSettings", "collector.sources.github.source:GitHubSource"),
    SourceSpec("deployments", "DeploymentsSettings", "collector.sources.github.ci:DeploymentsSource"),
    SourceSpec("websocket", "WebSocketSettings", "collector.sources.websocket.source:WebSocketSource"),
    SourceSpec("logs", "LogsSettings", "collector.sources.logs.source:LogsSource"),
)
