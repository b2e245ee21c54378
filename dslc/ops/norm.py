"""Batch normalisation (layer normalisation lives in core.py)."""

# Annotations stay evaluated (no `from __future__ import annotations`): pydantic would compile
# each field's annotation string when the module loads, ~0.1 ms a model (docs/benchmarks.md).

from pydantic import Field

from dslc.ir.graph import ParamSpec
from dslc.ops.registry import Op, OpAttrs, ShapeError, fmt, register


@register
class BatchNorm(Op):
    """Normalises each channel (last axis) by the moving mean and variance, then `* gamma + beta`.

    Training normalises with the batch's mean and biased variance and moves the statistics:
    `moving = moving * momentum + batch * (1 - momentum)` (Keras's BatchNormalization)."""

    name = "batch_norm"
    layout = ("gamma `[channels]` (if `scale`), beta `[channels]` (if `center`), moving_mean, "
              "moving_variance `[channels]` (not trainable)")

    # Keras's defaults, pinned for every backend (PyTorch's are momentum 0.1 the other way
    # round, epsilon 1e-5).
    class Attrs(OpAttrs):
        momentum: float = Field(default=0.99, ge=0.0, le=1.0)
        epsilon: float = Field(default=1e-3, gt=0.0)
        center: bool = True
        scale: bool = True

    def infer(self, a, inputs):
        shape = inputs[0].shape
        if len(shape) == 0:
            raise ShapeError("batch_norm needs a channel axis, got a scalar per sample")
        if shape[-1] is None:
            raise ShapeError(f"batch_norm needs a known last (channel) axis, got {fmt(shape)}")
        return inputs[0]

    def params(self, a, inputs):
        channels = inputs[0].shape[-1]
        p = {}
        if a.scale:
            p["gamma"] = ParamSpec(shape=(channels,), init="ones")
        if a.center:
            p["beta"] = ParamSpec(shape=(channels,), init="zeros")
        p["moving_mean"] = ParamSpec(shape=(channels,), init="zeros", trainable=False)
        p["moving_variance"] = ParamSpec(shape=(channels,), init="ones", trainable=False)
        return p
