"""Ops that only move values: permute, repeat_vector, slice."""

# Annotations stay evaluated (no `from __future__ import annotations`): pydantic would compile
# each field's annotation string when the module loads, ~0.1 ms a model (docs/benchmarks.md).

from pydantic import Field, field_validator

from dslc.ir.graph import TensorType
from dslc.ops.registry import Op, OpAttrs, ShapeError, fmt, register


@register
class Permute(Op):
    """Reorders the axes after the batch; `dims` are 1-based, as Keras's Permute.

    `permute([2, 1])` swaps the time and feature axes of a sequence."""

    name = "permute"
    passes_values = True
    positional = ("dims",)

    class Attrs(OpAttrs):
        dims: tuple[int, ...]

        @field_validator("dims")
        @classmethod
        def _check(cls, v):
            if sorted(v) != list(range(1, len(v) + 1)):
                raise ValueError(f"dims must order 1..{len(v)}, each once (the batch is not "
                                 "counted)")
            return v

    def infer(self, a, inputs):
        shape = inputs[0].shape
        if len(a.dims) != len(shape):
            raise ShapeError(f"permute of a {fmt(shape)} sample needs {len(shape)} dims, got "
                             f"{list(a.dims)}",
                             hint=f"list each of 1..{len(shape)} once" if shape else None)
        return TensorType(shape=tuple(shape[d - 1] for d in a.dims))

    def passes_values_of(self, attrs, rank):
        return attrs.dims[-1] == rank  # a softmax's axis stays last


@register
class RepeatVector(Op):
    """Repeats a `[features]` vector `n` times: `[n, features]` (Keras's RepeatVector)."""

    name = "repeat_vector"
    passes_values = True
    positional = ("n",)

    class Attrs(OpAttrs):
        n: int = Field(gt=0)

    def infer(self, a, inputs):
        shape = inputs[0].shape
        if len(shape) != 1:
            raise ShapeError(f"repeat_vector repeats a vector, got {fmt(shape)}",
                             hint="add `flatten` before this layer")
        return TensorType(shape=(a.n, shape[0]))


def slice_length(size: int, start: int | None, stop: int | None) -> int:
    """The length of `range(size)[start:stop]` (Python's rules: negative counts from the end,
    out of range clamps)."""
    return len(range(size)[start:stop])


@register
class Slice(Op):
    """Keeps `start:stop` of one `axis` (0 is the first after the batch), as Python slices.

    Negative positions count from the end, positions past an end are clamped, an omitted
    `start` or `stop` is that end of the axis; an empty slice is an error."""

    name = "slice"
    passes_values = True
    positional = ("axis", "start", "stop")

    class Attrs(OpAttrs):
        axis: int
        start: int | None = None
        stop: int | None = None

    def infer(self, a, inputs):
        shape = inputs[0].shape
        rank = len(shape)
        axis = a.axis if a.axis >= 0 else rank + a.axis
        if not 0 <= axis < rank:
            raise ShapeError(f"slice axis {a.axis} is out of range for a {fmt(shape)} sample",
                             hint="the axis counts from 0 after the batch")
        out = list(shape)
        size = shape[axis]
        # an axis of unknown size gives a slice of unknown length (clamping needs the size)
        out[axis] = None if size is None else slice_length(size, a.start, a.stop)
        if out[axis] == 0:
            raise ShapeError(f"slice [{_bound(a.start)}:{_bound(a.stop)}] of axis {a.axis} "
                             f"(size {size}) is empty")
        if size is None and _always_empty(a.start, a.stop):
            raise ShapeError(f"slice [{_bound(a.start)}:{_bound(a.stop)}] of axis {a.axis} "
                             "is empty whatever its size")
        return TensorType(shape=tuple(out))

    def passes_values_of(self, attrs, rank):
        return rank > 0 and attrs.axis % rank != rank - 1  # all of a softmax's axis stays


def _always_empty(start: int | None, stop: int | None) -> bool:
    """`[start:stop]` is empty on an axis of any size: a stop of 0, or a stop at or before the
    start, both counted from the same end."""
    if stop is None:
        return False
    return stop == 0 or (start is not None and (start >= 0) == (stop >= 0) and stop <= start)


def _bound(v: int | None) -> str:
    return "" if v is None else str(v)
