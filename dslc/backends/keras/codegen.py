"""Lowering of the checked graph to a standalone Keras 3 module (functional API).

One rule per op in `LOWERINGS`, all with the one signature `rule(ctx, node, xs) -> Call`:
`xs` are the `Call`s that make the node's inputs (a graph input's is its `keras.Input`);
the rule returns the one Keras layer call for the node, which the generator applies to the
inputs' variables. A rule also says, in the `Call`, which Keras variable holds each
canonical parameter (weights.py reads nothing else) and, for an activation op, what a layer
passes as `activation=` to apply it fused.

The generated file imports only `keras`, names every layer after the spec, states every
default the IR pins (Keras's own defaults differ in places: LeakyReLU's slope, the image
data format from ~/.keras/keras.json) and uses no Lambda layers. Importing this module
imports no framework.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from dslc import __version__
from dslc.backends.lowering import LoweringTable, activation_node
from dslc.backends.pysource import Names, comment, docstring, identifier, public, quote
from dslc.ir.graph import Graph, Input, Node
from dslc.ops import get_op
from dslc.ops.recurrent import direction_node
from dslc.ops.registry import pair
from dslc.ops.spatial import zero_pads
from dslc.passes.masks import padding_masks

LINE = 88  # ruff format's width: generated files pass `ruff format --check`
INDENT = "    "
DTYPES = {"f32": "float32", "i32": "int32", "i64": "int64", "bool": "bool"}


@dataclass(frozen=True)
class Function:
    """A module-level function the generated file defines (dslc uses no Lambda layers)."""

    name: str
    source: str


@dataclass
class Call:
    """One Keras layer: `cls(*args, **kwargs, name=<layer>)` applied to the node's inputs.

    `weights`: canonical parameter → the name of the layer's Keras variable that holds it.
    `uses`: the module-level functions the arguments name. `activation` (activation ops
    only): the value a layer passes as `activation=` to apply this op fused — the name of
    a Keras activation, or a function the module defines.
    """

    cls: str
    args: list[str] = field(default_factory=list)
    kwargs: list[tuple[str, str]] = field(default_factory=list)
    weights: dict[str, str] = field(default_factory=dict)
    uses: list[Function] = field(default_factory=list)
    activation: str | Function | None = None
    # How the layer is applied: inputs as separate arguments rather than one list (layers
    # such as MultiHeadAttention take `(query, value, key)`), and keyword arguments of the call
    # (`mask=<ctx.mask_of(...)>`, `use_causal_mask=True`).
    spread: bool = False
    call_kwargs: list[tuple[str, str]] = field(default_factory=list)
    # A wrapper's layer (Bidirectional's), written as its first argument.
    layer: Call | None = None


@dataclass
class Context:
    """What rules may ask for while one graph is lowered: the `activation=` value of a
    layer's fused activation. Collects the functions the module must define."""

    functions: dict[str, Function] = field(default_factory=dict)
    masks: dict[str, tuple[str, ...]] = field(default_factory=dict)  # dslc/passes/masks.py
    mask_vars: dict[tuple[str, ...], str] = field(default_factory=dict)

    def mask_of(self, name: str) -> str | None:
        """The padding mask of tensor `name` as a variable of the generated `build_<model>`
        (bool `[N, T]`, True at real positions): `tokens_mask = keras.ops.not_equal(tokens,
        0)`, written once after the inputs, for a rule to pass explicitly (`Call.call_kwargs`,
        e.g. `("mask", ctx.mask_of(node.inputs[0]))`); None when `name` carries no mask.
        Keras itself propagates the mask of `Embedding(mask_zero=True)` through every layer
        that supports masking, and hands it to a layer whose `call` takes `mask`."""
        ids = self.masks.get(name)
        if not ids:
            return None
        if ids not in self.mask_vars:
            self.mask_vars[ids] = identifier(public(f"{'_'.join(ids)}_mask"),
                                             {"keras", *self.mask_vars.values()})
        return self.mask_vars[ids]

    def use(self, fn: Function) -> str:
        known = self.functions.setdefault(fn.name, fn)
        if known != fn:
            raise ValueError(f"keras: two different helper functions named {fn.name!r}")
        return fn.name

    def activation(self, node: Node) -> str:
        """`node`'s `activation=` value, as the rule for that activation op gives it."""
        act = activation_node(node)
        value = LOWERINGS.lower(self, act, []).activation
        if value is None:
            raise ValueError(f"keras: the rule for `{act.op}` gives no `activation=` value")
        return self.use(value) if isinstance(value, Function) else quote(value)


LOWERINGS: LoweringTable[Context, Call] = LoweringTable("keras")


def _tuple(v: Any) -> str:
    return repr(tuple(pair(v)))


# dslc's `xavier_*` are Glorot's initialisers under PyTorch's name; Keras knows only `glorot_*`.
_KERAS_INITS = {"xavier_uniform": "glorot_uniform", "xavier_normal": "glorot_normal"}


def _init(name: str) -> str:
    return quote(_KERAS_INITS.get(name, name))


# A 1-D `orthogonal` is the one row of an orthogonal [1, n] matrix, as dslc/weights.py defines
# it (a unit vector); Keras's Orthogonal refuses rank 1.
_ORTHOGONAL_VECTOR = Function("orthogonal_vector", (
    "def orthogonal_vector(shape, dtype=None):\n"
    '    """`orthogonal` for a bias, as dslc defines it: a random unit vector."""\n'
    "    return keras.initializers.Orthogonal()((1, *shape), dtype=dtype)[0]\n"))


def _bias_init(name: str, uses: list[Function]) -> str:
    if name == "orthogonal":
        uses.append(_ORTHOGONAL_VECTOR)
        return _ORTHOGONAL_VECTOR.name
    return _init(name)


