"""Gradient clipping, class weights, label smoothing and weight decay on kernels only
(issue 15, item 3): torch and keras take the same steps from the same weights, and each
feature does what dslc/train/regularisation.py says, on both backends."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("tensorflow")

from dslc.backends import get_backend  # noqa: E402
from dslc.compiler import compile_text  # noqa: E402
from dslc.diagnostics import DslError  # noqa: E402
from dslc.ir.train import Loss  # noqa: E402
from dslc.train.metrics import numpy_loss  # noqa: E402
from dslc.train.regularisation import balanced, class_labels, decays, sample_weights  # noqa: E402
from dslc.weights import init_weights  # noqa: E402

BACKENDS = ("torch", "keras")
# A layer_norm, so that gamma and beta are among the parameters weight decay must leave alone.
SOFTMAX = "input x: f32[12]\n dense(16, activation=relu)\n layer_norm\n dense(4, activation=softmax)"
LOGITS = "input x: f32[12]\n dense(16, activation=relu)\n layer_norm\n dense(4)"
SIGMOID = "input x: f32[12]\n dense(16, activation=relu)\n layer_norm\n dense(1, activation=sigmoid)"
BINARY_LOGITS = "input x: f32[12]\n dense(16, activation=relu)\n layer_norm\n dense(1)"
rng = np.random.default_rng(0)
X = rng.normal(size=(40, 12)).astype(np.float32) * 2
# Imbalanced classes, so class weights matter: about 55% class 0, 5% class 3.
LABELS = np.minimum(rng.integers(0, 4, 40), rng.integers(0, 4, 40))
BINARY = (LABELS > 1).astype(np.int64)


def _spec(model: str, train: str):
    spec = compile_text(f"model m {{\n {model}\n}}\ntrain m {{\n data = npy(\"x.npy\", \"y.npy\")\n"
                        f" {train}\n}}\n", "case.dl")
    return spec.model(), spec.train_config()


def _train(backend: str, graph, cfg, weights, y, batch: int | None = 8):
    trainer = get_backend(backend).make_trainer(graph, cfg, "cpu", 0)
    trainer.set_weights(weights)
    losses: list[float] = []
    trainer.train_epoch(X, y, batch, lambda n, loss: losses.append(loss))
    return trainer.get_weights(), losses


CASES = {
    "clip_norm": (SOFTMAX, "sparse", "optimizer = sgd(lr=0.1)\n clip_norm = 0.1"),
    "clip_value": (SOFTMAX, "sparse", "optimizer = sgd(lr=0.1)\n clip_value = 0.01"),
    "clip_both": (SOFTMAX, "sparse", "optimizer = sgd(lr=0.1, momentum=0.9)\n clip_value = 0.02\n"
                                     " clip_norm = 0.05"),
    "balanced_sparse": (SOFTMAX, "sparse", "optimizer = sgd(lr=0.1)\n class_weight = balanced"),
    "list_sparse_logits": (LOGITS, "sparse_logits", "optimizer = sgd(lr=0.1)\n"
                                                    " class_weight = [1, 2, 0.5, 4]"),
    "balanced_categorical": (SOFTMAX, "categorical", "optimizer = sgd(lr=0.1)\n"
                                                     " class_weight = balanced"),
    "balanced_binary": (SIGMOID, "binary", "optimizer = sgd(lr=0.1)\n class_weight = balanced"),
    "list_binary_logits": (BINARY_LOGITS, "binary_logits", "optimizer = sgd(lr=0.1)\n"
                                                           " class_weight = [1, 3]"),
    "smooth_sparse": (SOFTMAX, "sparse_ls", "optimizer = sgd(lr=0.1)"),
    "smooth_sparse_logits": (LOGITS, "sparse_logits_ls", "optimizer = sgd(lr=0.1)"),
    "smooth_categorical": (SOFTMAX, "categorical_ls", "optimizer = sgd(lr=0.1)"),
    "smooth_categorical_logits": (LOGITS, "categorical_logits_ls", "optimizer = sgd(lr=0.1)"),
    "smooth_binary": (SIGMOID, "binary_ls", "optimizer = sgd(lr=0.1)"),
    "smooth_binary_logits": (BINARY_LOGITS, "binary_logits_ls", "optimizer = sgd(lr=0.1)"),
    "decay_sgd": (SOFTMAX, "sparse", "optimizer = sgd(lr=0.1, momentum=0.9, weight_decay=0.05)"),
    "everything": (SOFTMAX, "sparse_ls", "optimizer = sgd(lr=0.1, momentum=0.9, weight_decay=0.05)"
                                         "\n class_weight = balanced\n clip_norm = 0.2\n"
                                         " clip_value = 0.05"),
}
LOSSES = {
    "sparse": ("sparse_categorical_crossentropy", LABELS),
    "categorical": ("categorical_crossentropy", np.eye(4, dtype=np.float32)[LABELS]),
    "binary": ("binary_crossentropy", BINARY),
}


def _loss_line(kind: str) -> tuple[str, np.ndarray]:
    base = kind.split("_")[0]
    name, y = LOSSES[base]
    args = [a for a, on in (("from_logits=true", "logits" in kind),
                            ("label_smoothing=0.2", kind.endswith("_ls"))) if on]
    return f"loss = {name}({', '.join(args)})" if args else f"loss = {name}", y


@pytest.mark.parametrize("case", list(CASES))
def test_torch_and_keras_take_the_same_steps(case):
    model, kind, train = CASES[case]
    loss, y = _loss_line(kind)
    graph, cfg = _spec(model, f"{loss}\n {train}")
    weights = init_weights(graph, 3)
    (wt, lt), (wk, lk) = (_train(b, graph, cfg, weights, y) for b in BACKENDS)
    assert len(lt) == 5
    np.testing.assert_allclose(lt, lk, atol=1e-5)
    for key in wt:
        np.testing.assert_allclose(wt[key], wk[key], atol=1e-5, err_msg=key)
        assert not np.array_equal(wt[key], weights[key]), key  # every parameter trained


def test_adamw_takes_the_same_steps_closely():
    """Adam's epsilon differs in where it enters (tests/test_keras_trainer.py): closely."""
    graph, cfg = _spec(SOFTMAX, "loss = sparse_categorical_crossentropy\n"
                                " optimizer = adamw(lr=0.01, weight_decay=0.1)\n clip_norm = 0.5")
    weights = init_weights(graph, 3)
    (wt, _), (wk, _) = (_train(b, graph, cfg, weights, LABELS) for b in BACKENDS)
    for key in wt:
        np.testing.assert_allclose(wt[key], wk[key], atol=2e-3, err_msg=key)


