"""`dslc graph`: the SVG is valid XML that shows every layer, the data flow, block groups,
several inputs and outputs; long runs are folded so the picture stays bounded; text from the
spec cannot add markup; the HTML page carries the SVG, its script and the details; and, where
Chromium is installed, the page renders (non-blank, with its title) and its hover panel works."""

from __future__ import annotations

import json
import random
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest
from conftest import ROOT, SPECS, run_dslc

from dslc.compiler import compile_file, compile_text
from dslc.diagram import build_diagram, render_html, render_svg

SVG = "{http://www.w3.org/2000/svg}"

BRANCHES = """
model fork {
    input x: f32[8]
    a = dense(x, 16, activation=relu)
    b = dense(a, 4)
    c = dense(a, 4, activation=tanh)
    d = dense(x, 4)
    m = add(b, c, d)
    output dense(m, 2)
}
"""

RESIDUAL = """
block residual(filters: int) {
    input x
    h = conv2d(x, filters, kernel=3, padding=same, activation=relu)
    h = conv2d(h, filters, kernel=3, padding=same)
    output relu(add(x, h))
}
"""

NESTED = RESIDUAL + """
block stage(filters: int) {
    input x
    a = residual(x, filters)
    b = residual(a, filters)
    output maxpool2d(b, 2)
}
model nested {
    input image: f32[8, 8, 1]
    conv2d(4, kernel=3, padding=same)
    s = stage(4)
    global_avgpool2d
    dense(3)
}
"""


def spec_of(text: str, name: str = "spec.dl"):
    spec = compile_text(text, name)
    return spec, spec.model()


def svg_of(text: str, name: str = "spec.dl", fold: bool = True) -> ET.Element:
    spec, graph = spec_of(text, name)
    return ET.fromstring(render_svg(build_diagram(graph, spec.sources, name, fold=fold)))


def boxes(svg: ET.Element) -> dict[str, tuple[str, str, tuple[float, ...]]]:
    """key → (kind, name, (x, y, w, h)) of every box."""
    found = {}
    for g in svg.iter(f"{SVG}g"):
        cls = g.get("class", "").split()
        if cls[:1] == ["node"]:
            r = [e for e in g if e.tag == f"{SVG}rect"][-1]
            found[g.get("data-key")] = (cls[1], g.get("data-name"),
                                        tuple(float(r.get(k)) for k in ("x", "y", "width", "height")))
    return found


def groups(svg: ET.Element) -> dict[str, tuple[str, tuple[float, ...]]]:
    found = {}
    for g in svg.iter(f"{SVG}g"):
        cls = g.get("class", "").split()
        if cls[:1] == ["group"]:
            r = g.find(f"{SVG}rect")
            found[g.get("data-name")] = (cls[1], tuple(float(r.get(k))
                                                       for k in ("x", "y", "width", "height")))
    return found


def edges(svg: ET.Element) -> set[tuple[str, str]]:
    """(source, destination) of every arrow, by name; an output box is `output:<name>`."""
    by_key = boxes(svg)

    def name(key: str) -> str:
        kind, n, _ = by_key[key]
        return f"output:{n}" if kind == "output" else n

    return {(name(p.get("data-from")), name(p.get("data-to")))
            for p in svg.iter(f"{SVG}path") if p.get("data-to")}


def graph_edges(graph) -> set[tuple[str, str]]:
    found = {(t, n.name) for n in graph.nodes for t in n.inputs}
    return found | {(o, f"output:{o}") for o in graph.outputs}


def inside(inner: tuple[float, ...], outer: tuple[float, ...]) -> bool:
    x, y, w, h = inner
    ox, oy, ow, oh = outer
    return ox <= x and oy <= y and x + w <= ox + ow and y + h <= oy + oh


# the SVG

FILES = sorted((ROOT / "examples").glob("*.dl")) + SPECS


@pytest.mark.parametrize("source", [BRANCHES, NESTED, *(f.read_text() for f in FILES)],
                         ids=["branches", "nested", *(f.stem for f in FILES)])
