"""The torch lowering of every op, against a direct numpy computation in the canonical
(channels-last) layout with the same weights: max abs diff ≤ 1e-5."""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from dslc.backends import torch as tb  # noqa: E402
from dslc.compiler import compile_text  # noqa: E402
from dslc.ops import all_ops  # noqa: E402
from dslc.ops.activation import LEAKY_RELU_ALPHA  # noqa: E402
from dslc.ops.conv import pads_2d  # noqa: E402
from dslc.ops.registry import pair  # noqa: E402
from dslc.weights import init_weights  # noqa: E402

# ---- the numpy reference, channels-last, written from the op definitions -------------------


def _act(name, x, alpha=LEAKY_RELU_ALPHA):
    if name == "linear":
        return x
    if name == "relu":
        return np.maximum(x, 0)
    if name == "sigmoid":
        return 1 / (1 + np.exp(-x))
    if name == "tanh":
        return np.tanh(x)
    if name == "softmax":
        e = np.exp(x - x.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)
    if name == "gelu":
        return 0.5 * x * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))
    if name == "leaky_relu":
        return np.where(x > 0, x, alpha * x)
    raise AssertionError(name)


def _windows(x, a, in_shape, pad_value):
    """Yield (i, j, window [N, kh, kw, C]) over the padded input, TF `same`/`valid` rules."""
    (kh, kw), (sh, sw) = pair(a.kernel), pair(a.strides)
    dh, dw = pair(getattr(a, "dilation", 1))
    top, bottom, left, right = pads_2d(a, in_shape)
    xp = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)), constant_values=pad_value)
    oh = (xp.shape[1] - dh * (kh - 1) - 1) // sh + 1
    ow = (xp.shape[2] - dw * (kw - 1) - 1) // sw + 1
    for i in range(oh):
        for j in range(ow):
            yield i, j, xp[:, i * sh:i * sh + dh * (kh - 1) + 1:dh, j * sw:j * sw + dw * (kw - 1) + 1:dw]
    return


def _out(x, a, in_shape, c, pad_value=0.0):
    (kh, kw), (sh, sw) = pair(a.kernel), pair(a.strides)
    dh, dw = pair(getattr(a, "dilation", 1))
    top, bottom, left, right = pads_2d(a, in_shape)
    oh = (in_shape[0] + top + bottom - dh * (kh - 1) - 1) // sh + 1
    ow = (in_shape[1] + left + right - dw * (kw - 1) - 1) // sw + 1
    return np.zeros((x.shape[0], oh, ow, c))


def reference(graph, weights, inputs):
    env = {i.name: v.astype(np.float64) for i, v in zip(graph.inputs, inputs, strict=True)}
    for node in graph.nodes:
        a = node.attrs
        xs = [env[n] for n in node.inputs]
        x = xs[0]
        w = {k: weights[f"{node.name}.{k}"].astype(np.float64) for k in node.params}
        act, alpha = getattr(a, "activation", "linear"), LEAKY_RELU_ALPHA
        in_shape = graph.type_of(node.inputs[0]).shape
        if node.op == "dense":
            y = x @ w["kernel"] + w.get("bias", 0)
        elif node.op == "conv2d":
            y = _out(x, a, in_shape, a.filters)
            for i, j, win in _windows(x, a, in_shape, 0.0):
                y[:, i, j] = np.einsum("nhwc,hwco->no", win, w["kernel"])
            y = y + w.get("bias", 0)
        elif node.op == "maxpool2d":
            y = _out(x, a, in_shape, in_shape[2])
            for i, j, win in _windows(x, a, in_shape, -np.inf):
                y[:, i, j] = win.max(axis=(1, 2))
        elif node.op == "avgpool2d":
            y = _out(x, a, in_shape, in_shape[2])
            ones = np.ones_like(x[:1])
            counts = {(i, j): win.sum() / in_shape[2]
                      for i, j, win in _windows(ones, a, in_shape, 0.0)}
            for i, j, win in _windows(x, a, in_shape, 0.0):
                y[:, i, j] = win.sum(axis=(1, 2)) / counts[i, j]
        elif node.op == "global_avgpool2d":
            y = x.mean(axis=(1, 2))
        elif node.op == "global_maxpool2d":
            y = x.max(axis=(1, 2))
        elif node.op == "flatten":
            y = x.reshape(len(x), -1)
        elif node.op == "reshape":
            y = x.reshape(len(x), *node.type.shape)
        elif node.op == "dropout":
            y = x
        elif node.op == "add":
            y = sum(xs)
        elif node.op == "concat":
            y = np.concatenate(xs, axis=a.axis if a.axis < 0 else a.axis + 1)
        elif node.op == "simple_rnn":
            h = np.zeros((len(x), a.units))
            steps = []
            for t in range(x.shape[1]):
                h = _act(a.activation, x[:, t] @ w["kernel"] + h @ w["recurrent_kernel"]
                         + w.get("bias", 0))
                steps.append(h)
            y = np.stack(steps, axis=1) if a.return_sequences else h
            act = "linear"
        else:  # an activation op
            y, act = x, node.op
            alpha = getattr(a, "alpha", LEAKY_RELU_ALPHA)
        env[node.name] = _act(act, y, alpha)
    return [env[o] for o in graph.outputs]


