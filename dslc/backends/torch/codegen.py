"""Graph → standalone PyTorch source: one `nn.Module` subclass named after the model.

The backend is a table of lowerings (`LOWERINGS`), one rule per op, all `(em, node, xs) ->
Value`. A rule adds the layer's submodule to `__init__` (named after the spec's layer),
declaring there where each of its canonical parameters lives and how its axes move, and
returns the expression that computes the layer in `forward`, its `activation=` applied with
the activation op's own rule. The weight adapter (weights.py) and `reset_parameters` are built
from those declarations, so a parameter's torch name is written once. Nothing here imports
torch: `dslc compile --target torch` only writes text.

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
from typing import TYPE_CHECKING, Any

import dslc
from dslc.backends.lowering import LoweringTable, activation_node
from dslc.backends.pysource import Names, atom, comment, docstring, identifier, public, quote, wrap
from dslc.diagnostics import DslError
from dslc.ir.graph import Graph, Node, ParamSpec, Shape
from dslc.ops import ending_activation
from dslc.ops.conv import pads_1d, pads_2d, transpose_crops
from dslc.ops.registry import pair
from dslc.ops.spatial import zero_pads

if TYPE_CHECKING:
    import numpy as np

# Names that the generated module already uses, or that nn.Module defines: a layer called
# `train` must not shadow `nn.Module.train`.
MODULE_ATTRS = frozenset({
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
})
# Names the generated source uses itself: no variable may take them.
GLOBALS = frozenset({"torch", "nn", "F", "self", "logits", "float", "range", "super"})

LINE = 100
_USES_F = re.compile(r"\bF\.")
NCHW = "permute(0, 3, 1, 2)"  # [N, H, W, C] → [N, C, H, W]
NHWC = "permute(0, 2, 3, 1)"  # and back


# -- parameter layouts: canonical (docs/weights.md) ↔ torch -----------------------------------

Convert = Callable[["np.ndarray"], "np.ndarray"]


def same(a: np.ndarray) -> np.ndarray:
    return a


def transpose(a: np.ndarray) -> np.ndarray:
    return a.T  # [in, out] ↔ nn.Linear's [out, in]


def conv_to_torch(a: np.ndarray) -> np.ndarray:
    return a.transpose(3, 2, 0, 1)  # [kh, kw, in, out] → [out, in, kh, kw]


def conv_from_torch(a: np.ndarray) -> np.ndarray:
    return a.transpose(2, 3, 1, 0)


def conv1d_torch(a: np.ndarray) -> np.ndarray:
    return a.transpose(2, 1, 0)  # [k, in, out] ↔ [out, in, k], its own inverse


# canonical param → (name under the layer's submodule, to torch, from torch)
Declared = dict[str, tuple[str, Convert, Convert]]


@dataclass(frozen=True)
class Param:
    """Where one canonical parameter lives in the generated module, as its lowering declared."""

    key: str  # canonical checkpoint key `<layer>.<param>`
    target: str  # state_dict key `<attribute>.<torch name>`
    to_torch: Convert
    from_torch: Convert
    spec: ParamSpec


# -- names ------------------------------------------------------------------------------------

def module_attrs(graph: Graph) -> dict[str, str]:
    """The submodule attribute of every layer that owns one: the layer's name, made safe.
    State_dict keys are `<attr>.<param>`.

    A name that is safe as it is keeps it; the others (reserved, a keyword, a leading `_`)
    are renamed afterwards, so a renamed layer never takes another layer's own name."""
    taken = set(MODULE_ATTRS | GLOBALS)
    out = {}
    for node in graph.nodes:
        if identifier(node.name, taken) == node.name and not node.name.startswith("_"):
            taken.add(node.name)
            out[node.name] = node.name
    for node in graph.nodes:
        if node.name not in out:
            attr = identifier(public(node.name), taken)
            taken.add(attr)
            out[node.name] = attr
    return {node.name: out[node.name] for node in graph.nodes}


def class_name(model: str) -> str:
    """CamelCase of the model's name (`digits_cnn` → `DigitsCnn`), a valid identifier."""
    camel = "".join(part[:1].upper() + part[1:] for part in model.split("_") if part)
    return identifier(camel or "Model", GLOBALS)


# -- the emitter --------------------------------------------------------------------------------

@dataclass
class Value:
    """A tensor in `forward`: the Python expression that holds it and its layout. A value made
    by an activation rule keeps the value it activated (`pre`) and the activation's node
    (`act`), so `forward(..., logits=True)` can return what came before the final softmax."""

    expr: str
    nchw: bool = False
    rank: int = 1  # per-sample rank (batch excluded)
    pre: Value | None = None
    act: Node | None = None

    def channels_last(self) -> str:
        return f"{atom(self.expr)}.{NHWC}" if self.nchw else self.expr

    def channels_first(self) -> str:
        return self.expr if self.nchw else f"{atom(self.expr)}.{NCHW}"

    def named(self, var: str) -> Value:
        """This value once held by the variable `var`."""
        return Value(var, self.nchw, self.rank)


