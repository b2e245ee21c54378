"""IR graph → ONNX nodes, one small lowering per op (the table `LOWERINGS`).

Layout: the IR is channels-last. Image tensors enter as NHWC; convolution and pooling run in
NCHW, so a tensor is transposed only when a consumer needs the other layout (memoised: one
Transpose at entry, one back to NHWC before a Flatten or Reshape, whose row-major order must
be channels-last so that canonical dense kernels stay valid). Outputs leave as NHWC.

A Flatten whose every consumer is a dense layer skips the Transpose: it flattens NCHW and
the dense kernels' rows are permuted to match instead (a weight conversion at the boundary,
so checkpoints keep the canonical layout).

Every layer's final value is named after the layer; helper nodes are `<layer>/<role>`.
Layers whose rule is the identity at inference (dropout, linear) emit nothing.

Importing this module imports no onnx (the table is asked for without the framework); the
lowering itself does, when it builds protos.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from dslc.backends.lowering import LoweringTable, activation_node
from dslc.ir.graph import Graph, Node, Shape
from dslc.ops.conv import pads_1d, pads_2d, transpose_crops
from dslc.ops.recurrent import DIRECTIONS, direction_node
from dslc.ops.registry import pair
from dslc.ops.spatial import zero_pads
from dslc.passes.masks import padding_masks

if TYPE_CHECKING:
    from onnx import GraphProto, NodeProto, TensorProto, ValueInfoProto

OPSET = 20  # Gelu is a single op from opset 20 on
IR_VERSION = 9  # onnx's pairing for opset 20; onnxruntime reads it
BATCH = "batch"

NHWC, NCHW = "nhwc", "nchw"
TO_NCHW, TO_NHWC = (0, 3, 1, 2), (0, 2, 3, 1)

Convert = Callable[[np.ndarray], np.ndarray]


@dataclass
class Value:
    """An ONNX value standing for an IR tensor. `layout` is set for image tensors (rank 4)."""

    name: str
    rank: int  # batch included
    layout: str | None = None
    shape: tuple | None = None  # per sample, channels-last (the IR's)
    # A flattened NCHW tensor: feature j of this value is canonical (NHWC) feature order[j].
    order: np.ndarray | None = None


@dataclass
class Lowered:
    graph: GraphProto
    layouts: dict[str, str] = field(default_factory=dict)  # image values' layouts, by name
    # The ONNX name of each graph output: the output's own name, except for an output that is
    # a graph input (an ONNX graph cannot list one name as both), which gets a fresh one.
    output_names: dict[str, str] = field(default_factory=dict)


class Lowering:
    """The state of one lowering: emitted nodes, initializers and the value of each IR tensor."""

    def __init__(self, graph: Graph, weights: dict[str, np.ndarray]):
        self.graph = graph  # prepared: every op has a rule (see `lower_graph`)
        self.weights = weights
        self.nodes: list[NodeProto] = []
        self.initializers: list[TensorProto] = []
        self.values: dict[str, Value] = {}
        self.layouts: dict[str, str] = {}
        self._converted: dict[tuple[str, str], Value] = {}
        self._used: set[str] = set()
        self.layer: str = ""
        self.masks = padding_masks(graph)
        self._mask_values: dict[tuple[str, ...], str] = {}

    def mask_of(self, name: str) -> str | None:
        """The padding mask of tensor `name` as an ONNX value (bool `[N, T]`, True at real
        positions: `Not(Equal(ids, 0))`, ANDed over the id tensors), made once; None when
        `name` carries no mask."""
        from onnx import helper

        ids = self.masks.get(name)
        if not ids:
            return None
        if ids not in self._mask_values:
            parts = []
            for i in ids:
                zero = self.const("zero", np.zeros((), self.graph.type_of(i).numpy_dtype),
                                  owner=f"{i}/mask")
                pad = self.unique(f"{i}/padding")
                real = self.unique(f"{i}/mask")
                self.nodes.append(helper.make_node("Equal", [i, zero], [pad], name=pad))
                self.nodes.append(helper.make_node("Not", [pad], [real], name=real))
                parts.append(real)
            mask = parts[0]
            for other in parts[1:]:
                both = self.unique(f"{mask}&{other}")
                self.nodes.append(helper.make_node("And", [mask, other], [both], name=both))
                mask = both
            self._mask_values[ids] = mask
        return self._mask_values[ids]

    # -- building blocks -------------------------------------------------------------------

    def unique(self, name: str) -> str:
        base, i = name, 1
        while name in self._used:
            i += 1
            name = f"{base}_{i}"
        self._used.add(name)
        return name

    def const(self, role: str, array: Any, owner: str | None = None) -> str:
        """An initializer named `<owner or layer>.<role>`."""
        from onnx import numpy_helper

        name = self.unique(f"{owner or self.layer}.{role}")
        a = np.asarray(array)  # a 0-d array stays a scalar (ascontiguousarray makes it 1-d)
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(a) if a.ndim else a,
                                                         name))
        return name

    def param(self, node: Node, key: str, convert: Convert | None = None) -> str:
        """The initializer `<layer>.<key>`: the canonical parameter (float32), brought to
        ONNX's layout by `convert` — the one place a lowering reads weights."""
        array = np.asarray(self.weights[f"{node.name}.{key}"], dtype=np.float32)
        return self.const(key, array if convert is None else convert(array), owner=node.name)

    def emit(self, op_type: str, inputs: list[str], role: str | None = None, outputs: int = 1,
             **attrs: Any) -> list[str]:
        """Add one node named after the current layer; returns its output names."""
        from onnx import helper

        name = self.unique(self.layer if role is None else f"{self.layer}/{role}")
        # Values get their own names: the layer's final value is renamed to the layer's name.
        outs = [self.unique(f"{name}:{i}") for i in range(outputs)]
        self.nodes.append(helper.make_node(op_type, inputs, outs, name=name, **attrs))
        return outs

    def value(self, op_type: str, inputs: list[str], rank: int, layout: str | None = None,
              role: str | None = None, **attrs: Any) -> Value:
        out = Value(self.emit(op_type, inputs, role, **attrs)[0], rank, layout)
        if layout:
            self.layouts[out.name] = layout
        return out

    def unary(self, op_type: str, node: Node, x: Value, **attrs: Any) -> Value:
        """One elementwise ONNX op on `x`, in `x`'s layout, named after `node`'s op."""
        return self.value(op_type, [x.name], x.rank, x.layout, role=node.op, **attrs)

    def activation(self, node: Node, v: Value) -> Value:
        """`node`'s fused `activation=` applied to `v`, by that activation op's own rule."""
        return LOWERINGS.lower(self, activation_node(node), [v])

    @contextmanager
    def scope(self, layer: str) -> Iterator[list[NodeProto]]:
        """Emit into a fresh node list (a subgraph's body), nodes named `<layer>/<role>`.
        Names stay unique across both graphs: ONNX keeps SSA over a graph and its bodies."""
        nodes, outer = self.nodes, self.layer
        self.nodes, self.layer = [], layer
        try:
            yield self.nodes
        finally:
            self.nodes, self.layer = nodes, outer

    def to_layout(self, v: Value, layout: str) -> Value:
        """`v` in `layout`: a Transpose made once per value and layout."""
        from onnx import helper

        if v.layout is None or v.layout == layout:
            return v
        key = (v.name, layout)
        if key not in self._converted:
            assert v.shape is not None
            perm = TO_NCHW if layout == NCHW else TO_NHWC
            name = self.unique(f"{v.name}/to_{layout}")
            h, w, c = v.shape
            if c == 1 or h * w == 1:
                # Only a size-1 axis moves: the data order is unchanged, a Reshape is free.
                dims = [0, c, h, w] if layout == NCHW else [0, h, w, c]
                target = self.const(f"to_{layout}", np.array(dims, np.int64), owner=v.name)
                node = helper.make_node("Reshape", [v.name, target], [name], name=name)
            else:
                node = helper.make_node("Transpose", [v.name], [name], name=name,
                                        perm=list(perm))
            self.nodes.append(node)
            self.layouts[name] = layout
            self._converted[key] = Value(name, v.rank, layout, v.shape)
        return self._converted[key]

    def consumers(self, name: str) -> list[Node]:
        """The layers reading `name`, looking through those whose rule is the identity."""
        out = []
        for n in self.graph.nodes:
            if name in n.inputs:
                if LOWERINGS.rule(n) is identity:
                    if n.name in self.graph.outputs:
                        out.append(n)
                    out.extend(self.consumers(n.name))
                else:
                    out.append(n)
        return out

    def rename(self, old: str, new: str) -> None:
        for n in self.nodes:
            for seq in (n.input, n.output):
                for i, s in enumerate(seq):
                    if s == old:
                        seq[i] = new
        if old in self.layouts:
            self.layouts[new] = self.layouts.pop(old)
        for v in (*self.values.values(), *self._converted.values()):
            if v.name == old:
                v.name = new
        self._converted = {((new if src == old else src), layout): v
                           for (src, layout), v in self._converted.items()}

    def fresh(self, base: str) -> str:
        """A name no ONNX value, node or spec tensor uses (nor will use) yet."""
        g = self.graph
        taken = {n.name for n in g.nodes} | {i.name for i in g.inputs} | set(g.outputs)
        name, i = base, 1
        while name in self._used or name in taken:
            i += 1
            name = f"{base}_{i}"
        self._used.add(name)
        return name

    def bind_outputs(self) -> dict[str, str]:
        """Give every graph output a value of its own name, NHWC; returns the ONNX names.

        A layer's value usually is named after it already. Layers whose rule is the identity
        share the value they read: renaming it is enough, unless that value is a graph input
        or already another graph output; only then an Identity is emitted.
        """
        g = self.graph
        input_names = {i.name for i in g.inputs}
        bound: dict[str, str] = {}
        claimed: set[str] = set()  # ONNX values already listed as a graph output
        for name in g.outputs:
            if name in bound:  # listed twice: one ONNX output serves both
                continue
            self.layer = name
            v = self.values[name]
            if v.layout == NCHW:
                v = self.to_layout(v, NHWC)
            if name in input_names:
                target = self.fresh(f"{name}_out")
            else:
                target = name
            if v.name == target and target not in claimed:
                pass
            elif (v.name in input_names or v.name in claimed
                  or (v.name in g.outputs and v.name != name)):
                # One value, two graph outputs (or a graph input): ONNX needs a node.
                out = self.emit("Identity", [v.name], "output")[0]
                self._make_room(target)
                self.rename(out, target)
            else:
                self._make_room(target)
                self.rename(v.name, target)
            claimed.add(target)
            bound[name] = target
        return bound

    def _make_room(self, name: str) -> None:
        """Rename away a value now called `name` (e.g. the NCHW value of an image output)."""
        if any(n.output and name in n.output for n in self.nodes) or any(
                v.name == name for v in (*self.values.values(), *self._converted.values())):
            self.rename(name, self.unique(f"{name}/{NCHW}"))

    # -- the walk --------------------------------------------------------------------------

    def run(self) -> Lowered:
        from onnx import helper

        g = self.graph
        inputs, outputs = [], []
        for inp in g.inputs:
            self._used.add(inp.name)
            rank = len(inp.type.shape) + 1
            self.values[inp.name] = Value(inp.name, rank, NHWC if rank == 4 else None,
                                          tuple(inp.type.shape))
            if rank == 4:
                self.layouts[inp.name] = NHWC
            inputs.append(_tensor_info(inp.name, inp.type.shape, inp.type.dtype))
        for node in g.nodes:
            self.layer = node.name
            before = len(self.nodes)
            out = LOWERINGS.lower(self, node, [self.values[name] for name in node.inputs])
            produced = {o for n in self.nodes[before:] for o in n.output}
            if out.name in produced and out.name != node.name:
                self._used.add(node.name)
                self.rename(out.name, node.name)
                out.name = node.name
            out.shape = tuple(g.type_of(node.name).shape)
            self.values[node.name] = out
        output_names = self.bind_outputs()
        for name in g.outputs:
            outputs.append(_tensor_info(output_names[name], g.type_of(name).shape,
                                        g.type_of(name).dtype))
        graph = helper.make_graph(self.nodes, g.name, inputs, outputs, self.initializers)
        return Lowered(graph, dict(self.layouts), output_names)


