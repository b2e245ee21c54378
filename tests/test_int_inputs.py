"""Integer (and bool) inputs: declared dtypes, which ops take them, and ids carried unchanged
through every backend, `dslc run`'s input files, `verify`'s seeded batch and the data
pipeline. The numbers of `embedding` on every backend are the op matrix's rows."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

from dslc.backends import get_backend
from dslc.backends.onnx.inputs import Port, Signature, read_input
from dslc.compiler import compile_text
from dslc.diagnostics import DslError
from dslc.ir.graph import NUMPY_DTYPES
from dslc.verify import seeded_batch
from dslc.weights import init_weights

EMBED = """
model tagger {
    input tokens: %s[6]
    embedding(12, 4)
    flatten
    dense(3, activation=softmax)
}
"""


def graph_of(dtype: str = "i64"):
    return compile_text(EMBED % dtype, "<tagger>").model()


def errors(text: str) -> list[str]:
    with pytest.raises(DslError) as info:
        compile_text(text, "<m>")
    return [f"{d.message} | {d.hint}" for d in info.value.diagnostics]


@pytest.mark.parametrize("dtype,ir", [("i32", "i32"), ("int32", "i32"), ("i64", "i64"),
                                      ("int64", "i64")])
def test_integer_dtypes_are_declared(dtype, ir):
    graph = graph_of(dtype)
    assert graph.inputs[0].type.dtype == ir
    assert graph.inputs[0].type.numpy_dtype == NUMPY_DTYPES[ir]
    assert graph.type_of(graph.nodes[0].name).dtype == "f32"  # vectors out


def test_a_float_op_refuses_ids_with_the_embedding_hint():
    (msg,) = errors("model m {\n input tokens: i64[7]\n dense(3)\n}\n")
    assert msg == ("dense takes float values, `tokens` is i64 | map token ids to vectors with "
                   "`embedding(vocab, dim)` first")


def test_embedding_refuses_floats_and_bools():
    (msg,) = errors("model m {\n input x: f32[7]\n embedding(10, 3)\n}\n")
    assert msg.startswith("embedding takes i32 or i64 values, `x` is f32 | declare `x` as "
                          "integer ids")
    (msg,) = errors("model m {\n input x: bool[7]\n embedding(10, 3)\n}\n")
    assert "`x` is bool" in msg


def test_unknown_dtype_lists_the_integer_ones():
    (msg,) = errors("model m {\n input x: i16[7]\n embedding(10, 3)\n}\n")
    assert "unknown dtype `i16`" in msg and "i64" in msg


def test_seeded_ids_stay_below_the_vocabulary_and_include_padding():
    graph = graph_of()
    (ids,) = seeded_batch(graph, 8, seed=4)
    assert ids.dtype == np.int64 and ids.shape == (8, 6)
    assert ids.min() >= 0 and ids.max() < 12
    assert (ids == 0).any() and (ids[:, -1] == 0).any()  # padding at the ends
    (ids32,) = seeded_batch(graph_of("i32"), 3, seed=0)
    assert ids32.dtype == np.int32


def test_reference_raises_on_an_id_out_of_range():
    graph = graph_of()
    runtime = get_backend("reference").build(graph, init_weights(graph, 0))
    with pytest.raises(DslError, match=r"id 12 is out of range for vocab 12"):
        runtime.predict(np.full((1, 6), 12))
    with pytest.raises(DslError, match=r"id -1 is out of range"):
        runtime.predict(np.full((1, 6), -1))
    with pytest.raises(DslError, match="non-integral"):
        runtime.predict(np.full((1, 6), 1.5))
    assert runtime.predict(np.ones((1, 6))).shape == (1, 3)  # whole floats are ids


@pytest.mark.parametrize("name", ["torch", "keras", "onnx"])
def test_frameworks_take_ids_as_integers(name):
    """Each framework gets the ids in the declared dtype (never cast to float): ids above
    2**24 would not survive a float32 round trip, and float ids fail in torch's Embedding."""
    backend = get_backend(name)
    try:
        backend.require()
    except DslError as exc:
        pytest.skip(str(exc))
    text = "model big {\n input tokens: i64[3]\n embedding(16777218, 1)\n}\n"
    graph = compile_text(text, "<big>").model()
    table = np.zeros((16_777_218, 1), np.float32)
    ids = np.array([[16_777_217, 5, 3]])  # 2**24 + 1 rounds to 2**24 in float32
    table[ids[0], 0] = [1.0, 2.0, 3.0]
    y = backend.build(graph, {"embedding_1.embeddings": table}).predict(ids)
    assert y.reshape(-1).tolist() == [1.0, 2.0, 3.0]


