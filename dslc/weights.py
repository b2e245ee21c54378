"""Canonical weights: seeded initialisation, and safetensors files keyed `<layer>.<param>`.

The canonical layout is Keras's (channels-last): dense kernel `[in, out]`, conv2d kernel
`[kh, kw, in, out]`, simple_rnn kernel `[in, units]`, recurrent_kernel `[units, units]` and
one bias `[units]`. Every backend starts from these arrays, so all three begin equal.
"""

from __future__ import annotations

import errno
import json
import math
import os
import tempfile
from pathlib import Path

import numpy as np

from dslc.diagnostics import DslError
from dslc.ir.graph import Graph
from dslc.ops.registry import UNIT_FORGET


def _fans(shape: tuple[int, ...]) -> tuple[int, int]:
    if len(shape) == 1:
        return shape[0], shape[0]
    if len(shape) == 2:
        return shape[0], shape[1]
    receptive = math.prod(shape[:-2])
    return shape[-2] * receptive, shape[-1] * receptive


def init_rule(init: str, shape: tuple[int, ...]) -> tuple[str, float]:
    """Keras's initialiser formulas (truncation aside) as (distribution, scale): `uniform`
    on [-scale, scale], `normal` with std `scale`, or `zeros`, `ones`, `orthogonal`.
    Shared by `init_array` and the torch code generator, so both start the same way."""
    fan_in, fan_out = _fans(shape)
    rules = {
        "glorot_uniform": ("uniform", math.sqrt(6.0 / (fan_in + fan_out))),
        "glorot_normal": ("normal", math.sqrt(2.0 / (fan_in + fan_out))),
        "he_uniform": ("uniform", math.sqrt(6.0 / fan_in)),
        "he_normal": ("normal", math.sqrt(2.0 / fan_in)),
        "lecun_uniform": ("uniform", math.sqrt(3.0 / fan_in)),
        "lecun_normal": ("normal", math.sqrt(1.0 / fan_in)),
        "normal": ("normal", 0.05),
        "uniform": ("uniform", 0.05),
        "zeros": ("zeros", 0.0),
        "ones": ("ones", 0.0),
        "orthogonal": ("orthogonal", 1.0),
    }
    rules["xavier_uniform"], rules["xavier_normal"] = rules["glorot_uniform"], rules["glorot_normal"]
    if init not in rules:  # pragma: no cover - the op registry's Literal stops this earlier
        raise ValueError(f"unknown initializer {init!r}")
    return rules[init]


def init_array(init: str, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    if init.startswith(UNIT_FORGET):  # Keras: base(units), ones(units), base(2 * units)
        base, units = init[len(UNIT_FORGET):], shape[0] // 4
        return np.concatenate([init_array(base, (units,), rng), np.ones(units, np.float32),
                               init_array(base, (2 * units,), rng)])
    kind, scale = init_rule(init, shape)
    if kind == "zeros":
        a = np.zeros(shape)
    elif kind == "ones":
        a = np.ones(shape)
    elif kind == "uniform":
        a = rng.uniform(-scale, scale, shape)
    elif kind == "normal":
        a = rng.normal(0.0, scale, shape)
    else:
        rows, cols = math.prod(shape[:-1]), shape[-1]
        m = rng.normal(0.0, 1.0, (max(rows, cols), min(rows, cols)))
        q, r = np.linalg.qr(m)
        q = q * np.sign(np.diag(r))
        a = (q if rows >= cols else q.T).reshape(shape)
    return np.ascontiguousarray(a, dtype=np.float32)


def init_weights(graph: Graph, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {key: init_array(p.init, p.shape, rng) for key, p in graph.param_specs().items()}


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write to a temporary file beside `path`, then rename: never a half-written file. A
    path that exists and is not a regular file (a device, a FIFO, a folder) is refused, and a
    full disk is a user error that leaves nothing behind, not even the folders made for it."""
    path = Path(path)
    if path.exists() and not path.is_file():
        raise DslError(f"{path} exists and is not a regular file; not replacing it",
                       hint="choose another output path")
    made = _make_parents(path.parent)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        # mkstemp makes the file 0600; give it the mode a plain open() would (or the old one's)
        os.chmod(fd, path.stat().st_mode & 0o7777 if path.exists() else 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        for folder in reversed(made):
            try:
                folder.rmdir()
            except OSError:
                break
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DslError(f"disk full: {path}", hint="free some space and run again") from None
        if isinstance(exc, OSError) and exc.filename is None:
            exc.filename = str(path)  # the CLI reports it as the user's file-system problem
        raise


def _make_parents(folder: Path) -> list[Path]:
    """Create `folder` and its missing parents; returns the ones made, outermost first."""
    missing = []
    while not folder.exists():
        missing.append(folder)
        if folder.parent == folder:
            break
        folder = folder.parent
    made = []
    for f in reversed(missing):
        f.mkdir(exist_ok=True)
        made.append(f)
    return made


def save_weights(path: str | Path, weights: dict[str, np.ndarray],
                 metadata: dict[str, str] | None = None) -> None:
    from safetensors.numpy import save

    arrays = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in weights.items()}
    atomic_write_bytes(path, save(arrays, metadata={"format": "dslc", **(metadata or {})}))


def read_weights(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    from safetensors import SafetensorError
    from safetensors.numpy import load

    from dslc.data.files import require_regular

    path = Path(path)
    if not path.exists():
        raise DslError(f"{path}: no such weights file")
    require_regular(path, "weights file")  # a FIFO or /dev/zero would block or never end
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DslError(f"{path}: no such weights file") from None
    except OSError as exc:
        raise DslError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        arrays = load(data)
        header_len = int.from_bytes(data[:8], "little")
        meta = json.loads(data[8:8 + header_len]).get("__metadata__") or {}
    except (SafetensorError, ValueError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DslError(f"{path}: not a valid safetensors file ({exc})",
                       hint="weights are written by `dslc train` as weights.safetensors") from None
    except KeyError as exc:  # a dtype numpy lacks, e.g. BF16
        raise DslError(f"{path}: holds {exc.args[0]} tensors, which numpy cannot read",
                       hint="save the weights as float32") from None
    return arrays, meta


def load_weights(path: str | Path, graph: Graph) -> dict[str, np.ndarray]:
    """Read a checkpoint and check it against the model: every key, every shape."""
    arrays, _ = read_weights(path)
    problems = []
    specs = graph.param_specs()
    for key, p in specs.items():
        if key not in arrays:
            problems.append(f"missing `{key}` (expected shape {list(p.shape)})")
        elif tuple(arrays[key].shape) != p.shape:
            problems.append(f"`{key}` has shape {list(arrays[key].shape)}, "
                            f"the model expects {list(p.shape)}")
    extra = sorted(set(arrays) - set(specs))
    if extra:
        problems.append(f"unexpected key(s) {', '.join(f'`{k}`' for k in extra[:5])}")
    if problems:
        raise DslError(f"{path} does not fit model `{graph.name}`: " + "; ".join(problems))
    for key in specs:
        a = arrays[key]
        if a.dtype.kind != "f":  # an int tensor is someone else's file, not a cast to make
            raise DslError(f"{path}: `{key}` holds {a.dtype} values; weights are floats",
                           hint="weights are written by `dslc train` as float32")
        bad = int(np.size(a) - np.count_nonzero(np.isfinite(a)))
        if bad:
            raise DslError(f"{path}: `{key}` holds {bad} non-finite value(s) (NaN or inf)",
                           hint="the run that wrote it diverged; train again, e.g. with a "
                                "smaller learning rate")
    return {k: arrays[k].astype(np.float32, copy=False) for k in specs}
