"""The op test matrix: ONE table of cases, every case on every backend that runs, held against
the reference interpreter (forward, max abs diff <= 1e-5 in float32), and on the backends that
train, the gradients checked against finite differences of the reference and pairwise across
frameworks. A new op is one row here; a new backend adds nothing (parametrized by
`backend_names`); a new activation is a row of its own by construction (`ACTIVATION_ROWS`)."""

from __future__ import annotations

import functools
import itertools
import typing
from dataclasses import dataclass

import numpy as np
import pytest

from dslc.backends import BACKENDS, backend_names, get_backend
from dslc.backends.base import Backend
from dslc.backends.reference.interpret import Interpreter
from dslc.compiler import compile_text
from dslc.diagnostics import DslError
from dslc.ir.graph import Graph
from dslc.ops import activation_names, all_ops, node_activation
from dslc.verify import DYNAMIC_DIM, seeded_batch
from dslc.weights import init_weights

Shape = tuple[int | None, ...]
INPUT_NAMES = ("x", "y", "z")


@dataclass(frozen=True)
class Case:
    id: str
    body: str  # one op call applied to `x`, or a tiny model body (inputs `x`, `y`, `z`)
    inputs: tuple[Shape, ...]  # one shape per input, batch excluded; None is `?`
    shift: float = 0.0  # added to the float inputs (e.g. all-negative values for max pooling)
    dtypes: tuple[str, ...] = ()  # one dtype per input (default f32): `i64` for ids
    # Where the ids' zeros (padding) fall: "" as `seeded_batch` puts them (the end of each
    # sample), or a pattern of `PADDING` (the start, the middle, one sample all padding).
    padding: str = ""
    # Id rows that replace the first seeded samples of input k (e.g. all padding); () keeps them.
    ids: tuple[tuple[tuple[int, ...], ...], ...] = ()

    def dtype(self, k: int) -> str:
        return self.dtypes[k] if k < len(self.dtypes) else "f32"


def case(id: str, body: str, *inputs: list[int | None], shift: float = 0.0,
         dtypes: tuple[str, ...] = (), padding: str = "",
         ids: tuple[list[list[int]], ...] = ()) -> Case:
    rows = tuple(tuple(tuple(r) for r in k) for k in ids)
    return Case(id, body, tuple(tuple(s) for s in inputs), shift, dtypes, padding, rows)


ACTS = activation_names()
IMG = [6, 5, 2]

# Every layer op with `activation=`: how a row applies each activation fused into it.
FUSED = {
    "dense": ("dense(4, activation={act})", [5]),
    "conv2d": ("conv2d(3, kernel=3, activation={act})", IMG),
    "simple_rnn": ("simple_rnn(4, activation={act}, return_sequences=true)", [5, 3]),
    "lstm": ("lstm(4, activation={act}, return_sequences=true)", [5, 3]),
    "gru": ("gru(4, activation={act}, return_sequences=true)", [5, 3]),
    "conv1d": ("conv1d(3, kernel=3, activation={act})", [7, 2]),
    "depthwise_conv2d": ("depthwise_conv2d(3, depth_multiplier=2, activation={act})", IMG),
    "separable_conv2d": ("separable_conv2d(3, kernel=3, activation={act})", IMG),
    "conv2d_transpose": ("conv2d_transpose(3, kernel=3, strides=2, activation={act})", [4, 3, 2]),
}


def takes(op: str, act: str) -> bool:
    """Whether `op`'s `activation=` accepts `act` (lstm and gru take the gate activations
    only, see dslc/ops/recurrent.py)."""
    return act in typing.get_args(all_ops()[op].Attrs.model_fields["activation"].annotation)


ACTIVATION_ROWS = [
    *[case(f"op_{act}", f"dense(4)\n{act}", [6]) for act in ACTS],
    *[case(f"{op}_{act}", body.format(act=act), shape)
      for op, (body, shape) in FUSED.items() for act in ACTS if takes(op, act)],
]

