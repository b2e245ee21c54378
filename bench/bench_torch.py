"""Training speed: dslc's generated PyTorch module driven by dslc's trainer, against the same
model written by hand with a plain PyTorch loop — same data, batch size, optimizer, threads,
in one process, rounds interleaved so both see the same machine load.

    python bench/bench_torch.py                          # the tutorial CNN (specs/cnn_mnist.dl)
    python bench/bench_torch.py --model digits_cnn --samples 1437

Prints samples/s of both (medians over rounds) and the ratio generated / hand-written (the
median of each round's ratio).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dslc.backends import get_backend  # noqa: E402
from dslc.backends.torch.weights import from_canonical  # noqa: E402
from dslc.compiler import compile_file  # noqa: E402
from dslc.weights import init_weights  # noqa: E402


class HandCnnMnist(nn.Module):
    """conv32-pool-conv64-pool-flatten-dense128-dense10, as a PyTorch user writes it (NCHW)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3)
        self.conv2 = nn.Conv2d(32, 64, 3)
        self.fc1 = nn.Linear(64 * 5 * 5, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = torch.flatten(x, 1)
        return self.fc2(F.relu(self.fc1(x)))  # logits; CrossEntropyLoss does the softmax


class HandDigitsCnn(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 32, 3)
        self.fc1 = nn.Linear(32 * 3 * 3, 64)
        self.drop = nn.Dropout(0.2)
        self.fc2 = nn.Linear(64, 10)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = torch.flatten(x, 1)
        return self.fc2(self.drop(F.relu(self.fc1(x))))


HAND = {"cnn_mnist": HandCnnMnist, "digits_cnn": HandDigitsCnn}


def hand_epoch(model, opt, x: torch.Tensor, y: torch.Tensor, batch: int) -> float:
    model.train()
    total = 0.0
    for start in range(0, len(x), batch):
        xb, yb = x[start:start + batch], y[start:start + batch]
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(xb), yb)
        loss.backward()
        opt.step()
        total += loss.item() * len(xb)
    return total / len(x)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=sorted(HAND), default="cnn_mnist")
    ap.add_argument("--samples", type=int, default=1024, help="samples a round (one epoch)")
    ap.add_argument("--rounds", type=int, default=21, help="timed rounds (after 1 warm-up)")
    ap.add_argument("--batch", type=int, default=None, help="default: the spec's")
    args = ap.parse_args()

    spec = compile_file(ROOT / "specs" / f"{args.model}.dl")
    graph, cfg = spec.model(), spec.train_config()
    batch = args.batch or cfg.batch
    shape = graph.inputs[0].type.shape
    rng = np.random.default_rng(0)
    x = rng.random((args.samples, *shape), dtype=np.float32)  # channels-last, as dslc takes it
    y = rng.integers(0, 10, args.samples)

    trainer = get_backend("torch").make_trainer(graph, cfg, "cpu", 0)  # the generated module, dslc's loss/optimizer
    trainer.train_epoch(x, y, batch, lambda n, loss: None)  # warm-up; picks the thread count

    torch.manual_seed(0)
    hand = HAND[args.model]()
    weights = init_weights(graph, 0)  # same starting values (speed is compared, not numbers)
    gen_state = from_canonical(graph, weights)
    hand.load_state_dict(dict(zip(hand.state_dict(), gen_state.values(), strict=True)))
    opt = torch.optim.Adam(hand.parameters(), lr=cfg.optimizer.lr, eps=cfg.optimizer.epsilon)
    xt = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))  # NCHW, prepared once
    yt = torch.from_numpy(y)
    hand_epoch(hand, opt, xt, yt, batch)  # warm-up

    # Short rounds, alternating which side goes first, and the ratio taken within each round:
    # a shared machine's load drifts over seconds, so adjacent measurements compare fairly.
    gen_rates, hand_rates, ratios = [], [], []
    for r in range(args.rounds):
        timed = {}
        for side in (("gen", "hand") if r % 2 == 0 else ("hand", "gen")):
            t0 = time.perf_counter()
            if side == "gen":
                trainer.train_epoch(x, y, batch, lambda n, loss: None)
            else:
                hand_epoch(hand, opt, xt, yt, batch)
            timed[side] = args.samples / (time.perf_counter() - t0)
        gen_rates.append(timed["gen"])
        hand_rates.append(timed["hand"])
        ratios.append(timed["gen"] / timed["hand"])
    g, h = statistics.median(gen_rates), statistics.median(hand_rates)
    print(f"model {args.model}: {args.samples} samples a round, {args.rounds} rounds, batch "
          f"{batch}, {torch.get_num_threads()} thread(s), torch {torch.__version__}")
    print(f"generated (dslc trainer): {g:,.0f} samples/s")
    print(f"hand-written PyTorch:     {h:,.0f} samples/s")
    print(f"ratio (median of per-round ratios): {statistics.median(ratios):.3f}")


if __name__ == "__main__":
    main()
