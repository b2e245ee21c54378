"""Edge cases of the ONNX backend: graph inputs and shared values as outputs, Scan inner names,
and `dslc export` / `dslc run` on odd files, paths and metadata (exit 2, never a crash)."""

from __future__ import annotations

import json

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

import test_onnx_run  # noqa: E402
from onnx import TensorProto, helper  # noqa: E402
from test_onnx_run import DIGITS, dslc  # noqa: E402

from dslc.backends import get_backend  # noqa: E402
from dslc.backends.onnx.export import export, to_model  # noqa: E402
from dslc.compiler import compile_file  # noqa: E402
from dslc.weights import init_weights, save_weights  # noqa: E402

build = get_backend("onnx").build

EDGE_SPECS = {
    "input_out": "input x: f32[4]\n d = dropout(x, 0.3)\n output d, x",
    "input_twice": "input x: f32[4]\n a = dense(x, 3)\n output x, a",
    "dropout_of_output": "input x: f32[4]\n a = dense(x, 3)\n d = dropout(a, 0.5)\n output a, d",
    "output_after_alias": "input x: f32[4]\n a = dense(x, 3)\n d = dropout(a, 0.5)\n"
                          " output d, a",
    "two_aliases": "input x: f32[4]\n a = dense(x, 3)\n d1 = dropout(a, 0.1)\n d2 = linear(a)\n"
                   " output d1, d2",
    "image_aliases": "input x: f32[4, 4, 2]\n c = conv2d(x, 3, kernel=3, padding=same)\n"
                     " d = dropout(c, 0.5)\n e = linear(c)\n output c, d, e",
    "image_input_out": "input x: f32[4, 4, 2]\n d = dropout(x, 0.5)\n"
                       " c = conv2d(d, 3, kernel=3, padding=same)\n output d, c, x",
    "scan_pre": "input x: f32[4, 3]\n pre = dense(x, 3)\n simple_rnn(3, activation=gelu)",
    "scan_inner_names": "input x_t: f32[4, 3]\n h_prev = dense(x_t, 3)\n hr = dense(h_prev, 3)\n"
                        " h_next = simple_rnn(hr, 3, activation=softmax, return_sequences=true)\n"
                        " h_out = dense(h_next, 3)",
    "scan_twice": "input x: f32[4, 3]\n zero = dense(x, 3)\n"
                  " h_next = simple_rnn(zero, 3, activation=gelu, return_sequences=true)\n"
                  " h_out = simple_rnn(h_next, 3, activation=gelu)",
}


digits_model = test_onnx_run.digits_model  # the fixture: digits_cnn exported, an input

# Outputs that must hold the same values, by spec.
SAME = {"dropout_of_output": [("a", "d")], "output_after_alias": [("a", "d")],
        "two_aliases": [("d1", "d2")], "image_aliases": [("c", "d"), ("c", "e")],
        "image_input_out": [("d", "x")], "input_out": [("d", "x")]}


def _spec(tmp_path, name, body):
    path = tmp_path / f"{name}.dl"
    path.write_text(f"model m {{\n {body}\n}}\n")
    return compile_file(path)


def _session(model):
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("name", list(EDGE_SPECS))
def test_edge_graphs_are_valid_and_match_the_ir(tmp_path, name):
    spec = _spec(tmp_path, name, EDGE_SPECS[name])
    graph = spec.model()
    weights = init_weights(graph, 0)
    path = export(spec, graph, weights, tmp_path / "m.onnx")  # checks the model
    model = onnx.load(str(path))
    assert len(model.graph.output) == len(graph.outputs)
    rng = np.random.default_rng(0)
    xs = {i.name: rng.standard_normal((2, *i.type.shape)).astype(np.float32)
          for i in graph.inputs}
    ys = dict(zip(graph.outputs, build(graph, weights).predict_all(xs), strict=True))
    for out, y in ys.items():
        assert y.shape == (2, *graph.type_of(out).shape)
        if out in xs:
            np.testing.assert_array_equal(y, xs[out])  # a graph input leaves unchanged
    for a, b in SAME.get(name, []):
        np.testing.assert_array_equal(ys[a], ys[b])
    tasks = json.loads({p.key: p.value for p in model.metadata_props}["dslc.tasks"])
    assert set(tasks) == {o.name for o in model.graph.output}


