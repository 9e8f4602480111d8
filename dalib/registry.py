"""Name-to-factory registries, so that a config selects a component by name and its options."""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

from dalib.errors import DalibError

T = TypeVar("T")

#: A component in a config: a bare name, or a mapping with ``name`` and the component's options.
Spec = str | Mapping[str, Any]


class Registry(Generic[T]):
    """Maps names to factories (classes or functions) of one kind of component."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._factories: dict[str, Callable[..., T]] = {}

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator: make ``factory`` available under ``name``."""

        def add(factory: Callable[..., T]) -> Callable[..., T]:
            if name in self._factories:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._factories[name] = factory
            return factory

        return add

    def names(self) -> list[str]:
        return sorted(self._factories)

    def get(self, name: str) -> Callable[..., T]:
        if name not in self._factories:
            close = difflib.get_close_matches(name, self._factories, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise DalibError(
                f"unknown {self.kind} {name!r}{hint}; choose one of: {', '.join(self.names())}"
            )
        return self._factories[name]

    def build(self, spec: Spec, **context: Any) -> T:
        """Build a component from its spec.

        Options must be named parameters of the factory. ``context`` holds values the caller
        knows (for example ``in_features``); each is passed only to factories whose signature
        names it, so one call site serves every component.
        """
        name, options = split_spec(spec, self.kind)
        factory = self.get(name)
        params = {
            name: p
            for name, p in inspect.signature(factory).parameters.items()
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        }
        unknown = [key for key in options if key not in params]
        if unknown:
            valid = [p for p in params if p not in context]
            raise DalibError(
                f"unknown option {unknown[0]!r} for {self.kind} {name!r}; "
                f"valid options: {', '.join(valid) or 'none'}"
            )
        kwargs = {key: value for key, value in context.items() if key in params}
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
