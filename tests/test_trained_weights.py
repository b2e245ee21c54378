"""Weights trained on one backend evaluate identically on every other (issue 10): for rows of
the op matrix with parameters, a few real optimizer steps through each training backend's
`Trainer`, the canonical weights it gives back saved to safetensors and read again, then every
runnable backend (and the trainer itself, through `build`) gives the trainer's own `predict`
within the matrix's forward tolerance. This holds the weight adapters to the parameters as
training leaves them — the moving statistics of batch_norm included — where the matrix only
ever loads the canonical arrays it made itself.

By default one row per op and set of its parameters (the first in `CASES` whose graph has
it), on both trainers; `DSLC_TRAINED_SWEEP=1` runs every row with parameters (several minutes;
rows with several inputs there train on keras only, as the torch trainer takes one). Rows
with several outputs are left out: a trainer fits one output.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import test_op_matrix as matrix
from test_op_matrix import CASES, FORWARD_ATOL, Case, _installed, graph_of

from dslc.backends import backend_names
from dslc.diagnostics import DslError
from dslc.ir.graph import Graph
from dslc.ir.train import DataSource, Loss, Optimizer, TrainConfig
from dslc.verify import seeded_batch
from dslc.weights import load_weights, save_weights

RUNNERS = backend_names(runs=True)
TRAINERS = backend_names(trains=True)
SAMPLES, BATCH, EPOCHS = 8, 4, 2  # four optimizer steps
# Adam moves every parameter with a non-zero gradient by about lr on its first step, however
# small that gradient: a parameter the adapters drop or misplace cannot hide behind a tiny change.
CONFIG = TrainConfig(model="m", data=DataSource(kind="npy"), loss=Loss(name="mse"),
                     optimizer=Optimizer(name="adam", lr=0.01), batch=BATCH, epochs=EPOCHS,
                     shuffle=False)


def _trained_rows() -> list[Case]:
    """Rows with parameters whose one output is float: what a trainer fits (it trains the
    first output only)."""
    return [c for c in CASES if graph_of(c).param_specs() and len(graph_of(c).outputs) == 1
            and graph_of(c).type_of(graph_of(c).outputs[0]).is_float]


def _layers_with_params(graph: Graph) -> list[tuple[str, tuple[tuple[str, int], ...]]]:
    """Each layer with parameters as (op, its parameters' names and ranks): `use_bias=false`,
    `scale=false` or gru's `reset_after=false` give the weight adapters another set."""
    specs = graph.param_specs()
    layers = [(n.op, tuple(sorted((k.removeprefix(f"{n.name}."), len(p.shape))
                                  for k, p in specs.items() if k.startswith(f"{n.name}."))))
              for n in graph.nodes]
    return [(op, params) for op, params in layers if params]


def _first_row_per_op() -> list[Case]:
    """The first row using each op with each set of its parameters, among rows every trainer
    takes (one input: the torch trainer refuses more)."""
    rows: dict[tuple, Case] = {}
    for c in _trained_rows():
        if len(graph_of(c).inputs) == 1:
            for layer in _layers_with_params(graph_of(c)):
                rows.setdefault(layer, c)
    return list(dict.fromkeys(rows.values()))


ROWS = _trained_rows() if os.environ.get("DSLC_TRAINED_SWEEP") else _first_row_per_op()


def _data(c: Case) -> list[np.ndarray]:
    """Training inputs: other samples than the matrix's batch, shifted as the row asks."""
    return [x + np.float32(c.shift) if x.dtype == np.float32 else x
            for x in seeded_batch(graph_of(c), SAMPLES, seed=7)]


def _feed(xs) -> np.ndarray | list[np.ndarray]:
    return xs[0] if len(xs) == 1 else list(xs)


def test_every_op_with_parameters_has_a_row():
    def ops(rows: list[Case]) -> set[str]:
        return {op for c in rows for op, _ in _layers_with_params(graph_of(c))}

    assert ops([c for c in CASES if graph_of(c).param_specs()]) == ops(_first_row_per_op())


@pytest.mark.parametrize("c", ROWS, ids=[c.id for c in ROWS])
@pytest.mark.parametrize("trainer_name", TRAINERS)
def test_trained_weights_evaluate_identically_everywhere(trainer_name, c, tmp_path):
    backend = _installed(trainer_name)
    graph = graph_of(c)
    try:
        trainer = backend.make_trainer(graph, CONFIG, "cpu", 0)
    except DslError as exc:  # e.g. the torch trainer takes one input only
        pytest.skip(f"{trainer_name} does not train this row: {exc}")
    start = matrix._weights(c)
    trainer.set_weights(start)
    xs = _data(c)
    shape = trainer.predict(_feed(xs)).shape
    target = np.random.default_rng(9).standard_normal(shape).astype(np.float32)
    losses: list[float] = []
    for epoch in range(EPOCHS):
        trainer.begin_epoch(epoch)
        trainer.train_epoch(_feed(xs), target, BATCH, lambda n, loss: losses.append(loss))
    assert len(losses) == EPOCHS * SAMPLES // BATCH and np.isfinite(losses).all()

    trained = trainer.get_weights()
    specs = graph.param_specs()
    assert set(trained) == set(specs)
    for key, p in specs.items():
        assert trained[key].dtype == np.float32 and trained[key].shape == p.shape, key
    still = [k for k in specs if np.array_equal(trained[k], start[k])]
    if still:  # only a parameter without a gradient may stay put (a recurrent kernel over one
        # step multiplies the zero initial state; EXACT_ZERO's gradient is rounding)
        grads = backend.gradients(graph, start, xs, [target])
        assert [k for k in still if np.any(grads[k]) and not k.endswith(matrix.EXACT_ZERO)] == [], \
            "did not change in training"

    path = tmp_path / "w.safetensors"
    save_weights(path, trained)
    weights = load_weights(path, graph)
    assert all(np.array_equal(weights[k], trained[k]) for k in specs)

    x = _feed(matrix._batch(c))
    want = np.asarray(trainer.predict(x), dtype=np.float64)
    for name in RUNNERS:
        got = np.asarray(_installed(name).build(graph, weights).predict(x), dtype=np.float64)
        assert got.shape == want.shape, name
        diff = float(np.abs(got - want).max())
        assert diff <= FORWARD_ATOL, f"{name}: max abs diff {diff:.3e} from {trainer_name}"

