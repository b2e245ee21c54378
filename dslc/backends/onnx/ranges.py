"""The raw value range of a model's training data (before preprocessing), which `dslc export`
records in the metadata and `dslc run` reads back: an image is mapped into it, the note says
what the model expects, and an input far from it gets a one-line warning.

The rules, as `dslc run` applies them:
- An 8-bit image (0..255) is mapped linearly onto the range, min..max.
- Polarity: training data whose mean lies in the lowest 40% of its range has a dark background
  (light strokes on dark, as the digits and MNIST); in the highest 40%, a light one; else
  none is recorded. An image whose mean, after the mapping, lies past the middle of the range
  on the other side (above 50% for a dark background) is warned about. Every one of the
  1,797 digits has a mean within 18..42% of 0..16; every one of them inverted, 58..82%.
- Other inputs (arrays, CSV) are warned about when a value lies more than one range width
  below the minimum or above the maximum (e.g. 0..255 pixels given to a model trained on
  0..16).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from dslc.data.lazy import is_lazy
from dslc.diagnostics import DslError

META_INPUT_RANGE = "dslc.input_range"  # JSON: {"min", "max", "mean"?, "background"?, "source"}

DARK, LIGHT, MIDDLE = 0.4, 0.6, 0.5

# Built-in sources whose range is known without reading them: (min, max, mean, background).
KNOWN: dict[str, tuple[float, float, float | None, str | None]] = {
    "digits": (0.0, 16.0, 4.884, "dark"),  # scikit-learn's 8x8 digits, ink high
    "idx": (0.0, 255.0, None, "dark"),      # MNIST-style IDX files, ink high
    "mnist": (0.0, 255.0, None, "dark"),    # the named sets of dslc/data/datasets.py
    "mnist_sample": (0.0, 255.0, None, "dark"),
    "fashion_mnist": (0.0, 255.0, None, "dark"),  # garments light on black
    "cifar10": (0.0, 255.0, None, None),    # photos: no polarity
}

BACKGROUNDS = {"dark": "light strokes on a dark background",
               "light": "dark strokes on a light background"}


def _number(v: Any) -> float | None:
    """`v` as a float if it is a finite JSON number, else None."""
    if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v):
        return float(v)
    return None


@dataclass(frozen=True)
class InputRange:
    min: float
    max: float
    mean: float | None = None
    background: str | None = None  # "dark", "light" or None (no clear polarity)
    source: str = ""

    @classmethod
    def known(cls, kind: str) -> InputRange | None:
        if kind not in KNOWN:
            return None
        lo, hi, mean, background = KNOWN[kind]
        return cls(lo, hi, mean, background, kind)

    @classmethod
    def measure(cls, x: Any, source: str) -> InputRange | None:
        """The range of `x` (float32 samples, or a LazyArray on disk, read in blocks); None
        when it holds no finite value."""
        blocks = x.chunks() if is_lazy(x) else [x]
        lo, hi, total, count = np.inf, -np.inf, 0.0, 0
        for block in blocks:
            b = np.asarray(block, np.float64)
            if b.size == 0:
                continue
            if not np.isfinite(b).all():
                return None
            lo, hi = min(lo, float(b.min())), max(hi, float(b.max()))
            total, count = total + float(b.sum()), count + b.size
        if count == 0:
            return None
        mean = total / count
        background = None
        if hi > lo:
            f = (mean - lo) / (hi - lo)
            background = "dark" if f < DARK else "light" if f > LIGHT else None
        return cls(lo, hi, mean, background, source)

    def to_json(self) -> str:
        return json.dumps({k: v for k, v in asdict(self).items() if v is not None},
                          sort_keys=True)

    @classmethod
    def from_json(cls, text: str, where: str) -> InputRange:
        def bad(msg: str) -> DslError:
            return DslError(f"{where}: metadata `{META_INPUT_RANGE}` is not a valid range: {msg}",
                            hint='a range is {"min": 0, "max": 16, "mean": 4.9, '
                                 '"background": "dark", "source": "digits"}')

        try:
            data = json.loads(text)
        except (json.JSONDecodeError, RecursionError):
            raise bad("not JSON") from None
        if not isinstance(data, dict):
            raise bad(f"expected a JSON object, got {type(data).__name__}")
        lo, hi, mean = (_number(data.get(k)) for k in ("min", "max", "mean"))
        if lo is None or hi is None or lo > hi:
            raise bad("`min` and `max` must be finite numbers, min <= max")
        if mean is None and data.get("mean") is not None:
            raise bad("`mean` must be a finite number")
        background = data.get("background")
        if background is not None and background not in BACKGROUNDS:
            raise bad(f"`background` must be one of {', '.join(BACKGROUNDS)}")
        source = data.get("source", "")
        return cls(lo, hi, mean, background, source if isinstance(source, str) else "")

    def fraction(self, value: float) -> float:
        """Where `value` lies in the range: 0 at min, 1 at max."""
        return (value - self.min) / (self.max - self.min) if self.max > self.min else 0.0

    def describe(self) -> str:
        """E.g. `values 0..16 (digits), light strokes on a dark background`."""
        text = f"values {self.min:g}..{self.max:g}"
        if self.source:
            text += f" ({self.source})"
        if self.background:
            text += f", {BACKGROUNDS[self.background]}"
        return text

    def map_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """8-bit pixels (0..255) onto min..max, float32."""
        scale = np.float32((self.max - self.min) / 255.0)
        out = pixels.astype(np.float32) * scale
        return out + np.float32(self.min) if self.min else out

    def image_warning(self, name: str, image: np.ndarray) -> str | None:
        """A warning when `image` (already mapped) has the other polarity, else None."""
        if self.background is None or self.max <= self.min:
            return None
        f = self.fraction(float(np.mean(image, dtype=np.float64)))
        if (f > MIDDLE) == (self.background == "dark"):
            mine = "light" if f > MIDDLE else "dark"
            trained = "" if self.mean is None else \
                f" (mean {100 * self.fraction(self.mean):.0f}%)"
            hint = "dark strokes on a light background" if mine == "light" else \
                "light strokes on a dark background"
            return (f"{name} is mostly {mine} (mean {100 * f:.0f}% of the range), but the model "
                    f"was trained on {BACKGROUNDS[self.background]}{trained}: its answer is "
                    f"likely wrong; if the image shows {hint}, invert it first")
        return None

    def values_warning(self, name: str, x: np.ndarray) -> str | None:
        """A warning when a value of `x` lies more than one range width outside the range."""
        width = self.max - self.min
        finite = x[np.isfinite(x)]
        if width <= 0 or finite.size == 0:
            return None
        lo, hi = float(finite.min()), float(finite.max())
        if lo >= self.min - width and hi <= self.max + width:
            return None
        return (f"{name} holds values {lo:g}..{hi:g}, far outside the training data's "
                f"{self.min:g}..{self.max:g}{f' ({self.source})' if self.source else ''}: the "
                "answers are likely wrong; give inputs in the training data's range")
