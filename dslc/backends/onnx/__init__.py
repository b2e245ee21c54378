"""The ONNX backend: a ModelProto built straight from the IR (no tracing), run by onnxruntime.

`export(spec, graph, weights, path)` writes a checked `.onnx` file; `build(graph, weights)`
gives an in-memory runtime with `.predict(x)`. Inputs are channels-last, as in the spec.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from dslc import __version__
from dslc.diagnostics import DslError
from dslc.ir.graph import Graph

from .lower import BATCH, IR_VERSION, OPSET, lower_graph

__all__ = ["BATCH", "OPSET", "IR_VERSION", "to_model", "export", "build", "Runtime",
           "model_metadata", "task_of", "static_preprocessing"]

# Metadata keys read back by `dslc run`.
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
    """`classifier` (softmax output), `binary` (one sigmoid unit) or `regression` (raw values,
    as for an output that is a graph input)."""
    if output not in {n.name for n in graph.nodes}:
        return "regression"
    last = graph.node(output)
    act = getattr(last.attrs, "activation", last.op)
    shape = last.type.shape if last.type else ()
    if act == "softmax" and shape and (shape[-1] or 0) > 1:
        return "classifier"
    if act == "sigmoid" and tuple(shape) == (1,):
        return "binary"
    return "regression"


def model_metadata(spec, graph: Graph, preprocessing: dict | None = None) -> dict[str, str]:
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


def static_preprocessing(spec, graph) -> dict | None:
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


def to_model(graph: Graph, weights: dict[str, np.ndarray], metadata: dict[str, str] | None = None):
    """The ONNX ModelProto of `graph` holding `weights` (canonical layout)."""
    from onnx import helper

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


def export(spec, graph: Graph, weights: dict[str, np.ndarray], path: str | Path,
           preprocessing: dict | None = None) -> Path:
    """Write a checked `.onnx` file atomically."""
    import onnx

    from dslc.weights import atomic_write_bytes

    from .record import check_output_path

    path = Path(path)
    check_output_path(path, ".onnx file")
    if preprocessing is None and spec is not None:
        preprocessing = static_preprocessing(spec, graph)
    model = to_model(graph, weights, model_metadata(spec, graph, preprocessing))
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as exc:  # a lowering bug, not a user error
        raise RuntimeError(f"dslc built an invalid ONNX model: {exc}") from exc
    atomic_write_bytes(path, model.SerializeToString())
    return path


def providers(device: str) -> list[str]:
    import onnxruntime as ort

    if device in ("cpu", None):
        return ["CPUExecutionProvider"]
    available = ort.get_available_providers()
    if device in ("cuda", "auto") and "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if device == "auto":
        return ["CPUExecutionProvider"]
    raise DslError(f"device `{device}` is not available to onnxruntime",
                   hint="install onnxruntime-gpu for CUDA, or use --device cpu")


class Runtime:
    """An onnxruntime session; `predict(x)` takes channels-last float32 `[N, ...]`."""

    def __init__(self, model_bytes: bytes, device: str = "cpu"):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        self.session = ort.InferenceSession(model_bytes, opts, providers=providers(device))
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]

    def predict(self, x) -> np.ndarray:
        """The first output."""
        return self._run(x, self.output_names[:1])[0]

    def predict_all(self, x) -> list[np.ndarray]:
        """Every output, in the spec's order."""
        return self._run(x, self.output_names)

    def _run(self, x, names: list[str]) -> list[np.ndarray]:
        if isinstance(x, dict):
            feed = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in x.items()}
        elif isinstance(x, list | tuple):  # one array per input, in the spec's order
            feed = {k: np.ascontiguousarray(v, dtype=np.float32)
                    for k, v in zip(self.input_names, x, strict=True)}
        else:
            feed = {self.input_names[0]: np.ascontiguousarray(x, dtype=np.float32)}
        return self.session.run(names, feed)


def build(graph: Graph, weights: dict[str, np.ndarray], device: str = "cpu") -> Runtime:
    return Runtime(to_model(graph, weights).SerializeToString(), device)
