"""Random augmentation of training batches (numpy, vectorised: it runs every epoch).

Images are `[N, H, W, C]`. Each step draws from the given generator, so the same generator
state gives the same result."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from dslc.diagnostics import DslError
from dslc.ir.train import Step

AugmentFn = Callable[[np.ndarray, dict, np.random.Generator], np.ndarray]
AUGMENT_FNS: dict[str, AugmentFn] = {}


def augmentation(name: str) -> Callable[[AugmentFn], AugmentFn]:
    def register(fn: AugmentFn) -> AugmentFn:
        AUGMENT_FNS[name] = fn
        return fn

    return register


def augment(x: np.ndarray, steps: list[Step], rng: np.random.Generator) -> np.ndarray:
    """`x` with every step applied in order; `x` itself is left unchanged."""
    out = np.asarray(x, dtype=np.float32)
    for step in steps:
        fn = AUGMENT_FNS.get(step.name)
        if fn is None:
            raise DslError(f"unknown augmentation `{step.name}`", step.span)
        if step.name in ("shift", "flip") and out.ndim != 4:
            raise DslError(f"`{step.name}` needs images [N, H, W, C], got samples of shape "
                           f"{list(out.shape[1:])}", step.span)
        out = fn(out, step.args, rng)
    return out


def _shift_axis(x: np.ndarray, offsets: np.ndarray, axis: int) -> np.ndarray:
    """Shift each sample along `axis` by its offset (positive: towards higher indices), zero
    fill. One slice copy per distinct offset, so the cost is two passes over the data."""
    out = np.zeros_like(x)
    size = x.shape[axis]
    for d in np.unique(offsets):
        d = int(d)
        if abs(d) >= size:
            continue  # shifted out entirely: zeros
        rows = np.flatnonzero(offsets == d)
        src: list[slice | np.ndarray] = [slice(None)] * x.ndim
        dst: list[slice | np.ndarray] = [slice(None)] * x.ndim
        src[axis] = slice(max(0, -d), size - max(0, d))
        dst[axis] = slice(max(0, d), size - max(0, -d))
        if len(rows) < len(x):
            src[0] = dst[0] = rows
        out[tuple(dst)] = x[tuple(src)]
    return out


@augmentation("shift")
def shift(x: np.ndarray, args: dict, rng: np.random.Generator) -> np.ndarray:
    """Random integer shift per image, up to `fraction` of its height and width (rounded to the
    nearest pixel), independently on both axes; uncovered pixels are zero."""
    fraction = float(args.get("fraction", 0.1))
    n, h, w = x.shape[:3]
    max_h, max_w = round(fraction * h), round(fraction * w)
    dy = rng.integers(-max_h, max_h + 1, size=n)
    dx = rng.integers(-max_w, max_w + 1, size=n)
    return _shift_axis(_shift_axis(x, dy, 1), dx, 2)


@augmentation("flip")
def flip(x: np.ndarray, args: dict, rng: np.random.Generator) -> np.ndarray:
    """Mirror each image with probability 0.5: `horizontal` reverses the width axis,
    `vertical` the height axis."""
    axis = 2 if args.get("axis", "horizontal") == "horizontal" else 1
    chosen = rng.random(len(x)) < 0.5
    out = x.copy()
    out[chosen] = np.flip(x[chosen], axis=axis)
    return out


@augmentation("noise")
def noise(x: np.ndarray, args: dict, rng: np.random.Generator) -> np.ndarray:
    """Add Gaussian noise with standard deviation `std`."""
    std = np.float32(args.get("std", 0.05))
    return x + std * rng.standard_normal(x.shape, dtype=np.float32)
