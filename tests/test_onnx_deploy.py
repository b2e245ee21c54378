"""Deployment: the exported file alone (preprocessing in the graph), `dslc run` never applying
it twice, `export --quantize int8` / `--precision fp16` measured and guarded, `run --bench`
against torch eager, and the user story of a trained digits CNN run on a PNG in plain
onnxruntime. No test here reads a clock: speed is printed, never asserted."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from conftest import ROOT, SPECS, run_dslc  # noqa: E402

from dslc.backends import get_backend  # noqa: E402
from dslc.backends.onnx import quantize  # noqa: E402
from dslc.backends.onnx.export import to_model  # noqa: E402
from dslc.backends.onnx.preprocess import embed_preprocessing  # noqa: E402
from dslc.cli import main  # noqa: E402
from dslc.compiler import compile_file, compile_text  # noqa: E402
from dslc.data.loaders import load_dataset  # noqa: E402
from dslc.data.preprocess import apply_preprocessing  # noqa: E402
from dslc.weights import init_weights, save_weights  # noqa: E402

build = get_backend("onnx").build
DIGITS = ROOT / "specs" / "digits_cnn.dl"
MLP = ROOT / "specs" / "digits_mlp.dl"

# A recurrent model: its Scan body must read the preprocessed input too.
RNN_STANDARDIZED = """model rnn_std {
    input seq: f32[10, 1]
    simple_rnn(8)
    dense(1)
}
train rnn_std {
    data       = sequences(n=64, steps=10, noise=0.05)
    preprocess = [standardize]
    loss       = mse
    optimizer  = adam(lr=1e-2)
    epochs     = 1
    seed       = 0
}
"""


def dslc(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def _meta(path) -> dict[str, str]:
    return {p.key: p.value for p in onnx.load(str(path)).metadata_props}


def _record(spec, graph) -> dict:
    """The record `dslc train` would fit: on the spec's data when a step needs it."""
    cfg = spec.trains[graph.name]
    if all(s.name in ("scale", "one_hot") for s in cfg.preprocess):
        from dslc.backends.onnx.metadata import static_preprocessing

        return static_preprocessing(spec, graph)
    data = load_dataset(cfg, tuple(graph.inputs[0].type.shape), spec.path.parent, cfg.seed)
    return data.preprocessing


def _raw_samples(graph, n: int = 5) -> np.ndarray:
    """Raw-looking values: 0..255 pixels for images, wider numbers for the rest."""
    shape = tuple(graph.inputs[0].type.shape)
    return (np.random.default_rng(3).random((n, *shape), np.float32) * 255).round()


def _raw_digits(spec_path) -> np.ndarray:
    """Test samples of the built-in digits as the source gives them (0..16)."""
    spec = compile_file(spec_path)
    graph = spec.model()
    cfg = spec.trains[graph.name].model_copy(update={"preprocess": []})
    return load_dataset(cfg, tuple(graph.inputs[0].type.shape), spec.path.parent, 0).x_test


SPECS_WITH_PREPROCESSING = [p for p in SPECS if "preprocess" in p.read_text()
                            and any(s in p.read_text() for s in ("scale(", "standardize"))]


@pytest.fixture(params=[*SPECS_WITH_PREPROCESSING, "rnn_std"],
                ids=[*(p.stem for p in SPECS_WITH_PREPROCESSING), "rnn_std"])
def exported(request, tmp_path):
    """A spec with preprocessing, exported with seeded weights and its fitted record, both
    with the preprocessing in the graph and without it."""
    if request.param == "rnn_std":
        (tmp_path / "rnn_std.dl").write_text(RNN_STANDARDIZED)
        spec_path = tmp_path / "rnn_std.dl"
    else:
        spec_path = request.param
    spec = compile_file(spec_path)
    graph = spec.model()
    weights = init_weights(graph, 1)
    record = _record(spec, graph)
    save_weights(tmp_path / "w.safetensors", weights, {"preprocessing": json.dumps(record)})
    for name, extra in (("in.onnx", []), ("out.onnx", ["--no-preprocessing"])):
        assert main(["export", str(spec_path), "--weights", str(tmp_path / "w.safetensors"),
                     "-o", str(tmp_path / name), *extra]) == 0
    return spec, graph, weights, record, tmp_path


