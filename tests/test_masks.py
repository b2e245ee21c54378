"""Padding masks (dslc/passes/masks.py): which tensors carry one, the ops that refuse one, and
each backend's `mask_of` — exercised end to end by a stand-in consumer that zeroes padded
positions, on every backend, against the reference. Keras propagates masks by itself: every
op that declares `keep` is checked to keep Keras's mask too."""

from __future__ import annotations

import numpy as np
import pytest

from dslc.backends import get_backend
from dslc.compiler import compile_text
from dslc.diagnostics import DslError
from dslc.ops import all_ops
from dslc.passes.masks import mask_makers, padding_masks
from dslc.verify import seeded_batch
from dslc.weights import init_weights


def model(body: str, inputs: str = "input tokens: i64[6]"):
    lines = "\n    ".join([*inputs.splitlines(), *body.splitlines()])
    return compile_text(f"model m {{\n    {lines}\n}}\n", "<m>").model()


def errors(body: str, inputs: str = "input tokens: i64[6]") -> list[str]:
    with pytest.raises(DslError) as info:
        model(body, inputs)
    return [d.message for d in info.value.diagnostics]


def test_keep_ops_carry_the_mask_and_merges_and_it():
    g = model("e = embedding(tokens, 10, 4, mask_zero=true)\nf = embedding(more, 5, 4, "
              "mask_zero=true)\nh = dense(e, 4, activation=relu)\ns = add(h, f)\n"
              "n = layer_norm(s)\nd = dropout(n, 0.1)\nc = concat(d, e)\n"
              "p = sinusoidal_position(c)\noutput p", "input tokens: i64[6]\ninput more: i32[6]")
    masks = padding_masks(g)
    assert masks["e"] == ("tokens",) and masks["h"] == ("tokens",)
    assert masks["s"] == masks["n"] == masks["d"] == masks["c"] == masks["p"] == \
        ("tokens", "more")
    assert mask_makers(g)["p"] == ("e", "f")


def test_attention_output_keeps_the_query_mask_alone():
    g = model("e = embedding(tokens, 10, 4, mask_zero=true)\nq = dense(x, 4)\n"
              "a = multi_head_attention(q, e, heads=1, key_dim=2)\n"
              "b = multi_head_attention(e, q, heads=1, key_dim=2)\noutput a, b",
              "input tokens: i64[5]\ninput x: f32[3, 2]")
    masks = padding_masks(g)
    assert "a" not in masks and masks["b"] == ("tokens",)
    assert mask_makers(g)["b"] == ("e",)


def test_no_mask_without_mask_zero():
    g = model("embedding(10, 4)\nsimple_rnn(3)")
    assert padding_masks(g) == {}


def test_recurrent_layers_consume_the_mask_and_pass_it_on_with_sequences():
    g = model("e = embedding(tokens, 10, 4, mask_zero=true)\n"
              "s = lstm(e, 3, return_sequences=true)\ng = gru(s, 3, go_backwards=true)\n"
              "f = flatten(g)\noutput s, f")
    masks = padding_masks(g)
    assert masks["s"] == ("tokens",) and "g" not in masks
    (msg,) = errors("e = embedding(tokens, 10, 4, mask_zero=true)\n"
                    "s = simple_rnn(e, 3, return_sequences=true)\nflatten(s)")
    assert "(flatten) cannot honour the padding mask" in msg


@pytest.mark.parametrize("body,op", [
    ("embedding(10, 4, mask_zero=true)\npermute([2, 1])", "permute"),
    ("embedding(10, 4, mask_zero=true)\nflatten", "flatten"),
    ("embedding(10, 4, mask_zero=true)\nreshape([24])", "reshape"),
    ("embedding(10, 4, mask_zero=true)\nreshape([6, 2, 2])\nglobal_avgpool2d", "reshape"),
    ("e = embedding(tokens, 10, 4, mask_zero=true)\nconcat(e, e, axis=0)", "concat"),
])
def test_ops_that_cannot_honour_a_mask_refuse_it(body, op):
    (msg,) = errors(body)
    assert f"({op}) cannot honour the padding mask that `" in msg


def test_a_masked_output_is_allowed_but_not_trained():
    model("embedding(10, 4, mask_zero=true)\ndense(3)")  # inference: values at padded steps
    text = ("model m {\n    input tokens: i64[6]\n    embedding(10, 4, mask_zero=true)\n"
            "    dense(3, activation=softmax)\n}\ntrain m {\n    data = npz(\"d.npz\")\n"
            "    loss = sparse_categorical_crossentropy\n    optimizer = adam\n}\n")
    with pytest.raises(DslError, match="training on a masked output is not supported yet"):
        compile_text(text, "<t>")


# -- mask_of on every backend: a stand-in consumer that zeroes the padded positions ------------

MASKED = ("e = embedding(tokens, 10, 4, mask_zero=true)\nf = embedding(more, 6, 4, "
          "mask_zero=true)\ns = add(e, f)\nd = dropout(s, 0.5)\ndense(d, 2)")
INPUTS = "input tokens: i64[6]\ninput more: i32[6]"


