"""Syntax tree → graph: resolves names, expands blocks, `repeat` and `for`, turns sequential
statements into graph edges, validates each op's attributes. Errors are collected."""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import field
from typing import Any

from pydantic import ValidationError

from dslc.diagnostics import Collector, DslError, Span, did_you_mean, one_of
from dslc.ir import ast
from dslc.ir.graph import BlockCall, Graph, Input, Node, TensorType
from dslc.ops import Op, find_op, op_names
from dslc.ops.registry import is_op_name
from dslc.passes.values import CallValue, Symbol, describe, evaluate
from dslc.records import record
from dslc.stdlib import at_user_call

# Spec dtype names (aliases included) → the IR's. Integer and boolean inputs hold ids and
# flags: only ops that declare them (`Op.input_dtypes`, e.g. `embedding`) take them.
DTYPES = {"f32": "f32", "float32": "f32", "i32": "i32", "int32": "i32", "i64": "i64",
          "int64": "i64", "bool": "bool"}
# Limits that keep checking fast and the backends sane.
MAX_LAYERS = 100_000  # layers of one model, after blocks, `repeat` and `for` are expanded
MAX_STEPS = 1_000_000  # statements run while expanding one model
MAX_BLOCK_DEPTH = 32
MAX_NAME = 100  # characters of a model, input or layer name (they become file names, keys)
MAX_DIM = 2**31 - 1  # elements of one dimension or one tensor
MAX_RANK = 8  # dimensions of one sample (numpy, and so every backend, stops at 32 or 64)
MAX_ELEMENTS = 2**31 - 1  # values of one sample of an input, as of any tensor (shapes.py)
PARAM_TYPES: dict[str, type | tuple[type, ...]] = {
    "int": int, "float": (int, float), "str": str, "bool": bool, "list": list, "any": object,
}


class Poisoned(Exception):
    """A statement already reported an error; its dependents stay quiet."""


class Abort(Exception):
    """An error that stops building the model (runaway expansion): reported once."""

    def __init__(self, err: DslError):
        super().__init__(str(err))
        self.err = err


@record
class Tensor:
    name: str  # a graph input or node name


_SCOPE_IDS = itertools.count()


