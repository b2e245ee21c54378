"""The reference interpreter: one numpy rule per op, channels-last, float64.

Written from the ops' definitions (docs and dslc/ops), deliberately naive — explicit window
loops, explicit recurrences — so that it is easy to read and shares no code or shortcut with
the framework lowerings it checks. Padding follows TensorFlow's `same` rule, computed here
from the formula, not with dslc/ops' helpers.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import numpy as np

from dslc.backends.base import Feed
from dslc.backends.lowering import LoweringTable, activation_node
from dslc.diagnostics import DslError
from dslc.ir.graph import Graph, Input, Node
from dslc.passes.masks import padding_masks

Array = np.ndarray


class Context:
    def __init__(self, graph: Graph, weights: dict[str, np.ndarray],
                 env: dict[str, Array] | None = None):
        self.graph = graph
        self.weights = weights
        self.env = env if env is not None else {}  # the values computed so far, by tensor
        self.masks = padding_masks(graph)

    def mask_of(self, name: str) -> Array | None:
        """The padding mask of tensor `name`: bool `[N, T]`, True at real (non-padding)
        positions — `ids != 0` of each id tensor that masks it, ANDed — or None."""
        ids = self.masks.get(name)
        if not ids:
            return None
        mask = self.env[ids[0]] != 0
        for other in ids[1:]:
            mask = mask & (self.env[other] != 0)
        return mask

    def param(self, node: Node, key: str) -> Array:
        return np.asarray(self.weights[f"{node.name}.{key}"], dtype=np.float64)

    def bias(self, node: Node) -> Array | float:
        return self.param(node, "bias") if "bias" in node.params else 0.0

    def activation(self, node: Node, x: Array) -> Array:
        act = activation_node(node)
        return LOWERINGS.lower(self, act, [x])


LOWERINGS: LoweringTable[Context, Array] = LoweringTable("reference")


# -- activations -----------------------------------------------------------------------------

@LOWERINGS("linear")
def linear(ctx: Context, node: Node, xs: list[Array]) -> Array:
    return xs[0]


@LOWERINGS("relu")
def relu(ctx: Context, node: Node, xs: list[Array]) -> Array:
    return np.maximum(xs[0], 0.0)


@LOWERINGS("sigmoid")
def sigmoid(ctx: Context, node: Node, xs: list[Array]) -> Array:
    x = xs[0]
    e = np.exp(-np.abs(x))  # never overflows; the two halves are 1/(1+e^-x) and e^x/(1+e^x)
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


@LOWERINGS("tanh")
def tanh(ctx: Context, node: Node, xs: list[Array]) -> Array:
    return np.tanh(xs[0])


@LOWERINGS("gelu")
def gelu(ctx: Context, node: Node, xs: list[Array]) -> Array:
    x = xs[0]
    return 0.5 * x * (1 + np.vectorize(math.erf, otypes=[np.float64])(x / math.sqrt(2)))


@LOWERINGS("softmax")
def softmax(ctx: Context, node: Node, xs: list[Array]) -> Array:
    x = xs[0]
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


@LOWERINGS("leaky_relu")
def leaky_relu(ctx: Context, node: Node, xs: list[Array]) -> Array:
    x = xs[0]
    return np.where(x > 0, x, node.attrs.alpha * x)


@LOWERINGS("elu")
def elu(ctx: Context, node: Node, xs: list[Array]) -> Array:
    x = xs[0]
    return np.where(x > 0, x, node.attrs.alpha * np.expm1(np.minimum(x, 0.0)))



# SELU's constants, as the paper derives them (every framework's, to float precision)
SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946


@LOWERINGS("selu")
def selu(ctx: Context, node: Node, xs: list[Array]) -> Array:
    x = xs[0]
    return SELU_SCALE * np.where(x > 0, x, SELU_ALPHA * np.expm1(np.minimum(x, 0.0)))


@LOWERINGS("softplus")
def softplus(ctx: Context, node: Node, xs: list[Array]) -> Array:
    return np.logaddexp(0.0, xs[0])  # log(1 + e^x) without overflow


@LOWERINGS("softsign")
def softsign(ctx: Context, node: Node, xs: list[Array]) -> Array:
    return xs[0] / (1 + np.abs(xs[0]))


@LOWERINGS("silu")
def silu(ctx: Context, node: Node, xs: list[Array]) -> Array:
    return xs[0] * sigmoid(ctx, node, xs)


@LOWERINGS("hard_sigmoid")
def hard_sigmoid(ctx: Context, node: Node, xs: list[Array]) -> Array:
    return np.clip(xs[0] / 6 + 0.5, 0.0, 1.0)


@LOWERINGS("relu6")
def relu6(ctx: Context, node: Node, xs: list[Array]) -> Array:
    return np.clip(xs[0], 0.0, 6.0)


@LOWERINGS("log_softmax")
def log_softmax(ctx: Context, node: Node, xs: list[Array]) -> Array:
    shifted = xs[0] - xs[0].max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))

# -- layers ----------------------------------------------------------------------------------

@LOWERINGS("dense")
def dense(ctx: Context, node: Node, xs: list[Array]) -> Array:
    y = xs[0] @ ctx.param(node, "kernel") + ctx.bias(node)
    return ctx.activation(node, y)


def _two(v: int | tuple[int, int]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _axis(size: int, k: int, s: int, d: int, padding: str) -> tuple[int, int, int]:
    """(pad before, pad after, output length) along one axis, floor mode. TF's `same`: the
    output is ceil(size / s) long and the odd padded pixel goes after."""
    span = d * (k - 1) + 1
    if padding == "valid":
        return 0, 0, (size - span) // s + 1
    out = -(-size // s)
    total = max((out - 1) * s + span - size, 0)
    return total // 2, total - total // 2, out


def _slide(node: Node, x: Array, fill: float, channels: int,
           reduce: Callable[[Array], Array]) -> Array:
    """`reduce(window [N, kh, kw, C]) -> [N, channels]` at every output pixel of a window op,
    over `x` padded with `fill`. The output size comes from the padding rule above, not from
    the checker's shape, so a wrong shape rule shows as a mismatch (see `Interpreter`)."""
    a = node.attrs
    (kh, kw), (sh, sw) = _two(a.kernel), _two(a.strides)
    dh, dw = _two(getattr(a, "dilation", 1))  # pools have no dilation
    top, bottom, oh = _axis(x.shape[1], kh, sh, dh, a.padding)
    left, right, ow = _axis(x.shape[2], kw, sw, dw, a.padding)
    xp = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)), constant_values=fill)
    y = np.zeros((x.shape[0], oh, ow, channels))
    for i in range(oh):
        for j in range(ow):
            y[:, i, j] = reduce(xp[:, i * sh:i * sh + dh * (kh - 1) + 1:dh,
                                   j * sw:j * sw + dw * (kw - 1) + 1:dw])
    return y


