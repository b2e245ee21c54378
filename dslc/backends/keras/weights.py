"""Weight adapter: canonical `<layer>.<param>` arrays to and from a built keras.Model.

The canonical layout is Keras's own, so every conversion here is the identity. Which Keras
variable holds each canonical parameter is what the op's lowering declares (`Call.weights`
in codegen.py), so a layout or naming change fails loudly instead of loading the wrong
array.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dslc.backends.keras.codegen import weight_names
from dslc.diagnostics import DslError
from dslc.ir.graph import Graph


def model_variables(model: Any, graph: Graph) -> dict[str, Any]:
    """Each canonical key with the Keras variable that holds it, in the graph's order."""
    found = {}
    for layer, params in weight_names(graph).items():
        keras_layer = model.get_layer(layer)
        by_name = {v.name: v for v in keras_layer.weights}
        # a sublayer's variables (MultiHeadAttention's `query/kernel`) by their path under it
        prefix = f"{keras_layer.path}/"
        by_name.update({v.path.removeprefix(prefix): v for v in keras_layer.weights
                        if v.path.startswith(prefix) and v.path.count("/") > prefix.count("/")})
        for param, variable in params.items():
            var = by_name.get(variable)
            if var is None:
                raise DslError(f"keras layer `{layer}` has no variable `{variable}`")
            found[f"{layer}.{param}"] = var
    return found


def read(variables: dict[str, Any]) -> dict[str, np.ndarray]:
    return {key: np.asarray(var.numpy(), dtype=np.float32) for key, var in variables.items()}


def assign(variables: dict[str, Any], weights: dict[str, np.ndarray], model: str) -> None:
    missing = [k for k in variables if k not in weights]
    if missing:
        raise DslError(f"weights for `{model}` lack {', '.join(f'`{k}`' for k in missing[:5])}")
    for key, var in variables.items():
        arr = np.asarray(weights[key], dtype=np.float32)
        if tuple(arr.shape) != tuple(var.shape):
            raise DslError(f"`{key}` has shape {list(arr.shape)}, "
                           f"the keras model expects {list(var.shape)}")
        var.assign(arr)


def to_canonical(model: Any, graph: Graph) -> dict[str, np.ndarray]:
    return read(model_variables(model, graph))


def from_canonical(model: Any, graph: Graph, weights: dict[str, np.ndarray]) -> None:
    assign(model_variables(model, graph), weights, graph.name)
