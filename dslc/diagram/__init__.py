"""`dslc graph`: a picture of a checked model, as an SVG file or an HTML page with pan, zoom
and a hover panel. Pure Python: no graphviz, no browser needed to make it.

    model.py   the checked graph → boxes, groups (block instances, folded repeats), edges
    layout.py  a layered top-down layout
    svg.py     the SVG text;  html.py  the page around it
"""

from __future__ import annotations

import os
from pathlib import Path

from dslc.diagnostics import DslError
from dslc.diagram.html import render_html
from dslc.diagram.layout import Layout, layout
from dslc.diagram.model import Diagram, build_diagram
from dslc.diagram.svg import render_svg

FORMATS = {".svg": "svg", ".html": "html", ".htm": "html"}


def diagram_text(diagram: Diagram, form: str) -> str:
    return render_html(diagram) if form == "html" else render_svg(diagram)


def _check_out(path: Path, force: bool) -> str:
    form = FORMATS.get(path.suffix.lower())
    if form is None:
        raise DslError(f"{path}: `dslc graph` writes a .svg or .html file",
                       hint=f"use -o {path.with_suffix('.svg')} or -o {path.with_suffix('.html')}")
    if path.is_dir():
        raise DslError(f"{path} is a folder", hint=f"give a file name, e.g. {path / 'model.svg'}")
    if os.path.lexists(path) and not force:
        raise DslError(f"{path} already exists; not replacing it",
                       hint="pass --force to replace it, or give another -o path")
    return form


def graph_command(args) -> int:
    from dslc.compiler import compile_file
    from dslc.weights import atomic_write_bytes

    out = Path(args.out) if args.out else None
    if out is not None:  # refused before the spec is compiled
        _check_out(out, args.force)
    spec = compile_file(args.spec)
    graph = spec.model(args.model)
    if out is None:
        out = Path(f"{graph.name}.svg")
    form = _check_out(out, args.force)
    diagram = build_diagram(graph, spec.sources, str(args.spec), fold=not args.expand)
    atomic_write_bytes(out, diagram_text(diagram, form).encode("utf-8"))
    shown = len(diagram.boxes) - len(graph.inputs) - len(graph.outputs)
    folded = f", {shown:,} boxes" if shown != len(graph.nodes) else ""
    print(f"wrote {out} (model {graph.name}: {len(graph.nodes):,} layers{folded})")
    return 0


__all__ = ["Diagram", "Layout", "build_diagram", "diagram_text", "graph_command", "layout",
           "render_html", "render_svg"]
