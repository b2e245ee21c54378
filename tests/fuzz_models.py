"""Random valid `.dl` models for differential testing across backends, in the spirit of NNSmith.

`generate(source)` writes one model spec: random inputs (vectors, sequences `[T, F]` with a
fixed or open time axis, images `[H, W, C]`), op chains, branches merged again, named and
unnamed statements, inline calls, blocks with parameters (some with defaults), `repeat`, `let`
constants and several outputs. The ops come from the registry (`dslc.ops.all_ops()`): an op's
attributes are drawn from its pydantic attribute model (Literal choices, bounded numbers,
ints or pairs) and kept when the op's own shape rule accepts them, so a new op is fuzzed
without a line here. Explicit knowledge is kept to what shapes demand: an `axis` lies within
the rank, a `shape` is a factorisation of the input's size, window sizes stay small. Some
`repeat`s are written as `for` loops over as many elements.

The randomness comes from a `Source`: `DrawSource` wraps hypothesis (the suite's strategy
`model_specs()`, which shrinks), `RandomSource` a seeded `random.Random` (bench/fuzz.py).

`differential(text)` is the oracle: the spec must check, compile on every backend that emits
(torch and keras source byte-compiles, the .onnx file passes `onnx.checker` with
`full_check`), and every backend that runs must agree with the reference interpreter
(`dslc.verify.run_backends`, default tolerance). It imports no framework itself.
"""

from __future__ import annotations

import itertools
import math
import py_compile
import random
import tempfile
import traceback
import types
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar, Union, get_args, get_origin

import annotated_types as at
import numpy as np
from pydantic import ValidationError
from pydantic.fields import FieldInfo

from dslc.ir.graph import TensorType
from dslc.ops import all_ops
from dslc.ops.registry import Op, ShapeError
from dslc.verify import DYNAMIC_DIM

T = TypeVar("T")
Shape = tuple[int | None, ...]

MAX_STEPS = 7  # statements of a model body, before blocks and `repeat` expand
MAX_BLOCK_STEPS = 3
TRIES = 8  # draws of an op and its attributes before a step gives up
PRESERVING_TRIES = 16  # the same, where the output must keep the input's shape
POSITIVE_CAP = {"kernel": 4, "strides": 3, "dilation": 3}  # window sizes stay small
POSITIVE_MAX = 6  # units, filters and other positive ints
FLOATS = (0.0, 0.001, 0.01, 0.1, 0.25, 0.5, 0.9, 1.0, 1.5, 3.0)
# A disagreement that float32 rounding explains is not a bug: the reference is run again with
# every layer's operands and output moved by this many float32 units (2^-24) of their largest
# value, as a framework's rounding would, and a model whose every failing output differs by at
# most EXCUSED times what that moves it is discarded as too ill-conditioned to compare at this
# tolerance (errors amplified along a chain, a layer_norm over near-equal values), not judged.
# The move is one random draw and kernels round in their own order, hence the factor; every
# wrong lowering fuzzing found was off by 10^4 times the move or more.
ROUNDING_UNITS = 4
EXCUSED = 4


# -- randomness ------------------------------------------------------------------------------

class Source(Protocol):
    """Where the generator's choices come from. Each choice shrinks to its simplest value:
    `lo`, False, the first option."""

    def integer(self, lo: int, hi: int) -> int: ...

    def chance(self, p: float) -> bool: ...

    def choice(self, options: Sequence[T]) -> T: ...


class RandomSource:
    def __init__(self, seed: int):
        self.rng = random.Random(seed)

    def integer(self, lo: int, hi: int) -> int:
        return self.rng.randint(lo, hi)

    def chance(self, p: float) -> bool:
        return self.rng.random() < p

    def choice(self, options: Sequence[T]) -> T:
        return options[self.rng.randrange(len(options))]


class DrawSource:
    """Choices drawn from hypothesis's `draw`, so failing models shrink."""

    def __init__(self, draw: Callable[[Any], Any]):
        self.draw = draw

    def integer(self, lo: int, hi: int) -> int:
        from hypothesis import strategies as st

        value: int = self.draw(st.integers(lo, hi))
        return value

    def chance(self, p: float) -> bool:
        return self.integer(0, 999) >= round(1000 * (1 - p))

    def choice(self, options: Sequence[T]) -> T:
        return options[self.integer(0, len(options) - 1)]


# -- what the generator builds ---------------------------------------------------------------

