"""`dslc verify`'s logic, on stand-in backends (the reference interpreter under other names,
optionally wrong at chosen layers), so it is tested without any framework: every output
compared, each backend against the reference and pairwise, allclose tolerances, and the first
diverging layer named."""

from __future__ import annotations

import argparse

import numpy as np
import pytest

from dslc import verify
from dslc.backends import get_backend
from dslc.backends.base import Backend, Runtime
from dslc.backends.lowering import LoweringTable
from dslc.backends.reference.interpret import Interpreter
from dslc.diagnostics import DslError
from dslc.ir.graph import Graph

SPEC = """model two {
    input x: f32[4]
    h = dense(x, 5, activation=tanh)
    a = dense(h, 3)
    b = dense(h, 2, activation=softmax)
    d = dropout(a, 0.5)
    output a, b, d
}
"""


class StandIn(Backend):
    """The reference under another name; `skew` adds to the named layers wherever they are
    outputs, as a backend with a bug in those layers would."""

    runs = True

    def __init__(self, name: str, skew: dict[str, float] | None = None):
        self.name = name  # type: ignore[misc]
        self.skew = skew or {}

    @property
    def lowerings(self) -> LoweringTable:
        return get_backend("reference").lowerings

    def build(self, graph: Graph, weights: dict[str, np.ndarray], device: str = "cpu") -> Runtime:
        inner, skew = Interpreter(graph, weights), self.skew

        class Skewed:
            def predict_all(self, x):
                ys = inner.predict_all(x)
                return [y + np.float32(skew.get(name, 0.0))
                        for name, y in zip(graph.outputs, ys, strict=True)]

            def predict(self, x):
                return self.predict_all(x)[0]

        return Skewed()


@pytest.fixture
def spec(tmp_path):
    path = tmp_path / "two.dl"
    path.write_text(SPEC)
    return path


@pytest.fixture
def standins(monkeypatch):
    """Install stand-ins `alpha` and `beta` next to the reference; returns their table."""
    table: dict[str, Backend] = {"alpha": StandIn("alpha"), "beta": StandIn("beta")}
    real = verify.get_backend
    monkeypatch.setattr(verify, "get_backend", lambda n: table[n] if n in table else real(n))
    monkeypatch.setattr(verify, "backend_names",
                        lambda **kw: ["alpha", "beta", "reference"])
    return table


def _args(spec, **kw):
    base = dict(spec=str(spec), weights=None, atol=1e-5, rtol=1e-6, seed=0, batch=3, model=None)
    return argparse.Namespace(**{**base, **kw})


def _lines(out: str) -> dict[str, str]:
    return {line.split("  max")[0].strip(): line for line in out.splitlines()
            if "max abs diff" in line and " vs " in line.split("  max")[0]}


def test_each_backend_against_the_reference_and_pairwise(spec, standins, capsys):
    assert verify.verify_command(_args(spec)) == 0
    out = capsys.readouterr().out
    assert "a [3, 3]" in out and "b [3, 2]" in out and "d [3, 3]" in out
    lines = _lines(out)
    assert list(lines) == ["alpha vs reference", "beta vs reference", "alpha vs beta"]
    assert all(line.endswith(" ok") and "max rel diff" in line for line in lines.values())
    assert "agree within atol 1e-05, rtol 1e-06" in out


def test_a_wrong_layer_is_named_where_it_first_diverges(spec, standins, capsys):
    # beta is wrong in `b` only: outputs a and d agree; the probe run finds layer b, not h
    standins["beta"] = StandIn("beta", {"b": 1e-2})
    assert verify.verify_command(_args(spec)) == 1
    captured = capsys.readouterr()
    lines = _lines(captured.out)
    assert lines["alpha vs reference"].endswith(" ok")
    assert "FAIL (output b)" in lines["beta vs reference"]
    assert "FAIL (output b)" in lines["alpha vs beta"]
    assert "beta departs from the reference first at layer `b` (dense)" in captured.out
    assert "alpha departs" not in captured.out
    assert "disagree" in captured.err


