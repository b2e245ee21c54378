"""IR graph → ONNX nodes, one small lowering per op (the table `LOWERINGS`).

Layout: the IR is channels-last. Image tensors enter as NHWC; convolution and pooling run in
NCHW, so a tensor is transposed only when a consumer needs the other layout (memoised: one
Transpose at entry, one back to NHWC before a Flatten or Reshape, whose row-major order must
be channels-last so that canonical dense kernels stay valid). Outputs leave as NHWC.

A Flatten whose every consumer is a dense layer skips the Transpose: it flattens NCHW and
the dense kernels' rows are permuted to match instead (a weight conversion at the boundary,
so checkpoints keep the canonical layout).

Every layer's final value is named after the layer; helper nodes are `<layer>/<role>`.
Layers that are the identity at inference (dropout, linear) emit nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from onnx import GraphProto, TensorProto, helper, numpy_helper

from dslc.diagnostics import DslError
from dslc.ir.graph import Graph, Node
from dslc.ops.activation import LEAKY_RELU_ALPHA
from dslc.ops.conv import pads_2d
from dslc.ops.registry import pair

OPSET = 20  # Gelu is a single op from opset 20 on
IR_VERSION = 9  # onnx's pairing for opset 20; onnxruntime reads it
BATCH = "batch"

NHWC, NCHW = "nhwc", "nchw"
TO_NCHW, TO_NHWC = (0, 3, 1, 2), (0, 2, 3, 1)


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
        self.graph = graph
        self.weights = weights
        self.nodes: list = []
        self.initializers: list[TensorProto] = []
        self.values: dict[str, Value] = {}
        self.layouts: dict[str, str] = {}
        self._converted: dict[tuple[str, str], Value] = {}
        self._used: set[str] = set()
        self.layer: str = ""

    # -- building blocks -------------------------------------------------------------------

    def unique(self, name: str) -> str:
        base, i = name, 1
        while name in self._used:
            i += 1
            name = f"{base}_{i}"
        self._used.add(name)
        return name

    def const(self, role: str, array, owner: str | None = None) -> str:
        """An initializer named `<owner or layer>.<role>`."""
        name = self.unique(f"{owner or self.layer}.{role}")
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def param(self, key: str) -> np.ndarray:
        return np.asarray(self.weights[f"{self.layer}.{key}"], dtype=np.float32)

    def emit(self, op_type: str, inputs: list[str], role: str | None = None, outputs: int = 1,
             **attrs) -> list[str]:
        """Add one node named after the current layer; returns its output names."""
        name = self.unique(self.layer if role is None else f"{self.layer}/{role}")
        # Values get their own names: the layer's final value is renamed to the layer's name.
        outs = [self.unique(f"{name}:{i}") for i in range(outputs)]
        self.nodes.append(helper.make_node(op_type, inputs, outs, name=name, **attrs))
        return outs

    def value(self, op_type: str, inputs: list[str], rank: int, layout: str | None = None,
              role: str | None = None, **attrs) -> Value:
        out = Value(self.emit(op_type, inputs, role, **attrs)[0], rank, layout)
        if layout:
            self.layouts[out.name] = layout
        return out

    def to_layout(self, v: Value, layout: str) -> Value:
        """`v` in `layout`: a Transpose made once per value and layout."""
        if v.layout is None or v.layout == layout:
            return v
        key = (v.name, layout)
        if key not in self._converted:
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
        """The layers reading `name`, looking through the ones that vanish at inference."""
        out = []
        for n in self.graph.nodes:
            if name in n.inputs:
                if n.op in ("dropout", "linear"):
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

        A layer's value usually is named after it already. Layers that vanish at inference
        (dropout, linear) share the value they read: renaming it is enough, unless that value
        is a graph input or already another graph output; only then an Identity is emitted.
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

    def activation(self, v: Value, act: str, alpha: float = LEAKY_RELU_ALPHA) -> Value:
        """`act` applied to `v`; softmax runs over the channels-last last axis."""
        if act == "linear":
            return v
        op = ACTIVATIONS.get(act)
        if op is None:
            raise DslError(f"activation `{act}` is not supported by backend onnx")
        attrs = {}
        if act == "softmax":
            attrs["axis"] = 1 if v.layout == NCHW else -1
        elif act == "leaky_relu":
            attrs["alpha"] = float(alpha)
        return self.value(op, [v.name], v.rank, v.layout, role=act, **attrs)

    # -- the walk --------------------------------------------------------------------------

    def run(self) -> Lowered:
        g = self.graph
        inputs, outputs = [], []
        for inp in g.inputs:
            self._used.add(inp.name)
            rank = len(inp.type.shape) + 1
            self.values[inp.name] = Value(inp.name, rank, NHWC if rank == 4 else None,
                                          tuple(inp.type.shape))
            if rank == 4:
                self.layouts[inp.name] = NHWC
            inputs.append(_tensor_info(inp.name, inp.type.shape))
        for node in g.nodes:
            self.layer = node.name
            lower = LOWERINGS.get(node.op)
            if lower is None:
                raise DslError(f"op `{node.op}` is not supported by backend onnx", node.span)
            before = len(self.nodes)
            args = [self.values[name] for name in node.inputs]
            out = lower(self, node, *args)
            produced = {o for n in self.nodes[before:] for o in n.output}
            if out.name in produced and out.name != node.name:
                self._used.add(node.name)
                self.rename(out.name, node.name)
                out.name = node.name
            out.shape = tuple(node.type.shape)
            self.values[node.name] = out
        output_names = self.bind_outputs()
        for name in g.outputs:
            outputs.append(_tensor_info(output_names[name], g.type_of(name).shape))
        graph = helper.make_graph(self.nodes, g.name, inputs, outputs, self.initializers)
        return Lowered(graph, dict(self.layouts), output_names)


def _tensor_info(name: str, shape) -> object:
    dims = [BATCH] + [f"{name}_dim{i + 1}" if d is None else int(d) for i, d in enumerate(shape)]
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, dims)


def lower_graph(graph: Graph, weights: dict[str, np.ndarray]) -> Lowered:
    return Lowering(graph, weights).run()


# -- the lowerings ------------------------------------------------------------------------

ACTIVATIONS = {
    "relu": "Relu", "sigmoid": "Sigmoid", "tanh": "Tanh", "softmax": "Softmax",
    "leaky_relu": "LeakyRelu", "gelu": "Gelu",
}


def _in_shape(ctx: Lowering, node: Node) -> tuple:
    return ctx.graph.type_of(node.inputs[0]).shape


def _onnx_pads(ctx: Lowering, node: Node) -> dict:
    top, bottom, left, right = pads_2d(node.attrs, _in_shape(ctx, node))
    return {"pads": [top, left, bottom, right]} if (top, bottom, left, right) != (0,) * 4 else {}


def lower_conv2d(ctx: Lowering, node: Node, x: Value) -> Value:
    a = node.attrs
    x = ctx.to_layout(x, NCHW)
    kernel = ctx.const("kernel", ctx.param("kernel").transpose(3, 2, 0, 1))  # → [out, in, kh, kw]
    inputs = [x.name, kernel] + ([ctx.const("bias", ctx.param("bias"))] if a.use_bias else [])
    attrs = {"kernel_shape": list(pair(a.kernel)), "strides": list(pair(a.strides)),
             "dilations": list(pair(a.dilation)), **_onnx_pads(ctx, node)}
    y = ctx.value("Conv", inputs, 4, NCHW, **attrs)
    return ctx.activation(y, a.activation)


def _pool(onnx_op: str, **extra) -> Callable:
    def lower(ctx: Lowering, node: Node, x: Value) -> Value:
        a = node.attrs
        x = ctx.to_layout(x, NCHW)
        attrs = {"kernel_shape": list(pair(a.kernel)), "strides": list(pair(a.strides)),
                 **_onnx_pads(ctx, node), **extra}
        return ctx.value(onnx_op, [x.name], 4, NCHW, **attrs)

    return lower


def _global_pool(onnx_op: str) -> Callable:
    def lower(ctx: Lowering, node: Node, x: Value) -> Value:
        axes = [2, 3] if x.layout == NCHW else [1, 2]  # reduce in place: no transpose
        return ctx.value(onnx_op, [x.name, ctx.const("axes", np.array(axes, np.int64))], 2,
                         keepdims=0)

    return lower


def lower_dense(ctx: Lowering, node: Node, x: Value) -> Value:
    a = node.attrs
    kernel = ctx.param("kernel")
    if x.order is not None:  # rows to the NCHW flatten order of the input
        kernel = kernel[x.order]
    if x.rank == 2:
        if a.use_bias:
            # Gemm with transB, as PyTorch exports Linear.
            y = ctx.value("Gemm", [x.name, ctx.const("kernel", kernel.T),
                                   ctx.const("bias", ctx.param("bias"))], 2, transB=1)
        else:
            y = ctx.value("MatMul", [x.name, ctx.const("kernel", kernel)], 2)
    else:  # Gemm is 2-D only; dense on [time, features] maps the last axis
        y = ctx.value("MatMul", [x.name, ctx.const("kernel", kernel)], x.rank, role="matmul")
        if a.use_bias:
            y = ctx.value("Add", [y.name, ctx.const("bias", ctx.param("bias"))], x.rank,
                          role="bias")
    return ctx.activation(y, a.activation)


def lower_flatten(ctx: Lowering, node: Node, x: Value) -> Value:
    if x.rank == 2:
        return x
    users = ctx.consumers(node.name)
    if (x.layout == NCHW and users and node.name not in ctx.graph.outputs
            and all(u.op == "dense" for u in users)):
        h, w, c = _in_shape(ctx, node)
        order = np.arange(h * w * c).reshape(h, w, c).transpose(2, 0, 1).reshape(-1)
        out = ctx.value("Flatten", [x.name], 2, axis=1)
        out.order = order
        return out
    x = ctx.to_layout(x, NHWC)  # channels-last order, as the canonical dense kernel expects
    return ctx.value("Flatten", [x.name], 2, axis=1)


def lower_reshape(ctx: Lowering, node: Node, x: Value) -> Value:
    x = ctx.to_layout(x, NHWC)
    shape = tuple(node.attrs.shape)
    # 0 keeps the (dynamic) batch size: never bake a batch into the constant.
    target = ctx.const("shape", np.array([0, *shape], np.int64))
    rank = len(shape) + 1
    return ctx.value("Reshape", [x.name, target], rank, NHWC if rank == 4 else None)


def lower_identity(ctx: Lowering, node: Node, x: Value) -> Value:
    return x  # dropout and linear do nothing at inference


def _activation_op(ctx: Lowering, node: Node, x: Value) -> Value:
    alpha = getattr(node.attrs, "alpha", LEAKY_RELU_ALPHA)
    return ctx.activation(x, node.op, alpha)


def _common_layout(ctx: Lowering, xs: tuple[Value, ...]) -> list[Value]:
    layouts = {x.layout for x in xs}
    if len(layouts) <= 1:
        return list(xs)
    return [ctx.to_layout(x, NCHW) for x in xs]


def lower_add(ctx: Lowering, node: Node, *xs: Value) -> Value:
    xs = _common_layout(ctx, xs)
    op = "Add" if len(xs) == 2 else "Sum"
    return ctx.value(op, [x.name for x in xs], xs[0].rank, xs[0].layout)


def lower_concat(ctx: Lowering, node: Node, *xs: Value) -> Value:
    xs = _common_layout(ctx, xs)
    rank = xs[0].rank
    axis = node.attrs.axis % (rank - 1)  # per-sample axis, channels-last
    onnx_axis = (2, 3, 1)[axis] if xs[0].layout == NCHW else axis + 1
    return ctx.value("Concat", [x.name for x in xs], rank, xs[0].layout, axis=onnx_axis)


# Activations the ONNX RNN op applies itself (name, alpha).
RNN_ACTIVATIONS = {"tanh": ("Tanh", None), "relu": ("Relu", None), "sigmoid": ("Sigmoid", None),
                   "linear": ("Affine", 1.0), "leaky_relu": ("LeakyRelu", LEAKY_RELU_ALPHA)}


def lower_simple_rnn(ctx: Lowering, node: Node, x: Value) -> Value:
    a = node.attrs
    kernel, recurrent = ctx.param("kernel"), ctx.param("recurrent_kernel")
    bias = ctx.param("bias") if a.use_bias else np.zeros(a.units, np.float32)
    if a.activation not in RNN_ACTIVATIONS:
        return _scan_rnn(ctx, node, x, kernel, recurrent, bias)
    act, alpha = RNN_ACTIVATIONS[a.activation]
    attrs = {"hidden_size": a.units, "activations": [act]}
    if alpha is not None:
        attrs["activation_alpha"] = [alpha]
        if act == "Affine":
            attrs["activation_beta"] = [0.0]
    # ONNX keeps two biases (Wb, Rb); the canonical one is Wb and Rb is zero.
    w = ctx.const("kernel", kernel.T[None])
    r = ctx.const("recurrent_kernel", recurrent.T[None])
    b = ctx.const("bias", np.concatenate([bias, np.zeros_like(bias)])[None])
    # onnxruntime runs RNN time-major only (layout=0).
    xt = ctx.value("Transpose", [x.name], 3, role="time_major", perm=[1, 0, 2])
    axes = ctx.const("axes", np.array([0], np.int64))
    if a.return_sequences:
        y = ctx.emit("RNN", [xt.name, w, r, b], outputs=1, **attrs)[0]  # [T, 1, N, H]
        ys = ctx.value("Transpose", [y], 4, role="batch_major", perm=[1, 2, 0, 3])  # [1, N, T, H]
        return ctx.value("Squeeze", [ys.name, axes], 3, role="squeeze")
    y_h = ctx.emit("RNN", [xt.name, w, r, b], outputs=2, **attrs)[1]  # [1, N, H]
    ctx.nodes[-1].output[0] = ""  # the full sequence is not needed
    return ctx.value("Squeeze", [y_h, axes], 2, role="squeeze")


def _scan_rnn(ctx: Lowering, node: Node, x: Value, kernel, recurrent, bias) -> Value:
    """An Elman RNN as a Scan, for activations the RNN op lacks (gelu, softmax)."""
    a = node.attrs
    h = a.units
    xw = ctx.value("MatMul", [x.name, ctx.const("kernel", kernel)], 3, role="input_proj")
    xw = ctx.value("Add", [xw.name, ctx.const("bias", bias)], 3, role="input_bias")
    n = ctx.value("Shape", [x.name], 1, role="batch_size", start=0, end=1)
    dims = ctx.value("Concat", [n.name, ctx.const("units", np.array([h], np.int64))], 1,
                     role="state_shape", axis=0)
    zero = numpy_helper.from_array(np.zeros(1, np.float32), "zero")
    h0 = ctx.value("ConstantOfShape", [dims.name], 2, role="initial_state", value=zero)
    r = ctx.const("recurrent_kernel", recurrent)
    f32 = TensorProto.FLOAT
    # Inner names live in the outer graph's scope too (SSA over both): prefix them with the
    # layer and reserve them, so no spec tensor or helper value can clash.
    inner = {role: ctx.unique(f"{node.name}/step/{role}")
             for role in ("h_prev", "x_t", "hr", "pre", "h_next", "h_out")}
    body_nodes = [
        helper.make_node("MatMul", [inner["h_prev"], r], [inner["hr"]],
                         name=ctx.unique(f"{node.name}/step/recurrence")),
        helper.make_node("Add", [inner["x_t"], inner["hr"]], [inner["pre"]],
                         name=ctx.unique(f"{node.name}/step/sum")),
        helper.make_node(ACTIVATIONS[a.activation], [inner["pre"]], [inner["h_next"]],
                         name=ctx.unique(f"{node.name}/step/{a.activation}"),
                         **({"axis": -1} if a.activation == "softmax" else {})),
    ]
    body_outputs = [helper.make_tensor_value_info(inner["h_next"], f32, [None, h])]
    if a.return_sequences:
        # The state is also the per-step output; a graph cannot list one value twice.
        body_nodes.append(helper.make_node("Identity", [inner["h_next"]], [inner["h_out"]],
                                           name=ctx.unique(f"{node.name}/step/emit")))
        body_outputs.append(helper.make_tensor_value_info(inner["h_out"], f32, [None, h]))
    body = helper.make_graph(
        body_nodes, f"{node.name}_step",
        [helper.make_tensor_value_info(inner["h_prev"], f32, [None, h]),
         helper.make_tensor_value_info(inner["x_t"], f32, [None, h])], body_outputs)
    outs = ctx.emit("Scan", [h0.name, xw.name], outputs=len(body_outputs), body=body,
                    num_scan_inputs=1, scan_input_axes=[1],
                    **({"scan_output_axes": [1]} if a.return_sequences else {}))
    return Value(outs[1], 3) if a.return_sequences else Value(outs[0], 2)


LOWERINGS: dict[str, Callable[..., Value]] = {
    "dense": lower_dense,
    "conv2d": lower_conv2d,
    "maxpool2d": _pool("MaxPool"),
    "avgpool2d": _pool("AveragePool", count_include_pad=0),
    "global_avgpool2d": _global_pool("ReduceMean"),
    "global_maxpool2d": _global_pool("ReduceMax"),
    "flatten": lower_flatten,
    "reshape": lower_reshape,
    "dropout": lower_identity,
    "linear": lower_identity,
    "simple_rnn": lower_simple_rnn,
    "add": lower_add,
    "concat": lower_concat,
    **{act: _activation_op for act in ACTIVATIONS},
}
