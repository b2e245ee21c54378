"""Graph → standalone PyTorch source: one `nn.Module` subclass named after the model.

A backend is a table of lowerings (`LOWERINGS`, keyed by op name). Each lowering adds the
layer's submodule to `__init__` (named after the spec's layer) and returns the expression
that computes the layer in `forward`; the caller applies the layer's `activation`.

Layout: the spec is channels-last. Rank-3 per-sample tensors (`[H, W, C]`) that come out of
a convolution or pooling live in NCHW inside the module (`Value.nchw`); every other consumer
(flatten, reshape, dense, outputs) sees channels-last again, so flatten order and therefore
the dense weights behind it are identical to Keras's.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field

import dslc
from dslc.backends.pysource import AMBIGUOUS, atom, identifier, public, wrap
from dslc.diagnostics import DslError
from dslc.ir.graph import Graph, Node
from dslc.ops.activation import LEAKY_RELU_ALPHA
from dslc.ops.conv import pads_2d
from dslc.ops.registry import get_op, pair

# Names that the generated module already uses, or that nn.Module defines: a layer called
# `train` must not shadow `nn.Module.train`.
_MODULE_ATTRS = {
    "T_destination", "add_module", "apply", "bfloat16", "buffers", "call_super_init", "children",
    "compile", "cpu", "cuda", "double", "dump_patches", "eval", "extra_repr", "float", "forward",
    "get_buffer", "get_extra_state", "get_parameter", "get_submodule", "half", "ipu",
    "load_state_dict", "modules", "mtia", "named_buffers", "named_children", "named_modules",
    "named_parameters", "parameters", "register_backward_hook", "register_buffer",
    "register_forward_hook", "register_forward_pre_hook", "register_full_backward_hook",
    "register_full_backward_pre_hook", "register_load_state_dict_post_hook",
    "register_load_state_dict_pre_hook", "register_module", "register_parameter",
    "register_state_dict_post_hook", "register_state_dict_pre_hook", "requires_grad_",
    "set_extra_state", "set_submodule", "share_memory", "state_dict", "to", "to_empty", "train",
    "training", "type", "xpu", "zero_grad",
    # written by this generator
    "reset_parameters",
}
_GLOBALS = {"torch", "nn", "F", "self", "logits", "float", "range", "super"}

_identifier = identifier
_public = public
_AMBIGUOUS = AMBIGUOUS

_USES_F = re.compile(r"\bF\.")
NCHW = "permute(0, 3, 1, 2)"  # [N, H, W, C] → [N, C, H, W]
NHWC = "permute(0, 2, 3, 1)"  # and back


def module_attrs(graph: Graph) -> dict[str, str]:
    """The submodule attribute of every layer that owns one: the layer's name, made safe.
    The weight adapter uses the same map, so state_dict keys are `<attr>.<param>`.

    A name that is safe as it is keeps it; the others (reserved, a keyword, a leading `_`)
    are renamed afterwards, so a renamed layer never takes another layer's own name."""
    taken = set(_MODULE_ATTRS) | _GLOBALS
    out = {}
    for node in graph.nodes:
        if _identifier(node.name, taken) == node.name and not node.name.startswith("_"):
            taken.add(node.name)
            out[node.name] = node.name
    for node in graph.nodes:
        if node.name not in out:
            attr = _identifier(_public(node.name), taken)
            taken.add(attr)
            out[node.name] = attr
    return {node.name: out[node.name] for node in graph.nodes}


def class_name(model: str) -> str:
    """CamelCase of the model's name (`digits_cnn` → `DigitsCnn`), a valid identifier."""
    camel = "".join(part[:1].upper() + part[1:] for part in model.split("_") if part)
    return _identifier(camel or "Model", _GLOBALS)


@dataclass
class Value:
    """A tensor in `forward`: the Python expression that holds it and its layout."""

    expr: str
    nchw: bool = False
    rank: int = 1  # per-sample rank (batch excluded)

    def channels_last(self) -> str:
        return f"{_atom(self.expr)}.{NHWC}" if self.nchw else self.expr

    def channels_first(self) -> str:
        return self.expr if self.nchw else f"{_atom(self.expr)}.{NCHW}"


