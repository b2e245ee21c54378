"""Acceptance: specs/lstm_classifier.dl (token ids, `embedding(mask_zero=true)`, an LSTM) trains
on the built-in `tokens()` task through `dslc train` on torch and on keras, reaches the test
accuracy the README states next to the spec, and padding changes nothing: the trained weights
give one sequence the same prediction padded to 20 steps and to 32, on every backend (ONNX
too)."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from conftest import ROOT, run_dslc

from dslc.backends import backend_names, get_backend
from dslc.compiler import compile_text
from dslc.diagnostics import DslError
from dslc.weights import load_weights

pytestmark = pytest.mark.slow

# Measured (seed 0, torch 2.x and keras 3 on CPU): 1.000 on both (600 test sequences). The
# margin absorbs other versions' and CPUs' rounding, not a regression.
ACCURACY = 0.95
SPEC = ROOT / "specs" / "lstm_classifier.dl"


def _model(max_len: int):
    text = re.sub(r"let max_len = \d+", f"let max_len = {max_len}",
                  SPEC.read_text(encoding="utf-8"))
    return compile_text(text, str(SPEC)).model()


@pytest.mark.parametrize("backend", ["torch", "keras"])
def test_lstm_classifier_trains_and_padding_changes_nothing(tmp_path, backend):
    pytest.importorskip("torch" if backend == "torch" else "keras")
    out = tmp_path / "run"
    proc = run_dslc("train", SPEC, "--backend", backend, "--out", out)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test"]["accuracy"] >= ACCURACY, metrics["test"]

    short, long = _model(20), _model(32)
    weights = load_weights(out / "weights.safetensors", short)
    rng = np.random.default_rng(0)
    lengths = [1, 5, 12, 20]
    ids = np.zeros((len(lengths), 20), np.int64)
    for k, n in enumerate(lengths):
        ids[k, :n] = rng.integers(1, 10, n)
    padded = np.concatenate([ids, np.zeros((len(ids), 12), np.int64)], axis=1)
    for name in backend_names(runs=True):
        runtime = get_backend(name)
        try:
            runtime.require()
        except DslError:
            continue
        a = np.asarray(runtime.build(short, weights).predict_all(ids)[0])
        b = np.asarray(runtime.build(long, weights).predict_all(padded)[0])
        assert np.abs(a - b).max() <= 1e-5, name
        assert (a.argmax(1) == b.argmax(1)).all(), name
