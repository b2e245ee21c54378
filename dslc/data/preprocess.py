"""Preprocessing steps: fitted on the training split, recorded as plain JSON-able parameters, and
re-applied from those parameters to any split or to new inputs at inference.

The record is `{"steps": [...feature steps...], "labels": [...label steps...]}`, e.g.
`{"steps": [{"name": "scale", "factor": 0.0039}, {"name": "standardize", "mean": [...],
"std": [...]}], "labels": [{"name": "one_hot", "classes": 10}]}`. Means and standard deviations
are nested lists in the per-sample shape."""

from __future__ import annotations

import numpy as np

from dslc.data.lazy import LazyArray, streaming_moments
from dslc.diagnostics import DslError, Span
from dslc.ir.train import Step


def fit_feature_step(step: Step, x_train: np.ndarray | LazyArray) -> dict:
    """The parameters of one feature step, fitted on `x_train` [N, ...] (on disk: in one
    streaming pass)."""
    if step.name == "scale":
        factor = step.args.get("factor")
        if isinstance(factor, bool) or not isinstance(factor, int | float):
            raise DslError("`scale` needs a number, e.g. `scale(1/255)`", step.span)
        return {"name": "scale", "factor": float(factor)}
    if step.name == "standardize":
        if len(x_train) == 0:
            raise DslError("`standardize` needs training samples, the training split is empty",
                           step.span)
        if isinstance(x_train, LazyArray):
            mean, std = streaming_moments(x_train)
        else:
            x64 = x_train.astype(np.float64)
            mean = x64.mean(axis=0)
            std = x64.std(axis=0)
        std[std == 0] = 1.0  # constant features (e.g. blank border pixels) stay finite
        return {"name": "standardize", "mean": mean.astype(np.float32).tolist(),
                "std": std.astype(np.float32).tolist()}
    raise DslError(f"unknown preprocessing step `{step.name}`", step.span)


def apply_feature_step(x: np.ndarray | LazyArray, params: dict,
                       span: Span | None = None) -> np.ndarray | LazyArray:
    """`x` with the step applied (on disk: recorded, applied to each batch read)."""
    if isinstance(x, LazyArray):
        return x.with_step(params, apply_array_step)
    return apply_array_step(x, params, span)


def apply_array_step(x: np.ndarray, params: dict, span: Span | None = None) -> np.ndarray:
    """`apply_feature_step` on an array in memory."""
    name = params.get("name")
    if name == "scale":
        return x * np.float32(params["factor"])
    if name == "standardize":
        mean = np.asarray(params["mean"], dtype=np.float32)
        std = np.asarray(params["std"], dtype=np.float32)
        sample = x.shape[1:]
        if mean.size != int(np.prod(sample)):
            raise DslError(f"inputs have samples of shape {list(sample)}, but `standardize` was "
                           f"fitted on samples of shape {list(mean.shape)}", span)
        return (x - mean.reshape(sample)) / std.reshape(sample)
    raise DslError(f"unknown preprocessing step {name!r}", span)


def apply_preprocessing(x: np.ndarray, params: dict, span: Span | None = None) -> np.ndarray:
    """Features prepared exactly as in training: `params` is `Dataset.preprocessing`. Label
    steps (one_hot) do not touch features and are skipped."""
    if np.asarray(x).dtype.kind in "biu" and not params.get("steps"):
        return np.asarray(x)  # ids: never scaled (the pipeline refuses it), never made floats
    out = np.asarray(x, dtype=np.float32)
    for step in params.get("steps", []):
        out = apply_array_step(out, step, span)
    return out.astype(np.float32, copy=False)


def one_hot(y: np.ndarray, classes: int, span: Span | None = None) -> np.ndarray:
    """Integer labels [N] → float32 [N, classes]."""
    y = np.asarray(y)
    if y.ndim != 1 or y.dtype.kind not in "iu":
        raise DslError(f"`one_hot` needs integer class labels, got {y.dtype} labels of shape "
                       f"{list(y.shape)}", span)
    if len(y) and (y.min() < 0 or y.max() >= classes):
        raise DslError(f"`one_hot({classes})` but labels range over {int(y.min())}.."
                       f"{int(y.max())}", span, f"use one_hot({int(y.max()) + 1})")
    out = np.zeros((len(y), classes), dtype=np.float32)
    out[np.arange(len(y)), y] = 1.0
    return out