# the IR's dtypes as ONNX element types (TensorProto's names)
ELEM_TYPES = {"f32": "FLOAT", "i32": "INT32", "i64": "INT64", "bool": "BOOL"}


def _tensor_info(name: str, shape: Shape, dtype: str = "f32") -> ValueInfoProto:
    from onnx import TensorProto, helper

    dims = [BATCH] + [f"{name}_dim{i + 1}" if d is None else int(d) for i, d in enumerate(shape)]
    return helper.make_tensor_value_info(name, getattr(TensorProto, ELEM_TYPES[dtype]), dims)


def lower_graph(graph: Graph, weights: dict[str, np.ndarray]) -> Lowered:
    return Lowering(LOWERINGS.prepare(graph), weights).run()


LOWERINGS: LoweringTable[Lowering, Value] = LoweringTable("onnx")


# -- activations ------------------------------------------------------------------------------

@LOWERINGS("linear", "dropout")
def identity(ctx: Lowering, node: Node, xs: list[Value]) -> Value:
    return xs[0]  # at inference: emits nothing, the value passes on


@LOWERINGS("relu")
def relu(ctx: Lowering, node: Node, xs: list[Value]) -> Value:
    return ctx.unary("Relu", node, xs[0])


@LOWERINGS("sigmoid")
def sigmoid(ctx: Lowering, node: Node, xs: list[Value]) -> Value:
    return ctx.unary("Sigmoid", node, xs[0])


@LOWERINGS("tanh")
def tanh(ctx: Lowering, node: Node, xs: list[Value]) -> Value:
    return ctx.unary("Tanh", node, xs[0])


@LOWERINGS("gelu")
def gelu(ctx: Lowering, node: Node, xs: list[Value]) -> Value:
    return ctx.unary("Gelu", node, xs[0])  # approximate="none": the exact (erf) form


@LOWERINGS("softmax")
def softmax(ctx: Lowering, node: Node, xs: list[Value]) -> Value:
    x = xs[0]
    return ctx.unary("Softmax", node, x, axis=1 if x.layout == NCHW else -1)  # the channels


@LOWERINGS("leaky_relu")
def leaky_relu(ctx: Lowering, node: Node, xs: list[Value]) -> Value:
    return ctx.unary("LeakyRelu", node, xs[0], alpha=float(node.attrs.alpha))


@LOWERINGS("elu")
def elu(ctx: Lowering, node: Node, xs: list[Value]) -> Value:
    return ctx.unary("Elu", node, xs[0], alpha=float(node.attrs.alpha))



@LOWERINGS("selu")
def selu(ctx: Lowering, node: Node, xs: list[Value]) -> Value:
    return ctx.unary("Selu", node, xs[0])  # ONNX's default alpha and gamma are SELU's constants


