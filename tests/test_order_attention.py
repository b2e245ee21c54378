"""Attention learns the `order` task (specs/order_attention.dl): >= 95% test accuracy on torch
and on keras, through `dslc train` as a user runs it; without the causal mask the same model
sees no order (it has no positions) and stays at chance."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.slow


def _accuracy(dslc, spec, tmp_path, backend, *extra) -> float:
    out = tmp_path / backend
    res = dslc("train", spec, "--backend", backend, "--out", out, *extra)
    assert res.returncode == 0, res.stdout + res.stderr
    return json.loads((out / "metrics.json").read_text())["test"]["accuracy"]


@pytest.mark.parametrize("backend", ["torch", "keras"])
def test_order_attention_reaches_95_percent(dslc, root, tmp_path, backend):
    pytest.importorskip("torch" if backend == "torch" else "keras")
    assert _accuracy(dslc, root / "specs" / "order_attention.dl", tmp_path, backend) >= 0.95


def test_without_the_causal_mask_it_is_at_chance(dslc, root, tmp_path):
    pytest.importorskip("torch")
    text = (root / "specs" / "order_attention.dl").read_text()
    assert text.count("causal=true") == 1
    spec = tmp_path / "order_unordered.dl"
    spec.write_text(text.replace("causal=true", "causal=false"))
    assert _accuracy(dslc, spec, tmp_path, "torch", "--epochs", "3") < 0.6
