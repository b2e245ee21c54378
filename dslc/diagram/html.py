"""Diagram → one self-contained HTML page: the SVG inline, pan and zoom, and a panel with
the details of the layer under the pointer. No network: the script and styles are inline."""

from __future__ import annotations

import html
import json

from dslc.diagram.layout import layout
from dslc.diagram.model import Diagram, clean
from dslc.diagram.svg import render_svg

STYLE = """
html, body { margin: 0; height: 100%; font: 13px system-ui, sans-serif; color: #212529; }
body { display: flex; flex-direction: column; }
header { display: flex; align-items: baseline; gap: 12px; padding: 8px 14px;
         border-bottom: 1px solid #dee2e6; background: #f8f9fa; }
header h1 { font-size: 16px; margin: 0; }
header .sub { color: #6c757d; flex: 1; overflow: hidden; text-overflow: ellipsis;
              white-space: nowrap; }
header button { font: inherit; padding: 2px 9px; cursor: pointer; }
main { flex: 1; display: flex; min-height: 0; }
#view { flex: 1; overflow: hidden; cursor: grab; background: #ffffff; }
#view.dragging { cursor: grabbing; }
#view svg { width: 100%; height: 100%; display: block; }
#view .node:hover rect, #view .node.pinned rect { stroke: #f03e3e; stroke-width: 2.5; }
#panel { width: 320px; overflow: auto; padding: 10px 14px; border-left: 1px solid #dee2e6;
         background: #f8f9fa; font: 12px ui-monospace, Menlo, Consolas, monospace; }
#panel h2 { font-size: 14px; margin: 0 0 6px; word-break: break-all; }
#panel table { border-collapse: collapse; width: 100%; }
#panel td { vertical-align: top; padding: 2px 4px; word-break: break-word; }
#panel td:first-child { color: #6c757d; white-space: nowrap; }
#panel pre { white-space: pre-wrap; word-break: break-word; background: #fff;
             border: 1px solid #dee2e6; padding: 4px 6px; margin: 6px 0 0; }
#panel .hint { color: #6c757d; }
"""

