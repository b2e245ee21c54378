"""Syntax tree → graph: resolves names, expands blocks and `repeat`, turns sequential
statements into graph edges, validates each op's attributes. Errors are collected."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from dslc.diagnostics import Collector, DslError, Span, did_you_mean, one_of
from dslc.ir import ast
from dslc.ir.graph import Graph, Input, Node, TensorType
from dslc.ops import get_op
from dslc.ops.registry import all_ops
from dslc.passes.values import CallValue, Symbol, describe, evaluate

DTYPES = {"f32": "f32", "float32": "f32"}
PARAM_TYPES = {"int": int, "float": (int, float), "str": str, "bool": bool, "any": object}


class Poisoned(Exception):
    """A statement already reported an error; its dependents stay quiet."""


@dataclass
class Tensor:
    name: str  # a graph input or node name


@dataclass
class Scope:
    """Names visible while building one model or one block instance."""

    lets: dict[str, Any]
    tensors: dict[str, Tensor | None] = field(default_factory=dict)  # None: poisoned
    prefix: str = ""
    prev: Tensor | None = None


class GraphBuilder:
    def __init__(self, model: ast.Model, blocks: dict[str, ast.Block], lets: dict[str, Any],
                 errors: Collector):
        self.model = model
        self.blocks = blocks
        self.errors = errors
        self.inputs: list[Input] = []
        self.nodes: list[Node] = []
        self.outputs: list[str] = []
        self.used: set[str] = set()
        self.counters: dict[str, int] = {}
        self.root = Scope(lets=dict(lets))
        self.depth = 0
        self.failed_input = False

    # names
    def fresh(self, base: str) -> str:
        if base not in self.used:
            self.used.add(base)
            return base
        k = self.counters.get(base, 1)
        while f"{base}_{k}" in self.used:
            k += 1
        self.counters[base] = k + 1
        name = f"{base}_{k}"
        self.used.add(name)
        return name

    def auto_name(self, op: str, scope: Scope) -> str:
        base = f"{scope.prefix}{op}"
        k = self.counters.get(base, 1)
        while f"{base}_{k}" in self.used:
            k += 1
        self.counters[base] = k + 1
        self.used.add(f"{base}_{k}")
        return f"{base}_{k}"

    # statements
    def build(self) -> Graph:
        self.run_body(self.model.body, self.root, is_block=False)
        if not self.inputs and not self.failed_input:
            self.errors.error(f"model `{self.model.name}` declares no input", self.model.span,
                              "add `input x: f32[...]` as the first statement")
        if not self.outputs and self.root.prev not in (None, _POISON):
            self.outputs = [self.root.prev.name]
        if self.inputs and not self.nodes and not self.errors.diagnostics:
            self.errors.error(f"model `{self.model.name}` has no layers", self.model.span,
                              "add a layer after the input, e.g. `dense(1)`")
        return Graph(name=self.model.name, inputs=self.inputs, nodes=self.nodes,
                     outputs=self.outputs, span=self.model.span)

    def run_body(self, body, scope: Scope, is_block: bool, block_outputs: list | None = None) -> None:
        for stmt in body:
            try:
                self.statement(stmt, scope, is_block, block_outputs)
            except (Poisoned, DslError) as err:
                if isinstance(err, DslError):
                    self.errors.extend(err)
                # Later statements that depend on this one stay quiet: one mistake, one message.
                if isinstance(stmt, ast.Assign):
                    for t in stmt.targets:
                        scope.tensors[t] = None
                elif isinstance(stmt, ast.InputDecl):
                    scope.tensors[stmt.name] = None
                    self.failed_input = True
                scope.prev = _POISON

    def statement(self, stmt, scope: Scope, is_block: bool, block_outputs) -> None:
        if isinstance(stmt, ast.InputDecl):
            if is_block:
                raise DslError("inputs of a block are declared without a type: `input x`", stmt.span)
            self.declare_input(stmt, scope)
        elif isinstance(stmt, ast.Let):
            scope.lets[stmt.name] = evaluate(stmt.value, scope.lets)
        elif isinstance(stmt, ast.Apply):
            outs = self.tensor_expr(stmt.value, scope, allow_multi=True, binding=None)
            scope.prev = outs[-1]
        elif isinstance(stmt, ast.Assign):
            binding = stmt.targets[0] if len(stmt.targets) == 1 else None
            outs = self.tensor_expr(stmt.value, scope, allow_multi=True, binding=binding)
            if len(outs) != len(stmt.targets):
                raise DslError(f"{len(stmt.targets)} names on the left, but the right gives "
                               f"{len(outs)} tensor(s)", stmt.span)
            for target, out in zip(stmt.targets, outs):
                scope.tensors[target] = out
            scope.prev = outs[-1]
        elif isinstance(stmt, ast.Output):
            outs = []
            for v in stmt.values:
                outs.extend(self.tensor_expr(v, scope, allow_multi=True, binding=None))
            if block_outputs is not None:
                block_outputs.extend(outs)
            else:
                self.outputs.extend(o.name for o in outs)
            scope.prev = outs[-1]
        elif isinstance(stmt, ast.Repeat):
            count = evaluate(stmt.count, scope.lets)
            if isinstance(count, bool) or not isinstance(count, int) or count < 1:
                raise DslError(f"repeat needs a positive integer, got {describe(count)}", stmt.count.span)
            for _ in range(count):
                self.run_body(stmt.body, scope, is_block, block_outputs)
        else:  # pragma: no cover - the grammar admits nothing else
            raise DslError("unexpected statement", stmt.span)

    def declare_input(self, stmt: ast.InputDecl, scope: Scope) -> None:
        if stmt.dtype is None:
            raise DslError(f"input `{stmt.name}` needs a type", stmt.span,
                           f"write `input {stmt.name}: f32[...]`")
        if stmt.dtype not in DTYPES:
            raise DslError(f"unknown dtype `{stmt.dtype}`", stmt.span,
                           did_you_mean(stmt.dtype, DTYPES) or f"use one of {one_of(DTYPES)}")
        dims = []
        for d in stmt.dims or []:
            v = evaluate(d, scope.lets)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v <= 0):
                raise DslError(f"a dimension must be a positive integer or `?`, got {describe(v)}",
                               d.span)
            dims.append(v)
        if stmt.name in self.used:
            raise DslError(f"`{stmt.name}` is already defined", stmt.span)
        self.used.add(stmt.name)
        self.inputs.append(Input(name=stmt.name, type=TensorType(dtype=DTYPES[stmt.dtype],
                                                                  shape=tuple(dims)), span=stmt.span))
        t = Tensor(stmt.name)
        scope.tensors[stmt.name] = t
        scope.prev = t

    # expressions that yield tensors
    def tensor_expr(self, expr, scope: Scope, allow_multi: bool, binding: str | None) -> list[Tensor]:
        if isinstance(expr, ast.Name):
            if expr.id in scope.tensors:
                t = scope.tensors[expr.id]
                if t is None:
                    raise Poisoned()
                return [t]
            if expr.id in scope.lets:
                raise DslError(f"`{expr.id}` is a constant, not a layer or tensor", expr.span)
            call = ast.Call(span=expr.span, func=expr.id, func_span=expr.span, args=[], kwargs=[])
            return self.call(call, scope, binding)
        if isinstance(expr, ast.Call):
            return self.call(expr, scope, binding)
        raise DslError("expected a layer, like `dense(10)`, or a tensor name", expr.span)

    def is_tensor_arg(self, expr, scope: Scope) -> bool:
        if isinstance(expr, ast.Name):
            return expr.id in scope.tensors
        if isinstance(expr, ast.Call):
            return get_op(expr.func) is not None or expr.func in self.blocks
        return False

    def call(self, call: ast.Call, scope: Scope, binding: str | None) -> list[Tensor]:
        op = get_op(call.func)
        block = self.blocks.get(call.func)
        if op is None and block is None:
            names = list(all_ops()) + list(self.blocks)
            hint = did_you_mean(call.func, names) or did_you_mean(call.func, scope.tensors)
            what = "op or block"
            if call.func in scope.tensors:
                raise DslError(f"`{call.func}` is a tensor, it cannot be called", call.func_span)
            raise DslError(f"unknown {what} `{call.func}`", call.func_span, hint)
        # Leading positional arguments that are tensors are inputs; the rest are attributes.
        n_in = 0
        while n_in < len(call.args) and self.is_tensor_arg(call.args[n_in], scope):
            n_in += 1
        inputs: list[Tensor] = []
        for arg in call.args[:n_in]:
            inputs.extend(self.tensor_expr(arg, scope, allow_multi=False, binding=None))
        attr_args = call.args[n_in:]
        for arg in attr_args:
            if self.is_tensor_arg(arg, scope):
                raise DslError("tensor inputs come before attributes", arg.span)
            if isinstance(arg, ast.Name) and arg.id not in scope.lets and arg.id not in ("true", "false"):
                hint = did_you_mean(arg.id, [t for t in scope.tensors if scope.tensors[t]])
                if hint:
                    raise DslError(f"unknown name `{arg.id}`", arg.span, hint)
        min_inputs = op.min_inputs if op else len(_block_inputs(block))
        if not inputs and min_inputs > 0:
            if scope.prev is _POISON:
                raise Poisoned()
            if scope.prev is None:
                raise DslError(f"`{call.func}` has no input", call.func_span,
                               "declare `input name: f32[...]` before the first layer")
            inputs = [scope.prev]
        if op is not None:
            return [self.op_node(call, op, inputs, attr_args, scope, binding)]
        return self.expand_block(call, block, inputs, attr_args, scope, binding)

    def op_node(self, call, op, inputs, attr_args, scope: Scope, binding) -> Tensor:
        if op.max_inputs is not None and len(inputs) > op.max_inputs:
            raise DslError(f"`{op.name}` takes {op.max_inputs} input(s), got {len(inputs)}",
                           call.func_span)
        if len(inputs) < op.min_inputs:
            raise DslError(f"`{op.name}` needs at least {op.min_inputs} inputs, got {len(inputs)}",
                           call.func_span)
        attrs = self.attrs(call, op, attr_args, scope)
        name = self.fresh(scope.prefix + binding) if binding else self.auto_name(op.name, scope)
        self.nodes.append(Node(name=name, op=op.name, inputs=[t.name for t in inputs], attrs=attrs,
                               span=call.func_span))
        return Tensor(name)

    def attrs(self, call: ast.Call, op, attr_args, scope: Scope):
        fields = op.Attrs.model_fields
        if len(attr_args) > len(op.positional):
            extra = attr_args[len(op.positional)]
            takes = (f"takes {len(op.positional)} positional argument(s) "
                     f"({', '.join(op.positional)})" if op.positional else "takes no positional arguments")
            raise DslError(f"`{op.name}` {takes}", extra.span,
                           "name the others, e.g. `kernel=3`" if fields else None)
        values: dict[str, Any] = {}
        spans: dict[str, Span] = {}
        for key, arg in zip(op.positional, attr_args):
            values[key], spans[key] = evaluate(arg, scope.lets), arg.span
        errors = Collector()
        for kw in call.kwargs:
            if kw.name not in fields:
                hint = did_you_mean(kw.name, fields)
                if not hint:
                    hint = f"`{op.name}` takes {one_of(fields)}" if fields else f"`{op.name}` takes no attributes"
                errors.error(f"`{op.name}` has no attribute `{kw.name}`", kw.span, hint)
                continue
            if kw.name in values:
                errors.error(f"`{kw.name}` is given twice", kw.span)
                continue
            values[kw.name], spans[kw.name] = evaluate(kw.value, scope.lets), kw.span
        errors.raise_if_any()
        for key, v in values.items():
            if isinstance(v, CallValue):
                raise DslError(f"`{key}` takes a value, not a call of `{v.name}`", spans[key])
        try:
            return op.Attrs(**{k: _plain(v) for k, v in values.items()})
        except ValidationError as exc:
            raise DslError([_attr_diag(op, call, e, values, spans) for e in exc.errors()]) from None

    def expand_block(self, call, block: ast.Block, inputs, attr_args, scope: Scope, binding):
        if self.depth > 32:
            raise DslError(f"block `{block.name}` calls itself too deeply", call.func_span)
        block_inputs = _block_inputs(block)
        if len(inputs) != len(block_inputs):
            raise DslError(f"block `{block.name}` takes {len(block_inputs)} input(s), got {len(inputs)}",
                           call.func_span)
        lets = dict(self.root.lets)
        params = {p.name: p for p in block.params}
        if len(attr_args) > len(block.params):
            raise DslError(f"block `{block.name}` takes {len(block.params)} argument(s)",
                           attr_args[len(block.params)].span)
        given: dict[str, tuple[Any, Span]] = {}
        for p, arg in zip(block.params, attr_args):
            given[p.name] = (evaluate(arg, scope.lets), arg.span)
        for kw in call.kwargs:
            if kw.name not in params:
                raise DslError(f"block `{block.name}` has no parameter `{kw.name}`", kw.span,
                               did_you_mean(kw.name, params))
            given[kw.name] = (evaluate(kw.value, scope.lets), kw.span)
        for p in block.params:
            if p.name in given:
                value, span = given[p.name]
            elif p.default is not None:
                value, span = evaluate(p.default, lets), p.span
            else:
                raise DslError(f"block `{block.name}` needs `{p.name}`", call.func_span)
            expected = PARAM_TYPES.get(p.type)
            if expected is None:
                raise DslError(f"unknown parameter type `{p.type}`", p.span,
                               did_you_mean(p.type, PARAM_TYPES) or f"use one of {one_of(PARAM_TYPES)}")
            if (isinstance(value, bool) and p.type in ("int", "float")) or not isinstance(value, expected):
                raise DslError(f"`{p.name}` of block `{block.name}` is {p.type}, got {describe(value)}", span)
            lets[p.name] = value
        instance = self.fresh(scope.prefix + binding) if binding else self.auto_name(block.name, scope)
        inner = Scope(lets=lets, prefix=f"{instance}_")
        for name, t in zip(block_inputs, inputs):
            inner.tensors[name] = t
        inner.prev = inputs[0] if inputs else None
        outputs: list[Tensor] = []
        self.depth += 1
        try:
            self.run_body([s for s in block.body if not isinstance(s, ast.InputDecl)], inner,
                          is_block=True, block_outputs=outputs)
        finally:
            self.depth -= 1
        if not outputs:
            if inner.prev is None or inner.prev is _POISON:
                raise Poisoned()
            outputs = [inner.prev]
        return outputs


_POISON = Tensor("<error>")


def _block_inputs(block: ast.Block) -> list[str]:
    return [s.name for s in block.body if isinstance(s, ast.InputDecl)]


def _plain(v):
    if isinstance(v, Symbol):
        return str(v)
    if isinstance(v, list):
        return tuple(_plain(x) for x in v)
    return v


def _attr_diag(op, call, e, values, spans):
    from dslc.diagnostics import Diagnostic

    key = e["loc"][0] if e["loc"] else None
    span = spans.get(key, call.func_span)
    if e["type"] == "missing":
        return Diagnostic(f"`{op.name}` needs `{key}`", call.func_span,
                          f"e.g. `{op.name}({key}=...)`")
    value = values.get(key)
    if e["type"] == "literal_error":
        choices = e["ctx"]["expected"].replace("'", "").split(", ")
        choices = [c.replace(" or ", "") for c in choices]
        hint = did_you_mean(str(value), choices) if isinstance(value, str) else None
        return Diagnostic(f"`{value}` is not a valid `{key}` for `{op.name}`", span,
                          hint or f"use one of {one_of(choices)}")
    msg = e["msg"].replace("Value error, ", "")
    return Diagnostic(f"`{key}` of `{op.name}`: {msg[0].lower() + msg[1:]} (got {describe(value)})", span)
