"""IDX files (the MNIST format): a 4-byte magic `00 00 <dtype> <ndim>`, then `ndim` big-endian
uint32 dimensions, then the values, big-endian, row-major. Optionally gzip-compressed."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from dslc.data.files import require_regular
from dslc.diagnostics import DslError, Span

# dtype code → big-endian numpy dtype (the IDX specification's table)
DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(path: Path, span: Span | None = None) -> np.ndarray:
    """The array stored in one IDX file (`.gz` is decompressed)."""
    require_regular(path, "IDX file", span)
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                raw = f.read()
        else:
            raw = path.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
        raise DslError(f"cannot read IDX file {path}: {exc}", span) from None
    return parse_idx(raw, str(path), span)


def parse_idx(raw: bytes, name: str, span: Span | None = None) -> np.ndarray:
    def bad(why: str) -> DslError:
        return DslError(f"{name} is not a valid IDX file: {why}", span,
                        "IDX files start with 00 00, a type code and the number of dimensions")

    if len(raw) < 4:
        raise bad(f"only {len(raw)} bytes")
    if raw[0] != 0 or raw[1] != 0:
        raise bad(f"magic number starts with {raw[0]:02x} {raw[1]:02x}, not 00 00")
    code, ndim = raw[2], raw[3]
    if code not in DTYPES:
        raise bad(f"unknown type code 0x{code:02x}")
    if ndim == 0:
        raise bad("zero dimensions")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise bad(f"truncated header ({len(raw)} bytes, {ndim} dimensions need {header})")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = DTYPES[code]
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    got = len(raw) - header
    if got != expected:
        what = "truncated" if got < expected else "has trailing bytes"
        raise bad(f"{what}: dimensions {list(dims)} of {dtype.name} need {expected} data bytes, "
                  f"found {got}")
    data = np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)
    return data.astype(dtype.newbyteorder("="))


# File stems per split; both the original `-idx3-ubyte` names and the common `.idx3-ubyte` ones.
IDX_FILES = {
    "x_train": ("train-images-idx3-ubyte", "train-images.idx3-ubyte"),
    "y_train": ("train-labels-idx1-ubyte", "train-labels.idx1-ubyte"),
    "x_test": ("t10k-images-idx3-ubyte", "t10k-images.idx3-ubyte"),
    "y_test": ("t10k-labels-idx1-ubyte", "t10k-labels.idx1-ubyte"),
}


def find_idx(folder: Path, key: str) -> Path | None:
    for stem in IDX_FILES[key]:
        for name in (stem, stem + ".gz"):
            if (folder / name).exists():  # read_idx refuses what is not a regular file
                return folder / name
    return None