# Text from the spec reaches the page only through textContent (never innerHTML).
SCRIPT = """
(function () {
  "use strict";
  var view = document.getElementById("view");
  var svg = view.querySelector("svg");
  var details = JSON.parse(document.getElementById("dslc-details").textContent);
  var panel = document.getElementById("panel");
  var vb = svg.viewBox.baseVal;
  var home = [vb.x, vb.y, vb.width, vb.height];
  var box = home.slice();
  var pinned = null;
  svg.removeAttribute("width");
  svg.removeAttribute("height");
  function apply() { svg.setAttribute("viewBox", box.join(" ")); }
  function scale() {
    var r = svg.getBoundingClientRect();
    return Math.max(box[2] / Math.max(r.width, 1), box[3] / Math.max(r.height, 1));
  }
  function toSvg(cx, cy) {
    var r = svg.getBoundingClientRect(), s = scale();
    return [box[0] + (cx - r.left - (r.width - box[2] / s) / 2) * s,
            box[1] + (cy - r.top - (r.height - box[3] / s) / 2) * s];
  }
  function zoom(f, cx, cy) {
    var p = toSvg(cx, cy);
    box = [p[0] - (p[0] - box[0]) * f, p[1] - (p[1] - box[1]) * f, box[2] * f, box[3] * f];
    apply();
  }
  function centre() {
    var r = svg.getBoundingClientRect();
    return [r.left + r.width / 2, r.top + r.height / 2];
  }
  view.addEventListener("wheel", function (e) {
    e.preventDefault();
    zoom(Math.pow(1.0015, e.deltaY), e.clientX, e.clientY);
  }, { passive: false });
  var drag = null;
  view.addEventListener("pointerdown", function (e) {
    drag = [e.clientX, e.clientY, box[0], box[1], scale()];
    view.classList.add("dragging");
  });
  window.addEventListener("pointermove", function (e) {
    if (!drag) { return; }
    box[0] = drag[2] - (e.clientX - drag[0]) * drag[4];
    box[1] = drag[3] - (e.clientY - drag[1]) * drag[4];
    apply();
  });
  window.addEventListener("pointerup", function () {
    drag = null;
    view.classList.remove("dragging");
  });
  function fit() { box = home.slice(); apply(); }
  view.addEventListener("dblclick", fit);
  document.getElementById("fit").addEventListener("click", fit);
  document.getElementById("zoom-in").addEventListener("click", function () {
    var c = centre(); zoom(1 / 1.25, c[0], c[1]);
  });
  document.getElementById("zoom-out").addEventListener("click", function () {
    var c = centre(); zoom(1.25, c[0], c[1]);
  });
  window.addEventListener("keydown", function (e) {
    var c = centre();
    if (e.key === "+" || e.key === "=") { zoom(1 / 1.25, c[0], c[1]); }
    else if (e.key === "-") { zoom(1.25, c[0], c[1]); }
    else if (e.key === "0") { fit(); }
    else if (e.key === "Escape") { unpin(); show(null); }
  });
  function row(table, name, value) {
    var tr = document.createElement("tr");
    var a = document.createElement("td"), b = document.createElement("td");
    a.textContent = name;
    b.textContent = value;
    tr.appendChild(a);
    tr.appendChild(b);
    table.appendChild(tr);
  }
  function show(d) {
    panel.textContent = "";
    if (!d) {
      var p = document.createElement("p");
      p.className = "hint";
      p.textContent = "Point at a layer or a group for its details; click to keep them. " +
                      "Drag to pan, wheel or +/- to zoom, double-click or 0 to fit.";
      panel.appendChild(p);
      return;
    }
    var h = document.createElement("h2");
    h.textContent = d.title;
    panel.appendChild(h);
    var table = document.createElement("table");
    Object.keys(d).forEach(function (k) {
      var v = d[k];
      if (k === "title" || k === "source" || k === "attributes" || v === "" || v === null) {
        return;
      }
      if (Array.isArray(v)) { v = v.join(", "); }
      else if (typeof v === "number") { v = v.toLocaleString("en-US"); }
      row(table, k, String(v));
    });
    if (d.attributes) {
      Object.keys(d.attributes).forEach(function (k) { row(table, k, d.attributes[k]); });
    }
    panel.appendChild(table);
    if (d.source) {
      var pre = document.createElement("pre");
      pre.textContent = d.source;
      panel.appendChild(pre);
    }
  }
  function unpin() {
    if (pinned) { pinned.classList.remove("pinned"); }
    pinned = null;
  }
  function target(e) { return e.target.closest ? e.target.closest("[data-key]") : null; }
  svg.addEventListener("mouseover", function (e) {
    var el = target(e);
    if (el && !pinned) { show(details[el.getAttribute("data-key")]); }
  });
  svg.addEventListener("click", function (e) {
    var el = target(e);
    unpin();
    if (el) {
      pinned = el;
      el.classList.add("pinned");
      show(details[el.getAttribute("data-key")]);
    }
  });
  show(null);
})();
"""


def _json_for_script(value: object) -> str:
    """JSON that cannot end the <script> element it sits in, whatever its strings hold."""
    text = json.dumps(value, ensure_ascii=True, sort_keys=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def render_html(diagram: Diagram) -> str:
    svg = render_svg(diagram, layout(diagram), standalone=False)
    details = {k: b.details for k, b in diagram.boxes.items()}
    details.update({g.key: g.details for g in diagram.groups()})
    title = html.escape(clean(diagram.title))
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="dslc graph">
<title>{title}</title>
<style>{STYLE}</style>
</head>
<body>
<header><h1>{title}</h1><span class="sub">{html.escape(clean(diagram.subtitle))}</span>
<button id="zoom-in" title="zoom in (+)">+</button><button id="zoom-out" title="zoom out (-)">&#8722;</button><button id="fit" title="fit (0)">fit</button></header>
<main>
<div id="view">
{svg}</div>
<aside id="panel"></aside>
</main>
<script type="application/json" id="dslc-details">{_json_for_script(details)}</script>
<script>{SCRIPT}</script>
</body>
</html>
"""
