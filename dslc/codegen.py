"""`dslc compile`: the target backend writes source (torch, keras) or a model file (onnx)."""

from __future__ import annotations

from pathlib import Path

from dslc.backends import get_backend


def write_compiled(spec, graph, target: str, out: str | Path, seed: int = 0,
                   force: bool = False) -> Path:
    return get_backend(target).compile(spec, graph, Path(out), seed, force=force)
