"""`dslc verify`: the project's promise made checkable. One spec, the same weights and the same
seeded batch through every backend; the max abs difference of every pair must stay within
the tolerance (exit 1 otherwise)."""

from __future__ import annotations

import itertools
import sys
from dataclasses import dataclass

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
    outputs: dict[str, np.ndarray]
    diffs: dict[tuple[str, str], float]

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


def run_backends(graph: Graph, weights: dict[str, np.ndarray], xs: list[np.ndarray],
                 backends=BACKENDS, device: str = "cpu") -> Report:
    outputs = {}
    feed = xs[0] if len(xs) == 1 else list(xs)
    for name in backends:
        backend = load_backend(name)
        try:
            outputs[name] = np.asarray(backend.build(graph, weights, device).predict(feed))
        except DslError:
            raise
        except Exception as exc:  # a backend that cannot run this model is a finding, not a crash
            raise DslError(f"backend `{name}` cannot run model `{graph.name}`: "
                           f"{type(exc).__name__}: {exc}") from exc
    diffs = {(a, b): max_abs_diff(outputs[a], outputs[b])
             for a, b in itertools.combinations(backends, 2)}
    return Report(outputs, diffs)


def verify_command(args) -> int:
    from dslc.compiler import compile_file
    from dslc.weights import init_weights, load_weights

    if args.tol < 0:
        raise DslError(f"--tol must be at least 0, got {args.tol}")
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
    out_shape = next(iter(report.outputs.values())).shape
    print(f"model {graph.name}: weights {source}, batch {args.batch} "
          f"(seed {args.seed}), output {graph.outputs[0]} {list(out_shape)}")
    width = max(len(f"{a} vs {b}") for a, b in report.diffs)
    for (a, b), d in report.diffs.items():
        verdict = "ok" if d <= args.tol else "FAIL"
        print(f"  {f'{a} vs {b}':<{width}}  max abs diff {d:.3e}  {verdict}")
    if report.within(args.tol):
        print(f"all backends agree within {args.tol:g}")
        return 0
    print(f"backends disagree: max abs diff {report.worst():.3e} > tolerance {args.tol:g}",
          file=sys.stderr)
    return 1