_atom = atom


@dataclass
class Emitter:
    graph: Graph
    attrs: dict[str, str]
    init: list[str] = field(default_factory=list)
    forward: list[str] = field(default_factory=list)
    taken: set[str] = field(default_factory=set)
    attr_taken: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        # attributes of the module: every layer's (spec name and attribute) and nn.Module's
        self.attr_taken |= set(_MODULE_ATTRS) | _GLOBALS | set(self.attrs.values())
        self.attr_taken |= {n.name for n in self.graph.nodes}
        self.attr_taken |= {i.name for i in self.graph.inputs}

    def fresh_attr(self, base: str) -> str:
        """A new attribute name (a buffer) that no layer, spec name or nn.Module uses."""
        base = _identifier(_public(base), set())
        name, k = base, 2
        while name in self.attr_taken:
            name, k = f"{base}_{k}", k + 1
        self.attr_taken.add(name)
        return name

    def module(self, node: Node) -> str:
        return f"self.{self.attrs[node.name]}"

    def add(self, node: Node, ctor: str) -> str:
        """Declare `node`'s submodule in `__init__`; return how `forward` calls it."""
        self.init.append(f"self.{self.attrs[node.name]} = {ctor}")
        return self.module(node)

    def fresh(self, base: str) -> str:
        if base.startswith("__"):  # `__x` would be mangled, `__class__` is the class cell
            base = _public(base)
        name = _identifier(base, set())
        if name in _AMBIGUOUS:
            name += "_"
        k = 2
        while name in self.taken or name in _GLOBALS:
            name, k = f"{_identifier(base, set())}_{k}", k + 1
        self.taken.add(name)
        return name

    def in_shape(self, node: Node, i: int = 0):
        return self.graph.type_of(node.inputs[i]).shape


Lowering = Callable[[Emitter, Node, list[Value]], Value]
LOWERINGS: dict[str, Lowering]
LOWERINGS, lowers = lowering_table()


def _tuple(v) -> str:
    return repr(tuple(pair(v)))


def activation(name: str, expr: str, nchw: bool, alpha: float = LEAKY_RELU_ALPHA) -> str:
    if name == "linear":
        return expr
    if name in ("relu", "sigmoid", "tanh"):
        return f"torch.{name}({expr})"
    if name == "softmax":
        return f"torch.softmax({expr}, dim={1 if nchw else -1})"
    if name == "gelu":
        return f"F.gelu({expr})"  # exact erf form: PyTorch's default, as the IR pins
    if name == "leaky_relu":
        return f"F.leaky_relu({expr}, {float(alpha)!r})"
    raise DslError(f"activation `{name}` is not supported by backend torch")


@lowers("dense")
def _dense(em: Emitter, node: Node, ins: list[Value]) -> Value:
    a = node.attrs
    fan_in = em.in_shape(node)[-1]
    bias = "" if a.use_bias else ", bias=False"
    call = em.add(node, f"nn.Linear({fan_in}, {a.units}{bias})")
    return Value(f"{call}({ins[0].channels_last()})", rank=len(node.type.shape))


@lowers("conv2d")
def _conv2d(em: Emitter, node: Node, ins: list[Value]) -> Value:
    a = node.attrs
    cin = em.in_shape(node)[2]
    top, bottom, left, right = pads_2d(a, em.in_shape(node))
    args = [str(cin), str(a.filters), f"kernel_size={_tuple(a.kernel)}"]
    if pair(a.strides) != (1, 1):
        args.append(f"stride={_tuple(a.strides)}")
    if pair(a.dilation) != (1, 1):
        args.append(f"dilation={_tuple(a.dilation)}")
    x = ins[0].channels_first()
    if (top, left) == (bottom, right):
        if top or left:
            args.append(f"padding={(top, left)!r}")
    else:  # TF `same` with an even kernel or a stride puts the odd pixel after: pad by hand
        x = f"F.pad({x}, {(left, right, top, bottom)!r})"
    if not a.use_bias:
        args.append("bias=False")
    call = em.add(node, f"nn.Conv2d({', '.join(args)})")
    return Value(f"{call}({x})", nchw=True, rank=3)