@dataclass
class Emitter:
    """The module being written: `__init__` and `forward` lines, names in use, and where each
    canonical parameter lives (`params`, from the lowerings' declarations)."""

    graph: Graph
    attrs: dict[str, str]
    init: list[str] = field(default_factory=list)
    forward: list[str] = field(default_factory=list)
    names: Names = field(default_factory=lambda: Names(GLOBALS))
    declared: dict[str, Declared] = field(default_factory=dict)
    params: list[Param] = field(default_factory=list)
    input_names: list[str] = field(default_factory=list)  # `forward`'s arguments
    fused: str | None = None  # the final activation `logits=True` leaves out, if any
    buffer_names: Names = field(init=False)

    def __post_init__(self) -> None:
        # attributes of the module: every layer's (spec name and attribute) and nn.Module's
        self.buffer_names = Names(MODULE_ATTRS | GLOBALS | set(self.attrs.values())
                                  | {n.name for n in self.graph.nodes}
                                  | {i.name for i in self.graph.inputs})

    @property
    def cls(self) -> str:
        return class_name(self.graph.name)

    def fresh_attr(self, base: str) -> str:
        """A new attribute name (a buffer) that no layer, spec name or nn.Module uses."""
        return self.buffer_names.fresh(public(base))

    def fresh(self, base: str) -> str:
        """A new variable name in `forward`."""
        return self.names.fresh(base)

    def module(self, node: Node) -> str:
        return f"self.{self.attrs[node.name]}"

    def add(self, node: Node, ctor: str, params: Declared | None = None) -> str:
        """Declare `node`'s submodule in `__init__` and where each of its canonical parameters
        lives under it (entries for parameters this layer lacks, such as a bias switched off,
        are ignored); return how `forward` calls it."""
        self.init.append(f"self.{self.attrs[node.name]} = {ctor}")
        self.declared[node.name] = dict(params or {})
        return self.module(node)

    def collect_params(self, node: Node) -> None:
        """Record `node`'s parameters from its lowering's declaration: one it left out is a bug
        in the lowering, reported at generation."""
        declared = self.declared.get(node.name, {})
        for param, spec in node.params.items():
            if param not in declared:
                raise DslError(f"backend torch: the lowering of `{node.op}` does not declare "
                               f"where parameter `{param}` of layer `{node.name}` lives",
                               node.span)
            name, to_torch, from_torch = declared[param]
            self.params.append(Param(f"{node.name}.{param}", f"{self.attrs[node.name]}.{name}",
                                     to_torch, from_torch, spec))

    def in_shape(self, node: Node, i: int = 0) -> Shape:
        return self.graph.type_of(node.inputs[i]).shape

    def out_shape(self, node: Node) -> Shape:
        return self.graph.type_of(node.name).shape


LOWERINGS: LoweringTable[Emitter, Value] = LoweringTable("torch")


def _tuple(v: Any) -> str:
    return repr(tuple(pair(v)))


def _activate(em: Emitter, node: Node, value: Value) -> Value:
    """`value` through `node`'s `activation=`, lowered by that activation op's rule."""
    return LOWERINGS.lower(em, activation_node(node), [value])


# -- activations ---------------------------------------------------------------------------------

def _activated(node: Node, x: Value, expr: str) -> Value:
    return Value(expr, x.nchw, x.rank, pre=x, act=node)


@LOWERINGS("linear")
def identity(em: Emitter, node: Node, xs: list[Value]) -> Value:
    return xs[0]


@LOWERINGS("relu", "sigmoid", "tanh")
def torch_function(em: Emitter, node: Node, xs: list[Value]) -> Value:
    """torch's function of the op's name: its definition is dslc's."""
    return _activated(node, xs[0], f"torch.{node.op}({xs[0].expr})")


@LOWERINGS("gelu")
def gelu(em: Emitter, node: Node, xs: list[Value]) -> Value:
    # the exact erf form: PyTorch's default, as the IR pins
    return _activated(node, xs[0], f"F.gelu({xs[0].expr})")


@LOWERINGS("softmax")
def softmax(em: Emitter, node: Node, xs: list[Value]) -> Value:
    x = xs[0]  # over the channels, which are dim 1 while the value is NCHW
    return _activated(node, x, f"torch.softmax({x.expr}, dim={1 if x.nchw else -1})")


@LOWERINGS("leaky_relu")
def leaky_relu(em: Emitter, node: Node, xs: list[Value]) -> Value:
    return _activated(node, xs[0], f"F.leaky_relu({xs[0].expr}, {float(node.attrs.alpha)!r})")


