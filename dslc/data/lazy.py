"""Features bigger than memory: rows of a memory-mapped array, read one batch at a time.

`load_dataset` keeps the features of an `npy`/`npz` source on disk when, as float32, they
would exceed the memory cap (`memory_cap()`: `--max-memory` or `DSLC_MAX_MEMORY`, default
half the machine's memory). The splits are then `LazyArray`s: a row index into the mapped
file plus what to do to each row read (cast to float32, reshape to the model's input,
preprocessing, augmentation). Selecting rows (`take`) reads nothing; slicing or indexing
with `[]` reads those rows, so the training loop's batches are the only arrays in memory.
A read larger than the cap is refused with an error, never silently swapped.

`reads()` counts every block materialised (for the test that trains on a file larger than
its cap, and for anyone who wants to see the I/O)."""

from __future__ import annotations

import contextlib
import math
import os
import re
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from dslc.diagnostics import DslError, Span

ENV = "DSLC_MAX_MEMORY"
_UNITS = {"": 1, "b": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}

# A preprocessing step on rows read: (rows, its fitted parameters, span) -> rows.
StepFn = Callable[[np.ndarray, dict, Span | None], np.ndarray]

# Called with the bytes of each block a LazyArray materialises.
READ_HOOKS: list[Callable[[int], None]] = []


def parse_size(text: str) -> int:
    """`512M`, `2G`, `1.5g`, `1048576` (bytes; K/M/G/T are powers of 1024)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*", str(text).lower())
    if not m or float(m.group(1)) <= 0:
        raise ValueError(f"not a size: {text!r} (e.g. 512M, 2G)")
    return int(float(m.group(1)) * _UNITS[m.group(2)])


def memory_cap() -> int:
    """Bytes of features dslc may hold in memory: `DSLC_MAX_MEMORY` (set by `--max-memory`),
    else half the machine's physical memory."""
    value = os.environ.get(ENV)
    if value:
        try:
            return parse_size(value)
        except ValueError as exc:
            raise DslError(f"{ENV}: {exc}") from None
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
    except (ValueError, OSError, AttributeError):  # not POSIX: assume 8 GiB of memory
        return 4 * 2**30


