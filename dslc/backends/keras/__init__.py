"""Keras 3 backend on TensorFlow: generated source, runtime, weight adapter and trainer.

Importing this package and generating source import no framework (`dslc compile --target
keras` stays fast); `build`, `make_trainer` and `gradients` check that TensorFlow and Keras
are installed, then import them quietly (quiet.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dslc.backends.base import Backend, Runtime, Trainer, TrainOptions

if TYPE_CHECKING:
    import numpy as np

    from dslc.backends.lowering import LoweringTable
    from dslc.ir.graph import Graph
    from dslc.ir.train import TrainConfig


class KerasBackend(Backend):
    name = "keras"
    summary = "Keras 3 on TensorFlow: standalone functional-API source, runtime, trainer"
    frameworks = ("tensorflow", "keras", "safetensors")
    extra = "keras"
    emits = "source"
    runs = True
    trains = True
    precisions = ("fp32", "bf16", "fp16")
    mirrors = True
    distributes = True  # MultiWorkerMirroredStrategy workers (multiworker.py)

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
        from .runtime import KerasRuntime

        return KerasRuntime(graph, weights, device, precision)

    def make_trainer(self, graph: Graph, config: TrainConfig, device: str = "cpu",
                     seed: int = 0, options: TrainOptions | None = None) -> Trainer:
        self.check_options(options)
        self.require()
        from .trainer import KerasTrainer

        return KerasTrainer(graph, config, device, seed, options)

    def gradients(self, graph: Graph, weights: dict[str, np.ndarray], xs: list[np.ndarray],
                  cotangents: list[np.ndarray]) -> dict[str, np.ndarray]:
        self.require()
        from .runtime import gradients

        return gradients(graph, weights, xs, cotangents)


BACKEND = KerasBackend()

__all__ = ["BACKEND", "LOWERINGS", "KerasBackend", "generate"]


def __getattr__(name: str) -> Any:
    # The generator is imported when first asked for, as torch's is: `dslc check` lists the
    # backends without it.
    if name in ("LOWERINGS", "generate"):
        from . import codegen

        return getattr(codegen, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
