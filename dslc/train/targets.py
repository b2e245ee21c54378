"""Labels shaped for each loss, backend-neutral (numpy), from what dslc.data.loaders gives:
int64 class indices `[N]`, float32 one-hot `[N, C]`, float32 targets `[N, k]`."""

from __future__ import annotations

import math

import numpy as np

from dslc.diagnostics import DslError


def shape_targets(y: np.ndarray, loss, out_shape: tuple) -> np.ndarray:
    """`y` as the loss compares it with outputs of per-sample shape `out_shape`:

    - sparse categorical: int64 `[N, *out_shape[:-1]]` (class indices);
    - categorical: float32 `[N, *out_shape]` (one row of class weights per position);
    - binary, mse, mae: float32 `[N, *out_shape]` (binary labels `[N]` become `[N, 1]`).
    """
    y = np.asarray(y)
    n = len(y)
    known = None not in out_shape
    if loss.name == "sparse_categorical_crossentropy":
        want = out_shape[:-1]
        if known and y.size != n * math.prod(want):
            raise DslError(f"sparse_categorical_crossentropy needs one class index per output "
                           f"position: labels have shape {list(y.shape[1:])}, the model's "
                           f"output is {list(out_shape)}")
        return y.astype(np.int64).reshape((n, *want)) if known else y.astype(np.int64)
    y = y.astype(np.float32)
    if known:
        if y.size != n * math.prod(out_shape):
            raise DslError(f"{loss.name}: labels have shape {list(y.shape[1:])} per sample, the "
                           f"model's output is {list(out_shape)}",
                           hint="one_hot the labels for categorical_crossentropy, or change the "
                                "last layer's width")
        y = y.reshape((n, *out_shape))
    return y
