"""Spatial resizing of `[H, W, C]`, channels-last: upsampling and zero padding (as Keras's)."""

# Annotations stay evaluated (no `from __future__ import annotations`): pydantic would compile
# each field's annotation string when the module loads, ~0.1 ms a model (docs/benchmarks.md).

from typing import Literal

from dslc.ir.graph import TensorType
from dslc.ops.conv import IntOrPair, check_image
from dslc.ops.registry import Op, OpAttrs, ShapeError, fmt, pair, register

Padding2D = int | tuple[int, int] | tuple[tuple[int, int], tuple[int, int]]


def zero_pads(padding: Padding2D) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of `zero_padding2d`'s `padding`: one int for all four sides,
    `[h, w]` for top and bottom, left and right, or `[[top, bottom], [left, right]]`."""
    if isinstance(padding, int):
        return (padding,) * 4
    h, w = padding
    if isinstance(h, int) and isinstance(w, int):
        return h, h, w, w
    (top, bottom), (left, right) = pair(h), pair(w)
    return top, bottom, left, right


@register
class UpSampling2D(Op):
    """`[H, W, C]` to `[H * size, W * size, C]`: `nearest` repeats, `bilinear` interpolates.

    `bilinear` is Keras's: half-pixel centres, clamped at the edges, no antialiasing."""

    name = "upsampling2d"
    positional = ("size",)

    class Attrs(OpAttrs):
        size: IntOrPair = 2
        interpolation: Literal["nearest", "bilinear"] = "nearest"

    def infer(self, a, inputs):
        shape = inputs[0].shape
        check_image(self.name, shape)
        sh, sw = pair(a.size)
        if min(sh, sw) <= 0:
            raise ShapeError(f"{self.name} size must be positive, got {fmt(pair(a.size))}")
        return TensorType(shape=(shape[0] * sh, shape[1] * sw, shape[2]))


@register
class ZeroPadding2D(Op):
    """Pads `[H, W, C]` with zeros: `padding=p`, `[h, w]` or `[[top, bottom], [left, right]]`."""

    name = "zero_padding2d"
    positional = ("padding",)

    class Attrs(OpAttrs):
        padding: Padding2D = 1

    def infer(self, a, inputs):
        shape = inputs[0].shape
        check_image(self.name, shape)
        top, bottom, left, right = zero_pads(a.padding)
        if min(top, bottom, left, right) < 0:
            raise ShapeError(f"{self.name} padding cannot be negative")
        return TensorType(shape=(shape[0] + top + bottom, shape[1] + left + right, shape[2]))
