"""Training speed: dslc's generated Keras model in dslc's trainer vs the same network written
by hand in Keras and trained with `model.fit` — same data, batch size, loss and optimizer.

    python bench/bench_keras.py                      # specs/cnn_mnist.dl, 8,192 samples
    python bench/bench_keras.py --spec specs/mlp_784_256.dl --samples 16384

Data are synthetic arrays of the spec's input shape (the speed does not depend on the
values). Each side first runs one untimed warm-up epoch (tracing), then `--epochs` timed
epochs; the two sides alternate `--repeats` times and the median samples/s is reported.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dslc.backends.keras import make_trainer  # noqa: E402
from dslc.backends.keras.quiet import import_keras  # noqa: E402
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
    ap.add_argument("--epochs", type=int, default=2, help="timed epochs per repeat")
    ap.add_argument("--repeats", type=int, default=3)
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

    trainer = make_trainer(graph, cfg, "cpu", 0)

    def dslc_run(epochs: int) -> None:
        for _ in range(epochs):
            trainer.train_epoch(x, y, batch, lambda n, loss: None)

    model = hand_written(graph.name, keras)
    model.compile(optimizer=keras_optimizer(keras, cfg.optimizer),
                  loss="sparse_categorical_crossentropy")

    def fit_run(epochs: int) -> None:
        model.fit(x, y, batch_size=batch, epochs=epochs, shuffle=False, verbose=0)

    assert model.count_params() == graph.param_count, "hand-written model differs from the spec"
    dslc_run(1)
    fit_run(1)  # warm-up: tracing
    rates: dict[str, list[float]] = {"dslc": [], "fit": []}
    for _ in range(args.repeats):
        for name, run in (("dslc", dslc_run), ("fit", fit_run)):
            start = time.perf_counter()
            run(args.epochs)
            rates[name].append(args.samples * args.epochs / (time.perf_counter() - start))
    dslc_rate, fit_rate = statistics.median(rates["dslc"]), statistics.median(rates["fit"])
    print(f"spec {Path(args.spec).name}, {args.samples} samples, batch {batch}, "
          f"TensorFlow {tf.__version__}, Keras {keras.__version__}")
    print(f"dslc generated model + trainer: {dslc_rate:10.0f} samples/s")
    print(f"hand-written keras + model.fit: {fit_rate:10.0f} samples/s")
    print(f"ratio dslc / fit:               {dslc_rate / fit_rate:10.3f}")


if __name__ == "__main__":
    main()
