"""The walk of `dslc import` over an ONNX graph, and the table its rules fill.

For every ONNX value the walk keeps either a constant or a `Tensor`: the spec tensor it stands
for and how the ONNX axes map onto the spec's (channels-last) axes. Transposes, squeezes and
reshapes that only move axes change that map and emit nothing; a layer rule (`import_rules.py`,
one small function per ONNX op, registered in `RULES`) reads its inputs in the layout it needs
— Conv in NCHW, Gemm on a vector — and emits spec layers with their weights converted to the
canonical layout.

After the walk, layers that reach no output are dropped and an activation that is the only
reader of a dense or conv2d layer becomes that layer's `activation=`.
"""

from __future__ import annotations

import keyword
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from dslc.diagnostics import DslError
from dslc.ir.graph import Shape, TensorType

if TYPE_CHECKING:
    from onnx import ModelProto, NodeProto, ValueInfoProto


BATCH = "N"  # the batch dimension in a shape computed by the graph (a `Shape` op's value)
Axes = tuple[int | None, ...]  # ONNX axis i holds spec axis axes[i] (0: batch); None: size 1
NCHW_OF_NHWC: Axes = (0, 3, 1, 2)
# layers whose `activation=` is applied last, to their output
FOLDS_INTO = ("dense", "conv2d", "conv1d", "conv2d_transpose", "depthwise_conv2d",
              "separable_conv2d")
# ONNX convolutions and pools that read `[N, C, T]` sequences (a 3-D input of a PyTorch model)
WINDOWS = ("Conv", "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool")
RECURRENT = ("RNN", "LSTM", "GRU")  # ONNX's recurrent ops (time-major unless layout=1)
MAX_NAME = 60
SHOWN = 80  # characters of an ONNX name shown in a message


# -- values -----------------------------------------------------------------------------------

@dataclass(eq=False)
class Tensor:
    """An ONNX tensor that is the spec tensor `name` (per-sample `shape`, channels-last), its
    axes arranged as `axes` says. A rank-2 value may hold the features in another order:
    ONNX feature j is spec feature `order[j]` (a Flatten of NCHW maps)."""

    name: str
    shape: Shape
    axes: Axes
    order: np.ndarray | None = None
    # An RNN output before it is known whether the layer returns its sequence: "seq" (the
    # full sequence) or "last" (the last state). The first layer reading it decides.
    rnn: str | None = None
    # A reverse-running RNN's sequence in ONNX's step order: the spec's (Keras's go_backwards
    # reading order, last step first) only once a Slice with step -1 flips it back.
    flipped: bool = False

    @property
    def rank(self) -> int:
        return len(self.axes)

    @property
    def onnx_shape(self) -> tuple[Any, ...]:
        """The ONNX shape: BATCH for the batch, None for a dimension known only at run time."""
        return tuple(BATCH if a == 0 else 1 if a is None else self.shape[a - 1] for a in self.axes)

    def with_axes(self, axes: Axes) -> Tensor:
        return Tensor(self.name, self.shape, tuple(axes), self.order, self.rnn, self.flipped)


@dataclass(eq=False)
class Const:
    """A constant: an initializer, a Constant node or a value computed from them. In a shape
    computed by the graph, an object array holds BATCH or None for dimensions not fixed."""

    array: np.ndarray

    @property
    def known(self) -> bool:
        return self.array.dtype != object


@dataclass(eq=False)
class Fill:
    """A constant of one `value` whose shape is known only at run time (e.g. an RNN's zero
    initial state, expanded to the batch size)."""

    value: float


Value = Tensor | Const | Fill


@dataclass
class Layer:
    name: str
    op: str
    inputs: list[str]
    attrs: dict[str, Any]
    params: dict[str, np.ndarray]
    node: int  # the ONNX node it came from
    shape: Shape | None  # None while an RNN's return_sequences is not yet known
    # A MatMul's dense layer: the ONNX value it computes, which an Add may give a bias.
    bias_from_add: str | None = None
    returns_sequence: bool | None = None  # an RNN's, once a reader has decided it


