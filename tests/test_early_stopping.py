"""Early stopping with best weights (issue 15, item 2): the rule, its checks, and runs on
torch and keras that stop early, restore the best epoch's weights and resume."""

from __future__ import annotations

import argparse
import csv
import json

import numpy as np
import pytest

from dslc.compiler import compile_text
from dslc.diagnostics import DslError
from dslc.ir.train import EarlyStopping
from dslc.train.early_stopping import Stopper

# the rule -------------------------------------------------------------------------------------


def _run(values, monitor="val_loss", **kw):
    stopper = Stopper(EarlyStopping(monitor=monitor, **kw))
    for epoch, v in enumerate(values, start=1):
        if stopper.update({"epoch": epoch, monitor: v}, lambda e=epoch: {"w": np.full(2, e)}):
            break
    return stopper


def test_stops_after_patience_epochs_without_improvement():
    s = _run([1.0, 0.8, 0.9, 0.85, 0.81, 0.7], patience=3)
    assert s.stopped == {"epoch": 5, "reason": "val_loss has not improved for 3 epochs",
                         "best_epoch": 2, "best": 0.8}
    np.testing.assert_array_equal(s.best_weights["w"], [2, 2])
    assert s.message() == ("early stopping after epoch 5: val_loss has not improved for 3 "
                           "epochs (best val_loss 0.8 at epoch 2); keeping the weights of epoch 2")


def test_improvement_resets_the_count_and_min_delta_counts():
    assert _run([1.0, 0.9, 0.95, 0.8, 0.85, 0.7], patience=2).stopped is None
    s = _run([1.0, 0.95, 0.92, 0.5], patience=2, min_delta=0.1)
    assert s.stopped["epoch"] == 3
    assert s.stopped["reason"] == "val_loss has not improved by more than 0.1 for 2 epochs"


def test_mode_auto_maximises_accuracy_and_mode_overrides():
    s = _run([0.5, 0.6, 0.55, 0.58], monitor="val_accuracy", patience=2)
    assert (s.stopped["epoch"], s.best_epoch, s.best) == (4, 2, 0.6)
    s = _run([0.5, 0.6, 0.7], monitor="loss", patience=1, mode="max")
    assert s.stopped is None and s.best_epoch == 3


def test_without_restore_best_no_weights_are_kept():
    s = _run([1.0, 2.0], patience=1, restore_best=False)
    assert s.stopped["epoch"] == 2 and s.best_weights is None
    assert "keeping" not in s.message()


def test_state_round_trip():
    a = _run([1.0, 0.8, 0.9], patience=3)
    b = Stopper(a.config)
    b.load(json.loads(json.dumps(a.state())), a.best_weights)
    for epoch, v in ((4, 0.95), (5, 0.99)):
        assert a.update({"epoch": epoch, "val_loss": v}, dict) == b.update(
            {"epoch": epoch, "val_loss": v}, dict)
    assert a.stopped == b.stopped and a.stopped["epoch"] == 5


# checks -----------------------------------------------------------------------------------------

HEAD = """model m {
    input x: f32[64]
    dense(10, activation=softmax)
}
train m {
    data      = digits(test=0.2)
    loss      = sparse_categorical_crossentropy
    optimizer = adam
    metrics   = [accuracy]
"""


def _cfg(settings: str):
    return compile_text(HEAD + settings + "\n}\n", "s.dl").train_config()


