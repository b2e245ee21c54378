"""`dropout` / `recurrent_dropout` on simple_rnn, lstm and gru (Keras's): what the rows of
tests/test_op_matrix.py (inference: the identity) do not show — torch's masks in training, one
per sequence, and that both frameworks train with them."""

from __future__ import annotations

import numpy as np
import pytest

from dslc.compiler import compile_text
from dslc.weights import init_weights

torch = pytest.importorskip("torch")


def model(body: str, inputs: str = "input x: f32[6, 3]"):
    lines = "\n    ".join([*inputs.splitlines(), *body.splitlines()])
    return compile_text(f"model m {{\n    {lines}\n}}\n", "<m>").model()


def _module(body: str):
    from dslc.backends.torch.runtime import instantiate

    graph = model(body)
    return graph, instantiate(graph, init_weights(graph, 0))


def _recorded_dropout(monkeypatch) -> list[tuple[tuple[int, ...], object]]:
    """Every F.dropout call of the generated module: (input shape, the mask it drew)."""
    calls: list[tuple[tuple[int, ...], object]] = []
    real = torch.nn.functional.dropout

    def dropout(x, p=0.5, training=True, inplace=False):
        y = real(x, p, training, inplace)
        calls.append((tuple(x.shape), y))
        return y
    monkeypatch.setattr(torch.nn.functional, "dropout", dropout)
    return calls


@pytest.mark.parametrize("op", ["simple_rnn", "lstm", "gru"])
def test_input_dropout_is_one_mask_per_sequence(op, monkeypatch):
    _, module = _module(f"{op}(4, dropout=0.5, return_sequences=true)")
    calls = _recorded_dropout(monkeypatch)
    x = torch.randn(5, 6, 3)
    module.train()
    got = module(x)
    ((shape, mask),) = calls
    assert shape == (5, 1, 3)  # the same mask at every step
    module.eval()
    torch.testing.assert_close(got, module(x * mask))  # the layer over the dropped inputs
    assert not torch.allclose(got, module(x))


@pytest.mark.parametrize("op,gates", [("simple_rnn", 1), ("lstm", 4), ("gru", 3)])
def test_recurrent_dropout_draws_one_mask_per_gate_and_sequence(op, gates, monkeypatch):
    _, module = _module(f"{op}(4, dropout=0.2, recurrent_dropout=0.5)")
    calls = _recorded_dropout(monkeypatch)
    x = torch.randn(5, 6, 3)
    module.eval()
    inferred = module(x)
    assert calls == []  # inference: the fused kernel, nothing dropped
    module.train()
    trained = module(x)
    assert [shape for shape, _ in calls] == [(gates, 5, 3), (gates, 5, 4)]
    assert not torch.allclose(trained, inferred)


def test_bidirectional_directions_draw_their_own_masks(monkeypatch):
    _, module = _module("lstm(4, dropout=0.3, recurrent_dropout=0.3, bidirectional=concat)")
    calls = _recorded_dropout(monkeypatch)
    module.train()
    module(torch.randn(2, 6, 3))
    assert [shape for shape, _ in calls] == [(4, 2, 3), (4, 2, 4)] * 2


BODY = ("embedding(9, 4, mask_zero=true)\n"
        "gru(6, dropout=0.2, recurrent_dropout=0.2, return_sequences=true)\n"
        "lstm(5, dropout=0.1, recurrent_dropout=0.3, bidirectional=concat, "
        "return_sequences=true)\n"
        "simple_rnn(3, dropout=0.1)\ndense(1)")


def _data(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, 9, size=(32, 7))
    ids[:, 5:] = 0  # padding at the end
    return ids, (ids[:, :5].mean(axis=1, keepdims=True) / 8).astype(np.float32)


def test_torch_trains_with_dropout():
    from dslc.backends.torch.runtime import instantiate

    graph = model(BODY.replace("embedding(9, 4, mask_zero=true)", "dense(4)").replace(
        "simple_rnn(3, dropout=0.1)", "simple_rnn(3, dropout=0.1, recurrent_dropout=0.2)"),
        "input x: f32[7, 2]")
    module = instantiate(graph, init_weights(graph, 0))
    torch.manual_seed(0)
    x = torch.randn(32, 7, 2)
    y = x.mean(dim=(1, 2)).unsqueeze(-1)
    opt = torch.optim.Adam(module.parameters(), lr=0.01)

    def loss() -> float:
        module.eval()
        with torch.no_grad():
            return float(((module(x) - y) ** 2).mean())
    before = loss()
    for _ in range(30):
        module.train()
        opt.zero_grad()
        ((module(x) - y) ** 2).mean().backward()
        opt.step()
    assert loss() < 0.5 * before


def test_keras_trains_with_dropout():
    pytest.importorskip("keras")
    from dslc.backends.keras.runtime import build_model

    graph = model(BODY, "input x: i64[7]")
    keras_model = build_model(graph, "/CPU:0")
    ids, y = _data()
    import keras

    keras_model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
    before = keras_model.evaluate(ids, y, verbose=0)
    keras_model.fit(ids, y, epochs=15, batch_size=32, verbose=0)
    assert keras_model.evaluate(ids, y, verbose=0) < 0.5 * before