def test_a_mistake_every_framework_shares_is_caught(spec, standins, capsys):
    # both frameworks wrong the same way agree with each other: only the reference sees it
    standins["alpha"] = StandIn("alpha", {"a": 1e-3, "d": 1e-3})
    standins["beta"] = StandIn("beta", {"a": 1e-3, "d": 1e-3})
    assert verify.verify_command(_args(spec)) == 1
    lines = _lines(capsys.readouterr().out)
    assert lines["alpha vs beta"].endswith(" ok")
    assert "FAIL" in lines["alpha vs reference"] and "FAIL" in lines["beta vs reference"]


def test_tolerance_is_allclose_with_atol_and_rtol():
    tol = verify.Tolerance(atol=1e-5, rtol=1e-3)
    ref = np.array([1000.0, 0.0], np.float32)
    assert verify.compare(ref + np.float32([0.5, 0]), ref, tol).ok  # 0.5 <= 1e-5 + 1
    assert not verify.compare(ref + np.float32([0, 2e-5]), ref, tol).ok  # 2e-5 > 1e-5 + 0
    d = verify.compare(np.array([2.0, 0.0]), np.array([1.0, 0.0]), tol)
    assert (d.abs, d.rel) == (1.0, 1.0)
    assert verify.compare(np.array([1.0]), np.array([0.0]), tol).rel == float("inf")
    assert not verify.compare(np.array([np.nan]), np.array([0.0]), tol).ok
    assert not verify.compare(np.zeros(2), np.zeros(3), tol).ok


def test_atol_and_rtol_both_widen_the_bound(spec, standins, capsys):
    standins["beta"] = StandIn("beta", {"a": 5e-5, "d": 5e-5})
    assert verify.verify_command(_args(spec)) == 1
    assert verify.verify_command(_args(spec, atol=1e-4)) == 0
    assert "agree within atol 0.0001, rtol 1e-06" in capsys.readouterr().out
    # the same error relative to |a|: within rtol exactly when rtol exceeds the worst ratio
    report = verify.run_backends(*_setup(spec), tolerance=verify.Tolerance(0.0, 1.0))
    worst = report.pairs[("beta", "reference")].rel
    assert 0 < worst < 1
    for rtol, ok in ((worst * 0.99, False), (worst * 1.01, True)):
        assert verify.verify_command(_args(spec, atol=0.0, rtol=rtol)) == (0 if ok else 1)


def _setup(spec):
    from dslc.compiler import compile_file
    from dslc.weights import init_weights

    graph = compile_file(spec).model()
    return graph, init_weights(graph, 0), verify.seeded_batch(graph, 3, 0)


def test_report_holds_every_output(spec, standins):
    report = verify.run_backends(*_setup(spec))
    assert {len(ys) for ys in report.outputs.values()} == {3}
    assert set(report.pairs) == {("alpha", "reference"), ("beta", "reference"),
                                 ("alpha", "beta")}
    assert all(len(p.per_output) == 3 for p in report.pairs.values())
    assert report.within() and report.divergences == {}


def test_a_backend_that_is_not_installed_is_listed_not_run(spec, standins, capsys):
    class Missing(StandIn):
        frameworks = ("surely_not_an_installed_module",)
        extra = "missing"

    standins["beta"] = Missing("beta")
    assert verify.verify_command(_args(spec)) == 0
    out = capsys.readouterr().out
    assert "beta: not run (backend `beta` needs `surely_not_an_installed_module`" in out
    assert list(_lines(out)) == ["alpha vs reference"]


def test_without_any_framework_there_is_nothing_to_verify(spec, monkeypatch):
    monkeypatch.setattr(verify, "backend_names", lambda **kw: ["reference"])
    with pytest.raises(DslError, match="no framework backend"):
        verify.verify_command(_args(spec))


@pytest.mark.parametrize("flag,value", [("atol", float("nan")), ("atol", float("inf")),
                                        ("atol", -1.0), ("rtol", -1e-6), ("rtol", float("nan"))])
def test_tolerances_must_be_finite_and_not_negative(spec, flag, value):
    with pytest.raises(DslError, match=f"--{flag}"):
        verify.verify_command(_args(spec, **{flag: value}))


def test_tol_is_an_alias_of_atol_and_nan_exits_2(spec, capsys):
    from dslc.cli import main

    assert main(["verify", str(spec), "--tol", "nan"]) == 2
    assert "--tol" in capsys.readouterr().err
    assert main(["verify", str(spec), "--rtol", "-1"]) == 2
    assert "--rtol" in capsys.readouterr().err
