"""`dslc verify`: every spec and every op variant gives the same numbers on PyTorch, Keras and
ONNX Runtime (max abs diff <= 1e-5 with the same weights and batch)."""

from __future__ import annotations

import argparse

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("tensorflow")
pytest.importorskip("onnxruntime")

from conftest import ROOT, SPECS  # noqa: E402
from test_onnx_ops import VARIANTS, variant_spec  # noqa: E402

from dslc import verify  # noqa: E402
from dslc.compiler import compile_file  # noqa: E402
from dslc.diagnostics import DslError  # noqa: E402
from dslc.weights import init_weights, save_weights  # noqa: E402

TOL = 1e-5
EXAMPLES = sorted((ROOT / "examples").glob("*.dl"))


def _nonzero_biases(graph, weights):
    """Seeded init leaves biases at zero; give them values so their layout is checked too."""
    rng = np.random.default_rng(11)
    for key, p in graph.param_specs().items():
        if key.endswith(".bias"):
            weights[key] = rng.normal(0, 0.5, p.shape).astype(np.float32)
    return weights


def _check(graph, seed=0):
    weights = _nonzero_biases(graph, init_weights(graph, seed))
    report = verify.run_backends(graph, weights, verify.seeded_batch(graph, 6, seed))
    assert set(report.diffs) == {("torch", "keras"), ("torch", "onnx"), ("keras", "onnx")}
    shapes = {y.shape for y in report.outputs.values()}
    assert len(shapes) == 1
    assert report.within(TOL), report.diffs
    return report


@pytest.mark.parametrize("path", SPECS + EXAMPLES, ids=[p.stem for p in SPECS + EXAMPLES])
def test_every_spec_agrees_on_three_backends(path):
    _check(compile_file(path).model())


@pytest.mark.parametrize("name,body", VARIANTS, ids=[v[0] for v in VARIANTS])
def test_every_op_variant_agrees_on_three_backends(name, body):
    _check(variant_spec(name, body).model(), seed=2)


def _args(spec, **kw):
    base = dict(spec=str(spec), weights=None, tol=TOL, seed=0, batch=4, model=None)
    return argparse.Namespace(**{**base, **kw})


def test_verify_command_reports_each_pair(capsys, tmp_path):
    spec = ROOT / "specs" / "cnn_small.dl"
    graph = compile_file(spec).model()
    save_weights(tmp_path / "w.safetensors", init_weights(graph, 9))
    assert verify.verify_command(_args(spec, weights=str(tmp_path / "w.safetensors"))) == 0
    out = capsys.readouterr().out
    for pair in ("torch vs keras", "torch vs onnx", "keras vs onnx"):
        assert pair in out
    assert "w.safetensors" in out and "agree within 1e-05" in out


def test_verify_exits_1_when_a_backend_disagrees(capsys, monkeypatch):
    real = verify.load_backend

    class Skewed:
        """The onnx backend with an error of 1e-3 in its outputs."""

        @staticmethod
        def build(graph, weights, device="cpu"):
            runtime = real("onnx").build(graph, weights, device)

            class R:
                def predict(self, x):
                    return runtime.predict(x) + np.float32(1e-3)

            return R()

    monkeypatch.setattr(verify, "load_backend", lambda n: Skewed if n == "onnx" else real(n))
    assert verify.verify_command(_args(ROOT / "specs" / "linear_regression.dl")) == 1
    captured = capsys.readouterr()
    assert "FAIL" in captured.out and "torch vs keras" in captured.out
    assert "disagree" in captured.err


def test_verify_cli(dslc):
    r = dslc("verify", ROOT / "specs" / "rnn_simple.dl", "--tol", "1e-5", "--batch", "3")
    assert r.returncode == 0, r.stderr
    assert r.stdout.count(" ok") == 3


def test_verify_rejects_a_negative_tolerance():
    with pytest.raises(DslError, match="--tol"):
        verify.verify_command(_args(ROOT / "specs" / "rnn_simple.dl", tol=-1.0))