def test_onnx_inputs_carry_the_element_type():
    onnx = pytest.importorskip("onnx")
    from dslc.backends.onnx.export import to_model
    from dslc.backends.onnx.metadata import META_INPUT_DTYPES, model_metadata

    for dtype, elem in (("i32", onnx.TensorProto.INT32), ("i64", onnx.TensorProto.INT64)):
        graph = graph_of(dtype)
        model = to_model(graph, init_weights(graph, 0))
        assert model.graph.input[0].type.tensor_type.elem_type == elem
        assert model.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
        assert json.loads(model_metadata(None, graph)[META_INPUT_DTYPES]) == {"tokens": dtype}
    assert META_INPUT_DTYPES not in model_metadata(None, compile_text(
        "model f {\n input x: f32[2]\n dense(1)\n}\n", "<f>").model())


# -- dslc run's input files --------------------------------------------------------------------

SIG = Signature([Port("tokens", ("batch", 4), "int64")], [Port("y", ("batch", 3), "float32")])


def test_run_casts_whole_numbers_to_the_ids_dtype(tmp_path):
    np.save(tmp_path / "ids.npy", np.array([[1.0, 2.0, 0.0, 0.0]], np.float32))
    (tmp_path / "ids.csv").write_text("1,2,3,0\n4,5,0,0\n")
    x = read_input(tmp_path / "ids.npy", SIG)["tokens"]
    assert x.dtype == np.int64 and x.tolist() == [[1, 2, 0, 0]]
    x = read_input(tmp_path / "ids.csv", SIG)["tokens"]
    assert x.dtype == np.int64 and x.tolist() == [[1, 2, 3, 0], [4, 5, 0, 0]]
    np.save(tmp_path / "i32.npy", np.array([7, 0, 0, 0], np.int32))  # one sample, no batch
    assert read_input(tmp_path / "i32.npy", SIG)["tokens"].tolist() == [[7, 0, 0, 0]]


def test_run_refuses_fractional_ids(tmp_path):
    np.save(tmp_path / "ids.npy", np.array([[1.0, 2.5, 0.0, 0.0]]))
    with pytest.raises(DslError, match=r"takes whole numbers \(int64 ids\), got 2.5"):
        read_input(tmp_path / "ids.npy", SIG)
    np.save(tmp_path / "big.npy", np.array([[1.0, 2.0**70, 0.0, 0.0]]))
    with pytest.raises(DslError, match="is int64, got values"):
        read_input(tmp_path / "big.npy", SIG)


def test_run_refuses_negative_ids(tmp_path):
    # ONNX's Gather would count -1 from the end of the table: a number, not an error
    np.save(tmp_path / "neg.npy", np.array([[1, 2, -1, 0]], np.int64))
    with pytest.raises(DslError, match=r"takes ids 0 or more, got -1 at index \[0, 2\]"):
        read_input(tmp_path / "neg.npy", SIG)


def test_run_names_the_vocabulary_an_id_is_outside(tmp_path, capsys):
    """onnxruntime's Gather says only "indices element out of data bounds"; `dslc run` reads
    each integer input's bound from the metadata (`dslc.id_limits`) and names the layer."""
    pytest.importorskip("onnxruntime")
    from dslc.backends.onnx.export import export
    from dslc.backends.onnx.metadata import META_ID_LIMITS, model_metadata
    from dslc.cli import main

    text = ("model pe {\n input tokens: i64[?]\n a = embedding(tokens, 20, 8)\n"
            " b = embedding(tokens, 12, 8)\n output dense(global_avgpool1d(add(a, b)), 3)\n}\n")
    spec = compile_text(text, str(tmp_path / "pe.dl"))
    graph = spec.model()
    assert json.loads(model_metadata(spec, graph)[META_ID_LIMITS]) == \
        {"tokens": {"limit": 12, "layer": "b"}}  # the smaller vocabulary bounds the input
    model = tmp_path / "pe.onnx"
    export(spec, graph, init_weights(graph, 0), model)
    np.save(tmp_path / "ok.npy", np.array([[1, 11, 0]], np.int64))
    np.save(tmp_path / "bad.npy", np.array([[1, 2, 3], [4, 12, 0]], np.int64))
    assert main(["run", str(model), "--input", str(tmp_path / "ok.npy")]) == 0
    capsys.readouterr()
    assert main(["run", str(model), "--input", str(tmp_path / "bad.npy")]) == 2
    err = capsys.readouterr().err
    assert "input `tokens` takes ids below 12 (the vocabulary of layer `b`), got 12 at index " \
           "[1, 1]" in err and "Traceback" not in err and "onnxruntime" not in err