@LOWERINGS("conv2d")
def conv2d(ctx: Context, node: Node, xs: list[Array]) -> Array:
    kernel = ctx.param(node, "kernel")  # [kh, kw, in / groups, out]
    kh, kw, cg, out = kernel.shape
    g = getattr(node.attrs, "groups", 1)
    # group j reads input channels [j*cg, (j+1)*cg) and makes outputs [j*og, (j+1)*og)
    grouped = kernel.reshape(kh, kw, cg, g, out // g)
    y = _slide(node, xs[0], 0.0, out, lambda win: np.einsum(
        "nhwgc,hwcgo->ngo", win.reshape(*win.shape[:3], g, cg), grouped).reshape(len(win), out))
    return ctx.activation(node, y + ctx.bias(node))


def _depthwise(node: Node, x: Array, kernel: Array) -> Array:
    """Channel c convolved with kernel[..., c, m] is output channel c * M + m."""
    _, _, c, m = kernel.shape
    return _slide(node, x, 0.0, c * m, lambda win: np.einsum(
        "nhwc,hwcm->ncm", win, kernel).reshape(len(win), c * m))


@LOWERINGS("depthwise_conv2d")
def depthwise_conv2d(ctx: Context, node: Node, xs: list[Array]) -> Array:
    y = _depthwise(node, xs[0], ctx.param(node, "kernel"))
    return ctx.activation(node, y + ctx.bias(node))


@LOWERINGS("separable_conv2d")
def separable_conv2d(ctx: Context, node: Node, xs: list[Array]) -> Array:
    y = _depthwise(node, xs[0], ctx.param(node, "depthwise_kernel"))
    y = y @ ctx.param(node, "pointwise_kernel")[0, 0]  # [mid, filters] over the channels
    return ctx.activation(node, y + ctx.bias(node))


def _transposed_axis(size: int, k: int, s: int, padding: str) -> tuple[int, int]:
    """(start, length) of the output inside the full `(size - 1) * s + k` scatter of a
    transposed convolution: Keras's lengths (`size * s` for `same`, `(size - 1) * s +
    max(k, s)` for `valid`), cropped as TF's forward `same` pads (the odd one after)."""
    full = (size - 1) * s + k
    out = size * s if padding == "same" else (size - 1) * s + max(k, s)
    return max(full - out, 0) // 2, out


@LOWERINGS("conv2d_transpose")
def conv2d_transpose(ctx: Context, node: Node, xs: list[Array]) -> Array:
    x, a = xs[0], node.attrs
    kernel = ctx.param(node, "kernel")  # [kh, kw, out, in]
    kh, kw, filters, _ = kernel.shape
    (sh, sw) = _two(a.strides)
    n, h, w, _ = x.shape
    top, oh = _transposed_axis(h, kh, sh, a.padding)
    left, ow = _transposed_axis(w, kw, sw, a.padding)
    # every input pixel scatters kernel-sized patch; room for outputs past the scatter
    full = np.zeros((n, max((h - 1) * sh + kh, top + oh), max((w - 1) * sw + kw, left + ow),
                     filters))
    for i in range(h):
        for j in range(w):
            full[:, i * sh:i * sh + kh, j * sw:j * sw + kw] += np.einsum(
                "nc,hwoc->nhwo", x[:, i, j], kernel)
    y = full[:, top:top + oh, left:left + ow]
    return ctx.activation(node, y + ctx.bias(node))


@LOWERINGS("maxpool2d")
def maxpool2d(ctx: Context, node: Node, xs: list[Array]) -> Array:
    # -inf padding is never the max: every window holds at least one real pixel
    return _slide(node, xs[0], -np.inf, xs[0].shape[3], lambda win: win.max(axis=(1, 2)))


@LOWERINGS("avgpool2d")
def avgpool2d(ctx: Context, node: Node, xs: list[Array]) -> Array:
    x = xs[0]
    total = _slide(node, x, 0.0, x.shape[3], lambda win: win.sum(axis=(1, 2)))
    # the real (unpadded) pixels under each window: the same slide over ones padded with 0
    real = _slide(node, np.ones((1, *x.shape[1:3], 1)), 0.0, 1, lambda win: win.sum(axis=(1, 2)))
    return total / real


@LOWERINGS("global_avgpool2d")
def global_avgpool2d(ctx: Context, node: Node, xs: list[Array]) -> Array:
    return xs[0].mean(axis=(1, 2))


@LOWERINGS("global_maxpool2d")
def global_maxpool2d(ctx: Context, node: Node, xs: list[Array]) -> Array:
    return xs[0].max(axis=(1, 2))


def _slide_1d(node: Node, x: Array, fill: float, channels: int,
              reduce: Callable[[Array], Array]) -> Array:
    """`reduce(window [N, k, C]) -> [N, channels]` at every output step of a 1-D window op over
    `x` `[N, T, C]` padded with `fill`: `same` as `_axis`, `causal` all before (Keras)."""
    a = node.attrs
    k, s, d = a.kernel, a.strides, getattr(a, "dilation", 1)
    if a.padding == "causal":
        before, after = d * (k - 1), 0
        out = (x.shape[1] - 1) // s + 1
    else:
        before, after, out = _axis(x.shape[1], k, s, d, a.padding)
    xp = np.pad(x, ((0, 0), (before, after), (0, 0)), constant_values=fill)
    y = np.zeros((x.shape[0], out, channels))
    for t in range(out):
        y[:, t] = reduce(xp[:, t * s:t * s + d * (k - 1) + 1:d])
    return y


@LOWERINGS("conv1d")
def conv1d(ctx: Context, node: Node, xs: list[Array]) -> Array:
    kernel = ctx.param(node, "kernel")  # [k, in, out]
    y = _slide_1d(node, xs[0], 0.0, kernel.shape[2],
                  lambda win: np.einsum("ntc,tco->no", win, kernel))
    return ctx.activation(node, y + ctx.bias(node))


@LOWERINGS("maxpool1d")
def maxpool1d(ctx: Context, node: Node, xs: list[Array]) -> Array:
    return _slide_1d(node, xs[0], -np.inf, xs[0].shape[2], lambda win: win.max(axis=1))


@LOWERINGS("avgpool1d")
def avgpool1d(ctx: Context, node: Node, xs: list[Array]) -> Array:
    x = xs[0]
    total = _slide_1d(node, x, 0.0, x.shape[2], lambda win: win.sum(axis=1))
    real = _slide_1d(node, np.ones((1, x.shape[1], 1)), 0.0, 1, lambda win: win.sum(axis=1))
    return total / real


@LOWERINGS("global_avgpool1d")
def global_avgpool1d(ctx: Context, node: Node, xs: list[Array]) -> Array:
    mask = ctx.mask_of(node.inputs[0])
    if mask is None:
        return xs[0].mean(axis=1)
    real = mask[:, :, None].astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (xs[0] * real).sum(axis=1) / real.sum(axis=1)


@LOWERINGS("global_maxpool1d")
def global_maxpool1d(ctx: Context, node: Node, xs: list[Array]) -> Array:
    return xs[0].max(axis=1)


def _bilinear_axis(x: Array, axis: int, factor: int) -> Array:
    """Linear interpolation along `axis` to `factor` times its length, half-pixel centres:
    output `o` samples input position `(o + 0.5) / factor - 0.5`, clamped to the edges."""
    size = x.shape[axis]
    pos = np.clip((np.arange(size * factor) + 0.5) / factor - 0.5, 0, size - 1)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, size - 1)
    shape = [1] * x.ndim
    shape[axis] = -1
    frac = (pos - lo).reshape(shape)
    return np.take(x, lo, axis=axis) * (1 - frac) + np.take(x, hi, axis=axis) * frac