def test_every_layer_and_every_edge_is_drawn(source):
    spec, graph = spec_of(source)
    svg = svg_of(source)
    shown = boxes(svg)
    layers = {n for kind, n, _ in shown.values() if kind == "layer"}
    assert layers == {n.name for n in graph.nodes}
    assert {n for kind, n, _ in shown.values() if kind == "input"} == {i.name for i in graph.inputs}
    assert edges(svg) == graph_edges(graph)
    title = svg.find(f"{SVG}title")
    assert title is not None and title.text == f"model {graph.name}"


def test_branches_and_merges():
    svg = svg_of(BRANCHES)
    got = edges(svg)
    assert {("x", "a"), ("x", "d")} <= got  # one input, two consumers
    assert {("a", "b"), ("a", "c")} <= got  # a branch
    assert {("b", "m"), ("c", "m"), ("d", "m")} <= got  # a merge of three
    by_name = {f"output:{n}" if kind == "output" else n: r for kind, n, r in boxes(svg).values()}
    # top-down: every edge points down the page
    for src, dst in got:
        assert by_name[src][1] + by_name[src][3] < by_name[dst][1], (src, dst)
    # nothing overlaps
    rects = list(by_name.values())
    for i, (x, y, w, h) in enumerate(rects):
        for x2, y2, w2, h2 in rects[i + 1:]:
            assert x + w <= x2 or x2 + w2 <= x or y + h <= y2 or y2 + h2 <= y


def test_several_inputs_and_outputs():
    svg = svg_of((ROOT / "examples/two_heads.dl").read_text())
    shown = boxes(svg).values()
    assert sorted(n for kind, n, _ in shown if kind == "input") == ["context", "features"]
    assert sorted(n for kind, n, _ in shown if kind == "output") == ["label", "score"]
    assert {("score", "output:score"), ("label", "output:label"), ("features", "h"),
            ("context", "c"), ("h", "joined"), ("c", "joined")} <= edges(svg)
    by_name = {n: r for kind, n, r in shown if kind == "input"}
    assert by_name["features"][1] == by_name["context"][1]  # inputs share the top row


def test_block_instances_are_groups_around_their_layers():
    spec, graph = spec_of((ROOT / "examples/tiny_resnet.dl").read_text())
    svg = svg_of((ROOT / "examples/tiny_resnet.dl").read_text())
    found = groups(svg)
    assert {n: kind for n, (kind, _) in found.items()} == {"residual_1": "block",
                                                          "residual_2": "block"}
    for node in graph.nodes:
        box = next(r for _, n, r in boxes(svg).values() if n == node.name)
        origin = node.blocks[0].instance if node.blocks else None
        for name, (_, rect) in found.items():
            assert inside(box, rect) == (name == origin), (node.name, name)
    labels = [t.text for t in svg.iter(f"{SVG}text") if t.text and "residual_1 ·" in t.text]
    assert labels == ["residual_1 · residual"]


def test_nested_blocks_nest_their_groups():
    spec, graph = spec_of(NESTED)
    found = groups(svg_of(NESTED))
    assert set(found) == {"s", "s_a", "s_b"}
    assert inside(found["s_a"][1], found["s"][1]) and inside(found["s_b"][1], found["s"][1])
    a, b = found["s_a"][1], found["s_b"][1]
    assert a[1] + a[3] <= b[1]  # one after the other, not overlapping
    pool = graph.node("s_maxpool2d_1")
    assert [c.instance for c in pool.blocks] == ["s"]
    assert [c.instance for c in graph.node("s_b_h_1").blocks] == ["s", "s_b"]
    assert graph.node("s_b_h_1").blocks[1].block == "residual"


def test_block_origin_is_recorded_but_not_part_of_the_model():
    """Where a layer came from is for pictures: it stays out of dumps (a run's digest)."""
    spec, graph = spec_of(NESTED)
    assert "blocks" not in graph.model_dump_json()
    assert graph.node("s_a_h").blocks[-1].span.line == 11  # the call `a = residual(x, filters)`


# random graphs: the layout's promises hold

TWO_BLOCKS = """
block one(n: int) {
    input x
    h = dense(x, n)
    output add(x, h)
}
block two(n: int) {
    input x
    input y
    a = one(x, n)
    output add(dense(a, n), y)
}
"""