@dataclass(frozen=True)
class Sig:
    """A tensor's shape as the checker states it (`?` is None) and as it runs in verify's batch
    (`?` is `DYNAMIC_DIM`): a concat along `?` makes a `?` of another length, which must not
    meet the first in an `add`."""

    shape: Shape
    run: tuple[int, ...]
    dtype: str = "f32"  # integer ids feed only the ops that accept them (`Op.accepts`)
    masked: bool = False  # carries a padding mask: only ops that keep or use one may read it

    @classmethod
    def of(cls, shape: Shape, dtype: str = "f32") -> Sig:
        return cls(shape, tuple(DYNAMIC_DIM if d is None else d for d in shape), dtype)


@dataclass(eq=False)
class Tensor:
    name: str
    sig: Sig
    uses: int = 0
    by_name: bool = False  # some statement names it, so the statement making it binds it


@dataclass(frozen=True)
class Attr:
    key: str
    value: Any  # as the op validates it
    text: str  # as the spec writes it (a literal, a block parameter, a `let` name)


@dataclass(eq=False)
class InputDecl:
    tensor: Tensor
    typed: bool
    dtype_alias: bool = False  # `float32` rather than `f32`


@dataclass(eq=False)
class Call:
    func: str  # an op or a block
    inputs: list[Tensor]
    attrs: list[Attr]
    positional: int  # leading attributes written without their key
    outs: list[Tensor]
    implicit: bool  # the input is the previous statement's value, left unwritten
    wraps: dict[int, Call] = field(default_factory=dict)  # inline calls around inputs
    bare: bool = False  # `flatten` rather than `flatten()`
    bind: bool = False  # bind a name even when nothing refers to it


@dataclass(eq=False)
class Repeat:
    count: str
    body: list[Stmt]
    loop: bool = False  # written `for k in [1, ..., count] { ... }`


@dataclass(eq=False)
class Output:
    tensors: list[Tensor]


Stmt = InputDecl | Call | Repeat | Output


@dataclass
class Param:
    name: str
    type: str
    value: Any
    default: bool


@dataclass(eq=False)
class BlockDef:
    name: str
    inputs: list[Tensor]
    params: list[Param] = field(default_factory=list)
    body: list[Stmt] = field(default_factory=list)
    outs: list[Tensor] = field(default_factory=list)
    preserving: bool = False  # one output of its (one) input's shape: it can be repeated


@dataclass(eq=False)
class Scope:
    """A body being written: the model's, a block's or a `repeat`'s."""

    body: list[Stmt]
    pool: list[Tensor]  # tensors a statement here may name
    prev: Tensor | None
    block: BlockDef | None = None
    first_implicit: bool = False  # a `repeat` body: its first statement takes `prev` unwritten
    locals: list[Tensor] = field(default_factory=list)