@LOWERINGS("upsampling2d")
def upsampling2d(ctx: Context, node: Node, xs: list[Array]) -> Array:
    sh, sw = _two(node.attrs.size)
    x = xs[0]
    if node.attrs.interpolation == "nearest":
        return x.repeat(sh, axis=1).repeat(sw, axis=2)
    return _bilinear_axis(_bilinear_axis(x, 1, sh), 2, sw)


@LOWERINGS("zero_padding2d")
def zero_padding2d(ctx: Context, node: Node, xs: list[Array]) -> Array:
    p = node.attrs.padding
    if isinstance(p, int):
        (top, bottom), (left, right) = (p, p), (p, p)
    elif isinstance(p[0], int):
        (top, bottom), (left, right) = (p[0], p[0]), (p[1], p[1])
    else:
        (top, bottom), (left, right) = p
    return np.pad(xs[0], ((0, 0), (top, bottom), (left, right), (0, 0)))


@LOWERINGS("flatten")
def flatten(ctx: Context, node: Node, xs: list[Array]) -> Array:
    return xs[0].reshape(len(xs[0]), -1)  # row-major over [H, W, C]: channels-last order


@LOWERINGS("reshape")
def reshape(ctx: Context, node: Node, xs: list[Array]) -> Array:
    return xs[0].reshape(len(xs[0]), *node.attrs.shape)  # numpy resolves the -1 itself


