"""batch_norm in training (issue 10): the moving statistics move as Keras moves them —
`moving * momentum + batch * (1 - momentum)` with the batch's biased variance — on torch and
keras alike; they are parameters no optimizer touches; and they travel with the weights
(safetensors, the torch and keras adapters, ONNX), so weights trained on one backend give
the same numbers on every other. Inference on fixed weights is the op test matrix's job."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("tensorflow")

from dslc.backends import get_backend  # noqa: E402
from dslc.backends.reference.interpret import Interpreter  # noqa: E402
from dslc.compiler import compile_text  # noqa: E402
from dslc.weights import init_weights, load_weights, save_weights  # noqa: E402

BACKENDS = ("torch", "keras")
# Dense features (one batch_norm before an activation, one on a sequence's channels) and
# images (NCHW inside torch and ONNX); momentum 0.8 so that five steps move the statistics far.
DENSE = """input x: f32[6, 3]
 dense(8, use_bias=false)
 batch_norm(momentum=0.8)
 relu
 flatten
 batch_norm(scale=false)
 dense(4, activation=softmax)"""
IMAGE = """input x: f32[6, 6, 2]
 conv2d(4, kernel=3, use_bias=false)
 batch_norm(momentum=0.8, epsilon=0.01)
 relu
 global_avgpool2d
 batch_norm(center=false)
 dense(4, activation=softmax)"""
MODELS = {"dense": DENSE, "image": IMAGE}
N, BATCH = 40, 8
rng = np.random.default_rng(0)
# Not centred, not unit: the batch statistics are far from the initial (0, 1).
XS = {"dense": (rng.normal(size=(N, 6, 3)) * 2 + 1).astype(np.float32),
      "image": (rng.normal(size=(N, 6, 6, 2)) * 3 - 2).astype(np.float32)}
LABELS = rng.integers(0, 4, N)
# Five SGD steps in float32 from the same weights: each framework sums the batch statistics and
# gradients in its own order, so they differ by float32 rounding (~1e-7 of values O(1)), which
# five steps at lr 0.1 with momentum grow to ~1e-6. A wrong update (torch's unbiased variance
# differs by a factor 8/7 on a batch of 8; its momentum the other way round by 0.8 vs 0.2) is
# off by 1e-2 or more.
ATOL = 1e-5


def _spec(model: str, train: str = "optimizer = sgd(lr=0.1, momentum=0.9)"):
    spec = compile_text(f"model m {{\n {model}\n}}\ntrain m {{\n data = npy(\"x.npy\", \"y.npy\")\n"
                        f" loss = sparse_categorical_crossentropy\n {train}\n}}\n", "bn.dl")
    return spec.model(), spec.train_config()


def _train(backend: str, graph, cfg, weights, x, batch: int | None = BATCH):
    trainer = get_backend(backend).make_trainer(graph, cfg, "cpu", 0)
    trainer.set_weights(weights)
    losses: list[float] = []
    trainer.train_epoch(x, LABELS, batch, lambda n, loss: losses.append(loss))
    return trainer, trainer.get_weights(), losses


@pytest.mark.parametrize("kind", list(MODELS))
def test_one_step_moves_the_statistics_by_kerass_formula(kind):
    """One full batch, checked against numpy: the first batch_norm's input is computed by the
    reference from the initial weights, its mean and biased variance moved in by momentum."""
    graph, cfg = _spec(MODELS[kind])
    weights = init_weights(graph, 3)
    x = XS[kind]
    bn = next(n for n in graph.nodes if n.op == "batch_norm")
    before = Interpreter(graph, weights, exact=True).values(x)[bn.inputs[0]]
    axes = tuple(range(before.ndim - 1))
    mean, var = before.mean(axis=axes), before.var(axis=axes)  # numpy's var: biased
    m = bn.attrs.momentum
    for backend in BACKENDS:
        _, w, _ = _train(backend, graph, cfg, weights, x, batch=None)
        np.testing.assert_allclose(w[f"{bn.name}.moving_mean"], 0.0 * m + mean * (1 - m),
                                   rtol=1e-5, atol=1e-6, err_msg=backend)
        np.testing.assert_allclose(w[f"{bn.name}.moving_variance"], 1.0 * m + var * (1 - m),
                                   rtol=1e-5, atol=1e-6, err_msg=backend)


@pytest.mark.parametrize("kind", list(MODELS))
def test_torch_and_keras_train_the_same_weights_and_statistics(kind):
    graph, cfg = _spec(MODELS[kind])
    weights = init_weights(graph, 3)
    (_, wt, lt), (_, wk, lk) = (_train(b, graph, cfg, weights, XS[kind]) for b in BACKENDS)
    assert len(lt) == N // BATCH
    np.testing.assert_allclose(lt, lk, atol=ATOL)
    assert set(wt) == set(wk) == set(graph.param_specs())
    for key in wt:
        np.testing.assert_allclose(wt[key], wk[key], atol=ATOL, err_msg=key)
        assert not np.array_equal(wt[key], weights[key]), key  # every parameter moved


def test_the_optimizers_hold_the_trainable_parameters_only():
    """The moving statistics are not the optimizer's (their gradient in training is zero, but
    a decay or a stateful optimizer must not see them either): torch's are buffers, keras's
    non-trainable variables."""
    graph, cfg = _spec(DENSE, "optimizer = adam(lr=0.01)")
    trainable = {k for k, p in graph.param_specs().items() if p.trainable}
    assert len(trainable) < len(graph.param_specs())
    torch_trainer = get_backend("torch").make_trainer(graph, cfg, "cpu", 0)
    optimized = {id(p) for g in torch_trainer.optimizer.param_groups for p in g["params"]}
    state = dict(torch_trainer.module.named_parameters())
    assert optimized == {id(state[t]) for k, t in torch_trainer.model.weights.keys().items()
                         if k in trainable}
    keras_trainer = get_backend("keras").make_trainer(graph, cfg, "cpu", 0)
    by_key = {k: v.path for k, v in keras_trainer.variables.items()}
    assert {v.path for v in keras_trainer.model.trainable_variables} == \
        {by_key[k] for k in trainable}


def test_torch_state_holds_the_canonical_parameters_only():
    """No num_batches_tracked (nn.BatchNorm's): the state_dict is the canonical weights."""
    graph, _ = _spec(IMAGE)
    model = get_backend("torch").build(graph, init_weights(graph, 0)).model
    assert set(model.module.state_dict()) == set(model.weights.keys().values())


@pytest.mark.parametrize("kind", list(MODELS))
def test_trained_weights_give_the_same_numbers_everywhere(kind, tmp_path):
    """Trained on torch, saved to safetensors and loaded back: keras, ONNX and the reference
    give torch's outputs, which use the moving statistics (not the batch's)."""
    graph, cfg = _spec(MODELS[kind])
    _, trained, _ = _train("torch", graph, cfg, init_weights(graph, 3), XS[kind])
    save_weights(tmp_path / "w.safetensors", trained)
    weights = load_weights(tmp_path / "w.safetensors", graph)
    assert all(np.array_equal(weights[k], trained[k]) for k in trained)
    x = XS[kind][:5]
    want = get_backend("torch").build(graph, weights).predict(x)
    for name in ("keras", "onnx", "reference"):
        got = get_backend(name).build(graph, weights).predict(x)
        np.testing.assert_allclose(got, want, atol=1e-5, err_msg=name)
    # on a batch of one too: inference never looks at the batch's statistics
    one = get_backend("keras").build(graph, weights).predict(x[:1])
    np.testing.assert_allclose(one, want[:1], atol=1e-5)


def test_check_counts_the_statistics_as_keras_does():
    graph, _ = _spec(IMAGE)
    from dslc.backends.keras.runtime import build_model

    model = build_model(graph, "/CPU:0")
    assert model.count_params() == graph.param_count
    trainable = sum(int(np.prod(v.shape)) for v in model.trainable_variables)
    assert trainable == graph.trainable_param_count < graph.param_count
