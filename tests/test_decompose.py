"""Decompositions: an op a backend has no rule for is lowered through the ops it is written
with (`Op.decompose`, `dslc.backends.lowering.expand`). Proved on every backend that runs by
taking away its own rule for the global pools, and unit-tested on `expand` and `prepare`."""

from __future__ import annotations

import numpy as np
import pytest

from dslc.backends import backend_names, get_backend
from dslc.backends.lowering import LoweringTable, expand
from dslc.backends.reference.interpret import Interpreter
from dslc.compiler import compile_text
from dslc.diagnostics import DslError
from dslc.ir.graph import Graph
from dslc.verify import seeded_batch
from dslc.weights import init_weights

GLOBAL_POOLS = {"global_avgpool2d": "avgpool2d", "global_maxpool2d": "maxpool2d"}


def spec_graph(text: str) -> Graph:
    return compile_text(text, "<decompose>").model()


def pooled(op: str) -> Graph:
    # a non-square image, so the full window is (5, 4), not (5, 5)
    return spec_graph(f"""model m {{
    input x: f32[5, 4, 3]
    c = conv2d(x, 4, kernel=2, padding=same, activation=relu)
    g = {op}(c)
    dense(g, 2)
}}
""")


@pytest.mark.parametrize("op", sorted(GLOBAL_POOLS))
@pytest.mark.parametrize("name", backend_names(runs=True))
def test_a_backend_without_a_global_pool_rule_runs_its_decomposition(name, op, monkeypatch):
    backend = get_backend(name)
    try:
        backend.require()
    except DslError as exc:
        pytest.skip(str(exc))
    graph = pooled(op)
    weights = init_weights(graph, 4)
    x = seeded_batch(graph, 3, seed=2)[0]
    # the oracle first, with the reference's own rule for the global pool
    want = Interpreter(graph, weights, exact=True).predict(x)

    monkeypatch.delitem(backend.lowerings.rules, op, raising=False)
    assert op not in backend.lowerings.rules and backend.lowerings.missing() == []
    lowered = backend.lowerings.prepare(graph)
    assert [(n.name, n.op) for n in lowered.nodes] == [
        ("c", "conv2d"), ("g_pool", GLOBAL_POOLS[op]), ("g", "flatten"), ("dense_1", "dense")]
    assert lowered.node("g_pool").attrs.kernel == (5, 4)

    got = backend.build(graph, weights).predict(x)
    assert got.shape == want.shape
    assert float(np.abs(got.astype(np.float64) - want).max()) <= 1e-5


GLOBAL_POOLS_1D = {"global_avgpool1d": "avgpool1d", "global_maxpool1d": "maxpool1d"}


@pytest.mark.parametrize("op", sorted(GLOBAL_POOLS_1D))
@pytest.mark.parametrize("name", backend_names(runs=True))
def test_a_backend_without_a_1d_global_pool_rule_runs_its_decomposition(name, op, monkeypatch):
    backend = get_backend(name)
    try:
        backend.require()
    except DslError as exc:
        pytest.skip(str(exc))
    graph = spec_graph(f"""model m {{
    input x: f32[7, 3]
    c = conv1d(x, 4, kernel=2, padding=same, activation=relu)
    g = {op}(c)
    dense(g, 2)
}}
""")
    weights = init_weights(graph, 4)
    x = seeded_batch(graph, 3, seed=2)[0]
    want = Interpreter(graph, weights, exact=True).predict(x)
    monkeypatch.delitem(backend.lowerings.rules, op, raising=False)
    lowered = backend.lowerings.prepare(graph)
    assert [(n.name, n.op) for n in lowered.nodes] == [
        ("c", "conv1d"), ("g_pool", GLOBAL_POOLS_1D[op]), ("g", "flatten"), ("dense_1", "dense")]
    assert lowered.node("g_pool").attrs.kernel == 7
    got = backend.build(graph, weights).predict(x)
    assert float(np.abs(got.astype(np.float64) - want).max()) <= 1e-5


