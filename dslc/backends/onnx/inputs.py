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

from .ranges import InputRange

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
SUFFIXES = (".npy", ".npz", ".csv", *IMAGE_SUFFIXES)
ONNX_TYPES = {"tensor(float)": "float32", "tensor(double)": "float64",
              "tensor(int64)": "int64", "tensor(int32)": "int32", "tensor(bool)": "bool"}
INTEGER_PORTS = ("int32", "int64", "bool")


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


def read_input(path: Path, sig: Signature, image_range: InputRange | None = None,
               allow_nan: bool = False) -> dict[str, np.ndarray]:
    """The feed for `sig`: every input with a batch axis, its shape checked, float32 (or the
    integer dtype of an input of ids, whole numbers checked, see `_ids`). An image
    is mapped onto `image_range` (else fed as 0..255). NaN or infinity is an error naming
    where it is, or with `allow_nan` a warning."""
    if not path.is_file():
        what = "a folder, not an input file" if path.is_dir() else \
            "not a regular file" if path.exists() else "no such input file"
        raise DslError(f"{path}: {what}")
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise DslError(f"{path}: cannot read `{suffix or path.name}` input",
                       hint=f"give one of {', '.join(SUFFIXES)}")
    if suffix in IMAGE_SUFFIXES:
        arrays = {sig.inputs[0].name: read_image(path, sig, image_range)}
    elif suffix == ".npy":
        arrays = {sig.inputs[0].name: load_npy(path)}
    elif suffix == ".npz":
        arrays = _read_npz(path, sig)
    else:
        arrays = {sig.inputs[0].name: read_csv(path, allow_nan)}
    if len(sig.inputs) > 1 and suffix != ".npz":
        raise _error(path, f"the model has {len(sig.inputs)} inputs", sig,
                     hint="give a .npz file with one array per input name")
    return {p.name: _conform(path, p, arrays[p.name], sig, flat_rows=suffix == ".csv",
                             allow_nan=allow_nan)
            for p in sig.inputs}


NAN_HINT = "fix the data, or pass --allow-nan to run it anyway"
FLOAT32_MAX = float(np.finfo(np.float32).max)


def _not_finite(x: np.ndarray) -> np.ndarray:
    """Where `x` is NaN, infinite, or too large for float32."""
    with np.errstate(invalid="ignore"):
        return ~np.isfinite(x) | (np.abs(x) > FLOAT32_MAX)


def _bad_value(v: float) -> str:
    return f"{v!r} is too large for float32" if math.isfinite(v) else f"{v!r} is not finite"


