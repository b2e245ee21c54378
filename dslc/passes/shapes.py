"""Dtype and shape inference, and parameter shapes, node by node in graph order."""

from __future__ import annotations

import math

from dslc.diagnostics import Collector
from dslc.ir.graph import FLOAT_DTYPES, Graph, Node, ParamSpec, TensorType
from dslc.ops import Op, ShapeError, get_op
from dslc.stdlib import at_user_call


def infer(graph: Graph, errors: Collector) -> None:
    types: dict[str, TensorType] = {i.name: i.type for i in graph.inputs}
    total = 0
    found, last = len(errors.diagnostics), None
    for node in graph.nodes:
        _at_user_call(errors, found, last)
        found, last = len(errors.diagnostics), node
        in_types = [types[n] for n in node.inputs if n in types]
        if len(in_types) < len(node.inputs):
            continue  # an input already failed and was reported
        op = get_op(node.op)
        refused = _refused_dtype(op, node.inputs, in_types)
        if refused:
            errors.error(refused[0], node.span, refused[1])
            continue
        try:
            out = op.infer(node.attrs, in_types)
            params = op.params(node.attrs, in_types)
        except ShapeError as err:
            shapes = ", ".join(str(t) for t in in_types)
            errors.error(f"layer `{node.name}` ({node.op}): {err.message}", node.span,
                         err.hint or f"its input shape: {shapes}")
            continue
        node.type, node.params = out, params
        if len(out.shape) > MAX_RANK:
            errors.error(f"layer `{node.name}` ({node.op}): its output {out} has "
                         f"{len(out.shape)} dimensions, at most {MAX_RANK} are allowed", node.span)
            continue
        problem = _too_large(out, params)
        if problem:
            errors.error(f"layer `{node.name}` ({node.op}): {problem}", node.span,
                         f"at most {MAX_ELEMENTS:,} elements a tensor")
            continue
        types[node.name] = out
        before, total = total, total + sum(p.size for p in params.values())
        if before <= MAX_PARAMS < total:  # once, at the layer that crosses the limit
            errors.error(f"model `{graph.name}` has more than {MAX_PARAMS:,} parameters "
                         f"(at layer `{node.name}`)", node.span,
                         "its weights would not fit in memory, a checkpoint or an ONNX file")
    _at_user_call(errors, found, last)


def _at_user_call(errors: Collector, found: int, node: Node | None) -> None:
    """Errors inside a standard block are the caller's to fix: they go to its call."""
    if node is not None and node.blocks:
        errors.diagnostics[found:] = [at_user_call(d, node.blocks)
                                      for d in errors.diagnostics[found:]]


def _refused_dtype(op: Op, names: list[str], types: list[TensorType]) -> tuple[str, str] | None:
    """(message, hint) for the first input whose dtype `op` does not take, else None."""
    for name, t in zip(names, types, strict=True):
        if op.accepts(t.dtype):
            continue
        takes = "float values" if op.input_dtypes == FLOAT_DTYPES else \
            " or ".join(sorted(op.input_dtypes)) + " values"
        if t.is_float:
            hint = f"declare `{name}` as integer ids, e.g. `i64[...]`"
        elif op.input_dtypes == FLOAT_DTYPES and t.dtype != "bool":
            hint = "map token ids to vectors with `embedding(vocab, dim)` first"
        else:
            hint = f"`{op.name}` takes {takes} only"
        return f"{op.name} takes {takes}, `{name}` is {t.dtype}", hint
    return None


# One tensor's elements (per sample for outputs): more than int32 indexing and ONNX allow,
# and far more memory than a model can hold. A model's parameters together, likewise.
MAX_ELEMENTS = MAX_PARAMS = 2**31 - 1
MAX_RANK = 8  # dimensions of a sample, as build.py allows an input


def _too_large(out: TensorType, params: dict[str, ParamSpec]) -> str | None:
    size = math.prod(d for d in out.shape if d is not None)
    if size > MAX_ELEMENTS:
        return f"its output {out} is too large ({size:,} values a sample)"
    for key, p in params.items():
        if p.size > MAX_ELEMENTS:
            dims = ", ".join(str(d) for d in p.shape)
            return f"its {key} [{dims}] is too large ({p.size:,} parameters)"
    return None
