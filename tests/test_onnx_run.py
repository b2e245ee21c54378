"""`dslc compile --target onnx`, `dslc export` and `dslc run` as a user calls them."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from conftest import ROOT  # noqa: E402

from dslc.backends import get_backend  # noqa: E402
from dslc.cli import main  # noqa: E402
from dslc.compiler import compile_file  # noqa: E402
from dslc.weights import init_weights, save_weights  # noqa: E402

build = get_backend("onnx").build

DIGITS = ROOT / "specs" / "digits_cnn.dl"


def dslc(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def digits_model(tmp_path_factory):
    """digits_cnn exported with seeded weights and a preprocessing record beside them."""
    folder = tmp_path_factory.mktemp("digits")
    graph = compile_file(DIGITS).model()
    weights = init_weights(graph, 5)
    save_weights(folder / "weights.safetensors", weights)
    record = {"steps": [{"name": "scale", "factor": 0.0625}], "labels": []}
    (folder / "metrics.json").write_text(json.dumps({"accuracy": 0.1, "preprocessing": record}))
    assert main(["export", str(DIGITS), "--weights", str(folder / "weights.safetensors"),
                 "-o", str(folder / "digits.onnx")]) == 0
    x = np.random.default_rng(0).integers(0, 17, (6, 8, 8, 1)).astype(np.float32)
    expected = build(graph, weights).predict(x * np.float32(0.0625))
    return folder / "digits.onnx", x, expected


def _rows(out: str) -> list[list[str]]:
    return [line.split() for line in out.strip().splitlines()[1:]]


def test_export_writes_a_checked_model_with_preprocessing(digits_model):
    path, _, _ = digits_model
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    meta = {p.key: p.value for p in model.metadata_props}
    assert json.loads(meta["dslc.preprocessing"])["steps"][0]["factor"] == 0.0625
    assert meta["dslc.pixel_max"] == "16.0"
    assert not list(path.parent.glob(".*.tmp"))  # atomic write left no temp file


@pytest.mark.parametrize("fmt", ["npy", "npz", "csv", "single_npy"])
def test_run_prints_class_and_probability(digits_model, tmp_path, capsys, fmt):
    path, x, expected = digits_model
    if fmt == "npy":
        np.save(tmp_path / "x.npy", x)
    elif fmt == "single_npy":
        x, expected = x[0], expected[:1]
        np.save(tmp_path / "x.npy", x)
    elif fmt == "npz":
        np.savez(tmp_path / "x.npz", image=x)
    else:
        np.savetxt(tmp_path / "x.csv", x.reshape(len(x), -1), delimiter=",",
                   header=",".join(f"p{i}" for i in range(64)), comments="")
    code, out, err = dslc(capsys, "run", path, "--input", tmp_path / f"x.{fmt.split('_')[-1]}")
    assert code == 0, err
    assert "scale(0.0625)" in err
    rows = _rows(out)
    assert [int(r[1]) for r in rows] == list(expected.argmax(axis=1))
    np.testing.assert_allclose([float(r[2]) for r in rows], expected.max(axis=1), atol=1e-6)


def test_run_reads_an_image_in_the_training_range(digits_model, tmp_path, capsys):
    from PIL import Image

    path, x, expected = digits_model
    pixels = (x[0, :, :, 0] * 255 / 16).round().astype(np.uint8)
    Image.fromarray(pixels).convert("RGB").save(tmp_path / "digit.png")  # colour → grey
    code, out, err = dslc(capsys, "run", path, "--input", tmp_path / "digit.png")
    assert code == 0, err
    graph = compile_file(DIGITS).model()
    weights = init_weights(graph, 5)
    grey = np.asarray(Image.open(tmp_path / "digit.png").convert("L"), np.float32)
    want = build(graph, weights).predict((grey * np.float32(16 / 255) * np.float32(0.0625))
                                         .reshape(1, 8, 8, 1))
    (row,) = _rows(out)
    assert int(row[1]) == int(want.argmax())
    assert abs(float(row[2]) - float(want.max())) < 1e-5


@pytest.mark.parametrize("suffix", ["npy", "npz", "csv"])
def test_run_saves_outputs(digits_model, tmp_path, capsys, suffix):
    path, x, expected = digits_model
    np.save(tmp_path / "x.npy", x)
    out_path = tmp_path / f"y.{suffix}"
    code, out, err = dslc(capsys, "run", path, "--input", tmp_path / "x.npy", "--output", out_path)
    assert code == 0, err
    assert "6 rows" in out
    if suffix == "npy":
        got = np.load(out_path)
    elif suffix == "npz":
        got = np.load(out_path)["dense_2"]
    else:
        got = np.loadtxt(out_path, delimiter=",", skiprows=1)
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_run_bench_prints_latency_and_throughput(digits_model, tmp_path, capsys):
    path, x, _ = digits_model
    np.save(tmp_path / "x.npy", x)
    code, out, _ = dslc(capsys, "run", path, "--input", tmp_path / "x.npy", "--bench")
    assert code == 0
    assert "p50" in out and "p99" in out and "samples/s" in out


def test_regression_models_print_raw_values(tmp_path, capsys):
    spec = ROOT / "specs" / "linear_regression.dl"
    assert main(["compile", str(spec), "--target", "onnx", "-o", str(tmp_path / "lr.onnx")]) == 0
    capsys.readouterr()
    np.save(tmp_path / "x.npy", np.array([[0.0], [1.0]], np.float32))
    code, out, _ = dslc(capsys, "run", tmp_path / "lr.onnx", "--input", tmp_path / "x.npy")
    assert code == 0
    graph = compile_file(spec).model()
    w = init_weights(graph, 0)
    values = [float(r[1]) for r in _rows(out)]
    want = [float(w["dense_1.bias"][0]), float(w["dense_1.kernel"][0, 0] + w["dense_1.bias"][0])]
    np.testing.assert_allclose(values, want, atol=1e-6)


@pytest.mark.parametrize("bad,message", [
    (np.zeros((3, 8, 8), np.float32), "has shape [3, 8, 8]"),
    (np.zeros((3, 9, 8, 1), np.float32), "has shape [3, 9, 8, 1]"),
    (np.zeros((2, 3, 8, 8, 1), np.float32), "has shape [2, 3, 8, 8, 1]"),
    (np.array(["a", "b"]), "dtype <U1"),
    (np.zeros((3, 8, 8, 1), np.complex64), "dtype complex64"),
])
def test_wrong_input_prints_the_signature(digits_model, tmp_path, capsys, bad, message):
    path, _, _ = digits_model
    np.save(tmp_path / "bad.npy", bad)
    code, out, err = dslc(capsys, "run", path, "--input", tmp_path / "bad.npy")
    assert code == 2
    assert message in err
    assert "(image: float32[batch, 8, 8, 1]) -> (dense_2: float32[batch, 10])" in err
    assert "Traceback" not in err


def test_corrupt_model_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "broken.onnx").write_bytes(b"\x08\x07garbage-not-a-model\xff\xff")
    np.save(tmp_path / "x.npy", np.zeros((1, 8, 8, 1), np.float32))
    code, _, err = dslc(capsys, "run", tmp_path / "broken.onnx", "--input", tmp_path / "x.npy")
    assert code == 2
    assert "broken.onnx" in err and "Traceback" not in err
    code, _, err = dslc(capsys, "run", tmp_path / "missing.onnx", "--input", tmp_path / "x.npy")
    assert code == 2 and "no such model file" in err


def test_unknown_input_format_and_missing_file(digits_model, tmp_path, capsys):
    path, _, _ = digits_model
    (tmp_path / "x.txt").write_text("1 2 3")
    code, _, err = dslc(capsys, "run", path, "--input", tmp_path / "x.txt")
    assert code == 2 and ".npy" in err
    code, _, err = dslc(capsys, "run", path, "--input", tmp_path / "nope.npy")
    assert code == 2 and "no such input file" in err


@pytest.mark.parametrize("name", ["x.npy", "x.npz"])
def test_corrupt_input_arrays_are_a_clear_error(digits_model, tmp_path, capsys, name):
    path, _, _ = digits_model
    (tmp_path / name).write_bytes(b"not an array")
    code, _, err = dslc(capsys, "run", path, "--input", tmp_path / name)
    assert code == 2 and name in err and "not a ." in err and "pickle" not in err


def test_unwritable_output_is_a_user_error(digits_model, tmp_path, capsys):
    path, x, _ = digits_model
    np.save(tmp_path / "x.npy", x)
    (tmp_path / "file").write_text("in the way")
    code, _, err = dslc(capsys, "run", path, "--input", tmp_path / "x.npy",
                        "--output", tmp_path / "file" / "y.npy")
    assert code == 2 and "error:" in err and "internal" not in err and "Traceback" not in err


def _external(tmp_path, digits_model, location: str):
    """The digits model with its initializers in `w.bin`, then pointed at `location`."""
    from onnx.external_data_helper import convert_model_to_external_data

    path, _, _ = digits_model
    model = onnx.load(str(path))
    # Weights go out; small shape constants stay inline (onnxruntime needs them there).
    convert_model_to_external_data(model, all_tensors_to_one_file=True, location="w.bin",
                                   size_threshold=256)
    folder = tmp_path / "model"
    folder.mkdir()
    onnx.save_model(model, str(folder / "m.onnx"))
    if location != "w.bin":
        shutil.copy(folder / "w.bin", tmp_path / "w.bin")
        model = onnx.load(str(folder / "m.onnx"), load_external_data=False)
        for t in model.graph.initializer:
            for entry in t.external_data:
                if entry.key == "location":
                    entry.value = location.replace("ABS", str(tmp_path))
        (folder / "m.onnx").write_bytes(model.SerializeToString())
    return folder / "m.onnx"


def test_external_data_inside_the_folder_runs(digits_model, tmp_path, capsys):
    path = _external(tmp_path, digits_model, "w.bin")
    np.save(tmp_path / "x.npy", digits_model[1])
    code, out, err = dslc(capsys, "run", path, "--input", tmp_path / "x.npy")
    assert code == 0, err
    assert [int(r[1]) for r in _rows(out)] == list(digits_model[2].argmax(axis=1))


@pytest.mark.parametrize("location", ["../w.bin", "ABS/w.bin", "sub/../../w.bin"])
def test_external_data_leaving_the_folder_is_refused(digits_model, tmp_path, capsys, location):
    path = _external(tmp_path, digits_model, location)
    np.save(tmp_path / "x.npy", digits_model[1])
    code, _, err = dslc(capsys, "run", path, "--input", tmp_path / "x.npy")
    assert code == 2
    assert "outside the model's folder" in err


def test_export_rejects_weights_of_another_model(tmp_path, capsys):
    graph = compile_file(ROOT / "specs" / "cnn_small.dl").model()
    save_weights(tmp_path / "w.safetensors", init_weights(graph, 0))
    code, _, err = dslc(capsys, "export", DIGITS, "--weights", tmp_path / "w.safetensors",
                        "-o", tmp_path / "m.onnx")
    assert code == 2
    assert "does not fit model `digits_cnn`" in err
    assert not (tmp_path / "m.onnx").exists()


def test_cli_subprocess_round(dslc, tmp_path):
    """The installed entry point, end to end, as a user types it."""
    r = dslc("compile", ROOT / "specs" / "cnn_small.dl", "--target", "onnx", "-o",
             tmp_path / "small.onnx")
    assert r.returncode == 0, r.stderr
    np.save(tmp_path / "x.npy", np.zeros((2, 28, 28, 1), np.float32))
    r = dslc("run", tmp_path / "small.onnx", "--input", tmp_path / "x.npy")
    assert r.returncode == 0, r.stderr
    assert len(r.stdout.strip().splitlines()) == 3


def test_export_takes_preprocessing_from_the_weights_metadata(tmp_path, capsys):
    """`dslc train` records fitted preprocessing (here standardize) in the weights file."""
    spec = ROOT / "specs" / "digits_mlp.dl"
    graph = compile_file(spec).model()
    weights = init_weights(graph, 1)
    rng = np.random.default_rng(2)
    mean, std = rng.random(64, np.float32) * 8, rng.random(64, np.float32) + 0.5
    record = {"steps": [{"name": "standardize", "mean": mean.tolist(), "std": std.tolist()}],
              "labels": []}
    save_weights(tmp_path / "w.safetensors", weights, {"preprocessing": json.dumps(record)})
    code, out, err = dslc(capsys, "export", spec, "--weights", tmp_path / "w.safetensors",
                          "-o", tmp_path / "mlp.onnx")
    assert code == 0, err
    assert "w.safetensors metadata" in out
    x = rng.integers(0, 17, (4, 64)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    code, out, err = dslc(capsys, "run", tmp_path / "mlp.onnx", "--input", tmp_path / "x.npy",
                          "--output", tmp_path / "y.npy")
    assert code == 0, err
    want = build(graph, weights).predict((x - mean) / std)
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), want, atol=1e-6)


def test_export_wants_an_onnx_path(tmp_path, capsys):
    graph = compile_file(DIGITS).model()
    save_weights(tmp_path / "w.safetensors", init_weights(graph, 0))
    code, _, err = dslc(capsys, "export", DIGITS, "--weights", tmp_path / "w.safetensors",
                        "-o", tmp_path / "out")
    assert code == 2 and ".onnx" in err


def test_several_inputs_and_outputs(tmp_path, capsys):
    spec = ROOT / "examples" / "two_heads.dl"
    assert main(["compile", str(spec), "--target", "onnx", "-o", str(tmp_path)]) == 0
    model = tmp_path / "two_heads.onnx"
    rng = np.random.default_rng(0)
    feats, ctx = rng.normal(size=(3, 16)).astype(np.float32), rng.normal(size=(3, 4))
    np.savez(tmp_path / "x.npz", features=feats, context=ctx)
    capsys.readouterr()
    code, out, err = dslc(capsys, "run", model, "--input", tmp_path / "x.npz")
    assert code == 0, err
    assert "output score:" in out and "output label:" in out
    assert "class" in out.split("output label:")[1]  # the softmax head prints classes
    code, _, err = dslc(capsys, "run", model, "--input", tmp_path / "x.npz", "--output",
                        tmp_path / "y.npz")
    assert code == 0, err
    with np.load(tmp_path / "y.npz") as y:
        assert y["score"].shape == (3, 1) and y["label"].shape == (3, 3)
    code, _, err = dslc(capsys, "run", model, "--input", tmp_path / "x.npz", "--output",
                        tmp_path / "y.npy")
    assert code == 2 and ".npz" in err
    np.savez(tmp_path / "half.npz", features=feats)
    code, _, err = dslc(capsys, "run", model, "--input", tmp_path / "half.npz")
    assert code == 2 and "`context`" in err



def test_outputs_named_like_savez_arguments_are_saved(tmp_path, capsys):
    spec = tmp_path / "f.dl"
    spec.write_text("model m {\n input x: f32[3]\n file = dense(x, 2)\n"
                    " allow_pickle = dense(x, 4)\n output file, allow_pickle\n}\n")
    assert main(["compile", str(spec), "--target", "onnx", "-o", str(tmp_path / "m.onnx")]) == 0
    np.save(tmp_path / "x.npy", np.ones((2, 3), np.float32))
    code, _, err = dslc(capsys, "run", tmp_path / "m.onnx", "--input", tmp_path / "x.npy",
                        "--output", tmp_path / "y.npz")
    assert code == 0, err
    with np.load(tmp_path / "y.npz") as y:
        assert {k: y[k].shape for k in y} == {"file": (2, 2), "allow_pickle": (2, 4)}

def test_binary_classifier_prints_the_predicted_class(tmp_path, capsys):
    spec = ROOT / "specs" / "logistic_regression.dl"
    assert main(["compile", str(spec), "--target", "onnx", "-o", str(tmp_path / "lr.onnx")]) == 0
    capsys.readouterr()
    x = np.random.default_rng(0).normal(size=(5, 2)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    code, out, _ = dslc(capsys, "run", tmp_path / "lr.onnx", "--input", tmp_path / "x.npy")
    assert code == 0
    graph = compile_file(spec).model()
    p = build(graph, init_weights(graph, 0)).predict(x)[:, 0]
    rows = _rows(out)
    assert [int(r[1]) for r in rows] == [int(v >= 0.5) for v in p]
    np.testing.assert_allclose([float(r[2]) for r in rows], np.maximum(p, 1 - p), atol=1e-6)


def test_external_data_of_a_constant_in_a_subgraph_is_checked_too(tmp_path, capsys):
    from onnx import TensorProto, helper

    const = helper.make_tensor("c", TensorProto.FLOAT, [1], [1.0])
    const.data_location = TensorProto.EXTERNAL
    del const.float_data[:]
    const.external_data.add(key="location", value="../../etc/c.bin")
    inner = helper.make_graph([helper.make_node("Constant", [], ["y"], value=const)], "inner",
                              [], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    cond = helper.make_tensor_value_info("cond", TensorProto.BOOL, [])
    out = helper.make_tensor_value_info("out", TensorProto.FLOAT, [1])
    node = helper.make_node("If", ["cond"], ["out"], then_branch=inner, else_branch=inner)
    model = helper.make_model(helper.make_graph([node], "g", [cond], [out]))
    (tmp_path / "m.onnx").write_bytes(model.SerializeToString())
    np.save(tmp_path / "x.npy", np.array(True))
    code, _, err = dslc(capsys, "run", tmp_path / "m.onnx", "--input", tmp_path / "x.npy")
    assert code == 2
    assert "../../etc/c.bin" in err and "outside the model's folder" in err


def test_a_failing_run_prints_its_error_once(tmp_path, capfd):
    # onnxruntime also logged the message (in colour) to stderr, before dslc's own line
    spec = tmp_path / "pos.dl"
    spec.write_text("model pos {\n    input x: f32[?, 3]\n    position_embedding(5)\n}\n")
    assert main(["compile", str(spec), "--target", "onnx", "-o", str(tmp_path / "pos.onnx")]) == 0
    np.save(tmp_path / "long.npy", np.ones((1, 10, 3), np.float32))  # past max_len
    capfd.readouterr()
    assert main(["run", str(tmp_path / "pos.onnx"), "--input", str(tmp_path / "long.npy")]) == 2
    err = capfd.readouterr().err
    assert err.count("onnxruntime failed") == 1 and "sequential_executor" not in err
