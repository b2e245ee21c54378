"""`dslc verify`: the project's promise made checkable. One spec, the same weights and the same
seeded batch through every backend that runs — the reference interpreter included — and every
output compared: each framework against the reference (so a mistake all frameworks share is
caught) and every pair of frameworks. Agreement is numpy's `allclose`:
`|a - b| <= atol + rtol * |b|`, `b` the reference (or the pair's second). When a backend
departs from the reference, the layer where it first does is named (exit 1)."""

from __future__ import annotations

import argparse
import itertools
import math
import sys
from dataclasses import dataclass, field

import numpy as np

from dslc.backends import backend_names, get_backend
from dslc.backends.base import Feed
from dslc.diagnostics import DslError
from dslc.ir.graph import Graph

REFERENCE = "reference"
DYNAMIC_DIM = 5  # the size given to axes the spec leaves open (`?`)


IDS = 10  # ids drawn for an integer input that no op bounds (`Op.id_limit`)


def seeded_batch(graph: Graph, batch: int = 8, seed: int = 0) -> list[np.ndarray]:
    """One array per input, channels-last: float32 standard normal; for an integer input,
    ids in `[0, limit)` (the smallest `Op.id_limit` of the layers reading it, e.g. an
    embedding's vocabulary) with padding — sample k ends in k % T zeros — so masks are
    exercised; for a bool input, random flags."""
    rng = np.random.default_rng(seed)
    out: list[np.ndarray] = []
    for i in graph.inputs:
        shape = (batch, *(DYNAMIC_DIM if d is None else d for d in i.type.shape))
        if i.type.is_float:
            out.append(rng.standard_normal(shape).astype(np.float32))
        elif i.type.dtype == "bool":
            out.append(rng.random(shape) < 0.5)
        else:
            ids = rng.integers(0, id_limit(graph, i.name), shape).astype(i.type.numpy_dtype)
            if ids.ndim > 1:
                for k in range(batch):
                    pad = k % ids.shape[1]
                    if pad:
                        ids[k, ids.shape[1] - pad:] = 0
            out.append(ids)
    return out


def id_limit(graph: Graph, name: str) -> int:
    """The bound on the ids the tensor `name` may hold: the least its readers take."""
    from dslc.ops.registry import id_bound

    bound = id_bound(graph, name)
    return bound[0] if bound else IDS


@dataclass(frozen=True)
class Tolerance:
    atol: float = 1e-5
    rtol: float = 1e-6


# The default tolerance at each precision (`verify --precision`). fp32 is the project's
# promise. Mixed precision rounds every matmul/conv input to the low format: bf16 keeps 8
# significant bits (relative step 2^-8 = 3.9e-3), fp16 11 (2^-11 = 4.9e-4); errors of a few
# steps accumulate over the layers, so the bounds allow about ten (measured on specs/: the
# largest gaps are in docs/scale.md).
PRECISION_TOLERANCE = {
    "fp32": Tolerance(),
    "bf16": Tolerance(atol=4e-2, rtol=4e-2),
    "fp16": Tolerance(atol=5e-3, rtol=5e-3),
}


@dataclass(frozen=True)
class Diff:
    """How far `a` is from `b` (one output of two backends)."""

    abs: float  # max |a - b|
    rel: float  # max |a - b| / |b| (0 where both are equal, inf where only b is 0)
    ok: bool  # allclose(a, b, atol, rtol); False for NaN or a shape mismatch


def compare(a: np.ndarray, b: np.ndarray, tol: Tolerance) -> Diff:
    if a.shape != b.shape:
        return Diff(math.inf, math.inf, False)
    if a.size == 0:
        return Diff(0.0, 0.0, True)
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    d, ref = np.abs(a64 - b64), np.abs(b64)
    if np.isnan(d).any():
        return Diff(math.nan, math.nan, False)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(d == 0, 0.0, d / ref)
    return Diff(float(d.max()), float(rel.max()), bool(np.all(d <= tol.atol + tol.rtol * ref)))


def max_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    return compare(a, b, Tolerance()).abs