@LOWERINGS("dropout")
def dropout(ctx: Context, node: Node, xs: list[Array]) -> Array:
    return xs[0]  # inference


@LOWERINGS("permute")
def permute(ctx: Context, node: Node, xs: list[Array]) -> Array:
    return np.transpose(xs[0], (0, *node.attrs.dims))  # dims are 1-based: the batch is 0


@LOWERINGS("repeat_vector")
def repeat_vector(ctx: Context, node: Node, xs: list[Array]) -> Array:
    return np.repeat(xs[0][:, None, :], node.attrs.n, axis=1)


@LOWERINGS("slice")
def slice_(ctx: Context, node: Node, xs: list[Array]) -> Array:
    a = node.attrs
    x = xs[0]
    axis = a.axis % (x.ndim - 1) + 1  # past the batch
    return x[(slice(None),) * axis + (slice(a.start, a.stop),)]


@LOWERINGS("layer_norm")
def layer_norm(ctx: Context, node: Node, xs: list[Array]) -> Array:
    x = xs[0]
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)  # biased
    y = (x - mean) / np.sqrt(var + node.attrs.epsilon)
    if node.attrs.scale:
        y = y * ctx.param(node, "gamma")
    if node.attrs.center:
        y = y + ctx.param(node, "beta")
    return y


