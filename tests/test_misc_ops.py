"""The small ops of issue 10 beyond the op matrix: ONNX validity and shape inference equal to
`dslc check`, what `ending_activation` sees through (permute, repeat_vector, slice), and what
a model ending in `log_softmax` means to the train checker and the ONNX task metadata."""

from __future__ import annotations

import pytest

from dslc.compiler import compile_text
from dslc.diagnostics import DslError
from dslc.ops import ending_activation
from dslc.weights import init_weights

BODIES = {
    "activations": "input x: f32[6]\ndense(4, activation=selu)\nsoftplus\nsoftsign\nsilu\n"
                   "hard_sigmoid\nrelu6\nlog_softmax",
    "activations_on_image": "input x: f32[4, 4, 2]\nconv2d(3, kernel=1, activation=silu)\n"
                            "relu6\nlog_softmax",
    "merges": "input x: f32[4, 4, 2]\ninput y: f32[4, 4, 2]\na = conv2d(x, 2, kernel=1)\n"
              "m = multiply(a, x, y)\ns = subtract(m, x)\nv = average(s, a, y)\n"
              "h = maximum(v, x, a)\nminimum(h, y)",
    "permute": "input x: f32[5, 4, 2]\nc = conv2d(x, 3, kernel=1)\np = permute(c, [3, 1, 2])\n"
               "q = permute(x, [2, 1, 3])\noutput p, q",
    "repeat_vector": "input x: f32[5]\ndense(3)\nrepeat_vector(4)\nsimple_rnn(2)",
    "slice": "input x: f32[5, 4, 2]\nc = conv2d(x, 3, kernel=1)\na = slice(c, 0, 1, -1)\n"
             "b = slice(c, 2, stop=2)\nd = slice(x, 1, -3)\noutput a, b, d",
    "slice_dynamic": "input x: f32[?, 3]\nslice(0, 1, 3)\nslice(1, -2)",
}


def _graph(name: str, body: str):
    body = "\n    ".join(body.splitlines())
    return compile_text(f"model {name} {{\n    {body}\n}}\n", f"<{name}>").model()


@pytest.mark.parametrize("name", list(BODIES))
def test_onnx_is_valid_and_inferred_shapes_match_check(name):
    onnx = pytest.importorskip("onnx")
    from dslc.backends.onnx.export import to_model
    from dslc.backends.onnx.lower import BATCH, NCHW, lower_graph

    graph = _graph(name, BODIES[name])
    weights = init_weights(graph, 0)
    model = to_model(graph, weights)
    onnx.checker.check_model(model, full_check=True)
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    infos = {v.name: v for v in (*inferred.graph.value_info, *inferred.graph.output)}
    layouts = lower_graph(graph, weights).layouts
    for node in graph.nodes:
        dims = [d.dim_param or d.dim_value or None
                for d in infos[node.name].type.tensor_type.shape.dim]
        want = [BATCH, *node.type.shape]
        if layouts.get(node.name) == NCHW:
            want = [want[0], want[3], want[1], want[2]]
        if None in node.type.shape:  # ONNX names an unknown dim its own way
            dims = [d if w is not None else None for d, w in zip(dims, want, strict=True)]
        assert dims == want, node.name


@pytest.mark.parametrize("tail,seen", [
    ("repeat_vector(3)", "softmax"),
    ("reshape([2, 5])\npermute([1, 2])", "softmax"),
    ("reshape([2, 5])\npermute([2, 1])", "linear"),  # the softmax's axis moved
    ("reshape([2, 5])\nslice(0, 1)", "softmax"),
    ("slice(0, 2)", "linear"),  # part of the softmax's axis: no longer a distribution
    ("reshape([2, 5])\nslice(-1, 0, 3)", "linear"),
])
def test_ending_activation_sees_through_ops_that_keep_the_last_axis(tail, seen):
    graph = _graph("m", f"input x: f32[4]\ndense(10, activation=softmax)\n{tail}")
    assert ending_activation(graph, graph.outputs[0])[0] == seen


TRAIN = """model m {{
    input x: f32[64]
    dense(10, activation=log_softmax)
}}

train m {{
    data      = digits()
    loss      = {loss}
    optimizer = adam()
}}
"""


@pytest.mark.parametrize("loss", ["sparse_categorical_crossentropy",
                                  "categorical_crossentropy"])
def test_cross_entropy_on_log_probabilities_asks_for_from_logits(loss):
    with pytest.raises(DslError) as info:
        compile_text(TRAIN.format(loss=loss))
    d = info.value.diagnostics[0]
    assert "log-probabilities" in d.message and f"{loss}(from_logits=true)" in (d.hint or "")


def test_log_probabilities_train_as_logits():
    # softmax(log p) = p: a cross-entropy from logits is right for log-probabilities
    spec = compile_text(TRAIN.format(loss="sparse_categorical_crossentropy(from_logits=true)"))
    assert spec.trains["m"].loss.from_logits


def test_log_softmax_output_is_not_called_probabilities():
    from dslc.backends.onnx.metadata import task_of

    graph = _graph("m", "input x: f32[4]\ndense(3, activation=log_softmax)")
    assert task_of(graph, graph.outputs[0]) == "regression"
    graph = _graph("m", "input x: f32[4]\ndense(3, activation=softmax)\nrepeat_vector(2)\n"
                        "slice(0, 1)\nreshape([3])")
    assert task_of(graph, graph.outputs[0]) == "classifier"


# The ops still to come (issue 10): the name table may point at them already.
PLANNED = {"embedding", "lstm", "gru", "bidirectional", "conv1d", "maxpool1d", "avgpool1d",
           "global_avgpool1d", "global_maxpool1d", "depthwise_conv2d", "separable_conv2d",
           "conv2d_transpose", "upsampling2d", "zero_padding2d", "batch_norm",
           "multi_head_attention"}


def test_other_frameworks_names_point_at_registered_or_planned_ops():
    from dslc.ops import all_ops
    from dslc.ops.names import EXACT, OTHER_NAMES, known_as

    targets = set(OTHER_NAMES.values()) | set(EXACT.values())
    assert targets - set(all_ops()) - PLANNED == set()
    for name, target in OTHER_NAMES.items():
        registered = target in all_ops() and target != name
        assert known_as(name) == (target if registered else None), name


def test_a_hint_never_names_an_unregistered_op(monkeypatch):
    from dslc.ops import names

    monkeypatch.setitem(names.OTHER_NAMES, "lstm", "lstm_not_yet")
    assert names.known_as("LSTM") is None
    assert names.op_hint("LSTM", ["dense"]) is None


@pytest.mark.parametrize("bounds", ["0, 3, 2", "0, 2, 2", "0, stop=0", "0, -1, -2", "0, 0, 0"])
def test_a_slice_empty_on_an_axis_of_any_size_is_refused(bounds):
    # the checker refused an empty slice of a known axis only: `?` gave [0, ...] at run time
    with pytest.raises(DslError, match="is empty whatever its size"):
        compile_text(f"model m {{\n input x: f32[?, 3]\n slice({bounds})\n}}\n", "<m>")


@pytest.mark.parametrize("bounds", ["0, -3, 2", "0, 2, -1", "0, stop=-5", "0, 1, 3"])
def test_a_slice_that_may_hold_steps_stays_allowed(bounds):
    compile_text(f"model m {{\n input x: f32[?, 3]\n slice({bounds})\n}}\n", "<m>").model()