# TensorFlow 2.21 with oneDNN computes a convolution wrong when a 1-channel input with a batch
# above 1 is convolved down to one output column with row stride 1 and column stride above 1
# (found by fuzzing; PyTorch's oneDNN path has the same fault). With one column the column
# stride changes nothing but the kernel chosen: convolve with column stride 1 and keep the one
# column the stride would.
_ONE_COLUMN_CONV = Function("Conv2DOneColumn", (
    "class Conv2DOneColumn(keras.layers.Conv2D):\n"
    '    """keras.layers.Conv2D for a 1-channel input convolved down to one column: oneDNN\n'
    "    (TensorFlow 2.21) computes it wrong with a column stride, so it convolves with column\n"
    '    stride 1 and keeps the column that stride would."""\n'
    "\n"
    "    def convolution_op(self, inputs, kernel):\n"
    "        outputs = keras.ops.conv(\n"
    "            inputs,\n"
    "            kernel,\n"
    "            strides=(self.strides[0], 1),\n"
    "            padding=self.padding,\n"
    "            dilation_rate=self.dilation_rate,\n"
    "            data_format=self.data_format,\n"
    "        )\n"
    "        span = (self.kernel_size[1] - 1) * self.dilation_rate[1] + 1\n"
    "        left = 0 if self.padding == \"valid\" else (span - 1) // 2\n"
    "        wanted = 0 if self.padding == \"valid\" else max(span - inputs.shape[2], 0) // 2\n"
    "        column = left - wanted\n"
    "        return outputs[:, :, column : column + 1, :]\n"))


def _one_column_class(name: str, base: str, op: str, kernels: str) -> Function:
    """`base` for a 1-channel input convolved down to one column (see _ONE_COLUMN_CONV): it
    convolves with column stride 1 and keeps the column that stride would."""
    return Function(name, (
        f"class {name}(keras.layers.{base}):\n"
        f'    """keras.layers.{base} for a 1-channel input convolved down to one column:\n'
        "    oneDNN (TensorFlow 2.21) computes it wrong with a column stride, so it convolves\n"
        '    with column stride 1 and keeps the column that stride would."""\n'
        "\n"
        "    def call(self, inputs):\n"
        f"        outputs = keras.ops.{op}(\n"
        "            inputs,\n"
        f"            {kernels},\n"
        "            strides=(self.strides[0], 1),\n"
        "            padding=self.padding,\n"
        "            dilation_rate=self.dilation_rate,\n"
        "            data_format=self.data_format,\n"
        "        )\n"
        "        span = (self.kernel_size[1] - 1) * self.dilation_rate[1] + 1\n"
        "        left = 0 if self.padding == \"valid\" else (span - 1) // 2\n"
        "        wanted = 0 if self.padding == \"valid\" else max(span - inputs.shape[2], 0) // 2\n"
        "        column = left - wanted\n"
        "        outputs = outputs[:, :, column : column + 1, :]\n"
        "        if self.use_bias:\n"
        "            outputs = outputs + self.bias\n"
        "        return self.activation(outputs)\n"))


_ONE_COLUMN_DEPTHWISE = _one_column_class("DepthwiseConv2DOneColumn", "DepthwiseConv2D",
                                          "depthwise_conv", "self.kernel")
_ONE_COLUMN_SEPARABLE = _one_column_class("SeparableConv2DOneColumn", "SeparableConv2D",
                                          "separable_conv",
                                          "self.depthwise_kernel,\n            "
                                          "self.pointwise_kernel")


def _one_column(node: Node) -> bool:
    """The oneDNN fault's geometry: one input channel, row stride 1, column stride > 1, one
    output column (see _ONE_COLUMN_CONV)."""
    a, x = node.attrs, node.type
    assert x is not None
    sh, sw = pair(a.strides)
    return sh == 1 and sw > 1 and x.shape[1] == 1


# -- activations -----------------------------------------------------------------------------

@LOWERINGS("linear", "relu", "sigmoid", "tanh", "softmax")
def keras_activation(ctx: Context, node: Node, xs: list[Call]) -> Call:
    """Keras's activation of the op's name: its definition is dslc's."""
    return Call("keras.layers.Activation", [quote(node.op)], activation=node.op)


@LOWERINGS("gelu")
def gelu(ctx: Context, node: Node, xs: list[Call]) -> Call:
    fn = Function("gelu", (
        "def gelu(x):\n"
        '    """GELU in its exact (erf) form, as dslc pins it."""\n'
        "    return keras.activations.gelu(x, approximate=False)\n"))
    return Call("keras.layers.Activation", [fn.name], uses=[fn], activation=fn)


# TensorFlow 2.21 with oneDNN fuses Conv2D + BiasAdd + Add + LeakyRelu into one kernel that
# ignores the slope (it applies 0.2): the layer computes the same values with `where`, which no
# fusion rewrites. (A layer's fused `activation=` follows its own bias, never an Add.)
_LEAKY_RELU_LAYER = Function("LeakyReLU", (
    "class LeakyReLU(keras.layers.LeakyReLU):\n"
    '    """keras.layers.LeakyReLU written with `where`: TensorFlow\'s oneDNN fusion of\n'
    '    Conv2D + BiasAdd + Add + LeakyRelu ignores the slope (TF 2.21)."""\n'
    "\n"
    "    def call(self, inputs):\n"
    "        return keras.ops.where(inputs > 0, inputs, inputs * self.negative_slope)\n"))


@LOWERINGS("leaky_relu")
def leaky_relu(ctx: Context, node: Node, xs: list[Call]) -> Call:
    alpha = node.attrs.alpha
    # a layer's `activation=leaky_relu` applies the op with its pinned slope
    pinned = get_op("leaky_relu").Attrs().alpha  # type: ignore[attr-defined]
    fn = Function("leaky_relu", (
        "def leaky_relu(x):\n"
        f'    """LeakyReLU with the slope dslc pins ({pinned!r}); Keras\'s default is 0.2."""\n'
        f"    return keras.activations.leaky_relu(x, negative_slope={pinned!r})\n"))
    return Call(_LEAKY_RELU_LAYER.name, kwargs=[("negative_slope", repr(alpha))],
                uses=[_LEAKY_RELU_LAYER], activation=fn if alpha == pinned else None)


