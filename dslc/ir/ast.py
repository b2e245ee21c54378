"""Syntax tree of a .dl file, as the parser builds it. Every node keeps its span."""

from __future__ import annotations

import sys
from dataclasses import FrozenInstanceError
from typing import Any, TypeVar

from dslc.diagnostics import Span

if sys.version_info >= (3, 11):
    from typing import dataclass_transform
else:  # pragma: no cover - pydantic depends on typing_extensions
    from typing_extensions import dataclass_transform

T = TypeVar("T")


class _Frozen:
    """What `@dataclass(frozen=True, slots=True, kw_only=True)` gave the nodes (keyword
    construction with defaults, immutability, slots, ==, hash, repr), written once instead
    of generated per class: dataclass compiles five methods for each of the 24 node classes,
    about 11 ms of every `dslc check` (docs/benchmarks.md)."""

    __slots__ = ()
    _fields: tuple[str, ...] = ()
    _defaults: dict[str, Any] = {}

    def __init__(self, **kwargs: Any) -> None:
        for name in self._fields:
            if name in kwargs:
                value = kwargs.pop(name)
            elif name in self._defaults:
                value = self._defaults[name]
            else:
                raise TypeError(f"{type(self).__name__}() missing keyword argument {name!r}")
            object.__setattr__(self, name, value)
        if kwargs:
            raise TypeError(f"{type(self).__name__}() got an unexpected keyword argument "
                            f"{next(iter(kwargs))!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        raise FrozenInstanceError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise FrozenInstanceError(f"cannot delete field {name!r}")

    def _values(self) -> tuple:
        return tuple(getattr(self, f) for f in self._fields)

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and self._values() == other._values()

    def __hash__(self) -> int:
        return hash((type(self).__name__, self._values()))

    def __repr__(self) -> str:
        inner = ", ".join(f"{f}={getattr(self, f)!r}" for f in self._fields)
        return f"{type(self).__name__}({inner})"


def replace(tree: T, **changes: Any) -> T:
    """A copy of the node `tree` with `changes` (what `dataclasses.replace` does)."""
    values = {f: getattr(tree, f) for f in tree._fields}  # type: ignore[attr-defined]
    return type(tree)(**{**values, **changes})


# Plain slotted classes: the tree is built once per parse and thrown away, and `dslc check`
# must start fast. The checked IR (dslc/ir/graph.py, train.py) is pydantic.
@dataclass_transform(frozen_default=True, kw_only_default=True)
def node(cls: type[T]) -> type[T]:
    own = tuple(cls.__dict__.get("__annotations__", {}))
    fields = [f for base in reversed(cls.__mro__[1:]) for f in getattr(base, "_fields", ())]
    fields += [f for f in own if f not in fields]
    defaults = {**getattr(cls, "_defaults", {}),
                **{f: cls.__dict__[f] for f in own if f in cls.__dict__}}
    ns = {k: v for k, v in cls.__dict__.items()
          if k not in own and k not in ("__dict__", "__weakref__")}
    ns.update(__slots__=own, _fields=tuple(fields), _defaults=defaults)
    bases = cls.__bases__ if issubclass(cls, _Frozen) else \
        (*(b for b in cls.__bases__ if b is not object), _Frozen)
    return type(cls.__name__, bases, ns)


@node
class Node:
    span: Span


# expressions
@node
class Num(Node):
    value: int | float


@node
class Str(Node):
    value: str


@node
class Name(Node):
    id: str


@node
class KwArg(Node):
    name: str
    value: Any


@node
class Call(Node):
    func: str
    func_span: Span
    args: list[Any]
    kwargs: list[KwArg]


@node
class ListExpr(Node):
    items: list[Any]


@node
class BinOp(Node):
    op: str
    left: Any
    right: Any


@node
class Neg(Node):
    operand: Any


@node
class Dynamic(Node):
    """A `?` dimension: known only at run time (sequence length)."""


# statements
@node
class InputDecl(Node):
    name: str
    dtype: str | None = None
    dims: list[Any] | None = None


@node
class Output(Node):
    values: list[Any]


@node
class Let(Node):
    name: str
    value: Any


@node
class Assign(Node):
    targets: list[str]
    value: Any


@node
class Apply(Node):
    value: Any


@node
class Repeat(Node):
    count: Any
    body: list[Any]


@node
class For(Node):
    """`for var in items { body }`: the body once per element of the list `items`."""

    var: str
    var_span: Span
    items: Any
    body: list[Any]


# top-level items
@node
class Param(Node):
    name: str
    type: str
    default: Any = None


@node
class Model(Node):
    name: str
    body: list[Any]


@node
class Block(Node):
    name: str
    params: list[Param]
    body: list[Any]


@node
class Setting(Node):
    name: str
    value: Any


@node
class Train(Node):
    model: str
    settings: list[Setting]


@node
class Use(Node):
    path: str


@node
class Program:
    file: str
    items: list[Any]
