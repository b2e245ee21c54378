"""LSTM: dslc's generated PyTorch module (the fused `torch.lstm` kernel) trained by dslc's
trainer against the same model written by hand with `nn.LSTM` and a plain loop; then dslc's
ONNX (the LSTM op) against `torch.onnx.export` of the hand-written model, in onnxruntime.

    python bench/bench_lstm.py [--samples 1024] [--rounds 11] [--batch 64]

Float sequences [50, 32] → lstm(128) → dense(1), mse, Adam. Prints samples/s of both sides
(medians over interleaved rounds) and the ratios generated / hand-written.
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
import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_onnx import interleaved_times, session  # noqa: E402

from dslc.backends import get_backend  # noqa: E402
from dslc.backends.onnx.export import to_model  # noqa: E402
from dslc.compiler import compile_text  # noqa: E402
from dslc.weights import init_weights  # noqa: E402

SPEC = """\
model lstm_bench {
    input seq: f32[50, 32]
    lstm(128)
    dense(1)
}

train lstm_bench {
    data      = sequences(n=64, steps=50)
    loss      = mse
    optimizer = adam(lr=1e-3)
    batch     = 64
    seed      = 0
}
"""


class HandLstm(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(32, 128, batch_first=True)
        self.fc = nn.Linear(128, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, (h, _) = self.lstm(x)
        return self.fc(h[0])


def hand_module(w: dict[str, np.ndarray]) -> HandLstm:
    """The canonical weights in nn.LSTM (same gate order, i f g o; the second bias zero)."""
    m = HandLstm()
    t = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in w.items()}
    with torch.no_grad():
        m.lstm.weight_ih_l0.copy_(t["lstm_1.kernel"].T)
        m.lstm.weight_hh_l0.copy_(t["lstm_1.recurrent_kernel"].T)
        m.lstm.bias_ih_l0.copy_(t["lstm_1.bias"])
        m.lstm.bias_hh_l0.zero_()
        m.fc.weight.copy_(t["dense_1.kernel"].T)
        m.fc.bias.copy_(t["dense_1.bias"])
    return m


def hand_epoch(model, opt, x: torch.Tensor, y: torch.Tensor, batch: int) -> None:
    model.train()
    for start in range(0, len(x), batch):
        xb, yb = x[start:start + batch], y[start:start + batch]
        opt.zero_grad(set_to_none=True)
        F.mse_loss(model(xb), yb).backward()
        opt.step()


def train_speed(graph, cfg, x, y, batch: int, rounds: int) -> tuple[float, float, float]:
    trainer = get_backend("torch").make_trainer(graph, cfg, "cpu", 0)
    trainer.train_epoch(x, y, batch, lambda n, loss: None)  # warm-up; picks the thread count
    hand = hand_module(init_weights(graph, 0))
    opt = torch.optim.Adam(hand.parameters(), lr=cfg.optimizer.lr, eps=cfg.optimizer.epsilon)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    hand_epoch(hand, opt, xt, yt, batch)  # warm-up
    gen, hnd, ratios = [], [], []
    for r in range(rounds):
        timed = {}
        for side in (("gen", "hand") if r % 2 == 0 else ("hand", "gen")):
            t0 = time.perf_counter()
            if side == "gen":
                trainer.train_epoch(x, y, batch, lambda n, loss: None)
            else:
                hand_epoch(hand, opt, xt, yt, batch)
            timed[side] = len(x) / (time.perf_counter() - t0)
        gen.append(timed["gen"])
        hnd.append(timed["hand"])
        ratios.append(timed["gen"] / timed["hand"])
    return statistics.median(gen), statistics.median(hnd), statistics.median(ratios)


def torch_export_bytes(w: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(hand_module(w).eval(), (torch.zeros(1, 50, 32),), buf,
                          input_names=["seq"], output_names=["y"],
                          dynamic_axes={"seq": {0: "batch"}}, opset_version=17, dynamo=False)
    return buf.getvalue()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=1024, help="samples a training round")
    ap.add_argument("--rounds", type=int, default=11, help="timed rounds (after 1 warm-up)")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--onnx-repeats", type=int, default=200)
    args = ap.parse_args()

    spec = compile_text(SPEC, "<lstm_bench>")
    graph, cfg = spec.model(), spec.train_config()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.samples, 50, 32), dtype=np.float32)
    y = rng.standard_normal((args.samples, 1), dtype=np.float32)

    g, h, ratio = train_speed(graph, cfg, x, y, args.batch, args.rounds)
    print(f"lstm(128) over [50, 32]: {args.samples} samples a round, {args.rounds} rounds, "
          f"batch {args.batch}, {torch.get_num_threads()} thread(s), torch {torch.__version__}")
    print(f"training, generated (dslc trainer): {g:,.0f} samples/s")
    print(f"training, hand-written nn.LSTM:     {h:,.0f} samples/s")
    print(f"training ratio (median of per-round ratios): {ratio:.3f}")

    w = init_weights(graph, 0)
    models = {"dslc": to_model(graph, w).SerializeToString(),
              "torch.onnx.export": torch_export_bytes(w)}
    sessions = {k: session(b, 0) for k, b in models.items()}
    xb = x[:args.batch]
    outs = {k: s.run(None, {s.get_inputs()[0].name: xb})[0] for k, s in sessions.items()}
    diff = float(np.abs(outs["dslc"] - outs["torch.onnx.export"]).max())
    one = interleaved_times(sessions, x[:1], args.onnx_repeats, warmup=20)
    many = interleaved_times(sessions, xb, args.onnx_repeats // 4, warmup=5)
    print(f"onnxruntime {__import__('onnxruntime').__version__}, max abs diff {diff:.2e}")
    for k in sessions:
        print(f"{k:<20} b=1 p50 {statistics.median(one[k]) * 1e6:8.0f} us   "
              f"b={args.batch} {args.batch / statistics.median(many[k]):8,.0f} samples/s")
    t1 = statistics.median(one["torch.onnx.export"]) / statistics.median(one["dslc"])
    tb = statistics.median(many["torch.onnx.export"]) / statistics.median(many["dslc"])
    print(f"onnx speed ratio dslc / torch export: batch 1 {t1:.3f}, batch {args.batch} {tb:.3f}")


if __name__ == "__main__":
    main()
