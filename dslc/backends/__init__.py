"""Backends, by name. Each is one folder whose `__init__.py` defines `BACKEND`, an instance
of `dslc.backends.base.Backend` (see there for the contract). Adding a backend: its folder
and one line in `BACKENDS`. Frameworks are imported only when a backend builds, trains or
exports, so `dslc check` and `dslc compile --target torch|keras` import none.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from dslc.diagnostics import DslError, one_of

if TYPE_CHECKING:
    from dslc.backends.base import Backend

BACKENDS: dict[str, str] = {
    "torch": "dslc.backends.torch",
    "keras": "dslc.backends.keras",
    "onnx": "dslc.backends.onnx",
    "reference": "dslc.backends.reference",
}


def get_backend(name: str) -> Backend:
    if name not in BACKENDS:
        raise DslError(f"unknown backend `{name}`", hint=f"backends are {one_of(list(BACKENDS))}")
    backend: Backend = importlib.import_module(BACKENDS[name]).BACKEND
    return backend


def backend_names(*, emits: bool = False, runs: bool = False, trains: bool = False) -> list[str]:
    """The backends that have every capability asked for, in `BACKENDS` order."""
    out = []
    for name in BACKENDS:
        b = get_backend(name)
        if (not emits or b.emits) and (not runs or b.runs) and (not trains or b.trains):
            out.append(name)
    return out
