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


def load_npy(path: Path, span: Span | None = None, mmap: bool = False) -> np.ndarray:
    """The array; with `mmap`, memory-mapped read-only (nothing read until used)."""
    require_regular(path, ".npy file", span)
    # np.load hands anything without numpy's header to pickle, whose complaint misleads.
    try:
        with open(path, "rb") as f:
            if f.read(len(NPY_MAGIC)) != NPY_MAGIC:
                raise _fail(path, "not a .npy file (no NumPy header)", span)
            f.seek(0)
            if not mmap:
                return np.load(f, allow_pickle=False)
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as exc:
        raise _fail(path, f"cannot read the array ({exc})", span,
                    "object (pickled) arrays are not loaded; save numeric arrays") from None
    except (OSError, EOFError) as exc:
        raise _fail(path, f"cannot read the array ({exc})", span) from None


def load_npz(path: Path, span: Span | None = None,
             mmap: bool = False) -> dict[str, np.ndarray]:
    """Its arrays by name. With `mmap`, stored (uncompressed, `np.savez`) members are
    memory-mapped at their offset in the zip file; compressed members (`np.savez_compressed`)
    cannot be, so they are read into memory, and refused when larger than the memory cap."""
    require_regular(path, ".npz file", span)
    if not zipfile.is_zipfile(path):
        raise _fail(path, "not a .npz file (not a zip archive)", span)
    if mmap:
        return _map_npz(path, span)
    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    except ValueError as exc:
        raise _fail(path, f"cannot read its arrays ({exc})", span,
                    "object (pickled) arrays are not loaded; save numeric arrays") from None
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise _fail(path, f"cannot read its arrays ({exc})", span) from None


def _map_npz(path: Path, span: Span | None) -> dict[str, np.ndarray]:
    from dslc.data.lazy import ENV, human, memory_cap

    out: dict[str, np.ndarray] = {}
    try:
        with zipfile.ZipFile(path) as zf, open(path, "rb") as f:
            for info in zf.infolist():
                if not info.filename.endswith(".npy"):
                    continue
                name = info.filename[:-4]
                if info.compress_type != zipfile.ZIP_STORED:
                    cap = memory_cap()
                    if info.file_size > cap:
                        raise _fail(path, f"array `{name}` is compressed, so it cannot be "
                                    f"memory-mapped, and at {human(info.file_size)} it is over "
                                    f"the memory cap of {human(cap)}", span,
                                    "save it with np.savez (not savez_compressed) or as .npy "
                                    f"files, or raise --max-memory ({ENV})")
                    with zf.open(info) as member:
                        out[name] = np.lib.format.read_array(member, allow_pickle=False)
                    continue
                out[name] = _map_member(f, path, info)
    except ValueError as exc:
        raise _fail(path, f"cannot read its arrays ({exc})", span,
                    "object (pickled) arrays are not loaded; save numeric arrays") from None
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise _fail(path, f"cannot read its arrays ({exc})", span) from None
    return out


def _map_member(f, path: Path, info: zipfile.ZipInfo) -> np.ndarray:
    """A stored .npy member mapped in place: its data begins after the zip local header
    (30 bytes, the name, the extra field) and the .npy header."""
    f.seek(info.header_offset)
    local = f.read(30)
    if len(local) != 30 or local[:4] != b"PK\x03\x04":
        raise zipfile.BadZipFile(f"bad local header for {info.filename}")
    name_len = int.from_bytes(local[26:28], "little")
    extra_len = int.from_bytes(local[28:30], "little")
    f.seek(info.header_offset + 30 + name_len + extra_len)
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
    else:
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
    if dtype.hasobject:
        raise ValueError("Object arrays cannot be loaded when allow_pickle=False")
    if int(np.prod(shape)) == 0:
        return np.empty(shape, dtype)
    return np.memmap(path, dtype=dtype, mode="r", offset=f.tell(), shape=shape,
                     order="F" if fortran else "C")