@dataclass(frozen=True)
class Boundary:
    """A graph input or output: the ONNX name, the spec's name, and how the axes map."""

    onnx: str
    name: str
    axes: Axes

    @property
    def identity(self) -> bool:
        return self.axes == tuple(range(len(self.axes)))

    def to_spec(self, x: np.ndarray) -> np.ndarray:
        """An ONNX array (batch included) as the spec's, e.g. NCHW → NHWC."""
        units = tuple(i for i, a in enumerate(self.axes) if a is None)
        real = [a for a in self.axes if a is not None]
        return np.ascontiguousarray(np.squeeze(x, axis=units).transpose(np.argsort(real)))

    def to_onnx(self, y: np.ndarray) -> np.ndarray:
        """A spec array (batch included) as the ONNX model's, e.g. NHWC → NCHW."""
        real = [a for a in self.axes if a is not None]
        y = y.transpose(real)
        for i, a in enumerate(self.axes):
            if a is None:
                y = np.expand_dims(y, i)
        return np.ascontiguousarray(y)



Rule = Callable[["Importer", "Step"], list[Value | None]]


class RuleTable:
    """ONNX op type → the rule that converts one such node; a rule returns one value per
    ONNX output (None for an output it does not provide; reading one is an error)."""

    def __init__(self) -> None:
        self.rules: dict[str, Rule] = {}

    def __call__(self, *op_types: str) -> Callable[[Rule], Rule]:
        def register(rule: Rule) -> Rule:
            for op_type in op_types:
                if op_type in self.rules:
                    raise ValueError(f"ONNX op {op_type!r} has two import rules")
                self.rules[op_type] = rule
            return rule
        return register

    def names(self) -> list[str]:
        return sorted(self.rules)


RULES = RuleTable()


# -- names ------------------------------------------------------------------------------------

def shown(name: str) -> str:
    """An ONNX name as a message shows it: printable, and not too long."""
    text = "".join(c if c.isprintable() else "?" for c in name) or "(unnamed)"
    return text if len(text) <= SHOWN else text[:SHOWN - 1] + "…"


def reserved() -> set[str]:
    from dslc.ops.registry import all_ops
    from dslc.parse import KEYWORDS

    return KEYWORDS | {"true", "false"} | set(all_ops())


def valid_name(name: str) -> bool:
    return (bool(re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name)) and len(name) <= MAX_NAME
            and name not in reserved() and not keyword.iskeyword(name))


def derived_name(name: str, op_type: str) -> str:
    """A spec name from a path-like ONNX name: `/fc1/Gemm` → `fc1`,
    `/layers/layers.0/Conv` → `layers_0`, `dense_1/matmul` → `dense_1_matmul`."""
    parts = [p for p in name.split("/") if p]
    parts = [p for p in parts if not re.fullmatch(rf"{re.escape(op_type)}(_\d+)?", p)]
    parts = [p for i, p in enumerate(parts)
             if not (i + 1 < len(parts) and parts[i + 1].startswith(p + "."))]
    text = re.sub(r"[^A-Za-z0-9_]+", "_", "_".join(parts)).strip("_")
    text = re.sub(r"_+", "_", text)[:MAX_NAME].rstrip("_")
    if text and text[0].isdigit():
        text = f"n{text}"
    return text


# -- one node ---------------------------------------------------------------------------------