@LOWERINGS("elu")
def elu(em: Emitter, node: Node, xs: list[Value]) -> Value:
    return _activated(node, xs[0], f"F.elu({xs[0].expr}, {float(node.attrs.alpha)!r})")


# -- layers -----------------------------------------------------------------------------------

@LOWERINGS("dense")
def dense(em: Emitter, node: Node, xs: list[Value]) -> Value:
    a = node.attrs
    fan_in = em.in_shape(node)[-1]
    bias = "" if a.use_bias else ", bias=False"
    call = em.add(node, f"nn.Linear({fan_in}, {a.units}{bias})",
                  params={"kernel": ("weight", transpose, transpose),
                          "bias": ("bias", same, same)})
    y = Value(f"{call}({xs[0].channels_last()})", rank=len(em.out_shape(node)))
    return _activate(em, node, y)


@LOWERINGS("conv2d")
def conv2d(em: Emitter, node: Node, xs: list[Value]) -> Value:
    a = node.attrs
    cin = em.in_shape(node)[2]
    top, bottom, left, right = pads_2d(a, em.in_shape(node))
    args = [str(cin), str(a.filters), f"kernel_size={_tuple(a.kernel)}"]
    if pair(a.strides) != (1, 1):
        args.append(f"stride={_tuple(a.strides)}")
    if pair(a.dilation) != (1, 1):
        args.append(f"dilation={_tuple(a.dilation)}")
    x = xs[0].channels_first()
    if (top, left) == (bottom, right):
        if top or left:
            args.append(f"padding={(top, left)!r}")
    else:  # TF `same` with an even kernel or a stride puts the odd pixel after: pad by hand
        x = f"F.pad({x}, {(left, right, top, bottom)!r})"
    if cin == 1 and pair(a.strides) != (1, 1):
        # A 1-channel image permuted from channels-last has strides oneDNN misreads: with
        # batch > 1, stride (1, 2) and one output column, torch 2.13's CPU conv2d gives wrong
        # values (found by fuzzing). Plain NCHW strides avoid it; the copy is one channel.
        x = f"{atom(x)}.clone(memory_format=torch.contiguous_format)"
    if a.groups != 1:
        args.append(f"groups={a.groups}")
    if not a.use_bias:
        args.append("bias=False")
    call = em.add(node, f"nn.Conv2d({', '.join(args)})",
                  params={"kernel": ("weight", conv_to_torch, conv_from_torch),
                          "bias": ("bias", same, same)})
    return _activate(em, node, Value(f"{call}({x})", nchw=True, rank=3))


def _window_2d(em: Emitter, node: Node, x: Value) -> tuple[list[str], str]:
    """nn.Conv2d's window arguments for `node` and its input, padded by hand where TF `same`
    pads unevenly (the odd pixel after)."""
    a = node.attrs
    top, bottom, left, right = pads_2d(a, em.in_shape(node))
    args = [f"kernel_size={_tuple(a.kernel)}"]
    if pair(a.strides) != (1, 1):
        args.append(f"stride={_tuple(a.strides)}")
    if pair(a.dilation) != (1, 1):
        args.append(f"dilation={_tuple(a.dilation)}")
    expr = x.channels_first()
    if (top, left) == (bottom, right):
        if top or left:
            args.append(f"padding={(top, left)!r}")
    else:
        expr = f"F.pad({expr}, {(left, right, top, bottom)!r})"
    if em.in_shape(node)[2] == 1 and pair(a.strides) != (1, 1):
        expr = f"{atom(expr)}.clone(memory_format=torch.contiguous_format)"  # see conv2d
    return args, expr


def depthwise_converters(channels: int, multiplier: int) -> tuple[Convert, Convert]:
    """[kh, kw, C, M] ↔ a grouped nn.Conv2d's [C * M, 1, kh, kw] (output c * M + m)."""
    def to_torch(a: np.ndarray) -> np.ndarray:
        kh, kw = a.shape[:2]
        return a.reshape(kh, kw, channels * multiplier).transpose(2, 0, 1)[:, None]

    def from_torch(a: np.ndarray) -> np.ndarray:
        kh, kw = a.shape[2:]
        return a[:, 0].transpose(1, 2, 0).reshape(kh, kw, channels, multiplier)

    return to_torch, from_torch


