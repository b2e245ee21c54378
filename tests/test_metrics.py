"""numpy losses and metrics (dslc/train/metrics.py) against scikit-learn and Keras."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn import metrics as skm

from dslc.ir.train import Loss
from dslc.train.metrics import (
    compute_metrics,
    confusion_matrix,
    numpy_loss,
    output_classes,
    predicted_labels,
)

# --- losses -----------------------------------------------------------------------------------

YB = np.array([[0.0], [1.0], [1.0], [0.0]], np.float32)
PB = np.array([[0.0], [0.3], [1.0], [0.9]], np.float32)  # 0 and 1 exercise the clipping
ZB = np.array([[-3.0], [0.5], [40.0], [2.0]], np.float32)
YI = np.array([0, 2, 1], np.int64)
YC = np.eye(3, dtype=np.float32)[YI]
PC = np.array([[0.0, 0.5, 0.5], [0.2, 0.2, 0.6], [0.1, 0.0, 0.9]], np.float32)
PU = np.array([[1.0, 1.0, 2.0], [0.2, 0.2, 0.6], [0.1, 0.0, 0.9]], np.float32)  # not normalised
ZC = np.array([[50.0, -20.0, 3.0], [0.1, 0.2, 0.3], [-1.0, 2.0, 0.5]], np.float32)

# Values from keras.losses.* (Keras 3.15, TensorFlow 2.21) on the arrays above, and one from
# torch.nn.CrossEntropyLoss(label_smoothing=0.1) for the sparse + smoothing case Keras lacks.
GOLDEN = [
    ("binary_crossentropy", False, 0.0, YB, PB, 0.8766394853591919),
    ("binary_crossentropy", False, 0.1, YB, PB, 1.2393391132354736),
    ("binary_crossentropy", True, 0.0, YB, ZB, 0.662398099899292),
    ("binary_crossentropy", True, 0.2, YB, ZB, 1.69989812374115),
    ("categorical_crossentropy", False, 0.0, YC, PC, 10.915672302246094),
    ("categorical_crossentropy", False, 0.1, YC, PU, 5.690359115600586),
    ("categorical_crossentropy", True, 0.0, YC, ZC, 0.4144180715084076),
    ("categorical_crossentropy", True, 0.1, YC, ZC, 1.7677513360977173),
    ("sparse_categorical_crossentropy", False, 0.0, YI, PC, 10.915672302246094),
    ("sparse_categorical_crossentropy", False, 0.0, YI, PU, 5.909177780151367),
    ("sparse_categorical_crossentropy", True, 0.0, YI, ZC, 0.4144180715084076),
    ("sparse_categorical_crossentropy", True, 0.1, YI, ZC, 1.767751693725586),
    ("mse", False, 0.0, YB, PB, 0.32499998807907104),
    ("mae", False, 0.0, YB, PB, 0.3999999761581421),
]


@pytest.mark.parametrize("name, logits, smoothing, y, p, expected", GOLDEN,
                         ids=[f"{g[0]}-logits{g[1]}-ls{g[2]}" for g in GOLDEN])
def test_loss_matches_keras(name, logits, smoothing, y, p, expected):
    got = numpy_loss(Loss(name=name, from_logits=logits, label_smoothing=smoothing), y, p)
    assert got == pytest.approx(expected, abs=1e-6)


def test_cross_entropy_matches_sklearn_log_loss():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 5, 300)
    p = rng.random((300, 5)) + 0.01
    p /= p.sum(axis=1, keepdims=True)
    expected = skm.log_loss(y, p, labels=range(5))
    assert numpy_loss(Loss(name="sparse_categorical_crossentropy"), y, p) == pytest.approx(expected)
    assert numpy_loss(Loss(name="categorical_crossentropy"), np.eye(5)[y], p) == \
        pytest.approx(expected)
    yb, pb = rng.integers(0, 2, 300), rng.random(300) * 0.98 + 0.01
    assert numpy_loss(Loss(name="binary_crossentropy"), yb, pb[:, None]) == \
        pytest.approx(skm.log_loss(yb, pb))


def test_logits_are_stable_and_agree_with_probabilities():
    z = np.array([[1000.0, -1000.0, 0.0], [-1000.0, 1000.0, 0.0]])
    y = np.array([0, 1])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert numpy_loss(Loss(name="sparse_categorical_crossentropy", from_logits=True), y, z) \
            == pytest.approx(0.0)
        big = numpy_loss(Loss(name="binary_crossentropy", from_logits=True), [[1.0]], [[-800.0]])
    assert big == pytest.approx(800.0)
    rng = np.random.default_rng(1)
    z = rng.normal(size=(50, 4))
    y = rng.integers(0, 4, 50)
    soft = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    assert numpy_loss(Loss(name="sparse_categorical_crossentropy", from_logits=True), y, z) == \
        pytest.approx(numpy_loss(Loss(name="sparse_categorical_crossentropy"), y, soft))


def test_sparse_smoothing_equals_categorical_smoothing():
    loss = dict(from_logits=True, label_smoothing=0.3)
    assert numpy_loss(Loss(name="sparse_categorical_crossentropy", **loss), YI, ZC) == \
        pytest.approx(numpy_loss(Loss(name="categorical_crossentropy", **loss), YC, ZC))


# --- metrics ----------------------------------------------------------------------------------


def softmax_outputs(labels: np.ndarray, classes: int, rng) -> np.ndarray:
    z = rng.normal(size=(len(labels), classes))
    z[np.arange(len(labels)), labels] += 3.0  # mostly right, sometimes wrong
    return np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)


def sklearn_scores(t, p, average):
    return {"accuracy": skm.accuracy_score(t, p),
            "precision": skm.precision_score(t, p, average=average, zero_division=0),
            "recall": skm.recall_score(t, p, average=average, zero_division=0),
            "f1": skm.f1_score(t, p, average=average, zero_division=0)}


NAMES = ["accuracy", "precision", "recall", "f1"]


@pytest.mark.parametrize("one_hot", [False, True])
def test_multiclass_metrics_match_sklearn(one_hot):
    rng = np.random.default_rng(2)
    y = rng.integers(0, 6, 500)
    out = softmax_outputs(y, 6, rng)
    y_true = np.eye(6, dtype=np.float32)[y] if one_hot else y
    loss = "categorical_crossentropy" if one_hot else "sparse_categorical_crossentropy"
    got = compute_metrics(NAMES, y_true, out, loss)
    expected = sklearn_scores(y, out.argmax(axis=1), "macro")
    assert list(got) == NAMES
    for name in NAMES:
        assert got[name] == pytest.approx(expected[name], abs=1e-12), name


def test_class_never_predicted_scores_zero_without_warnings():
    y = np.array([0, 0, 1, 1, 2, 2, 3])
    pred = np.array([0, 1, 1, 1, 0, 0, 0])  # classes 2 and 3 never predicted
    out = np.eye(4)[pred]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = compute_metrics(NAMES, y, out, "sparse_categorical_crossentropy")
    expected = sklearn_scores(y, pred, "macro")
    for name in NAMES:
        assert got[name] == pytest.approx(expected[name]), name
        assert np.isfinite(got[name])
    # a class the model predicts but that never occurs counts too, as in scikit-learn
    got = compute_metrics(NAMES, np.array([0, 1, 1]), np.eye(3)[[0, 1, 2]],
                          "sparse_categorical_crossentropy")
    assert got["precision"] == pytest.approx(skm.precision_score(
        [0, 1, 1], [0, 1, 2], average="macro", zero_division=0))


@pytest.mark.parametrize("logits", [False, True])
def test_binary_metrics_match_sklearn(logits):
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 400)
    score = y * 1.5 + rng.normal(size=400) - 0.75  # a logit
    out = (score if logits else 1 / (1 + np.exp(-score)))[:, None]
    loss = Loss(name="binary_crossentropy", from_logits=logits)
    got = compute_metrics(NAMES, y, out, loss)
    expected = sklearn_scores(y, (score > 0).astype(int), "binary")
    for name in NAMES:
        assert got[name] == pytest.approx(expected[name]), name
    np.testing.assert_array_equal(predicted_labels(out, loss), (score > 0).astype(int))


def test_binary_with_no_positive_prediction():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = compute_metrics(NAMES, np.array([1, 0, 1]), np.array([[0.1], [0.2], [0.3]]),
                              "binary_crossentropy")
    assert got == {"accuracy": pytest.approx(1 / 3), "precision": 0.0, "recall": 0.0, "f1": 0.0}


def test_regression_metrics_match_sklearn():
    rng = np.random.default_rng(4)
    y = rng.normal(size=(200, 1))
    pred = y + rng.normal(scale=0.3, size=(200, 1))
    got = compute_metrics(["mse", "mae"], y, pred, "mse")
    assert got["mse"] == pytest.approx(skm.mean_squared_error(y, pred))
    assert got["mae"] == pytest.approx(skm.mean_absolute_error(y, pred))
    # targets [N] against outputs [N, 1]
    assert compute_metrics(["mse"], y[:, 0], pred, "mse")["mse"] == pytest.approx(got["mse"])


def test_confusion_matrix_matches_sklearn():
    rng = np.random.default_rng(5)
    t, p = rng.integers(0, 4, 300), rng.integers(0, 3, 300)
    cm = confusion_matrix(t, p, 5)
    assert cm.shape == (5, 5)
    np.testing.assert_array_equal(cm, skm.confusion_matrix(t, p, labels=range(5)))


def test_predicted_labels():
    probs = np.array([[0.1, 0.7, 0.2], [0.5, 0.2, 0.3]])
    np.testing.assert_array_equal(predicted_labels(probs, Loss(name="categorical_crossentropy")),
                                  [1, 0])
    np.testing.assert_array_equal(
        predicted_labels(np.array([[0.4], [0.6]]), Loss(name="binary_crossentropy")), [0, 1])
    np.testing.assert_array_equal(
        predicted_labels(np.array([[-0.1], [0.2]]),
                         Loss(name="binary_crossentropy", from_logits=True)), [0, 1])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(2, 6).flatmap(lambda k: st.tuples(
    st.just(k),
    st.lists(st.tuples(st.integers(0, k - 1), st.integers(0, k - 1)), min_size=1, max_size=40))))
def test_macro_scores_match_sklearn_for_any_labels(case):
    classes, pairs = case
    t, p = (np.array(v) for v in zip(*pairs, strict=True))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = compute_metrics(NAMES, t, np.eye(classes)[p], "sparse_categorical_crossentropy")
    expected = sklearn_scores(t, p, "macro")
    for name in NAMES:
        assert got[name] == pytest.approx(expected[name], abs=1e-12), name


@pytest.mark.parametrize("one_hot", [True, False])
def test_an_output_per_position_is_classified_at_each_position(one_hot):
    # Output [T, C]: the loss and the metrics work per position, as Keras's do. Labels come from
    # the loader flattened per sample: one-hot [N, T*C], or indices [N, T].
    rng = np.random.default_rng(6)
    n, steps, classes = 50, 4, 3
    probs = rng.dirichlet(np.ones(classes), size=(n, steps))
    labels = rng.integers(0, classes, (n, steps))
    y = np.eye(classes)[labels].reshape(n, -1) if one_hot else labels
    loss = Loss(name="categorical_crossentropy" if one_hot else "sparse_categorical_crossentropy")
    flat_p, flat_t = probs.reshape(-1, classes), labels.reshape(-1)
    assert numpy_loss(loss, y, probs) == pytest.approx(
        skm.log_loss(flat_t, flat_p, labels=range(classes)))
    got = compute_metrics(NAMES, y, probs, loss)
    expected = sklearn_scores(flat_t, flat_p.argmax(-1), "macro")
    for name in NAMES:
        assert got[name] == pytest.approx(expected[name]), name
    assert output_classes(probs, loss) == classes


def test_several_sigmoid_outputs_average_per_label():
    rng = np.random.default_rng(7)
    y = rng.integers(0, 2, (300, 3))
    y[:, 2] = 0  # a label that is never on
    probs = np.clip(y * 0.6 + rng.uniform(0, 0.5, y.shape), 0, 1)
    got = compute_metrics(NAMES, y, probs, "binary_crossentropy")
    pred = (probs > 0.5).astype(int)
    for name, fn in (("precision", skm.precision_score), ("recall", skm.recall_score),
                     ("f1", skm.f1_score)):
        assert got[name] == pytest.approx(fn(y, pred, average="macro", zero_division=0)), name
    assert got["accuracy"] == pytest.approx(np.mean(y == pred))  # per element, as Keras
    assert output_classes(probs, "binary_crossentropy") == 2