@lowers("maxpool2d")
def _maxpool2d(em: Emitter, node: Node, ins: list[Value]) -> Value:
    a = node.attrs
    kh, kw = pair(a.kernel)
    top, bottom, left, right = pads_2d(a, em.in_shape(node))
    args = [_tuple(a.kernel), f"stride={_tuple(a.strides)}"]
    x = ins[0].channels_first()
    if (top, left) == (bottom, right) and top <= kh // 2 and left <= kw // 2:
        if top or left:
            args.append(f"padding={(top, left)!r}")  # nn.MaxPool2d pads with -inf
    else:  # asymmetric TF `same`: pad with -inf so a padded value is never the max
        x = f"F.pad({x}, {(left, right, top, bottom)!r}, value=float(\"-inf\"))"
    call = em.add(node, f"nn.MaxPool2d({', '.join(args)})")
    return Value(f"{call}({x})", nchw=True, rank=3)


@lowers("avgpool2d")
def _avgpool2d(em: Emitter, node: Node, ins: list[Value]) -> Value:
    a = node.attrs
    (kh, kw) = pair(a.kernel)
    h, w, _ = em.in_shape(node)
    top, bottom, left, right = pads_2d(a, em.in_shape(node))
    args = [_tuple(a.kernel), f"stride={_tuple(a.strides)}"]
    x = ins[0].channels_first()
    if (top, left) == (bottom, right) and top <= kh // 2 and left <= kw // 2:
        if top or left:
            args += [f"padding={(top, left)!r}", "count_include_pad=False"]
        call = em.add(node, f"nn.AvgPool2d({', '.join(args)})")
        return Value(f"{call}({x})", nchw=True, rank=3)
    # Asymmetric TF `same`: average the zero-padded input, then rescale each window by the
    # share of real pixels in it (a constant of the shapes), so padding is not counted.
    pads = (left, right, top, bottom)
    call = em.add(node, f"nn.AvgPool2d({', '.join(args)})")
    scale = em.fresh_attr(f"{em.attrs[node.name]}_real")
    em.init += [f"# {node.name} pads unevenly (TF `same`): the share of real pixels per window",
                f"real = {call}(F.pad(torch.ones(1, 1, {h}, {w}), {pads!r}))",
                f"self.register_buffer(\"{scale}\", real, persistent=False)"]
    return Value(f"{call}(F.pad({x}, {pads!r})) / self.{scale}", nchw=True, rank=3)


@lowers("global_avgpool2d")
def _global_avgpool2d(em: Emitter, node: Node, ins: list[Value]) -> Value:
    return Value(f"{ins[0].channels_first()}.mean(dim=(2, 3))")


@lowers("global_maxpool2d")
def _global_maxpool2d(em: Emitter, node: Node, ins: list[Value]) -> Value:
    return Value(f"{ins[0].channels_first()}.amax(dim=(2, 3))")


@lowers("flatten")
def _flatten(em: Emitter, node: Node, ins: list[Value]) -> Value:
    # Channels-last order before flattening, so the next dense sees Keras's feature order.
    return Value(f"torch.flatten({ins[0].channels_last()}, 1)")


@lowers("reshape")
def _reshape(em: Emitter, node: Node, ins: list[Value]) -> Value:
    dims = ", ".join(str(d) for d in node.type.shape)
    return Value(f"{ins[0].channels_last()}.reshape(-1, {dims})", rank=len(node.type.shape))


@lowers("dropout")
def _dropout(em: Emitter, node: Node, ins: list[Value]) -> Value:
    call = em.add(node, f"nn.Dropout({float(node.attrs.rate)!r})")
    return Value(f"{call}({ins[0].expr})", ins[0].nchw, ins[0].rank)


@lowers("add")
def _add(em: Emitter, node: Node, ins: list[Value]) -> Value:
    nchw = ins[0].nchw
    terms = [v.channels_first() if nchw else v.channels_last() for v in ins]
    return Value(" + ".join(terms), nchw, ins[0].rank)