def test_run_refuses_malformed_id_limits(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    import onnx

    from dslc.backends.onnx.export import export
    from dslc.cli import main

    spec = compile_text("model pe {\n input tokens: i64[3]\n embedding(20, 2)\n}\n",
                        str(tmp_path / "pe.dl"))
    graph = spec.model()
    model = tmp_path / "pe.onnx"
    export(spec, graph, init_weights(graph, 0), model)
    np.save(tmp_path / "ids.npy", np.array([[1, 2, 3]], np.int64))
    proto = onnx.load(str(model))
    for value in ('{"tokens": 20}', '{"tokens": {"limit": true, "layer": "e"}}', "[1]"):
        for prop in proto.metadata_props:
            if prop.key == "dslc.id_limits":
                prop.value = value
        onnx.save(proto, str(model))
        assert main(["run", str(model), "--input", str(tmp_path / "ids.npy")]) == 2, value
        assert "metadata `dslc.id_limits` is not a map" in capsys.readouterr().err


# -- the data pipeline -------------------------------------------------------------------------

TRAIN = EMBED + """
train tagger {
    data      = npz("ids.npz", test=0.25)
    loss      = sparse_categorical_crossentropy
    optimizer = adam(lr=0.05)
    epochs    = 3
    batch     = 16%s
}
"""


def _dataset(tmp_path, x, extra=""):
    from dslc.data.loaders import load_dataset

    np.savez(tmp_path / "ids.npz", x=x, y=np.arange(len(x)) % 3)
    spec = compile_text(TRAIN % ("i64", extra), str(tmp_path / "t.dl"))
    return load_dataset(spec.trains["tagger"], (6,), tmp_path, 0, "i64")


def test_integer_features_stay_ids(tmp_path):
    x = np.random.default_rng(0).integers(0, 12, (40, 6))
    ds = _dataset(tmp_path, x.astype(np.float64))  # float storage of whole numbers is fine
    assert ds.x_train.dtype == np.int64 and ds.x_test.dtype == np.int64
    assert set(np.unique(ds.x_train)) <= set(range(12))


def test_fractional_features_for_ids_are_an_error(tmp_path):
    x = np.random.default_rng(0).normal(size=(40, 6))
    with pytest.raises(DslError, match="input is i64 \\(ids\\), but the features hold"):
        _dataset(tmp_path, x)


def test_scaling_ids_is_refused(tmp_path):
    x = np.random.default_rng(0).integers(0, 12, (40, 6))
    with pytest.raises(DslError, match="`scale` would change the model's input ids"):
        _dataset(tmp_path, x, "\n    preprocess = [scale(0.5)]")


@pytest.mark.parametrize("bad,shown", [(-1, "-1..11"), (12, "0..12")])
def test_ids_outside_the_vocab_are_a_located_error_before_training(tmp_path, bad, shown):
    # torch failed with an internal error; Keras wrapped a negative id round the table
    from dslc.train.run import _dataset as checked_dataset

    x = np.random.default_rng(0).integers(0, 12, (40, 6))
    x[3, 2] = bad
    np.savez(tmp_path / "ids.npz", x=x, y=np.arange(len(x)) % 3)
    path = tmp_path / "t.dl"
    spec = compile_text(TRAIN % ("i64", ""), str(path))
    graph = spec.model()
    with pytest.raises(DslError) as info:
        checked_dataset(spec, graph, spec.trains["tagger"], 0)
    message = info.value.diagnostics[0].message
    assert f"holds ids {shown}, but ids must be 0..11 (`embedding_1` has vocab 12)" in message
    assert info.value.diagnostics[0].span is not None


@pytest.mark.parametrize("backend", ["torch", "keras"])
def test_an_embedding_model_trains_on_ids(tmp_path, backend, capsys):
    if backend == "keras":
        pytest.importorskip("keras")
    else:
        pytest.importorskip("torch")
    from dslc.train.run import train_command

    rng = np.random.default_rng(1)
    x = rng.integers(1, 12, (64, 6))
    np.savez(tmp_path / "ids.npz", x=x, y=x[:, 0] % 3)
    spec = tmp_path / "t.dl"
    spec.write_text(TRAIN % ("i64", ""))
    args = argparse.Namespace(spec=str(spec), backend=backend, device="cpu", epochs=None,
                              batch=None, seed=None, out=str(tmp_path / "run"), resume=False,
                              model=None)
    assert train_command(args) == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert np.isfinite(metrics["test"]["loss"])
    capsys.readouterr()


# -- ONNX: a valid graph, shapes as `dslc check` infers them -----------------------------------

ONNX_BODIES = [
    "embedding(10, 4)",
    "embedding(10, 4, mask_zero=true)\nposition_embedding(8)\ndense(3)",
    "embedding(10, 6)\nsinusoidal_position\nlayer_norm",
]


@pytest.mark.parametrize("body", ONNX_BODIES)
@pytest.mark.parametrize("dtype", ["i32", "i64"])
def test_onnx_graph_is_valid_and_inferred_shapes_match_check(body, dtype):
    onnx = pytest.importorskip("onnx")
    from dslc.backends.onnx.export import to_model

    lines = "\n    ".join(body.splitlines())
    graph = compile_text(f"model e {{\n    input tokens: {dtype}[5]\n    {lines}\n}}\n",
                         "<e>").model()
    model = to_model(graph, init_weights(graph, 0))
    onnx.checker.check_model(model, full_check=True)
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    infos = {v.name: v for v in (*inferred.graph.value_info, *inferred.graph.output)}
    for node in graph.nodes:
        dims = [d.dim_param or d.dim_value for d in infos[node.name].type.tensor_type.shape.dim]
        assert dims == ["batch", *node.type.shape], node.name