# ---- the cases: one line each -------------------------------------------------------------

IMG = "input image: f32[7, 6, 2]"
CASES = {
    "dense_relu": ("input x: f32[5]", "dense(4, activation=relu)"),
    "dense_sigmoid": ("input x: f32[5]", "dense(3, activation=sigmoid)"),
    "dense_tanh_nobias": ("input x: f32[5]", "dense(3, activation=tanh, use_bias=false)"),
    "dense_gelu": ("input x: f32[5]", "dense(3, activation=gelu)"),
    "dense_leaky": ("input x: f32[5]", "dense(3, activation=leaky_relu)"),
    "dense_softmax": ("input x: f32[5]", "dense(4, activation=softmax)"),
    "dense_on_sequence": ("input x: f32[3, 5]", "dense(4)"),
    "conv_valid": (IMG, "conv2d(3, kernel=3)"),
    "conv_same_odd": (IMG, "conv2d(3, kernel=3, padding=same, activation=relu)"),
    "conv_same_even_kernel": (IMG, "conv2d(3, kernel=2, padding=same)"),
    "conv_same_stride2": (IMG, "conv2d(3, kernel=3, strides=2, padding=same)"),
    "conv_same_k4_stride2": (IMG, "conv2d(3, kernel=4, strides=2, padding=same)"),
    "conv_rect": (IMG, "conv2d(3, kernel=[3, 2], strides=[1, 2])"),
    "conv_dilated_same": (IMG, "conv2d(3, kernel=3, dilation=2, padding=same, use_bias=false)"),
    "maxpool_valid": (IMG, "maxpool2d(2)"),
    "maxpool_floor": (IMG, "maxpool2d(3, strides=2)"),
    "maxpool_same_asym": (IMG, "maxpool2d(2, padding=same)"),
    "maxpool_same_sym": (IMG, "maxpool2d(3, strides=1, padding=same)"),
    "avgpool_valid": (IMG, "avgpool2d(2)"),
    "avgpool_same_asym": (IMG, "avgpool2d(2, padding=same)"),
    "avgpool_same_sym": (IMG, "avgpool2d(3, strides=1, padding=same)"),
    "avgpool_same_k3s2": (IMG, "avgpool2d(3, strides=2, padding=same)"),
    "global_avg": (IMG, "conv2d(3, kernel=1)\n global_avgpool2d"),
    "global_max": (IMG, "global_maxpool2d"),
    # The classic converter bug: flatten after NCHW must use channels-last order.
    "flatten_order": (IMG, "conv2d(4, kernel=3)\n flatten\n dense(5, activation=softmax)"),
    "flatten_input": (IMG, "flatten\n dense(3)"),
    "reshape": ("input x: f32[48]", "reshape([4, 4, 3])\n conv2d(2, kernel=3)\n flatten"),
    "reshape_back": (IMG, "conv2d(4, kernel=1)\n reshape([-1, 4])"),
    "dropout": ("input x: f32[5]", "dense(8)\n dropout(0.5)\n dense(2)"),
    "rnn": ("input seq: f32[6, 3]", "simple_rnn(4)"),
    "rnn_seq_relu": ("input seq: f32[6, 3]", "simple_rnn(4, activation=relu, return_sequences=true)"),
    "rnn_nobias_stack": ("input seq: f32[6, 3]",
                         "simple_rnn(4, return_sequences=true, use_bias=false)\n simple_rnn(2)"),
    "act_ops": ("input x: f32[5]", "dense(4)\n leaky_relu(0.2)\n gelu\n tanh\n sigmoid\n relu\n linear"),
    "softmax_op_image": (IMG, "conv2d(3, kernel=1)\n softmax"),
    "residual_add": (IMG, "c = conv2d(image, 2, kernel=3, padding=same)\n output relu(add(image, c))"),
    "concat_channels": (IMG, "a = conv2d(image, 3, kernel=1)\n b = maxpool2d(image, 1)\n"
                        " output concat(a, b)"),
    "concat_height": (IMG, "a = conv2d(image, 2, kernel=1)\n output concat(a, image, axis=0)"),
    "concat_vectors": ("input x: f32[5]", "a = dense(x, 2)\n b = dense(x, 3)\n output concat(a, b)"),
    "long_names_wrap": (IMG, "a_really_long_branch_name_number_one = conv2d(image, 3, kernel=1)\n"
                        " a_really_long_branch_name_number_two = conv2d(image, 3, kernel=1)\n"
                        " output concat(a_really_long_branch_name_number_one, "
                        "a_really_long_branch_name_number_two, image)"),
    "two_inputs": ("input a: f32[4]\n input b: f32[2, 3]",
                   "f = flatten(b)\n output dense(concat(a, f), 2, activation=tanh)"),
    "two_outputs": ("input x: f32[5]", "a = dense(x, 2, activation=softmax)\n b = dense(a, 1)\n"
                    " output a, b"),
}