CASES: list[Case] = [
    *ACTIVATION_ROWS,
    # dense
    case("dense_no_bias", "dense(4, use_bias=false)", [5]),
    case("dense_sequence", "dense(5, activation=tanh)", [4, 3]),
    case("dense_dynamic_time", "dense(3)", [None, 3]),
    # conv2d: TF `same` pads the odd pixel after; even kernels and strides pad asymmetrically
    case("conv_valid", "conv2d(3, kernel=3)", [7, 7, 2]),
    case("conv_same", "conv2d(3, kernel=3, padding=same)", [7, 7, 2]),
    case("conv_same_stride2", "conv2d(3, kernel=3, strides=2, padding=same)", [8, 7, 2]),
    case("conv_valid_stride2_floor", "conv2d(3, kernel=3, strides=2)", [9, 8, 2]),
    case("conv_even_kernel_same", "conv2d(3, kernel=4, padding=same)", [7, 6, 2]),
    case("conv_even_kernel_same_stride2", "conv2d(3, kernel=2, strides=2, padding=same)",
         [9, 8, 2]),
    case("conv_k4_stride2_same", "conv2d(3, kernel=4, strides=2, padding=same)", [7, 6, 2]),
    case("conv_rect_kernel_strides", "conv2d(3, kernel=[2, 3], strides=[1, 2])", [7, 8, 2]),
    case("conv_rect_same", "conv2d(3, kernel=[3, 2], strides=[2, 1], padding=same)", [7, 6, 2]),
    case("conv_dilation", "conv2d(3, kernel=3, dilation=2)", [9, 9, 2]),
    case("conv_dilation_same", "conv2d(3, kernel=3, dilation=2, padding=same)", [9, 8, 2]),
    case("conv_dilation_rect_same", "conv2d(2, kernel=[2, 3], dilation=[2, 1], padding=same)",
         [6, 7, 3]),
    case("conv_no_bias", "conv2d(3, kernel=3, use_bias=false)", [6, 6, 2]),
    case("conv_1x1", "conv2d(4, kernel=1)", [3, 5, 3]),
    # pooling: floor mode; `same` never picks a padded value (max) nor counts one (avg)
    case("maxpool_valid_floor", "maxpool2d(2)", [7, 7, 2]),
    case("maxpool_same", "maxpool2d(2, padding=same)", [7, 7, 2]),
    case("maxpool_same_all_negative", "maxpool2d(2, padding=same)", [5, 5, 2], shift=-10.0),
    case("maxpool_strides", "maxpool2d(3, strides=2)", [8, 8, 2]),
    case("maxpool_same_strides1", "maxpool2d(3, strides=1, padding=same)", [6, 5, 2]),
    case("maxpool_rect_same", "maxpool2d([2, 3], strides=[2, 1], padding=same)", [5, 7, 2]),
    case("avgpool_valid_floor", "avgpool2d(2)", [7, 7, 2]),
    case("avgpool_same", "avgpool2d(2, padding=same)", [7, 7, 2]),
    case("avgpool_same_3x3_strides1", "avgpool2d(3, strides=1, padding=same)", [5, 6, 2]),
    case("avgpool_same_k3s2", "avgpool2d(3, strides=2, padding=same)", [7, 6, 2]),
    case("avgpool_rect_same", "avgpool2d([3, 2], strides=[1, 2], padding=same)", [5, 7, 2]),
    case("global_avgpool", "global_avgpool2d", [5, 4, 3]),
    case("global_maxpool", "global_maxpool2d", [5, 4, 3]),
    case("global_pool_after_conv", "conv2d(2, kernel=1)\nglobal_avgpool2d\ndense(3)", [4, 5, 3]),
    # conv2d groups: group j reads channels [j*in/g, (j+1)*in/g), makes filters likewise
    case("conv_groups", "conv2d(6, kernel=3, groups=2)", [6, 5, 4]),
    case("conv_groups_same_stride2", "conv2d(4, kernel=3, strides=2, padding=same, groups=4)",
         [7, 6, 4]),
    case("conv_groups_no_bias_dilation", "conv2d(3, kernel=2, dilation=2, groups=3, "
                                         "use_bias=false)", [6, 6, 3]),
    # depthwise: output channel c * depth_multiplier + m (Keras's order)
    case("depthwise_valid", "depthwise_conv2d(3)", [6, 5, 3]),
    case("depthwise_multiplier", "depthwise_conv2d(3, depth_multiplier=3)", [6, 5, 2]),
    case("depthwise_same_stride2", "depthwise_conv2d(3, strides=2, padding=same)", [7, 6, 2]),
    case("depthwise_even_same", "depthwise_conv2d([2, 4], depth_multiplier=2, padding=same)",
         [6, 7, 2]),
    case("depthwise_dilation_same", "depthwise_conv2d(3, dilation=2, padding=same)", [7, 7, 2]),
    case("depthwise_no_bias", "depthwise_conv2d(2, use_bias=false)", [5, 5, 3]),
    case("depthwise_one_channel_strides", "depthwise_conv2d(3, depth_multiplier=2, "
                                          "strides=[1, 2])", [5, 5, 1]),
    # oneDNN's fault (1 channel, row stride 1, column stride > 1, one output column)
    case("depthwise_one_channel_one_column", "depthwise_conv2d([1, 5], depth_multiplier=2, "
                                             "strides=[1, 6])", [5, 5, 1]),
    case("depthwise_one_column_same", "depthwise_conv2d([2, 5], depth_multiplier=2, "
                                      "strides=[1, 6], padding=same, activation=relu)", [4, 5, 1]),
    case("separable_one_channel_one_column", "separable_conv2d(3, kernel=[1, 5], "
                                             "depth_multiplier=2, strides=[1, 6])", [5, 5, 1]),
    case("separable_one_column_same_dilated", "separable_conv2d(2, kernel=[1, 3], "
                                              "depth_multiplier=3, strides=[1, 4], "
                                              "padding=same)", [5, 3, 1]),
    case("depthwise_flatten_dense", "depthwise_conv2d(3, depth_multiplier=2)\nflatten\n"
                                    "dense(3)", [5, 4, 2]),
    # separable: depthwise (no bias), then 1x1 to filters with the bias
    case("separable_valid", "separable_conv2d(4, kernel=3)", [6, 5, 3]),
    case("separable_multiplier_same", "separable_conv2d(3, kernel=3, depth_multiplier=2, "
                                      "padding=same)", [6, 5, 2]),
    case("separable_even_same_stride2", "separable_conv2d(3, kernel=2, strides=2, "
                                        "padding=same)", [7, 6, 2]),
    case("separable_dilation", "separable_conv2d(2, kernel=[3, 2], dilation=2)", [7, 7, 2]),
    case("separable_no_bias", "separable_conv2d(3, kernel=1, use_bias=false)", [4, 4, 3]),
    # conv2d_transpose: Keras's lengths (same: in * s; valid: (in - 1) * s + max(k, s)),
    # TF's crop (odd one after), zeros after when the kernel is shorter than the stride
    case("convT_valid", "conv2d_transpose(3, kernel=3)", [4, 5, 2]),
    case("convT_valid_stride2", "conv2d_transpose(3, kernel=3, strides=2)", [4, 3, 2]),
    case("convT_same_stride2_odd", "conv2d_transpose(3, kernel=3, strides=2, padding=same)",
         [4, 3, 2]),
    case("convT_same_stride2_even", "conv2d_transpose(2, kernel=4, strides=2, padding=same)",
         [3, 4, 2]),
    case("convT_same_k5_s2", "conv2d_transpose(2, kernel=5, strides=2, padding=same)", [3, 3, 2]),
    case("convT_same_stride1_even", "conv2d_transpose(2, kernel=2, padding=same)", [4, 3, 2]),
    case("convT_kernel_below_stride", "conv2d_transpose(2, kernel=2, strides=3)", [3, 2, 2]),
    case("convT_kernel_below_stride_same", "conv2d_transpose(2, kernel=[1, 2], strides=[3, 3], "
                                           "padding=same)", [3, 2, 2]),
    case("convT_rect", "conv2d_transpose(3, kernel=[2, 3], strides=[2, 1], padding=same)",
         [3, 4, 2]),
    case("convT_no_bias", "conv2d_transpose(3, kernel=2, strides=2, use_bias=false)", [3, 3, 2]),
    case("convT_decoder", "conv2d(4, kernel=3, strides=2, padding=same, activation=relu)\n"
                          "conv2d_transpose(2, kernel=3, strides=2, padding=same)", [6, 6, 2]),
    # upsampling2d: nearest repeats; bilinear as Keras (half-pixel centres, clamped edges)
    case("upsampling_nearest", "upsampling2d(2)", [3, 4, 2]),
    case("upsampling_nearest_rect", "upsampling2d([3, 1])", [3, 4, 2]),
    case("upsampling_bilinear", "upsampling2d(2, interpolation=bilinear)", [3, 4, 2]),
    case("upsampling_bilinear_rect", "upsampling2d([3, 5], interpolation=bilinear)", [3, 2, 2]),
    case("upsampling_after_conv", "conv2d(3, kernel=1)\nupsampling2d(2)\nconv2d(2, kernel=3)",
         [3, 3, 2]),
    case("upsampling_bilinear_flatten", "conv2d(2, kernel=2)\n"
                                        "upsampling2d(3, interpolation=bilinear)\nflatten\n"
                                        "dense(2)", [3, 3, 2]),
    # zero_padding2d: an int, [h, w] or [[top, bottom], [left, right]]
    case("zero_padding_int", "zero_padding2d(1)", [3, 4, 2]),
    case("zero_padding_pair", "zero_padding2d([2, 1])", [3, 4, 2]),
    case("zero_padding_sides", "zero_padding2d([[0, 2], [3, 1]])", [3, 4, 2]),
    case("zero_padding_after_conv", "conv2d(3, kernel=1)\nzero_padding2d([[1, 0], [0, 2]])\n"
                                    "conv2d(2, kernel=3, strides=2)", [4, 4, 2]),
    # conv1d over [time, channels]: TF `same` (odd step after), `causal` (all before)
    case("conv1d_valid", "conv1d(3, kernel=3)", [8, 2]),
    case("conv1d_same", "conv1d(3, kernel=3, padding=same)", [7, 2]),
    case("conv1d_same_even_kernel", "conv1d(3, kernel=4, padding=same)", [7, 2]),
    case("conv1d_same_stride2", "conv1d(3, kernel=3, strides=2, padding=same)", [8, 2]),
    case("conv1d_valid_stride2_floor", "conv1d(3, kernel=3, strides=2)", [10, 2]),
    case("conv1d_causal", "conv1d(3, kernel=3, padding=causal)", [6, 2]),
    case("conv1d_causal_dilation", "conv1d(2, kernel=2, dilation=3, padding=causal)", [7, 3]),
    case("conv1d_causal_stride2", "conv1d(2, kernel=3, strides=2, padding=causal)", [7, 3]),
    case("conv1d_dilation_same", "conv1d(3, kernel=3, dilation=2, padding=same)", [9, 2]),
    case("conv1d_no_bias", "conv1d(3, kernel=2, use_bias=false)", [6, 2]),
    case("conv1d_one_channel_one_step", "conv1d(2, kernel=3, strides=2)", [4, 1]),
    case("conv1d_dynamic_time", "conv1d(3, kernel=3, padding=same)\nglobal_maxpool1d", [None, 2]),
    case("conv1d_stack_dense", "conv1d(4, kernel=3, activation=relu)\nconv1d(2, kernel=2)\n"
                               "flatten\ndense(3)", [7, 2]),
    # 1-D pooling: floor mode, `same` never picks (max) nor counts (avg) a padded step
    case("maxpool1d_valid_floor", "maxpool1d(2)", [7, 3]),
    case("maxpool1d_same", "maxpool1d(2, padding=same)", [7, 3]),
    case("maxpool1d_same_all_negative", "maxpool1d(3, strides=1, padding=same)", [6, 2],
         shift=-10.0),
    case("maxpool1d_strides", "maxpool1d(3, strides=2)", [8, 2]),
    case("avgpool1d_valid_floor", "avgpool1d(2)", [7, 3]),
    case("avgpool1d_same", "avgpool1d(2, padding=same)", [7, 3]),
    case("avgpool1d_same_k3s1", "avgpool1d(3, strides=1, padding=same)", [6, 2]),
    case("avgpool1d_same_k2s1", "avgpool1d(2, strides=1, padding=same)", [6, 2]),
    case("avgpool1d_same_k3s2", "avgpool1d(3, strides=2, padding=same)", [8, 2]),
    case("global_avgpool1d", "global_avgpool1d", [5, 3]),
    case("global_maxpool1d", "global_maxpool1d", [5, 3]),
    case("global_avgpool1d_dynamic_time", "dense(3)\nglobal_avgpool1d", [None, 2]),
    case("global_maxpool1d_after_conv", "conv1d(4, kernel=2)\nglobal_maxpool1d\ndense(2)",
         [6, 3]),
    # flatten and reshape: row-major channels-last (the classic converter bug)
    case("flatten_after_conv", "conv2d(3, kernel=2)\nflatten\ndense(4)", [5, 4, 2]),
    case("flatten_input_image", "flatten\ndense(3)", [4, 3, 2]),
    case("flatten_sequence", "flatten", [4, 3]),
    case("reshape_vector_to_image", "reshape([2, 4, 3])\nconv2d(2, kernel=2)", [24]),
    case("reshape_minus_one", "conv2d(3, kernel=1)\nreshape([-1, 6])\nsimple_rnn(4)", [4, 4, 2]),
    case("reshape_image_to_image", "reshape([4, -1, 2])\nmaxpool2d(2)", [2, 8, 2]),
    case("reshape_output_sequence", "conv2d(4, kernel=1)\nreshape([-1, 4])", [3, 4, 2]),
    # permute (Keras's 1-based dims), repeat_vector, slice (Python's rules): values only move
    case("permute_sequence", "permute([2, 1])\ndense(3)", [4, 3]),
    case("permute_image_input", "permute([3, 1, 2])", [4, 3, 2]),
    case("permute_after_conv", "conv2d(3, kernel=1)\npermute([2, 1, 3])\nconv2d(2, kernel=2)",
         [4, 5, 2]),
    case("permute_conv_to_channels_first", "conv2d(3, kernel=1)\npermute([3, 1, 2])\nflatten",
         [3, 4, 2]),
    case("permute_identity_after_conv", "conv2d(2, kernel=1)\npermute([1, 2, 3])", [3, 4, 2]),
    case("repeat_vector", "dense(3)\nrepeat_vector(4)", [5]),
    case("repeat_vector_rnn", "repeat_vector(3)\nsimple_rnn(2, return_sequences=true)", [4]),
    case("slice_vector", "dense(6)\nslice(0, 1, 4)", [5]),
    case("slice_negative", "slice(-1, -3)", [4, 5]),
    case("slice_time_start", "slice(0, stop=2)\nsimple_rnn(3)", [5, 2]),
    case("slice_clamped", "slice(axis=1, start=-10, stop=10)", [3, 4]),
    case("slice_features_dynamic_time", "slice(1, 1)", [None, 3]),
    case("slice_dynamic_time", "slice(0, 1)\nsimple_rnn(3)", [None, 3]),
    case("slice_conv_height", "conv2d(3, kernel=1)\nslice(0, 1, -1)\nconv2d(2, kernel=2)",
         [5, 4, 2]),
    case("slice_conv_channels", "conv2d(4, kernel=1)\nslice(2, 1, 3)", [3, 4, 2]),
    case("slice_conv_width_to_flatten", "conv2d(3, kernel=1)\nslice(1, -2)\nflatten\ndense(2)",
         [3, 4, 2]),
    # dropout: the identity at inference
    case("dropout", "dense(4)\ndropout(0.5)\ndense(2)", [5]),
    case("dropout_last", "dense(4, activation=relu)\ndropout(0.5)", [5]),
    case("dropout_on_image", "conv2d(2, kernel=3)\ndropout(0.3)", [5, 5, 2]),
    # activation ops beyond the generated rows
    case("leaky_relu_alpha", "dense(4)\nleaky_relu(0.2)", [6]),
    case("leaky_relu_alpha_kw_image", "conv2d(2, kernel=1)\nleaky_relu(alpha=0.3)", [4, 4, 2]),
    case("elu_alpha", "dense(4)\nelu(0.5)", [6]),
    case("softmax_on_image", "conv2d(3, kernel=1)\nsoftmax", [4, 4, 2]),
    case("softmax_on_sequence", "dense(3)\nsoftmax", [4, 2]),
    case("activation_chain", "dense(4)\nleaky_relu(0.2)\ngelu\ntanh\nsigmoid\nrelu\nlinear", [5]),
    case("activation_on_input", "relu", [3, 4, 2]),
    # simple_rnn (Keras form: one bias)
    case("rnn_last_state", "simple_rnn(4)", [5, 3]),
    case("rnn_last_state_relu", "simple_rnn(4, activation=relu)", [5, 3]),
    case("rnn_no_bias", "simple_rnn(4, use_bias=false)", [5, 3]),
    case("rnn_stacked", "simple_rnn(4, return_sequences=true)\nsimple_rnn(3)", [6, 2]),
    case("rnn_sequences_dense", "simple_rnn(4, return_sequences=true)\ndense(2)", [5, 3]),
    case("rnn_dynamic_time", "simple_rnn(4)", [None, 3]),
    case("rnn_one_step", "simple_rnn(3)", [1, 2]),
    case("rnn_go_backwards", "simple_rnn(4, go_backwards=true)", [5, 3]),
    case("rnn_go_backwards_sequences", "simple_rnn(4, go_backwards=true, return_sequences=true)",
         [5, 3]),
    case("rnn_go_backwards_sigmoid", "simple_rnn(3, activation=sigmoid, go_backwards=true, "
                                     "return_sequences=true)", [4, 2]),
    # lstm (Keras form: gates i, f, c, o; one bias)
    case("lstm_last_state", "lstm(4)", [5, 3]),
    case("lstm_no_bias", "lstm(4, use_bias=false)", [5, 3]),
    case("lstm_no_unit_forget_bias", "lstm(4, unit_forget_bias=false)", [5, 3]),
    case("lstm_go_backwards", "lstm(4, go_backwards=true)", [5, 3]),
    case("lstm_go_backwards_sequences", "lstm(4, go_backwards=true, return_sequences=true)",
         [5, 3]),
    case("lstm_recurrent_tanh", "lstm(4, recurrent_activation=tanh)", [5, 3]),
    case("lstm_recurrent_relu", "lstm(3, recurrent_activation=relu, activation=linear)", [4, 2]),
    case("lstm_recurrent_linear_go_backwards",
         "lstm(3, recurrent_activation=linear, go_backwards=true, return_sequences=true)", [4, 2]),
    case("lstm_stacked", "lstm(4, return_sequences=true)\nlstm(3)", [6, 2]),
    case("lstm_sequences_dense", "lstm(4, return_sequences=true)\ndense(2)", [5, 3]),
    case("lstm_dynamic_time", "lstm(4)", [None, 3]),
    case("lstm_one_step", "lstm(3)", [1, 2]),
    # gru (Keras form: gates z, r, h; reset_after's two biases [input, recurrent])
    case("gru_last_state", "gru(4)", [5, 3]),
    case("gru_no_bias", "gru(4, use_bias=false)", [5, 3]),
    case("gru_go_backwards", "gru(4, go_backwards=true)", [5, 3]),
    case("gru_go_backwards_sequences", "gru(4, go_backwards=true, return_sequences=true)",
         [5, 3]),
    case("gru_reset_before", "gru(4, reset_after=false)", [5, 3]),
    case("gru_reset_before_sequences_no_bias",
         "gru(4, reset_after=false, use_bias=false, return_sequences=true)", [5, 3]),
    case("gru_reset_before_go_backwards",
         "gru(3, reset_after=false, go_backwards=true, return_sequences=true)", [4, 2]),
    case("gru_reset_before_relu", "gru(3, reset_after=false, activation=relu)", [4, 2]),
    case("gru_recurrent_tanh", "gru(4, recurrent_activation=tanh)", [5, 3]),
    case("gru_recurrent_linear_go_backwards",
         "gru(3, recurrent_activation=linear, go_backwards=true, return_sequences=true)", [4, 2]),
    case("gru_stacked", "gru(4, return_sequences=true)\ngru(3)", [6, 2]),
    case("gru_over_lstm", "lstm(4, return_sequences=true)\ngru(3, return_sequences=true)\n"
                          "simple_rnn(2, go_backwards=true)", [5, 2]),
    case("gru_dynamic_time", "gru(4)", [None, 3]),
    case("gru_one_step", "gru(3)", [1, 2]),
    # bidirectional (Keras's Bidirectional): forward_* and backward_* weights, the backward
    # sequence flipped back to time order before the merge
    *[case(f"{op}_bidirectional_{mode}{tail}", f"{op}(3, bidirectional={mode}{attrs})", [4, 2])
      for op in ("simple_rnn", "lstm", "gru") for mode in ("concat", "sum", "mul", "ave")
      for tail, attrs in (("", ""), ("_sequences", ", return_sequences=true"))],
    case("rnn_bidirectional_gelu_sequences",
         "simple_rnn(3, activation=gelu, bidirectional=concat, return_sequences=true)", [4, 2]),
    case("lstm_bidirectional_linear_gates", "lstm(3, recurrent_activation=linear, "
                                            "bidirectional=sum, return_sequences=true)", [4, 2]),
    case("gru_bidirectional_reset_before_no_bias",
         "gru(3, reset_after=false, use_bias=false, bidirectional=ave, return_sequences=true)",
         [4, 2]),
    case("lstm_bidirectional_stacked", "lstm(3, bidirectional=concat, return_sequences=true)\n"
                                       "gru(2, bidirectional=mul)\ndense(2)", [5, 2]),
    case("gru_bidirectional_dynamic_time", "gru(3, bidirectional=concat, return_sequences=true)\n"
                                           "lstm(2, bidirectional=concat)", [None, 2]),
    # layer_norm: the last axis (an image's channels, NCHW inside torch and ONNX), epsilon pinned
    case("layer_norm", "layer_norm", [6]),
    case("layer_norm_sequence_epsilon", "dense(4)\nlayer_norm(epsilon=0.5)", [5, 3]),
    case("layer_norm_dynamic_time", "layer_norm", [None, 4]),
    case("layer_norm_after_conv", "conv2d(3, kernel=1)\nlayer_norm\nconv2d(2, kernel=1)", IMG),
    case("layer_norm_input_image", "layer_norm(center=false)\nflatten", [3, 4, 2]),
    case("layer_norm_no_scale", "conv2d(3, kernel=1)\nlayer_norm(scale=false)", IMG),
    case("layer_norm_plain", "layer_norm(center=false, scale=false)", [4, 5]),
    # batch_norm at inference: the moving statistics, per channel (the last axis)
    case("batch_norm", "batch_norm", [6]),
    case("batch_norm_sequence_epsilon", "dense(4)\nbatch_norm(epsilon=0.5, momentum=0.9)", [5, 3]),
    case("batch_norm_dynamic_time", "batch_norm", [None, 4]),
    case("batch_norm_after_conv", "conv2d(3, kernel=1)\nbatch_norm\nconv2d(2, kernel=1)", IMG),
    case("batch_norm_input_image", "batch_norm(center=false)\nflatten", [3, 4, 2]),
    case("batch_norm_no_scale", "conv2d(3, kernel=1, use_bias=false)\nbatch_norm(scale=false)\n"
                                "relu", IMG),
    case("batch_norm_plain", "batch_norm(center=false, scale=false)\ndense(2)", [4, 5]),
    # merges: concat's axis counts from the first axis after the batch
    case("add_two_inputs", "add(x, y)", [4, 3], [4, 3]),
    case("add_three_inputs", "add(x, y, z)", [2, 3], [2, 3], [2, 3]),
    case("add_three", "a = dense(x, 3)\nb = dense(x, 3)\nc = dense(x, 3)\nadd(a, b, c)", [4]),
    case("add_input_and_conv", "h = conv2d(x, 2, kernel=3, padding=same)\nadd(x, h)", [5, 5, 2]),
    case("concat_channels", "a = conv2d(x, 3, kernel=1)\nb = conv2d(x, 2, kernel=1)\n"
                            "concat(a, b)\nflatten", [6, 6, 2]),
    case("concat_height", "a = conv2d(x, 3, kernel=1)\nb = conv2d(x, 3, kernel=1)\n"
                          "concat(a, b, axis=0)\nflatten", [4, 4, 2]),
    case("concat_width_input_and_conv", "a = conv2d(x, 3, kernel=1)\nconcat(x, a, axis=1)",
         [4, 4, 3]),
    case("concat_negative_axis", "concat(x, y, axis=-2)", [3, 2, 2], [3, 1, 2]),
    case("concat_vectors", "a = dense(x, 3)\nb = dense(x, 2)\nconcat(a, b)", [4]),
    case("concat_three_inputs", "concat(x, y, z)", [2], [3], [1]),
    case("concat_time", "concat(x, y, axis=0)\nsimple_rnn(3)", [2, 3], [4, 3]),
    # element-wise merges: equal shapes, mixed layouts (an input and a conv's NCHW value)
    case("multiply_two", "multiply(x, y)", [4, 3], [4, 3]),
    case("multiply_gate", "g = dense(x, 4, activation=sigmoid)\nh = dense(x, 4)\nmultiply(g, h)",
         [5]),
    case("multiply_three_mixed_layouts", "a = conv2d(x, 2, kernel=1)\nmultiply(a, x, y)",
         [4, 4, 2], [4, 4, 2]),
    case("subtract_two", "subtract(x, y)", [5], [5]),
    case("subtract_input_from_conv", "h = conv2d(x, 2, kernel=3, padding=same)\nsubtract(h, x)",
         [5, 5, 2]),
    case("average_three", "average(x, y, z)", [2, 3], [2, 3], [2, 3]),
    case("average_mixed_layouts", "a = conv2d(x, 2, kernel=1)\naverage(x, a)", [3, 4, 2]),
    case("maximum_two", "maximum(x, y)", [6], [6]),
    case("maximum_three_dense", "a = dense(x, 3)\nb = dense(x, 3)\nc = dense(x, 3)\n"
                                "maximum(a, b, c)", [4]),
    case("maximum_mixed_layouts", "a = conv2d(x, 2, kernel=1)\nmaximum(x, a)", [3, 4, 2]),
    case("minimum_three", "minimum(x, y, z)", [3, 2], [3, 2], [3, 2]),
    case("minimum_mixed_layouts", "a = conv2d(x, 2, kernel=1)\nminimum(a, x)", [4, 3, 2]),
    # multi_head_attention (Keras's layout); causal: query i sees keys 0..i, also when the
    # lengths differ (top-left aligned)
    case("mha_self", "multi_head_attention(x, x, heads=2, key_dim=4)", [5, 6]),
    case("mha_self_positional", "multi_head_attention(x, x, 3, 2)", [4, 5]),
    case("mha_cross_lengths", "multi_head_attention(x, y, heads=2, key_dim=3)", [5, 4], [3, 6]),
    case("mha_key_given", "multi_head_attention(x, y, z, heads=2, key_dim=3, value_dim=2, "
                          "output_dim=5)", [4, 3], [5, 2], [5, 4]),
    case("mha_causal", "multi_head_attention(x, x, heads=2, key_dim=3, causal=true)", [5, 4]),
    case("mha_causal_longer_query", "multi_head_attention(x, y, heads=2, key_dim=3, causal=true)",
         [6, 4], [3, 2]),
    case("mha_causal_shorter_query", "multi_head_attention(x, y, heads=1, key_dim=3, "
                                     "causal=true)", [3, 4], [5, 2]),
    case("mha_no_bias", "multi_head_attention(x, y, heads=2, key_dim=3, use_bias=false)",
         [4, 3], [5, 2]),
    case("mha_dynamic_time", "multi_head_attention(x, x, heads=2, key_dim=3, causal=true)",
         [None, 4]),
    case("mha_dynamic_cross", "multi_head_attention(x, y, heads=2, key_dim=2)", [None, 4],
         [None, 3]),
    case("mha_one_head", "multi_head_attention(x, x, heads=1, key_dim=5, value_dim=3)", [4, 6]),
    case("mha_dropout", "multi_head_attention(x, x, heads=2, key_dim=2, dropout=0.5)", [4, 3]),
    case("mha_encoder_block", "h = multi_head_attention(x, x, heads=2, key_dim=3)\n"
                              "n = layer_norm(add(x, h))\nf = dense(n, 6, activation=relu)\n"
                              "dense(f, 4)\nflatten\ndense(2, activation=softmax)", [5, 4]),
    # multi_head_attention with padding masks (Keras's): a padded query step sees nothing (uniform
    # weights; zeros with dropout, Keras's masked softmax), no step sees a padded value/key step
    case("mha_masked_self", "e = embedding(x, 10, 4, mask_zero=true)\n"
                            "multi_head_attention(e, e, heads=2, key_dim=3)", [6], dtypes=("i64",)),
    case("mha_masked_self_dropout", "e = embedding(x, 10, 4, mask_zero=true)\n"
                                    "multi_head_attention(e, e, heads=2, key_dim=3, dropout=0.3)",
         [6], dtypes=("i64",)),
    case("mha_masked_value_only", "q = dense(y, 4)\ne = embedding(x, 9, 4, mask_zero=true)\n"
                                  "multi_head_attention(q, e, heads=2, key_dim=2)", [5], [3, 3],
         dtypes=("i64", "f32")),
    case("mha_masked_query_only", "e = embedding(x, 9, 4, mask_zero=true)\nv = dense(y, 3)\n"
                                  "multi_head_attention(e, v, heads=2, key_dim=2)", [5], [4, 2],
         dtypes=("i64", "f32")),
    case("mha_masked_query_only_dropout", "e = embedding(x, 9, 4, mask_zero=true)\n"
                                          "multi_head_attention(e, y, heads=1, key_dim=2, "
                                          "dropout=0.5)", [5], [4, 2], dtypes=("i64", "f32")),
    case("mha_masked_key_given", "e = embedding(x, 9, 4, mask_zero=true)\n"
                                 "v = embedding(y, 7, 3, mask_zero=true)\n"
                                 "k = embedding(z, 8, 2, mask_zero=true)\n"
                                 "multi_head_attention(e, v, k, heads=2, key_dim=2)", [4], [5], [5],
         dtypes=("i64", "i64", "i32")),
    case("mha_masked_causal", "e = embedding(x, 10, 4, mask_zero=true)\n"
                              "multi_head_attention(e, e, heads=2, key_dim=3, causal=true)", [6],
         dtypes=("i64",)),
    case("mha_masked_causal_dropout_dynamic", "e = embedding(x, 10, 4, mask_zero=true)\n"
                                              "multi_head_attention(e, e, heads=2, key_dim=2, "
                                              "causal=true, dropout=0.2)", [None],
         dtypes=("i64",)),
    case("mha_masked_cross_causal", "e = embedding(x, 9, 4, mask_zero=true)\n"
                                    "v = embedding(y, 7, 3, mask_zero=true)\n"
                                    "multi_head_attention(e, v, heads=2, key_dim=2, causal=true)",
         [4], [6], dtypes=("i64", "i64")),
    case("mha_masked_middle_zeros", "e = embedding(x, 10, 4, mask_zero=true)\n"
                                    "multi_head_attention(e, e, heads=2, key_dim=3)", [6],
         dtypes=("i64",), ids=([[3, 0, 5, 0, 2, 1], [0, 4, 0, 0, 7, 1]],)),
    case("mha_masked_all_padding", "e = embedding(x, 10, 4, mask_zero=true)\n"
                                   "multi_head_attention(e, e, heads=2, key_dim=3)", [5],
         dtypes=("i64",), ids=([[0, 0, 0, 0, 0]],)),
    case("mha_masked_all_padding_dropout", "e = embedding(x, 10, 4, mask_zero=true)\n"
                                           "multi_head_attention(e, e, heads=2, key_dim=3, "
                                           "dropout=0.1)", [5], dtypes=("i64",),
         ids=([[0, 0, 0, 0, 0]],)),
    case("mha_masked_all_padding_value", "e = embedding(y, 6, 3, mask_zero=true)\n"
                                         "multi_head_attention(x, e, heads=2, key_dim=2)", [3, 4], [4],
         dtypes=("f32", "i64"), ids=((), [[0, 0, 0, 0]])),
    case("mha_masked_then_dense", "e = embedding(x, 10, 4, mask_zero=true)\n"
                                  "h = multi_head_attention(e, e, heads=2, key_dim=3)\n"
                                  "dense(h, 3)", [6], dtypes=("i64",)),
    case("mha_masked_encoder_block", "e = embedding(x, 10, 6, mask_zero=true)\n"
                                     "h = multi_head_attention(e, e, heads=2, key_dim=3)\n"
                                     "n = layer_norm(add(e, h))\nf = dense(n, 6, activation=relu)\n"
                                     "layer_norm(add(n, dense(f, 6)))", [6], dtypes=("i64",)),
    # Keras strips the masks off the tensors an attention layer is given: a later layer reading
    # the same tensors must still be masked
    case("mha_masked_shared_inputs", "e = embedding(x, 10, 4, mask_zero=true)\n"
                                     "a = multi_head_attention(e, e, heads=2, key_dim=2)\n"
                                     "b = multi_head_attention(e, a, heads=1, key_dim=3)\n"
                                     "add(a, b)", [5], dtypes=("i64",)),
    case("mha_masked_encoder_decoder", "e = embedding(x, 10, 4, mask_zero=true)\n"
                                       "d = embedding(y, 8, 4, mask_zero=true)\n"
                                       "enc = multi_head_attention(e, e, heads=2, key_dim=2)\n"
                                       "dec = multi_head_attention(d, d, heads=2, key_dim=2, "
                                       "causal=true)\n"
                                       "cross = multi_head_attention(dec, enc, heads=2, key_dim=2)\n"
                                       "dense(cross, 3)", [5], [4], dtypes=("i64", "i32")),
    # embedding: integer ids (i32 or i64) → vectors; seeded ids stay below vocab, with padding
    case("embedding_sequence", "embedding(10, 4)", [6], dtypes=("i64",)),
    case("embedding_i32_dense", "embedding(7, 3)\ndense(2)", [5], dtypes=("i32",)),
    case("embedding_scalar_id", "embedding(5, 3)", [], dtypes=("i64",)),
    case("embedding_dynamic_time_rnn", "embedding(9, 3)\nsimple_rnn(4)", [None], dtypes=("i64",)),
    case("embedding_grid", "embedding(6, 2)\nconv2d(3, kernel=2)", [4, 3], dtypes=("i64",)),
    case("embedding_and_float_input", "e = embedding(x, 8, 3)\nf = dense(y, 3)\nadd(e, f)",
         [4], [4, 2], dtypes=("i64", "f32")),
    # padding masks (mask_zero): the ops that keep a mask compute the same numbers
    case("embedding_mask_zero_dense", "embedding(10, 4, mask_zero=true)\ndense(3)", [6],
         dtypes=("i64",)),
    case("masked_keep_chain", "e = embedding(x, 10, 4, mask_zero=true)\n"
                              "f = embedding(y, 7, 4, mask_zero=true)\n"
                              "s = add(e, f)\nn = layer_norm(s)\nd = dropout(n, 0.2)\n"
                              "p = position_embedding(d, 6)\nq = sinusoidal_position(p)\n"
                              "c = concat(q, e)\nrelu(c)", [5], [5], dtypes=("i64", "i32")),
    # global_avgpool1d uses a mask: the mean over real steps only (Keras's)
    case("masked_global_avgpool1d", "e = embedding(x, 9, 4, mask_zero=true)\n"
                                    "h = dense(e, 3, activation=tanh)\nglobal_avgpool1d(h)",
         [6], dtypes=("i64",)),
    case("masked_global_avgpool1d_dynamic", "embedding(9, 3, mask_zero=true)\nglobal_avgpool1d",
         [None], dtypes=("i64",)),
    # recurrent layers under a padding mask (Keras: a padded step carries the state and the
    # last output over, zeros before the first real step), zeros at the end, start, middle
    *[case(f"{op}_mask{suffix}", f"embedding(9, 3, mask_zero=true)\n{op}(4{attrs})", [6],
           dtypes=("i64",), padding=padding)
      for op in ("simple_rnn", "lstm", "gru")
      for suffix, attrs, padding in [
          ("_end_sequences", ", return_sequences=true", ""),
          ("_middle", "", "middle"),
          ("_middle_sequences", ", return_sequences=true", "middle"),
          ("_start_backwards", ", go_backwards=true", "start"),
          ("_middle_backwards_sequences", ", go_backwards=true, return_sequences=true",
           "middle"),
      ]],
    # the step loops (activations the fused kernels lack) under a mask
    case("simple_rnn_mask_loop", "embedding(9, 3, mask_zero=true)\n"
         "simple_rnn(4, activation=sigmoid, return_sequences=true)", [6], dtypes=("i64",),
         padding="middle"),
    case("lstm_mask_loop_backwards", "embedding(9, 3, mask_zero=true)\n"
         "lstm(4, activation=relu, go_backwards=true)", [6], dtypes=("i64",), padding="start"),
    case("gru_mask_reset_before", "embedding(9, 3, mask_zero=true)\n"
         "gru(4, reset_after=false, return_sequences=true)", [6], dtypes=("i64",),
         padding="middle"),
    case("recurrent_mask_stacked", "embedding(9, 3, mask_zero=true)\ndense(3, activation=relu)\n"
         "lstm(4, return_sequences=true)\ngru(3, return_sequences=true, go_backwards=true)\n"
         "simple_rnn(2)\ndense(2)", [7], dtypes=("i64",), padding="middle"),
    case("recurrent_mask_dynamic_time", "embedding(9, 3, mask_zero=true)\nlstm(3)", [None],
         dtypes=("i64",), padding="start"),
    # bidirectional layers under a padding mask (Keras's Bidirectional: both layers get the
    # mask, the backward one reads it last step first; a returned sequence is zero at padded
    # steps), zeros at the end, start, middle (one sample all padding)
    *[case(f"{op}_bidirectional_{mode}_mask{tail}{'_' + padding if padding else ''}",
           f"embedding(9, 3, mask_zero=true)\n{op}(3, bidirectional={mode}{attrs})", [6],
           dtypes=("i64",), padding=padding)
      for op in ("simple_rnn", "lstm", "gru") for mode in ("concat", "sum", "mul", "ave")
      for tail, attrs in (("", ""), ("_sequences", ", return_sequences=true"))
      for padding in ("", "start", "middle")],
    case("rnn_bidirectional_mask_loop", "embedding(9, 3, mask_zero=true)\n"
         "simple_rnn(3, activation=gelu, bidirectional=concat, return_sequences=true)", [6],
         dtypes=("i64",), padding="middle"),
    case("lstm_bidirectional_mask_loop", "embedding(9, 3, mask_zero=true)\n"
         "lstm(3, recurrent_activation=linear, bidirectional=ave)", [6], dtypes=("i64",),
         padding="start"),
    case("gru_bidirectional_mask_reset_before", "embedding(9, 3, mask_zero=true)\n"
         "gru(3, reset_after=false, bidirectional=sum, return_sequences=true)", [6],
         dtypes=("i64",), padding="middle"),
    case("bidirectional_mask_stacked", "embedding(9, 3, mask_zero=true)\n"
         "lstm(3, bidirectional=concat, return_sequences=true)\n"
         "gru(2, bidirectional=mul, return_sequences=true)\nsimple_rnn(2, bidirectional=sum)\n"
         "dense(2)", [7], dtypes=("i64",), padding="middle"),
    case("bidirectional_mask_stacked_mixed", "embedding(9, 3, mask_zero=true)\n"
         "gru(3, return_sequences=true, go_backwards=true)\n"
         "lstm(2, bidirectional=ave, return_sequences=true)\ndense(2)", [7], dtypes=("i64",),
         padding="start"),
    # dropout / recurrent_dropout (Keras's, training only): inference is the plain layer
    *[case(f"{op}_dropout{tail}", f"{op}(3{attrs})", [5, 2])
      for op in ("simple_rnn", "lstm", "gru")
      for tail, attrs in (("", ", dropout=0.3"), ("_recurrent", ", recurrent_dropout=0.4"),
                          ("_both_sequences", ", dropout=0.2, recurrent_dropout=0.3, "
                                              "return_sequences=true"),
                          ("_bidirectional", ", dropout=0.3, recurrent_dropout=0.2, "
                                             "bidirectional=concat"))],
    case("lstm_dropout_loop_masked", "embedding(9, 3, mask_zero=true)\n"
         "lstm(3, recurrent_activation=linear, dropout=0.2, recurrent_dropout=0.2, "
         "go_backwards=true, return_sequences=true)", [6], dtypes=("i64",), padding="middle"),
    case("gru_dropout_reset_before", "gru(3, reset_after=false, dropout=0.1, "
                                     "recurrent_dropout=0.5)", [4, 2]),
    case("bidirectional_mask_dynamic_time", "embedding(9, 3, mask_zero=true)\n"
         "gru(3, bidirectional=concat, return_sequences=true)\nlstm(2, bidirectional=concat)",
         [None], dtypes=("i64",), padding="middle"),
    # positions added to sequences: learned (x + embeddings[:T]) and sin/cos (Vaswani et al.)
    case("position_embedding", "position_embedding(6)", [6, 4]),
    case("position_embedding_shorter", "embedding(10, 4)\nposition_embedding(8)", [5],
         dtypes=("i64",)),
    case("position_embedding_dynamic_time", "position_embedding(7)", [None, 3]),
    case("sinusoidal_position", "sinusoidal_position", [7, 6]),
    case("sinusoidal_position_odd_features", "sinusoidal_position(max_wavelength=100.0)",
         [5, 5]),
    case("sinusoidal_position_dynamic_time", "dense(4)\nsinusoidal_position", [None, 3]),
    # graphs with branches, several inputs and outputs
    case("residual_block", "c = conv2d(x, 4, kernel=3, padding=same, activation=relu)\n"
                           "h = conv2d(c, 4, kernel=3, padding=same)\nr = relu(add(c, h))\n"
                           "g = global_avgpool2d(r)\ndense(3, activation=softmax)", [6, 6, 3]),
    case("two_heads", "h = dense(x, 6, activation=relu)\nc = dense(y, 3, activation=tanh)\n"
                      "j = concat(h, c)\nscore = dense(j, 1)\n"
                      "label = dense(j, 3, activation=softmax)\noutput score, label", [5], [2]),
    case("output_feeds_a_layer", "h = conv2d(x, 3, kernel=3, padding=same)\n"
                                 "p = maxpool2d(h, 2)\noutput h, p", [6, 6, 2]),
    case("image_and_vector_inputs", "f = flatten(y)\ndense(concat(x, f), 2, activation=tanh)",
         [4], [2, 3]),
]