class Step:
    """The ONNX node being converted: its inputs as values, its attributes, and errors that
    name it (op type, node name and its index in the graph)."""

    def __init__(self, ctx: Importer, proto: NodeProto, index: int):
        from onnx import helper

        self.ctx, self.proto, self.index = ctx, proto, index
        self.op_type = proto.op_type
        self.attrs: dict[str, Any] = {}
        for a in proto.attribute:
            v = helper.get_attribute_value(a)
            if isinstance(v, bytes):
                v = v.decode("utf-8", "replace")
            elif isinstance(v, list) and v and isinstance(v[0], bytes):
                v = [s.decode("utf-8", "replace") for s in v]
            self.attrs[a.name] = v

    @property
    def where(self) -> str:
        return (f"{self.ctx.source}: node {self.index} `{shown(self.proto.name)}` "
                f"({shown(self.op_type)})")

    def fail(self, message: str, hint: str | None = None) -> DslError:
        return DslError(f"{self.where}: {message}", hint=hint)

    def unsupported(self) -> DslError:
        hint = "dslc import reads " + ", ".join(RULES.names())
        if self.op_type == "Scan" and self.ctx.from_dslc:
            hint = ("dslc exports a simple_rnn whose activation the RNN op lacks (gelu, "
                    "softmax) as a Scan loop, which dslc import does not read back")
        return self.fail(f"ONNX op `{shown(self.op_type)}` is not supported by dslc import",
                         hint=hint)

    # inputs
    @property
    def arity(self) -> int:
        return len(self.proto.input)

    def value(self, i: int) -> Value | None:
        """Input `i`, or None where the node leaves it out."""
        if i >= len(self.proto.input) or not self.proto.input[i]:
            return None
        name = self.proto.input[i]
        if name not in self.ctx.values:
            raise self.fail(f"its input `{shown(name)}` is an output that dslc import "
                            "cannot represent")
        return self.ctx.values[name]

    def values(self) -> list[Value]:
        out = []
        for i in range(self.arity):
            v = self.value(i)
            if v is None:
                raise self.fail(f"input {i} is empty")
            out.append(v)
        return out

    def tensor(self, i: int = 0) -> Tensor:
        """Input `i`, which must be a tensor computed from the model's inputs; a layer
        reading an RNN output settles whether that RNN returns its sequence."""
        v = self.value(i)
        if not isinstance(v, Tensor):
            raise self.fail(f"input {i} is a constant; dslc import expects a tensor computed "
                            "from the model's inputs there")
        return self.ctx.settle(self, v)

    def const(self, i: int, what: str) -> np.ndarray:
        v = self.value(i)
        if not isinstance(v, Const) or not v.known:
            raise self.fail(f"its {what} (input {i}) must be a constant")
        return v.array

    def optional_const(self, i: int, what: str) -> np.ndarray | None:
        return None if self.value(i) is None else self.const(i, what)

    def ints(self, name: str, default: list[int] | None = None) -> list[int]:
        v = self.attrs.get(name, default)
        return [int(x) for x in v] if v is not None else []

    def no_output_used(self, k: int, what: str) -> None:
        if k < len(self.proto.output) and self.ctx.uses.get(self.proto.output[k], 0):
            raise self.fail(f"its {what} output is used; dslc import cannot represent it")

    # layers
    def layer(self, op: str, inputs: list[Tensor], params: dict[str, np.ndarray] | None = None,
              **attrs: Any) -> Tensor:
        """Emit a spec layer reading `inputs` (settled tensors in the spec's layout); the
        result is its output with the spec's axes (batch first)."""
        layer_name = self.ctx.layer_name(self, op)
        shape = self.ctx.infer(self, op, attrs, [t.shape for t in inputs])
        self.ctx.add(Layer(layer_name, op, [t.name for t in inputs], attrs, dict(params or {}),
                           self.index, shape))
        return Tensor(layer_name, shape, tuple(range(len(shape) + 1)))


# -- the walk ---------------------------------------------------------------------------------

