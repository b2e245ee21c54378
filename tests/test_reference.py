"""The oracle tested: the reference interpreter on small cases whose numbers are worked out by
hand (in the comments) or by a closed formula written here, per op family."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import numpy as np
import pytest

from dslc.backends import get_backend
from dslc.backends.reference import interpret
from dslc.backends.reference.interpret import Interpreter
from dslc.compiler import compile_text
from dslc.diagnostics import DslError
from dslc.ir.graph import Graph, TensorType


def model(body: str, *inputs: str) -> Graph:
    lines = [f"input {i}" for i in inputs] + body.splitlines()
    text = "model m {\n" + "\n".join(f"    {line}" for line in lines) + "\n}\n"
    return compile_text(text, "<test>").model()


def run(graph: Graph, weights: dict[str, list] | None = None, *xs) -> np.ndarray:
    """The first output, float64, for the given inputs (each with its batch axis)."""
    w = {k: np.asarray(v, dtype=np.float32) for k, v in (weights or {}).items()}
    return Interpreter(graph, w, exact=True).predict_all([np.asarray(x, float) for x in xs])[0]


def image(rows: list[list[float]]) -> np.ndarray:
    """One single-channel image as a batch of one: [1, H, W, 1]."""
    return np.asarray(rows, float)[None, :, :, None]


NINE = [[1, 2, 3], [4, 5, 6], [7, 8, 9]]
SIXTEEN = [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12], [13, 14, 15, 16]]


def ones_kernel(kh: int, kw: int) -> np.ndarray:
    return np.ones((kh, kw, 1, 1))


# -- activations -------------------------------------------------------------------------------

def act(name: str, values: list[float]) -> np.ndarray:
    return run(model(name, f"x: f32[{len(values)}]"), None, [values])[0]


def test_relu_and_linear():
    assert act("relu", [-2, 0, 3]).tolist() == [0, 0, 3]
    assert act("linear", [-2, 0, 3]).tolist() == [-2, 0, 3]


def test_sigmoid():
    # 1 / (1 + e^-ln3) = 1 / (1 + 1/3) = 0.75; symmetric: 0.25
    np.testing.assert_allclose(act("sigmoid", [0, math.log(3), -math.log(3)]), [0.5, 0.75, 0.25])
    with np.errstate(over="raise", invalid="raise"):  # no overflow at the extremes
        np.testing.assert_allclose(act("sigmoid", [-800, 800]), [0, 1])


def test_tanh():
    # (2 - 1/2) / (2 + 1/2) = 0.6
    np.testing.assert_allclose(act("tanh", [math.log(2), 0]), [0.6, 0])


def test_gelu_is_the_exact_erf_form():
    # x * Phi(x); Phi(1) = 0.8413447460685429 (the tanh approximation gives 0.841192 at 1)
    np.testing.assert_allclose(act("gelu", [1, -1, 0]),
                               [0.8413447460685429, -0.15865525393145707, 0], rtol=1e-12)


def test_softmax_over_the_last_axis():
    # e^[0, ln2, ln5] = [1, 2, 5] / 8
    np.testing.assert_allclose(act("softmax", [0, math.log(2), math.log(5)]), [1 / 8, 2 / 8, 5 / 8])
    # an image: each pixel over its channels, never across width
    y = run(model("softmax", "x: f32[1, 2, 2]"), None, [[[[0, math.log(3)], [7, 7]]]])
    np.testing.assert_allclose(y[0, 0], [[0.25, 0.75], [0.5, 0.5]])
    # large values do not overflow
    np.testing.assert_allclose(act("softmax", [1000, 1000]), [0.5, 0.5])


def test_leaky_relu_alpha_comes_from_the_node():
    assert act("leaky_relu(0.2)", [-5, 0, 2]).tolist() == pytest.approx([-1, 0, 2])
    assert act("leaky_relu", [-5, 2]).tolist() == pytest.approx([-0.05, 2])  # pinned 0.01


def test_fused_leaky_relu_uses_the_pinned_default():
    g = model("l = dense(x, 1, activation=leaky_relu, use_bias=false)", "x: f32[1]")
    assert run(g, {"l.kernel": [[1]]}, [[-3]])[0, 0] == pytest.approx(-0.03)


# -- dense -------------------------------------------------------------------------------------

def test_dense_kernel_is_in_by_units():
    # [1, 2] @ [[1, 0, 2], [3, 1, -1]] = [7, 2, 0]; + bias [0.5, -1, 1]
    g = model("l = dense(x, 3)", "x: f32[2]")
    w = {"l.kernel": [[1, 0, 2], [3, 1, -1]], "l.bias": [0.5, -1, 1]}
    assert run(g, w, [[1, 2]]).tolist() == [[7.5, 1, 1]]


def test_dense_fused_activation_and_no_bias():
    g = model("l = dense(x, 2, activation=relu, use_bias=false)", "x: f32[2]")
    assert run(g, {"l.kernel": [[1, -1], [1, -1]]}, [[1, 2]]).tolist() == [[3, 0]]


def test_dense_on_a_sequence_applies_per_step():
    g = model("l = dense(x, 1)", "x: f32[2, 2]")
    y = run(g, {"l.kernel": [[1], [10]], "l.bias": [0.5]}, [[[1, 2], [3, 4]]])
    assert y.tolist() == [[[21.5], [43.5]]]


# -- conv2d ------------------------------------------------------------------------------------

def conv(body: str, shape: str, kernel, x, bias=None) -> np.ndarray:
    g = model(body, f"x: f32[{shape}]")
    w = {"l.kernel": kernel}
    if bias is not None:
        w["l.bias"] = bias
    return run(g, w, x)


def test_conv_valid_sums_each_window():
    # 2x2 windows of 1..9: 1+2+4+5 = 12, 2+3+5+6 = 16, 4+5+7+8 = 24, 5+6+8+9 = 28
    y = conv("l = conv2d(x, 1, kernel=2, use_bias=false)", "3, 3, 1", ones_kernel(2, 2),
             image(NINE))
    assert y[0, :, :, 0].tolist() == [[12, 16], [24, 28]]


def test_conv_same_even_kernel_pads_after():
    # TF: total padding 1 goes to the bottom/right, so (0, 0) still sums 1+2+4+5.
    # Last column: 3+6, 6+9, 9; last row: 7+8, 8+9, 9.
    y = conv("l = conv2d(x, 1, kernel=2, padding=same, use_bias=false)", "3, 3, 1",
             ones_kernel(2, 2), image(NINE))
    assert y[0, :, :, 0].tolist() == [[12, 16, 9], [24, 28, 15], [15, 17, 9]]


def test_conv_same_stride2_pads_after():
    # 4x4, k3, s2: output 2x2, total padding (2-1)*2 + 3 - 4 = 1, after.
    # (0,0): rows 0-2, cols 0-2 = 1+2+3+5+6+7+9+10+11 = 54; (0,1): cols 2-3 = 3+4+7+8+11+12 = 45
    # (1,0): rows 2-3 = 9+10+11+13+14+15 = 72; (1,1): 11+12+15+16 = 54
    y = conv("l = conv2d(x, 1, kernel=3, strides=2, padding=same, use_bias=false)", "4, 4, 1",
             ones_kernel(3, 3), image(SIXTEEN))
    assert y[0, :, :, 0].tolist() == [[54, 45], [72, 54]]


def test_conv_valid_strides_floor():
    # 4x4, k3, s2 valid: floor((4 - 3) / 2) + 1 = 1 output pixel
    y = conv("l = conv2d(x, 1, kernel=3, strides=2, use_bias=false)", "4, 4, 1", ones_kernel(3, 3),
             image(SIXTEEN))
    assert y[0, :, :, 0].tolist() == [[54]]


def test_conv_dilation_spreads_the_kernel():
    # k2 dilated by 2 covers the corners of 3x3: 1*1 + 3*2 + 7*3 + 9*4 = 64
    kernel = np.asarray([[1, 2], [3, 4]], float)[:, :, None, None]
    y = conv("l = conv2d(x, 1, kernel=2, dilation=2, use_bias=false)", "3, 3, 1", kernel,
             image(NINE))
    assert y[0, :, :, 0].tolist() == [[64]]


def test_conv_dilation_same():
    # k2 d2 spans 3: total padding 2 -> (1, 1); centre pixel sees 1+3+7+9 = 20, corner (0,0)
    # sees only x[1][1] = 5
    y = conv("l = conv2d(x, 1, kernel=2, dilation=2, padding=same, use_bias=false)", "3, 3, 1",
             ones_kernel(2, 2), image(NINE))
    assert y[0, 1, 1, 0] == 20 and y[0, 0, 0, 0] == 5


def test_conv_rect_kernel_and_strides():
    # kernel 1x2 = [1, 10], strides [1, 2], on 2x3: width floor((3-2)/2)+1 = 1
    # row 0: 1 + 10*2 = 21; row 1: 4 + 10*5 = 54
    kernel = np.asarray([[1, 10]], float)[:, :, None, None]
    y = conv("l = conv2d(x, 1, kernel=[1, 2], strides=[1, 2], use_bias=false)", "2, 3, 1", kernel,
             image([[1, 2, 3], [4, 5, 6]]))
    assert y[0, :, :, 0].tolist() == [[21], [54]]


def test_conv_kernel_is_kh_kw_in_out_and_bias_per_filter():
    # 1x1, in 2 channels [a, b] = [1, 10]; kernel[0, 0] = [[1, 2], [3, 4]] (in, out)
    # out = [a + 3b, 2a + 4b] + bias = [31, 42] + [0.5, -50]
    kernel = np.asarray([[1, 2], [3, 4]], float)[None, None]
    y = conv("l = conv2d(x, 2, kernel=1, activation=relu)", "1, 1, 2", kernel, [[[[1, 10]]]],
             bias=[0.5, -50])
    assert y[0, 0, 0].tolist() == [31.5, 0]  # relu clips 42 - 50


# -- pooling -----------------------------------------------------------------------------------

def pool(body: str, shape: str, x) -> np.ndarray:
    return run(model(body, f"x: f32[{shape}]"), None, x)[0, :, :, 0]


def test_maxpool_floor_mode_drops_the_remainder():
    assert pool("maxpool2d(2)", "3, 3, 1", image(NINE)).tolist() == [[5]]


def test_maxpool_same_pads_after_and_never_picks_padding():
    assert pool("maxpool2d(2, padding=same)", "3, 3, 1", image(NINE)).tolist() == [[5, 6], [8, 9]]
    negative = image([[-v for v in row] for row in NINE])
    # windows of -1..-9 with padding after: max(-1,-2,-4,-5), max(-3,-6), max(-7,-8), -9
    assert pool("maxpool2d(2, padding=same)", "3, 3, 1", negative).tolist() == [[-1, -3],
                                                                                 [-7, -9]]


def test_maxpool_strides_other_than_the_kernel():
    assert pool("maxpool2d(2, strides=1)", "3, 3, 1", image(NINE)).tolist() == [[5, 6], [8, 9]]


def test_avgpool_same_counts_real_pixels_only():
    # (1+2+4+5)/4 = 3, (3+6)/2 = 4.5, (7+8)/2 = 7.5, 9/1
    assert pool("avgpool2d(2, padding=same)", "3, 3, 1", image(NINE)).tolist() == [[3, 4.5],
                                                                                  [7.5, 9]]


def test_avgpool_same_3x3_pads_both_sides():
    # total padding 2 -> (1, 1); corner (1+2+4+5)/4 = 3, edge (1+2+3+4+5+6)/6 = 3.5, centre 45/9
    y = pool("avgpool2d(3, strides=1, padding=same)", "3, 3, 1", image(NINE))
    assert y[0].tolist() == [3, 3.5, 4] and y[1, 1] == 5


def test_avgpool_valid():
    assert pool("avgpool2d(2)", "3, 3, 1", image(NINE)).tolist() == [[3]]


def test_global_pools():
    x = [[[[1, -1], [2, -2]], [[3, -3], [6, -6]]]]  # [1, 2, 2, 2]
    g_avg = model("global_avgpool2d", "x: f32[2, 2, 2]")
    g_max = model("global_maxpool2d", "x: f32[2, 2, 2]")
    assert run(g_avg, None, x).tolist() == [[3, -3]]
    assert run(g_max, None, x).tolist() == [[6, -1]]


# -- flatten, reshape, dropout ---------------------------------------------------------------

HWC = [[[[100 * h + 10 * w + c for c in range(2)] for w in range(2)] for h in range(2)]]


def test_flatten_is_row_major_channels_last():
    y = run(model("flatten", "x: f32[2, 2, 2]"), None, HWC)
    assert y.tolist() == [[0, 1, 10, 11, 100, 101, 110, 111]]


def test_reshape_with_minus_one():
    y = run(model("reshape([-1, 2])", "x: f32[2, 2, 2]"), None, HWC)
    assert y.tolist() == [[[0, 1], [10, 11], [100, 101], [110, 111]]]
    back = run(model("flatten\nreshape([2, 2, 2])", "x: f32[2, 2, 2]"), None, HWC)
    assert back.tolist() == HWC


def test_dropout_is_the_identity():
    assert run(model("dropout(0.9)", "x: f32[3]"), None, [[1, 2, 3]]).tolist() == [[1, 2, 3]]


# -- merges ------------------------------------------------------------------------------------

def test_add_of_three():
    g = model("add(x, y, z)", "x: f32[2]", "y: f32[2]", "z: f32[2]")
    assert run(g, None, [[1, 2]], [[10, 20]], [[100, 200]]).tolist() == [[111, 222]]


def test_concat_axis_excludes_the_batch():
    g = model("concat(x, y, axis=0)", "x: f32[2, 1]", "y: f32[1, 1]")
    assert run(g, None, [[[1], [2]]], [[[3]]]).tolist() == [[[1], [2], [3]]]
    g = model("concat(x, y)", "x: f32[2, 1]", "y: f32[2, 2]")
    assert run(g, None, [[[1], [2]]], [[[3, 4], [5, 6]]]).tolist() == [[[1, 3, 4], [2, 5, 6]]]
    g = model("concat(x, y, axis=-2)", "x: f32[1, 1, 1]", "y: f32[1, 2, 1]")
    assert run(g, None, [[[[1]]]], [[[[2], [3]]]]).tolist() == [[[[1], [2], [3]]]]


# -- simple_rnn --------------------------------------------------------------------------------

def test_simple_rnn_recurrence_with_one_bias():
    # h1 = 2*1 + 0.5*0 + 1 = 3; h2 = 2*2 + 0.5*3 + 1 = 6.5; h3 = 2*3 + 0.5*6.5 + 1 = 10.25
    w = {"l.kernel": [[2]], "l.recurrent_kernel": [[0.5]],
         "l.bias": [1]}
    seq = model("l = simple_rnn(x, 1, activation=linear, return_sequences=true)", "x: f32[3, 1]")
    last = model("l = simple_rnn(x, 1, activation=linear)", "x: f32[3, 1]")
    x = [[[1], [2], [3]]]
    assert run(seq, w, x).tolist() == [[[3], [6.5], [10.25]]]
    assert run(last, w, x).tolist() == [[10.25]]


def test_simple_rnn_recurrent_kernel_is_units_by_units():
    # h @ R with R = [[1, 0], [1, 1]]: [h0 + h1, h1]. x = 1, kernel [[1, 2]]:
    # h1 = [1, 2]; h2 = [1, 2] + [1 + 2, 2] = [4, 4] (R transposed would give [2, 5])
    w = {"l.kernel": [[1, 2]], "l.recurrent_kernel": [[1, 0], [1, 1]]}
    g = model("l = simple_rnn(x, 2, activation=linear, use_bias=false)", "x: f32[2, 1]")
    assert run(g, w, [[[1], [1]]]).tolist() == [[4, 4]]


def test_simple_rnn_applies_its_activation_every_step():
    # tanh: h1 = tanh(1); h2 = tanh(1 + tanh(1))
    w = {"l.kernel": [[1]], "l.recurrent_kernel": [[1]], "l.bias": [0]}
    g = model("l = simple_rnn(x, 1)", "x: f32[2, 1]")
    np.testing.assert_allclose(run(g, w, [[[1], [1]]]), [[math.tanh(1 + math.tanh(1))]])


# -- the interpreter itself ------------------------------------------------------------------

def test_outputs_in_the_spec_order_float32_by_default():
    g = model("a = relu(x)\nb = dense(a, 1, use_bias=false)\noutput b, a", "x: f32[2]")
    ys = get_backend("reference").build(g, {"b.kernel": np.ones((2, 1), np.float32)}) \
        .predict_all(np.asarray([[-1, 2]], np.float32))
    assert [y.tolist() for y in ys] == [[[2]], [[0, 2]]]
    assert all(y.dtype == np.float32 for y in ys)


def test_missing_weights_are_named():
    g = model("l = dense(x, 1)", "x: f32[2]")
    with pytest.raises(DslError, match="l.kernel"):
        Interpreter(g, {})


def test_a_shape_rule_the_interpreter_disagrees_with_is_a_bug():
    g = model("maxpool2d(2)", "x: f32[3, 3, 1]")
    wrong = g.nodes[0].model_copy(update={"type": TensorType(shape=(2, 2, 1))})  # as ceil mode
    g = g.model_copy(update={"nodes": [wrong]})
    with pytest.raises(RuntimeError, match="shape rule"):
        run(g, None, image(NINE))


def test_the_interpreter_shares_no_code_with_the_ops_or_the_frameworks():
    tree = ast.parse(Path(interpret.__file__).read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not {m for m in imported if m.startswith(("dslc.ops", "dslc.backends.torch",
                                                     "dslc.backends.keras",
                                                     "dslc.backends.onnx"))}
