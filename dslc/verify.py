"""`dslc verify`: the project's promise made checkable. One spec, the same weights and the same
seeded batch through every backend; the max abs difference of every pair must stay within
the tolerance (exit 1 otherwise)."""

from __future__ import annotations

import itertools
import math
import sys
from dataclasses import dataclass, field

import numpy as np

from dslc.backends import BACKENDS, load_backend
from dslc.diagnostics import DslError
from dslc.ir.graph import Graph

DYNAMIC_DIM = 5  # the size given to axes the spec leaves open (`?`)


def seeded_batch(graph: Graph, batch: int = 8, seed: int = 0) -> list[np.ndarray]:
    """One float32 array per input, standard normal, channels-last."""
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((batch, *(DYNAMIC_DIM if d is None else d
                                          for d in i.type.shape))).astype(np.float32)
            for i in graph.inputs]


@dataclass
class Report:
    outputs: dict[str, np.ndarray]  # the first output, by backend
    diffs: dict[tuple[str, str], float]  # max over every output, by pair of backends
    # every output, by backend (the spec's order); per output and pair in `output_diffs`
    all_outputs: dict[str, list[np.ndarray]] = field(default_factory=dict)
    output_diffs: dict[tuple[str, str], list[float]] = field(default_factory=dict)

    def worst(self) -> float:
        return max(self.diffs.values(), default=0.0)

    def within(self, tol: float) -> bool:
        return all(d <= tol for d in self.diffs.values())  # NaN fails


def max_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    if a.shape != b.shape:
        return float("inf")
    if a.size == 0:
        return 0.0
    d = np.abs(a.astype(np.float64) - b.astype(np.float64))
    return float("nan") if np.isnan(d).any() else float(d.max())


def _predict_all(runtime, feed) -> list[np.ndarray]:
    """Every output of a built runtime (a runtime with only `predict` gives its one)."""
    if hasattr(runtime, "predict_all"):
        return [np.asarray(y) for y in runtime.predict_all(feed)]
    return [np.asarray(runtime.predict(feed))]


def _worst(diffs: list[float]) -> float:
    if any(math.isnan(d) for d in diffs):
        return float("nan")
    return max(diffs, default=0.0)


def run_backends(graph: Graph, weights: dict[str, np.ndarray], xs: list[np.ndarray],
                 backends=BACKENDS, device: str = "cpu") -> Report:
    """Every output of every backend for the same batch, and their max abs differences."""
    outputs: dict[str, list[np.ndarray]] = {}
    feed = xs[0] if len(xs) == 1 else list(xs)
    for name in backends:
        backend = load_backend(name)
        try:
            outputs[name] = _predict_all(backend.build(graph, weights, device), feed)
        except DslError:
            raise
        except Exception as exc:  # a backend that cannot run this model is a finding, not a crash
            raise DslError(f"backend `{name}` cannot run model `{graph.name}`: "
                           f"{type(exc).__name__}: {exc}") from exc
    output_diffs = {}
    for a, b in itertools.combinations(backends, 2):
        ya, yb = outputs[a], outputs[b]
        per = [max_abs_diff(p, q) for p, q in zip(ya, yb, strict=False)]
        # a backend giving fewer outputs than another disagrees on the missing ones
        per += [float("inf")] * abs(len(ya) - len(yb))
        output_diffs[(a, b)] = per
    diffs = {pair: _worst(per) for pair, per in output_diffs.items()}
    return Report({k: v[0] for k, v in outputs.items()}, diffs, outputs, output_diffs)


def verify_command(args) -> int:
    from dslc.compiler import compile_file
    from dslc.weights import init_weights, load_weights

    if not (isinstance(args.tol, int | float) and math.isfinite(args.tol) and args.tol >= 0):
        raise DslError(f"--tol must be a finite number at least 0, got {args.tol}")
    if args.batch < 1:
        raise DslError(f"--batch must be positive, got {args.batch}")
    spec = compile_file(args.spec)
    graph = spec.model(getattr(args, "model", None))
    if args.weights:
        weights, source = load_weights(args.weights, graph), args.weights
    else:
        weights, source = init_weights(graph, args.seed), f"seeded init (seed {args.seed})"
    xs = seeded_batch(graph, args.batch, args.seed)
    report = run_backends(graph, weights, xs, device=getattr(args, "device", "cpu"))
    first = next(iter(report.all_outputs.values()))
    shown = ", ".join(f"{name} {list(y.shape)}"
                      for name, y in zip(graph.outputs, first, strict=False))
    label = "output" if len(graph.outputs) == 1 else "outputs"
    print(f"model {graph.name}: weights {source}, batch {args.batch} "
          f"(seed {args.seed}), {label} {shown}")
    width = max(len(f"{a} vs {b}") for a, b in report.diffs)
    for (a, b), d in report.diffs.items():
        verdict = "ok" if d <= args.tol else "FAIL"
        where = ""
        per = report.output_diffs.get((a, b), [])
        if verdict == "FAIL" and len(graph.outputs) > 1 and per:
            # name the output that differs most (the first that fails, NaN included)
            worst = next((i for i, x in enumerate(per) if not x <= args.tol),
                         int(np.argmax(per)))
            name = graph.outputs[worst] if worst < len(graph.outputs) else f"#{worst}"
            where = f" (output {name})"
        print(f"  {f'{a} vs {b}':<{width}}  max abs diff {d:.3e}  {verdict}{where}")
    if report.within(args.tol):
        print(f"all backends agree within {args.tol:g}")
        return 0
    print(f"backends disagree: max abs diff {report.worst():.3e} > tolerance {args.tol:g}",
          file=sys.stderr)
    return 1