@LOWERINGS("softplus")
def softplus(ctx: Lowering, node: Node, xs: list[Value]) -> Value:
    return ctx.unary("Softplus", node, xs[0])


@LOWERINGS("softsign")
def softsign(ctx: Lowering, node: Node, xs: list[Value]) -> Value:
    return ctx.unary("Softsign", node, xs[0])


@LOWERINGS("silu")
def silu(ctx: Lowering, node: Node, xs: list[Value]) -> Value:
    x = xs[0]  # no Swish op before opset 24
    gate = ctx.value("Sigmoid", [x.name], x.rank, x.layout, role=f"{node.op}_gate")
    return ctx.value("Mul", [x.name, gate.name], x.rank, x.layout, role=node.op)


@LOWERINGS("hard_sigmoid")
def hard_sigmoid(ctx: Lowering, node: Node, xs: list[Value]) -> Value:
    # Keras 3's slope 1/6 (ONNX's default alpha 0.2 is Keras 2's)
    return ctx.unary("HardSigmoid", node, xs[0], alpha=1 / 6, beta=0.5)


@LOWERINGS("relu6")
def relu6(ctx: Lowering, node: Node, xs: list[Value]) -> Value:
    x = xs[0]
    low = ctx.const("relu6_min", np.array(0.0, np.float32), owner=node.name)
    high = ctx.const("relu6_max", np.array(6.0, np.float32), owner=node.name)
    return ctx.value("Clip", [x.name, low, high], x.rank, x.layout, role=node.op)


@LOWERINGS("log_softmax")
def log_softmax(ctx: Lowering, node: Node, xs: list[Value]) -> Value:
    x = xs[0]
    return ctx.unary("LogSoftmax", node, x, axis=1 if x.layout == NCHW else -1)  # the channels

# -- layers -----------------------------------------------------------------------------------

def _in_shape(ctx: Lowering, node: Node) -> Shape:
    return ctx.graph.type_of(node.inputs[0]).shape


def _onnx_pads(ctx: Lowering, node: Node) -> dict[str, Any]:
    top, bottom, left, right = pads_2d(node.attrs, _in_shape(ctx, node))
    return {"pads": [top, left, bottom, right]} if (top, bottom, left, right) != (0,) * 4 else {}


@LOWERINGS("conv2d")
def conv2d(ctx: Lowering, node: Node, xs: list[Value]) -> Value:
    a = node.attrs
    x = ctx.to_layout(xs[0], NCHW)
    kernel = ctx.param(node, "kernel", lambda k: k.transpose(3, 2, 0, 1))  # → [out, in, kh, kw]
    inputs = [x.name, kernel] + ([ctx.param(node, "bias")] if a.use_bias else [])
    group = {"group": a.groups} if a.groups != 1 else {}
    y = ctx.value("Conv", inputs, 4, NCHW, kernel_shape=list(pair(a.kernel)),
                  strides=list(pair(a.strides)), dilations=list(pair(a.dilation)),
                  **_onnx_pads(ctx, node), **group)
    return ctx.activation(node, y)


def _depthwise(ctx: Lowering, node: Node, x: Value, key: str, bias: list[str],
               role: str | None = None) -> Value:
    """A Conv with one group per channel: canonical [kh, kw, C, M] → [C * M, 1, kh, kw]."""
    a = node.attrs
    c = _in_shape(ctx, node)[2]

    def to_onnx(k: np.ndarray) -> np.ndarray:
        kh, kw, _, m = k.shape
        return k.reshape(kh, kw, c * m).transpose(2, 0, 1)[:, None]

    kernel = ctx.param(node, key, to_onnx)
    return ctx.value("Conv", [ctx.to_layout(x, NCHW).name, kernel, *bias], 4, NCHW, role=role,
                     kernel_shape=list(pair(a.kernel)), strides=list(pair(a.strides)),
                     dilations=list(pair(a.dilation)), group=c, **_onnx_pads(ctx, node))


@LOWERINGS("depthwise_conv2d")
def depthwise_conv2d(ctx: Lowering, node: Node, xs: list[Value]) -> Value:
    bias = [ctx.param(node, "bias")] if node.attrs.use_bias else []
    return ctx.activation(node, _depthwise(ctx, node, xs[0], "kernel", bias))


@LOWERINGS("separable_conv2d")
def separable_conv2d(ctx: Lowering, node: Node, xs: list[Value]) -> Value:
    a = node.attrs
    mid = _depthwise(ctx, node, xs[0], "depthwise_kernel", [], role="depthwise")
    kernel = ctx.param(node, "pointwise_kernel", lambda k: k.transpose(3, 2, 0, 1))
    bias = [ctx.param(node, "bias")] if a.use_bias else []
    y = ctx.value("Conv", [mid.name, kernel, *bias], 4, NCHW, role="pointwise",
                  kernel_shape=[1, 1])
    return ctx.activation(node, y)


@LOWERINGS("conv2d_transpose")
def conv2d_transpose(ctx: Lowering, node: Node, xs: list[Value]) -> Value:
    a = node.attrs
    h, w, _ = _in_shape(ctx, node)
    assert h is not None and w is not None
    (kh, kw), (sh, sw) = pair(a.kernel), pair(a.strides)
    (top, bottom), (left, right) = (transpose_crops(h, kh, sh, a.padding),
                                    transpose_crops(w, kw, sw, a.padding))
    x = ctx.to_layout(xs[0], NCHW)
    kernel = ctx.param(node, "kernel", lambda k: k.transpose(3, 2, 0, 1))  # → [in, out, kh, kw]
    inputs = [x.name, kernel] + ([ctx.param(node, "bias")] if a.use_bias else [])
    attrs: dict[str, Any] = {}
    if (top, bottom, left, right) != (0,) * 4:
        # crops as pads; a negative `after` (a kernel shorter than the stride) is output_padding
        attrs["pads"] = [top, left, max(bottom, 0), max(right, 0)]
        if bottom < 0 or right < 0:
            attrs["output_padding"] = [max(-bottom, 0), max(-right, 0)]
    y = ctx.value("ConvTranspose", inputs, 4, NCHW, kernel_shape=[kh, kw], strides=[sh, sw],
                  **attrs)
    return ctx.activation(node, y)


def _pool(ctx: Lowering, node: Node, x: Value, onnx_op: str, **extra: Any) -> Value:
    a = node.attrs
    x = ctx.to_layout(x, NCHW)
    return ctx.value(onnx_op, [x.name], 4, NCHW, kernel_shape=list(pair(a.kernel)),
                     strides=list(pair(a.strides)), **_onnx_pads(ctx, node), **extra)


@LOWERINGS("maxpool2d")
def maxpool2d(ctx: Lowering, node: Node, xs: list[Value]) -> Value:
    return _pool(ctx, node, xs[0], "MaxPool")


@LOWERINGS("avgpool2d")
def avgpool2d(ctx: Lowering, node: Node, xs: list[Value]) -> Value:
    return _pool(ctx, node, xs[0], "AveragePool", count_include_pad=0)


def _global_pool(ctx: Lowering, x: Value, onnx_op: str) -> Value:
    axes = [2, 3] if x.layout == NCHW else [1, 2] if x.rank == 4 else [1]  # in place
    return ctx.value(onnx_op, [x.name, ctx.const("axes", np.array(axes, np.int64))], 2,
                     keepdims=0)


@LOWERINGS("global_avgpool2d")
def global_avgpool2d(ctx: Lowering, node: Node, xs: list[Value]) -> Value:
    return _global_pool(ctx, xs[0], "ReduceMean")


