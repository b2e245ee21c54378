"""Timing for `dslc run --bench` and for the comparison `dslc export --quantize/--precision`
prints: the contenders take turns, a block of calls each, on the same batch, so that load from
other programs hits them alike, and the medians are compared.

`run --bench` puts onnxruntime against torch eager: the module `dslc compile --target torch`
generates, with the same weights, on the same batch (torch gets the batch already
preprocessed, as a PyTorch user feeds it; onnxruntime gets the raw batch when the file applies
its preprocessing itself, so the comparison does not favour onnxruntime).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

BATCH = 64  # the batch the throughput is measured at (the figure: cnn_mnist at 64)


@dataclass
class Timing:
    p50: float  # seconds per call at batch 1
    p99: float
    throughput: float  # samples per second at `batch`
    batch: int


def interleaved(calls: dict[str, Callable[[], object]], repeats: int, warmup: int,
                budget: float | None = None, block: int = 1) -> dict[str, list[float]]:
    """Seconds per call of each callable: they take turns `block` calls at a time (the order
    reversed every round), `repeats` calls each. Blocks keep one contender's idle threads
    (onnxruntime's and OpenMP's spin for a while after a call) from taxing only the next
    call of another; the medians ignore the first call of a block. Stops early after `budget`
    seconds of calls, once a third of the rounds ran."""
    for _ in range(warmup):
        for fn in calls.values():
            fn()
    times: dict[str, list[float]] = {k: [] for k in calls}
    keys = list(calls)
    start = time.perf_counter()
    rounds = max(1, -(-repeats // block))
    for i in range(rounds):
        for k in keys if i % 2 else keys[::-1]:
            fn = calls[k]
            for _ in range(block):
                t0 = time.perf_counter()
                fn()
                times[k].append(time.perf_counter() - t0)
        if budget is not None and i >= rounds // 3 and time.perf_counter() - start > budget:
            break
    return times


def measure(one: dict[str, Callable[[], object]], big: dict[str, Callable[[], object]],
            batch: int, repeats: int = 200, big_repeats: int = 30,
            budget: float | None = 4.0) -> dict[str, Timing]:
    """Batch-1 latency (`one`: callables on one sample) and throughput at `batch` (`big`)."""
    lat = interleaved(one, repeats, warmup=10, budget=budget, block=20)
    thr = interleaved(big, big_repeats, warmup=2, budget=budget, block=5)
    out = {}
    for k in one:
        p50, p99 = np.percentile(lat[k], [50, 99])
        out[k] = Timing(float(p50), float(p99), batch / float(np.median(thr[k])), batch)
    return out


def ort_call(session, feed: dict[str, np.ndarray]) -> Callable[[], object]:
    names = [o.name for o in session.get_outputs()]
    return lambda: session.run(names, feed)


def torch_call(module, xs: list[np.ndarray]) -> Callable[[], object]:
    """The module's forward in inference mode on tensors made once (eager: no compile)."""
    import torch

    tensors = [torch.from_numpy(np.ascontiguousarray(x, _dtype(x))) for x in xs]

    def call():
        with torch.inference_mode():
            return module(*tensors)
    return call


def resize(x: np.ndarray, n: int) -> np.ndarray:
    """`n` samples: `x`'s repeated (or cut)."""
    return np.ascontiguousarray(np.resize(x, (n, *x.shape[1:])), dtype=_dtype(x))


def _dtype(x: np.ndarray) -> type:
    """float32, or the integer/bool dtype of an input of ids (which stays as it is)."""
    return x.dtype.type if x.dtype.kind in "biu" else np.float32


def micros(seconds: float) -> str:
    us = seconds * 1e6
    return f"{us:,.0f} µs" if us >= 100 else f"{us:.1f} µs"


def timing_table(rows: dict[str, Timing], first: str = "") -> list[str]:
    """Lines of a table: p50/p99 at batch 1 and samples/s at the timing's batch."""
    batch = next(iter(rows.values())).batch
    width = max(len(first), *(len(k) for k in rows)) + 2
    lines = [f"{first:<{width}}{'p50 batch 1':>13}{'p99 batch 1':>13}"
             f"{f'batch {batch}':>20}"]
    for k, t in rows.items():
        lines.append(f"{k:<{width}}{micros(t.p50):>13}{micros(t.p99):>13}"
                     f"{f'{t.throughput:,.0f} samples/s':>20}")
    return lines
