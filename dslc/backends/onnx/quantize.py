"""`dslc export --quantize int8` and `--precision fp16`: the checked fp32 model converted with
onnxruntime's own tools, then measured against it in one run — test accuracy (or loss) on the
spec's test split, file size, batch-1 latency and batch-64 throughput — and refused when it
loses more than `--max-loss`.

int8 is static QDQ quantization (`onnxruntime.quantization.quantize_static`): activations
uint8 and weights int8 per channel (what onnxruntime recommends for x86 CPUs with VNNI; they
run as QLinearConv / QGemm after its graph optimisations), min/max calibration on the first N
samples of the training split (as `dslc train` split it with the run's seed). The embedded
preprocessing and the final softmax/sigmoid stay in float32, so inputs are raw values and
outputs probabilities. fp16 is `onnxruntime.transformers.float16` with float32 inputs and
outputs (casts at the edges), the preprocessing again kept in float32.
"""

from __future__ import annotations

import io
import json
import logging
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from dslc.diagnostics import DslError

from .bench import BATCH, Timing, measure, ort_call, resize

if TYPE_CHECKING:
    from onnx import ModelProto

    from dslc.ir.graph import Graph

META_PRECISION = "dslc.precision"  # "int8" | "fp16" (absent: fp32)
META_QUANTIZATION = "dslc.quantization"  # JSON: how it was converted and what it lost
KINDS = ("int8", "fp16")


@dataclass
class DeployData:
    """Samples of the spec's data: calibration samples preprocessed (the conversion works on
    the model without its embedded preprocessing), test samples as the exported file takes
    them (raw when it applies its preprocessing, else preprocessed)."""

    calibration: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    source: str  # e.g. "digits"


@dataclass
class Score:
    metric: str  # "accuracy" or "loss"
    value: float  # accuracy as a fraction, or the mean squared error
    samples: int

    def show(self) -> str:
        return f"{100 * self.value:.2f} %" if self.metric == "accuracy" else f"{self.value:.6g}"


def deploy_data(spec: Any, graph: Graph, seed: int, calibrate: int, record: dict | None,
                raw: bool) -> DeployData:
    """The first `calibrate` samples of the training split and the whole test split, as
    `dslc train` made them with `seed`; the test split preprocessed with `record` unless
    `raw`."""
    from dslc.data.loaders import load_dataset
    from dslc.data.preprocess import apply_preprocessing

    cfg = spec.trains.get(graph.name)
    if cfg is None:
        raise DslError(f"model `{graph.name}` has no train block: --quantize and --precision "
                       "calibrate and measure on the spec's data",
                       hint="add a train block naming the data, or export without them")
    if len(graph.inputs) != 1:
        raise DslError(f"model `{graph.name}` has {len(graph.inputs)} inputs; --quantize and "
                       "--precision work with one-input models (the spec's data feeds one)")
    labels_only = [s for s in cfg.preprocess if s.name == "one_hot"]
    data = load_dataset(cfg.model_copy(update={"preprocess": labels_only, "augment": []}),
                        tuple(graph.inputs[0].type.shape), Path(spec.path).parent, seed,
                        graph.inputs[0].type.dtype)
    # Features on disk (dslc/data/lazy.py): the calibration rows, and the test split if it
    # fits the memory cap (else a clear error).
    x_cal, x_test = np.asarray(data.x_train[:calibrate]), np.asarray(data.x_test)
    if record is not None:
        x_cal = apply_preprocessing(x_cal, record)
        x_test = x_test if raw else apply_preprocessing(x_test, record)
    if len(x_test) == 0:
        raise DslError("the test split is empty: there is nothing to measure the converted "
                       "model on", cfg.data.span)
    return DeployData(x_cal, x_test, data.y_test, cfg.data.kind)


def score(task: str, y: np.ndarray, labels: np.ndarray) -> Score:
    """Accuracy for a classifier (argmax) or a binary output (> 0.5); else the mean squared
    error."""
    n = len(labels)
    if task == "classifier":
        truth = labels if labels.ndim == 1 else labels.argmax(axis=-1)
        return Score("accuracy", float(np.mean(y.argmax(axis=-1) == truth)), n)
    if task == "binary":
        return Score("accuracy", float(np.mean((y.reshape(n) > 0.5) == (labels.reshape(n) > 0.5))),
                     n)
    return Score("loss", float(np.mean((y.reshape(n, -1) - labels.reshape(n, -1)) ** 2)), n)


