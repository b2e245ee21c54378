"""The torch lowering's own choices — NCHW inside, TF `same` padding by hand, -inf and
real-pixel counts in pooling, concat axes, flatten order, fused logits, weight layouts,
gradients — each held against the reference backend (numpy, float64) on the same weights:
max abs diff ≤ 1e-5. The cross-backend op matrix lives elsewhere; these are torch's cases."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from dslc.backends import get_backend  # noqa: E402
from dslc.backends.torch import BACKEND  # noqa: E402
from dslc.backends.torch.codegen import LOWERINGS, Emitter, Value, generate  # noqa: E402
from dslc.backends.torch.runtime import Model, instantiate  # noqa: E402
from dslc.backends.torch.weights import WeightMap, from_canonical, to_canonical  # noqa: E402
from dslc.compiler import compile_text  # noqa: E402
from dslc.diagnostics import DslError  # noqa: E402
from dslc.ir.graph import Node  # noqa: E402
from dslc.weights import init_weights  # noqa: E402

REFERENCE = get_backend("reference")

# ---- the cases: one line each -------------------------------------------------------------

IMG = "input image: f32[7, 6, 2]"
CASES = {
    "dense_relu": ("input x: f32[5]", "dense(4, activation=relu)"),
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
    "conv_softmax": (IMG, "conv2d(3, kernel=1, activation=softmax)"),
    "maxpool_floor": (IMG, "maxpool2d(3, strides=2)"),
    "maxpool_same_asym": (IMG, "maxpool2d(2, padding=same)"),
    "maxpool_same_sym": (IMG, "maxpool2d(3, strides=1, padding=same)"),
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
    "softmax_then_dropout": ("input x: f32[5]", "dense(3, activation=softmax)\n dropout(0.5)"),
    "softmax_then_linear": ("input x: f32[5]", "dense(3, activation=softmax)\n linear"),
    "rnn": ("input seq: f32[6, 3]", "simple_rnn(4)"),
    "rnn_seq_relu": ("input seq: f32[6, 3]", "simple_rnn(4, activation=relu, return_sequences=true)"),
    "rnn_sigmoid": ("input seq: f32[6, 3]", "simple_rnn(2, activation=sigmoid)"),
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


def _weights(graph, seed=3):
    weights = init_weights(graph, seed=seed)
    for key in weights:  # non-zero biases, so a misplaced bias shows
        if key.endswith("bias"):
            weights[key] = np.linspace(-0.5, 0.5, weights[key].size, dtype=np.float32)
    return weights


def _inputs(graph, n=4):
    rng = np.random.default_rng(0)
    return [rng.normal(size=(n, *i.type.shape)).astype(np.float32) for i in graph.inputs]


@pytest.mark.parametrize("case", sorted(CASES))
def test_case_matches_the_reference(case):
    graph = _graph(*CASES[case])
    weights, inputs = _weights(graph), _inputs(graph)
    feed = inputs if len(inputs) > 1 else inputs[0]
    got = BACKEND.build(graph, weights).predict_all(feed)
    want = REFERENCE.build(graph, weights).predict_all(feed)
    assert len(got) == len(want) == len(graph.outputs)
    for g, w in zip(got, want, strict=True):
        assert g.shape == w.shape
        np.testing.assert_allclose(g, w, atol=1e-5, rtol=1e-5)


def test_every_registered_op_can_be_lowered():
    assert LOWERINGS.missing() == []


def test_an_op_without_a_rule_is_lowered_by_its_decomposition(monkeypatch):
    graph = _graph(IMG, "conv2d(3, kernel=1)\n global_avgpool2d\n dense(2)")
    monkeypatch.delitem(LOWERINGS.rules, "global_avgpool2d")
    src = generate(None, graph)
    assert "nn.AvgPool2d((7, 6)" in src and ".mean(" not in src
    weights, (x,) = _weights(graph), _inputs(graph)
    np.testing.assert_allclose(BACKEND.build(graph, weights).predict(x),
                               REFERENCE.build(graph, weights).predict(x), atol=1e-5)


def test_unsupported_op_is_a_clear_error(monkeypatch):
    graph = _graph("input x: f32[5]", "dense(3)")
    monkeypatch.delitem(LOWERINGS.rules, "dense")
    with pytest.raises(DslError, match="op `dense` is not supported by backend torch"):
        generate(None, graph)


def test_a_lowering_that_forgets_a_parameter_is_an_error(monkeypatch):
    def forgetful(em: Emitter, node: Node, xs: list[Value]) -> Value:
        call = em.add(node, "nn.Linear(5, 3)", params={"kernel": ("weight", np.transpose,
                                                                  np.transpose)})
        return Value(f"{call}({xs[0].expr})")

    graph = _graph("input x: f32[5]", "dense(3)")
    monkeypatch.setitem(LOWERINGS.rules, "dense", forgetful)
    with pytest.raises(DslError, match="does not declare where parameter `bias` of layer "
                                       "`dense_1` lives"):
        generate(None, graph)


# ---- fused logits -----------------------------------------------------------------------------

@pytest.mark.parametrize("case,fused", [
    ("dense_softmax", "softmax"), ("softmax_then_linear", "softmax"),
    ("flatten_order", "softmax"), ("softmax_op_image", "softmax"),
    ("softmax_then_dropout", None),  # the loss must see the dropped-out probabilities
    ("rnn_sigmoid", None),  # the activation is inside the loop
    ("two_outputs", None), ("dense_relu", None),
])
def test_logits_skip_the_final_activation(case, fused):
    graph = _graph(*CASES[case])
    model = Model(graph, _weights(graph))
    assert model.fused == fused
    assert ("logits: bool = False" in generate(None, graph)) == (fused is not None)
    if fused:
        module = model.module.eval()
        x = torch.from_numpy(_inputs(graph)[0])
        with torch.no_grad():
            np.testing.assert_allclose(torch.softmax(module(x, logits=True), -1), module(x),
                                       atol=1e-6)


def test_softmax_then_dropout_trains_on_torch():
    """The defect of issue 9: the checker saw `linear` behind the dropout. Now the spec is
    accepted and trains, with the clipped-probability cross-entropy (no fused form)."""
    spec = compile_text("model sd { input x: f32[4]\n dense(8, activation=relu)\n"
                        " dense(3, activation=softmax)\n dropout(0.5) }\n"
                        "train sd { data = npz(\"d.npz\")\n"
                        " loss = sparse_categorical_crossentropy\n optimizer = adam(lr=0.05) }",
                        "sd.dl")
    graph, cfg = spec.model(), spec.train_config()
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, size=96)
    x = (np.eye(3, 4)[y] * 2 + rng.normal(scale=0.3, size=(96, 4))).astype(np.float32)
    trainer = BACKEND.make_trainer(graph, cfg, "cpu", 0)
    assert trainer.logits is False  # type: ignore[attr-defined]
    losses = []
    for epoch in range(3):
        trainer.begin_epoch(epoch)
        losses.append(trainer.train_epoch(x, y, 16, lambda n, loss: None))
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
    probs = trainer.predict(x)
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)  # dropout is off at inference
    assert (probs.argmax(-1) == y).mean() > 0.8


# ---- weights and gradients --------------------------------------------------------------------

def test_weight_adapter_round_trip():
    graph = _graph(IMG, "conv2d(3, kernel=[3, 2])\n flatten\n dense(4)")
    rnn = _graph("input seq: f32[6, 3]", "simple_rnn(4)")
    for g in (graph, rnn):
        w = init_weights(g, 1)
        back = to_canonical(g, from_canonical(g, w))
        assert set(back) == set(w)
        for k in w:
            np.testing.assert_array_equal(back[k], w[k])
    state = from_canonical(graph, init_weights(graph, 1))
    assert tuple(state["conv2d_1.weight"].shape) == (3, 2, 3, 2)  # [out, in, kh, kw]
    assert tuple(state["dense_1.weight"].shape) == (4, 5 * 5 * 3)
    assert WeightMap.of(rnn).keys() == {
        "simple_rnn_1.kernel": "simple_rnn_1.weight_ih",
        "simple_rnn_1.recurrent_kernel": "simple_rnn_1.weight_hh",
        "simple_rnn_1.bias": "simple_rnn_1.bias"}
    gru = _graph("input seq: f32[6, 3]", "gru(4)")
    w = init_weights(gru, 1)
    state = from_canonical(gru, w)
    # Keras's gates z, r, h → torch's r, z, n
    np.testing.assert_array_equal(state["gru_1.weight_ih"][:4].numpy(), w["gru_1.kernel"][:, 4:8].T)
    np.testing.assert_array_equal(state["gru_1.bias"][1, 4:8].numpy(), w["gru_1.bias"][1, :4])
    back = to_canonical(gru, state)
    for k in w:
        np.testing.assert_array_equal(back[k], w[k])


def test_gradients_of_a_dense_layer():
    graph = _graph("input x: f32[5]", "dense(3)")
    w = _weights(graph)
    x, c = _inputs(graph)[0], np.arange(12, dtype=np.float64).reshape(4, 3)
    grads = BACKEND.gradients(graph, w, [x], [c])
    assert set(grads) == {"dense_1.kernel", "dense_1.bias", "input:x"}
    np.testing.assert_allclose(grads["dense_1.kernel"], x.T.astype(np.float64) @ c, atol=1e-10)
    np.testing.assert_allclose(grads["dense_1.bias"], c.sum(0), atol=1e-10)
    np.testing.assert_allclose(grads["input:x"], c @ w["dense_1.kernel"].T.astype(np.float64),
                               atol=1e-10)


@pytest.mark.parametrize("case", ["conv_same_k4_stride2", "flatten_order", "rnn_nobias_stack",
                                  "avgpool_same_asym", "two_outputs"])
def test_gradients_match_finite_differences_of_the_reference(case):
    """Canonical layout of every gradient: a nudge of one canonical weight (or input) in the
    reference changes `sum(out * cot)` by what torch's gradient says."""
    graph = _graph(*CASES[case])
    w = {k: v.astype(np.float64) for k, v in _weights(graph).items()}
    xs = [x.astype(np.float64) for x in _inputs(graph, 2)]
    rng = np.random.default_rng(1)
    cots = [rng.normal(size=(2, *graph.type_of(o).shape)) for o in graph.outputs]
    grads = BACKEND.gradients(graph, w, xs, cots)

    def f(weights, inputs) -> float:
        from dslc.backends.reference.interpret import Interpreter

        outs = Interpreter(graph, weights, exact=True).predict_all(inputs)
        return float(sum((o * c).sum() for o, c in zip(outs, cots, strict=True)))

    eps = 1e-6
    for key, value in w.items():
        for idx in [(0,) * value.ndim, tuple(d - 1 for d in value.shape)]:
            hi, lo = dict(w), dict(w)
            hi[key], lo[key] = value.copy(), value.copy()
            hi[key][idx] += eps
            lo[key][idx] -= eps
            assert grads[key][idx] == pytest.approx((f(hi, xs) - f(lo, xs)) / (2 * eps),
                                                    rel=1e-5, abs=1e-7), key
    for k, inp in enumerate(graph.inputs):
        idx = (1,) + tuple(d - 1 for d in inp.type.shape)
        hi, lo = [x.copy() for x in xs], [x.copy() for x in xs]
        hi[k][idx] += eps
        lo[k][idx] -= eps
        assert grads[f"input:{inp.name}"][idx] == pytest.approx(
            (f(w, hi) - f(w, lo)) / (2 * eps), rel=1e-5, abs=1e-7)


# ---- names ------------------------------------------------------------------------------------

def test_layer_names_that_clash_with_python_or_nn_module():
    graph = _graph("input x: f32[5]", "train = dense(x, 3)\n forward = dense(train, 2)\n"
                   " output forward")
    src = generate(None, graph)
    assert "self.train_ = nn.Linear" in src and "self.forward_ = nn.Linear" in src
    w = init_weights(graph, 0)
    x = np.ones((2, 5), np.float32)
    np.testing.assert_allclose(instantiate(graph, w)(torch.from_numpy(x)).detach().numpy(),
                               REFERENCE.build(graph, w).predict(x), atol=1e-5)