def _global_norm(a: dict, b: dict) -> float:
    return float(np.sqrt(sum(np.sum((a[k] - b[k]).astype(np.float64) ** 2) for k in a)))


@pytest.mark.parametrize("backend", BACKENDS)
def test_clip_norm_bounds_the_update(backend):
    """One full-batch SGD step with lr 1 moves the weights by the clipped gradient: its global
    norm is exactly clip_norm when the gradient's is larger."""
    graph, free = _spec(SOFTMAX, "loss = sparse_categorical_crossentropy\n optimizer = sgd(lr=1)")
    _, clipped = _spec(SOFTMAX, "loss = sparse_categorical_crossentropy\n optimizer = sgd(lr=1)\n"
                                " clip_norm = 0.05")
    weights = init_weights(graph, 3)
    unclipped, _ = _train(backend, graph, free, weights, LABELS, None)
    assert _global_norm(unclipped, weights) > 0.5
    after, _ = _train(backend, graph, clipped, weights, LABELS, None)
    assert _global_norm(after, weights) == pytest.approx(0.05, rel=1e-4)
    for key in after:  # the same direction
        np.testing.assert_allclose(after[key] - weights[key],
                                   (unclipped[key] - weights[key]) * 0.05
                                   / _global_norm(unclipped, weights), atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_clip_value_bounds_each_element(backend):
    graph, cfg = _spec(SOFTMAX, "loss = sparse_categorical_crossentropy\n optimizer = sgd(lr=1)\n"
                                " clip_value = 0.002")
    weights = init_weights(graph, 3)
    after, _ = _train(backend, graph, cfg, weights, LABELS, None)
    steps = np.concatenate([(after[k] - weights[k]).ravel() for k in after])
    assert np.abs(steps).max() == pytest.approx(0.002, rel=1e-4)  # bound reached, not passed
    assert np.abs(steps).max() <= 0.002 * (1 + 1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("optimizer", ["sgd(lr=0.5, weight_decay={})",
                                       "adamw(lr=0.01, weight_decay={})"])
def test_weight_decay_touches_kernels_only(backend, optimizer):
    """One full-batch step with and without decay: biases, gamma and beta move alike; each
    kernel moves by lr * weight_decay * kernel more (L2 for sgd, decoupled for adamw)."""
    lr = 0.5 if optimizer.startswith("sgd") else 0.01
    runs = {}
    for wd in (0.0, 0.2):
        graph, cfg = _spec(SOFTMAX, "loss = sparse_categorical_crossentropy\n"
                                    f" optimizer = {optimizer.format(wd)}")
        weights = init_weights(graph, 3)
        runs[wd], _ = _train(backend, graph, cfg, weights, LABELS, None)
    assert {k for k in weights if decays(k)} == {"dense_1.kernel", "dense_2.kernel"}
    for key in weights:
        if decays(key):
            np.testing.assert_allclose(runs[0.0][key] - runs[0.2][key],
                                       lr * 0.2 * weights[key], atol=1e-6, err_msg=key)
        else:
            np.testing.assert_array_equal(runs[0.0][key], runs[0.2][key], err_msg=key)


def test_decay_rule_names_kernels():
    assert decays("lstm_1.recurrent_kernel") and decays("conv2d_3.kernel")
    assert not any(decays(k) for k in ("dense_1.bias", "layer_norm_1.gamma",
                                       "layer_norm_1.beta"))


def test_balanced_weights_are_scikit_learns():
    from sklearn.utils.class_weight import compute_class_weight

    y = np.array([0, 0, 0, 0, 1, 2, 2, 0, 2, 4])
    want = compute_class_weight("balanced", classes=np.unique(y), y=y)
    got = balanced(y, 5)
    np.testing.assert_allclose(got[np.unique(y)], want)
    assert got[3] == 1.0  # absent from the training split: meets no sample
    np.testing.assert_allclose(balanced(np.eye(5)[y], 5), got)  # one-hot rows: argmax
    np.testing.assert_array_equal(class_labels(np.array([[0.1], [0.9], [0.6]])), [0, 1, 1])


def test_weighted_loss_is_keras_sum_over_batch_size():
    """Keras's class_weight: sum(w_i * loss_i) / N — not PyTorch's sum(w_i * loss_i) / sum(w_i)."""
    import torch

    from dslc.backends.keras.quiet import import_keras
    from dslc.backends.keras.trainer import make_loss as keras_loss
    from dslc.backends.torch.trainer import make_loss as torch_loss

    loss = Loss(name="sparse_categorical_crossentropy", label_smoothing=0.1)
    pred = rng.dirichlet(np.ones(4), 10).astype(np.float32)
    y = rng.integers(0, 4, 10)
    w = sample_weights(y, np.array([1.0, 2.0, 0.5, 3.0]))
    per = np.array([numpy_loss(loss, y[i:i + 1], pred[i:i + 1]) for i in range(10)])
    want = float(np.sum(w * per) / len(y))
    assert want != pytest.approx(float(np.sum(w * per) / np.sum(w)), rel=1e-3)
    fn, _ = torch_loss(loss, None)
    got = fn(torch.from_numpy(pred), torch.from_numpy(y), torch.from_numpy(w))
    assert float(got) == pytest.approx(want, rel=1e-5)
    keras = import_keras()
    got_k = keras_loss(keras, loss, 4)(y, pred, sample_weight=w)
    assert float(got_k) == pytest.approx(want, rel=1e-5)


def test_class_weights_through_the_loop(tmp_path):
    """`fit` with balanced weights: both backends end where the other does."""
    from dslc.data.loaders import load_dataset
    from dslc.train.loop import fit
    from dslc.train.progress import Silent
    from dslc.train.run import regularisation_notes

    np.save(tmp_path / "x.npy", X)
    np.save(tmp_path / "y.npy", LABELS)
    graph, cfg = _spec(SOFTMAX, "loss = sparse_categorical_crossentropy\n optimizer = sgd(lr=0.1)\n"
                                " class_weight = balanced\n clip_norm = 1.0\n batch = 8")
    data = load_dataset(cfg, (12,), tmp_path, 0)
    notes = regularisation_notes(graph, cfg, data)
    counts = np.bincount(data.y_train, minlength=4)
    first = len(data.y_train) / (np.count_nonzero(counts) * counts[0])
    assert notes == [f"class weights (balanced on the training split): 0 {first:.4g}, "
                     + notes[0].split(", ", 1)[1]]
    results = {}
    for name in BACKENDS:
        trainer = get_backend(name).make_trainer(graph, cfg, "cpu", 0)
        run = fit(trainer, graph, cfg, data, out=tmp_path / name, backend=name, epochs=2,
                  batch=8, seed=0, progress=Silent())
        results[name] = trainer.get_weights(), [row["loss"] for row in run.history]
    (wt, ht), (wk, hk) = results["torch"], results["keras"]
    np.testing.assert_allclose(ht, hk, rtol=1e-5)
    for key in wt:
        np.testing.assert_allclose(wt[key], wk[key], atol=1e-5, err_msg=key)


def test_torch_optimizer_state_round_trip_with_parameter_groups():
    """Decay splits the parameters into two groups; --resume's state still finds each one."""
    graph, cfg = _spec(SOFTMAX, "loss = sparse_categorical_crossentropy\n"
                                " optimizer = adamw(lr=0.01, weight_decay=0.1)")
    torch_backend = get_backend("torch")
    a = torch_backend.make_trainer(graph, cfg, "cpu", 0)
    a.train_epoch(X, LABELS, 8, lambda n, loss: None)
    b = torch_backend.make_trainer(graph, cfg, "cpu", 1)
    b.set_weights(a.get_weights())
    b.set_optimizer_state(a.optimizer_state())
    for t in (a, b):
        t.train_epoch(X, LABELS, 8, lambda n, loss: None)
    for key, value in a.get_weights().items():
        np.testing.assert_array_equal(b.get_weights()[key], value)


@pytest.mark.parametrize("model, train, message", [
    (SOFTMAX, "loss = mse\n class_weight = balanced", "`class_weight` weighs classes"),
    (SOFTMAX, "loss = sparse_categorical_crossentropy\n class_weight = [1, 2]",
     "`class_weight` has 2 weights, the output has 4 classes"),
    (SIGMOID, "loss = binary_crossentropy\n class_weight = [1, 2, 3]",
     "`class_weight` has 3 weights, the output has 2 classes"),
    ("input x: f32[5, 12]\n dense(4, activation=softmax)",
     "loss = sparse_categorical_crossentropy\n class_weight = balanced",
     "weighs one class per sample; the model's output is [5, 4]"),
    (SOFTMAX, "loss = sparse_categorical_crossentropy\n class_weight = [1, -2, 1, 1]",
     "a list of weights >= 0"),
    (SOFTMAX, "loss = sparse_categorical_crossentropy\n class_weight = even",
     "`class_weight` is `balanced` or a list"),
    (SOFTMAX, "loss = mse(label_smoothing=0.1)", "`label_smoothing` smooths class labels"),
    (SOFTMAX, "loss = sparse_categorical_crossentropy\n clip_norm = 0", "`clip_norm` must be a "
                                                                        "number > 0"),
    (SOFTMAX, "loss = sparse_categorical_crossentropy\n clip_value = true", "`clip_value` must"),
])
def test_settings_are_checked(model, train, message):
    with pytest.raises(DslError, match=message.replace("[", r"\[").replace("]", r"\]")):
        _spec(model, f"{train}\n optimizer = sgd")
