"""Search spaces in a spec: `choice(a, b, ...)` and `range(low, high, log=, step=, default=)`.

They are legal as (part of) the value of a top-level `let` or of a train setting:

    let width = choice(32, 64, 128)
    let lr = range(1e-4, 1e-2, log=true, default=2e-3)
    train m { optimizer = adam(lr=lr)  batch = choice(32, 64) ... }

Every command but `dslc tune` sees the spec at its *default point*: a `choice` is its first
option, a `range` its `default=` (else its low end). `dslc check` shows the space; `dslc
train` and `dslc eval` refuse a spec with one (`refuse`), since what they would train is not
what the spec leaves open. `dslc tune` fills the spaces with each trial's values *in the
text* (`fill`), so the spec a trial trains is a plain `.dl` file, written out as such.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from dslc.diagnostics import Collector, DslError, Span
from dslc.ir import ast
from dslc.passes.values import describe, evaluate

SPACE_CALLS = ("choice", "range")
RANGE_ARGS = ("log", "step", "default")


@dataclass(frozen=True)
class Param:
    """One search dimension. `name`: the `let` it defines, or the setting path
    (`optimizer.lr`, `batch`, `preprocess[0][0]`)."""

    name: str
    kind: Literal["choice", "range"]
    span: Span  # of the whole call
    source: str  # the call as written
    options: tuple[str, ...] = ()  # choice: each option's text
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    step: float | None = None
    integer: bool = False  # range over whole numbers (both ends and the step are)
    default: Any = None  # choice: an option's text; range: a number

    def text(self, value: Any) -> str:
        """`value` (an option's text, or a number of the range) as spec text."""
        if self.kind == "choice":
            return str(value)
        return str(int(value)) if self.integer else number_text(float(value))

    @property
    def default_text(self) -> str:
        return self.text(self.default)


def number_text(v: float, digits: int = 3) -> str:
    """A float the way a person writes it, `digits` significant figures; always a float
    literal (`1.0`, not `1`), so a filled-in value keeps its type."""
    text = f"{v:.{digits}g}"
    if not any(c in text for c in ".en"):  # `nan`/`inf` never get here (ranges are finite)
        text += ".0"
    return text


def round_in(param: Param, value: float) -> float:
    """`value` rounded as `number_text` writes it, when that stays inside the range."""
    rounded = float(number_text(value))
    return rounded if param.low <= rounded <= param.high else value


# finding ---------------------------------------------------------------------------------

class _Finder:
    def __init__(self, text: str, errors: Collector):
        self.text = text[1:] if text.startswith("\ufeff") else text  # as the parser saw it
        starts = [0]
        for line in self.text.split("\n"):
            starts.append(starts[-1] + len(line) + 1)
        self.starts = starts
        self.errors = errors
        self.params: list[Param] = []

    def source(self, span: Span) -> str:
        start, end = offsets(span, self.starts)
        return self.text[start:end]

    def unique(self, name: str) -> str:
        taken = {p.name for p in self.params}
        k, base = 2, name
        while name in taken:
            name, k = f"{base}_{k}", k + 1
        return name

    def rewrite(self, expr: Any, path: str) -> Any:
        """`expr` with each space replaced by its default; the spaces recorded."""
        if isinstance(expr, ast.Call) and expr.func in SPACE_CALLS:
            for inner in [*expr.args, *(k.value for k in expr.kwargs)]:
                nested = _first_space(inner)
                if nested is not None:
                    self.errors.error(f"search spaces do not nest: `{nested.func}` inside "
                                      f"`{expr.func}`", nested.func_span)
                    return expr
            try:
                param, node = self.param(expr, self.unique(path))
            except DslError as err:
                self.errors.extend(err)
                return expr.args[0] if expr.args else expr
            self.params.append(param)
            return node
        if isinstance(expr, ast.Call):
            args = [self.rewrite(a, f"{path}[{i}]") for i, a in enumerate(expr.args)]
            kwargs = [ast.replace(k, value=self.rewrite(k.value, f"{path}.{k.name}"))
                      for k in expr.kwargs]
            return ast.replace(expr, args=args, kwargs=kwargs)
        if isinstance(expr, ast.ListExpr):
            return ast.replace(expr, items=[self.rewrite(e, f"{path}[{i}]")
                                                    for i, e in enumerate(expr.items)])
        if isinstance(expr, ast.BinOp):
            return ast.replace(expr, left=self.rewrite(expr.left, path),
                                       right=self.rewrite(expr.right, path))
        if isinstance(expr, ast.Neg):
            return ast.replace(expr, operand=self.rewrite(expr.operand, path))
        return expr

    def param(self, call: ast.Call, name: str) -> tuple[Param, Any]:
        source = self.source(call.span)
        if call.func == "choice":
            if call.kwargs:
                raise DslError("`choice` takes its options only", call.kwargs[0].span,
                               "e.g. `choice(32, 64, 128)`")
            if not call.args:
                raise DslError("`choice` needs at least one option", call.span,
                               "e.g. `choice(32, 64, 128)`")
            options = tuple(self.source(a.span) for a in call.args)
            options = tuple(f"({o})" if isinstance(a, ast.BinOp | ast.Neg) else o
                            for o, a in zip(options, call.args))
            seen = [o for i, o in enumerate(options) if o in options[:i]]
            if seen:
                raise DslError(f"`choice` has the option `{seen[0]}` twice", call.span)
            return (Param(name, "choice", call.span, source, options=options,
                          default=options[0]), call.args[0])
        return self.range(call, name, source)

    def range(self, call: ast.Call, name: str, source: str) -> tuple[Param, Any]:
        if len(call.args) != 2:
            raise DslError("`range` takes a low and a high end", call.span,
                           "e.g. `range(1e-4, 1e-2, log=true)` or `range(1, 4)`")
        kw = {}
        for k in call.kwargs:
            if k.name not in RANGE_ARGS:
                raise DslError(f"`range` has no argument `{k.name}`", k.span,
                               "it takes `log`, `step` and `default`")
            kw[k.name] = (evaluate(k.value, {}), k.span)
        low, high = (_number(evaluate(a, {}), a.span, "the ends of `range`") for a in call.args)
        log = kw.get("log", (False, call.span))
        if not isinstance(log[0], bool):
            raise DslError(f"`log` is `true` or `false`, got {describe(log[0])}", log[1])
        step = None
        if "step" in kw:
            step = _number(kw["step"][0], kw["step"][1], "`step`")
            if step <= 0:
                raise DslError("`step` must be positive", kw["step"][1])
            if log[0]:
                raise DslError("`range` takes `log` or `step`, not both", kw["step"][1])
        if low >= high:
            raise DslError(f"`range` goes from low to high; got {low} to {high}", call.span)
        if log[0] and low <= 0:
            raise DslError("a `log` range needs a low end above 0", call.args[0].span)
        integer = all(isinstance(v, int) for v in (low, high, 1 if step is None else step))
        default = low
        if "default" in kw:
            default = _number(kw["default"][0], kw["default"][1], "`default`")
            if not low <= default <= high:
                raise DslError(f"`default` {default} lies outside the range {low}..{high}",
                               kw["default"][1])
            if integer and not isinstance(default, int):
                raise DslError("this `range` is over whole numbers: `default` must be one",
                               kw["default"][1])
        if step is not None and not _on_grid(default, low, step):
            raise DslError(f"`default` {default} is not `low` plus a multiple of `step`",
                           kw["default"][1])
        param = Param(name, "range", call.span, source, low=low, high=high, log=log[0],
                      step=step, integer=integer, default=default)
        return param, ast.Num(span=call.span, value=int(default) if integer else float(default))


def _on_grid(value: float, low: float, step: float) -> bool:
    k = (value - low) / step
    return math.isclose(k, round(k), abs_tol=1e-9)


def _number(v: Any, span: Span, what: str) -> int | float:
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise DslError(f"{what} must be numbers, got {describe(v)}", span)
    return v


def _first_space(expr: Any) -> ast.Call | None:
    if isinstance(expr, ast.Call):
        if expr.func in SPACE_CALLS:
            return expr
        children = [*expr.args, *(k.value for k in expr.kwargs)]
    elif isinstance(expr, ast.ListExpr):
        children = list(expr.items)
    elif isinstance(expr, ast.BinOp):
        children = [expr.left, expr.right]
    elif isinstance(expr, ast.Neg):
        children = [expr.operand]
    else:
        children = []
    return next((c for c in map(_first_space, children) if c is not None), None)


def offsets(span: Span, starts: list[int]) -> tuple[int, int]:
    """Character offsets `[start, end)` of `span` in text whose lines start at `starts`."""
    end_line = span.end_line or span.line
    end_col = span.end_col or span.col
    return starts[span.line - 1] + span.col - 1, starts[end_line - 1] + end_col - 1


def search_space(program: ast.Program, text: str,
                 errors: Collector) -> tuple[ast.Program, list[Param]]:
    """`program` at the spaces' default point, and the spaces in the order they appear. A
    space inside a model or block (`let` there) is an error: it would be one value per
    block instance, which no trial could name."""
    finder = _Finder(text, errors)
    items = []
    for item in program.items:
        if isinstance(item, ast.Let):
            item = ast.replace(item, value=finder.rewrite(item.value, item.name))
        elif isinstance(item, ast.Train):
            settings = [ast.replace(s, value=finder.rewrite(s.value, s.name))
                        for s in item.settings]
            item = ast.replace(item, settings=settings)
        elif isinstance(item, ast.Model | ast.Block):
            _misplaced(item.body, errors)
        items.append(item)
    if not finder.params:
        return program, []
    return ast.replace(program, items=items), finder.params


def _misplaced(body: list, errors: Collector) -> None:
    for stmt in body:
        if isinstance(stmt, ast.Repeat | ast.For):
            _misplaced(stmt.body, errors)
        if isinstance(stmt, ast.For) and (call := _first_space(stmt.items)) is not None:
            errors.error(f"a search space (`{call.func}`) goes in a top-level `let` or a train "
                         "setting", call.func_span,
                         "move it into a `let` above the model, and loop over that")
        elif isinstance(stmt, ast.Let) and (call := _first_space(stmt.value)) is not None:
            errors.error(f"a search space (`{call.func}`) goes in a top-level `let` or a train "
                         "setting", call.func_span,
                         f"move `let {stmt.name} = ...` out of the model, above it")


# filling ---------------------------------------------------------------------------------

def fill(text: str, space: list[Param], values: dict[str, str]) -> str:
    """`text` with each space replaced by the text of its value in `values` (by name): a
    plain spec with no `choice`/`range` left."""
    if text.startswith("\ufeff"):
        text = text[1:]
    starts = [0]
    for line in text.split("\n"):
        starts.append(starts[-1] + len(line) + 1)
    out = text
    for param in sorted(space, key=lambda p: offsets(p.span, starts), reverse=True):
        start, end = offsets(param.span, starts)
        out = out[:start] + values[param.name] + out[end:]
    return out


def describe_space(space: list[Param]) -> list[dict[str, Any]]:
    """The space as data (`dslc check --json`, the study's record)."""
    return [{"name": p.name, "space": p.source, "default": p.default_text, "line": p.span.line}
            for p in space]


def refuse(spec: Any, command: str) -> None:
    """`dslc train`/`eval` train or judge fixed values: a spec with a search space is
    refused, pointing at `dslc tune`."""
    space: list[Param] = getattr(spec, "space", [])
    if not space:
        return
    names = ", ".join(f"`{p.name}`" for p in space)
    raise DslError(f"`dslc {command}` needs fixed values, and this spec leaves {names} open "
                   f"(`{space[0].source}`)", space[0].span,
                   f"search them with `dslc tune {spec.path} --trials 20`, then {command} the "
                   "best.dl it writes; or write the values in")
