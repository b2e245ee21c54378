"""The Keras runtime against the PyTorch one (itself checked against numpy in
test_torch_ops.py): the same canonical weights give the same outputs, max abs diff ≤ 1e-5,
for one case per op variant and for every spec in specs/. Also: Keras's own parameter count
equals `dslc check`'s, and the weight adapter round-trips."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorflow")
torch = pytest.importorskip("torch")

from dslc.backends import keras as kb  # noqa: E402
from dslc.backends import torch as tb  # noqa: E402
from dslc.compiler import compile_file, compile_text  # noqa: E402
from dslc.diagnostics import DslError  # noqa: E402
from dslc.weights import init_weights  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SPECS = [*sorted((ROOT / "specs").glob("*.dl")), *sorted((ROOT / "examples").glob("*.dl")),
         ROOT / "tests" / "golden" / "keras" / "graph_ops.dl"]

IMG = "input image: f32[7, 6, 2]"
CASES = {
    "dense_relu": ("input x: f32[5]", "dense(4, activation=relu)"),
    "dense_tanh_nobias": ("input x: f32[5]", "dense(3, activation=tanh, use_bias=false)"),
    "dense_sigmoid": ("input x: f32[5]", "dense(3, activation=sigmoid)"),
    "dense_gelu": ("input x: f32[5]", "dense(3, activation=gelu)"),
    "dense_leaky": ("input x: f32[5]", "dense(3, activation=leaky_relu)"),
    "dense_softmax": ("input x: f32[5]", "dense(4, activation=softmax)"),
    "dense_on_sequence": ("input x: f32[3, 5]", "dense(4)"),
    "conv_valid": (IMG, "conv2d(3, kernel=3)"),
    "conv_same_even_kernel": (IMG, "conv2d(3, kernel=2, padding=same)"),
    "conv_same_stride2": (IMG, "conv2d(3, kernel=3, strides=2, padding=same)"),
    "conv_same_k4_stride2": (IMG, "conv2d(3, kernel=4, strides=2, padding=same)"),
    "conv_rect": (IMG, "conv2d(3, kernel=[3, 2], strides=[1, 2])"),
    "conv_dilated_same": (IMG, "conv2d(3, kernel=3, dilation=2, padding=same)"),
    "maxpool_floor": (IMG, "maxpool2d(3, strides=2)"),
    "maxpool_same_asym": (IMG, "maxpool2d(2, padding=same)"),
    "avgpool_valid": (IMG, "avgpool2d(2)"),
    "avgpool_same_asym": (IMG, "avgpool2d(2, padding=same)"),
    "avgpool_same_k3s2": (IMG, "avgpool2d(3, strides=2, padding=same)"),
    "global_avg": (IMG, "conv2d(3, kernel=1)\n global_avgpool2d"),
    "global_max": (IMG, "global_maxpool2d"),
    "flatten_order": (IMG, "conv2d(4, kernel=3)\n flatten\n dense(5, activation=softmax)"),
    "reshape": ("input x: f32[48]", "reshape([4, 4, 3])\n conv2d(2, kernel=3)\n flatten"),
    "reshape_back": (IMG, "conv2d(4, kernel=1)\n reshape([-1, 4])"),
    "dropout_is_identity": ("input x: f32[5]", "dense(8)\n dropout(0.5)\n dense(2)"),
    "rnn": ("input seq: f32[6, 3]", "simple_rnn(4)"),
    "rnn_seq_relu": ("input seq: f32[6, 3]", "simple_rnn(4, activation=relu, return_sequences=true)"),
    "rnn_leaky": ("input seq: f32[6, 3]", "simple_rnn(4, activation=leaky_relu)"),
    "rnn_nobias_stack": ("input seq: f32[6, 3]",
                         "simple_rnn(4, return_sequences=true, use_bias=false)\n simple_rnn(2)"),
    "act_ops": ("input x: f32[5]", "dense(4)\n leaky_relu(0.2)\n gelu\n tanh\n sigmoid\n relu"),
    "leaky_op_default": ("input x: f32[5]", "dense(4)\n leaky_relu\n linear"),
    "softmax_op_image": (IMG, "conv2d(3, kernel=1)\n softmax"),
    "residual_add": (IMG, "c = conv2d(image, 2, kernel=3, padding=same)\n output relu(add(image, c))"),
    "concat_channels": (IMG, "a = conv2d(image, 3, kernel=1)\n b = maxpool2d(image, 1)\n"
                        " output concat(a, b)"),
    "concat_height": (IMG, "a = conv2d(image, 2, kernel=1)\n output concat(a, image, axis=0)"),
    "two_outputs_first": ("input x: f32[5]", "a = dense(x, 2, activation=softmax)\n b = dense(a, 1)\n"
                          " output a, b"),
}


def _graph(header: str, body: str):
    return compile_text(f"model m {{\n {header}\n {body}\n}}\n", "case.dl").model()


def _weights(graph, seed=3):
    weights = init_weights(graph, seed)
    for key in weights:  # non-zero biases, so a misplaced bias shows
        if key.endswith("bias"):
            weights[key] = np.linspace(-0.5, 0.5, weights[key].size, dtype=np.float32)
    return weights


def _same_as_torch(graph, weights, n=5):
    rng = np.random.default_rng(0)
    xs = [rng.normal(size=(n, *(d or 7 for d in i.type.shape))).astype(np.float32)
          for i in graph.inputs]
    got = kb.build(graph, weights).predict(xs[0] if len(xs) == 1 else xs)
    module = tb.instantiate(graph, weights).eval()
    with torch.no_grad():
        out = module(*(torch.from_numpy(x) for x in xs))
    want = (out[0] if isinstance(out, tuple) else out).numpy()
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    return got


@pytest.mark.parametrize("case", sorted(CASES))
def test_op_matches_torch(case):
    graph = _graph(*CASES[case])
    _same_as_torch(graph, _weights(graph))


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
def test_spec_matches_torch_with_initial_weights(path):
    graph = compile_file(path).model()
    _same_as_torch(graph, init_weights(graph, 0), n=8)


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
def test_keras_count_params_equals_check(path):
    graph = compile_file(path).model()
    runtime = kb.build(graph, init_weights(graph, 0))
    assert runtime.model.count_params() == graph.param_count
    assert [layer.name for layer in runtime.model.layers] == \
        [i.name for i in graph.inputs] + [n.name for n in graph.nodes]


def test_weight_adapter_round_trip_and_layout():
    graph = _graph(IMG, "conv2d(3, kernel=[3, 2])\n flatten\n dense(4)")
    rnn = _graph("input seq: f32[6, 3]", "simple_rnn(4)")
    for g in (graph, rnn):
        w = _weights(g, 1)
        runtime = kb.build(g, w)
        back = kb.to_canonical(runtime.model, g)
        assert list(back) == list(w)
        for k in w:
            np.testing.assert_array_equal(back[k], w[k])
    model = kb.build(graph, _weights(graph)).model
    assert tuple(model.get_layer("conv2d_1").kernel.shape) == (3, 2, 2, 3)  # [kh, kw, in, out]


def test_weights_of_the_wrong_shape_are_a_user_error():
    graph = _graph("input x: f32[5]", "dense(3)")
    w = init_weights(graph, 0)
    w["dense_1.kernel"] = np.zeros((3, 5), np.float32)
    with pytest.raises(DslError, match=r"`dense_1.kernel` has shape \[3, 5\]"):
        kb.build(graph, w)
    del w["dense_1.kernel"]
    with pytest.raises(DslError, match="lack `dense_1.kernel`"):
        kb.build(graph, w)


def test_predict_batches_and_empty_input():
    graph = _graph("input x: f32[5]", "dense(3, activation=softmax)")
    runtime = kb.build(graph, init_weights(graph, 0))
    x = np.random.default_rng(1).normal(size=(10, 5)).astype(np.float32)
    np.testing.assert_allclose(runtime.predict(x, batch_size=3), runtime.predict(x), atol=1e-7)
    assert runtime.predict(x[:0]).shape == (0, 3)


def test_cuda_without_a_gpu_is_a_user_error():
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        pytest.skip("a GPU is present")
    graph = _graph("input x: f32[5]", "dense(3)")
    with pytest.raises(DslError, match="TensorFlow sees no GPU"):
        kb.build(graph, init_weights(graph, 0), device="cuda")


@pytest.mark.gpu
def test_cuda_runs_on_the_gpu():
    import tensorflow as tf

    if not tf.config.list_physical_devices("GPU"):
        pytest.skip("TensorFlow sees no GPU")
    graph = compile_file(ROOT / "specs" / "digits_cnn.dl").model()
    w = init_weights(graph, 0)
    runtime = kb.build(graph, w, device="cuda")
    assert runtime.device == "cuda"
    assert "GPU" in runtime.model.get_layer("conv2d_1").kernel.value.device
    x = np.random.default_rng(0).normal(size=(4, 8, 8, 1)).astype(np.float32)
    np.testing.assert_allclose(runtime.predict(x), kb.build(graph, w).predict(x), atol=1e-4)
