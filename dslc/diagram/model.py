"""Checked graph → what a diagram shows: boxes (inputs, layers, folded runs of layers,
outputs), groups (block instances, folded repeats) and edges between boxes.

Runs of repeated structure are folded so that the picture stays bounded: a chain of N
identical layers becomes one box "× N", a chain of N identical block instances (or of any
repeated sequence of up to MAX_PERIOD items) becomes one group "× N" that shows the first
repetition. A run is folded only when it is a chain: each repetition takes the previous one's
last tensor, and nothing outside the run reads a tensor inside it but the last.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from dslc.ir.graph import BlockCall, Graph, Node, TensorType
from dslc.ops import find_op

MAX_PERIOD = 8  # items in the repeated sequence of a run (the body of a `repeat`)
MIN_REPEAT = 3  # repetitions worth folding (two are shown as they are)
MAX_LABEL = 44  # characters of a line in a box; the hover panel has the rest


@dataclass
class Box:
    key: str
    kind: str  # "input" | "layer" | "run" | "output"
    name: str  # the layer (or input) name; a run's first layer
    lines: list[str]  # shown in the box, first in bold
    family: str  # colour: the op's family (core, conv, pool, ...), "input" or "output"
    details: dict[str, Any]
    count: int = 1  # layers a run box stands for


@dataclass
class Group:
    key: str
    kind: str  # "model" | "block" | "repeat"
    label: str
    details: dict[str, Any]
    children: list[Item] = field(default_factory=list)


Item = Box | Group


@dataclass
class Diagram:
    title: str  # "model <name>"
    subtitle: str  # file and totals
    root: Group
    edges: list[tuple[str, str]]  # box key → box key
    boxes: dict[str, Box]
    layers: int  # layers of the model (before folding)

    def groups(self) -> list[Group]:
        found, work = [], [self.root]
        while work:
            g = work.pop()
            found.append(g)
            work.extend(c for c in g.children if isinstance(c, Group))
        return found


_BAD_CHARS = re.compile("[^\t\n\r\x20-\x7e\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def clean(text: object) -> str:
    """Text that XML and HTML can carry: characters they forbid (controls, lone surrogates
    from undecodable file names) become U+FFFD. Escaping is the writer's job."""
    return _BAD_CHARS.sub("\ufffd", str(text))


def shorten(text: str, limit: int = MAX_LABEL) -> str:
    if len(text) <= limit:
        return text
    half = (limit - 1) // 2
    return text[:half] + "…" + text[len(text) - (limit - 1 - half):]


def _shape(t: TensorType | None) -> str:
    return "[?]" if t is None else str(t)


def _family(op: str) -> str:
    found = find_op(op)
    return type(found).__module__.rsplit(".", 1)[-1] if found is not None else "core"


def _attrs(node: Node) -> dict[str, str]:
    dump = node.attrs.model_dump() if hasattr(node.attrs, "model_dump") else {}
    return {clean(k): clean(_value(v)) for k, v in dump.items()}


def _value(v: Any) -> str:
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, bool):
        return "true" if v else "false"
    return "none" if v is None else str(v)


def _op_line(node: Node) -> str:
    """`conv2d(16) · relu`: the op, its positional attributes and its fused activation."""
    op = find_op(node.op)
    attrs = node.attrs
    args = [_value(getattr(attrs, k)) for k in (op.positional if op is not None else ())
            if hasattr(attrs, k)]
    text = node.op + (f"({', '.join(args)})" if args else "")
    act = getattr(attrs, "activation", None)
    if act not in (None, "linear") and op is not None and op.category != "activation":
        text += f" · {act}"
    return text


def _params_text(n: int, each: bool = False) -> str:
    if n == 0:
        return ""
    return f" · {n:,} param{'s' if n != 1 else ''}{' each' if each else ''}"


class _Sources:
    def __init__(self, sources: dict[str, str]):
        self.sources = sources
        self.lines: dict[str, list[str]] = {}

    def line(self, file: str, line: int) -> str:
        if file not in self.lines:
            self.lines[file] = self.sources.get(file, "").splitlines()
        lines = self.lines[file]
        return shorten(clean(lines[line - 1].strip()), 200) if 0 < line <= len(lines) else ""


