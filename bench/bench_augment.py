"""Augmentation runs every epoch on the whole training split: seconds to `shift` 60,000
28x28 images (the test only counts that the Python work does not grow with the images).

    python bench/bench_augment.py [--runs 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dslc.data.augment import augment  # noqa: E402
from dslc.ir.train import Step  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    x = np.random.default_rng(0).random((60000, 28, 28, 1), dtype=np.float32)
    rng = np.random.default_rng(0)
    for name, step in (("shift", Step(name="shift", args={"fraction": 0.1})),
                       ("flip", Step(name="flip", args={})),
                       ("noise", Step(name="noise", args={"std": 0.05}))):
        times = []
        for _ in range(args.runs):
            t = time.perf_counter()
            augment(x, [step], rng)
            times.append(time.perf_counter() - t)
        print(f"| {name} 60,000 x 28x28x1 | best {min(times):.3f} s, "
              f"median {statistics.median(times):.3f} s |")


if __name__ == "__main__":
    main()