def test_the_file_alone_reproduces_dslc_run(exported, capsys):
    """Done-when of issue 12: plain onnxruntime on raw input gives `dslc run`'s numbers."""
    spec, graph, weights, record, folder = exported
    capsys.readouterr()
    x = _raw_samples(graph)
    np.save(folder / "x.npy", x)
    plain = ort.InferenceSession(str(folder / "in.onnx"), providers=["CPUExecutionProvider"])
    alone = plain.run(None, {graph.inputs[0].name: x})[0]
    for model, says in (("in.onnx", "applies its preprocessing itself"),
                        ("out.onnx", "applied the model's preprocessing")):
        code, _, err = dslc(capsys, "run", folder / model, "--input", folder / "x.npy",
                            "--output", folder / f"y_{model}.npy")
        assert code == 0, err
        assert says in err
        np.testing.assert_allclose(np.load(folder / f"y_{model}.npy"), alone, atol=1e-5, rtol=0)
    want = build(graph, weights).predict(apply_preprocessing(x, record))
    np.testing.assert_allclose(alone, want, atol=1e-5, rtol=0)
    assert _meta(folder / "in.onnx")["dslc.preprocessing_in_graph"] == "true"
    assert _meta(folder / "out.onnx")["dslc.preprocessing_in_graph"] == "false"


def test_run_never_applies_the_preprocessing_twice(tmp_path, capsys):
    spec = compile_file(DIGITS)
    graph = spec.model()
    weights = init_weights(graph, 2)
    save_weights(tmp_path / "w.safetensors", weights)
    assert main(["export", str(DIGITS), "--weights", str(tmp_path / "w.safetensors"),
                 "-o", str(tmp_path / "m.onnx")]) == 0
    ops = [n.op_type for n in onnx.load(str(tmp_path / "m.onnx")).graph.node]
    assert ops[0] == "Mul" and ops.count("Mul") == 1  # scale(1/16), once, at the input
    x = np.random.default_rng(0).integers(0, 17, (4, 8, 8, 1)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    capsys.readouterr()
    code, _, err = dslc(capsys, "run", tmp_path / "m.onnx", "--input", tmp_path / "x.npy",
                        "--output", tmp_path / "y.npy")
    assert code == 0, err
    assert "applied the model's preprocessing" not in err
    once = build(graph, weights).predict(x * np.float32(1 / 16))
    twice = build(graph, weights).predict(x * np.float32(1 / 256))
    got = np.load(tmp_path / "y.npy")
    np.testing.assert_allclose(got, once, atol=1e-6)
    assert np.abs(got - twice).max() > 1e-3  # the two readings are told apart


def test_no_preprocessing_leaves_the_graph_as_it_was(tmp_path, capsys):
    spec = compile_file(DIGITS)
    graph = spec.model()
    save_weights(tmp_path / "w.safetensors", init_weights(graph, 0))
    code, out, _ = dslc(capsys, "export", DIGITS, "--weights", tmp_path / "w.safetensors",
                        "-o", tmp_path / "m.onnx", "--no-preprocessing")
    assert code == 0 and "in the metadata only" in out
    bare = to_model(graph, init_weights(graph, 0))
    got = onnx.load(str(tmp_path / "m.onnx"))
    assert [n.op_type for n in got.graph.node] == [n.op_type for n in bare.graph.node]


def test_a_bad_in_graph_flag_is_a_clear_error(tmp_path, capsys):
    spec = compile_file(DIGITS)
    graph = spec.model()
    save_weights(tmp_path / "w.safetensors", init_weights(graph, 0))
    assert main(["export", str(DIGITS), "--weights", str(tmp_path / "w.safetensors"),
                 "-o", str(tmp_path / "m.onnx")]) == 0
    model = onnx.load(str(tmp_path / "m.onnx"))
    for p in model.metadata_props:
        if p.key == "dslc.preprocessing_in_graph":
            p.value = "maybe"
    onnx.save(model, str(tmp_path / "m.onnx"))
    np.save(tmp_path / "x.npy", np.zeros((1, 8, 8, 1), np.float32))
    code, _, err = dslc(capsys, "run", tmp_path / "m.onnx", "--input", tmp_path / "x.npy")
    assert code == 2
    assert "dslc.preprocessing_in_graph" in err and "'maybe'" in err


def test_embedding_reaches_every_input_and_keeps_their_names():
    spec = compile_text((ROOT / "examples" / "two_heads.dl").read_text())
    graph = spec.model()
    weights = init_weights(graph, 0)
    model = to_model(graph, weights)
    record = {"steps": [{"name": "scale", "factor": 0.5}], "labels": []}
    added = embed_preprocessing(model, record)
    assert added == ["features/preprocess/scale", "context/preprocess/scale"]
    onnx.checker.check_model(model, full_check=True)
    assert [i.name for i in model.graph.input] == ["features", "context"]
    rng = np.random.default_rng(0)
    feed = {"features": rng.random((3, 16), np.float32), "context": rng.random((3, 4), np.float32)}
    got = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]) \
        .run(None, feed)
    want = build(graph, weights).predict_all({k: v * np.float32(0.5) for k, v in feed.items()})
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, atol=1e-6)