@LOWERINGS("global_maxpool2d")
def global_maxpool2d(ctx: Lowering, node: Node, xs: list[Value]) -> Value:
    return _global_pool(ctx, xs[0], "ReduceMax")


# -- 1-D: `[N, T, C]` values, `[N, C, T]` inside Conv and the pools --------------------------

def _to_ncw(ctx: Lowering, x: Value) -> str:
    """`x` `[N, T, C]` as `[N, C, T]`: one Transpose per value."""
    key = (x.name, "ncw")
    if key not in ctx._converted:
        ctx._converted[key] = ctx.value("Transpose", [x.name], 3, role="to_ncw", perm=[0, 2, 1])
    return ctx._converted[key].name


def _window_1d(ctx: Lowering, node: Node, x: Value, onnx_op: str, inputs: list[str],
               **attrs: Any) -> Value:
    """`onnx_op` over the steps of `x`, back to `[N, T, C]`."""
    a = node.attrs
    pads = pads_1d(a, _in_shape(ctx, node)[0])
    if pads != (0, 0):
        attrs["pads"] = list(pads)
    y = ctx.value(onnx_op, [_to_ncw(ctx, x), *inputs], 3, role=node.op,
                  kernel_shape=[a.kernel], strides=[a.strides], **attrs)
    return ctx.value("Transpose", [y.name], 3, role="to_nwc", perm=[0, 2, 1])


@LOWERINGS("conv1d")
def conv1d(ctx: Lowering, node: Node, xs: list[Value]) -> Value:
    a = node.attrs
    kernel = ctx.param(node, "kernel", lambda k: k.transpose(2, 1, 0))  # → [out, in, k]
    bias = [ctx.param(node, "bias")] if a.use_bias else []
    y = _window_1d(ctx, node, xs[0], "Conv", [kernel, *bias], dilations=[a.dilation])
    return ctx.activation(node, y)


@LOWERINGS("maxpool1d")
def maxpool1d(ctx: Lowering, node: Node, xs: list[Value]) -> Value:
    return _window_1d(ctx, node, xs[0], "MaxPool", [])


@LOWERINGS("avgpool1d")
def avgpool1d(ctx: Lowering, node: Node, xs: list[Value]) -> Value:
    return _window_1d(ctx, node, xs[0], "AveragePool", [], count_include_pad=0)


@LOWERINGS("global_avgpool1d")
def global_avgpool1d(ctx: Lowering, node: Node, xs: list[Value]) -> Value:
    mask = ctx.mask_of(node.inputs[0])
    if mask is None:
        return _global_pool(ctx, xs[0], "ReduceMean")  # over axis 1, the steps
    # the mean over real steps only, as Keras's GlobalAveragePooling1D
    from onnx import TensorProto

    steps = ctx.const("steps_axis", np.array([1], np.int64))
    real = ctx.value("Cast", [mask], 2, role="real", to=TensorProto.FLOAT)
    real = ctx.value("Unsqueeze", [real.name, ctx.const("last", np.array([-1], np.int64))], 3,
                     role="real_steps")
    kept = ctx.value("Mul", [xs[0].name, real.name], 3, role="kept")
    total = ctx.value("ReduceSum", [kept.name, steps], 2, role="total", keepdims=0)
    count = ctx.value("ReduceSum", [real.name, steps], 2, role="count", keepdims=0)
    return ctx.value("Div", [total.name, count.name], 2)


@LOWERINGS("global_maxpool1d")
def global_maxpool1d(ctx: Lowering, node: Node, xs: list[Value]) -> Value:
    return _global_pool(ctx, xs[0], "ReduceMax")


@LOWERINGS("upsampling2d")
def upsampling2d(ctx: Lowering, node: Node, xs: list[Value]) -> Value:
    a = node.attrs
    sh, sw = pair(a.size)
    x = ctx.to_layout(xs[0], NCHW)
    scales = ctx.const("scales", np.array([1, 1, sh, sw], np.float32))
    if a.interpolation == "nearest":  # input pixel floor(o / size): repeats
        mode = {"mode": "nearest", "coordinate_transformation_mode": "asymmetric",
                "nearest_mode": "floor"}
    else:  # Keras's (TensorFlow's) bilinear: half-pixel centres, no antialiasing
        mode = {"mode": "linear", "coordinate_transformation_mode": "half_pixel"}
    return ctx.value("Resize", [x.name, "", scales], 4, NCHW, **mode)


@LOWERINGS("zero_padding2d")
def zero_padding2d(ctx: Lowering, node: Node, xs: list[Value]) -> Value:
    top, bottom, left, right = zero_pads(node.attrs.padding)
    x = xs[0]  # padded in its own layout
    if x.layout == NCHW:
        pads = [0, 0, top, left, 0, 0, bottom, right]
    else:
        pads = [0, top, left, 0, 0, bottom, right, 0]
    return ctx.value("Pad", [x.name, ctx.const("pads", np.array(pads, np.int64))], 4, x.layout)


@LOWERINGS("dense")
def dense(ctx: Lowering, node: Node, xs: list[Value]) -> Value:
    a = node.attrs
    x = xs[0]
    order = x.order

    def rows(kernel: np.ndarray) -> np.ndarray:  # to the NCHW flatten order of the input
        return kernel if order is None else kernel[order]

    if x.rank == 2 and a.use_bias:
        # Gemm with transB, as PyTorch exports Linear.
        y = ctx.value("Gemm", [x.name, ctx.param(node, "kernel", lambda k: rows(k).T),
                               ctx.param(node, "bias")], 2, transB=1)
    elif x.rank == 2:
        y = ctx.value("MatMul", [x.name, ctx.param(node, "kernel", rows)], 2)
    else:  # Gemm is 2-D only; dense on [time, features] maps the last axis
        y = ctx.value("MatMul", [x.name, ctx.param(node, "kernel", rows)], x.rank,
                      role="matmul")
        if a.use_bias:
            y = ctx.value("Add", [y.name, ctx.param(node, "bias")], x.rank, role="bias")
    return ctx.activation(node, y)


@LOWERINGS("flatten")
def flatten(ctx: Lowering, node: Node, xs: list[Value]) -> Value:
    x = xs[0]
    if x.rank == 2:
        return x
    users = ctx.consumers(node.name)
    if (x.layout == NCHW and users and node.name not in ctx.graph.outputs
            and all(u.op == "dense" for u in users)):
        h, w, c = _in_shape(ctx, node)
        assert h is not None and w is not None and c is not None
        order = np.arange(h * w * c).reshape(h, w, c).transpose(2, 0, 1).reshape(-1)
        out = ctx.value("Flatten", [x.name], 2, axis=1)
        out.order = order
        return out
    x = ctx.to_layout(x, NHWC)  # channels-last order, as the canonical dense kernel expects
    return ctx.value("Flatten", [x.name], 2, axis=1)


@LOWERINGS("reshape")
def reshape(ctx: Lowering, node: Node, xs: list[Value]) -> Value:
    x = ctx.to_layout(xs[0], NHWC)
    shape = tuple(node.attrs.shape)
    # 0 keeps the (dynamic) batch size: never bake a batch into the constant.
    target = ctx.const("shape", np.array([0, *shape], np.int64))
    rank = len(shape) + 1
    return ctx.value("Reshape", [x.name, target], rank, NHWC if rank == 4 else None)