def _nan_found(path: Path, count: int, where: str, allow_nan: bool) -> None:
    what = (f"{count} value(s) not finite (NaN, infinity, or too large for float32), the "
            f"first at {where}")
    if not allow_nan:
        raise DslError(f"{path}: {what}", hint=NAN_HINT)
    print(f"warning: {path}: {what}; running anyway (--allow-nan): the outputs of those "
          "samples may be NaN", file=sys.stderr)


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def read_csv(path: Path, allow_nan: bool = False) -> np.ndarray:
    """One sample a row. The first row is a header only when none of its cells is a number; a
    cell that is not a number anywhere else is an error naming it, and so is NaN or infinity
    (unless `allow_nan`)."""
    try:
        text = path.read_text(encoding="utf-8-sig")  # a spreadsheet's byte-order mark too
    except (OSError, UnicodeDecodeError) as exc:
        raise DslError(f"{path}: cannot read: {exc}") from None
    lines = [(n, line.split(",")) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    header = None
    if lines and not any(_is_number(c) for c in lines[0][1]):
        header = [c.strip() for c in lines[0][1]]
        lines = lines[1:]
    if not lines:
        raise DslError(f"{path}: no rows of numbers")

    def cell(r: int, c: int) -> str:
        name = f" (`{header[c]}`)" if header is not None and c < len(header) else ""
        return f"line {lines[r][0]} (sample {r}), column {c + 1}{name}"

    width = len(lines[0][1])
    if header is not None and len(header) != width:
        raise DslError(f"{path}: the header (line 1) names {len(header)} columns, line "
                       f"{lines[0][0]} has {width} cells")
    data = np.empty((len(lines), width), np.float64)
    for r, (n, cells) in enumerate(lines):
        if len(cells) != width:
            raise DslError(f"{path}: line {n} has {len(cells)} cells, line {lines[0][0]} has "
                           f"{width}", hint="every row is one sample of the same length")
        try:
            data[r] = np.asarray(cells, dtype=np.float64)  # parses as float() does
        except ValueError:
            for c, v in enumerate(cells):
                if not _is_number(v):
                    raise DslError(f"{path}: {cell(r, c)}: `{v.strip()}` is not a number",
                                   hint="a first row with no number at all is a header; any "
                                        "other cell must be a number") from None
            data[r] = [float(v) for v in cells]
    bad = _not_finite(data)
    if bad.any():
        r, c = (int(i) for i in np.argwhere(bad)[0])
        what = "too large for float32" if math.isfinite(data[r, c]) else "not a finite number"
        _nan_found(path, int(bad.sum()),
                   f"{cell(r, c)}: `{lines[r][1][c].strip()}` is {what}", allow_nan)
    with np.errstate(over="ignore"):
        return data.astype(np.float32)


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


def read_image(path: Path, sig: Signature, image_range: InputRange | None = None) -> np.ndarray:
    """An image as `[1, H, W, C]` float32 mapped onto the training data's range (else 0..255)."""
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
    return pixels if image_range is None else image_range.map_pixels(pixels)


def _conform(path: Path, port: Port, x: np.ndarray, sig: Signature, flat_rows: bool,
             allow_nan: bool = False) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype.kind not in "biuf":
        raise _error(path, f"input `{port.name}` has dtype {x.dtype}, not numbers", sig)
    if x.dtype.kind == "f" and not flat_rows:  # CSV cells were checked where they stand
        bad = _not_finite(x)
        if bad.any():
            at = [int(i) for i in np.argwhere(bad)[0]]
            where = f"input `{port.name}` index {at}"
            if x.ndim == len(port.dims):
                where = f"input `{port.name}` sample {at[0]}" + \
                    (f" at {at[1:]}" if len(at) > 1 else "")
            _nan_found(path, int(bad.sum()), f"{where}: {_bad_value(float(x[tuple(at)]))}",
                       allow_nan)
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
    if port.dtype in INTEGER_PORTS:
        return _ids(path, port, x, sig)
    with np.errstate(over="ignore"):  # too large for float32: refused above, or allowed
        return np.ascontiguousarray(x, dtype=np.float32)


def _ids(path: Path, port: Port, x: np.ndarray, sig: Signature) -> np.ndarray:
    """`x` for an integer (or boolean) input: ids are cast only when no value changes — a
    float array (a CSV's cells) of whole numbers in range; anything else is an error."""
    if x.dtype.kind == "f":
        with np.errstate(invalid="ignore"):
            bad = ~np.isfinite(x) | (x != np.round(x))
        if bad.any():
            at = [int(i) for i in np.argwhere(bad)[0]]
            raise _error(path, f"input `{port.name}` takes whole numbers ({port.dtype} ids), "
                               f"got {float(x[tuple(at)])!r} at index {at}", sig)
    target = np.dtype(port.dtype)
    if port.dtype == "bool":
        if x.size and not np.isin(x, (0, 1)).all():
            raise _error(path, f"input `{port.name}` is bool, got values other than 0 and 1", sig)
    elif x.size:
        info = np.iinfo(target)
        low, high = float(x.min()), float(x.max())
        if low < info.min or high > info.max:
            raise _error(path, f"input `{port.name}` is {port.dtype}, got values in "
                               f"{low:g}..{high:g}", sig)
        if low < 0:  # ONNX's Gather counts a negative id from the end of the table
            at = [int(i) for i in np.argwhere(x < 0)[0]]
            raise _error(path, f"input `{port.name}` takes ids 0 or more, got {x[tuple(at)]:g} "
                               f"at index {at}", sig)
    return np.ascontiguousarray(x.astype(target))
