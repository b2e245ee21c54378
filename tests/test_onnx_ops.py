"""What only the ONNX lowering has to get right, held against the reference backend: layout
changes (NHWC in and out, NCHW inside, the flatten permutation), the RNN op or a Scan per
activation, clean graphs, the decomposition path, and window ops over any geometry. Every op
and attribute variant on every backend is the op test matrix's job."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from dslc.backends import get_backend  # noqa: E402
from dslc.backends.onnx.export import to_model  # noqa: E402
from dslc.backends.onnx.lower import LOWERINGS, OPSET, lower_graph  # noqa: E402
from dslc.compiler import compile_text  # noqa: E402
from dslc.ops import activation_names  # noqa: E402
from dslc.weights import init_weights  # noqa: E402

ONNX = get_backend("onnx")
REFERENCE = get_backend("reference")

# (id, model body): each takes a path of the lowering that other backends do not have.
VARIANTS = [
    ("conv_same_stride2", "input x: f32[8, 7, 2]\nconv2d(3, kernel=3, strides=2, padding=same)"),
    ("conv_softmax_on_channels", "input x: f32[6, 6, 2]\nconv2d(3, kernel=3, activation=softmax)"),
    ("conv_output_image", "input x: f32[4, 5, 2]\nconv2d(3, kernel=2, padding=same)"),
    ("one_channel_input", "input x: f32[5, 5, 1]\nconv2d(2, kernel=3)\nflatten\ndense(3)"),
    ("flatten_to_dense", "input x: f32[5, 4, 2]\nconv2d(3, kernel=2)\nflatten\ndense(4)"),
    ("flatten_dropout_dense",
     "input x: f32[5, 4, 2]\nconv2d(3, kernel=2)\nflatten\ndropout(0.5)\ndense(4)"),
    ("flatten_to_output", "input x: f32[5, 4, 2]\nconv2d(3, kernel=2)\nflatten"),
    ("flatten_to_dense_and_output", "input x: f32[4, 4, 2]\nc = conv2d(x, 3, kernel=2)\n"
                                    "f = flatten(c)\nd = dense(f, 2)\noutput d, f"),
    ("global_pool_in_nchw", "input x: f32[5, 4, 3]\nconv2d(2, kernel=1)\nglobal_avgpool2d"),
    ("global_pool_in_nhwc", "input x: f32[5, 4, 3]\nglobal_maxpool2d"),
    ("reshape_vector_to_image", "input x: f32[24]\nreshape([2, 4, 3])\nconv2d(2, kernel=2)"),
    ("reshape_image_to_sequence",
     "input x: f32[4, 4, 2]\nconv2d(3, kernel=1)\nreshape([-1, 6])\nsimple_rnn(4)"),
    ("dense_sequence", "input x: f32[4, 3]\ndense(5, activation=tanh)"),
    ("dense_no_bias", "input x: f32[5]\ndense(4, use_bias=false)"),
    ("softmax_on_image", "input x: f32[4, 4, 2]\nconv2d(3, kernel=1)\nsoftmax"),
    ("dropout_last", "input x: f32[5]\ndense(4, activation=relu)\ndropout(0.5)"),
    *[(f"rnn_{act}", f"input x: f32[5, 3]\nsimple_rnn(4, activation={act})")
      for act in activation_names()],
    ("rnn_sequences", "input x: f32[5, 3]\nsimple_rnn(4, return_sequences=true)\ndense(2)"),
    ("rnn_sequences_gelu", "input x: f32[5, 3]\nsimple_rnn(4, activation=gelu, "
                           "return_sequences=true)"),
    ("rnn_no_bias", "input x: f32[5, 3]\nsimple_rnn(4, use_bias=false)"),
    ("rnn_no_bias_scan", "input x: f32[5, 3]\nsimple_rnn(4, activation=softmax, use_bias=false)"),
    ("rnn_go_backwards_sequences",
     "input x: f32[5, 3]\nsimple_rnn(4, go_backwards=true, return_sequences=true)"),
    ("rnn_go_backwards_scan",
     "input x: f32[5, 3]\nsimple_rnn(4, activation=gelu, go_backwards=true, return_sequences=true)"),
    *[(f"{op}_{tail}", f"input x: f32[5, 3]\n{op}(4{attrs})") for op in ("lstm", "gru")
      for tail, attrs in (("last", ""), ("sequences", ", return_sequences=true"),
                          ("go_backwards", ", go_backwards=true"),
                          ("go_backwards_sequences", ", go_backwards=true, return_sequences=true"),
                          ("no_bias", ", use_bias=false"),
                          ("linear_gates", ", recurrent_activation=linear, activation=relu"))],
    ("gru_reset_before", "input x: f32[5, 3]\ngru(4, reset_after=false, return_sequences=true)"),
    ("add_input_and_conv", "input x: f32[5, 5, 2]\nh = conv2d(x, 2, kernel=3, padding=same)\n"
                           "add(x, h)"),
    ("add_three", "input x: f32[4]\na = dense(x, 3)\nb = dense(x, 3)\nc = dense(x, 3)\n"
                  "add(a, b, c)"),
    ("concat_channels", "input x: f32[6, 6, 2]\na = conv2d(x, 3, kernel=1)\n"
                        "b = conv2d(x, 2, kernel=1)\nconcat(a, b)\nflatten"),
    ("concat_height", "input x: f32[4, 4, 2]\na = conv2d(x, 3, kernel=1)\n"
                      "b = conv2d(x, 3, kernel=1)\nconcat(a, b, axis=0)\nflatten"),
    ("concat_width_mixed_layout", "input x: f32[4, 4, 3]\na = conv2d(x, 3, kernel=1)\n"
                                  "concat(x, a, axis=1)"),
    ("batch_norm_vector", "input x: f32[5]\nbatch_norm(scale=false)"),
    ("batch_norm_sequence", "input x: f32[4, 3]\ndense(4)\nbatch_norm(center=false)"),
    ("batch_norm_input_image", "input x: f32[4, 5, 2]\nbatch_norm\nflatten"),
    ("batch_norm_after_conv", "input x: f32[5, 5, 2]\nconv2d(3, kernel=3)\n"
                              "batch_norm(center=false, scale=false)\nrelu\nflatten\ndense(2)"),
    ("mha_causal_cross", "input x: f32[6, 4]\ninput y: f32[3, 2]\n"
                         "multi_head_attention(x, y, heads=2, key_dim=3, causal=true)"),
    ("mha_key_no_bias", "input x: f32[4, 3]\ninput y: f32[5, 2]\ninput z: f32[5, 4]\n"
                        "multi_head_attention(x, y, z, 2, 3, value_dim=2, use_bias=false)"),
    ("mha_block", "input x: f32[5, 4]\nh = multi_head_attention(x, x, heads=2, key_dim=2)\n"
                  "layer_norm(add(x, h))\ndense(3)"),
    ("conv1d_causal_stack", "input x: f32[7, 2]\nc = conv1d(x, 3, kernel=2, padding=causal)\n"
                            "m = maxpool1d(c, 2, padding=same)\na = avgpool1d(c, 3, strides=1, "
                            "padding=same)\nconcat(global_maxpool1d(m), global_avgpool1d(a))"),
    ("conv1d_shared_input", "input x: f32[6, 2]\na = conv1d(x, 3, kernel=3)\n"
                            "b = conv1d(x, 3, kernel=3, activation=softmax)\nadd(a, b)"),
    ("conv_groups_flatten", "input x: f32[5, 5, 4]\nconv2d(6, kernel=3, groups=2)\nflatten\n"
                            "dense(2)"),
    ("depthwise_same_stride2", "input x: f32[7, 6, 3]\ndepthwise_conv2d(3, depth_multiplier=2, "
                               "strides=2, padding=same, activation=softmax)"),
    ("separable_then_pool", "input x: f32[6, 6, 2]\nseparable_conv2d(4, kernel=2, "
                            "depth_multiplier=3, padding=same)\nmaxpool2d(2)\nflatten"),
    ("convT_same_even_flatten", "input x: f32[3, 4, 2]\nconv2d_transpose(2, kernel=4, "
                                "strides=2, padding=same)\nflatten\ndense(3)"),
    ("convT_kernel_below_stride", "input x: f32[3, 2, 2]\nconv2d_transpose(2, kernel=[1, 2], "
                                  "strides=3, padding=same)"),
    ("convT_valid_softmax", "input x: f32[3, 3, 2]\nconv2d_transpose(3, kernel=3, strides=2, "
                            "activation=softmax)"),
    ("upsampling_bilinear_conv", "input x: f32[3, 4, 2]\nupsampling2d([2, 3], "
                                 "interpolation=bilinear)\nconv2d(2, kernel=3)"),
    ("upsampling_nearest_input", "input x: f32[3, 2, 3]\nupsampling2d(3)"),
    ("zero_padding_input", "input x: f32[3, 4, 2]\nzero_padding2d([[1, 0], [2, 3]])"),
    ("zero_padding_in_nchw", "input x: f32[4, 4, 2]\nconv2d(3, kernel=1)\nzero_padding2d(1)\n"
                             "maxpool2d(2)\nflatten"),
    ("residual_block", "input x: f32[6, 6, 3]\nc = conv2d(x, 4, kernel=3, padding=same, "
                       "activation=relu)\nh = conv2d(c, 4, kernel=3, padding=same)\n"
                       "r = relu(add(c, h))\ng = global_avgpool2d(r)\n"
                       "dense(3, activation=softmax)"),
]


def variant_spec(name: str, body: str):
    body = "\n    ".join(body.splitlines())
    return compile_text(f"model {name} {{\n    {body}\n}}\n", f"<{name}>")


def _weights(graph):
    weights = init_weights(graph, seed=3)
    for key, p in graph.param_specs().items():  # non-zero biases, so bias layout is tested
        if key.endswith("bias"):
            weights[key] = np.random.default_rng(7).normal(size=p.shape).astype(np.float32)
    return weights


def _batch(graph, n=4, seed=1):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(n, *i.type.shape)).astype(np.float32) for i in graph.inputs]


def assert_matches_reference(graph, weights, xs):
    got = ONNX.build(graph, weights).predict_all(xs)
    want = REFERENCE.build(graph, weights).predict_all(xs)
    assert [y.shape for y in got] == [y.shape for y in want]
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, atol=1e-5, rtol=1e-5)


def _ops(model) -> list[str]:
    return [n.op_type for n in model.graph.node]


# -- the variants -----------------------------------------------------------------------------

@pytest.mark.parametrize("name,body", VARIANTS, ids=[v[0] for v in VARIANTS])
def test_variant_matches_the_reference(name, body):
    graph = variant_spec(name, body).model()
    weights = _weights(graph)
    onnx.checker.check_model(to_model(graph, weights), full_check=True)
    assert_matches_reference(graph, weights, _batch(graph))


@pytest.mark.parametrize("name,body", VARIANTS, ids=[v[0] for v in VARIANTS])
def test_variant_graph_is_clean(name, body):
    graph = variant_spec(name, body).model()
    model = to_model(graph, init_weights(graph, 0))
    assert model.opset_import[0].version == OPSET
    ops = _ops(model)
    assert "Identity" not in ops
    assert "Dropout" not in ops
    # one transpose per value and permutation, at most
    transposes = [n for n in model.graph.node if n.op_type == "Transpose"]
    assert len({(n.input[0], tuple(n.attribute[0].ints)) for n in transposes}) == len(transposes)
    names = [n.name for n in model.graph.node]
    assert len(set(names)) == len(names)
    layers = {n.name for n in graph.nodes} | {i.name for i in graph.inputs}
    assert all(n.split("/")[0] in layers for n in names)
    assert [o.name for o in model.graph.output] == graph.outputs


def test_every_registered_op_has_a_lowering():
    assert LOWERINGS.missing() == []


# -- layouts ----------------------------------------------------------------------------------

@pytest.mark.parametrize("between", ["", "dropout(0.5)\n", "linear\n"])
def test_flatten_before_dense_permutes_the_kernel_instead_of_the_tensor(between):
    graph = variant_spec("f", "input x: f32[6, 6, 3]\nconv2d(4, kernel=3)\nflatten\n"
                              f"{between}dense(5)").model()
    assert _ops(to_model(graph, init_weights(graph, 0))) == [
        "Transpose", "Conv", "Flatten", "Gemm"]  # in, never back: dropout and linear vanish


def test_flatten_to_an_output_is_channels_last():
    graph = variant_spec("f", "input x: f32[4, 4, 3]\nconv2d(2, kernel=1)\nflatten").model()
    model = to_model(graph, init_weights(graph, 0))
    assert _ops(model) == ["Transpose", "Conv", "Transpose", "Flatten"]
    assert_matches_reference(graph, init_weights(graph, 0), _batch(graph))


def test_size_one_axes_move_by_reshape():
    graph = variant_spec("g", "input x: f32[5, 5, 1]\nconv2d(1, kernel=3)\nflatten").model()
    ops = _ops(to_model(graph, init_weights(graph, 0)))
    assert "Transpose" not in ops and ops.count("Reshape") == 2


# -- recurrent: the RNN op where it has the activation, else a Scan ---------------------------

@pytest.mark.parametrize("act", activation_names())
def test_rnn_runs_as_the_rnn_op_or_a_scan(act):
    graph = variant_spec("r", f"input x: f32[5, 3]\nsimple_rnn(4, activation={act})").model()
    model = to_model(graph, init_weights(graph, 0))
    node = next(n for n in model.graph.node if n.op_type in ("RNN", "Scan"))
    if act in ("gelu", "softmax", "selu", "silu", "hard_sigmoid", "relu6", "log_softmax"):
        assert node.op_type == "Scan"
        # the step applies the activation op's own rule
        body = onnx.helper.get_attribute_value(
            next(a for a in node.attribute if a.name == "body"))
        assert [n.name for n in body.node][-1] == f"{graph.nodes[0].name}/step/{act}"
    else:
        assert node.op_type == "RNN"
        fns = onnx.helper.get_attribute_value(
            next(a for a in node.attribute if a.name == "activations"))
        assert fns == [{"linear": b"Affine", "leaky_relu": b"LeakyRelu"}.get(
            act, act.title().encode())]


def test_rnn_leaky_relu_takes_the_ops_pinned_alpha():
    graph = variant_spec("r", "input x: f32[5, 3]\nsimple_rnn(4, activation=leaky_relu)").model()
    rnn = next(n for n in to_model(graph, init_weights(graph, 0)).graph.node
               if n.op_type == "RNN")
    alpha = next(a for a in rnn.attribute if a.name == "activation_alpha")
    from dslc.ops import get_op

    assert list(alpha.floats) == pytest.approx([get_op("leaky_relu").Attrs().alpha])


def test_dynamic_time_axis_through_rnn_and_scan():
    graph = variant_spec("s", "input x: f32[?, 3]\nh = simple_rnn(x, 4, return_sequences=true)\n"
                              "simple_rnn(h, 2, activation=gelu)").model()
    weights = init_weights(graph, 0)
    for t in (1, 6):
        x = np.random.default_rng(t).normal(size=(3, t, 3)).astype(np.float32)
        assert_matches_reference(graph, weights, [x])


@pytest.mark.parametrize("body,op", [
    ("lstm(4, go_backwards=true, return_sequences=true)", "LSTM"),
    ("gru(4)", "GRU"), ("gru(4, reset_after=false, go_backwards=true)", "GRU")])


def test_lstm_and_gru_run_as_the_onnx_op_with_inferred_shapes_as_checked(body, op):
    spec = f"input x: f32[?, 3]\nh = {body}\nlstm(h, 2, return_sequences=true)" \
        if "return_sequences" in body else f"input x: f32[6, 3]\n{body}"
    graph = variant_spec("g", spec).model()
    model = to_model(graph, _weights(graph))
    onnx.checker.check_model(model, full_check=True)
    assert op in _ops(model) and "Scan" not in _ops(model)
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    infos = {v.name: v for v in (*inferred.graph.value_info, *inferred.graph.output)}
    for node in graph.nodes:
        dims = [d.dim_value if d.HasField("dim_value") else None
                for d in infos[node.name].type.tensor_type.shape.dim]
        assert dims[1:] == list(node.type.shape), node.name
    if graph.inputs[0].type.shape[0] is None:
        for t in (1, 7):
            x = np.random.default_rng(t).normal(size=(2, t, 3)).astype(np.float32)
            assert_matches_reference(graph, _weights(graph), [x])
# -- attention: standard ops, shapes inferred as `dslc check` gives them ----------------------

ATTENTION = [
    ("self", "input x: f32[5, 4]\nmulti_head_attention(x, x, heads=2, key_dim=3)\ndense(2)"),
    ("causal_cross", "input x: f32[6, 4]\ninput y: f32[3, 2]\n"
                     "multi_head_attention(x, y, heads=2, key_dim=3, causal=true)\ndense(2)"),
    ("dynamic_causal", "input x: f32[?, 4]\n"
                       "multi_head_attention(x, x, heads=2, key_dim=3, causal=true)\ndense(2)"),
    ("dynamic_cross", "input x: f32[?, 4]\ninput y: f32[?, 3]\ninput z: f32[?, 2]\n"
                      "multi_head_attention(x, y, z, heads=1, key_dim=3, causal=true, "
                      "output_dim=5)\ndense(2)"),
]


@pytest.mark.parametrize("name,body", ATTENTION, ids=[v[0] for v in ATTENTION])
def test_attention_shapes_are_inferred_as_checked(name, body):
    """Each layer's value, inferred by ONNX (strict), is `dslc check`'s shape; a `?` length is
    the input's symbolic dimension. A dynamic causal mask is built from the scores' shape,
    which ONNX follows with data propagation; a static one is a constant."""
    graph = variant_spec(name, body).model()
    model = to_model(graph, init_weights(graph, 0))
    onnx.checker.check_model(model, full_check=True)
    assert set(_ops(model)) <= {"MatMul", "Add", "Reshape", "Transpose", "Mul", "Softmax",
                                "Where", "Shape", "ConstantOfShape", "Trilu"}
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True, data_prop=True)
    infos = {v.name: v for v in (*inferred.graph.value_info, *inferred.graph.output)}
    for node in graph.nodes[:-1]:  # (the last is an output: its shape is declared, not inferred)
        dims = [d.dim_param or d.dim_value for d in infos[node.name].type.tensor_type.shape.dim]
        want = ["batch", *(f"{node.inputs[0]}_dim1" if d is None else d
                           for d in node.type.shape)]
        assert dims == want, node.name
    weights = _weights(graph)
    for t in (1, 3, 7):
        xs = [np.random.default_rng(t).normal(size=(2, *(t if d is None else d
                                                         for d in i.type.shape)))
              .astype(np.float32) for i in graph.inputs]
        assert_matches_reference(graph, weights, xs)


def test_causal_mask_is_a_constant_for_known_lengths():
    graph = variant_spec("c", ATTENTION[1][1]).model()
    ops = _ops(to_model(graph, init_weights(graph, 0)))
    assert "Where" in ops and not {"Shape", "Trilu", "ConstantOfShape"} & set(ops)


# -- the decomposition path -------------------------------------------------------------------

def test_an_op_without_a_rule_is_lowered_through_its_decomposition(monkeypatch):
    graph = variant_spec("d", "input x: f32[5, 4, 3]\nconv2d(2, kernel=1)\n"
                              "global_avgpool2d").model()
    weights = _weights(graph)
    want = REFERENCE.build(graph, weights).predict(_batch(graph))
    monkeypatch.delitem(LOWERINGS.rules, "global_avgpool2d")
    ops = _ops(to_model(graph, weights))
    assert "ReduceMean" not in ops and "AveragePool" in ops
    np.testing.assert_allclose(ONNX.build(graph, weights).predict(_batch(graph)), want,
                               atol=1e-5, rtol=1e-5)


# -- the backend contract ---------------------------------------------------------------------

def test_the_backend_imports_no_framework_until_it_lowers():
    code = ("import sys; from dslc.backends import get_backend; b = get_backend('onnx'); "
            "t = b.lowerings; assert b.emits == 'model' and b.runs and not b.trains; "
            "print(sorted(m for m in ('onnx', 'onnxruntime') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


def test_compile_writes_the_file_or_model_named_in_a_folder(tmp_path):
    spec = variant_spec("tiny", "input x: f32[3]\ndense(2)")
    graph = spec.model()
    assert ONNX.compile(spec, graph, tmp_path / "a.onnx") == tmp_path / "a.onnx"
    assert ONNX.compile(spec, graph, tmp_path, seed=1) == tmp_path / "tiny.onnx"
    a, b = (onnx.load(str(tmp_path / f)) for f in ("a.onnx", "tiny.onnx"))
    assert a.graph.initializer[0].raw_data != b.graph.initializer[0].raw_data  # the seed


# -- properties: window ops over random sizes, kernels, strides and padding ------------------

from hypothesis import HealthCheck, assume, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from dslc.diagnostics import DslError  # noqa: E402

WINDOW = st.fixed_dictionaries({
    "h": st.integers(1, 9), "w": st.integers(1, 9), "kh": st.integers(1, 4),
    "kw": st.integers(1, 4), "sh": st.integers(1, 3), "sw": st.integers(1, 3),
    "dilation": st.integers(1, 2), "padding": st.sampled_from(["valid", "same"]),
    "op": st.sampled_from(["conv2d", "maxpool2d", "avgpool2d"]),
})


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(WINDOW)
def test_window_ops_match_the_reference_for_any_geometry(p):
    strides = f"strides=[{p['sh']}, {p['sw']}]"
    kernel = f"kernel=[{p['kh']}, {p['kw']}]"
    if p["op"] == "conv2d":
        dilation = 1 if max(p["sh"], p["sw"]) > 1 else p["dilation"]
        layer = f"conv2d(3, {kernel}, {strides}, dilation={dilation}, padding={p['padding']})"
    else:
        layer = f"{p['op']}({kernel}, {strides}, padding={p['padding']})"
    try:
        graph = variant_spec("prop", f"input x: f32[{p['h']}, {p['w']}, 2]\n{layer}").model()
    except DslError:
        assume(False)  # the window does not fit: `dslc check` says so, nothing to lower
    assert_matches_reference(graph, init_weights(graph, 0), _batch(graph, n=2))


# -- batch_norm: BatchNormalization on channels at axis 1 --------------------------------------

BATCH_NORMS = [v for v in VARIANTS if v[0].startswith("batch_norm")]


@pytest.mark.parametrize("name,body", BATCH_NORMS, ids=[v[0] for v in BATCH_NORMS])
def test_batch_norm_shapes_are_inferred_as_checked(name, body):
    """ONNX shape inference gives every layer the shape `dslc check` gives (NCHW images
    transposed), with moving statistics as initializers."""
    from dslc.backends.onnx.lower import BATCH, NCHW, lower_graph

    graph = variant_spec(name, body).model()
    weights = _weights(graph)
    model = to_model(graph, weights)
    assert "BatchNormalization" in _ops(model)
    inits = {i.name for i in model.graph.initializer}
    bn = next(n for n in graph.nodes if n.op == "batch_norm")
    assert {f"{bn.name}.moving_mean", f"{bn.name}.moving_variance"} <= inits
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    infos = {v.name: v for v in (*inferred.graph.value_info, *inferred.graph.output)}
    layouts = lower_graph(graph, weights).layouts
    for node in graph.nodes:
        want = [BATCH, *(d if d is not None else None for d in node.type.shape)]
        if layouts.get(node.name) == NCHW:
            want = [want[0], want[3], want[1], want[2]]
        dims = [d.dim_param or d.dim_value for d in infos[node.name].type.tensor_type.shape.dim]
        assert [d if w is not None else None for d, w in zip(dims, want, strict=True)] == want, \
            node.name
# -- ONNX shape inference agrees with `dslc check` ---------------------------------------------

# The variants of the op families added together (conv1d, the 1-D pools, ...): every layer's
# value, as ONNX's strict shape inference sees it, has the checked shape.
SHAPED = [v for v in VARIANTS if v[0].startswith(("conv1d", "conv_groups", "depthwise",
                                                  "separable", "convT", "upsampling",
                                                  "zero_padding"))] + [
    ("conv1d_dynamic_time", "input x: f32[?, 2]\nc = conv1d(x, 3, kernel=2, padding=same)\n"
                            "m = maxpool1d(c, 2, strides=1)\nglobal_maxpool1d(m)"),
]


@pytest.mark.parametrize("name,body", SHAPED, ids=[v[0] for v in SHAPED])
def test_onnx_shape_inference_equals_the_checked_shapes(name, body):
    graph = variant_spec(name, body).model()
    weights = init_weights(graph, 0)
    lowered = lower_graph(graph, weights)
    model = to_model(graph, weights)
    inferred = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    dims = {v.name: [d.dim_value if d.HasField("dim_value") else None
                     for d in v.type.tensor_type.shape.dim]
            for v in [*inferred.graph.value_info, *inferred.graph.output]}
    for node in graph.nodes:
        if node.name not in dims:  # an identity at inference: no value of its own
            continue
        want = list(graph.type_of(node.name).shape)
        if lowered.layouts.get(node.name) == "nchw":
            want = [want[2], want[0], want[1]]
        assert dims[node.name][1:] == want, node.name


WINDOW_1D = st.fixed_dictionaries({
    "t": st.integers(1, 12), "k": st.integers(1, 4), "s": st.integers(1, 3),
    "dilation": st.integers(1, 3), "padding": st.sampled_from(["valid", "same", "causal"]),
    "op": st.sampled_from(["conv1d", "maxpool1d", "avgpool1d"]),
})


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(WINDOW_1D)
def test_1d_window_ops_match_the_reference_for_any_geometry(p):
    if p["op"] == "conv1d":
        dilation = 1 if p["s"] > 1 else p["dilation"]
        layer = f"conv1d(3, kernel={p['k']}, strides={p['s']}, dilation={dilation}, " \
                f"padding={p['padding']})"
    else:
        assume(p["padding"] != "causal")
        layer = f"{p['op']}({p['k']}, strides={p['s']}, padding={p['padding']})"
    try:
        graph = variant_spec("prop", f"input x: f32[{p['t']}, 2]\n{layer}").model()
    except DslError:
        assume(False)
    assert_matches_reference(graph, init_weights(graph, 0), _batch(graph, n=2))


TRANSPOSED = st.fixed_dictionaries({
    "h": st.integers(1, 6), "w": st.integers(1, 6), "kh": st.integers(1, 5),
    "kw": st.integers(1, 5), "sh": st.integers(1, 4), "sw": st.integers(1, 4),
    "padding": st.sampled_from(["valid", "same"]),
})


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(TRANSPOSED)
def test_conv2d_transpose_matches_the_reference_for_any_geometry(p):
    layer = (f"conv2d_transpose(3, kernel=[{p['kh']}, {p['kw']}], strides=[{p['sh']}, "
             f"{p['sw']}], padding={p['padding']})")
    graph = variant_spec("prop", f"input x: f32[{p['h']}, {p['w']}, 2]\n{layer}").model()
    assert_matches_reference(graph, init_weights(graph, 0), _batch(graph, n=2))