def literal(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return v  # a bare name: `relu`, `same`
    if isinstance(v, tuple | list):
        return "[" + ", ".join(literal(x) for x in v) + "]"
    raise TypeError(f"no literal for {v!r}")


def _plain(v: Any) -> Any:
    return tuple(_plain(x) for x in v) if isinstance(v, list | tuple) else v


def _bounds(info: FieldInfo) -> tuple[float | None, float | None, bool, bool]:
    """(low, high, low inclusive, high inclusive) from a field's annotated_types metadata."""
    lo = hi = None
    lo_in = hi_in = True
    for m in info.metadata:
        if isinstance(m, at.Gt):
            lo, lo_in = float(m.gt), False  # type: ignore[arg-type]
        elif isinstance(m, at.Ge):
            lo, lo_in = float(m.ge), True  # type: ignore[arg-type]
        elif isinstance(m, at.Lt):
            hi, hi_in = float(m.lt), False  # type: ignore[arg-type]
        elif isinstance(m, at.Le):
            hi, hi_in = float(m.le), True  # type: ignore[arg-type]
    return lo, hi, lo_in, hi_in


def _within(v: float, info: FieldInfo) -> bool:
    lo, hi, lo_in, hi_in = _bounds(info)
    if lo is not None and (v < lo or (v == lo and not lo_in)):
        return False
    return not (hi is not None and (v > hi or (v == hi and not hi_in)))


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


# -- the generator -------------------------------------------------------------------------------

class Generator:
    def __init__(self, src: Source):
        self.src = src
        ops = list(all_ops().values())
        self.unary: list[Op] = [op for op in ops if op.min_inputs <= 1]
        self.merges: list[Op] = [op for op in ops
                                 if op.min_inputs >= 2 and (op.max_inputs or 2) >= 2]
        self.lets: list[tuple[str, Any]] = []
        self.blocks: list[BlockDef] = []
        self.ids = itertools.count()

    def fresh(self, prefix: str) -> str:
        return f"{prefix}{next(self.ids)}"

    # inputs
    def input_shape(self) -> Sig:
        s = self.src
        kind = s.choice(["vector", "sequence", "image", "image", "ids"])
        if kind == "ids":  # token ids, for embedding
            steps = None if s.chance(0.2) else s.integer(1, 6)
            return Sig.of(() if s.chance(0.1) else (steps,), s.choice(["i64", "i32"]))
        return Sig.of(self.float_shape(kind))

    def float_shape(self, kind: str) -> Shape:
        s = self.src
        if kind == "vector":
            return (s.integer(1, 8),)
        if kind == "sequence":
            return (None if s.chance(0.2) else s.integer(1, 6), s.integer(1, 5))
        return (s.integer(1, 8), s.integer(1, 8), s.choice([1, 2, 3]))

    # attributes, from the op's attribute model
    def value(self, key: str, info: FieldInfo, annotation: Any, shapes: list[Shape]) -> Any:
        s = self.src
        origin = get_origin(annotation)
        if origin is Literal:
            return s.choice(get_args(annotation))
        if origin in (Union, types.UnionType):
            members = [a for a in get_args(annotation) if a is not type(None)]
            return self.value(key, info, s.choice(members), shapes)
        if origin is tuple:
            args = get_args(annotation)
            if len(args) == 2 and args[1] is Ellipsis:
                return self.int_list(key, shapes)
            return [self.value(key, info, a, shapes) for a in args]
        if annotation is bool:
            return s.chance(0.5)
        if annotation is float:
            options = [v for v in FLOATS if _within(v, info)]
            return s.choice(options) if options else s.choice(FLOATS)
        if annotation is int:
            return self.int_value(key, info, shapes)
        raise TypeError(f"the fuzzer cannot draw a value of {annotation!r} (attribute `{key}`)")

    def int_value(self, key: str, info: FieldInfo, shapes: list[Shape]) -> int:
        s = self.src
        rank = len(shapes[0]) if shapes else 1
        if key == "axis":  # an axis of the input, from either end
            return s.integer(-rank, max(rank - 1, -1))
        lo, hi, lo_in, hi_in = _bounds(info)
        low = 1 if lo is None else int(math.floor(lo)) + (0 if lo_in else 1)
        low = max(low, 0) if lo is not None else 1
        high = POSITIVE_CAP.get(key, POSITIVE_MAX)
        if hi is not None:
            high = min(high, int(math.ceil(hi)) - (0 if hi_in else 1))
        last = shapes[0][-1] if shapes and shapes[0] else None
        if last is not None and low <= last and s.chance(0.4) and key not in POSITIVE_CAP:
            return last  # units = channels: enables residual merges
        return s.integer(low, max(low, high))

    def int_list(self, key: str, shapes: list[Shape]) -> list[int]:
        """A target shape: a factorisation of the input's size, maybe with one -1."""
        s = self.src
        shape = shapes[0] if shapes else (1,)
        if key == "dims":  # permute's: an order of the input's axes (1-based)
            dims = list(range(1, len(shape) + 1))
            for i in range(len(dims) - 1, 0, -1):
                j = s.integer(0, i)
                dims[i], dims[j] = dims[j], dims[i]
            return dims
        total = math.prod(d if d is not None else 1 for d in shape)
        dims: list[int] = []
        for _ in range(s.integer(1, 3) - 1):
            d = s.choice(_divisors(total))
            dims.append(d)
            total //= d
        dims.append(total)
        if s.chance(0.3):
            dims[s.integer(0, len(dims) - 1)] = -1
        return dims

    def attrs(self, op: Op, sigs: list[Sig]) -> tuple[list[tuple[str, Any]], Sig] | None:
        """Random attributes for `op` on inputs of `sigs` and the output's, or None when the
        op's attribute model or shape rule refuses them."""
        s = self.src
        if not all(op.accepts(sig.dtype) for sig in sigs):
            return None
        shapes = [sig.shape for sig in sigs]
        fields = op.Attrs.model_fields
        order = [k for k in op.positional if k in fields]
        order += [k for k in fields if k not in order]
        drawn: list[tuple[str, Any]] = []
        for key in order:
            info = fields[key]
            if not info.is_required():
                p = 0.1 if key.endswith("_init") else 0.45
                if not s.chance(p):
                    continue
            drawn.append((key, self.value(key, info, info.annotation, shapes)))
        try:
            validated = op.Attrs(**{k: _plain(v) for k, v in drawn})
            out = op.infer(validated, [TensorType(shape=sh, dtype=sig.dtype)
                                       for sh, sig in zip(shapes, sigs, strict=True)])
            run = op.infer(validated, [TensorType(shape=sig.run, dtype=sig.dtype) for sig in sigs])
        except (ValidationError, ShapeError, ValueError):
            return None
        masking = op.masking(validated)
        if any(sig.masked for sig in sigs) and masking not in ("keep", "use", "use_keep"):
            return None  # the checker refuses a mask this op cannot honour
        carriers = op.mask_carriers(validated, len(sigs))
        masked = masking == "make" or (masking in ("keep", "use_keep")
                                       and any(sigs[k].masked for k in carriers))
        return drawn, Sig(out.shape, tuple(DYNAMIC_DIM if d is None else d for d in run.shape),
                          out.dtype, masked)

    def spelled(self, drawn: list[tuple[str, Any]], scope: Scope) -> list[Attr]:
        return [Attr(k, v, self.spell(v, scope)) for k, v in drawn]

    def spell(self, v: Any, scope: Scope) -> str:
        """How the spec writes `v`: a literal, or a block parameter or `let` standing for it."""
        s = self.src
        if scope.block is not None and s.chance(0.3):
            kind = {bool: "bool", int: "int", float: "float", str: "str"}.get(type(v), "any")
            p = Param(self.fresh("p"), kind, v, default=s.chance(0.3))
            scope.block.params.append(p)
            return p.name
        if isinstance(v, int) and not isinstance(v, bool) and v > 0 and s.chance(0.05):
            name = self.fresh("c")
            self.lets.append((name, v))
            return name
        return literal(v)

    # statements
    def tensor(self, sig: Sig, scope: Scope) -> Tensor:
        t = Tensor(self.fresh("h" if scope.block is not None else "t"), sig)
        scope.pool.append(t)
        scope.locals.append(t)
        return t

    def emit(self, scope: Scope, func: str, inputs: list[Tensor], attrs: list[Attr],
             sigs: list[Sig], positional: Sequence[str] = ()) -> Call:
        s = self.src
        first = not any(isinstance(st, Call | Repeat) for st in scope.body)
        can_imply = len(inputs) == 1 and inputs[0] is scope.prev
        implicit = can_imply and ((scope.first_implicit and first) or s.chance(0.6))
        n_pos = 0
        while n_pos < len(attrs) and n_pos < len(positional) and attrs[n_pos].key == positional[n_pos]:
            n_pos += 1
        call = Call(func, inputs, attrs, s.integer(0, n_pos) if n_pos else 0, [], implicit)
        for k, t in enumerate(inputs):
            t.uses += 1
            if not implicit:
                t.by_name = True
                if s.chance(0.08):
                    wrap = self.inline_activation(t, scope)
                    if wrap is not None:
                        call.wraps[k] = wrap
        call.bare = not attrs and implicit and s.chance(0.5)
        call.bind = s.chance(0.3)
        call.outs = [self.tensor(sig, scope) for sig in sigs]
        scope.body.append(call)
        scope.prev = call.outs[-1]
        return call

    def inline_activation(self, t: Tensor, scope: Scope) -> Call | None:
        acts = [op for op in self.unary if op.category == "activation"]
        op = self.src.choice(acts)
        made = self.attrs(op, [t.sig])
        if made is None or made[1] != t.sig:
            return None
        return Call(op.name, [t], self.spelled(made[0], scope), 0, [], False)

    def unary_op(self) -> Op:
        """An op of one input: a category first (activations a quarter of the time, so layers
        are not crowded out), then an op of it, weighted by its attribute count (more to fuzz).
        The simplest draw is `linear`, which fits any input."""
        cats = sorted({op.category for op in self.unary} - {"activation"})
        cat = self.src.choice(cats) if cats and self.src.chance(0.75) else "activation"
        return self.src.choice([op for op in self.unary if op.category == cat
                                for _ in range(1 + len(op.Attrs.model_fields) // 2)])

    def pick(self, scope: Scope) -> Tensor:
        if scope.prev is not None and self.src.chance(0.7):
            return scope.prev
        return self.src.choice(scope.pool)

    def layer(self, scope: Scope, src: Tensor | None = None, want: Sig | None = None) -> Tensor | None:
        src = src or self.pick(scope)
        for _ in range(PRESERVING_TRIES if want is not None else TRIES):
            op = self.unary_op()
            made = self.attrs(op, [src.sig])
            if made is None or (want is not None and made[1] != want):
                continue
            attrs = self.spelled(made[0], scope)
            return self.emit(scope, op.name, [src], attrs, [made[1]], op.positional).outs[0]
        return None

    def merge(self, scope: Scope, inputs: list[Tensor] | None = None,
              want: Sig | None = None) -> Tensor | None:
        s = self.src
        for _ in range(TRIES):
            op = s.choice(self.merges)
            ins = inputs or self.merge_inputs(scope)
            if ins is None:
                return None
            made = self.attrs(op, [t.sig for t in ins])
            if made is None or (want is not None and made[1] != want):
                continue
            attrs = self.spelled(made[0], scope)
            return self.emit(scope, op.name, ins, attrs, [made[1]], op.positional).outs[0]
        return None

    def merge_inputs(self, scope: Scope) -> list[Tensor] | None:
        s = self.src
        a = s.choice(scope.pool)
        same = [t for t in scope.pool if t.sig == a.sig and t is not a]
        ranked = [t for t in scope.pool if len(t.sig.shape) == len(a.sig.shape) and t is not a]
        if not ranked and not s.chance(0.1):
            return None
        ins = [a]
        for _ in range(1 + s.chance(0.2)):
            if s.chance(0.03) or not ranked:
                ins.append(a)  # the same tensor twice
            else:
                ins.append(s.choice(same if same and s.chance(0.7) else ranked))
        return ins

    def branch(self, scope: Scope) -> None:
        """Two chains from one tensor, joined again when their shapes allow."""
        src = self.pick(scope)
        a = self.layer(scope, src)
        if a is None:
            return
        if self.src.chance(0.5):
            a = self.layer(scope, a) or a
        b = self.layer(scope, src, want=a.sig if self.src.chance(0.7) else None)
        if b is not None:
            self.merge(scope, [a, b])

    def block_call(self, scope: Scope, preserving: bool = False) -> Tensor | None:
        s = self.src
        src = scope.prev if preserving or scope.prev is not None and s.chance(0.6) else None
        src = src or s.choice(scope.pool)
        reusable = [b for b in self.blocks
                    if b.inputs[0].sig == src.sig and len(b.inputs) == 1
                    and (b.preserving or not preserving)]
        if reusable and s.chance(0.4):
            blk: BlockDef | None = s.choice(reusable)
            ins = [src]
        else:
            ins = [src]
            if not preserving and s.chance(0.25):
                same = [t for t in scope.pool if t.sig == src.sig and t is not src]
                if same:
                    ins.append(s.choice(same))
            blk = self.define_block([t.sig for t in ins], preserving)
        if blk is None:
            return None
        args: list[Attr] = []
        for p in blk.params:
            if p.default and s.chance(0.5):
                continue
            args.append(Attr(p.name, p.value, literal(p.value)))
        call = self.emit(scope, blk.name, ins, args, [o.sig for o in blk.outs],
                         [p.name for p in blk.params])
        return call.outs[-1]

    def define_block(self, sigs: list[Sig], preserving: bool) -> BlockDef | None:
        s = self.src
        blk = BlockDef(self.fresh("blk"), [], preserving=preserving)
        inner = Scope([], [], None, block=blk)
        for sig in sigs:
            t = Tensor(self.fresh("i"), sig)
            blk.inputs.append(t)
            inner.body.append(InputDecl(t, typed=False))
            inner.pool.append(t)
        inner.prev = blk.inputs[0]  # a block's statements start from its first input
        want = sigs[0] if preserving else None
        for _ in range(s.integer(1, MAX_BLOCK_STEPS)):
            self.step(inner, want=want, blocks=False)
        for x in blk.inputs:  # every input feeds the block's outputs
            if x.uses == 0:
                partners = [t for t in inner.locals if t.uses == 0]
                if not partners or self.merge(inner, [partners[-1], x], want=want) is None:
                    return None
        outs = [t for t in inner.locals if t.uses == 0]
        if not outs:
            return None
        if preserving and len(outs) > 1:
            joined = self.merge(inner, outs, want=want)
            if joined is None:
                return None
            outs = [joined]
        blk.outs = outs
        if not (len(outs) == 1 and outs[0] is inner.prev and s.chance(0.5)):
            for t in outs:
                t.by_name = True
            inner.body.append(Output(outs))
        blk.body = inner.body
        self.blocks.append(blk)
        return blk

    def repeat(self, scope: Scope) -> None:
        """`repeat N { ... }`: a body that keeps its input's shape, from `prev`."""
        s = self.src
        entry = scope.prev
        if entry is None:
            return
        count = s.integer(1, 3)
        inner = Scope([], list(scope.pool), entry, block=scope.block, first_implicit=True)
        uses = [(t, t.uses) for t in scope.pool]  # to give back if the repeat is dropped
        if s.chance(0.4):
            self.block_call(inner, preserving=True)
        else:
            self.layer(inner, entry, want=entry.sig)
        for _ in range(s.integer(0, 2) if inner.body else 0):
            self.step(inner, want=entry.sig, blocks=False)
        dangling = [t for t in inner.locals if t.uses == 0]
        if not inner.body or (len(dangling) > 1
                              and self.merge(inner, dangling, want=entry.sig) is None):
            for t, n in uses:  # dropped (a value no statement uses would be dead code)
                t.uses = n
            return
        final = inner.locals[-1]
        text = str(count)
        if s.chance(0.1):
            text = self.fresh("c")
            self.lets.append((text, count))
        # Every other one is a `for` loop over `count` elements: decided without a draw, so
        # that a seed makes the same model it made before `for` existed.
        scope.body.append(Repeat(text, inner.body, loop=text.isdigit() and len(scope.body) % 2 == 1))
        scope.pool.append(final)
        scope.locals.append(final)
        scope.prev = final

    def step(self, scope: Scope, want: Sig | None = None, blocks: bool = True) -> None:
        kinds = ["layer", "layer", "layer", "merge", "branch", "repeat"]
        if blocks:
            kinds.append("block")
        kind = self.src.choice(kinds)
        if want is not None:  # every value keeps `want`: a repeat body or a repeatable block
            same = [t for t in scope.pool if t.sig == want]
            if kind == "merge" and len(same) > 1:
                a = self.src.choice(same)
                self.merge(scope, [a, self.src.choice([t for t in same if t is not a])], want=want)
            else:
                self.layer(scope, want=want)
        elif kind == "layer":
            self.layer(scope)
        elif kind == "merge":
            self.merge(scope)
        elif kind == "branch":
            self.branch(scope)
        elif kind == "repeat":
            self.repeat(scope)
        else:
            self.block_call(scope)

    def model(self) -> str:
        s = self.src
        scope = Scope([], [], None)
        inputs = []
        first = self.input_shape()
        for k in range(1 + s.chance(0.3) + s.chance(0.1)):
            sig = first if k and s.chance(0.5) else self.input_shape()
            t = Tensor(f"x{k}", sig)
            inputs.append(t)
            scope.body.append(InputDecl(t, typed=True, dtype_alias=s.chance(0.1)))
            scope.pool.append(t)
            scope.prev = t
        for _ in range(s.integer(1, MAX_STEPS)):
            self.step(scope)
        for x in inputs:
            if x.uses == 0 and s.chance(0.9):
                self.layer(scope, x)
        while not scope.locals:
            self.layer(scope, s.choice(inputs))
        outs = [t for t in scope.locals if t.uses == 0]
        if s.chance(0.1):  # an output that also feeds a layer, an input, or one output twice
            outs.append(s.choice(scope.pool))
        if not (len(outs) == 1 and outs[0] is scope.prev and s.chance(0.6)):
            for t in outs:
                t.by_name = True
            scope.body.append(Output(outs))
        return self.render(scope.body)

    # text
    def render(self, body: list[Stmt]) -> str:
        lines = [f"let {name} = {literal(v)}" for name, v in self.lets]
        for blk in self.blocks:
            params = ", ".join(f"{p.name}: {p.type}" + (f" = {literal(p.value)}" if p.default else "")
                               for p in blk.params)
            lines.append(f"block {blk.name}({params}) {{")
            lines += self.lines(blk.body, "    ")
            lines.append("}")
        lines.append("model fuzz {")
        lines += self.lines(body, "    ")
        lines.append("}")
        return "\n".join(lines) + "\n"

    def lines(self, body: list[Stmt], indent: str) -> list[str]:
        out: list[str] = []
        for st in body:
            if isinstance(st, InputDecl):
                t = st.tensor
                dims = ", ".join("?" if d is None else str(d) for d in t.sig.shape)
                dtype = t.sig.dtype
                if st.dtype_alias:
                    dtype = {"f32": "float32", "i32": "int32", "i64": "int64"}[dtype]
                typed = f": {dtype}[{dims}]"
                out.append(f"{indent}input {t.name}{typed if st.typed else ''}")
            elif isinstance(st, Call):
                lhs = ""
                if len(st.outs) > 1 or st.bind or any(t.by_name for t in st.outs):
                    lhs = ", ".join(t.name for t in st.outs) + " = "
                out.append(f"{indent}{lhs}{self.call_text(st)}")
            elif isinstance(st, Repeat) and st.loop:
                elements = ", ".join(str(k + 1) for k in range(int(st.count)))
                out.append(f"{indent}for k in [{elements}] {{")  # tensors are named with digits
                out += self.lines(st.body, indent + "    ")
                out.append(f"{indent}}}")
            elif isinstance(st, Repeat):
                out.append(f"{indent}repeat {st.count} {{")
                out += self.lines(st.body, indent + "    ")
                out.append(f"{indent}}}")
            else:
                out.append(f"{indent}output " + ", ".join(t.name for t in st.tensors))
        return out

    def call_text(self, c: Call) -> str:
        args = [] if c.implicit else [
            self.call_text(c.wraps[k]) if k in c.wraps else t.name for k, t in enumerate(c.inputs)]
        args += [a.text for a in c.attrs[:c.positional]]
        args += [f"{a.key}={a.text}" for a in c.attrs[c.positional:]]
        if not args and c.bare:
            return c.func
        return f"{c.func}({', '.join(args)})"


def generate(src: Source) -> str:
    """One random model spec (text)."""
    return Generator(src).model()


def model_specs() -> Any:
    """The hypothesis strategy of random model specs."""
    from hypothesis import strategies as st

    @st.composite
    def specs(draw: Callable[[Any], Any]) -> str:
        return generate(DrawSource(draw))

    return specs()


# -- the oracle --------------------------------------------------------------------------------

@dataclass
class Result:
    outcome: Literal["discarded", "agreed", "disagreed", "crashed"]
    stage: str = ""  # check, precision, compile <backend>, run, compare, shape
    detail: str = ""
    ops: frozenset[str] = frozenset()  # the ops of the checked graph
    skipped: dict[str, str] = field(default_factory=dict)  # backends not installed
    pairs_apart: bool = False  # agreed with the reference, but two frameworks beyond tolerance


def _vary_constants(weights: dict[str, np.ndarray], seed: int) -> None:
    """Seeded init leaves biases at 0 and scales at 1; vary every constant parameter so its
    layout is checked too."""
    rng = np.random.default_rng(seed + 11)
    for key, w in weights.items():
        if key.endswith(".moving_variance"):  # batch_norm's: a variance stays positive
            weights[key] = rng.uniform(0.5, 2.0, w.shape).astype(np.float32)
        elif w.size and np.all(w == w.flat[0]):
            weights[key] = (w + rng.normal(0, 0.5, w.shape)).astype(np.float32)


def _largest(v: np.ndarray) -> float:
    return float(np.abs(v).max()) if np.size(v) else 0.0


def _rounding_spread(graph: Any, weights: dict[str, np.ndarray], xs: list[np.ndarray],
                     seed: int) -> list[float]:
    """How far float32 rounding alone may move each output (max abs): the reference run twice,
    exactly and with every layer's output moved by `ROUNDING_UNITS` float32 units."""
    from dslc.backends.reference.interpret import LOWERINGS, Context, Interpreter

    prepared = Interpreter(graph, weights).graph
    rng = np.random.default_rng(seed + 23)
    runs = []
    for noise in (0.0, ROUNDING_UNITS * 2.0**-24):
        env = {i.name: np.asarray(x, np.float64) for i, x in zip(prepared.inputs, xs, strict=True)}
        ctx = Context(prepared, weights)
        for node in prepared.nodes:
            # Rounding inside an op is seen as rounding of its operands (which the op may
            # amplify: layer_norm over near-equal values) and of its result, in units of its
            # largest operand (gelu(-3) is ~-0.004 but off by units of 3).
            ins = [v + noise * _largest(v) * rng.uniform(-1, 1, np.shape(v))
                   for v in (env[n] for n in node.inputs)]
            y = LOWERINGS.lower(ctx, node, ins)
            scale = max([_largest(y), *(_largest(v) for v in ins)])
            env[node.name] = y + noise * scale * rng.uniform(-1, 1, np.shape(y))
        runs.append([env[o] for o in prepared.outputs])
    return [float(np.abs(b - a).max()) if np.size(a) else 0.0 for a, b in zip(*runs, strict=True)]


def _compiles(backend: Any, spec: Any, graph: Any, folder: Path) -> None:
    """What `dslc compile` writes, checked as a user's tools would: source byte-compiles, an
    ONNX file passes the full checker."""
    path = Path(backend.compile(spec, graph, folder))
    if backend.emits == "source":
        py_compile.compile(str(path), cfile=str(folder / "out.pyc"), doraise=True)
    elif path.suffix == ".onnx":
        import onnx

        onnx.checker.check_model(str(path), full_check=True)


def differential(text: str, seed: int = 0, batch: int = 3, shift: float = 0.0) -> Result:
    """Check `text`, compile it on every backend that emits and run it on every backend that
    runs (the reference included) on the same weights and batch (standard normal plus
    `shift`: all-negative windows find padding that is not neutral)."""
    from dslc import verify
    from dslc.backends import backend_names, get_backend
    from dslc.compiler import compile_text
    from dslc.diagnostics import DslError
    from dslc.weights import init_weights

    try:
        spec = compile_text(text, "fuzz.dl")
    except DslError as err:
        return Result("discarded", "check", str(err))
    graph = spec.model()
    ops = frozenset(n.op for n in graph.nodes)
    skipped: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="dslc-fuzz-") as tmp:
        for name in backend_names():
            backend = get_backend(name)
            if not backend.emits:
                continue
            try:
                backend.require()
            except DslError as exc:
                skipped[name] = str(exc)
                continue
            try:
                _compiles(backend, spec, graph, Path(tmp) / name)
            except Exception:
                return Result("crashed", f"compile {name}", traceback.format_exc(), ops, skipped)
    try:
        weights = init_weights(graph, seed)
        _vary_constants(weights, seed)
        xs = [x + np.float32(shift) if x.dtype == np.float32 else x
              for x in verify.seeded_batch(graph, batch, seed)]
        report = verify.run_backends(graph, weights, xs)
    except Exception:
        return Result("crashed", "run", traceback.format_exc(), ops, skipped)
    skipped.update(report.skipped)
    want = [graph.type_of(o).shape for o in graph.outputs]
    for name, ys in report.outputs.items():
        got = [tuple(y.shape) for y in ys]
        if len(got) != len(want) or any(
                len(g) != len(w) + 1 or g[0] != batch
                or any(d is not None and d != e for d, e in zip(w, g[1:], strict=True))
                for g, w in zip(got, want, strict=True)):
            return Result("disagreed", "shape", f"{name} gave shapes {got}, the checker {want}",
                          ops, skipped)
    # The oracle is the reference: two frameworks each within tolerance of it may sit up to
    # twice the tolerance apart, which `verify` (comparing every pair) calls a failure.
    against = {k: p for k, p in report.pairs.items() if k[1] == verify.REFERENCE}
    if not all(p.ok for p in against.values()):
        lines = [f"{a} vs {b}: max abs diff {p.abs:.3e}, max rel diff {p.rel:.3e}"
                 for (a, b), p in against.items() if not p.ok]
        lines += [f"{d.backend} departs first at `{d.layer}` ({d.op})" if d.layer else
                  f"{d.backend}: {d.note}" for d in report.divergences.values()]
        spread = _rounding_spread(graph, weights, xs, seed)
        lines.append("float32 rounding alone moves the outputs by up to "
                     + ", ".join(f"{v:.3e}" for v in spread))
        if all(d.ok or d.abs <= EXCUSED * v for p in against.values()
               for d, v in zip(p.per_output, spread, strict=False)):
            return Result("discarded", "precision", "\n".join(lines), ops, skipped)
        return Result("disagreed", "compare", "\n".join(lines), ops, skipped)
    apart = [f"{a} vs {b}: max abs diff {p.abs:.3e}" for (a, b), p in report.pairs.items()
             if not p.ok]
    return Result("agreed", "", "; ".join(apart), ops, skipped, pairs_apart=bool(apart))
