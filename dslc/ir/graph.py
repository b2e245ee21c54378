"""The checked, backend-neutral model graph.

Shapes exclude the batch dimension and are channels-last; `None` is a dimension known
only at run time. Parameters are described in the canonical layout that checkpoints use
(see docs/weights.md): backends convert at their boundary, never here.
"""

# Annotations stay evaluated (no `from __future__ import annotations`): pydantic would compile
# each field's annotation string when the module loads, ~0.1 ms a model (docs/benchmarks.md).

import math
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from dslc.diagnostics import Span

Shape = tuple[int | None, ...]

# The dtypes a tensor may have, by their spec name, as numpy names them. Only inputs are
# declared with one; every op outputs f32 (ops that take ids, such as `embedding`, say so).
NUMPY_DTYPES = {"f32": "float32", "i32": "int32", "i64": "int64", "bool": "bool"}
FLOAT_DTYPES = frozenset({"f32"})


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

    @property
    def numpy_dtype(self) -> str:
        """The numpy dtype of a batch of this tensor (`float32`, `int64`, ...)."""
        return NUMPY_DTYPES[self.dtype]

    @property
    def is_float(self) -> bool:
        return self.dtype in FLOAT_DTYPES


# The builder constructs inputs, nodes and graphs from checked parts without validating them
# (dslc/passes/build.py), so their validators are built only where something validates one.
class Input(BaseModel):
    model_config = ConfigDict(arbitrary_types_allowed=True, defer_build=True)
    name: str
    type: TensorType
    span: Span


class BlockCall(BaseModel):
    """One expansion of a block: its layers are named `<instance>_<layer>`."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True, defer_build=True)
    instance: str
    block: str
    span: Span  # of the call


class Node(BaseModel):
    """One layer. `attrs` is the op's validated attribute model with every default pinned."""

    model_config = ConfigDict(arbitrary_types_allowed=True, defer_build=True)
    name: str
    op: str
    inputs: list[str]
    attrs: Any
    span: Span
    type: TensorType | None = None
    params: dict[str, ParamSpec] = {}
    # The block calls that made the layer, outermost first (for diagrams). Not part of what
    # the model computes, so left out of dumps (and of a run's digest).
    blocks: tuple[BlockCall, ...] = Field(default=(), exclude=True)

    @property
    def param_count(self) -> int:
        return sum(p.size for p in self.params.values())


class Graph(BaseModel):
    model_config = ConfigDict(arbitrary_types_allowed=True, defer_build=True)
    name: str
    inputs: list[Input]
    nodes: list[Node]
    outputs: list[str]
    span: Span
    # name → node and name → input, rebuilt when the lists are replaced or grow (passes append)
    _nodes: dict[str, Node] = PrivateAttr(default_factory=dict)
    _inputs: dict[str, Input] = PrivateAttr(default_factory=dict)
    _indexed: tuple[int, int, int, int] = PrivateAttr(default=(0, -1, 0, -1))

    def _index(self) -> None:
        key = (id(self.nodes), len(self.nodes), id(self.inputs), len(self.inputs))
        if key != self._indexed:
            self._nodes = {n.name: n for n in self.nodes}
            self._inputs = {i.name: i for i in self.inputs}
            self._indexed = key

    def node(self, name: str) -> Node:
        self._index()
        return self._nodes[name]

    def has_node(self, name: str) -> bool:
        self._index()
        return name in self._nodes

    def type_of(self, name: str) -> TensorType:
        self._index()
        if name in self._inputs:
            return self._inputs[name].type
        node = self._nodes[name]
        if node.type is None:
            raise KeyError(f"layer {name!r} has no type yet")
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
