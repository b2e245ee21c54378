"""Recurrent layers. Canonical form: Keras's (one bias per layer), see docs/weights.md."""

# Annotations stay evaluated (no `from __future__ import annotations`): pydantic would compile
# each field's annotation string when the module loads, ~0.1 ms a model (docs/benchmarks.md).

from typing import ClassVar, Literal

from pydantic import Field

from dslc.ir.graph import Node, ParamSpec, TensorType
from dslc.ops.activation import Activation
from dslc.ops.registry import UNIT_FORGET, Init, Masking, Op, OpAttrs, ShapeError, fmt, register

# Keras's `dropout` (on the inputs) and `recurrent_dropout` (on h_(t-1)): one mask per
# sequence, the same at every step, in training only; with `recurrent_dropout` Keras draws
# one mask per gate for each (its cell's implementation 1). At inference both are identity.


# `bidirectional` (Keras's `Bidirectional(layer, merge_mode=...)`): a forward layer and a
# backward one (`go_backwards`) with their own weights, `forward_kernel`, ...,
# `backward_kernel`, ... (Keras's forward_layer then backward_layer). With
# `return_sequences` the backward layer's outputs are flipped back to time order before the
# merge (as Keras does); the last states are merged as they are. Under a padding mask Keras's
# Bidirectional sets each layer's `zero_output_for_mask` to `return_sequences`: a returned
# sequence is zero at padded steps (the states still carry over them).
Bidirectional = Literal["none", "concat", "sum", "mul", "ave"]
DIRECTIONS = ("forward", "backward")


def direction_node(node: Node, direction: str) -> Node:
    """One direction of a bidirectional layer as the unidirectional layer it runs: the same
    name, `go_backwards` for the backward one, its parameters under their own keys."""
    attrs = node.attrs.model_copy(update={"bidirectional": "none",
                                          "go_backwards": direction == "backward"})
    prefix = f"{direction}_"
    params = {k.removeprefix(prefix): v for k, v in node.params.items() if k.startswith(prefix)}
    return node.model_copy(update={"attrs": attrs, "params": params})


def bidirectional(cls: type[Op]) -> type[Op]:
    """Adds `bidirectional` to a recurrent layer's shape, parameters, MACs and masking (the
    layer's own rules are those of one direction)."""
    infer, params, macs, masking = cls.infer, cls.params, cls.macs, cls.masking

    def infer_both(self, a, inputs):
        if a.bidirectional != "none" and a.go_backwards:
            raise ShapeError("`go_backwards` and `bidirectional` cannot be combined "
                             "(Keras refuses it: the backward layer already reads "
                             "the sequence last step first)", "drop `go_backwards=true`")
        out = infer(self, a, inputs)
        if a.bidirectional == "concat":  # the two directions side by side
            out = out.model_copy(update={"shape": (*out.shape[:-1], 2 * a.units)})
        return out

    def params_both(self, a, inputs):
        p = params(self, a, inputs)
        if a.bidirectional == "none":
            return p
        return {f"{d}_{k}": spec for d in DIRECTIONS for k, spec in p.items()}

    def macs_both(self, node, inputs):
        if node.attrs.bidirectional == "none":
            return macs(self, node, inputs)
        return sum(macs(self, direction_node(node, d), inputs) for d in DIRECTIONS)

    def masking_both(self, a):
        # each direction consumes the mask (the backward one in its reading order); a merged
        # sequence carries it on, as Keras's Bidirectional.compute_mask
        return masking(self, a)

    cls.infer, cls.params, cls.macs = infer_both, params_both, macs_both  # type: ignore[method-assign]
    cls.masking = masking_both  # type: ignore[method-assign]
    return cls


def _infer_recurrent(name: str, a, inputs: list[TensorType]) -> TensorType:
    shape = inputs[0].shape
    if len(shape) != 2:
        hint = "declare the input as `[time, features]`, e.g. `f32[10, 1]`" if len(shape) == 1 else None
        raise ShapeError(f"{name} expects `[time, features]`, got {fmt(shape)}", hint)
    if shape[1] is None:
        raise ShapeError(f"{name} needs a known feature axis, got {fmt(shape)}")
    if a.return_sequences:
        return TensorType(shape=(shape[0], a.units))
    return TensorType(shape=(a.units,))


def _recurrent_masking(a) -> Masking:
    """Keras: a masked step carries the state (and repeats the last output) over; a returned
    sequence carries the mask on."""
    return "use_keep" if a.return_sequences else "use"


