"""ONNX lowering per op and attribute variant, checked against a plain numpy reference
(channels-last, TF padding rules) that shares no code with the backend."""

from __future__ import annotations

import math

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from dslc.backends.onnx import build, to_model  # noqa: E402
from dslc.backends.onnx.lower import LOWERINGS  # noqa: E402
from dslc.compiler import compile_text  # noqa: E402
from dslc.ops.registry import all_ops, pair  # noqa: E402
from dslc.weights import init_weights  # noqa: E402

# (id, model body). Small shapes keep the whole table fast on every backend.
VARIANTS = [
    ("conv_valid", "input x: f32[7, 7, 2]\nconv2d(3, kernel=3)"),
    ("conv_same", "input x: f32[7, 7, 2]\nconv2d(3, kernel=3, padding=same)"),
    ("conv_same_stride2", "input x: f32[8, 7, 2]\nconv2d(3, kernel=3, strides=2, padding=same)"),
    ("conv_valid_stride2", "input x: f32[9, 8, 2]\nconv2d(3, kernel=3, strides=2)"),
    ("conv_even_kernel_same", "input x: f32[7, 6, 2]\nconv2d(3, kernel=4, padding=same)"),
    ("conv_even_kernel_same_stride2",
     "input x: f32[9, 8, 2]\nconv2d(3, kernel=2, strides=2, padding=same)"),
    ("conv_rect_kernel", "input x: f32[7, 8, 2]\nconv2d(3, kernel=[2, 3], strides=[1, 2])"),
    ("conv_dilation", "input x: f32[9, 9, 2]\nconv2d(3, kernel=3, dilation=2)"),
    ("conv_dilation_same", "input x: f32[9, 8, 2]\nconv2d(3, kernel=3, dilation=2, padding=same)"),
    ("conv_no_bias", "input x: f32[6, 6, 2]\nconv2d(3, kernel=3, use_bias=false)"),
    *[(f"conv_{act}", f"input x: f32[6, 6, 2]\nconv2d(3, kernel=3, activation={act})")
      for act in ("relu", "sigmoid", "tanh", "softmax", "gelu", "leaky_relu")],
    *[(f"dense_{act}", f"input x: f32[5]\ndense(4, activation={act})")
      for act in ("linear", "relu", "sigmoid", "tanh", "softmax", "gelu", "leaky_relu")],
    ("dense_no_bias", "input x: f32[5]\ndense(4, use_bias=false)"),
    ("dense_sequence", "input x: f32[4, 3]\ndense(5, activation=tanh)"),
    ("maxpool_valid", "input x: f32[7, 7, 2]\nmaxpool2d(2)"),
    ("maxpool_same", "input x: f32[7, 7, 2]\nmaxpool2d(2, padding=same)"),
    ("maxpool_strides", "input x: f32[8, 8, 2]\nmaxpool2d(3, strides=2)"),
    ("maxpool_same_strides1", "input x: f32[6, 5, 2]\nmaxpool2d(3, strides=1, padding=same)"),
    ("avgpool_valid", "input x: f32[7, 7, 2]\navgpool2d(2)"),
    ("avgpool_same", "input x: f32[7, 7, 2]\navgpool2d(2, padding=same)"),
    ("avgpool_same_3x3", "input x: f32[5, 6, 2]\navgpool2d(3, strides=1, padding=same)"),
    ("global_avgpool", "input x: f32[5, 4, 3]\nconv2d(2, kernel=1)\nglobal_avgpool2d"),
    ("global_maxpool", "input x: f32[5, 4, 3]\nglobal_maxpool2d"),
    ("flatten_after_conv", "input x: f32[5, 4, 2]\nconv2d(3, kernel=2)\nflatten\ndense(4)"),
    ("reshape_vector_to_image", "input x: f32[24]\nreshape([2, 4, 3])\nconv2d(2, kernel=2)"),
    ("reshape_image_to_sequence",
     "input x: f32[4, 4, 2]\nconv2d(3, kernel=1)\nreshape([-1, 6])\nsimple_rnn(4)"),
    ("dropout", "input x: f32[5]\ndense(4)\ndropout(0.5)\ndense(2)"),
    ("dropout_last", "input x: f32[5]\ndense(4, activation=relu)\ndropout(0.5)"),
    *[(f"act_{act}", f"input x: f32[6]\ndense(4)\n{act}")
      for act in ("relu", "sigmoid", "tanh", "softmax", "gelu", "linear")],
    ("act_leaky_relu_alpha", "input x: f32[6]\ndense(4)\nleaky_relu(0.2)"),
    ("softmax_on_image", "input x: f32[4, 4, 2]\nconv2d(3, kernel=1)\nsoftmax"),
    ("conv_output_image", "input x: f32[4, 5, 2]\nconv2d(3, kernel=2, padding=same)"),
    *[(f"rnn_{act}", f"input x: f32[5, 3]\nsimple_rnn(4, activation={act})")
      for act in ("tanh", "relu", "sigmoid", "linear", "leaky_relu", "gelu", "softmax")],
    ("rnn_sequences", "input x: f32[5, 3]\nsimple_rnn(4, return_sequences=true)\ndense(2)"),
    ("rnn_sequences_gelu", "input x: f32[5, 3]\nsimple_rnn(4, activation=gelu, "
                           "return_sequences=true)"),
    ("rnn_stacked", "input x: f32[6, 2]\nsimple_rnn(4, return_sequences=true)\nsimple_rnn(3)"),
    ("rnn_no_bias", "input x: f32[5, 3]\nsimple_rnn(4, use_bias=false)"),
    ("add_graph", "input x: f32[6, 6, 2]\na = conv2d(x, 3, kernel=3, padding=same)\n"
                  "b = conv2d(x, 3, kernel=1)\nadd(a, b)\nrelu"),
    ("add_input_and_conv", "input x: f32[5, 5, 2]\nh = conv2d(x, 2, kernel=3, padding=same)\n"
                           "add(x, h)"),
    ("add_three", "input x: f32[4]\na = dense(x, 3)\nb = dense(x, 3)\nc = dense(x, 3)\n"
                  "add(a, b, c)"),
    ("concat_channels", "input x: f32[6, 6, 2]\na = conv2d(x, 3, kernel=1)\n"
                        "b = conv2d(x, 2, kernel=1)\nconcat(a, b)\nflatten"),
    ("concat_height", "input x: f32[4, 4, 2]\na = conv2d(x, 3, kernel=1)\n"
                      "b = conv2d(x, 3, kernel=1)\nconcat(a, b, axis=0)\nflatten"),
    ("concat_width_mixed_layout", "input x: f32[4, 4, 3]\na = conv2d(x, 3, kernel=1)\n"
                                  "concat(x, a, axis=1)"),
    ("concat_vectors", "input x: f32[4]\na = dense(x, 3)\nb = dense(x, 2)\nconcat(a, b)"),
    ("residual_block", "input x: f32[6, 6, 3]\nc = conv2d(x, 4, kernel=3, padding=same, "
                       "activation=relu)\nh = conv2d(c, 4, kernel=3, padding=same)\n"
                       "r = relu(add(c, h))\ng = global_avgpool2d(r)\n"
                       "dense(3, activation=softmax)"),
]


