"""Syntax tree of a .dl file, as the parser builds it. Every node keeps its span."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from dslc.diagnostics import Span


class Node(BaseModel):
    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)
    span: Span


# expressions
class Num(Node):
    value: int | float


class Str(Node):
    value: str


class Name(Node):
    id: str


class KwArg(Node):
    name: str
    value: Any


class Call(Node):
    func: str
    func_span: Span
    args: list[Any]
    kwargs: list[KwArg]


class ListExpr(Node):
    items: list[Any]


class BinOp(Node):
    op: str
    left: Any
    right: Any


class Neg(Node):
    operand: Any


class Dynamic(Node):
    """A `?` dimension: known only at run time (sequence length)."""


# statements
class InputDecl(Node):
    name: str
    dtype: str | None = None
    dims: list[Any] | None = None


class Output(Node):
    values: list[Any]


class Let(Node):
    name: str
    value: Any


class Assign(Node):
    targets: list[str]
    value: Any


class Apply(Node):
    value: Any


class Repeat(Node):
    count: Any
    body: list[Any]


# top-level items
class Param(Node):
    name: str
    type: str
    default: Any = None


class Model(Node):
    name: str
    body: list[Any]


class Block(Node):
    name: str
    params: list[Param]
    body: list[Any]


class Setting(Node):
    name: str
    value: Any


class Train(Node):
    model: str
    settings: list[Setting]


class Use(Node):
    path: str


class Program(BaseModel):
    model_config = ConfigDict(arbitrary_types_allowed=True)
    file: str
    items: list[Any]
