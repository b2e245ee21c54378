"""Inputs at the edges of the front end: huge numbers, deep nesting, runaway expansion,
oversized layers, odd text. Each gives located DslErrors, never a Python exception, and
runaway input stops at a cap on work (asserted by counting the work, never by a clock)."""

import textwrap

import pytest
from conftest import ROOT, run_dslc

from dslc import compiler
from dslc.compiler import compile_text
from dslc.diagnostics import DslError
from dslc.passes import build


def errors(src: str) -> list:
    with pytest.raises(DslError) as info:
        compile_text(textwrap.dedent(src), "t.dl")
    diags = info.value.diagnostics
    for d in diags:
        assert d.span is not None and d.span.file == "t.dl" and d.span.line >= 1, d.message
    return diags


def messages(src: str) -> list[str]:
    return [d.message for d in errors(src)]


MODEL = "model m {{ input x: f32[4]\n {} }}\n"


# 1. numbers and nesting
@pytest.mark.parametrize("src,message", [
    ("let x = " + "9" * 5000 + "\n", "number too large"),
    ("let x = " + "+".join(["1"] * 600) + "\n", "nested too deeply"),
    ("let x = " + "[" * 5000 + "1" + "]" * 5000 + "\n", "nested too deeply"),
    ("let x = " + "-" * 5000 + "1\n", "nested too deeply"),
    ("let a = 1" + "0" * 339 + "\nlet b = a*a/3\n", "number too large"),
    ("let a = 4000000000\nlet b = a*a*a\n", "number too large"),
    ("let a = 3037000500\nlet b = a*a/3\n", "number too large"),
    (MODEL.format("dense(" + "relu(" * 3000 + "x" + ")" * 3000 + ", 2)"), "nested too deeply"),
])
def test_numbers_and_nesting(src, message):
    diags = errors(src)
    assert any(message in d.message for d in diags), [d.message for d in diags]


def test_many_parentheses_are_fine():
    compile_text("let n = " + "(" * 5000 + "1" + ")" * 5000 + "\n" + MODEL.format("dense(n)"))


def test_big_float_arithmetic_is_fine():
    spec = compile_text("let a = 1e300\nlet b = a * 10\nmodel m { input x: f32[2]\n dense(2) }\n")
    assert spec.model().nodes


def test_division_stays_exact():
    spec = compile_text("let w = 9007199254740993 / 1\nmodel m { input x: f32[2]\n"
                        " dense(w / 9007199254740993) }\n")
    assert spec.model().nodes[0].attrs.units == 1


def test_cli_reports_deep_nesting(tmp_path):
    f = tmp_path / "deep.dl"
    f.write_text("let x = " + "+".join(["1"] * 600) + "\n")
    proc = run_dslc("check", f)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr
    assert "deep.dl:1:" in proc.stderr


# 2. runaway expansion: each stops at a cap, counted in the builder's own work
@pytest.fixture
def builders(monkeypatch):
    """The GraphBuilders `compile_text` makes, to count the statements they ran (`steps`)
    and the layers they built (`nodes`)."""
    made: list[build.GraphBuilder] = []

    class Counted(build.GraphBuilder):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(compiler, "GraphBuilder", Counted)
    return made


def test_block_that_calls_itself_twice_stops_at_the_depth_cap(builders):
    src = """
        block b(n: int) {
            input x
            h = b(x, n)
            k = b(x, n)
            output add(h, k)
        }
        model m { input x: f32[4]
            b(1)
        }
    """
    diags = errors(src)
    assert len(diags) == 1 and "calls itself too deeply" in diags[0].message
    (b,) = builders
    # One straight descent to the cap, not 2**32 calls: a statement or two a level.
    assert b.steps <= 2 * build.MAX_BLOCK_DEPTH + 2, b.steps
    assert b.nodes == []


def test_exponential_blocks_stop_at_the_layer_cap(builders, monkeypatch):
    monkeypatch.setattr(build, "MAX_LAYERS", 1000)  # the rule, at a cap cheap to reach
    blocks = ["block b0(n: int) { input x\n relu(x) }"]
    for i in range(1, 25):
        blocks.append(f"block b{i}(n: int) {{ input x\n h = b{i - 1}(x, n)\n"
                      f" k = b{i - 1}(x, n)\n output add(h, k) }}")
    src = "\n".join(blocks) + "\nmodel m { input x: f32[4]\n b24(1) }\n"
    diags = errors(src)
    assert len(diags) == 1
    assert diags[0].message == "this call of block `b24` expands to more than 1,000 layers"
    assert diags[0].span.line == src.count("\n", 0, src.index("b24(1)")) + 1  # the model's call
    (b,) = builders
    assert len(b.nodes) == 1000  # 2**24 relus and as many adds were asked for
    assert b.steps <= 4 * 1000, b.steps


def test_nested_repeat_stops_at_the_layer_cap(builders):
    src = "model m { input x: f32[4]\n repeat 1000 { repeat 1000 { repeat 1000 { relu } } } }\n"
    diags = errors(src)
    assert len(diags) == 1
    assert "`repeat` expands to more than 100,000 layers" in diags[0].message
    assert (diags[0].span.line, diags[0].span.col) == (2, 2)
    (b,) = builders
    assert len(b.nodes) == build.MAX_LAYERS == 100_000
    assert b.steps <= 3 * build.MAX_LAYERS, b.steps  # a repetition and a statement a layer


def test_huge_empty_repeat_stops_at_the_statement_cap(builders):
    (d,) = errors(MODEL.format("dense(2)\n repeat 1000000000 { }"))
    assert "expands to more than 1,000,000 statements" in d.message
    (b,) = builders
    assert b.steps == build.MAX_STEPS + 1 and len(b.nodes) == 1


