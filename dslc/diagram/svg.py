"""Diagram + layout → SVG text. Every piece of text from the spec goes through `text` or
`attr` (XML escaping), so a name or a file name cannot add markup."""

from __future__ import annotations

from xml.sax.saxutils import escape

from dslc.diagram.layout import BOX_PAD_Y, CHAR_W, LINE_H, Layout, Path, Rect, layout
from dslc.diagram.model import Box, Diagram, Group, clean

MARGIN = 16.0
HEADER = 52.0
FONT = "DejaVu Sans Mono, Menlo, Consolas, monospace"
# fill, stroke per op family (dslc/ops/<family>.py)
COLOURS = {
    "input": ("#f1f3f5", "#495057"),
    "output": ("#343a40", "#212529"),
    "core": ("#e6f6ec", "#2b8a57"),
    "conv": ("#e7f0ff", "#3b6fd8"),
    "pool": ("#fff3e0", "#d9480f"),
    "recurrent": ("#f3e8ff", "#7c3aed"),
    "activation": ("#fdeef4", "#c2417a"),
    "merge": ("#eef0f2", "#5c6670"),
}
GROUP_COLOURS = {"block": ("#495057", "#868e96"), "repeat": ("#e8a800", "#c78f00")}


def text(s: object) -> str:
    return escape(clean(s))


def attr(s: object) -> str:
    return '"' + escape(clean(s), {'"': "&quot;", "\n": "&#10;", "\t": "&#9;", "\r": "&#13;"}) + '"'


def _n(v: float) -> str:
    return f"{v:.1f}".rstrip("0").rstrip(".")


def _tooltip(details: dict) -> str:
    lines: list[str] = []
    for k, v in details.items():
        if k == "attributes":
            lines.extend(f"  {a} = {b}" for a, b in v.items())
        elif k not in ("title", "kind") and v not in ("", [], None):
            if isinstance(v, list):
                v = ", ".join(map(str, v))
            lines.append(f"{k}: {v:,}" if isinstance(v, int) else f"{k}: {v}")
    return "\n".join([str(details.get("title", "")), *lines])


def _path_d(points: list[tuple[float, float]]) -> str:
    (x0, y0), parts = points[0], [f"M{_n(points[0][0])},{_n(points[0][1])}"]
    for x1, y1 in points[1:]:
        if abs(x1 - x0) < 0.5:
            parts.append(f"L{_n(x1)},{_n(y1)}")
        else:
            mid = (y0 + y1) / 2
            parts.append(f"C{_n(x0)},{_n(mid)} {_n(x1)},{_n(mid)} {_n(x1)},{_n(y1)}")
        x0, y0 = x1, y1
    return " ".join(parts)


def _box(box: Box, r: Rect) -> list[str]:
    fill, stroke = COLOURS.get(box.family, COLOURS["core"])
    out = [f'<g class="node {box.kind}" data-key="{box.key}" data-name={attr(box.name)}>',
           f"<title>{text(_tooltip(box.details))}</title>"]
    x, y, w, h = r.x, r.y, r.w, r.h
    if box.kind == "run":  # a stack of cards
        for k in (8, 4):
            out.append(f'<rect x="{_n(x + k)}" y="{_n(y + k * 0.75)}" width="{_n(w - 8)}" '
                       f'height="{_n(h - 6)}" rx="6" fill="{fill}" stroke="{stroke}"/>')
        w, h = w - 8, h - 6
    rx = h / 2 if box.kind == "output" else (10 if box.kind == "input" else 6)
    width = 2 if box.kind in ("input", "run") else 1.2
    out.append(f'<rect x="{_n(x)}" y="{_n(y)}" width="{_n(w)}" height="{_n(h)}" rx="{_n(rx)}" '
               f'fill="{fill}" stroke="{stroke}" stroke-width="{width}"/>')
    colour = "#ffffff" if box.kind == "output" else "#212529"
    for k, line in enumerate(box.lines):
        weight = ' font-weight="bold"' if k == 0 else ""
        shade = colour if k == 0 or box.kind == "output" else "#495057"
        out.append(f'<text x="{_n(x + w / 2)}" y="{_n(y + BOX_PAD_Y + 12 + k * LINE_H)}" '
                   f'text-anchor="middle" fill="{shade}"{weight}>{text(line)}</text>')
    out.append("</g>")
    return out


def _fill(g: Group, depth: int) -> str:
    return "#fff8db" if g.kind == "repeat" else "#f8f9fa" if depth % 2 else "#eef1f4"