@record
class Scope:
    """Names visible while building one model or one block instance."""

    lets: dict[str, Any]
    tensors: dict[str, Tensor | None] = field(default_factory=dict)  # None: poisoned
    prefix: str = ""
    prev: Tensor | None = None
    blocks: tuple[BlockCall, ...] = ()  # the block calls being expanded, outermost first
    loops: dict[str, Span] = field(default_factory=dict)  # variables of the `for`s running here
    uid: int = field(default_factory=lambda: next(_SCOPE_IDS))


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
        self.steps = 0
        self.binding_span: Span = model.span  # of the assignment being built
        # Who made each layer name: (scope id, binding) for a user's binding, None otherwise.
        self.owner: dict[str, tuple[int, str] | None] = {}
        self.owner_span: dict[str, Span] = {}
        self.expanding: list[tuple[str, Span]] = []  # active `repeat`s, `for`s, block calls

    def too_long(self, name: str, span: Span, what: str = "name") -> None:
        if len(name) > MAX_NAME:
            raise DslError(f"{what} `{name[:40]}...` is too long ({len(name)} characters, "
                           f"at most {MAX_NAME})", span,
                           "choose a shorter name" if what == "name" else
                           "choose shorter names or nest fewer blocks")

    def bind(self, scope: Scope, binding: str, span: Span) -> str:
        """The layer name for a user's `binding`; a name some other layer already took is an
        error rather than a silent rename (checkpoint keys would not match the spec)."""
        full = scope.prefix + binding
        self.too_long(full, span, "name" if not scope.prefix else "layer name")
        key = (scope.uid, binding)
        if full in self.used and self.owner.get(full) != key:
            where = self.owner_span.get(full)
            at = f" (line {where.line})" if where is not None and where.file == span.file else ""
            raise DslError(f"the name `{full}` is already taken by another layer{at}", span,
                           "choose another name: layers made by a block are named "
                           "`<instance>_<layer>`, unnamed ones `<op>_<n>`")
        name = self.fresh(full)
        self.owner[name] = key if name == full else None  # a rename is nobody's own name
        self.owner_span[name] = span
        return name

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
        try:
            self.too_long(self.model.name, self.model.span, "model name")
        except DslError as err:
            self.errors.extend(err)
        before = len(self.errors.diagnostics)
        try:
            self.run_body(self.model.body, self.root, is_block=False)
        except Abort as abort:
            self.errors.extend(abort.err)
            return Graph.model_construct(name=self.model.name, inputs=self.inputs,
                                         nodes=self.nodes, outputs=self.outputs,
                                         span=self.model.span)
        if not self.inputs and not self.failed_input:
            self.errors.error(f"model `{self.model.name}` declares no input", self.model.span,
                              "add `input x: f32[...]` as the first statement")
        if not self.outputs and self.root.prev not in (None, _POISON):
            self.outputs = [self.root.prev.name]
        if self.inputs and not self.nodes and not self.errors.diagnostics:
            self.errors.error(f"model `{self.model.name}` has no layers", self.model.span,
                              "add a layer after the input, e.g. `dense(1)`")
        if len(self.errors.diagnostics) == before and self.outputs:
            self.check_dead()
        # Built from checked parts (validated attrs, types and parameters): constructing,
        # not validating, spares `dslc check` the graph models' validators (docs/benchmarks.md).
        return Graph.model_construct(name=self.model.name, inputs=self.inputs, nodes=self.nodes,
                                     outputs=self.outputs, span=self.model.span)

    def check_dead(self) -> None:
        """Every layer must feed an output: backends disagree on what to do with the others."""
        live = set(self.outputs)
        for node in reversed(self.nodes):
            if node.name in live:
                live.update(node.inputs)
        for node in self.nodes:
            if node.name not in live:
                self.errors.error(f"`{node.name}` is computed but reaches no output", node.span,
                                  "add it to `output`, or remove it")

    def limit(self, what: str, span: Span) -> Abort:
        if self.expanding:
            kind, span = self.expanding[0]
            return Abort(DslError(f"this {kind} expands to more than {what}", span,
                                  "a model this large cannot be checked or trained; "
                                  "use fewer repetitions"))
        return Abort(DslError(f"model `{self.model.name}` has more than {what}", span))

    def run_body(self, body, scope: Scope, is_block: bool, block_outputs: list | None = None) -> None:
        for stmt in body:
            self.steps += 1
            if self.steps > MAX_STEPS:
                raise self.limit(f"{MAX_STEPS:,} statements", stmt.span)
            try:
                self.statement(stmt, scope, is_block, block_outputs)
            except (Poisoned, DslError) as err:
                if isinstance(err, DslError):
                    if scope.blocks:  # an error in a standard block is the caller's to fix
                        err = DslError([at_user_call(d, scope.blocks) for d in err.diagnostics])
                    self.errors.extend(err)
                # Later statements that depend on this one stay quiet: one mistake, one message.
                if isinstance(stmt, ast.Assign):
                    for t in stmt.targets:
                        if t not in scope.loops:  # a loop variable stays a constant
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
            self.not_loop_var(stmt.name, scope, stmt.span)
            scope.lets[stmt.name] = evaluate(stmt.value, scope.lets)
        elif isinstance(stmt, ast.Apply):
            outs = self.tensor_expr(stmt.value, scope, allow_multi=True, binding=None)
            scope.prev = outs[-1]
        elif isinstance(stmt, ast.Assign):
            for target in stmt.targets:
                self.not_loop_var(target, scope, stmt.span)
            binding = stmt.targets[0] if len(stmt.targets) == 1 else None
            self.binding_span = stmt.span
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
            self.expanding.append(("`repeat`", stmt.span))
            try:
                for _ in range(count):
                    self.steps += 1
                    if self.steps > MAX_STEPS:
                        raise self.limit(f"{MAX_STEPS:,} statements", stmt.span)
                    before = len(self.errors.diagnostics)
                    self.run_body(stmt.body, scope, is_block, block_outputs)
                    if len(self.errors.diagnostics) > before:
                        break  # each repetition would report the same errors again
            finally:
                self.expanding.pop()
        elif isinstance(stmt, ast.For):
            self.for_loop(stmt, scope, is_block, block_outputs)
        else:  # pragma: no cover - the grammar admits nothing else
            raise DslError("unexpected statement", stmt.span)

    def for_loop(self, stmt: ast.For, scope: Scope, is_block: bool, block_outputs) -> None:
        """The body once per element, the variable bound to it as a constant (as `let` would):
        the same expansion, names and caps as `repeat`."""
        items = evaluate(stmt.items, scope.lets)
        if not isinstance(items, list):
            hint = "write a list, e.g. `for u in [64, 32] { dense(u) }`"
            if isinstance(items, int) and not isinstance(items, bool) and items > 0:
                hint = f"to repeat a body {items} times, write `repeat {items} {{ ... }}`"
            raise DslError(f"`for` loops over a list, got {describe(items)}", stmt.items.span, hint)
        if not items:
            raise DslError("`for` over an empty list would make no layers", stmt.items.span,
                           "give it at least one element")
        self.check_loop_var(stmt, scope)
        scope.loops[stmt.var] = stmt.var_span
        self.expanding.append(("`for` loop", stmt.span))
        try:
            for item in items:
                self.steps += 1
                if self.steps > MAX_STEPS:
                    raise self.limit(f"{MAX_STEPS:,} statements", stmt.span)
                scope.lets[stmt.var] = item
                before = len(self.errors.diagnostics)
                self.run_body(stmt.body, scope, is_block, block_outputs)
                if len(self.errors.diagnostics) > before:
                    break  # each element would report the same errors again
        finally:
            self.expanding.pop()
            del scope.loops[stmt.var]
            scope.lets.pop(stmt.var, None)

    def check_loop_var(self, stmt: ast.For, scope: Scope) -> None:
        """A loop variable names something new: hiding a name for the body's length would
        make the same word mean two things a few lines apart."""
        name, span = stmt.var, stmt.var_span
        hint = "choose another name for the loop variable"
        if name in scope.loops:
            raise DslError(f"`{name}` is already the variable of an enclosing `for` "
                           f"(line {scope.loops[name].line})", span, hint)
        what = ("a constant (a `let` or a block parameter)" if name in scope.lets
                else "a tensor" if name in scope.tensors
                else "a built-in op" if is_op_name(name)
                else "a block" if name in self.blocks
                else "a boolean" if name in ("true", "false") else None)
        if what is not None:
            raise DslError(f"the loop variable `{name}` would hide {what} of that name", span, hint)

    def not_loop_var(self, name: str, scope: Scope, span: Span) -> None:
        if name in scope.loops:
            raise DslError(f"`{name}` is the variable of the `for` loop at line "
                           f"{scope.loops[name].line}; it cannot be assigned", span,
                           "choose another name")

    def declare_input(self, stmt: ast.InputDecl, scope: Scope) -> None:
        if stmt.dtype is None:
            raise DslError(f"input `{stmt.name}` needs a type", stmt.span,
                           f"write `input {stmt.name}: f32[...]`")
        if stmt.dtype not in DTYPES:
            raise DslError(f"unknown dtype `{stmt.dtype}`", stmt.span,
                           did_you_mean(stmt.dtype, DTYPES) or f"use one of {one_of(DTYPES)}")
        if stmt.dims is not None and len(stmt.dims) > MAX_RANK:
            raise DslError(f"input `{stmt.name}` has {len(stmt.dims)} dimensions, at most "
                           f"{MAX_RANK} are allowed", stmt.dims[MAX_RANK].span,
                           "a sample is a vector, a sequence, an image or a volume: "
                           "flatten the others")
        dims = []
        for d in stmt.dims or []:
            v = evaluate(d, scope.lets)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v <= 0):
                raise DslError(f"a dimension must be a positive integer or `?`, got {describe(v)}",
                               d.span)
            if v is not None and v > MAX_DIM:
                raise DslError(f"dimension {v:,} is too large (at most {MAX_DIM:,})", d.span)
            dims.append(v)
        size = math.prod(d for d in dims if d is not None)
        if size > MAX_ELEMENTS:
            raise DslError(f"input `{stmt.name}` is too large: {size:,} values a sample "
                           f"(at most {MAX_ELEMENTS:,})", stmt.span)
        if stmt.name in self.used:
            raise DslError(f"`{stmt.name}` is already defined", stmt.span)
        self.too_long(stmt.name, stmt.span)
        self.used.add(stmt.name)
        self.owner[stmt.name], self.owner_span[stmt.name] = (scope.uid, stmt.name), stmt.span
        self.inputs.append(Input.model_construct(
            name=stmt.name, type=TensorType(dtype=DTYPES[stmt.dtype], shape=tuple(dims)),
            span=stmt.span))
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
            return is_op_name(expr.func) or expr.func in self.blocks
        return False

    def call(self, call: ast.Call, scope: Scope, binding: str | None) -> list[Tensor]:
        binding_span = self.binding_span  # inputs' block expansions may change it
        # a block's name is not looked for among the ops (that would load every op family)
        known_block = call.func in self.blocks and not is_op_name(call.func)
        op = None if known_block else find_op(call.func)
        target: Op | ast.Block | None = op if op is not None else self.blocks.get(call.func)
        if target is None:
            names = op_names() + list(self.blocks)
            from dslc.ops.names import op_hint  # errors only

            hint = op_hint(call.func, names) or did_you_mean(call.func, scope.tensors)
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
        min_inputs = target.min_inputs if isinstance(target, Op) else len(_block_inputs(target))
        if not inputs and min_inputs > 0:
            if scope.prev is _POISON:
                raise Poisoned()
            if scope.prev is None:
                raise DslError(f"`{call.func}` has no input", call.func_span,
                               "declare `input name: f32[...]` before the first layer")
            inputs = [scope.prev]
        self.binding_span = binding_span
        if isinstance(target, Op):
            return [self.op_node(call, target, inputs, attr_args, scope, binding)]
        return self.expand_block(call, target, inputs, attr_args, scope, binding)

    def op_node(self, call, op, inputs, attr_args, scope: Scope, binding) -> Tensor:
        if op.max_inputs is not None and len(inputs) > op.max_inputs:
            raise DslError(f"`{op.name}` takes {op.max_inputs} input(s), got {len(inputs)}",
                           call.func_span)
        if len(inputs) < op.min_inputs:
            raise DslError(f"`{op.name}` needs at least {op.min_inputs} inputs, got {len(inputs)}",
                           call.func_span)
        attrs = self.attrs(call, op, attr_args, scope)
        if len(self.nodes) >= MAX_LAYERS:
            raise self.limit(f"{MAX_LAYERS:,} layers", call.func_span)
        if binding:
            name = self.bind(scope, binding, self.binding_span)
        else:
            name = self.auto_name(op.name, scope)
            self.too_long(name, call.func_span, "layer name")
            self.owner_span[name] = call.func_span
        self.nodes.append(Node.model_construct(name=name, op=op.name,
                                               inputs=[t.name for t in inputs], attrs=attrs,
                                               span=call.func_span, blocks=scope.blocks))
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
        exprs: dict[str, Any] = {}  # the expressions written, for hints
        for key, arg in zip(op.positional, attr_args):
            values[key], spans[key], exprs[key] = evaluate(arg, scope.lets), arg.span, arg
        errors = Collector()
        for kw in call.kwargs:
            if kw.name not in fields and kw.name in op.unsupported:
                errors.error(f"`{op.name}` does not support `{kw.name}`", kw.span,
                             op.unsupported[kw.name])
                continue
            if kw.name not in fields:
                from dslc.ops.names import attr_hint

                hint = attr_hint(op.name, kw.name, fields) or did_you_mean(kw.name, fields)
                if not hint:
                    hint = f"`{op.name}` takes {one_of(fields)}" if fields else f"`{op.name}` takes no attributes"
                errors.error(f"`{op.name}` has no attribute `{kw.name}`", kw.span, hint)
                continue
            if kw.name in values:
                errors.error(f"`{kw.name}` is given twice", kw.span)
                continue
            values[kw.name], spans[kw.name] = evaluate(kw.value, scope.lets), kw.span
            exprs[kw.name] = kw.value
        errors.raise_if_any()
        for key, v in values.items():
            if isinstance(v, CallValue):
                raise DslError(f"`{key}` takes a value, not a call of `{v.name}`", spans[key])
        try:
            return op.Attrs(**{k: _plain(v) for k, v in values.items()})
        except ValidationError as exc:
            by_key: dict[Any, list] = {}
            for e in exc.errors():
                by_key.setdefault(e["loc"][0] if e["loc"] else None, []).append(e)
            raise DslError([_attr_diag(op, call, es, values, spans, exprs, scope.lets)
                            for es in by_key.values()]) from None

    def expand_block(self, call, block: ast.Block, inputs, attr_args, scope: Scope, binding):
        if self.depth >= MAX_BLOCK_DEPTH:
            # Fatal: every level would report it again, and a block that calls itself twice
            # would do so 2**32 times.
            if any(kind == f"call of block `{block.name}`" for kind, _ in self.expanding):
                raise Abort(DslError(f"block `{block.name}` calls itself too deeply "
                                     f"(more than {MAX_BLOCK_DEPTH} levels)", call.func_span,
                                     "a block cannot use itself, directly or through other blocks"))
            raise Abort(DslError(f"blocks nested too deeply (more than {MAX_BLOCK_DEPTH} levels)",
                                 call.func_span))
        block_inputs = _block_inputs(block)
        if len(inputs) != len(block_inputs):
            raise DslError(f"block `{block.name}` takes {len(block_inputs)} input(s), got {len(inputs)}",
                           call.func_span)
        # The model's constants, not the variables of its loops running now: a block sees
        # what it is given.
        lets = {k: v for k, v in self.root.lets.items() if k not in self.root.loops}
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
                hint = (f"write a list, e.g. `[{value}]` for one element"
                        if p.type == "list" and isinstance(value, int | float)
                        and not isinstance(value, bool) else None)
                raise DslError(f"`{p.name}` of block `{block.name}` is {p.type}, got {describe(value)}",
                               span, hint)
            lets[p.name] = value
        if binding:
            instance = self.bind(scope, binding, self.binding_span)
        else:
            instance = self.auto_name(block.name, scope)
            self.too_long(instance, call.func_span, "layer name")
        call_site = BlockCall.model_construct(instance=instance, block=block.name,
                                              span=call.func_span)
        inner = Scope(lets=lets, prefix=f"{instance}_", blocks=(*scope.blocks, call_site))
        for name, t in zip(block_inputs, inputs):
            inner.tensors[name] = t
        inner.prev = inputs[0] if inputs else None
        outputs: list[Tensor] = []
        self.depth += 1
        self.expanding.append((f"call of block `{block.name}`", call.func_span))
        try:
            self.run_body([s for s in block.body if not isinstance(s, ast.InputDecl)], inner,
                          is_block=True, block_outputs=outputs)
        finally:
            self.depth -= 1
            self.expanding.pop()
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