@LOWERINGS("elu")
def elu(ctx: Context, node: Node, xs: list[Call]) -> Call:
    # Keras's `"elu"` is alpha 1.0, the pinned default a layer's `activation=elu` applies
    return Call("keras.layers.ELU", kwargs=[("alpha", repr(float(node.attrs.alpha)))],
                activation="elu")



# Keras 3's activations of these names are dslc's (hard_sigmoid is Keras 3's x / 6 + 0.5;
# log_softmax is over the last axis, as the op).
for _name in ("selu", "softplus", "softsign", "silu", "hard_sigmoid", "relu6", "log_softmax"):
    LOWERINGS.add(_name, keras_activation)

# -- layers ----------------------------------------------------------------------------------

@LOWERINGS("dense")
def dense(ctx: Context, node: Node, xs: list[Call]) -> Call:
    a = node.attrs
    uses: list[Function] = []
    return Call("keras.layers.Dense", [repr(a.units)], [
        ("activation", ctx.activation(node)),
        ("use_bias", repr(a.use_bias)),
        ("kernel_initializer", _init(a.kernel_init)),
        ("bias_initializer", _bias_init(a.bias_init, uses)),
    ], weights={"kernel": "kernel", "bias": "bias"}, uses=uses)


@LOWERINGS("conv2d")
def conv2d(ctx: Context, node: Node, xs: list[Call]) -> Call:
    a = node.attrs
    uses: list[Function] = []
    cls = "keras.layers.Conv2D"
    assert node.type is not None
    if (node.params["kernel"].shape[2] == 1 and pair(a.strides)[0] == 1
            and pair(a.strides)[1] > 1 and node.type.shape[1] == 1):
        uses.append(_ONE_COLUMN_CONV)
        cls = _ONE_COLUMN_CONV.name
    return Call(cls, [repr(a.filters)], [
        ("kernel_size", _tuple(a.kernel)),
        ("strides", _tuple(a.strides)),
        ("padding", quote(a.padding)),
        ("dilation_rate", _tuple(a.dilation)),
        ("data_format", quote("channels_last")),
        ("activation", ctx.activation(node)),
        ("use_bias", repr(a.use_bias)),
        ("kernel_initializer", _init(a.kernel_init)),
        ("bias_initializer", _bias_init(a.bias_init, uses)),
        *([("groups", repr(a.groups))] if a.groups != 1 else []),
    ], weights={"kernel": "kernel", "bias": "bias"}, uses=uses)


@LOWERINGS("depthwise_conv2d")
def depthwise_conv2d(ctx: Context, node: Node, xs: list[Call]) -> Call:
    a = node.attrs
    uses: list[Function] = []
    cls = "keras.layers.DepthwiseConv2D"
    if node.params["kernel"].shape[2] == 1 and _one_column(node):
        uses.append(_ONE_COLUMN_DEPTHWISE)
        cls = _ONE_COLUMN_DEPTHWISE.name
    return Call(cls, [], [
        ("kernel_size", _tuple(a.kernel)),
        ("strides", _tuple(a.strides)),
        ("padding", quote(a.padding)),
        ("depth_multiplier", repr(a.depth_multiplier)),
        ("data_format", quote("channels_last")),
        ("dilation_rate", _tuple(a.dilation)),
        ("activation", ctx.activation(node)),
        ("use_bias", repr(a.use_bias)),
        ("depthwise_initializer", _init(a.kernel_init)),
        ("bias_initializer", _bias_init(a.bias_init, uses)),
    ], weights={"kernel": "kernel", "bias": "bias"}, uses=uses)


@LOWERINGS("separable_conv2d")
def separable_conv2d(ctx: Context, node: Node, xs: list[Call]) -> Call:
    a = node.attrs
    uses: list[Function] = []
    cls = "keras.layers.SeparableConv2D"
    if node.params["depthwise_kernel"].shape[2] == 1 and _one_column(node):
        uses.append(_ONE_COLUMN_SEPARABLE)
        cls = _ONE_COLUMN_SEPARABLE.name
    return Call(cls, [repr(a.filters)], [
        ("kernel_size", _tuple(a.kernel)),
        ("strides", _tuple(a.strides)),
        ("padding", quote(a.padding)),
        ("data_format", quote("channels_last")),
        ("dilation_rate", _tuple(a.dilation)),
        ("depth_multiplier", repr(a.depth_multiplier)),
        ("activation", ctx.activation(node)),
        ("use_bias", repr(a.use_bias)),
        ("depthwise_initializer", _init(a.depthwise_init)),
        ("pointwise_initializer", _init(a.pointwise_init)),
        ("bias_initializer", _bias_init(a.bias_init, uses)),
    ], weights={"depthwise_kernel": "depthwise_kernel", "pointwise_kernel": "pointwise_kernel",
                "bias": "bias"}, uses=uses)


@LOWERINGS("conv2d_transpose")
def conv2d_transpose(ctx: Context, node: Node, xs: list[Call]) -> Call:
    a = node.attrs
    uses: list[Function] = []
    return Call("keras.layers.Conv2DTranspose", [repr(a.filters)], [
        ("kernel_size", _tuple(a.kernel)),
        ("strides", _tuple(a.strides)),
        ("padding", quote(a.padding)),
        ("data_format", quote("channels_last")),
        ("activation", ctx.activation(node)),
        ("use_bias", repr(a.use_bias)),
        ("kernel_initializer", _init(a.kernel_init)),
        ("bias_initializer", _bias_init(a.bias_init, uses)),
    ], weights={"kernel": "kernel", "bias": "bias"}, uses=uses)


