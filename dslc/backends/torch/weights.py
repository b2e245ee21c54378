"""The weight adapter: canonical (Keras-layout) arrays ↔ the generated module's state_dict.

Nothing here names a parameter: each lowering declares, where it creates the submodule, the
torch name and the layout converters of its canonical parameters (codegen's `Emitter.add`),
and `WeightMap` is built from those declarations. See docs/weights.md for the layouts.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from dslc.diagnostics import DslError
from dslc.ir.graph import Graph

from .codegen import Param, emit

if TYPE_CHECKING:
    import torch


class WeightMap:
    """Canonical `<layer>.<param>` arrays ↔ state_dict arrays of one generated module."""

    def __init__(self, model: str, params: list[Param]):
        self.model = model
        self.params = params

    @classmethod
    def of(cls, graph: Graph) -> WeightMap:
        return cls(graph.name, emit(graph).params)

    def keys(self) -> dict[str, str]:
        """canonical key → state_dict key."""
        return {p.key: p.target for p in self.params}

    def to_torch(self, weights: Mapping[str, np.ndarray],
                 dtype: Any = np.float32) -> dict[str, np.ndarray]:
        """Canonical arrays → state_dict arrays (torch layout, contiguous)."""
        out = {}
        for p in self.params:
            if p.key not in weights:
                raise DslError(f"weights for model `{self.model}` lack `{p.key}`")
            out[p.target] = np.ascontiguousarray(p.to_torch(np.asarray(weights[p.key], dtype)))
        return out

    def from_torch(self, state: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """State_dict arrays (or their gradients) → canonical arrays keyed `<layer>.<param>`."""
        return {p.key: np.ascontiguousarray(p.from_torch(np.asarray(state[p.target])))
                for p in self.params}

    def tensors(self, weights: Mapping[str, np.ndarray]) -> dict[str, torch.Tensor]:
        """Canonical arrays → a state_dict for the generated module (CPU, float32)."""
        import torch

        return {k: torch.from_numpy(v) for k, v in self.to_torch(weights).items()}

    def canonical(self, state: Mapping[str, torch.Tensor]) -> dict[str, np.ndarray]:
        """A generated module's state_dict → canonical float32 arrays."""
        import torch

        arrays = {p.target: state[p.target].detach().to("cpu", torch.float32).numpy()
                  for p in self.params}
        return self.from_torch(arrays)


def state_dict_keys(graph: Graph) -> dict[str, str]:
    """canonical key → state_dict key."""
    return WeightMap.of(graph).keys()


def from_canonical(graph: Graph, weights: Mapping[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """Canonical arrays → a state_dict for the generated module (CPU, float32)."""
    return WeightMap.of(graph).tensors(weights)


def to_canonical(graph: Graph, state: Mapping[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """A generated module's state_dict → canonical float32 arrays keyed `<layer>.<param>`."""
    return WeightMap.of(graph).canonical(state)
