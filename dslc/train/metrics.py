"""Losses and metrics in numpy, shared by every backend so their figures are identical.

Cross-entropies follow Keras: probabilities clipped to [1e-7, 1 - 1e-7], categorical outputs
renormalised to sum to 1, a numerically stable log-softmax / log-sigmoid for logits, label
smoothing as Keras and PyTorch define it, mean over every element. Classification metrics
match scikit-learn (`zero_division=0`): macro averages over the classes present in the labels
or predictions for multi-class, the positive class for binary, the per-label average for
several sigmoid outputs (multi-label; accuracy there is per element, as Keras's
binary_accuracy). An output `[T, C]` is classified at each of its T positions."""

from __future__ import annotations

import numpy as np

from dslc.ir.train import Loss

EPSILON = 1e-7  # keras.backend.epsilon()
# The clip bounds as float32 values, as Keras applies them: 1 - 1e-7 rounds to 1 - 1.19e-7,
# which matters for saturated outputs (p == 1.0 gives log(1.19e-7), not log(1e-7)).
LOW, HIGH = float(np.float32(EPSILON)), float(np.float32(1.0 - EPSILON))
CLASS_METRICS = ("accuracy", "precision", "recall", "f1")


def _loss(loss: Loss | str) -> Loss:
    return loss if isinstance(loss, Loss) else Loss(name=loss)


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def _rows(y_pred: np.ndarray) -> np.ndarray:
    """[M, C]: classes on the last axis, one row per sample and position (an output [T, C]
    classifies each of its T positions, as Keras's losses and metrics do)."""
    return y_pred.reshape(-1, y_pred.shape[-1])


def _one_hot_given(y_true: np.ndarray, y_pred: np.ndarray) -> bool:
    # Labels come flattened per sample ([N, T*C] one-hot, or [N] / [N, T] indices): one-hot
    # labels are exactly as many as the outputs, indices a C-th of them.
    return y_pred.shape[-1] != 1 and y_true.size == y_pred.size


