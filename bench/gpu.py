"""The GPU proof (issue 13): one short script, rerunnable, that prints one table.

    bash bench/gpu.sh                 # or: python bench/gpu.py [--device cuda] [--quick]

On the device it is given (default: cuda when present, else cpu, so the script itself is
tested anywhere), with synthetic MNIST-shaped data (no download: GPU machines are offline):

1. cnn_mnist (and specs/transformer_classifier.dl when it exists) at fp32 and bf16: the
   generated module trained by dslc's trainer against the same model written by hand with a
   plain PyTorch loop (same batches copied from pinned CPU memory, same autocast, same
   channels-last filters, same Adam): samples/s of each and the ratio (goal >= 0.97);
2. --compile against eager (fp32): the first epoch's seconds (compilation) and steady samples/s;
3. `dslc train --nproc 2` (DDP; two GPUs, or two processes sharing one over gloo): samples/s
   from its metrics.json, against one process.

Rounds alternate sides and take the median of per-round ratios (bench_torch.py's method).
Budget: under 8 minutes on one H200 (most of it torch.compile and process start-up).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_torch import HAND  # noqa: E402

from dslc.backends import get_backend  # noqa: E402
from dslc.backends.base import TrainOptions  # noqa: E402
from dslc.backends.torch.runtime import autocast  # noqa: E402
from dslc.backends.torch.weights import from_canonical  # noqa: E402
from dslc.compiler import compile_file  # noqa: E402
from dslc.weights import init_weights  # noqa: E402

ROWS: list[tuple[str, ...]] = []


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def hand_epoch(model, opt, x: torch.Tensor, y: torch.Tensor, batch: int, device: str,
               precision: str) -> None:
    """A PyTorch user's loop: pinned CPU batches copied asynchronously, autocast, one
    `.item()` a step (as dslc reports each step's loss)."""
    model.train()
    cuda = device.startswith("cuda")
    for start in range(0, len(x), batch):
        xb = x[start:start + batch].to(device, non_blocking=cuda)
        yb = y[start:start + batch].to(device, non_blocking=cuda)
        opt.zero_grad(set_to_none=True)
        with autocast(device, precision):
            out = model(xb)
        loss = F.cross_entropy(out.float(), yb)
        loss.backward()
        opt.step()
        loss.item()


def timed(fn, samples: int, device: str) -> float:
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return samples / (time.perf_counter() - t0)


def generated_vs_hand(name: str, device: str, precision: str, samples: int, batch: int,
                      rounds: int) -> None:
    spec = compile_file(ROOT / "specs" / f"{name}.dl")
    graph, cfg = spec.model(), spec.train_config()
    shape = graph.inputs[0].type.shape
    rng = np.random.default_rng(0)
    inp = graph.inputs[0]
    if inp.type.is_float:
        x = rng.random((samples, *shape), dtype=np.float32)
    else:  # token ids, within the vocab of the embedding that reads them
        from dslc.verify import id_limit

        x = rng.integers(0, id_limit(graph, inp.name), (samples, *shape)).astype(
            inp.type.numpy_dtype)
    y = rng.integers(0, graph.type_of(graph.outputs[0]).shape[-1], samples)
    trainer = get_backend("torch").make_trainer(graph, cfg, device, 0,
                                                TrainOptions(precision=precision))
    gen = lambda: trainer.train_epoch(x, y, batch, lambda n, loss: None)  # noqa: E731
    hand_cls = HAND.get(name)
    if hand_cls is None:
        gen()
        rate = statistics.median(timed(gen, samples, device) for _ in range(rounds))
        ROWS.append((name, device, precision, f"{rate:,.0f}", "-", "-"))
        return
    hand = hand_cls()
    weights = init_weights(graph, 0)
    hand.load_state_dict(dict(zip(hand.state_dict(), from_canonical(graph, weights).values(),
                                  strict=True)))
    hand.to(device)
    if device.startswith("cuda"):
        hand.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(hand.parameters(), lr=cfg.optimizer.lr, eps=cfg.optimizer.epsilon)
    xt = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    yt = torch.from_numpy(y)
    if device.startswith("cuda"):
        xt = xt.contiguous(memory_format=torch.channels_last).pin_memory()
        yt = yt.pin_memory()
    hand_fn = lambda: hand_epoch(hand, opt, xt, yt, batch, device, precision)  # noqa: E731
    gen()
    hand_fn()  # warm-up (cuDNN autotuning, allocator)
    g_rates, h_rates, ratios = [], [], []
    for r in range(rounds):
        order = ("gen", "hand") if r % 2 == 0 else ("hand", "gen")
        got = {side: timed(gen if side == "gen" else hand_fn, samples, device) for side in order}
        g_rates.append(got["gen"])
        h_rates.append(got["hand"])
        ratios.append(got["gen"] / got["hand"])
    ROWS.append((name, device, precision, f"{statistics.median(g_rates):,.0f}",
                 f"{statistics.median(h_rates):,.0f}", f"{statistics.median(ratios):.3f}"))


def compile_vs_eager(device: str, samples: int, batch: int, rounds: int) -> list[str]:
    spec = compile_file(ROOT / "specs" / "cnn_mnist.dl")
    graph, cfg = spec.model(), spec.train_config()
    rng = np.random.default_rng(0)
    x = rng.random((samples, *graph.inputs[0].type.shape), dtype=np.float32)
    y = rng.integers(0, 10, samples)
    lines = []
    for compiled in (False, True):
        trainer = get_backend("torch").make_trainer(graph, cfg, device, 0,
                                                    TrainOptions(compile=compiled))

        def epoch(trainer=trainer) -> None:
            trainer.train_epoch(x, y, batch, lambda n, loss: None)

        sync(device)
        t0 = time.perf_counter()
        epoch()  # the first epoch compiles
        sync(device)
        first = time.perf_counter() - t0
        rate = statistics.median(timed(epoch, samples, device) for _ in range(rounds))
        lines.append(f"{'compiled' if compiled else 'eager':<9} first epoch {first:6.1f} s, "
                     f"then {rate:,.0f} samples/s")
    return lines


def ddp(device: str, samples: int, batch: int) -> list[str]:
    """`dslc train --nproc 2` against one process, on an npy copy of synthetic data."""
    lines = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        rng = np.random.default_rng(0)
        np.save(folder / "x.npy", rng.integers(0, 256, (samples, 28, 28), dtype=np.uint8))
        np.save(folder / "y.npy", rng.integers(0, 10, samples))
        text = (ROOT / "specs" / "cnn_mnist.dl").read_text()
        text = text.replace("mnist()", 'npy("x.npy", "y.npy", test=0.1)')
        text = text.replace("augment    = [shift(0.1)]", "")
        (folder / "cnn.dl").write_text(text)
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        for procs in (1, 2):
            out = folder / f"run{procs}"
            command = [sys.executable, "-m", "dslc", "train", str(folder / "cnn.dl"), "--out",
                       str(out), "--device", device, "--epochs", "2", "--batch", str(batch)]
            if procs > 1:
                command += ["--nproc", str(procs)]
            t0 = time.perf_counter()
            done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
            wall = time.perf_counter() - t0
            if done.returncode != 0:
                lines.append(f"{procs} process(es): FAILED\n{done.stderr[-2000:]}")
                continue
            metrics = json.loads((out / "metrics.json").read_text())
            lines.append(f"{procs} process(es): {metrics['final_epoch']['samples_per_s']:,.0f} "
                         f"samples/s (epoch 2), test accuracy "
                         f"{metrics['test']['accuracy']:.3f}, {wall:.0f} s with start-up")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--samples", type=int, default=None, help="samples a round")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--quick", action="store_true", help="a few seconds: check the script runs")
    args = ap.parse_args()
    cuda = args.device.startswith("cuda")
    samples = args.samples or (16384 if cuda else 2048)
    if args.quick:
        samples, args.rounds = 512, 1
    t_start = time.perf_counter()
    print(f"torch {torch.__version__}, device {args.device}"
          + (f" ({torch.cuda.get_device_name()})" if cuda else "")
          + f", {samples} samples a round, batch {args.batch}, {args.rounds} rounds", flush=True)
    precisions = ("fp32", "bf16")
    models = ["cnn_mnist"]
    if (ROOT / "specs" / "transformer_classifier.dl").exists():
        models.append("transformer_classifier")
    else:
        print("specs/transformer_classifier.dl does not exist: the transformer row is skipped")
    for model in models:
        for precision in precisions:
            generated_vs_hand(model, args.device, precision, samples, args.batch, args.rounds)
    head = ("model", "device", "precision", "generated/s", "hand-written/s", "ratio")
    widths = [max(len(r[i]) for r in [head, *ROWS]) for i in range(len(head))]
    print("\ntraining throughput, generated (dslc trainer) vs hand-written PyTorch:")
    for row in [head, *ROWS]:
        print("  " + "  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)))
    print("\ntorch.compile vs eager (cnn_mnist, fp32):", flush=True)
    for line in compile_vs_eager(args.device, samples, args.batch, args.rounds):
        print("  " + line)
    if not args.quick:
        gpus = torch.cuda.device_count() if cuda else 0
        how = ("two GPUs" if gpus >= 2 else "two processes sharing one GPU (gloo)" if cuda
               else "two CPU processes (gloo)")
        print(f"\nDDP, dslc train --nproc 2 ({how}), cnn_mnist, batch {args.batch}:", flush=True)
        for line in ddp(args.device, samples, args.batch):
            print("  " + line)
    print(f"\ntotal {time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
    main()