@lowers("concat")
def _concat(em: Emitter, node: Node, ins: list[Value]) -> Value:
    rank = ins[0].rank
    axis = node.attrs.axis % rank
    nchw = ins[0].nchw
    parts = [v.channels_first() if nchw else v.channels_last() for v in ins]
    dim = {0: 2, 1: 3, 2: 1}[axis] if nchw else axis + 1
    return Value(f"torch.cat([{', '.join(parts)}], dim={dim})", nchw, rank)


@lowers("simple_rnn")
def _simple_rnn(em: Emitter, node: Node, ins: list[Value]) -> Value:
    a = node.attrs
    features = em.in_shape(node)[1]
    bias = "" if a.use_bias else ", bias=False"
    # Keras's form, one bias: the input projection carries it, the recurrent one has none, so
    # the parameter count is `dslc check`'s (see docs/weights.md).
    rnn = em.add(node, "nn.ModuleDict({\n"
                       f"    \"input\": nn.Linear({features}, {a.units}{bias}),\n"
                       f"    \"recurrent\": nn.Linear({a.units}, {a.units}, bias=False),\n"
                       "})")
    xs, h, t = em.fresh("inputs"), em.fresh("h"), em.fresh("t")
    steps = em.fresh("steps") if a.return_sequences else None
    step = activation(a.activation, f"{xs}[:, {t}] + {rnn}.recurrent({h})", False)
    em.forward += [
        f"# {node.name}: h_t = {a.activation}(x_t @ kernel + bias + h_(t-1) @ recurrent_kernel)",
        f"{xs} = {rnn}.input({ins[0].expr})",
        f"{h} = {xs}.new_zeros({xs}.shape[0], {a.units})",
    ]
    if steps:
        em.forward.append(f"{steps} = []")
    em.forward += [f"for {t} in range({xs}.shape[1]):", f"    {h} = {step}"]
    if steps:
        em.forward.append(f"    {steps}.append({h})")
        return Value(f"torch.stack({steps}, dim=1)", rank=2)
    return Value(h)


def _elementwise(em: Emitter, node: Node, ins: list[Value]) -> Value:
    return ins[0]  # the activation itself is applied by `_node_activation`


for _op in ("relu", "sigmoid", "tanh", "softmax", "linear", "gelu", "leaky_relu"):
    LOWERINGS[_op] = _elementwise


# Lowerings that apply the layer's `activation` themselves (inside a loop).
SELF_ACTIVATED = {"simple_rnn"}


def _node_activation(node: Node) -> tuple[str, float]:
    if node.op in SELF_ACTIVATED:
        return "linear", LEAKY_RELU_ALPHA
    op = get_op(node.op)
    if op.category == "activation":
        return node.op, getattr(node.attrs, "alpha", LEAKY_RELU_ALPHA)
    return getattr(node.attrs, "activation", "linear"), LEAKY_RELU_ALPHA


def fused_activation(graph: Graph) -> str | None:
    """`softmax` or `sigmoid` when the model's only output ends in one: the generated
    `forward(..., logits=True)` then returns the pre-activation, for a stable fused loss."""
    if len(graph.outputs) != 1 or graph.outputs[0] not in {n.name for n in graph.nodes}:
        return None  # several outputs, or an input passed straight through
    act, _ = _node_activation(graph.node(graph.outputs[0]))
    return act if act in ("softmax", "sigmoid") else None


def _passes_through(node: Node) -> bool:
    """Whether `forward` computes `node` as its input's expression, unchanged."""
    return LOWERINGS.get(node.op) is _elementwise and _node_activation(node)[0] == "linear"


def _consumers(graph: Graph) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {i.name: [] for i in graph.inputs}
    for idx, node in enumerate(graph.nodes):
        out.setdefault(node.name, [])
        for name in node.inputs:
            out.setdefault(name, []).append(idx)
    return out


def check_supported(graph: Graph) -> None:
    missing = sorted({n.op for n in graph.nodes if n.op not in LOWERINGS})
    if missing:
        node = next(n for n in graph.nodes if n.op == missing[0])
        raise DslError(f"op `{missing[0]}` is not supported by backend torch", node.span)