def _group(g: Group, r: Rect, depth: int) -> list[str]:
    stroke, _ = GROUP_COLOURS.get(g.kind, GROUP_COLOURS["block"])
    return [f'<g class="group {g.kind}" data-key="{g.key}" data-name={attr(g.details["title"])}>',
            f"<title>{text(_tooltip(g.details))}</title>",
            f'<rect x="{_n(r.x)}" y="{_n(r.y)}" width="{_n(r.w)}" height="{_n(r.h)}" rx="10" '
            f'fill="{_fill(g, depth)}" stroke="{stroke}" stroke-dasharray="5 3"/>',
            "</g>"]


def _label(g: Group, r: Rect, depth: int) -> str:
    """Drawn over the edges, with a halo of the group's colour, so that it stays legible."""
    _, colour = GROUP_COLOURS.get(g.kind, GROUP_COLOURS["block"])
    return (f'<text x="{_n(r.x + 10)}" y="{_n(r.y + 15)}" fill="{colour}" font-size="11" '
            f'font-weight="bold" stroke="{_fill(g, depth)}" stroke-width="4" '
            f'paint-order="stroke">{text(g.label)}</text>')


def _edge(p: Path) -> str:
    # A diagram edge is drawn in pieces where it crosses group borders: the last piece, the
    # one with the arrow, names both boxes; the others name the source box.
    ends = f' data-from="{p.src}"' + (f' data-to="{p.dst}" marker-end="url(#dslc-arrow)"'
                                      if p.arrow else "")
    return (f'<path class="edge" d="{_path_d(p.points)}" fill="none" stroke="#6c757d" '
            f'stroke-width="1.4"{ends}/>')


def render_svg(diagram: Diagram, lay: Layout | None = None, standalone: bool = True) -> str:
    """The diagram as an SVG document (`standalone`: with the XML declaration, for a file)."""
    lay = lay or layout(diagram)
    width = max(lay.width, (len(diagram.title) * 1.35 + 2) * CHAR_W,
                len(diagram.subtitle) * CHAR_W) + 2 * MARGIN
    height = HEADER + lay.height + MARGIN
    ox, oy = MARGIN, HEADER

    def moved(r: Rect) -> Rect:
        return Rect(r.x + ox, r.y + oy, r.w, r.h)

    out = ['<?xml version="1.0" encoding="UTF-8"?>'] if standalone else []
    out += [f'<svg xmlns="http://www.w3.org/2000/svg" version="1.1" width="{_n(width)}" '
            f'height="{_n(height)}" viewBox="0 0 {_n(width)} {_n(height)}" '
            f'font-family="{FONT}" font-size="12" role="img" aria-labelledby="dslc-title">',
            f'<title id="dslc-title">{text(diagram.title)}</title>',
            f"<desc>{text(diagram.subtitle)}</desc>",
            '<defs><marker id="dslc-arrow" viewBox="0 0 10 10" refX="10" refY="5" '
            'markerWidth="7" markerHeight="7" orient="auto"><path d="M0,1 L10,5 L0,9 z" '
            'fill="#6c757d"/></marker></defs>',
            f'<rect class="background" width="{_n(width)}" height="{_n(height)}" fill="#ffffff"/>',
            '<g class="header">',
            f'<text x="{_n(MARGIN)}" y="{_n(MARGIN + 16)}" font-size="17" font-weight="bold" '
            f'fill="#212529">{text(diagram.title)}</text>',
            f'<text x="{_n(MARGIN)}" y="{_n(MARGIN + 34)}" fill="#6c757d">'
            f"{text(diagram.subtitle)}</text>",
            "</g>", '<g class="groups">']
    groups, work = [], [(g, 0) for g in diagram.root.children[::-1] if isinstance(g, Group)]
    while work:  # outer groups first, so inner ones are drawn on top
        g, depth = work.pop()
        groups.append((g, moved(lay.rects[g.key]), depth))
        work.extend((c, depth + 1) for c in g.children[::-1] if isinstance(c, Group))
    for g, r, depth in groups:
        out += _group(g, r, depth)
    out.append('</g><g class="edges">')
    out += [_edge(Path([(x + ox, y + oy) for x, y in p.points], p.arrow, p.src, p.dst))
            for p in lay.paths]
    out.append('</g><g class="labels">')
    out += [_label(g, r, depth) for g, r, depth in groups]
    out.append('</g><g class="nodes">')
    for key, box in diagram.boxes.items():
        if key in lay.rects:
            out += _box(box, moved(lay.rects[key]))
    out.append("</g></svg>")
    return "\n".join(out) + "\n"
