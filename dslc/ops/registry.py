"""The one op registry. An op declares, in one class: its attributes (a pydantic model
with pinned defaults), its positional attribute order, how many tensor inputs it takes,
its shape rule, its parameters in the canonical layout, its cost, and — where it can be
written with other ops — a decomposition that backends without a rule of their own use.

Backends look ops up by name (`get_op`). The op families (`dslc/ops/<family>.py`) fill the
registry when `dslc.ops` is imported; this module imports none of them.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict

from dslc.ir.graph import FLOAT_DTYPES, ParamSpec, Shape, TensorType

if TYPE_CHECKING:
    from dslc.ir.graph import Graph, Node

Padding = Literal["valid", "same"]
# How an op treats a padding mask on its input (Keras's mask propagation), see `Op.masking`.
Masking = Literal["none", "keep", "use", "use_keep", "make"]
Init = Literal[
    "glorot_uniform", "glorot_normal", "xavier_uniform", "xavier_normal", "he_uniform",
    "he_normal", "lecun_uniform", "lecun_normal", "normal", "uniform", "zeros", "ones",
    "orthogonal",
]
# A ParamSpec init `unit_forget_bias+<init>`: an LSTM bias, `<init>` with the forget gate's
# quarter set to ones (Keras's `unit_forget_bias=True`).
UNIT_FORGET = "unit_forget_bias+"


class ShapeError(Exception):
    """A shape rule's complaint; the pass that calls the rule adds the layer's place."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint


class OpAttrs(BaseModel):
    # Strict: `dense("10")`, `dense(2.5)` and `dense(true)` are mistakes, not conversions.
    # defer_build: an op's validator is built the first time a spec uses it, not at import.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, defer_build=True)


class NoAttrs(OpAttrs):
    pass


class Part:
    """One node of a decomposition: `op` with `attrs` applied to `inputs`, which name the
    decomposed node's inputs (`"$0"`, `"$1"`, ...) or earlier parts by their `role`."""

    def __init__(self, role: str, op: str, inputs: list[str], **attrs: Any):
        self.role, self.op, self.inputs, self.attrs = role, op, inputs, attrs