BATCH = 3
FORWARD_ATOL = 1e-5
# Gradients are float32 sums over the batch, pixels and units (at most a few hundred terms
# here), accumulated in a different order by each framework: their rounding differs by about
# n * 2^-24 ~ 1e-5 of the largest term. 1e-4 of the largest gradient of a key is ten times that,
# while a wrong formula or layout is off by O(1) of it.
GRAD_RTOL = 1e-4
GRAD_FLOOR = 1e-3  # magnitude below which a key's gradients count as this large
FD_STEP = 1e-7  # float64 central differences: truncation ~1e-14, rounding ~1e-8

FRAMEWORKS = [n for n in backend_names(runs=True) if n != "reference"]
TRAINERS = backend_names(trains=True)


def _source(c: Case) -> str:
    lines = [f"input {name}: {c.dtype(k)}[{', '.join('?' if d is None else str(d) for d in shape)}]"
             for k, (name, shape) in enumerate(zip(INPUT_NAMES, c.inputs, strict=False))]
    body = "\n    ".join([*lines, *c.body.splitlines()])
    return f"model {c.id} {{\n    {body}\n}}\n"


@functools.cache
def graph_of(c: Case) -> Graph:
    return compile_text(_source(c), f"<{c.id}>").model()


@functools.cache
def _weights(c: Case) -> dict[str, np.ndarray]:
    graph = graph_of(c)
    weights = init_weights(graph, seed=1)
    rng = np.random.default_rng(11)
    # Constant initialisers (biases at 0, scales at 1) would hide a parameter wired to the
    # wrong place: give those parameters values.
    for key, p in graph.param_specs().items():
        if key.endswith(".moving_variance"):  # a variance: positive
            weights[key] = rng.uniform(0.5, 2.0, p.shape).astype(np.float32)
        elif p.init in ("zeros", "ones"):
            weights[key] = rng.normal(0, 0.5, p.shape).astype(np.float32)
    return weights


