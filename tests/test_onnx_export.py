"""The exported ModelProto: valid, shapes as `dslc check` prints them, clean graphs, metadata,
a dynamic batch, and no more nodes than `torch.onnx.export` of the same network."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from conftest import ROOT, SPECS  # noqa: E402

from dslc import __version__  # noqa: E402
from dslc.backends import get_backend  # noqa: E402
from dslc.backends.onnx.export import export, to_model  # noqa: E402
from dslc.backends.onnx.lower import BATCH, LOWERINGS, NCHW, OPSET, lower_graph  # noqa: E402
from dslc.backends.onnx.metadata import task_of  # noqa: E402
from dslc.compiler import compile_file, compile_text  # noqa: E402
from dslc.diagnostics import DslError  # noqa: E402
from dslc.weights import init_weights  # noqa: E402

EXAMPLES = sorted((ROOT / "examples").glob("*.dl"))
ALL_SPECS = SPECS + EXAMPLES


def _load_bench():
    spec = importlib.util.spec_from_file_location("bench_onnx", ROOT / "bench" / "bench_onnx.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build(graph, weights):
    return get_backend("onnx").build(graph, weights)


def _dims(value_info) -> list:
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


@pytest.mark.parametrize("path", ALL_SPECS, ids=[p.stem for p in ALL_SPECS])
def test_model_is_valid_and_inferred_shapes_match_check(path):
    graph = compile_file(path).model()
    weights = init_weights(graph, 0)
    model = to_model(graph, weights)
    onnx.checker.check_model(model, full_check=True)
    assert model.opset_import[0].version == OPSET >= 17
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    infos = {v.name: v for v in (*inferred.graph.value_info, *inferred.graph.output,
                                 *inferred.graph.input)}
    layouts = lower_graph(graph, weights).layouts
    checked = 0
    for node in graph.nodes:
        if node.name not in infos:  # dropout and friends emit nothing
            assert LOWERINGS.rule(node).__name__ in ("identity", "flatten")
            continue
        want = [BATCH, *node.type.shape]
        if layouts.get(node.name) == NCHW:
            want = [want[0], want[3], want[1], want[2]]
        assert _dims(infos[node.name]) == want, node.name
        checked += 1
    assert checked >= len(graph.nodes) // 2
    for inp in graph.inputs:
        assert _dims(infos[inp.name])[0] == BATCH
        assert _dims(infos[inp.name])[1:] == [d for d in inp.type.shape]
    assert [o.name for o in model.graph.output] == graph.outputs
    assert [i.name for i in model.graph.input] == [i.name for i in graph.inputs]


@pytest.mark.parametrize("path", ALL_SPECS, ids=[p.stem for p in ALL_SPECS])
def test_graph_is_clean(path):
    graph = compile_file(path).model()
    model = to_model(graph, init_weights(graph, 0))
    ops = [n.op_type for n in model.graph.node]
    assert "Identity" not in ops and "Dropout" not in ops
    layers = {n.name for n in graph.nodes} | {i.name for i in graph.inputs}
    assert all(n.name.split("/")[0] in layers for n in model.graph.node)
    # at most one layout change into NCHW per input, one back per flatten/reshape/output
    to_nchw = [n for n in model.graph.node if n.name.endswith("/to_nchw")]
    assert len(to_nchw) <= len(graph.inputs)
    to_nhwc = [n for n in model.graph.node if n.name.endswith("/to_nhwc")]
    assert len(to_nhwc) <= sum(n.op in ("flatten", "reshape") for n in graph.nodes) + 1
    # no batch size baked into a Reshape
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    for n in model.graph.node:
        if n.op_type == "Reshape":
            assert inits[n.input[1]][0] == 0


def test_transposes_of_a_colour_cnn():
    spec = compile_text("model rgb {\n input image: f32[10, 10, 3]\n conv2d(4, kernel=3)\n"
                        " maxpool2d(2)\n flatten\n dense(5)\n}\n")
    graph = spec.model()
    model = to_model(graph, init_weights(graph, 0))
    ops = [n.op_type for n in model.graph.node]
    # one Transpose into NCHW; the flatten feeds only dense, whose rows are permuted instead
    assert ops == ["Transpose", "Conv", "MaxPool", "Flatten", "Gemm"]


def test_metadata_and_dynamic_batch(tmp_path):
    spec = compile_file(ROOT / "specs" / "digits_cnn.dl")
    graph = spec.model()
    weights = init_weights(graph, 0)
    record = {"steps": [{"name": "scale", "factor": 0.0625}], "labels": []}
    path = export(spec, graph, weights, tmp_path / "m.onnx", preprocessing=record)
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["dslc.model"] == "digits_cnn"
    assert meta["dslc.spec"] == "digits_cnn.dl"
    assert meta["dslc.version"] == __version__
    assert meta["dslc.spec_hash"] == spec.digest
    assert json.loads(meta["dslc.tasks"]) == {"dense_2": "classifier"}
    assert json.loads(meta["dslc.preprocessing"]) == record
    assert meta["dslc.preprocessing_in_graph"] == "true"  # the file takes raw 0..16 pixels
    assert _dims(model.graph.input[0]) == [BATCH, 8, 8, 1]
    assert _dims(model.graph.output[0]) == [BATCH, 10]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rt = build(graph, weights)
    for n in (1, 7, 33):
        x = np.random.default_rng(n).random((n, 8, 8, 1), dtype=np.float32)
        y = session.run(None, {"image": x})[0]
        assert y.shape == (n, 10)
        np.testing.assert_allclose(y, rt.predict(x * np.float32(0.0625)), atol=1e-6)


def test_dynamic_time_axis():
    spec = compile_text("model seq {\n input x: f32[?, 3]\n simple_rnn(4, return_sequences=true)"
                        "\n simple_rnn(2)\n}\n")
    graph = spec.model()
    rt = build(graph, init_weights(graph, 0))
    for t in (1, 4, 9):
        assert rt.predict(np.ones((2, t, 3), np.float32)).shape == (2, 2)


def test_unsupported_op_is_a_clear_error(monkeypatch):
    monkeypatch.delitem(LOWERINGS.rules, "dense")
    graph = compile_file(ROOT / "specs" / "linear_regression.dl").model()
    with pytest.raises(DslError, match="op `dense` is not supported by backend onnx"):
        to_model(graph, init_weights(graph, 0))


def test_missing_weights_are_a_clear_error():
    graph = compile_file(ROOT / "specs" / "linear_regression.dl").model()
    with pytest.raises(DslError, match="dense_1.kernel"):
        to_model(graph, {})


def test_no_more_nodes_than_torch_onnx_export():
    pytest.importorskip("torch")
    bench = _load_bench()
    weights = bench.cnn_mnist_weights()
    ours = onnx.load_from_string(bench.dslc_bytes(weights))
    theirs = onnx.load_from_string(bench.torch_export_bytes(weights))
    assert len(ours.graph.node) <= len(theirs.graph.node)
    x = np.random.default_rng(0).random((5, 28, 28, 1), dtype=np.float32)
    outs = [ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
            .run(None, {m.graph.input[0].name: x})[0] for m in (ours, theirs)]
    np.testing.assert_allclose(outs[0], outs[1], atol=1e-6)


@pytest.mark.parametrize("body,task", [
    ("dense(3, activation=softmax)\n dropout(0.5)", "classifier"),  # the dropout defect
    ("dense(3, activation=softmax)", "classifier"),
    ("dense(3)\n softmax\n linear\n dropout(0.2)", "classifier"),
    ("dense(1, activation=sigmoid)\n dropout(0.5)", "binary"),
    ("dense(3, activation=relu)\n dropout(0.5)", "regression"),
    ("dense(3, activation=softmax)\n dense(3)", "regression"),
])
def test_task_metadata_sees_through_layers_that_pass_values(tmp_path, body, task):
    spec = compile_text(f"model m {{\n input x: f32[4]\n {body}\n}}\n")
    graph = spec.model()
    assert task_of(graph, graph.outputs[0]) == task
    path = export(spec, graph, init_weights(graph, 0), tmp_path / "m.onnx")
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert json.loads(meta["dslc.tasks"]) == {graph.outputs[0]: task}
