"""Build a keras.Model from the generated source, holding canonical weights; inference and
gradients."""

from __future__ import annotations

import importlib.util
import itertools
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from dslc.backends.base import Feed
from dslc.backends.keras.codegen import generate, model_function
from dslc.backends.keras.quiet import import_keras
from dslc.backends.keras.weights import assign, model_variables, read
from dslc.data.lazy import is_lazy
from dslc.diagnostics import DslError
from dslc.ir.graph import Graph

_counter = itertools.count()


def load_generated(graph: Graph, spec: Any = None) -> Callable[[], Any]:
    """Import the generated module from a temporary file and return its `build_<model>`, so
    what runs is exactly what `compile` writes."""
    import_keras()
    source = generate(spec, graph)
    name = f"dslc_generated_keras_{next(_counter)}"
    with tempfile.TemporaryDirectory(prefix="dslc-keras-") as tmp:
        path = Path(tmp) / "model.py"
        path.write_text(source, encoding="utf-8")
        module_spec = importlib.util.spec_from_file_location(name, path)
        assert module_spec is not None and module_spec.loader is not None
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
    sys.modules.pop(name, None)
    builder: Callable[[], Any] = getattr(module, model_function(graph))
    return builder


def tensorflow() -> Any:
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


def mirrored_devices(count: int, device: str) -> list[str]:
    """`count` local devices for a MirroredStrategy: GPUs for cuda/auto when there are enough,
    else `count` logical CPU devices (TensorFlow splits the CPU when asked before it starts;
    on CPU they share its cores, which makes them a test of the distribution, not a speed-up)."""
    tf = tensorflow()
    gpus = tf.config.list_physical_devices("GPU")
    if device in ("cuda", "auto") and len(gpus) >= count:
        return [f"/GPU:{i}" for i in range(count)]
    if device == "cuda":
        raise DslError(f"--devices {count} on cuda, but TensorFlow sees {len(gpus)} GPU(s)",
                       hint=f"use --devices {len(gpus)}, or --device cpu")
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(count)])
    except RuntimeError:  # already started: use the logical CPUs it has, if enough
        pass
    cpus = tf.config.list_logical_devices("CPU")
    if len(cpus) < count:
        raise DslError(f"--devices {count}: TensorFlow started with {len(cpus)} CPU device(s) "
                       "and cannot split the CPU now", hint="run the training in a fresh "
                       "process (the `dslc train` command does)")
    return [f"/CPU:{i}" for i in range(count)]