def _graph(header: str, body: str):
    return compile_text(f"model m {{\n {header}\n {body}\n}}\n", "case.dl").model()


@pytest.mark.parametrize("case", sorted(CASES))
def test_op_matches_numpy(case):
    graph = _graph(*CASES[case])
    weights = init_weights(graph, seed=3)
    for key in weights:  # non-zero biases, so a misplaced bias shows
        if key.endswith("bias"):
            weights[key] = np.linspace(-0.5, 0.5, weights[key].size, dtype=np.float32)
    rng = np.random.default_rng(0)
    inputs = [rng.normal(size=(4, *i.type.shape)).astype(np.float32) for i in graph.inputs]
    module = tb.instantiate(graph, weights).eval()
    with torch.no_grad():
        got = module(*[torch.from_numpy(v) for v in inputs])
    got = got if isinstance(got, tuple) else (got,)
    want = reference(graph, weights, inputs)
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert tuple(g.shape) == w.shape
        np.testing.assert_allclose(g.numpy(), w, atol=1e-5, rtol=1e-5)
    # `build` gives the same first output through Runtime.predict
    runtime = tb.build(graph, weights)
    np.testing.assert_allclose(runtime.predict(inputs if len(inputs) > 1 else inputs[0]),
                               want[0], atol=1e-5)


def test_every_registered_op_has_a_lowering():
    missing = set(all_ops()) - set(tb.LOWERINGS)
    assert not missing, f"ops without a torch lowering: {missing}"


def test_unsupported_op_is_a_clear_error(monkeypatch):
    from dslc.diagnostics import DslError

    graph = _graph("input x: f32[5]", "dense(3)")
    monkeypatch.delitem(tb.LOWERINGS, "dense")
    with pytest.raises(DslError, match="op `dense` is not supported by backend torch"):
        tb.generate(None, graph)


def test_logits_skip_the_final_softmax():
    graph = _graph("input x: f32[5]", "dense(4, activation=softmax)")
    module = tb.instantiate(graph, init_weights(graph, 0)).eval()
    x = torch.randn(3, 5)
    with torch.no_grad():
        np.testing.assert_allclose(torch.softmax(module(x, logits=True), -1), module(x), atol=1e-6)


def test_weight_adapter_round_trip():
    graph = _graph(IMG, "conv2d(3, kernel=[3, 2])\n flatten\n dense(4)")
    rnn = _graph("input seq: f32[6, 3]", "simple_rnn(4)")
    for g in (graph, rnn):
        w = init_weights(g, 1)
        back = tb.to_canonical(g, tb.from_canonical(g, w))
        assert set(back) == set(w)
        for k in w:
            np.testing.assert_array_equal(back[k], w[k])
    state = tb.from_canonical(graph, init_weights(graph, 1))
    assert tuple(state["conv2d_1.weight"].shape) == (3, 2, 3, 2)  # [out, in, kh, kw]
    assert tuple(state["dense_1.weight"].shape) == (4, 5 * 5 * 3)


def test_layer_names_that_clash_with_python_or_nn_module():
    graph = _graph("input x: f32[5]", "train = dense(x, 3)\n forward = dense(train, 2)\n"
                   " output forward")
    src = tb.generate(None, graph)
    assert "self.train_ = nn.Linear" in src and "self.forward_ = nn.Linear" in src
    w = init_weights(graph, 0)
    x = np.ones((2, 5), np.float32)
    np.testing.assert_allclose(tb.build(graph, w).predict(x), reference(graph, w, [x])[0],
                               atol=1e-5)