# -- int8 and fp16 -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def seeded(tmp_path_factory):
    """digits_cnn and digits_mlp with seeded weights (quantization works on any weights; the
    trained case is the user story below)."""
    folder = tmp_path_factory.mktemp("seeded")
    out = {}
    for spec_path in (DIGITS, MLP):
        spec = compile_file(spec_path)
        graph = spec.model()
        weights = init_weights(graph, 4)
        record = _record(spec, graph)
        path = folder / f"{graph.name}.safetensors"
        save_weights(path, weights, {"preprocessing": json.dumps(record)})
        out[graph.name] = (spec_path, path)
    return folder, out


@pytest.mark.parametrize("name", ["digits_cnn", "digits_mlp"])
def test_quantize_int8_prints_the_comparison_and_writes_a_smaller_file(seeded, name, capsys):
    folder, specs = seeded
    spec_path, weights = specs[name]
    fp32, int8 = folder / f"{name}_fp32.onnx", folder / f"{name}_int8.onnx"
    assert dslc(capsys, "export", spec_path, "--weights", weights, "-o", fp32)[0] == 0
    code, out, err = dslc(capsys, "export", spec_path, "--weights", weights, "-o", int8,
                          "--quantize", "int8", "--calibrate", "64", "--max-loss", "100")
    assert code == 0, err
    assert "calibrated on 64 training samples" in out
    assert "fp32" in out and "int8 (QDQ)" in out
    assert "accuracy (359 test samples)" in out and "points)" in out
    assert "samples/s" in out and "the size" in out
    assert int8.stat().st_size < fp32.stat().st_size
    meta = _meta(int8)
    assert meta["dslc.precision"] == "int8"
    info = json.loads(meta["dslc.quantization"])
    assert info["calibration"]["samples"] == 64 and info["test"]["metric"] == "accuracy"
    assert meta["dslc.preprocessing_in_graph"] == "true"
    ops = [n.op_type for n in onnx.load(str(int8)).graph.node]
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    assert ops[-1] == "Softmax"  # probabilities stay float32
    # the int8 file runs under `dslc run` on raw digits and mostly agrees with fp32
    np.save(folder / "x.npy", _raw_digits(spec_path)[:32])
    ys = []
    for model in (fp32, int8):
        code, _, err = dslc(capsys, "run", model, "--input", folder / "x.npy", "--output",
                            folder / "y.npy", "--force")
        assert code == 0, err
        ys.append(np.load(folder / "y.npy"))
    assert np.abs(ys[0] - ys[1]).max() < 0.1


def test_int8_without_the_preprocessing_in_the_graph(seeded, capsys):
    folder, specs = seeded
    spec_path, weights = specs["digits_mlp"]
    out = folder / "bare_int8.onnx"
    code, _, err = dslc(capsys, "export", spec_path, "--weights", weights, "-o", out,
                        "--quantize", "int8", "--no-preprocessing", "--max-loss", "100")
    assert code == 0, err
    model = onnx.load(str(out))
    assert not any("/preprocess/" in n.name for n in model.graph.node)
    assert _meta(out)["dslc.preprocessing_in_graph"] == "false"
    np.save(folder / "x.npy", _raw_digits(spec_path)[:8])
    code, _, err = dslc(capsys, "run", out, "--input", folder / "x.npy")
    assert code == 0 and "applied the model's preprocessing" in err


