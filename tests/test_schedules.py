"""Learning-rate schedules (issue 15, item 1): the one framework-free lr sequence, its checks,
its application on torch and keras (the same `lr` column), and reduce_on_plateau across
`--resume`."""

from __future__ import annotations

import argparse
import csv
import math

import numpy as np
import pytest

from dslc.compiler import compile_text
from dslc.diagnostics import DslError
from dslc.ir.train import Schedule
from dslc.train.schedules import LrSchedule, scheduled_lr

HEAD = """model m {
    input x: f32[64]
    dense(16, activation=relu)
    dense(10, activation=softmax)
}
train m {
    data      = digits(test=0.2)
    loss      = sparse_categorical_crossentropy
    optimizer = sgd(lr=0.1)
    metrics   = [accuracy]
"""


def _cfg(settings: str, epochs: int = 10):
    return compile_text(HEAD + settings + f"\n    epochs = {epochs}\n}}\n", "s.dl").train_config()


def _lrs(settings: str, epochs: int, base: float = 0.1) -> list[float]:
    s = _cfg(settings, epochs).schedule
    return [scheduled_lr(s, base, e, epochs) for e in range(epochs)]


# the sequence -------------------------------------------------------------------------------

def _down(pct: float) -> float:
    """one_cycle(max_lr=1) after its peak: cosine from 1 to 1 / 25 / 1e4."""
    return 4e-6 + (1 - 4e-6) * (1 + math.cos(math.pi * pct)) / 2


@pytest.mark.parametrize("settings, epochs, expected", [
    ("schedule = step(every=2, gamma=0.5)", 5, [0.1, 0.1, 0.05, 0.05, 0.025]),
    ("schedule = step(3)", 4, [0.1, 0.1, 0.1, 0.01]),
    ("schedule = exponential(0.5)", 4, [0.1, 0.05, 0.025, 0.0125]),
    ("schedule = cosine", 4, [0.1, 0.1 * (1 + math.cos(math.pi / 4)) / 2, 0.05,
                              0.1 * (1 + math.cos(3 * math.pi / 4)) / 2]),
    ("schedule = cosine(warmup=2, min_lr=0.02)", 4, [0.1 / 3, 0.2 / 3, 0.1, 0.06]),
    ("schedule = one_cycle(max_lr=1.0)", 6, [0.04, 0.52, 1.0, _down(1 / 3), _down(2 / 3), 4e-6]),
    ("schedule = one_cycle", 3, [0.004, 0.1, 4e-7]),
], ids=["step", "step-default-gamma", "exponential", "cosine", "cosine-warmup", "one-cycle",
        "one-cycle-optimizer-lr"])
def test_lr_sequences(settings, epochs, expected):
    assert _lrs(settings, epochs) == pytest.approx(expected, rel=1e-12, abs=0)


def test_the_sequence_equals_pytorchs_schedulers():
    torch = pytest.importorskip("torch")
    cases = [
        ("schedule = step(every=3, gamma=0.3)",
         lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=3, gamma=0.3)),
        ("schedule = exponential(gamma=0.8)",
         lambda o: torch.optim.lr_scheduler.ExponentialLR(o, gamma=0.8)),
        ("schedule = cosine(min_lr=0.001)",
         lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=12, eta_min=0.001)),
    ]
    for settings, make in cases:
        opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
        sched, theirs = make(opt), []
        for _ in range(12):
            theirs.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        assert _lrs(settings, 12) == pytest.approx(theirs, rel=1e-12), settings


def _plateau(values, **kw) -> list[float]:
    sched = LrSchedule(Schedule(name="reduce_on_plateau", monitor="loss", **kw), 1.0, 99)
    out = []
    for epoch, v in enumerate(values):
        out.append(sched.lr(epoch))
        sched.end_epoch({"epoch": epoch + 1, "loss": v})
    return out


def test_reduce_on_plateau():
    flat = [1.0] * 7
    assert _plateau(flat, patience=2, factor=0.5) == [1, 1, 1, 0.5, 0.5, 0.25, 0.25]
    assert _plateau(flat, patience=1, factor=0.5) == [1, 1, 0.5, 0.25, 0.125, 0.0625, 0.03125]
    # cooldown: the epochs right after a drop do not count
    assert _plateau(flat, patience=1, factor=0.5, cooldown=2) == [1, 1, 0.5, 0.5, 0.5, 0.25,
                                                                    0.25]
    assert _plateau(flat, patience=1, factor=0.1, min_lr=0.05) == [1, 1, 0.1, 0.05, 0.05, 0.05,
                                                                     0.05]
    # improving by more than min_delta resets the count
    assert _plateau([5, 4, 3.95, 3.9, 2], patience=2, factor=0.5, min_delta=0.1) == [
        1, 1, 1, 1, 0.5]
    # mode=max, and NaN never improves
    assert _plateau([1, 2, 2, float("nan"), 3], patience=2, factor=0.5, mode="max") == [
        1, 1, 1, 1, 0.5]


