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

import math
import re
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import dslc
from dslc.backends.lowering import LoweringTable, activation_node
from dslc.backends.pysource import Names, atom, comment, docstring, identifier, public, quote, wrap
from dslc.diagnostics import DslError
from dslc.ir.graph import Graph, Node, ParamSpec, Shape
from dslc.ops import ending_activation
from dslc.ops.conv import pads_1d, pads_2d, transpose_crops
from dslc.ops.recurrent import DIRECTIONS, direction_node
from dslc.ops.registry import pair
from dslc.ops.spatial import zero_pads
from dslc.passes.masks import padding_masks

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
    helpers: dict[str, str] = field(default_factory=dict)  # module-level classes, by name
    buffer_names: Names = field(init=False)
    input_vars: dict[str, str] = field(default_factory=dict)  # graph input → `forward` argument
    masks: dict[str, tuple[str, ...]] = field(init=False)  # dslc/passes/masks.py
    mask_vars: dict[tuple[str, ...], str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # attributes of the module: every layer's (spec name and attribute) and nn.Module's
        self.buffer_names = Names(MODULE_ATTRS | GLOBALS | set(self.attrs.values())
                                  | {n.name for n in self.graph.nodes}
                                  | {i.name for i in self.graph.inputs})
        self.masks = padding_masks(self.graph)

    def mask_of(self, name: str) -> str | None:
        """The padding mask of tensor `name` as a variable of `forward` (bool `[N, T]`, True
        at real positions): `tokens_mask = tokens != 0`, written once, before the line of the
        rule that first asks; None when `name` carries no mask."""
        ids = self.masks.get(name)
        if not ids:
            return None
        if ids not in self.mask_vars:
            var = self.fresh(f"{'_'.join(ids)}_mask")
            terms = [f"({self.input_vars[i]} != 0)" if len(ids) > 1 else
                     f"{self.input_vars[i]} != 0" for i in ids]
            self.forward.append(f"{var} = {' & '.join(terms)}")
            self.mask_vars[ids] = var
        return self.mask_vars[ids]

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

    def helper(self, name: str, source: str) -> str:
        """Define the class `source` (a format string with `{name}`) once at module level,
        named `name` unless the model's class is; returns the name it got."""
        if name == self.cls:
            name += "Layer"
        self.helpers.setdefault(name, source.format(name=name))
        return name

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



@LOWERINGS("selu", "softplus", "softsign", "silu", "relu6")
def functional(em: Emitter, node: Node, xs: list[Value]) -> Value:
    """torch.nn.functional's function of the op's name: its definition is dslc's (softplus
    is linear above 20, where the two differ by under 3e-9)."""
    return _activated(node, xs[0], f"F.{node.op}({xs[0].expr})")


@LOWERINGS("hard_sigmoid")
def hard_sigmoid(em: Emitter, node: Node, xs: list[Value]) -> Value:
    return _activated(node, xs[0], f"F.hardsigmoid({xs[0].expr})")  # relu6(x + 3) / 6: Keras 3's


@LOWERINGS("log_softmax")
def log_softmax(em: Emitter, node: Node, xs: list[Value]) -> Value:
    x = xs[0]  # over the channels, as softmax
    return _activated(node, x, f"torch.log_softmax({x.expr}, dim={1 if x.nchw else -1})")

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
    mask = em.mask_of(node.inputs[0])
    if mask is None:
        return Value(f"{atom(xs[0].expr)}.mean(dim=1)")
    # the mean over real steps only, as Keras's GlobalAveragePooling1D
    real = f"{mask}.unsqueeze(-1).to({atom(xs[0].expr)}.dtype)"
    return Value(f"({atom(xs[0].expr)} * {real}).sum(dim=1) / {real}.sum(dim=1)")


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


@LOWERINGS("permute")
def permute(em: Emitter, node: Node, xs: list[Value]) -> Value:
    x = xs[0]
    dims = (0, *node.attrs.dims)
    if x.nchw:  # permute the NCHW tensor at once: canonical axis k is NCHW axis (0, 2, 3, 1)[k]
        dims = tuple((0, 2, 3, 1)[d] for d in dims)
    return Value(f"{atom(x.expr)}.permute{dims!r}", rank=x.rank)


@LOWERINGS("repeat_vector")
def repeat_vector(em: Emitter, node: Node, xs: list[Value]) -> Value:
    return Value(f"{atom(xs[0].expr)}.unsqueeze(1).repeat(1, {node.attrs.n}, 1)", rank=2)


@LOWERINGS("slice")
def slice_(em: Emitter, node: Node, xs: list[Value]) -> Value:
    a = node.attrs
    x = xs[0]
    axis = a.axis % x.rank
    dim = (2, 3, 1)[axis] if x.nchw else axis + 1  # an NCHW image is sliced in place
    bounds = f"{'' if a.start is None else a.start}:{'' if a.stop is None else a.stop}"
    return Value(f"{atom(x.expr)}[{', '.join([':'] * dim + [bounds])}]", x.nchw, x.rank)


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


# Keras's BatchNormalization: nn.BatchNorm stores the unbiased variance and moves its
# statistics with momentum the other way round (and counts batches), so training would drift
# from Keras's. The statistics are computed as Keras does, in Keras's formula.
_BATCH_NORM = '''class {name}(nn.Module):
    """Keras's BatchNormalization over the channels `dim`: training normalises with the batch's
    mean and biased variance and moves `moving = moving * momentum + batch * (1 - momentum)`
    (the biased variance, as Keras; nn.BatchNorm keeps the unbiased one); eval uses the moving
    statistics."""

    def __init__(self, channels: int, dim: int, momentum: float, eps: float,
                 scale: bool = True, center: bool = True) -> None:
        super().__init__()
        self.dim, self.momentum, self.eps = dim, momentum, eps
        self.weight = nn.Parameter(torch.ones(channels)) if scale else None
        self.bias = nn.Parameter(torch.zeros(channels)) if center else None
        self.register_buffer("moving_mean", torch.zeros(channels))
        self.register_buffer("moving_variance", torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = [1] * x.dim()
        shape[self.dim] = -1
        if self.training:
            dims = [d for d in range(x.dim()) if d != self.dim]
            variance, mean = torch.var_mean(x, dim=dims, correction=0)
            with torch.no_grad():
                m = self.momentum
                self.moving_mean.copy_(self.moving_mean * m + mean * (1.0 - m))
                self.moving_variance.copy_(self.moving_variance * m + variance * (1.0 - m))
        else:
            mean, variance = self.moving_mean, self.moving_variance
        y = (x - mean.reshape(shape)) * torch.rsqrt(variance.reshape(shape) + self.eps)
        if self.weight is not None:
            y = y * self.weight.reshape(shape)
        if self.bias is not None:
            y = y + self.bias.reshape(shape)
        return y
'''


@LOWERINGS("batch_norm")
def batch_norm(em: Emitter, node: Node, xs: list[Value]) -> Value:
    a = node.attrs
    x = xs[0]
    cls = em.helper("KerasBatchNorm", _BATCH_NORM)
    dim = 1 if x.nchw else x.rank  # the channels: NCHW's, else the last axis
    args = [str(em.in_shape(node)[-1]), f"dim={dim}", f"momentum={float(a.momentum)!r}",
            f"eps={float(a.epsilon)!r}", *(f"{k}=False" for k in ("scale", "center")
                                           if not getattr(a, k))]
    call = em.add(node, f"{cls}({', '.join(args)})",
                  params={"gamma": ("weight", same, same), "beta": ("bias", same, same),
                          "moving_mean": ("moving_mean", same, same),
                          "moving_variance": ("moving_variance", same, same)})
    return Value(f"{call}({x.expr})", x.nchw, x.rank)


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


def _same_layout(xs: list[Value]) -> list[str]:
    """The inputs of an element-wise merge, in the first one's layout."""
    nchw = xs[0].nchw
    return [atom(v.channels_first() if nchw else v.channels_last()) for v in xs]


@LOWERINGS("multiply")
def multiply(em: Emitter, node: Node, xs: list[Value]) -> Value:
    return Value(" * ".join(_same_layout(xs)), xs[0].nchw, xs[0].rank)


@LOWERINGS("subtract")
def subtract(em: Emitter, node: Node, xs: list[Value]) -> Value:
    return Value(" - ".join(_same_layout(xs)), xs[0].nchw, xs[0].rank)


@LOWERINGS("average")
def average(em: Emitter, node: Node, xs: list[Value]) -> Value:
    return Value(f"({' + '.join(_same_layout(xs))}) / {len(xs)}", xs[0].nchw, xs[0].rank)


def _folded(fn: str) -> Callable[[Emitter, Node, list[Value]], Value]:
    def rule(em: Emitter, node: Node, xs: list[Value]) -> Value:
        terms = _same_layout(xs)
        expr = terms[0]
        for term in terms[1:]:
            expr = f"{fn}({expr}, {term})"
        return Value(expr, xs[0].nchw, xs[0].rank)

    return rule


LOWERINGS.add("maximum", _folded("torch.maximum"))
LOWERINGS.add("minimum", _folded("torch.minimum"))




# `bidirectional` (Keras's Bidirectional): the layer's own rule once per direction, each with
# its weights under `forward_layer` / `backward_layer` of one nn.ModuleDict (Keras's names).
# Two kernel calls rather than one `bidirectional=True` call: the step loops (gate
# activations the kernels lack) need them anyway, and the weights stay one set per direction.
class _DirectionEmitter:
    """An Emitter whose `add` keeps the direction's submodule for the layer's ModuleDict."""

    def __init__(self, em: Emitter, node: Node, key: str):
        self._em, self._node, self.key = em, node, key
        self.ctor, self.params = "", cast(Declared, {})

    def add(self, node: Node, ctor: str, params: Declared | None = None) -> str:
        self.ctor, self.params = ctor, dict(params or {})
        return f"{self._em.module(self._node)}.{self.key}"

    def __getattr__(self, name: str) -> Any:
        return getattr(self._em, name)


TorchRule = Callable[[Emitter, Node, list[Value]], Value]


def _both_directions(rule: TorchRule) -> TorchRule:
    def run(em: Emitter, node: Node, xs: list[Value]) -> Value:
        a = node.attrs
        if a.bidirectional == "none":
            return rule(em, node, xs)
        em.forward.append(f"# {comment(node.name)}: bidirectional ({a.bidirectional}), a forward "
                          "layer and a backward one (reading the last step first)")
        parts, ys = [], []
        params: Declared = {}
        for d in DIRECTIONS:
            sub = _DirectionEmitter(em, node, f"{d}_layer")
            ys.append(rule(cast(Emitter, sub), direction_node(node, d), xs))
            parts.append(f'    "{sub.key}": ' + sub.ctor.replace("\n", "\n    ") + ",")
            params |= {f"{d}_{k}": (f"{sub.key}.{name}", to, back)
                       for k, (name, to, back) in sub.params.items()}
        em.add(node, "nn.ModuleDict({\n" + "\n".join(parts) + "\n})", params=params)
        y, y_rev = atom(ys[0].expr), atom(ys[1].expr)
        if a.return_sequences:  # the backward outputs back in time order, as Keras's
            y_rev = f"{y_rev}.flip(1)"
        merged = {"concat": f"torch.cat([{y}, {y_rev}], dim=-1)", "sum": f"{y} + {y_rev}",
                  "mul": f"{y} * {y_rev}", "ave": f"({y} + {y_rev}) / 2"}[a.bidirectional]
        mask = em.mask_of(node.inputs[0])
        if a.return_sequences and mask is not None:
            # Keras's Bidirectional: zeros at padded steps (`zero_output_for_mask`)
            merged = f"{atom(merged)}.masked_fill(~{atom(mask)}.unsqueeze(-1), 0.0)"
        return Value(merged, rank=ys[0].rank)
    return run


# lstm and gru hold their weights in torch's RNN layout and call the fused kernels
# (`torch.lstm`, `torch.gru`: what nn.LSTM and nn.GRU call) with them. Not nn.LSTM itself: it
# owns two biases where Keras's LSTM has one, and a frozen second bias would add parameters
# that Keras's count lacks. The kernels take the recurrent bias as a separate tensor: zeros
# for lstm, Keras's second bias row for gru (reset_after is torch's GRU).
RNN_W_IH = "weight_ih"
RNN_W_HH = "weight_hh"
RNN_BIAS = "bias"
FUSED_GATES = ("tanh", "sigmoid")  # (activation, recurrent_activation) the kernels apply


def gru_gates(a: np.ndarray) -> np.ndarray:
    """Keras's gate blocks z, r, h ↔ torch's r, z, n along the last axis (a swap: its own
    inverse)."""
    u = a.shape[-1] // 3
    return a[..., [*range(u, 2 * u), *range(u), *range(2 * u, 3 * u)]]


def gru_to_torch(a: np.ndarray) -> np.ndarray:
    return gru_gates(a).T  # [in, 3 * units] (z, r, h) → [3 * units (r, z, n), in]


def gru_from_torch(a: np.ndarray) -> np.ndarray:
    return gru_gates(a.T)


def _rnn_weights(em: Emitter, node: Node, gates: int, bias_shape: tuple[int, ...],
                 kernel: tuple[Convert, Convert], bias: tuple[Convert, Convert]) -> str:
    a = node.attrs
    features = em.in_shape(node)[1]
    rows = gates * a.units
    entries = [f"    {quote(RNN_W_IH)}: nn.Parameter(torch.empty({rows}, {features})),",
               f"    {quote(RNN_W_HH)}: nn.Parameter(torch.empty({rows}, {a.units})),"]
    if a.use_bias:
        dims = ", ".join(map(str, bias_shape))
        entries.append(f"    {quote(RNN_BIAS)}: nn.Parameter(torch.empty({dims})),")
    return em.add(node, "nn.ParameterDict({\n" + "\n".join(entries) + "\n})",
                  params={"kernel": (RNN_W_IH, *kernel), "recurrent_kernel": (RNN_W_HH, *kernel),
                          "bias": (RNN_BIAS, *bias)})


def _gate(em: Emitter, node: Node, name: str, expr: str) -> str:
    return LOWERINGS.lower(em, activation_node(node, name), [Value(expr)]).expr


def _read_order(em: Emitter, node: Node, x: Value) -> str:
    """The input in reading order: `go_backwards` reads the last step first (and Keras returns
    the outputs in that order)."""
    return f"{atom(x.expr)}.flip(1)" if node.attrs.go_backwards else x.expr


@LOWERINGS("lstm")
@_both_directions
def lstm(em: Emitter, node: Node, xs: list[Value]) -> Value:
    a = node.attrs
    u = a.units
    p = _rnn_weights(em, node, 4, (4 * u,), (transpose, transpose), (same, same))
    real = _reading_mask(em, node)
    x = _input_dropout(em, node, _read_order(em, node, xs[0]))

    def run(drop: Drop | None) -> Value:
        if drop is None and (a.activation, a.recurrent_activation) == FUSED_GATES:
            return (_fused_masked if real else _fused)(
                em, node, "lstm", p, x, xs[0],
                "the fused LSTM kernel, gates i, f, g, o as Keras's i, f, c, o",
                *[real] if real else [])
        return _lstm_loop(em, node, p, x, real, drop)
    return _recurrent_dropout(em, node, x, 4, run)


def _lstm_loop(em: Emitter, node: Node, p: str, x: str, real: str | None,
               drop: Drop | None) -> Value:
    """Gate activations the kernel lacks, or recurrent dropout: a step loop."""
    a = node.attrs
    u = a.units
    inputs, h, c, t = em.fresh("inputs"), em.fresh("h"), em.fresh("c"), em.fresh("t")
    i, f, g, o = em.fresh("i"), em.fresh("f"), em.fresh("g"), em.fresh("o")
    bias = f"{p}.{RNN_BIAS}" if a.use_bias else None
    steps = em.fresh("steps") if a.return_sequences else None
    ra, act = a.recurrent_activation, a.activation
    carry = _carry(em, real, t, [h, c])
    em.forward += [
        f"# {comment(node.name)}: LSTM ({act}, gates {ra}), gates i, f, c, o; a step loop: "
        + ("Keras's recurrent dropout, one mask per gate" if drop else
           "torch's fused kernel applies tanh and sigmoid only"),
        f"{inputs} = {_gated_linear(em, x, f'{p}.{RNN_W_IH}', bias, drop and drop[0], 4, True)}",
        f"{h} = {inputs}.new_zeros({inputs}.shape[0], {u})",
        f"{c} = {h}",
        *([f"{steps} = []"] if steps else []),
    ]
    recurrent = _gated_linear(em, h, f"{p}.{RNN_W_HH}", None, drop and drop[1], 4)
    em.forward += [
        f"for {t} in range({inputs}.shape[1]):",
        *carry[0],
        f"    {i}, {f}, {g}, {o} = ({inputs}[:, {t}] + {recurrent}).chunk(4, dim=1)",
        f"    {c} = {_gate(em, node, ra, f)} * {c} + {_gate(em, node, ra, i)} * "
        f"{_gate(em, node, act, g)}",
        f"    {h} = {_gate(em, node, ra, o)} * {_gate(em, node, act, c)}",
        *carry[1],
        *([f"    {steps}.append({h})"] if steps else []),
    ]
    return Value(f"torch.stack({steps}, dim=1)", rank=2) if steps else Value(h)


# Keras's dropout inside a recurrent layer (training only): `dropout` alone is one input mask
# `[N, 1, F]` per sequence before the fused kernel; `recurrent_dropout` runs the step loop with
# one mask per gate and sequence on the inputs and on h_(t-1) (Keras's cell implementation 1),
# the fused kernel at inference.
Drop = tuple[str | None, str]  # the input masks `[gates, N, F]` (None: no dropout), the state's


def _input_dropout(em: Emitter, node: Node, x: str) -> str:
    a = node.attrs
    if not a.dropout or a.recurrent_dropout:
        return x
    dropped = em.fresh("dropped")
    em.forward += [
        f"# {comment(node.name)}: input dropout, one mask per sequence (Keras's)",
        f"{dropped} = {atom(x)} * F.dropout({atom(x)}.new_ones({atom(x)}.shape[0], 1, "
        f"{atom(x)}.shape[2]), {float(a.dropout)!r}, self.training)",
    ]
    return dropped


def _gated_linear(em: Emitter, x: str, w: str, bias: str | None, masks: str | None,
                  gates: int, sequence: bool = False) -> str:
    """`F.linear(x, w, bias)`, or with one dropout mask per gate (`masks` `[gates, N, in]`):
    each gate's block of rows of `w` applied to `x` under its own mask."""
    if masks is None:
        return f"F.linear({x}, {w}{f', {bias}' if bias else ''})"
    blocks = em.fresh("per_gate")
    em.forward.append(f"{blocks} = {atom(w)}.view({gates}, -1, {atom(w)}.shape[1])")
    spec = "ntf,gnf,guf->ntgu" if sequence else "nf,gnf,guf->ngu"
    out = f"torch.einsum({quote(spec)}, {x}, {masks}, {blocks}).flatten({2 if sequence else 1})"
    return f"{out} + {bias}" if bias else out


def _recurrent_dropout(em: Emitter, node: Node, x: str, gates: int,
                       run: Callable[[Drop | None], Value]) -> Value:
    """`run(None)`, or with `recurrent_dropout`: `run(masks)` in training, `run(None)` else."""
    a = node.attrs
    if not a.recurrent_dropout:
        return run(None)
    saved, em.forward = em.forward, []
    in_masks = em.fresh("input_masks") if a.dropout else None
    state_masks = em.fresh("state_masks")
    em.forward += [
        f"# {comment(node.name)}: Keras's dropout masks, one per gate and sequence",
        *([f"{in_masks} = F.dropout({atom(x)}.new_ones({gates}, {atom(x)}.shape[0], "
           f"{atom(x)}.shape[2]), {float(a.dropout)!r})"] if in_masks else []),
        f"{state_masks} = F.dropout({atom(x)}.new_ones({gates}, {atom(x)}.shape[0], {a.units}), "
        f"{float(a.recurrent_dropout)!r})",
    ]
    trained = run((in_masks, state_masks))
    training, em.forward = em.forward, []
    inferred = run(None)
    inference, em.forward = em.forward, saved
    out = em.fresh("seq" if a.return_sequences else "h")
    em.forward += ["if self.training:", *(f"    {line}" for line in training),
                   f"    {out} = {trained.expr}", "else:",
                   *(f"    {line}" for line in inference), f"    {out} = {inferred.expr}"]
    return Value(out, rank=trained.rank)


@LOWERINGS("gru")
@_both_directions
def gru(em: Emitter, node: Node, xs: list[Value]) -> Value:
    a = node.attrs
    u = a.units
    bias_shape = (2, 3 * u) if a.reset_after else (3 * u,)
    p = _rnn_weights(em, node, 3, bias_shape, (gru_to_torch, gru_from_torch),
                     (gru_gates, gru_gates))
    real = _reading_mask(em, node)
    x = _input_dropout(em, node, _read_order(em, node, xs[0]))

    def run(drop: Drop | None) -> Value:
        if drop is None and a.reset_after and (a.activation, a.recurrent_activation) == FUSED_GATES:
            return (_fused_masked if real else _fused)(
                em, node, "gru", p, x, xs[0],
                "the fused GRU kernel (Keras's reset_after), gates r, z, n",
                *[real] if real else [])
        return _gru_loop(em, node, p, x, real, drop)
    return _recurrent_dropout(em, node, x, 3, run)


def _gru_loop(em: Emitter, node: Node, p: str, x: str, real: str | None,
              drop: Drop | None) -> Value:
    """reset_after=false (no torch kernel resets before the matmul), other gate activations
    or recurrent dropout: a step loop."""
    a = node.attrs
    u = a.units
    inputs, h, t = em.fresh("inputs"), em.fresh("h"), em.fresh("t")
    r, z, n, rec = em.fresh("r"), em.fresh("z"), em.fresh("n"), em.fresh("rec")
    steps = em.fresh("steps") if a.return_sequences else None
    ra, act = a.recurrent_activation, a.activation
    in_bias = (f"{p}.{RNN_BIAS}[0]" if a.reset_after else f"{p}.{RNN_BIAS}") \
        if a.use_bias else None
    in_masks, state_masks = drop if drop else (None, None)
    carry = _carry(em, real, t, [h])
    em.forward.append(
        f"# {comment(node.name)}: GRU ({act}, gates {ra}, reset_after={a.reset_after}), "
        "gates r, z, n; a step loop: "
        + ("Keras's recurrent dropout, one mask per gate" if drop else
           "torch's fused kernel is reset_after with tanh and sigmoid"))
    w_hh = f"{p}.{RNN_W_HH}"
    rec_bias = f"{p}.{RNN_BIAS}[1]" if a.use_bias and a.reset_after else None
    recurrent = (_gated_linear(em, h, w_hh, rec_bias, state_masks, 3) if a.reset_after else
                 _gated_linear(em, h, f"{w_hh}[:{2 * u}]", None,
                               state_masks and f"{state_masks}[:2]", 2))
    lines = [
        f"{inputs} = {_gated_linear(em, x, f'{p}.{RNN_W_IH}', in_bias, in_masks, 3, True)}",
        f"{h} = {inputs}.new_zeros({inputs}.shape[0], {u})",
        *([f"{steps} = []"] if steps else []),
        f"for {t} in range({inputs}.shape[1]):",
        *carry[0],
        f"    {r}, {z}, {n} = {inputs}[:, {t}].chunk(3, dim=1)",
    ]
    if a.reset_after:
        # a sum (with dropout's bias) is chunked on a line of its own
        split = ([f"    {rec} = {recurrent}", f"    {rec} = {rec}.chunk(3, dim=1)"] if drop
                 else [f"    {rec} = {recurrent}.chunk(3, dim=1)"])
        lines += [
            *split,
            f"    {r} = {_gate(em, node, ra, f'{r} + {rec}[0]')}",
            f"    {z} = {_gate(em, node, ra, f'{z} + {rec}[1]')}",
            f"    {n} = {_gate(em, node, act, f'{n} + {r} * {rec}[2]')}",
        ]
    else:
        h_n = f"({h} * {state_masks}[2])" if state_masks else h
        lines += [
            f"    {rec} = {recurrent}.chunk(2, dim=1)",
            f"    {r} = {_gate(em, node, ra, f'{r} + {rec}[0]')}",
            f"    {z} = {_gate(em, node, ra, f'{z} + {rec}[1]')}",
            f"    {n} = {_gate(em, node, act, f'{n} + F.linear({r} * {h_n}, {w_hh}[{2 * u}:])')}",
        ]
    lines += [f"    {h} = {z} * {h} + (1 - {z}) * {n}",
              *carry[1],
              *([f"    {steps}.append({h})"] if steps else [])]
    em.forward += lines
    return Value(f"torch.stack({steps}, dim=1)", rank=2) if steps else Value(h)


def _fused(em: Emitter, node: Node, kernel: str, p: str, x: str, batch: Value, what: str) -> Value:
    """One call of torch's fused recurrent `kernel` (`torch.lstm` is what nn.LSTM calls), one
    layer, batch first. The kernels add two biases: lstm and simple_rnn's recurrent one is zeros
    (Keras has one), gru's is Keras's second bias row."""
    a = node.attrs
    weights, h0 = em.fresh("weights"), em.fresh("h0")
    # the kernel returns the sequence and the last state: `_` for the one not used (ruff RUF059)
    seq, h = (em.fresh("seq"), "_") if a.return_sequences else ("_", em.fresh("h"))
    alias = []
    if len(p) > 60:  # a long layer name: one short name for its weights keeps lines short
        short = em.fresh("layer")
        alias, p = [f"{short} = {p}"], short
    w = [f"{p}.{RNN_W_IH}", f"{p}.{RNN_W_HH}"]
    if a.use_bias:
        b = f"{p}.{RNN_BIAS}"
        w += [f"{b}[0]", f"{b}[1]"] if kernel == "gru" else [b, f"torch.zeros_like({b})"]
    state = f"({h0}, {h0})" if kernel == "lstm" else h0
    outs = f"{seq}, {h}, _" if kernel == "lstm" else f"{seq}, {h}"
    em.forward += [
        f"# {comment(node.name)}: {what}",
        *alias,
        f"{weights} = [{', '.join(w)}]" if len(w) == 2 else f"{weights} = [",
        *([f"    {v}," for v in w] + ["]"] if len(w) > 2 else []),
        f"{h0} = {p}.{RNN_W_HH}.new_zeros(1, {batch.expr}.shape[0], {a.units})",
        f"{outs} = torch.{kernel}({x}, {state}, {weights}, has_biases={a.use_bias}, num_layers=1, "
        "dropout=0.0, train=self.training, bidirectional=False, batch_first=True)",
    ]
    return Value(seq, rank=2) if a.return_sequences else Value(f"{h}[0]")


def _reading_mask(em: Emitter, node: Node) -> str | None:
    """The padding mask of the recurrent layer's input in reading order (a variable), or None."""
    mask = em.mask_of(node.inputs[0])
    if mask is None or not node.attrs.go_backwards:
        return mask
    real = em.fresh(f"{mask}_backwards")
    em.forward.append(f"{real} = {mask}.flip(1)")
    return real


def _carry(em: Emitter, real: str | None, t: str, states: list[str]) -> tuple[list[str], list[str]]:
    """A step loop's first and last lines under a padding mask (none without one). Keras: at a
    padded step the states (and so the output) stay what they were."""
    if real is None:
        return [], []
    before = [em.fresh(f"{s}_before") for s in states]
    return ([f"    {', '.join(before)} = {', '.join(states)}"],
            [f"    {s} = torch.where({real}[:, {t}, None], {s}, {b})"
             for s, b in zip(states, before, strict=True)])


def _fused_masked(em: Emitter, node: Node, kernel: str, p: str, x: str, batch: Value, what: str,
                  real: str) -> Value:
    """The fused kernel under a padding mask, as Keras computes it (a padded step carries the
    state over): each sample's real steps moved to the front in order, one run over them,
    then step t's output is the state after the last real step up to t (zeros before the
    first). What the kernel computes after a sample's real steps is never read."""
    a = node.attrs
    order, steps, last = em.fresh("order"), em.fresh("real_steps"), em.fresh("last_real")
    em.forward += [
        f"# {comment(node.name)}: padding: each sample's real steps first, in order",
        f"{order} = (~{real}).int().argsort(dim=1, stable=True)",
        f"{steps} = {atom(x)}.gather(1, {order}.unsqueeze(-1).expand(-1, -1, "
        f"{em.in_shape(node)[1]}))",
    ]
    seq = _fused(em, node.model_copy(update={"attrs": a.model_copy(
        update={"return_sequences": True})}), kernel, p, steps, batch, what)
    count = f"{real}.cumsum(1)" if a.return_sequences else f"{real}.sum(1, keepdim=True)"
    em.forward += [
        f"# {comment(node.name)}: step t gives the state after the last real step up to t "
        "(zeros before the first): Keras carries the state over padding",
        f"{last} = {count} - 1",
        f"{seq.expr} = {seq.expr}.gather(1, {last}.clamp(min=0).unsqueeze(-1).expand(-1, -1, "
        f"{a.units})).masked_fill({last}.unsqueeze(-1) < 0, 0.0)",
    ]
    return Value(seq.expr, rank=2) if a.return_sequences else Value(f"{seq.expr}[:, 0]")


@LOWERINGS("simple_rnn")
@_both_directions
def simple_rnn(em: Emitter, node: Node, xs: list[Value]) -> Value:
    a = node.attrs
    u = a.units
    # Keras's form, one bias: the kernel's recurrent bias is zeros (see lstm below)
    p = _rnn_weights(em, node, 1, (u,), (transpose, transpose), (same, same))
    real = _reading_mask(em, node)
    x = _input_dropout(em, node, _read_order(em, node, xs[0]))

    def run(drop: Drop | None) -> Value:
        if drop is None and a.activation in ("tanh", "relu"):
            return (_fused_masked if real else _fused)(
                em, node, f"rnn_{a.activation}", p, x, xs[0], "the fused RNN kernel, h_t = "
                f"{a.activation}(x_t @ kernel + bias + h_(t-1) @ recurrent_kernel)",
                *[real] if real else [])
        return _rnn_loop(em, node, p, x, real, drop)
    return _recurrent_dropout(em, node, x, 1, run)


def _rnn_loop(em: Emitter, node: Node, p: str, x: str, real: str | None,
              drop: Drop | None) -> Value:
    """Activations torch's kernels lack, or recurrent dropout: a step loop."""
    a = node.attrs
    inputs, h, t = em.fresh("inputs"), em.fresh("h"), em.fresh("t")
    steps = em.fresh("steps") if a.return_sequences else None
    bias = f"{p}.{RNN_BIAS}" if a.use_bias else None
    in_masks, state_masks = drop if drop else (None, None)
    state = f"{h} * {state_masks}[0]" if state_masks else h
    step = _activate(em, node, Value(f"{inputs}[:, {t}] + F.linear({state}, {p}.{RNN_W_HH})")).expr
    dropped = f"{atom(x)} * {in_masks}[0, :, None]" if in_masks else x
    em.forward += [
        f"# {comment(node.name)}: h_t = {a.activation}(x_t @ kernel + bias + h_(t-1) @ "
        "recurrent_kernel); a step loop: "
        + ("Keras's recurrent dropout" if drop else "torch's kernels apply tanh and relu only"),
        f"{inputs} = F.linear({dropped}, {p}.{RNN_W_IH}{f', {bias}' if bias else ''})",
        f"{h} = {inputs}.new_zeros({inputs}.shape[0], {a.units})",
    ]
    if steps:
        em.forward.append(f"{steps} = []")
    carry = _carry(em, real, t, [h])
    em.forward += [f"for {t} in range({inputs}.shape[1]):", *carry[0], f"    {h} = {step}",
                   *carry[1]]
    if steps:
        em.forward.append(f"    {steps}.append({h})")
        return Value(f"torch.stack({steps}, dim=1)", rank=2)
    return Value(h)


# multi_head_attention's four projections (Keras's sublayer names), one nn.Linear each: the
# canonical per-head kernels `[d, heads, k]` are `[d, heads * k]` matrices, heads outermost.
MHA_PROJECTIONS = ("query", "key", "value", "output")


def _heads_kernel(heads: int) -> tuple[Convert, Convert]:
    """[d, heads, k] ↔ nn.Linear's [heads * k, d]."""
    def to_torch(a: np.ndarray) -> np.ndarray:
        return a.reshape(a.shape[0], -1).T

    def from_torch(a: np.ndarray) -> np.ndarray:
        return a.T.reshape(a.shape[1], heads, -1)

    return to_torch, from_torch


def _heads_bias(heads: int) -> tuple[Convert, Convert]:
    """[heads, k] ↔ [heads * k]."""
    def to_torch(a: np.ndarray) -> np.ndarray:
        return a.reshape(-1)

    def from_torch(a: np.ndarray) -> np.ndarray:
        return a.reshape(heads, -1)

    return to_torch, from_torch


def _output_kernel(heads: int) -> tuple[Convert, Convert]:
    """[heads, v, out] ↔ nn.Linear's [out, heads * v]."""
    def to_torch(a: np.ndarray) -> np.ndarray:
        return a.reshape(-1, a.shape[-1]).T

    def from_torch(a: np.ndarray) -> np.ndarray:
        return a.T.reshape(heads, -1, a.shape[0])

    return to_torch, from_torch


@LOWERINGS("multi_head_attention")
def multi_head_attention(em: Emitter, node: Node, xs: list[Value]) -> Value:
    a = node.attrs
    h, kd = a.heads, a.key_dim
    vd = a.value_dim or kd
    dims = {"query": em.in_shape(node, 0)[1], "value": em.in_shape(node, 1)[1],
            "key": em.in_shape(node, len(xs) - 1)[1]}
    out = em.out_shape(node)[1]
    sizes = {"query": (dims["query"], h * kd), "key": (dims["key"], h * kd),
             "value": (dims["value"], h * vd), "output": (h * vd, out)}
    bias = "" if a.use_bias else ", bias=False"
    params: Declared = {}
    for role in MHA_PROJECTIONS:
        kernel = _output_kernel(h) if role == "output" else _heads_kernel(h)
        params[f"{role}_kernel"] = (f"{role}.weight", *kernel)
        bias_convert = (same, same) if role == "output" else _heads_bias(h)
        params[f"{role}_bias"] = (f"{role}.bias", *bias_convert)
    mods = "".join(f"    {quote(role)}: nn.Linear({i}, {o}{bias}),\n"
                   for role, (i, o) in sizes.items())
    mha = em.add(node, f"nn.ModuleDict({{\n{mods}}})", params)
    query, value = xs[0].expr, xs[1].expr
    key = xs[2].expr if len(xs) == 3 else value
    masks = [em.mask_of(name) for name in node.inputs]
    q, k, v, heads = (em.fresh(n) for n in ("q", "k", "v", "heads"))
    em.forward += [
        f"# {comment(node.name)}: {h} head(s); [N, T, d] → [N, heads, T, dim] per projection",
        # projection and split on lines of their own: long layer names stay readable
        f"{q} = {mha}.query({query})",
        f"{q} = {q}.unflatten(-1, ({h}, {kd})).transpose(1, 2)",
        f"{k} = {mha}.key({key})",
        f"{k} = {k}.unflatten(-1, ({h}, {kd})).transpose(1, 2)",
        f"{v} = {mha}.value({value})",
        f"{v} = {v}.unflatten(-1, ({h}, {vd})).transpose(1, 2)",
    ]
    allowed = _attention_mask(em, node, masks, q, k) if any(masks) else None
    if allowed is not None:
        # Keras's masked softmax, written out: masked scores replaced (not offset, which
        # would let gradients through), so a row that sees nothing gets uniform weights.
        scores, weights = em.fresh("scores"), em.fresh("weights")
        em.forward += [
            f"{scores} = ({q} * {1 / math.sqrt(kd)!r}) @ {k}.transpose(-2, -1)",
            f"{weights} = {scores}.masked_fill(~{allowed}, -1e9).softmax(-1)",
        ]
        if a.dropout:  # Keras's softmax with dropout zeroes masked weights, whole rows too
            em.forward += [
                f"{weights} = {weights}.masked_fill(~{allowed}, 0.0)",
                f"{weights} = F.dropout({weights}, {float(a.dropout)!r}, self.training)",
            ]
        em.forward.append(f"{heads} = {weights} @ {v}")
        return Value(f"{mha}.output({heads}.transpose(1, 2).flatten(2))", rank=2)
    args = [q, k, v]
    if a.dropout:
        args.append(f"dropout_p={float(a.dropout)!r} if self.training else 0.0")
    if a.causal:
        args.append("is_causal=True")  # query i sees keys 0..i, top-left aligned as Keras's
    args.append(f"scale={1 / math.sqrt(kd)!r}")
    em.forward.append(f"{heads} = F.scaled_dot_product_attention({', '.join(args)})")
    return Value(f"{mha}.output({heads}.transpose(1, 2).flatten(2))", rank=2)


def _attention_mask(em: Emitter, node: Node, masks: list[str | None], q: str, k: str) -> str:
    """A bool `[N, 1, Tq, Tv]` variable, True where a query step may attend to a key step:
    the query's padding mask, the value's and the key's (Keras's), and the causal triangle."""
    terms = []
    if masks[0] is not None:
        terms.append(f"{masks[0]}[:, None, :, None]")
    terms += [f"{m}[:, None, None, :]" for m in dict.fromkeys(masks[1:]) if m is not None]
    if node.attrs.causal:  # query i sees keys 0..i, top-left aligned as Keras's
        causal = em.fresh("causal")
        em.forward.append(f"{causal} = {q}.new_ones({q}.shape[2], {k}.shape[2], "
                          f"dtype=torch.bool).tril()")
        terms.append(causal)
    allowed = em.fresh("allowed")
    em.forward.append(f"{allowed} = {' & '.join(terms)}")
    return allowed


@LOWERINGS("embedding")
def embedding(em: Emitter, node: Node, xs: list[Value]) -> Value:
    # Ids stay integers (int32 or int64, as declared); an id out of range raises IndexError
    # (on CUDA, a device-side assert). No padding_idx: Keras trains id 0's vector too.
    a = node.attrs
    call = em.add(node, f"nn.Embedding({a.vocab}, {a.dim})",
                  params={"embeddings": ("weight", same, same)})
    return Value(f"{call}({xs[0].expr})", rank=len(em.out_shape(node)))


def _bound(em: Emitter, node: Node, x: Value, role: str) -> str:
    """`x` held by a variable of its own (a rule that reads it twice), channels-last."""
    expr = x.channels_last()
    if expr.isidentifier():
        return expr
    var = em.fresh(role)
    em.forward.append(f"{var} = {expr}")
    return var


@LOWERINGS("position_embedding")
def position_embedding(em: Emitter, node: Node, xs: list[Value]) -> Value:
    steps, features = em.in_shape(node)
    call = em.add(node, f"nn.Embedding({node.attrs.max_len}, {features})",
                  params={"embeddings": ("weight", same, same)})
    if steps is not None:
        return Value(f"{atom(xs[0].expr)} + {call}.weight[:{steps}]", rank=2)
    # a sequence longer than max_len: the shapes do not broadcast and the add raises
    x = _bound(em, node, xs[0], "x")
    return Value(f"{x} + {call}.weight[:{x}.shape[1]]", rank=2)


@LOWERINGS("sinusoidal_position")
def sinusoidal_position(em: Emitter, node: Node, xs: list[Value]) -> Value:
    _, features = em.in_shape(node)
    x = _bound(em, node, xs[0], "x")
    angles, index = em.fresh("angles"), em.fresh("index")
    wavelength = float(node.attrs.max_wavelength)
    em.forward += [
        f"# {comment(node.name)}: + sin/cos(position * (1 / {wavelength!r}) ** (2 * (i // 2) / "
        f"{features})), sin at even features i (float64, then cast)",
        f"{index} = torch.arange({features}, dtype=torch.float64, device={x}.device)",
        f"{angles} = torch.arange({x}.shape[1], dtype=torch.float64, device={x}.device)[:, None] "
        f"* (1 / {wavelength!r}) ** (2 * ({index} // 2) / {features})",
    ]
    table = f"torch.where({index} % 2 == 0, {angles}.sin(), {angles}.cos()).to({x}.dtype)"
    return Value(f"{x} + {table}", rank=2)


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
    em.input_vars = {inp.name: names[inp.name] for inp in graph.inputs}

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
    from dslc.ops.registry import UNIT_FORGET
    from dslc.weights import init_rule

    lines = []
    for p in em.params:
        target = f"self.{p.target}"
        if p.spec.init.startswith(UNIT_FORGET):
            lines += _unit_forget_lines(target, p.spec.init[len(UNIT_FORGET):], p.spec.shape[0])
            continue
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


def _unit_forget_lines(target: str, base: str, size: int) -> list[str]:
    """Keras's unit_forget_bias: `base` for the i gate, ones for f, `base` for c and o (each
    part initialised at its own size, as Keras does); torch's LSTM gate order is the same."""
    from dslc.weights import init_rule

    u = size // 4
    lines = []
    for part, n in ((f"{target}[:{u}]", u), (f"{target}[{2 * u}:]", 2 * u)):
        kind, scale = init_rule(base, (n,))
        if kind == "uniform":
            lines.append(f"nn.init.uniform_({part}, -{scale:.6g}, {scale:.6g})  # {base}")
        elif kind == "normal":
            lines.append(f"nn.init.normal_({part}, 0.0, {scale:.6g})  # {base}")
        elif kind == "orthogonal":
            lines.append(f"nn.init.orthogonal_({part}.unsqueeze(0))")
        else:
            lines.append(f"nn.init.{kind}_({part})")
    lines.append(f"nn.init.ones_({target}[{u}:{2 * u}])  # unit_forget_bias")
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
        *(line for name in sorted(em.helpers) for line in [*em.helpers[name].splitlines(), "", ""]),
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
