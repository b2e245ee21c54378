"""Lowering of the checked graph to a standalone Keras 3 module (functional API).

One small function per op in `LOWERINGS`, keyed by op name: each turns a node into one
Keras layer call. The generated file imports only `keras`, names every layer after the
spec, states every default the IR pins (Keras's own defaults differ in places: LeakyReLU's
slope, the image data format from ~/.keras/keras.json) and uses no Lambda layers.
"""

from __future__ import annotations

import json
import keyword
from collections.abc import Callable
from dataclasses import dataclass, field

from dslc import __version__
from dslc.backends import lowering_table
from dslc.diagnostics import DslError
from dslc.ir.graph import Graph, Node
from dslc.ops.activation import LEAKY_RELU_ALPHA
from dslc.ops.registry import pair

LINE = 88
INDENT = "    "
DTYPES = {"f32": "float32"}


@dataclass
class Call:
    """One layer: `cls(*args, **kwargs, name=...)` applied to the node's inputs."""

    cls: str
    args: list[str] = field(default_factory=list)
    kwargs: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class Context:
    """What lowerings may ask for: helper functions the module must define."""

    helpers: set[str] = field(default_factory=set)

    def activation(self, name: str) -> str:
        """The `activation=` value for a Keras layer, pinned where Keras's default differs."""
        if name in HELPERS:
            self.helpers.add(name)
            return name
        return q(name)


# Module-level functions emitted when used: plain named functions, no Lambda layers.
HELPERS = {
    "leaky_relu": (
        "def leaky_relu(x):\n"
        f'    """LeakyReLU with the slope dslc pins ({LEAKY_RELU_ALPHA}); Keras\'s default is'
        ' 0.2."""\n'
        f"    return keras.activations.leaky_relu(x, negative_slope={LEAKY_RELU_ALPHA!r})\n"
    ),
    "gelu": (
        "def gelu(x):\n"
        '    """GELU in its exact (erf) form, as dslc pins it."""\n'
        "    return keras.activations.gelu(x, approximate=False)\n"
    ),
}

Lowering = Callable[[Node, Context], Call]
LOWERINGS: dict[str, Lowering]
LOWERINGS, lowers = lowering_table()


def q(text: str) -> str:
    """A double-quoted Python string literal (as ruff format writes them)."""
    return json.dumps(text)


def _tuple(v) -> str:
    return repr(tuple(pair(v)))


@lowers("dense")
def _dense(n: Node, ctx: Context) -> Call:
    a = n.attrs
    return Call("keras.layers.Dense", [repr(a.units)], [
        ("activation", ctx.activation(a.activation)),
        ("use_bias", repr(a.use_bias)),
        ("kernel_initializer", q(a.kernel_init)),
        ("bias_initializer", q(a.bias_init)),
    ])


@lowers("conv2d")
def _conv2d(n: Node, ctx: Context) -> Call:
    a = n.attrs
    return Call("keras.layers.Conv2D", [repr(a.filters)], [
        ("kernel_size", _tuple(a.kernel)),
        ("strides", _tuple(a.strides)),
        ("padding", q(a.padding)),
        ("dilation_rate", _tuple(a.dilation)),
        ("data_format", q("channels_last")),
        ("activation", ctx.activation(a.activation)),
        ("use_bias", repr(a.use_bias)),
        ("kernel_initializer", q(a.kernel_init)),
        ("bias_initializer", q(a.bias_init)),
    ])


def _pool(cls: str) -> Lowering:
    def lower(n: Node, ctx: Context) -> Call:
        a = n.attrs
        return Call(cls, [], [
            ("pool_size", _tuple(a.kernel)),
            ("strides", _tuple(a.strides)),
            ("padding", q(a.padding)),
            ("data_format", q("channels_last")),
        ])

    return lower


LOWERINGS["maxpool2d"] = _pool("keras.layers.MaxPooling2D")
LOWERINGS["avgpool2d"] = _pool("keras.layers.AveragePooling2D")


def _global_pool(cls: str) -> Lowering:
    return lambda n, ctx: Call(cls, [], [("data_format", q("channels_last"))])


LOWERINGS["global_avgpool2d"] = _global_pool("keras.layers.GlobalAveragePooling2D")
LOWERINGS["global_maxpool2d"] = _global_pool("keras.layers.GlobalMaxPooling2D")


@lowers("flatten")
def _flatten(n: Node, ctx: Context) -> Call:
    # channels_last pinned: the canonical flatten order is row-major [H, W, C].
    return Call("keras.layers.Flatten", [], [("data_format", q("channels_last"))])


@lowers("reshape")
def _reshape(n: Node, ctx: Context) -> Call:
    return Call("keras.layers.Reshape", [repr(tuple(n.attrs.shape))])


@lowers("dropout")
def _dropout(n: Node, ctx: Context) -> Call:
    return Call("keras.layers.Dropout", [repr(n.attrs.rate)])


@lowers("simple_rnn")
def _simple_rnn(n: Node, ctx: Context) -> Call:
    a = n.attrs
    return Call("keras.layers.SimpleRNN", [repr(a.units)], [
        ("activation", ctx.activation(a.activation)),
        ("use_bias", repr(a.use_bias)),
        ("return_sequences", repr(a.return_sequences)),
        ("kernel_initializer", q(a.kernel_init)),
        ("recurrent_initializer", q(a.recurrent_init)),
        ("bias_initializer", q(a.bias_init)),
    ])


@lowers("add")
def _add(n: Node, ctx: Context) -> Call:
    return Call("keras.layers.Add")


@lowers("concat")
def _concat(n: Node, ctx: Context) -> Call:
    # The IR's axis excludes the batch; Keras's includes it.
    axis = n.attrs.axis + 1 if n.attrs.axis >= 0 else n.attrs.axis
    return Call("keras.layers.Concatenate", [], [("axis", repr(axis))])


