"""Raw samples from each data source in dslc/data/catalog.py: built-in sets, seeded generators
and files. A source returns features and labels as read; splitting, shapes, label types and
preprocessing happen in dslc/data/loaders.py."""

from __future__ import annotations

import csv
import io
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dslc.data.arrays import load_npy, load_npz
from dslc.data.datasets import DATASETS, Reader
from dslc.data.files import require_regular
from dslc.data.idx import IDX_FILES, find_idx, read_idx
from dslc.diagnostics import DslError, Span


@dataclass
class Raw:
    x: np.ndarray
    y: np.ndarray
    x_test: np.ndarray | None = None  # set when the source comes with its own test split
    y_test: np.ndarray | None = None
    classes: list[str] | None = None  # class names, when the labels are indices into them
    classes_from: str = ""  # where the names came from, for the train output

    def __post_init__(self) -> None:
        if (self.x_test is None) != (self.y_test is None):
            raise ValueError("a source's test split needs both x_test and y_test")

    @property
    def test(self) -> tuple[np.ndarray, np.ndarray] | None:
        """The source's own test split, or None."""
        if self.x_test is None or self.y_test is None:
            return None
        return self.x_test, self.y_test


@dataclass
class Context:
    base_dir: Path
    seed: int
    span: Span | None

    def rng(self) -> np.random.Generator:
        # Its own stream, so generated data does not change when split settings do.
        return np.random.default_rng([self.seed % 2**63, 0])

    def path(self, value: Any, what: str) -> Path:
        if not isinstance(value, str | Path) or not str(value):
            raise DslError(f"{what} must be a path string, got {value!r}", self.span)
        p = Path(value).expanduser()
        return p if p.is_absolute() else (self.base_dir / p)

    def existing(self, value: Any, what: str) -> Path:
        p = self.path(value, what)
        if not p.exists():
            raise DslError(f"{what} not found: {p.resolve()}", self.span,
                           "paths are relative to the spec's folder")
        return p


SourceFn = Callable[[dict[str, Any], Context], Raw]
SOURCE_FNS: dict[str, SourceFn] = {}


def source(name: str) -> Callable[[SourceFn], SourceFn]:
    def register(fn: SourceFn) -> SourceFn:
        SOURCE_FNS[name] = fn
        return fn

    return register


def _count(args: dict, key: str, ctx: Context, minimum: int = 1) -> int:
    value = args[key]
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value) \
            or value < minimum:
        raise DslError(f"`{key}` must be an integer >= {minimum}, got {value!r}", ctx.span)
    return int(value)


def _number(args: dict, key: str, ctx: Context) -> float:
    value = args[key]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise DslError(f"`{key}` must be a number, got {value!r}", ctx.span)
    return float(value)


# --- built-in and generated -------------------------------------------------------------------


@source("digits")
def digits(args: dict, ctx: Context) -> Raw:
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise DslError("the `digits` data set comes with scikit-learn, which is not installed",
                       ctx.span, "pip install scikit-learn") from None
    d = load_digits()
    return Raw(d.images.astype(np.float32), d.target.astype(np.int64))


@source("linear")
def linear(args: dict, ctx: Context) -> Raw:
    """y = w * sum(x) + b + noise, x ~ U(-1, 1); with one feature, y = w*x + b + noise."""
    n, features = _count(args, "n", ctx), _count(args, "features", ctx)
    w, b, noise = (_number(args, k, ctx) for k in ("w", "b", "noise"))
    rng = ctx.rng()
    x = rng.uniform(-1.0, 1.0, size=(n, features))
    y = w * x.sum(axis=1, keepdims=True) + b + noise * rng.standard_normal((n, 1))
    return Raw(x.astype(np.float32), y.astype(np.float32))


@source("blobs")
def blobs(args: dict, ctx: Context) -> Raw:
    """Two Gaussian blobs with `spread` standard deviation around -1.5 and +1.5 on every axis."""
    n, features = _count(args, "n", ctx, 2), _count(args, "features", ctx)
    spread = _number(args, "spread", ctx)
    rng = ctx.rng()
    y = rng.permutation(np.arange(n) % 2).astype(np.int64)  # balanced classes
    centers = np.where(y[:, None] == 1, 1.5, -1.5)
    x = centers + spread * rng.standard_normal((n, features))
    return Raw(x.astype(np.float32), y)