class _Reader:
    """onnxruntime's CalibrationDataReader protocol over batches of samples."""

    def __init__(self, name: str, x: np.ndarray, batch: int = 32):
        dtype = x.dtype if x.dtype.kind in "biu" else np.float32  # ids stay ids
        self.batches = iter([{name: np.ascontiguousarray(x[i:i + batch], dtype)}
                             for i in range(0, len(x), batch)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self.batches, None)

    def rewind(self) -> None:  # pragma: no cover - not used by MinMax calibration
        pass


@contextmanager
def _quiet():
    """onnxruntime's quantization tools log advice at WARNING on the root logger and print."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    out, err = sys.stdout, sys.stderr
    sys.stdout = sys.stderr = io.StringIO()
    try:
        yield
    finally:
        sys.stdout, sys.stderr = out, err
        root.setLevel(level)


def final_activations(model: ModelProto) -> list[str]:
    """The softmax/sigmoid nodes that end the graph's outputs: int8 leaves them in float32
    (probabilities in steps of 1/256 would tie classes)."""
    outputs = {o.name for o in model.graph.output}
    return [n.name for n in model.graph.node
            if n.op_type in ("Softmax", "Sigmoid") and set(n.output) & outputs]


def toposort(graph) -> None:
    """Order `graph`'s nodes so each comes after the nodes it reads (in place): onnx's checker
    asks for it, and the fp16 converter appends its casts at the end."""
    produced = {o: i for i, n in enumerate(graph.node) for o in n.output}
    order: list[int] = []
    state: dict[int, int] = {}

    def visit(i: int) -> None:  # iterative would need a stack; graphs here are shallow chains
        if state.get(i) == 2:
            return
        if state.get(i) == 1:
            raise ValueError("the graph has a cycle")
        state[i] = 1
        for name in graph.node[i].input:
            if name in produced:
                visit(produced[name])
        state[i] = 2
        order.append(i)

    for i in range(len(graph.node)):
        visit(i)
    nodes = [graph.node[i] for i in order]
    copies = [type(n)() for n in nodes]
    for c, n in zip(copies, nodes, strict=True):
        c.CopyFrom(n)
    del graph.node[:]
    graph.node.extend(copies)


def quantize_int8(model: ModelProto, calibration: np.ndarray) -> ModelProto:
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    name = model.graph.input[0].name
    with tempfile.TemporaryDirectory(prefix="dslc-quantize-") as tmp, _quiet():
        src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        onnx.save(model, str(src))
        quantize_static(str(src), str(dst), _Reader(name, calibration),
                        quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8, per_channel=True,
                        nodes_to_exclude=final_activations(model),
                        calibrate_method=CalibrationMethod.MinMax)
        out = onnx.load(str(dst))
    return out


def to_fp16(model: ModelProto) -> ModelProto:
    from onnxruntime.transformers.float16 import convert_float_to_float16

    with _quiet():
        out: ModelProto = convert_float_to_float16(model, keep_io_types=True)
    toposort(out.graph)
    return out


def convert(model: ModelProto, kind: str, data: DeployData) -> ModelProto:
    """`model` as `kind` (int8 or fp16), with the fp32 model's metadata."""
    from onnx import helper

    try:
        out = quantize_int8(model, data.calibration) if kind == "int8" else to_fp16(model)
    except DslError:
        raise
    except Exception as exc:  # onnxruntime's tools raise what they raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DslError(f"onnxruntime could not convert the model to {kind}: {first}") from None
    meta = {p.key: p.value for p in model.metadata_props}
    del out.metadata_props[:]
    helper.set_model_props(out, meta)
    out.doc_string = model.doc_string
    return out


@dataclass
class Comparison:
    scores: dict[str, Score]
    sizes: dict[str, int]
    timings: dict[str, Timing]


def compare(models: dict[str, bytes], data: DeployData, task: str) -> Comparison:
    """Score, size and speed of each model, on the same test samples and batches."""
    from .runtime import make_session

    sessions = {k: make_session(b) for k, b in models.items()}
    name = next(iter(sessions.values())).get_inputs()[0].name
    out0 = next(iter(sessions.values())).get_outputs()[0].name
    scores = {}
    for k, s in sessions.items():
        y = np.concatenate([s.run([out0], {name: data.x_test[i:i + 1024]})[0]
                            for i in range(0, len(data.x_test), 1024)])
        scores[k] = score(task, y, data.y_test)
    one = {k: ort_call(s, {name: data.x_test[:1]}) for k, s in sessions.items()}
    big = {k: ort_call(s, {name: resize(data.x_test, BATCH)}) for k, s in sessions.items()}
    timings = measure(one, big, BATCH, repeats=200, big_repeats=30, budget=3.0)
    return Comparison(scores, {k: len(b) for k, b in models.items()}, timings)


def loss_of(base: Score, new: Score) -> float:
    """What `new` lost against `base`: accuracy points, or the loss's increase in percent."""
    if base.metric == "accuracy":
        return 100 * (base.value - new.value)
    return 100 * (new.value - base.value) / base.value if base.value > 0 else \
        (0.0 if new.value <= base.value else float("inf"))


def size(n: int) -> str:
    return f"{n / 1024:,.1f} KiB" if n < 1024 ** 2 else f"{n / 1024 ** 2:,.2f} MiB"


def report(cmp: Comparison, kind: str, label: str) -> list[str]:
    """The comparison as printed lines: the table, the ratios, and what int8 does on this CPU."""
    from .bench import micros

    base = cmp.scores["fp32"]
    what = f"{base.metric} ({base.samples:,} test samples)"
    width = max(len(label), 4) + 2
    lines = [f"{'':<{width}}{'size':>12}  {what:<32}{'p50 batch 1':>13}{f'batch {BATCH}':>20}"]
    for k in ("fp32", label):
        s, t = cmp.scores[k], cmp.timings[k]
        shown = s.show()
        if k != "fp32":
            lost = loss_of(base, s)
            shown += f" ({0.0 - lost:+.2f} points)" if s.metric == "accuracy" else \
                f" ({lost + 0.0:+.2f} %)"
        lines.append(f"{k:<{width}}{size(cmp.sizes[k]):>12}  {shown:<32}{micros(t.p50):>13}"
                     f"{f'{t.throughput:,.0f} samples/s':>20}")
    t32, tn = cmp.timings["fp32"], cmp.timings[label]
    lat, thr = t32.p50 / tn.p50, tn.throughput / t32.throughput
    lines.append(f"{label} against fp32: {cmp.sizes[label] / cmp.sizes['fp32']:.2f}x the size, "
                 f"{lat:.2f}x the speed at batch 1, {thr:.2f}x at batch {BATCH}")
    slower = [f"batch 1 ({lat:.2f}x)"] * (lat < 1) + [f"batch {BATCH} ({thr:.2f}x)"] * (thr < 1)
    if slower:
        # a tiny model (an embedding table, a few weights) can grow by the QDQ scales
        smaller = "it is smaller" if cmp.sizes[label] < cmp.sizes["fp32"] else "it is not smaller either"
        lines.append(f"note: {kind} is not faster than fp32 on this CPU at "
                     f"{' and '.join(slower)}; {smaller}" +
                     (": onnxruntime's CPU provider computes most fp16 ops in float32 behind casts; fp16 is for GPUs"
                      if kind == "fp16" else ""))
    return lines


def quantization_meta(kind: str, calibrate: int, cmp: Comparison, label: str) -> dict[str, str]:
    base, new = cmp.scores["fp32"], cmp.scores[label]
    info: dict[str, Any] = {"format": "QDQ", "activations": "uint8", "weights": "int8 per channel",
                            "calibration": {"method": "minmax", "samples": calibrate}} \
        if kind == "int8" else {"format": "float16, float32 inputs and outputs"}
    info["test"] = {"metric": base.metric, "fp32": base.value, kind: new.value,
                    "samples": base.samples}
    return {META_PRECISION: kind, META_QUANTIZATION: json.dumps(info, sort_keys=True)}
