"""A layered (Sugiyama-style) top-down layout of a diagram, with groups drawn as boxes.

Each group is laid out on its own, inside out, and then placed in its parent as one big
node. An edge that enters a group goes through a port on the group's top border (one port
per source box), an edge that leaves it through a port on its bottom border, so each level
routes only its own edges. Within a level: longest-path layering, a dummy node per layer an
edge skips, barycenter ordering (the order with fewest crossings is kept), then x positions
that pull each node towards its neighbours without overlaps (least squares, by pool-adjacent-
violators), a few sweeps down and up.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dslc.diagram.model import Box, Diagram, Group

CHAR_W = 7.2  # px of a character at the 12 px monospace font the SVG uses
LINE_H = 16.0
BOX_PAD_X = 10.0
BOX_PAD_Y = 7.0
GAP_X = 24.0  # between neighbours in a layer
GAP_Y = 34.0  # between layers
DUMMY_GAP = 12.0
GROUP_PAD = 14.0
GROUP_LABEL = 20.0  # the band at the top of a group that holds its label
PORT_DROP = 16.0  # an edge entering a group runs straight down past the label first
SWEEPS = 8


@dataclass
class Rect:
    x: float
    y: float
    w: float
    h: float


@dataclass
class Path:
    points: list[tuple[float, float]]
    arrow: bool  # ends at a box (not at a group's port)
    src: str  # box keys of the diagram edge(s) it draws
    dst: str


@dataclass
class Layout:
    width: float
    height: float
    rects: dict[str, Rect]  # box and group key → where it is drawn
    paths: list[Path]


def box_size(box: Box) -> tuple[float, float]:
    width = max(len(line) for line in box.lines) * CHAR_W + 2 * BOX_PAD_X
    if box.kind == "run":
        width += 8  # the stacked look
    return max(width, 60.0), len(box.lines) * LINE_H + 2 * BOX_PAD_Y


@dataclass
class _Local:
    """One group's content laid out in its own coordinates (origin: the group's top left)."""

    w: float = 0.0
    h: float = 0.0
    pos: dict[str, tuple[float, float]] = field(default_factory=dict)  # child → centre x, top y
    ports_in: dict[str, float] = field(default_factory=dict)  # source box → x on the top border
    ports_out: dict[str, float] = field(default_factory=dict)  # source box → x on the bottom
    paths: list[Path] = field(default_factory=list)


class _Layouter:
    def __init__(self, diagram: Diagram):
        self.d = diagram
        self.size: dict[str, tuple[float, float]] = {}
        self.chain: dict[str, list[str]] = {}  # box → the groups around it, outermost first
        self.groups: dict[str, Group] = {}
        self.local: dict[str, _Local] = {}
        self._walk(diagram.root, [])
        # each container's edges: (local source, local destination, source box); a group's
        # ports are per source box, so two boxes inside one group feeding another are two edges
        self.edges: dict[str, dict[tuple[str, str, str], None]] = {g: {} for g in self.groups}
        for u, v in diagram.edges:
            self._split(u, v)

    def _walk(self, g: Group, outer: list[str]) -> None:
        self.groups[g.key] = g
        inner = [*outer, g.key]
        for c in g.children:
            if isinstance(c, Group):
                self._walk(c, inner)
            else:
                self.chain[c.key] = inner
                self.size[c.key] = box_size(c)

    def _split(self, u: str, v: str) -> None:
        cu, cv = self.chain[u], self.chain[v]
        d = 0
        while d < min(len(cu), len(cv)) and cu[d] == cv[d]:
            d += 1
        lca = cu[d - 1]

        def child(chain: list[str], box: str, level: int) -> str:
            return chain[level] if level < len(chain) else box

        self.edges[lca][(child(cu, u, d), child(cv, v, d), u)] = None
        for k in range(d, len(cu)):  # leaving the groups around u
            self.edges[cu[k]][(child(cu, u, k + 1), f"out:{u}", u)] = None
        for k in range(d, len(cv)):  # entering the groups around v
            self.edges[cv[k]][(f"in:{u}", child(cv, v, k + 1), u)] = None

    def run(self) -> Layout:
        self._layout(self.d.root)
        rects: dict[str, Rect] = {}
        paths: list[Path] = []
        root = self.local["root"]
        self._place("root", 0.0, 0.0, rects, paths)
        return Layout(width=root.w, height=root.h, rects=rects, paths=paths)

    def _place(self, key: str, ox: float, oy: float, rects: dict[str, Rect],
               paths: list[Path]) -> None:
        loc = self.local[key]
        rects[key] = Rect(ox, oy, loc.w, loc.h)
        for p in loc.paths:
            paths.append(Path([(x + ox, y + oy) for x, y in p.points], p.arrow, p.src, p.dst))
        for child, (cx, top) in loc.pos.items():
            w, h = self._size(child)
            if child in self.local:
                self._place(child, ox + cx - w / 2, oy + top, rects, paths)
            else:
                rects[child] = Rect(ox + cx - w / 2, oy + top, w, h)

    def _size(self, key: str) -> tuple[float, float]:
        if key in self.local:
            return self.local[key].w, self.local[key].h
        return self.size[key]

    def _anchor(self, node: str, src_box: str, leaving: bool) -> float:
        """x of an edge's end relative to the centre of `node` (a group's port, or 0)."""
        if node not in self.local:
            return 0.0
        loc = self.local[node]
        x = (loc.ports_out if leaving else loc.ports_in)[src_box]
        return x - loc.w / 2

    def _layout(self, g: Group) -> None:
        for c in g.children:
            if isinstance(c, Group):
                self._layout(c)
        edges = self.edges[g.key]
        nodes = [c.key for c in g.children]
        ins = list(dict.fromkeys(s for s, _, _ in edges if s.startswith("in:")))
        outs = list(dict.fromkeys(t for _, t, _ in edges if t.startswith("out:")))
        is_root = g.kind == "model"

        # layers: the longest path from the top
        preds: dict[str, list[str]] = {n: [] for n in [*ins, *nodes, *outs]}
        for s, t, _ in edges:
            preds[t].append(s)
        layer: dict[str, int] = {p: 0 for p in ins}
        first = 1 if ins else 0
        order_of = {n: i for i, n in enumerate(nodes)}
        for n in nodes:  # children come in graph order: a topological order
            layer[n] = max((layer[p] + 1 for p in preds[n] if p in layer), default=first)
        bottom = max((layer[n] for n in nodes), default=0) + 1
        for p in outs:
            layer[p] = bottom
        count = bottom + 1 if outs else bottom

        # dummies for edges that skip layers; every edge then joins adjacent layers
        rows: list[list[str]] = [[] for _ in range(count)]
        for n in [*ins, *nodes, *outs]:
            rows[layer[n]].append(n)
        width: dict[str, float] = {n: self._size(n)[0] if n in order_of else 0.0 for n in layer}
        down: dict[str, list[tuple[str, float, float]]] = {n: [] for n in layer}  # (node, dx, dx')
        up: dict[str, list[tuple[str, float, float]]] = {n: [] for n in layer}
        chains: list[tuple[str, str, str, list[str]]] = []
        for s, t, src_box in edges:
            a = self._anchor(s, src_box, leaving=True)
            b = self._anchor(t, src_box, leaving=False)
            dummies = []
            prev, prev_a = s, a
            for k in range(layer[s] + 1, layer[t]):
                dm = f"d:{len(width)}"
                width[dm] = 0.0
                layer[dm] = k
                rows[k].append(dm)
                down[dm], up[dm] = [], []
                dummies.append(dm)
                down[prev].append((dm, prev_a, 0.0))
                up[dm].append((prev, 0.0, prev_a))
                prev, prev_a = dm, 0.0
            down[prev].append((t, prev_a, b))
            up[t].append((prev, b, prev_a))
            chains.append((s, t, src_box, dummies))

        rows = self._order(rows, up, down)
        x = self._xs(rows, width, up, down)

        # y: layers top-aligned; ports sit on the borders
        heights = [max((self._size(n)[1] for n in row if n in order_of), default=0.0)
                   for row in rows]
        top_pad = GROUP_PAD if is_root else GROUP_LABEL + GROUP_PAD + (6.0 if ins else 0.0)
        tops, y = [], top_pad
        for k in range(count):
            if ins and k == 0:
                tops.append(0.0)
                continue
            if outs and k == count - 1:
                tops.append(-1.0)  # set below
                continue
            tops.append(y)
            y += heights[k] + GAP_Y
        inner_h = y - GAP_Y + GROUP_PAD
        if outs:
            tops[count - 1] = inner_h
        if ins:
            heights[0] = 0.0

        # x: shift so the content starts at the padding
        lefts = [x[n] - width[n] / 2 for n in layer]
        rights = [x[n] + width[n] / 2 for n in layer]
        shift = GROUP_PAD - min(lefts, default=0.0)
        loc = _Local()
        loc.w = max(rights, default=0.0) + shift + GROUP_PAD
        if not is_root:
            loc.w = max(loc.w, len(g.label) * CHAR_W + 2 * GROUP_PAD)
            extra = (loc.w - (max(rights, default=0.0) + shift + GROUP_PAD)) / 2
            shift += extra
        loc.h = inner_h
        for n in nodes:
            loc.pos[n] = (x[n] + shift, tops[layer[n]])
        for p in ins:
            loc.ports_in[p[3:]] = x[p] + shift
        for p in outs:
            loc.ports_out[p[4:]] = x[p] + shift

        def bottom_of(n: str) -> float:
            if n.startswith("in:"):
                return 0.0
            return tops[layer[n]] + self._size(n)[1]

        for s, t, src_box, dummies in chains:
            pts = [(x[s] + shift + self._anchor(s, src_box, leaving=True), bottom_of(s))]
            if s.startswith("in:"):
                pts.append((pts[0][0], PORT_DROP))
            for dm in dummies:
                k = layer[dm]
                pts.append((x[dm] + shift, tops[k]))
                pts.append((x[dm] + shift, tops[k] + heights[k]))
            end_y = inner_h if t.startswith("out:") else tops[layer[t]]
            pts.append((x[t] + shift + self._anchor(t, src_box, leaving=False), end_y))
            is_box = t in order_of and t not in self.local
            loc.paths.append(Path(pts, arrow=is_box, src=src_box, dst=t))
        self.local[g.key] = loc

    # ordering
    def _order(self, rows: list[list[str]], up, down) -> list[list[str]]:
        best = [list(r) for r in rows]
        best_cross = _crossings(best, down)
        cur = [list(r) for r in rows]
        for sweep in range(SWEEPS):
            going_down = sweep % 2 == 0
            span = range(1, len(cur)) if going_down else range(len(cur) - 2, -1, -1)
            for k in span:
                ref = cur[k - 1] if going_down else cur[k + 1]
                at = {n: i for i, n in enumerate(ref)}
                links = up if going_down else down
                keyed = []
                for i, n in enumerate(cur[k]):
                    near = [at[m] for m, _, _ in links[n] if m in at]
                    keyed.append((sum(near) / len(near) if near else float(i), i, n))
                keyed.sort()
                cur[k] = [n for _, _, n in keyed]
            c = _crossings(cur, down)
            if c < best_cross:
                best, best_cross = [list(r) for r in cur], c
            if best_cross == 0:
                break
        return best

    # x positions
    def _xs(self, rows: list[list[str]], width: dict[str, float], up, down) -> dict[str, float]:
        x: dict[str, float] = {}
        for row in rows:
            cursor = 0.0
            for n in row:
                x[n] = cursor + width[n] / 2
                cursor += width[n] + self._gap(n)
        for _ in range(4):
            for k in range(1, len(rows)):
                self._pull(rows[k], x, width, up)
            for k in range(len(rows) - 2, -1, -1):
                self._pull(rows[k], x, width, down)
        for k in range(len(rows)):
            self._pull(rows[k], x, width, up, down)
        return x

    @staticmethod
    def _gap(n: str) -> float:
        return DUMMY_GAP if n.startswith(("d:", "in:", "out:")) else GAP_X

    def _pull(self, row: list[str], x: dict[str, float], width: dict[str, float], *links) -> None:
        if not row:
            return
        want = []
        for n in row:
            near = [x[m] + dm - dn for ls in links for m, dn, dm in ls[n]]
            want.append(sum(near) / len(near) if near else x[n])
        seps = [0.0]
        for a, b in zip(row, row[1:]):
            seps.append(seps[-1] + (width[a] + width[b]) / 2 + max(self._gap(a), self._gap(b)))
        for n, y in zip(row, _isotonic([w - s for w, s in zip(want, seps)])):
            x[n] = y
        for i, n in enumerate(row):
            x[n] += seps[i]


def _isotonic(values: list[float]) -> list[float]:
    """The non-decreasing sequence nearest to `values` (least squares): pool adjacent
    violators."""
    blocks: list[list[float]] = []  # [mean, weight]
    for v in values:
        blocks.append([v, 1.0])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            m2, w2 = blocks.pop()
            m1, w1 = blocks.pop()
            blocks.append([(m1 * w1 + m2 * w2) / (w1 + w2), w1 + w2])
    out = []
    for m, w in blocks:
        out.extend([m] * int(w))
    return out


def _crossings(rows: list[list[str]], down) -> int:
    total = 0
    for k in range(len(rows) - 1):
        at = {n: i for i, n in enumerate(rows[k + 1])}
        pairs = sorted((i, at[t]) for i, n in enumerate(rows[k]) for t, _, _ in down[n] if t in at)
        total += _inversions([b for _, b in pairs])
    return total


def _inversions(seq: list[int]) -> int:
    """Pairs out of order (merge sort)."""
    if len(seq) < 2:
        return 0
    mid = len(seq) // 2
    left, right = seq[:mid], seq[mid:]
    count = _inversions(left) + _inversions(right)
    left.sort()
    right.sort()
    i = 0
    for b in right:
        while i < len(left) and left[i] <= b:
            i += 1
        count += len(left) - i
    return count


def layout(diagram: Diagram) -> Layout:
    return _Layouter(diagram).run()
