"""`dslc import` on what Keras 3 and tf2onnx produce (issue 14): small Keras models, with
random weights (biases too: tf2onnx drops a bias that is all zeros), converted by
`tf2onnx.convert.from_keras` at opset 17, come back as specs that check and whose weights give
Keras's own outputs (≤ 1e-5) on the same NHWC input — Keras inputs are already NHWC, so the
`Transpose(0, 3, 1, 2)` tf2onnx puts before the first Conv is an axis move the importer
absorbs, and the spec input is the ONNX input unchanged."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")
tf2onnx = pytest.importorskip("tf2onnx")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from dslc.backends import get_backend  # noqa: E402
from dslc.backends.onnx.export import to_model  # noqa: E402
from dslc.backends.onnx.importer import import_model  # noqa: E402
from dslc.cli import main  # noqa: E402
from dslc.compiler import compile_file, compile_text  # noqa: E402
from dslc.diagnostics import DslError  # noqa: E402
from dslc.weights import load_weights  # noqa: E402

ATOL = 1e-5
L = keras.layers


def _randomise(model) -> None:
    rng = np.random.default_rng(0)
    model.set_weights([rng.normal(scale=0.5, size=w.shape).astype(np.float32)
                       for w in model.get_weights()])


def to_onnx(model):
    """`model` through tf2onnx, batch axis left free; the ONNX input is named `x`."""
    shape = tuple(model.inputs[0].shape[1:])
    spec = (tf.TensorSpec((None, *shape), tf.float32, name="x"),)
    proto, _ = tf2onnx.convert.from_keras(model, input_signature=spec, opset=17)
    return proto


def mlp():
    i = keras.Input((6,), name="x")
    h = L.Dense(8, activation="relu")(i)
    h = L.Dropout(0.3)(h)
    return keras.Model(i, L.Dense(3, activation="softmax")(h))


def cnn():
    i = keras.Input((8, 8, 2), name="x")
    h = L.Conv2D(4, 3, padding="same", activation="relu")(i)
    h = L.MaxPooling2D(2)(h)
    h = L.Conv2D(5, 3, activation="relu")(h)
    h = L.Flatten()(h)
    return keras.Model(i, L.Dense(3)(h))


def residual():
    i = keras.Input((8, 8, 3), name="x")
    a = L.Conv2D(3, 3, padding="same", activation="relu")(i)
    h = L.Add()([a, i])
    h = L.AveragePooling2D(2)(h)
    h = L.GlobalAveragePooling2D()(h)
    return keras.Model(i, L.Dense(2)(h))


def branches():
    i = keras.Input((8, 8, 3), name="x")
    a = L.Conv2D(4, 3, strides=2, padding="same", activation="tanh")(i)
    b = L.Conv2D(2, (3, 1), padding="same", activation="sigmoid")(a)
    h = L.Concatenate()([a, b])
    h = L.GlobalMaxPooling2D()(h)
    h = L.Dense(5, activation="elu")(h)
    h = L.LeakyReLU(0.1)(h)
    return keras.Model(i, L.Dense(2)(h))


@pytest.mark.parametrize("build", [mlp, cnn, residual, branches])
def test_keras_models_import_with_keras_outputs(build):
    keras.utils.set_random_seed(0)
    model = build()
    _randomise(model)
    proto = to_onnx(model)
    imported = import_model(proto, "keras.onnx")
    (b,), (out,) = imported.inputs, imported.outputs
    assert b.onnx == "x"
    x = np.random.default_rng(1).normal(size=(3, *model.inputs[0].shape[1:])).astype(np.float32)
    want = np.asarray(model(x))
    # NHWC in Keras, ONNX and the spec alike: no axis move on the way in.
    assert np.array_equal(b.to_spec(x), x)
    # The spec as written checks, with Keras's parameter count.
    graph = compile_text(imported.text, "again.dl").model()
    assert graph.param_count == model.count_params()
    # The reference backend on the imported weights…
    ref = get_backend("reference").build(imported.graph, imported.weights).predict_all([x])
    np.testing.assert_allclose(out.to_onnx(ref[0]), want, rtol=0, atol=ATOL)
    # …and the spec exported again to ONNX.
    again = to_model(imported.graph, imported.weights)
    onnx.checker.check_model(again)
    session = ort.InferenceSession(again.SerializeToString(), providers=["CPUExecutionProvider"])
    got = out.to_onnx(session.run(None, {b.name: x})[0])
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=0, atol=ATOL)


def test_the_command_on_a_keras_cnn(tmp_path, capsys):
    keras.utils.set_random_seed(0)
    model = cnn()
    _randomise(model)
    path = tmp_path / "cnn.onnx"
    path.write_bytes(to_onnx(model).SerializeToString())
    spec = tmp_path / "cnn.dl"
    assert main(["import", str(path), "-o", str(spec)]) == 0
    assert main(["check", str(spec)]) == 0
    assert f"total params: {model.count_params()}" in capsys.readouterr().out
    load_weights(tmp_path / "cnn.safetensors", compile_file(spec).model())


def test_batch_normalisation_is_a_located_error():
    """dslc has no batch normalisation; after an activation tf2onnx writes Keras's
    BatchNormalization as a Mul and an Add of constants, which the importer names."""
    keras.utils.set_random_seed(0)
    i = keras.Input((6,), name="x")
    h = L.Dense(4, activation="relu")(i)
    model = keras.Model(i, L.BatchNormalization()(h))
    with pytest.raises(DslError, match=r"keras\.onnx: node \d+ `.*batch_normalization.*` \(Mul\)"):
        import_model(to_onnx(model), "keras.onnx")
