"""The checked, backend-neutral model graph.

Shapes exclude the batch dimension and are channels-last; `None` is a dimension known
only at run time. Parameters are described in the canonical layout that checkpoints use
(see docs/weights.md): backends convert at their boundary, never here.
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel, ConfigDict

from dslc.diagnostics import Span

Shape = tuple[int | None, ...]


class ParamSpec(BaseModel):
    model_config = ConfigDict(frozen=True)
    shape: tuple[int, ...]
    init: str
    trainable: bool = True

    @property
    def size(self) -> int:
        return math.prod(self.shape)


class TensorType(BaseModel):
    model_config = ConfigDict(frozen=True)
    dtype: str = "f32"
    shape: Shape

    def __str__(self) -> str:
        dims = ", ".join("?" if d is None else str(d) for d in self.shape)
        return f"[{dims}]"


class Input(BaseModel):
    model_config = ConfigDict(arbitrary_types_allowed=True)
    name: str
    type: TensorType
    span: Span


class Node(BaseModel):
    """One layer. `attrs` is the op's validated attribute model with every default pinned."""

    model_config = ConfigDict(arbitrary_types_allowed=True)
    name: str
    op: str
    inputs: list[str]
    attrs: Any
    span: Span
    type: TensorType | None = None
    params: dict[str, ParamSpec] = {}

    @property
    def param_count(self) -> int:
        return sum(p.size for p in self.params.values())


class Graph(BaseModel):
    model_config = ConfigDict(arbitrary_types_allowed=True)
    name: str
    inputs: list[Input]
    nodes: list[Node]
    outputs: list[str]
    span: Span

    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    def type_of(self, name: str) -> TensorType:
        for i in self.inputs:
            if i.name == name:
                return i.type
        node = self.node(name)
        assert node.type is not None
        return node.type

    @property
    def param_count(self) -> int:
        return sum(n.param_count for n in self.nodes)

    @property
    def trainable_param_count(self) -> int:
        return sum(p.size for n in self.nodes for p in n.params.values() if p.trainable)

    def param_specs(self) -> dict[str, ParamSpec]:
        """Every parameter by its checkpoint key `<layer>.<param>`, in graph order."""
        return {f"{n.name}.{k}": p for n in self.nodes for k, p in n.params.items()}