class Op:
    """Base of every op. Subclasses set `name` and `Attrs` and override the rules."""

    name: ClassVar[str]
    Attrs: ClassVar[type[OpAttrs]] = NoAttrs
    positional: ClassVar[tuple[str, ...]] = ()
    min_inputs: ClassVar[int] = 1
    max_inputs: ClassVar[int | None] = 1
    category: ClassVar[str] = "layer"
    layout: ClassVar[str] = ""  # canonical parameter shapes, for the docs
    # Keras attributes dslc refuses on purpose: name → why (the checker's hint)
    unsupported: ClassVar[dict[str, str]] = {}
    # Whether the values the op outputs are its input's, only moved or (at inference) passed
    # through: "the activation that ends an output" looks through such ops.
    passes_values: ClassVar[bool] = False
    # The ops `decompose` writes this op with (empty: it has no decomposition).
    decomposes_into: ClassVar[tuple[str, ...]] = ()
    # The dtypes (dslc.ir.graph.NUMPY_DTYPES keys) the op takes on its inputs: floats unless
    # it says otherwise (`embedding` takes integer ids). The checker refuses the others.
    input_dtypes: ClassVar[frozenset[str]] = FLOAT_DTYPES

    def accepts(self, dtype: str) -> bool:
        """Whether the op takes an input of `dtype`."""
        return dtype in self.input_dtypes

    def id_limit(self, attrs: Any) -> int | None:
        """For an op taking integer ids: ids must be below this (an embedding's `vocab`);
        `dslc.verify.seeded_batch` draws within it. None: no bound."""
        return None

    def masking(self, attrs: Any) -> Masking:
        """What the op does with a padding mask on its inputs (Keras's `mask_zero`):

        - `none`: it cannot honour one; the checker refuses a masked input (the default).
        - `keep`: it works position by position; its output carries its inputs' mask
          (ANDed when several inputs carry one, as Keras's merge layers do).
        - `use`: it consumes the mask (`ctx.mask_of`); its output is unmasked.
        - `use_keep`: it consumes the mask and its output carries it on.
        - `make`: it makes one from its integer input (`embedding(mask_zero=true)`).

        See dslc/passes/masks.py."""
        return "none"

    def mask_carriers(self, attrs: Any, count: int) -> tuple[int, ...]:
        """For `keep` and `use_keep`: the inputs (of `count`) whose masks the output carries,
        ANDed; all of them unless the op says otherwise (attention: the query's alone)."""
        return tuple(range(count))

    def infer(self, attrs: Any, inputs: list[TensorType]) -> TensorType:  # pragma: no cover
        raise NotImplementedError

    def params(self, attrs: Any, inputs: list[TensorType]) -> dict[str, ParamSpec]:
        return {}

    def macs(self, node: Node, inputs: list[TensorType]) -> int:
        """Multiply-adds of one sample's forward pass (0 for cheap ops)."""
        return 0

    def activation(self, attrs: Any) -> str:
        """The activation the op applies last: its own name for an activation op, else its
        `activation=` attribute (`linear` when it has none)."""
        if self.category == "activation":
            return self.name
        return str(getattr(attrs, "activation", "linear"))

    def passes_values_of(self, attrs: Any, rank: int) -> bool:
        """`passes_values` for one layer (its input `rank` per sample): an op that moves values
        only sometimes keeps the last axis whole, where a softmax normalises, says so here."""
        return self.passes_values

    def decompose(self, attrs: Any, inputs: list[TensorType]) -> list[Part] | None:
        """The op written with other (parameter-free) ops, for backends without a rule of
        their own; the last part's value is the op's. None: no decomposition."""
        return None

    @classmethod
    def summary(cls) -> str:
        return (cls.__doc__ or "").strip().splitlines()[0]


OPS: dict[str, Op] = {}


def register(cls: type[Op]) -> type[Op]:
    if cls.name in OPS:
        raise ValueError(f"op {cls.name!r} registered twice")
    OPS[cls.name] = cls()
    return cls


# Op families load when a spec first names one of their ops: `dslc check` of a CNN need not
# build the attention or recurrent ops' classes (about 15 ms). The index (op → family module,
# and which ops are activations) is a module written by `python -m dslc.docs`; a test keeps it
# current, and a name the index lacks loads every family before it is called unknown.
INDEX = Path(__file__).with_name("_index.py")
_index_cache: dict[str, Any] = {}


def _index() -> dict[str, Any]:
    if not _index_cache:
        try:
            from dslc.ops import _index as saved

            _index_cache.update(ops=dict(saved.OPS), activations=list(saved.ACTIVATIONS))
        except (ImportError, AttributeError):
            _index_cache.update(ops={}, activations=[])
    return _index_cache


def _load(family: str) -> None:
    importlib.import_module(f"dslc.ops.{family}")


def find_op(name: str) -> Op | None:
    """The op called `name`, or None (for the checker, which says what it expected)."""
    op = OPS.get(name)
    if op is None:
        family = _index()["ops"].get(name)
        if family is not None:
            _load(family)
        elif not _index_cache.get("all_loaded"):  # unknown, or an op newer than the index
            all_ops()
        op = OPS.get(name)
    return op


def get_op(name: str) -> Op:
    """The op called `name`; a KeyError for a name the registry lacks (a bug by then)."""
    op = find_op(name)
    if op is None:
        raise KeyError(f"no op {name!r} is registered")
    return op


def is_op_name(name: str) -> bool:
    """Whether `name` is an op's, loading nothing."""
    return name in OPS or name in _index()["ops"]