@dataclass
class PairReport:
    """Two backends over every output, in the spec's order."""

    a: str
    b: str
    per_output: list[Diff]

    @property
    def ok(self) -> bool:
        return all(d.ok for d in self.per_output)

    @property
    def abs(self) -> float:
        return _worst([d.abs for d in self.per_output])

    @property
    def rel(self) -> float:
        return _worst([d.rel for d in self.per_output])

    def first_failing(self) -> int | None:
        return next((k for k, d in enumerate(self.per_output) if not d.ok), None)


@dataclass
class Divergence:
    """The first layer (graph order) where `backend` leaves the reference's tolerance."""

    backend: str
    layer: str | None  # None: not found (see `note`)
    op: str = ""
    diff: Diff | None = None
    note: str = ""


@dataclass
class Report:
    tolerance: Tolerance
    outputs: dict[str, list[np.ndarray]]  # every output, by backend, in the spec's order
    pairs: dict[tuple[str, str], PairReport]  # frameworks against the reference, then pairwise
    divergences: dict[str, Divergence] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # backend → why it did not run

    def within(self) -> bool:
        return all(p.ok for p in self.pairs.values())

    def worst(self) -> float:
        return _worst([p.abs for p in self.pairs.values()])


def _worst(values: list[float]) -> float:
    if any(math.isnan(v) for v in values):
        return math.nan
    return max(values, default=0.0)


def _feed(xs: list[np.ndarray]) -> Feed:
    return xs[0] if len(xs) == 1 else list(xs)


def _predict_all(name: str, graph: Graph, weights: dict[str, np.ndarray], xs: list[np.ndarray],
                 device: str, precision: str = "fp32") -> list[np.ndarray]:
    backend = get_backend(name)
    # The reference is the float64 yardstick at every precision.
    how = (device,) if name == REFERENCE or precision == "fp32" else (device, precision)
    try:
        return [np.asarray(y) for y in backend.build(graph, weights, *how).predict_all(_feed(xs))]
    except DslError:
        raise
    except Exception as exc:  # a backend that cannot run this model is a finding, not a crash
        raise DslError(f"backend `{name}` cannot run model `{graph.name}`: "
                       f"{type(exc).__name__}: {exc}") from exc


def _pairs(names: list[str]) -> list[tuple[str, str]]:
    frameworks = [n for n in names if n != REFERENCE]
    against = [(n, REFERENCE) for n in frameworks] if REFERENCE in names else []
    return against + list(itertools.combinations(frameworks, 2))


def run_backends(graph: Graph, weights: dict[str, np.ndarray], xs: list[np.ndarray],
                 backends: list[str] | None = None, device: str = "cpu",
                 tolerance: Tolerance | None = None, precision: str = "fp32") -> Report:
    """Every output of every backend (default: every one that runs and is installed) for the
    same batch, compared; and, for each framework that departs from the reference, the first
    layer where it does. At a `precision` other than fp32 the frameworks that have it run
    mixed precision on `device`; the others are skipped, saying so."""
    tol = tolerance or PRECISION_TOLERANCE[precision]
    names = backend_names(runs=True) if backends is None else list(backends)
    outputs: dict[str, list[np.ndarray]] = {}
    skipped: dict[str, str] = {}
    for name in names:
        backend = get_backend(name)
        if name != REFERENCE and precision not in backend.precisions:
            skipped[name] = f"runs at {', '.join(backend.precisions)} only, not {precision}"
            continue
        try:
            backend.require()
        except DslError as exc:
            skipped[name] = str(exc)
            continue
        outputs[name] = _predict_all(name, graph, weights, xs, device, precision)
    pairs = {}
    for a, b in _pairs(list(outputs)):
        per = [compare(p, q, tol) for p, q in zip(outputs[a], outputs[b], strict=False)]
        # a backend giving fewer outputs than another disagrees on the missing ones
        per += [Diff(math.inf, math.inf, False)] * abs(len(outputs[a]) - len(outputs[b]))
        pairs[(a, b)] = PairReport(a, b, per)
    report = Report(tol, outputs, pairs, skipped=skipped)
    for (a, b), pair in pairs.items():
        if b == REFERENCE and not pair.ok:
            try:
                report.divergences[a] = first_divergence(graph, weights, xs, a, tol, device,
                                                         precision)
            except DslError as exc:  # the report stands without the location
                report.divergences[a] = Divergence(a, None, note=f"could not locate: {exc}")
    return report


