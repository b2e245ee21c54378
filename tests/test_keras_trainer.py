"""The Keras trainer in-process: its losses equal the shared numpy reference, its optimizer
steps equal PyTorch's from the same weights on the same batches, full batch, state for
--resume, a softmax seen through a dropout."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from dslc.backends import get_backend  # noqa: E402
from dslc.backends.keras.quiet import import_keras  # noqa: E402
from dslc.backends.keras.trainer import make_loss  # noqa: E402
from dslc.compiler import compile_text  # noqa: E402
from dslc.ir.train import Loss  # noqa: E402
from dslc.train.metrics import numpy_loss  # noqa: E402
from dslc.train.targets import shape_targets  # noqa: E402
from dslc.weights import init_weights  # noqa: E402


def _spec(model: str, train: str):
    spec = compile_text(f"model m {{\n{model}\n}}\ntrain m {{\n data = digits(test=0.2)\n"
                        f"{train}\n}}\n", "case.dl")
    return spec.model(), spec.train_config()


keras = get_backend("keras")
MLP = "input x: f32[64]\n dense(16, activation=relu)\n dense(10, activation=softmax)"
rng = np.random.default_rng(0)
X = rng.normal(size=(40, 64)).astype(np.float32)
LABELS = rng.integers(0, 10, 40)


@pytest.mark.parametrize("loss, pred, y", [
    (Loss(name="mse"), rng.normal(size=(6, 2)), rng.normal(size=(6, 2))),
    (Loss(name="mae"), rng.normal(size=(6, 1)), rng.normal(size=(6,))),
    (Loss(name="binary_crossentropy"), rng.random((6, 1)), rng.integers(0, 2, 6)),
    (Loss(name="binary_crossentropy", label_smoothing=0.1), rng.random((6, 1)),
     rng.integers(0, 2, 6)),
    (Loss(name="binary_crossentropy", from_logits=True), rng.normal(size=(6, 1)) * 4,
     rng.integers(0, 2, 6)),
    (Loss(name="categorical_crossentropy", label_smoothing=0.2),
     rng.dirichlet(np.ones(4), 6), np.eye(4)[rng.integers(0, 4, 6)]),
    (Loss(name="sparse_categorical_crossentropy"), rng.dirichlet(np.ones(4), 6),
     rng.integers(0, 4, 6)),
    (Loss(name="sparse_categorical_crossentropy", label_smoothing=0.1),
     rng.dirichlet(np.ones(4), 6), rng.integers(0, 4, 6)),
    (Loss(name="sparse_categorical_crossentropy", from_logits=True),
     rng.normal(size=(6, 4)) * 3, rng.integers(0, 4, 6)),
], ids=lambda v: v.name + ("_ls" if v.label_smoothing else "") + ("_logits" if v.from_logits
                                                                 else "")
    if isinstance(v, Loss) else "")
def test_loss_equals_the_shared_numpy_loss(loss, pred, y):
    keras = import_keras()
    pred = pred.astype(np.float32)
    fn = make_loss(keras, loss, pred.shape[-1])
    targets = shape_targets(y, loss, pred.shape[1:])
    got = float(fn(targets, pred))
    assert got == pytest.approx(numpy_loss(loss, y, pred), abs=1e-5)


def _torch_steps(graph, cfg, weights, batch):
    trainer = get_backend("torch").make_trainer(graph, cfg, "cpu", 0)
    trainer.set_weights(weights)
    losses = []
    trainer.train_epoch(X, LABELS, batch, lambda n, loss: losses.append(loss))
    return trainer.get_weights(), losses


@pytest.mark.parametrize("optimizer, tol", [
    ("sgd(lr=0.1)", 1e-5),
    ("sgd(lr=0.05, momentum=0.9, nesterov=true, weight_decay=0.01)", 1e-5),
    ("gd(lr=0.5)", 1e-5),
    # Adam's epsilon enters after the bias correction in PyTorch, before it in Keras: the
    # two differ where a gradient is near zero (epsilon dominates), so only closely.
    ("adam(lr=0.01)", 1e-3),
])
def test_steps_equal_torch_from_the_same_weights(optimizer, tol):
    pytest.importorskip("torch")
    batch = None if optimizer.startswith("gd") else 8
    graph, cfg = _spec(MLP, f" loss = sparse_categorical_crossentropy\n optimizer = {optimizer}")
    weights = init_weights(graph, 5)
    trainer = keras.make_trainer(graph, cfg, "cpu", 0)
    trainer.set_weights(weights)
    losses = []
    mean = trainer.train_epoch(X, LABELS, batch, lambda n, loss: losses.append(loss))
    want, want_losses = _torch_steps(graph, cfg, weights, batch)
    assert len(losses) == (1 if batch is None else 5)
    np.testing.assert_allclose(losses, want_losses, atol=tol)
    assert mean == pytest.approx(np.mean(losses), abs=1e-6)
    got = trainer.get_weights()
    for key in want:
        np.testing.assert_allclose(got[key], want[key], atol=tol, err_msg=key)


def test_optimizer_state_round_trip_continues_identically():
    graph, cfg = _spec(MLP, " loss = sparse_categorical_crossentropy\n optimizer = adam(lr=0.01)")
    a = keras.make_trainer(graph, cfg, "cpu", 0)
    a.train_epoch(X, LABELS, 8, lambda n, loss: None)
    state, weights = a.optimizer_state(), a.get_weights()
    assert int(state["iteration"]) == 5
    assert {"dense_1.kernel.momentum", "dense_2.bias.velocity"} <= set(state)
    assert not any("learning_rate" in k for k in state)
    b = keras.make_trainer(graph, cfg, "cpu", 1)
    b.set_weights(weights)
    b.set_optimizer_state({k: v.reshape(-1) if v.ndim == 0 else v for k, v in state.items()})
    a.train_epoch(X, LABELS, 8, lambda n, loss: None)
    b.train_epoch(X, LABELS, 8, lambda n, loss: None)
    for key, value in a.get_weights().items():
        np.testing.assert_array_equal(b.get_weights()[key], value)


def test_optimizer_state_of_another_optimizer_is_a_user_error():
    from dslc.diagnostics import DslError

    graph, cfg = _spec(MLP, " loss = sparse_categorical_crossentropy\n optimizer = adam")
    _, sgd_cfg = _spec(MLP, " loss = sparse_categorical_crossentropy\n optimizer = sgd")
    state = keras.make_trainer(graph, sgd_cfg, "cpu", 0).optimizer_state()
    with pytest.raises(DslError, match="optimizer state does not fit"):
        keras.make_trainer(graph, cfg, "cpu", 0).set_optimizer_state(state)


def test_dropout_masks_follow_the_epoch_seed():
    graph, cfg = _spec("input x: f32[64]\n dense(32, activation=relu)\n dropout(0.5)\n"
                       " dense(10, activation=softmax)",
                       " loss = sparse_categorical_crossentropy\n optimizer = sgd(lr=0.1)")
    runs = []
    for epoch in (3, 3, 4):
        t = keras.make_trainer(graph, cfg, "cpu", 0)
        t.begin_epoch(epoch)
        t.train_epoch(X, LABELS, 8, lambda n, loss: None)
        runs.append(t.get_weights()["dense_1.kernel"])
    np.testing.assert_array_equal(runs[0], runs[1])
    assert not np.allclose(runs[0], runs[2])


def test_softmax_then_dropout_trains(tmp_path):
    """The output ends in the softmax, seen through the dropout: the spec is accepted with
    sparse_categorical_crossentropy and trains (issue 9's regression)."""
    from dslc.compiler import compile_file
    from dslc.data.loaders import load_dataset
    from dslc.train.loop import fit
    from dslc.train.progress import Silent

    np.save(tmp_path / "x.npy", X)
    np.save(tmp_path / "y.npy", LABELS % 3)
    (tmp_path / "drop.dl").write_text(
        "model drop {\n input x: f32[64]\n dense(3, activation=softmax)\n dropout(0.5)\n}\n"
        "train drop {\n data = npy(\"x.npy\", \"y.npy\", test=0.25)\n"
        " loss = sparse_categorical_crossentropy\n optimizer = adam(lr=0.01)\n epochs = 2\n"
        " batch = 8\n}\n", encoding="utf-8")
    spec = compile_file(tmp_path / "drop.dl")
    graph, cfg = spec.model(), spec.train_config()
    data = load_dataset(cfg, graph.inputs[0].type.shape, tmp_path, cfg.seed)
    trainer = keras.make_trainer(graph, cfg, "cpu", cfg.seed)
    run = fit(trainer, graph, cfg, data, out=tmp_path / "run", backend="keras", epochs=2,
              batch=8, seed=cfg.seed, progress=Silent())
    assert len(run.history) == 2
    assert all(np.isfinite(row["loss"]) for row in run.history)
    pred = trainer.predict(data.x_test)
    np.testing.assert_allclose(pred.sum(axis=1), 1.0, atol=1e-5)  # inference: no dropout
