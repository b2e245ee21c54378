"""What a training run leaves in its folder, each file written atomically (temp + rename):
weights.safetensors, checkpoint.safetensors, history.csv, metrics.json, curves.png and a copy
of the spec."""

from __future__ import annotations

import csv
import io
import json
import math
import os
from pathlib import Path

import numpy as np

from dslc import stdlib
from dslc.diagnostics import DslError
from dslc.weights import atomic_write_bytes

CHECKPOINT = "checkpoint.safetensors"
WEIGHTS = "weights.safetensors"


def write_history(path: Path, history: list[dict]) -> None:
    columns: list[str] = []
    for row in history:
        columns += [k for k in row if k not in columns]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    atomic_write_bytes(path, buf.getvalue().encode())


def write_json(path: Path, data: dict) -> None:
    atomic_write_bytes(path, json_text(data).encode())


def json_text(data) -> str:
    """Standard JSON: a NaN or infinite figure is written as null (json.dumps would write NaN,
    which JSON readers reject)."""
    return json.dumps(_plain(data), indent=2, allow_nan=False) + "\n"


def _plain(value):
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def plot_curves(path: Path, history: list[dict], title: str) -> None:
    """Loss in one panel, the other per-epoch figures (accuracy, f1, mae, …) in another."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    skip = {"epoch", "seconds", "samples_per_s", "lr"}
    keys = [k for k in (history[0] if history else {}) if k not in skip]
    losses = [k for k in keys if k.endswith("loss")]
    others = [k for k in keys if k not in losses]
    fig = Figure(figsize=(10 if others else 6, 4), layout="constrained")
    panels = fig.subplots(1, 2 if others else 1, squeeze=False)[0]
    epochs = [row["epoch"] for row in history]
    for ax, group, label in zip(panels, (losses, others), ("loss", "metric"), strict=False):
        for key in group:
            ax.plot(epochs, [row.get(key, float("nan")) for row in history], marker=".",
                    label=key)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    atomic_write_bytes(path, buf.getvalue())


def run_files(spec) -> list[str]:
    """The names a run writes in its folder (relative), spec copies included."""
    return [WEIGHTS, CHECKPOINT, "history.csv", "metrics.json", "curves.png",
            *(str(p) for p in _spec_copies(spec).values())]


def _spec_copies(spec) -> dict[str, Path]:
    """Where each source file of the spec goes in the run folder, so that the copy checks and
    trains as it is: the spec by its name, the files it `use`s at the same relative paths. When
    some are outside the spec's folder (`use "../x.dl"`), the whole tree goes under `spec/`,
    keeping the paths from the folder all the files share. The standard library's files are
    not copied: `use "std/..."` reads them from the package, wherever the spec lies."""
    home = spec.path.resolve().parent
    files = {name: Path(name).resolve() for name in spec.sources}
    files = {name: path for name, path in files.items() if not stdlib.is_std(path)}
    if all(p.is_relative_to(home) for p in files.values()):
        root, base = home, Path()
    else:
        root, base = Path(os.path.commonpath([p.parent for p in files.values()])), Path("spec")
    return {name: base / path.relative_to(root) for name, path in files.items()}


def spec_copy(out: Path, spec) -> Path:
    """Where the run folder keeps its copy of the spec itself."""
    return out / _spec_copies(spec)[str(spec.path)]


def copy_spec(out: Path, spec) -> list[Path]:
    """The spec's text beside the weights (and any file it `use`s), as trained; the copies'
    paths relative to `out`."""
    copies = _spec_copies(spec)
    for name, rel in copies.items():
        atomic_write_bytes(out / rel, spec.sources[name].encode("utf-8"))
    return list(copies.values())


def check_writable(out: Path, flag: str) -> None:
    """Fail before any work, naming the folder, when the run's files could not be written in
    `out`: it is a file, it lies under one, or the folder that would hold it refuses writes (a
    read-only mount refuses root as well)."""
    if out.exists() and not out.is_dir():
        raise DslError(f"{flag} {out} is a file, not a folder")
    folder = out
    while not folder.is_dir():  # the nearest folder that exists: training makes the rest
        if folder.exists() or folder.parent == folder:
            raise DslError(f"{flag} {out}: {folder} is a file, not a folder",
                           hint=f"choose another {flag}")
        folder = folder.parent
    if not os.access(folder, os.W_OK | os.X_OK):
        raise DslError(f"{flag} {out}: the folder {folder} is not writable",
                       hint=f"choose another {flag}, or make {folder} writable")


def save_checkpoint(path: Path, weights: dict[str, np.ndarray],
                    optimizer: dict[str, np.ndarray], meta: dict,
                    extra: dict[str, dict[str, np.ndarray]] | None = None) -> None:
    """One file, so weights, optimizer state and progress are always of the same epoch."""
    from safetensors.numpy import save

    arrays = {f"weights/{k}": np.ascontiguousarray(v, dtype=np.float32)
              for k, v in weights.items()}
    arrays.update({f"optimizer/{k}": np.ascontiguousarray(v) for k, v in optimizer.items()})
    for group, more in (extra or {}).items():  # e.g. "best": early stopping's best weights
        arrays.update({f"{group}/{k}": np.ascontiguousarray(v) for k, v in more.items()})
    atomic_write_bytes(path, save(arrays, metadata={"format": "dslc-checkpoint",
                                                    "state": json.dumps(meta)}))


def load_checkpoint(path: Path) -> tuple[dict, dict, dict]:
    """(weights, optimizer state, meta) of a checkpoint written by `save_checkpoint`."""
    from dslc.weights import read_weights

    if not path.exists():
        raise DslError(f"nothing to resume: {path} does not exist",
                       hint="start without --resume, or point --out at the earlier run's folder")
    arrays, meta = read_weights(path)
    if meta.get("format") != "dslc-checkpoint" or "state" not in meta:
        raise DslError(f"{path} is not a dslc training checkpoint")
    weights = {k[len("weights/"):]: v for k, v in arrays.items() if k.startswith("weights/")}
    optimizer = {k[len("optimizer/"):]: v for k, v in arrays.items() if k.startswith("optimizer/")}
    return weights, optimizer, json.loads(meta["state"])


def checkpoint_arrays(path: Path, group: str) -> dict[str, np.ndarray]:
    """The arrays `save_checkpoint` stored under `extra[group]` (empty when none)."""
    from dslc.weights import read_weights

    arrays, _ = read_weights(path)
    prefix = f"{group}/"
    return {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}