@LOWERINGS("depthwise_conv2d")
def depthwise_conv2d(em: Emitter, node: Node, xs: list[Value]) -> Value:
    a = node.attrs
    cin = em.in_shape(node)[2]
    assert cin is not None  # the shape rule requires it
    mid = cin * a.depth_multiplier
    args, x = _window_2d(em, node, xs[0])
    args = [str(cin), str(mid), *args, f"groups={cin}"]
    if not a.use_bias:
        args.append("bias=False")
    to_torch, from_torch = depthwise_converters(cin, a.depth_multiplier)
    call = em.add(node, f"nn.Conv2d({', '.join(args)})",
                  params={"kernel": ("weight", to_torch, from_torch),
                          "bias": ("bias", same, same)})
    return _activate(em, node, Value(f"{call}({x})", nchw=True, rank=3))


# A separable convolution's two convolutions, named once for `__init__`, `forward` and weights.
SEP_DEPTHWISE = "depthwise"
SEP_POINTWISE = "pointwise"


@LOWERINGS("separable_conv2d")
def separable_conv2d(em: Emitter, node: Node, xs: list[Value]) -> Value:
    a = node.attrs
    cin = em.in_shape(node)[2]
    assert cin is not None  # the shape rule requires it
    mid = cin * a.depth_multiplier
    args, x = _window_2d(em, node, xs[0])
    bias = "" if a.use_bias else ", bias=False"
    to_torch, from_torch = depthwise_converters(cin, a.depth_multiplier)
    call = em.add(node, "nn.ModuleDict({\n"
                        f"    {quote(SEP_DEPTHWISE)}: nn.Conv2d({cin}, {mid}, "
                        f"{', '.join(args)}, groups={cin}, bias=False),\n"
                        f"    {quote(SEP_POINTWISE)}: nn.Conv2d({mid}, {a.filters}, 1{bias}),\n"
                        "})",
                  params={"depthwise_kernel": (f"{SEP_DEPTHWISE}.weight", to_torch, from_torch),
                          "pointwise_kernel": (f"{SEP_POINTWISE}.weight", conv_to_torch,
                                               conv_from_torch),
                          "bias": (f"{SEP_POINTWISE}.bias", same, same)})
    y = f"{call}.{SEP_POINTWISE}({call}.{SEP_DEPTHWISE}({x}))"
    return _activate(em, node, Value(y, nchw=True, rank=3))


@LOWERINGS("conv2d_transpose")
def conv2d_transpose(em: Emitter, node: Node, xs: list[Value]) -> Value:
    a = node.attrs
    h, w, cin = em.in_shape(node)
    assert h is not None and w is not None
    (kh, kw), (sh, sw) = pair(a.kernel), pair(a.strides)
    (top, bottom), (left, right) = (transpose_crops(h, kh, sh, a.padding),
                                    transpose_crops(w, kw, sw, a.padding))
    args = [str(cin), str(a.filters), f"kernel_size={_tuple(a.kernel)}"]
    if (sh, sw) != (1, 1):
        args.append(f"stride={_tuple(a.strides)}")
    # nn.ConvTranspose2d crops `padding` from both sides and extends by `output_padding`
    # after; TF's odd crop after is one more row or column, sliced off below.
    if top or left:
        args.append(f"padding={(top, left)!r}")
    extend = (max(-bottom, 0), max(-right, 0))
    if extend != (0, 0):
        args.append(f"output_padding={extend!r}")
    if not a.use_bias:
        args.append("bias=False")
    call = em.add(node, f"nn.ConvTranspose2d({', '.join(args)})",
                  params={"kernel": ("weight", conv_to_torch, conv_from_torch),
                          "bias": ("bias", same, same)})
    y = f"{call}({xs[0].channels_first()})"
    if bottom > top or right > left:
        oh, ow, _ = em.out_shape(node)
        y = f"{y}[:, :, :{oh}, :{ow}]"
    return _activate(em, node, Value(y, nchw=True, rank=3))


@LOWERINGS("maxpool2d")
def maxpool2d(em: Emitter, node: Node, xs: list[Value]) -> Value:
    a = node.attrs
    kh, kw = pair(a.kernel)
    top, bottom, left, right = pads_2d(a, em.in_shape(node))
    args = [_tuple(a.kernel), f"stride={_tuple(a.strides)}"]
    x = xs[0].channels_first()
    if (top, left) == (bottom, right) and top <= kh // 2 and left <= kw // 2:
        if top or left:
            args.append(f"padding={(top, left)!r}")  # nn.MaxPool2d pads with -inf
    else:  # asymmetric TF `same`: pad with -inf so a padded value is never the max
        x = f"F.pad({x}, {(left, right, top, bottom)!r}, value=float(\"-inf\"))"
    call = em.add(node, f"nn.MaxPool2d({', '.join(args)})")
    return Value(f"{call}({x})", nchw=True, rank=3)


