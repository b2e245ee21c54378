"""The PyTorch backend: readable `nn.Module` source, a runtime built from that very source,
a trainer for the shared loop, and the weight adapter.

    from dslc.backends import torch as tb
    runtime = tb.build(graph, weights)          # canonical weights in
    probs = runtime.predict(x)                  # x channels-last float32 [N, ...]
"""

from __future__ import annotations

import importlib.util
import tempfile
import uuid
from pathlib import Path

import numpy as np
import torch

from dslc.diagnostics import DslError
from dslc.ir.graph import Graph

from .codegen import LOWERINGS, class_name, fused_activation, generate
from .weights import from_canonical, state_dict_keys, to_canonical

__all__ = ["LOWERINGS", "Runtime", "build", "from_canonical", "generate", "load_module",
           "make_trainer", "resolve_device", "to_canonical", "state_dict_keys"]


def resolve_device(device: str | None) -> str:
    """`cpu`, `cuda` (an error without a GPU) or `auto` (cuda when present)."""
    device = device or "cpu"
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise DslError("`--device cuda` but PyTorch sees no CUDA GPU",
                       hint="use `--device cpu`, or `auto` to pick the GPU only when present")
    if device != "cpu" and not device.startswith("cuda"):
        raise DslError(f"unknown device `{device}`", hint="devices are `cpu`, `cuda`, `auto`")
    return device


def load_module(graph: Graph, source: str | None = None) -> type[torch.nn.Module]:
    """Import the generated source as a module and return its model class. The source is
    written to a temporary file and imported, so what runs is exactly what `compile` writes."""
    source = source if source is not None else generate(None, graph)
    name = f"dslc_generated_{uuid.uuid4().hex}"
    with tempfile.TemporaryDirectory(prefix="dslc-torch-") as tmp:
        path = Path(tmp) / f"{graph.name}.py"
        path.write_text(source, encoding="utf-8")
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return getattr(module, class_name(graph.name))


def instantiate(graph: Graph, weights: dict[str, np.ndarray] | None = None,
                device: str = "cpu") -> torch.nn.Module:
    model = load_module(graph)()
    if weights is not None:
        model.load_state_dict(from_canonical(graph, weights), strict=True)
    return model.to(device)


class Runtime:
    """A built model in inference mode."""

    def __init__(self, graph: Graph, module: torch.nn.Module, device: str):
        self.graph = graph
        self.module = module.eval()
        self.device = device

    def predict(self, x, batch_size: int = 1024) -> np.ndarray:
        """The first output for `x`: one array, or for several inputs a list/tuple (the
        spec's order) or a dict by input name."""
        return self.predict_all(x, batch_size)[0]

    def predict_all(self, x, batch_size: int = 1024) -> list[np.ndarray]:
        """Every output for `x`, in the spec's order (see `predict` for `x`)."""
        if isinstance(x, dict):
            xs = [x[i.name] for i in self.graph.inputs]
        else:
            xs = list(x) if isinstance(x, list | tuple) else [x]
        if len(xs) != len(self.graph.inputs):
            raise DslError(f"model `{self.graph.name}` takes {len(self.graph.inputs)} input(s), "
                           f"got {len(xs)}")
        xs = [np.ascontiguousarray(a, dtype=np.float32) for a in xs]
        outs: list[list[np.ndarray]] = []
        with torch.inference_mode():
            for start in range(0, max(len(xs[0]), 1), batch_size):
                batch = [torch.from_numpy(a[start:start + batch_size]).to(self.device)
                         for a in xs]
                y = self.module(*batch)
                ys = list(y) if isinstance(y, tuple | list) else [y]
                outs.append([t.float().cpu().numpy() for t in ys])
        return [np.concatenate(parts) for parts in zip(*outs, strict=True)]

    def get_weights(self) -> dict[str, np.ndarray]:
        return to_canonical(self.graph, self.module.state_dict())


def build(graph: Graph, weights: dict[str, np.ndarray], device: str = "cpu") -> Runtime:
    device = resolve_device(device)
    return Runtime(graph, instantiate(graph, weights, device), device)


def make_trainer(graph: Graph, config, device: str = "cpu", seed: int = 0):
    from .trainer import TorchTrainer

    return TorchTrainer(graph, config, resolve_device(device), seed)


def fused(graph: Graph) -> str | None:
    return fused_activation(graph)