_TYPE_WORDS = {"int": "an integer", "float": "a number", "bool": "`true` or `false`",
               "str": "a name", "tuple[int, int]": "a pair of integers like `[3, 3]`",
               "tuple[int, ...]": "a list of integers"}


def _fraction_hint(value, expr, lets) -> str | None:
    """For an integer attribute given the fraction a division made: which division."""
    if not (isinstance(value, float) and not value.is_integer()
            and isinstance(expr, ast.BinOp) and expr.op == "/"):
        return None
    try:
        left, right = evaluate(expr.left, lets), evaluate(expr.right, lets)
    except DslError:
        return None
    if not (isinstance(left, int | float) and isinstance(right, int | float)):
        return None
    names = [e.id if isinstance(e, ast.Name) else None for e in (expr.left, expr.right)]
    if names == [None, None]:
        return f"{left:g}/{right:g} is not a whole number"
    lt, rt = (n or f"{v:g}" for n, v in zip(names, (left, right)))
    hint = f"`{lt}/{rt}` is {left:g}/{right:g}, not a whole number"
    return hint + (f": `{rt}` must divide `{lt}`" if None not in names else "")


def _attr_diag(op, call, errs, values, spans, exprs=None, lets=None):
    """One diagnostic for the errors pydantic gives about one attribute."""
    from dslc.diagnostics import Diagnostic

    e = errs[0]
    key = e["loc"][0] if e["loc"] else None
    span = spans.get(key, call.func_span)
    if e["type"] == "missing" and len(e["loc"]) == 1:
        return Diagnostic(f"`{op.name}` needs `{key}`", call.func_span,
                          f"e.g. `{op.name}({key}=...)`")
    value = values.get(key)
    members = [x["loc"][1] for x in errs if len(x["loc"]) > 1 and isinstance(x["loc"][1], str)]
    if len(errs) > 1 and len(members) == len(errs):  # a union: say what each member wants
        words = [_TYPE_WORDS.get(m, f"`{m}`") for m in dict.fromkeys(members) if m != "none"]
        return Diagnostic(f"`{key}` of `{op.name}` takes {' or '.join(words)}, "
                          f"got {describe(value)}", span)
    if e["type"] == "literal_error":
        choices = [c.strip().strip("'") for c in re.split(r",| or ", e["ctx"]["expected"])]
        choices = [c for c in choices if c]
        hint = did_you_mean(str(value), choices) if isinstance(value, str) else None
        from dslc.ops.names import known_as  # errors only

        other = known_as(value) if isinstance(value, str) else None
        if other in choices:  # `activation=swish`: Keras's name for `silu`
            hint = f"did you mean `{other}`?"
        return Diagnostic(f"`{value}` is not a valid `{key}` for `{op.name}`", span,
                          hint or f"use one of {one_of(choices)}")
    msg = e["msg"].replace("Value error, ", "")
    hint = _fraction_hint(value, (exprs or {}).get(key), lets or {}) \
        if e["type"] == "int_type" else None
    return Diagnostic(f"`{key}` of `{op.name}`: {msg[0].lower() + msg[1:]} (got {describe(value)})",
                      span, hint)
