"""Convolutions, channels-last: 1-D over `[time, channels]`, 2-D over `[H, W, C]`."""

# Annotations stay evaluated (no `from __future__ import annotations`): pydantic would compile
# each field's annotation string when the module loads, ~0.1 ms a model (docs/benchmarks.md).

import math
from typing import Literal

from pydantic import Field

from dslc.ir.graph import ParamSpec, TensorType
from dslc.ops.activation import Activation
from dslc.ops.registry import (
    Init,
    Op,
    OpAttrs,
    Padding,
    ShapeError,
    fmt,
    pair,
    register,
)

IntOrPair = int | tuple[int, int]


def window_out(size: int, k: int, s: int, d: int, padding: str) -> int:
    """Output length of a sliding window (TF/Keras rules; floor mode)."""
    if padding == "same":
        return math.ceil(size / s)
    return (size - d * (k - 1) - 1) // s + 1


def same_pads(size: int, k: int, s: int, d: int) -> tuple[int, int]:
    """TF's `same` padding: the odd extra pixel goes after (bottom/right)."""
    out = math.ceil(size / s)
    total = max((out - 1) * s + d * (k - 1) + 1 - size, 0)
    return total // 2, total - total // 2


def pads_2d(attrs, in_shape) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) padding for a window op on `[H, W, C]`."""
    if attrs.padding == "valid":
        return (0, 0, 0, 0)
    (kh, kw), (sh, sw) = pair(attrs.kernel), pair(attrs.strides)
    dh, dw = pair(getattr(attrs, "dilation", 1))
    top, bottom = same_pads(in_shape[0], kh, sh, dh)
    left, right = same_pads(in_shape[1], kw, sw, dw)
    return (top, bottom, left, right)


def check_image(op: str, shape) -> None:
    if len(shape) != 3:
        hint = None
        if len(shape) == 2:
            hint = "add a channel axis to the input, e.g. `f32[28, 28, 1]`"
        elif len(shape) == 1:
            hint = "reshape the vector to `[height, width, channels]` first"
        raise ShapeError(f"{op} expects `[height, width, channels]`, got {fmt(shape)}", hint)
    if shape[0] is None or shape[1] is None or shape[2] is None:
        raise ShapeError(f"{op} needs known height, width and channels, got {fmt(shape)}")


def window_shape(op: str, attrs, shape, channels: int) -> tuple[int, int, int]:
    (kh, kw), (sh, sw) = pair(attrs.kernel), pair(attrs.strides)
    dh, dw = pair(getattr(attrs, "dilation", 1))
    oh = window_out(shape[0], kh, sh, dh, attrs.padding)
    ow = window_out(shape[1], kw, sw, dw, attrs.padding)
    if oh <= 0 or ow <= 0:
        raise ShapeError(
            f"{op} window {kh}x{kw} does not fit the input {fmt(shape)}",
            hint="use `padding=same` or a smaller kernel",
        )
    return (oh, ow, channels)


def check_window_attrs(op: str, a) -> None:
    for field in ("kernel", "strides", "dilation"):
        if min(pair(getattr(a, field))) <= 0:
            raise ShapeError(f"{op} {field} must be positive")
    if max(pair(a.strides)) > 1 and max(pair(a.dilation)) > 1:
        raise ShapeError(f"{op} cannot combine strides > 1 with dilation > 1")


@register
class Conv2D(Op):
    """2-D convolution over `[H, W, C]`; `padding=same` pads as TensorFlow does.

    `groups` splits the channels into independent convolutions, as Keras's."""

    name = "conv2d"
    layout = "kernel `[kh, kw, in / groups, filters]`, bias `[filters]`"
    positional = ("filters",)

    class Attrs(OpAttrs):
        filters: int = Field(gt=0)
        kernel: IntOrPair = 3
        strides: IntOrPair = 1
        padding: Padding = "valid"
        dilation: IntOrPair = 1
        activation: Activation = "linear"
        use_bias: bool = True
        kernel_init: Init = "glorot_uniform"
        bias_init: Init = "zeros"
        groups: int = Field(default=1, gt=0)

    def infer(self, a, inputs):
        shape = inputs[0].shape
        check_image("conv2d", shape)
        check_window_attrs("conv2d", a)
        if a.filters % a.groups or shape[2] % a.groups:
            raise ShapeError(f"conv2d with groups={a.groups} needs filters ({a.filters}) and "
                             f"input channels ({shape[2]}) divisible by {a.groups}")
        return TensorType(shape=window_shape("conv2d", a, shape, a.filters))

    def macs(self, node, inputs):
        return math.prod(d or 1 for d in node.type.shape[:-1]) * node.params["kernel"].size

    def params(self, a, inputs):
        kh, kw = pair(a.kernel)
        cin = inputs[0].shape[2]
        p = {"kernel": ParamSpec(shape=(kh, kw, cin // a.groups, a.filters), init=a.kernel_init)}
        if a.use_bias:
            p["bias"] = ParamSpec(shape=(a.filters,), init=a.bias_init)
        return p


# -- 1-D: `[time, channels]` -------------------------------------------------------------------

Padding1D = Literal["valid", "same", "causal"]


def pads_1d(attrs, size: int | None) -> tuple[int, int]:
    """(before, after) padding of a 1-D window op over `size` steps: TF's `same` (the odd
    step after), `causal` (all before, as Keras). The checker makes sure `size` is known
    whenever the padding depends on it (`same` with strides > 1)."""
    k, s, d = attrs.kernel, attrs.strides, getattr(attrs, "dilation", 1)
    if attrs.padding == "causal":
        return d * (k - 1), 0
    if attrs.padding == "valid":
        return 0, 0
    if s == 1:  # the total does not depend on the length
        total = d * (k - 1)
        return total // 2, total - total // 2
    assert size is not None
    return same_pads(size, k, s, d)


def check_sequence(op: str, shape) -> None:
    if len(shape) != 2:
        hint = None
        if len(shape) == 1:
            hint = "declare the input as `[time, channels]`, e.g. `f32[100, 1]`"
        raise ShapeError(f"{op} expects `[time, channels]`, got {fmt(shape)}", hint)
    if shape[1] is None:
        raise ShapeError(f"{op} needs a known channel axis, got {fmt(shape)}")


def window_1d(op: str, attrs, shape) -> int | None:
    """The output length of a 1-D window op (None for an unknown input length)."""
    k, s, d = attrs.kernel, attrs.strides, getattr(attrs, "dilation", 1)
    if min(k, s, d) <= 0:
        raise ShapeError(f"{op} kernel, strides and dilation must be positive")
    if shape[0] is None:
        if attrs.padding == "same" and s > 1:
            raise ShapeError(f"{op} with `padding=same` and strides > 1 needs a known length, "
                             f"got {fmt(shape)}", hint="use `padding=valid` or `strides=1`")
        return None
    out = window_out(shape[0], k, s, d, "same" if attrs.padding == "causal" else attrs.padding)
    if out <= 0:
        raise ShapeError(f"{op} window {k} does not fit the input {fmt(shape)}",
                         hint="use `padding=same` or a smaller kernel")
    return out


@register
class Conv1D(Op):
    """1-D convolution over `[time, channels]`; `same` pads as TensorFlow, `causal` all before."""

    name = "conv1d"
    layout = "kernel `[k, in, filters]`, bias `[filters]`"
    positional = ("filters",)

    class Attrs(OpAttrs):
        filters: int = Field(gt=0)
        kernel: int = 3
        strides: int = 1
        padding: Padding1D = "valid"
        dilation: int = 1
        activation: Activation = "linear"
        use_bias: bool = True
        kernel_init: Init = "glorot_uniform"
        bias_init: Init = "zeros"

    def infer(self, a, inputs):
        shape = inputs[0].shape
        check_sequence("conv1d", shape)
        if a.strides > 1 and a.dilation > 1:
            raise ShapeError("conv1d cannot combine strides > 1 with dilation > 1")
        return TensorType(shape=(window_1d("conv1d", a, shape), a.filters))

    def macs(self, node, inputs):
        return (node.type.shape[0] or 1) * node.params["kernel"].size

    def params(self, a, inputs):
        p = {"kernel": ParamSpec(shape=(a.kernel, inputs[0].shape[1], a.filters),
                                 init=a.kernel_init)}
        if a.use_bias:
            p["bias"] = ParamSpec(shape=(a.filters,), init=a.bias_init)
        return p


# -- depthwise and separable -------------------------------------------------------------------

@register
class DepthwiseConv2D(Op):
    """Each channel of `[H, W, C]` convolved with its own `depth_multiplier` filters.

    Keras's channel order: channel `c`'s filters are outputs `c * depth_multiplier + m`."""

    name = "depthwise_conv2d"
    layout = "kernel `[kh, kw, in, depth_multiplier]`, bias `[in * depth_multiplier]`"
    positional = ("kernel",)

    class Attrs(OpAttrs):
        kernel: IntOrPair = 3
        depth_multiplier: int = Field(default=1, gt=0)
        strides: IntOrPair = 1
        padding: Padding = "valid"
        dilation: IntOrPair = 1
        activation: Activation = "linear"
        use_bias: bool = True
        kernel_init: Init = "glorot_uniform"
        bias_init: Init = "zeros"

    def infer(self, a, inputs):
        shape = inputs[0].shape
        check_image(self.name, shape)
        check_window_attrs(self.name, a)
        return TensorType(shape=window_shape(self.name, a, shape, shape[2] * a.depth_multiplier))

    def macs(self, node, inputs):
        return math.prod(d or 1 for d in node.type.shape[:-1]) * node.params["kernel"].size

    def params(self, a, inputs):
        kh, kw = pair(a.kernel)
        cin = inputs[0].shape[2]
        p = {"kernel": ParamSpec(shape=(kh, kw, cin, a.depth_multiplier), init=a.kernel_init)}
        if a.use_bias:
            p["bias"] = ParamSpec(shape=(cin * a.depth_multiplier,), init=a.bias_init)
        return p


@register
class SeparableConv2D(Op):
    """A depthwise convolution (no bias) then a 1x1 convolution to `filters`, as Keras's."""

    name = "separable_conv2d"
    layout = ("depthwise_kernel `[kh, kw, in, depth_multiplier]`, pointwise_kernel "
              "`[1, 1, in * depth_multiplier, filters]`, bias `[filters]`")
    positional = ("filters",)

    class Attrs(OpAttrs):
        filters: int = Field(gt=0)
        kernel: IntOrPair = 3
        depth_multiplier: int = Field(default=1, gt=0)
        strides: IntOrPair = 1
        padding: Padding = "valid"
        dilation: IntOrPair = 1
        activation: Activation = "linear"
        use_bias: bool = True
        depthwise_init: Init = "glorot_uniform"
        pointwise_init: Init = "glorot_uniform"
        bias_init: Init = "zeros"

    def infer(self, a, inputs):
        shape = inputs[0].shape
        check_image(self.name, shape)
        check_window_attrs(self.name, a)
        return TensorType(shape=window_shape(self.name, a, shape, a.filters))

    def macs(self, node, inputs):
        pixels = math.prod(d or 1 for d in node.type.shape[:-1])
        return pixels * (node.params["depthwise_kernel"].size
                         + node.params["pointwise_kernel"].size)

    def params(self, a, inputs):
        kh, kw = pair(a.kernel)
        cin = inputs[0].shape[2]
        mid = cin * a.depth_multiplier
        p = {"depthwise_kernel": ParamSpec(shape=(kh, kw, cin, a.depth_multiplier),
                                           init=a.depthwise_init),
             "pointwise_kernel": ParamSpec(shape=(1, 1, mid, a.filters), init=a.pointwise_init)}
        if a.use_bias:
            p["bias"] = ParamSpec(shape=(a.filters,), init=a.bias_init)
        return p


# -- transposed ----------------------------------------------------------------------------------

def transpose_out(size: int, k: int, s: int, padding: str) -> int:
    """Keras's output length of a transposed convolution: `size * s` for `same`, else
    `(size - 1) * s + max(k, s)`."""
    return size * s if padding == "same" else (size - 1) * s + max(k, s)


def transpose_crops(size: int, k: int, s: int, padding: str) -> tuple[int, int]:
    """(before, after) removed from the full `(size - 1) * s + k` output to reach Keras's
    length: TF's `same` crops as its forward `same` pads (the odd one after); a negative
    `after` is zeros added after (a kernel shorter than the stride)."""
    crop = (size - 1) * s + k - transpose_out(size, k, s, padding)
    if crop <= 0:
        return 0, crop
    return crop // 2, crop - crop // 2


@register
class Conv2DTranspose(Op):
    """Transposed 2-D convolution over `[H, W, C]`, output sized by Keras's rules.

    `H * strides` for `same`, else `(H - 1) * strides + max(kernel, strides)`."""

    name = "conv2d_transpose"
    layout = "kernel `[kh, kw, filters, in]` (Keras's), bias `[filters]`"
    positional = ("filters",)

    class Attrs(OpAttrs):
        filters: int = Field(gt=0)
        kernel: IntOrPair = 3
        strides: IntOrPair = 1
        padding: Padding = "valid"
        activation: Activation = "linear"
        use_bias: bool = True
        kernel_init: Init = "glorot_uniform"
        bias_init: Init = "zeros"

    def infer(self, a, inputs):
        shape = inputs[0].shape
        check_image(self.name, shape)
        if min(pair(a.kernel)) <= 0 or min(pair(a.strides)) <= 0:
            raise ShapeError(f"{self.name} kernel and strides must be positive")
        (kh, kw), (sh, sw) = pair(a.kernel), pair(a.strides)
        return TensorType(shape=(transpose_out(shape[0], kh, sh, a.padding),
                                 transpose_out(shape[1], kw, sw, a.padding), a.filters))

    def macs(self, node, inputs):
        return math.prod(d or 1 for d in inputs[0].shape[:-1]) * node.params["kernel"].size

    def params(self, a, inputs):
        kh, kw = pair(a.kernel)
        p = {"kernel": ParamSpec(shape=(kh, kw, a.filters, inputs[0].shape[2]),
                                 init=a.kernel_init)}
        if a.use_bias:
            p["bias"] = ParamSpec(shape=(a.filters,), init=a.bias_init)
        return p