@LOWERINGS("permute")
def permute(ctx: Lowering, node: Node, xs: list[Value]) -> Value:
    x = xs[0]
    perm = (0, *node.attrs.dims)
    if x.layout == NCHW:  # one Transpose from NCHW: canonical axis k is NCHW axis TO_NHWC[k]
        perm = tuple(TO_NHWC[d] for d in perm)
    return ctx.value("Transpose", [x.name], x.rank, NHWC if x.rank == 4 else None,
                     perm=list(perm))


@LOWERINGS("repeat_vector")
def repeat_vector(ctx: Lowering, node: Node, xs: list[Value]) -> Value:
    column = ctx.value("Unsqueeze", [xs[0].name, ctx.const("axes", np.array([1], np.int64))], 3,
                       role="unsqueeze")
    # Expand, not Tile: shape inference keeps the batch's name through a broadcast
    shape = ctx.const("shape", np.array([1, node.attrs.n, 1], np.int64))
    return ctx.value("Expand", [column.name, shape], 3)


@LOWERINGS("slice")
def slice_(ctx: Lowering, node: Node, xs: list[Value]) -> Value:
    a = node.attrs
    x = xs[0]
    axis = a.axis % (x.rank - 1)
    onnx_axis = (2, 3, 1)[axis] if x.layout == NCHW else axis + 1  # in place: no transpose
    end = np.iinfo(np.int64).max if a.stop is None else a.stop  # ONNX clamps, as Python
    inputs = [x.name, ctx.const("starts", np.array([a.start or 0], np.int64)),
              ctx.const("ends", np.array([end], np.int64)),
              ctx.const("axes", np.array([onnx_axis], np.int64))]
    return ctx.value("Slice", inputs, x.rank, x.layout)


@LOWERINGS("layer_norm")
def layer_norm(ctx: Lowering, node: Node, xs: list[Value]) -> Value:
    a = node.attrs
    x = ctx.to_layout(xs[0], NHWC)  # axis -1 is the channels only channels-last
    features = _in_shape(ctx, node)[-1]
    scale = ctx.param(node, "gamma") if a.scale else ctx.const("unit_scale",
                                                              np.ones(features, np.float32))
    bias = [ctx.param(node, "beta")] if a.center else []  # B is optional
    return ctx.value("LayerNormalization", [x.name, scale, *bias], x.rank, x.layout, axis=-1,
                     epsilon=float(a.epsilon))


@LOWERINGS("batch_norm")
def batch_norm(ctx: Lowering, node: Node, xs: list[Value]) -> Value:
    # Inference (training_mode 0): the moving statistics. ONNX's channels are axis 1: images
    # run NCHW, [N, C] is already so, other channels-last values move the last axis there.
    a = node.attrs
    channels = _in_shape(ctx, node)[-1]
    x = ctx.to_layout(xs[0], NCHW) if xs[0].layout else xs[0]
    scale = ctx.param(node, "gamma") if a.scale else ctx.const("unit_scale",
                                                              np.ones(channels, np.float32))
    bias = ctx.param(node, "beta") if a.center else ctx.const("zero_bias",
                                                             np.zeros(channels, np.float32))
    stats = [ctx.param(node, "moving_mean"), ctx.param(node, "moving_variance")]
    r = x.rank
    moved = x.layout is None and r > 2
    name = x.name
    if moved:
        name = ctx.emit("Transpose", [name], "to_channels_first", perm=[0, r - 1, *range(1, r - 1)])[0]
    y = ctx.value("BatchNormalization", [name, scale, bias, *stats], r, x.layout,
                  epsilon=float(a.epsilon), momentum=float(a.momentum))
    if moved:
        y = ctx.value("Transpose", [y.name], r, role="to_channels_last",
                      perm=[0, *range(2, r), 1])
    return y


def _common_layout(ctx: Lowering, xs: list[Value]) -> list[Value]:
    if len({x.layout for x in xs}) <= 1:
        return xs
    return [ctx.to_layout(x, NCHW) for x in xs]


@LOWERINGS("add")
def add(ctx: Lowering, node: Node, xs: list[Value]) -> Value:
    xs = _common_layout(ctx, xs)
    op = "Add" if len(xs) == 2 else "Sum"
    return ctx.value(op, [x.name for x in xs], xs[0].rank, xs[0].layout)


@LOWERINGS("concat")
def concat(ctx: Lowering, node: Node, xs: list[Value]) -> Value:
    xs = _common_layout(ctx, xs)
    rank = xs[0].rank
    axis = node.attrs.axis % (rank - 1)  # per-sample axis, channels-last
    onnx_axis = (2, 3, 1)[axis] if xs[0].layout == NCHW else axis + 1
    return ctx.value("Concat", [x.name for x in xs], rank, xs[0].layout, axis=onnx_axis)


@LOWERINGS("multiply")
def multiply(ctx: Lowering, node: Node, xs: list[Value]) -> Value:
    xs = _common_layout(ctx, xs)
    product = xs[0]
    for k, x in enumerate(xs[1:]):  # Mul takes two inputs
        last = k == len(xs) - 2
        product = ctx.value("Mul", [product.name, x.name], x.rank, x.layout,
                            role=None if last else f"mul_{k}")
    return product


@LOWERINGS("subtract")
def subtract(ctx: Lowering, node: Node, xs: list[Value]) -> Value:
    xs = _common_layout(ctx, xs)
    return ctx.value("Sub", [x.name for x in xs], xs[0].rank, xs[0].layout)


def _variadic(onnx_op: str) -> Callable[[Lowering, Node, list[Value]], Value]:
    def rule(ctx: Lowering, node: Node, xs: list[Value]) -> Value:
        xs = _common_layout(ctx, xs)
        return ctx.value(onnx_op, [x.name for x in xs], xs[0].rank, xs[0].layout)

    return rule


LOWERINGS.add("average", _variadic("Mean"))
LOWERINGS.add("maximum", _variadic("Max"))
LOWERINGS.add("minimum", _variadic("Min"))


# -- recurrent --------------------------------------------------------------------------------

# The ONNX functions the RNN op applies itself that dslc's tests run through onnxruntime
# (with their `alpha`); any other activation runs as a Scan.
RNN_FUNCTIONS = ("Tanh", "Relu", "Sigmoid", "LeakyRelu", "Elu", "Softsign", "Softplus")


def rnn_activation(ctx: Lowering, node: Node) -> dict[str, Any] | None:
    """The RNN op's `activations` attributes for `node`'s activation, read off what that
    activation op's own rule emits (one function of `RNN_FUNCTIONS`, or nothing: the
    identity); None when the RNN op cannot apply it."""
    from onnx import helper

    probe = Lowering(ctx.graph, {})
    probe.layer = node.name
    x = Value(probe.unique("x"), 2)
    y = LOWERINGS.lower(probe, activation_node(node), [x])
    if not probe.nodes and not probe.initializers and y.name == x.name:
        return {"activations": ["Affine"], "activation_alpha": [1.0], "activation_beta": [0.0]}
    if len(probe.nodes) != 1 or probe.initializers:
        return None
    fn = probe.nodes[0]
    attrs = {a.name: helper.get_attribute_value(a) for a in fn.attribute}
    if fn.op_type not in RNN_FUNCTIONS or set(attrs) - {"alpha"} or list(fn.input) != [x.name]:
        return None
    out: dict[str, Any] = {"activations": [fn.op_type]}
    if "alpha" in attrs:
        out["activation_alpha"] = [float(attrs["alpha"])]
    return out


