"""specs/transformer_classifier.dl — token ids, embedding + learned positions, two encoder blocks
from the standard library — learns the `order` task: >= 95% test accuracy on torch and on
keras through `dslc train` as a user runs it. The torch-trained weights score the same under
keras, ONNX and the reference; the exported ONNX file runs on a file of token ids
(`dslc run`) and gives the reference's probabilities."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import ROOT, run_dslc

from dslc.backends import get_backend
from dslc.compiler import compile_file
from dslc.weights import load_weights

pytestmark = pytest.mark.slow

SPEC = ROOT / "specs" / "transformer_classifier.dl"


def _ok(res):
    assert res.returncode == 0, res.stdout + res.stderr
    return res


def _train(out, backend):
    _ok(run_dslc("train", SPEC, "--backend", backend, "--out", out))
    return json.loads((out / "metrics.json").read_text())["test"]


@pytest.fixture(scope="module")
def torch_run(tmp_path_factory):
    pytest.importorskip("torch")
    out = tmp_path_factory.mktemp("transformer") / "torch"
    return out, _train(out, "torch")


def test_torch_reaches_95_percent(torch_run):
    assert torch_run[1]["accuracy"] >= 0.95


def test_keras_reaches_95_percent(tmp_path):
    pytest.importorskip("keras")
    assert _train(tmp_path / "keras", "keras")["accuracy"] >= 0.95


@pytest.mark.parametrize("backend", ["keras", "onnx", "reference"])
def test_torch_weights_score_the_same_elsewhere(torch_run, backend):
    pytest.importorskip({"keras": "keras", "onnx": "onnxruntime"}.get(backend, "numpy"))
    out, test = torch_run
    res = _ok(run_dslc("eval", SPEC, "--weights", out / "weights.safetensors",
                       "--backend", backend, "--json"))
    report = json.loads(res.stdout)
    assert report["samples"] == 800
    assert report["metrics"]["accuracy"] == test["accuracy"]
    assert report["loss"] == pytest.approx(test["loss"], abs=1e-5)


def test_the_onnx_export_runs_on_token_ids(torch_run, tmp_path):
    pytest.importorskip("onnxruntime")
    out, _ = torch_run
    weights = out / "weights.safetensors"
    onnx_file, ids, probs = tmp_path / "tc.onnx", tmp_path / "ids.npy", tmp_path / "probs.npy"
    _ok(run_dslc("export", SPEC, "--weights", weights, "-o", onnx_file))
    # marker A is id 1, B is id 2, fillers 3..7: label 1 when A comes first
    tokens = np.array([[3, 1, 4, 5, 6, 7, 3, 4, 5, 6, 7, 3, 4, 2, 5, 6],
                       [3, 2, 4, 5, 6, 7, 3, 4, 5, 6, 7, 3, 4, 1, 5, 6],
                       [1, 2, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7],
                       [7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 2, 1]], dtype=np.int64)
    np.save(ids, tokens)
    _ok(run_dslc("run", onnx_file, "--input", ids, "--output", probs))
    got = np.load(probs)
    graph = compile_file(SPEC).model()
    (want,) = get_backend("reference").build(graph, load_weights(weights, graph)).predict_all(
        [tokens])
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    assert got.argmax(axis=1).tolist() == [1, 0, 1, 0]
