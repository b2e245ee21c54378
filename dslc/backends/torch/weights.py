"""The weight adapter: canonical (Keras-layout) arrays ↔ the generated module's state_dict.

One table, keyed by op, says where each canonical parameter lives in the module and how its
axes move. See docs/weights.md for the layouts.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from dslc.diagnostics import DslError
from dslc.ir.graph import Graph

from .codegen import module_attrs

Convert = Callable[[np.ndarray], np.ndarray]


def _t(a: np.ndarray) -> np.ndarray:
    return a.T


def _same(a: np.ndarray) -> np.ndarray:
    return a


def _conv_to_torch(a: np.ndarray) -> np.ndarray:
    return a.transpose(3, 2, 0, 1)  # [kh, kw, in, out] → [out, in, kh, kw]


def _conv_from_torch(a: np.ndarray) -> np.ndarray:
    return a.transpose(2, 3, 1, 0)


# op → canonical param → (state_dict suffix, to torch, from torch)
PARAMS: dict[str, dict[str, tuple[str, Convert, Convert]]] = {
    "dense": {"kernel": ("weight", _t, _t), "bias": ("bias", _same, _same)},
    "conv2d": {"kernel": ("weight", _conv_to_torch, _conv_from_torch),
               "bias": ("bias", _same, _same)},
    "simple_rnn": {"kernel": ("input.weight", _t, _t),
                   "recurrent_kernel": ("recurrent.weight", _t, _t),
                   "bias": ("input.bias", _same, _same)},
}


def _entries(graph: Graph):
    """(canonical key, state_dict key, to torch, from torch) for every parameter."""
    attrs = module_attrs(graph)
    for node in graph.nodes:
        if not node.params:
            continue
        table = PARAMS.get(node.op)
        if table is None:
            raise DslError(f"op `{node.op}` is not supported by backend torch (no weight layout)",
                           node.span)
        for param in node.params:
            suffix, to_torch, from_torch = table[param]
            yield f"{node.name}.{param}", f"{attrs[node.name]}.{suffix}", to_torch, from_torch


def state_dict_keys(graph: Graph) -> dict[str, str]:
    """canonical key → state_dict key."""
    return {key: tkey for key, tkey, _, _ in _entries(graph)}


def from_canonical(graph: Graph, weights: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """Canonical arrays → a state_dict for the generated module (CPU, float32)."""
    out = {}
    for key, tkey, to_torch, _ in _entries(graph):
        if key not in weights:
            raise DslError(f"weights for model `{graph.name}` lack `{key}`")
        array = np.ascontiguousarray(to_torch(np.asarray(weights[key], dtype=np.float32)))
        out[tkey] = torch.from_numpy(array)
    return out


def to_canonical(graph: Graph, state: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """A generated module's state_dict → canonical float32 arrays keyed `<layer>.<param>`."""
    out = {}
    for key, tkey, _, from_torch in _entries(graph):
        array = state[tkey].detach().to("cpu", torch.float32).numpy()
        out[key] = np.ascontiguousarray(from_torch(array))
    return out