@source("sequences")
def sequences(args: dict, ctx: Context) -> Raw:
    """Windows of `steps` values of sin(f*t + phase) + noise; the target is the next value."""
    n, steps = _count(args, "n", ctx), _count(args, "steps", ctx)
    noise = _number(args, "noise", ctx)
    rng = ctx.rng()
    phase = rng.uniform(0.0, 2 * np.pi, size=(n, 1))
    freq = rng.uniform(0.1, 0.4, size=(n, 1))
    t = np.arange(steps + 1)[None, :]
    series = np.sin(freq * t + phase) + noise * rng.standard_normal((n, steps + 1))
    return Raw(series[:, :steps, None].astype(np.float32),
               series[:, steps:].astype(np.float32))


@source("order")
def order(args: dict, ctx: Context) -> Raw:
    """Sequences of `length` token ids below `vocab`: marker A (id 1) and marker B (id 2) once
    each at two random places, the rest fillers drawn from 3..vocab-1 (id 0, padding, is never
    used). Label 1 when A comes before B. Both classes hold the same tokens, so only their order
    tells them apart. Classes are balanced."""
    n, length, vocab = (_count(args, k, ctx, m) for k, m in (("n", 2), ("length", 2), ("vocab", 4)))
    if not isinstance(args["one_hot"], bool):
        raise DslError(f"`one_hot` must be true or false, got {args['one_hot']!r}", ctx.span)
    rng = ctx.rng()
    y = rng.permutation(np.arange(n) % 2).astype(np.int64)
    x = rng.integers(3, vocab, size=(n, length), dtype=np.int64)
    places = np.sort(rng.random((n, length)).argsort(axis=1)[:, :2], axis=1)  # a uniform pair
    first, second = places[:, 0], places[:, 1]
    rows = np.arange(n)
    x[rows, first] = np.where(y == 1, 1, 2)
    x[rows, second] = np.where(y == 1, 2, 1)
    if args["one_hot"]:
        return Raw(np.eye(vocab, dtype=np.float32)[x], y)
    return Raw(x, y)


