"""Backends. Each package (torch, keras, onnx) exposes the same small surface:

- `generate(spec, graph) -> str`: standalone source (torch, keras) — `onnx` builds a ModelProto;
- `build(graph, weights, device="cpu") -> Runtime`: a ready model holding canonical
  `weights` converted at the boundary, whose `predict(x)` takes channels-last float32
  `[N, ...]` and returns the first output in inference mode;
- `to_canonical(...)` / `from_canonical(...)`: the weight adapter.

They are imported lazily by name, so `dslc check` never imports a framework.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from dslc.diagnostics import DslError, one_of

BACKENDS = ("torch", "keras", "onnx")
PACKAGES = {"torch": "torch", "keras": "tensorflow", "onnx": "onnxruntime"}


def load_backend(name: str):
    if name not in BACKENDS:
        raise DslError(f"unknown backend `{name}`", hint=f"backends are {one_of(BACKENDS)}")
    try:
        return importlib.import_module(f"dslc.backends.{name}")
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.split(".")[0] in ("torch", "tensorflow", "keras", "onnx",
                                                     "onnxruntime"):
            raise DslError(f"backend `{name}` needs `{exc.name.split('.')[0]}`, which is not installed",
                           hint=f"pip install 'dslc[{name}]'") from None
        raise


def lowering_table() -> tuple[dict[str, Callable], Callable]:
    """A backend's table op name → lowering, and the `@lowers("op", ...)` decorator filling it."""
    table: dict[str, Callable] = {}

    def lowers(*ops: str):
        def deco(fn: Callable) -> Callable:
            for op in ops:
                table[op] = fn
            return fn

        return deco

    return table, lowers