def _zero_padding_rules(monkeypatch):
    """Dropout (the identity at inference) replaced, in every backend, by `x * mask_of(x)`."""
    from dslc.backends.keras import codegen as keras_codegen
    from dslc.backends.onnx import lower as onnx_lower
    from dslc.backends.reference import interpret
    from dslc.backends.torch import codegen as torch_codegen

    def reference(ctx, node, xs):
        return xs[0] * ctx.mask_of(node.inputs[0])[..., None]

    def torch(em, node, xs):
        return torch_codegen.Value(f"{xs[0].expr} * {em.mask_of(node.inputs[0])}[..., None]",
                                   rank=2)

    def onnx(ctx, node, xs):
        from onnx import TensorProto

        mask = ctx.mask_of(node.inputs[0])
        real = ctx.value("Cast", [mask], 2, role="real", to=TensorProto.FLOAT)
        axes = ctx.const("axes", np.array([-1], np.int64))
        column = ctx.value("Unsqueeze", [real.name, axes], 3, role="column")
        return ctx.value("Mul", [xs[0].name, column.name], 3)

    layer = keras_codegen.Function("ZeroPadding", (
        "class ZeroPadding(keras.layers.Layer):\n"
        "    def call(self, inputs, mask=None):\n"
        "        return inputs * keras.ops.cast(mask, inputs.dtype)[..., None]\n"))

    def keras(ctx, node, xs):
        return keras_codegen.Call(layer.name, uses=[layer],
                                  call_kwargs=[("mask", ctx.mask_of(node.inputs[0]))])

    for module, rule in ((interpret, reference), (torch_codegen, torch), (onnx_lower, onnx),
                         (keras_codegen, keras)):
        monkeypatch.setitem(module.LOWERINGS.rules, "dropout", rule)


def test_mask_of_is_computed_once_in_the_generated_sources(monkeypatch):
    from dslc.backends.keras.codegen import generate as keras_source
    from dslc.backends.torch.codegen import generate as torch_source

    _zero_padding_rules(monkeypatch)
    g = model(MASKED, INPUTS)
    torch_text = torch_source(None, g)
    assert "tokens_more_mask = (tokens != 0) & (more != 0)" in torch_text
    keras_text = keras_source(None, g)
    assert ("tokens_more_mask = keras.ops.logical_and(keras.ops.not_equal(tokens, 0), "
            "keras.ops.not_equal(more, 0))") in keras_text
    assert "(s, mask=tokens_more_mask)" in keras_text


@pytest.mark.parametrize("name", ["torch", "keras", "onnx"])
def test_mask_of_agrees_with_the_reference(monkeypatch, name):
    backend = get_backend(name)
    try:
        backend.require()
    except DslError as exc:
        pytest.skip(str(exc))
    _zero_padding_rules(monkeypatch)
    g = model(MASKED, INPUTS)
    weights = init_weights(g, 0)
    xs = seeded_batch(g, 5, seed=1)
    assert (xs[0] == 0).any()
    want = get_backend("reference").build(g, weights).predict(xs)
    got = backend.build(g, weights).predict(xs)
    np.testing.assert_allclose(got, want, atol=1e-5)
    # padded positions (either id 0) hold the dense bias alone
    padded = (xs[0] == 0) | (xs[1] == 0)
    np.testing.assert_allclose(want[padded], np.broadcast_to(weights["dense_1.bias"],
                                                             want[padded].shape), atol=1e-6)


# -- Keras keeps the mask through every op that declares `keep` --------------------------------

KEEP_BODIES = {
    "dense": "dense(3)", "dropout": "dropout(0.5)", "layer_norm": "layer_norm",
    "add": "add(e, e)", "concat": "concat(e, e)", "position_embedding": "position_embedding(6)",
    "sinusoidal_position": "sinusoidal_position",
}


def _keep_ops() -> list[str]:
    return sorted(n for n, op in all_ops().items()
                  if op.category == "activation" or op.masking(_attrs(op)) == "keep")


def _attrs(op):
    try:
        return op.Attrs()
    except Exception:  # attributes without defaults: such ops are listed in KEEP_BODIES
        return op.Attrs.model_construct()


def test_every_keep_op_has_a_keras_check():
    activations = {n for n, op in all_ops().items() if op.category == "activation"}
    assert set(_keep_ops()) - activations <= set(KEEP_BODIES)


@pytest.mark.parametrize("op", _keep_ops())
def test_keras_propagates_the_mask_through_keep_ops(op):
    pytest.importorskip("keras")
    from dslc.backends.keras.runtime import build_model

    body = KEEP_BODIES.get(op, op)
    g = model(f"e = embedding(tokens, 10, 4, mask_zero=true)\n{body}")
    assert padding_masks(g)[g.outputs[0]] == ("tokens",)
    keras_model = build_model(g, "/CPU:0")
    ids = seeded_batch(g, 4, seed=0)[0]
    out = keras_model(ids)
    mask = getattr(out, "_keras_mask", None)
    assert mask is not None, f"keras dropped the mask at {op}"
    np.testing.assert_array_equal(np.asarray(mask), ids != 0)


def test_keras_keeps_the_query_mask_through_attention():
    pytest.importorskip("keras")
    from dslc.backends.keras.runtime import build_model

    g = model("e = embedding(tokens, 10, 4, mask_zero=true)\n"
              "h = multi_head_attention(e, e, heads=1, key_dim=2)\ndense(h, 3)")
    ids = seeded_batch(g, 4, seed=0)[0]
    mask = getattr(build_model(g, "/CPU:0")(ids), "_keras_mask", None)
    assert mask is not None
    np.testing.assert_array_equal(np.asarray(mask), ids != 0)
