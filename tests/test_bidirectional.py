"""`bidirectional` on simple_rnn, lstm and gru (Keras's Bidirectional): what the rows of
tests/test_op_matrix.py do not show — the weight names on each side, and what is refused."""

from __future__ import annotations

import numpy as np
import pytest

from dslc.backends.keras.codegen import weight_names
from dslc.backends.torch.weights import state_dict_keys
from dslc.compiler import compile_text
from dslc.diagnostics import DslError


def model(body: str, inputs: str = "input x: f32[5, 3]"):
    lines = "\n    ".join([*inputs.splitlines(), *body.splitlines()])
    return compile_text(f"model m {{\n    {lines}\n}}\n", "<m>").model()


def errors(body: str, inputs: str = "input x: f32[5, 3]") -> list[str]:
    with pytest.raises(DslError) as info:
        model(body, inputs)
    return [d.message for d in info.value.diagnostics]


@pytest.mark.parametrize("op,cell", [("simple_rnn", "simple_rnn_cell"), ("lstm", "lstm_cell"),
                                     ("gru", "gru_cell")])
def test_each_direction_has_its_weights_under_keras_names(op, cell):
    g = model(f"r = {op}(x, 4, bidirectional=concat)\noutput r")
    keys = [f"{d}_{k}" for d in ("forward", "backward") for k in
            ("kernel", "recurrent_kernel", "bias")]
    assert list(g.nodes[0].params) == keys
    assert weight_names(g)["r"] == {k: f"{k.split('_', 1)[0]}_r/{cell}/{k.split('_', 1)[1]}"
                                    for k in keys}
    assert state_dict_keys(g)["r.backward_kernel"] == "r.backward_layer.weight_ih"


def test_unidirectional_layers_keep_their_keys():
    g = model("r = lstm(x, 4, bidirectional=none)\noutput r")
    assert list(g.nodes[0].params) == ["kernel", "recurrent_kernel", "bias"]


@pytest.mark.parametrize("mode,units", [("concat", 8), ("sum", 4), ("mul", 4), ("ave", 4)])
def test_concat_doubles_the_units(mode, units):
    g = model(f"gru(4, bidirectional={mode}, return_sequences=true)", "input x: f32[?, 3]")
    assert g.nodes[0].type.shape == (None, units)


def test_go_backwards_is_refused_as_keras_does():
    (msg,) = errors("lstm(4, bidirectional=sum, go_backwards=true)")
    assert "`go_backwards` and `bidirectional` cannot be combined" in msg


@pytest.mark.parametrize("sequences", [False, True])
def test_a_masked_input_is_consumed_and_a_sequence_carries_it(sequences):
    from dslc.passes.masks import padding_masks

    g = model(f"e = embedding(x, 10, 4, mask_zero=true)\n"
              f"r = gru(e, 3, bidirectional=concat, return_sequences={str(sequences).lower()})\n"
              "output r", "input x: i64[6]")
    assert ("r" in padding_masks(g)) == sequences


def test_keras_hands_the_mask_to_the_wrapper():
    from dslc.backends.keras.codegen import generate

    g = model("e = embedding(x, 10, 4, mask_zero=true)\nr = lstm(e, 3, bidirectional=sum)\n"
              "output r", "input x: i64[6]")
    src = generate(None, g)
    assert "mask=x_mask" in src and src.count("mask=") == 1


def test_the_onnx_importer_refuses_a_bidirectional_rnn_node(tmp_path):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from dslc.backends.onnx.importer import import_file

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.normal(size=(2, 4, 3)).astype(np.float32), "W")
    r = numpy_helper.from_array(rng.normal(size=(2, 4, 4)).astype(np.float32), "R")
    node = helper.make_node("RNN", ["x", "W", "R"], ["y", "y_h"], hidden_size=4,
                            direction="bidirectional")
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [5, 1, 3])],
        [helper.make_tensor_value_info("y_h", TensorProto.FLOAT, [2, 1, 4])], [w, r])
    path = tmp_path / "b.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    with pytest.raises(DslError, match="runs bidirectional, which dslc import does not read yet"):
        import_file(path)
