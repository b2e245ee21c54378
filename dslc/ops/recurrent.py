"""Recurrent layers. Canonical form: Keras's (one bias per layer), see docs/weights.md."""

from __future__ import annotations

from pydantic import Field

from dslc.ir.graph import ParamSpec, TensorType
from dslc.ops.activation import Activation
from dslc.ops.registry import Init, Op, OpAttrs, ShapeError, fmt, register


@register
class SimpleRNN(Op):
    """Elman RNN over `[time, features]`: `h_t = act(x_t @ kernel + h_{t-1} @ recurrent_kernel + bias)`."""

    name = "simple_rnn"
    layout = "kernel `[in, units]`, recurrent_kernel `[units, units]`, one bias `[units]`"
    positional = ("units",)

    class Attrs(OpAttrs):
        units: int = Field(gt=0)
        activation: Activation = "tanh"
        return_sequences: bool = False
        use_bias: bool = True
        kernel_init: Init = "glorot_uniform"
        recurrent_init: Init = "orthogonal"
        bias_init: Init = "zeros"

    def infer(self, a, inputs):
        shape = inputs[0].shape
        if len(shape) != 2:
            hint = "declare the input as `[time, features]`, e.g. `f32[10, 1]`" if len(shape) == 1 else None
            raise ShapeError(f"simple_rnn expects `[time, features]`, got {fmt(shape)}", hint)
        if shape[1] is None:
            raise ShapeError(f"simple_rnn needs a known feature axis, got {fmt(shape)}")
        if a.return_sequences:
            return TensorType(shape=(shape[0], a.units))
        return TensorType(shape=(a.units,))

    def macs(self, node, inputs):
        steps = inputs[0].shape[0] or 1
        return steps * (node.params["kernel"].size + node.params["recurrent_kernel"].size)

    def params(self, a, inputs):
        f = inputs[0].shape[1]
        p = {
            "kernel": ParamSpec(shape=(f, a.units), init=a.kernel_init),
            "recurrent_kernel": ParamSpec(shape=(a.units, a.units), init=a.recurrent_init),
        }
        if a.use_bias:
            p["bias"] = ParamSpec(shape=(a.units,), init=a.bias_init)
        return p