@LOWERINGS("conv1d")
def conv1d(ctx: Context, node: Node, xs: list[Call]) -> Call:
    a = node.attrs
    uses: list[Function] = []
    return Call("keras.layers.Conv1D", [repr(a.filters)], [
        ("kernel_size", repr(a.kernel)),
        ("strides", repr(a.strides)),
        ("padding", quote(a.padding)),
        ("dilation_rate", repr(a.dilation)),
        ("data_format", quote("channels_last")),
        ("activation", ctx.activation(node)),
        ("use_bias", repr(a.use_bias)),
        ("kernel_initializer", _init(a.kernel_init)),
        ("bias_initializer", _bias_init(a.bias_init, uses)),
    ], weights={"kernel": "kernel", "bias": "bias"}, uses=uses)


# Keras's recurrent cells, whose variables a Bidirectional layer's paths name
RNN_CELLS = {"simple_rnn": "simple_rnn_cell", "lstm": "lstm_cell", "gru": "gru_cell"}

KerasRule = Callable[[Context, Node, list[Call]], Call]


def _both_directions(rule: KerasRule) -> KerasRule:
    """`bidirectional`: `keras.layers.Bidirectional(<the layer>, merge_mode=...)`. Keras
    rebuilds the layer as `forward_<name>` and `backward_<name>` (go_backwards) under it."""
    def run(ctx: Context, node: Node, xs: list[Call]) -> Call:
        a = node.attrs
        if a.bidirectional == "none":
            return rule(ctx, node, xs)
        inner = rule(ctx, direction_node(node, "forward"), xs)
        inner.kwargs.append(("name", quote(node.name)))
        weights: dict[str, str] = {}
        for d in ("forward", "backward"):
            sub = f"{d}_{node.name.removeprefix(f'{d}_')}/{RNN_CELLS[node.op]}"
            weights |= {f"{d}_{k}": f"{sub}/{v}" for k, v in inner.weights.items()}
        # the mask goes to the wrapper, which hands it to both layers
        mask, inner.call_kwargs = inner.call_kwargs, []
        return Call("keras.layers.Bidirectional", [],
                    [("merge_mode", quote(a.bidirectional))],
                    weights=weights, uses=inner.uses, layer=inner, call_kwargs=mask)
    return run


@LOWERINGS("simple_rnn")
@_both_directions
def simple_rnn(ctx: Context, node: Node, xs: list[Call]) -> Call:
    a = node.attrs
    uses: list[Function] = []
    return Call("keras.layers.SimpleRNN", [repr(a.units)], [
        ("activation", ctx.activation(node)),
        ("use_bias", repr(a.use_bias)),
        ("return_sequences", repr(a.return_sequences)),
        *([("go_backwards", "True")] if a.go_backwards else []),
        *_rnn_dropout(node),
        ("kernel_initializer", _init(a.kernel_init)),
        ("recurrent_initializer", _init(a.recurrent_init)),
        ("bias_initializer", _bias_init(a.bias_init, uses)),
    ], weights={"kernel": "kernel", "recurrent_kernel": "recurrent_kernel", "bias": "bias"},
        uses=uses, call_kwargs=_rnn_mask(ctx, node))


def _rnn_dropout(node: Node) -> list[tuple[str, str]]:
    """Keras's own `dropout` / `recurrent_dropout` (training only), when set."""
    return [(k, repr(float(getattr(node.attrs, k))))
            for k in ("dropout", "recurrent_dropout") if getattr(node.attrs, k)]


def _rnn_mask(ctx: Context, node: Node) -> list[tuple[str, str]]:
    """The padding mask, passed explicitly (Keras's recurrent layers consume it: a padded step
    carries the state over)."""
    mask = ctx.mask_of(node.inputs[0])
    return [("mask", mask)] if mask else []


def _gate_activation(ctx: Context, node: Node, name: str) -> str:
    """`recurrent_activation=`'s value: the rule of that activation op, as for `activation=`."""
    value = LOWERINGS.lower(ctx, activation_node(node, name), []).activation
    if value is None:
        raise ValueError(f"keras: the rule for `{name}` gives no `activation=` value")
    return ctx.use(value) if isinstance(value, Function) else quote(value)


@LOWERINGS("lstm")
@_both_directions
def lstm(ctx: Context, node: Node, xs: list[Call]) -> Call:
    a = node.attrs
    uses: list[Function] = []
    return Call("keras.layers.LSTM", [repr(a.units)], [
        ("activation", ctx.activation(node)),
        ("recurrent_activation", _gate_activation(ctx, node, a.recurrent_activation)),
        ("use_bias", repr(a.use_bias)),
        ("unit_forget_bias", repr(a.unit_forget_bias)),
        ("return_sequences", repr(a.return_sequences)),
        *([("go_backwards", "True")] if a.go_backwards else []),
        *_rnn_dropout(node),
        ("kernel_initializer", _init(a.kernel_init)),
        ("recurrent_initializer", _init(a.recurrent_init)),
        ("bias_initializer", _bias_init(a.bias_init, uses)),
    ], weights={"kernel": "kernel", "recurrent_kernel": "recurrent_kernel", "bias": "bias"},
        uses=uses, call_kwargs=_rnn_mask(ctx, node))


@LOWERINGS("gru")
@_both_directions
def gru(ctx: Context, node: Node, xs: list[Call]) -> Call:
    a = node.attrs
    uses: list[Function] = []
    # reset_after's bias is a [2, 3 * units] matrix: Keras's initialisers take it as one
    bias = _init(a.bias_init) if a.reset_after else _bias_init(a.bias_init, uses)
    return Call("keras.layers.GRU", [repr(a.units)], [
        ("activation", ctx.activation(node)),
        ("recurrent_activation", _gate_activation(ctx, node, a.recurrent_activation)),
        ("use_bias", repr(a.use_bias)),
        ("reset_after", repr(a.reset_after)),
        ("return_sequences", repr(a.return_sequences)),
        *([("go_backwards", "True")] if a.go_backwards else []),
        *_rnn_dropout(node),
        ("kernel_initializer", _init(a.kernel_init)),
        ("recurrent_initializer", _init(a.recurrent_init)),
        ("bias_initializer", bias),
    ], weights={"kernel": "kernel", "recurrent_kernel": "recurrent_kernel", "bias": "bias"},
        uses=uses, call_kwargs=_rnn_mask(ctx, node))


