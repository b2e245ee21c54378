"""Weight adapter: canonical `<layer>.<param>` arrays to and from a built keras.Model.

The canonical layout is Keras's own, so every conversion here is the identity; the table
still names, per op, which Keras variable holds each canonical parameter, so a layout
change in either place fails loudly instead of loading the wrong array.
"""

from __future__ import annotations

import numpy as np

from dslc.diagnostics import DslError
from dslc.ir.graph import Graph

# op -> {canonical param: Keras variable name on the layer}
VARIABLES: dict[str, dict[str, str]] = {
    "dense": {"kernel": "kernel", "bias": "bias"},
    "conv2d": {"kernel": "kernel", "bias": "bias"},
    "simple_rnn": {"kernel": "kernel", "recurrent_kernel": "recurrent_kernel", "bias": "bias"},
}


def model_variables(model, graph: Graph) -> dict[str, object]:
    """Each canonical key with the Keras variable that holds it."""
    found = {}
    for node in graph.nodes:
        if not node.params:
            continue
        table = VARIABLES.get(node.op)
        if table is None:
            raise DslError(f"op `{node.op}` has parameters the keras weight adapter does not know")
        by_name = {v.name: v for v in model.get_layer(node.name).weights}
        for param in node.params:
            var = by_name.get(table[param])
            if var is None:
                raise DslError(f"keras layer `{node.name}` has no variable `{table[param]}`")
            found[f"{node.name}.{param}"] = var
    return found


def to_canonical(model, graph: Graph) -> dict[str, np.ndarray]:
    return {key: np.asarray(var.numpy(), dtype=np.float32)
            for key, var in model_variables(model, graph).items()}


def from_canonical(model, graph: Graph, weights: dict[str, np.ndarray]) -> None:
    variables = model_variables(model, graph)
    missing = [k for k in variables if k not in weights]
    if missing:
        raise DslError(f"weights for `{graph.name}` lack {', '.join(f'`{k}`' for k in missing[:5])}")
    for key, var in variables.items():
        arr = np.asarray(weights[key], dtype=np.float32)
        if tuple(arr.shape) != tuple(var.shape):
            raise DslError(f"`{key}` has shape {list(arr.shape)}, "
                           f"the keras model expects {list(var.shape)}")
        var.assign(arr)
