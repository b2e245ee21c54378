"""The PyTorch backend: readable `nn.Module` source (codegen.py), a runtime and gradients
built from that very source (runtime.py), a trainer for the shared loop (trainer.py) and the
weight adapter (weights.py).

    from dslc.backends import get_backend
    torch_backend = get_backend("torch")
    source = torch_backend.generate(spec, graph)      # imports no torch
    runtime = torch_backend.build(graph, weights)     # canonical weights in
    probs = runtime.predict(x)                        # x channels-last float32 [N, ...]

Importing this package imports neither torch nor the code generator.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dslc.backends.base import Backend, Runtime, Trainer, TrainOptions

if TYPE_CHECKING:
    import numpy as np

    from dslc.backends.lowering import LoweringTable
    from dslc.ir.graph import Graph
    from dslc.ir.train import TrainConfig


class TorchBackend(Backend):
    name = "torch"
    summary = "standalone PyTorch nn.Module source; trains and runs on CPU or CUDA"
    frameworks = ("torch", "safetensors")
    extra = "torch"
    emits = "source"
    runs = True
    trains = True
    precisions = ("fp32", "bf16", "fp16")
    compiles = True
    distributes = True

    @property
    def lowerings(self) -> LoweringTable:
        from .codegen import LOWERINGS

        return LOWERINGS

    def generate(self, spec: Any, graph: Graph) -> str:
        from .codegen import generate

        return generate(spec, graph)

    def build(self, graph: Graph, weights: dict[str, np.ndarray], device: str = "cpu",
              precision: str = "fp32") -> Runtime:
        self.check_options(None, precision)
        self.require()
        from .runtime import build

        return build(graph, weights, device, precision)

    def make_trainer(self, graph: Graph, config: TrainConfig, device: str = "cpu",
                     seed: int = 0, options: TrainOptions | None = None) -> Trainer:
        self.check_options(options)
        self.require()
        from .runtime import resolve_device
        from .trainer import TorchTrainer

        return TorchTrainer(graph, config, resolve_device(device), seed, options)

    def gradients(self, graph: Graph, weights: dict[str, np.ndarray], xs: list[np.ndarray],
                  cotangents: list[np.ndarray]) -> dict[str, np.ndarray]:
        self.require()
        from .runtime import gradients

        return gradients(graph, weights, xs, cotangents)


BACKEND = TorchBackend()