# `bidirectional` (Keras's Bidirectional): the layer's own rule once per direction (the
# backward one is `go_backwards`, ONNX's direction=reverse), each reading its own weights
# (`<layer>.forward_kernel`, ...), then Keras's merge. Two nodes rather than one
# direction=bidirectional node: the Scan form (activations the RNN op lacks) needs them anyway.
class _DirectionLowering:
    """A Lowering whose `param` reads one direction's weights."""

    def __init__(self, ctx: Lowering, node: Node, direction: str):
        self._ctx, self._node, self._direction = ctx, node, direction

    def param(self, node: Node, key: str, convert: Convert | None = None) -> str:
        return self._ctx.param(self._node, f"{self._direction}_{key}", convert)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ctx, name)


OnnxRule = Callable[[Lowering, Node, list[Value]], Value]


def _both_directions(rule: OnnxRule) -> OnnxRule:
    def run(ctx: Lowering, node: Node, xs: list[Value]) -> Value:
        a = node.attrs
        if a.bidirectional == "none":
            return rule(ctx, node, xs)
        y, y_rev = (rule(cast(Lowering, _DirectionLowering(ctx, node, d)), direction_node(node, d),
                         xs) for d in DIRECTIONS)
        rank = y.rank
        if a.return_sequences:  # the backward outputs back in time order, as Keras's
            y_rev = ctx.value("Slice", [y_rev.name, ctx.const("last", np.array([-1], np.int64)),
                                        ctx.const("before_first",
                                                  np.array([np.iinfo(np.int64).min])),
                                        ctx.const("time", np.array([1], np.int64)),
                                        ctx.const("step", np.array([-1], np.int64))],
                              rank, role="time_order")
        if a.bidirectional == "concat":
            merged = ctx.value("Concat", [y.name, y_rev.name], rank, role="merge", axis=-1)
        else:
            op = {"sum": "Add", "ave": "Add", "mul": "Mul"}[a.bidirectional]
            merged = ctx.value(op, [y.name, y_rev.name], rank, role="merge")
            if a.bidirectional == "ave":
                half = ctx.const("half", np.array(0.5, np.float32))
                merged = ctx.value("Mul", [merged.name, half], rank, role="average")
        mask = ctx.mask_of(node.inputs[0])
        if a.return_sequences and mask is not None:
            # Keras's Bidirectional: zeros at padded steps (`zero_output_for_mask`)
            real = ctx.emit("Unsqueeze", [mask, ctx.const("last_axis", np.array([-1], np.int64))],
                            role="real")[0]
            merged = ctx.value("Where", [real, merged.name,
                                         ctx.const("zeros", np.array(0, np.float32))],
                               rank, role="zero_padded")
        return merged
    return run


@LOWERINGS("simple_rnn")
@_both_directions
def simple_rnn(ctx: Lowering, node: Node, xs: list[Value]) -> Value:
    a = node.attrs
    x = xs[0]
    act = rnn_activation(ctx, node)
    if act is None:
        return _scan_rnn(ctx, node, x)
    # ONNX keeps two biases (Wb, Rb); the canonical one is Wb and Rb is zero.
    w = ctx.param(node, "kernel", lambda k: k.T[None])
    r = ctx.param(node, "recurrent_kernel", lambda k: k.T[None])
    if a.use_bias:
        b = ctx.param(node, "bias", lambda v: np.concatenate([v, np.zeros_like(v)])[None])
    else:  # B is optional: left out, the spec's use_bias=false reads back from the file
        b = ""
    return _recurrent(ctx, node, x, "RNN", [w, r, b], {"hidden_size": a.units, **act})


def _recurrent(ctx: Lowering, node: Node, x: Value, op: str, weights: list[str],
               attrs: dict[str, Any]) -> Value:
    """One ONNX RNN/LSTM/GRU node, time-major inside (onnxruntime runs layout=0 only).
    `go_backwards` runs it in reverse; ONNX then gives the outputs in time order, Keras in
    reading order (last step first), so a returned sequence is flipped back."""
    a = node.attrs
    mask = ctx.mask_of(node.inputs[0])
    if mask is not None:
        return _masked_steps(ctx, node, x, mask,
                             lambda n, xc: _recurrent(ctx, n, xc, op, weights, attrs))
    if a.go_backwards:
        attrs = {**attrs, "direction": "reverse"}
    xt = ctx.value("Transpose", [x.name], 3, role="time_major", perm=[1, 0, 2])
    weights = [w for w in weights if w]
    axes = ctx.const("axes", np.array([0], np.int64))
    if a.return_sequences:
        y = ctx.emit(op, [xt.name, *weights], outputs=1, **attrs)[0]  # [T, 1, N, H]
        if a.go_backwards:
            y = ctx.emit("Slice", [y, ctx.const("last", np.array([-1], np.int64)),
                                   ctx.const("before_first", np.array([np.iinfo(np.int64).min])),
                                   axes, ctx.const("step", np.array([-1], np.int64))],
                         role="reading_order")[0]
        ys = ctx.value("Transpose", [y], 4, role="batch_major", perm=[1, 2, 0, 3])  # [1, N, T, H]
        return ctx.value("Squeeze", [ys.name, axes], 3, role="squeeze")
    y_h = ctx.emit(op, [xt.name, *weights], outputs=2, **attrs)[1]  # [1, N, H]
    ctx.nodes[-1].output[0] = ""  # the full sequence is not needed
    return ctx.value("Squeeze", [y_h, axes], 2, role="squeeze")


def _masked_steps(ctx: Lowering, node: Node, x: Value, mask: str,
                  run: Callable[[Node, Value], Value]) -> Value:
    """A recurrent layer under a padding mask, as Keras computes it (a padded step carries the
    state over), with the recurrence `run` unmasked: each sample's real steps moved to the
    front in order (a permutation from cumulative sums, ScatterElements, GatherND), one run
    forward over them returning every step, then step t's output is the state after the last
    real step up to t (zeros before the first). What the run computes after a sample's real
    steps is never read. No `sequence_lens`: onnxruntime refuses a length of 0."""
    from onnx import TensorProto

    a = node.attrs
    axes = ctx.const("time_axis", np.array([1], np.int64))
    one, zero = ctx.const("one", np.array(1, np.int64)), ctx.const("zero", np.array(0, np.int64))
    if a.go_backwards:  # reading order, last step first
        start = ctx.const("last", np.array([-1], np.int64))
        stop = ctx.const("before_first", np.array([np.iinfo(np.int64).min]))
        step = ctx.const("step", np.array([-1], np.int64))
        x = ctx.value("Slice", [x.name, start, stop, axes, step], 3, role="backwards")
        mask = ctx.emit("Slice", [mask, start, stop, axes, step], role="mask_backwards")[0]
    real = ctx.emit("Cast", [mask], role="real", to=TensorProto.INT64)[0]
    pad = ctx.emit("Sub", [one, real], role="padded")[0]
    reals = ctx.emit("CumSum", [real, one], role="reals_so_far")[0]
    pads = ctx.emit("CumSum", [pad, one], role="pads_so_far")[0]
    count = ctx.emit("ReduceSum", [real, axes], role="count", keepdims=1)[0]  # [N, 1]
    slot = ctx.emit("Sub", [reals, one], role="real_slot")[0]  # among the real steps
    behind = ctx.emit("Sub", [ctx.emit("Add", [count, pads], role="pad_slot")[0], one],
                      role="pad_slot")[0]  # the padded steps after them
    to = ctx.emit("Where", [mask, slot, behind], role="slot")[0]
    t = ctx.emit("Sub", [ctx.emit("Add", [reals, pads], role="steps")[0], one], role="step")[0]
    order = ctx.emit("ScatterElements", [t, to, t], role="order", axis=1)[0]  # slot → step
    last = ctx.const("last_axis", np.array([-1], np.int64))
    index = ctx.emit("Unsqueeze", [order, last], role="order_index")[0]
    xc = ctx.value("GatherND", [x.name, index], 3, role="real_steps", batch_dims=1)
    seq_node = node.model_copy(update={
        "inputs": [xc.name],  # unmasked: the run is the plain recurrence
        "attrs": a.model_copy(update={"return_sequences": True, "go_backwards": False})})
    ys = run(seq_node, xc)  # [N, T, H]
    at = slot if a.return_sequences else ctx.emit("Sub", [count, one], role="last_real")[0]
    safe = ctx.emit("Max", [at, zero], role="clamped")[0]
    got = ctx.emit("GatherND", [ys.name, ctx.emit("Unsqueeze", [safe, last], role="index")[0]],
                   role="spread", batch_dims=1)[0]
    started = ctx.emit("GreaterOrEqual", [at, zero], role="started")[0]
    started = ctx.emit("Unsqueeze", [started, last], role="started")[0]
    y = ctx.value("Where", [started, got, ctx.const("zeros", np.array(0, np.float32))], 3,
                  role="carried")
    if a.return_sequences:
        return y
    return ctx.value("Squeeze", [y.name, axes], 2, role="last")


