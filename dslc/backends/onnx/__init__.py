"""The ONNX backend: a ModelProto built straight from the IR (no tracing), run by onnxruntime.

`compile` writes a checked `.onnx` file of seeded initial weights (`dslc compile --target
onnx`); `build` gives an in-memory onnxruntime `Runtime`. Inputs are channels-last, as in the
spec. The lowering is in `lower.py`, the ModelProto and the file in `export.py`, the session in
`runtime.py`, metadata in `metadata.py` (the training data's value range in `ranges.py`), the
spec's preprocessing as ONNX ops in `preprocess.py`, `--quantize int8` / `--precision fp16` in
`quantize.py`, the timing of `--bench` in `bench.py`, and `dslc export` / `dslc run` in
`cli.py`. Importing this package imports neither onnx nor onnxruntime.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from dslc.backends.base import Backend, Runtime

if TYPE_CHECKING:
    import numpy as np

    from dslc.backends.lowering import LoweringTable
    from dslc.ir.graph import Graph


class OnnxBackend(Backend):
    name = "onnx"
    summary = "a checked .onnx file (opset 20), run by onnxruntime"
    frameworks = ("onnx", "onnxruntime")
    extra = "onnx"
    emits = "model"
    runs = True
    trains = False

    @property
    def lowerings(self) -> LoweringTable:
        from .lower import LOWERINGS

        return LOWERINGS

    def compile(self, spec: Any, graph: Graph, out: Path, seed: int = 0,
                force: bool = False) -> Path:
        """`out` if it names a `.onnx` file, else `out/<model>.onnx`: the model with weights
        initialised from `seed`. An existing file is replaced only with `force`."""
        self.require()
        from dslc.weights import init_weights

        from .export import export

        out = Path(out)
        path = out if out.suffix == ".onnx" else out / f"{graph.name}.onnx"
        return export(spec, graph, init_weights(graph, seed), path, force=force)

    def build(self, graph: Graph, weights: dict[str, np.ndarray], device: str = "cpu",
              precision: str = "fp32") -> Runtime:
        self.check_options(None, precision)
        self.require()
        from .export import to_model
        from .runtime import OnnxRuntime

        return OnnxRuntime(to_model(graph, weights).SerializeToString(), device)


BACKEND = OnnxBackend()