def op_names() -> list[str]:
    """Every op's name, loading none (for "did you mean" hints)."""
    return sorted({*_index()["ops"], *OPS})


def all_ops() -> dict[str, Op]:
    """Every op, each family loaded; in a fixed order (family by family, alphabetically, each
    in the order it declares its ops), whatever order they loaded in."""
    import pkgutil

    families = sorted(m.name for m in pkgutil.iter_modules([str(INDEX.parent)])
                      if not m.name.startswith("_"))
    for family in families:
        _load(family)
    _index()["all_loaded"] = True  # a block's name, asked again and again, loads nothing more
    rank = {f"dslc.ops.{f}": i for i, f in enumerate(families)}
    order = sorted(OPS, key=lambda n: rank.get(type(OPS[n]).__module__, len(rank)))
    return {name: OPS[name] for name in order}


def activation_names() -> tuple[str, ...]:
    """Every registered activation op: the values `activation=` takes."""
    for family in {_index()["ops"].get(n, "activation") for n in _index()["activations"]}:
        _load(family)
    return tuple(name for name, op in OPS.items() if op.category == "activation")


def write_index(path: Path = INDEX) -> None:
    import json  # strings as JSON writes them are Python literals too

    ops = all_ops()
    lines = ['"""Op name → family module, and the activations. Written by `python -m dslc.docs`."""',
             "", "OPS = {"]
    lines += [f"    {json.dumps(name)}: {json.dumps(type(op).__module__.rsplit('.', 1)[1])},"
              for name, op in sorted(ops.items())]
    lines += ["}", "", "ACTIVATIONS = ("]
    lines += [f"    {json.dumps(name)}," for name, op in ops.items() if op.category == "activation"]
    lines += [")"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def id_bound(graph: Graph, name: str) -> tuple[int, str] | None:
    """The least `Op.id_limit` of the layers that read the tensor `name`, and the layer; None
    where no reader bounds its ids."""
    known = [(limit, n.name) for n in graph.nodes
             if name in n.inputs and (limit := get_op(n.op).id_limit(n.attrs)) is not None]
    return min(known) if known else None


def node_activation(node: Node) -> str:
    """The activation `node` applies last (see `Op.activation`)."""
    return get_op(node.op).activation(node.attrs)


def ending_activation(graph: Graph, name: str) -> tuple[str, list[Node]]:
    """The activation that ends the tensor `name` and the layers after it that only pass its
    values on (dropout, flatten, reshape, linear; permute and slice while they keep the last
    axis whole), outermost first. `linear` for a graph input.

    The checker, the code generators and the ONNX task metadata all ask this one function."""
    through: list[Node] = []
    while graph.has_node(name):
        node = graph.node(name)
        op = get_op(node.op)
        act = op.activation(node.attrs)
        if act != "linear" or not _passes_values(graph, node, op):
            return act, through
        through.append(node)
        name = node.inputs[0]
    return "linear", through


def _passes_values(graph: Graph, node: Node, op: Op) -> bool:
    if not op.passes_values:
        return False
    try:
        rank = len(graph.type_of(node.inputs[0]).shape)
    except KeyError:  # an unchecked graph: trust the op's general answer
        return True
    return op.passes_values_of(node.attrs, rank)


def graph_macs(graph: Graph) -> int:
    """Multiply-adds of one sample's forward pass through `graph`."""
    return sum(get_op(n.op).macs(n, [graph.type_of(i) for i in n.inputs]) for n in graph.nodes)


# Below this many multiply-adds a batch, one CPU thread trains faster: the per-op work is too
# small to amortise OpenMP's hand-offs, and on a busy 2-core machine a second thread that spins
# waiting for a core costs up to 10x (measured on digits_cnn). Both trainers use this rule.
SMALL_BATCH_MACS = 20_000_000


def fmt(shape: Shape) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def pair(v: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    if isinstance(v, int):
        return (v, v)
    return (int(v[0]), int(v[1]))