def _pooling(cls: str, size: Callable[[Any], str] = _tuple) -> Callable[[Context, Node, list[Call]], Call]:
    def rule(ctx: Context, node: Node, xs: list[Call]) -> Call:
        a = node.attrs
        return Call(cls, [], [
            ("pool_size", size(a.kernel)),
            ("strides", size(a.strides)),
            ("padding", quote(a.padding)),
            ("data_format", quote("channels_last")),
        ])

    return rule


def _global_pooling(cls: str) -> Callable[[Context, Node, list[Call]], Call]:
    def rule(ctx: Context, node: Node, xs: list[Call]) -> Call:
        return Call(cls, [], [("data_format", quote("channels_last"))])

    return rule


LOWERINGS.add("maxpool2d", _pooling("keras.layers.MaxPooling2D"))
LOWERINGS.add("avgpool2d", _pooling("keras.layers.AveragePooling2D"))
LOWERINGS.add("maxpool1d", _pooling("keras.layers.MaxPooling1D", repr))
LOWERINGS.add("avgpool1d", _pooling("keras.layers.AveragePooling1D", repr))
LOWERINGS.add("global_avgpool2d", _global_pooling("keras.layers.GlobalAveragePooling2D"))
LOWERINGS.add("global_maxpool2d", _global_pooling("keras.layers.GlobalMaxPooling2D"))
LOWERINGS.add("global_avgpool1d", _global_pooling("keras.layers.GlobalAveragePooling1D"))
LOWERINGS.add("global_maxpool1d", _global_pooling("keras.layers.GlobalMaxPooling1D"))


@LOWERINGS("upsampling2d")
def upsampling2d(ctx: Context, node: Node, xs: list[Call]) -> Call:
    a = node.attrs
    return Call("keras.layers.UpSampling2D", [], [
        ("size", _tuple(a.size)),
        ("data_format", quote("channels_last")),
        ("interpolation", quote(a.interpolation)),
    ])


@LOWERINGS("zero_padding2d")
def zero_padding2d(ctx: Context, node: Node, xs: list[Call]) -> Call:
    top, bottom, left, right = zero_pads(node.attrs.padding)
    return Call("keras.layers.ZeroPadding2D", [], [
        ("padding", repr(((top, bottom), (left, right)))),
        ("data_format", quote("channels_last")),
    ])


@LOWERINGS("flatten")
def flatten(ctx: Context, node: Node, xs: list[Call]) -> Call:
    # channels_last pinned: the canonical flatten order is row-major [H, W, C].
    return Call("keras.layers.Flatten", [], [("data_format", quote("channels_last"))])


@LOWERINGS("reshape")
def reshape(ctx: Context, node: Node, xs: list[Call]) -> Call:
    return Call("keras.layers.Reshape", [repr(tuple(node.attrs.shape))])


@LOWERINGS("dropout")
def dropout(ctx: Context, node: Node, xs: list[Call]) -> Call:
    return Call("keras.layers.Dropout", [repr(node.attrs.rate)])


@LOWERINGS("permute")
def permute(ctx: Context, node: Node, xs: list[Call]) -> Call:
    return Call("keras.layers.Permute", [repr(tuple(node.attrs.dims))])


@LOWERINGS("repeat_vector")
def repeat_vector(ctx: Context, node: Node, xs: list[Call]) -> Call:
    return Call("keras.layers.RepeatVector", [repr(node.attrs.n)])


# Keras has no layer that slices any axis (Cropping* crop spatial axes only).
_SLICE = Function("Slice", (
    "class Slice(keras.layers.Layer):\n"
    '    """Keeps `start:stop` of one axis (`axis` counts after the batch), Python\'s rules."""\n'
    "\n"
    "    def __init__(self, axis, start, stop, **kwargs):\n"
    "        super().__init__(**kwargs)\n"
    "        self.axis, self.start, self.stop = axis, start, stop\n"
    "\n"
    "    def call(self, inputs):\n"
    "        index = (slice(None),) * (self.axis + 1) + (slice(self.start, self.stop),)\n"
    "        return inputs[index]\n"
    "\n"
    "    def get_config(self):\n"
    "        config = {\"axis\": self.axis, \"start\": self.start, \"stop\": self.stop}\n"
    "        return {**super().get_config(), **config}\n"))


@LOWERINGS("slice")
def slice_(ctx: Context, node: Node, xs: list[Call]) -> Call:
    a = node.attrs
    assert node.type is not None
    axis = a.axis % len(node.type.shape)
    return Call(_SLICE.name, [], [("axis", repr(axis)), ("start", repr(a.start)),
                                  ("stop", repr(a.stop))], uses=[_SLICE])


# Keras computes `x * inv - mean * inv`, which cancels: with a mean large beside the spread the
# result loses digits (over one feature, beta comes out off by 3e-5 where every other backend
# gives beta exactly; found by fuzzing). The generated layer subtracts the mean first.
_LAYER_NORM = Function("LayerNormalization", (
    "class LayerNormalization(keras.layers.LayerNormalization):\n"
    '    """keras.layers.LayerNormalization as `(x - mean) / sqrt(var + eps)`: Keras\'s\n'
    '    `x * inv - mean * inv` loses digits when the mean is large beside the spread."""\n'
    "\n"
    "    def call(self, inputs):\n"
    "        mean, variance = keras.ops.moments(inputs, axes=self.axis, keepdims=True)\n"
    "        outputs = (inputs - mean) * keras.ops.rsqrt(variance + self.epsilon)\n"
    "        if self.gamma is not None:\n"
    "            outputs = outputs * self.gamma\n"
    "        if self.beta is not None:\n"
    "            outputs = outputs + self.beta\n"
    "        return outputs\n"))