@LOWERINGS("batch_norm")
def batch_norm(ctx: Context, node: Node, xs: list[Array]) -> Array:
    # inference: the moving statistics, per channel (the last axis)
    mean, var = ctx.param(node, "moving_mean"), ctx.param(node, "moving_variance")
    y = (xs[0] - mean) / np.sqrt(var + node.attrs.epsilon)
    if node.attrs.scale:
        y = y * ctx.param(node, "gamma")
    if node.attrs.center:
        y = y + ctx.param(node, "beta")
    return y


@LOWERINGS("add")
def add(ctx: Context, node: Node, xs: list[Array]) -> Array:
    total = xs[0]
    for x in xs[1:]:
        total = total + x
    return total


@LOWERINGS("concat")
def concat(ctx: Context, node: Node, xs: list[Array]) -> Array:
    axis = node.attrs.axis
    return np.concatenate(xs, axis=axis if axis < 0 else axis + 1)  # +1: the batch axis


@LOWERINGS("multiply")
def multiply(ctx: Context, node: Node, xs: list[Array]) -> Array:
    product = xs[0]
    for x in xs[1:]:
        product = product * x
    return product


@LOWERINGS("subtract")
def subtract(ctx: Context, node: Node, xs: list[Array]) -> Array:
    return xs[0] - xs[1]


@LOWERINGS("average")
def average(ctx: Context, node: Node, xs: list[Array]) -> Array:
    return add(ctx, node, xs) / len(xs)


@LOWERINGS("maximum")
def maximum(ctx: Context, node: Node, xs: list[Array]) -> Array:
    return np.maximum.reduce(xs)


@LOWERINGS("minimum")
def minimum(ctx: Context, node: Node, xs: list[Array]) -> Array:
    return np.minimum.reduce(xs)


Rule = Callable[[Context, Node, list[Array]], Array]


def _one_direction(node: Node, direction: str) -> Node:
    """The layer one direction of a bidirectional one runs (written here, not taken from the
    op's code: the reference shares nothing with what it checks)."""
    attrs = node.attrs.model_copy(update={"bidirectional": "none",
                                          "go_backwards": direction == "backward"})
    params = {k.removeprefix(f"{direction}_"): v for k, v in node.params.items()
              if k.startswith(f"{direction}_")}
    return node.model_copy(update={"attrs": attrs, "params": params})


def _both_directions(rule: Rule) -> Rule:
    """`bidirectional` (Keras's Bidirectional): the layer once forward and once backward, each
    with its own weights; a returned sequence of the backward one is flipped back to time
    order, then the two are merged."""
    def run(ctx: Context, node: Node, xs: list[Array]) -> Array:
        mode = node.attrs.bidirectional
        if mode == "none":
            return rule(ctx, node, xs)
        ys = []
        for d in ("forward", "backward"):
            view = copy.copy(ctx)
            view.weights = {f"{node.name}.{k}": ctx.weights[f"{node.name}.{d}_{k}"]
                            for k in _one_direction(node, d).params}
            ys.append(rule(view, _one_direction(node, d), xs))
        y, y_rev = ys
        if node.attrs.return_sequences:
            y_rev = y_rev[:, ::-1]
        if mode == "concat":
            merged = np.concatenate([y, y_rev], axis=-1)
        elif mode == "mul":
            merged = y * y_rev
        else:
            merged = y + y_rev if mode == "sum" else (y + y_rev) / 2
        mask = ctx.mask_of(node.inputs[0])
        if node.attrs.return_sequences and mask is not None:
            # Keras's Bidirectional: zeros at padded steps (`zero_output_for_mask`)
            merged = np.where(mask[:, :, None], merged, 0.0)
        return merged
    return run