def human(nbytes: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if nbytes < 1024:
            return f"{nbytes:.0f} {unit}" if unit == "B" else f"{nbytes:.1f} {unit}"
        nbytes /= 1024
    return f"{nbytes:.1f} TiB"


@contextlib.contextmanager
def reads() -> Iterator[list[int]]:
    """The byte counts of the blocks materialised inside the `with`, in order."""
    seen: list[int] = []
    READ_HOOKS.append(seen.append)
    try:
        yield seen
    finally:
        READ_HOOKS.remove(seen.append)


def too_big(x: np.ndarray) -> bool:
    """Whether `x` as float32 exceeds the memory cap."""
    return 4 * math.prod(x.shape) > memory_cap()


class LazyArray:
    """float32 `[N, *sample_shape]` rows of `base` (usually a numpy memmap), read on demand.

    `take(key)` selects rows without reading; `[key]` (a slice, an index array or an int)
    reads them. Arrays it returns are fresh float32, writable, with every recorded step
    applied."""

    def __init__(self, base: np.ndarray, index: np.ndarray | None = None,
                 sample_shape: tuple[int, ...] | None = None,
                 steps: tuple[tuple[StepFn, dict], ...] = (),
                 augment: tuple[list, np.random.Generator] | None = None,
                 span: Span | None = None):
        self.base = base
        self.index = index
        self.sample_shape = tuple(base.shape[1:]) if sample_shape is None else sample_shape
        self.steps = steps
        self.augmentation = augment
        self.span = span

    def _with(self, **changes: Any) -> LazyArray:
        fields = {"base": self.base, "index": self.index, "sample_shape": self.sample_shape,
                  "steps": self.steps, "augment": self.augmentation, "span": self.span}
        return LazyArray(**{**fields, **changes})

    # numpy-like surface ----------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.base) if self.index is None else len(self.index)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self), *self.sample_shape)

    @property
    def ndim(self) -> int:
        return 1 + len(self.sample_shape)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.float32)

    @property
    def nbytes(self) -> int:
        return 4 * math.prod(self.shape)

    def reshape(self, *shape: int) -> LazyArray:
        """Samples reshaped (`shape[0]` is the row count, kept)."""
        dims = list(shape[0] if len(shape) == 1 and isinstance(shape[0], tuple) else shape)[1:]
        size = math.prod(self.sample_shape)
        if -1 in dims:
            dims[dims.index(-1)] = size // max(1, math.prod(d for d in dims if d != -1))
        if math.prod(dims) != size:
            raise ValueError(f"cannot reshape samples of {list(self.sample_shape)} into {dims}")
        return self._with(sample_shape=tuple(int(d) for d in dims))

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self[:]
        return out if dtype is None else out.astype(dtype, copy=False)

    def __repr__(self) -> str:
        return f"LazyArray(shape={list(self.shape)}, on disk, {len(self.steps)} steps)"

    # selection without reading -----------------------------------------------------------
    def _positions(self, key: slice | np.ndarray) -> np.ndarray:
        rows = np.arange(len(self))[key] if self.index is None else self.index[key]
        return np.asarray(rows, dtype=np.int64)

    def take(self, key: slice | np.ndarray) -> LazyArray:
        """The rows `key` selects (a slice or an index array), unread."""
        if self.index is None and isinstance(key, slice) and key == slice(None):
            return self
        return self._with(index=self._positions(key))

    def with_step(self, params: dict, apply: StepFn) -> LazyArray:
        """Rows that get `apply(rows, params, span)` (a fitted preprocessing step) after the
        earlier steps."""
        return self._with(steps=(*self.steps, (apply, params)))

    def augmented(self, steps: list, rng: np.random.Generator) -> LazyArray:
        """Rows augmented as they are read, drawing from `rng` batch after batch."""
        return self._with(augment=(steps, rng))

    # reading ----------------------------------------------------------------------------
    def __getitem__(self, key: int | slice | np.ndarray) -> np.ndarray:
        if isinstance(key, int | np.integer):
            n = len(self)
            if not -n <= key < n:
                raise IndexError(f"row {key} of {n}")
            return self[int(key) % n:int(key) % n + 1][0]
        count = len(range(len(self))[key]) if isinstance(key, slice) else len(key)
        cap = memory_cap()
        size = 4 * count * math.prod(self.sample_shape)
        if size > cap:
            raise DslError(f"reading {count} samples of the memory-mapped features needs "
                           f"{human(size)}, more than the memory cap of {human(cap)}",
                           self.span, f"use smaller batches, or raise the cap: --max-memory "
                           f"or {ENV} (e.g. {ENV}=8G)")
        block = self._read(key)
        out = np.array(block, dtype=np.float32).reshape(count, *self.sample_shape)
        for hook in READ_HOOKS:
            hook(out.nbytes)
        for apply, params in self.steps:
            out = apply(out, params, self.span)
        if self.augmentation is not None:
            from dslc.data.augment import augment

            out = augment(out, *self.augmentation)
        return out.astype(np.float32, copy=False)

    def _read(self, key: slice | np.ndarray) -> np.ndarray:
        if self.index is None and isinstance(key, slice):
            return np.asarray(self.base[key])
        rows = self._positions(key)
        if len(rows) == 0:
            return np.asarray(self.base[:0])
        if rows[-1] - rows[0] == len(rows) - 1 and np.all(np.diff(rows) == 1):
            return np.asarray(self.base[rows[0]:rows[-1] + 1])  # one contiguous read
        # Read in file order (sequential I/O), then put the rows back in the asked order.
        order = np.argsort(rows, kind="stable")
        block = np.asarray(self.base[rows[order]])
        out = np.empty_like(block)
        out[order] = block
        return out

    def chunks(self, budget: int | None = None) -> Iterator[np.ndarray]:
        """Every row, read in consecutive blocks of at most `budget` bytes of float64
        working space (default: a quarter of the memory cap)."""
        budget = memory_cap() // 4 if budget is None else budget
        rows = max(1, budget // (8 * max(1, math.prod(self.sample_shape))))
        for start in range(0, len(self), rows):
            yield self[start:start + rows]


def is_lazy(x: Any) -> bool:
    return isinstance(x, LazyArray)


def take(x: Any, key: slice | np.ndarray) -> Any:
    """Rows of `x`: a numpy array's (a copy for an index array, as numpy does), or a
    LazyArray's selection (nothing read)."""
    return x.take(key) if isinstance(x, LazyArray) else x[key]


def streaming_moments(x: LazyArray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and (population) standard deviation in float64, in one pass over
    blocks (Chan et al.'s pairwise combination: as accurate as numpy's two passes)."""
    n = 0
    mean = np.zeros(x.sample_shape)
    m2 = np.zeros(x.sample_shape)
    for block in x.chunks():
        b = block.astype(np.float64)
        nb = len(b)
        mb = b.mean(axis=0)
        m2b = ((b - mb) ** 2).sum(axis=0)
        delta = mb - mean
        total = n + nb
        mean = mean + delta * (nb / total)
        m2 = m2 + m2b + delta ** 2 * (n * nb / total)
        n = total
    return mean, np.sqrt(m2 / max(n, 1))


def check_lazy_features(x: LazyArray, span: Span | None) -> None:
    """`_features`'s checks, in one streaming pass: numbers, finite."""
    if x.base.dtype.kind not in "biuf":
        raise DslError(f"features must be numbers, got an array of {x.base.dtype}", span)
    if len(x) == 0:
        raise DslError(f"no samples: features have shape {list(x.base.shape)}", span)
    if x.base.dtype.kind == "f":
        for block in x.chunks():
            if not np.isfinite(block).all():
                raise DslError("features contain NaN or infinite values", span)


def lazy_features(x: np.ndarray, span: Span | None) -> LazyArray:
    """A mapped feature array as a LazyArray ([N] becomes [N, 1], as in memory)."""
    lazy = LazyArray(x, span=span, sample_shape=(1,) if x.ndim == 1 else None)
    check_lazy_features(lazy, span)
    return lazy