@LOWERINGS("avgpool2d")
def avgpool2d(em: Emitter, node: Node, xs: list[Value]) -> Value:
    a = node.attrs
    kh, kw = pair(a.kernel)
    h, w, _ = em.in_shape(node)
    top, bottom, left, right = pads_2d(a, em.in_shape(node))
    args = [_tuple(a.kernel), f"stride={_tuple(a.strides)}"]
    x = xs[0].channels_first()
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
    em.init += [f"# {comment(node.name)} pads unevenly (TF `same`): the share of real pixels "
                "per window",
                f"real = {call}(F.pad(torch.ones(1, 1, {h}, {w}), {pads!r}))",
                f"self.register_buffer({quote(scale)}, real, persistent=False)"]
    return Value(f"{call}(F.pad({x}, {pads!r})) / self.{scale}", nchw=True, rank=3)


@LOWERINGS("global_avgpool2d")
def global_avgpool2d(em: Emitter, node: Node, xs: list[Value]) -> Value:
    return Value(f"{xs[0].channels_first()}.mean(dim=(2, 3))")


@LOWERINGS("global_maxpool2d")
def global_maxpool2d(em: Emitter, node: Node, xs: list[Value]) -> Value:
    return Value(f"{xs[0].channels_first()}.amax(dim=(2, 3))")


def _ncw(x: Value) -> str:
    return f"{atom(x.expr)}.transpose(1, 2)"  # [N, T, C] ↔ [N, C, T]


@LOWERINGS("conv1d")
def conv1d(em: Emitter, node: Node, xs: list[Value]) -> Value:
    a = node.attrs
    cin = em.in_shape(node)[1]
    before, after = pads_1d(a, em.in_shape(node)[0])
    args = [str(cin), str(a.filters), f"kernel_size={a.kernel}"]
    if a.strides != 1:
        args.append(f"stride={a.strides}")
    if a.dilation != 1:
        args.append(f"dilation={a.dilation}")
    x = _ncw(xs[0])
    if before == after:
        if before:
            args.append(f"padding={before}")
    else:  # TF `same` puts the odd step after, `causal` pads before only: pad by hand
        x = f"F.pad({x}, {(before, after)!r})"
    if not a.use_bias:
        args.append("bias=False")
    call = em.add(node, f"nn.Conv1d({', '.join(args)})",
                  params={"kernel": ("weight", conv1d_torch, conv1d_torch),
                          "bias": ("bias", same, same)})
    return _activate(em, node, Value(f"{call}({x}).transpose(1, 2)", rank=2))


@LOWERINGS("maxpool1d")
def maxpool1d(em: Emitter, node: Node, xs: list[Value]) -> Value:
    a = node.attrs
    before, after = pads_1d(a, em.in_shape(node)[0])
    args = [str(a.kernel), f"stride={a.strides}"]
    x = _ncw(xs[0])
    if before == after and before <= a.kernel // 2:
        if before:
            args.append(f"padding={before}")  # nn.MaxPool1d pads with -inf
    else:  # asymmetric TF `same`: pad with -inf so a padded value is never the max
        x = f"F.pad({x}, {(before, after)!r}, value=float(\"-inf\"))"
    call = em.add(node, f"nn.MaxPool1d({', '.join(args)})")
    return Value(f"{call}({x}).transpose(1, 2)", rank=2)


@LOWERINGS("avgpool1d")
def avgpool1d(em: Emitter, node: Node, xs: list[Value]) -> Value:
    a = node.attrs
    before, after = pads_1d(a, em.in_shape(node)[0])
    args = [str(a.kernel), f"stride={a.strides}"]
    x = _ncw(xs[0])
    if before == after and before <= a.kernel // 2:
        if before:
            args += [f"padding={before}", "count_include_pad=False"]
        call = em.add(node, f"nn.AvgPool1d({', '.join(args)})")
        return Value(f"{call}({x}).transpose(1, 2)", rank=2)
    # Asymmetric TF `same`: average the zero-padded input, divided by the share of real
    # steps per window (the same pool over ones), so padding is not counted.
    call = em.add(node, f"nn.AvgPool1d({', '.join(args)})")
    xv, real = em.fresh(f"{em.attrs[node.name]}_in"), em.fresh(f"{em.attrs[node.name]}_real")
    pads = (before, after)
    em.forward += [f"# {comment(node.name)} pads unevenly (TF `same`): divide by the real steps",
                   f"{xv} = {x}",
                   f"{real} = {call}(F.pad(torch.ones_like({xv}[:, :1]), {pads!r}))"]
    return Value(f"({call}(F.pad({xv}, {pads!r})) / {real}).transpose(1, 2)", rank=2)


@LOWERINGS("global_avgpool1d")
def global_avgpool1d(em: Emitter, node: Node, xs: list[Value]) -> Value:
    return Value(f"{atom(xs[0].expr)}.mean(dim=1)")