@LOWERINGS("simple_rnn")
@_both_directions
def simple_rnn(ctx: Context, node: Node, xs: list[Array]) -> Array:
    x = xs[0]
    a = node.attrs
    kernel, recurrent = ctx.param(node, "kernel"), ctx.param(node, "recurrent_kernel")
    bias = ctx.bias(node)  # one bias (Keras's form, docs/weights.md)
    h = np.zeros((len(x), a.units))  # h_0 = 0
    keep = _step_mask(ctx, node, x)
    steps = []
    for t in _times(node, x):
        h = np.where(keep[:, t], ctx.activation(node, x[:, t] @ kernel + h @ recurrent + bias), h)
        steps.append(h)
    return _recurrent_output(node, x, h, steps)


def _times(node: Node, x: Array) -> range:
    """The steps in reading order: `go_backwards` reads the last one first."""
    n = x.shape[1]
    return range(n - 1, -1, -1) if node.attrs.go_backwards else range(n)


def _step_mask(ctx: Context, node: Node, x: Array) -> Array:
    """`[N, T, 1]`: whether step t of sample n is real. Keras: at a padded step the state
    (and so the output) stays the previous one; before the first real step it is zeros."""
    mask = ctx.mask_of(node.inputs[0])
    return np.ones(x.shape[:2] + (1,), bool) if mask is None else mask[:, :, None]


def _recurrent_output(node: Node, x: Array, h: Array, steps: list[Array]) -> Array:
    """The last state, or every state in reading order (Keras keeps `go_backwards`'s order)."""
    if node.attrs.return_sequences:
        return np.stack(steps, axis=1) if steps else np.zeros((len(x), 0, node.attrs.units))
    return h


def _gate(ctx: Context, node: Node, name: str, v: Array) -> Array:
    return LOWERINGS.lower(ctx, activation_node(node, name), [v])


@LOWERINGS("lstm")
@_both_directions
def lstm(ctx: Context, node: Node, xs: list[Array]) -> Array:
    """Keras's LSTM, gate blocks i, f, c, o along the last axis of each weight."""
    x = xs[0]
    a = node.attrs
    u = a.units
    kernel, recurrent = ctx.param(node, "kernel"), ctx.param(node, "recurrent_kernel")
    bias = ctx.bias(node)
    act, gate = a.activation, a.recurrent_activation
    h = np.zeros((len(x), u))
    c = np.zeros((len(x), u))
    keep = _step_mask(ctx, node, x)
    steps = []
    for t in _times(node, x):
        z = x[:, t] @ kernel + h @ recurrent + bias
        i = _gate(ctx, node, gate, z[:, :u])
        f = _gate(ctx, node, gate, z[:, u:2 * u])
        g = _gate(ctx, node, act, z[:, 2 * u:3 * u])
        o = _gate(ctx, node, gate, z[:, 3 * u:])
        c_next = f * c + i * g
        h = np.where(keep[:, t], o * _gate(ctx, node, act, c_next), h)
        c = np.where(keep[:, t], c_next, c)
        steps.append(h)
    return _recurrent_output(node, x, h, steps)


