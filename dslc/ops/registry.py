"""The one op registry. An op declares, in one class: its attributes (a pydantic model
with pinned defaults), its positional attribute order, how many tensor inputs it takes,
its shape rule and its parameters in the canonical layout. Backends look ops up by name.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict

from dslc.ir.graph import ParamSpec, Shape, TensorType

Activation = Literal["linear", "relu", "sigmoid", "tanh", "softmax", "leaky_relu", "gelu"]
Padding = Literal["valid", "same"]
Init = Literal[
    "glorot_uniform", "glorot_normal", "xavier_uniform", "xavier_normal", "he_uniform",
    "he_normal", "lecun_uniform", "lecun_normal", "normal", "uniform", "zeros", "ones",
    "orthogonal",
]


class ShapeError(Exception):
    """A shape rule's complaint; the pass that calls the rule adds the layer's place."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint


class OpAttrs(BaseModel):
    # Strict: `dense("10")`, `dense(2.5)` and `dense(true)` are mistakes, not conversions.
    # defer_build: an op's validator is built the first time a spec uses it, not at import.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, defer_build=True)


class NoAttrs(OpAttrs):
    pass


class Op:
    """Base of every op. Subclasses set `name` and `Attrs` and override the rules."""

    name: ClassVar[str]
    Attrs: ClassVar[type[OpAttrs]] = NoAttrs
    positional: ClassVar[tuple[str, ...]] = ()
    min_inputs: ClassVar[int] = 1
    max_inputs: ClassVar[int | None] = 1
    category: ClassVar[str] = "layer"
    layout: ClassVar[str] = ""  # canonical parameter shapes, for the docs

    def infer(self, attrs, inputs: list[TensorType]) -> TensorType:  # pragma: no cover
        raise NotImplementedError

    def params(self, attrs, inputs: list[TensorType]) -> dict[str, ParamSpec]:
        return {}

    def macs(self, node, inputs: list[TensorType]) -> int:
        """Multiply-adds of one sample's forward pass (0 for cheap ops)."""
        return 0

    @classmethod
    def summary(cls) -> str:
        return (cls.__doc__ or "").strip().splitlines()[0]


OPS: dict[str, Op] = {}


def register(cls: type[Op]) -> type[Op]:
    if cls.name in OPS:
        raise ValueError(f"op {cls.name!r} registered twice")
    OPS[cls.name] = cls()
    return cls


def get_op(name: str) -> Op | None:
    _load()
    return OPS.get(name)


def all_ops() -> dict[str, Op]:
    _load()
    return OPS


def _load() -> None:
    # Importing the op families fills the registry.
    from dslc.ops import activation, conv, core, merge, pool, recurrent  # noqa: F401


def graph_macs(graph) -> int:
    """Multiply-adds of one sample's forward pass through `graph`."""
    return sum(get_op(n.op).macs(n, [graph.type_of(i) for i in n.inputs]) for n in graph.nodes)


# Below this many multiply-adds a batch, one CPU thread trains faster: the per-op work is too
# small to amortise OpenMP's hand-offs, and on a busy 2-core machine a second thread that spins
# waiting for a core costs up to 10x (measured on digits_cnn). Both trainers use this rule.
SMALL_BATCH_MACS = 20_000_000


def fmt(shape: Shape) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def pair(v: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    if isinstance(v, int):
        return (v, v)
    return (int(v[0]), int(v[1]))
