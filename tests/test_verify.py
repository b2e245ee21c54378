"""`dslc verify` on the real backends: every spec and example gives the same numbers on PyTorch,
Keras, ONNX Runtime and the reference interpreter (max abs diff <= 1e-5 with the same weights
and batch). Every op variant is in tests/test_op_matrix.py; verify's logic is tested without
frameworks in tests/test_verify_outputs.py."""

from __future__ import annotations

import argparse
import itertools

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("tensorflow")
pytest.importorskip("onnxruntime")

from conftest import ROOT, SPECS  # noqa: E402

from dslc import verify  # noqa: E402
from dslc.backends import backend_names  # noqa: E402
from dslc.backends.base import Backend  # noqa: E402
from dslc.compiler import compile_file  # noqa: E402
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


FRAMEWORKS = [n for n in backend_names(runs=True) if n != "reference"]
PAIRS = {(f, "reference") for f in FRAMEWORKS} | set(itertools.combinations(FRAMEWORKS, 2))


def _check(graph, seed=0):
    weights = _nonzero_biases(graph, init_weights(graph, seed))
    report = verify.run_backends(graph, weights, verify.seeded_batch(graph, 6, seed),
                                 tolerance=verify.Tolerance(atol=TOL, rtol=0.0))
    assert set(report.pairs) == PAIRS
    shapes = {tuple(y.shape for y in ys) for ys in report.outputs.values()}
    assert len(shapes) == 1
    assert report.within(), {k: (p.abs, p.rel) for k, p in report.pairs.items()}
    return report


@pytest.mark.parametrize("path", SPECS + EXAMPLES, ids=[p.stem for p in SPECS + EXAMPLES])
def test_every_spec_agrees_on_every_backend_and_the_reference(path):
    _check(compile_file(path).model())


def _args(spec, **kw):
    base = dict(spec=str(spec), weights=None, atol=TOL, rtol=1e-6, seed=0, batch=4, model=None)
    return argparse.Namespace(**{**base, **kw})


def test_verify_command_reports_each_pair(capsys, tmp_path):
    spec = ROOT / "specs" / "cnn_small.dl"
    graph = compile_file(spec).model()
    save_weights(tmp_path / "w.safetensors", init_weights(graph, 9))
    assert verify.verify_command(_args(spec, weights=str(tmp_path / "w.safetensors"))) == 0
    out = capsys.readouterr().out
    for a, b in PAIRS:
        assert f"{a} vs {b}" in out
    assert "w.safetensors" in out and "agree within atol 1e-05" in out


def test_verify_names_the_layer_where_a_backend_departs(capsys, monkeypatch):
    real = verify.get_backend

    class Skewed(Backend):
        """The onnx backend with an error of 1e-3 in every output."""

        name = "onnx"
        runs = True

        def build(self, graph, weights, device="cpu"):
            runtime = real("onnx").build(graph, weights, device)

            class R:
                def predict_all(self, x):
                    return [y + np.float32(1e-3) for y in runtime.predict_all(x)]

                def predict(self, x):
                    return self.predict_all(x)[0]

            return R()

    monkeypatch.setattr(verify, "get_backend", lambda n: Skewed() if n == "onnx" else real(n))
    assert verify.verify_command(_args(ROOT / "specs" / "cnn_small.dl")) == 1
    captured = capsys.readouterr()
    lines = [line for line in captured.out.splitlines() if "max abs diff" in line]
    assert any("onnx vs reference" in line and "FAIL" in line for line in lines)
    assert any("torch vs keras" in line and line.endswith(" ok") for line in lines)
    first = compile_file(ROOT / "specs" / "cnn_small.dl").model().nodes[0]
    assert f"onnx departs from the reference first at layer `{first.name}`" in captured.out
    assert "disagree" in captured.err


def test_verify_cli(dslc):
    r = dslc("verify", ROOT / "specs" / "rnn_simple.dl", "--tol", "1e-5", "--batch", "3")
    assert r.returncode == 0, r.stderr
    assert r.stdout.count(" ok") == len(PAIRS)
    assert "vs reference" in r.stdout and "max rel diff" in r.stdout