@LOWERINGS("gru")
@_both_directions
def gru(ctx: Context, node: Node, xs: list[Array]) -> Array:
    """Keras's GRU, gate blocks z, r, h. reset_after: the bias is [input, recurrent] and the
    reset gate scales `h @ U_h + b_rh`; else one bias and the reset gate scales `h` first."""
    x = xs[0]
    a = node.attrs
    u = a.units
    kernel, recurrent = ctx.param(node, "kernel"), ctx.param(node, "recurrent_kernel")
    if "bias" in node.params:
        bias = ctx.param(node, "bias")
        b_in, b_rec = (bias[0], bias[1]) if a.reset_after else (bias, np.zeros(3 * u))
    else:
        b_in = b_rec = np.zeros(3 * u)
    act, gate = a.activation, a.recurrent_activation
    h = np.zeros((len(x), u))
    keep = _step_mask(ctx, node, x)
    steps = []
    for t in _times(node, x):
        xw = x[:, t] @ kernel + b_in
        z = _gate(ctx, node, gate, xw[:, :u] + h @ recurrent[:, :u] + b_rec[:u])
        r = _gate(ctx, node, gate, xw[:, u:2 * u] + h @ recurrent[:, u:2 * u] + b_rec[u:2 * u])
        if a.reset_after:
            hh = _gate(ctx, node, act, xw[:, 2 * u:] + r * (h @ recurrent[:, 2 * u:] + b_rec[2 * u:]))
        else:
            hh = _gate(ctx, node, act, xw[:, 2 * u:] + (r * h) @ recurrent[:, 2 * u:])
        h = np.where(keep[:, t], z * h + (1 - z) * hh, h)
        steps.append(h)
    return _recurrent_output(node, x, h, steps)


@LOWERINGS("multi_head_attention")
def multi_head_attention(ctx: Context, node: Node, xs: list[Array]) -> Array:
    a = node.attrs
    query, value = xs[0], xs[1]
    key = xs[2] if len(xs) == 3 else value

    def project(role: str, x: Array) -> Array:  # [N, T, d] @ [d, heads, k] -> [N, T, heads, k]
        bias = ctx.param(node, f"{role}_bias") if a.use_bias else 0.0
        return np.einsum("ntd,dhk->nthk", x, ctx.param(node, f"{role}_kernel")) + bias

    q = project("query", query) / math.sqrt(a.key_dim)  # Keras scales the query
    k, v = project("key", key), project("value", value)
    scores = np.einsum("nshk,nthk->nhts", k, q)
    t, s = scores.shape[2:]
    allowed = np.ones((len(query), t, s), np.bool_)
    if a.causal:  # query i sees keys 0..i (top-left aligned when the lengths differ)
        allowed &= np.arange(t)[:, None] >= np.arange(s)[None, :]
    # Padding masks, as Keras's: a padded query step sees nothing, no step sees a padded value
    # or key step (the key's mask is the value's when no key is given).
    masks = [ctx.mask_of(name) for name in node.inputs]
    if masks[0] is not None:
        allowed &= masks[0][:, :, None]
    for m in masks[1:]:
        if m is not None:
            allowed &= m[:, None, :]
    allowed = allowed[:, None]  # every head alike
    scores = np.where(allowed, scores, -1e9)  # Keras's masked softmax
    e = np.exp(scores - scores.max(axis=-1, keepdims=True))
    weights = e / e.sum(axis=-1, keepdims=True)
    # A row that sees nothing: uniform weights (softmax of equal scores) where Keras attends
    # in one kernel (no dropout); with `dropout`, Keras's masked softmax zeroes masked weights
    # after the softmax, so such a row gives zeros.
    if a.dropout:
        weights = np.where(allowed, weights, 0.0)
    heads = np.einsum("nhts,nshv->nthv", weights, v)  # dropout: the identity at inference
    y = np.einsum("nthv,hvo->nto", heads, ctx.param(node, "output_kernel"))
    return y + (ctx.param(node, "output_bias") if a.use_bias else 0.0)


@LOWERINGS("embedding")
def embedding(ctx: Context, node: Node, xs: list[Array]) -> Array:
    ids = xs[0]
    vocab = node.attrs.vocab
    bad = (ids < 0) | (ids >= vocab)
    if bad.any():  # the frameworks fail too, or (TF on a GPU) give zeros: never a number
        raise DslError(f"layer `{node.name}` (embedding): id {int(ids[bad].flat[0])} is out of "
                       f"range for vocab {vocab} (ids are 0..{vocab - 1})", node.span)
    return ctx.param(node, "embeddings")[ids]


