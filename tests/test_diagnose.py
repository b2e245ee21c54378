"""`dslc train --diagnose`: the loss's derivative, per-layer norms and dead ReLU units (the
same on torch and keras), the files and summary of a run, and the layer named on a NaN."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from dslc.cli import main
from dslc.compiler import compile_text
from dslc.ir.train import Loss
from dslc.train.diagnose import layer_stats, loss_cotangent
from dslc.train.metrics import numpy_loss
from dslc.weights import init_weights

MLP = """
model mlp {
    input image: f32[8, 8, 1]
    flatten
    dense(32, activation=relu)
    dense(10, activation=softmax)
}
train mlp {
    data       = digits(test=0.2)
    validation = 0.2
    preprocess = [scale(1/16)]
    loss       = sparse_categorical_crossentropy
    optimizer  = adam(lr=2e-3)
    metrics    = [accuracy]
    epochs     = 2
}
"""

# sgd with a huge step: the weights overflow within the first epoch.
BLOWUP = """
model blowup {
    input x: f32[1]
    dense(16, activation=relu)
    dense(1)
}
train blowup {
    data      = linear(n=500, w=3, b=1, noise=0.1, test=0.2)
    loss      = mse
    optimizer = sgd(lr=LR)
    epochs    = 3
    batch     = 32
}
"""


def _probabilities(rng, shape):
    z = rng.standard_normal(shape)
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


@pytest.mark.parametrize("name, from_logits, smoothing", [
    ("mse", False, 0.0), ("mae", False, 0.0),
    ("binary_crossentropy", False, 0.0), ("binary_crossentropy", True, 0.1),
    ("sparse_categorical_crossentropy", False, 0.0),
    ("sparse_categorical_crossentropy", True, 0.0),
    ("categorical_crossentropy", False, 0.2), ("categorical_crossentropy", True, 0.0),
])
def test_the_cotangent_is_the_derivative_of_the_numpy_loss(name, from_logits, smoothing):
    rng = np.random.default_rng(0)
    loss = Loss(name=name, from_logits=from_logits, label_smoothing=smoothing)
    if name in ("mse", "mae"):
        pred, y = rng.standard_normal((6, 3)), rng.standard_normal((6, 3))
    elif name == "binary_crossentropy":
        pred = rng.standard_normal((6, 1)) if from_logits else rng.uniform(0.1, 0.9, (6, 1))
        y = rng.integers(0, 2, (6,)).astype(np.float32)
    else:
        pred = rng.standard_normal((6, 4)) if from_logits else _probabilities(rng, (6, 4))
        y = rng.integers(0, 4, (6,))
        if name == "categorical_crossentropy":
            y = np.eye(4, dtype=np.float32)[y]
    g = loss_cotangent(loss, y, pred)
    numeric = np.zeros_like(pred)
    h = 1e-6
    for i in np.ndindex(pred.shape):
        up, down = pred.copy(), pred.copy()
        up[i] += h
        down[i] -= h
        numeric[i] = (numpy_loss(loss, y, up) - numpy_loss(loss, y, down)) / (2 * h)
    np.testing.assert_allclose(g, numeric, atol=1e-6)


def _data(spec):
    from dslc.data.loaders import load_dataset

    graph, cfg = spec.model(), spec.train_config()
    return load_dataset(cfg, tuple(graph.inputs[0].type.shape), spec.path.parent, 0)


def test_norms_and_dead_units_agree_across_backends():
    pytest.importorskip("torch")
    pytest.importorskip("keras")
    from dslc.backends import get_backend

    spec = compile_text(MLP)
    graph, cfg = spec.model(), spec.train_config()
    data = _data(spec)
    x, y = data.x_train[:64], data.y_train[:64]
    weights = init_weights(graph, 0)
    # A quarter of dense_1's units can never fire, the rest always do.
    weights["dense_1.bias"] = np.where(np.arange(32) < 8, -1e3, 10.0).astype(np.float32)
    torch_stats = layer_stats(get_backend("torch"), graph, cfg, weights, x, y)
    keras_stats = layer_stats(get_backend("keras"), graph, cfg, weights, x, y)
    assert torch_stats["dense_1"]["dead_relu"] == keras_stats["dense_1"]["dead_relu"] == 0.25
    assert "dead_relu" not in torch_stats["dense_2"] and "weight_norm" not in torch_stats["flatten_1"]
    for layer in ("dense_1", "dense_2"):
        for key in ("weight_norm", "grad_norm"):
            assert torch_stats[layer][key] == pytest.approx(keras_stats[layer][key], rel=1e-4)
        assert torch_stats[layer]["grad_norm"] > 0
    w = np.sqrt(sum(np.sum(weights[f"dense_2.{k}"].astype(np.float64) ** 2)
                    for k in ("kernel", "bias")))
    assert torch_stats["dense_2"]["weight_norm"] == pytest.approx(w)


@pytest.mark.parametrize("backend", ["torch", "keras"])
def test_train_diagnose_writes_and_summarises(backend, tmp_path, capsys):
    pytest.importorskip(backend)
    path = tmp_path / "mlp.dl"
    path.write_text(MLP)
    out = tmp_path / "run"
    assert main(["train", str(path), "--backend", backend, "--diagnose", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "diagnostics after epoch 2 (probe of 256 training samples" in printed
    assert "dense_1  dense" in printed and "dead relu" in printed
    with open(out / "diagnostics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["epoch"], r["layer"]) for r in rows] == [
        (e, layer) for e in ("1", "2") for layer in ("flatten_1", "dense_1", "dense_2")]
    dense = [r for r in rows if r["layer"] == "dense_1"]
    assert all(float(r["grad_norm"]) > 0 and float(r["weight_norm"]) > 0 for r in dense)
    assert all(0 <= float(r["dead_relu"]) <= 1 for r in dense)
    report = json.loads((out / "diagnostics.json").read_text())
    assert report["nan"] is None and len(report["epochs"]) == 2
    assert report["epochs"][1]["layers"]["dense_2"]["nonfinite_outputs"] == 0


@pytest.mark.parametrize("backend", ["torch", "keras"])
def test_a_nan_names_the_first_layer_whose_output_is_not_finite(backend, tmp_path, capsys):
    pytest.importorskip(backend)
    path = tmp_path / "blowup.dl"
    path.write_text(BLOWUP.replace("LR", "1e6"))
    out = tmp_path / "run"
    assert main(["train", str(path), "--backend", backend, "--diagnose", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "training stopped: the loss became" in err
    assert "note: the first layer whose output is not finite is `dense_" in err
    nan = json.loads((out / "diagnostics.json").read_text())["nan"]
    assert nan["layer"] in ("dense_1", "dense_2")
    assert f"{path}:{nan['line']}:5: note:" in err
    assert nan["line"] == {"dense_1": 4, "dense_2": 5}[nan["layer"]]


def test_an_overflowing_loss_names_the_largest_outputs(tmp_path, capsys):
    pytest.importorskip("torch")
    path = tmp_path / "blowup.dl"
    path.write_text(BLOWUP.replace("LR", "10"))
    assert main(["train", str(path), "--diagnose", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "every layer's output on the probe is finite, so the loss itself overflowed" in err
    assert f"{path}:5:5: note:" in err


def test_a_resumed_run_keeps_the_earlier_epochs(tmp_path, capsys):
    pytest.importorskip("torch")
    path = tmp_path / "mlp.dl"
    path.write_text(MLP)
    out = tmp_path / "run"
    assert main(["train", str(path), "--diagnose", "--out", str(out), "--epochs", "1"]) == 0
    assert main(["train", str(path), "--diagnose", "--out", str(out), "--resume"]) == 0
    epochs = json.loads((out / "diagnostics.json").read_text())["epochs"]
    assert [e["epoch"] for e in epochs] == [1, 2]
