"""Dtype and shape inference, and parameter shapes, node by node in graph order."""

from __future__ import annotations

from dslc.diagnostics import Collector
from dslc.ir.graph import Graph
from dslc.ops import ShapeError, get_op


def infer(graph: Graph, errors: Collector) -> None:
    types = {i.name: i.type for i in graph.inputs}
    for node in graph.nodes:
        in_types = [types.get(n) for n in node.inputs]
        if any(t is None for t in in_types):
            continue  # an input already failed and was reported
        op = get_op(node.op)
        try:
            node.type = op.infer(node.attrs, in_types)
            node.params = op.params(node.attrs, in_types)
        except ShapeError as err:
            shapes = ", ".join(str(t) for t in in_types)
            errors.error(f"layer `{node.name}` ({node.op}): {err.message}", node.span,
                         err.hint or f"its input shape: {shapes}")
            continue
        types[node.name] = node.type
