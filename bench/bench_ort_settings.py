"""onnxruntime session settings for `dslc run`: graph optimisation level, intra-op threads,
thread spinning, and I/O binding at a fixed batch — session creation, batch-1 latency and
batch-64 throughput of each, the settings taking turns call by call.

    python bench/bench_ort_settings.py [--spec specs/cnn_mnist.dl] [--repeats 300]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

LEVELS = ("DISABLE_ALL", "ENABLE_BASIC", "ENABLE_EXTENDED", "ENABLE_ALL")


def model_bytes(spec: Path, seed: int = 0) -> tuple[bytes, tuple[int, ...]]:
    from dslc.backends.onnx.export import export_model
    from dslc.compiler import compile_file
    from dslc.weights import init_weights

    s = compile_file(spec)
    graph = s.model()
    model = export_model(s, graph, init_weights(graph, seed))  # preprocessing in the graph
    return model.SerializeToString(), tuple(graph.inputs[0].type.shape)


def options(level: str = "ENABLE_ALL", threads: int = 0, spinning: bool = True):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel, f"ORT_{level}")
    opts.intra_op_num_threads = threads
    if not spinning:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return opts


def configs() -> dict[str, dict]:
    out: dict[str, dict] = {"default (ENABLE_ALL, threads 0)": {}}
    for level in LEVELS[:-1]:
        out[level] = {"level": level}
    out["threads 1"] = {"threads": 1}
    out["threads 2"] = {"threads": 2}
    out["no spinning"] = {"spinning": False}
    out["threads 1, no spinning"] = {"threads": 1, "spinning": False}
    return out


def creation_ms(data: bytes, cfg: dict, runs: int = 5) -> float:
    import onnxruntime as ort

    times = []
    for _ in range(runs):
        t = time.perf_counter()
        ort.InferenceSession(data, options(**cfg), providers=["CPUExecutionProvider"])
        times.append(time.perf_counter() - t)
    return 1e3 * statistics.median(times)


def bound_call(session, x: np.ndarray):
    """I/O binding: input bound once, output written into a buffer bound once."""
    import onnxruntime as ort

    io = session.io_binding()
    io.bind_cpu_input(session.get_inputs()[0].name, x)
    out = session.get_outputs()[0]
    y = session.run([out.name], {session.get_inputs()[0].name: x})[0]
    buf = ort.OrtValue.ortvalue_from_numpy(np.empty_like(y))
    io.bind_ortvalue_output(out.name, buf)
    return lambda: session.run_with_iobinding(io)


def main(argv: list[str] | None = None) -> int:
    import onnxruntime as ort

    from dslc.backends.onnx.bench import interleaved, ort_call, resize

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spec", default=str(ROOT / "specs" / "cnn_mnist.dl"))
    ap.add_argument("--repeats", type=int, default=300, help="batch-1 calls per setting")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--batch-repeats", type=int, default=40)
    args = ap.parse_args(argv)

    data, shape = model_bytes(Path(args.spec))
    rng = np.random.default_rng(0)
    big = rng.random((args.batch, *shape), dtype=np.float32) * 255
    one = big[:1].copy()
    sessions = {k: ort.InferenceSession(data, options(**c), providers=["CPUExecutionProvider"])
                for k, c in configs().items()}
    name = sessions[next(iter(sessions))].get_inputs()[0].name
    ones = {k: ort_call(s, {name: one}) for k, s in sessions.items()}
    bigs = {k: ort_call(s, {name: resize(big, args.batch)}) for k, s in sessions.items()}
    default = next(iter(sessions))
    ones["default + I/O binding"] = bound_call(sessions[default], one)
    bigs["default + I/O binding"] = bound_call(sessions[default], resize(big, args.batch))
    lat = interleaved(ones, args.repeats, warmup=20)
    thr = interleaved(bigs, args.batch_repeats, warmup=3)
    creation_ms(data, {}, runs=2)  # first-session costs (kernel registries) off the table
    created = {k: creation_ms(data, c) for k, c in configs().items()}

    print(f"{Path(args.spec).stem}, onnxruntime {ort.__version__}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.2f}")
    print(f"| setting | session creation (ms) | p50 batch 1 (µs) | batch {args.batch} "
          "(samples/s) | batch-1 vs default | batch-64 vs default |")
    print("|---|---|---|---|---|---|")
    base_lat, base_thr = statistics.median(lat[default]), statistics.median(thr[default])
    for k in ones:
        p50, t = statistics.median(lat[k]), statistics.median(thr[k])
        made = f"{created[k]:.1f}" if k in created else "—"
        print(f"| {k} | {made} | {1e6 * p50:.1f} | {args.batch / t:,.0f} | "
              f"{base_lat / p50:.2f}x | {base_thr / t:.2f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
