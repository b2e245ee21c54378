"""Keras 3 backend on TensorFlow: generated source, runtime, weight adapter and trainer.

`generate` needs no framework; `build` and `make_trainer` import Keras (quietly, see
quiet.py) when first called, so `dslc compile --target keras` stays fast.
"""

from __future__ import annotations

from dslc.backends.keras.codegen import LOWERINGS, generate


def build(graph, weights, device: str = "cpu"):
    from dslc.backends.keras.runtime import build as _build

    return _build(graph, weights, device)


def make_trainer(graph, config, device: str = "cpu", seed: int = 0):
    from dslc.backends.keras.trainer import KerasTrainer

    return KerasTrainer(graph, config, device, seed)


def to_canonical(model, graph):
    from dslc.backends.keras.weights import to_canonical as _to

    return _to(model, graph)


def from_canonical(model, graph, weights) -> None:
    from dslc.backends.keras.weights import from_canonical as _from

    _from(model, graph, weights)


__all__ = ["LOWERINGS", "build", "from_canonical", "generate", "make_trainer", "to_canonical"]