def _class_targets(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """One-hot float64 rows matching `_rows(y_pred)`, from int labels (one per sample and
    position, with or without a trailing 1) or from one-hot labels."""
    y = np.asarray(y_true)
    classes = y_pred.shape[-1]
    if _one_hot_given(y, y_pred):
        return y.reshape(-1, classes).astype(np.float64)
    labels = y.reshape(-1).astype(np.int64)
    out = np.zeros((len(labels), classes))
    out[np.arange(len(labels)), labels] = 1.0
    return out


def numpy_loss(loss: Loss | str, y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean loss of model outputs `y_pred` (probabilities, or logits when `from_logits`)."""
    loss = _loss(loss)
    y_pred = np.asarray(y_pred, dtype=np.float64)
    y_true = np.asarray(y_true)
    if len(y_pred) == 0:
        return float("nan")
    ls = loss.label_smoothing
    if loss.name in ("mse", "mae"):
        t = y_true.astype(np.float64).reshape(y_pred.shape)
        diff = y_pred - t
        return float(np.mean(diff * diff) if loss.name == "mse" else np.mean(np.abs(diff)))
    if loss.name == "binary_crossentropy":
        t = y_true.astype(np.float64).reshape(y_pred.shape)
        if ls:
            t = t * (1.0 - ls) + 0.5 * ls
        if loss.from_logits:
            # max(z, 0) - z*t + log(1 + exp(-|z|)), as tf.nn.sigmoid_cross_entropy_with_logits
            z = y_pred
            per = np.maximum(z, 0) - z * t + np.log1p(np.exp(-np.abs(z)))
        else:
            p = np.clip(y_pred, LOW, HIGH)
            per = -(t * np.log(p) + (1.0 - t) * np.log(1.0 - p))
        return float(per.mean())
    # categorical / sparse categorical: classes on the last axis
    z = _rows(y_pred)
    classes = z.shape[1]
    t = _class_targets(y_true, y_pred)
    if ls:
        t = t * (1.0 - ls) + ls / classes
    if loss.from_logits:
        logp = _log_softmax(z)
    elif loss.name == "categorical_crossentropy":
        p = z / z.sum(axis=-1, keepdims=True)
        logp = np.log(np.clip(p, LOW, HIGH))
    else:
        # Keras: clip, take the log, then a log-softmax (which renormalises the clipped values)
        logp = _log_softmax(np.log(np.clip(z, LOW, HIGH)))
    return float(-(t * logp).sum(axis=-1).mean())


def _binary(y_pred: np.ndarray, loss_name: str) -> bool:
    width = 1 if y_pred.ndim == 1 else int(np.prod(y_pred.shape[1:]))
    return loss_name == "binary_crossentropy" or width == 1


def output_classes(y_pred: np.ndarray, loss: Loss | str) -> int:
    """How many classes the outputs tell apart: 2 for binary outputs, else the last axis."""
    y_pred = np.asarray(y_pred)
    return 2 if _binary(y_pred, _loss(loss).name) else int(y_pred.shape[-1])


def predicted_labels(y_pred: np.ndarray, loss: Loss | str) -> np.ndarray:
    """Class predictions int64: argmax over classes, or for binary outputs the threshold 0.5
    on probabilities (0 on logits)."""
    loss = _loss(loss)
    y_pred = np.asarray(y_pred)
    if _binary(y_pred, loss.name):
        threshold = 0.0 if loss.from_logits else 0.5
        labels = (y_pred > threshold).astype(np.int64)
        return labels.reshape(len(labels)) if labels.ndim > 1 and labels[0].size == 1 else labels
    return _rows(y_pred).argmax(axis=-1).astype(np.int64)


def true_labels(y_true: np.ndarray, y_pred: np.ndarray, loss: Loss | str) -> np.ndarray:
    """Class indices int64 from int labels, one-hot rows, or (binary) 0/1 or soft targets."""
    loss = _loss(loss)
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    if _binary(y_pred, loss.name):
        labels = (y_true.astype(np.float64) >= 0.5).astype(np.int64)
        return labels.reshape(len(labels)) if labels.ndim > 1 and labels[0].size == 1 else labels
    if _one_hot_given(y_true, y_pred):
        return y_true.reshape(-1, y_pred.shape[-1]).argmax(axis=-1).astype(np.int64)
    return y_true.reshape(-1).astype(np.int64)


def confusion_matrix(y_true_labels: np.ndarray, y_pred_labels: np.ndarray,
                     num_classes: int) -> np.ndarray:
    """int64 [C, C]: rows are true classes, columns predicted ones (scikit-learn's layout)."""
    t = np.asarray(y_true_labels, dtype=np.int64).ravel()
    p = np.asarray(y_pred_labels, dtype=np.int64).ravel()
    k = max(int(num_classes), int(t.max(initial=-1)) + 1, int(p.max(initial=-1)) + 1)
    return np.bincount(t * k + p, minlength=k * k).reshape(k, k)


def _divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    # zero_division=0: a class never predicted (or never present) scores 0, no NaN.
    return np.divide(num, den, out=np.zeros_like(num, dtype=np.float64), where=den > 0)


def _precision_recall_f1(t: np.ndarray, p: np.ndarray, binary: bool) -> tuple[float, ...]:
    if binary:
        # one column per sigmoid output: several make a multi-label problem, averaged per label
        t, p = t.reshape(len(t), -1) == 1, p.reshape(len(p), -1) == 1
        tp = np.sum(t & p, axis=0).astype(np.float64)
        fp = np.sum(~t & p, axis=0).astype(np.float64)
        fn = np.sum(t & ~p, axis=0).astype(np.float64)
    else:
        labels = np.union1d(t, p)  # scikit-learn's default label set for averaging
        cm = confusion_matrix(t, p, int(labels.max()) + 1)[np.ix_(labels, labels)]
        tp = np.diag(cm).astype(np.float64)
        fp = cm.sum(axis=0) - tp
        fn = cm.sum(axis=1) - tp
    precision = _divide(tp, tp + fp)
    recall = _divide(tp, tp + fn)
    f1 = _divide(2 * tp, 2 * tp + fp + fn)
    return float(precision.mean()), float(recall.mean()), float(f1.mean())


def compute_metrics(names: list[str], y_true: np.ndarray, y_pred: np.ndarray,
                    loss_name: Loss | str) -> dict[str, float]:
    """The named metrics of model outputs `y_pred` against `y_true`. `loss_name` (a loss name or
    the `Loss`, which also tells whether outputs are logits) says how outputs become classes."""
    loss = _loss(loss_name)
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    out: dict[str, float] = {}
    if len(y_pred) == 0:
        return {name: float("nan") for name in names}
    if set(names) & set(CLASS_METRICS):
        binary = _binary(y_pred, loss.name)
        t = true_labels(y_true, y_pred, loss)
        p = predicted_labels(y_pred, loss)
        scores = None
        for name in names:
            if name == "accuracy":
                out[name] = float(np.mean(t == p))
            elif name in ("precision", "recall", "f1"):
                scores = scores or _precision_recall_f1(t, p, binary)
                out[name] = scores[("precision", "recall", "f1").index(name)]
    for name in names:
        if name in ("mse", "mae"):
            pred = y_pred.astype(np.float64)
            target = y_true
            if target.size != pred.size and target.dtype.kind in "iu":
                target = _class_targets(target, pred)
            diff = pred.reshape(len(pred), -1) - target.astype(np.float64).reshape(len(pred), -1)
            out[name] = float(np.mean(diff * diff) if name == "mse" else np.mean(np.abs(diff)))
        elif name not in CLASS_METRICS:
            raise ValueError(f"unknown metric {name!r}")
    return {name: out[name] for name in names}
