"""What `dslc export` writes into a model's metadata and `dslc run` reads back: the model and
spec, each output's task, the preprocessing record, and the raw value range of the training data
(`dslc.pixel_max` for older readers, `dslc.input_range` as ranges.py describes)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from dslc import __version__
from dslc.diagnostics import DslError
from dslc.ir.graph import Graph
from dslc.ops import ending_activation

from .ranges import META_INPUT_RANGE, InputRange

META_MODEL = "dslc.model"
META_SPEC = "dslc.spec"
META_VERSION = "dslc.version"
META_HASH = "dslc.spec_hash"
META_TASKS = "dslc.tasks"  # JSON: output name → classifier | binary | regression
META_PREPROCESSING = "dslc.preprocessing"
META_PIXEL_MAX = "dslc.pixel_max"
META_CLASSES = "dslc.classes"  # JSON: output name → class names, by index (as trained)
# JSON: input name → the spec's dtype (f32, i32, i64, bool); the graph inputs' element types
# say the same to onnxruntime, this says it in the spec's words (`dslc run`'s messages).
META_INPUT_DTYPES = "dslc.input_dtypes"
# JSON: integer input name → {"limit": n, "layer": name}: its ids must be below `limit`, the
# least vocabulary of the layers that read it (`Op.id_limit`). `dslc run` refuses others with
# the layer named, where onnxruntime's Gather would only say "indices out of data bounds".
META_ID_LIMITS = "dslc.id_limits"

# Raw value range of image-like data sources, so an 8-bit image file (0..255) can be mapped
# to what the model was trained on before its preprocessing (digits pixels are 0..16).
SOURCE_PIXEL_MAX = {"digits": 16.0, "idx": 255.0, "mnist": 255.0, "mnist_sample": 255.0,
                    "fashion_mnist": 255.0, "cifar10": 255.0}


def task_of(graph: Graph, output: str) -> str:
    """`classifier` (a softmax ends the output), `binary` (one sigmoid unit) or `regression`
    (raw values, as for an output that is a graph input). The activation is the one
    `ending_activation` finds, through dropout, flatten, reshape and linear. A `log_softmax`
    output holds log-probabilities, not probabilities: `regression`, printed as raw values."""
    act, _ = ending_activation(graph, output)
    shape = tuple(graph.type_of(output).shape)
    if act == "softmax" and shape and (shape[-1] or 0) > 1:
        return "classifier"
    if act == "sigmoid" and shape == (1,):
        return "binary"
    return "regression"


def id_limits(graph: Graph) -> dict[str, dict[str, Any]]:
    """Integer input name → the bound on its ids and the layer that sets it (see
    META_ID_LIMITS); inputs no layer bounds are left out."""
    from dslc.ops.registry import id_bound

    bounds = {i.name: id_bound(graph, i.name) for i in graph.inputs if not i.type.is_float}
    return {name: {"limit": int(b[0]), "layer": b[1]} for name, b in bounds.items() if b}


def model_metadata(spec: Any, graph: Graph, preprocessing: dict | None = None,
                   input_range: InputRange | None = None,
                   classes: list[str] | None = None) -> dict[str, str]:
    """The `dslc.*` metadata; `input_range` defaults to the known range of the train block's
    built-in source (see ranges.py)."""
    tasks = {name: task_of(graph, name) for name in graph.outputs}
    meta = {META_MODEL: graph.name, META_VERSION: __version__,
            META_TASKS: json.dumps(tasks, sort_keys=True)}
    if any(not i.type.is_float for i in graph.inputs):
        meta[META_INPUT_DTYPES] = json.dumps({i.name: i.type.dtype for i in graph.inputs})
        limits = id_limits(graph)
        if limits:
            meta[META_ID_LIMITS] = json.dumps(limits, sort_keys=True)
    if spec is not None:
        meta[META_SPEC] = Path(spec.path).name
        meta[META_HASH] = spec.digest
        cfg = spec.trains.get(graph.name)
        if cfg is not None and cfg.data.kind in SOURCE_PIXEL_MAX:
            meta[META_PIXEL_MAX] = repr(SOURCE_PIXEL_MAX[cfg.data.kind])
        if input_range is None:
            input_range = static_input_range(spec, graph)
    if input_range is not None:
        meta[META_INPUT_RANGE] = input_range.to_json()
    if preprocessing is not None:
        meta[META_PREPROCESSING] = json.dumps(preprocessing, sort_keys=True)
    if classes:  # the trained (first) output's
        meta[META_CLASSES] = json.dumps({graph.outputs[0]: list(classes)})
    return meta


def check_classes(graph: Graph, classes: Any, where: str) -> list[str] | None:
    """Class names from a weights file's metadata, if they fit the first output: at most its
    width for a classifier (outputs beyond the names print as indices), two for a binary one.
    Logits outputs (a `regression` task to `dslc run`) keep them as they are."""
    if not (isinstance(classes, list) and classes and all(isinstance(c, str) for c in classes)):
        raise DslError(f"{where}: `classes` is not a list of class names")
    task = task_of(graph, graph.outputs[0])
    width = 2 if task == "binary" else graph.type_of(graph.outputs[0]).shape[-1]
    if task != "regression" and width is not None and len(classes) > width:
        raise DslError(f"{where} names {len(classes)} classes; model `{graph.name}`'s output "
                       f"{graph.outputs[0]} is a {task} of {width}")
    return classes


def static_input_range(spec: Any, graph: Graph) -> InputRange | None:
    """The known range of a one-input model's built-in training source (digits, idx)."""
    cfg = spec.trains.get(graph.name)
    if cfg is None or len(graph.inputs) != 1:
        return None
    return InputRange.known(cfg.data.kind)


def training_input_range(spec: Any, graph: Graph, seed: int) -> tuple[InputRange | None, str]:
    """The range of a one-input model's training data: known for built-in image sources, else
    measured on the training split (as `dslc train` made it with `seed`, before
    preprocessing). The second item says why there is none, when there is none."""
    cfg = spec.trains.get(graph.name)
    if cfg is None:
        return None, "the spec has no train block for it"
    if len(graph.inputs) != 1:
        return None, "the model has several inputs"
    if not graph.inputs[0].type.is_float:
        return None, f"the input holds {graph.inputs[0].type.dtype} ids"
    known = InputRange.known(cfg.data.kind)
    if known is not None:
        return known, ""
    from dslc.data.loaders import load_dataset

    try:
        raw = cfg.model_copy(update={"preprocess": [], "augment": []})
        data = load_dataset(raw, tuple(graph.inputs[0].type.shape), Path(spec.path).parent, seed,
                            graph.inputs[0].type.dtype)
    except (DslError, OSError, ValueError, MemoryError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return None, f"cannot read the training data ({first})"
    found = InputRange.measure(data.x_train, f"{cfg.data.kind} training split")
    return found, "" if found is not None else "the training split holds no finite value"


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