@pytest.mark.parametrize("setting, message, col", [
    ("early_stopping = true", "early_stopping monitors `val_loss`, but the train block has no "
                              "validation split", 22),
    ("early_stopping = early_stopping(patience=2)", "monitors `val_loss`", 22),
    ("early_stopping = early_stopping(monitor=val_f1)", "cannot monitor `val_f1`", 37),
    ("early_stopping = early_stopping(monitor=loss, patience=0)",
     "early_stopping: `patience` input should be greater than or equal to 1", 51),
    ("early_stopping = early_stopping(monitor=loss, patience=2.5)",
     "`patience` must be a whole number, got `2.5`", 51),
    ("early_stopping = early_stopping(monitor=loss, mode=up)", "`mode` must be `auto`, `min` or "
                                                               "`max`, got `up`", 51),
    ("early_stopping = early_stopping(monitor=loss, restore_best=1)",
     "`restore_best` must be `true` or `false`, got `1`", 51),
    ("early_stopping = early_stopping(monitor=loss, min_delta=-1)",
     "`min_delta` input should be greater than or equal to 0", 51),
    ("early_stopping = early_stopping(monitor=loss, patiense=2)",
     "early_stopping has no argument `patiense`", 51),
    ("early_stopping = stop(patience=2)", "`early_stopping` takes `early_stopping(...)`, `true` or "
                                          "`false`, not `stop`", 22),
    ("early_stopping = 3", "early_stopping must be one of `early_stopping`", 22),
])
def test_bad_early_stopping_is_a_located_error(setting, message, col):
    with pytest.raises(DslError) as info:
        _cfg("    " + setting)
    [d] = info.value.diagnostics
    assert message in d.message
    assert (d.span.line, d.span.col) == (10, col)


def test_forms_and_defaults():
    cfg = _cfg("    validation = 0.1\n    early_stopping = true")
    assert cfg.early_stopping.model_dump(exclude={"span"}) == {
        "monitor": "val_loss", "patience": 3, "min_delta": 0.0, "mode": "auto",
        "restore_best": True}
    assert _cfg("    early_stopping = false").early_stopping is None
    cfg = _cfg("    early_stopping = early_stopping(monitor=accuracy, patience=5, "
               "restore_best=false, mode=max)")
    assert (cfg.early_stopping.monitor, cfg.early_stopping.patience,
            cfg.early_stopping.restore_best, cfg.early_stopping.mode) == ("accuracy", 5, False,
                                                                          "max")


# both backends --------------------------------------------------------------------------------

SPEC = """model tiny {
    input x: f32[8, 8, 1]
    flatten
    dense(8, activation=relu)
    dense(10, activation=softmax)
}
train tiny {
    data       = digits(test=0.2)
    preprocess = [scale(1/16)]
    loss       = sparse_categorical_crossentropy
    optimizer  = adam(lr=0.01)
    metrics    = [accuracy]
    validation = 0.2
    early_stopping = STOPPING
    epochs     = 10
    batch      = 128
    seed       = 3
}
"""
# min_delta above any change of the loss: epoch 1 stays the best on every backend.
NEVER_BETTER = "early_stopping(monitor=loss, min_delta=100, patience=3)"
BACKENDS = ["torch", "keras"]


def _need(backend):
    pytest.importorskip({"torch": "torch", "keras": "tensorflow"}[backend])


def _args(spec, out, backend, **kw):
    base = dict(spec=str(spec), backend=backend, device="cpu", epochs=None, batch=None,
                seed=None, out=str(out), resume=False, model=None, force=True)
    return argparse.Namespace(**{**base, **kw})


def _write(tmp_path, stopping: str):
    spec = tmp_path / "tiny.dl"
    spec.write_text(SPEC.replace("STOPPING", stopping))
    return spec


def _train(spec, out, backend, **kw) -> tuple[list[dict], dict, dict]:
    from dslc.train.run import train_command
    from dslc.weights import read_weights

    assert train_command(_args(spec, out, backend, **kw)) == 0
    with open(out / "history.csv") as f:
        history = list(csv.DictReader(f))
    weights, _ = read_weights(out / "weights.safetensors")
    return history, json.loads((out / "metrics.json").read_text()), weights


def _same(a: dict, b: dict) -> None:
    assert set(a) == set(b)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


