"""`dslc check`: the specs' totals, the language's features, shapes, JSON, work that grows
linearly with the spec. (Speed figures: bench/bench_check.py.)"""

import json
import sys
import textwrap

import pytest
from conftest import ROOT, SPECS, run_dslc

from dslc.compiler import compile_text
from dslc.diagnostics import DslError

# Keras's own count_params() of the tutorial models.
TOTALS = {
    "linear_regression": 2, "logistic_regression": 3, "mlp_784_256": 203_530,
    "mlp_784_64": 50_890, "cnn_small": 54_410, "cnn_mnist": 225_034, "cnn_wide": 693_962,
    "rnn_simple": 1_121, "transformer_classifier": 17_922,
}


def test_every_spec_has_a_file():
    names = {p.stem for p in SPECS}
    assert set(TOTALS) <= names
    assert {"digits_cnn", "digits_mlp"} <= names


@pytest.mark.parametrize("name,total", sorted(TOTALS.items()))
def test_spec_totals(name, total):
    proc = run_dslc("check", "--json", ROOT / "specs" / f"{name}.dl")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    (model,) = data["models"]
    assert model["name"] == name
    assert model["params"] == total
    assert model["trainable_params"] == total
    assert sum(layer["params"] for layer in model["layers"]) == total
    assert set(model["layers"][0]) == {"name", "op", "shape", "params", "blocks"}


def test_table_output():
    proc = run_dslc("check", ROOT / "specs" / "cnn_mnist.dl")
    assert proc.returncode == 0
    out = proc.stdout
    assert "model cnn_mnist" in out
    assert "conv2d_1" in out and "[26, 26, 32]" in out and "320" in out
    assert "total params: 225,034" in out and "trainable: 225,034" in out


def check(src: str):
    return compile_text(textwrap.dedent(src), "t.dl")


def shapes(src: str, model: str | None = None):
    g = check(src).model(model)
    return {n.name: n.type.shape for n in g.nodes}


def test_graph_blocks_repeat_let_and_arithmetic():
    spec = check("""
        let width = 8 * 2
        block residual(filters: int) {
            input x
            h = conv2d(x, filters, kernel=3, padding=same, activation=relu)
            h = conv2d(h, filters, kernel=3, padding=same)
            output relu(add(x, h))
        }
        model tiny_resnet {
            input image: f32[32, 32, 3]
            conv2d(width, kernel=3, padding=same, activation=relu)
            repeat 3 { residual(width) }
            global_avgpool2d
            dense(10, activation=softmax)
        }
    """)
    g = spec.model()
    ops = [n.op for n in g.nodes]
    assert ops.count("conv2d") == 7 and ops.count("add") == 3
    assert g.nodes[-1].type.shape == (10,)
    # The residual's add takes the block input and the second conv.
    add = next(n for n in g.nodes if n.op == "add")
    assert add.inputs == ["conv2d_1", "residual_1_h_1"]
    assert g.param_count == 448 + 6 * 2320 + 170


def test_named_bindings_multiple_inputs_and_outputs():
    g = check("""
        model two {
            input a: f32[4]
            input b: f32[6]
            ha = dense(a, 8, activation=relu)
            hb = dense(b, 8, activation=tanh)
            both = concat(ha, hb)
            score = dense(both, 1)
            label = dense(both, 3, activation=softmax)
            output score, label
        }
    """).model()
    assert [i.name for i in g.inputs] == ["a", "b"]
    assert g.outputs == ["score", "label"]
    assert g.node("both").type.shape == (16,)
    assert g.node("both").inputs == ["ha", "hb"]


def test_use_imports_blocks(tmp_path):
    (tmp_path / "lib.dl").write_text("block mlp(w: int) { input x\n dense(x, w, activation=relu) }\n")
    main = tmp_path / "main.dl"
    main.write_text('use "lib.dl"\nmodel m { input x: f32[3]\n mlp(5)\n dense(1) }\n')
    from dslc.compiler import compile_file

    g = compile_file(main).model()
    assert [n.name for n in g.nodes] == ["mlp_1_dense_1", "dense_1"]