def generate(spec, graph: Graph) -> str:
    """The module's source. `spec` (a compiled Spec, or None) only names the source file."""
    check_supported(graph)
    attrs = module_attrs(graph)
    cls = class_name(graph.name)
    fused = fused_activation(graph)
    consumers = _consumers(graph)
    outputs = set(graph.outputs)

    # Variable names: graph inputs and branch points keep their spec names; a tensor used
    # only by the very next layer flows through one temporary, like hand-written code.
    em = Emitter(graph, attrs)
    names: dict[str, str] = {}
    for inp in graph.inputs:
        names[inp.name] = em.fresh(inp.name)
    def chains(idx: int, node: Node) -> bool:
        return node.name not in outputs and consumers.get(node.name) == [idx + 1] and \
            graph.nodes[idx + 1].inputs.count(node.name) == 1

    # An identity (`linear`) passes its input's value on: when the identity is read later
    # than by the very next layer, that input needs a name of its own, not the temporary.
    named = [False] * len(graph.nodes)
    for idx in range(len(graph.nodes) - 1, -1, -1):
        node = graph.nodes[idx]
        named[idx] = not chains(idx, node) or (
            _passes_through(graph.nodes[idx + 1]) and named[idx + 1])
    chained = set()
    for idx, node in enumerate(graph.nodes):
        if named[idx]:
            names[node.name] = em.fresh(node.name)
        else:
            chained.add(node.name)
    temp = next((c for c in ("x", "h", "y", "z", "out_") if c not in em.taken), None)
    if temp is None:
        temp = em.fresh("x")
    em.taken.add(temp)

    values: dict[str, Value] = {
        i.name: Value(names[i.name], rank=len(i.type.shape)) for i in graph.inputs}
    last = graph.nodes[-1].name if graph.nodes else None
    single_out = len(graph.outputs) == 1 and graph.outputs[0] == last
    returned = False
    for node in graph.nodes:
        value = LOWERINGS[node.op](em, node, [values[name] for name in node.inputs])
        act, alpha = _node_activation(node)
        var = temp if node.name in chained else names[node.name]
        if fused and node.name == graph.outputs[0]:
            pre = Value(var, value.nchw, value.rank)
            if value.expr != var:
                em.forward.append(f"{var} = {value.expr}")
            final = Value(activation(act, var, value.nchw, alpha), value.nchw, value.rank)
            em.forward += ["if logits:", f"    return {pre.channels_last()}"]
            if single_out:
                em.forward.append(f"return {final.channels_last()}")
                returned = True
            else:
                em.forward.append(f"{var} = {final.expr}")
                values[node.name] = Value(var, value.nchw, value.rank)
            continue
        expr = activation(act, value.expr, value.nchw, alpha)
        if single_out and node.name == last:
            if value.nchw:  # back to channels-last, on a line of its own
                em.forward += [f"{var} = {expr}", f"return {var}.{NHWC}"]
            else:
                em.forward.append(f"return {expr}")
            returned = True
            continue
        # A name already (an RNN's state, an identity): no copy, unless it is the temporary
        # and is read after the next layer, which overwrites the temporary.
        if expr.isidentifier() and (expr != temp or node.name in chained):
            values[node.name] = Value(expr, value.nchw, value.rank)
            continue
        em.forward.append(f"{var} = {expr}")
        values[node.name] = Value(var, value.nchw, value.rank)
    if not returned:
        outs = [values[name].channels_last() for name in graph.outputs]
        em.forward.append(f"return {outs[0]}" if len(outs) == 1 else f"return {', '.join(outs)}")

    return _render(spec, graph, cls, em, names, fused)


LINE = 100


def _wrap(line: str, indent: str) -> list[str]:
    return wrap(line, indent, LINE)


