"""Training speed: dslc's generated Keras model vs the same network written by hand in Keras
and trained with `model.fit` — same data, batch size, loss and optimizer. The generated model
is timed twice: in dslc's trainer (what `dslc train --backend keras` runs) and in `model.fit`
(the model alone, same training code as the hand-written one).

    python bench/bench_keras.py                      # specs/cnn_mnist.dl, 8,192 samples
    python bench/bench_keras.py --spec specs/mlp_784_256.dl --samples 16384

Data are synthetic arrays of the spec's input shape (the speed does not depend on the
values). Each side first runs one untimed warm-up epoch (tracing), then `--epochs` timed
epochs; the sides take turns `--repeats` times and the best samples/s of each is reported
(the machine may be shared: the best run is the one least disturbed).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dslc.backends import get_backend  # noqa: E402
from dslc.backends.keras.quiet import import_keras  # noqa: E402
from dslc.backends.keras.runtime import load_generated  # noqa: E402
from dslc.compiler import compile_file  # noqa: E402


def hand_written(name: str, keras):
    """The tutorial networks as a Keras user writes them."""
    layers = keras.layers
    if name == "cnn_mnist":
        return keras.Sequential([
            keras.Input((28, 28, 1)),
            layers.Conv2D(32, 3, activation="relu"),
            layers.MaxPooling2D(2),
            layers.Conv2D(64, 3, activation="relu"),
            layers.MaxPooling2D(2),
            layers.Flatten(),
            layers.Dense(128, activation="relu"),
            layers.Dense(10, activation="softmax"),
        ])
    if name == "digits_cnn":
        return keras.Sequential([
            keras.Input((8, 8, 1)),
            layers.Conv2D(32, 3, padding="same", activation="relu"),
            layers.Conv2D(32, 3, activation="relu"),
            layers.MaxPooling2D(2),
            layers.Flatten(),
            layers.Dense(64, activation="relu"),
            layers.Dropout(0.2),
            layers.Dense(10, activation="softmax"),
        ])
    if name in ("mlp_784_256", "mlp_784_64"):
        return keras.Sequential([
            keras.Input((784,)),
            layers.Dense(256 if name == "mlp_784_256" else 64, activation="relu"),
            layers.Dense(10, activation="softmax"),
        ])
    raise SystemExit(f"no hand-written model for `{name}`: use cnn_mnist, digits_cnn, "
                     "mlp_784_256 or mlp_784_64")


def keras_optimizer(keras, opt):
    if opt.name in ("sgd", "gd"):
        return keras.optimizers.SGD(opt.lr, momentum=opt.momentum, nesterov=opt.nesterov)
    if opt.name == "adam":
        return keras.optimizers.Adam(opt.lr, beta_1=opt.beta1, beta_2=opt.beta2,
                                     epsilon=opt.epsilon)
    raise SystemExit(f"bench supports sgd and adam, not {opt.name}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spec", default=str(ROOT / "specs" / "cnn_mnist.dl"))
    ap.add_argument("--samples", type=int, default=8192)
    ap.add_argument("--epochs", type=int, default=1, help="timed epochs per repeat")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batch", type=int, help="default: the spec's batch")
    args = ap.parse_args()

    keras = import_keras()
    import tensorflow as tf

    spec = compile_file(args.spec)
    graph, cfg = spec.model(), spec.train_config()
    batch = args.batch or cfg.batch or args.samples
    classes = graph.type_of(graph.outputs[0]).shape[-1]
    rng = np.random.default_rng(0)
    x = rng.random((args.samples, *graph.inputs[0].type.shape), dtype=np.float32)
    y = rng.integers(0, classes, args.samples)
    if cfg.loss.name != "sparse_categorical_crossentropy":
        raise SystemExit("bench uses integer labels: pick a spec with sparse_categorical_crossentropy")

    trainer = get_backend("keras").make_trainer(graph, cfg, "cpu", 0)

    def dslc_run(epochs: int) -> None:
        for _ in range(epochs):
            trainer.train_epoch(x, y, batch, lambda n, loss: None)

    def fit_runner(model):
        model.compile(optimizer=keras_optimizer(keras, cfg.optimizer),
                      loss="sparse_categorical_crossentropy")

        def run(epochs: int) -> None:
            model.fit(x, y, batch_size=batch, epochs=epochs, shuffle=False, verbose=0)

        return run

    hand = hand_written(graph.name, keras)
    assert hand.count_params() == graph.param_count, "hand-written model differs from the spec"
    generated = load_generated(graph)()
    runs = {
        "dslc": dslc_run,  # generated model in dslc's trainer: what `dslc train` runs
        "generated_fit": fit_runner(generated),  # the generated model in model.fit
        "hand_fit": fit_runner(hand),  # the reference
    }
    for run in runs.values():
        run(1)  # warm-up: tracing
    rates: dict[str, list[float]] = {name: [] for name in runs}
    names = list(runs)
    for i in range(args.repeats):
        for name in names[i % 3:] + names[:i % 3]:  # rotate: no side always runs first
            run = runs[name]
            start = time.perf_counter()
            run(args.epochs)
            rates[name].append(args.samples * args.epochs / (time.perf_counter() - start))
    rate = {name: max(values) for name, values in rates.items()}
    print(f"spec {Path(args.spec).name}, {args.samples} samples, batch {batch}, "
          f"{args.repeats} x {args.epochs} epochs, TensorFlow {tf.__version__}, "
          f"Keras {keras.__version__}")
    print(f"dslc trainer, generated model:   {rate['dslc']:10.0f} samples/s")
    print(f"model.fit, generated model:      {rate['generated_fit']:10.0f} samples/s")
    print(f"model.fit, hand-written model:   {rate['hand_fit']:10.0f} samples/s")
    print(f"ratio dslc trainer / hand fit:   {rate['dslc'] / rate['hand_fit']:10.3f}")
    print(f"ratio generated fit / hand fit:  {rate['generated_fit'] / rate['hand_fit']:10.3f}")


if __name__ == "__main__":
    main()