@LOWERINGS("layer_norm")
def layer_norm(ctx: Context, node: Node, xs: list[Call]) -> Call:
    a = node.attrs
    inits = [(f"{p}_initializer", quote(spec.init)) for p, spec in node.params.items()]
    return Call(_LAYER_NORM.name, [], [
        ("axis", "-1"),
        ("epsilon", repr(float(a.epsilon))),
        ("center", repr(a.center)),
        ("scale", repr(a.scale)),
        *inits,
    ], weights={"gamma": "gamma", "beta": "beta"}, uses=[_LAYER_NORM])


@LOWERINGS("batch_norm")
def batch_norm(ctx: Context, node: Node, xs: list[Call]) -> Call:
    # Keras's own layer: its training update is the one dslc defines (the torch rule copies it)
    a = node.attrs
    inits = [(f"{p}_initializer", quote(spec.init)) for p, spec in node.params.items()]
    return Call("keras.layers.BatchNormalization", [], [
        ("axis", "-1"),
        ("momentum", repr(float(a.momentum))),
        ("epsilon", repr(float(a.epsilon))),
        ("center", repr(a.center)),
        ("scale", repr(a.scale)),
        *inits,
    ], weights={p: p for p in ("gamma", "beta", "moving_mean", "moving_variance")})


@LOWERINGS("add")
def add(ctx: Context, node: Node, xs: list[Call]) -> Call:
    return Call("keras.layers.Add")


@LOWERINGS("concat")
def concat(ctx: Context, node: Node, xs: list[Call]) -> Call:
    # The IR's axis excludes the batch; Keras's includes it.
    axis = node.attrs.axis + 1 if node.attrs.axis >= 0 else node.attrs.axis
    return Call("keras.layers.Concatenate", [], [("axis", repr(axis))])


@LOWERINGS("multiply")
def multiply(ctx: Context, node: Node, xs: list[Call]) -> Call:
    return Call("keras.layers.Multiply")


@LOWERINGS("subtract")
def subtract(ctx: Context, node: Node, xs: list[Call]) -> Call:
    return Call("keras.layers.Subtract")


@LOWERINGS("average")
def average(ctx: Context, node: Node, xs: list[Call]) -> Call:
    return Call("keras.layers.Average")


@LOWERINGS("maximum")
def maximum(ctx: Context, node: Node, xs: list[Call]) -> Call:
    return Call("keras.layers.Maximum")


@LOWERINGS("minimum")
def minimum(ctx: Context, node: Node, xs: list[Call]) -> Call:
    return Call("keras.layers.Minimum")
# multi_head_attention's canonical parameters ↔ MultiHeadAttention's variables (sublayers
# `query`, `key`, `value`, `attention_output`), addressed by their path under the layer.
_MHA_WEIGHTS = {f"{role}_{kind}": f"{sub}/{kind}"
                for role, sub in (("query", "query"), ("key", "key"), ("value", "value"),
                                  ("output", "attention_output"))
                for kind in ("kernel", "bias")}


@LOWERINGS("multi_head_attention")
def multi_head_attention(ctx: Context, node: Node, xs: list[Call]) -> Call:
    a = node.attrs
    uses: list[Function] = []
    kwargs = [
        ("num_heads", repr(a.heads)),
        ("key_dim", repr(a.key_dim)),
        ("value_dim", repr(a.value_dim or a.key_dim)),
        ("dropout", repr(float(a.dropout))),
        ("use_bias", repr(a.use_bias)),
    ]
    if a.output_dim is not None:
        kwargs.append(("output_shape", repr((a.output_dim,))))
    kwargs += [("kernel_initializer", _init(a.kernel_init)),
               ("bias_initializer", _bias_init(a.bias_init, uses))]
    return Call("keras.layers.MultiHeadAttention", [], kwargs, weights=dict(_MHA_WEIGHTS),
                uses=uses, spread=True, call_kwargs=_mha_masks(ctx, node))


def _mha_masks(ctx: Context, node: Node) -> list[tuple[str, str]]:
    """The call's mask arguments. Keras would find the padding masks on the inputs itself,
    but its `call` strips them from the tensors it is given, so a later layer reading the
    same tensor would see none: they are passed explicitly. `query_mask` is ignored by
    `call` (it reads the query tensor's own), hence the query's as an `attention_mask`
    `[N, Tq, 1]`, which Keras ANDs with the rest."""
    masks = [ctx.mask_of(name) for name in node.inputs]
    out = []
    if masks[1] is not None:
        out.append(("value_mask", masks[1]))
    if len(masks) == 3 and masks[2] is not None:
        out.append(("key_mask", masks[2]))
    if masks[0] is not None:
        out.append(("attention_mask", f"keras.ops.expand_dims({masks[0]}, -1)"))
    if node.attrs.causal:
        out.append(("use_causal_mask", "True"))
    return out


@LOWERINGS("embedding")
def embedding(ctx: Context, node: Node, xs: list[Call]) -> Call:
    # TensorFlow's gather fails on an id out of range on a CPU and gives zeros on a GPU.
    a = node.attrs
    return Call("keras.layers.Embedding", [repr(a.vocab), repr(a.dim)], [
        ("embeddings_initializer", _init(a.embeddings_init)),
        ("mask_zero", repr(a.mask_zero)),
    ], weights={"embeddings": "embeddings"})