def test_fp16_is_half_the_size_and_close(seeded, capsys):
    folder, specs = seeded
    spec_path, weights = specs["digits_cnn"]
    fp32, fp16 = folder / "h_fp32.onnx", folder / "h_fp16.onnx"
    assert dslc(capsys, "export", spec_path, "--weights", weights, "-o", fp32)[0] == 0
    code, out, err = dslc(capsys, "export", spec_path, "--weights", weights, "-o", fp16,
                          "--precision", "fp16")
    assert code == 0, err
    assert "fp16 against fp32" in out
    assert fp16.stat().st_size < 0.6 * fp32.stat().st_size
    assert _meta(fp16)["dslc.precision"] == "fp16"
    x = np.random.default_rng(2).integers(0, 17, (8, 8, 8, 1)).astype(np.float32)
    y32, y16 = (ort.InferenceSession(str(p), providers=["CPUExecutionProvider"])
                .run(None, {"image": x})[0] for p in (fp32, fp16))
    assert y16.dtype == np.float32  # float32 in and out
    np.testing.assert_allclose(y16, y32, atol=1e-2)


def test_a_loss_past_max_loss_is_refused_unless_forced(seeded, capsys, monkeypatch):
    folder, specs = seeded
    spec_path, weights = specs["digits_mlp"]
    out_path = folder / "guarded.onnx"
    monkeypatch.setattr(quantize, "loss_of", lambda base, new: 1.25)
    code, out, err = dslc(capsys, "export", spec_path, "--weights", weights, "-o", out_path,
                          "--quantize", "int8")
    assert code == 2
    assert "int8 loses 1.25 accuracy points" in err and "--max-loss 0.5" in err
    assert "not writing" in err and "--force" in err
    assert "int8 (QDQ)" in out  # the figures are printed before the refusal
    assert not out_path.exists()
    code, out, err = dslc(capsys, "export", spec_path, "--weights", weights, "-o", out_path,
                          "--quantize", "int8", "--force")
    assert code == 0, err
    assert "writing it anyway (--force)" in err and out_path.exists()
    code, _, err = dslc(capsys, "export", spec_path, "--weights", weights, "-o", out_path,
                        "--quantize", "int8", "--force", "--max-loss", "2")
    assert code == 0 and "writing it anyway" not in err


@pytest.mark.parametrize("flags,message", [
    (["--quantize", "int8", "--precision", "fp16"], "give one of them"),
    (["--quantize", "int8", "--calibrate", "0"], "--calibrate needs at least one sample"),
    (["--quantize", "int8", "--max-loss", "nan"], "--max-loss nan"),
    (["--quantize", "int8", "--max-loss", "-1"], "--max-loss -1"),
])
def test_bad_conversion_flags(seeded, tmp_path, capsys, flags, message):
    _, specs = seeded
    spec_path, weights = specs["digits_mlp"]
    code, _, err = dslc(capsys, "export", spec_path, "--weights", weights, "-o",
                        tmp_path / "m.onnx", *flags)
    assert code == 2 and message in err
    assert not (tmp_path / "m.onnx").exists()


def test_quantize_needs_the_specs_data(tmp_path, capsys):
    (tmp_path / "m.dl").write_text("model m {\n input x: f32[4]\n dense(2, activation=softmax)\n}\n")
    graph = compile_file(tmp_path / "m.dl").model()
    save_weights(tmp_path / "w.safetensors", init_weights(graph, 0))
    code, _, err = dslc(capsys, "export", tmp_path / "m.dl", "--weights", tmp_path / "w.safetensors",
                        "-o", tmp_path / "m.onnx", "--quantize", "int8")
    assert code == 2 and "has no train block" in err


def test_regression_reports_the_loss(tmp_path, capsys):
    spec_path = ROOT / "specs" / "linear_regression.dl"
    graph = compile_file(spec_path).model()
    save_weights(tmp_path / "w.safetensors", {"dense_1.kernel": np.array([[3.0]], np.float32),
                                              "dense_1.bias": np.array([1.0], np.float32)})
    code, out, err = dslc(capsys, "export", spec_path, "--weights", tmp_path / "w.safetensors",
                          "-o", tmp_path / "m.onnx", "--quantize", "int8", "--max-loss", "1000")
    assert code == 0, err
    assert "loss (200 test samples)" in out and " %)" in out
    assert graph.name == "linear_regression"