def random_dag(rng: random.Random) -> str:
    """Branches, merges, block instances (nested, two inputs), several outputs."""
    names, lines, read = ["x", "y"], ["input x: f32[8]", "input y: f32[8]"], set()
    for i in range(rng.randint(1, 20)):
        a, b = rng.choice(names[-6:]), rng.choice(names)
        expr, reads = rng.choice([(f"dense({a}, 8)", [a]), (f"relu({a})", [a]),
                                  (f"add({a}, {b})", [a, b]), (f"one({a}, 8)", [a]),
                                  (f"two({a}, {b}, 8)", [a, b])])
        lines.append(f"t{i} = {expr}")
        read.update(reads)
        names.append(f"t{i}")
    outs = [n for n in names[2:] if n not in read]
    return TWO_BLOCKS + "model r {\n" + "\n".join(lines) + f"\noutput {', '.join(outs)}\n}}\n"


def random_repeats(rng: random.Random) -> str:
    lines = ["input x: f32[8]", "dense(8)"]
    for i in range(rng.randint(1, 6)):
        body = rng.choice(["dense(8)", "relu", "one(8)", f"h{i} = dense(8)\n relu(add(h{i}, h{i}))"])
        if rng.random() < 0.5:
            body += "\n" + rng.choice(["relu", "one(8)", "dropout(0.5)"])
        lines.append(f"repeat {rng.choice([1, 2, 3, 5, 40])} {{ {body} }}")
        if rng.random() < 0.3:
            lines.append(f"s{i} = relu")
    return TWO_BLOCKS + "model r {\n" + "\n".join(lines) + "\n}\n"


