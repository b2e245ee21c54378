"""ONNX of cnn_mnist built by dslc vs `torch.onnx.export` of the same network written by hand,
both run by onnxruntime with the same weights: batch-1 latency, batch-256 throughput, nodes.

    python bench/bench_onnx.py [--repeats 2000] [--batch-repeats 60] [--threads 0]
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "specs" / "cnn_mnist.dl"


def hand_written_module(weights: dict[str, np.ndarray]):
    """cnn_mnist as a PyTorch user writes it, taking channels-last images like the spec;
    it permutes back to NHWC before flattening so the canonical dense kernel fits."""
    import torch
    from torch import nn

    class CnnMnist(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(1, 32, 3)
            self.conv2 = nn.Conv2d(32, 64, 3)
            self.pool = nn.MaxPool2d(2)
            self.fc1 = nn.Linear(5 * 5 * 64, 128)
            self.fc2 = nn.Linear(128, 10)

        def forward(self, x):
            x = x.permute(0, 3, 1, 2)
            x = self.pool(torch.relu(self.conv1(x)))
            x = self.pool(torch.relu(self.conv2(x)))
            x = torch.flatten(x.permute(0, 2, 3, 1), 1)
            x = torch.relu(self.fc1(x))
            return torch.softmax(self.fc2(x), dim=-1)

    m = CnnMnist().eval()
    t = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in weights.items()}
    with torch.no_grad():
        m.conv1.weight.copy_(t["conv2d_1.kernel"].permute(3, 2, 0, 1))
        m.conv1.bias.copy_(t["conv2d_1.bias"])
        m.conv2.weight.copy_(t["conv2d_2.kernel"].permute(3, 2, 0, 1))
        m.conv2.bias.copy_(t["conv2d_2.bias"])
        m.fc1.weight.copy_(t["dense_1.kernel"].T)
        m.fc1.bias.copy_(t["dense_1.bias"])
        m.fc2.weight.copy_(t["dense_2.kernel"].T)
        m.fc2.bias.copy_(t["dense_2.bias"])
    return m


def torch_export_bytes(weights: dict[str, np.ndarray]) -> bytes:
    """`torch.onnx.export` of the hand-written module, batch dimension dynamic."""
    import torch

    module = hand_written_module(weights)
    buf = io.BytesIO()
    # The TorchScript exporter (deprecated, still shipped) gives the classic graph; the
    # torch.export-based one gives the same 13 nodes with a Reshape for the Flatten.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(module, (torch.zeros(1, 28, 28, 1),), buf, input_names=["image"],
                          output_names=["probs"], dynamic_axes={"image": {0: "batch"}},
                          opset_version=17, dynamo=False)
    return buf.getvalue()


def dslc_bytes(weights: dict[str, np.ndarray]) -> bytes:
    from dslc.backends.onnx.export import to_model
    from dslc.compiler import compile_file

    return to_model(compile_file(SPEC).model(), weights).SerializeToString()


def cnn_mnist_weights(seed: int = 0) -> dict[str, np.ndarray]:
    from dslc.compiler import compile_file
    from dslc.weights import init_weights

    return init_weights(compile_file(SPEC).model(), seed)


def session(model_bytes: bytes, threads: int):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = threads
    return ort.InferenceSession(model_bytes, opts, providers=["CPUExecutionProvider"])


def interleaved_times(sessions: dict, x: np.ndarray, repeats: int, warmup: int) -> dict:
    """Per-call seconds for each session, calls alternating so drift hits both alike."""
    feeds = {k: {s.get_inputs()[0].name: x} for k, s in sessions.items()}
    for _ in range(warmup):
        for k, s in sessions.items():
            s.run(None, feeds[k])
    times = {k: [] for k in sessions}
    keys = list(sessions)
    for i in range(repeats):
        for k in keys if i % 2 else keys[::-1]:
            s = sessions[k]
            t0 = time.perf_counter()
            s.run(None, feeds[k])
            times[k].append(time.perf_counter() - t0)
    return times


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def main(argv: list[str] | None = None) -> int:
    import onnx

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=2000, help="batch-1 calls per model")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--batch-repeats", type=int, default=60)
    ap.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads (0: ORT)")
    args = ap.parse_args(argv)

    weights = cnn_mnist_weights()
    models = {"dslc": dslc_bytes(weights), "torch.onnx.export": torch_export_bytes(weights)}
    sessions = {k: session(b, args.threads) for k, b in models.items()}
    rng = np.random.default_rng(0)
    big = rng.random((args.batch, 28, 28, 1), dtype=np.float32)
    outs = {k: s.run(None, {s.get_inputs()[0].name: big})[0] for k, s in sessions.items()}
    diff = float(np.abs(outs["dslc"] - outs["torch.onnx.export"]).max())

    one = big[:1]
    lat = interleaved_times(sessions, one, args.repeats, warmup=50)
    thr = interleaved_times(sessions, big, args.batch_repeats, warmup=3)

    print(f"cnn_mnist, onnxruntime {__import__('onnxruntime').__version__}, "
          f"max abs diff between the two models: {diff:.2e}")
    header = f"{'model':<20}{'nodes':>6}{'p50 b=1 (us)':>14}{'p99 b=1 (us)':>14}" \
             f"{f'b={args.batch} (img/s)':>16}"
    print(header)
    stats = {}
    for k in sessions:
        nodes = len(onnx.load_from_string(models[k]).graph.node)
        p50, p99 = percentile(lat[k], 50) * 1e6, percentile(lat[k], 99) * 1e6
        ips = args.batch / statistics.median(thr[k])
        stats[k] = (p50, ips)
        print(f"{k:<20}{nodes:>6}{p50:>14.1f}{p99:>14.1f}{ips:>16.0f}")
    (p50_d, ips_d), (p50_t, ips_t) = stats["dslc"], stats["torch.onnx.export"]
    print(f"batch-1 latency ratio (torch export / dslc): {p50_t / p50_d:.3f}")
    print(f"batch-{args.batch} throughput ratio (dslc / torch export): {ips_d / ips_t:.3f}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    raise SystemExit(main())