# keras-hub's PositionEmbedding returns the table for the user to add; dslc's op adds it, so
# the layer is written here (keras-hub is not a dependency) and keeps the padding mask.
_POSITION_EMBEDDING = Function("PositionEmbedding", (
    "class PositionEmbedding(keras.layers.Layer):\n"
    '    """`x + embeddings[:T]`: a learned vector per position of a `[T, features]`\n'
    '    sequence, T at most `max_len` (keras-hub\'s PositionEmbedding, added)."""\n'
    "\n"
    "    def __init__(self, max_len, embeddings_initializer=\"glorot_uniform\", **kwargs):\n"
    "        super().__init__(**kwargs)\n"
    "        self.max_len = max_len\n"
    "        self.embeddings_initializer = keras.initializers.get(embeddings_initializer)\n"
    "        self.supports_masking = True\n"
    "\n"
    "    def build(self, input_shape):\n"
    "        self.embeddings = self.add_weight(\n"
    "            shape=(self.max_len, input_shape[-1]),\n"
    "            initializer=self.embeddings_initializer,\n"
    "            name=\"embeddings\",\n"
    "        )\n"
    "\n"
    "    def call(self, inputs):\n"
    "        steps = keras.ops.shape(inputs)[1]\n"
    "        return inputs + keras.ops.convert_to_tensor(self.embeddings)[:steps]\n"))


@LOWERINGS("position_embedding")
def position_embedding(ctx: Context, node: Node, xs: list[Call]) -> Call:
    a = node.attrs
    return Call(_POSITION_EMBEDDING.name, [repr(a.max_len)], [
        ("embeddings_initializer", _init(a.embeddings_init)),
    ], weights={"embeddings": "embeddings"}, uses=[_POSITION_EMBEDDING])


_SINUSOIDAL_POSITION = Function("SinusoidalPosition", (
    "class SinusoidalPosition(keras.layers.Layer):\n"
    '    """`x + table[:T]`, the sin/cos position table of Vaswani et al. as keras-hub\'s\n'
    "    SinePositionEncoding computes it (added): sin(p * w_i) at even features i, cos at\n"
    "    odd ones, w_i = (1 / max_wavelength) ** (2 * (i // 2) / features); float64\n"
    '    inside."""\n'
    "\n"
    "    def __init__(self, max_wavelength=10000.0, **kwargs):\n"
    "        super().__init__(**kwargs)\n"
    "        self.max_wavelength = max_wavelength\n"
    "        self.supports_masking = True\n"
    "\n"
    "    def call(self, inputs):\n"
    "        features = inputs.shape[-1]\n"
    "        index = keras.ops.arange(features, dtype=\"float64\")\n"
    "        rate = keras.ops.convert_to_tensor(1 / self.max_wavelength, dtype=\"float64\")\n"
    "        rates = keras.ops.power(rate, 2 * (index // 2) / features)\n"
    "        steps = keras.ops.shape(inputs)[1]\n"
    "        positions = keras.ops.arange(steps, dtype=\"float64\")[:, None]\n"
    "        angles = positions * rates\n"
    "        even = keras.ops.equal(index % 2, 0)\n"
    "        table = keras.ops.where(even, keras.ops.sin(angles), keras.ops.cos(angles))\n"
    "        return inputs + keras.ops.cast(table, inputs.dtype)\n"))


@LOWERINGS("sinusoidal_position")
def sinusoidal_position(ctx: Context, node: Node, xs: list[Call]) -> Call:
    return Call(_SINUSOIDAL_POSITION.name, [repr(float(node.attrs.max_wavelength))],
                uses=[_SINUSOIDAL_POSITION])


# -- the graph -------------------------------------------------------------------------------

@dataclass
class Lowered:
    """A graph lowered for Keras: `graph` with the ops Keras has no rule for decomposed,
    the `Call` that makes each tensor (inputs included), the module's functions."""

    graph: Graph
    calls: dict[str, Call]
    functions: dict[str, Function]
    mask_vars: dict[tuple[str, ...], str] = field(default_factory=dict)  # asked for by rules


def input_call(i: Input) -> Call:
    dtype = DTYPES.get(i.type.dtype, i.type.dtype)
    return Call("keras.Input", kwargs=[("shape", repr(tuple(i.type.shape))),
                                       ("dtype", quote(dtype)), ("name", quote(i.name))])


def lower_graph(graph: Graph) -> Lowered:
    graph = LOWERINGS.prepare(graph)
    ctx = Context(masks=padding_masks(graph))
    calls = {i.name: input_call(i) for i in graph.inputs}
    for node in graph.nodes:
        call = LOWERINGS.lower(ctx, node, [calls[t] for t in node.inputs])
        forgotten = [p for p in node.params if p not in call.weights]
        if forgotten:  # the weight adapter would have no variable to load them into
            raise ValueError(f"keras: the rule for `{node.op}` names no Keras variable for "
                             f"parameter(s) {', '.join(forgotten)}")
        for fn in call.uses:
            ctx.use(fn)
        calls[node.name] = call
    return Lowered(graph, calls, ctx.functions, ctx.mask_vars)


def weight_names(graph: Graph) -> dict[str, dict[str, str]]:
    """layer → {canonical param: Keras variable name}, for every layer with parameters."""
    lowered = lower_graph(graph)
    return {n.name: {p: lowered.calls[n.name].weights[p] for p in n.params}
            for n in lowered.graph.nodes if n.params}


def model_function(graph: Graph) -> str:
    """The name of the generated `build_<model>` function."""
    return identifier(f"build_{graph.name}")


def _exploded(items: list[str], depth: int, layer: Call | None = None) -> str:
    """`items` one a line at `depth` indents, each with the trailing comma that keeps ruff
    format from joining them again; `layer`'s item (a wrapped layer) exploded in turn when its
    line would not fit."""
    out = ""
    for item in items:
        line = f"{INDENT * depth}{item},"
        if layer is not None and item == _inline(layer) and len(line) > LINE:
            inner = [*layer.args, *(f"{k}={v}" for k, v in layer.kwargs)]
            line = f"{INDENT * depth}{layer.cls}(\n{_exploded(inner, depth + 1)}{INDENT * depth}),"
        out += line + "\n"
    return out