def test_reduce_on_plateau_state_round_trip():
    s = Schedule(name="reduce_on_plateau", monitor="loss", patience=2, factor=0.5, cooldown=1)
    a = LrSchedule(s, 1.0, 20)
    for epoch, v in enumerate([3, 2, 2, 2, 2]):
        a.end_epoch({"epoch": epoch + 1, "loss": v})
    b = LrSchedule(s, 1.0, 20)
    b.load(a.state())
    for epoch, v in enumerate([2, 2, 2, 1, 1, 1], start=5):
        assert a.end_epoch({"epoch": epoch, "loss": v}) == b.end_epoch({"epoch": epoch, "loss": v})
        assert a.lr(epoch) == b.lr(epoch)


# checks ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("setting, message, col", [
    ("schedule = cosin", "unknown schedule `cosin`", 16),
    ("schedule = step(gamma=0.5)", "schedule `step` needs `every`", 16),
    ("schedule = step(2, 1.5)", "`gamma` input should be less than or equal to 1", 24),
    ("schedule = step(every=2.5)", "`every` must be a whole number, got `2.5`", 21),
    ("schedule = exponential(gamma=0)", "`gamma` input should be greater than 0", 28),
    ("schedule = cosine(warmpu=2)", "schedule `cosine` has no argument `warmpu`", 23),
    ("schedule = cosine(warmup=12)", "a warmup of 12 epochs leaves none of the 10", 23),
    ("schedule = one_cycle(max_lr=-1)", "`max_lr` input should be greater than 0", 26),
    ("schedule = reduce_on_plateau(monitor=val_acc)", "cannot monitor `val_acc`", 34),
    ("schedule = reduce_on_plateau", "monitors `val_loss`, but the train block has no "
                                     "validation split", 16),
    ("schedule = reduce_on_plateau(monitor=f1)", "cannot monitor `f1`", 34),
    ("schedule = reduce_on_plateau(monitor=loss, factor=1)", "`factor` input should be less", 48),
    ("schedule = reduce_on_plateau(monitor=loss, mode=up)", "`mode` must be `auto`, `min` or "
                                                            "`max`, got `up`", 48),
    ("schedule = 3", "schedule must be one of", 16),
])
def test_bad_schedules_are_located_errors(setting, message, col):
    with pytest.raises(DslError) as info:
        _cfg("    " + setting)
    [d] = info.value.diagnostics
    assert message in d.message
    assert (d.span.line, d.span.col) == (11, col)


def test_hints():
    with pytest.raises(DslError) as info:
        _cfg("    schedule = reduce_on_plateau(monitor=val_acc)")
    assert "did you mean `val_accuracy`?" in info.value.diagnostics[0].hint
    with pytest.raises(DslError) as info:
        _cfg("    schedule = reduce_on_plateau(monitor=f1)")
    assert info.value.diagnostics[0].hint == "add `f1` to `metrics`"
    with pytest.raises(DslError) as info:
        _cfg("    schedule = reduce_on_plateau")
    assert info.value.diagnostics[0].hint == "add `validation = 0.1`, or monitor `loss`"


def test_spans_do_not_change_the_run_digest():
    from dslc.train.run import run_digest

    spec = compile_text(HEAD + "    schedule = step(every=2)\n    epochs = 3\n}\n", "a.dl")
    moved = compile_text(HEAD + "\n\n    schedule   =   step(every=2)\n    epochs = 3\n}\n", "a.dl")
    other = compile_text(HEAD + "    schedule = step(every=3)\n    epochs = 3\n}\n", "a.dl")
    digest = [run_digest(s.model(), s.train_config()) for s in (spec, moved, other)]
    assert digest[0] == digest[1] != digest[2]


