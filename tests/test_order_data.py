"""The `order` data source: a sequence task that needs the order of two tokens (attention's
task in specs/order_attention.dl and specs/transformer_classifier.dl.pending)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dslc.data.catalog import SOURCES
from dslc.data.loaders import load_dataset
from dslc.data.sources import Context, order
from dslc.diagnostics import DslError, Span
from dslc.ir.train import DataSource, Loss, Optimizer, TrainConfig

SPAN = Span("spec.dl", 3, 5)


def raw(seed: int = 0, **args):
    return order({**SOURCES["order"].args, **args}, Context(Path("."), seed, SPAN))


def config(**args) -> TrainConfig:
    return TrainConfig(model="m", data=DataSource(kind="order", args=args, span=SPAN),
                       loss=Loss(name="sparse_categorical_crossentropy"),
                       optimizer=Optimizer(name="adam"))


def places(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return (x == 1).argmax(axis=1), (x == 2).argmax(axis=1)


def test_ids_hold_each_marker_once_and_the_label_is_their_order():
    r = raw(n=1000, length=12, vocab=6)
    assert r.x.dtype == np.int64 and r.x.shape == (1000, 12)
    assert r.y.dtype == np.int64
    assert r.x.min() == 1 and r.x.max() == 5  # 0 (padding) never appears
    assert ((r.x == 1).sum(axis=1) == 1).all() and ((r.x == 2).sum(axis=1) == 1).all()
    a, b = places(r.x)
    np.testing.assert_array_equal(r.y, (a < b).astype(np.int64))
    assert r.y.sum() == 500  # balanced


def test_seeded():
    np.testing.assert_array_equal(raw(seed=3).x, raw(seed=3).x)
    np.testing.assert_array_equal(raw(seed=3).y, raw(seed=3).y)
    assert not np.array_equal(raw(seed=3).x, raw(seed=4).x)
    a = load_dataset(config(n=200), (16,), Path("."), 5)
    b = load_dataset(config(n=200), (16,), Path("."), 5)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    np.testing.assert_array_equal(a.y_test, b.y_test)
    assert a.num_classes == 2


def test_a_bag_of_tokens_is_at_chance_the_order_separates():
    sklearn = pytest.importorskip("sklearn.linear_model")
    r = raw(n=4000, length=16, vocab=8)
    bags = np.stack([np.bincount(row, minlength=8) for row in r.x]).astype(np.float64)
    a, b = places(r.x)
    order_feature = (b - a)[:, None].astype(np.float64)
    cut = 3000

    def accuracy(features: np.ndarray) -> float:
        model = sklearn.LogisticRegression(max_iter=1000).fit(features[:cut], r.y[:cut])
        return float(model.score(features[cut:], r.y[cut:]))

    assert accuracy(bags) < 0.56  # both classes hold the same tokens
    assert accuracy(order_feature) > 0.99


def test_one_hot_floats_for_a_model_without_embedding():
    r = raw(n=50, length=10, vocab=5, one_hot=True)
    assert r.x.dtype == np.float32 and r.x.shape == (50, 10, 5)
    assert (r.x.sum(axis=2) == 1).all()
    np.testing.assert_array_equal(r.x.argmax(axis=2), raw(n=50, length=10, vocab=5).x)
    ds = load_dataset(config(n=50, length=10, vocab=5, one_hot=True), (10, 5), Path("."), 0)
    assert ds.x_train.shape == (40, 10, 5)


@pytest.mark.parametrize("args,message", [
    ({"vocab": 3}, "`vocab` must be an integer >= 4"),
    ({"length": 1}, "`length` must be an integer >= 2"),
    ({"one_hot": 1}, "`one_hot` must be true or false"),
])
def test_bad_arguments_are_located_errors(args, message):
    with pytest.raises(DslError) as info:
        raw(**args)
    assert message in str(info.value) and info.value.diagnostics[0].span == SPAN