# Case.padding: which steps of sample k (of BATCH = 3) are padding, given the length T
PADDING = {
    "start": lambda k, t: np.arange(t) < [1, 3, t][k],  # sample 2 all padding
    "middle": lambda k, t: [(np.arange(t) % 2) == 1,  # every other step
                            (np.arange(t) > 0) & (np.arange(t) < t - 1),  # real at both ends
                            np.ones(t, bool)][k],  # all padding
}


def _padded(ids: np.ndarray, padding: str) -> np.ndarray:
    if not padding or ids.ndim != 2:
        return ids
    out = np.where(ids == 0, 1, ids)  # no zeros but the pattern's
    for k in range(len(out)):
        out[k, PADDING[padding](k, out.shape[1])] = 0
    return out


@functools.cache
def _batch(c: Case) -> tuple[np.ndarray, ...]:
    xs = [x + np.float32(c.shift) if x.dtype == np.float32 else _padded(x, c.padding)
          for x in seeded_batch(graph_of(c), BATCH, seed=0)]
    for k, rows in enumerate(c.ids):
        if rows:
            xs[k][:len(rows)] = np.asarray(rows, xs[k].dtype)
    return tuple(xs)


def _feed(xs: tuple[np.ndarray, ...]) -> np.ndarray | list[np.ndarray]:
    return xs[0] if len(xs) == 1 else list(xs)


