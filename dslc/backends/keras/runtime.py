"""Build a keras.Model from the generated source, holding canonical weights."""

from __future__ import annotations

import importlib.util
import itertools
import sys
import tempfile
from pathlib import Path

import numpy as np

from dslc.backends.keras.codegen import generate, model_function
from dslc.backends.keras.quiet import import_keras
from dslc.backends.keras.weights import from_canonical, to_canonical
from dslc.diagnostics import DslError
from dslc.ir.graph import Graph

_counter = itertools.count()


def load_generated(graph: Graph, spec=None):
    """Import the generated module from a temporary file and return its `build_<model>`."""
    import_keras()
    source = generate(spec, graph)
    name = f"dslc_generated_keras_{graph.name}_{next(_counter)}"
    with tempfile.TemporaryDirectory(prefix="dslc-keras-") as tmp:
        path = Path(tmp) / f"{graph.name}.py"
        path.write_text(source, encoding="utf-8")
        module_spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
    sys.modules.pop(name, None)
    return getattr(module, model_function(graph))


def tensorflow():
    """The `tensorflow` module, imported quietly (through quiet.py) on first use."""
    import_keras()
    import tensorflow as tf

    return tf


def resolve_device(device: str) -> tuple[str, str]:
    """(`cpu` | `cuda`, TensorFlow device string) for `--device cpu|cuda|auto`."""
    tf = tensorflow()

    gpus = tf.config.list_physical_devices("GPU")
    if device == "cuda" and not gpus:
        raise DslError("--device cuda: TensorFlow sees no GPU",
                       hint="use --device cpu, or install a CUDA build of TensorFlow")
    if device in ("cuda", "auto") and gpus:
        return "cuda", "/GPU:0"
    if device not in ("cpu", "auto", "cuda"):
        raise DslError(f"unknown device `{device}`", hint="devices are cpu, cuda and auto")
    return "cpu", "/CPU:0"


def build_model(graph: Graph, tf_device: str):
    tf = tensorflow()
    builder = load_generated(graph)
    with tf.device(tf_device):
        return builder()


def inference_fn(model, graph: Graph, all_outputs: bool = False):
    """A traced inference call taking one batch of every input (batch size free); it gives
    the first output, or with `all_outputs` a tuple of every output."""
    tf = tensorflow()
    signature = [tf.TensorSpec((None, *i.type.shape), tf.float32) for i in graph.inputs]

    def infer(*xs):
        out = model(xs[0] if len(xs) == 1 else list(xs), training=False)
        if all_outputs:
            return tuple(out) if isinstance(out, (list, tuple)) else (out,)
        return out[0] if isinstance(out, (list, tuple)) else out

    return tf.function(infer, input_signature=signature, reduce_retracing=True)


def predict_batches(fn, x, tf_device: str, batch_size: int = 256) -> np.ndarray:
    """`fn` (one output) over `x` in batches."""
    return predict_all_batches(lambda *a: (fn(*a),), x, tf_device, batch_size)[0]


def predict_all_batches(fn, x, tf_device: str, batch_size: int = 256) -> list[np.ndarray]:
    """As `predict_batches`, for a `fn` giving a tuple of outputs."""
    tf = tensorflow()
    xs = list(x) if isinstance(x, (list, tuple)) else [x]
    xs = [np.asarray(a, dtype=np.float32) for a in xs]
    n = len(xs[0])
    parts = []
    with tf.device(tf_device):
        for start in range(0, n, batch_size):
            parts.append([y.numpy() for y in fn(*(a[start:start + batch_size] for a in xs))])
        if not parts:
            return [y.numpy() for y in fn(*(a[:0] for a in xs))]
    return [np.concatenate(p, axis=0) for p in zip(*parts, strict=True)]


class KerasRuntime:
    """A built model in inference mode; `predict` takes channels-last float32 `[N, ...]`."""

    def __init__(self, graph: Graph, weights: dict[str, np.ndarray], device: str = "cpu"):
        self.graph = graph
        self.device, self._tf_device = resolve_device(device)
        self.model = build_model(graph, self._tf_device)
        from_canonical(self.model, graph, weights)
        self._infer = inference_fn(self.model, graph)
        self._infer_all = None

    def predict(self, x, batch_size: int = 256) -> np.ndarray:
        return predict_batches(self._infer, x, self._tf_device, batch_size)

    def predict_all(self, x, batch_size: int = 256) -> list[np.ndarray]:
        """Every output for `x`, in the spec's order."""
        if self._infer_all is None:
            self._infer_all = inference_fn(self.model, self.graph, all_outputs=True)
        return predict_all_batches(self._infer_all, x, self._tf_device, batch_size)

    def get_weights(self) -> dict[str, np.ndarray]:
        return to_canonical(self.model, self.graph)


def build(graph: Graph, weights: dict[str, np.ndarray], device: str = "cpu") -> KerasRuntime:
    return KerasRuntime(graph, weights, device)