@register
@bidirectional
class SimpleRNN(Op):
    """Elman RNN over `[time, features]`: `h_t = act(x_t @ kernel + h_{t-1} @ recurrent_kernel + bias)`."""

    name = "simple_rnn"
    layout = "kernel `[in, units]`, recurrent_kernel `[units, units]`, one bias `[units]`"
    positional = ("units",)

    class Attrs(OpAttrs):
        units: int = Field(gt=0)
        activation: Activation = "tanh"
        return_sequences: bool = False
        go_backwards: bool = False
        bidirectional: Bidirectional = "none"
        use_bias: bool = True
        dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
        recurrent_dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
        kernel_init: Init = "glorot_uniform"
        recurrent_init: Init = "orthogonal"
        bias_init: Init = "zeros"

    def infer(self, a, inputs):
        return _infer_recurrent(self.name, a, inputs)

    def masking(self, a):
        return _recurrent_masking(a)

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


# The gated layers' activations: those every backend applies inside its fused recurrent
# kernel or op (ONNX LSTM/GRU `activations`); gelu or softmax inside a gate has no such form.
GateActivation = Literal["tanh", "sigmoid", "relu", "linear"]

# `go_backwards` (Keras): the sequence is read last step first, and with `return_sequences`
# the outputs come in that reading order (Keras does not flip them back).


class _GatedAttrs(OpAttrs):
    """What lstm and gru share (Keras's arguments and defaults)."""

    units: int = Field(gt=0)
    activation: GateActivation = "tanh"
    recurrent_activation: GateActivation = "sigmoid"
    return_sequences: bool = False
    go_backwards: bool = False
    bidirectional: Bidirectional = "none"
    use_bias: bool = True
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    recurrent_dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    kernel_init: Init = "glorot_uniform"
    recurrent_init: Init = "orthogonal"
    bias_init: Init = "zeros"


class _Gated(Op):
    """The shape, masking and cost rules lstm and gru share; `params` is each one's own."""

    positional = ("units",)

    def infer(self, a, inputs):
        return _infer_recurrent(self.name, a, inputs)

    def masking(self, a):
        return _recurrent_masking(a)

    def macs(self, node, inputs):
        steps = inputs[0].shape[0] or 1
        return steps * (node.params["kernel"].size + node.params["recurrent_kernel"].size)

    gates: ClassVar[int]

    def bias(self, a) -> ParamSpec:
        return ParamSpec(shape=(self.gates * a.units,), init=a.bias_init)

    def params(self, a, inputs):
        rows = self.gates * a.units  # the gate blocks side by side, Keras's order
        p = {
            "kernel": ParamSpec(shape=(inputs[0].shape[1], rows), init=a.kernel_init),
            "recurrent_kernel": ParamSpec(shape=(a.units, rows), init=a.recurrent_init),
        }
        if a.use_bias:
            p["bias"] = self.bias(a)
        return p


@register
@bidirectional
class LSTM(_Gated):
    """LSTM over `[time, features]` (Keras's): `c_t = f*c_(t-1) + i*act(.)`, `h_t = o*act(c_t)`.

    Gates i, f, o apply `recurrent_activation`; c's candidate and the output apply
    `activation`."""

    name = "lstm"
    layout = ("kernel `[in, 4*units]`, recurrent_kernel `[units, 4*units]`, bias `[4*units]`; "
              "gate order i, f, c, o (Keras)")

    gates = 4

    class Attrs(_GatedAttrs):
        unit_forget_bias: bool = True

    def bias(self, a) -> ParamSpec:
        init = f"{UNIT_FORGET}{a.bias_init}" if a.unit_forget_bias else a.bias_init
        return ParamSpec(shape=(4 * a.units,), init=init)


@register
@bidirectional
class GRU(_Gated):
    """GRU over `[time, features]` (Keras's): `h_t = z*h_(t-1) + (1-z)*act(.)`, two gates z, r.

    `reset_after=true` (Keras's and cuDNN's default) applies the reset gate after the
    recurrent matmul and keeps two biases (input, recurrent)."""

    name = "gru"
    layout = ("kernel `[in, 3*units]`, recurrent_kernel `[units, 3*units]`, bias `[2, 3*units]` "
              "(input, recurrent) with reset_after, else `[3*units]`; gate order z, r, h (Keras)")

    gates = 3

    class Attrs(_GatedAttrs):
        reset_after: bool = True

    def bias(self, a) -> ParamSpec:  # reset_after: the input and the recurrent bias
        shape = (2, 3 * a.units) if a.reset_after else (3 * a.units,)
        return ParamSpec(shape=shape, init=a.bias_init)