@functools.cache
def _reference(c: Case) -> tuple[np.ndarray, ...]:
    runtime = Interpreter(graph_of(c), _weights(c), exact=True)
    return tuple(runtime.predict_all(_feed(_batch(c))))


def _installed(name: str) -> Backend:
    backend = get_backend(name)
    try:
        backend.require()
    except DslError as exc:
        pytest.skip(str(exc))
    return backend


IDS = [c.id for c in CASES]


# -- the table covers the registry -----------------------------------------------------------

def test_case_ids_are_unique():
    assert len(set(IDS)) == len(IDS)


def test_every_registered_op_is_in_a_row():
    used = {n.op for c in CASES for n in graph_of(c).nodes}
    assert set(all_ops()) - used == set()


def test_every_activation_is_a_row_as_op_and_fused_into_every_layer_that_takes_one():
    fused_ops = {name for name, op in all_ops().items()
                 if op.category != "activation" and "activation" in op.Attrs.model_fields}
    assert fused_ops == set(FUSED), "give every layer with `activation=` a FUSED entry"
    nodes = [n for c in CASES for n in graph_of(c).nodes]
    for act in ACTS:
        assert any(n.op == act for n in nodes), act
        for op in (op for op in fused_ops if takes(op, act)):
            assert any(n.op == op and node_activation(n) == act for n in nodes), (op, act)