class Importer:
    def __init__(self, model: ModelProto, source: str):
        self.model = model
        self.graph = model.graph
        self.source = source
        self.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")),
                          1)
        self.from_dslc = model.producer_name == "dslc"
        self.values: dict[str, Value] = {}
        self.layers: list[Layer] = []
        self.by_name: dict[str, Layer] = {}
        self.taken: set[str] = set()
        self.batch_sizes: set[int] = set()  # fixed batch sizes of the inputs (traced exports)
        self.consumers: dict[str, list[int]] = {}
        for i, node in enumerate(self.graph.node):
            for name in node.input:
                if name:
                    self.consumers.setdefault(name, []).append(i)
        outputs = [o.name for o in self.graph.output]
        self.uses = {k: len(v) for k, v in self.consumers.items()}
        for name in outputs:
            self.uses[name] = self.uses.get(name, 0) + 1
        self.claimed: set[int] = set()  # nodes a pattern rule (e.g. Gelu) already converted
        self.inputs: list[Boundary] = []
        self.input_shapes: list[tuple[list[int | None], Shape]] = []  # ONNX dims, spec shape
        self.input_dtypes: list[str] = []  # the spec's: f32, or i32/i64 (embedding ids)
        self.outputs: list[Boundary] = []

    # names
    def fresh(self, base: str) -> str:
        name, k = base, 1
        while name in self.taken:
            k += 1
            name = f"{base}_{k}"
        self.taken.add(name)
        return name

    def layer_name(self, step: Step, op: str) -> str:
        raw = step.proto.name
        if self.from_dslc:  # dslc names a layer's nodes `<layer>` and `<layer>/<role>`
            raw = raw.split("/")[0]
        base = raw if valid_name(raw) else derived_name(raw, step.op_type)
        return self.fresh(base) if valid_name(base) else self.generated(op)

    def generated(self, op: str) -> str:
        k = 1
        while f"{op}_{k}" in self.taken:
            k += 1
        self.taken.add(f"{op}_{k}")
        return f"{op}_{k}"

    # layers
    def infer(self, step: Step, op_name: str, attrs: dict[str, Any],
              shapes: list[Shape]) -> Shape:
        from pydantic import ValidationError

        from dslc.ops.registry import ShapeError, get_op

        op = get_op(op_name)
        try:
            a = op.Attrs(**attrs)
            return tuple(op.infer(a, [TensorType(shape=s) for s in shapes]).shape)
        except ShapeError as exc:
            raise step.fail(f"as dslc `{op_name}`: {exc.message}", exc.hint) from None
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}"
                                 for e in exc.errors())
            raise step.fail(f"as dslc `{op_name}`: {problems}") from None

    def add(self, layer: Layer) -> None:
        self.layers.append(layer)
        self.by_name[layer.name] = layer

    def settle(self, step: Step, t: Tensor) -> Tensor:
        """`t` with its RNN's return_sequences decided by this use."""
        if t.flipped:
            raise step.fail("reads the output sequence of a reverse-running RNN in time order; "
                            "dslc's go_backwards layers give it in reading order (last step "
                            "first)", hint="flip the sequence (a Slice with step -1) before "
                                           "using it, as dslc's export does")
        if t.rnn is None:
            return t
        layer = self.by_name[t.name]
        wanted = t.rnn == "seq"
        if layer.returns_sequence is not None and layer.returns_sequence != wanted:
            raise step.fail("reads both the full sequence and the last state of one RNN; a "
                            "dslc recurrent layer returns one of them",
                            hint="use only the RNN's output sequence or only its last state")
        layer.returns_sequence = wanted
        layer.shape = t.shape
        if wanted:
            layer.attrs["return_sequences"] = True
        return Tensor(t.name, t.shape, t.axes, t.order)

    # the graph
    def run(self) -> None:
        from onnx import numpy_helper

        for init in self.graph.initializer:
            self.values[init.name] = Const(numpy_helper.to_array(init))
        self.taken.update(reserved())
        for inp in self.graph.input:
            if inp.name not in self.values:
                self.values[inp.name] = self.input_tensor(inp)
        if not self.inputs:
            raise DslError(f"{self.source}: the model has no input")
        # Constants first: a pattern rule (e.g. an exported GELU) looks ahead at them.
        for index, node in enumerate(self.graph.node):
            if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
                (value,) = RULES.rules["Constant"](self, Step(self, node, index))
                assert value is not None
                self.values[node.output[0]] = value
                self.claimed.add(index)
        for index, node in enumerate(self.graph.node):
            if index in self.claimed:
                continue
            step = Step(self, node, index)
            rule = RULES.rules.get(node.op_type)
            if node.domain not in ("", "ai.onnx") or rule is None:
                raise step.unsupported()
            outs = rule(self, step)
            for name, v in zip(node.output, outs):
                if name and v is not None:
                    self.values[name] = v
        for out in self.graph.output:
            self.outputs.append(self.output_boundary(out.name))

    def input_tensor(self, info: ValueInfoProto) -> Tensor:
        from onnx import TensorProto

        where = f"{self.source}: input `{shown(info.name)}`"
        ttype = info.type.tensor_type
        ints: dict[int, str] = {TensorProto.INT32: "i32", TensorProto.INT64: "i64"}
        if not info.type.HasField("tensor_type") or ttype.elem_type not in (
                TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16, *ints):
            raise DslError(f"{where}: only float tensors and int32/int64 ids can be inputs of a "
                           "dslc model")
        dtype = ints.get(ttype.elem_type, "f32")
        if not ttype.HasField("shape"):
            raise DslError(f"{where}: its shape is not given; dslc needs every input's rank")
        dims: list[int | None] = [d.dim_value if d.HasField("dim_value") else None
                                  for d in ttype.shape.dim]
        rank = len(dims)
        if rank < (1 if dtype != "f32" else 2):  # one id per sample is an embedding's input
            raise DslError(f"{where}: rank {rank}; a dslc input is a batch of samples with at "
                           "least one axis each")
        axes: Axes = tuple(range(rank))
        users = [self.graph.node[i] for i in self.consumers.get(info.name, [])]
        if rank == 4 and not self.from_dslc and not (users and all(
                u.op_type == "Transpose" and list(_attr(u, "perm", [])) == list(NCHW_OF_NHWC)
                for u in users)):
            axes = NCHW_OF_NHWC  # NCHW, as PyTorch exports images: the spec's input is NHWC
        elif rank == 3 and any(u.op_type in RECURRENT and u.input[0] == info.name
                               and _attr(u, "layout", 0) == 0 for u in users):
            axes = (1, 0, 2)  # time-major for the RNN op: the spec's input is batch-first
        elif rank == 3 and not self.from_dslc and users and any(
                u.op_type in WINDOWS and u.input[0] == info.name for u in users):
            axes = (0, 2, 1)  # NCW, as PyTorch's Conv1d reads it: the spec's input is [T, C]
        batch_axis = axes.index(0)
        if dims[batch_axis] is not None:
            self.batch_sizes.add(int(dims[batch_axis]))  # type: ignore[arg-type]
        shape: list[int | None] = [None] * (rank - 1)
        for i, a in enumerate(axes):
            if a:
                shape[a - 1] = dims[i]
        name = info.name if valid_name(info.name) else derived_name(info.name, "")
        name = self.fresh(name if valid_name(name) else "x")
        self.inputs.append(Boundary(info.name, name, axes))
        self.input_shapes.append((dims, tuple(shape)))
        self.input_dtypes.append(dtype)
        return Tensor(name, tuple(shape), axes)

    def output_boundary(self, name: str) -> Boundary:
        where = f"{self.source}: output `{shown(name)}`"
        v = self.values.get(name)
        if v is None:
            raise DslError(f"{where}: no node computes it")
        if not isinstance(v, Tensor):
            raise DslError(f"{where}: a constant; a dslc model's outputs are computed from "
                           "its inputs")
        t = self.settle_output(name, v)
        if t.order is not None:
            raise DslError(f"{where}: a flattened NCHW feature map; dslc flattens "
                           "channels-last, so this output would come out in another order",
                           hint="export the model with the output before its Flatten, or with "
                                "a dense layer after it")
        if any(b.name == t.name for b in self.inputs):
            raise DslError(f"{where}: it is a model input, passed through unchanged")
        return Boundary(name, t.name, t.axes)

    def settle_output(self, name: str, t: Tensor) -> Tensor:
        if t.rnn is None:
            return t
        step = Step(self, self.graph.node[self.by_name[t.name].node], self.by_name[t.name].node)
        return self.settle(step, t)

    # after the walk
    def finish(self) -> list[Layer]:
        """The live layers, activations folded into the layer before them."""
        outputs = [b.name for b in self.outputs]
        live = set(outputs)
        for layer in reversed(self.layers):
            if layer.name in live:
                live.update(layer.inputs)
        layers = [ly for ly in self.layers if ly.name in live]
        return fold_activations(layers, outputs, self.outputs)


