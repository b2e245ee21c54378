"""What `dslc export` writes into a model's metadata and `dslc run` reads back: the model and
spec, each output's task, the preprocessing record and the raw pixel range of image data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from dslc import __version__
from dslc.ir.graph import Graph
from dslc.ops import ending_activation

META_MODEL = "dslc.model"
META_SPEC = "dslc.spec"
META_VERSION = "dslc.version"
META_HASH = "dslc.spec_hash"
META_TASKS = "dslc.tasks"  # JSON: output name → classifier | binary | regression
META_PREPROCESSING = "dslc.preprocessing"
META_PIXEL_MAX = "dslc.pixel_max"

# Raw value range of image-like data sources, so an 8-bit image file (0..255) can be mapped
# to what the model was trained on before its preprocessing (digits pixels are 0..16).
SOURCE_PIXEL_MAX = {"digits": 16.0, "idx": 255.0}


def task_of(graph: Graph, output: str) -> str:
    """`classifier` (a softmax ends the output), `binary` (one sigmoid unit) or `regression`
    (raw values, as for an output that is a graph input). The activation is the one
    `ending_activation` finds, through dropout, flatten, reshape and linear."""
    act, _ = ending_activation(graph, output)
    shape = tuple(graph.type_of(output).shape)
    if act == "softmax" and shape and (shape[-1] or 0) > 1:
        return "classifier"
    if act == "sigmoid" and shape == (1,):
        return "binary"
    return "regression"


def model_metadata(spec: Any, graph: Graph, preprocessing: dict | None = None) -> dict[str, str]:
    tasks = {name: task_of(graph, name) for name in graph.outputs}
    meta = {META_MODEL: graph.name, META_VERSION: __version__,
            META_TASKS: json.dumps(tasks, sort_keys=True)}
    if spec is not None:
        meta[META_SPEC] = Path(spec.path).name
        meta[META_HASH] = spec.digest
        cfg = spec.trains.get(graph.name)
        if cfg is not None and cfg.data.kind in SOURCE_PIXEL_MAX:
            meta[META_PIXEL_MAX] = repr(SOURCE_PIXEL_MAX[cfg.data.kind])
    if preprocessing is not None:
        meta[META_PREPROCESSING] = json.dumps(preprocessing, sort_keys=True)
    return meta


def static_preprocessing(spec: Any, graph: Graph) -> dict | None:
    """The record of a train block whose steps need no data (scale only), else None."""
    cfg = spec.trains.get(graph.name)
    if cfg is None:
        return None
    steps = [s for s in cfg.preprocess if s.name != "one_hot"]
    if any(s.name != "scale" for s in steps):
        return None
    from dslc.data.preprocess import fit_feature_step

    return {"steps": [fit_feature_step(s, np.zeros((0,), np.float32)) for s in steps],
            "labels": []}