def test_identity_only_where_values_are_shared(tmp_path):
    graph = _spec(tmp_path, "two", EDGE_SPECS["two_aliases"]).model()
    ops = [n.op_type for n in to_model(graph, init_weights(graph, 0)).graph.node]
    assert ops.count("Identity") == 1
    graph = _spec(tmp_path, "one", "input x: f32[4]\n a = dense(x, 3)\n d = dropout(a, 0.5)\n"
                                   " output d").model()
    ops = [n.op_type for n in to_model(graph, init_weights(graph, 0)).graph.node]
    assert "Identity" not in ops


# -- dslc run ---------------------------------------------------------------------------------

def _tampered(digits_model, tmp_path, **meta):
    path, _, _ = digits_model
    model = onnx.load(str(path))
    props = {p.key: p.value for p in model.metadata_props}
    props.update(meta)
    del model.metadata_props[:]
    helper.set_model_props(model, props)
    out = tmp_path / "tampered.onnx"
    onnx.save(model, str(out))
    return out


@pytest.mark.parametrize("key,value", [
    ("dslc.pixel_max", "abc"),
    ("dslc.input_range", '{"min": 16, "max": 0}'),
    ("dslc.input_range", '{"min": 0, "max": 16, "background": "grey"}'),
    ("dslc.input_range", "[0, 16]"),
    ("dslc.preprocessing", '{"steps":[{"name":"scale"}]}'),
    ("dslc.preprocessing", "[1,2]"),
    ("dslc.preprocessing", '{"steps":[{"name":"standardize","mean":[1,2],"std":[1,2]}]}'),
])
def test_run_names_malformed_metadata(digits_model, tmp_path, capsys, key, value):
    model = _tampered(digits_model, tmp_path, **{key: value})
    np.save(tmp_path / "x.npy", digits_model[1])
    code, _, err = dslc(capsys, "run", model, "--input", tmp_path / "x.npy")
    assert code == 2 and key in err and "Traceback" not in err


def test_run_ignores_malformed_tasks_with_a_note(digits_model, tmp_path, capsys):
    model = _tampered(digits_model, tmp_path, **{"dslc.tasks": "[1]"})
    np.save(tmp_path / "x.npy", digits_model[1])
    code, out, err = dslc(capsys, "run", model, "--input", tmp_path / "x.npy")
    assert code == 0, err
    assert "dslc.tasks" in err and len(out.strip().splitlines()) == 1 + len(digits_model[1])


@pytest.mark.parametrize("extra", [[], ["--bench"], ["--output", "e.csv"]])
def test_run_refuses_empty_input(digits_model, tmp_path, capsys, extra):
    np.save(tmp_path / "empty.npy", np.zeros((0, 8, 8, 1), np.float32))
    extra = [str(tmp_path / e) if e.endswith(".csv") else e for e in extra]
    code, _, err = dslc(capsys, "run", digits_model[0], "--input", tmp_path / "empty.npy", *extra)
    assert code == 2 and "no samples" in err
    assert not (tmp_path / "e.csv").exists()


def test_run_refuses_a_decompression_bomb(digits_model, tmp_path, capsys, monkeypatch):
    from PIL import Image

    Image.fromarray(np.zeros((40, 40), np.uint8)).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    code, _, err = dslc(capsys, "run", digits_model[0], "--input", tmp_path / "big.png")
    assert code == 2 and "too large" in err


def _save_model(path, nodes, inputs, outputs):
    graph = helper.make_graph(nodes, "g", inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    model.ir_version = 9
    onnx.save(model, str(path))
    return path


def test_run_model_without_inputs(tmp_path, capsys):
    value = helper.make_tensor("v", TensorProto.FLOAT, [1, 2], [1.0, 2.0])
    model = _save_model(tmp_path / "noin.onnx", [helper.make_node("Constant", [], ["y"], value=value)],
                        [], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])])
    np.save(tmp_path / "x.npy", np.zeros((1, 2), np.float32))
    code, _, err = dslc(capsys, "run", model, "--input", tmp_path / "x.npy")
    assert code == 2 and "no inputs" in err