def variant_spec(name: str, body: str):
    body = "\n    ".join(body.splitlines())
    return compile_text(f"model {name} {{\n    {body}\n}}\n", f"<{name}>")


# -- numpy reference (channels-last) ---------------------------------------------------------

_erf = np.vectorize(math.erf, otypes=[np.float64])


def ref_activation(x, act, alpha=0.01):
    if act == "linear":
        return x
    if act == "relu":
        return np.maximum(x, 0)
    if act == "sigmoid":
        return 1 / (1 + np.exp(-x))
    if act == "tanh":
        return np.tanh(x)
    if act == "softmax":
        e = np.exp(x - x.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)
    if act == "leaky_relu":
        return np.where(x > 0, x, alpha * x)
    if act == "gelu":
        return 0.5 * x * (1 + _erf(x / math.sqrt(2)))
    raise AssertionError(act)


def _tf_pads(size, k, s, d):
    out = -(-size // s)
    total = max((out - 1) * s + d * (k - 1) + 1 - size, 0)
    return total // 2, total - total // 2


def _windows(x, kernel, strides, dilation, padding, fill):
    """Yield (offset a, b, strided slice) of the padded input, TF padding rules."""
    (kh, kw), (sh, sw), (dh, dw) = pair(kernel), pair(strides), pair(dilation)
    n, h, w, c = x.shape
    if padding == "same":
        (t, bo), (le, ri) = _tf_pads(h, kh, sh, dh), _tf_pads(w, kw, sw, dw)
        oh, ow = -(-h // sh), -(-w // sw)
    else:
        t = bo = le = ri = 0
        oh, ow = (h - dh * (kh - 1) - 1) // sh + 1, (w - dw * (kw - 1) - 1) // sw + 1
    xp = np.pad(x, ((0, 0), (t, bo), (le, ri), (0, 0)), constant_values=fill)
    for a in range(kh):
        for b in range(kw):
            yield a, b, xp[:, a * dh:a * dh + (oh - 1) * sh + 1:sh, b * dw:b * dw + (ow - 1) * sw + 1:sw]


def ref_forward(graph, weights, x):
    vals = {graph.inputs[0].name: x.astype(np.float64)}
    for node in graph.nodes:
        a = node.attrs
        xs = [vals[i] for i in node.inputs]
        v = xs[0]
        w = {k: weights[f"{node.name}.{k}"].astype(np.float64) for k in node.params}
        if node.op == "conv2d":
            y = sum(win @ w["kernel"][i, j] for i, j, win in
                    _windows(v, a.kernel, a.strides, a.dilation, a.padding, 0.0))
            y = ref_activation(y + w.get("bias", 0.0), a.activation)
        elif node.op == "maxpool2d":
            y = np.max([win for *_, win in _windows(v, a.kernel, a.strides, 1, a.padding,
                                                     -np.inf)], axis=0)
        elif node.op == "avgpool2d":
            total = sum(win for *_, win in _windows(v, a.kernel, a.strides, 1, a.padding, 0.0))
            count = sum(win for *_, win in _windows(np.ones_like(v), a.kernel, a.strides, 1,
                                                     a.padding, 0.0))
            y = total / count
        elif node.op == "global_avgpool2d":
            y = v.mean(axis=(1, 2))
        elif node.op == "global_maxpool2d":
            y = v.max(axis=(1, 2))
        elif node.op == "flatten":
            y = v.reshape(len(v), -1)
        elif node.op == "reshape":
            y = v.reshape(len(v), *a.shape)
        elif node.op == "dropout":
            y = v
        elif node.op == "dense":
            y = ref_activation(v @ w["kernel"] + w.get("bias", 0.0), a.activation)
        elif node.op == "simple_rnn":
            h = np.zeros((len(v), a.units))
            seq = []
            for t in range(v.shape[1]):
                h = ref_activation(v[:, t] @ w["kernel"] + h @ w["recurrent_kernel"]
                                   + w.get("bias", 0.0), a.activation)
                seq.append(h)
            y = np.stack(seq, axis=1) if a.return_sequences else h
        elif node.op == "add":
            y = sum(xs)
        elif node.op == "concat":
            y = np.concatenate(xs, axis=a.axis if a.axis < 0 else a.axis + 1)
        elif node.op == "leaky_relu":
            y = ref_activation(v, "leaky_relu", a.alpha)
        else:
            y = ref_activation(v, node.op)
        vals[node.name] = y
    return vals[graph.outputs[0]]


def _batch(graph, n=4, seed=1):
    shape = graph.inputs[0].type.shape
    return np.random.default_rng(seed).normal(size=(n, *shape)).astype(np.float32)


# -- tests ------------------------------------------------------------------------------------

@pytest.mark.parametrize("name,body", VARIANTS, ids=[v[0] for v in VARIANTS])
def test_variant_matches_numpy_reference(name, body):
    graph = variant_spec(name, body).model()
    weights = init_weights(graph, seed=3)
    for key, p in graph.param_specs().items():  # non-zero biases, so bias layout is tested
        if key.endswith("bias"):
            weights[key] = np.random.default_rng(7).normal(size=p.shape).astype(np.float32)
    model = to_model(graph, weights)
    onnx.checker.check_model(model, full_check=True)
    x = _batch(graph)
    got = build(graph, weights).predict(x)
    want = ref_forward(graph, weights, x)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name,body", VARIANTS, ids=[v[0] for v in VARIANTS])
def test_variant_graph_is_clean(name, body):
    graph = variant_spec(name, body).model()
    model = to_model(graph, init_weights(graph, 0))
    ops = [n.op_type for n in model.graph.node]
    assert "Identity" not in ops
    assert "Dropout" not in ops
    # one transpose into NCHW per image value, at most
    transposes = [n for n in model.graph.node if n.op_type == "Transpose"]
    assert len({(n.input[0], tuple(n.attribute[0].ints)) for n in transposes}) == len(transposes)
    names = [n.name for n in model.graph.node]
    assert len(set(names)) == len(names)
    layers = {n.name for n in graph.nodes} | {i.name for i in graph.inputs}
    assert all(n.split("/")[0] in layers for n in names)


def test_every_registered_op_has_a_lowering():
    missing = sorted(set(all_ops()) - set(LOWERINGS))
    assert not missing, f"ops without an ONNX lowering: {missing}"


def test_every_op_is_covered_by_a_variant():
    used = {n.op for _, body in VARIANTS for n in variant_spec("v", body).model().nodes}
    assert set(all_ops()) - used == set()


# -- properties: window ops over random sizes, kernels, strides and padding ------------------

from hypothesis import HealthCheck, assume, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from dslc.diagnostics import DslError  # noqa: E402

WINDOW = st.fixed_dictionaries({
    "h": st.integers(1, 9), "w": st.integers(1, 9), "kh": st.integers(1, 4),
    "kw": st.integers(1, 4), "sh": st.integers(1, 3), "sw": st.integers(1, 3),
    "dilation": st.integers(1, 2), "padding": st.sampled_from(["valid", "same"]),
    "op": st.sampled_from(["conv2d", "maxpool2d", "avgpool2d"]),
})


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(WINDOW)
def test_window_ops_match_the_reference_for_any_geometry(p):
    strides = f"strides=[{p['sh']}, {p['sw']}]"
    kernel = f"kernel=[{p['kh']}, {p['kw']}]"
    if p["op"] == "conv2d":
        dilation = 1 if max(p["sh"], p["sw"]) > 1 else p["dilation"]
        layer = f"conv2d(3, {kernel}, {strides}, dilation={dilation}, padding={p['padding']})"
    else:
        layer = f"{p['op']}({kernel}, {strides}, padding={p['padding']})"
    try:
        graph = variant_spec("prop", f"input x: f32[{p['h']}, {p['w']}, 2]\n{layer}").model()
    except DslError:
        assume(False)  # the window does not fit: `dslc check` says so, nothing to lower
    weights = init_weights(graph, 0)
    x = _batch(graph, n=2)
    np.testing.assert_allclose(build(graph, weights).predict(x), ref_forward(graph, weights, x),
                               atol=1e-5, rtol=1e-5)