# The gate activations of lstm and gru (dslc/ops/recurrent.py's GateActivation) as ONNX RNN
# functions: (name, alpha, beta); Affine(1, 0) is the identity.
GATE_FUNCTIONS = {"tanh": ("Tanh", None, None), "sigmoid": ("Sigmoid", None, None),
                  "relu": ("Relu", None, None), "linear": ("Affine", 1.0, 0.0)}


def _gate_attrs(names: list[str]) -> dict[str, Any]:
    """`activations` with their `activation_alpha/beta`, consumed in order by the functions
    that take them."""
    fns = [GATE_FUNCTIONS[n] for n in names]
    out: dict[str, Any] = {"activations": [f for f, _, _ in fns]}
    alphas = [al for _, al, _ in fns if al is not None]
    betas = [be for _, _, be in fns if be is not None]
    if alphas:
        out["activation_alpha"] = alphas
    if betas:
        out["activation_beta"] = betas
    return out


def _reorder(a: np.ndarray, order: list[int], gates: int) -> np.ndarray:
    """Gate blocks along the last axis, in `order` (indices of Keras's blocks)."""
    blocks = np.split(a, gates, axis=-1)
    return np.concatenate([blocks[i] for i in order], axis=-1)


# Keras's LSTM gates i, f, c, o → ONNX's i, o, f, c
LSTM_ONNX_ORDER = [0, 3, 1, 2]


@LOWERINGS("lstm")
@_both_directions
def lstm(ctx: Lowering, node: Node, xs: list[Value]) -> Value:
    a = node.attrs
    u = a.units

    def gates(k: np.ndarray) -> np.ndarray:  # [in, 4u] → [1, 4u, in], ONNX's order
        return _reorder(k, LSTM_ONNX_ORDER, 4).T[None]

    w = ctx.param(node, "kernel", gates)
    r = ctx.param(node, "recurrent_kernel", gates)
    # ONNX keeps two biases (Wb, Rb); Keras's one is Wb and Rb is zero.
    if a.use_bias:
        b = ctx.param(node, "bias", lambda v: np.concatenate(
            [_reorder(v, LSTM_ONNX_ORDER, 4), np.zeros_like(v)])[None])
    else:
        b = ""  # B is optional
    act, ra = a.activation, a.recurrent_activation
    attrs = {"hidden_size": u, **_gate_attrs([ra, act, act])}
    return _recurrent(ctx, node, xs[0], "LSTM", [w, r, b], attrs)


@LOWERINGS("gru")
@_both_directions
def gru(ctx: Lowering, node: Node, xs: list[Value]) -> Value:
    """ONNX's GRU has Keras's gate order (z, r, h); linear_before_reset=1 is reset_after."""
    a = node.attrs
    u = a.units
    w = ctx.param(node, "kernel", lambda k: k.T[None])
    r = ctx.param(node, "recurrent_kernel", lambda k: k.T[None])
    if a.use_bias and a.reset_after:
        b = ctx.param(node, "bias", lambda v: v.reshape(1, 6 * u))  # [input; recurrent]
    elif a.use_bias:
        b = ctx.param(node, "bias", lambda v: np.concatenate([v, np.zeros_like(v)])[None])
    else:
        b = ""  # B is optional
    attrs = {"hidden_size": u, "linear_before_reset": int(a.reset_after),
             **_gate_attrs([a.recurrent_activation, a.activation])}
    return _recurrent(ctx, node, xs[0], "GRU", [w, r, b], attrs)


def _scan_rnn(ctx: Lowering, node: Node, x: Value) -> Value:
    """An Elman RNN as a Scan, for activations the RNN op lacks (gelu, softmax). The step's
    activation is the activation op's own rule, emitted into the Scan body."""
    from onnx import TensorProto, helper, numpy_helper

    a = node.attrs
    mask = ctx.mask_of(node.inputs[0])
    if mask is not None:
        return _masked_steps(ctx, node, x, mask, lambda n, xc: _scan_rnn(ctx, n, xc))
    h = a.units
    xw = ctx.value("MatMul", [x.name, ctx.param(node, "kernel")], 3, role="input_proj")
    if a.use_bias:
        xw = ctx.value("Add", [xw.name, ctx.param(node, "bias")], 3, role="input_bias")
    n = ctx.value("Shape", [x.name], 1, role="batch_size", start=0, end=1)
    dims = ctx.value("Concat", [n.name, ctx.const("units", np.array([h], np.int64))], 1,
                     role="state_shape", axis=0)
    zero = numpy_helper.from_array(np.zeros(1, np.float32), "zero")
    h0 = ctx.value("ConstantOfShape", [dims.name], 2, role="initial_state", value=zero)
    r = ctx.param(node, "recurrent_kernel")
    # Inner names carry the layer and a `/`, which no spec tensor has, and are reserved.
    step = f"{node.name}/step"
    h_prev, x_t = ctx.unique(f"{step}/h_prev"), ctx.unique(f"{step}/x_t")
    with ctx.scope(step) as body:
        hr = ctx.value("MatMul", [h_prev, r], 2, role="recurrence")
        pre = ctx.value("Add", [x_t, hr.name], 2, role="sum")
        h_next = ctx.activation(node, pre).name
        step_outputs = [h_next]
        if a.return_sequences:
            # The state is also the per-step output; a graph cannot list one value twice.
            step_outputs.append(ctx.emit("Identity", [h_next], "emit")[0])

    def info(name: str) -> ValueInfoProto:
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, [None, h])

    graph = helper.make_graph(body, f"{node.name}_step", [info(h_prev), info(x_t)],
                              [info(o) for o in step_outputs])
    seq_axes: dict[str, Any] = {"scan_output_axes": [1]} if a.return_sequences else {}
    if a.go_backwards:  # the outputs stay in reading order, as Keras's
        seq_axes["scan_input_directions"] = [1]
    outs = ctx.emit("Scan", [h0.name, xw.name], outputs=len(step_outputs), body=graph,
                    num_scan_inputs=1, scan_input_axes=[1], **seq_axes)
    return Value(outs[1], 3) if a.return_sequences else Value(outs[0], 2)


# -- attention --------------------------------------------------------------------------------

