"""Acceptance: the tutorial models train for real through `dslc train --backend torch`
(a subprocess, as a user runs it) and reach the issue's figures."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

pytest.importorskip("torch")

pytestmark = pytest.mark.slow


def _train(dslc, root, tmp_path, name, *extra):
    out = tmp_path / name
    res = dslc("train", root / "specs" / f"{name}.dl", "--backend", "torch", "--out", out, *extra)
    assert res.returncode == 0, res.stdout + res.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    return out, metrics


def test_digits_cnn_reaches_97_percent(dslc, root, tmp_path):
    _, metrics = _train(dslc, root, tmp_path, "digits_cnn")
    assert metrics["test"]["accuracy"] >= 0.97, metrics["test"]


def test_digits_mlp_reaches_95_percent(dslc, root, tmp_path):
    _, metrics = _train(dslc, root, tmp_path, "digits_mlp")
    assert metrics["test"]["accuracy"] >= 0.95, metrics["test"]


def test_linear_regression_recovers_w_and_b(dslc, root, tmp_path):
    from dslc.weights import read_weights

    out, _ = _train(dslc, root, tmp_path, "linear_regression")
    weights, _ = read_weights(out / "weights.safetensors")
    assert abs(float(weights["dense_1.kernel"].item()) - 3.0) < 0.1, weights
    assert abs(float(weights["dense_1.bias"].item()) - 1.0) < 0.1, weights


def test_logistic_regression_reaches_95_percent(dslc, root, tmp_path):
    _, metrics = _train(dslc, root, tmp_path, "logistic_regression")
    assert metrics["test"]["accuracy"] >= 0.95, metrics["test"]


def test_rnn_simple_cuts_its_loss_five_times(dslc, root, tmp_path):
    """Test loss of the trained model vs the same seed's untrained one, and the training
    curve's first vs last epoch."""
    from dslc.backends import get_backend
    from dslc.compiler import compile_file
    from dslc.data.loaders import load_dataset
    from dslc.train.metrics import numpy_loss
    from dslc.weights import init_weights

    out, metrics = _train(dslc, root, tmp_path, "rnn_simple")
    spec = compile_file(root / "specs" / "rnn_simple.dl")
    graph, cfg = spec.model(), spec.train_config()
    data = load_dataset(cfg, graph.inputs[0].type.shape, spec.path.parent, cfg.seed)
    before = numpy_loss(cfg.loss, data.y_test,
                        get_backend("torch").build(graph, init_weights(graph, cfg.seed)).predict(data.x_test))
    assert before / metrics["test"]["loss"] >= 5, (before, metrics["test"]["loss"])
    rows = list(csv.DictReader((out / "history.csv").open()))
    assert float(rows[0]["loss"]) / float(rows[-1]["loss"]) >= 5


def test_eval_matches_the_training_run(dslc, root, tmp_path):
    out, metrics = _train(dslc, root, tmp_path, "logistic_regression")
    res = dslc("eval", root / "specs" / "logistic_regression.dl", "--weights",
               out / "weights.safetensors", "--json")
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert np.isclose(report["metrics"]["accuracy"], metrics["test"]["accuracy"])
    assert np.isclose(report["loss"], metrics["test"]["loss"], rtol=1e-5)
    assert np.array(report["confusion_matrix"]).shape == (2, 2)
    text = dslc("eval", root / "specs" / "logistic_regression.dl", "--weights",
                out / "weights.safetensors")
    assert "confusion matrix" in text.stdout and "accuracy" in text.stdout


def _mnist_like(n: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """28x28 uint8 'digits': class k lights a 6x6 block at a place of its own, plus noise."""
    y = rng.integers(0, 10, n).astype(np.uint8)
    x = rng.integers(0, 60, (n, 28, 28)).astype(np.uint8)
    for i, k in enumerate(y):
        r, c = 2 + (k // 5) * 12, 1 + (k % 5) * 5
        x[i, r:r + 6, c:c + 5] = 255
    return x, y


def _write_idx(path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape)
    path.write_bytes(header + array.astype(">u1").tobytes())


def test_mnist_specs_train_from_idx_and_npz_files(dslc, root, tmp_path):
    """The MNIST specs' models, their `mnist()` swapped for files the test writes (no internet
    here)."""
    rng = np.random.default_rng(0)
    (tmp_path / "mnist").mkdir()
    for split, n in (("train", 1200), ("t10k", 300)):
        x, y = _mnist_like(n, rng)
        _write_idx(tmp_path / "mnist" / f"{split}-images-idx3-ubyte", x)
        _write_idx(tmp_path / "mnist" / f"{split}-labels-idx1-ubyte", y)
    x, y = _mnist_like(1500, rng)
    np.savez(tmp_path / "mnist.npz", x=x.reshape(1500, 784), y=y)
    for name, data in (("cnn_small", 'idx("mnist/")'), ("mlp_784_64", 'npz("mnist.npz")')):
        text = (root / "specs" / f"{name}.dl").read_text()
        assert "mnist()" in text, name
        (tmp_path / f"{name}.dl").write_text(text.replace("mnist()", data))
        out = tmp_path / f"run_{name}"
        res = dslc("train", tmp_path / f"{name}.dl", "--epochs", "2", "--out", out)
        assert res.returncode == 0, res.stdout + res.stderr
        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics["test"]["accuracy"] >= 0.9, (name, metrics["test"])
