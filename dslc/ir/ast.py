"""Syntax tree of a .dl file, as the parser builds it. Every node keeps its span."""

from __future__ import annotations

import sys
from typing import Any, TypeVar

from dslc.diagnostics import Span
from dslc.records import FrozenRecord, make
from dslc.records import replace as replace  # ast.replace(tree, ...)

if sys.version_info >= (3, 11):
    from typing import dataclass_transform
else:  # pragma: no cover - pydantic depends on typing_extensions
    from typing_extensions import dataclass_transform

T = TypeVar("T")


# Plain slotted classes (dslc/records.py): the tree is built once per parse and thrown away,
# and `dslc check` must start fast. The checked IR (dslc/ir/graph.py, train.py) is pydantic.
@dataclass_transform(frozen_default=True, kw_only_default=True)
def node(cls: type[T]) -> type[T]:
    return make(cls, FrozenRecord)


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
