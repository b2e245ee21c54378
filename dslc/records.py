"""Record classes for the front end: what `@dataclass` gives them (fields with defaults and
default factories, construction by position or keyword, ==, repr; frozen ones immutable and
hashable), written once instead of generated per class. `dataclass` compiles its methods with
`exec` for every class, ~0.5 ms apiece, and `dslc check` defines about 35 of them (syntax
tree, diagnostics, passes) on every run (docs/benchmarks.md)."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from dataclasses import FrozenInstanceError
from typing import Any, TypeVar

if sys.version_info >= (3, 11):
    from typing import dataclass_transform
else:  # pragma: no cover - pydantic depends on typing_extensions
    from typing_extensions import dataclass_transform

T = TypeVar("T")


class Record:
    __slots__ = ()
    _fields: tuple[str, ...] = ()
    _defaults: dict[str, Any] = {}
    _factories: dict[str, Callable[[], Any]] = {}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if len(args) > len(self._fields):
            raise TypeError(f"{type(self).__name__}() takes {len(self._fields)} positional "
                            f"arguments but {len(args)} were given")
        for name, value in zip(self._fields, args):
            if name in kwargs:
                raise TypeError(f"{type(self).__name__}() got multiple values for {name!r}")
            kwargs[name] = value
        for name in self._fields:
            if name in kwargs:
                value = kwargs.pop(name)
            elif name in self._defaults:
                value = self._defaults[name]
            elif name in self._factories:
                value = self._factories[name]()
            else:
                raise TypeError(f"{type(self).__name__}() missing argument {name!r}")
            object.__setattr__(self, name, value)
        if kwargs:
            raise TypeError(f"{type(self).__name__}() got an unexpected keyword argument "
                            f"{next(iter(kwargs))!r}")

    def _values(self) -> tuple:
        return tuple(getattr(self, f) for f in self._fields)

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and self._values() == other._values()

    __hash__ = None  # type: ignore[assignment]  # mutable, as a dataclass with eq

    def __repr__(self) -> str:
        inner = ", ".join(f"{f}={getattr(self, f)!r}" for f in self._fields)
        return f"{type(self).__name__}({inner})"

    def __reduce__(self) -> tuple:
        # copy, deepcopy and pickle rebuild through __init__ (frozen records refuse setattr)
        return type(self), self._values()


class FrozenRecord(Record):
    __slots__ = ()

    def __setattr__(self, name: str, value: Any) -> None:
        raise FrozenInstanceError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise FrozenInstanceError(f"cannot delete field {name!r}")

    def __hash__(self) -> int:  # type: ignore[override]
        return hash((type(self).__name__, self._values()))


def make(cls: type, base: type[Record]) -> type:
    """`cls` rebuilt as a slotted subclass of `base` with its annotated fields."""
    own = tuple(cls.__dict__.get("__annotations__", {}))
    fields = [f for b in reversed(cls.__mro__[1:]) for f in getattr(b, "_fields", ())]
    fields += [f for f in own if f not in fields]
    defaults = dict(getattr(cls, "_defaults", {}))
    factories = dict(getattr(cls, "_factories", {}))
    for f in own:
        if f not in cls.__dict__:
            continue
        value = cls.__dict__[f]
        if isinstance(value, dataclasses.Field):  # `field(default_factory=...)`
            factories[f] = value.default_factory
        else:
            defaults[f] = value
    ns = {k: v for k, v in cls.__dict__.items()
          if k not in own and k not in ("__dict__", "__weakref__")}
    ns.update(__slots__=own, _fields=tuple(fields), _defaults=defaults, _factories=factories)
    bases = cls.__bases__ if issubclass(cls, base) else \
        (*(b for b in cls.__bases__ if b is not object), base)
    return type(cls.__name__, bases, ns)


@dataclass_transform(field_specifiers=(dataclasses.field,))
def record(cls: type[T]) -> type[T]:
    """A mutable record (`@dataclass`)."""
    return make(cls, Record)


@dataclass_transform(frozen_default=True, field_specifiers=(dataclasses.field,))
def frozen(cls: type[T]) -> type[T]:
    """An immutable, hashable record (`@dataclass(frozen=True)`)."""
    return make(cls, FrozenRecord)


def replace(rec: T, **changes: Any) -> T:
    """A copy of `rec` with `changes` (what `dataclasses.replace` does)."""
    values = {f: getattr(rec, f) for f in rec._fields}  # type: ignore[attr-defined]
    return type(rec)(**{**values, **changes})
