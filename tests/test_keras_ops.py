"""The Keras runtime, held against the reference backend: every spec and example gives the
reference's outputs (max abs diff ≤ 1e-5) from the same canonical weights. Also what is
Keras's own: its parameter count equals `dslc check`'s, the weight adapter round-trips in
the canonical layout, feeds, gradients, errors. (The op-by-op matrix over every backend is
tests/test_op_matrix.py's.)"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from dslc.backends import get_backend  # noqa: E402
from dslc.backends.keras.codegen import LOWERINGS  # noqa: E402
from dslc.backends.keras.weights import to_canonical  # noqa: E402
from dslc.compiler import compile_file, compile_text  # noqa: E402
from dslc.diagnostics import DslError  # noqa: E402
from dslc.verify import seeded_batch  # noqa: E402
from dslc.weights import init_weights  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SPECS = [*sorted((ROOT / "specs").glob("*.dl")), *sorted((ROOT / "examples").glob("*.dl")),
         ROOT / "tests" / "golden" / "keras" / "graph_ops.dl"]
IMG = "input image: f32[7, 6, 2]"
keras = get_backend("keras")
reference = get_backend("reference")


def _graph(header: str, body: str):
    return compile_text(f"model m {{\n {header}\n {body}\n}}\n", "case.dl").model()


def _weights(graph, seed=3):
    weights = init_weights(graph, seed)
    for key in weights:  # non-zero biases, so a misplaced bias shows
        if key.endswith("bias"):
            weights[key] = np.linspace(-0.5, 0.5, weights[key].size,
                                       dtype=np.float32).reshape(weights[key].shape)
    return weights


def _inputs(graph, n):
    rng = np.random.default_rng(0)
    return [rng.normal(size=(n, *(d or 7 for d in i.type.shape))).astype(np.float32)
            if i.type.is_float else seeded_batch(graph, n)[k]  # ids, with padding
            for k, i in enumerate(graph.inputs)]


def _same_as_reference(graph, weights, n=4):
    xs = _inputs(graph, n)
    got = keras.build(graph, weights).predict_all(xs)
    want = reference.build(graph, weights).predict_all(xs)
    assert len(got) == len(want) == len(graph.outputs)
    for name, g, w in zip(graph.outputs, got, want, strict=True):
        assert g.shape == w.shape, name
        np.testing.assert_allclose(g, w, atol=1e-5, rtol=0, err_msg=name)


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
def test_spec_matches_the_reference(path):
    graph = compile_file(path).model()
    _same_as_reference(graph, _weights(graph, 0))


def test_a_decomposed_op_matches_the_reference(monkeypatch):
    monkeypatch.delitem(LOWERINGS.rules, "global_maxpool2d")
    graph = _graph(IMG, "conv2d(3, kernel=1)\n global_maxpool2d\n dense(2)")
    _same_as_reference(graph, _weights(graph))


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
def test_keras_count_params_equals_check(path):
    graph = compile_file(path).model()
    runtime = keras.build(graph, init_weights(graph, 0))
    assert runtime.model.count_params() == graph.param_count
    assert [layer.name for layer in runtime.model.layers] == \
        [i.name for i in graph.inputs] + [n.name for n in graph.nodes]


def test_weight_adapter_round_trip_and_layout():
    graph = _graph(IMG, "conv2d(3, kernel=[3, 2])\n flatten\n dense(4)")
    rnn = _graph("input seq: f32[6, 3]", "simple_rnn(4, return_sequences=true)\n"
                 " simple_rnn(2, use_bias=false)")
    for g in (graph, rnn):
        w = _weights(g, 1)
        runtime = keras.build(g, w)
        for back in (runtime.get_weights(), to_canonical(runtime.model, g)):
            assert list(back) == list(w) == list(g.param_specs())
            for k in w:
                np.testing.assert_array_equal(back[k], w[k])
    model = keras.build(graph, _weights(graph)).model
    assert tuple(model.get_layer("conv2d_1").kernel.shape) == (3, 2, 2, 3)  # [kh, kw, in, out]
    cell = keras.build(rnn, _weights(rnn)).model.get_layer("simple_rnn_1").cell
    assert tuple(cell.recurrent_kernel.shape) == (4, 4)


def test_weights_of_the_wrong_shape_are_a_user_error():
    graph = _graph("input x: f32[5]", "dense(3)")
    w = init_weights(graph, 0)
    w["dense_1.kernel"] = np.zeros((3, 5), np.float32)
    with pytest.raises(DslError, match=r"`dense_1.kernel` has shape \[3, 5\]"):
        keras.build(graph, w)
    del w["dense_1.kernel"]
    with pytest.raises(DslError, match="lack `dense_1.kernel`"):
        keras.build(graph, w)


def test_predict_batches_and_empty_input():
    graph = _graph("input x: f32[5]", "dense(3, activation=softmax)")
    runtime = keras.build(graph, init_weights(graph, 0))
    x = np.random.default_rng(1).normal(size=(10, 5)).astype(np.float32)
    np.testing.assert_allclose(runtime.predict(x, batch_size=3), runtime.predict(x), atol=1e-7)
    assert runtime.predict(x[:0]).shape == (0, 3)


def test_feeds_by_position_and_by_name():
    graph = compile_file(ROOT / "examples" / "two_heads.dl").model()
    runtime = keras.build(graph, init_weights(graph, 0))
    features, context = _inputs(graph, 3)
    by_list = runtime.predict_all([features, context])
    by_name = runtime.predict_all({"context": context, "features": features})
    assert [a.shape for a in by_list] == [(3, 1), (3, 3)]
    for a, b in zip(by_list, by_name, strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(runtime.predict((features, context)), by_list[0])
    with pytest.raises(DslError, match="takes 2 input"):
        runtime.predict(features)
    with pytest.raises(DslError, match="needs input"):
        runtime.predict({"features": features})


def test_gradients_of_a_dense_layer_in_inference_mode():
    """sum(y * c) for y = dropout(x @ W + b): dW = xᵀc, db = Σc, dx = c Wᵀ (no dropout)."""
    graph = _graph("input x: f32[5]", "dense(3)\n dropout(0.5)")
    w = _weights(graph)
    x = np.random.default_rng(2).normal(size=(4, 5)).astype(np.float32)
    c = np.random.default_rng(3).normal(size=(4, 3)).astype(np.float32)
    grads = keras.gradients(graph, w, [x], [c])
    assert set(grads) == {"dense_1.kernel", "dense_1.bias", "input:x"}
    np.testing.assert_allclose(grads["dense_1.kernel"], x.T @ c, atol=1e-5)
    np.testing.assert_allclose(grads["dense_1.bias"], c.sum(axis=0), atol=1e-5)
    np.testing.assert_allclose(grads["input:x"], c @ w["dense_1.kernel"].T, atol=1e-5)


def test_gradients_over_several_outputs_and_layouts():
    graph = compile_file(ROOT / "examples" / "two_heads.dl").model()
    w = _weights(graph)
    xs = _inputs(graph, 3)
    zero = [np.zeros((3, 1), np.float32), np.zeros((3, 3), np.float32)]
    score_only = [np.ones((3, 1), np.float32), zero[1]]
    grads = keras.gradients(graph, w, xs, score_only)
    assert set(grads) == set(w) | {"input:features", "input:context"}
    for key, value in w.items():
        assert grads[key].shape == value.shape and grads[key].dtype == np.float32, key
    assert not grads["label.kernel"].any()  # the label head does not feed the score
    np.testing.assert_allclose(grads["score.bias"], [3.0])
    assert not any(g.any() for g in keras.gradients(graph, w, xs, zero).values())
    with pytest.raises(DslError, match="2 output"):
        keras.gradients(graph, w, xs, score_only[:1])


def test_cuda_without_a_gpu_is_a_user_error():
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        pytest.skip("a GPU is present")
    graph = _graph("input x: f32[5]", "dense(3)")
    with pytest.raises(DslError, match="TensorFlow sees no GPU"):
        keras.build(graph, init_weights(graph, 0), device="cuda")


@pytest.mark.gpu
def test_cuda_runs_on_the_gpu():
    import tensorflow as tf

    if not tf.config.list_physical_devices("GPU"):
        pytest.skip("TensorFlow sees no GPU")
    graph = compile_file(ROOT / "specs" / "digits_cnn.dl").model()
    w = init_weights(graph, 0)
    runtime = keras.build(graph, w, device="cuda")
    assert runtime.device == "cuda"
    assert "GPU" in runtime.model.get_layer("conv2d_1").kernel.value.device
    x = np.random.default_rng(0).normal(size=(4, 8, 8, 1)).astype(np.float32)
    np.testing.assert_allclose(runtime.predict(x), keras.build(graph, w).predict(x), atol=1e-4)