def test_run_scalar_output(tmp_path, capsys):
    model = _save_model(
        tmp_path / "scalar.onnx", [helper.make_node("ReduceSum", ["x"], ["y"], keepdims=0)],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [])])
    np.save(tmp_path / "x.npy", np.ones((2, 3), np.float32))
    code, _, err = dslc(capsys, "run", model, "--input", tmp_path / "x.npy",
                        "--output", tmp_path / "o.csv")
    assert code == 2 and "single number" in err and not (tmp_path / "o.csv").exists()
    code, out, err = dslc(capsys, "run", model, "--input", tmp_path / "x.npy",
                          "--output", tmp_path / "o.npy")
    assert code == 0, err
    assert float(np.load(tmp_path / "o.npy")) == 6.0


def test_run_paths(digits_model, tmp_path, capsys):
    np.save(tmp_path / "x.npy", digits_model[1])
    code, _, err = dslc(capsys, "run", tmp_path, "--input", tmp_path / "x.npy")
    assert code == 2 and "is a folder" in err
    (tmp_path / "odir.npy").mkdir()
    code, _, err = dslc(capsys, "run", digits_model[0], "--input", tmp_path / "x.npy",
                        "--output", tmp_path / "odir.npy")
    assert code == 2 and f"{tmp_path / 'odir.npy'} is a folder" in err and ".tmp" not in err


# -- dslc export ------------------------------------------------------------------------------

@pytest.fixture
def weights_dir(tmp_path):
    graph = compile_file(DIGITS).model()
    save_weights(tmp_path / "w.safetensors", init_weights(graph, 1))
    return tmp_path


def test_export_ignores_a_metrics_file_without_a_record(weights_dir, capsys):
    (weights_dir / "metrics.json").write_text("[1, 2]")
    code, _, err = dslc(capsys, "export", DIGITS, "--weights", weights_dir / "w.safetensors",
                        "-o", weights_dir / "m.onnx")
    assert code == 0, err


@pytest.mark.parametrize("record", [
    {"steps": [{"name": "scale"}]},
    [1, 2],
    {"steps": [{"name": "standardize", "mean": [1, 2], "std": [1]}]},
    {"steps": [{"name": "standardize", "mean": [1.0, 2.0], "std": [1.0, 1.0]}]},  # not 8x8x1
    {"steps": [{"name": "rotate"}]},
])
def test_export_validates_the_preprocessing_record(weights_dir, capsys, record):
    (weights_dir / "preprocessing.json").write_text(json.dumps(record))
    code, _, err = dslc(capsys, "export", DIGITS, "--weights", weights_dir / "w.safetensors",
                        "-o", weights_dir / "m.onnx")
    assert code == 2 and "preprocessing.json" in err
    assert not (weights_dir / "m.onnx").exists()


def test_export_refuses_to_overwrite_its_inputs(weights_dir, capsys):
    weights = weights_dir / "w.onnx"
    (weights_dir / "w.safetensors").rename(weights)
    before = weights.read_bytes()
    for out in (weights, weights_dir / ".." / weights_dir.name / "w.onnx"):
        code, _, err = dslc(capsys, "export", DIGITS, "--weights", weights, "-o", out)
        assert code == 2 and "weights" in err
    assert weights.read_bytes() == before


def test_export_output_paths(weights_dir, capsys):
    (weights_dir / "d.onnx").mkdir()
    code, _, err = dslc(capsys, "export", DIGITS, "--weights", weights_dir / "w.safetensors",
                        "-o", weights_dir / "d.onnx")
    assert code == 2 and f"{weights_dir / 'd.onnx'} is a folder" in err and ".tmp" not in err
    (weights_dir / "afile").write_text("x")
    code, _, err = dslc(capsys, "export", DIGITS, "--weights", weights_dir / "w.safetensors",
                        "-o", weights_dir / "afile" / "m.onnx")
    assert code == 2 and "not a folder" in err