def test_score_per_task():
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]], np.float32)
    assert quantize.score("classifier", probs, np.array([0, 1, 1])).value == pytest.approx(2 / 3)
    one_hot = np.eye(2, dtype=np.float32)[[0, 1, 1]]
    assert quantize.score("classifier", probs, one_hot).value == pytest.approx(2 / 3)
    assert quantize.score("binary", probs[:, :1], np.array([1, 0, 0])).value == pytest.approx(2 / 3)
    s = quantize.score("regression", np.array([[1.0], [2.0]]), np.array([1.0, 4.0]))
    assert (s.metric, s.value) == ("loss", 2.0)
    base = quantize.Score("accuracy", 0.95, 100)
    assert quantize.loss_of(base, quantize.Score("accuracy", 0.94, 100)) == pytest.approx(1.0)
    assert quantize.loss_of(quantize.Score("loss", 2.0, 9), quantize.Score("loss", 2.5, 9)) == 25.0


# -- run --bench ------------------------------------------------------------------------------

def test_run_bench_against_torch_eager(seeded, tmp_path, capsys):
    pytest.importorskip("torch")
    folder, specs = seeded
    spec_path, weights = specs["digits_cnn"]
    model = tmp_path / "m.onnx"
    assert dslc(capsys, "export", spec_path, "--weights", weights, "-o", model)[0] == 0
    np.save(tmp_path / "x.npy", np.random.default_rng(0).integers(0, 17, (3, 8, 8, 1))
            .astype(np.float32))
    code, out, err = dslc(capsys, "run", model, "--input", tmp_path / "x.npy", "--bench",
                          "--bench-batch", "16", "--spec", spec_path, "--weights", weights)
    assert code == 0, err
    assert "onnxruntime" in out and "torch eager" in out
    assert "p50 batch 1" in out and "batch 16" in out and "samples/s" in out
    assert "onnxruntime / torch eager:" in out and "x at batch 16" in out
    agree = float(out.split("agree to ")[1].split()[0])
    assert agree < 1e-5  # same weights, same batch: the torch side is the same model


def test_run_bench_flags(seeded, tmp_path, capsys):
    _, specs = seeded
    spec_path, weights = specs["digits_cnn"]
    model = tmp_path / "m.onnx"
    assert dslc(capsys, "export", spec_path, "--weights", weights, "-o", model)[0] == 0
    np.save(tmp_path / "x.npy", np.zeros((1, 8, 8, 1), np.float32))
    code, _, err = dslc(capsys, "run", model, "--input", tmp_path / "x.npy", "--spec", spec_path)
    assert code == 2 and "--bench" in err
    code, _, err = dslc(capsys, "run", model, "--input", tmp_path / "x.npy", "--bench",
                        "--spec", spec_path)
    assert code == 2 and "both --spec and --weights" in err
    code, out, _ = dslc(capsys, "run", model, "--input", tmp_path / "x.npy", "--bench",
                        "--bench-batch", "4")
    assert code == 0 and "pass --spec and --weights" in out


# -- the user story ---------------------------------------------------------------------------

PLAIN = r"""
# Plain onnxruntime, numpy and Pillow: no dslc code. The model takes the digits source's raw
# values (0..16, its metadata says), so the PNG's 0..255 pixels are mapped onto that range.
import json, sys
import numpy as np
import onnxruntime as ort
from PIL import Image

session = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
top = json.loads(session.get_modelmeta().custom_metadata_map["dslc.input_range"])["max"]
pixels = np.asarray(Image.open(sys.argv[2]).convert("L"), np.float32)
x = (pixels * np.float32(top / 255)).reshape(1, 8, 8, 1)
probs = session.run(None, {session.get_inputs()[0].name: x})[0][0]
print(int(probs.argmax()), float(probs.max()))
"""


