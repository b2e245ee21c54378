"""Regularisation rules both trainers follow, in numpy; each trainer applies them in its
framework (dslc/backends/*/trainer.py):

- weight decay touches kernels only (`kernel`, `recurrent_kernel`: weight matrices and conv
  filters), never biases nor normalisation's `gamma`/`beta`;
- class weights as Keras's `fit(class_weight=...)`: each sample's loss times its class's weight,
  then the mean over the batch (the sum divided by the batch size, not by the sum of the
  weights, which is PyTorch's `weight=` rule); `balanced` is scikit-learn's
  `n_samples / (n_classes * count)` over the classes present in the training split;
- gradient clipping on the loss's gradients, before weight decay: `clip_value` element-wise
  first, then `clip_norm` scales every gradient by `clip_norm / max(norm, clip_norm)`, `norm`
  being the global L2 norm over all parameters (`tf.clip_by_global_norm`'s rule); both bounds
  hold after the two.
"""

from __future__ import annotations

import numpy as np

from dslc.diagnostics import DslError

CE = {"binary_crossentropy", "categorical_crossentropy", "sparse_categorical_crossentropy"}


def decays(key: str) -> bool:
    """Whether weight decay applies to the canonical parameter `<layer>.<param>`."""
    return key.rpartition(".")[2].endswith("kernel")


def class_labels(y: np.ndarray) -> np.ndarray:
    """Each sample's class as Keras's class_weight reads its label: one-hot rows → argmax, a
    trailing axis of 1 dropped, then rounded (soft binary targets → 0/1)."""
    y = np.asarray(y)
    if y.ndim > 1:
        y = y.argmax(axis=-1) if y.shape[-1] != 1 else y[..., 0]
    return np.round(y.reshape(len(y))).astype(np.int64)


def balanced(y: np.ndarray, classes: int) -> np.ndarray:
    """scikit-learn's `compute_class_weight("balanced")` on the classes present in `y`;
    absent classes weigh 1 (they meet no sample)."""
    labels = class_labels(y)
    present, counts = np.unique(labels, return_counts=True)
    weights = np.ones(max(classes, int(present.max(initial=-1)) + 1))
    weights[present] = len(labels) / (len(present) * counts)
    return weights


def class_weights(cfg, y: np.ndarray, classes: int) -> np.ndarray | None:
    """The weight of each class (float64 `[classes]`), or None without `class_weight`.
    `y`: the training split's labels (for `balanced`); `classes`: the output's classes (2 for
    one sigmoid unit)."""
    setting = cfg.class_weight
    if setting is None:
        return None
    if cfg.loss.name not in CE:
        raise DslError(f"`class_weight` needs a classification loss, not {cfg.loss.name}",
                       cfg.span)
    if setting == "balanced":
        return balanced(y, classes)
    return np.asarray(setting, dtype=np.float64)


def sample_weights(y: np.ndarray, weights: np.ndarray | None) -> np.ndarray | None:
    """float32 `[N]`: each sample's class weight (1 for a class beyond the list, as Keras)."""
    if weights is None:
        return None
    labels = class_labels(y)
    known = (labels >= 0) & (labels < len(weights))
    out = np.ones(len(labels), np.float32)
    out[known] = weights[labels[known]]
    return out


def output_classes(loss, out_shape: tuple) -> int:
    """How many classes a trained output tells apart: 2 for binary cross-entropy."""
    return 2 if loss.name == "binary_crossentropy" else int(out_shape[-1] or 1)