@LOWERINGS("global_maxpool1d")
def global_maxpool1d(em: Emitter, node: Node, xs: list[Value]) -> Value:
    return Value(f"{atom(xs[0].expr)}.amax(dim=1)")


@LOWERINGS("upsampling2d")
def upsampling2d(em: Emitter, node: Node, xs: list[Value]) -> Value:
    a = node.attrs
    sh, sw = pair(a.size)
    x = xs[0]
    if a.interpolation == "nearest":  # exact repeats, in the value's own layout
        dims = (2, 3) if x.nchw else (1, 2)
        expr = atom(x.expr)
        if sh != 1:
            expr = f"{expr}.repeat_interleave({sh}, dim={dims[0]})"
        if sw != 1:
            expr = f"{expr}.repeat_interleave({sw}, dim={dims[1]})"
        return Value(expr, x.nchw, 3)
    # half-pixel centres, clamped at the edges: Keras's (TensorFlow's) bilinear resize
    call = em.add(node, f"nn.Upsample(scale_factor={(float(sh), float(sw))!r}, "
                        "mode=\"bilinear\", align_corners=False)")
    return Value(f"{call}({x.channels_first()})", nchw=True, rank=3)


@LOWERINGS("zero_padding2d")
def zero_padding2d(em: Emitter, node: Node, xs: list[Value]) -> Value:
    top, bottom, left, right = zero_pads(node.attrs.padding)
    x = xs[0]
    pads = (left, right, top, bottom) if x.nchw else (0, 0, left, right, top, bottom)
    return Value(f"F.pad({x.expr}, {pads!r})", x.nchw, 3)


@LOWERINGS("flatten")
def flatten(em: Emitter, node: Node, xs: list[Value]) -> Value:
    # Channels-last order before flattening, so the next dense sees Keras's feature order.
    return Value(f"torch.flatten({xs[0].channels_last()}, 1)")


@LOWERINGS("reshape")
def reshape(em: Emitter, node: Node, xs: list[Value]) -> Value:
    shape = em.out_shape(node)
    dims = ", ".join(str(d) for d in shape)
    return Value(f"{xs[0].channels_last()}.reshape(-1, {dims})", rank=len(shape))


@LOWERINGS("dropout")
def dropout(em: Emitter, node: Node, xs: list[Value]) -> Value:
    call = em.add(node, f"nn.Dropout({float(node.attrs.rate)!r})")
    return Value(f"{call}({xs[0].expr})", xs[0].nchw, xs[0].rank)


@LOWERINGS("layer_norm")
def layer_norm(em: Emitter, node: Node, xs: list[Value]) -> Value:
    a = node.attrs
    features = em.in_shape(node)[-1]
    x = xs[0].channels_last()  # the last canonical axis: an NCHW image's channels
    params: Declared = {"gamma": ("weight", same, same), "beta": ("bias", same, same)}
    if a.scale or not a.center:
        args = [str(features), f"eps={float(a.epsilon)!r}"]
        if not a.scale:
            args.append("elementwise_affine=False")
        elif not a.center:
            args.append("bias=False")
        call = em.add(node, f"nn.LayerNorm({', '.join(args)})", params)
        return Value(f"{call}({x})", rank=len(em.out_shape(node)))
    # nn.LayerNorm has no bias without a weight: hold the bias alone, apply it in F.layer_norm
    call = em.add(node, f"nn.ParameterDict({{{quote('bias')}: nn.Parameter(torch.zeros({features}))}})",
                  params)
    return Value(f"F.layer_norm({x}, ({features},), bias={call}.bias, eps={float(a.epsilon)!r})",
                 rank=len(em.out_shape(node)))


@LOWERINGS("add")
def add(em: Emitter, node: Node, xs: list[Value]) -> Value:
    nchw = xs[0].nchw
    terms = [v.channels_first() if nchw else v.channels_last() for v in xs]
    return Value(" + ".join(terms), nchw, xs[0].rank)


@LOWERINGS("concat")
def concat(em: Emitter, node: Node, xs: list[Value]) -> Value:
    rank = xs[0].rank
    axis = node.attrs.axis % rank
    nchw = xs[0].nchw
    parts = [v.channels_first() if nchw else v.channels_last() for v in xs]
    dim = {0: 2, 1: 3, 2: 1}[axis] if nchw else axis + 1
    return Value(f"torch.cat([{', '.join(parts)}], dim={dim})", nchw, rank)


# The simple_rnn's two projections, named once for `__init__`, `forward` and the weights.
RNN_INPUT = "input"
RNN_RECURRENT = "recurrent"