def disjoint(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    x, y, w, h = a
    x2, y2, w2, h2 = b
    return x + w <= x2 or x2 + w2 <= x or y + h <= y2 or y2 + h2 <= y


@pytest.mark.parametrize("make, seed", [(random_dag, s) for s in range(25)]
                         + [(random_repeats, s) for s in range(15)])
def test_random_graphs_are_drawn_without_overlaps(make, seed):
    source = make(random.Random(seed))
    spec, graph = spec_of(source)
    for fold in (False, True):
        svg = svg_of(source, fold=fold)
        shown = boxes(svg)
        got = edges(svg)
        by_name = {f"output:{n}" if kind == "output" else n: r for kind, n, r in shown.values()}
        assert len(by_name) == len(shown)
        if not fold:
            assert set(by_name) == ({n.name for n in graph.nodes} | {i.name for i in graph.inputs}
                                    | {f"output:{o}" for o in graph.outputs})
            assert got == graph_edges(graph)
        for src, dst in got:  # top-down
            assert by_name[src][1] + by_name[src][3] < by_name[dst][1], (src, dst)
        rects = list(by_name.values())
        assert all(disjoint(a, b) for i, a in enumerate(rects) for b in rects[i + 1:])
        found = [r for _, r in groups(svg).values()]
        assert all(disjoint(a, b) or inside(a, b) or inside(b, a)
                   for i, a in enumerate(found) for b in found[i + 1:])
        if not fold:
            for node in graph.nodes:
                assert all(inside(by_name[node.name], groups(svg)[c.instance][1])
                           for c in node.blocks)


# folding long runs

def layers_spec(n: int) -> str:  # as tests/test_check.py and bench/bench_check.py
    body = "\n".join(["dense(16, activation=relu)"] * n)
    return f"model big {{\n input x: f32[16]\n{body}\n dense(1)\n}}\n"


def count(svg: ET.Element) -> int:
    return sum(1 for _ in svg.iter())


def test_five_thousand_layers_fold_into_a_bounded_picture():
    svg = svg_of(layers_spec(5000))
    small = svg_of(layers_spec(50))
    assert count(svg) == count(small) < 60  # the same picture, whatever the length
    shown = boxes(svg)
    run = [n for kind, n, _ in shown.values() if kind == "run"]
    assert run == ["dense_1"]
    texts = [t.text for t in svg.iter(f"{SVG}text")]
    assert "dense_1 … dense_5000" in texts
    assert any("× 5,000" in (t or "") for t in texts)
    assert edges(svg) == {("x", "dense_1"), ("dense_1", "dense_5001"),
                          ("dense_5001", "output:dense_5001")}


@pytest.mark.parametrize("body", [
    "repeat {n} {{ residual(4) }}",  # block instances
    "repeat {n} {{ dense(4)\n dropout(0.1) }}",  # a body of two layers
    "repeat {n} {{ h = conv2d(4, kernel=1)\n relu(add(h, h)) }}",  # a body with a merge
])
def test_repeats_fold_into_one_group(body):
    def make(n: int) -> str:
        head = "input image: f32[6, 6, 4]\n conv2d(4, kernel=1)\n"
        if "dense" in body:
            head = "input image: f32[4]\n dense(4)\n"
        return RESIDUAL + f"model r {{\n {head} {body.format(n=n)}\n}}\n"

    big, small = svg_of(make(1000)), svg_of(make(4))
    assert count(big) == count(small) < 120
    found = groups(big)
    assert [kind for kind, _ in found.values()].count("repeat") == 1
    labels = [t.text for t in big.iter(f"{SVG}text") if t.text and t.text.startswith("× ")]
    assert len(labels) == 1 and labels[0].startswith("× 1,000")
    spec, graph = spec_of(make(1000))
    last = graph.nodes[-1].name
    assert any(dst == f"output:{last}" for _, dst in edges(big))


def test_two_repetitions_stay_unfolded():
    names = {n for _, n, _ in boxes(svg_of((ROOT / "examples/tiny_resnet.dl").read_text())).values()}
    assert {"residual_1_h", "residual_2_h"} <= names


@pytest.mark.parametrize("source", [
    # a tensor inside the run is read after it
    "model m { input x: f32[4]\n a = dense(x, 4)\n b = dense(a, 4)\n c = dense(b, 4)\n"
    " d = dense(c, 4)\n output add(b, d) }",
    # a layer inside the run is an output
    "model m { input x: f32[4]\n a = dense(x, 4)\n b = dense(a, 4)\n c = dense(b, 4)\n"
    " d = dense(c, 4)\n output b, d }",
    # the same input feeds every layer: not a chain
    "model m { input x: f32[4]\n a = dense(x, 4)\n b = dense(x, 4)\n c = dense(x, 4)\n"
    " output concat(a, b, c) }",
])
def test_runs_that_are_not_chains_are_not_folded(source):
    spec, graph = spec_of(source)
    svg = svg_of(source)
    assert {n for kind, n, _ in boxes(svg).values() if kind == "layer"} == {n.name for n in graph.nodes}
    assert edges(svg) >= graph_edges(graph)


def test_expand_draws_every_layer():
    spec, graph = spec_of(layers_spec(30))
    svg = svg_of(layers_spec(30), fold=False)
    assert {n for kind, n, _ in boxes(svg).values() if kind == "layer"} == {n.name for n in graph.nodes}
    assert edges(svg) == graph_edges(graph) | {("x", "dense_1")}


# text from the spec is escaped

EVIL = "a<b>&'\"\x01\u2028x"


def test_text_from_the_spec_cannot_add_markup(tmp_path):
    source = ("model m {  # </title><script>alert(1)</script>\n"
              "    input x: f32[4]  # ]]> <!-- &amp;\n"
              "    dense(2)  # </script><svg onload=alert(2)>\n}\n")
    spec, graph = spec_of(source, f"{EVIL}.dl")
    diagram = build_diagram(graph, spec.sources, f"{EVIL}.dl")
    svg_text = render_svg(diagram)
    svg = ET.fromstring(svg_text)  # well-formed, the control character replaced
    tags = {e.tag.removeprefix(SVG) for e in svg.iter()}
    assert tags <= {"svg", "title", "desc", "defs", "marker", "path", "rect", "g", "text"}
    assert "<script" not in svg_text and "onload" not in [a for e in svg.iter() for a in e.attrib]
    desc = svg.find(f"{SVG}desc").text
    assert desc.startswith("a<b>&'\"\ufffd\u2028x.dl")
    tips = [t.text for t in svg.iter(f"{SVG}title")]
    assert any("</script><svg onload=alert(2)>" in (t or "") for t in tips)

    page = render_html(diagram)
    assert page.count("<script") == 2 and page.count("</script>") == 2
    data = json.loads(re.search(r'id="dslc-details">(.*?)</script>', page, re.S).group(1))
    assert any(d.get("source") == "dense(2)  # </script><svg onload=alert(2)>"
               for d in data.values())
    assert "<title>model m</title>" in page


def test_long_names_are_shortened_in_boxes_but_kept_in_details():
    name = "layer_" + "x" * 90
    source = f"model m {{ input x: f32[4]\n {name} = dense(x, 2) }}"
    spec, graph = spec_of(source)
    svg = svg_of(source)
    (box,) = [g for g in svg.iter(f"{SVG}g")
              if g.get("data-name") == name and g.get("class") == "node layer"]
    assert all(len(t.text) <= 44 for t in box.iter(f"{SVG}text"))
    assert name in box.find(f"{SVG}title").text


# the HTML page

class _Tags(HTMLParser):
    VOID = {"meta", "br", "img", "input", "link", "hr"}

    def __init__(self):
        super().__init__()
        self.stack: list[str] = []
        self.seen: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.seen.append(tag)
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.seen.append(tag)

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, (tag, self.stack[-5:])
        self.stack.pop()


def test_html_holds_the_svg_the_script_and_the_details():
    spec, graph = spec_of((ROOT / "examples/tiny_resnet.dl").read_text(), "tiny_resnet.dl")
    page = render_html(build_diagram(graph, spec.sources, "tiny_resnet.dl"))
    parser = _Tags()
    parser.feed(page)
    parser.close()
    assert parser.stack == []  # every element closed, in order
    assert {"html", "head", "title", "body", "svg", "script", "aside"} <= set(parser.seen)
    svg = ET.fromstring(page[page.index("<svg"):page.index("</svg>") + 6])
    data = json.loads(re.search(r'id="dslc-details">(.*?)</script>', page, re.S).group(1))
    keys = {g.get("data-key") for g in svg.iter(f"{SVG}g") if g.get("data-key")}
    assert keys <= set(data)
    conv = next(d for d in data.values() if d.get("title") == "residual_1_h")
    assert conv["op"] == "conv2d" and conv["attributes"]["kernel"] == "3"
    assert conv["shape"] == "[8, 8, 16]" and conv["params"] == 2320
    assert conv["at"] == "tiny_resnet.dl:6:9" and conv["source"].startswith("h = conv2d(x,")
    script = page.split("<script>")[1]
    assert "wheel" in script and "mouseover" in script and "viewBox" in script
    assert "http" not in script and "innerHTML" not in script  # no network, no markup from data
    assert "<link" not in page and "src=" not in page


# the command line

def test_cli_writes_svg_and_html(tmp_path):
    spec = ROOT / "examples/two_heads.dl"
    proc = run_dslc("graph", spec, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "wrote two_heads.svg" in proc.stdout
    ET.parse(tmp_path / "two_heads.svg")
    out = tmp_path / "sub" / "m.html"
    proc = run_dslc("graph", spec, "-o", out)
    assert proc.returncode == 0, proc.stderr
    assert out.read_text().startswith("<!DOCTYPE html>")


def test_cli_refuses_to_replace_a_file_without_force(tmp_path):
    spec = ROOT / "examples/tiny_resnet.dl"
    out = tmp_path / "m.svg"
    out.write_text("keep me")
    proc = run_dslc("graph", spec, "-o", out)
    assert proc.returncode == 2 and "already exists" in proc.stderr and "--force" in proc.stderr
    assert out.read_text() == "keep me"
    proc = run_dslc("graph", spec, "-o", out, "--force")
    assert proc.returncode == 0, proc.stderr
    assert ET.parse(out).getroot().tag == f"{SVG}svg"


@pytest.mark.parametrize("name, message", [("m.png", "writes a .svg or .html file"),
                                           ("folder.svg", "is a folder")])
def test_cli_bad_outputs_are_user_errors(tmp_path, name, message):
    (tmp_path / "folder.svg").mkdir()
    proc = run_dslc("graph", ROOT / "examples/tiny_resnet.dl", "-o", tmp_path / name)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr


def test_cli_model_flag_and_expand(tmp_path):
    spec = tmp_path / "two.dl"
    spec.write_text("model first { input x: f32[4]\n dense(2) }\n"
                    f"{layers_spec(5).replace('model big', 'model second')}")
    proc = run_dslc("graph", spec, "--model", "second", "--expand", "-o", tmp_path / "s.svg")
    assert proc.returncode == 0, proc.stderr
    names = {n for _, n, _ in boxes(ET.parse(tmp_path / "s.svg").getroot()).values()}
    assert {"dense_1", "dense_5", "dense_6"} <= names
    proc = run_dslc("graph", spec, "--model", "third", "-o", tmp_path / "t.svg")
    assert proc.returncode == 2 and "no model `third`" in proc.stderr


# in a browser

def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


needs_chromium = pytest.mark.skipif(_chromium() is None, reason="no chromium on this machine")


def _browse(page: Path, tmp_path: Path, *flags: str) -> subprocess.CompletedProcess:
    exe = _chromium()
    assert exe is not None
    return subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu",
                           "--hide-scrollbars", f"--user-data-dir={tmp_path / 'profile'}",
                           "--window-size=1200,900", *flags, page.as_uri()],
                          capture_output=True, text=True, timeout=180)


