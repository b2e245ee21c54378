"""The ONNX ModelProto of a graph and its weights (`to_model`), and the checked `.onnx` file
`dslc export` and `dslc compile --target onnx` write (`export`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper

from dslc import __version__
from dslc.diagnostics import DslError
from dslc.ir.graph import Graph

from .lower import IR_VERSION, OPSET, lower_graph
from .metadata import META_TASKS, model_metadata, static_preprocessing
from .preprocess import META_IN_GRAPH, embed_into
from .ranges import InputRange
from .record import check_output_path


def to_model(graph: Graph, weights: dict[str, np.ndarray],
             metadata: dict[str, str] | None = None) -> onnx.ModelProto:
    """The ONNX ModelProto of `graph` holding `weights` (canonical layout)."""
    missing = [k for k in graph.param_specs() if k not in weights]
    if missing:
        raise DslError(f"weights for model `{graph.name}` lack {', '.join(missing[:5])}")
    lowered = lower_graph(graph, weights)
    metadata = dict(metadata or {})
    renamed = {k: v for k, v in lowered.output_names.items() if k != v}
    if renamed and META_TASKS in metadata:  # outputs that are graph inputs got other names
        tasks = json.loads(metadata[META_TASKS])
        metadata[META_TASKS] = json.dumps({renamed.get(k, k): v for k, v in tasks.items()},
                                          sort_keys=True)
    model = helper.make_model(lowered.graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="dslc", producer_version=__version__)
    model.ir_version = IR_VERSION
    model.doc_string = f"dslc model {graph.name}"
    helper.set_model_props(model, metadata)
    return model


def export_model(spec: Any, graph: Graph, weights: dict[str, np.ndarray],
                 preprocessing: dict | None = None, input_range: InputRange | None = None,
                 embed: bool = True, classes: list[str] | None = None) -> onnx.ModelProto:
    """The checked ModelProto `dslc export` writes. With `embed` (the default) the
    preprocessing record's steps are ONNX ops at the inputs (preprocess.py), so the file takes
    raw data; the metadata says which in `dslc.preprocessing_in_graph`."""
    if preprocessing is None and spec is not None:
        preprocessing = static_preprocessing(spec, graph)
    metadata = model_metadata(spec, graph, preprocessing, input_range, classes)
    if preprocessing is not None:
        metadata[META_IN_GRAPH] = "false"
    model = to_model(graph, weights, metadata)
    if embed and preprocessing is not None:
        embed_into(model, preprocessing)
    check(model)
    return model


def check(model: onnx.ModelProto) -> None:
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as exc:  # a bug in dslc, not a user error
        raise RuntimeError(f"dslc built an invalid ONNX model: {exc}") from exc


def write_model(path: Path, model: onnx.ModelProto | bytes, force: bool = False) -> Path:
    """Write atomically; an existing file only with `force`, never a non-regular one."""
    from dslc.weights import atomic_write_bytes

    check_output_path(path, ".onnx file", force)  # again: it may have appeared meanwhile
    atomic_write_bytes(path, model if isinstance(model, bytes) else model.SerializeToString())
    return path


def export(spec: Any, graph: Graph, weights: dict[str, np.ndarray], path: str | Path,
           preprocessing: dict | None = None, force: bool = False,
           input_range: InputRange | None = None, embed: bool = True,
           classes: list[str] | None = None) -> Path:
    """Write a checked `.onnx` file atomically; an existing file only with `force`."""
    path = Path(path)
    check_output_path(path, ".onnx file", force)
    model = export_model(spec, graph, weights, preprocessing, input_range, embed, classes)
    return write_model(path, model, force)
