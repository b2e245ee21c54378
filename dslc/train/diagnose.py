"""`dslc train --diagnose`: what happens inside the model while it trains.

After each epoch, on a fixed probe batch of training samples (`PROBE`, seeded), in inference
mode (dropout off, batch norm on its running statistics):

- each layer's weight norm and the norm of the loss's gradient for its weights (L2 over all
  of the layer's parameters), and their ratio — vanishing or exploding updates show there;
- for each layer that ends in a ReLU, the share of its units (channels) that are zero for
  every sample of the probe: "dead" units, which no longer learn;
- each layer's largest |output| and count of non-finite outputs.

When the loss becomes NaN or infinite, the first layer (graph order) whose output on the
probe is not finite is named with its spec line, as a note under the error.

It is framework-free: weights come from `Trainer.get_weights()`, every layer's output from
the backend's own runtime on a copy of the graph whose outputs are all its layers (as `dslc
verify` does), gradients from the backend contract's `gradients()` with the loss's
derivative as the cotangent (`loss_cotangent`). So it works alike on every trainable
backend. Written to the run folder as diagnostics.csv (one row per epoch and layer) and
diagnostics.json, and summarised at the end of training.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from dslc.diagnostics import Diagnostic, DslError
from dslc.ir.graph import Graph
from dslc.ir.train import Loss, TrainConfig
from dslc.ops import node_activation
from dslc.train.metrics import HIGH, LOW, _class_targets
from dslc.train.outputs import write_json
from dslc.weights import atomic_write_bytes

PROBE = 256
DEAD_WARN = 0.5  # share of dead ReLU units worth a warning
COLUMNS = ["epoch", "layer", "op", "weight_norm", "grad_norm", "grad_to_weight", "dead_relu",
           "max_abs_output", "nonfinite_outputs"]


def loss_cotangent(loss: Loss, y: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """d(mean loss)/d(outputs) for outputs `pred` (as `dslc.train.metrics.numpy_loss` computes
    the loss; zero where it clips probabilities), float64, shaped as `pred`."""
    p = np.asarray(pred, dtype=np.float64)
    ls = loss.label_smoothing
    if loss.name in ("mse", "mae"):
        diff = p - np.asarray(y, dtype=np.float64).reshape(p.shape)
        return (2.0 * diff if loss.name == "mse" else np.sign(diff)) / p.size
    if loss.name == "binary_crossentropy":
        t = np.asarray(y, dtype=np.float64).reshape(p.shape)
        if ls:
            t = t * (1.0 - ls) + 0.5 * ls
        if loss.from_logits:
            return (1.0 / (1.0 + np.exp(-p)) - t) / p.size
        q = np.clip(p, LOW, HIGH)
        g = (-(t / q) + (1.0 - t) / (1.0 - q)) / p.size
        return np.where((p < LOW) | (p > HIGH), 0.0, g)
    z = p.reshape(-1, p.shape[-1])
    t = _class_targets(y, p)
    if ls:
        t = t * (1.0 - ls) + ls / z.shape[1]
    if loss.from_logits:
        e = np.exp(z - z.max(axis=1, keepdims=True))
        g = (e / e.sum(axis=1, keepdims=True)) * t.sum(axis=1, keepdims=True) - t
    else:
        # -sum t log(q / sum q), q the clipped probabilities (the renormalisation included)
        q = np.clip(z, LOW, HIGH)
        g = -t / q + t.sum(axis=1, keepdims=True) / q.sum(axis=1, keepdims=True)
        g = np.where((z < LOW) | (z > HIGH), 0.0, g)
    return (g / len(z)).reshape(p.shape)


def all_outputs(backend: Any, graph: Graph, weights: dict[str, np.ndarray],
                x: np.ndarray, device: str = "cpu") -> list[np.ndarray]:
    """Every layer's output for `x`, in graph order, from the backend's own runtime."""
    probe = graph.model_copy(update={"outputs": [n.name for n in graph.nodes]})
    return [np.asarray(v) for v in backend.build(probe, weights, device).predict_all(x)]


def _norm(arrays: list[np.ndarray]) -> float:
    return math.sqrt(sum(float(np.sum(np.square(a, dtype=np.float64))) for a in arrays))


def layer_stats(backend: Any, graph: Graph, cfg: TrainConfig, weights: dict[str, np.ndarray],
                x: np.ndarray, y: np.ndarray, device: str = "cpu") -> dict[str, dict]:
    """Per layer (graph order): weight and gradient norms, dead ReLU share, output range."""
    outs = all_outputs(backend, graph, weights, x, device)
    by_layer = dict(zip((n.name for n in graph.nodes), outs, strict=True))
    stats: dict[str, dict] = {}
    grads: dict[str, np.ndarray] = {}
    pred = by_layer[graph.outputs[0]]
    if np.all(np.isfinite(pred)) and all(np.all(np.isfinite(w)) for w in weights.values()):
        cot = loss_cotangent(cfg.loss, y, pred)
        grads = backend.gradients(graph, weights, [x], [cot])
    for node in graph.nodes:
        out = by_layer[node.name]
        # the weights training moves by gradient (not batch_norm's moving statistics)
        keys = [f"{node.name}.{k}" for k, p in node.params.items() if p.trainable]
        row: dict[str, Any] = {"op": node.op}
        if keys:
            w = _norm([weights[k] for k in keys])
            g = _norm([grads[k] for k in keys]) if grads else math.nan
            row.update(weight_norm=w, grad_norm=g,
                       grad_to_weight=g / w if w > 0 and math.isfinite(g) else math.nan)
        if node_activation(node) == "relu" and out.size:
            units = out.reshape(-1, out.shape[-1]) if out.ndim > 1 else out.reshape(-1, 1)
            row["dead_relu"] = float(np.mean(np.all(units <= 0, axis=0)))
        finite = np.isfinite(out)
        row["nonfinite_outputs"] = int(out.size - np.count_nonzero(finite))
        row["max_abs_output"] = float(np.max(np.abs(out[finite]))) if finite.any() else math.nan
        stats[node.name] = row
    return stats


def first_nonfinite(graph: Graph, stats: dict[str, dict]) -> str | None:
    return next((n.name for n in graph.nodes if stats[n.name]["nonfinite_outputs"]), None)


class Diagnoser:
    """The `on_epoch` hook of `dslc train --diagnose` (see the module's docstring)."""

    def __init__(self, backend: Any, graph: Graph, cfg: TrainConfig, data: Any, out: Path,
                 seed: int, device: str = "cpu", resume: bool = False):
        self.backend, self.graph, self.cfg, self.out, self.device = (backend, graph, cfg, out,
                                                                      device)
        n = len(data.x_train)
        pick = np.sort(np.random.default_rng([seed % 2**63, 5]).permutation(n)[:PROBE])
        self.x, self.y = data.x_train[pick], data.y_train[pick]
        self.epochs: list[dict] = []
        self.nan: dict | None = None
        self.error: str | None = None
        if resume and (out / "diagnostics.json").exists():  # a resumed run keeps its epochs
            self.epochs = json.loads((out / "diagnostics.json").read_text()).get("epochs", [])

    def __call__(self, epoch: int, row: dict, trainer: Any) -> None:
        if self.error is not None:
            return
        try:
            stats = layer_stats(self.backend, self.graph, self.cfg, trainer.get_weights(),
                                self.x, self.y, self.device)
        except Exception as exc:  # diagnostics must not end a training run
            self.error = f"epoch {epoch + 1}: {type(exc).__name__}: {exc}"
        else:
            self.epochs = [e for e in self.epochs if e["epoch"] < epoch + 1]
            self.epochs.append({"epoch": epoch + 1, "layers": stats})
        self.write()

    def hook(self, trainer: Any):
        return lambda epoch, row: self(epoch, row, trainer)

    def diverged(self, trainer: Any, err: DslError) -> None:
        """On a NaN/inf loss: find the first layer whose output on the probe is not finite
        with the weights the trainer holds now, and add it to `err` as a note."""
        weights = trainer.get_weights()
        try:
            stats = layer_stats(self.backend, self.graph, self.cfg, weights, self.x, self.y,
                                self.device)
        except Exception as exc:  # the error stands without the note
            self.nan = {"layer": None, "note": f"could not run the probe: {exc}"}
            self.write()
            return
        bad_weights = [n.name for n in self.graph.nodes
                       if any(not np.all(np.isfinite(weights[f"{n.name}.{k}"])) for k in n.params)]
        layer = first_nonfinite(self.graph, stats)
        self.nan = {"layer": layer, "layers_with_nonfinite_weights": bad_weights}
        if layer is None:
            top = max(self.graph.nodes, key=lambda n: _finite(stats[n.name]["max_abs_output"]))
            big = stats[top.name]["max_abs_output"]
            self.nan.update(largest_output={"layer": top.name, "max_abs": big})
            err.diagnostics.append(Diagnostic(
                f"every layer's output on the probe is finite, so the loss itself overflowed; "
                f"the largest outputs are `{top.name}`'s ({top.op}), up to {big:.3g}",
                top.span, severity="note"))
        else:
            node = self.graph.node(layer)
            why = ("its weights are not finite (the step after the bad loss, or exploding "
                   "gradients)" if layer in bad_weights else "its weights are finite, its "
                   "output overflows")
            self.nan.update(op=node.op, line=node.span.line, file=node.span.file)
            err.diagnostics.append(Diagnostic(
                f"the first layer whose output is not finite is `{layer}` ({node.op}): {why}",
                node.span, severity="note"))
        self.write()

    # files -----------------------------------------------------------------------------
    def write(self) -> None:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        for e in self.epochs:
            for layer, s in e["layers"].items():
                writer.writerow({"epoch": e["epoch"], "layer": layer,
                                 **{k: (f"{v:.6g}" if isinstance(v, float) else v)
                                    for k, v in s.items()}})
        atomic_write_bytes(self.out / "diagnostics.csv", buf.getvalue().encode())
        write_json(self.out / "diagnostics.json", {
            "probe_samples": len(self.x), "epochs": self.epochs, "nan": self.nan,
            "warnings": self.warnings(), "error": self.error})

    def warnings(self) -> list[str]:
        if not self.epochs:
            return []
        last = self.epochs[-1]["layers"]
        out = []
        for layer, s in last.items():
            if s.get("dead_relu", 0.0) >= DEAD_WARN:
                out.append(f"{layer}: {s['dead_relu']:.0%} of its ReLU units are dead on the probe")
            g = s.get("grad_norm")
            if g is not None and g == 0.0:
                out.append(f"{layer}: its weights get no gradient")
            if s["nonfinite_outputs"]:
                out.append(f"{layer}: {s['nonfinite_outputs']} outputs are not finite")
        first = self.epochs[0]["layers"]
        for layer, s in last.items():
            g0, g1 = first[layer].get("grad_norm"), s.get("grad_norm")
            if g0 and g1 and math.isfinite(g0) and math.isfinite(g1) and g1 > 1e3 * g0:
                out.append(f"{layer}: its gradient grew {g1 / g0:,.0f}-fold since epoch 1")
        return out

    def summary(self) -> str:
        """The last epoch's figures as a table, then the warnings."""
        if self.error is not None:
            return f"diagnostics stopped: {self.error}"
        if not self.epochs:
            return "diagnostics: no epoch ran"
        last = self.epochs[-1]
        rows = [("layer", "op", "weight norm", "grad norm", "grad/weight", "dead relu")]
        for layer, s in last["layers"].items():
            if "weight_norm" not in s and "dead_relu" not in s:
                continue
            rows.append((layer, s["op"], _fmt(s.get("weight_norm")), _fmt(s.get("grad_norm")),
                         _fmt(s.get("grad_to_weight")),
                         f"{s['dead_relu']:.0%}" if "dead_relu" in s else ""))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines = [f"diagnostics after epoch {last['epoch']} (probe of {len(self.x)} training "
                 f"samples; every epoch in {self.out / 'diagnostics.csv'}):"]
        lines += ["  " + "  ".join(c.ljust(w) if i < 2 else c.rjust(w)
                                   for i, (c, w) in enumerate(zip(r, widths))).rstrip()
                  for r in rows]
        lines += [f"  warning: {w}" for w in self.warnings()] or ["  no warnings"]
        return "\n".join(lines)


def _finite(v: float) -> float:
    return v if math.isfinite(v) else -1.0


def _fmt(v: float | None) -> str:
    return "" if v is None else "nan" if not math.isfinite(v) else f"{v:.3g}"