# -- expand and prepare, unit by unit -------------------------------------------------------

def no_global_pools(op: str) -> bool:
    return op not in GLOBAL_POOLS


def test_expand_names_the_parts_after_the_layer_and_the_last_keeps_its_name():
    graph = pooled("global_avgpool2d")
    out = expand(graph, no_global_pools)
    pool, flat = out.node("g_pool"), out.node("g")
    assert (pool.op, pool.inputs, pool.attrs.kernel, pool.attrs.strides) == \
        ("avgpool2d", ["c"], (5, 4), (5, 4))
    assert (flat.op, flat.inputs) == ("flatten", ["g_pool"])
    # consumers, outputs, types and places are unchanged
    assert out.node("dense_1").inputs == ["g"]
    assert out.outputs == graph.outputs
    assert flat.type == graph.node("g").type
    assert pool.span == flat.span == graph.node("g").span
    assert out.param_specs() == graph.param_specs()
    assert [n.name for n in graph.nodes] == ["c", "g", "dense_1"]  # the input graph is kept


def test_expand_keeps_the_graph_when_every_op_has_a_rule():
    graph = pooled("global_maxpool2d")
    assert expand(graph, lambda op: True) is graph


def test_expand_picks_a_fresh_name_when_the_part_name_is_taken():
    graph = spec_graph("""model m {
    input x: f32[4, 4, 2]
    g_pool = relu(x)
    g = global_maxpool2d(g_pool)
    output g
}
""")
    out = expand(graph, no_global_pools)
    assert [(n.name, n.op, n.inputs) for n in out.nodes] == [
        ("g_pool", "relu", ["x"]), ("g_pool_2", "maxpool2d", ["g_pool"]),
        ("g", "flatten", ["g_pool_2"])]
    assert out.outputs == ["g"]


def test_expand_leaves_an_op_without_decomposition_for_prepare_to_reject():
    graph = pooled("global_avgpool2d")
    out = expand(graph, lambda op: op not in ("global_avgpool2d", "dense"))
    assert out.node("dense_1").op == "dense"


def toy_table(*ops: str) -> LoweringTable:
    table: LoweringTable = LoweringTable("toy")
    for op in ops:
        table.add(op, lambda ctx, node, xs: xs[0])
    return table


def test_prepare_decomposes_through_the_table():
    table = toy_table("conv2d", "relu", "avgpool2d", "flatten", "dense")
    assert table.supports("global_avgpool2d") and not table.supports("global_maxpool2d")
    lowered = table.prepare(pooled("global_avgpool2d"))
    assert [n.op for n in lowered.nodes] == ["conv2d", "avgpool2d", "flatten", "dense"]


def test_an_op_with_neither_rule_nor_decomposition_is_a_located_error():
    table = toy_table("conv2d", "relu", "avgpool2d", "flatten")
    assert "dense" in table.missing()
    with pytest.raises(DslError, match="op `dense` is not supported by backend toy") as info:
        table.prepare(pooled("global_avgpool2d"))
    span = info.value.diagnostics[0].span
    assert span is not None and (span.file, span.line) == ("<decompose>", 5)


def test_a_global_pool_whose_window_op_is_missing_is_not_supported_at_its_line():
    table = toy_table("conv2d", "flatten", "dense")
    assert "global_maxpool2d" in table.missing()
    with pytest.raises(DslError, match="is not supported by backend toy") as info:
        table.prepare(pooled("global_maxpool2d"))
    span = info.value.diagnostics[0].span
    assert span is not None and span.line == 4


def test_a_rule_for_an_unknown_op_fails_when_registered():
    table = toy_table()
    with pytest.raises(ValueError, match="unknown op 'conv3d'"):
        table.add("conv3d", lambda ctx, node, xs: xs[0])
    table.add("relu", lambda ctx, node, xs: xs[0])
    with pytest.raises(ValueError, match="lowered twice"):
        table.add("relu", lambda ctx, node, xs: xs[0])