@LOWERINGS("multi_head_attention")
def multi_head_attention(ctx: Lowering, node: Node, xs: list[Value]) -> Value:
    """Keras's MultiHeadAttention with standard ops: per-head projections as one MatMul each
    (the canonical `[d, heads, k]` kernel is a `[d, heads * k]` matrix), scores of the scaled
    query, Keras's causal mask (masked scores -1e9), Softmax, the output projection."""
    a = node.attrs
    heads, kd = a.heads, a.key_dim
    vd = a.value_dim or kd
    query, value = xs[0], xs[1]
    key = xs[2] if len(xs) == 3 else value

    def project(role: str, x: Value, size: int, perm: list[int]) -> Value:
        kernel = ctx.param(node, f"{role}_kernel", lambda k: k.reshape(k.shape[0], -1))
        y = ctx.value("MatMul", [x.name, kernel], 3, role=role)
        if a.use_bias:
            bias = ctx.param(node, f"{role}_bias", lambda b: b.reshape(-1))
            y = ctx.value("Add", [y.name, bias], 3, role=f"{role}_bias")
        split = ctx.const(f"{role}_heads", np.array([0, 0, heads, size], np.int64))
        y = ctx.value("Reshape", [y.name, split], 4, role=f"{role}_heads")
        return ctx.value("Transpose", [y.name], 4, role=f"{role}_by_head", perm=perm)

    q = project("query", query, kd, [0, 2, 1, 3])  # [N, heads, Tq, kd]
    scale = ctx.const("scale", np.array(1 / np.sqrt(kd), np.float32))
    q = ctx.value("Mul", [q.name, scale], 4, role="scaled_query")  # Keras scales the query
    k = project("key", key, kd, [0, 2, 3, 1])  # [N, heads, kd, Tv]
    v = project("value", value, vd, [0, 2, 1, 3])  # [N, heads, Tv, vd]
    scores = ctx.value("MatMul", [q.name, k.name], 4, role="scores")
    if a.causal:  # query i sees keys 0..i: the lower triangle of each [Tq, Tv] matrix
        tq, tv = ctx.graph.type_of(node.inputs[0]).shape[0], ctx.graph.type_of(node.inputs[1]).shape[0]
        if tq is not None and tv is not None:
            allowed = ctx.const("causal", np.tril(np.ones((tq, tv), np.bool_)))
        else:  # lengths known at run time: the triangle of a [Tq, Tv] block of trues
            from onnx import numpy_helper

            lengths = ctx.value("Shape", [scores.name], 1, role="lengths", start=2)
            true = numpy_helper.from_array(np.ones(1, np.bool_), "true")
            block = ctx.value("ConstantOfShape", [lengths.name], 2, role="all", value=true)
            allowed = ctx.value("Trilu", [block.name], 2, role="causal", upper=0).name
    else:
        allowed = None
    # Padding masks, as Keras's: a padded query step sees nothing, no step a padded value
    # (or key) step; `[N, T]` masks unsqueezed to `[N, 1, Tq, 1]` and `[N, 1, 1, Tv]`.
    masks = [ctx.mask_of(name) for name in node.inputs]
    for mask, axes in ((masks[0], [1, 3]), *((m, [1, 2]) for m in dict.fromkeys(masks[1:]))):
        if mask is None:
            continue
        where = ctx.const("mask_axes", np.array(axes, np.int64))
        part = ctx.value("Unsqueeze", [mask, where], 4, role="mask_by_head").name
        allowed = part if allowed is None else ctx.value("And", [allowed, part], 4,
                                                         role="allowed").name
    if allowed is not None:
        masked = ctx.const("masked", np.array(-1e9, np.float32))  # Keras's masked softmax
        scores = ctx.value("Where", [allowed, scores.name, masked], 4, role="masked")
    weights = ctx.value("Softmax", [scores.name], 4, role="weights", axis=-1)
    if allowed is not None and a.dropout:
        # Keras's masked softmax (taken when dropout is set) zeroes masked weights after the
        # softmax: a row that sees nothing gives zeros, not uniform weights.
        zero = ctx.const("zero", np.array(0.0, np.float32))
        weights = ctx.value("Where", [allowed, weights.name, zero], 4, role="kept_weights")
    y = ctx.value("MatMul", [weights.name, v.name], 4, role="attend")  # [N, heads, Tq, vd]
    y = ctx.value("Transpose", [y.name], 4, role="by_step", perm=[0, 2, 1, 3])
    merge = ctx.const("merge_heads", np.array([0, 0, heads * vd], np.int64))
    y = ctx.value("Reshape", [y.name, merge], 3, role="merge_heads")
    kernel = ctx.param(node, "output_kernel", lambda k: k.reshape(-1, k.shape[-1]))
    y = ctx.value("MatMul", [y.name, kernel], 3, role="output")
    if a.use_bias:
        y = ctx.value("Add", [y.name, ctx.param(node, "output_bias")], 3, role="output_bias")
    return y
# -- embeddings and positions -----------------------------------------------------------------

@LOWERINGS("embedding")
def embedding(ctx: Lowering, node: Node, xs: list[Value]) -> Value:
    # onnxruntime fails on an id past the table; Gather counts a negative id from the end,
    # which the other backends refuse (the reference raises on both).
    rank = xs[0].rank + 1
    table = ctx.param(node, "embeddings")
    return ctx.value("Gather", [table, xs[0].name], rank, NHWC if rank == 4 else None, axis=0)


def _steps(ctx: Lowering, x: Value) -> str:
    """A 1-D int64 tensor holding the sequence length (axis 1) of `x`."""
    return ctx.value("Shape", [x.name], 1, role="steps", start=1, end=2).name


@LOWERINGS("position_embedding")
def position_embedding(ctx: Lowering, node: Node, xs: list[Value]) -> Value:
    x = xs[0]
    table = ctx.param(node, "embeddings")
    rows = ctx.value("Slice", [table, ctx.const("start", np.array([0], np.int64)),
                               _steps(ctx, x), ctx.const("axes", np.array([0], np.int64))],
                     2, role="positions")
    return ctx.value("Add", [x.name, rows.name], 3)


@LOWERINGS("sinusoidal_position")
def sinusoidal_position(ctx: Lowering, node: Node, xs: list[Value]) -> Value:
    from onnx import TensorProto

    x = xs[0]
    features = ctx.graph.type_of(node.inputs[0]).shape[1]
    assert features is not None
    index = np.arange(features)
    rates = (1.0 / float(node.attrs.max_wavelength)) ** (2 * (index // 2) / features)
    steps = ctx.value("Squeeze", [_steps(ctx, x), ctx.const("axes", np.array([0], np.int64))], 0,
                      role="length")
    positions = ctx.value("Range", [ctx.const("zero", np.array(0, np.int64)), steps.name,
                                    ctx.const("one", np.array(1, np.int64))], 1, role="range")
    column = ctx.value("Unsqueeze", [positions.name, ctx.const("column", np.array([1], np.int64))],
                       2, role="column")
    exact = ctx.value("Cast", [column.name], 2, role="float64", to=TensorProto.DOUBLE)
    angles = ctx.value("Mul", [exact.name, ctx.const("rates", rates.astype(np.float64))], 2,
                       role="angles")
    sin = ctx.value("Sin", [angles.name], 2, role="sin")
    cos = ctx.value("Cos", [angles.name], 2, role="cos")
    table = ctx.value("Where", [ctx.const("even", index % 2 == 0), sin.name, cos.name], 2,
                      role="table")
    single = ctx.value("Cast", [table.name], 2, role="float32", to=TensorProto.FLOAT)
    return ctx.value("Add", [x.name, single.name], 3)