# Keras's mixed-precision policies: float32 variables, bf16/fp16 computation.
POLICIES = {"fp32": "float32", "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}


def build_model(graph: Graph, tf_device: str, precision: str = "fp32") -> Any:
    """The generated model; layers built under `precision`'s dtype policy, which is set for
    the build only (the global policy is put back)."""
    tf = tensorflow()
    keras = import_keras()
    builder = load_generated(graph)
    before = keras.config.dtype_policy()
    keras.config.set_dtype_policy(POLICIES[precision])
    try:
        with tf.device(tf_device):
            return builder()
    finally:
        keras.config.set_dtype_policy(before)


def _f32(a: np.ndarray) -> np.ndarray:
    """Outputs of a mixed-precision model (bfloat16, float16) as float32."""
    return a if a.dtype == np.float32 else a.astype(np.float32)


def feed(graph: Graph, x: Feed) -> list[np.ndarray]:
    """The inputs in the spec's order, each of its declared dtype: float32, or int32/int64/
    bool for ids and flags (see `dslc.backends.base.Feed`)."""
    if isinstance(x, dict):
        missing = [i.name for i in graph.inputs if i.name not in x]
        if missing:
            raise DslError(f"model `{graph.name}` needs input(s) {', '.join(missing)}")
        xs = [x[i.name] for i in graph.inputs]
    else:
        xs = list(x) if isinstance(x, list | tuple) else [x]
    if len(xs) != len(graph.inputs):
        raise DslError(f"model `{graph.name}` takes {len(graph.inputs)} input(s), got {len(xs)}")
    # Data on disk (dslc/data/lazy.py) stays there: the batch loops read it a slice at a time.
    return [a if is_lazy(a) else np.asarray(a, dtype=i.type.numpy_dtype)
            for i, a in zip(graph.inputs, xs, strict=True)]


def inference_fn(model: Any, graph: Graph, all_outputs: bool = False) -> Callable[..., Any]:
    """A traced inference call taking one batch of every input (batch size free); it gives
    the first output, or with `all_outputs` a tuple of every output."""
    tf = tensorflow()
    signature = [tf.TensorSpec((None, *i.type.shape), tf.as_dtype(i.type.numpy_dtype))
                 for i in graph.inputs]

    def infer(*xs: Any) -> Any:
        out = model(xs[0] if len(xs) == 1 else list(xs), training=False)
        if all_outputs:
            return tuple(out) if isinstance(out, list | tuple) else (out,)
        return out[0] if isinstance(out, list | tuple) else out

    return tf.function(infer, input_signature=signature, reduce_retracing=True)


def predict_batches(fn: Callable[..., Any], xs: list[np.ndarray], tf_device: str,
                    batch_size: int = 256) -> np.ndarray:
    """`fn` (one output) over the inputs `xs` in batches."""
    return predict_all_batches(lambda *a: (fn(*a),), xs, tf_device, batch_size)[0]


def predict_all_batches(fn: Callable[..., Any], xs: list[np.ndarray], tf_device: str,
                        batch_size: int = 256) -> list[np.ndarray]:
    """As `predict_batches`, for a `fn` giving a tuple of outputs."""
    tf = tensorflow()
    n = len(xs[0])
    parts = []
    with tf.device(tf_device):
        for start in range(0, n, batch_size):
            parts.append([_f32(y.numpy())
                          for y in fn(*(a[start:start + batch_size] for a in xs))])
        if not parts:
            return [_f32(y.numpy()) for y in fn(*(a[:0] for a in xs))]
    return [np.concatenate(p, axis=0) for p in zip(*parts, strict=True)]


class KerasRuntime:
    """A built model in inference mode; inputs channels-last float32 `[N, ...]`."""

    def __init__(self, graph: Graph, weights: dict[str, np.ndarray], device: str = "cpu",
                 precision: str = "fp32"):
        self.graph = graph
        self.device, self._tf_device = resolve_device(device)
        self.model = build_model(graph, self._tf_device, precision)
        self.variables = model_variables(self.model, graph)
        assign(self.variables, weights, graph.name)
        self._infer = inference_fn(self.model, graph)
        self._infer_all: Callable[..., Any] | None = None

    def predict(self, x: Feed, batch_size: int = 256) -> np.ndarray:
        return predict_batches(self._infer, feed(self.graph, x), self._tf_device, batch_size)

    def predict_all(self, x: Feed, batch_size: int = 256) -> list[np.ndarray]:
        """Every output for `x`, in the spec's order."""
        if self._infer_all is None:
            self._infer_all = inference_fn(self.model, self.graph, all_outputs=True)
        return predict_all_batches(self._infer_all, feed(self.graph, x), self._tf_device,
                                   batch_size)

    def get_weights(self) -> dict[str, np.ndarray]:
        return read(self.variables)

    def gradients(self, xs: list[np.ndarray], cotangents: list[np.ndarray]) -> dict[str, np.ndarray]:
        """The gradient of `sum(output_k * cotangent_k)` in inference mode, by canonical key
        and by `input:<name>` (see `dslc.backends.base.Backend.gradients`)."""
        tf = tensorflow()
        if len(cotangents) != len(self.graph.outputs):
            raise DslError(f"model `{self.graph.name}` has {len(self.graph.outputs)} output(s), "
                           f"got {len(cotangents)} cotangent(s)")
        with tf.device(self._tf_device):
            inputs = [tf.constant(a) for a in feed(self.graph, xs)]
            # no gradient w.r.t. ids: only float inputs are watched and reported
            floats = [k for k, i in enumerate(self.graph.inputs) if i.type.is_float]
            keys = list(self.variables)
            with tf.GradientTape() as tape:
                tape.watch([inputs[k] for k in floats])
                # the tape watches trainable variables only: batch_norm's moving statistics
                # are inputs of the inference function too
                for k in keys:
                    if not self.variables[k].trainable:
                        tape.watch(self.variables[k].value)
                out = self.model(inputs[0] if len(inputs) == 1 else inputs, training=False)
                outs = list(out) if isinstance(out, list | tuple) else [out]
                total = tf.add_n([tf.reduce_sum(y * tf.constant(np.asarray(c, np.float32)))
                                  for y, c in zip(outs, cotangents, strict=True)])
            targets = [self.variables[k] for k in keys] + [inputs[k] for k in floats]
            grads = tape.gradient(total, targets,
                                  unconnected_gradients=tf.UnconnectedGradients.ZERO)
        names = keys + [f"input:{self.graph.inputs[k].name}" for k in floats]
        # an embedding's gradient comes as IndexedSlices (the rows looked up): made dense
        return {name: np.asarray(tf.convert_to_tensor(g).numpy(), dtype=np.float32)
                for name, g in zip(names, grads, strict=True)}


def gradients(graph: Graph, weights: dict[str, np.ndarray], xs: list[np.ndarray],
              cotangents: list[np.ndarray]) -> dict[str, np.ndarray]:
    return KerasRuntime(graph, weights).gradients(xs, cotangents)
