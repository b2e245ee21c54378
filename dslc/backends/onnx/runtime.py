"""An exported model in an onnxruntime session: the ONNX backend's `Runtime`."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort

from dslc.backends.base import Feed
from dslc.diagnostics import DslError


def providers(device: str | None) -> list[str]:
    if device in ("cpu", None):
        return ["CPUExecutionProvider"]
    available = ort.get_available_providers()
    if device in ("cuda", "auto") and "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if device == "auto":
        return ["CPUExecutionProvider"]
    raise DslError(f"device `{device}` is not available to onnxruntime",
                   hint="install onnxruntime-gpu for CUDA, or use --device cpu")


def session_options(threads: int = 0) -> ort.SessionOptions:
    """The session options every dslc session uses; `threads` 0 lets onnxruntime choose.
    Measured for `dslc run` (docs/benchmarks.md, "onnxruntime settings"): every graph
    optimisation (its layout-blocked NCHWc kernels) runs cnn_mnist 1.6-1.8x and digits_cnn
    1.7-2.3x faster than the lower levels; the thread count and thread spinning are left to
    onnxruntime (one thread won only while another program held a core), and I/O binding
    gained nothing measurable at a fixed batch, so plain `run` stays."""
    opts = ort.SessionOptions()
    opts.log_severity_level = 4  # a failed run raises; dslc prints its message once
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = threads
    return opts


def make_session(model: bytes | str, device: str | None = "cpu",
                 threads: int = 0) -> ort.InferenceSession:
    """An onnxruntime session of a serialized model or a file, with dslc's options."""
    return ort.InferenceSession(model, session_options(threads), providers=providers(device))


_NUMPY = {"tensor(float)": np.float32, "tensor(int32)": np.int32, "tensor(int64)": np.int64,
          "tensor(bool)": np.bool_}


class OnnxRuntime:
    """An onnxruntime session; `predict(x)` takes channels-last float32 `[N, ...]`."""

    def __init__(self, model_bytes: bytes, device: str = "cpu"):
        self.session = make_session(model_bytes, device)
        self.input_names = [i.name for i in self.session.get_inputs()]
        # float32, or int32/int64/bool for inputs of ids and flags
        self.input_dtypes = {i.name: _NUMPY.get(i.type, np.float32)
                             for i in self.session.get_inputs()}
        self.output_names = [o.name for o in self.session.get_outputs()]

    def predict(self, x: Feed) -> np.ndarray:
        """The first output."""
        return self._run(x, self.output_names[:1])[0]

    def predict_all(self, x: Feed) -> list[np.ndarray]:
        """Every output, in the spec's order."""
        return self._run(x, self.output_names)

    def _run(self, x: Feed, names: list[str]) -> list[np.ndarray]:
        if isinstance(x, dict):
            arrays = dict(x)
        elif isinstance(x, list | tuple):  # one array per input, in the spec's order
            arrays = dict(zip(self.input_names, x, strict=True))
        else:
            arrays = {self.input_names[0]: x}
        feed: dict[str, np.ndarray] = {
            k: np.ascontiguousarray(v, dtype=self.input_dtypes.get(k, np.float32))
            for k, v in arrays.items()}
        return [np.asarray(y) for y in self.session.run(names, feed)]
