"""`dslc compile`: ask the target backend for source (torch, keras) or a model file (onnx)."""

from __future__ import annotations

from pathlib import Path

from dslc.backends import load_backend
from dslc.weights import atomic_write_bytes, init_weights


def write_compiled(spec, graph, target: str, out: str | Path, seed: int = 0) -> Path:
    backend = load_backend(target)
    out = Path(out)
    if target == "onnx":
        path = out if out.suffix == ".onnx" else out / f"{graph.name}.onnx"
        backend.export(spec, graph, init_weights(graph, seed), path)
        return path
    path = out / f"{graph.name}.py"
    atomic_write_bytes(path, backend.generate(spec, graph).encode("utf-8"))
    return path