@pytest.mark.parametrize("backend", BACKENDS)
def test_stops_early_and_writes_the_best_epochs_weights(tmp_path, capsys, backend):
    _need(backend)
    from dslc.train import outputs

    spec = _write(tmp_path, NEVER_BETTER)
    history, metrics, weights = _train(spec, tmp_path / "run", backend)
    assert len(history) == 4
    stopped = metrics["stopped"]
    assert stopped == {"epoch": 4, "reason": "loss has not improved by more than 100 for 3 epochs",
                       "best_epoch": 1, "best": pytest.approx(float(history[0]["loss"]),
                                                              rel=1e-5)}
    assert metrics["weights_epoch"] == 1 and metrics["epochs"] == 4
    text = capsys.readouterr().out
    assert ("early stopping after epoch 4: loss has not improved by more than 100 for 3 epochs "
            "(best loss") in text
    assert "keeping the weights of epoch 1" in text
    # the weights written are epoch 1's; the checkpoint keeps epoch 4's to resume from
    _, _, one = _train(spec, tmp_path / "one", backend, epochs=1)
    _same(weights, one)
    last, _, _ = outputs.load_checkpoint(tmp_path / "run" / outputs.CHECKPOINT)
    assert any(not np.array_equal(last[k], weights[k]) for k in weights)
    # and the test figures are those of the weights written
    from dslc.train.run import evaluate

    spec_ir = compile_text(spec.read_text(), str(spec))
    report = evaluate(spec_ir, spec_ir.model(), spec_ir.train_config(),
                      str(tmp_path / "run" / "weights.safetensors"), backend, "cpu")
    assert report["loss"] == pytest.approx(metrics["test"]["loss"], rel=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_without_restore_best_the_last_epochs_weights_are_written(tmp_path, backend):
    _need(backend)
    from dslc.train import outputs

    spec = _write(tmp_path, NEVER_BETTER.replace(")", ", restore_best=false)"))
    history, metrics, weights = _train(spec, tmp_path / "run", backend)
    assert metrics["stopped"]["epoch"] == 4 and metrics["weights_epoch"] == 4
    last, _, _ = outputs.load_checkpoint(tmp_path / "run" / outputs.CHECKPOINT)
    _same(weights, last)


@pytest.mark.parametrize("backend", BACKENDS)
def test_restores_the_best_validation_epoch_without_stopping(tmp_path, backend):
    """A rate high enough for val_loss to wander: the weights written are those of the epoch
    with the lowest val_loss, wherever it lies."""
    _need(backend)
    spec = _write(tmp_path, "early_stopping(patience=20)")
    spec.write_text(spec.read_text().replace("adam(lr=0.01)", "adam(lr=0.03)")
                    .replace("epochs     = 10", "epochs     = 6")
                    .replace("batch      = 128", "batch      = 16"))
    history, metrics, weights = _train(spec, tmp_path / "run", backend)
    assert metrics["stopped"] is None and len(history) == 6
    val = [float(r["val_loss"]) for r in history]
    best = int(np.argmin(val)) + 1
    assert metrics["weights_epoch"] == best < 6  # epoch 6 overshoots (0.53 vs 0.42 at 5)
    _, _, again = _train(spec, tmp_path / "short", backend, epochs=best)
    _same(weights, again)


@pytest.mark.parametrize("backend", BACKENDS)
def test_resume_stops_where_the_full_run_stopped(tmp_path, capsys, backend):
    _need(backend)
    spec = _write(tmp_path, NEVER_BETTER)
    full_history, full_metrics, full = _train(spec, tmp_path / "full", backend)
    _train(spec, tmp_path / "split", backend, epochs=2)
    history, metrics, split = _train(spec, tmp_path / "split", backend, resume=True, force=False)
    _same(full, split)
    assert metrics["stopped"] == full_metrics["stopped"]
    assert [r["loss"] for r in history] == [r["loss"] for r in full_history]
    # resuming a run that stopped trains no further, even with more epochs
    capsys.readouterr()
    history, metrics, again = _train(spec, tmp_path / "split", backend, resume=True, force=False,
                                     epochs=20)
    assert len(history) == 4 and metrics["stopped"] == full_metrics["stopped"]
    _same(full, again)
    assert "early stopping after epoch 4" in capsys.readouterr().out