@LOWERINGS("simple_rnn")
def simple_rnn(em: Emitter, node: Node, xs: list[Value]) -> Value:
    a = node.attrs
    features = em.in_shape(node)[1]
    bias = "" if a.use_bias else ", bias=False"
    # Keras's form, one bias: the input projection carries it, the recurrent one has none, so
    # the parameter count is `dslc check`'s (see docs/weights.md).
    rnn = em.add(node, "nn.ModuleDict({\n"
                       f"    {quote(RNN_INPUT)}: nn.Linear({features}, {a.units}{bias}),\n"
                       f"    {quote(RNN_RECURRENT)}: nn.Linear({a.units}, {a.units}, bias=False),\n"
                       "})",
                 params={"kernel": (f"{RNN_INPUT}.weight", transpose, transpose),
                         "recurrent_kernel": (f"{RNN_RECURRENT}.weight", transpose, transpose),
                         "bias": (f"{RNN_INPUT}.bias", same, same)})
    inputs, h, t = em.fresh("inputs"), em.fresh("h"), em.fresh("t")
    steps = em.fresh("steps") if a.return_sequences else None
    step = _activate(em, node, Value(f"{inputs}[:, {t}] + {rnn}.{RNN_RECURRENT}({h})")).expr
    em.forward += [
        f"# {comment(node.name)}: h_t = {a.activation}(x_t @ kernel + bias + h_(t-1) @ "
        "recurrent_kernel)",
        f"{inputs} = {rnn}.{RNN_INPUT}({xs[0].expr})",
        f"{h} = {inputs}.new_zeros({inputs}.shape[0], {a.units})",
    ]
    if steps:
        em.forward.append(f"{steps} = []")
    em.forward += [f"for {t} in range({inputs}.shape[1]):", f"    {h} = {step}"]
    if steps:
        em.forward.append(f"    {steps}.append({h})")
        return Value(f"torch.stack({steps}, dim=1)", rank=2)
    return Value(h)


# -- the module ---------------------------------------------------------------------------------

def _fuse_point(graph: Graph) -> str | None:
    """The layer whose softmax/sigmoid ends the model's only output, when only identities
    (`linear`) follow it: `forward(..., logits=True)` returns its value before the activation,
    for a stable fused loss. Not through dropout: the loss must see what training sees."""
    if len(graph.outputs) != 1:
        return None
    act, through = ending_activation(graph, graph.outputs[0])
    if act not in ("softmax", "sigmoid") or any(n.op != "linear" for n in through):
        return None
    return through[-1].inputs[0] if through else graph.outputs[0]


def _consumers(graph: Graph) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {i.name: [] for i in graph.inputs}
    for idx, node in enumerate(graph.nodes):
        out.setdefault(node.name, [])
        for name in node.inputs:
            out.setdefault(name, []).append(idx)
    return out


def emit(graph: Graph) -> Emitter:
    """Lower `graph`: the module's lines, names and parameter places, not yet rendered."""
    graph = LOWERINGS.prepare(graph)
    em = Emitter(graph, module_attrs(graph))
    consumers = _consumers(graph)
    outputs = set(graph.outputs)
    fuse_at = _fuse_point(graph)

    # Variable names: graph inputs and branch points keep their spec names; a tensor used
    # only by the very next layer flows through one temporary, like hand-written code.
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
            LOWERINGS.rule(graph.nodes[idx + 1]) is identity and named[idx + 1])
    chained = set()
    for idx, node in enumerate(graph.nodes):
        if named[idx]:
            names[node.name] = em.fresh(node.name)
        else:
            chained.add(node.name)
    temp = next((c for c in ("x", "h", "y", "z", "out_") if c not in em.names.taken), None)
    if temp is None:
        temp = em.fresh("x")
    em.names.taken.add(temp)
    em.input_names = [names[i.name] for i in graph.inputs]

    values: dict[str, Value] = {
        i.name: Value(names[i.name], rank=len(i.type.shape)) for i in graph.inputs}
    last = graph.nodes[-1].name if graph.nodes else None
    single_out = len(graph.outputs) == 1 and graph.outputs[0] == last
    returned = False
    for node in graph.nodes:
        value = LOWERINGS.lower(em, node, [values[name] for name in node.inputs])
        em.collect_params(node)
        var = temp if node.name in chained else names[node.name]
        if node.name == fuse_at and value.pre is not None and value.act is not None:
            pre = value.pre
            if pre.expr != var:
                em.forward.append(f"{var} = {pre.expr}")
            final = LOWERINGS.lower(em, value.act, [pre.named(var)])
            em.fused = value.act.op
            em.forward += ["if logits:", f"    return {pre.named(var).channels_last()}"]
            if single_out and node.name == last:
                em.forward.append(f"return {final.channels_last()}")
                returned = True
            else:
                em.forward.append(f"{var} = {final.expr}")
                values[node.name] = final.named(var)
            continue
        expr = value.expr
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
            values[node.name] = value.named(expr)
            continue
        em.forward.append(f"{var} = {expr}")
        values[node.name] = value.named(var)
    if not returned:
        outs = [values[name].channels_last() for name in graph.outputs]
        em.forward.append(f"return {outs[0]}" if len(outs) == 1 else f"return {', '.join(outs)}")
    return em


