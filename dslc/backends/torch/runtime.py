"""The generated module, imported and run: inference (`Runtime`) and gradients.

What runs is exactly what `dslc compile --target torch` writes: the source is written to a
temporary file and imported.
"""

from __future__ import annotations

import importlib.util
import tempfile
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dslc.backends.base import Feed
from dslc.diagnostics import DslError
from dslc.ir.graph import Graph

from .codegen import Emitter, emit, render
from .weights import WeightMap


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


AMP_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(device: str, precision: str) -> Any:
    """torch.autocast for mixed precision on `device` (a no-op context at fp32)."""
    dtype = AMP_DTYPES[precision]
    kind = "cuda" if device.startswith("cuda") else "cpu"
    return torch.autocast(kind, dtype=dtype or torch.bfloat16, enabled=dtype is not None)


def uses_conv2d(graph: Graph) -> bool:
    return any("conv2d" in n.op for n in graph.nodes)


def channels_last(module: torch.nn.Module, graph: Graph, device: str) -> None:
    """On CUDA, 2-D convolutions in channels-last memory format (their fast cuDNN kernels):
    the generated module's NHWC→NCHW permute already gives channels-last strides, so only the
    filters move. On CPU the layout stays as generated."""
    if device.startswith("cuda") and uses_conv2d(graph):
        module.to(memory_format=torch.channels_last)  # type: ignore[call-overload]


def _import(model: str, source: str, cls: str) -> type[torch.nn.Module]:
    name = f"dslc_generated_{uuid.uuid4().hex}"
    with tempfile.TemporaryDirectory(prefix="dslc-torch-") as tmp:
        path = Path(tmp) / "module.py"
        path.write_text(source, encoding="utf-8")
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    model_class: type[torch.nn.Module] = getattr(module, cls)
    return model_class


def load_module(graph: Graph, source: str | None = None) -> type[torch.nn.Module]:
    """Import the generated source (or `source`, as `generate` wrote it) and return its
    model class."""
    em = emit(graph)
    return _import(graph.name, render(None, em) if source is None else source, em.cls)


class Model:
    """The generated module with its weight map: what the runtime and the trainer hold."""

    def __init__(self, graph: Graph, weights: Mapping[str, np.ndarray] | None = None,
                 device: str = "cpu"):
        em: Emitter = emit(graph)
        self.graph = graph
        self.fused = em.fused
        self.weights = WeightMap(graph.name, em.params)
        self.module: torch.nn.Module = _import(graph.name, render(None, em), em.cls)()
        if weights is not None:
            self.load(weights)
        self.module.to(device)

    def load(self, weights: Mapping[str, np.ndarray]) -> None:
        self.module.load_state_dict(self.weights.tensors(weights), strict=True)

    def canonical(self) -> dict[str, np.ndarray]:
        return self.weights.canonical(self.module.state_dict())


def instantiate(graph: Graph, weights: Mapping[str, np.ndarray] | None = None,
                device: str = "cpu") -> torch.nn.Module:
    """The generated module, with canonical `weights` loaded (else the spec's initialisers)."""
    return Model(graph, weights, device).module


def _feed(graph: Graph, x: Feed) -> list[np.ndarray]:
    if isinstance(x, dict):
        xs = [x[i.name] for i in graph.inputs]
    else:
        xs = list(x) if isinstance(x, list | tuple) else [x]
    if len(xs) != len(graph.inputs):
        raise DslError(f"model `{graph.name}` takes {len(graph.inputs)} input(s), got {len(xs)}")
    return xs


class Runtime:
    """A built model in inference mode."""

    def __init__(self, model: Model, device: str, precision: str = "fp32"):
        self.graph = model.graph
        self.model = model
        self.module = model.module.eval()
        self.device = device
        self.precision = precision
        channels_last(self.module, self.graph, device)

    def predict(self, x: Feed, batch_size: int = 1024) -> np.ndarray:
        """The first output for `x`: one array, or for several inputs a list/tuple (the
        spec's order) or a dict by input name."""
        return self.predict_all(x, batch_size)[0]

    def predict_all(self, x: Feed, batch_size: int = 1024) -> list[np.ndarray]:
        """Every output for `x`, in the spec's order (see `predict` for `x`)."""
        xs = [np.ascontiguousarray(a, dtype=i.type.numpy_dtype)
              for i, a in zip(self.graph.inputs, _feed(self.graph, x), strict=True)]
        outs: list[list[np.ndarray]] = []
        with torch.inference_mode(), autocast(self.device, self.precision):
            for start in range(0, max(len(xs[0]), 1), batch_size):
                batch = [torch.from_numpy(a[start:start + batch_size]).to(self.device)
                         for a in xs]
                y = self.module(*batch)
                ys = list(y) if isinstance(y, tuple | list) else [y]
                outs.append([t.float().cpu().numpy() for t in ys])
        return [np.concatenate(parts) for parts in zip(*outs, strict=True)]

    def get_weights(self) -> dict[str, np.ndarray]:
        return self.model.canonical()


def build(graph: Graph, weights: Mapping[str, np.ndarray], device: str = "cpu",
          precision: str = "fp32") -> Runtime:
    device = resolve_device(device)
    return Runtime(Model(graph, weights, device), device, precision)


def gradients(graph: Graph, weights: Mapping[str, np.ndarray], xs: list[np.ndarray],
              cotangents: list[np.ndarray]) -> dict[str, np.ndarray]:
    """The gradient of `sum(output_k * cotangent_k)`, in eval mode and float64 (the module
    cast with `.double()`), by canonical key (non-trainable ones too) in the canonical layout
    and by `input:<name>` (channels-last, as the inputs); integer inputs (ids) have none."""
    model = Model(graph)
    module = model.module.double().eval()
    state = {k: torch.from_numpy(v) for k, v in model.weights.to_torch(weights, np.float64).items()}
    module.load_state_dict(state, strict=True)
    # Non-trainable parameters (batch_norm's moving statistics) are buffers: differentiated
    # too, as the inference function's inputs they are.
    named = {**dict(module.named_buffers()), **dict(module.named_parameters())}
    for p in model.weights.params:
        named[p.target].requires_grad_(True)
    inputs = [torch.tensor(np.asarray(x, np.float64), requires_grad=True) if i.type.is_float
              else torch.from_numpy(np.asarray(x, i.type.numpy_dtype))
              for i, x in zip(graph.inputs, _feed(graph, xs), strict=True)]
    differentiable = [t for t in inputs if t.requires_grad]
    y: Any = module(*inputs)
    ys = list(y) if isinstance(y, tuple | list) else [y]
    if len(ys) != len(cotangents):
        raise DslError(f"model `{graph.name}` has {len(ys)} output(s), got {len(cotangents)} "
                       "cotangents")
    total = sum(((out * torch.from_numpy(np.asarray(c, np.float64))).sum()
                 for out, c in zip(ys, cotangents, strict=True)), torch.zeros((), dtype=torch.float64))
    wrt = [named[p.target] for p in model.weights.params] + differentiable
    grads = torch.autograd.grad(total, wrt, allow_unused=True)
    arrays = [np.zeros(tuple(t.shape)) if g is None else g.detach().numpy()
              for t, g in zip(wrt, grads, strict=True)]
    n = len(model.weights.params)
    out = model.weights.from_torch({p.target: a for p, a in zip(model.weights.params, arrays)})
    floats = [i for i in graph.inputs if i.type.is_float]
    out.update({f"input:{i.name}": a for i, a in zip(floats, arrays[n:], strict=True)})
    return out