@pytest.mark.slow
def test_user_story_trained_cnn_int8_and_fp32_on_a_png(tmp_path):
    pytest.importorskip("torch")
    r = run_dslc("train", DIGITS, "--epochs", "8", "--out", tmp_path / "run")
    assert r.returncode == 0, r.stderr
    weights = tmp_path / "run" / "weights.safetensors"
    fp32, int8 = tmp_path / "digits_fp32.onnx", tmp_path / "digits_int8.onnx"
    r = run_dslc("export", DIGITS, "--weights", weights, "-o", fp32)
    assert r.returncode == 0, r.stderr
    r = run_dslc("export", DIGITS, "--weights", weights, "-o", int8, "--quantize", "int8")
    assert r.returncode == 0, r.stderr
    assert "int8 (QDQ)" in r.stdout and "points)" in r.stdout  # the delta, printed
    png = ROOT / "examples" / "digit.png"
    (tmp_path / "plain.py").write_text(PLAIN)
    answers = []
    for model in (fp32, int8):
        r = subprocess.run([sys.executable, str(tmp_path / "plain.py"), str(model), str(png)],
                           capture_output=True, text=True, cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        cls, prob = r.stdout.split()
        answers.append((int(cls), float(prob)))
    assert answers[0][0] == answers[1][0]  # same class from int8 and fp32
    assert int8.stat().st_size < fp32.stat().st_size
    # and plain onnxruntime agrees with `dslc run` on the same PNG
    r = run_dslc("run", fp32, "--input", png)
    assert r.returncode == 0, r.stderr
    row = r.stdout.strip().splitlines()[-1].split()
    assert int(row[1]) == answers[0][0]
    assert abs(float(row[2]) - answers[0][1]) < 1e-5


def test_dslc_import_reads_a_file_with_its_preprocessing_in_the_graph(tmp_path, capsys):
    """`dslc import` takes the layers: the embedded steps go, and the spec's header says so."""
    spec = compile_file(MLP)
    graph = spec.model()
    weights = init_weights(graph, 3)
    record = _record(spec, graph)
    save_weights(tmp_path / "w.safetensors", weights, {"preprocessing": json.dumps(record)})
    assert main(["export", str(MLP), "--weights", str(tmp_path / "w.safetensors"),
                 "-o", str(tmp_path / "m.onnx")]) == 0
    code, _, err = dslc(capsys, "import", tmp_path / "m.onnx", "-o", tmp_path / "back.dl")
    assert code == 0, err
    text = (tmp_path / "back.dl").read_text()
    assert "applied standardize(64 means) to its input itself" in text
    back = compile_file(tmp_path / "back.dl").model()
    from dslc.weights import load_weights

    got = build(back, load_weights(tmp_path / "back.safetensors", back))
    x = _raw_digits(MLP)[:5]
    np.testing.assert_allclose(got.predict(apply_preprocessing(x, record)),
                               build(graph, weights).predict(apply_preprocessing(x, record)),
                               atol=1e-5)


def test_quantize_an_embedding_model_of_a_training_run(tmp_path, capsys):
    # a run's (empty) preprocessing record made the calibration ids floats: onnxruntime refused
    spec = tmp_path / "ids.dl"
    spec.write_text("model ids {\n    input tokens: i64[16]\n    embedding(8, 4)\n    flatten\n"
                    "    dense(2, activation=softmax)\n}\n\ntrain ids {\n"
                    "    data = order(n=200)\n    loss = sparse_categorical_crossentropy\n"
                    "    optimizer = adam\n}\n")
    graph = compile_file(spec).model()
    record = json.dumps({"steps": [], "labels": []})
    save_weights(tmp_path / "w.safetensors", init_weights(graph, 0), {"preprocessing": record})
    assert apply_preprocessing(np.array([[1, 2]]), json.loads(record)).dtype == np.int64
    code, out, err = dslc(capsys, "export", spec, "--weights", tmp_path / "w.safetensors",
                          "-o", tmp_path / "q.onnx", "--quantize", "int8", "--max-loss", "100")
    assert code == 0, err
    assert "int8 (QDQ) against fp32" in out


def test_the_slower_note_says_smaller_only_when_it_is():
    from dslc.backends.onnx.bench import Timing

    score = quantize.Score("accuracy", 0.5, 10)
    slow = {"fp32": Timing(1e-5, 1e-5, 1000.0, 64), "int8 (QDQ)": Timing(2e-5, 2e-5, 500.0, 64)}
    for q_size, said in ((500, "it is smaller"), (1500, "it is not smaller either")):
        cmp = quantize.Comparison({"fp32": score, "int8 (QDQ)": score},
                                  {"fp32": 1000, "int8 (QDQ)": q_size}, slow)
        assert quantize.report(cmp, "int8", "int8 (QDQ)")[-1].endswith(said)