def first_divergence(graph: Graph, weights: dict[str, np.ndarray], xs: list[np.ndarray],
                     backend: str, tol: Tolerance, device: str = "cpu",
                     precision: str = "fp32") -> Divergence:
    """Run `backend` and the reference on a copy of `graph` whose outputs are all its layers;
    the first layer beyond tolerance."""
    probe = graph.model_copy(update={"outputs": [n.name for n in graph.nodes]})
    want = _predict_all(REFERENCE, probe, weights, xs, device)
    got = _predict_all(backend, probe, weights, xs, device, precision)
    if len(got) != len(want):
        return Divergence(backend, None, note=f"gave {len(got)} values for {len(want)} layers")
    for node, g, w in zip(probe.nodes, got, want, strict=True):
        diff = compare(g, w, tol)
        if not diff.ok:
            return Divergence(backend, node.name, node.op, diff)
    return Divergence(backend, None, note="every layer agrees when all of them are outputs")


def _check_args(args: argparse.Namespace) -> Tolerance:
    default = PRECISION_TOLERANCE[getattr(args, "precision", None) or "fp32"]
    args.atol = default.atol if args.atol is None else args.atol
    args.rtol = default.rtol if args.rtol is None else args.rtol
    for flag, value in (("--atol (--tol)", args.atol), ("--rtol", args.rtol)):
        if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
            raise DslError(f"{flag} must be a finite number at least 0, got {value}")
    if args.batch < 1:
        raise DslError(f"--batch must be positive, got {args.batch}")
    return Tolerance(float(args.atol), float(args.rtol))


def verify_command(args: argparse.Namespace) -> int:
    from dslc.compiler import compile_file
    from dslc.weights import init_weights, load_weights

    tol = _check_args(args)
    spec = compile_file(args.spec)
    graph = spec.model(args.model)
    if args.weights:
        weights, source = load_weights(args.weights, graph), args.weights
    else:
        weights, source = init_weights(graph, args.seed), f"seeded init (seed {args.seed})"
    xs = seeded_batch(graph, args.batch, args.seed)
    precision = getattr(args, "precision", None) or "fp32"
    device = getattr(args, "device", None) or "cpu"
    report = run_backends(graph, weights, xs, tolerance=tol, device=device, precision=precision)
    if not any(name != REFERENCE for name in report.outputs):
        raise DslError("no framework backend is installed to verify against the reference",
                       hint="pip install 'dslc[torch]' (or keras, onnx)")
    first = report.outputs[REFERENCE] if REFERENCE in report.outputs else \
        next(iter(report.outputs.values()))
    shown = ", ".join(f"{name} {list(y.shape)}"
                      for name, y in zip(graph.outputs, first, strict=False))
    label = "output" if len(graph.outputs) == 1 else "outputs"
    print(f"model {graph.name}: weights {source}, batch {args.batch} "
          f"(seed {args.seed}), {label} {shown}")
    if precision != "fp32" or device != "cpu":
        print(f"  frameworks at {precision} on {device}, the reference in float64; tolerance "
              f"at {precision}: atol {tol.atol:g}, rtol {tol.rtol:g}")
    for name, why in report.skipped.items():
        print(f"  {name}: not run ({why})")
    width = max(len(f"{a} vs {b}") for a, b in report.pairs)
    for (a, b), pair in report.pairs.items():
        where = ""
        worst = pair.first_failing()
        if worst is not None and len(graph.outputs) > 1:
            name = graph.outputs[worst] if worst < len(graph.outputs) else f"#{worst}"
            where = f" (output {name})"
        print(f"  {f'{a} vs {b}':<{width}}  max abs diff {pair.abs:.3e}  "
              f"max rel diff {pair.rel:.3e}  {'ok' if pair.ok else 'FAIL'}{where}")
    for d in report.divergences.values():
        if d.layer is None or d.diff is None:
            print(f"  {d.backend} vs reference: {d.note}")
        else:
            print(f"  {d.backend} departs from the reference first at layer `{d.layer}` "
                  f"({d.op}): max abs diff {d.diff.abs:.3e}, max rel diff {d.diff.rel:.3e}")
    bounds = f"atol {tol.atol:g}, rtol {tol.rtol:g}"
    if report.within():
        print(f"all backends agree within {bounds}")
        return 0
    print(f"backends disagree: max abs diff {report.worst():.3e} beyond {bounds}",
          file=sys.stderr)
    return 1
