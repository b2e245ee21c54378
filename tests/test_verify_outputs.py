"""`dslc verify` compares every output of a multi-output model, and checks --tol."""

from __future__ import annotations

import argparse

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("tensorflow")
pytest.importorskip("onnxruntime")

from dslc import verify  # noqa: E402
from dslc.diagnostics import DslError  # noqa: E402

SPEC = """model two {
    input x: f32[4]
    a = dense(x, 3)
    b = dense(x, 2, activation=softmax)
    d = dropout(a, 0.5)
    output a, b, d
}
"""


@pytest.fixture
def spec(tmp_path):
    path = tmp_path / "two.dl"
    path.write_text(SPEC)
    return path


def _args(spec, **kw):
    base = dict(spec=str(spec), weights=None, tol=1e-5, seed=0, batch=3, model=None)
    return argparse.Namespace(**{**base, **kw})


def test_every_output_is_compared(spec, capsys):
    assert verify.verify_command(_args(spec)) == 0
    out = capsys.readouterr().out
    assert "a [3, 3]" in out and "b [3, 2]" in out and "d [3, 3]" in out
    assert out.count(" ok") == 3


def test_a_disagreement_in_a_later_output_fails(spec, capsys, monkeypatch):
    real = verify.load_backend

    class Skewed:
        """The onnx backend, wrong in its second output only."""

        @staticmethod
        def build(graph, weights, device="cpu"):
            runtime = real("onnx").build(graph, weights, device)

            class R:
                def predict(self, x):
                    return runtime.predict(x)

                def predict_all(self, x):
                    ys = runtime.predict_all(x)
                    return [ys[0], ys[1] + np.float32(1e-2), *ys[2:]]

            return R()

    monkeypatch.setattr(verify, "load_backend", lambda n: Skewed if n == "onnx" else real(n))
    assert verify.verify_command(_args(spec)) == 1
    captured = capsys.readouterr()
    lines = {line.split("  max")[0].strip(): line for line in captured.out.splitlines()
             if "max abs diff" in line}
    assert "ok" in lines["torch vs keras"]
    assert "FAIL" in lines["torch vs onnx"] and "output b" in lines["torch vs onnx"]
    assert "disagree" in captured.err


def test_report_holds_every_output(spec):
    from dslc.compiler import compile_file
    from dslc.weights import init_weights

    graph = compile_file(spec).model()
    report = verify.run_backends(graph, init_weights(graph, 0), verify.seeded_batch(graph, 2))
    assert {len(ys) for ys in report.all_outputs.values()} == {3}
    assert all(len(per) == 3 for per in report.output_diffs.values())
    assert report.within(1e-5)


@pytest.mark.parametrize("tol", [float("nan"), float("inf"), -1.0])
def test_tolerance_must_be_finite_and_not_negative(spec, tol):
    with pytest.raises(DslError, match="--tol"):
        verify.verify_command(_args(spec, tol=tol))


def test_tol_nan_exits_2(spec, capsys):
    from dslc.cli import main

    assert main(["verify", str(spec), "--tol", "nan"]) == 2
    assert "--tol" in capsys.readouterr().err
