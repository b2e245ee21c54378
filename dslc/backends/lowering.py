"""A backend is a table of lowerings, one per op, all with one signature:

    @LOWERINGS("dense")
    def dense(ctx: Context, node: Node, xs: list[Value]) -> Value: ...

`Context` and `Value` are the backend's own (an emitter and a Python expression, an ONNX
graph under construction and a value name, numpy arrays ...). The decorator checks the op
name against the registry when the module is imported, so a typo fails at once.

An op without a rule of its own in a backend is lowered through its decomposition
(`Op.decompose`) when it has one: `expand` rewrites the graph into ops the backend knows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from dslc.diagnostics import DslError
from dslc.ir.graph import Graph, Node, TensorType
from dslc.ops import all_ops, find_op, get_op

C = TypeVar("C")
V = TypeVar("V")
Rule = Callable[[C, Node, list[V]], V]


class LoweringTable(Generic[C, V]):
    """op name → lowering rule of one backend."""

    def __init__(self, backend: str):
        self.backend = backend
        self.rules: dict[str, Callable[[C, Node, list[V]], V]] = {}

    def __call__(self, *ops: str) -> Callable[[Callable[[C, Node, list[V]], V]],
                                              Callable[[C, Node, list[V]], V]]:
        def deco(fn: Callable[[C, Node, list[V]], V]) -> Callable[[C, Node, list[V]], V]:
            for op in ops:
                self.add(op, fn)
            return fn

        return deco

    def add(self, op: str, fn: Callable[[C, Node, list[V]], V]) -> None:
        if find_op(op) is None:
            raise ValueError(f"backend {self.backend}: lowering for unknown op {op!r}")
        if op in self.rules:
            raise ValueError(f"backend {self.backend}: op {op!r} lowered twice")
        self.rules[op] = fn

    def __contains__(self, op: object) -> bool:
        return op in self.rules

    def __iter__(self) -> Iterator[str]:
        return iter(self.rules)

    def rule(self, node: Node) -> Callable[[C, Node, list[V]], V]:
        fn = self.rules.get(node.op)
        if fn is None:
            raise DslError(f"op `{node.op}` is not supported by backend {self.backend}", node.span)
        return fn

    def lower(self, ctx: C, node: Node, xs: list[V]) -> V:
        return self.rule(node)(ctx, node, xs)

    def missing(self) -> list[str]:
        """Registered ops this backend can lower neither itself nor by decomposition."""
        return [name for name in all_ops() if not self.supports(name)]

    def supports(self, op: str) -> bool:
        if op in self.rules:
            return True
        parts = _parts_of(op)
        return parts is not None and all(self.supports(p) for p in parts)

    def prepare(self, graph: Graph) -> Graph:
        """`graph` with every op this backend lacks decomposed; a located error for an op it
        cannot lower at all."""
        graph = expand(graph, lambda op: op in self.rules)
        for node in graph.nodes:
            self.rule(node)
        return graph


def _parts_of(op: str) -> tuple[str, ...] | None:
    """The ops a decomposition of `op` uses, as the op declares them (None: it has none)."""
    return get_op(op).decomposes_into or None


def expand(graph: Graph, has_rule: Callable[[str], bool]) -> Graph:
    """Replace each node whose op `has_rule` rejects by its decomposition (recursively).
    The decomposition's last node keeps the layer's name, so outputs, consumers and weight
    keys are unchanged; the others are named `<layer>_<role>`."""
    if all(has_rule(n.op) for n in graph.nodes):
        return graph
    taken = {n.name for n in graph.nodes} | {i.name for i in graph.inputs}
    types: dict[str, TensorType] = {i.name: i.type for i in graph.inputs}
    nodes: list[Node] = []

    def fresh(base: str) -> str:
        name, k = base, 2
        while name in taken:
            name, k = f"{base}_{k}", k + 1
        taken.add(name)
        return name

    def add(node: Node) -> None:
        op = get_op(node.op)
        in_types = [types[i] for i in node.inputs]
        parts = None if has_rule(node.op) else op.decompose(node.attrs, in_types)
        if parts is None:  # the backend's own rule, or none at all (prepare() says so)
            nodes.append(node)
            types[node.name] = node.type or op.infer(node.attrs, in_types)
            return
        if node.params:
            raise ValueError(f"op {node.op!r} decomposes but owns parameters")
        local: dict[str, str] = {f"${k}": name for k, name in enumerate(node.inputs)}
        for k, part in enumerate(parts):
            last = k == len(parts) - 1
            sub_op = get_op(part.op)
            attrs: Any = sub_op.Attrs(**part.attrs)
            inputs = [local[i] for i in part.inputs]
            sub_types = [types[i] for i in inputs]
            if sub_op.params(attrs, sub_types):
                raise ValueError(f"the decomposition of {node.op!r} uses {part.op!r}, "
                                 "which owns parameters")
            sub = Node(name=node.name if last else fresh(f"{node.name}_{part.role}"),
                       op=part.op, inputs=inputs, attrs=attrs, span=node.span,
                       type=sub_op.infer(attrs, sub_types))
            local[part.role] = sub.name
            add(sub)

    for node in graph.nodes:
        add(node)
    return graph.model_copy(update={"nodes": nodes})


def activation_node(node: Node, name: str | None = None) -> Node:
    """A node applying the activation `name` (default: `node`'s `activation=`) with the
    activation op's pinned defaults, for lowering a layer's fused activation with the
    backend's rule for that activation op."""
    act = name or get_op(node.op).activation(node.attrs)
    return Node(name=node.name, op=act, inputs=[node.name], attrs=get_op(act).Attrs(),
                span=node.span, type=node.type)