@pytest.mark.parametrize("c", CASES, ids=IDS)
def test_reference_runs_every_row(c):
    """The oracle itself: every row runs, each layer's value has its checked shape (the
    interpreter sizes window ops itself and compares), and the numbers are finite."""
    graph = graph_of(c)
    ys = _reference(c)
    assert len(ys) == len(graph.outputs)
    for name, y in zip(graph.outputs, ys, strict=True):
        want = graph.type_of(name).shape
        assert y.shape[1:] == tuple(DYNAMIC_DIM if d is None else d for d in want)
        assert np.isfinite(y).all()


# -- every backend lowers every op ------------------------------------------------------------

@pytest.mark.parametrize("name", list(BACKENDS))
def test_every_op_is_lowered_by_every_backend(name):
    assert get_backend(name).lowerings.missing() == []


@pytest.mark.parametrize("name", list(BACKENDS))
def test_every_activation_has_a_rule_of_its_own(name):
    """Fused `activation=` lowers through the activation op's rule, so none may come from a
    decomposition."""
    rules = get_backend(name).lowerings.rules
    assert [act for act in ACTS if act not in rules] == []


@pytest.mark.parametrize("c", CASES, ids=IDS)
def test_keras_counts_the_checked_parameters(c):
    """`dslc check`'s parameter count is Keras's `count_params()`. Asked of Keras because its
    weight adapter fills only the variables a lowering declares: one more (a kept `gamma`)
    would pass the forward test unseen. Torch loads its state_dict strictly, and ONNX makes
    its initializers from the canonical parameters."""
    _installed("keras")
    from dslc.backends.keras.runtime import build_model

    assert build_model(graph_of(c), "/CPU:0").count_params() == graph_of(c).param_count


