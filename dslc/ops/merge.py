"""Ops that join several tensors."""

# Annotations stay evaluated (no `from __future__ import annotations`): pydantic would compile
# each field's annotation string when the module loads, ~0.1 ms a model (docs/benchmarks.md).

from typing import ClassVar

from dslc.ir.graph import TensorType
from dslc.ops.registry import Op, OpAttrs, ShapeError, fmt, register


@register
class Add(Op):
    """Element-wise sum of two or more tensors of one shape."""

    name = "add"
    min_inputs = 2
    max_inputs = None
    category = "merge"

    def infer(self, a, inputs):
        first = inputs[0].shape
        for other in inputs[1:]:
            if other.shape != first:
                raise ShapeError(f"add needs equal shapes, got {fmt(first)} and {fmt(other.shape)}")
        return inputs[0]

    def masking(self, a):
        return "keep"  # the inputs' masks ANDed, as Keras's Add


@register
class Concat(Op):
    """Joins tensors along `axis` (default the last, channels)."""

    name = "concat"
    min_inputs = 2
    max_inputs = None
    category = "merge"

    class Attrs(OpAttrs):
        axis: int = -1

    def infer(self, a, inputs):
        rank = len(inputs[0].shape)
        axis = a.axis if a.axis >= 0 else rank + a.axis
        if not 0 <= axis < rank:
            raise ShapeError(f"concat axis {a.axis} is out of range for rank {rank}")
        total: int | None = 0
        for t in inputs:
            s = t.shape
            if len(s) != rank or any(s[i] != inputs[0].shape[i] for i in range(rank) if i != axis):
                raise ShapeError(
                    f"concat needs equal shapes off axis {a.axis}, got {fmt(inputs[0].shape)} and {fmt(s)}")
            total = None if total is None or s[axis] is None else total + s[axis]
        shape = list(inputs[0].shape)
        shape[axis] = total
        return TensorType(shape=tuple(shape))

    def masking(self, a):
        # Along the features (written `axis=-1`) the masks AND, as Keras's Concatenate; along
        # time they would be joined, which no backend's rule does yet.
        return "keep" if a.axis == -1 else "none"

class _SameShape(Op):
    """An element-wise merge of tensors of one shape (as `add`)."""

    min_inputs = 2
    max_inputs: ClassVar[int | None] = None
    category = "merge"

    def infer(self, a, inputs):
        first = inputs[0].shape
        for other in inputs[1:]:
            if other.shape != first:
                raise ShapeError(
                    f"{self.name} needs equal shapes, got {fmt(first)} and {fmt(other.shape)}")
        return inputs[0]


@register
class Multiply(_SameShape):
    """Element-wise product of two or more tensors of one shape."""

    name = "multiply"


@register
class Subtract(_SameShape):
    """`a - b`, element-wise, for exactly two tensors of one shape."""

    name = "subtract"
    max_inputs = 2


@register
class Average(_SameShape):
    """Element-wise mean of two or more tensors of one shape."""

    name = "average"


@register
class Maximum(_SameShape):
    """Element-wise maximum of two or more tensors of one shape."""

    name = "maximum"


@register
class Minimum(_SameShape):
    """Element-wise minimum of two or more tensors of one shape."""

    name = "minimum"
