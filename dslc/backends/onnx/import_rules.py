"""One import rule per ONNX op (the table `RULES` of import_walk.py), grouped by family: layers
with weights, windows, activations, merges, axis moves, and constants (the shape arithmetic
exporters emit around Reshape and RNN states).

A rule reads its inputs from the `Step` (`tensor`, `const`, `value`), emits spec layers with
`step.layer(op, inputs, params, **attrs)` — weights already converted to the canonical layout
(docs/weights.md) — and returns one value per ONNX output, with the axes the ONNX value has
relative to the spec tensor.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from dslc.ops.conv import same_pads

from .import_walk import (
    BATCH,
    NCHW_OF_NHWC,
    RULES,
    Axes,
    Const,
    Fill,
    Importer,
    Step,
    Tensor,
    Value,
)

SQRT2 = math.sqrt(2.0)


def _float(v: Any) -> float:
    """A float32 attribute as the shortest decimal that reads back to it (1e-05, not
    9.999999747378752e-06): the spec shows what the exporter meant."""
    return float(str(np.float32(v)))


def _pair(a: int, b: int) -> int | tuple[int, int]:
    return int(a) if a == b else (int(a), int(b))


def _known(v: Value | None) -> bool:
    return isinstance(v, Const) and v.known


def _shape_array(items: Any) -> np.ndarray:
    """A computed shape: int64 where every entry is known, else objects (BATCH, None)."""
    arr = np.asarray(items, dtype=object)
    if all(isinstance(x, int | np.integer) for x in arr.reshape(-1)):
        return arr.astype(np.int64)
    return arr


def _plain(step: Step, t: Tensor) -> Tensor:
    if t.order is not None:
        raise step.fail("reads a flattened NCHW feature map, whose order dslc cannot follow "
                        "here (only dense layers, activations and layer_norm can)")
    return t


def _image(step: Step, t: Tensor) -> Tensor:
    """`t` as an NCHW view of a channels-last image, as Conv and pooling read it."""
    _plain(step, t)
    if len(t.shape) != 3 or t.axes != NCHW_OF_NHWC:
        raise step.fail(f"reads a tensor of ONNX shape {_dims(t.onnx_shape)} as NCHW images, "
                        "but its channels are not the spec tensor's last axis",
                        hint="dslc imports NCHW image models (PyTorch's layout) and dslc's own "
                             "exports")
    if any(d is None for d in t.shape):
        raise step.fail("needs the height, width and channels of its input fixed")
    return t


def _dims(dims: Any) -> str:
    return "[" + ", ".join("N" if d == BATCH else "?" if d is None else str(d)
                           for d in dims) + "]"


def _axis(step: Step, axis: int, rank: int) -> int:
    if not -rank <= axis < rank:
        raise step.fail(f"axis {axis} is out of range for rank {rank}")
    return axis % rank


def _same_layout(step: Step, ts: list[Tensor]) -> None:
    first = ts[0]
    for t in ts[1:]:
        same_order = (t.order is None and first.order is None) or (
            t.order is not None and first.order is not None
            and np.array_equal(t.order, first.order))
        if t.axes != first.axes or not same_order:
            raise step.fail("joins tensors whose layouts differ (e.g. one NCHW, one "
                            "channels-last); dslc import cannot line them up")


def _rows(x: Tensor, kernel: np.ndarray) -> np.ndarray:
    """A dense kernel for the spec's feature order: row j of the ONNX kernel multiplies ONNX
    feature j, which is spec feature `order[j]`."""
    if x.order is None:
        return kernel
    out = np.empty_like(kernel)
    out[x.order] = kernel
    return out


def _vector(step: Step, c: np.ndarray, n: int, what: str) -> np.ndarray:
    if c.size not in (1, n) or (c.ndim and any(d != 1 for d in c.shape[:-1])):
        raise step.fail(f"its {what} has shape {list(c.shape)}; dslc expects one value per "
                        f"feature ({n})")
    return np.broadcast_to(c.reshape(-1).astype(np.float32), (n,)).copy()


# -- layers with weights ----------------------------------------------------------------------

@RULES("Gemm")
def gemm(ctx: Importer, step: Step) -> list[Value | None]:
    x = step.tensor(0)
    if x.rank != 2 or x.axes != (0, 1):
        raise step.fail(f"multiplies a tensor of ONNX shape {_dims(x.onnx_shape)}; dslc's dense "
                        "reads a batch of vectors")
    if step.attrs.get("transA", 0):
        raise step.fail("transposes its input (transA=1); dslc's dense reads a batch of rows")
    b = step.const(1, "weight matrix").astype(np.float32)
    if b.ndim != 2:
        raise step.fail(f"its weight matrix has rank {b.ndim}, not 2")
    if step.attrs.get("transB", 0):
        b = b.T
    b = b * np.float32(step.attrs.get("alpha", 1.0))
    if b.shape[0] != x.shape[0]:
        raise step.fail(f"its weight matrix {list(b.shape)} does not fit {x.shape[0]} features")
    units = int(b.shape[1])
    params = {"kernel": _rows(x, b)}
    c = step.optional_const(2, "bias")
    attrs: dict[str, Any] = {"units": units}
    if c is not None:
        params["bias"] = _vector(step, c * np.float32(step.attrs.get("beta", 1.0)), units, "bias")
    else:
        attrs["use_bias"] = False
    return [step.layer("dense", [x], params, **attrs)]


@RULES("MatMul")
def matmul(ctx: Importer, step: Step) -> list[Value | None]:
    a, b = step.value(0), step.value(1)
    if isinstance(a, Const) and isinstance(b, Const) and a.known and b.known:
        return [Const(np.matmul(a.array, b.array))]
    if ctx.from_dslc and step.proto.name.endswith("/query"):
        return _attention(ctx, step)
    x = step.tensor(0)
    w = step.const(1, "weight matrix").astype(np.float32)
    if w.ndim != 2:
        raise step.fail(f"multiplies by a constant of rank {w.ndim}; dslc's dense takes a matrix")
    if x.axes[-1] != len(x.shape) or (x.rank == 2 and x.axes != (0, 1)):
        raise step.fail(f"multiplies a tensor of ONNX shape {_dims(x.onnx_shape)} whose last "
                        "axis is not the spec tensor's feature axis")
    if w.shape[0] != x.shape[-1]:
        raise step.fail(f"its weight matrix {list(w.shape)} does not fit {x.shape[-1]} features")
    y = step.layer("dense", [x], {"kernel": _rows(x, w)}, units=int(w.shape[1]), use_bias=False)
    ctx.by_name[y.name].bias_from_add = step.proto.output[0]
    return [Tensor(y.name, y.shape, x.axes)]  # dense maps the last axis; the others stay


# The nodes of dslc's export of multi_head_attention (lower.py), `<layer>/<role>`, by role.
ATTENTION_ROLES = {
    **{f"{r}{suffix}": op for r in ("query", "key", "value")
       for suffix, op in (("", "MatMul"), ("_bias", "Add"), ("_heads", "Reshape"),
                          ("_by_head", "Transpose"))},
    "scaled_query": "Mul", "scores": "MatMul", "lengths": "Shape", "all": "ConstantOfShape",
    "causal": "Trilu", "masked": "Where", "weights": "Softmax", "attend": "MatMul",
    "by_step": "Transpose", "merge_heads": "Reshape", "output": "MatMul", "output_bias": "Add",
}
ATTENTION_NEEDED = {"query", "key", "value", "query_heads", "value_heads", "scaled_query",
                    "scores", "weights", "attend", "by_step", "merge_heads", "output"}


def _attention(ctx: Importer, step: Step) -> list[Value | None]:
    """dslc's own export of multi_head_attention (its nodes `<layer>/<role>`, as lower.py
    writes them) read back as one layer; any other attention graph is refused."""
    layer = step.proto.name[:-len("/query")]
    nodes = {n.name[len(layer) + 1:]: (i, n) for i, n in enumerate(ctx.graph.node)
             if n.name.startswith(layer + "/")}
    wrong = [f"{r} ({n.op_type})" for r, (_, n) in nodes.items()
             if ATTENTION_ROLES.get(r) != n.op_type]
    if wrong or ATTENTION_NEEDED - set(nodes):
        raise step.fail("looks like dslc's export of multi_head_attention but is not exactly "
                        "it (" + ", ".join(wrong or sorted(ATTENTION_NEEDED - set(nodes)))
                        + "); dslc import reads multi_head_attention only as dslc writes it")

    def node(role: str) -> Step:
        from .import_walk import Step as NodeStep

        i, n = nodes[role]
        return NodeStep(ctx, n, i)

    def matrix(role: str) -> np.ndarray:
        return node(role).const(1, f"{role} weights").astype(np.float32)

    def heads_shape(role: str) -> tuple[int, int]:
        dims = node(f"{role}_heads").const(1, "head shape").reshape(-1)
        return int(dims[2]), int(dims[3])

    heads, key_dim = heads_shape("query")
    _, value_dim = heads_shape("value")
    scale = node("scaled_query").const(1, "scale").reshape(-1)
    if not math.isclose(float(scale[0]), 1 / math.sqrt(key_dim), rel_tol=1e-6):
        raise step.fail(f"scales the query by {float(scale[0])}, not 1/sqrt(key_dim); dslc's "
                        "multi_head_attention scales by 1/sqrt(key_dim)")
    query, value, key = (node(r).tensor(0) for r in ("query", "value", "key"))
    use_bias = "query_bias" in nodes
    params: dict[str, np.ndarray] = {}
    for role, size in (("query", key_dim), ("key", key_dim), ("value", value_dim)):
        w = matrix(role)
        params[f"{role}_kernel"] = w.reshape(w.shape[0], heads, size)
        if use_bias:
            params[f"{role}_bias"] = node(f"{role}_bias").const(1, "bias").astype(
                np.float32).reshape(heads, size)
    w = matrix("output")
    params["output_kernel"] = w.reshape(heads, value_dim, w.shape[-1])
    out = "output"
    if use_bias:
        params["output_bias"] = node("output_bias").const(1, "bias").astype(
            np.float32).reshape(-1)
        out = "output_bias"
    attrs: dict[str, Any] = {"heads": heads, "key_dim": key_dim, "use_bias": use_bias,
                             "causal": "masked" in nodes}
    if value_dim != key_dim:
        attrs["value_dim"] = value_dim
    if w.shape[-1] != query.shape[-1]:
        attrs["output_dim"] = int(w.shape[-1])
    separate_key = node("key").proto.input[0] != node("value").proto.input[0]
    inputs = [query, value, key] if separate_key else [query, value]
    y = step.layer("multi_head_attention", inputs, params, **attrs)
    ctx.claimed.update(i for i, _ in nodes.values())
    ctx.values[nodes[out][1].output[0]] = y
    return [None]


def _padding(step: Step, hw: tuple[int, int], kernel: list[int], strides: list[int],
             dilations: list[int]) -> str:
    """`valid` or `same` (TensorFlow's: the odd pixel after), or a located error."""
    auto = step.attrs.get("auto_pad", "NOTSET")
    tf = [same_pads(hw[i], kernel[i], strides[i], dilations[i]) for i in (0, 1)]
    if auto == "VALID":
        return "valid"
    if auto == "SAME_UPPER":
        return "same"
    if auto == "SAME_LOWER":
        if all(a == b for a, b in tf):
            return "same"
        raise step.fail("pads `SAME_LOWER` (the odd pixel before); dslc's `same` puts it after")
    pads = step.ints("pads", [0, 0, 0, 0])
    if not any(pads):
        return "valid"
    if (pads[0], pads[2]) == tf[0] and (pads[1], pads[3]) == tf[1]:
        return "same"
    want = [tf[0][0], tf[1][0], tf[0][1], tf[1][1]]
    raise step.fail(f"pads {pads} (top, left, bottom, right) are neither none nor TensorFlow's "
                    f"`same` padding for this input, {want}; dslc pads a window `valid` or "
                    "`same`", hint="export the model with padding that is 0 or `same` "
                                   "(e.g. an odd kernel with stride 1 and padding k // 2)")


@RULES("Conv")
def conv(ctx: Importer, step: Step) -> list[Value | None]:
    w = step.const(1, "weights").astype(np.float32)
    if w.ndim == 3:
        return _conv1d(step, w)
    x = _image(step, step.tensor(0))
    if w.ndim != 4:
        raise step.fail(f"a {w.ndim - 2}-D convolution; dslc's convolutions are 1-D and 2-D")
    group = int(step.attrs.get("group", 1))
    channels = int(x.shape[2])  # type: ignore[arg-type]
    if w.shape[1] * group != channels:
        raise step.fail(f"its weights {list(w.shape)} in {group} group(s) do not fit "
                        f"{channels} input channels")
    kernel = [int(w.shape[2]), int(w.shape[3])]
    strides = step.ints("strides", [1, 1])
    dilations = step.ints("dilations", [1, 1])
    padding = _padding(step, (x.shape[0], x.shape[1]), kernel, strides,  # type: ignore[arg-type]
                       dilations)
    b = step.optional_const(2, "bias")
    window: dict[str, Any] = {"kernel": _pair(*kernel), "strides": _pair(*strides),
                              "padding": padding, "dilation": _pair(*dilations),
                              "use_bias": b is not None}
    if group == channels > 1 and w.shape[0] % channels == 0:
        # one group per channel: depthwise; ONNX's output channel c * M + m is Keras's [c, m]
        m = int(w.shape[0]) // channels
        params = {"kernel": w[:, 0].transpose(1, 2, 0).reshape(*kernel, channels, m)}
        if b is not None:
            params["bias"] = _vector(step, b, int(w.shape[0]), "bias")
        y = step.layer("depthwise_conv2d", [x], params, depth_multiplier=m, **window)
        return [y.with_axes(NCHW_OF_NHWC)]
    params = {"kernel": w.transpose(2, 3, 1, 0)}  # [out, in, kh, kw] → [kh, kw, in, out]
    if b is not None:
        params["bias"] = _vector(step, b, int(w.shape[0]), "bias")
    y = step.layer("conv2d", [x], params, filters=int(w.shape[0]), groups=group, **window)
    return [y.with_axes(NCHW_OF_NHWC)]


NCW_OF_NWC: Axes = (0, 2, 1)  # a `[N, C, T]` view of the spec's `[T, C]` sequence


def _sequence(step: Step, t: Tensor) -> Tensor:
    """`t` as an `[N, C, T]` view of a `[T, C]` sequence, as 1-D Conv and pooling read it."""
    _plain(step, t)
    if len(t.shape) != 2 or t.axes != NCW_OF_NWC:
        raise step.fail(f"reads a tensor of ONNX shape {_dims(t.onnx_shape)} as [N, C, T] "
                        "sequences, but its channels are not the spec tensor's last axis")
    if t.shape[1] is None:
        raise step.fail("needs the channels of its input fixed")
    return t


def _padding_1d(step: Step, size: int | None, k: int, s: int, d: int,
                causal: bool) -> str:
    """`valid`, `same` (TensorFlow's) or, for a convolution, `causal` (all before)."""
    auto = step.attrs.get("auto_pad", "NOTSET")
    if auto == "VALID":
        return "valid"
    pads = step.ints("pads", [0, 0])
    if auto == "NOTSET" and not any(pads):
        return "valid"
    if size is None and s != 1:
        raise step.fail("pads a strided window over a length known only at run time")
    total = d * (k - 1) if s == 1 else sum(same_pads(int(size), k, s, d))  # type: ignore[arg-type]
    tf = (total // 2, total - total // 2)
    if auto == "SAME_UPPER" or (auto == "SAME_LOWER" and tf[0] == tf[1]) or \
            (auto == "NOTSET" and tuple(pads) == tf):
        return "same"
    if causal and auto == "NOTSET" and tuple(pads) == (d * (k - 1), 0):
        return "causal"
    raise step.fail(f"pads {pads} (start, end) are neither none, TensorFlow's `same` "
                    f"padding for this input, {list(tf)}"
                    + (f", nor causal, {[d * (k - 1), 0]}" if causal else "")
                    + "; dslc pads a window `valid` or `same`"
                    + (" or `causal`" if causal else ""))


def _conv1d(step: Step, w: np.ndarray) -> list[Value | None]:
    x = _sequence(step, step.tensor(0))
    if int(step.attrs.get("group", 1)) != 1:
        raise step.fail(f"a grouped 1-D convolution (group={step.attrs['group']}); dslc's "
                        "conv1d has one group")
    if w.shape[1] != x.shape[1]:
        raise step.fail(f"its weights {list(w.shape)} do not fit {x.shape[1]} input channels")
    k = int(w.shape[2])
    (s,) = step.ints("strides", [1])
    (d,) = step.ints("dilations", [1])
    padding = _padding_1d(step, x.shape[0], k, s, d, causal=True)
    params = {"kernel": w.transpose(2, 1, 0)}  # [out, in, k] → [k, in, out]
    b = step.optional_const(2, "bias")
    if b is not None:
        params["bias"] = _vector(step, b, int(w.shape[0]), "bias")
    y = step.layer("conv1d", [x], params, filters=int(w.shape[0]), kernel=k, strides=s,
                   padding=padding, dilation=d, use_bias=b is not None)
    return [y.with_axes(NCW_OF_NWC)]


def _pool1d(step: Step, op: str) -> list[Value | None]:
    x = _sequence(step, step.tensor(0))
    (k,) = step.ints("kernel_shape")
    (s,) = step.ints("strides", [1])
    if any(d != 1 for d in step.ints("dilations", [1])):
        raise step.fail(f"a dilated window; dslc's {op} has none")
    step.no_output_used(1, "indices")
    n = x.shape[0]
    padding = _padding_1d(step, n, k, s, 1, causal=False)
    if step.attrs.get("ceil_mode", 0):
        pads = (0, 0) if padding == "valid" else _padding_pair(n, k, s)
        if n is None or (n + sum(pads) - k) % s:
            raise step.fail("rounds its output size up (ceil_mode=1), which may give another "
                            "size than dslc's floor mode", hint="export with ceil_mode=False")
    if (op == "avgpool1d" and padding == "same" and step.attrs.get("count_include_pad", 0)
            and any(_padding_pair(n, k, s))):
        raise step.fail("counts padded steps in its averages (count_include_pad=1); dslc's "
                        "avgpool1d averages real steps only",
                        hint="export with count_include_pad=False")
    attrs: dict[str, Any] = {"kernel": k, "padding": padding}
    if s != k:
        attrs["strides"] = s
    return [step.layer(op, [x], **attrs).with_axes(NCW_OF_NWC)]


def _padding_pair(n: int | None, k: int, s: int) -> tuple[int, int]:
    total = k - 1 if s == 1 else sum(same_pads(int(n), k, s, 1))  # type: ignore[arg-type]
    return total // 2, total - total // 2


@RULES("ConvTranspose")
def conv_transpose(ctx: Importer, step: Step) -> list[Value | None]:
    from dslc.ops.conv import transpose_crops

    x = _image(step, step.tensor(0))
    w = step.const(1, "weights").astype(np.float32)
    if w.ndim != 4:
        raise step.fail(f"a {w.ndim - 2}-D transposed convolution; dslc's conv2d_transpose "
                        "is 2-D")
    if int(step.attrs.get("group", 1)) != 1:
        raise step.fail("a grouped transposed convolution; dslc's conv2d_transpose has one "
                        "group")
    if any(d != 1 for d in step.ints("dilations", [1, 1])):
        raise step.fail("a dilated transposed convolution; dslc's conv2d_transpose has none")
    if w.shape[0] != x.shape[2]:
        raise step.fail(f"its weights {list(w.shape)} do not fit {x.shape[2]} input channels")
    if "output_shape" in step.attrs or step.attrs.get("auto_pad", "NOTSET") != "NOTSET":
        raise step.fail("sizes its output with output_shape or auto_pad; dslc import reads "
                        "explicit pads")
    kernel = [int(w.shape[2]), int(w.shape[3])]
    strides = step.ints("strides", [1, 1])
    pads = step.ints("pads", [0, 0, 0, 0])
    extra = step.ints("output_padding", [0, 0])
    # what is removed from the full (size - 1) * s + k output, before and after
    crops = [(pads[i], pads[i + 2] - extra[i]) for i in (0, 1)]
    hw = (int(x.shape[0]), int(x.shape[1]))  # type: ignore[arg-type]
    padding = next((p for p in ("valid", "same") if all(
        transpose_crops(hw[i], kernel[i], strides[i], p) == crops[i] for i in (0, 1))), None)
    if padding is None:
        raise step.fail(f"pads {pads} with output_padding {extra}, which gives neither "
                        "Keras's `valid` nor `same` output size and alignment for this input",
                        hint="for `same`: kernel k, stride s, padding (k - s) // 2 ... as "
                             "Keras computes; or no padding with a kernel >= the stride")
    params = {"kernel": w.transpose(2, 3, 1, 0)}  # [in, out, kh, kw] → [kh, kw, out, in]
    b = step.optional_const(2, "bias")
    if b is not None:
        params["bias"] = _vector(step, b, int(w.shape[1]), "bias")
    y = step.layer("conv2d_transpose", [x], params, filters=int(w.shape[1]),
                   kernel=_pair(*kernel), strides=_pair(*strides), padding=padding,
                   use_bias=b is not None)
    return [y.with_axes(NCHW_OF_NHWC)]


@RULES("Resize")
def resize(ctx: Importer, step: Step) -> list[Value | None]:
    x = _image(step, step.tensor(0))
    scales_at, sizes_at = (1, None) if ctx.opset < 11 else (2, 3)
    scales = step.optional_const(scales_at, "scales")
    sizes = step.optional_const(sizes_at, "sizes") if sizes_at else None
    if scales is not None and scales.size:
        factors = [float(f) for f in scales.reshape(-1)]
    elif sizes is not None:
        onnx_in = [1, x.shape[2], x.shape[0], x.shape[1]]
        factors = [int(o) / int(i) if i else 0.0
                   for o, i in zip(sizes.reshape(-1), onnx_in)]
    else:
        raise step.fail("gives neither scales nor sizes")
    if len(factors) != 4 or factors[:2] != [1.0, 1.0] or any(
            f != int(f) or f < 1 for f in factors[2:]) or "axes" in step.attrs:
        raise step.fail(f"scales by {factors}; dslc's upsampling2d scales height and width by "
                        "whole numbers")
    mode = step.attrs.get("mode", "nearest")
    coords = step.attrs.get("coordinate_transformation_mode", "half_pixel")
    if step.attrs.get("antialias", 0):
        raise step.fail("antialiases; dslc's upsampling2d does not")
    if mode == "nearest" and coords == "asymmetric" and step.attrs.get(
            "nearest_mode", "round_prefer_floor") == "floor":
        interpolation = "nearest"
    elif mode == "linear" and coords in ("half_pixel", "pytorch_half_pixel"):
        interpolation = "bilinear"  # the same wherever the output is longer than 1
    else:
        raise step.fail(f"resizes `{mode}` with `{coords}` coordinates; dslc's upsampling2d "
                        "is nearest (asymmetric, floor) or bilinear (half_pixel)")
    attrs: dict[str, Any] = {"size": _pair(int(factors[2]), int(factors[3]))}
    if interpolation != "nearest":
        attrs["interpolation"] = interpolation
    return [step.layer("upsampling2d", [x], **attrs).with_axes(NCHW_OF_NHWC)]


@RULES("Pad")
def pad(ctx: Importer, step: Step) -> list[Value | None]:
    x = _plain(step, step.tensor(0))
    if step.attrs.get("mode", "constant") != "constant":
        raise step.fail(f"pads in `{step.attrs['mode']}` mode; dslc's zero_padding2d pads "
                        "with zeros")
    if "pads" in step.attrs:  # before opset 11
        pads, value = step.ints("pads"), float(step.attrs.get("value", 0.0))
        axes = list(range(x.rank))
    else:
        pads = [int(p) for p in step.const(1, "pads").reshape(-1)]
        v = step.optional_const(2, "padding value")
        value = 0.0 if v is None or not v.size else float(v.reshape(-1)[0])
        a = step.optional_const(3, "axes")
        axes = list(range(x.rank)) if a is None else [_axis(step, int(i), x.rank)
                                                      for i in a.reshape(-1)]
    if value != 0.0:
        raise step.fail(f"pads with {value}; dslc's zero_padding2d pads with zeros")
    n = len(axes)
    by_spec: dict[int | None, tuple[int, int]] = {}
    for i, ax in enumerate(axes):
        if (pads[i], pads[i + n]) != (0, 0):
            by_spec[x.axes[ax]] = (pads[i], pads[i + n])
    if len(x.shape) != 3 or set(by_spec) - {1, 2} or any(
            p < 0 for pair in by_spec.values() for p in pair):
        raise step.fail(f"pads {pads} on a tensor of ONNX shape {_dims(x.onnx_shape)}; dslc's "
                        "zero_padding2d adds zeros around an image's height and width only")
    (top, bottom), (left, right) = by_spec.get(1, (0, 0)), by_spec.get(2, (0, 0))
    padding: Any = ((top, bottom), (left, right))
    if top == bottom and left == right:
        padding = top if top == left else (top, left)
    y = step.layer("zero_padding2d", [x], padding=padding)
    return [y.with_axes(x.axes)]


def _pool(step: Step, op: str) -> list[Value | None]:
    kernel = step.ints("kernel_shape")
    if len(kernel) == 1:
        return _pool1d(step, op.replace("2d", "1d"))
    x = _image(step, step.tensor(0))
    if len(kernel) != 2:
        raise step.fail(f"a {len(kernel)}-D window; dslc's {op} is 2-D")
    strides = step.ints("strides", [1, 1])
    if any(d != 1 for d in step.ints("dilations", [1, 1])):
        raise step.fail(f"a dilated window; dslc's {op} has none")
    step.no_output_used(1, "indices")
    hw = (int(x.shape[0]), int(x.shape[1]))  # type: ignore[arg-type]
    padding = _padding(step, hw, kernel, strides, [1, 1])
    if step.attrs.get("ceil_mode", 0):
        pads = _same(hw, kernel, strides) if padding == "same" else [(0, 0), (0, 0)]
        for i in (0, 1):
            if (hw[i] + sum(pads[i]) - kernel[i]) % strides[i]:
                raise step.fail("rounds its output size up (ceil_mode=1), which for this input "
                                "gives another size than dslc's floor mode",
                                hint="export with ceil_mode=False")
    if (op == "avgpool2d" and padding == "same" and step.attrs.get("count_include_pad", 0)
            and any(p != (0, 0) for p in _same(hw, kernel, strides))):
        raise step.fail("counts padded pixels in its averages (count_include_pad=1); dslc's "
                        "avgpool2d averages real pixels only",
                        hint="export with count_include_pad=False")
    attrs: dict[str, Any] = {"kernel": _pair(*kernel), "padding": padding}
    if strides != kernel:
        attrs["strides"] = _pair(*strides)
    return [step.layer(op, [x], **attrs).with_axes(NCHW_OF_NHWC)]


def _same(hw: tuple[int, int], kernel: list[int], strides: list[int]) -> list[tuple[int, int]]:
    return [same_pads(hw[i], kernel[i], strides[i], 1) for i in (0, 1)]


@RULES("MaxPool")
def maxpool(ctx: Importer, step: Step) -> list[Value | None]:
    return _pool(step, "maxpool2d")


@RULES("AveragePool")
def avgpool(ctx: Importer, step: Step) -> list[Value | None]:
    return _pool(step, "avgpool2d")


@RULES("GlobalAveragePool", "GlobalMaxPool")
def global_pool(ctx: Importer, step: Step) -> list[Value | None]:
    op = "global_avgpool2d" if step.op_type == "GlobalAveragePool" else "global_maxpool2d"
    v = step.tensor(0)
    if v.rank == 3:  # [N, C, T] → [N, C, 1]
        x = _sequence(step, v)
        return [step.layer(op.replace("2d", "1d"), [x]).with_axes((0, 1, None))]
    x = _image(step, v)
    return [step.layer(op, [x]).with_axes((0, 1, None, None))]  # [N, C, 1, 1]


@RULES("ReduceMean", "ReduceMax")
def reduce(ctx: Importer, step: Step) -> list[Value | None]:
    v = step.value(0)
    axes = step.ints("axes") if "axes" in step.attrs else (
        [int(a) for a in step.const(1, "axes").reshape(-1)] if step.value(1) is not None else [])
    keep = bool(step.attrs.get("keepdims", 1))
    if isinstance(v, Const) and v.known:
        fn = np.mean if step.op_type == "ReduceMean" else np.max
        return [Const(np.asarray(fn(v.array, axis=tuple(axes) or None, keepdims=keep)))]
    x = _plain(step, step.tensor(0))
    axes = [_axis(step, a, x.rank) for a in axes]
    if len(x.shape) == 2 and {x.axes[a] for a in axes} - {None} == {1}:  # over the steps
        op = "global_avgpool1d" if step.op_type == "ReduceMean" else "global_maxpool1d"
        y = step.layer(op, [x])
        out_axes = [None if i in axes else (a if a in (0, None) else 1)  # channels: 2 → 1
                    for i, a in enumerate(x.axes) if i not in axes or keep]
        return [y.with_axes(tuple(out_axes))]
    if len(x.shape) != 3 or {x.axes[a] for a in axes} - {None} != {1, 2}:
        raise step.fail(f"reduces axes {axes} of a tensor of ONNX shape {_dims(x.onnx_shape)}; "
                        "dslc reads a mean or max only over an image's height and width "
                        "(global_avgpool2d, global_maxpool2d)")
    op = "global_avgpool2d" if step.op_type == "ReduceMean" else "global_maxpool2d"
    y = step.layer(op, [x])
    renumber = {0: 0, 3: 1, None: None}
    out: list[int | None] = []
    for i, a in enumerate(x.axes):
        if i in axes:
            if keep:
                out.append(None)
        else:
            out.append(renumber[a])
    return [y.with_axes(tuple(out))]


@RULES("LayerNormalization")
def layer_norm(ctx: Importer, step: Step) -> list[Value | None]:
    x = step.tensor(0)
    axis = _axis(step, int(step.attrs.get("axis", -1)), x.rank)
    if [a for a in x.axes[axis:] if a is not None] != [len(x.shape)]:
        raise step.fail(f"normalizes over ONNX axes {axis}.. of {_dims(x.onnx_shape)}; dslc's "
                        "layer_norm normalizes the channels-last last axis only")
    features = int(x.shape[-1])  # type: ignore[arg-type]
    step.no_output_used(1, "mean")
    step.no_output_used(2, "inverse standard deviation")
    params: dict[str, np.ndarray] = {}
    scale = _dslc_fixed(ctx, step, 1, "unit_scale", 1.0)
    if scale:
        params["gamma"] = _rows(x, _vector(step, step.const(1, "scale"), features, "scale"))
    b = step.optional_const(2, "bias")
    if b is not None:
        params["beta"] = _rows(x, _vector(step, b, features, "bias"))
    y = step.layer("layer_norm", [x], params, epsilon=_float(step.attrs.get("epsilon", 1e-5)),
                   center=b is not None, scale=scale)
    return [Tensor(y.name, y.shape, x.axes, x.order)]


@RULES("BatchNormalization")
def batch_norm(ctx: Importer, step: Step) -> list[Value | None]:
    x = step.tensor(0)
    if int(step.attrs.get("training_mode", 0)):
        raise step.fail("is in training mode; dslc imports inference graphs")
    if x.rank < 2 or x.axes[1] != len(x.shape):
        raise step.fail(f"normalizes ONNX axis 1 of {_dims(x.onnx_shape)}, which is not the "
                        "spec's channels-last last axis")
    channels = int(x.shape[-1])  # type: ignore[arg-type]
    names = ("gamma", "beta", "moving_mean", "moving_variance")
    whats = ("scale", "bias", "mean", "variance")
    scale = _dslc_fixed(ctx, step, 1, "unit_scale", 1.0)
    center = _dslc_fixed(ctx, step, 2, "zero_bias", 0.0)
    params = {name: _rows(x, _vector(step, step.const(i + 1, what), channels, what))
              for i, (name, what) in enumerate(zip(names, whats, strict=True))
              if (scale or name != "gamma") and (center or name != "beta")}
    # ONNX's momentum is Keras's (the share the old statistics keep); its default is 0.9
    y = step.layer("batch_norm", [x], params, epsilon=_float(step.attrs.get("epsilon", 1e-5)),
                   momentum=_float(step.attrs.get("momentum", 0.9)), scale=scale,
                   center=center)
    return [Tensor(y.name, y.shape, x.axes, x.order)]


def _dslc_fixed(ctx: Importer, step: Step, i: int, role: str, value: float) -> bool:
    """False where input `i` is the constant dslc's export writes for a norm without that
    parameter (`scale=false`: `<layer>.unit_scale`, ones; `center=false`: `.zero_bias`)."""
    name = step.proto.input[i] if i < step.arity else ""
    v = step.value(i)
    return not (ctx.from_dslc and name.endswith(f".{role}") and _known(v)
                and bool(np.all(v.array == value)))  # type: ignore[union-attr]


# The RNN op's activation functions that are dslc activations at their default attributes.
RNN_ACTIVATIONS = {"Tanh": "tanh", "Relu": "relu", "Sigmoid": "sigmoid",
                   "LeakyRelu": "leaky_relu", "Elu": "elu"}


def _rnn_activation(step: Step) -> str:
    from dslc.ops.registry import get_op

    acts = step.attrs.get("activations", ["Tanh"])
    if len(acts) != 1:
        raise step.fail(f"has {len(acts)} activation functions; dslc's simple_rnn has one")
    fn = acts[0]
    alpha = step.attrs.get("activation_alpha", [None])[0]
    beta = step.attrs.get("activation_beta", [None])[0]
    if fn == "Affine" and _float(alpha if alpha is not None else 1.0) == 1.0 and not beta:
        return "linear"
    name = RNN_ACTIVATIONS.get(fn)
    if name is not None and alpha is not None:
        default = getattr(get_op(name).Attrs(), "alpha", None)
        if default is None or _float(alpha) != default:
            name = None
    if name is None:
        raise step.fail(f"applies `{fn}`" + (f" with alpha {_float(alpha)}" if alpha else "")
                        + "; dslc's simple_rnn takes tanh, relu, sigmoid, linear, or "
                          "leaky_relu and elu at their default alpha")
    return name


def _recurrent_input(step: Step) -> Tensor:
    """The sequence an RNN/LSTM/GRU node reads, checked to be the spec's `[time, features]`
    in the node's layout (time-major unless layout=1)."""
    layout = int(step.attrs.get("layout", 0))
    x = _plain(step, step.tensor(0))
    if x.axes != ((1, 0, 2) if layout == 0 else (0, 1, 2)):
        raise step.fail(f"reads a tensor of ONNX shape {_dims(x.onnx_shape)} as a sequence, "
                        "but its axes are not the spec tensor's [time, features]")
    return x


def _recurrent_checks(step: Step, op: str, states: tuple[int, ...]) -> bool:
    """The node's direction as dslc's `go_backwards`; refuses what a dslc layer lacks."""
    direction = step.attrs.get("direction", "forward")
    if direction == "bidirectional":
        raise step.fail(f"runs bidirectional, which dslc import does not read yet (a spec "
                        f"writes it `{op}(units, bidirectional=concat)`)",
                        hint="export one direction per layer, or concatenate a forward and a "
                             "go_backwards layer in the spec")
    if direction not in ("forward", "reverse"):
        raise step.fail(f"runs in direction `{direction}`, which ONNX does not define")
    if "clip" in step.attrs:
        raise step.fail(f"clips its cell values; dslc's {op} does not")
    if step.value(4) is not None:
        raise step.fail(f"takes sequence lengths; dslc's {op} runs every step")
    for i in states:
        h0 = step.value(i)
        if h0 is not None and not ((isinstance(h0, Fill) and h0.value == 0) or (
                _known(h0) and not np.any(h0.array))):  # type: ignore[union-attr]
            raise step.fail(f"starts from a given initial state (input {i}); dslc's {op} "
                            "starts from zeros")
    return direction == "reverse"


def _recurrent_outputs(ctx: Importer, step: Step, x: Tensor, op: str, attrs: dict[str, Any],
                       params: dict[str, np.ndarray], backwards: bool) -> list[Value | None]:
    """Emit the layer; Y and Y_h as values whose first reader settles return_sequences."""
    from .import_walk import Layer

    if backwards:
        attrs["go_backwards"] = True
    name = ctx.layer_name(step, op)
    seq = ctx.infer(step, op, {**attrs, "return_sequences": True}, [x.shape])
    last = ctx.infer(step, op, attrs, [x.shape])
    ctx.add(Layer(name, op, [x.name], attrs, params, step.index, None))
    layout = int(step.attrs.get("layout", 0))
    # Y: [T, 1, N, H] (layout 0) or [N, T, 1, H]; Y_h (and Y_c): [1, N, H] or [N, 1, H].
    y_axes: Axes = (1, None, 0, 2) if layout == 0 else (0, 1, None, 2)
    h_axes: Axes = (None, 0, 1) if layout == 0 else (0, None, 1)
    # ONNX gives a reverse run's outputs in time order, Keras's go_backwards in reading order.
    return [Tensor(name, seq, y_axes, rnn="seq", flipped=backwards),
            Tensor(name, last, h_axes, rnn="last")]


@RULES("RNN")
def rnn(ctx: Importer, step: Step) -> list[Value | None]:
    x = _recurrent_input(step)
    backwards = _recurrent_checks(step, "simple_rnn", (5,))
    w = step.const(1, "input weights").astype(np.float32)[0]  # [units, features]
    r = step.const(2, "recurrent weights").astype(np.float32)[0]  # [units, units]
    units = int(step.attrs.get("hidden_size", w.shape[0]))
    params = {"kernel": w.T, "recurrent_kernel": r.T}
    b = step.optional_const(3, "bias")
    if b is not None:  # ONNX keeps two biases that are only ever added: the canonical one
        b = b.astype(np.float32).reshape(-1)
        params["bias"] = b[:units] + b[units:]
    attrs: dict[str, Any] = {"units": units, "activation": _rnn_activation(step)}
    if b is None:
        attrs["use_bias"] = False
    return _recurrent_outputs(ctx, step, x, "simple_rnn", attrs, params, backwards)


# The gate functions of ONNX's LSTM and GRU that are dslc's gate activations; Affine only as
# the identity (alpha 1, beta 0). `activation_alpha/beta` are consumed in order by the
# functions that take them.
GATE_NAMES = {"Tanh": "tanh", "Sigmoid": "sigmoid", "Relu": "relu"}
TAKES_ALPHA = ("Affine", "LeakyRelu", "ThresholdedRelu", "ScaledTanh", "HardSigmoid", "Elu")
TAKES_BETA = ("Affine", "ScaledTanh", "HardSigmoid")


def _gate_functions(step: Step, op: str, defaults: list[str]) -> list[str]:
    acts = list(step.attrs.get("activations", defaults))
    if len(acts) != len(defaults):
        raise step.fail(f"has {len(acts)} activation functions; a one-direction "
                        f"{step.op_type} has {len(defaults)}")
    alphas = list(step.attrs.get("activation_alpha", []))
    betas = list(step.attrs.get("activation_beta", []))
    out = []
    for fn in acts:
        alpha = alphas.pop(0) if fn in TAKES_ALPHA and alphas else None
        beta = betas.pop(0) if fn in TAKES_BETA and betas else None
        if fn == "Affine" and _float(1.0 if alpha is None else alpha) == 1.0 and not beta:
            out.append("linear")
        elif fn in GATE_NAMES and alpha is None and beta is None:
            out.append(GATE_NAMES[fn])
        else:
            raise step.fail(f"applies `{fn}`" + (f" with alpha {_float(alpha)}" if alpha else "")
                            + f" in a gate; dslc's {op} takes tanh, sigmoid, relu or linear")
    return out


def _onnx_gates(w: np.ndarray, order: list[int], gates: int) -> np.ndarray:
    """ONNX's `[gates * units, ...]` gate blocks (axis 0) in Keras's order along the last axis:
    Keras block k is ONNX block `order[k]`; the result is `[..., gates * units]`."""
    blocks = np.split(w, gates, axis=0)
    return np.concatenate([blocks[k] for k in order], axis=0).T


# ONNX's LSTM gates i, o, f, c; Keras's i, f, c, o are ONNX blocks 0, 2, 3, 1
LSTM_KERAS_ORDER = [0, 2, 3, 1]


@RULES("LSTM")
def lstm(ctx: Importer, step: Step) -> list[Value | None]:
    x = _recurrent_input(step)
    backwards = _recurrent_checks(step, "lstm", (5, 6))
    if step.value(7) is not None:
        raise step.fail("has peephole weights; dslc's lstm (Keras's) has none")
    if int(step.attrs.get("input_forget", 0)):
        raise step.fail("couples its input and forget gates (input_forget=1); dslc's lstm "
                        "does not")
    step.no_output_used(2, "last cell state (Y_c)")
    f, g, h = _gate_functions(step, "lstm", ["Sigmoid", "Tanh", "Tanh"])
    if g != h:
        raise step.fail(f"applies `{g}` to the candidate and `{h}` to the output; dslc's "
                        "lstm applies one `activation` to both")
    w = step.const(1, "input weights").astype(np.float32)[0]  # [4u, features]
    r = step.const(2, "recurrent weights").astype(np.float32)[0]  # [4u, u]
    units = int(step.attrs.get("hidden_size", w.shape[0] // 4))
    params = {"kernel": _onnx_gates(w, LSTM_KERAS_ORDER, 4),
              "recurrent_kernel": _onnx_gates(r, LSTM_KERAS_ORDER, 4)}
    b = step.optional_const(3, "bias")
    attrs: dict[str, Any] = {"units": units, "activation": g, "recurrent_activation": f}
    if b is not None:  # Wb + Rb: only ever added
        b = b.astype(np.float32).reshape(-1)
        params["bias"] = _onnx_gates(b[:4 * units] + b[4 * units:], LSTM_KERAS_ORDER, 4)
    else:
        attrs["use_bias"] = False
    return _recurrent_outputs(ctx, step, x, "lstm", attrs, params, backwards)


@RULES("GRU")
def gru(ctx: Importer, step: Step) -> list[Value | None]:
    """ONNX's GRU has Keras's gate order (z, r, h); linear_before_reset=1 is reset_after,
    whose two biases Keras keeps apart (the recurrent one is inside the reset)."""
    x = _recurrent_input(step)
    backwards = _recurrent_checks(step, "gru", (5,))
    f, g = _gate_functions(step, "gru", ["Sigmoid", "Tanh"])
    w = step.const(1, "input weights").astype(np.float32)[0]  # [3u, features]
    r = step.const(2, "recurrent weights").astype(np.float32)[0]  # [3u, u]
    units = int(step.attrs.get("hidden_size", w.shape[0] // 3))
    reset_after = bool(int(step.attrs.get("linear_before_reset", 0)))
    params = {"kernel": w.T, "recurrent_kernel": r.T}
    b = step.optional_const(3, "bias")
    attrs: dict[str, Any] = {"units": units, "activation": g, "recurrent_activation": f,
                             "reset_after": reset_after}
    if b is not None:
        b = b.astype(np.float32).reshape(2, 3 * units)
        # without reset_after, ONNX adds Rbh outside the reset: the sum is Keras's one bias
        params["bias"] = b if reset_after else b[0] + b[1]
    else:
        attrs["use_bias"] = False
    return _recurrent_outputs(ctx, step, x, "gru", attrs, params, backwards)


# -- activations ------------------------------------------------------------------------------

def _elementwise(step: Step, op: str, **attrs: Any) -> list[Value | None]:
    x = step.tensor(0)
    y = step.layer(op, [x], **attrs)
    return [Tensor(y.name, y.shape, x.axes, x.order)]


@RULES("Relu", "Tanh", "Softplus", "Softsign")
def activation(ctx: Importer, step: Step) -> list[Value | None]:
    return _elementwise(step, step.op_type.lower())


@RULES("Sigmoid")
def sigmoid(ctx: Importer, step: Step) -> list[Value | None]:
    """A sigmoid, or with the Mul by its own input that alone reads it, silu (x * sigmoid(x),
    as dslc and PyTorch export it)."""
    x_name, gate = step.proto.input[0], step.proto.output[0]
    readers = ctx.consumers.get(gate, [])
    if len(readers) == 1 and ctx.uses.get(gate) == 1 and isinstance(step.value(0), Tensor):
        mul = ctx.graph.node[readers[0]]
        if mul.op_type == "Mul" and sorted(mul.input) == sorted([x_name, gate]):
            from .import_walk import Step as NodeStep

            times = NodeStep(ctx, mul, readers[0])
            (y,) = _elementwise(times, "silu")  # named after the Mul: dslc's `<layer>/silu`
            ctx.claimed.add(readers[0])
            ctx.values[mul.output[0]] = y  # type: ignore[assignment]
            return [None]
    return _elementwise(step, "sigmoid")


@RULES("Selu")
def selu(ctx: Importer, step: Step) -> list[Value | None]:
    alpha = _float(step.attrs.get("alpha", 1.67326319217681884765625))
    gamma = _float(step.attrs.get("gamma", 1.05070102214813232421875))
    if (alpha, gamma) != (_float(1.6732632423543772), _float(1.0507009873554805)):
        raise step.fail(f"alpha {alpha} and gamma {gamma} are not SELU's constants; dslc's "
                        "selu has those")
    return _elementwise(step, "selu")


@RULES("HardSigmoid")
def hard_sigmoid(ctx: Importer, step: Step) -> list[Value | None]:
    alpha = _float(step.attrs.get("alpha", 0.2))
    beta = _float(step.attrs.get("beta", 0.5))
    if (alpha, beta) != (_float(1 / 6), 0.5):
        raise step.fail(f"slope {alpha} and offset {beta}; dslc's hard_sigmoid is Keras 3's "
                        "(slope 1/6, offset 0.5)")
    return _elementwise(step, "hard_sigmoid")


@RULES("Clip")
def clip(ctx: Importer, step: Step) -> list[Value | None]:
    if "min" in step.attrs or "max" in step.attrs:  # before opset 11
        low, high = step.attrs.get("min"), step.attrs.get("max")
    else:
        lo, hi = step.optional_const(1, "minimum"), step.optional_const(2, "maximum")
        low = None if lo is None or not lo.size else float(lo.reshape(-1)[0])
        high = None if hi is None or not hi.size else float(hi.reshape(-1)[0])
    if (low, high) != (0.0, 6.0):
        raise step.fail(f"clips to [{low}, {high}]; dslc reads Clip only as relu6 (0 to 6)")
    return _elementwise(step, "relu6")


def _alpha(step: Step, op: str, onnx_default: float) -> dict[str, float]:
    from dslc.ops.registry import get_op

    alpha = _float(step.attrs.get("alpha", onnx_default))
    return {} if alpha == get_op(op).Attrs().alpha else {"alpha": alpha}  # type: ignore[attr-defined]


@RULES("LeakyRelu")
def leaky_relu(ctx: Importer, step: Step) -> list[Value | None]:
    return _elementwise(step, "leaky_relu", **_alpha(step, "leaky_relu", 0.01))


@RULES("Elu")
def elu(ctx: Importer, step: Step) -> list[Value | None]:
    return _elementwise(step, "elu", **_alpha(step, "elu", 1.0))


@RULES("Gelu")
def gelu(ctx: Importer, step: Step) -> list[Value | None]:
    if step.attrs.get("approximate", "none") != "none":
        raise step.fail(f"the `{step.attrs['approximate']}` approximation; dslc's gelu is the "
                        "exact (erf) form")
    return _elementwise(step, "gelu")


@RULES("Softmax", "LogSoftmax")
def softmax(ctx: Importer, step: Step) -> list[Value | None]:
    x = step.tensor(0)
    axis = _axis(step, int(step.attrs.get("axis", -1 if ctx.opset >= 13 else 1)), x.rank)
    # Before opset 13 Softmax flattens the axes from `axis` on: the same only for the last.
    if x.axes[axis] != len(x.shape) or (ctx.opset < 13 and axis != x.rank - 1):
        raise step.fail(f"normalizes ONNX axis {axis} of {_dims(x.onnx_shape)}; dslc's softmax "
                        "normalizes the channels-last last axis")
    return _elementwise(step, "softmax" if step.op_type == "Softmax" else "log_softmax")


def _gelu_pattern(ctx: Importer, step: Step) -> list[Value | None] | None:
    """`x * 0.5 * (1 + erf(x / sqrt(2)))`, as PyTorch exports GELU before opset 20: one gelu
    layer. Matched from the Div (or Mul by 1/sqrt(2)), each step read only by the next."""
    x, c = step.value(0), step.value(1)
    if not isinstance(x, Tensor) or not _known(c) or c.array.size != 1:  # type: ignore[union-attr]
        return None
    scale = float(c.array.reshape(-1)[0])  # type: ignore[union-attr]
    want = SQRT2 if step.op_type == "Div" else 1 / SQRT2
    if not math.isclose(scale, want, rel_tol=1e-6):
        return None
    x_name = step.proto.input[0]

    def next_node(value: str, op_type: str) -> tuple[int, Any] | None:
        readers = ctx.consumers.get(value, [])
        if len(readers) != 1 or ctx.uses.get(value) != 1:
            return None
        node = ctx.graph.node[readers[0]]
        return (readers[0], node) if node.op_type == op_type else None

    def other(node: Any, value: str) -> Value | None:
        names = [n for n in node.input if n != value]
        return ctx.values.get(names[0]) if len(names) == 1 else None

    def is_const(v: Value | None, target: float) -> bool:
        return (_known(v) and v.array.size == 1  # type: ignore[union-attr]
                and math.isclose(float(v.array.reshape(-1)[0]), target,  # type: ignore[union-attr]
                                 rel_tol=1e-6))

    erf = next_node(step.proto.output[0], "Erf")
    one = erf and next_node(erf[1].output[0], "Add")
    if not (erf and one and is_const(other(one[1], erf[1].output[0]), 1.0)):
        return None
    times_x = next_node(one[1].output[0], "Mul")
    if not (times_x and list(times_x[1].input).count(x_name) == 1
            and one[1].output[0] in times_x[1].input):
        return None
    half = next_node(times_x[1].output[0], "Mul")
    if not (half and is_const(other(half[1], times_x[1].output[0]), 0.5)):
        return None
    (y,) = _elementwise(step, "gelu")
    ctx.claimed.update(i for i, _ in (erf, one, times_x, half))
    assert y is not None
    ctx.values[half[1].output[0]] = y
    return [None]


# -- merges -----------------------------------------------------------------------------------

def _const_math(step: Step, fn: Any) -> list[Value | None] | None:
    vals = step.values()
    if all(_known(v) for v in vals):
        out = vals[0].array  # type: ignore[union-attr]
        for v in vals[1:]:
            out = fn(out, v.array)  # type: ignore[union-attr]
        return [Const(np.asarray(out))]
    return None


@RULES("Add", "Sum")
def add(ctx: Importer, step: Step) -> list[Value | None]:
    done = _const_math(step, np.add)
    if done is not None:
        return done
    vals = step.values()
    if any(not isinstance(v, Tensor) for v in vals):
        return [_bias(ctx, step)]
    ts = [step.tensor(i) for i in range(step.arity)]
    if len(ts) == 1:
        return [ts[0]]
    _same_layout(step, ts)
    y = step.layer("add", ts)
    return [Tensor(y.name, y.shape, ts[0].axes, ts[0].order)]


def _bias(ctx: Importer, step: Step) -> Tensor:
    """`MatMul` then `Add` of a constant: the dense layer's bias (PyTorch's Linear on a
    sequence, dslc's dense on `[time, features]`)."""
    k = 0 if isinstance(step.value(0), Tensor) else 1
    if step.arity != 2 or isinstance(step.value(1 - k), Tensor):
        raise step.fail("adds constants to several tensors; dslc import cannot represent it")
    x = step.tensor(k)
    source = step.proto.input[k]
    layer = ctx.by_name.get(x.name)
    if layer is None or layer.bias_from_add != source or ctx.uses.get(source) != 1:
        raise step.fail("adds a constant to a tensor; dslc import reads that only as the bias "
                        "of the MatMul before it")
    units = int(x.shape[-1])  # type: ignore[arg-type]
    layer.params["bias"] = _vector(step, step.const(1 - k, "bias"), units, "bias")
    del layer.attrs["use_bias"]  # true, the default
    layer.bias_from_add = None
    return x


@RULES("Concat")
def concat(ctx: Importer, step: Step) -> list[Value | None]:
    vals = step.values()
    axis = int(step.attrs.get("axis", 0))
    if all(isinstance(v, Const) for v in vals):
        return [Const(_shape_array(np.concatenate([v.array for v in vals],  # type: ignore[union-attr]
                                                  axis=axis)))]
    ts = [_plain(step, step.tensor(i)) for i in range(step.arity)]
    _same_layout(step, ts)
    a = ts[0].axes[_axis(step, axis, ts[0].rank)]
    if not a:
        raise step.fail(f"joins along ONNX axis {axis}, which is "
                        f"{'the batch' if a == 0 else 'an axis the spec tensor lacks'}")
    attrs: dict[str, Any] = {} if a == len(ts[0].shape) else {"axis": a - 1}
    y = step.layer("concat", ts, **attrs)
    return [y.with_axes(ts[0].axes)]


def _merge(ctx: Importer, step: Step, op: str) -> list[Value | None]:
    """A merge layer of two or more tensors of one shape and layout. dslc exports a
    multiply of more than two as a chain of Muls (`<layer>/mul_0`, ..., `<layer>`): one layer."""
    vals = step.values()
    if any(not isinstance(v, Tensor) for v in vals):
        raise step.fail(f"{step.op_type} of a tensor and a constant is not supported by dslc "
                        f"import; dslc's {op} combines tensors of one shape")
    ts = [step.tensor(i) for i in range(step.arity)]
    _same_layout(step, ts)
    if len({t.shape for t in ts}) != 1:
        raise step.fail(f"combines tensors of shapes {', '.join(_dims(t.onnx_shape) for t in ts)}"
                        f"; dslc's {op} takes tensors of one shape (no broadcasting)")
    first = ctx.by_name.get(ts[0].name)
    if (op == "multiply" and first is not None and first.op == "multiply"
            and ctx.from_dslc and ctx.uses.get(step.proto.input[0]) == 1
            and ctx.graph.node[first.node].name.startswith(step.proto.name + "/mul_")):
        first.inputs.append(ts[1].name)
        return [ts[0]]
    y = step.layer(op, ts)
    return [Tensor(y.name, y.shape, ts[0].axes, ts[0].order)]


MERGES = {"Mul": "multiply", "Sub": "subtract", "Max": "maximum", "Min": "minimum",
          "Mean": "average"}


@RULES("Max", "Min", "Mean")
def variadic(ctx: Importer, step: Step) -> list[Value | None]:
    fns = {"Max": np.maximum, "Min": np.minimum, "Mean": None}
    if step.op_type != "Mean":
        done = _const_math(step, fns[step.op_type])
        if done is not None:
            return done
    vals = step.values()
    if len(vals) == 1:
        return [vals[0]]
    return _merge(ctx, step, MERGES[step.op_type])


@RULES("Mul", "Div", "Sub")
def arithmetic(ctx: Importer, step: Step) -> list[Value | None]:
    fns = {"Mul": np.multiply, "Div": np.divide, "Sub": np.subtract}
    if step.op_type == "Div" and all(_known(v) and v.array.dtype.kind in "iu"  # type: ignore[union-attr]
                                     for v in step.values()):
        fns["Div"] = np.floor_divide  # integer division, as ONNX's on integers
    done = _const_math(step, fns[step.op_type])
    if done is not None:
        return done
    if step.op_type in ("Div", "Mul"):
        gelu = _gelu_pattern(ctx, step)
        if gelu is not None:
            return gelu
    if step.op_type in MERGES and all(isinstance(v, Tensor) for v in step.values()):
        return _merge(ctx, step, MERGES[step.op_type])
    raise step.fail(f"{step.op_type} of a tensor is not supported by dslc import (only as part "
                    "of an exported GELU, or on constants)")


# -- axis moves -------------------------------------------------------------------------------

@RULES("Identity")
def identity(ctx: Importer, step: Step) -> list[Value | None]:
    return [step.value(0)]


@RULES("Dropout")
def dropout(ctx: Importer, step: Step) -> list[Value | None]:
    step.no_output_used(1, "mask")
    training = step.value(2)
    if training is not None and (not _known(training) or bool(training.array)):  # type: ignore[union-attr]
        raise step.fail("runs in training mode; export the model for inference")
    v = step.value(0)
    if not isinstance(v, Tensor):
        return [v]
    ratio = step.attrs.get("ratio")
    if ratio is None:
        r = step.optional_const(1, "ratio")
        ratio = 0.5 if r is None else float(r)
    if not ratio:
        return [v]
    return _elementwise(step, "dropout", rate=_float(ratio))


@RULES("Cast")
def cast(ctx: Importer, step: Step) -> list[Value | None]:
    from onnx import TensorProto, helper

    v = step.value(0)
    to = int(step.attrs["to"])
    if isinstance(v, Const):
        return [v if not v.known else Const(v.array.astype(helper.tensor_dtype_to_np_dtype(to)))]
    if to not in (TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16):
        raise step.fail("casts a tensor to a non-float type; dslc computes in float32")
    return [v]


@RULES("Transpose")
def transpose(ctx: Importer, step: Step) -> list[Value | None]:
    v = step.value(0)
    if isinstance(v, Fill):
        return [v]
    rank = v.rank if isinstance(v, Tensor) else v.array.ndim  # type: ignore[union-attr]
    perm = step.ints("perm", list(range(rank))[::-1])
    if sorted(perm) != list(range(rank)):
        raise step.fail(f"perm {perm} is not a permutation of {rank} axes")
    if isinstance(v, Const):
        return [Const(np.transpose(v.array, perm))]
    assert isinstance(v, Tensor)
    return [v.with_axes(tuple(v.axes[p] for p in perm))]


def _axes_input(step: Step) -> list[int] | None:
    if "axes" in step.attrs:
        return step.ints("axes")
    if step.value(1) is not None:
        return [int(a) for a in step.const(1, "axes").reshape(-1)]
    return None


@RULES("Squeeze")
def squeeze(ctx: Importer, step: Step) -> list[Value | None]:
    v = step.value(0)
    axes = _axes_input(step)
    if isinstance(v, Const):
        arr = v.array
        ax = tuple(a % arr.ndim for a in axes) if axes is not None else None
        return [Const(np.squeeze(arr, axis=ax))]
    if not isinstance(v, Tensor):
        return [v]
    dims = list(v.onnx_shape)
    drop = ({_axis(step, a, v.rank) for a in axes} if axes is not None
            else {i for i, d in enumerate(dims) if d == 1})
    for a in drop:
        if dims[a] != 1:
            raise step.fail(f"squeezes ONNX axis {a} of {_dims(dims)}, which is not of size 1")
    if all(v.axes[a] is None for a in drop):  # only axes the spec tensor lacks: no data moves
        return [v.with_axes(tuple(a for i, a in enumerate(v.axes) if i not in drop))]
    return [_reshaped(ctx, step, v, [d for i, d in enumerate(dims) if i not in drop])]


@RULES("Unsqueeze")
def unsqueeze(ctx: Importer, step: Step) -> list[Value | None]:
    v = step.value(0)
    axes = _axes_input(step) or []
    if isinstance(v, Const):
        arr = v.array
        rank = arr.ndim + len(axes)
        for a in sorted(x % rank for x in axes):
            arr = np.expand_dims(arr, a)
        return [Const(arr)]
    if not isinstance(v, Tensor):
        return [v]
    rank = v.rank + len(axes)
    dims = list(v.onnx_shape)
    new_axes = list(v.axes)
    for a in sorted(_axis(step, x, rank) for x in axes):
        dims.insert(a, 1)
        new_axes.insert(a, None)
    if v.flipped or any(d is None for d in v.shape):  # a new size-1 axis moves no data
        return [v.with_axes(tuple(new_axes))]
    return [_reshaped(ctx, step, v, dims)]


@RULES("Flatten")
def flatten(ctx: Importer, step: Step) -> list[Value | None]:
    v = step.value(0)
    axis = int(step.attrs.get("axis", 1))
    if isinstance(v, Const):
        arr = v.array
        axis = axis + arr.ndim if axis < 0 else axis
        return [Const(arr.reshape(math.prod(arr.shape[:axis]), -1))]
    if not isinstance(v, Tensor):
        return [v]
    return [_flatten(step, v, axis)]


def _flatten(step: Step, t: Tensor, axis: int) -> Tensor:
    axis = axis + t.rank if axis < 0 else axis
    outer = t.axes[:axis]
    if 0 not in outer or any(a not in (0, None) for a in outer):
        raise step.fail(f"flattens {_dims(t.onnx_shape)} from axis {axis}, mixing the batch "
                        "with other axes")
    real = [a for a in t.axes[axis:] if a is not None]
    n = len(t.shape)
    if len(real) == n == 1:
        return Tensor(t.name, t.shape, (0, 1), t.order, t.rnn)
    t = _plain(step, step.ctx.settle(step, t))
    y = step.layer("flatten", [t])
    order = None
    if real != list(range(1, n + 1)):
        order = np.arange(math.prod(y.shape)).reshape(t.shape).transpose(  # type: ignore[arg-type]
            [a - 1 for a in real]).reshape(-1)
        if np.array_equal(order, np.arange(order.size)):
            order = None  # only size-1 axes moved (e.g. one channel)
    return Tensor(y.name, y.shape, (0, 1), order)


@RULES("Reshape")
def reshape(ctx: Importer, step: Step) -> list[Value | None]:
    v = step.value(0)
    target = step.value(1)
    if not isinstance(target, Const):
        raise step.fail("its target shape (input 1) must be computed from constants and shapes")
    tgt = list(target.array.reshape(-1))
    allow_zero = bool(step.attrs.get("allowzero", 0))
    if isinstance(v, Const):
        if not v.known or not target.known:
            raise step.fail("reshapes a constant to a shape known only at run time")
        shape = [int(d) if d or allow_zero else int(v.array.shape[i]) for i, d in enumerate(tgt)]
        return [Const(v.array.reshape(shape))]
    if not isinstance(v, Tensor):
        return [v]
    src = list(v.onnx_shape)
    dims = [src[i] if (isinstance(d, int | np.integer) and d == 0 and not allow_zero) else d
            for i, d in enumerate(tgt)]
    return [_reshaped(ctx, step, v, _resolve(ctx, step, v, dims))]


def _resolve(ctx: Importer, step: Step, t: Tensor, dims: list[Any]) -> list[Any]:
    """A Reshape's target with the batch axis found (BATCH) and -1 worked out."""
    src = list(t.onnx_shape)
    if dims == src:
        return dims
    if any(d is None for d in t.shape):
        raise step.fail(f"reshapes {_dims(src)} to {_dims(dims)}; dslc needs the sizes fixed")
    size = math.prod(t.shape)  # type: ignore[arg-type]
    ints = [d for d in dims if d != BATCH]
    if any(d is None or not isinstance(d, int | np.integer) for d in ints):
        raise step.fail(f"reshapes to {_dims(dims)}, a shape known only at run time")
    if dims.count(BATCH) > 1:
        raise step.fail(f"reshapes to {_dims(dims)}, with the batch size twice")
    if BATCH not in dims:  # find the batch: the first axis, as -1 or the traced batch size
        rest = [int(d) for d in dims[1:]]
        if not dims or not (dims[0] == -1 and -1 not in rest and math.prod(rest) == size) and \
                not (int(dims[0]) in ctx.batch_sizes and rest.count(-1) <= 1):
            raise step.fail(f"reshapes {_dims(src)} to {_dims(dims)}; dslc cannot tell which "
                            "axis is the batch", hint="export with a dynamic batch axis "
                                                      "(dynamic_axes), or reshape to [0, ...]")
        dims = [BATCH, *rest]
    known = math.prod(int(d) for d in dims if d != BATCH and d != -1)
    if -1 in dims:
        if known == 0 or size % known:
            raise step.fail(f"cannot reshape {_dims(src)} to {_dims(dims)}")
        dims = [size // known if d == -1 else d for d in dims]
    if known and math.prod(int(d) for d in dims if d != BATCH) != size:
        raise step.fail(f"cannot reshape {_dims(src)} to {_dims(dims)}")
    return [d if d == BATCH else int(d) for d in dims]


def _unit_moves(t: Tensor, dims: list[Any]) -> Tensor | None:
    """`t` reshaped to `dims` when that only adds, drops or moves size-1 axes (a layout
    change, no data moves): the same spec tensor with other axes. None otherwise."""
    src = list(t.onnx_shape)
    s = [(i, d) for i, d in enumerate(src) if d != 1]
    g = [(i, d) for i, d in enumerate(dims) if d != 1]
    if [d for _, d in s] != [d for _, d in g] or None in [d for _, d in s]:
        return None
    axes: list[int | None] = [None] * len(dims)
    for (si, _), (gi, _) in zip(s, g):
        axes[gi] = t.axes[si]
    real_units = [t.axes[i] for i, d in enumerate(src) if d == 1 and t.axes[i] is not None]
    slots = [i for i, d in enumerate(dims) if d == 1]
    if len(real_units) > len(slots):
        return None
    for slot, a in zip(slots, real_units):
        axes[slot] = a
    return t.with_axes(tuple(axes))


def _reshaped(ctx: Importer, step: Step, t: Tensor, dims: list[Any]) -> Tensor:
    if dims == list(t.onnx_shape):
        return t
    moved = _unit_moves(t, dims)
    if moved is not None:
        return moved
    if len(dims) == 2 and dims[0] == BATCH:
        return _flatten(step, t, 1)
    if dims[0] == BATCH and t.axes == tuple(range(t.rank)):
        x = _plain(step, ctx.settle(step, t))
        y = step.layer("reshape", [x], shape=tuple(int(d) for d in dims[1:]))
        return y
    raise step.fail(f"reshapes {_dims(t.onnx_shape)} to {_dims(dims)}, which moves data "
                    "across an NCHW layout; dslc reshapes channels-last tensors only")


@RULES("Gather")
def gather(ctx: Importer, step: Step) -> list[Value | None]:
    v = step.value(0)
    if isinstance(step.value(1), Tensor):
        return _embedding(step)
    idx = step.const(1, "indices")
    axis = int(step.attrs.get("axis", 0))
    if isinstance(v, Const):
        return [Const(_shape_array(np.take(v.array, idx, axis=axis % max(v.array.ndim, 1))))]
    if not isinstance(v, Tensor):
        return [v]
    axis = _axis(step, axis, v.rank)
    a = v.axes[axis]
    dims = v.onnx_shape
    if idx.size == 1 and idx.ndim <= 1:
        i = int(idx.reshape(-1)[0])
        if a is None and i in (0, -1):
            axes = v.axes if idx.ndim else v.axes[:axis] + v.axes[axis + 1:]
            return [v.with_axes(axes)]
        if v.rnn == "seq" and not v.flipped and a == 1 and (i == -1 or i == dims[axis] - 1):
            return [_last_step(v, axis, keep=bool(idx.ndim))]
    raise step.fail("picks elements of a tensor; dslc import reads Gather only on a size-1 axis "
                    "or as the last step of an RNN's output sequence")


def _embedding(step: Step) -> list[Value | None]:
    """Rows of a constant table picked by integer ids from the model's inputs."""
    table = step.const(0, "table").astype(np.float32)
    if table.ndim != 2 or int(step.attrs.get("axis", 0)) != 0:
        raise step.fail(f"picks along axis {step.attrs.get('axis', 0)} of a constant of shape "
                        f"{list(table.shape)}; dslc's embedding picks rows of a 2-D table")
    ids = _plain(step, step.tensor(1))
    if ids.axes != tuple(range(ids.rank)):
        raise step.fail(f"reads ids of ONNX shape {_dims(ids.onnx_shape)} in another order "
                        "than the spec tensor's")
    y = step.layer("embedding", [ids], {"embeddings": table}, vocab=int(table.shape[0]),
                   dim=int(table.shape[1]))
    return [y]


def _last_step(v: Tensor, axis: int, keep: bool) -> Tensor:
    """The last step of an RNN's sequence: its last state (`return_sequences=false`)."""
    units = v.shape[-1]
    axes: list[int | None] = []
    for i, a in enumerate(v.axes):
        if i == axis:
            if keep:
                axes.append(None)
        else:
            axes.append(a if a in (0, None) else a - 1)
    return Tensor(v.name, (units,), tuple(axes), None, rnn="last")


@RULES("Slice")
def slice_(ctx: Importer, step: Step) -> list[Value | None]:
    v = step.value(0)
    if "starts" in step.attrs:  # before opset 10
        starts, ends = step.ints("starts"), step.ints("ends")
        axes = step.ints("axes", list(range(len(starts))))
        steps = [1] * len(starts)
    else:
        starts = [int(x) for x in step.const(1, "starts").reshape(-1)]
        ends = [int(x) for x in step.const(2, "ends").reshape(-1)]
        ax = step.optional_const(3, "axes")
        axes = list(range(len(starts))) if ax is None else [int(x) for x in ax.reshape(-1)]
        st = step.optional_const(4, "steps")
        steps = [1] * len(starts) if st is None else [int(x) for x in st.reshape(-1)]
    if isinstance(v, Const):
        index = [slice(None)] * v.array.ndim
        for s, e, a, k in zip(starts, ends, axes, steps):
            index[a] = slice(s, e, k)
        return [Const(_shape_array(v.array[tuple(index)]))]
    if not isinstance(v, Tensor):
        return [v]  # a Fill: any part of it is the same fill
    dims = v.onnx_shape
    out = v
    for s, e, a, k in zip(starts, ends, axes, steps):
        a = _axis(step, a, v.rank)
        n = dims[a]
        if out.flipped and v.axes[a] == 1 and _reverses(s, e, k, n):
            # dslc's export of go_backwards + return_sequences: back to reading order
            out = Tensor(out.name, out.shape, out.axes, out.order, out.rnn)
            continue
        if n in (None, BATCH):
            if (s, k) == (0, 1) and e >= 2**31 - 1:
                continue
        else:
            lo, hi, _ = slice(s, e, k).indices(int(n))
            if (lo, hi, k) == (0, n, 1):
                continue
            if (out.rnn == "seq" and not out.flipped and v.axes[a] == 1 and k == 1
                    and (lo, hi) == (n - 1, n)):
                out = _last_step(out, a, keep=True)
                continue
        raise step.fail("takes part of a tensor; dslc import reads Slice only as the whole "
                        "tensor or the last step of an RNN's output sequence")
    return [out]


def _reverses(s: int, e: int, k: int, n: Any) -> bool:
    """Whether Slice(s, e, step k) of an axis of `n` steps (None: known at run time) is the
    whole axis in reverse."""
    if k != -1:
        return False
    if n is None:
        return s in (-1, 2**63 - 1) and e <= -(2**31)
    return slice(s, e, k).indices(int(n)) == (int(n) - 1, -1, -1)


# -- constants and shapes ---------------------------------------------------------------------

@RULES("Constant")
def constant(ctx: Importer, step: Step) -> list[Value | None]:
    from onnx import numpy_helper

    for proto in step.proto.attribute:
        if proto.name == "value":
            return [Const(numpy_helper.to_array(proto.t))]
    a = step.attrs
    if "value_float" in a or "value_floats" in a:
        return [Const(np.asarray(a.get("value_float", a.get("value_floats")), np.float32))]
    if "value_int" in a or "value_ints" in a:
        return [Const(np.asarray(a.get("value_int", a.get("value_ints")), np.int64))]
    raise step.fail(f"a constant of kind {sorted(a)}, which dslc import does not read")


@RULES("Shape")
def shape(ctx: Importer, step: Step) -> list[Value | None]:
    v = step.value(0)
    if isinstance(v, Tensor):
        dims: list[Any] = list(v.onnx_shape)
    elif isinstance(v, Const):
        dims = list(v.array.shape)
    else:
        raise step.fail("the shape of a constant known only at run time")
    start, end = step.attrs.get("start", 0), step.attrs.get("end")
    return [Const(_shape_array(dims[start:end]))]


@RULES("ConstantOfShape", "Expand")
def fill(ctx: Importer, step: Step) -> list[Value | None]:
    from onnx import numpy_helper

    if step.op_type == "ConstantOfShape":
        target = step.value(0)
        value = np.zeros(1, np.float32)
        for proto in step.proto.attribute:
            if proto.name == "value":
                value = numpy_helper.to_array(proto.t)
    else:
        data = step.value(0)
        target = step.value(1)
        if not _known(data):
            raise step.fail("expands a tensor; dslc import reads Expand only on constants")
        value = data.array  # type: ignore[union-attr]
    if not isinstance(target, Const):
        raise step.fail("its shape (an input) must be computed from constants and shapes")
    if target.known:
        dims = [int(d) for d in target.array.reshape(-1)]
        if step.op_type == "ConstantOfShape":
            return [Const(np.full(dims, value.reshape(-1)[0], value.dtype))]
        return [Const(value * np.ones(dims, value.dtype))]
    flat = value.reshape(-1)
    if flat.size == 0 or np.any(flat != flat[0]):
        raise step.fail("fills a shape known only at run time with varying values")
    return [Fill(float(flat[0]))]