# -- forward: every row, every backend, against the reference --------------------------------

@pytest.mark.parametrize("c", CASES, ids=IDS)
@pytest.mark.parametrize("name", FRAMEWORKS)
def test_forward_matches_the_reference(name, c):
    backend = _installed(name)
    graph = graph_of(c)
    got = backend.build(graph, _weights(c)).predict_all(_feed(_batch(c)))
    want = _reference(c)
    assert len(got) == len(want)
    for out, g, w in zip(graph.outputs, got, want, strict=True):
        g = np.asarray(g)
        assert g.dtype == np.float32, out
        assert g.shape == w.shape, out
        diff = float(np.abs(g.astype(np.float64) - w).max())
        assert diff <= FORWARD_ATOL, f"output {out}: max abs diff {diff:.3e}"


# -- gradients: against finite differences of the reference, and across frameworks ----------

@functools.cache
def _cotangents(c: Case) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(5)
    return tuple(rng.standard_normal(y.shape).astype(np.float32) for y in _reference(c))


_GRADIENTS: dict[tuple[str, str], dict[str, np.ndarray]] = {}


def _gradients(name: str, c: Case) -> dict[str, np.ndarray]:
    key = (name, c.id)
    if key not in _GRADIENTS:
        backend = _installed(name)
        grads = backend.gradients(graph_of(c), _weights(c), list(_batch(c)), list(_cotangents(c)))
        _GRADIENTS[key] = {k: np.asarray(v, dtype=np.float64) for k, v in grads.items()}
    return _GRADIENTS[key]