@lowers("relu", "sigmoid", "tanh", "softmax", "linear", "gelu")
def _activation(n: Node, ctx: Context) -> Call:
    return Call("keras.layers.Activation", [ctx.activation(n.op)])


@lowers("leaky_relu")
def _leaky_relu(n: Node, ctx: Context) -> Call:
    return Call("keras.layers.LeakyReLU", [], [("negative_slope", repr(n.attrs.alpha))])


def lower(node: Node, ctx: Context) -> Call:
    fn = LOWERINGS.get(node.op)
    if fn is None:
        raise DslError(f"op `{node.op}` is not supported by backend keras", node.span)
    return fn(node, ctx)


def _identifiers(graph: Graph) -> dict[str, str]:
    """A Python variable per tensor: the spec's name where it is a safe identifier."""
    taken = {"keras", model_function(graph), *HELPERS}
    names: dict[str, str] = {}
    for tensor in [i.name for i in graph.inputs] + [n.name for n in graph.nodes]:
        base = "".join(c if c.isalnum() or c == "_" else "_" for c in tensor) or "t"
        if base[0].isdigit() or keyword.iskeyword(base) or base in taken or \
                base in ("l", "O", "I"):  # ruff E741: they look like digits
            base = f"{base}_" if not base[0].isdigit() else f"t_{base}"
        var, k = base, 1
        while var in taken:
            k += 1
            var = f"{base}_{k}"
        taken.add(var)
        names[tensor] = var
    return names


def _exploded(items: list[str], depth: int) -> str:
    """`items` one a line at `depth` indents, each with the trailing comma that keeps ruff
    format from joining them again."""
    return "".join(f"{INDENT * depth}{item},\n" for item in items)


def _assign(target: str, value: Callable[[int], str]) -> str:
    """`target = value` at one indent; as ruff format writes it, the value moves into
    parentheses of its own when its first line would not fit after `target = `."""
    text = f"{INDENT}{target} = {value(1)}"
    if len(text.split("\n", 1)[0]) <= LINE or len(f"{INDENT}{target} = (") > LINE:
        return text  # (parentheses would not help a target that long)
    return f"{INDENT}{target} = (\n{INDENT * 2}{value(2)}\n{INDENT})"


def _render_call(target: str, call: Call, layer_name: str, inputs: list[str]) -> str:
    items = [*call.args, *(f"{k}={v}" for k, v in call.kwargs), f"name={q(layer_name)}"]
    arg = inputs[0] if len(inputs) == 1 else f"[{', '.join(inputs)}]"
    line = f"{INDENT}{target} = {call.cls}({', '.join(items)})({arg})"
    if len(line) <= LINE:
        return line

    def value(d: int) -> str:
        head = f"{call.cls}(\n{_exploded(items, d + 1)}{INDENT * d})"
        if len(f"{INDENT * d})({arg})") <= LINE:
            return f"{head}({arg})"
        if len(inputs) == 1:  # one long name: on a line of its own
            return f"{head}(\n{INDENT * (d + 1)}{arg}\n{INDENT * d})"
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


def _shape(shape) -> str:
    return repr(tuple(shape))


def model_function(graph: Graph) -> str:
    """The name of the generated `build_<model>` function: `build_class` for a model named
    after a Python keyword is a valid identifier too."""
    name = "".join(c if c.isalnum() or c == "_" else "_" for c in graph.name)
    fn = f"build_{name}"
    if not fn.isidentifier():
        raise DslError(f"model name `{graph.name}` is not a valid Python identifier", graph.span)
    return fn


def generate(spec, graph: Graph) -> str:
    """Standalone Keras 3 source defining `build_<model>() -> keras.Model`."""
    fn = model_function(graph)
    ctx = Context()
    var = _identifiers(graph)
    body: list[str] = []
    for i in graph.inputs:
        dtype = DTYPES.get(i.type.dtype, i.type.dtype)
        body.append(_render_kwargs(var[i.name], "keras.Input", [
            ("shape", _shape(i.type.shape)), ("dtype", q(dtype)), ("name", q(i.name))]))
    for node in graph.nodes:
        call = lower(node, ctx)
        body.append(_render_call(var[node.name], call, node.name,
                                 [var[t] for t in node.inputs]))

    def listed(names: list[str]) -> str:
        return var[names[0]] if len(names) == 1 else f"[{', '.join(var[n] for n in names)}]"

    ins, outs = listed([i.name for i in graph.inputs]), listed(graph.outputs)
    body.append(_render_kwargs(None, "keras.Model",
                               [("inputs", ins), ("outputs", outs), ("name", q(graph.name))]))

    source = getattr(spec, "path", None)
    origin = source.name if source is not None else "<spec>"
    params = f"{graph.param_count:,}"
    parts = [
        f"# Generated by dslc {__version__} from {origin} (model `{graph.name}`).\n"
        "# Edit the spec and recompile rather than this file.\n"
        f'"""Keras 3 model `{graph.name}`: {len(graph.nodes)} layers, {params} parameters.\n\n'
        "Layers are channels-last and named as in the spec, so checkpoints keyed\n"
        '`<layer>.<param>` map onto them one to one.\n"""\n\nimport keras\n',
    ]
    parts += [HELPERS[h] for h in sorted(ctx.helpers)]
    parts.append(f"def {fn}() -> keras.Model:\n"
                 f'{INDENT}"""Build `{graph.name}` as a functional keras.Model."""\n'
                 + "\n".join(body) + "\n")
    parts.append(f'if __name__ == "__main__":\n{INDENT}{fn}().summary()\n')
    return "\n\n".join(parts)
