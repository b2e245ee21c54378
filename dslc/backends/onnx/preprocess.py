"""The spec's inference preprocessing as ONNX ops at the model's inputs, so that the file alone
takes the raw data the spec's data source gives and any runtime gets `dslc run`'s answer.

The steps are those of the record `dslc train` fits (dslc/data/preprocess.py): `scale` is one
Mul, `standardize` a Sub and a Div, in float32 as `apply_preprocessing` computes them, so the
embedded steps give the same numbers to the bit. `dslc.preprocessing_in_graph` in the metadata
says whether the graph applies the record itself (`true`) or leaves it to the caller (`false`,
`dslc export --no-preprocessing`, and every file written before it existed); `dslc run` applies
the record only in the second case, never twice.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from dslc.diagnostics import DslError

if TYPE_CHECKING:
    from onnx import GraphProto, ModelProto, NodeProto

META_IN_GRAPH = "dslc.preprocessing_in_graph"  # "true" | "false"


def in_graph(meta: dict[str, str], where: str) -> bool:
    """Whether a model's metadata says its graph applies its preprocessing record."""
    value = meta.get(META_IN_GRAPH, "false")
    if value not in ("true", "false"):
        raise DslError(f"{where}: metadata `{META_IN_GRAPH}` is {value!r}, not `true` or "
                       "`false`")
    return value == "true"


def describe(record: dict) -> str:
    """E.g. `scale(0.0625), standardize(64 means)`."""
    parts = []
    for step in record.get("steps", []):
        if step.get("name") == "scale":
            parts.append(f"scale({step['factor']:g})")
        else:
            parts.append(f"{step.get('name')}({np.asarray(step.get('mean')).size} means)")
    return ", ".join(parts)


def _sample_shape(value_info) -> tuple[int | None, ...]:
    dims = value_info.type.tensor_type.shape.dim[1:]
    return tuple(d.dim_value if d.HasField("dim_value") else None for d in dims)


def _rename_uses(graph: GraphProto, old: str, new: str) -> None:
    """Every node input `old` reads `new` instead, in subgraphs too unless they define `old`."""
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name == old:
                node.input[i] = new
        for attr in node.attribute:
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                defined = {v.name for v in sub.input} | {t.name for t in sub.initializer} | \
                    {o for n in sub.node for o in n.output}
                if old not in defined:
                    _rename_uses(sub, old, new)


def embed_preprocessing(model: ModelProto, record: dict) -> list[str]:
    """Prepend the feature steps of `record` to every float input of `model` (in place); the
    inputs keep their names. Returns the names of the nodes added (quantization and fp16
    conversion leave them in float32)."""
    from onnx import TensorProto, helper, numpy_helper

    steps = record.get("steps") or []
    graph = model.graph
    if not steps:
        return []
    taken = {n.name for n in graph.node} | {t.name for t in graph.initializer} | \
        {o for n in graph.node for o in n.output} | {i.name for i in graph.input}

    def unique(name: str) -> str:
        base, i = name, 1
        while name in taken:
            i += 1
            name = f"{base}_{i}"
        taken.add(name)
        return name

    initialized = {t.name for t in graph.initializer}
    added: list[NodeProto] = []
    for inp in graph.input:
        if inp.name in initialized or inp.type.tensor_type.elem_type != TensorProto.FLOAT:
            continue
        sample = _sample_shape(inp)
        value = inp.name
        ops: list[tuple[str, str, np.ndarray]] = []
        for step in steps:
            if step["name"] == "scale":
                # One element of the input's rank: onnxruntime 1.32 multiplies by a 0-d or
                # [1] constant 40x slower (660 vs 16 µs on 64 MNIST images), a tenth of
                # cnn_mnist's time at batch 64.
                factor = np.full((1,) * (len(sample) + 1), step["factor"], np.float32)
                ops.append(("Mul", "scale", factor))
            elif step["name"] == "standardize":
                mean = np.asarray(step["mean"], np.float32)
                std = np.asarray(step["std"], np.float32)
                dims = [d for d in sample if isinstance(d, int)]
                if len(dims) == len(sample) and mean.size == int(np.prod(dims)):
                    mean, std = mean.reshape(dims), std.reshape(dims)
                ops += [("Sub", "standardize/mean", mean), ("Div", "standardize/std", std)]
            else:  # record.check_preprocessing refused it before
                raise ValueError(f"unknown preprocessing step {step['name']!r}")
        final = unique(f"{inp.name}/preprocessed")
        _rename_uses(graph, inp.name, final)
        for k, (op_type, role, const) in enumerate(ops):
            const_name = unique(f"{inp.name}/preprocess.{role.replace('/', '.')}")
            graph.initializer.append(numpy_helper.from_array(const, const_name))
            out = final if k == len(ops) - 1 else unique(f"{inp.name}/preprocess/{role}:0")
            added.append(helper.make_node(op_type, [value, const_name], [out],
                                          name=unique(f"{inp.name}/preprocess/{role}")))
            value = out
        inp.doc_string = (f"raw values, as the training data source gives them; the graph "
                          f"applies {describe(record)} first")
    nodes = added + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    return [n.name for n in added]


def embed_into(model: ModelProto, record: dict) -> None:
    """`embed_preprocessing`, and the metadata saying so (in place); a record without feature
    steps leaves the graph as it is and says `false`."""
    from onnx import helper

    meta = {p.key: p.value for p in model.metadata_props}
    meta[META_IN_GRAPH] = "true" if embed_preprocessing(model, record) else "false"
    del model.metadata_props[:]
    helper.set_model_props(model, meta)


def strip_preprocessing(model: ModelProto) -> tuple[ModelProto, dict | None]:
    """`model` without the preprocessing `embed_preprocessing` put in (a copy), and the
    record it applied; `model` itself and None when its metadata says none is in the graph.
    `dslc import` reads the layers this way: the spec takes the input as they see it."""
    import json

    from onnx import ModelProto as Proto

    meta = {p.key: p.value for p in model.metadata_props}
    if meta.get(META_IN_GRAPH) != "true":
        return model, None
    from .record import check_preprocessing

    try:
        record = check_preprocessing(json.loads(meta.get("dslc.preprocessing", "null")), "")
    except (json.JSONDecodeError, RecursionError, DslError):
        record = None  # the nodes still go; the spec's header then names no steps
    out = Proto()
    out.CopyFrom(model)
    graph = out.graph
    inputs = {i.name for i in graph.input}
    ours = [n for n in graph.node if n.name.split("/")[:2] in ([i, "preprocess"] for i in inputs)]
    if not ours:
        return model, None
    consts = {name for n in ours for name in n.input[1:]}
    kept = [n for n in graph.node if n not in ours]
    del graph.node[:]
    graph.node.extend(kept)
    keep = [t for t in graph.initializer if t.name not in consts]
    del graph.initializer[:]
    graph.initializer.extend(keep)
    for name in inputs:
        _rename_uses(graph, f"{name}/preprocessed", name)
    return out, record or {"steps": []}