def _reset_lines(graph: Graph, attrs: dict[str, str]) -> list[str]:
    """One `nn.init` call per parameter, with Keras's bounds computed from the canonical shape
    (torch's own fan rules differ for 1-D tensors)."""
    from dslc.weights import init_rule

    from .weights import PARAMS

    lines = []
    for node in graph.nodes:
        for param, p in node.params.items():
            target = f"self.{attrs[node.name]}.{PARAMS[node.op][param][0]}"
            kind, scale = init_rule(p.init, p.shape)
            if kind == "uniform":
                call = f"nn.init.uniform_({target}, -{scale:.6g}, {scale:.6g})"
            elif kind == "normal":
                call = f"nn.init.normal_({target}, 0.0, {scale:.6g})"
            else:
                call = f"nn.init.{kind}_({target})"
            commented = f"{call}  # {p.init}"
            fits = len(commented) + 8 <= LINE and kind in ("uniform", "normal")
            lines.append(commented if fits else call)
    return lines


def _shape(shape) -> str:
    return "[N, " + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def _render(spec, graph: Graph, cls: str, em: Emitter, names: dict[str, str],
            fused: str | None) -> str:
    source = spec.path.name if spec is not None else "<graph>"
    params = ", ".join(f"{names[i.name]}: torch.Tensor" for i in graph.inputs)
    if fused:
        params += ", logits: bool = False"
    n_out = len(graph.outputs)
    ret = "torch.Tensor" if n_out == 1 else f"tuple[{', '.join(['torch.Tensor'] * n_out)}]"
    ins = ", ".join(f"`{i.name}` {_shape(i.type.shape)}" for i in graph.inputs)
    outs = ", ".join(_shape(graph.type_of(o).shape) for o in graph.outputs)
    paragraphs = [f"Input{'s' if len(graph.inputs) > 1 else ''} {ins} → "
                  f"output{'s' if n_out > 1 else ''} {outs}."]
    notes = []
    if any(len(i.type.shape) == 3 for i in graph.inputs):
        notes.append("Images are channels-last, as in the spec; convolutions and pooling run in "
                     "NCHW inside.")
    if fused:
        notes.append(f"`logits=True` returns the values before the final {fused}, for a fused "
                     "loss.")
    if notes:
        paragraphs.append(" ".join(notes))
    lines = [
        f"# Generated by dslc {dslc.__version__} from {source}, model `{graph.name}`.",
        "# Edit the spec and recompile (`dslc compile SPEC --target torch`) rather than this file.",
        f'"""PyTorch module for the dslc model `{graph.name}`."""',
        "",
        "import torch",
        *(["import torch.nn.functional as F"] if _USES_F.search("\n".join(em.init + em.forward))
          else []),
        "from torch import nn",
        "",
        "",
        f"class {cls}(nn.Module):",
    ]
    doc = [textwrap.fill(p, LINE, initial_indent='    """' if k == 0 else "    ",
                         subsequent_indent="    ") for k, p in enumerate(paragraphs)]
    if len(doc) == 1 and "\n" not in doc[0] and len(doc[0]) + 3 <= LINE:
        lines.append(doc[0] + '"""')
    else:
        lines += ["\n\n".join(doc), '    """']
    lines += ["", "    def __init__(self) -> None:", "        super().__init__()"]
    for stmt in em.init:
        parts = stmt.split("\n")
        lines += [x for part in parts for x in (_wrap(part, "        ") if len(parts) == 1
                                                 else ["        " + part])]
    resets = _reset_lines(graph, em.attrs)
    if resets:
        lines += ["        self.reset_parameters()", "",
                  "    def reset_parameters(self) -> None:",
                  '        """The spec\'s initialisers (Keras\'s formulas), not PyTorch\'s defaults."""',
                  *(x for line in resets for x in _wrap(line, "        "))]
    signature = f"    def forward(self, {params}) -> {ret}:"
    if len(signature) > LINE:
        signature = "\n".join(["    def forward(", "        self,", *(f"        {p.strip()}," for p in
                                                    params.split(",")), f"    ) -> {ret}:"])
    lines += ["", signature]
    for stmt in em.forward:
        body = stmt.lstrip(" ")
        lines += _wrap(body, "        " + " " * (len(stmt) - len(body)))
    return "\n".join(lines) + "\n"
