"""The user story end to end: train digits_cnn with PyTorch, export ONNX, save a test image as
PNG, `dslc run` it: the label comes back, with the training backend's probabilities."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
Image = pytest.importorskip("PIL.Image")

from conftest import ROOT  # noqa: E402

from dslc.backends import get_backend  # noqa: E402
from dslc.compiler import compile_file  # noqa: E402
from dslc.data.loaders import apply_preprocessing, load_dataset  # noqa: E402
from dslc.weights import load_weights, read_weights  # noqa: E402

SPEC = ROOT / "specs" / "digits_cnn.dl"


@pytest.mark.slow
def test_train_export_run_a_png(dslc, tmp_path):
    run = tmp_path / "run"
    r = dslc("train", SPEC, "--backend", "torch", "--epochs", "4", "--out", run)
    assert r.returncode == 0, r.stderr
    r = dslc("export", SPEC, "--weights", run / "weights.safetensors", "-o", tmp_path / "d.onnx")
    assert r.returncode == 0, r.stderr

    spec = compile_file(SPEC)
    graph, cfg = spec.model(), spec.train_config()
    weights = load_weights(run / "weights.safetensors", graph)
    meta = read_weights(run / "weights.safetensors")[1]
    record = json.loads(meta["preprocessing"])
    data = load_dataset(cfg, tuple(graph.inputs[0].type.shape), SPEC.parent, int(meta["seed"]))
    torch_rt = get_backend("torch").build(graph, weights)
    pred = torch_rt.predict(data.x_test).argmax(axis=1)
    assert (pred == data.y_test).mean() > 0.9  # a trained model

    # The first test image the model gets right, as an 8-bit PNG of its raw 0..16 pixels.
    i = int(np.flatnonzero(pred == data.y_test)[0])
    factor = record["steps"][0]["factor"]
    raw = data.x_test[i, :, :, 0] / factor
    Image.fromarray(np.round(raw * 255 / 16).astype(np.uint8)).save(tmp_path / "digit.png")

    r = dslc("run", tmp_path / "d.onnx", "--input", tmp_path / "digit.png")
    assert r.returncode == 0, r.stderr
    row, label, prob = r.stdout.strip().splitlines()[-1].split()
    assert int(label) == int(data.y_test[i])
    assert "light strokes on a dark background" in r.stderr and "warning" not in r.stderr

    # The same digit dark on light: still an answer, and one clean warning line about it.
    Image.fromarray(255 - np.round(raw * 255 / 16).astype(np.uint8)).save(tmp_path / "inv.png")
    r = dslc("run", tmp_path / "d.onnx", "--input", tmp_path / "inv.png")
    assert r.returncode == 0, r.stderr
    (line,) = [ln for ln in r.stderr.splitlines() if "arning" in ln]
    assert line.startswith("warning: inv.png is mostly light")

    r = dslc("run", tmp_path / "d.onnx", "--input", tmp_path / "digit.png", "--output",
             tmp_path / "probs.npy")
    assert r.returncode == 0, r.stderr
    onnx_probs = np.load(tmp_path / "probs.npy")
    pixels = np.asarray(Image.open(tmp_path / "digit.png"), np.float32) * np.float32(16 / 255)
    torch_probs = torch_rt.predict(apply_preprocessing(pixels.reshape(1, 8, 8, 1), record))
    np.testing.assert_allclose(onnx_probs, torch_probs, atol=1e-5, rtol=0)
    assert abs(float(prob) - float(torch_probs.max())) < 1e-5