def fused_activation(graph: Graph) -> str | None:
    """`softmax` or `sigmoid` when the generated `forward(..., logits=True)` returns the values
    before it (see `_fuse_point`); None when the model has no such form."""
    return emit(graph).fused


def generate(spec: Any, graph: Graph) -> str:
    """The module's source. `spec` (a compiled Spec, or None) only names the source file."""
    return render(spec, emit(graph))


def _reset_lines(em: Emitter) -> list[str]:
    """One `nn.init` call per parameter, with Keras's bounds computed from the canonical shape
    (torch's own fan rules differ for 1-D tensors)."""
    from dslc.weights import init_rule

    lines = []
    for p in em.params:
        target = f"self.{p.target}"
        kind, scale = init_rule(p.spec.init, p.spec.shape)
        if kind == "uniform":
            call = f"nn.init.uniform_({target}, -{scale:.6g}, {scale:.6g})"
        elif kind == "normal":
            call = f"nn.init.normal_({target}, 0.0, {scale:.6g})"
        elif kind == "orthogonal" and len(p.spec.shape) == 1:
            # one row of an orthogonal [1, n] matrix, as dslc/weights.py defines it (a unit
            # vector); torch's orthogonal_ refuses rank 1
            call = f"nn.init.orthogonal_({target}.unsqueeze(0))"
        else:
            call = f"nn.init.{kind}_({target})"
        commented = f"{call}  # {p.spec.init}"
        fits = len(commented) + 8 <= LINE and kind in ("uniform", "normal")
        lines.append(commented if fits else call)
    return lines


def _shape(shape: Shape) -> str:
    return "[N, " + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def render(spec: Any, em: Emitter) -> str:
    """The source of the lowered module `em`."""
    graph = em.graph
    source = spec.path.name if spec is not None else "<graph>"
    params = ", ".join(f"{name}: torch.Tensor" for name in em.input_names)
    if em.fused:
        params += ", logits: bool = False"
    n_out = len(graph.outputs)
    ret = "torch.Tensor" if n_out == 1 else f"tuple[{', '.join(['torch.Tensor'] * n_out)}]"
    ins = ", ".join(f"`{docstring(i.name)}` {_shape(i.type.shape)}" for i in graph.inputs)
    outs = ", ".join(_shape(graph.type_of(o).shape) for o in graph.outputs)
    paragraphs = [f"Input{'s' if len(graph.inputs) > 1 else ''} {ins} → "
                  f"output{'s' if n_out > 1 else ''} {outs}."]
    notes = []
    if any(len(i.type.shape) == 3 for i in graph.inputs):
        notes.append("Images are channels-last, as in the spec; convolutions and pooling run in "
                     "NCHW inside.")
    if em.fused:
        notes.append(f"`logits=True` returns the values before the final {em.fused}, for a fused "
                     "loss.")
    if notes:
        paragraphs.append(" ".join(notes))
    lines = [
        *wrap(f"# Generated by dslc {dslc.__version__} from {comment(source)}, model "
              f"`{comment(graph.name)}`.", "", LINE),
        "# Edit the spec and recompile (`dslc compile SPEC --target torch`) rather than this file.",
        f'"""PyTorch module for the dslc model `{docstring(graph.name)}`."""',
        "",
        "import torch",
        *(["import torch.nn.functional as F"] if _USES_F.search("\n".join(em.init + em.forward))
          else []),
        "from torch import nn",
        "",
        "",
        f"class {em.cls}(nn.Module):",
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
        lines += [x for part in parts for x in (wrap(part, "        ", LINE) if len(parts) == 1
                                                 else ["        " + part])]
    resets = _reset_lines(em)
    if resets:
        lines += ["        self.reset_parameters()", "",
                  "    def reset_parameters(self) -> None:",
                  '        """The spec\'s initialisers (Keras\'s formulas), not PyTorch\'s defaults."""',
                  *(x for line in resets for x in wrap(line, "        ", LINE))]
    signature = f"    def forward(self, {params}) -> {ret}:"
    if len(signature) > LINE:
        signature = "\n".join(["    def forward(", "        self,", *(f"        {p.strip()}," for p in
                                                    params.split(",")), f"    ) -> {ret}:"])
    lines += ["", signature]
    for stmt in em.forward:
        body = stmt.lstrip(" ")
        lines += wrap(body, "        " + " " * (len(stmt) - len(body)), LINE)
    return "\n".join(lines) + "\n"