@source("tokens")
def tokens(args: dict, ctx: Context) -> Raw:
    """Sequences of `min_len`..`max_len` token ids (uniform), padded with 0 at the end to
    `max_len` as text pipelines do. An odd number of them (1, 3, ... up to all)
    are markers, A (id 1) or B (id 2), the rest fillers from 3..vocab-1; label 1 when A is the
    majority. Classes are balanced. The label depends on counts anywhere in the sequence, so
    a model that reads the padding as tokens gains nothing from it."""
    n, max_len, vocab = (_count(args, k, ctx, m) for k, m in (("n", 2), ("max_len", 2),
                                                               ("vocab", 4)))
    min_len = _count(args, "min_len", ctx, 2)
    if min_len > max_len:
        raise DslError(f"`min_len` ({min_len}) must be at most `max_len` ({max_len})", ctx.span)
    rng = ctx.rng()
    y = rng.permutation(np.arange(n) % 2).astype(np.int64)
    x = np.zeros((n, max_len), np.int64)
    for k in range(n):
        length = int(rng.integers(min_len, max_len + 1))
        markers = 2 * int(rng.integers(0, (length + 1) // 2)) + 1  # odd, at most length
        major = int(rng.integers(markers // 2 + 1, markers + 1))
        row = rng.integers(3, vocab, size=length)
        places = rng.permutation(length)[:markers]
        a, b = (1, 2) if y[k] == 1 else (2, 1)
        row[places[:major]] = a
        row[places[major:]] = b
        x[k, :length] = row
    return Raw(x, y)


# --- files ------------------------------------------------------------------------------------


@source("npz")
def npz(args: dict, ctx: Context) -> Raw:
    path = ctx.existing(args["path"], "npz file")
    arrays = load_npz(path, ctx.span, mmap=True)  # loaders.py reads what fits the memory cap
    split = ("x_train", "y_train", "x_test", "y_test")
    if "x_train" in arrays and "y_train" in arrays:
        missing = [k for k in split if k not in arrays]
        if missing:
            raise DslError(f"{path} has x_train/y_train but not {', '.join(missing)}", ctx.span,
                           "store all four arrays, or just `x` and `y`")
        return Raw(arrays["x_train"], arrays["y_train"], arrays["x_test"], arrays["y_test"])
    for key in ("x", "y"):
        name = args[key]
        if name not in arrays:
            raise DslError(f"{path} has no array `{name}`; it has {', '.join(sorted(arrays))}",
                           ctx.span, f'name the array: npz("{args["path"]}", {key}="...")')
    return Raw(arrays[args["x"]], arrays[args["y"]])


@source("npy")
def npy(args: dict, ctx: Context) -> Raw:
    x = load_npy(ctx.existing(args["x"], "features file"), ctx.span, mmap=True)
    y = load_npy(ctx.existing(args["y"], "labels file"), ctx.span, mmap=True)
    return Raw(x, y)


@source("csv")
def csv_file(args: dict, ctx: Context) -> Raw:
    path = ctx.existing(args["path"], "CSV file")
    require_regular(path, "CSV file", ctx.span)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DslError(f"cannot read {path}: {exc}", ctx.span) from None
    header = args.get("header", True)
    if not isinstance(header, bool):
        raise DslError(f"`header` is true or false, got {header!r}", ctx.span)
    fast = _parse_csv_fast(text, header)
    if fast is None:  # text labels, scikit-learn's header, or a bad cell: the careful reader
        return read_labelled_csv(text, str(path), header, args.get("label", -1), ctx.span)
    names, values = fast
    classes = sklearn_header(names, values.shape)
    names = None if classes else names
    column = label_column(args.get("label", -1), names, values.shape[1], str(path), ctx.span)
    x = np.delete(values, column, axis=1)
    if classes:
        return Raw(x.astype(np.float32), _class_indices(values[:, column], classes, str(path),
                                                        ctx.span), classes=classes,
                   classes_from=SKLEARN_HEADER)
    return Raw(x.astype(np.float32), values[:, column])


SKLEARN_HEADER = "named in the header, scikit-learn's format"
SORTED_LABELS = "the label column's values, sorted"


def sklearn_header(names: list[str] | None, shape: tuple[int, ...]) -> list[str] | None:
    """The class names of scikit-learn's bundled CSV header `n_samples,n_features,name,...`
    (iris.csv, wine_data.csv), when its counts are the table's `[rows, columns]`."""
    if names is None or len(names) < 3 or len(shape) != 2:
        return None
    rows, features, *classes = names
    if not (rows.isdigit() and features.isdigit()) or (int(rows), int(features) + 1) != shape:
        return None
    return classes if all(classes) else None


def _class_indices(labels: np.ndarray, classes: list[str], name: str,
                   span: Span | None) -> np.ndarray:
    """Integer labels into the header's class names."""
    bad = (labels != np.round(labels)) | (labels < 0) | (labels >= len(classes))
    if bad.any():
        raise DslError(f"{name}: the header names {len(classes)} classes, but a label is "
                       f"{labels[bad.argmax()]:g}", span,
                       f"labels are indices 0..{len(classes) - 1} into the header's names")
    return labels.astype(np.int64)


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def read_labelled_csv(text: str, name: str, header: bool, label: Any,
                      span: Span | None) -> Raw:
    """A CSV file whose label column may hold text (`setosa`, `cat`): its distinct values,
    sorted, are the classes and the labels their indices. Every other cell is a number; a bad
    one is an error naming its line and column."""
    rows = list(csv.reader(io.StringIO(text), skipinitialspace=True))
    first, names = 0, None
    if header:
        while first < len(rows) and not rows[first]:
            first += 1
        if first == len(rows):
            raise DslError(f"{name} is empty", span)
        names = [c.strip() for c in rows[first]]
        first += 1
    data, lines = [], []
    for i in range(first, len(rows)):
        if rows[i] and any(c.strip() for c in rows[i]):
            data.append(rows[i])
            lines.append(i + 1)
    if not data:
        raise DslError(f"{name} has no data rows", span)
    header_classes = sklearn_header(names, (len(data), len(data[0])))
    if header_classes:
        names = None
    width = len(names) if names is not None else len(data[0])
    for row, line in zip(data, lines, strict=True):
        if len(row) != width:
            raise DslError(f"{name}:{line}: {len(row)} columns, expected {width}", span)
    column = label_column(label, names, width, name, span)
    features = [[c for j, c in enumerate(row) if j != column] for row in data]
    try:
        x = np.array(features, dtype=np.float64)
    except ValueError:
        for row, line in zip(data, lines, strict=True):
            for col, cell in enumerate(row):
                if col == column:
                    continue
                try:
                    float(cell)
                except ValueError:
                    where = f"column {col + 1}" + (f" (`{names[col]}`)" if names else "")
                    raise DslError(f"{name}:{line}: {where} is {cell.strip()!r}, not a number",
                                   span, "features must be numbers; only the label column "
                                   "may hold text (class names)") from None
        raise AssertionError("unreachable: every feature cell parsed") from None
    cells = [row[column].strip() for row in data]
    try:
        y = np.array(cells, dtype=np.float64)
    except ValueError:
        for cell, line in zip(cells, lines, strict=True):
            if not cell:
                raise DslError(f"{name}:{line}: the label is empty", span) from None
        numbers = [(c, line) for c, line in zip(cells, lines, strict=True) if _is_number(c)]
        if numbers:  # a typo in a numeric column must not make a class of its own
            word = next((c, line) for c, line in zip(cells, lines, strict=True)
                        if not _is_number(c))
            raise DslError(f"{name}: the label column mixes numbers (`{numbers[0][0]}`, line "
                           f"{numbers[0][1]}) and text (`{word[0]}`, line {word[1]})", span,
                           "labels are all numbers, or all class names") from None
        classes = sorted(set(cells))
        index = {c: i for i, c in enumerate(classes)}
        return Raw(x.astype(np.float32), np.array([index[c] for c in cells], np.int64),
                   classes=classes, classes_from=SORTED_LABELS)
    if header_classes:
        return Raw(x.astype(np.float32), _class_indices(y, header_classes, name, span),
                   classes=header_classes, classes_from=SKLEARN_HEADER)
    return Raw(x.astype(np.float32), y)


def _parse_csv_fast(text: str, header: bool) -> tuple[list[str] | None, np.ndarray] | None:
    """numpy's C reader for well-formed files; None sends anything odd to the slow path, which
    finds the offending line."""
    names, skip = None, 0
    if header:
        reader = csv.reader(io.StringIO(text), skipinitialspace=True)
        for row in reader:
            if row:
                names = [c.strip() for c in row]
                skip = reader.line_num
                break
        if names is None:
            return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "input contained no data": reported below
            values = np.loadtxt(io.StringIO(text), delimiter=",", skiprows=skip, ndmin=2,
                                dtype=np.float64, comments=None, quotechar='"')
    except ValueError:
        return None
    if values.size == 0 or (names is not None and values.shape[1] != len(names)):
        return None
    return names, values


def label_column(label: Any, names: list[str] | None, width: int, name: str,
                  span: Span | None) -> int:
    if width < 2:
        raise DslError(f"{name} has {width} column; it needs features and a label", span)
    if isinstance(label, bool) or not isinstance(label, int | str):
        raise DslError(f"`label` is a column name or index, got {label!r}", span)
    if isinstance(label, str):
        if names is None:
            raise DslError(f"label column `{label}` given by name, but the CSV has no header",
                           span, "give the column index, e.g. label=0")
        if label not in names:
            raise DslError(f"{name} has no column `{label}`; columns are {', '.join(names)}",
                           span)
        return names.index(label)
    if not -width <= label < width:
        raise DslError(f"label column {label} is out of range for {width} columns", span)
    return label % width


@source("idx")
def idx(args: dict, ctx: Context) -> Raw:
    folder = ctx.existing(args["path"], "IDX folder")
    if not folder.is_dir():
        raise DslError(f"idx(...) takes a folder of IDX files, {folder.resolve()} is a file",
                       ctx.span)
    # test=None: use the t10k files; a fraction: split the training files instead.
    keys = ("x_train", "y_train") if args.get("test") is not None else tuple(IDX_FILES)
    found = {k: find_idx(folder, k) for k in keys}
    missing = [IDX_FILES[k][0] for k, p in found.items() if p is None]
    if missing:
        raise DslError(f"{folder.resolve()} lacks {', '.join(missing)} (or .gz)", ctx.span,
                       "MNIST's four files: train-images-idx3-ubyte, train-labels-idx1-ubyte, "
                       "t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte")
    arrays = {k: read_idx(p, ctx.span) for k, p in found.items() if p is not None}
    for split in ("train", "test"):
        xs, ys = arrays.get(f"x_{split}"), arrays.get(f"y_{split}")
        if xs is not None and ys is not None and len(xs) != len(ys):
            raise DslError(f"IDX {split} files disagree: {len(xs)} images, {len(ys)} labels",
                           ctx.span)
    return Raw(arrays["x_train"], arrays["y_train"], arrays.get("x_test"), arrays.get("y_test"))


# --- named data sets (downloaded, or shipped in a package): dslc/data/datasets.py -------------


def _named(read: Reader) -> SourceFn:
    return lambda args, ctx: Raw(*read(args, ctx.span))


SOURCE_FNS.update({name: _named(read) for name, read in DATASETS.items()})