def _attr(node: NodeProto, name: str, default: Any) -> Any:
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def fold_activations(layers: list[Layer], outputs: list[str],
                     boundaries: list[Boundary]) -> list[Layer]:
    """`dense(10)` then `softmax` read only by it → `dense(10, activation=softmax)`, named
    after the dense layer. Only activations at their default attributes: `activation=` takes
    a name."""
    from dslc.ops.registry import get_op

    readers: dict[str, int] = {}
    for ly in layers:
        for name in ly.inputs:
            readers[name] = readers.get(name, 0) + 1
    for name in outputs:
        readers[name] = readers.get(name, 0) + 1
    by_name = {ly.name: ly for ly in layers}
    renamed: dict[str, str] = {}
    kept = []
    for ly in layers:
        ly.inputs = [renamed.get(n, n) for n in ly.inputs]
        prev = by_name.get(ly.inputs[0]) if len(ly.inputs) == 1 else None
        op = get_op(ly.op)
        if (prev is not None and op.category == "activation" and ly.op != "linear"
                and not ly.attrs and prev.op in FOLDS_INTO
                and prev.attrs.get("activation", "linear") == "linear"
                and readers.get(prev.name) == 1 and prev.name not in renamed.values()):
            prev.attrs["activation"] = ly.op
            renamed[ly.name] = prev.name
            continue
        kept.append(ly)
    outputs[:] = [renamed.get(n, n) for n in outputs]
    for i, b in enumerate(boundaries):
        if b.name in renamed:
            boundaries[i] = Boundary(b.onnx, renamed[b.name], b.axes)
    return kept