def test_use_cycle_and_missing_file(tmp_path):
    (tmp_path / "a.dl").write_text('use "b.dl"\n')
    (tmp_path / "b.dl").write_text('use "a.dl"\nuse "missing.dl"\n')
    from dslc.compiler import compile_file

    with pytest.raises(DslError) as info:
        compile_file(tmp_path / "a.dl")
    messages = [d.message for d in info.value.diagnostics]
    assert any("cycle" in m for m in messages)
    assert any("missing.dl" in m for m in messages)


@pytest.mark.parametrize("layer,shape", [
    ("conv2d(8, kernel=3)", (26, 26, 8)),
    ("conv2d(8, kernel=3, padding=same)", (28, 28, 8)),
    ("conv2d(8, kernel=4, strides=2, padding=same)", (14, 14, 8)),
    ("conv2d(8, kernel=3, strides=2)", (13, 13, 8)),
    ("conv2d(8, kernel=[3, 5], dilation=2)", (24, 20, 8)),
    ("maxpool2d(2)", (14, 14, 1)),
    ("maxpool2d(3, strides=2)", (13, 13, 1)),
    ("avgpool2d(3, strides=2, padding=same)", (14, 14, 1)),
    ("global_maxpool2d", (1,)),
    ("flatten", (784,)),
    ("reshape([28, 28])", (28, 28)),
    ("reshape([-1, 4])", (196, 4)),
    ("dropout(0.5)", (28, 28, 1)),
    ("leaky_relu(0.2)", (28, 28, 1)),
])
def test_shapes(layer, shape):
    got = shapes(f"model m {{ input x: f32[28, 28, 1]\n {layer} }}")
    assert list(got.values())[-1] == shape


def test_rnn_shapes_and_dynamic_time():
    got = shapes("model m { input s: f32[?, 3]\n simple_rnn(4, return_sequences=true)\n"
                 " simple_rnn(5)\n dense(1) }")
    assert list(got.values()) == [(None, 4), (5,), (1,)]


def test_json_keeps_dynamic_dims_as_null(tmp_path):
    f = tmp_path / "s.dl"
    f.write_text("model m { input s: f32[?, 3]\n simple_rnn(4) }")
    proc = run_dslc("check", "--json", f)
    assert json.loads(proc.stdout)["models"][0]["layers"][0]["shape"] == [None, 3]


def _spec(layers: int) -> str:
    body = "\n".join(["dense(16, activation=relu)"] * layers)
    return f"model big {{\n input x: f32[16]\n{body}\n dense(1)\n}}\n"


def test_five_thousand_layers_check():
    assert len(compile_text(_spec(5000), "big.dl").model().nodes) == 5001


def _traced_events(fn) -> int:
    """Python-level work of `fn()`: the calls, lines and returns a tracer sees. Unlike a clock,
    the count does not change with the machine's load."""
    count = 0

    def tracer(frame, event, arg):
        nonlocal count
        count += 1
        return tracer

    outer = sys.gettrace()  # a coverage tool's, say
    sys.settrace(tracer)
    try:
        fn()
    finally:
        sys.settrace(outer)
    return count


def test_checking_work_grows_linearly():
    compile_text(_spec(2), "warm.dl")  # imports, parser tables, validators out of the way
    small = _traced_events(lambda: compile_text(_spec(500), "a.dl"))
    large = _traced_events(lambda: compile_text(_spec(1000), "b.dl"))
    assert large <= 2.1 * small, (small, large)  # quadratic work would give about 4x


@pytest.mark.parametrize("path", SPECS + sorted((ROOT / "examples").glob("*.dl")),
                         ids=lambda p: p.name)
def test_every_spec_and_example_checks(path):
    from dslc.compiler import compile_file

    spec = compile_file(path)
    for graph in spec.models.values():
        assert all(n.type is not None for n in graph.nodes)


def test_a_keyword_is_a_name_where_the_keyword_cannot_stand():
    """The fast lexer makes every keyword a keyword; the parser then falls back to the
    contextual one, which lets `train` or `model` name a layer inside a model."""
    from dslc.compiler import compile_text

    for kw in ("train", "model", "block", "use"):
        spec = compile_text(f"model m {{\n    input x: f32[4]\n    {kw} = dense(x, 3)\n"
                            f"    dense({kw}, 2)\n}}\n", "<kw>")
        assert [n.name for n in spec.model().nodes][0] == kw