# both backends ------------------------------------------------------------------------------

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
    optimizer  = OPTIMIZER
    metrics    = [accuracy]
    validation = 0.2
    schedule   = SCHEDULE
    epochs     = 5
    batch      = 128
    seed       = 3
}
"""
SCHEDULES = ["cosine(warmup=1, min_lr=0.001)", "step(every=2, gamma=0.5)", "exponential(0.7)",
             "one_cycle(max_lr=0.05)",
             # min_delta above any change in the loss: drops every other epoch on any backend
             "reduce_on_plateau(monitor=loss, patience=1, factor=0.5, min_delta=100, cooldown=1)"]
EXPECTED = {"reduce_on_plateau": [0.01, 0.01, 0.005, 0.005, 0.0025]}


def _args(spec, out, backend, **kw):
    base = dict(spec=str(spec), backend=backend, device="cpu", epochs=None, batch=None,
                seed=None, out=str(out), resume=False, model=None, force=True)
    return argparse.Namespace(**{**base, **kw})


def _history(out) -> list[dict]:
    with open(out / "history.csv") as f:
        return list(csv.DictReader(f))


def _backends():
    from dslc.backends import backend_names, get_backend

    out = []
    for name in backend_names(trains=True):
        try:
            get_backend(name).require()
        except DslError:
            continue
        out.append(name)
    return out


@pytest.mark.parametrize("schedule", SCHEDULES, ids=lambda s: s.split("(")[0])
def test_torch_and_keras_follow_the_same_lr_sequence(tmp_path, capsys, schedule):
    from dslc.train.run import train_command

    backends = _backends()
    if len(backends) < 2:
        pytest.skip("needs two trainable backends")
    text = SPEC.replace("SCHEDULE", schedule).replace("OPTIMIZER", "adam(lr=0.01)")
    spec = tmp_path / "tiny.dl"
    spec.write_text(text)
    cfg = compile_text(text, "tiny.dl").train_config()
    name = cfg.schedule.name
    expected = EXPECTED.get(name) or [scheduled_lr(cfg.schedule, 0.01, e, 5) for e in range(5)]
    columns = {}
    for backend in backends:
        assert train_command(_args(spec, tmp_path / backend, backend)) == 0
        columns[backend] = [row["lr"] for row in _history(tmp_path / backend)]
    assert len({tuple(c) for c in columns.values()}) == 1, columns
    assert [float(v) for v in columns[backends[0]]] == pytest.approx(expected, rel=1e-5)
    assert len(set(expected)) > 1


@pytest.mark.parametrize("backend", ["torch", "keras"])
def test_set_lr_reaches_the_optimizer(backend):
    pytest.importorskip({"torch": "torch", "keras": "tensorflow"}[backend])
    from dslc.backends import get_backend

    spec = compile_text(SPEC.replace("SCHEDULE", "exponential(0.5)")
                        .replace("OPTIMIZER", "adamw(lr=0.01)"), "tiny.dl")
    trainer = get_backend(backend).make_trainer(spec.model(), spec.train_config())
    trainer.set_lr(0.00123)
    if backend == "torch":
        assert {g["lr"] for g in trainer.optimizer.param_groups} == {0.00123}
    else:
        assert float(trainer.optimizer.learning_rate.numpy()) == pytest.approx(0.00123, rel=1e-7)


@pytest.mark.parametrize("backend", ["torch", "keras"])
def test_a_vanishing_rate_stops_the_weights(tmp_path, backend):
    """step(every=1, gamma=1e-30) leaves epoch 2 with no step size: the weights after two
    epochs are those after one, so the trainer does use the rate it is given."""
    pytest.importorskip({"torch": "torch", "keras": "tensorflow"}[backend])
    from dslc.backends import get_backend
    from dslc.data.loaders import load_dataset
    from dslc.train.loop import fit
    from dslc.train.progress import Silent
    from dslc.weights import init_weights

    spec = compile_text(SPEC.replace("SCHEDULE", "step(every=1, gamma=1e-30)")
                        .replace("OPTIMIZER", "sgd(lr=0.5)"), "tiny.dl")
    graph, cfg = spec.model(), spec.train_config()
    data = load_dataset(cfg, (8, 8, 1), tmp_path, 3)
    weights = []
    for epochs in (1, 2):
        trainer = get_backend(backend).make_trainer(graph, cfg, "cpu", 3)
        fit(trainer, graph, cfg, data, out=tmp_path / str(epochs), backend=backend,
            epochs=epochs, batch=128, seed=3, progress=Silent())
        weights.append(trainer.get_weights())
    for key in weights[0]:
        np.testing.assert_allclose(weights[1][key], weights[0][key], atol=1e-6, err_msg=key)
    start = init_weights(graph, 3)
    assert max(np.abs(weights[0][k] - start[k]).max() for k in start) > 1e-2  # epoch 1 moved


@pytest.mark.parametrize("backend", ["torch", "keras"])
def test_reduce_on_plateau_survives_resume(tmp_path, capsys, backend):
    pytest.importorskip({"torch": "torch", "keras": "tensorflow"}[backend])
    from dslc.train.run import train_command
    from dslc.weights import read_weights

    spec = tmp_path / "tiny.dl"
    spec.write_text(SPEC.replace("SCHEDULE", SCHEDULES[-1]).replace("OPTIMIZER",
                                                                    "adam(lr=0.01)"))
    assert train_command(_args(spec, tmp_path / "full", backend)) == 0
    assert train_command(_args(spec, tmp_path / "split", backend, epochs=3)) == 0
    assert train_command(_args(spec, tmp_path / "split", backend, resume=True,
                               force=False)) == 0
    text = capsys.readouterr().out
    assert "loss has not improved for 1 epoch: lr 0.005 from epoch 3" in text
    full, split = _history(tmp_path / "full"), _history(tmp_path / "split")
    assert [r["lr"] for r in full] == [r["lr"] for r in split] == [
        "0.01", "0.01", "0.005", "0.005", "0.0025"]
    a, _ = read_weights(tmp_path / "full" / "weights.safetensors")
    b, _ = read_weights(tmp_path / "split" / "weights.safetensors")
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