@dataclass
class _Tree:
    """A block instance (or the model) before folding: its items in graph order."""

    call: BlockCall | None
    items: list[int | _Tree] = field(default_factory=list)  # node indices and instances
    nodes: list[int] = field(default_factory=list)  # every node inside, in graph order


class _Builder:
    def __init__(self, graph: Graph, sources: dict[str, str], fold: bool):
        self.graph = graph
        self.fold = fold
        self.src = _Sources(sources)
        self.index = {n.name: i for i, n in enumerate(graph.nodes)}
        self.outputs = set(graph.outputs)
        self.consumers: dict[str, list[int]] = {}
        for i, n in enumerate(graph.nodes):
            for t in n.inputs:
                self.consumers.setdefault(t, []).append(i)
        self.boxes: dict[str, Box] = {}
        self.alias: dict[str, str] = {}  # tensor name → key of the box that shows it
        self.hidden: set[int] = set()  # nodes of folded repetitions after the first
        self.keys = 0
        self.sig_ids: dict[Any, int] = {}
        # Folding tries candidates; on a pathological graph it gives up rather than go
        # quadratic (the picture is then drawn unfolded from there on).
        self.budget = 50 * len(graph.nodes) + 100_000

    def key(self, prefix: str) -> str:
        self.keys += 1
        return f"{prefix}{self.keys}"

    # the tree of block instances
    def tree(self) -> _Tree:
        root = _Tree(None)
        by_path: dict[tuple[str, ...], _Tree] = {(): root}
        for i, node in enumerate(self.graph.nodes):
            path: tuple[str, ...] = ()
            parent = root
            for call in node.blocks:
                path = (*path, call.instance)
                if path not in by_path:
                    by_path[path] = _Tree(call)
                    parent.items.append(by_path[path])
                parent = by_path[path]
                parent.nodes.append(i)
            parent.items.append(i)
            root.nodes.append(i)
        return root

    # signatures: what makes two items the same
    def node_sig(self, i: int, depth: int) -> int:
        n = self.graph.nodes[i]
        blocks = tuple(b.block for b in n.blocks[depth:])
        raw = (n.op, repr(n.attrs), n.type, n.param_count, len(n.inputs), blocks)
        return self.sig_ids.setdefault(raw, len(self.sig_ids))

    def item_nodes(self, item: int | _Tree) -> list[int]:
        return [item] if isinstance(item, int) else item.nodes

    def item_sig(self, item: int | _Tree, depth: int) -> int:
        nodes = self.item_nodes(item)
        pos = {self.graph.nodes[j].name: k for k, j in enumerate(nodes)}
        # inner wiring by position, so that two instances compare equal
        raw = tuple((self.node_sig(j, depth),
                     tuple(pos.get(t, -1) for t in self.graph.nodes[j].inputs)) for j in nodes)
        return self.sig_ids.setdefault(("item", raw), len(self.sig_ids))

    # folding
    def runs(self, items: list[int | _Tree], depth: int) -> list[tuple[int, int, int]]:
        """(start, period, repetitions) of each run to fold, left to right."""
        if not self.fold or len(items) < MIN_REPEAT:
            return []
        sigs = [self.item_sig(it, depth) for it in items]
        n = len(sigs)
        streaks = {}
        for p in range(1, min(MAX_PERIOD, n // MIN_REPEAT) + 1):
            s = [0] * (n + 1)
            for j in range(n - p - 1, -1, -1):
                s[j] = s[j + 1] + 1 if sigs[j] == sigs[j + p] else 0
            streaks[p] = s
        found, i = [], 0
        while i < n and self.budget > 0:
            best: tuple[int, int] | None = None  # (period, repetitions)
            for p, s in streaks.items():
                most = 1 + s[i] // p
                if most < MIN_REPEAT or (best and most * p <= best[0] * best[1]):
                    continue
                r = self.chain(items, i, p, most)
                if r >= MIN_REPEAT and (best is None or r * p > best[0] * best[1]):
                    best = (p, r)
            if best:
                found.append((i, *best))
                i += best[0] * best[1]
            else:
                i += 1
        return found

    def chain(self, items: list[int | _Tree], start: int, p: int, most: int) -> int:
        """How many of the `most` repetitions from `start` form a foldable chain (0: none)."""
        periods = [[j for it in items[start + k * p:start + (k + 1) * p] for j in self.item_nodes(it)]
                   for k in range(most)]
        self.budget -= sum(map(len, periods))
        names = [self.graph.nodes[j].name for j in periods[0]]
        at0 = {t: q for q, t in enumerate(names)}
        outside = {t for j in periods[0] for t in self.graph.nodes[j].inputs if t not in at0}
        if len(outside) != 1:
            return 0
        r = 1
        while r < most:  # repetition r reads its own tensors like the previous one, or its last
            prev, cur = periods[r - 1], periods[r]
            at_prev = {self.graph.nodes[j].name: q for q, j in enumerate(prev)}
            ok = True
            for j0, j in zip(prev, cur):
                for t0, t in zip(self.graph.nodes[j0].inputs, self.graph.nodes[j].inputs):
                    q = at_prev.get(t0)
                    want = prev[-1] if q is None else cur[q]
                    if t != self.graph.nodes[want].name:
                        ok = False
            if not ok:
                break
            r += 1
        # Only the run's last tensor may be read after it: cut the run where that holds.
        period_of = {j: k for k in range(r) for j in periods[k]}
        need = []  # per repetition: the last repetition that reads its tensors (all, all but last)
        for k in range(r):
            every = inner = k
            for q, j in enumerate(periods[k]):
                name = self.graph.nodes[j].name
                reach = r if name in self.outputs else max(
                    (period_of.get(c, r) for c in self.consumers.get(name, [])), default=k)
                every = max(every, reach)
                if q < len(periods[k]) - 1:
                    inner = max(inner, reach)
            need.append((every, inner))
        before = -1
        best = 0
        for k in range(r):
            if before <= k and need[k][1] <= k and k + 1 >= MIN_REPEAT:
                best = k + 1
            before = max(before, need[k][0])
        return best

    # boxes and groups
    def build_items(self, tree: _Tree, depth: int) -> list[Item]:
        out: list[Item] = []
        runs = {s: (p, r) for s, p, r in self.runs(tree.items, depth)}
        i = 0
        while i < len(tree.items):
            if i not in runs:
                out.append(self.item(tree.items[i], depth))
                i += 1
                continue
            p, r = runs[i]
            first = tree.items[i:i + p]
            every = [j for it in tree.items[i:i + p * r] for j in self.item_nodes(it)]
            if p == 1 and isinstance(first[0], int):
                out.append(self.run_box(every, r))
            else:
                out.append(self.repeat_group(first, tree.items[i:i + p * r], p, r, depth))
            i += p * r
        return out

    def item(self, item: int | _Tree, depth: int) -> Item:
        if isinstance(item, int):
            return self.layer_box(item)
        assert item.call is not None
        call = item.call
        g = Group(key=self.key("g"), kind="block", label=clean(f"{call.instance} · {call.block}"),
                  details={"title": clean(call.instance), "kind": "block",
                           "block": clean(call.block), "layers": len(item.nodes),
                           "params": sum(self.graph.nodes[j].param_count for j in item.nodes),
                           **self.place(call.span)})
        g.children = self.build_items(item, depth + 1)
        return g

    def place(self, span) -> dict[str, str]:
        return {"at": clean(f"{span.file}:{span.line}:{span.col}"),
                "source": self.src.line(span.file, span.line)}

    def layer_box(self, i: int) -> Box:
        n = self.graph.nodes[i]
        key = self.key("n")
        box = Box(key=key, kind="layer", name=clean(n.name), family=_family(n.op),
                  lines=[shorten(clean(n.name)), shorten(clean(_op_line(n))),
                         shorten(_shape(n.type) + _params_text(n.param_count))],
                  details=self.node_details(n))
        self.boxes[key] = box
        self.alias[n.name] = key
        return box

    def node_details(self, n: Node) -> dict[str, Any]:
        op = find_op(n.op)
        d: dict[str, Any] = {"title": clean(n.name), "kind": "layer", "op": clean(n.op),
                             "summary": clean(op.summary()) if op is not None else "",
                             "attributes": _attrs(n), "shape": _shape(n.type),
                             "params": n.param_count,
                             "inputs": [clean(t) for t in n.inputs]}
        if n.blocks:
            d["block"] = clean(" › ".join(f"{b.instance} ({b.block})" for b in n.blocks))
        d.update(self.place(n.span))
        return d

    def run_box(self, nodes: list[int], r: int) -> Box:
        first, last = self.graph.nodes[nodes[0]], self.graph.nodes[nodes[-1]]
        key = self.key("n")
        title = f"{shorten(clean(first.name), 20)} … {shorten(clean(last.name), 20)}"
        details = self.node_details(first)
        details.pop("params")
        details.update({"title": clean(f"{first.name} … {last.name}"), "kind": "run",
                        "count": r, "params each": first.param_count,
                        "params": first.param_count * r, "last": clean(last.name)})
        box = Box(key=key, kind="run", name=clean(first.name), family=_family(first.op),
                  lines=[title, shorten(f"{clean(_op_line(first))}  × {r:,}"),
                         shorten(_shape(first.type) + _params_text(first.param_count, each=True))],
                  details=details, count=r)
        self.boxes[key] = box
        for j in nodes:
            self.alias[self.graph.nodes[j].name] = key
        return box

    def repeat_group(self, first: list[int | _Tree], run: list[int | _Tree], p: int, r: int,
                     depth: int) -> Group:
        def name(it: int | _Tree) -> str:
            if isinstance(it, int):
                return self.graph.nodes[it].name
            assert it.call is not None
            return it.call.instance

        nodes = [j for it in run for j in self.item_nodes(it)]
        shown = {j for it in first for j in self.item_nodes(it)}
        self.hidden.update(j for j in nodes if j not in shown)
        span_from = f"{name(run[0])} … {name(run[-1])}"
        g = Group(key=self.key("g"), kind="repeat",
                  label=clean(f"× {r:,}   {shorten(name(run[0]), 24)} … {shorten(name(run[-1]), 24)}"),
                  details={"title": clean(span_from), "kind": "repeat", "count": r,
                           "items each": p, "layers": len(nodes),
                           "params": sum(self.graph.nodes[j].param_count for j in nodes)})
        g.children = [self.item(it, depth) for it in first]
        # What reads the run's last tensor sees the first repetition's last.
        last_shown = max(shown)
        self.alias[self.graph.nodes[nodes[-1]].name] = self.alias[self.graph.nodes[last_shown].name]
        return g

    def diagram(self, file: str) -> Diagram:
        g = self.graph
        root = Group(key="root", kind="model", label=clean(f"model {g.name}"),
                     details={"title": clean(g.name), "kind": "model"})
        for inp in g.inputs:
            key = self.key("n")
            box = Box(key=key, kind="input", name=clean(inp.name), family="input",
                      lines=[shorten(clean(inp.name)), shorten(f"input · {inp.type}")],
                      details={"title": clean(inp.name), "kind": "input",
                               "dtype": clean(inp.type.dtype), "shape": str(inp.type),
                               **self.place(inp.span)})
            self.boxes[key] = box
            self.alias[inp.name] = key
            root.children.append(box)
        root.children.extend(self.build_items(self.tree(), 0))
        edges: dict[tuple[str, str], None] = {}
        for i, n in enumerate(g.nodes):
            if i in self.hidden:
                continue
            dst = self.alias[n.name]
            for t in n.inputs:
                src = self.alias[t]
                if src != dst:
                    edges[(src, dst)] = None
        for k, out in enumerate(g.outputs):
            key = self.key("n")
            label = f"output {k}" if len(g.outputs) > 1 else "output"
            box = Box(key=key, kind="output", name=clean(out), family="output",
                      lines=[shorten(f"{label} · {clean(out)}")],
                      details={"title": clean(f"{label} · {out}"), "kind": "output",
                               "tensor": clean(out),
                               "shape": _shape(g.type_of(out))})
            self.boxes[key] = box
            root.children.append(box)
            edges[(self.alias[out], key)] = None
        subtitle = (f"{clean(file)} · {len(g.nodes):,} layers · {g.param_count:,} params"
                    f" ({g.trainable_param_count:,} trainable)")
        return Diagram(title=clean(f"model {g.name}"), subtitle=subtitle, root=root,
                       edges=list(edges), boxes=self.boxes, layers=len(g.nodes))


def build_diagram(graph: Graph, sources: dict[str, str] | None = None, file: str | None = None,
                  fold: bool = True) -> Diagram:
    """The diagram of a checked model. `sources` (file → text) gives the hover panel the spec
    line of each layer; `fold=False` draws every layer, however many."""
    return _Builder(graph, sources or {}, fold).diagram(file if file is not None else graph.span.file)
