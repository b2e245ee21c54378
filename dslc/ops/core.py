"""Dense, flatten, reshape, dropout, layer normalisation."""

# Annotations stay evaluated (no `from __future__ import annotations`): pydantic would compile
# each field's annotation string when the module loads, ~0.1 ms a model (docs/benchmarks.md).

import math

from pydantic import Field, field_validator

from dslc.ir.graph import ParamSpec, TensorType
from dslc.ops.activation import Activation
from dslc.ops.registry import Init, Op, OpAttrs, ShapeError, fmt, register


@register
class Dense(Op):
    """Fully connected layer on the last axis: `y = activation(x @ kernel + bias)`."""

    name = "dense"
    layout = "kernel `[in, units]`, bias `[units]`"
    positional = ("units",)

    class Attrs(OpAttrs):
        units: int = Field(gt=0)
        activation: Activation = "linear"
        use_bias: bool = True
        kernel_init: Init = "glorot_uniform"
        bias_init: Init = "zeros"

    def infer(self, a, inputs):
        shape = inputs[0].shape
        if len(shape) == 0:
            raise ShapeError("dense needs at least one feature axis, got a scalar per sample")
        if len(shape) > 2:
            raise ShapeError(
                f"dense expects a vector per sample, got {fmt(shape)}",
                hint="add `flatten` before this layer",
            )
        if shape[-1] is None:
            raise ShapeError(f"dense needs a known last axis, got {fmt(shape)}")
        return TensorType(shape=(*shape[:-1], a.units))

    def macs(self, node, inputs):
        return math.prod(d or 1 for d in node.type.shape[:-1]) * node.params["kernel"].size

    def masking(self, a):
        return "keep"  # the last axis, position by position

    def params(self, a, inputs):
        p = {"kernel": ParamSpec(shape=(inputs[0].shape[-1], a.units), init=a.kernel_init)}
        if a.use_bias:
            p["bias"] = ParamSpec(shape=(a.units,), init=a.bias_init)
        return p


@register
class Flatten(Op):
    """Flattens each sample to a vector in channels-last (row-major `[H, W, C]`) order."""

    name = "flatten"
    passes_values = True

    def infer(self, a, inputs):
        shape = inputs[0].shape
        if any(d is None for d in shape):
            raise ShapeError(f"flatten needs every axis known, got {fmt(shape)}")
        return TensorType(shape=(math.prod(shape),))


@register
class Reshape(Op):
    """Reshapes each sample (row-major, channels-last); one axis may be -1."""

    name = "reshape"
    passes_values = True
    positional = ("shape",)

    class Attrs(OpAttrs):
        shape: tuple[int, ...]

        @field_validator("shape")
        @classmethod
        def _check(cls, v):
            if sum(1 for d in v if d == -1) > 1 or any(d == 0 or d < -1 for d in v):
                raise ValueError("every axis must be positive, with at most one -1")
            return v

    def infer(self, a, inputs):
        shape = inputs[0].shape
        if any(d is None for d in shape):
            raise ShapeError(f"reshape needs every axis known, got {fmt(shape)}")
        total = math.prod(shape)
        known = math.prod(d for d in a.shape if d != -1)
        if -1 in a.shape:
            if total % known:
                raise ShapeError(f"cannot reshape {fmt(shape)} ({total} values) to {fmt(a.shape)}")
            return TensorType(shape=tuple(total // known if d == -1 else d for d in a.shape))
        if known != total:
            raise ShapeError(
                f"cannot reshape {fmt(shape)} ({total} values) to {fmt(a.shape)} ({known} values)")
        return TensorType(shape=a.shape)


@register
class Dropout(Op):
    """Zeroes a `rate` fraction of values while training; the identity at inference."""

    name = "dropout"
    passes_values = True
    positional = ("rate",)

    class Attrs(OpAttrs):
        rate: float = Field(ge=0.0, lt=1.0)

    def infer(self, a, inputs):
        return inputs[0]

    def masking(self, a):
        return "keep"


@register
class LayerNorm(Op):
    """Normalises each position over the last axis (biased variance), then `* gamma + beta`."""

    name = "layer_norm"
    layout = "gamma `[features]` (if `scale`), beta `[features]` (if `center`)"

    # Last axis only. epsilon is Keras's default (PyTorch's is 1e-5), pinned for every backend.
    class Attrs(OpAttrs):
        epsilon: float = Field(default=1e-3, gt=0.0)
        center: bool = True
        scale: bool = True

    def infer(self, a, inputs):
        shape = inputs[0].shape
        if len(shape) == 0:
            raise ShapeError("layer_norm needs at least one feature axis, got a scalar per sample")
        if shape[-1] is None:
            raise ShapeError(f"layer_norm needs a known last axis, got {fmt(shape)}")
        return inputs[0]

    def masking(self, a):
        return "keep"

    def params(self, a, inputs):
        features = inputs[0].shape[-1]
        p = {}
        if a.scale:
            p["gamma"] = ParamSpec(shape=(features,), init="ones")
        if a.center:
            p["beta"] = ParamSpec(shape=(features,), init="zeros")
        return p