def _inline(call: Call) -> str:
    """A layer as one expression (a wrapper's argument)."""
    return f"{call.cls}({', '.join([*call.args, *(f'{k}={v}' for k, v in call.kwargs)])})"


def _assign(target: str, value: Callable[[int], str]) -> str:
    """`target = value` at one indent; as ruff format writes it, the value moves into
    parentheses of its own when its first line would not fit after `target = `."""
    text = f"{INDENT}{target} = {value(1)}"
    if len(text.split("\n", 1)[0]) <= LINE or len(f"{INDENT}{target} = (") > LINE:
        return text  # (parentheses would not help a target that long)
    return f"{INDENT}{target} = (\n{INDENT * 2}{value(2)}\n{INDENT})"


def _render_call(target: str, call: Call, layer_name: str, inputs: list[str]) -> str:
    items = [*call.args, *(f"{k}={v}" for k, v in call.kwargs), f"name={quote(layer_name)}"]
    if call.layer is not None:
        items.insert(0, _inline(call.layer))
    arg = inputs[0] if len(inputs) == 1 else f"[{', '.join(inputs)}]"
    if call.spread or call.call_kwargs:
        inputs = [*(inputs if call.spread else [arg]), *(f"{k}={v}" for k, v in call.call_kwargs)]
        arg = ", ".join(inputs)
    line = f"{INDENT}{target} = {call.cls}({', '.join(items)})({arg})"
    if len(line) <= LINE:
        return line

    def value(d: int) -> str:
        head = f"{call.cls}(\n{_exploded(items, d + 1, call.layer)}{INDENT * d})"
        if len(f"{INDENT * d})({arg})") <= LINE:
            return f"{head}({arg})"
        if len(inputs) == 1:  # one long name: on a line of its own
            return f"{head}(\n{INDENT * (d + 1)}{arg}\n{INDENT * d})"
        if call.spread or call.call_kwargs:  # one argument a line
            return f"{head}(\n{_exploded(inputs, d + 1)}{INDENT * d})"
        return (f"{head}(\n{INDENT * (d + 1)}[\n{_exploded(inputs, d + 2)}"
                f"{INDENT * (d + 1)}]\n{INDENT * d})")

    return _assign(target, value)


def _render_kwargs(target: str | None, fn: str, kwargs: list[tuple[str, str]]) -> str:
    """`target = fn(k=v, ...)` (`return fn(...)` without a target) on one line when it fits,
    else one argument a line (a list value too long for its line is exploded as well)."""
    lead = f"{INDENT}{target} = " if target else f"{INDENT}return "
    line = f"{lead}{fn}({', '.join(f'{k}={v}' for k, v in kwargs)})"
    if len(line) <= LINE:
        return line

    def value(d: int) -> str:
        body = ""
        for k, v in kwargs:
            item = f"{INDENT * (d + 1)}{k}={v},"
            if len(item) > LINE and v.startswith("[") and v.endswith("]"):
                elements = [e.strip() for e in v[1:-1].split(",")]
                item = f"{INDENT * (d + 1)}{k}=[\n{_exploded(elements, d + 2)}{INDENT * (d + 1)}],"
            body += item + "\n"
        return f"{fn}(\n{body}{INDENT * d})"

    return _assign(target, value) if target else f"{lead}{value(1)}"


def generate(spec: Any, graph: Graph) -> str:
    """Standalone Keras 3 source defining `build_<model>() -> keras.Model`."""
    lowered = lower_graph(graph)
    fn = model_function(graph)
    names = Names({"keras", fn, *lowered.functions, *lowered.mask_vars.values()})
    var = {t: names.fresh(t) for t in
           [i.name for i in lowered.graph.inputs] + [n.name for n in lowered.graph.nodes]}
    body: list[str] = []
    for i in lowered.graph.inputs:
        call = lowered.calls[i.name]
        body.append(_render_kwargs(var[i.name], call.cls, call.kwargs))
    for ids, mask in lowered.mask_vars.items():  # padding masks a rule passes explicitly
        terms = [f"keras.ops.not_equal({var[i]}, 0)" for i in ids]
        value = terms[0]
        for term in terms[1:]:
            value = f"keras.ops.logical_and({value}, {term})"
        body.append(f"{INDENT}{mask} = {value}")
    for node in lowered.graph.nodes:
        body.append(_render_call(var[node.name], lowered.calls[node.name], node.name,
                                 [var[t] for t in node.inputs]))

    def listed(tensors: list[str]) -> str:
        return var[tensors[0]] if len(tensors) == 1 else f"[{', '.join(var[t] for t in tensors)}]"

    ins, outs = listed([i.name for i in graph.inputs]), listed(graph.outputs)
    body.append(_render_kwargs(None, "keras.Model",
                               [("inputs", ins), ("outputs", outs), ("name", quote(graph.name))]))

    source = getattr(spec, "path", None)
    origin = comment(source.name) if source is not None else "<spec>"
    model = docstring(graph.name)
    parts = [
        f"# Generated by dslc {__version__} from {origin} (model `{comment(graph.name)}`).\n"
        "# Edit the spec and recompile rather than this file.\n"
        f'"""Keras 3 model `{model}`: {len(graph.nodes)} layers, {graph.param_count:,} '
        "parameters.\n\n"
        "Layers are channels-last and named as in the spec, so checkpoints keyed\n"
        '`<layer>.<param>` map onto them one to one.\n"""\n\nimport keras\n',
    ]
    parts += [lowered.functions[name].source for name in sorted(lowered.functions)]
    parts.append(f"def {fn}() -> keras.Model:\n"
                 f'{INDENT}"""Build `{model}` as a functional keras.Model."""\n'
                 + "\n".join(body) + "\n")
    parts.append(f'if __name__ == "__main__":\n{INDENT}{fn}().summary()\n')
    return "\n\n".join(parts)
