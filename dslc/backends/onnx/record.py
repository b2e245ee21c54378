"""Checks of what `dslc export` embeds and `dslc run` reads back: the preprocessing record
(as `dslc.data.preprocess` describes it), the other `dslc.*` metadata, and output paths."""

from __future__ import annotations

import math
import stat
from pathlib import Path

import numpy as np

from dslc.diagnostics import DslError

FEATURE_STEPS = ("scale", "standardize")
LABEL_STEPS = ("one_hot",)


def _number(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _numbers(v) -> np.ndarray | None:
    """A nested list of finite numbers as float64, else None."""
    try:
        a = np.asarray(v, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        return None
    if a.dtype != np.float64 or not np.isfinite(a).all():
        return None
    if isinstance(v, bool) or (a.ndim == 0 and not _number(v)):
        return None
    return a


def check_preprocessing(record, where: str, sample: tuple | None = None) -> dict:
    """`record` if it is a valid preprocessing record, else a DslError naming `where`.

    A record is `{"steps": [feature steps], "labels": [label steps]}` (see
    dslc/data/preprocess.py); with `sample` (the model input's per-sample shape, ints) the
    steps are also applied once to a zero sample, so a shape mismatch shows now."""
    def bad(msg: str) -> DslError:
        return DslError(f"{where}: not a valid preprocessing record: {msg}",
                        hint="a record is {\"steps\": [{\"name\": \"scale\", \"factor\": 0.5}, "
                             "...], \"labels\": [...]}, as `dslc train` writes it")

    if not isinstance(record, dict):
        raise bad(f"expected a JSON object, got {type(record).__name__}")
    steps = record.get("steps")
    if not isinstance(steps, list):
        raise bad("`steps` must be a list")
    labels = record.get("labels", [])
    if not isinstance(labels, list):
        raise bad("`labels` must be a list")
    for i, step in enumerate(steps):
        if not isinstance(step, dict):
            raise bad(f"step {i + 1} is not an object")
        name = step.get("name")
        if name == "scale":
            if not _number(step.get("factor")):
                raise bad(f"step {i + 1} (scale) needs a finite number `factor`")
        elif name == "standardize":
            mean, std = _numbers(step.get("mean")), _numbers(step.get("std"))
            if mean is None or std is None:
                raise bad(f"step {i + 1} (standardize) needs `mean` and `std`: nested lists "
                          "of finite numbers")
            if mean.shape != std.shape:
                raise bad(f"step {i + 1} (standardize): `mean` has shape {list(mean.shape)}, "
                          f"`std` {list(std.shape)}")
            if (std == 0).any():
                raise bad(f"step {i + 1} (standardize): `std` holds zeros")
        else:
            raise bad(f"step {i + 1}: unknown feature step {name!r} (known: "
                      f"{', '.join(FEATURE_STEPS)})")
    for i, step in enumerate(labels):
        if not isinstance(step, dict) or step.get("name") not in LABEL_STEPS:
            raise bad(f"label step {i + 1} is not one of {', '.join(LABEL_STEPS)}")
    if sample is not None and all(isinstance(d, int) for d in sample):
        from dslc.data.preprocess import apply_preprocessing

        try:
            apply_preprocessing(np.zeros((1, *sample), np.float32), record)
        except DslError as exc:
            raise bad(str(exc)) from None
        except (ValueError, TypeError, KeyError) as exc:
            raise bad(f"its steps do not fit the model input {list(sample)} ({exc})") from None
    return record


def check_pixel_max(value: str, where: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        v = float("nan")
    if not math.isfinite(v) or v <= 0:
        raise DslError(f"{where}: metadata `dslc.pixel_max` is {value!r}, not a positive number")
    return v


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "a special file"


def check_output_path(path: Path, what: str = "output", force: bool = False,
                      flag: str = "-o") -> None:
    """Refuse an output path up front (before anything runs, with the user's path in the
    message) and again just before writing: a folder, a parent that is not a folder, anything
    that exists and is not a regular file (a device, a FIFO: never replaced, even with
    `force`), and an existing file unless `force`."""
    if path.is_dir():
        raise DslError(f"{path} is a folder", hint=f"give a file name for the {what}, e.g. "
                                                   f"{path / ('out' + (path.suffix or ''))}")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise DslError(f"{path}: its parent {parent} is not a folder")
            break
    try:
        mode = path.stat().st_mode  # follows a link: what a write would reach
    except OSError:
        return  # nothing there (or a dangling link, which the write replaces)
    if not stat.S_ISREG(mode):
        raise DslError(f"{path} exists and is not a regular file ({_kind(mode)}); not "
                       "replacing it", hint=f"give another {flag} path for the {what}")
    if not force:
        raise DslError(f"{path} already exists; not replacing it",
                       hint=f"pass --force to replace it, or give another {flag} path")
