"""Input files for `dslc run`: .npy, .npz, .csv or an image, checked against the model's
signature (every error prints it) and given a batch axis."""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dslc.data.arrays import load_npy, load_npz
from dslc.diagnostics import DslError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
SUFFIXES = (".npy", ".npz", ".csv", *IMAGE_SUFFIXES)
ONNX_TYPES = {"tensor(float)": "float32", "tensor(double)": "float64",
              "tensor(int64)": "int64", "tensor(int32)": "int32"}


@dataclass
class Port:
    name: str
    dims: tuple  # ints, or names/None for dynamic axes
    dtype: str

    def __str__(self) -> str:
        dims = ", ".join("?" if d is None else str(d) for d in self.dims)
        return f"{self.name}: {self.dtype}[{dims}]"

    @property
    def sample(self) -> tuple:
        return self.dims[1:]


@dataclass
class Signature:
    inputs: list[Port]
    outputs: list[Port]

    @classmethod
    def of(cls, session) -> Signature:
        def ports(args):
            return [Port(a.name, tuple(a.shape), ONNX_TYPES.get(a.type, a.type)) for a in args]

        return cls(ports(session.get_inputs()), ports(session.get_outputs()))

    def __str__(self) -> str:
        ins = ", ".join(map(str, self.inputs))
        outs = ", ".join(map(str, self.outputs))
        return f"({ins}) -> ({outs})"


def _error(path: Path, message: str, sig: Signature, hint: str | None = None) -> DslError:
    return DslError(f"{path}: {message}; the model expects {sig}", hint=hint)


def read_input(path: Path, sig: Signature, pixel_max: float = 255.0) -> dict[str, np.ndarray]:
    """The feed for `sig`: every input float32 with a batch axis, its shape checked."""
    if not path.is_file():
        raise DslError(f"{path}: no such input file")
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise DslError(f"{path}: cannot read `{suffix or path.name}` input",
                       hint=f"give one of {', '.join(SUFFIXES)}")
    if suffix in IMAGE_SUFFIXES:
        arrays = {sig.inputs[0].name: read_image(path, sig, pixel_max)}
    elif suffix == ".npy":
        arrays = {sig.inputs[0].name: load_npy(path)}
    elif suffix == ".npz":
        arrays = _read_npz(path, sig)
    else:
        arrays = {sig.inputs[0].name: read_csv(path)}
    if len(sig.inputs) > 1 and suffix != ".npz":
        raise _error(path, f"the model has {len(sig.inputs)} inputs", sig,
                     hint="give a .npz file with one array per input name")
    return {p.name: _conform(path, p, arrays[p.name], sig, flat_rows=suffix == ".csv")
            for p in sig.inputs}


def _read_npz(path: Path, sig: Signature) -> dict[str, np.ndarray]:
    arrays = load_npz(path)
    if len(sig.inputs) == 1:
        name = sig.inputs[0].name
        for key in (name, "x", "x_test"):
            if key in arrays:
                return {name: arrays[key]}
        if len(arrays) == 1:
            return {name: next(iter(arrays.values()))}
    missing = [p.name for p in sig.inputs if p.name not in arrays]
    if missing:
        raise _error(path, f"no array named {', '.join(f'`{m}`' for m in missing)} "
                           f"(it holds {', '.join(arrays) or 'nothing'})", sig)
    return {p.name: arrays[p.name] for p in sig.inputs}


def read_csv(path: Path) -> np.ndarray:
    """One sample a row; a first row that is not numbers is a header."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DslError(f"{path}: cannot read: {exc}") from None
    rows = [line for line in text.splitlines() if line.strip()]
    if rows:
        try:
            [float(c) for c in rows[0].split(",")]
        except ValueError:
            rows = rows[1:]
    if not rows:
        raise DslError(f"{path}: no rows of numbers")
    try:
        data = [[float(c) for c in row.split(",")] for row in rows]
    except ValueError as exc:
        raise DslError(f"{path}: not a CSV of numbers ({exc})") from None
    widths = {len(r) for r in data}
    if len(widths) > 1:
        raise DslError(f"{path}: rows have different lengths ({sorted(widths)})")
    return np.asarray(data, dtype=np.float32)


def read_image(path: Path, sig: Signature, pixel_max: float) -> np.ndarray:
    """An image as `[1, H, W, C]` float32 in the training data's range (0..`pixel_max`)."""
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:
        raise DslError("reading images needs Pillow", hint="pip install 'dslc[onnx]'") from None
    port = sig.inputs[0]
    sample = port.sample
    if len(sig.inputs) != 1 or len(sample) != 3 or not all(isinstance(d, int) for d in sample) \
            or sample[2] not in (1, 3, 4):
        raise _error(path, "an image input needs a model taking one [height, width, channels] "
                           "image with 1, 3 or 4 channels", sig)
    h, w, c = sample
    try:
        with Image.open(path) as file:
            file.load()
            img: Image.Image = file
            if img.mode in ("I;16", "I;16B", "I"):  # 16-bit grayscale → 8-bit range
                img = Image.fromarray((np.asarray(img, np.float64) / 257.0).astype(np.uint8))
            img = img.convert({1: "L", 3: "RGB", 4: "RGBA"}[c])
            if img.size != (w, h):
                print(f"note: resized {path.name} from {img.size[0]}x{img.size[1]} to {w}x{h}",
                      file=sys.stderr)
                img = img.resize((w, h), Image.Resampling.BILINEAR)
            pixels = np.asarray(img, dtype=np.float32)
    except Image.DecompressionBombError as exc:
        raise DslError(f"{path}: the image is too large to read safely ({exc})",
                       hint=f"resize it to {w}x{h} first") from None
    except (UnidentifiedImageError, OSError, ValueError, MemoryError) as exc:
        raise DslError(f"{path}: not a readable image ({exc})") from None
    pixels = pixels.reshape(1, h, w, c)
    return pixels * np.float32(pixel_max / 255.0)


def _conform(path: Path, port: Port, x: np.ndarray, sig: Signature, flat_rows: bool) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype.kind not in "biuf":
        raise _error(path, f"input `{port.name}` has dtype {x.dtype}, not numbers", sig)
    sample = port.sample
    given = x.shape
    if flat_rows:  # CSV: every row is one sample, flattened row-major
        known = [d for d in sample if isinstance(d, int)]
        free = len(sample) - len(known)
        if x.ndim == 2 and len(sample) != 1 and free <= 1 and known and \
                (x.shape[1] == math.prod(known) if free == 0 else x.shape[1] % math.prod(known) == 0):
            x = x.reshape(len(x), *(d if isinstance(d, int) else -1 for d in sample))
    elif x.ndim == len(sample):  # one sample without its batch axis
        x = x[None]
    fits = x.ndim == len(port.dims) and all(
        not isinstance(d, int) or d == s for d, s in zip(sample, x.shape[1:], strict=True))
    if not fits:
        hint = None
        if len(given) >= 2 and all(isinstance(d, int) for d in sample) \
                and math.prod(given[1:]) == math.prod(sample):
            hint = f"reshape the samples to {list(sample)} (channels last)"
        raise _error(path, f"input `{port.name}` has shape {list(given)} ({x.dtype})", sig, hint)
    return np.ascontiguousarray(x, dtype=np.float32)
