"""Name-to-factory registries, so that a config selects a component by name and its options.

Every pluggable kind of component has one ``Registry``: discrepancies, kernels, backbones,
datasets, target losses, schedules, selection scores and density-ratio estimators. A name in a
config resolves to, in this order:

1. a built-in: a factory registered with ``@REGISTRY.register("name")`` by a dalib module;
2. a ``"package.module:Name"`` spec (any name with a colon), imported when it is used;
3. a package entry point named ``name`` in the registry's group (``dalib.discrepancies``...),
   which a plugin distribution declares in its metadata.

Entry points are read only when a name is neither a built-in nor a spec, or when every name is
listed (``names``, ``entries``), never at ``import dalib``. A plugin that fails to import is one
line naming the plugin and the error, and leaves the other names working.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import re
import warnings
from collections.abc import Callable, Mapping
from importlib import metadata
from typing import Any, Generic, TypeVar

from dalib.errors import DalibError, DalibWarning

T = TypeVar("T")

#: A component in a config: a bare name, or a mapping with ``name`` and the component's options.
Spec = str | Mapping[str, Any]

#: ``package.module:Name`` (the attribute may be dotted, ``module:Outer.Inner``).
SPEC_PATTERN = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


class Registry(Generic[T]):
    """Maps names to factories (classes or functions) of one kind of component.

    ``kind`` names the component in messages; ``group`` is the entry-point group from which
    installed plugins add factories. Public methods, for commands that list what exists:

    - ``names()``: every selectable name, built-ins and entry points (imports no plugin);
    - ``entries(plugins=True)``: name to factory, built-ins first, then the entry points,
      imported; a plugin that fails to import is left out with a one-line ``DalibWarning``;
    - ``entry_points()``: name to the ``importlib.metadata.EntryPoint`` of each plugin that a
      built-in does not shadow (``.dist.name`` is the distribution that declares it);
    - ``get(name)``: the factory of a name, spec or entry point; ``build(spec, **context)``.
    """

    def __init__(self, kind: str, group: str) -> None:
        self.kind = kind
        self.group = group
        self._factories: dict[str, Callable[..., T]] = {}
        self._loaded: dict[str, Callable[..., T]] = {}  # specs and entry-point values, imported

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator: make ``factory`` available under ``name``."""
        if ":" in name:
            raise ValueError(f"{self.kind} name {name!r} has a colon, which marks a spec")

        def add(factory: Callable[..., T]) -> Callable[..., T]:
            if name in self._factories:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._factories[name] = factory
            return factory

        return add

    def names(self) -> list[str]:
        """Built-in and entry-point names, sorted."""
        return sorted({*self._factories, *self.entry_points()})

    def entry_points(self) -> dict[str, metadata.EntryPoint]:
        """The installed plugins of this kind, by name, without importing them.

        A plugin named like a built-in is shadowed by it, and of two plugins of one name the
        first on ``sys.path`` wins; a warning says how to select the other by its spec.
        """
        found: dict[str, metadata.EntryPoint] = {}
        for point in metadata.entry_points(group=self.group):
            if point.name in self._factories:
                warnings.warn(
                    f"{self.kind} plugin {point.name!r} ({describe(point)}) is shadowed by "
                    f"dalib's built-in of that name; select it as {point.value!r}",
                    DalibWarning,
                    stacklevel=2,
                )
            elif point.name in found:
                if found[point.name].value != point.value:
                    warnings.warn(
                        f"{self.kind} plugin {point.name!r} is declared twice; using "
                        f"{describe(found[point.name])}, not {describe(point)} (select that "
                        f"one as {point.value!r})",
                        DalibWarning,
                        stacklevel=2,
                    )
            else:
                found[point.name] = point
        return found

    def entries(self, plugins: bool = True) -> dict[str, Callable[..., T]]:
        """Name to factory: the built-ins and, with ``plugins``, every loadable entry point."""
        entries = dict(sorted(self._factories.items()))
        if not plugins:
            return entries
        for name, point in sorted(self.entry_points().items()):
            try:
                entries[name] = self._load_entry_point(point)
            except DalibError as error:
                warnings.warn(str(error), DalibWarning, stacklevel=2)
        return entries

    def get(self, name: str) -> Callable[..., T]:
        """The factory of a built-in name, a ``"package.module:Name"`` spec or an entry point."""
        if name in self._factories:
            return self._factories[name]
        if ":" in name:
            if name not in self._loaded:
                self._loaded[name] = load_spec(name, self.kind)
            return self._loaded[name]
        point = self.entry_points().get(name)
        if point is None:
            names = self.names()
            close = difflib.get_close_matches(name, names, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise DalibError(
                f"unknown {self.kind} {name!r}{hint}; choose one of: {', '.join(names)}, "
                "or give a 'package.module:Name' spec"
            )
        return self._load_entry_point(point)

    def _load_entry_point(self, point: metadata.EntryPoint) -> Callable[..., T]:
        if point.value not in self._loaded:
            try:
                factory = point.load()
            except Exception as error:  # a plugin's import can fail in any way
                raise DalibError(
                    f"{self.kind} plugin {point.name!r} ({describe(point)}) failed to load: "
                    f"{one_line(error)}"
                ) from error
            self._loaded[point.value] = check_callable(factory, point.value, self.kind)
        return self._loaded[point.value]

    def build(self, spec: Spec, **context: Any) -> T:
        """Build a component from its spec.

        Options must be named parameters of the factory, unless it takes ``**kwargs``.
        ``context`` holds values the caller knows (for example ``in_features``); each is passed
        only to factories whose signature names it, so one call site serves every component.
        """
        name, options = split_spec(spec, self.kind)
        factory = self.get(name)
        parameters = inspect.signature(factory).parameters.values()
        named = [p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        takes_any = any(p.kind == p.VAR_KEYWORD for p in parameters)
        unknown = [key for key in options if key not in named]
        if unknown and not takes_any:
            valid = [p for p in named if p not in context]
            raise DalibError(
                f"unknown option {unknown[0]!r} for {self.kind} {name!r}; "
                f"valid options: {', '.join(valid) or 'none'}"
            )
        kwargs = {key: value for key, value in context.items() if key in named}
        kwargs.update(options)
        return factory(**kwargs)


def split_spec(spec: Spec, kind: str) -> tuple[str, dict[str, Any]]:
    """Split ``"name"`` or ``{"name": ..., **options}`` into the name and the options."""
    if isinstance(spec, str):
        return spec, {}
    if isinstance(spec, Mapping) and isinstance(spec.get("name"), str):
        options = dict(spec)
        return options.pop("name"), options
    raise DalibError(f"a {kind} is given as a name or as a mapping with a 'name' key, got {spec!r}")


def load_spec(spec: str, kind: str) -> Callable[..., Any]:
    """Import the object a ``"package.module:Name"`` spec names; one line if it cannot be."""
    if not SPEC_PATTERN.match(spec):
        raise DalibError(
            f"{kind} {spec!r} is not a valid spec; write 'package.module:Name' (a module path, "
            "a colon, an attribute)"
        )
    module_name, attribute = spec.split(":")
    try:
        found = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        raise DalibError(
            f"{kind} {spec!r}: cannot import {module_name!r} ({one_line(error)}); install the "
            "package that provides it or fix the module path"
        ) from error
    except Exception as error:  # the module itself raised while being imported
        raise DalibError(
            f"{kind} {spec!r}: importing {module_name!r} failed: {one_line(error)}"
        ) from error
    for part in attribute.split("."):
        if not hasattr(found, part):
            raise DalibError(
                f"{kind} {spec!r}: {module_name!r} has no attribute {attribute!r}; check the "
                "name after the colon"
            )
        found = getattr(found, part)
    return check_callable(found, spec, kind)


def check_callable(factory: Any, where: str, kind: str) -> Callable[..., Any]:
    if not callable(factory):
        raise DalibError(
            f"{kind} {where!r} is a {type(factory).__name__}, not a class or function that "
            f"builds a {kind}"
        )
    return factory


def describe(point: metadata.EntryPoint) -> str:
    """``value, from distribution version``: where an entry point comes from."""
    dist = point.dist
    source = f", from {dist.name} {dist.version}" if dist is not None else ""
    return f"{point.value}{source}"


def one_line(error: BaseException) -> str:
    """``Type: message`` on one line."""
    return f"{type(error).__name__}: {' '.join(str(error).split())}"