@LOWERINGS("position_embedding")
def position_embedding(ctx: Context, node: Node, xs: list[Array]) -> Array:
    x = xs[0]
    table = ctx.param(node, "embeddings")  # [max_len, features]
    if x.shape[1] > len(table):
        raise DslError(f"layer `{node.name}` (position_embedding): a sequence of {x.shape[1]} "
                       f"steps, but max_len is {len(table)}", node.span)
    return x + table[:x.shape[1]]


@LOWERINGS("sinusoidal_position")
def sinusoidal_position(ctx: Context, node: Node, xs: list[Array]) -> Array:
    x = xs[0]
    steps, features = x.shape[1], x.shape[2]
    table = np.zeros((steps, features))
    for p in range(steps):
        for i in range(features):
            rate = (1.0 / node.attrs.max_wavelength) ** (2 * (i // 2) / features)
            table[p, i] = math.sin(p * rate) if i % 2 == 0 else math.cos(p * rate)
    return x + table


# -- the walk --------------------------------------------------------------------------------

def _check_shape(node: Node, y: Array) -> None:
    """The rules above size their outputs themselves; a disagreement with the checker's shape
    is a bug in one of the two, never in the spec."""
    want = node.type.shape if node.type is not None else None
    got = y.shape[1:]
    if want is None or len(got) != len(want) or any(
            w is not None and w != g for w, g in zip(want, got, strict=True)):
        raise RuntimeError(f"reference: layer `{node.name}` ({node.op}) computed a "
                           f"{list(got)} value per sample, its shape rule says {want}")


def _input(i: Input, v: object) -> Array:
    """A float input as float64; an integer or boolean one (ids, flags) as int64 / bool, its
    values checked integral: a float array of ids is cast only when that loses nothing."""
    a = np.asarray(v)
    if i.type.is_float:
        return a.astype(np.float64)
    if a.dtype.kind == "f":
        if not np.all(np.isfinite(a)) or np.any(a != np.round(a)):
            raise DslError(f"input `{i.name}` is {i.type.dtype}, got non-integral values")
    elif a.dtype.kind not in "biu":
        raise DslError(f"input `{i.name}` is {i.type.dtype}, got an array of {a.dtype}")
    return a.astype(np.bool_ if i.type.dtype == "bool" else np.int64)


class Interpreter:
    """`Runtime` of the reference backend: inference, float64 inside, float32 out (as the
    frameworks give), unless `exact=True`."""

    def __init__(self, graph: Graph, weights: dict[str, np.ndarray], exact: bool = False):
        missing = [k for k in graph.param_specs() if k not in weights]
        if missing:
            raise DslError(f"weights for model `{graph.name}` lack {', '.join(missing[:5])}")
        self.graph = LOWERINGS.prepare(graph)
        self.weights = weights
        self.exact = exact

    def values(self, x: Feed) -> dict[str, Array]:
        """Every tensor of the graph (inputs and layers) for `x`, float64."""
        g = self.graph
        if isinstance(x, dict):
            xs = [x[i.name] for i in g.inputs]
        else:
            xs = list(x) if isinstance(x, list | tuple) else [x]
        if len(xs) != len(g.inputs):
            raise DslError(f"model `{g.name}` takes {len(g.inputs)} input(s), got {len(xs)}")
        env = {i.name: _input(i, v) for i, v in zip(g.inputs, xs, strict=True)}
        ctx = Context(g, self.weights, env)
        for node in g.nodes:
            env[node.name] = y = LOWERINGS.lower(ctx, node, [env[n] for n in node.inputs])
            _check_shape(node, y)
        return env

    def predict_all(self, x: Feed) -> list[np.ndarray]:
        env = self.values(x)
        dtype = np.float64 if self.exact else np.float32
        return [env[o].astype(dtype) for o in self.graph.outputs]

    def predict(self, x: Feed) -> np.ndarray:
        return self.predict_all(x)[0]
