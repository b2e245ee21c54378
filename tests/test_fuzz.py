"""Property: whatever a user types, dslc answers with its own located error or a result —
never a Python exception."""

import pytest
from conftest import SPECS
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dslc.compiler import compile_text
from dslc.diagnostics import DslError

TEXTS = [p.read_text() for p in SPECS]
TOKENS = ["{", "}", "(", ")", "[", "]", ",", "=", ":", "-", "*", "/", "?", '"x"', "0", "-1",
          "1e-3", "1e999", "model", "block", "train", "input", "output", "let", "use", "repeat",
          "for", "in", "for u in [2, 3] {", "for u in [4] { dense(u) }", "in=",
          "dense", "conv2d", "flatten", "simple_rnn", "relu", "same", "x", "true", "loss", "data",
          "units=", "kernel=", "\n", " ", "#", "'", "\\", "é", "\x00"]


@st.composite
def mutated(draw):
    text = draw(st.sampled_from(TEXTS))
    for _ in range(draw(st.integers(1, 4))):
        pos = draw(st.integers(0, len(text)))
        kind = draw(st.sampled_from(["insert", "delete", "replace"]))
        if kind == "insert":
            text = text[:pos] + draw(st.sampled_from(TOKENS)) + text[pos:]
        elif kind == "delete":
            text = text[:pos] + text[pos + draw(st.integers(1, 12)):]
        else:
            text = text[:pos] + draw(st.sampled_from(TOKENS)) + text[pos + draw(st.integers(1, 6)):]
    return text


def assert_located(err: DslError, text: str) -> None:
    assert err.diagnostics
    n_lines = max(1, len(text.splitlines()) + 1)
    for d in err.diagnostics:
        assert d.message
        assert d.span is not None, d.message
        assert d.span.file == "fuzz.dl"
        assert 1 <= d.span.line <= n_lines, (d.span, d.message)
        assert d.span.col >= 1


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_mutated_specs_give_only_dsl_errors(text):
    try:
        compile_text(text, "fuzz.dl")
    except DslError as err:
        assert_located(err, text)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=80))
def test_arbitrary_text(text):
    try:
        compile_text(text, "fuzz.dl")
    except DslError as err:
        assert_located(err, text)


@pytest.mark.parametrize("text", TEXTS[:1])
def test_valid_specs_still_compile(text):
    compile_text(text, "fuzz.dl")