def test_repeated_error_reported_once():
    diags = errors(MODEL.format("repeat 1000 { dense(2, activaton=relu) }"))
    assert len(diags) == 1


# 3. sizes
@pytest.mark.parametrize("src,message", [
    (MODEL.format("dense(100000000000000000000)"), "number too large"),
    (MODEL.format("dense(10000000000)"), "too large"),
    ("model m { input x: f32[100000]\n dense(100000) }", "kernel [100000, 100000] is too large"),
    ("model m { input x: f32[3000000000]\n dense(1) }", "dimension 3,000,000,000 is too large"),
    ("model m { input x: f32[50000, 50000, 1]\n conv2d(2, kernel=1) }", "too large"),
])
def test_sizes(src, message):
    diags = errors(src)
    assert any(message in d.message for d in diags), [d.message for d in diags]


# 5, 6. attribute types
@pytest.mark.parametrize("layer,message", [
    ('dense("10")', "`units` of `dense`: input should be a valid integer (got the string '10')"),
    ("dense(2.5)", "`units` of `dense`: input should be a valid integer"),
    ("dense(true)", "`units` of `dense`: input should be a valid integer"),
    ('dense(2, use_bias="yes")', "`use_bias` of `dense`: input should be a valid boolean"),
    ('dropout("0.5")', "`rate` of `dropout`: input should be a valid number"),
])
def test_no_string_coercion(layer, message):
    (msg,) = messages(MODEL.format(layer))
    assert msg.startswith(message)


def test_strict_types_keep_valid_specs():
    g = compile_text("model m { input x: f32[8, 8, 1]\n conv2d(2, kernel=[3, 3], strides=1)\n"
                     " dropout(0)\n flatten\n dense(4 / 2) }\n").model()
    assert [n.op for n in g.nodes] == ["conv2d", "dropout", "flatten", "dense"]


@pytest.mark.parametrize("layer", ['conv2d(2, kernel="3")', "conv2d(2, kernel=[3])",
                                   "conv2d(2, kernel=[3, 3, 3])"])
def test_kernel_type_one_error(layer):
    src = "model m { input x: f32[8, 8, 1]\n " + layer + " }"
    (msg,) = messages(src)
    assert msg.startswith("`kernel` of `conv2d` takes an integer or a pair of integers")


# 4. choices
def test_choice_hints():
    (d,) = errors("model m { input x: f32[8, 8, 1]\n conv2d(2, padding=foo) }")
    assert d.hint == "use one of `same`, `valid`"
    (d,) = errors(MODEL.format("dense(2, activation=gelux)"))
    assert d.hint == "did you mean `gelu`?"
    (d,) = errors("model m { input x: f32[8, 8, 1]\n conv2d(2, padding=sam) }")
    assert d.hint == "did you mean `same`?"


# 7. text
def test_bom_is_skipped():
    spec = compile_text("\ufeffmodel m { input x: f32[2]\n dense(1) }\n")
    assert spec.model().nodes


def test_unterminated_string():
    (d,) = errors('model m { input x: f32[2]\n dense(1) }\ntrain m { data = npz("x.npz)\n}\n')
    assert d.message == "unterminated string"
    assert d.hint and '"' in d.hint
    assert (d.span.line, d.span.col) == (3, 22)


# 8. dead layers
def test_dead_layer():
    src = "model dead { input x: f32[4]\n a = dense(x, 3)\n b = dense(a, 2)\n output a }\n"
    (d,) = errors(src)
    assert d.message == "`b` is computed but reaches no output"
    assert d.hint == "add it to `output`, or remove it"
    assert (d.span.line, d.span.col) == (3, 6)


def test_no_dead_layers_in_specs_and_examples():
    for path in sorted((ROOT / "specs").glob("*.dl")) + sorted((ROOT / "examples").glob("*.dl")):
        proc = run_dslc("check", path)
        assert proc.returncode == 0, (path, proc.stderr)


# 9. long names
@pytest.mark.parametrize("src", [
    "model " + "m" * 300 + " { input x: f32[2]\n dense(1) }",
    "model m { input " + "x" * 300 + ": f32[2]\n dense(1) }",
    "model m { input x: f32[2]\n " + "h" * 300 + " = dense(1) }",
])
def test_long_names(src):
    (msg,) = messages(src)
    assert "is too long (300 characters, at most 100)" in msg


def test_names_of_100_characters_are_fine():
    spec = compile_text("model " + "m" * 100 + " { input x: f32[2]\n " + "h" * 100 + " = dense(1) }")
    assert spec.model().nodes[0].name == "h" * 100


# 10. name clashes
def test_binding_that_clashes_with_block_layer():
    src = """
        block residual(filters: int) {
            input x
            h = dense(x, filters)
            output add(x, h)
        }
        model m {
            input x: f32[4]
            residual(4)
            residual_1_h = dense(4)
        }
    """
    (d,) = errors(src)
    assert d.message == "the name `residual_1_h` is already taken by another layer (line 4)"
    assert d.span.line == 10


def test_binding_that_clashes_with_auto_name():
    src = "model m { input x: f32[4]\n dense(4)\n dense_1 = dense(2) }\n"
    (d,) = errors(src)
    assert "`dense_1` is already taken" in d.message


def test_rebinding_a_name_still_works():
    g = compile_text("model m { input x: f32[4]\n h = dense(4)\n h = dense(h, 2)\n"
                     " x = relu(h) }\n").model()
    assert [n.name for n in g.nodes] == ["h", "h_1", "x_1"]
