"""NumPy's .npy and .npz files, read without pickle and with errors that say what is wrong."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from dslc.data.files import require_regular
from dslc.diagnostics import DslError, Span

NPY_MAGIC = b"\x93NUMPY"


def _fail(path: Path, what: str, span: Span | None, hint: str | None = None) -> DslError:
    return DslError(f"{path}: {what}", span, hint)


def load_npy(path: Path, span: Span | None = None) -> np.ndarray:
    require_regular(path, ".npy file", span)
    # np.load hands anything without numpy's header to pickle, whose complaint misleads.
    try:
        with open(path, "rb") as f:
            if f.read(len(NPY_MAGIC)) != NPY_MAGIC:
                raise _fail(path, "not a .npy file (no NumPy header)", span)
            f.seek(0)
            return np.load(f, allow_pickle=False)
    except ValueError as exc:
        raise _fail(path, f"cannot read the array ({exc})", span,
                    "object (pickled) arrays are not loaded; save numeric arrays") from None
    except (OSError, EOFError) as exc:
        raise _fail(path, f"cannot read the array ({exc})", span) from None


def load_npz(path: Path, span: Span | None = None) -> dict[str, np.ndarray]:
    require_regular(path, ".npz file", span)
    if not zipfile.is_zipfile(path):
        raise _fail(path, "not a .npz file (not a zip archive)", span)
    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    except ValueError as exc:
        raise _fail(path, f"cannot read its arrays ({exc})", span,
                    "object (pickled) arrays are not loaded; save numeric arrays") from None
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise _fail(path, f"cannot read its arrays ({exc})", span) from None
