"""Named registries for the extension points, and the plugins that fill them from outside.

Each extension point (refinement strategies, dataset formats, proposal generators) is one
:class:`Registry`. A new entry is one class or function plus one decorator, in the package or in
the user's own module::

    from semires.data.formats import DataFormat, register_format

    register_format(DataFormat("csv", read_csv, suffixes=(".csv",)))

    from semires.train.strategies import Strategy, register_strategy

    @register_strategy("mine")
    class Mine(Strategy): ...

The command line (and every worker process it starts) must import the user's module before it
reads a config that names the entry: :func:`load_plugins` imports the modules listed in the
``SEMIRES_PLUGINS`` environment variable (comma-separated; ``semires --plugin mod`` sets it) and
those advertised by installed packages under the ``semires.plugins`` entry-point group.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from semires.errors import ConfigError

T = TypeVar("T")

#: environment variable naming plugin modules (comma-separated), imported by :func:`load_plugins`
PLUGINS_ENV = "SEMIRES_PLUGINS"
#: entry-point group of installed plugin packages
ENTRY_POINT_GROUP = "semires.plugins"

_loaded: set[str] = set()


class Registry(Generic[T]):
    """Name -> object, in the order of registration; ``kind`` names the extension point in
    errors ("unknown refinement strategy 'x'; registered: cpi, iom, ...")."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str, *, replace: bool = False) -> Callable[[T], T]:
        """Decorator: register the decorated object under ``name`` (a second registration of a
        name is an error unless ``replace``)."""

        def add(obj: T) -> T:
            self.add(name, obj, replace=replace)
            return obj

        return add

    def add(self, name: str, obj: T, *, replace: bool = False) -> None:
        if not isinstance(name, str) or not name or not name.replace("_", "").isalnum():
            raise ConfigError(f"{self.kind} name {name!r}: expected letters, digits and _")
        if name in self._items and not replace and self._items[name] is not obj:
            raise ConfigError(f"{self.kind} {name!r} is registered already")
        self._items[name] = obj

    def get(self, name: str) -> T:
        """The object registered as ``name``; an unknown name lists the registered ones."""
        if name not in self._items:
            load_plugins()
        try:
            return self._items[name]
        except (KeyError, TypeError):
            raise ConfigError(
                f"unknown {self.kind} {name!r}; registered: {', '.join(self._items)}"
            ) from None

    def names(self) -> tuple[str, ...]:
        return tuple(self._items)

    def items(self) -> Iterator[tuple[str, T]]:
        return iter(list(self._items.items()))

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._items))

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self._items)})"


def plugin_modules() -> list[str]:
    """The module names in ``SEMIRES_PLUGINS``."""
    return [m.strip() for m in os.environ.get(PLUGINS_ENV, "").split(",") if m.strip()]


def load_plugins(extra: list[str] | tuple[str, ...] = ()) -> None:
    """Import the plugin modules (``extra``, ``SEMIRES_PLUGINS``, installed entry points) once
    each; a module that cannot be imported is a :class:`ConfigError` naming it."""
    from importlib.metadata import entry_points

    names: list[Any] = [*extra, *plugin_modules()]
    names += [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.value not in _loaded]
    for item in names:
        key = item if isinstance(item, str) else item.value
        if key in _loaded:
            continue
        _loaded.add(key)
        try:
            if isinstance(item, str):
                importlib.import_module(item)
            else:
                item.load()
        except Exception as exc:  # the plugin's own error, in one line
            _loaded.discard(key)
            raise ConfigError(f"plugin {key!r} could not be imported: {exc}") from None


def use_plugins(modules: list[str] | tuple[str, ...]) -> None:
    """Import ``modules`` now and add them to ``SEMIRES_PLUGINS``, so that worker processes
    started later import them too."""
    load_plugins(modules)
    current = plugin_modules()
    os.environ[PLUGINS_ENV] = ",".join([*current, *(m for m in modules if m not in current)])
