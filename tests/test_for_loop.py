"""`for x in list { ... }`: expanded as `repeat` is (names, caps, one report per mistake), the
variable a constant seen in the body only; mistakes are located errors."""

from __future__ import annotations

import pytest
from test_fmt import plain

from dslc.compiler import compile_text
from dslc.diagnostics import DslError
from dslc.fmt import format_text
from dslc.parse import parse


def graph(body: str, head: str = ""):
    return compile_text(f"{head}model m {{\n    input x: f32[6]\n{body}\n}}\n", "m.dl").model()


def errors(body: str, head: str = "") -> list:
    with pytest.raises(DslError) as info:
        graph(body, head)
    return info.value.diagnostics


def test_the_loop_is_the_statements_written_out():
    looped = graph("    for u in [8, 4, 2] { h = dense(u, activation=relu) }\n    dense(1)")
    written = graph("    h = dense(8, activation=relu)\n    h = dense(4, activation=relu)\n"
                    "    h = dense(2, activation=relu)\n    dense(1)")
    assert plain(looped.nodes) == plain(written.nodes)
    assert [n.name for n in looped.nodes] == ["h", "h_1", "h_2", "dense_1"]


def test_elements_are_any_value():
    g = graph("    for a in [relu, \"tanh\"] { dense(2, activation=a) }\n"
              "    reshape([2, 1, 1])\n"
              "    for k in [[1, 1], [1, 1]] { conv2d(3, kernel=k) }\n    flatten\n"
              "    for w in widths { for s in [1, 2] { dense(w * s) } }", "let widths = [3, 5]\n")
    assert [n.attrs.activation for n in g.nodes[:2]] == ["relu", "tanh"]
    assert [n.attrs.kernel for n in g.nodes if n.op == "conv2d"] == [(1, 1), (1, 1)]
    assert [n.attrs.units for n in g.nodes[-4:]] == [3, 6, 5, 10]


def test_a_block_loops_over_a_list_parameter():
    head = ("block tower(widths: list, activation: str = relu) {\n    input x\n"
            "    for w in widths { dense(w, activation=activation) }\n}\n")
    g = graph("    low = tower([4, 2])\n    tower(low, [3], activation=tanh)", head)
    assert [(n.name, n.attrs.units) for n in g.nodes] == [
        ("low_dense_1", 4), ("low_dense_2", 2), ("tower_1_dense_1", 3)]


def test_the_variable_is_seen_in_the_body_only():
    (d,) = errors("    for u in [2] { dense(u) }\n    dense(u)")
    assert d.span.line == 4 and "got the name `u`" in d.message
    head = "block b() {\n    input x\n    dense(x, u)\n}\n"  # a block sees its parameters only
    (d,) = errors("    for u in [2] { b() }", head)
    assert d.span.line == 3 and "`u`" in d.message


def test_mistakes_are_located():
    cases = {
        "for u in 3 { dense(u) }": (4, 14, "`for` loops over a list, got `3`"),
        "for u in \"ab\" { dense(2) }": (4, 14, "`for` loops over a list, got the string"),
        "for u in [] { dense(2) }": (4, 14, "`for` over an empty list"),
        "for x in [1] { dense(2) }": (4, 9, "would hide a tensor"),
        "for w in [1] { dense(2) }": (4, 9, "would hide a constant"),
        "for dense in [1] { relu }": (4, 9, "would hide a built-in op"),
        "for true in [1] { relu }": (4, 9, "would hide a boolean"),
        "for u in [1] { for u in [2] { relu } }": (4, 24, "enclosing `for` (line 4)"),
        "for u in [1] { u = dense(2) }": (4, 20, "`u` is the variable of the `for` loop"),
        "for u in [1] { let u = 2 }": (4, 20, "it cannot be assigned"),
    }
    for body, (line, col, message) in cases.items():
        (d,) = errors(f"    {body}", "let w = 2\n")
        assert (d.span.line, d.span.col) == (line, col) and message in d.message, (body, d)


def test_parse_errors_are_located():
    with pytest.raises(DslError) as info:
        parse("model m {\n    for u in [1] {}\n    for v in [2] { ; }\n}\n", "m.dl")
    assert [(d.span.line, d.span.col, d.message) for d in info.value.diagnostics] == [
        (2, 5, "this `for` loop has an empty body"), (3, 5, "this `for` loop has an empty body")]
    # Where a keyword cannot stand it is a name, as the old keywords always were (the
    # contextual lexer decides); where it starts a statement it is the keyword.
    for text in ("let in = 3", "model m { input for: f32[2] }", "model m { dense(2, in=1) }",
                 "block b(for: int) { }"):
        parse(text, "m.dl")
    for text, col in (("model m {\n    for = dense(2)\n}", 5), ("model m {\n    let = 3\n}", 5)):
        with pytest.raises(DslError) as info:
            parse(text, "m.dl")
        (d,) = info.value.diagnostics
        assert d.span.col == col and "is a keyword, it cannot be used as a name" in d.message
        assert "`for`, `in`" in d.hint


def test_a_mistake_in_the_body_is_reported_once():
    (d,) = errors("    for u in [1, 2, 3, 4] { dense(u, activaton=relu) }")
    assert "no attribute `activaton`" in d.message


def test_runaway_loops_stop_at_the_caps():
    (d,) = errors("    for u in [1, 2] { repeat 1000 { repeat 1000 { relu } } }")
    assert d.message == "this `for` loop expands to more than 100,000 layers"
    assert (d.span.line, d.span.col) == (3, 5)
    (d,) = errors("    for u in [1, 2] { repeat 1000000000 { } }\n    relu")
    assert "this `for` loop expands to more than 1,000,000 statements" in d.message


def test_names_used_as_before_still_work():
    # Words that start with a keyword are names: the lexer takes the longest match.
    g = graph("    format = dense(2)\n    inner = dense(format, 2)\n    input_2 = relu(inner)")
    assert [n.name for n in g.nodes] == ["format", "inner", "input_2"]


def test_formatting_keeps_loops():
    text = "model m {\n    input x: f32[2]\n    for u in [8, 4] { dense(u) }\n}\n"
    assert format_text(text) == text