@needs_chromium
def test_the_page_renders_in_chromium(tmp_path):
    from PIL import Image

    page = tmp_path / "tiny_resnet.html"
    proc = run_dslc("graph", ROOT / "examples/tiny_resnet.dl", "-o", page)
    assert proc.returncode == 0, proc.stderr
    shot = tmp_path / "shot.png"
    _browse(page, tmp_path, f"--screenshot={shot}")
    image = Image.open(shot).convert("RGB")
    assert image.size == (1200, 900)
    colours = image.getcolors(maxcolors=1 << 20) or []
    assert len(colours) > 50  # boxes in several colours, text, edges
    dark = sum(n for n, (r, g, b) in colours if r + g + b < 200)
    assert dark > 500  # text
    header = image.crop((0, 0, 400, 36)).convert("L")
    assert header.getextrema()[0] < 80  # the title, in dark type, at the top
    dom = _browse(page, tmp_path, "--dump-dom").stdout
    assert "<title>model tiny_resnet</title>" in dom
    assert "<h1>model tiny_resnet</h1>" in dom
    assert "Drag to pan" in dom  # the script ran and filled the panel


@needs_chromium
def test_hover_shows_details_and_wheel_zooms(tmp_path):
    page = tmp_path / "tiny_resnet.html"
    proc = run_dslc("graph", ROOT / "examples/tiny_resnet.dl", "-o", page)
    assert proc.returncode == 0, proc.stderr
    probe = """<script>
      var node = document.querySelector('[data-name="residual_1_h"] rect');
      node.dispatchEvent(new MouseEvent("mouseover", {bubbles: true}));
      var view = document.getElementById("view"), r = view.getBoundingClientRect();
      view.dispatchEvent(new WheelEvent("wheel", {bubbles: true, cancelable: true, deltaY: -300,
                                                  clientX: r.left + 100, clientY: r.top + 100}));
      document.body.setAttribute("data-viewbox", document.querySelector("#view svg")
                                 .getAttribute("viewBox"));
    </script></body>"""
    page.write_text(page.read_text().replace("</body>", probe))
    dom = _browse(page, tmp_path, "--dump-dom").stdout
    panel = dom[dom.index('<aside id="panel">'):dom.index("</aside>")]
    assert "<h2>residual_1_h</h2>" in panel
    assert "conv2d" in panel and "kernel" in panel and "2,320" in panel
    assert "h = conv2d(x, filters, kernel=3, padding=same, activation=relu)" in panel
    svg = ET.fromstring(page.read_text()[page.read_text().index("<svg"):].split("</svg>")[0]
                        + "</svg>")
    before = [float(v) for v in svg.get("viewBox").split()]
    after = [float(v) for v in re.search(r'data-viewbox="([^"]+)"', dom).group(1).split()]
    assert after[2] < before[2] and after[3] < before[3]  # zoomed in


def test_the_readme_picture_is_current(monkeypatch):
    monkeypatch.chdir(ROOT)  # the spans name the file as the command line did
    spec = compile_file("examples/tiny_resnet.dl")
    fresh = render_svg(build_diagram(spec.model(), spec.sources, "examples/tiny_resnet.dl"))
    assert (ROOT / "docs/tiny_resnet.svg").read_text(encoding="utf-8") == fresh, \
        "run: dslc graph examples/tiny_resnet.dl -o docs/tiny_resnet.svg --force"
    assert "](docs/tiny_resnet.svg)" in (ROOT / "README.md").read_text(encoding="utf-8")
