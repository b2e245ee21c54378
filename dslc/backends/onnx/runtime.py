"""An exported model in an onnxruntime session: the ONNX backend's `Runtime`."""

from __future__ import annotations

import sys

import numpy as np
import onnxruntime as ort

from dslc.backends.base import Feed
from dslc.diagnostics import DslError

CUDA_MISSING = ("onnxruntime has no CUDA provider here (install onnxruntime-gpu, with CUDA and "
                "cuDNN); running on the CPU")


def providers(device: str | None) -> list[str]:
    """The execution providers for `--device`: cuda and auto take onnxruntime's
    CUDAExecutionProvider when installed; without it they fall back to the CPU, and
    `make_session` says so."""
    if device in ("cpu", None):
        return ["CPUExecutionProvider"]
    if device not in ("cuda", "auto") and not str(device).startswith("cuda"):
        raise DslError(f"unknown device `{device}`", hint="devices are cpu, cuda and auto")
    if "CUDAExecutionProvider" in ort.get_available_providers():
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


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
    session = ort.InferenceSession(model, session_options(threads), providers=providers(device))
    if device not in ("cpu", None) and "CUDAExecutionProvider" not in session.get_providers():
        # Installed but unusable (no GPU, a driver or cuDNN missing) falls back the same way.
        note(CUDA_MISSING if "CUDAExecutionProvider" not in ort.get_available_providers()
             else "onnxruntime's CUDA provider could not start (no GPU, or CUDA/cuDNN "
                  "missing); running on the CPU")
    return session


_NOTED: set[str] = set()


def note(text: str) -> None:
    """One `note:` line on stderr, once per process."""
    if text not in _NOTED:
        _NOTED.add(text)
        print(f"note: {text}", file=sys.stderr)


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
