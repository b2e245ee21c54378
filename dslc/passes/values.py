"""Constant expressions: numbers, strings, symbols (`relu`, `same`), lists, arithmetic, and
config calls (`adam(lr=1e-3)`) in `train` blocks."""

from __future__ import annotations

import math
import sys
from dataclasses import field
from typing import Any

from dslc.diagnostics import DslError, Span
from dslc.ir import ast
from dslc.records import record


class Symbol(str):
    """A bare name used as a value: `relu`, `same`, `accuracy`."""

    span: Span | None = None


@record
class CallValue:
    name: str
    args: list[Any]
    kwargs: dict[str, Any]
    span: Span
    arg_spans: list[Span] = field(default_factory=list)
    kwarg_spans: dict[str, Span] = field(default_factory=dict)


def symbol(name: str, span: Span) -> Symbol:
    s = Symbol(name)
    s.span = span
    return s


def evaluate(expr, env: dict[str, Any]) -> Any:
    """Value of a constant expression; `env` maps `let` names to values."""
    if isinstance(expr, ast.Num | ast.Str):
        return expr.value
    if isinstance(expr, ast.Name):
        if expr.id in env:
            return env[expr.id]
        if expr.id == "true":
            return True
        if expr.id == "false":
            return False
        return symbol(expr.id, expr.span)
    if isinstance(expr, ast.ListExpr):
        return [evaluate(e, env) for e in expr.items]
    if isinstance(expr, ast.Neg):
        v = evaluate(expr.operand, env)
        _need_number(v, expr.operand.span, "-")
        return _checked(-v, expr.span)
    if isinstance(expr, ast.BinOp):
        left, right = evaluate(expr.left, env), evaluate(expr.right, env)
        _need_number(left, expr.left.span, expr.op)
        _need_number(right, expr.right.span, expr.op)
        try:
            return _checked(_arith(expr, left, right), expr.span)
        except OverflowError:
            raise DslError("number too large", expr.span, f"integers go up to {MAX_INT:,}") from None
    if isinstance(expr, ast.Call):
        return CallValue(
            name=expr.func,
            args=[evaluate(a, env) for a in expr.args],
            kwargs={k.name: evaluate(k.value, env) for k in expr.kwargs},
            span=expr.func_span,
            arg_spans=[a.span for a in expr.args],
            kwarg_spans={k.name: k.span for k in expr.kwargs},
        )
    if isinstance(expr, ast.Dynamic):
        return None
    raise DslError("this is not a value", getattr(expr, "span", None))


# Integers are 64-bit, as in every backend; the parser rejects larger literals.
MAX_INT = 2**63 - 1


def _arith(expr, left, right):
    if expr.op == "+":
        return left + right
    if expr.op == "-":
        return left - right
    if expr.op == "*":
        return left * right
    if right == 0:
        raise DslError("division by zero", expr.right.span)
    if isinstance(left, int) and isinstance(right, int):
        if left % right == 0:
            return left // right
    return left / right


def _checked(v, span):
    if isinstance(v, int) and not -MAX_INT - 1 <= v <= MAX_INT:
        raise DslError("number too large", span, f"integers go up to {MAX_INT:,}")
    if isinstance(v, float) and not math.isfinite(v):
        # `inf` or `nan` would reach the generated code as a name that does not exist.
        raise DslError("number too large: the result is not a finite number", span,
                       f"numbers go up to about {sys.float_info.max:.3g}")
    return v


def _need_number(v, span, op) -> None:
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise DslError(f"`{op}` needs numbers, got {describe(v)}", span)


def describe(v) -> str:
    if isinstance(v, Symbol):
        return f"the name `{v}`"
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, str):
        return f"the string {v!r}"
    if isinstance(v, CallValue):
        return f"a call of `{v.name}`"
    if isinstance(v, list):
        return "a list"
    return f"`{v}`"