def _gradient_shapes(c: Case) -> dict[str, tuple[int, ...]]:
    graph = graph_of(c)
    shapes = {k: p.shape for k, p in graph.param_specs().items()}
    for i, x in zip(graph.inputs, _batch(c), strict=True):
        if i.type.is_float:  # no gradient w.r.t. ids; the parameters behind them are checked
            shapes[f"input:{i.name}"] = x.shape
    return shapes


def _objective(c: Case, weights: dict[str, np.ndarray], xs: list[np.ndarray]) -> float:
    """sum(output_k * cotangent_k) over every output, float64 through the reference."""
    ys = Interpreter(graph_of(c), weights, exact=True).predict_all(xs)
    return sum(float(np.sum(y * t)) for y, t in zip(ys, _cotangents(c), strict=True))


@pytest.mark.parametrize("c", CASES, ids=IDS)
@pytest.mark.parametrize("name", TRAINERS)
def test_gradients_match_the_reference(name, c):
    """One directional derivative per parameter and per input, by central differences of the
    float64 reference: `<grad, v>` within 1e-4 of `sum |grad * v|` (the scale of the float32
    rounding in the framework's gradient)."""
    grads = _gradients(name, c)
    shapes = _gradient_shapes(c)
    assert {k: v.shape for k, v in grads.items()} == shapes
    weights = {k: v.astype(np.float64) for k, v in _weights(c).items()}
    xs = [x.astype(np.float64) if x.dtype == np.float32 else x for x in _batch(c)]
    names = [i.name for i in graph_of(c).inputs]
    rng = np.random.default_rng(3)
    for key, shape in shapes.items():
        v = rng.standard_normal(shape)

        def at(step: float, key: str = key, v: np.ndarray = v) -> float:
            w, ins = dict(weights), list(xs)
            if key.startswith("input:"):
                k = names.index(key.removeprefix("input:"))
                ins[k] = ins[k] + step * v
            else:
                w[key] = w[key] + step * v
            return _objective(c, w, ins)

        numeric = (at(FD_STEP) - at(-FD_STEP)) / (2 * FD_STEP)
        analytic = float(np.sum(grads[key] * v))
        scale = float(np.sum(np.abs(grads[key] * v)))
        assert abs(analytic - numeric) <= GRAD_RTOL * scale + 1e-6, \
            f"{key}: <grad, v> {analytic:.6g}, finite differences {numeric:.6g}"


# Parameters whose gradient is zero in exact arithmetic: attention's key bias adds q·b to every
# score of a row, and softmax ignores a shift common to the row. What a framework computes is
# the rounding of terms that cancel, so it is held to the scale of the case's largest gradient.
EXACT_ZERO = (".key_bias",)


@pytest.mark.parametrize("c", CASES, ids=IDS)
@pytest.mark.parametrize("pair", list(itertools.combinations(TRAINERS, 2)),
                         ids="-".join)


def test_gradients_agree_across_frameworks(pair, c):
    a, b = (_gradients(name, c) for name in pair)
    assert set(a) == set(b)
    largest = max(float(np.abs(g).max(initial=0.0)) for g in (*a.values(), *b.values()))
    for key in a:
        bound = GRAD_RTOL * max(np.abs(a[key]).max(initial=0.0), np.abs(b[key]).max(initial=0.0),
                                GRAD_FLOOR)
        if key.endswith(EXACT_ZERO):
            bound = GRAD_RTOL * max(largest, GRAD_FLOOR)
        diff = float(np.abs(a[key] - b[key]).max(initial=0.0))
        assert diff <= bound, f"{key}: max abs diff {diff:.3e} > {bound:.3e}"


# -- ONNX: a valid model whose inferred shapes are the checked ones ---------------------------

@pytest.mark.parametrize("c", CASES, ids=IDS)
def test_onnx_is_valid_and_infers_the_checked_shapes(c):
    """`check_model(full_check=True)` and ONNX's own shape inference (strict) give every
    lowered layer `dslc check`'s shape: an op whose ONNX form only runs, but whose declared
    shapes are wrong, would mislead any runtime that plans memory by them."""
    _installed("onnx")
    import onnx

    from dslc.backends.onnx.export import to_model
    from dslc.backends.onnx.lower import BATCH, NCHW, lower_graph

    graph = graph_of(c)
    model = to_model(graph, _weights(c))
    onnx.checker.check_model(model, full_check=True)
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    infos = {v.name: v for v in (*inferred.graph.value_info, *inferred.graph.output,
                                 *inferred.graph.input)}
    layouts = lower_graph(graph, _weights(c)).layouts
    checked = 0
    for node in graph.nodes:
        if node.name not in infos:  # layers emitted under another value's name (fused, no-ops)
            continue
        checked += 1
        want: list = [BATCH, *node.type.shape]
        if layouts.get(node.name) == NCHW:
            want = [want[0], want[3], want[1], want[2]]
        dims = [d.dim_value if d.HasField("dim_value") else d.dim_param
                for d in infos[node.name].type.tensor_type.shape.dim]
        assert len(dims) == len(want), node.name
        # a dimension dslc leaves open (`?`) may be anything there; one ONNX's inference
        # cannot follow (`unk__N`: Resize computes the batch as batch * 1.0) is unknown, not
        # a different number
        assert all(w is None or d == w or str(d).startswith("unk__")
                   for d, w in zip(dims, want, strict=True)), \
            f"{node.name}: ONNX infers {dims}, dslc check says {want}"
    assert checked >= 1 and all(o in infos for o in graph.outputs)


@pytest.mark.parametrize("op", ["simple_rnn", "lstm", "gru"])
@pytest.mark.parametrize("attr", ["recurrent_dropout", "dropout"])
def test_recurrent_dropout_rate_one_is_refused(op, attr):
    with pytest.raises(DslError) as err:
        compile_text(f"model m {{\n    input x: f32[4, 2]\n    {op}(3, {attr}=1.0)\n}}\n", "<m>")
    assert attr in str(err.value)
