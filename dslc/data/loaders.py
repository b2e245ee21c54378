"""Load a `train` block's data: read the source, split train/validation/test (seeded), give the
features the model's input shape, type the labels for the loss, and fit preprocessing on the
training split. Shared by every backend, so all of them see the same arrays."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dslc.data.augment import augment
from dslc.data.catalog import SOURCES
from dslc.data.lazy import LazyArray, lazy_features, take, too_big
from dslc.data.preprocess import apply_feature_step, apply_preprocessing, fit_feature_step, one_hot
from dslc.data.sources import SOURCE_FNS, Context
from dslc.diagnostics import DslError, Span
from dslc.ir.graph import NUMPY_DTYPES
from dslc.ir.train import TrainConfig

__all__ = ["Dataset", "apply_preprocessing", "augment", "load_dataset"]

CLASS_LOSSES = {"binary_crossentropy", "categorical_crossentropy",
                "sparse_categorical_crossentropy"}


# In memory, or on disk when bigger than the memory cap (dslc/data/lazy.py).
Features = np.ndarray | LazyArray


@dataclass
class Dataset:
    x_train: Features
    y_train: np.ndarray
    x_val: Features | None
    y_val: np.ndarray | None
    x_test: Features
    y_test: np.ndarray
    num_classes: int | None
    preprocessing: dict = field(default_factory=lambda: {"steps": [], "labels": []})
    classes: list[str] | None = None  # class names (text labels, a named header), by index
    classes_from: str = ""


def load_dataset(cfg: TrainConfig, input_shape: tuple[int | None, ...], base_dir: Path,
                 seed: int, input_dtype: str = "f32") -> Dataset:
    """The data of `cfg` shaped for a model whose per-sample input shape is `input_shape`.

    Features are float32 `[N, *input_shape]`, or for an input of ids (`input_dtype` i32, i64,
    bool) whole numbers of that dtype, never scaled: a float array feeding it must hold whole
    numbers. Labels: int64 `[N]` class indices (binary: 0/1),
    float32 `[N, C]` after `one_hot`, float32 `[N, k]` regression targets."""
    span = cfg.data.span
    info = SOURCES.get(cfg.data.kind)
    if info is None or cfg.data.kind not in SOURCE_FNS:
        raise DslError(f"unknown data source `{cfg.data.kind}`", span)
    args = {**info.args, **cfg.data.args}
    raw = SOURCE_FNS[cfg.data.kind](args, Context(Path(base_dir), seed, span))
    loss = cfg.loss.name
    if raw.classes and loss not in CLASS_LOSSES:
        raise DslError(f"the labels are class names ({', '.join(raw.classes[:4])}"
                       f"{', ...' if len(raw.classes) > 4 else ''}), but {loss} needs numbers",
                       cfg.loss.span, "use sparse_categorical_crossentropy (or "
                       "binary_crossentropy for two classes)")

    ids = input_dtype != "f32"

    def features(a: np.ndarray) -> Features:
        return _id_features(a, input_dtype, span) if ids else _features(a, span)

    x, y = features(raw.x), _labels(np.array(raw.y), info.labels, loss, span)
    _same_length(x, y, "", span)
    split_rng = np.random.default_rng([seed % 2**63, 1])
    if raw.test is not None:
        x_test = features(raw.test[0])
        y_test = _labels(np.array(raw.test[1]), info.labels, loss, span)
        _same_length(x_test, y_test, "test ", span)
        order = split_rng.permutation(len(x))
        x_train, y_train = take(x, order), y[order]
    else:
        test = args.get("test")
        test = 0.2 if test is None else float(test)
        x_train, y_train, x_test, y_test = _split(x, y, test, split_rng)

    x_train, x_test = (_reshape(a, input_shape, span) for a in (x_train, x_test))
    x_val = y_val = None
    if cfg.validation > 0:
        n_val = round(len(x_train) * cfg.validation)
        if n_val == 0 or n_val == len(x_train):
            left = "no sample for validation" if n_val == 0 else "none for training"
            raise DslError(f"validation={cfg.validation} of {len(x_train)} training samples "
                           f"leaves {left}", cfg.span)
        cut = len(x_train) - n_val
        x_train, x_val = take(x_train, slice(None, cut)), take(x_train, slice(cut, None))
        y_train, y_val = y_train[:cut], y_train[cut:]
    if len(x_train) == 0:
        raise DslError("the training split is empty", span)

    num_classes = _num_classes(info.classes, loss, [y_train, y_val, y_test])
    if raw.classes:
        num_classes = max(num_classes or 0, len(raw.classes))
    feature_steps, label_steps = [], []
    for step in cfg.preprocess:
        if step.name == "one_hot":
            classes = step.args.get("classes")
            classes = num_classes if classes is None else classes
            if isinstance(classes, bool) or not isinstance(classes, int) or classes < 1:
                raise DslError("`one_hot` needs the number of classes, e.g. `one_hot(10)`",
                               step.span)
            y_train, y_test = one_hot(y_train, classes, step.span), one_hot(y_test, classes, step.span)
            y_val = None if y_val is None else one_hot(y_val, classes, step.span)
            num_classes = classes
            label_steps.append({"name": "one_hot", "classes": int(classes)})
            continue
        if ids:
            raise DslError(f"`{step.name}` would change the model's input ids (the input is "
                           f"{input_dtype})", step.span,
                           "ids are fed as they are: remove this step")
        params = fit_feature_step(step, x_train)
        x_train = apply_feature_step(x_train, params, step.span)
        x_test = apply_feature_step(x_test, params, step.span)
        x_val = None if x_val is None else apply_feature_step(x_val, params, step.span)
        feature_steps.append(params)

    # ids are cast in memory; float features that are LazyArrays stay on disk, as they are
    cast = _f32 if not ids else (lambda a: np.ascontiguousarray(a, NUMPY_DTYPES[input_dtype]))
    return Dataset(x_train=cast(x_train), y_train=y_train,
                   x_val=None if x_val is None else cast(x_val), y_val=y_val,
                   x_test=cast(x_test), y_test=y_test, num_classes=num_classes,
                   preprocessing={"steps": feature_steps, "labels": label_steps},
                   classes=raw.classes, classes_from=raw.classes_from)


def _f32(a: Features) -> Features:
    return a if isinstance(a, LazyArray) else np.ascontiguousarray(a, dtype=np.float32)


def _features(x: np.ndarray, span: Span | None) -> Features:
    """float32 `[N, ...]` features; on disk (a LazyArray) when a memory-mapped file's would
    exceed the memory cap (dslc/data/lazy.py)."""
    if isinstance(x, np.memmap) and x.ndim >= 1 and too_big(x):
        return lazy_features(x, span)
    x = np.asarray(x)
    if x.dtype.kind not in "biuf":
        raise DslError(f"features must be numbers, got an array of {x.dtype}", span)
    if x.ndim < 1 or len(x) == 0:
        raise DslError(f"no samples: features have shape {list(x.shape)}", span)
    if x.ndim == 1:  # one feature a sample
        x = x[:, None]
    x = x.astype(np.float32)
    if not np.isfinite(x).all():
        raise DslError("features contain NaN or infinite values", span)
    return x


def _id_features(x: np.ndarray, dtype: str, span: Span | None) -> np.ndarray:
    """Features for an input of ids: whole numbers, cast to int64 (bool: 0/1) losing nothing."""
    x = np.asarray(x)
    if x.dtype.kind not in "biuf":
        raise DslError(f"features must be numbers, got an array of {x.dtype}", span)
    if x.ndim < 1 or len(x) == 0:
        raise DslError(f"no samples: features have shape {list(x.shape)}", span)
    if x.ndim == 1:
        x = x[:, None]
    if x.dtype.kind == "f":
        with np.errstate(invalid="ignore"):
            bad = ~np.isfinite(x) | (x != np.round(x))
        if bad.any():
            at = [int(i) for i in np.argwhere(bad)[0]]
            raise DslError(f"the model's input is {dtype} (ids), but the features hold "
                           f"{float(x[tuple(at)])!r} (sample {at[0]})", span,
                           "ids are whole numbers; declare the input `f32[...]` for real values")
    if dtype == "bool":
        if x.size and not np.isin(x, (0, 1)).all():
            raise DslError("the model's input is bool, but the features hold values other "
                           "than 0 and 1", span)
        return x.astype(np.bool_)
    if x.size and (float(x.min()) < -2**31 or float(x.max()) >= 2**31):
        raise DslError(f"the features hold ids out of the {dtype} range "
                       f"({float(x.min()):g}..{float(x.max()):g})", span)
    return x.astype(np.int64)


def _labels(y: np.ndarray, kind: str, loss: str, span: Span | None) -> np.ndarray:
    """Labels typed for the loss: class indices int64 [N], or float32 [N, k]."""
    y = np.asarray(y)
    if y.dtype.kind not in "biuf":
        raise DslError(f"labels must be numbers, got an array of {y.dtype}", span)
    if y.ndim == 0:
        raise DslError("labels must have one entry a sample, got a scalar", span)
    if not np.isfinite(y.astype(np.float64)).all():
        raise DslError("labels contain NaN or infinite values", span)
    column = y.ndim == 1 or (y.ndim == 2 and y.shape[1] == 1)
    classes = kind == "int" or (kind == "unknown" and loss in CLASS_LOSSES)
    if not (classes and column):
        if classes and loss == "sparse_categorical_crossentropy":
            raise DslError(f"sparse_categorical_crossentropy takes one class index a sample; "
                           f"the labels have shape {list(y.shape)}", span,
                           "use categorical_crossentropy for one-hot labels")
        y = y.astype(np.float32)
        return y[:, None] if y.ndim == 1 else y.reshape(len(y), -1)
    flat = y.reshape(len(y))
    integral = flat.dtype.kind in "biu" or bool(np.all(flat == np.round(flat)))
    if loss == "binary_crossentropy" and not integral:
        if flat.min() < 0 or flat.max() > 1:
            raise DslError("binary_crossentropy needs labels in [0, 1], got values in "
                           f"{float(flat.min())}..{float(flat.max())}", span)
        return flat.astype(np.float32)[:, None]  # soft targets
    if not integral:
        raise DslError(f"{loss} needs integer class labels, got fractional values", span,
                       "use `loss = mse` for real-valued targets")
    if len(flat) and np.abs(flat).max() > 2**31:
        raise DslError(f"class label {flat[np.abs(flat).argmax()]:g} is out of range", span,
                       "class labels are indices 0, 1, 2, ...")
    labels = flat.astype(np.int64)
    if len(labels) and labels.min() < 0:
        raise DslError(f"class labels must be >= 0, found {int(labels.min())}", span)
    if loss == "binary_crossentropy" and len(labels) and labels.max() > 1:
        raise DslError(f"binary_crossentropy needs 0/1 labels, found {int(labels.max())}", span,
                       "use sparse_categorical_crossentropy for more than two classes")
    return labels


def _same_length(x: Features, y: np.ndarray, what: str, span: Span | None) -> None:
    if len(x) != len(y):
        raise DslError(f"{what}features and labels differ in length: {len(x)} samples, "
                       f"{len(y)} labels", span)


def _split(x, y, test: float, rng: np.random.Generator):
    """Seeded shuffle, then the last `test` fraction is the test split."""
    order = rng.permutation(len(x))
    cut = len(x) - round(len(x) * test)
    train, held = order[:cut], order[cut:]
    return take(x, train), y[train], take(x, held), y[held]


def _reshape(x: Features, shape: tuple[int | None, ...], span: Span | None) -> Features:
    """`x` as `[N, *shape]`: as is when the known dimensions agree, else reshaped when the
    per-sample sizes match (8x8 digits → [8, 8, 1] or [64])."""
    sample = x.shape[1:]
    if len(sample) == len(shape) and all(s is None or s == d for s, d in zip(shape, sample, strict=True)):
        return x
    known = math.prod(d for d in shape if d is not None)
    size = math.prod(sample)
    unknown = sum(d is None for d in shape)
    if (unknown == 0 and known == size) or (unknown == 1 and known and size % known == 0):
        return x.reshape(len(x), *(-1 if d is None else d for d in shape))
    shown = "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"
    raise DslError(f"data samples have shape {list(sample)} ({size} values), the model's input "
                   f"is {shown}", span, "change the model's input shape to match the data")


def _num_classes(known: int | None, loss: str, ys: list[np.ndarray | None]) -> int | None:
    labelled = [a for a in ys if a is not None and len(a)]
    if not labelled:
        return known
    if labelled[0].dtype == np.int64:
        top = max(int(a.max()) for a in labelled) + 1
        return max(top, known or 0, 2 if loss == "binary_crossentropy" else 0)
    if loss == "categorical_crossentropy" and labelled[0].ndim == 2:
        return labelled[0].shape[1]
    return None
